"""Settings, all from environment variables with embedded defaults.

Embedded defaults run everything on one machine with no external service: SQLite under
``BACKUPSITE_HOME`` (default ``./var``), local storage, and kombu's filesystem transport as the
Celery broker. Production points ``DATABASE_URL`` and ``CELERY_BROKER_URL`` at real servers.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from kombu import Exchange, Queue

BASE_DIR = Path(__file__).resolve().parent.parent

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}: expected true/false (1/0, yes/no, on/off), got {raw!r}")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}: expected a whole number, got {raw!r}") from None


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_seconds_list(name: str, default: list[float]) -> list[float]:
    try:
        return [float(item) for item in env_list(name, [str(value) for value in default])]
    except ValueError:
        raise ImproperlyConfigured(f"{name}: expected seconds separated by commas, e.g. 5,30,120") from None


def env_secret(name: str) -> str | None:
    """A secret from ``NAME`` or from the file named by ``NAME_FILE`` (Docker/Kubernetes secrets)."""
    value = os.environ.get(name)
    if value:
        return value
    file_name = os.environ.get(f"{name}_FILE")
    if file_name:
        try:
            return Path(file_name).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE: cannot read {file_name}: {exc.strerror}") from None
    return None


def _persistent_secret_key(home: Path) -> str:
    """Generate SECRET_KEY once and keep it (0600) under BACKUPSITE_HOME."""
    key_file = home / "secret_key"
    if key_file.exists():
        return key_file.read_text().strip()
    home.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key


BACKUPSITE_HOME = Path(env_str("BACKUPSITE_HOME", str(BASE_DIR / "var"))).resolve()
BACKUPSITE_TMP = BACKUPSITE_HOME / "tmp"

SECRET_KEY = env_secret("SECRET_KEY") or _persistent_secret_key(BACKUPSITE_HOME)
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
# models.W040: the catalog's covering indexes (INCLUDE columns) are for a PostgreSQL catalog;
# SQLite builds the same indexes without the extra columns, which is all it can use.
SILENCED_SYSTEM_CHECKS = ["models.W040"]
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# HTTPS (docs/configuration.md, "Production"): BACKUPSITE_HTTPS=true turns on what Django's
# `check --deploy` asks of a site served over HTTPS (redirect to HTTPS, secure cookies, HSTS);
# each setting can also be set on its own from the variable of the same name. Off by default:
# `make run` serves plain HTTP on the loopback.
BACKUPSITE_HTTPS = env_bool("BACKUPSITE_HTTPS", False)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", BACKUPSITE_HTTPS)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", BACKUPSITE_HTTPS)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", BACKUPSITE_HTTPS)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600 if BACKUPSITE_HTTPS else 0)
if SECURE_HSTS_SECONDS < 0:
    raise ImproperlyConfigured(
        "SECURE_HSTS_SECONDS: expected a whole number of seconds, 0 or more (0: no HSTS)"
    )
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", BACKUPSITE_HTTPS)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", BACKUPSITE_HTTPS)


def env_proxy_ssl_header(name: str) -> tuple[str, str] | None:
    """``"X-Forwarded-Proto: https"`` (the header a TLS-terminating proxy sets, and its value for
    HTTPS) as Django's SECURE_PROXY_SSL_HEADER pair; unset or empty: None."""
    raw = env_str(name).strip()
    if not raw:
        return None
    header, colon, value = (part.strip() for part in raw.partition(":"))
    valid_header = header.isascii() and header.replace("-", "").isalnum()
    valid_value = value.isascii() and value.isprintable() and " " not in value and "," not in value
    if not (colon and valid_header and valid_value and value):
        raise ImproperlyConfigured(
            f"{name}: expected a header and the value it has over HTTPS, e.g. "
            f"'X-Forwarded-Proto: https', got {raw!r}"
        )
    return f"HTTP_{header.upper().replace('-', '_')}", value


# Only behind a proxy that sets (and never passes on from the client) this header.
SECURE_PROXY_SSL_HEADER = env_proxy_ssl_header("SECURE_PROXY_SSL_HEADER")

