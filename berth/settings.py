"""Berth's settings: one module, every value from the environment.

Each variable is documented in README.md ("Configuration"). Bad values stop
Berth at start-up with a message naming the variable (see berth/env.py).
"""

from datetime import timedelta
from pathlib import Path

from django.utils.translation import gettext_lazy as _

from berth import datadir
from berth.env import (
    database_from_url,
    deploy_settle_seconds,
    encryption_key,
    envaddresses,
    envbool,
    envdirs,
    envduration,
    envint,
    envlist,
    envstr,
    instance_id,
    listen_address,
    private_directory,
    secret_key,
    task_lost_after,
)

BASE_DIR = Path(__file__).resolve().parent.parent

DATA_DIR = private_directory(datadir.configured(BASE_DIR))

SECRET_KEY = secret_key(DATA_DIR)
BERTH_ENCRYPTION_KEY = encryption_key(DATA_DIR)
BERTH_INSTANCE_ID = instance_id(DATA_DIR)
DEBUG = envbool("BERTH_DEBUG", False)
BERTH_LISTEN = listen_address("BERTH_LISTEN", "127.0.0.1:8000")
ALLOWED_HOSTS = envlist("BERTH_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "template_partials",
    "django_q",
    "workloads",
    "snapshots",
    "backups",
    "alerts",
    "web",
    "axes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Every response, the admin's and the refusals' too: web/csp.py.
    "web.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    # Before the CSRF check, which would read (and spool) a body of any size.
    "web.bodies.BodyLimitMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last: it turns a login refused for too many failures into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "berth.urls"
WSGI_APPLICATION = "berth.wsgi.application"

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
                "django.template.context_processors.i18n",
            ],
        },
    }
]

