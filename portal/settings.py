"""Settings from environment variables with working defaults (README "Configuration").

Importing this module writes nothing: the data folder is made by the processes that use
it (portal/datadir.py) and the secret key file on first use.
"""

import functools
import json
import os
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.functional import lazy

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("PORTAL_DATA_DIR", BASE_DIR / "var")).resolve()


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# "development" (the default: make demo, the tests, a checkout) or "production".
PROFILE = os.environ.get("PORTAL_PROFILE", "development").strip().lower() or "development"
if PROFILE not in {"development", "production"}:
    raise ImproperlyConfigured(
        f"PORTAL_PROFILE={PROFILE!r}: use 'production' or leave it unset (development)"
    )
PRODUCTION = PROFILE == "production"
if PRODUCTION:
    # Refuse to start on a generated key, any Host header, SQLite or without shared Redis.
    _needed = ("PORTAL_SECRET_KEY", "PORTAL_ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL")
    _missing = [name for name in _needed if not os.environ.get(name, "").strip()]
    if _missing:
        raise ImproperlyConfigured(
            "PORTAL_PROFILE=production needs "
            + ", ".join(_missing)
            + " in the environment (the EnvironmentFile, see deploy/portal.env.example "
            "and docs/deploy.md)"
        )
    if len(os.environ["PORTAL_SECRET_KEY"].strip()) < 50:
        raise ImproperlyConfigured(
            "PORTAL_SECRET_KEY is shorter than 50 characters: make one with "
            "`python3 -c 'import secrets; print(secrets.token_urlsafe(50))'`"
        )
    if _env_bool("PORTAL_DEBUG", False):
        raise ImproperlyConfigured("PORTAL_DEBUG must be off with PORTAL_PROFILE=production")
    if _env_bool("PORTAL_NO_REDIS", False):
        raise ImproperlyConfigured("PORTAL_NO_REDIS cannot be used with PORTAL_PROFILE=production")


@functools.cache
def _secret_key_of_data_dir() -> str:
    """A key generated once per data folder (atomically: of two processes, one key wins)."""
    key_file = DATA_DIR / "secret_key"
    if not key_file.exists():
        DATA_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        draft = key_file.with_name(f".secret_key.{os.getpid()}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(50))
        try:
            os.link(draft, key_file)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return key_file.read_text().strip()


SECRET_KEY = os.environ.get("PORTAL_SECRET_KEY", "").strip() or lazy(_secret_key_of_data_dir, str)()
DEBUG = _env_bool("PORTAL_DEBUG", False)
ALLOWED_HOSTS = _env_list("PORTAL_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
CSRF_TRUSTED_ORIGINS = _env_list(
    "PORTAL_CSRF_TRUSTED_ORIGINS",
    # Production: the site's own https origins; list others explicitly.
    ",".join(f"https://{host}" for host in ALLOWED_HOSTS if not host.startswith("."))
    if PRODUCTION
    else "http://127.0.0.1:8000,http://localhost:8000",
)

# --- Production profile: behind the TLS reverse proxy of deploy/nginx/portal.conf.
if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    # Local health checks and metric scrapes may come over plain http on loopback.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
    SESSION_COOKIE_SECURE = True
    LANGUAGE_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SESSION_COOKIE_HTTPONLY = True
    SECURE_HSTS_SECONDS = int(os.environ.get("PORTAL_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = _env_bool("PORTAL_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = _env_bool("PORTAL_HSTS_PRELOAD", False)
    SECURE_REFERRER_POLICY = "same-origin"
    SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
    # HSTS preload is the administrator's decision (PORTAL_HSTS_PRELOAD), not a default.
    SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "channels",
    "django_q",
    "audit",
    "tokens",
    "hosts",
    "vms",
    "migrations_app",
    "listeners",
    "lab",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # The language: the set_language cookie, else Accept-Language (docs/ui.md, Languages).
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "audit.middleware.RequestIdMiddleware",
]

ROOT_URLCONF = "portal.urls"
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
                "portal.context_processors.vocabulary",
            ],
        },
    },
]
ASGI_APPLICATION = "portal.asgi.application"
# Threads per web worker for reads, and for requests that may wait (portal/asgi.py).
WEB_HTTP_THREADS = max(1, int(os.environ.get("PORTAL_WEB_HTTP_THREADS") or "1"))
WEB_HTTP_WAITING_THREADS = max(1, int(os.environ.get("PORTAL_WEB_HTTP_WAITING_THREADS") or "4"))
# Log a web worker's event loop standing still this long (portal/stall_watch.py); 0: off.
WEB_STALL_WATCH_MS = float(os.environ.get("PORTAL_STALL_WATCH_MS") or "0")
WSGI_APPLICATION = "portal.wsgi.application"

