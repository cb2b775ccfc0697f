"""The toolkit's validator, extended so every authorization acts as the person and tenant chosen
at consent: the consent view passes the membership, the authorization code carries it as an
OAuthConnection, and the code's exchange ties the connection to the new refresh-token family,
which every rotated token keeps."""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from oauth2_provider.models import AbstractApplication, Application, Grant, RefreshToken
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauthlib.common import Request
from oauthlib.oauth2.rfc6749 import errors

from controlplane import config_version
from controlplane.models import DisabledClient, OAuthConnection
from controlplane.people import ACCESS_TOKEN_SCHEME, REFRESH_TOKEN_SCHEME

# Set while a refresh token is rotated: the access token it replaces is deleted, but no worker
# needs telling (the client has the new one, and no copy outlives MAX_AGE_SECONDS).
_rotating: ContextVar[bool] = ContextVar("oauth_rotating", default=False)
# RFC 7636: an S256 challenge is the unpadded base64url of a SHA-256 digest, 43 characters.
S256_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")


def new_access_token(request: Request) -> str:
    """Recognisable by its prefix, like API keys, so secret scanners and logs can spot it."""
    return ACCESS_TOKEN_SCHEME + secrets.token_urlsafe(32)


def new_refresh_token(request: Request) -> str:
    return REFRESH_TOKEN_SCHEME + secrets.token_urlsafe(32)


def access_token_deleted(sender: type, **kwargs: Any) -> None:
    """post_delete receiver: a token that ends (revoked in the admin or by the client, or its
    family revoked on refresh-token reuse) is announced, so every worker drops its copy."""
    if not _rotating.get():
        config_version.announce_change_on_commit()


@contextlib.contextmanager
def _rotation() -> Iterator[None]:
    reset = _rotating.set(True)
    try:
        yield
    finally:
        _rotating.reset(reset)


def _connection_usable(connection: OAuthConnection | None) -> bool:
    return (
        connection is not None
        and connection.membership.user.is_active
        and not DisabledClient.objects.filter(application_id=connection.application_id).exists()
    )


class ConnectionValidator(OAuth2Validator):
    def is_pkce_required(self, client_id: str, request: Request) -> bool:
        """Also checks the authorization request's challenge: oauthlib asks this before the
        consent page, so a challenge the token exchange would refuse ("plain", the default
        when no method is named, or one that is not an S256 digest) is sent back to the
        client at once rather than after the person has consented."""
        challenge = request.code_challenge
        if challenge is not None and getattr(request, "response_type", None):
            if (request.code_challenge_method or "plain") != "S256":
                raise errors.InvalidRequestError(
                    description='code_challenge_method must be "S256"; "plain" is not accepted',
                    request=request,
                )
            if not S256_CHALLENGE.fullmatch(challenge):
                raise errors.InvalidRequestError(
                    description="code_challenge must be the 43-character unpadded base64url "
                    "SHA-256 of the code_verifier (RFC 7636)",
                    request=request,
                )
        required: bool = super().is_pkce_required(client_id, request)
        return required

    def _load_application(self, client_id: str, request: Request) -> AbstractApplication | None:
        """A client an operator disabled cannot be authorized or get tokens."""
        application = super()._load_application(client_id, request)
        if (
            application is not None
            and DisabledClient.objects.filter(application_id=application.pk).exists()
        ):
            request.client = None
            return None
        return application

    def _create_authorization_code(
        self, request: Request, code: dict[str, str], expires: datetime | None = None
    ) -> Grant:
        membership_id = getattr(request, "membership_id", None)
        if membership_id is None:
            raise errors.AccessDeniedError(
                description="no tenant was chosen for this authorization", request=request
            )
        grant = super()._create_authorization_code(request, code, expires)
        OAuthConnection.objects.create(
            membership_id=membership_id,
            application=request.client,
            grant=grant,
            scope=grant.scope,
        )
        return grant

    def validate_code(
        self,
        client_id: str,
        code: str,
        client: Application,
        request: Request,
        *args: Any,
        **kwargs: Any,
    ) -> bool:
        """A code is exchanged only while the consent it came from still stands."""
        if not super().validate_code(client_id, code, client, request, *args, **kwargs):
            return False
        connection = (
            OAuthConnection.objects.select_related("membership__user")
            .filter(grant__code=code, grant__application=client)
            .first()
        )
        if not _connection_usable(connection):
            return False
        request.connection_id = connection.pk  # type: ignore[union-attr]
        return True

    def validate_refresh_token(
        self, refresh_token: str, client: Application, request: Request, *args: Any, **kwargs: Any
    ) -> bool:
        """A refresh is refused once the member was removed, the person disabled or the client
        turned off: the assistant must be connected again."""
        if not super().validate_refresh_token(refresh_token, client, request, *args, **kwargs):
            return False
        family = request.refresh_token_instance.token_family
        connection = (
            OAuthConnection.objects.select_related("membership__user")
            .filter(token_family=family)
            .first()
        )
        return _connection_usable(connection)

    def _save_bearer_token(
        self, token: dict[str, Any], request: Request, *args: Any, **kwargs: Any
    ) -> None:
        if request.grant_type == "refresh_token":
            with _rotation():
                super()._save_bearer_token(token, request, *args, **kwargs)
        else:
            super()._save_bearer_token(token, request, *args, **kwargs)

    def _create_refresh_token(
        self,
        request: Request,
        refresh_token_code: str,
        access_token: Any,
        previous_refresh_token: RefreshToken | None,
    ) -> RefreshToken:
        refresh_token = super()._create_refresh_token(
            request, refresh_token_code, access_token, previous_refresh_token
        )
        connection_id = getattr(request, "connection_id", None)
        if previous_refresh_token is None and connection_id is not None:
            # The code is spent: from now on the family names the connection.
            OAuthConnection.objects.filter(pk=connection_id).update(
                token_family=refresh_token.token_family, grant=None
            )
        return refresh_token
