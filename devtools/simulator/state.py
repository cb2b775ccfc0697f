"""Everything the simulator remembers: accounts, credentials, recorded requests and faults.

The app may serve from a uvicorn thread while a test reads or changes this state from
another, so every mutation happens under one re-entrant lock.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from devtools.simulator.catalog import Catalog, load_catalog
from devtools.simulator.records import RecordStore

DEFAULT_ACCESS_TOKEN_TTL = 21600.0
INVALID_GRANT_DESCRIPTION = (
    "The provided authorization grant is invalid, expired, revoked, does not match the "
    "redirection URI used in the authorization request, or was issued to another client."
)


@dataclass
class Account:
    """A Qontak tenant: its OAuth history, its gateway HMAC credentials and its own copy of
    the CRM data (both forms of the API see the same records)."""

    name: str
    refresh_token: str | None
    store: RecordStore = field(repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    previous_refresh_tokens: set[str] = field(default_factory=set, repr=False)
    revoked_refresh_tokens: set[str] = field(default_factory=set, repr=False)
    refresh_count: int = 0
    stale_refresh_attempts: int = 0
    access_tokens_issued: int = 0
    hmac_client_id: str = ""
    hmac_client_secret: str = field(default="", repr=False)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "refresh_token": self.refresh_token,
            "hmac_client_id": self.hmac_client_id,
            "hmac_client_secret": self.hmac_client_secret,
            "refresh_count": self.refresh_count,
            "stale_refresh_attempts": self.stale_refresh_attempts,
            "access_tokens_issued": self.access_tokens_issued,
        }


@dataclass(frozen=True)
class AccessToken:
    token: str
    account: str
    expires_at: float


@dataclass
class RecordedRequest:
    """One call to ``/oauth/token``, ``/api/...`` or ``/qontak/crm/...``, as the simulator saw
    and answered it. ``route`` is the legacy template in both forms; ``sso_user`` is the
    ``X-Crm-User-Sso-Id`` header (the CRM user the call acts as), if sent; ``traceparent``
    the W3C trace context header, if sent (left out of the JSON when not)."""

    account: str | None
    method: str
    path: str
    route: str | None
    query: dict[str, str]
    body: Any
    status: int
    sso_user: str | None = None
    traceparent: str | None = None

    def as_json(self) -> dict[str, Any]:
        recorded = asdict(self)
        if self.traceparent is None:
            del recorded["traceparent"]
        return recorded


@dataclass
class FailRule:
    """Answer the next ``remaining`` requests under ``path_prefix`` with ``status`` (a 429
    carries ``retry_after`` seconds), or drop the connection mid-answer when ``reset``.

    A gateway request matches by its own path or by its legacy one, so ``/api/v3.1/deals``
    also fails ``/qontak/crm/deals`` while ``/qontak/crm/`` fails the gateway form only."""

    status: int
    remaining: int
    path_prefix: str = "/api/"
    retry_after: int = 1
    reset: bool = False


@dataclass(frozen=True)
class TokenGrant:
    access_token: str
    refresh_token: str
    expires_in: int
    created_at: int

    def as_json(self) -> dict[str, Any]:
        """The shape of the collection's token example."""
        return {
            "access_token": self.access_token,
            "token_type": "bearer",
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
            "created_at": self.created_at,
        }