# --- Database -------------------------------------------------------------
SQLITE_PATH = DATA_DIR / "portal.sqlite3"
DATABASE_URL = os.environ.get("DATABASE_URL", "")
SQLITE_OPTIONS = {
    # Concurrent writers: WAL lets readers go on; the busy timeout makes writers wait.
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    "timeout": 20,
    "transaction_mode": "IMMEDIATE",
}
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
    if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
        DATABASES["default"]["CONN_MAX_AGE"] = 0
        DATABASES["default"]["OPTIONS"] = SQLITE_OPTIONS | DATABASES["default"].get("OPTIONS", {})
    elif os.environ.get("PORTAL_DB_POOL_SIZE", "0") != "0":
        # A pool per process: under ASGI each request has its own thread, so CONN_MAX_AGE
        # keeps nothing. Web tier only: a pool must not be inherited across fork() (the
        # task workers fork). "auto": one connection per HTTP thread.
        pool_size = os.environ["PORTAL_DB_POOL_SIZE"]
        DATABASES["default"]["CONN_MAX_AGE"] = 0
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": 1,
            "max_size": WEB_HTTP_THREADS + WEB_HTTP_WAITING_THREADS
            if pool_size == "auto"
            else int(pool_size),
            "timeout": 10,
        }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": SQLITE_PATH,
            "OPTIONS": SQLITE_OPTIONS,
            "TEST": {"NAME": DATA_DIR / "test-portal.sqlite3"},
        }
    }
if (
    DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"
    and os.environ.get("PORTAL_DB_POOL_SIZE", "0") != "0"
):
    # The web tier's SQLite "pool": each HTTP thread (a fixed pool, portal/asgi.py) keeps
    # its connection. Opening one (the PRAGMAs, Django's SQL functions) cost 1.5-3 ms of
    # a list request's 5-8 (docs/performance.md, issue #24).
    DATABASES["default"]["CONN_MAX_AGE"] = None
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: task broker and channel layer ---------------------------------
REDIS_SOCKET = DATA_DIR / "run" / "redis.sock"
REDIS_URL = os.environ.get("REDIS_URL", f"unix://{REDIS_SOCKET}")
# Without Redis: an in-process channel layer (no worker progress) and a database queue.
NO_REDIS = _env_bool("PORTAL_NO_REDIS", False)

CHANNEL_LAYERS = {
    "default": (
        {"BACKEND": "channels.layers.InMemoryChannelLayer"}
        if NO_REDIS
        else {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": REDIS_URL}]},
        }
    )
}

