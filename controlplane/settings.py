"""Settings for the control plane: every knob is an environment variable read here, once.

Embedded defaults (SQLite, local-memory cache, in-memory channel layer) let a newcomer run the
project with nothing installed; `DATABASE_URL` and `REDIS_URL` switch to the shared services
that several workers need. The README's configuration table documents each variable.
"""

import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

import environ
from django.core.exceptions import ImproperlyConfigured

from controlplane.qontak_urls import DEFAULT_ALLOWED_HOSTS, qontak_url_problems

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)


def _required_secrets(*names: str) -> dict[str, str]:
    """The named secrets from the environment ("" when unset). With DEBUG off a missing one
    stops the process at startup: a public default would let anyone forge sessions and
    recompute API key digests."""
    values = {name: env.str(name, default="") for name in names}
    missing = [name for name, value in values.items() if not value]
    if missing and not DEBUG:
        raise ImproperlyConfigured(
            f"{' and '.join(missing)} must be set when DEBUG is off. Generate each value "
            'with: python -c "import secrets; print(secrets.token_urlsafe(50))" and set it in '
            "the environment or .env. DEBUG=true allows development defaults (never in "
            "production); `make` targets set development values themselves."
        )
    return values


_SECRETS = _required_secrets("SECRET_KEY", "API_KEY_PEPPER")
# The fallbacks are public development values, reachable only with DEBUG on.
SECRET_KEY = _SECRETS["SECRET_KEY"] or "insecure-development-key-change-me"
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "auditlog",
    "axes",
    "csp",
    "oauth2_provider",
    "controlplane",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "auditlog.middleware.AuditlogMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes requires: it turns a lockout raised during login into a 429 page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "controlplane.urls"
ASGI_APPLICATION = "controlplane.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
# Keep a worker's connection between tool calls: /mcp database work runs on channels' single
# executor thread per worker, so this is one connection per worker, not one per request.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=600)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# A pooler in transaction mode (PgBouncer's pool_mode = transaction, and the pooled endpoints
# of managed PostgreSQL services) may hand each transaction to a different server connection,
# so nothing may outlive a transaction on the server: Django's server-side cursors (WITH HOLD,
# used by QuerySet.iterator()) would be looked for on the wrong connection. Prepared statements
# would too; Django with psycopg 3 sends none unless OPTIONS enables server_side_binding or
# prepare_threshold, which must then stay off.
DATABASE_POOLER = env.str("DATABASE_POOLER", default="")
if DATABASE_POOLER not in ("", "transaction"):
    raise ImproperlyConfigured(
        f"DATABASE_POOLER must be empty or 'transaction', not {DATABASE_POOLER!r}."
    )
if DATABASE_POOLER == "transaction":
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL and a busy timeout let the ASGI worker and management commands share the file.
    # IMMEDIATE: a transaction takes the write lock when it begins, so it waits for the
    # server's audit writes instead of failing with "database is locked" when one commits
    # between its first read and its first write (SQLite cannot upgrade a stale snapshot).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL;",
            "transaction_mode": "IMMEDIATE",
        }
    )
    # A file, not memory, so the servers the end-to-end tests start can open it too; one per
    # test process, so two test runs on one checkout never share it.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / f".test-db-{os.getpid()}.sqlite3")}