# The admin's session ends after BACKUPSITE_SESSION_MINUTES without activity (backups/access/
# sessions.py slides it, writing at most once a minute; the dashboard's background polls do not
# count as activity, so an abandoned page does not stay logged in).
BACKUPSITE_SESSION_MINUTES = env_int("BACKUPSITE_SESSION_MINUTES", 60)
if BACKUPSITE_SESSION_MINUTES < 1:
    raise ImproperlyConfigured("BACKUPSITE_SESSION_MINUTES: expected a whole number of minutes, at least 1")
SESSION_COOKIE_AGE = BACKUPSITE_SESSION_MINUTES * 60

# The catalog database's password, kept out of DATABASE_URL (a Docker or Kubernetes secret file):
# it replaces the URL's password when set.
_database_password = env_secret("DATABASE_PASSWORD")

INSTALLED_APPS = [
    # The admin's modules are loaded by urls.py (admin.autodiscover()), so management commands
    # and workers, which never serve a page, do not import them at start-up.
    "django.contrib.admin.apps.SimpleAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "backups",
    "schedules",
    "restores",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "backups.access.sessions.IdleTimeoutMiddleware",  # slides the session's expiry with activity
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "backups.audit.RequestMiddleware",  # who and from where, for audit events made by signals
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "backups.api.errors.JsonMethodNotAllowed",  # /api/v1/ answers a wrong method in JSON too
]

ROOT_URLCONF = "backupsite.urls"
WSGI_APPLICATION = "backupsite.wsgi.application"

NINJA_DIR = Path(str(importlib.util.find_spec("ninja").origin)).parent  # type: ignore[union-attr]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates", NINJA_DIR / "templates"],
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


