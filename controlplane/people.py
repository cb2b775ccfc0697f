"""Services for people: tenant memberships, and the OAuth access tokens assistants present on
their behalf, checked on every MCP request with this worker's copies of the tokens it has seen.

A token acts as one person in one tenant: the OAuthConnection the person's consent made, found
through the token's refresh-token family (controlplane.oauth.validator ties them together).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import DatabaseError, close_old_connections, transaction
from django.utils import timezone
from oauth2_provider.models import AccessToken, Application, RefreshToken

from controlplane import tenants
from controlplane.config_version import VersionedCache
from controlplane.errors import ApplicationError, InvalidInput
from controlplane.models import DisabledClient, OAuthConnection, Tenant, TenantMembership

logger = logging.getLogger(__name__)

ACCESS_TOKEN_SCHEME = "qmcpat_"  # noqa: S105 (a prefix, not a secret)
REFRESH_TOKEN_SCHEME = "qmcprt_"  # noqa: S105

# Scopes are tool policy: each tool needs the scope of its annotation (see tool_scope).
READ_SCOPE, WRITE_SCOPE, DELETE_SCOPE = "crm.read", "crm.write", "crm.delete"
SCOPE_WORDS = {
    READ_SCOPE: "Read contacts, companies, deals, tasks, tickets and products",
    WRITE_SCOPE: "Create and change records (never delete them)",
    DELETE_SCOPE: "Delete records",
}
# What the 401 challenge asks for: reading and writing; deleting is asked for when needed.
CHALLENGE_SCOPES = (READ_SCOPE, WRITE_SCOPE)


def tool_scope(*, read_only: bool, destructive: bool) -> str:
    """The scope a tool needs: crm.read for read-only tools, crm.delete for destructive ones,
    crm.write for the rest."""
    if read_only:
        return READ_SCOPE
    return DELETE_SCOPE if destructive else WRITE_SCOPE


def _user_named(username: str) -> User | None:
    return User.objects.filter(username=username).first()


def person_exists(username: str) -> bool:
    return _user_named(username.strip()) is not None


def member_add(
    *,
    tenant: Tenant,
    username: str,
    password: str | None = None,
    qontak_user: str = "",
    read_only: bool = False,
) -> tuple[TenantMembership, bool]:
    """Make `username` a member of `tenant` (or update the membership); a new user is created
    with `password`. Returns the membership and whether the user was created. Raises
    InvalidInput."""
    username = username.strip()
    if not username:
        raise InvalidInput("give the person's username")
    qontak_user = tenants.sso_user_checked(qontak_user)
    with transaction.atomic():
        user = _user_named(username)
        created = user is None
        if user is None:
            if not password:
                raise InvalidInput(
                    f"'{username}' is a new user: give their password on standard input"
                )
            user = User(username=username)
            try:
                validate_password(password, user)
            except ValidationError as exc:
                raise InvalidInput("the password is too weak: " + " ".join(exc.messages)) from None
            user.set_password(password)
            user.full_clean(exclude=["password"])
            user.save()
        membership, _ = TenantMembership.objects.update_or_create(
            tenant=tenant,
            user=user,
            defaults={"qontak_user": qontak_user, "read_only": read_only},
        )
    return membership, created


def membership_get(*, tenant: Tenant, username: str) -> TenantMembership:
    membership = (
        TenantMembership.objects.filter(tenant=tenant, user__username=username)
        .select_related("user")
        .first()
    )
    if membership is None:
        raise InvalidInput(f"'{username}' is not a member of tenant '{tenant.slug}'")
    return membership


def member_remove(*, tenant: Tenant, username: str) -> int:
    """End `username`'s membership of `tenant`: the refresh-token families of their connections
    are revoked and the connections deleted, so their tokens stop working on the next call in
    every worker (announced). Returns how many connections ended; raises InvalidInput."""
    membership = membership_get(tenant=tenant, username=username)
    with transaction.atomic():
        families = list(
            membership.connections.exclude(token_family=None).values_list("token_family", flat=True)
        )
        for family in families:
            RefreshToken.revoke_family(family)
        membership.delete()  # its connections go with it; announced (post_delete)
    return len(families)


def connection_revoke(connection: OAuthConnection) -> bool:
    """Revoke one consent: its refresh-token family and access tokens end (announced), and
    the connection is deleted. Returns whether it still existed."""
    with transaction.atomic():
        if connection.token_family is not None:
            RefreshToken.revoke_family(connection.token_family)
        deleted, _ = OAuthConnection.objects.filter(pk=connection.pk).delete()
    return deleted > 0


def client_disable(*, application: Application, reason: str = "") -> None:
    """Turn an OAuth client off: its tokens are refused from the next call (announced)."""
    DisabledClient.objects.get_or_create(application=application, defaults={"reason": reason})


def client_enable(*, application: Application) -> None:
    DisabledClient.objects.filter(application=application).delete()


def client_name(application: Application) -> str:
    """How people and audit rows name a client: its registered name, else its host."""
    if application.name:
        return application.name[:255]
    host = urlsplit(application.client_id).hostname
    return (host or application.client_id)[:255]


def token_checksum(token: str) -> str:
    """How the toolkit finds a stored token (hashed storage keeps no clear value)."""
    return hashlib.sha256(token.encode()).hexdigest()


class TokenRefused(ApplicationError):
    """The access token cannot be used; the message says why and what to do."""


UNKNOWN_CREDENTIAL_ADVICE = (
    "the access token is unknown, expired or revoked: connect the assistant again"
)


@dataclass(frozen=True)
class Principal:
    """Whom a valid OAuth access token acts as, copied from the database once per version."""

    membership_id: int
    tenant: Tenant
    username: str
    read_only: bool
    qontak_user: str
    scopes: frozenset[str]
    resources: tuple[str, ...]
    expires: datetime
    client_id: str
    client: str

    def allows_resource(self, resource: str) -> bool:
        """RFC 8707: a token names the resource it is for; one naming none is not ours."""
        return resource.rstrip("/") in {r.rstrip("/") for r in self.resources}


def _principal(token: str) -> Principal:
    """The principal of a live access token; raises TokenRefused. Blocking (database)."""
    access_token = (
        AccessToken.objects.select_related("application", "user")
        .filter(token_checksum=token_checksum(token))
        .first()
    )
    if access_token is None or access_token.is_expired() or access_token.application is None:
        raise TokenRefused(UNKNOWN_CREDENTIAL_ADVICE)
    family = (
        RefreshToken.objects.filter(access_token=access_token)
        .values_list("token_family", flat=True)
        .first()
    )
    connection = (
        OAuthConnection.objects.select_related("membership__tenant", "membership__user")
        .filter(token_family=family)
        .first()
        if family is not None
        else None
    )
    if connection is None:
        raise TokenRefused(
            "the person this token acts as is no longer a member of the tenant: ask an "
            "operator, then connect the assistant again"
        )
    if DisabledClient.objects.filter(application_id=access_token.application_id).exists():
        raise TokenRefused("an operator has disabled this assistant client")
    membership = connection.membership
    if not membership.user.is_active:
        raise TokenRefused("this person's account is disabled")
    return Principal(
        membership_id=membership.pk,
        tenant=membership.tenant,
        username=membership.user.get_username(),
        read_only=membership.read_only,
        qontak_user=membership.qontak_user or membership.tenant.default_qontak_user,
        scopes=frozenset(access_token.scope.split()),
        resources=tuple(access_token.resource or ()),
        expires=access_token.expires,
        client_id=access_token.application.client_id,
        client=client_name(access_token.application),
    )


def _principal_for_request(token: str) -> Principal:
    close_old_connections()  # as tenants._authenticate_request: once, at the request's start
    return _principal(token)


# This worker's copies of the tokens it has seen, by checksum (see controlplane.config_version).
_known_tokens: VersionedCache[str, Principal] = VersionedCache()


def _usable(principal: Principal) -> Principal:
    if principal.expires <= timezone.now():
        raise TokenRefused(UNKNOWN_CREDENTIAL_ADVICE)
    if not principal.tenant.is_active:
        raise TokenRefused(f"tenant '{principal.tenant.slug}' is inactive")
    return principal


async def principal_for_request(
    *, token: str, version: str | None, client_address: str = ""
) -> Principal:
    """The principal of `token`: this worker's copy when it belongs to `version` (no I/O), else
    the database in a thread (a copy of any age while the database cannot be reached). Raises
    TokenRefused, TooManyFailedAuthentications, or DatabaseError."""
    checksum = token_checksum(token)
    known = _known_tokens.get(checksum, version)
    if known is not None:
        return _usable(known)
    tenants.failed_authentications.check(client_address, version)
    try:
        principal = await sync_to_async(_principal_for_request)(token)
    except TokenRefused:
        _known_tokens.discard(checksum)
        tenants.failed_authentications.record(client_address, version)
        raise
    except DatabaseError:
        aged = _known_tokens.get(checksum, version, any_age=True)
        if aged is not None:
            return _usable(aged)
        raise
    _known_tokens.put(checksum, version, principal)
    return _usable(principal)