# Audit rows the database cannot take for a while wait here, on local disk, and are replayed
# when it answers again (mcpserver.audit_writer). One directory per host and database.
AUDIT_SPOOL_DIR = Path(env.str("AUDIT_SPOOL_DIR", default=str(BASE_DIR / ".run" / "audit-spool")))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")
# The CA that signed a rediss:// server's certificate, when it is not in the system's store. It
# becomes redis-py's `ssl_ca_certs` URL option, so every client made from REDIS_URL (the cache,
# the channel layer, locks, the tool-call link and subscription) verifies the server with it.
REDIS_CA_FILE = env.str("REDIS_CA_FILE", default="")
if REDIS_CA_FILE and REDIS_URL.startswith("rediss://") and "ssl_ca_certs=" not in REDIS_URL:
    REDIS_URL += ("&" if "?" in REDIS_URL else "?") + urlencode({"ssl_ca_certs": REDIS_CA_FILE})
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "controlplane.redis.clients.SharedRedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "qmcp",
        }
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": "qmcp"},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# django-ratelimit warns that a Redis cache other than django-redis is untested (W001) and
# refuses locmem (E003) because it is not shared between processes. We count on the RedisCache's
# atomic incr when REDIS_URL is set, and locmem is the documented single-process default.
SILENCED_SYSTEM_CHECKS = ["django_ratelimit.W001", "django_ratelimit.E003"]
RATELIMIT_USE_CACHE = "default"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# Vault (OpenBao-compatible) holds every Qontak token; the database only references it.
VAULT_ADDR = env.str("VAULT_ADDR", default="http://127.0.0.1:8200")
VAULT_TOKEN = env.str("VAULT_TOKEN", default="")
VAULT_ROLE_ID = env.str("VAULT_ROLE_ID", default="")
VAULT_SECRET_ID = env.str("VAULT_SECRET_ID", default="")
VAULT_NAMESPACE = env.str("VAULT_NAMESPACE", default="")
VAULT_KV_MOUNT = env.str("VAULT_KV_MOUNT", default="secret")
VAULT_CACERT = env.str("VAULT_CACERT", default="")
VAULT_SKIP_VERIFY = env.bool("VAULT_SKIP_VERIFY", default=False)
VAULT_TIMEOUT = env.float("VAULT_TIMEOUT", default=5.0)

QONTAK_BASE_URL = env.str("QONTAK_BASE_URL", default="https://app.qontak.com")
# Hosts a Qontak base URL may name (tokens are sent there): see controlplane.qontak_urls.
QONTAK_ALLOWED_HOSTS = env.list("QONTAK_ALLOWED_HOSTS", default=list(DEFAULT_ALLOWED_HOSTS))
if _problems := qontak_url_problems(QONTAK_BASE_URL, QONTAK_ALLOWED_HOSTS):
    raise ImproperlyConfigured(f"QONTAK_BASE_URL is refused: {'; '.join(_problems)}.")
# The CRM root of the Mekari API Gateway, the default for tenants with Mekari HMAC credentials
# (checked against QONTAK_ALLOWED_HOSTS whenever a tenant uses it).
MEKARI_GATEWAY_URL = env.str("MEKARI_GATEWAY_URL", default="https://api.mekari.com/qontak/crm")
QONTAK_TIMEOUT = env.float("QONTAK_TIMEOUT", default=30.0)
# One deadline per tool call, covering the token, every attempt and the waits between them.
TOOL_CALL_DEADLINE = env.float("TOOL_CALL_DEADLINE", default=25.0)
# How long a tool call held for approval waits for a person's decision (controlplane.approvals).
APPROVAL_EXPIRY_MINUTES = env.int("APPROVAL_EXPIRY_MINUTES", default=60)
# Copies of keys, OAuth tokens and tenant policies each worker keeps, per kind; the oldest go
# first beyond it (controlplane.config_version.VersionedCache). README, Performance.
WORKER_CACHE_ENTRIES = env.int("WORKER_CACHE_ENTRIES", default=20_000)