# The login throttle's counters: in Redis, so every process of every node counts together.
CACHES = {
    "default": (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "portal",
        }
        if not NO_REDIS
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

Q_CLUSTER = {
    "name": os.environ.get("PORTAL_Q_NAME", "portal"),
    "workers": int(os.environ.get("PORTAL_Q_WORKERS", "2")),
    **({"orm": "default"} if NO_REDIS else {"redis": REDIS_URL}),
    # A migration may run for hours: django-q2's defaults would deliver it again meanwhile.
    "timeout": int(os.environ.get("PORTAL_Q_TIMEOUT_S", "86400")),
    "retry": int(os.environ.get("PORTAL_Q_RETRY_S", "90000")),
    "max_attempts": 1,
    "ack_failures": True,
    "catch_up": False,
    "save_limit": 1000,
}

# --- Auth, API ------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"

# Enterprise login (docs/deploy.md, LDAP): on when PORTAL_LDAP_SERVER_URI is set; local
# accounts keep working beside it. LDAP groups (their DNs) map to the portal's roles.
LDAP_SERVER_URI = os.environ.get("PORTAL_LDAP_SERVER_URI", "")
# {"<group DN>": "<role>", ...}; roles: viewer, operator, host admin, auditor.
LDAP_ROLE_GROUPS = json.loads(os.environ.get("PORTAL_LDAP_ROLE_GROUPS", "{}") or "{}")
# {"<group DN>": [{"role": "<viewer|operator|host admin>", "host_group": "<name>"}, ...]}:
# roles on one host group (hosts/ldap_grants.py).
LDAP_HOST_GROUP_ROLES = json.loads(os.environ.get("PORTAL_LDAP_HOST_GROUP_ROLES", "{}") or "{}")
AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend"]
if LDAP_SERVER_URI:
    import ldap
    from django_auth_ldap.config import GroupOfNamesType, LDAPSearch

    AUTHENTICATION_BACKENDS.insert(0, "audit.ldap_login.PortalLDAPBackend")
    AUTH_LDAP_SERVER_URI = LDAP_SERVER_URI
    AUTH_LDAP_BIND_DN = os.environ.get("PORTAL_LDAP_BIND_DN", "")
    AUTH_LDAP_BIND_PASSWORD = os.environ.get("PORTAL_LDAP_BIND_PASSWORD", "")
    AUTH_LDAP_USER_SEARCH = LDAPSearch(
        os.environ.get("PORTAL_LDAP_USER_BASE", ""),
        ldap.SCOPE_SUBTREE,
        os.environ.get("PORTAL_LDAP_USER_FILTER", "(uid=%(user)s)"),
    )
    AUTH_LDAP_GROUP_SEARCH = LDAPSearch(
        os.environ.get("PORTAL_LDAP_GROUP_BASE", ""),
        ldap.SCOPE_SUBTREE,
        "(objectClass=groupOfNames)",
    )
    AUTH_LDAP_GROUP_TYPE = GroupOfNamesType()
    AUTH_LDAP_USER_ATTR_MAP = {"first_name": "givenName", "last_name": "sn", "email": "mail"}
    AUTH_LDAP_ALWAYS_UPDATE_USER = True
    AUTH_LDAP_START_TLS = os.environ.get("PORTAL_LDAP_START_TLS", "false") == "true"
    AUTH_LDAP_CONNECTION_OPTIONS = {ldap.OPT_NETWORK_TIMEOUT: 5, ldap.OPT_TIMEOUT: 10}
# Login throttling (portal/login_throttle.py): failures per name or address per window.
LOGIN_FAILURES_PER_USERNAME = int(os.environ.get("PORTAL_LOGIN_FAILURES_PER_USERNAME", "5"))
LOGIN_FAILURES_PER_ADDRESS = int(os.environ.get("PORTAL_LOGIN_FAILURES_PER_ADDRESS", "20"))
LOGIN_FAILURE_WINDOW_S = int(os.environ.get("PORTAL_LOGIN_FAILURE_WINDOW_S", "900"))
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: an unauthenticated API call then gets 401 with WWW-Authenticate.
        "portal.authentication.CachedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": [
        "portal.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    # django-filter, on lists only (a detail URL ignores the query string).
    "DEFAULT_FILTER_BACKENDS": ["core.filters.ListFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "portal.openapi.PortalAutoSchema",
    "EXCEPTION_HANDLER": "portal.api_errors.api_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Live-migration portal API",
    "DESCRIPTION": "Hypervisor hosts, their VMs, and live migrations between them.",
    "VERSION": "0.1.0",
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # A migration's and a batch's "status" are different choice sets.
    "ENUM_NAME_OVERRIDES": {
        "MigrationStatusEnum": "migrations_app.domain.lifecycle.MigrationStatus",
        "BatchStatusEnum": "migrations_app.domain.lifecycle.BatchStatus",
        "BatchKindEnum": "migrations_app.models.BatchKind",
        "WebhookEventEnum": "migrations_app.models.WebhookEvent",
        "WebhookDeliveryStatusEnum": "migrations_app.models.WebhookDeliveryStatus",
        "HostTransportEnum": "hosts.models.Transport",
        "MigrationTransportEnum": "migrations_app.models.TransportMode",
    },
}

# --- Hypervisors ----------------------------------------------------------
# Where hosts may be (hosts.networks): CIDR networks and ".dns.suffix" entries; empty: anywhere.
HOST_NETWORKS = os.environ.get("PORTAL_HOST_NETWORKS", "")
# Seconds to wait for a host to answer before it is marked unreachable.
LIBVIRT_CONNECT_TIMEOUT_S = float(os.environ.get("PORTAL_LIBVIRT_CONNECT_TIMEOUT_S", "5"))
# Default for new hosts: disk paths under these prefixes are on storage every host sees.
SHARED_STORAGE_PATHS = [
    p for p in os.environ.get("PORTAL_SHARED_STORAGE_PATHS", "").split(":") if p
]
# Minutes between inventory syncs of the hosts no live event listener covers (django-q2
# schedule); a host whose listener is alive is read in full once per safety-net period.
INVENTORY_SYNC_MINUTES = int(os.environ.get("PORTAL_INVENTORY_SYNC_MINUTES", "1"))
INVENTORY_SAFETY_NET_MINUTES = int(os.environ.get("PORTAL_INVENTORY_SAFETY_NET_MINUTES", "15"))

# --- i18n, static ---------------------------------------------------------
LANGUAGE_CODE = "en"
# English is the source; the catalogues are in locale/ and compiled by scripts/setup.sh.
LANGUAGES = [
    ("en", "English"),
    ("pt-br", "Português (Brasil)"),
    ("zh-hans", "简体中文"),
]
LOCALE_PATHS = [BASE_DIR / "locale"]
# Dates on the pages in each language's order (portal/formats/).
FORMAT_MODULE_PATH = ["portal.formats"]
# A year: the choice made with the header's switcher survives pages and sessions.
LANGUAGE_COOKIE_AGE = 365 * 24 * 3600
LANGUAGE_COOKIE_SAMESITE = "Lax"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"  # made with the data folder (WhiteNoise wants it)
# WhiteNoise serves static files: from the apps' folders in development, else STATIC_ROOT.
WHITENOISE_USE_FINDERS = not PRODUCTION

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("PORTAL_LOG_LEVEL", "INFO")},
}