def _database_from_url(url: str) -> dict[str, object]:
    try:
        config = dict(dj_database_url.parse(url, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0)))
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL: {exc} (e.g. postgres://user@host/db)") from None
    if str(config.get("ENGINE", "")).endswith("sqlite3"):
        # Several processes (web, worker, beat) share the file: wait for locks instead of failing.
        given = config.get("OPTIONS") or {}
        assert isinstance(given, dict)
        # WAL: the web pages and progress reads never wait behind a worker's write.
        config["OPTIONS"] = {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL;",
            **given,
        }
    return config


DATABASES = {
    "default": _database_from_url(
        env_str("DATABASE_URL") or f"sqlite:///{BACKUPSITE_HOME / 'backupsite.sqlite3'}"
    )
}
if _database_password is not None:
    DATABASES["default"]["PASSWORD"] = _database_password
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Login (docs/authentication.md). BACKUPSITE_AUTH: the login modes, tried in the listed order
# (e.g. "ldap,local": the directory, then a local break-glass administrator). The ldap mode adds
# django-auth-ldap's AUTH_LDAP_* settings, read from the AUTH_LDAP_* variables (imported only
# then). BACKUPSITE_ROLE_MAP (directory groups -> roles) is checked here, at start-up.
from backups.access import modes, rolemap  # noqa: E402

BACKUPSITE_AUTH = modes.parse_modes(env_str("BACKUPSITE_AUTH", "local"))
AUTHENTICATION_BACKENDS = modes.backends_for(BACKUPSITE_AUTH)
if "ldap" in BACKUPSITE_AUTH:
    from backups.access.ldap import settings_from_env

    globals().update(settings_from_env(os.environ))
BACKUPSITE_ROLE_MAP = rolemap.parse_role_map(env_str("BACKUPSITE_ROLE_MAP"))

# The client's address (the audit log, the proxy login mode): X-Forwarded-For is believed only
# from these reverse proxies, comma-separated CIDRs (e.g. "10.0.0.0/8, ::1"); none by default.
from backups.access.proxies import trusted_networks_from_env  # noqa: E402

BACKUPSITE_TRUSTED_PROXIES = trusted_networks_from_env()

# OpenID Connect (docs/authentication.md): with oidc among the login modes, mozilla-django-oidc's
# settings from the OIDC_* variables (the provider's endpoints are discovered from OIDC_ISSUER at
# the first login, so start-up does not need the provider), and the admin login page's button.
if "oidc" in BACKUPSITE_AUTH:
    from backups.access.oidc import settings_from_env as oidc_settings_from_env

    globals().update(oidc_settings_from_env(os.environ))
    _template_options = TEMPLATES[0]["OPTIONS"]
    assert isinstance(_template_options, dict)
    _template_options["context_processors"].append("backups.access.oidc.views.login_context")

# The proxy and none login modes (docs/authentication.md). proxy: a reverse proxy in
# BACKUPSITE_TRUSTED_PROXIES names the user, and their groups (comma-separated; an empty variable:
# roles are given in the admin instead), in these headers; from anyone else they are ignored.
# none: nobody logs in, every visitor is a read-only Viewer (backups/access/guest.py).


def env_header(name: str, default: str) -> str:
    value = env_str(name, default).strip()
    if value and not (value.isascii() and value.replace("-", "").isalnum()):
        # An underscore would reach Django as a hyphen does: two spellings of one header.
        raise ImproperlyConfigured(
            f"{name}: expected a header name of letters, digits and hyphens (e.g. {default}), got {value!r}"
        )
    return value


BACKUPSITE_PROXY_USER_HEADER = env_header("BACKUPSITE_PROXY_USER_HEADER", "X-Remote-User")
BACKUPSITE_PROXY_GROUPS_HEADER = env_header("BACKUPSITE_PROXY_GROUPS_HEADER", "X-Remote-Groups")
# After the audit's RequestMiddleware: roles changed at a proxy login are audited with the request.
_after_auth = MIDDLEWARE.index("backups.audit.RequestMiddleware") + 1
if "proxy" in BACKUPSITE_AUTH:
    if not BACKUPSITE_TRUSTED_PROXIES:
        raise ImproperlyConfigured(
            "BACKUPSITE_AUTH: mode 'proxy' needs BACKUPSITE_TRUSTED_PROXIES, the addresses of the reverse "
            "proxies whose headers name the user (from anyone else the headers are ignored)"
        )
    if not BACKUPSITE_PROXY_USER_HEADER:
        raise ImproperlyConfigured("BACKUPSITE_PROXY_USER_HEADER: mode 'proxy' needs the user's header")
    MIDDLEWARE.insert(_after_auth, "backups.access.proxy.ProxyUserMiddleware")
if "none" in BACKUPSITE_AUTH:
    MIDDLEWARE.insert(_after_auth, "backups.access.guest.GuestMiddleware")

# Login throttling (django-axes, backups/access/throttle.py): BACKUPSITE_LOGIN_FAILURE_LIMIT failed
# logins for one name from one client address lock that pair out for
# BACKUPSITE_LOGIN_COOLOFF_MINUTES after the last attempt; a successful login forgets them.
from datetime import timedelta  # noqa: E402

INSTALLED_APPS.append("axes")
AUTHENTICATION_BACKENDS.insert(0, "backups.access.throttle.LoginThrottle")  # first: before any password
MIDDLEWARE.append("axes.middleware.AxesMiddleware")  # last: a lockout becomes the login page saying so
AXES_FAILURE_LIMIT = env_int("BACKUPSITE_LOGIN_FAILURE_LIMIT", 5)
if AXES_FAILURE_LIMIT < 1:
    raise ImproperlyConfigured("BACKUPSITE_LOGIN_FAILURE_LIMIT: expected a whole number of at least 1")
_cooloff_minutes = env_int("BACKUPSITE_LOGIN_COOLOFF_MINUTES", 15)
if _cooloff_minutes < 1:
    raise ImproperlyConfigured("BACKUPSITE_LOGIN_COOLOFF_MINUTES: expected a whole number of at least 1")
AXES_COOLOFF_TIME = timedelta(minutes=_cooloff_minutes)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_HANDLER = "backups.access.throttle.PasswordLoginHandler"  # logins that name a user
AXES_CLIENT_IP_CALLABLE = "backups.access.throttle.client_ip"  # behind BACKUPSITE_TRUSTED_PROXIES
AXES_LOCKOUT_CALLABLE = "backups.access.throttle.lockout_response"
AXES_RESET_ON_SUCCESS = True
AXES_DISABLE_ACCESS_LOG = True  # the audit log records logins and logouts

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# The API's Swagger UI (backups/api/site.py) from django-ninja's own templates and static files,
# not a CDN. ninja is not an installed app: importing it costs every process ~100 ms at start
# (pydantic), and only the web needs it. find_spec locates the package without importing it.
STATICFILES_DIRS = [NINJA_DIR / "static"]
STATIC_URL = "static/"
STATIC_ROOT = BACKUPSITE_HOME / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Celery: embedded filesystem transport by default, Redis in production.
_BROKER_DIR = BACKUPSITE_HOME / "broker"
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("in", "processed", "control"):
        (_BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
        "data_folder_in": str(_BROKER_DIR / "in"),
        "data_folder_out": str(_BROKER_DIR / "in"),
        "processed_folder": str(_BROKER_DIR / "processed"),
        # kombu's default is "control" in the current directory: keep it under the home too.
        "control_folder": str(_BROKER_DIR / "control"),
        "store_processed": False,
    }
else:
    # Longer than the longest backup, so acks_late tasks are not redelivered mid-run.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 43200)}
CELERY_TIMEZONE = TIME_ZONE
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Two queues. "celery" carries the backups, restores and verifications; "watch" carries the
# watch and the sweep to a small worker of their own (`celery worker -Q watch -c 1`, which
# backupsite_run and docker/compose.yaml start), so the watch that reaps dead workers' runs never
# waits behind backup firings while every backup process is busy (the soak saw killed runs wait
# 12 minutes). A worker started without -Q consumes every queue listed here, both: a deployment
# with only plain workers keeps working as before (its watch may still wait behind backups).
CELERY_TASK_QUEUES = (
    Queue("celery", Exchange("celery"), routing_key="celery"),
    Queue("watch", Exchange("watch"), routing_key="watch"),
)
CELERY_TASK_ROUTES = {
    "schedules.tasks.watch": {"queue": "watch"},
    "backups.tasks.sweep_leftovers": {"queue": "watch"},
    "restores.tasks.drop_expired_provisions": {"queue": "watch"},
    "backups.tasks.watch_external_targets": {"queue": "watch"},
}
CELERY_BEAT_SCHEDULER = "schedules.beat:DatabaseScheduler"
# Fixed entries beside the schedules' own tasks (django-celery-beat stores them on start). A
# firing that waited longer than expire_seconds (django-celery-beat's name for Celery's
# `expires`; it silently drops an `expires` option) is discarded by the worker instead of
# running late in a pile: the next firing does the same work.
CELERY_BEAT_SCHEDULE = {
    "backupsite-watch": {
        "task": "schedules.tasks.watch",
        "schedule": 60.0,
        "options": {"expire_seconds": 120},
    },
    # Upload leftovers older than a day (backups.cleanup.sweep_storages), from every storage.
    "backupsite-sweep": {
        "task": "backups.tasks.sweep_leftovers",
        "schedule": 6 * 3600.0,
        "options": {"expire_seconds": 6 * 3600},
    },
    # Provisioned developer copies past their TTL (restores.provisioning.drop_expired).
    "backupsite-provision-ttl": {
        "task": "restores.tasks.drop_expired_provisions",
        "schedule": 600.0,
        "options": {"expire_seconds": 600},
    },
    # External targets (backups.watching): one scan of each, queued on its target's queue.
    "backupsite-external-watch": {
        "task": "backups.tasks.watch_external_targets",
        "schedule": 300.0,
        "options": {"expire_seconds": 300},
    },
}

# Backups
BACKUPSITE_CHUNK_SIZE = env_int("BACKUPSITE_CHUNK_SIZE", 1024 * 1024)
BACKUPSITE_PROGRESS_INTERVAL = 1.0
# A copy that failed is retried from a confirmed copy after each of these delays (seconds).
BACKUPSITE_COPY_RETRY_DELAYS = env_seconds_list("BACKUPSITE_COPY_RETRY_DELAYS", [5, 30, 120])
# A required storage a worker found unreachable after every retry is probed once, not retried,
# by that worker's runs for this long after (an outage fails runs at once instead of holding
# every worker for the retries).
BACKUPSITE_STORAGE_DOWN_SECONDS = env_int("BACKUPSITE_STORAGE_DOWN_SECONDS", 300)
# Four eyes: a restore into a protected target waits this long for a second person's approval.
BACKUPSITE_RESTORE_APPROVAL_HOURS = env_int("BACKUPSITE_RESTORE_APPROVAL_HOURS", 24)
# Another authorisation scheme's veto: a dotted path to f(user, action, target) -> bool that
# backups.access.roles.can() asks first (docs/authentication.md, "Roles").
BACKUPSITE_PERMISSION_CHECK = env_str("BACKUPSITE_PERMISSION_CHECK")
# A running backup touches its heartbeat this often; one silent for the stale time is reaped
# as "worker lost" (any host). The stale time must be well above the interval.
# Dead man's switch: a schedule with no successful backup this long after a due run alerts once.
BACKUPSITE_MISSED_GRACE_MINUTES = env_int("BACKUPSITE_MISSED_GRACE_MINUTES", 60)
# A scheduled backup whose raw size is below this percentage of the schedule's previous
# successful one is flagged as an anomaly (a dump that silently lost tables).
BACKUPSITE_SHRINK_PERCENT = env_int("BACKUPSITE_SHRINK_PERCENT", 50)
BACKUPSITE_HEARTBEAT_SECONDS = env_int("BACKUPSITE_HEARTBEAT_SECONDS", 15)
BACKUPSITE_HEARTBEAT_STALE_SECONDS = env_int("BACKUPSITE_HEARTBEAT_STALE_SECONDS", 120)
if BACKUPSITE_HEARTBEAT_STALE_SECONDS < 3 * BACKUPSITE_HEARTBEAT_SECONDS:
    raise ImproperlyConfigured(
        "BACKUPSITE_HEARTBEAT_STALE_SECONDS must be at least 3 x BACKUPSITE_HEARTBEAT_SECONDS"
    )
# This host restores and deep-verifies backups: every key a target or schedule encrypts to needs
# its identity here (backup_config refuses one without). false on a backup-only host.
BACKUPSITE_RESTORES_HERE = env_bool("BACKUPSITE_RESTORES_HERE", True)
# The TOML file that defines this site (e.g. /etc/backupsite/backupsite.toml): applied at start,
# the rows it defines read-only in the admin; backup_config check|apply|diff|wait use it by default.
BACKUPSITE_CONFIG = env_str("BACKUPSITE_CONFIG")
# Signed download URLs (S3, GCS, Azure) stay valid this long; at most 300 seconds.
BACKUPSITE_DOWNLOAD_URL_SECONDS = min(env_int("BACKUPSITE_DOWNLOAD_URL_SECONDS", 300), 300)

# The HTTP API (/api/v1/, docs/API.md): each personal token may make this many requests a
# minute (0: no limit), counted in the cache below so every web process shares the count; a
# token lives at most BACKUPSITE_API_TOKEN_MAX_DAYS.
BACKUPSITE_API_RATE_LIMIT = env_int("BACKUPSITE_API_RATE_LIMIT", 120)
BACKUPSITE_API_TOKEN_MAX_DAYS = env_int("BACKUPSITE_API_TOKEN_MAX_DAYS", 365)
# A backup queued by Run now or the API (a PENDING row) that no worker took this long is ended
# FAILED "never started" by the watch, with an alert.
BACKUPSITE_QUEUED_STALE_HOURS = env_int("BACKUPSITE_QUEUED_STALE_HOURS", 24)
if BACKUPSITE_API_RATE_LIMIT < 0:
    raise ImproperlyConfigured("BACKUPSITE_API_RATE_LIMIT: expected requests a minute, 0 (no limit) or more")
if BACKUPSITE_API_TOKEN_MAX_DAYS < 1:
    raise ImproperlyConfigured("BACKUPSITE_API_TOKEN_MAX_DAYS: expected a whole number of days, at least 1")


def cache_from_url(url: str, home: Path) -> dict[str, object]:
    """The default cache: ``redis://host:6379/1`` (shared by every host; production), or a
    directory under BACKUPSITE_HOME shared by the processes of this host (the default), or
    ``locmem://`` (one process only: a single-process development server)."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        return {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}
    if url == "locmem://":
        return {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    if url:
        raise ImproperlyConfigured(
            "BACKUPSITE_CACHE_URL: expected redis://host:6379/1, locmem:// or nothing (a directory under "
            f"BACKUPSITE_HOME), got a {url.partition(':')[0]!r} URL"  # not the URL: it may hold a password
        )
    return {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": str(home / "cache"),
        "OPTIONS": {"MAX_ENTRIES": 10000},
    }


CACHES = {"default": cache_from_url(env_str("BACKUPSITE_CACHE_URL").strip(), BACKUPSITE_HOME)}

# Notifications. Email goes through Django's mail settings (an SMTP server).
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_secret("EMAIL_HOST_PASSWORD") or ""
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)  # STARTTLS, usually port 587
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)  # implicit TLS, usually port 465
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("EMAIL_USE_TLS and EMAIL_USE_SSL: set at most one of them")
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 30)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "backupsite@localhost")
SERVER_EMAIL = env_str("SERVER_EMAIL", DEFAULT_FROM_EMAIL)
# The events a schedule's notification_email receives.
BACKUPSITE_NOTIFICATION_EMAIL_EVENTS = env_list(
    "BACKUPSITE_NOTIFICATION_EMAIL_EVENTS",
    ["backup_failed", "missed", "anomaly", "verification_failed", "recovered"],
)
# An alert whose sender stopped before sending it is sent by the watch: at once when the sender
# was a process of the watch's host, after this many seconds (longer than any channel's
# retries) when it ran elsewhere.
BACKUPSITE_NOTIFICATION_RESEND_SECONDS = env_int("BACKUPSITE_NOTIFICATION_RESEND_SECONDS", 3600)
# Where the admin is reached (e.g. https://backups.example.net): notifications then link to it.
BACKUPSITE_BASE_URL = env_str("BACKUPSITE_BASE_URL", "")

# Secret references (backups/secrets.py): ${file:...} reads only files inside these directories
# (colon- or comma-separated; unset or empty: the defaults); ${NAME} reads only variables that
# match one of these glob patterns, when any are set. The app's own secrets are never read.
BACKUPSITE_SECRETS_DIRS = [
    item.strip() for item in env_str("BACKUPSITE_SECRETS_DIRS").replace(":", ",").split(",") if item.strip()
] or ["/run/secrets", "/etc/backupsite/secrets", str(BACKUPSITE_HOME / "secrets")]
BACKUPSITE_SECRET_ENV = env_list("BACKUPSITE_SECRET_ENV", [])

# Health, readiness and metrics (backups/views/probes.py): /healthz, /readyz and /metrics are
# answered by the first middleware, before any host check (ALLOWED_HOSTS) or HTTPS redirect:
# Kubernetes probes send the pod's address over plain HTTP. /metrics needs a bearer token
# (BACKUPSITE_METRICS_TOKEN or BACKUPSITE_METRICS_TOKEN_FILE) or a client address inside
# BACKUPSITE_METRICS_ALLOW (comma-separated CIDRs, behind BACKUPSITE_TRUSTED_PROXIES); neither
# set: refused. Readiness fails when beat's heartbeat is older than BACKUPSITE_BEAT_STALE_SECONDS.
from backups.access.proxies import parse_networks  # noqa: E402

MIDDLEWARE.insert(0, "backups.views.probes.ProbesMiddleware")
BACKUPSITE_METRICS_TOKEN = env_secret("BACKUPSITE_METRICS_TOKEN") or ""
try:
    BACKUPSITE_METRICS_ALLOW = parse_networks(env_str("BACKUPSITE_METRICS_ALLOW"))
except ValueError as exc:
    raise ImproperlyConfigured(f"BACKUPSITE_METRICS_ALLOW: {exc}") from None
BACKUPSITE_BEAT_STALE_SECONDS = env_int("BACKUPSITE_BEAT_STALE_SECONDS", 180)
if BACKUPSITE_BEAT_STALE_SECONDS < 45:
    raise ImproperlyConfigured(
        "BACKUPSITE_BEAT_STALE_SECONDS: expected at least 45 (beat records its heartbeat every 15 s)"
    )

# LOG_FORMAT=json: one JSON object per line (backups/logs.py), with the run's id, target and step;
# the Celery worker and beat use it too, with the same redacting filter (backupsite/celery.py).
LOG_FORMATS = ("plain", "json")
LOG_FORMAT = env_str("LOG_FORMAT", "plain").strip().lower()
if LOG_FORMAT not in LOG_FORMATS:
    raise ImproperlyConfigured(
        f"LOG_FORMAT: expected one of {', '.join(LOG_FORMATS)}, got {env_str('LOG_FORMAT')!r}"
    )
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact_secrets": {"()": "backups.secrets.RedactingFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "backups.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["redact_secrets"],
        }
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "WARNING")},
    "loggers": {"backups": {"level": env_str("LOG_LEVEL", "WARNING"), "propagate": True}},
}
WHITENOISE_USE_FINDERS = True  # serve the admin assets without a collectstatic step