# API keys are stored as HMAC-SHA256 digests keyed with this pepper, never in clear. After a
# rotation the previous peppers still verify keys, each moved to the current one on its next use.
API_KEY_PEPPER = _SECRETS["API_KEY_PEPPER"] or "insecure-development-pepper-change-me"
API_KEY_OLD_PEPPERS = env.list("API_KEY_OLD_PEPPERS", default=[])
MCP_MAX_BODY_BYTES = env.int("MCP_MAX_BODY_BYTES", default=1_000_000)
# Unknown API keys one client address may present per minute (and worker) before its further
# unknown keys are refused with 429 without a database query.
AUTH_FAILURES_PER_ADDRESS = env.int("AUTH_FAILURES_PER_ADDRESS", default=20)
DEFAULT_RATE_LIMIT = env.str("DEFAULT_RATE_LIMIT", default="120/m")
# Requests sent to one tenant's Qontak account (retries included), to protect its quota.
QONTAK_REQUEST_CEILING = env.str("QONTAK_REQUEST_CEILING", default="600/m")
# tools/list requests per API key (each costs a policy lookup and a schema dump).
TOOLS_LIST_RATE = env.str("TOOLS_LIST_RATE", default="60/m")

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOG_FORMAT = env.str("LOG_FORMAT", default="json")  # json | plain
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "redact_secrets": {"()": "controlplane.logredact.RedactSecretsFilter"},
        "aggregate_repeats": {"()": "controlplane.logformat.AggregateRepeats"},
    },
    "formatters": {
        "json": {"()": "controlplane.logformat.JsonFormatter"},
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain" if LOG_FORMAT == "plain" else "json",
            "filters": ["redact_secrets", "aggregate_repeats"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
        # The SDK logs "Terminating session: None" at INFO after every stateless request.
        "mcp.server.streamable_http": {"level": "WARNING"},
    },
}

# /metrics: a bearer token, or else only these source networks.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_ALLOWED_NETWORKS = env.list("METRICS_ALLOWED_NETWORKS", default=["127.0.0.0/8", "::1/128"])

# `make run` serves here.
RUN_HOST = env.str("RUN_HOST", default="127.0.0.1")
RUN_PORT = env.int("RUN_PORT", default=8000)
# Serve /static/ from the app (admin CSS). Behind a CDN or proxy, set to false.
SERVE_STATIC = env.bool("SERVE_STATIC", default=True)