DATABASES = {
    "default": database_from_url(
        envstr("DATABASE_URL", ""), sqlite_default=DATA_DIR / datadir.DATABASE_NAME
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# django-q2 keeps its monitoring data in the cache; a database cache is shared
# between the web server and every task worker process.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "berth_cache",
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Failed logins (the login page, the admin, API tokens) are limited per account
# and per client address: web/logins.py, docs/security.md.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = envint("BERTH_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(seconds=envduration("BERTH_LOGIN_LOCKOUT", 900, minimum=1))
AXES_LOCKOUT_PARAMETERS = "web.logins.lockout_parameters"
AXES_CLIENT_IP_CALLABLE = "web.logins.client_address"
AXES_HANDLER = "web.logins.LoginAttempts"
# web.logins.LoginAttempts clears a successful account's own failures; Axes' own reset
# would clear the address's too.
AXES_RESET_ON_SUCCESS = False
# A refused try during a lockout neither counts nor makes the lockout longer.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_DISABLE_ACCESS_LOG = True
AXES_LOCKOUT_CALLABLE = "web.logins.lockout_response"
AXES_SENSITIVE_PARAMETERS = ["password", "csrfmiddlewaretoken"]
AXES_VERBOSE = False
# Largest request body outside the snapshot import, which has its own cap
# (BERTH_SNAPSHOT_MAX_UPLOAD_BYTES): web/bodies.py.
# At most Django's FILE_UPLOAD_MAX_MEMORY_SIZE (2.5 MB): a larger body would be spooled.
BERTH_MAX_BODY_BYTES = envint("BERTH_MAX_BODY_BYTES", 2 << 20, minimum=64 << 10,
                              maximum=2_621_440)
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("ru", _("Russian"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
if DEBUG:
    # runserver serves unhashed static files through the finders; the hashed,
    # compressed storage needs the manifest `collectstatic` writes.
    STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
X_FRAME_OPTIONS = "DENY"
# Behind a TLS-terminating proxy: secure cookies, trust its X-Forwarded-Proto,
# and accept its origin for CSRF.
BERTH_HTTPS = envbool("BERTH_HTTPS", False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = BERTH_HTTPS
if BERTH_HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
CSRF_TRUSTED_ORIGINS = envlist("BERTH_CSRF_TRUSTED_ORIGINS", [])

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: its WWW-Authenticate header makes an anonymous call 401.
        "web.logins.LimitedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    # DRF's page numbers, refusing a page or page size the schema does not allow.
    "DEFAULT_PAGINATION_CLASS": "web.api.pagination.PageNumbers",
    "PAGE_SIZE": 50,
    # drf-spectacular's, with the errors every view can answer (web/api/schema.py).
    "DEFAULT_SCHEMA_CLASS": "web.api.schema.BerthSchema",
    "EXCEPTION_HANDLER": "web.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Berth API",
    "DESCRIPTION": "Deploy workloads onto the local Docker engine and keep their data safe.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema maps the whole API: only for those who may read workloads.
    "SERVE_PERMISSIONS": ["web.api.schema.SchemaReaders"],
    # A body sent and a body received are separate components, so that write-only and
    # read-only fields, and what a request must not leave blank, are exact.
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI's assets are served from the installed sidecar package, not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # A copy's kind and a copy rule's kinds are one choice set, under one name.
    "ENUM_NAME_OVERRIDES": {"CopyKindEnum": "backups.models.CopyKind"},
}

# Tests run tasks synchronously (BERTH_TASKS_SYNC=1, set by conftest.py before
# Django starts): django-q2 reads Q_CLUSTER once, at import.
BERTH_TASKS_SYNC = envbool("BERTH_TASKS_SYNC", False)
BERTH_REDIS_URL = envstr("BERTH_REDIS_URL", "")
# When a task still in the broker counts as lost: the broker hands it out
# again then (django-q2's `retry`), and Berth's rows stop waiting for it.
BERTH_TASK_LOST_AFTER = task_lost_after()
Q_CLUSTER = {
    "name": "berth",
    "workers": envint("BERTH_WORKERS", 2, minimum=1),
    # A deploy or restore must never run twice because it outlived the
    # broker's visibility window: retry is longer than timeout, and a failed
    # task is acknowledged (recorded on our own rows) instead of re-queued.
    "timeout": BERTH_TASK_LOST_AFTER - 600,
    "retry": BERTH_TASK_LOST_AFTER,
    "max_attempts": 1,
    "ack_failures": True,
    "catch_up": False,
    "save_limit": 250,
    "sync": BERTH_TASKS_SYNC,
    "label": _("Tasks"),
    "cache": "default",
}
if BERTH_REDIS_URL:
    Q_CLUSTER["redis"] = BERTH_REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# Host directories under which `absolute` volumes may live; none by default.
BERTH_ABSOLUTE_VOLUME_ROOTS = envlist("BERTH_ABSOLUTE_VOLUME_ROOTS", [])
# Host addresses ports may be published on besides loopback (0.0.0.0 or :: for every one).
BERTH_PORT_ADDRESSES = envaddresses("BERTH_PORT_ADDRESSES")
BERTH_DEPLOY_HISTORY_KEEP = envint("BERTH_DEPLOY_HISTORY_KEEP", 50, minimum=1)
# Image collection keeps each workload's N most recent images besides those in use or that
# the ledger can roll back to (engine/images.py).
BERTH_IMAGE_KEEP = envint("BERTH_IMAGE_KEEP", 3, minimum=1)
BERTH_DEPLOY_LOCK_TIMEOUT = envint("BERTH_DEPLOY_LOCK_TIMEOUT", 900, minimum=1)
BERTH_DOCKER_TIMEOUT = envint("BERTH_DOCKER_TIMEOUT", 120, minimum=5)
# How long a deploy watches its new containers after starting them: one that exits
# (exited_at_start, out_of_memory) or whose health check fails (unhealthy) fails the
# deploy, and the old ones, stopped meanwhile, start again (docs/deploys.md).
BERTH_DEPLOY_SETTLE_SECONDS = deploy_settle_seconds()
# How long, from the start, a deploy waits for new containers with a health check to
# report healthy; past it they count as unhealthy.
BERTH_DEPLOY_HEALTH_TIMEOUT = envint("BERTH_DEPLOY_HEALTH_TIMEOUT", 120, minimum=1,
                                     maximum=3600)
# Git-built workloads: how long one git command and one image build may run,
# and how much of a build's log is kept with its deploy (the tail).
BERTH_GIT_TIMEOUT = envint("BERTH_GIT_TIMEOUT", 600, minimum=5)
BERTH_BUILD_TIMEOUT = envint("BERTH_BUILD_TIMEOUT", 1800, minimum=30)
BERTH_BUILD_LOG_KIB = envint("BERTH_BUILD_LOG_KIB", 256, minimum=16)
# Directories under which file:// repositories may live; none by default
# (file:// repositories are off until an operator names where they may be).
BERTH_GIT_FILE_ROOTS = envlist("BERTH_GIT_FILE_ROOTS", [])

# Backups that leave the host (backups/, lib/offsite.py): directories under
# which a `directory` target may lie (none by default: such targets are off
# until an operator names where they may be), and how long one call to a
# target may wait for an answer.
BERTH_BACKUP_DIRECTORY_ROOTS = envdirs("BERTH_BACKUP_DIRECTORY_ROOTS")
BERTH_BACKUP_TIMEOUT = envint("BERTH_BACKUP_TIMEOUT", 30, minimum=1)
# A copy that failed in a way that may pass (the target did not answer, the worker
# stopped) is tried again by the sweep after 1, 2, 4, ... times the delay, up to the
# longest delay, at most this many attempts in all (1: never again).
# scrypt's work for a target's passphrase-sealed identity: 2**N rounds, 2**N KiB of memory.
BERTH_PASSPHRASE_WORK_FACTOR = envint("BERTH_PASSPHRASE_WORK_FACTOR", 18, minimum=10, maximum=22)
BERTH_COPY_RETRY_ATTEMPTS = envint("BERTH_COPY_RETRY_ATTEMPTS", 8, minimum=1)
BERTH_COPY_RETRY_DELAY = envduration("BERTH_COPY_RETRY_DELAY", 60, minimum=1)
BERTH_COPY_RETRY_MAX_DELAY = envduration("BERTH_COPY_RETRY_MAX_DELAY", 3600, minimum=1)
BERTH_COPY_STRAY_AFTER = envduration("BERTH_COPY_STRAY_AFTER", 6 * 3600, minimum=60)
# A scheduled backup that starts more than this after its time is recorded as late.
BERTH_SCHEDULE_LATE_AFTER = envduration("BERTH_SCHEDULE_LATE_AFTER", 300, minimum=60)

# Notifications (alerts/, engine/alerts.py): how long one attempt may wait for the
# service, and the retries of one that failed in a way that may pass (as for copies).
BERTH_NOTIFY_TIMEOUT = envint("BERTH_NOTIFY_TIMEOUT", 10, minimum=1)
BERTH_NOTIFY_RETRY_ATTEMPTS = envint("BERTH_NOTIFY_RETRY_ATTEMPTS", 5, minimum=1)
BERTH_NOTIFY_RETRY_DELAY = envduration("BERTH_NOTIFY_RETRY_DELAY", 60, minimum=1)
BERTH_NOTIFY_RETRY_MAX_DELAY = envduration("BERTH_NOTIFY_RETRY_MAX_DELAY", 3600, minimum=1)

# The stats sampler (`manage.py sample_stats`, engine/sampler.py).
BERTH_STATS_INTERVAL = envint("BERTH_STATS_INTERVAL", 15, minimum=1)
BERTH_STATS_RETENTION = envduration("BERTH_STATS_RETENTION", 7 * 86400, minimum=3600)
# A one-shot stats call waits for the engine's next collection (about once a second):
# with a worker per running container, every container is read in the same one.
BERTH_STATS_WORKERS = envint("BERTH_STATS_WORKERS", 256, minimum=1)
# How long a tick waits for the stats calls before it writes what it has: a call
# still running then is abandoned for that tick (engine/sampler.py).
BERTH_STATS_DEADLINE = envint("BERTH_STATS_DEADLINE", 5, minimum=1)
# The per-minute and per-hour rollups the long windows are read from.
BERTH_STATS_MINUTE_RETENTION = envduration(
    "BERTH_STATS_MINUTE_RETENTION", 8 * 86400, minimum=7 * 86400)
BERTH_STATS_HOUR_RETENTION = envduration("BERTH_STATS_HOUR_RETENTION", 90 * 86400, minimum=86400)
# Not a variable: one stats call may take at most an interval (5 s at least),
# which bounds how long a tick can run on a slow engine.
BERTH_STATS_TIMEOUT = max(5, BERTH_STATS_INTERVAL)

# Snapshots (README "Snapshots"). Retention: the newest N of each kind per workload.
BERTH_SNAPSHOT_KEEP = {
    "manual": envint("BERTH_SNAPSHOT_KEEP_MANUAL", 10, minimum=1),
    "pre_deploy": envint("BERTH_SNAPSHOT_KEEP_PRE_DEPLOY", 5, minimum=1),
    "pre_restore": envint("BERTH_SNAPSHOT_KEEP_PRE_RESTORE", 5, minimum=1),
    "scheduled": envint("BERTH_SNAPSHOT_KEEP_SCHEDULED", 7, minimum=1),
}
# Imported snapshots are a bucket of their own (whatever their kind), so that an
# import never pushes a captured snapshot out: the newest N of them are kept.
BERTH_SNAPSHOT_KEEP_IMPORTED = envint("BERTH_SNAPSHOT_KEEP_IMPORTED", 3, minimum=1)
# A pre-restore snapshot younger than this is never pruned, however many there are.
BERTH_SNAPSHOT_PRE_RESTORE_MIN_AGE_HOURS = envint(
    "BERTH_SNAPSHOT_PRE_RESTORE_MIN_AGE_HOURS", 72, minimum=0
)
# A capture holding less than this share of the previous snapshot's data is flagged.
BERTH_SNAPSHOT_SHRINK_PERCENT = envint("BERTH_SNAPSHOT_SHRINK_PERCENT", 50, minimum=0, maximum=100)
# The site-wide default of each workload's "back up before deploy" setting.
BERTH_AUTO_BACKUP_BEFORE_DEPLOY = envbool("BERTH_AUTO_BACKUP_BEFORE_DEPLOY", False)
# The pre-deploy snapshot's budget: past either, it is abandoned and the deploy goes on
# without it (engine/locked/capture.py, backup_before_deploy). Other captures have none.
BERTH_PRE_DEPLOY_BACKUP_TIMEOUT = envduration("BERTH_PRE_DEPLOY_BACKUP_TIMEOUT", 300, minimum=1)
BERTH_PRE_DEPLOY_BACKUP_MAX_BYTES = envint("BERTH_PRE_DEPLOY_BACKUP_MAX_BYTES", 10 << 30, minimum=1)
# What one archive may hold; the capture and the extractor enforce the same caps.
BERTH_SNAPSHOT_MAX_BYTES = envint("BERTH_SNAPSHOT_MAX_BYTES", 1 << 40, minimum=1)
BERTH_SNAPSHOT_MAX_FILE_BYTES = envint("BERTH_SNAPSHOT_MAX_FILE_BYTES", 256 << 30, minimum=1)
BERTH_SNAPSHOT_MAX_ENTRIES = envint("BERTH_SNAPSHOT_MAX_ENTRIES", 1_000_000, minimum=1)
BERTH_SNAPSHOT_MAX_UPLOAD_BYTES = envint("BERTH_SNAPSHOT_MAX_UPLOAD_BYTES", 20 << 30, minimum=1)
# Free space and inodes an extraction leaves on the filesystem it writes to.
BERTH_SNAPSHOT_RESERVE_BYTES = envint("BERTH_SNAPSHOT_RESERVE_BYTES", 256 << 20, minimum=0)
BERTH_SNAPSHOT_RESERVE_INODES = envint("BERTH_SNAPSHOT_RESERVE_INODES", 10_000, minimum=0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": envstr("BERTH_LOG_LEVEL", "INFO").upper()},
    "loggers": {
        "django_q": {"level": "WARNING"},
        # Apprise's own lines can quote a channel's URL (its tokens): they never reach the
        # log as they are; lib/notifier.py logs a failed send's lines redacted.
        "apprise": {"handlers": [], "propagate": False},
        # At DEBUG, urllib3 logs each request's path, where a webhook's token lives.
        "urllib3": {"level": "INFO"},
    },
}