# --- Migrations -----------------------------------------------------------
MIGRATION_MAX_DOWNTIME_MS = int(os.environ.get("PORTAL_MIGRATION_MAX_DOWNTIME_MS", "500"))
MIGRATION_MIN_DOWNTIME_MS = 100
# The default convergence policy of a migration (domain/convergence.ConvergencePolicy);
# "none" waits as before. docs/migration-policies.md.
MIGRATION_CONVERGENCE_POLICY = os.environ.get("PORTAL_MIGRATION_CONVERGENCE_POLICY", "none")
# Stalled: no new low of the remaining memory (or the guest outpacing the link) over
# this many memory passes; each policy step restarts the count.
MIGRATION_STALL_PASSES = int(os.environ.get("PORTAL_MIGRATION_STALL_PASSES", "3"))
# minimal_downtime's schedule (ms), oVirt's doubling; aborts after the last.
MIGRATION_CONVERGENCE_DOWNTIME_STEPS_MS = tuple(
    int(ms)
    for ms in os.environ.get(
        "PORTAL_MIGRATION_CONVERGENCE_DOWNTIME_STEPS_MS", "100,200,400,800,1600,3200"
    ).split(",")
)
MIGRATION_TIMEOUT_S = int(os.environ.get("PORTAL_MIGRATION_TIMEOUT_S", "21600"))
MIGRATION_MAX_OUTGOING_PER_HOST = int(os.environ.get("PORTAL_MIGRATION_MAX_OUTGOING", "2"))
MIGRATION_MAX_INCOMING_PER_HOST = int(os.environ.get("PORTAL_MIGRATION_MAX_INCOMING", "2"))
# Seconds between two progress samples while a migration runs (0.2: 5 a second).
MIGRATION_SAMPLE_INTERVAL_S = float(os.environ.get("PORTAL_MIGRATION_SAMPLE_INTERVAL_S", "0.2"))
# A source paused this long (and at least 4x the allowed downtime) while its migration
# runs was paused by someone, not by QEMU's switchover (decisions.paused_by_someone).
MIGRATION_OUTSIDE_PAUSE_GRACE_S = float(
    os.environ.get("PORTAL_MIGRATION_OUTSIDE_PAUSE_GRACE_S", "5")
)
# A post-copy resume whose source still says "post-copy failed" after this long has not
# started and will not: libvirt's call is given up on, the hosts are left as they are
# and the migration needs attention again (decisions.resume_stalled).
POSTCOPY_RESUME_START_S = float(os.environ.get("PORTAL_POSTCOPY_RESUME_START_S", "90"))
# A running migration whose worker has not written a heartbeat for this long is stale.
MIGRATION_STALE_AFTER_S = int(os.environ.get("PORTAL_MIGRATION_STALE_AFTER_S", "30"))
# A host's event listener without a heartbeat for this long is taken over by another
# worker process (any node); its heartbeat, well under.
LISTENER_STALE_AFTER_S = int(
    os.environ.get("PORTAL_LISTENER_STALE_AFTER_S", str(MIGRATION_STALE_AFTER_S))
)
LISTENER_HEARTBEAT_S = float(
    os.environ.get("PORTAL_LISTENER_HEARTBEAT_S", str(max(0.5, LISTENER_STALE_AFTER_S / 6)))
)
# Pre-check: seconds to wait for the destination to answer.
MIGRATION_PRECHECK_TIMEOUT_S = 5.0
# Placement: seconds to wait for each host's CPU comparison (no answer: listed unfit).
PLACEMENT_CPU_CHECK_TIMEOUT_S = float(os.environ.get("PORTAL_PLACEMENT_CPU_CHECK_TIMEOUT_S", "3"))
# A worker's heartbeat interval, well under MIGRATION_STALE_AFTER_S (only a dead one is taken over).
MIGRATION_HEARTBEAT_S = float(
    os.environ.get("PORTAL_MIGRATION_HEARTBEAT_S", str(max(0.5, MIGRATION_STALE_AFTER_S / 6)))
)
# The reconciler enqueues again a queued migration whose task is older than this (lost).
MIGRATION_TASK_LOST_AFTER_S = int(os.environ.get("PORTAL_MIGRATION_TASK_LOST_AFTER_S", "60"))
# How often `run_workers` runs the reconciler (besides the 1-minute schedule).
MIGRATION_RECONCILE_EVERY_S = float(os.environ.get("PORTAL_MIGRATION_RECONCILE_EVERY_S", "15"))
# How often the reconciler loop looks for scheduled migrations that became due.
MIGRATION_SCHEDULE_POLL_S = float(os.environ.get("PORTAL_MIGRATION_SCHEDULE_POLL_S", "1"))