# Admin security. The admin is the one place a browser session can change who reaches which
# Qontak account, so its cookies, headers and login are hardened unless DEBUG is on.
# Browsers keep Secure cookies on http://localhost and 127.0.0.1, so `make run` still works.
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True  # no page script reads the token; forms carry it
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=8 * 3600)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# HSTS is only sent on HTTPS requests: behind a TLS proxy, trust its X-Forwarded-Proto.
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31_536_000)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
if env.bool("TRUST_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Content Security Policy (django-csp; Django 5.2 has no built-in one). Pages load scripts and
# styles from our own static files only: no inline script or style, no CDN. 'self' in
# connect-src covers the live feed's same-origin websocket.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# Login throttling (django-axes): after AXES_FAILURE_LIMIT wrong passwords for one username
# from one address, that pair is locked out for AXES_COOLOFF_MINUTES. Attempts are kept in
# the database, so the count holds across workers. Behind a proxy, run uvicorn with
# --forwarded-allow-ips so REMOTE_ADDR is the client's address, not the proxy's.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "admin/lockout.html"

# OAuth 2.1 for assistants that cannot send a header (claude.ai, ChatGPT): Django is the
# authorization server for /mcp (django-oauth-toolkit), README "Connect Claude.ai / ChatGPT".
# PUBLIC_URL pins the origin that metadata, the resource and the issuer name (e.g.
# https://mcp.example.com); empty takes it from each request (Host, and X-Forwarded-Proto when
# TRUST_X_FORWARDED_PROTO is on).
PUBLIC_URL = env.str("PUBLIC_URL", default="").rstrip("/")
LOGIN_URL = "/accounts/login/"
OAUTH2_PROVIDER_APPLICATION_MODEL = "oauth2_provider.Application"
OAUTH2_PROVIDER_GRANT_MODEL = "oauth2_provider.Grant"
OAUTH2_PROVIDER_ACCESS_TOKEN_MODEL = "oauth2_provider.AccessToken"  # noqa: S105
OAUTH2_PROVIDER_REFRESH_TOKEN_MODEL = "oauth2_provider.RefreshToken"  # noqa: S105
OAUTH2_PROVIDER_ID_TOKEN_MODEL = "oauth2_provider.IDToken"  # noqa: S105
# Dynamic Client Registrations per client address and hour (django-ratelimit).
OAUTH_REGISTRATION_RATE = env.str("OAUTH_REGISTRATION_RATE", default="20/h")
# Client ID Metadata Documents from loopback addresses: development and tests only.
OAUTH_CIMD_ALLOW_LOOPBACK = env.bool("OAUTH_CIMD_ALLOW_LOOPBACK", default=False)
OAUTH2_PROVIDER = {
    "SCOPES": {
        "crm.read": "Read contacts, companies, deals, tasks, tickets and products",
        "crm.write": "Create and change records (never delete them)",
        "crm.delete": "Delete records",
    },
    "DEFAULT_SCOPES": ["crm.read"],
    "OAUTH2_VALIDATOR_CLASS": "controlplane.oauth.validator.ConnectionValidator",
    "ACCESS_TOKEN_GENERATOR": "controlplane.oauth.validator.new_access_token",
    "REFRESH_TOKEN_GENERATOR": "controlplane.oauth.validator.new_refresh_token",
    "ACCESS_TOKEN_EXPIRE_SECONDS": env.int("OAUTH_ACCESS_TOKEN_SECONDS", default=3600),
    "REFRESH_TOKEN_EXPIRE_SECONDS": env.int("OAUTH_REFRESH_TOKEN_SECONDS", default=30 * 86400),
    "AUTHORIZATION_CODE_EXPIRE_SECONDS": 60,
    "REQUEST_APPROVAL_PROMPT": "force",  # the person picks the tenant on every consent
    # RFC 9700: rotating refresh tokens whose reuse revokes the family, PKCE S256 only, no
    # implicit or password grant, iss in the authorization response, tokens stored hashed.
    "ROTATE_REFRESH_TOKEN": True,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    "REFRESH_TOKEN_GRACE_PERIOD_SECONDS": 0,
    "PKCE_REQUIRED": True,
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT": True,
    "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True,
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
    "COMPLIANT_BCP_RFC9700_REFRESH_TOKEN": True,
    "COMPLIANT_BCP_RFC9700_PKCE_REQUIRED": True,
    "OAUTH2_RESPONSE_TYPES_SUPPORTED": ["code"],
    "OAUTH2_GRANT_TYPES_SUPPORTED": ["authorization_code", "refresh_token"],
    # Public clients (PKCE, no secret) first: that is what assistants register as.
    "OAUTH2_TOKEN_ENDPOINT_AUTH_METHODS_SUPPORTED": [
        "none",
        "client_secret_post",
        "client_secret_basic",
    ],
    # http only for loopback redirects (desktop and CLI clients, RFC 8252), checked on
    # registration by controlplane.oauth.clients.
    "ALLOWED_REDIRECT_URI_SCHEMES": ["https", "http"],
    "ALLOW_LOCALHOST_LOOPBACK": True,
    "DCR_ENABLED": True,
    "DCR_REGISTRATION_PERMISSION_CLASSES": ("oauth2_provider.dcr.AllowAllDCRPermission",),
    "CIMD_ENABLED": True,
    "CIMD_METADATA_FETCHER": "controlplane.oauth.clients.ClientMetadataFetcher",
    "CIMD_REGISTRATION_PERMISSION_CLASSES": ("controlplane.oauth.clients.TrustedHostsOnly",),
    "OAUTH2_PROTECTED_RESOURCE_NAME": "Qontak CRM (MCP)",
}
if PUBLIC_URL:
    OAUTH2_PROVIDER["OIDC_ISS_ENDPOINT"] = PUBLIC_URL  # the issuer, and its endpoints' origin

# OpenTelemetry traces of tool calls (README, Tracing), off by default. The SDK reads the rest
# of the standard OTEL_* variables itself (OTEL_EXPORTER_OTLP_ENDPOINT, _HEADERS, _TIMEOUT,
# OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER...); controlplane.tracing picks the exporter.
TRACING_ENABLED = env.bool("TRACING_ENABLED", default=False)
OTEL_TRACES_EXPORTER = env.str("OTEL_TRACES_EXPORTER", default="otlp")