class GrantRejected(Exception):
    """An OAuth error response (RFC 6749 section 5.2)."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status

    def as_json(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


def invalid_grant() -> GrantRejected:
    return GrantRejected("invalid_grant", INVALID_GRANT_DESCRIPTION)


def _int_field(payload: Mapping[str, Any], key: str, default: int, minimum: int) -> int:
    value = payload.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{key} must be an integer >= {minimum}")
    return value


class SimulatorState:
    """The simulator's memory; tests may read and change it directly or over ``/_simulator``.

    ``clock`` (Unix seconds) decides access token expiry and is the time the gateway's
    ``Date`` check compares with; tests can pass a fake one.
    """

    def __init__(
        self,
        access_token_ttl: float = DEFAULT_ACCESS_TOKEN_TTL,
        *,
        clock: Callable[[], float] = time.time,
        catalog: Catalog | None = None,
    ) -> None:
        self.access_token_ttl = float(access_token_ttl)
        self.clock = clock
        self.catalog = catalog or load_catalog()
        self.lock = threading.RLock()
        self.accounts: dict[str, Account] = {}
        self.requests: list[RecordedRequest] = []
        self.access_tokens: dict[str, AccessToken] = {}
        self.latency_ms = 0
        self.fail_rules: list[FailRule] = []

    # Accounts and OAuth

    def add_account(
        self,
        name: str,
        refresh_token: str | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        hmac_client_id: str | None = None,
        hmac_client_secret: str | None = None,
    ) -> Account:
        """Create a tenant, or re-authorize an existing one with a new refresh token.

        A new tenant gets gateway HMAC credentials, generated unless given; given ones replace
        an existing tenant's. Raises ValueError if another tenant has that client id.
        """
        token = refresh_token or secrets.token_urlsafe(32)
        with self.lock:
            owner = self.account_for_hmac_client(hmac_client_id or "")
            if owner is not None and owner.name != name:
                raise ValueError(f"HMAC client id {hmac_client_id!r} belongs to {owner.name}")
            account = self.accounts.get(name)
            if account is None:
                account = Account(name, token, RecordStore(self.catalog.models))
                account.hmac_client_id = secrets.token_hex(10)
                account.hmac_client_secret = secrets.token_urlsafe(32)
                self.accounts[name] = account
            else:
                if account.refresh_token:
                    account.previous_refresh_tokens.add(account.refresh_token)
                account.refresh_token = token
            if username is not None:
                account.username, account.password = username, password
            account.hmac_client_id = hmac_client_id or account.hmac_client_id
            account.hmac_client_secret = hmac_client_secret or account.hmac_client_secret
            return account

    def _grant(self, account: Account) -> TokenGrant:
        token = secrets.token_urlsafe(32)
        self.access_tokens[token] = AccessToken(
            token, account.name, self.clock() + self.access_token_ttl
        )
        account.access_tokens_issued += 1
        return TokenGrant(
            access_token=token,
            refresh_token=account.refresh_token or "",
            expires_in=int(self.access_token_ttl),
            created_at=int(time.time()),
        )

    def _rotate(self, account: Account) -> TokenGrant:
        if account.refresh_token:
            account.previous_refresh_tokens.add(account.refresh_token)
        account.refresh_token = secrets.token_urlsafe(32)
        return self._grant(account)

    def refresh(self, refresh_token: str) -> TokenGrant:
        """The refresh_token grant: rotate, so the presented token is dead from now on."""
        with self.lock:
            for account in self.accounts.values():
                if refresh_token and account.refresh_token == refresh_token:
                    account.refresh_count += 1
                    return self._rotate(account)
                if refresh_token in account.previous_refresh_tokens:
                    account.stale_refresh_attempts += 1
                    raise invalid_grant()
            raise invalid_grant()

    def password_grant(self, username: str, password: str) -> TokenGrant:
        with self.lock:
            for account in self.accounts.values():
                if account.username and (account.username, account.password) == (
                    username,
                    password,
                ):
                    return self._rotate(account)
            raise invalid_grant()

    def issue_access_token(self, name: str) -> str:
        """A valid access token for ``name`` without a refresh (a shortcut for tests)."""
        with self.lock:
            return self._grant(self.accounts[name]).access_token

    def authenticate(self, access_token: str) -> Account | None:
        """The account of a live access token; None if unknown or expired."""
        with self.lock:
            token = self.access_tokens.get(access_token)
            if token is None or self.clock() >= token.expires_at:
                return None
            return self.accounts.get(token.account)

    def account_for_access_token(self, access_token: str) -> str | None:
        """Who a token was issued to, even if expired (for the request log)."""
        token = self.access_tokens.get(access_token)
        return token.account if token else None

    def account_for_hmac_client(self, client_id: str) -> Account | None:
        """The account whose gateway client id this is; None if unknown."""
        with self.lock:
            return next(
                (a for a in self.accounts.values() if client_id and a.hmac_client_id == client_id),
                None,
            )

    def account_for_refresh_token(self, refresh_token: str) -> str | None:
        with self.lock:
            for account in self.accounts.values():
                if refresh_token and (
                    refresh_token == account.refresh_token
                    or refresh_token in account.previous_refresh_tokens
                    or refresh_token in account.revoked_refresh_tokens
                ):
                    return account.name
            return None

    def account_for_username(self, username: str) -> str | None:
        return next((a.name for a in self.accounts.values() if a.username == username), None)

    # Request log

    def record(self, request: RecordedRequest) -> None:
        with self.lock:
            self.requests.append(request)

    def requests_for(self, account: str | None = None) -> list[RecordedRequest]:
        with self.lock:
            return [r for r in self.requests if account is None or r.account == account]

    def clear_requests(self) -> None:
        with self.lock:
            self.requests.clear()

    # Faults

    def expire_access_tokens(self) -> None:
        """Every access token issued so far stops working now."""
        with self.lock:
            expired = self.clock() - 1
            self.access_tokens = {
                key: AccessToken(t.token, t.account, min(t.expires_at, expired))
                for key, t in self.access_tokens.items()
            }

    def revoke_refresh_token(self, name: str) -> None:
        """The account's refresh token now gets invalid_grant, as after a revocation."""
        with self.lock:
            account = self.accounts[name]
            if account.refresh_token:
                account.revoked_refresh_tokens.add(account.refresh_token)
            account.refresh_token = None

    def fail_next(self, status: int, count: int = 1, path_prefix: str = "/api/") -> None:
        with self.lock:
            self.fail_rules.append(FailRule(status, count, path_prefix))

    def take_failure(self, *paths: str) -> FailRule | None:
        """Consume one injected failure matching any of ``paths``."""
        with self.lock:
            for rule in self.fail_rules:
                if any(p.startswith(rule.path_prefix) for p in paths) and rule.remaining > 0:
                    rule.remaining -= 1
                    if rule.remaining == 0:
                        self.fail_rules.remove(rule)
                    return rule
            return None

    def apply_faults(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Apply a ``POST /_simulator/faults`` payload, all or nothing.

        Raises ValueError for a malformed payload and KeyError for an unknown account.
        """
        ttl = payload.get("access_token_ttl")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float)):
            raise ValueError("access_token_ttl must be a number")
        if ttl is not None and ttl <= 0:
            raise ValueError("access_token_ttl must be > 0")
        latency = _int_field(payload, "latency_ms", self.latency_ms, 0)
        rule: FailRule | None = None
        if payload.get("fail_next") is not None:
            spec = payload["fail_next"]
            if not isinstance(spec, Mapping):
                raise ValueError("fail_next must be an object")
            reset = spec.get("reset") is True
            status = 0 if reset else _int_field(spec, "status", 0, 100)
            prefix = spec.get("path_prefix", "/api/")
            if status > 599 or not isinstance(prefix, str):
                raise ValueError(
                    "fail_next needs an HTTP status (or reset: true) and a string path_prefix"
                )
            rule = FailRule(
                status,
                _int_field(spec, "count", 1, 1),
                prefix,
                retry_after=_int_field(spec, "retry_after", 1, 0),
                reset=reset,
            )
        revoke = payload.get("revoke_refresh_token")
        with self.lock:
            if revoke is not None and str(revoke) not in self.accounts:
                raise KeyError(str(revoke))
            if ttl is not None:
                self.access_token_ttl = float(ttl)
            self.latency_ms = latency
            if rule is not None:
                self.fail_rules.append(rule)
            if payload.get("expire_access_tokens"):
                self.expire_access_tokens()
            if revoke is not None:
                self.revoke_refresh_token(str(revoke))
            return self.faults()

    def clear_faults(self) -> None:
        with self.lock:
            self.latency_ms = 0
            self.fail_rules.clear()

    def faults(self) -> dict[str, Any]:
        with self.lock:
            return {
                "access_token_ttl": self.access_token_ttl,
                "latency_ms": self.latency_ms,
                "fail_next": [asdict(rule) for rule in self.fail_rules],
            }
