"""Domain exceptions raised by the services and translated once, at the MCP edge.

Every message is written for the person or model that has to act on it, and never contains a
secret.
"""


class ApplicationError(Exception):
    """Root of the control plane's expected failures."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ApplicationError):
    """An operator or assistant supplied a value the control plane cannot accept."""


class TenantNotFound(ApplicationError):
    pass


class CredentialUnavailable(ApplicationError):
    """The credential store (Vault) cannot be reached or refused us; retrying later may help."""


class DatabaseUnavailable(ApplicationError):
    """The control plane's own database cannot be reached; retrying later may help."""


class CountersUnavailable(ApplicationError):
    """The shared rate-limit counters (Redis) cannot be reached: no call is admitted uncounted."""


class CredentialMissing(ApplicationError):
    """No refresh token has been stored for the tenant yet."""


class ReauthorizationRequired(ApplicationError):
    """Qontak rejected the refresh token (invalid_grant): a human must re-authorize."""


class UpstreamError(ApplicationError):
    """Qontak answered with an error, or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class QontakUrlRefused(ApplicationError):
    """The tenant's Qontak URL is not (or no longer) on QONTAK_ALLOWED_HOSTS' list."""


class QontakPaused(ApplicationError):
    """The tenant's requests to Qontak are paused (Retry-After, or repeated failures);
    `retry_after` is in seconds."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ToolDenied(ApplicationError):
    """The tool policy does not let this key use this tool."""


class RateLimited(ApplicationError):
    """A rate limit is exhausted; `retry_after` is in seconds."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