# --- Observability (README "Observability") --------------------------------
# Bearer token for GET /metrics; without it only loopback requests are answered.
METRICS_TOKEN = os.environ.get("PORTAL_METRICS_TOKEN", "")
# Outgoing webhooks: attempts before a delivery fails (10 s, 30 s, 90 s, ... apart), timeout.
WEBHOOK_MAX_ATTEMPTS = int(os.environ.get("PORTAL_WEBHOOK_MAX_ATTEMPTS", "6"))
WEBHOOK_TIMEOUT_S = float(os.environ.get("PORTAL_WEBHOOK_TIMEOUT_S", "5"))
# A migration may not run longer than the task runner lets a task run.
MIGRATION_TIMEOUT_MAX_S = int(Q_CLUSTER["timeout"]) - 600

# --- SSH ------------------------------------------------------------------
# These files are a per-node cache of what the database holds (docs/nodes.md); the key
# path is not configurable (hosts.E001).
SSH_KEY_PATH = DATA_DIR / "ssh" / "id_ed25519"
SSH_KNOWN_HOSTS_PATH = DATA_DIR / "ssh" / "known_hosts"
# libvirt's `ssh` (URI parameter `command`), checking host keys strictly.
SSH_COMMAND_PATH = DATA_DIR / "ssh" / "portal-ssh"
SSH_SUDO_COMMAND_PATH = DATA_DIR / "ssh" / "portal-ssh-sudo"

# --- TLS ------------------------------------------------------------------
TLS_DIR = Path(os.environ.get("PORTAL_TLS_DIR", DATA_DIR / "tls"))
TLS_CLIENT_DIR = TLS_DIR / "client"  # `pkipath` for qemu+tls://, from the database
TLS_CA_DIR = TLS_DIR / "ca"  # a CA kept as files: read once to import it, never written
# Run as root on a host after its certificates are installed, so libvirtd loads them.
TLS_RESTART_COMMAND = os.environ.get("PORTAL_TLS_RESTART_COMMAND", "systemctl restart libvirtd")
