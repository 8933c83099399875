"""Django settings, read only from environment variables (README "Configuration")."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(
        f"{name} must be a boolean (1/0/true/false), got {value!r}"
    )


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from exc


def env_list(name: str, default: str) -> list[str]:
    return [
        item.strip()
        for item in os.environ.get(name, default).split(",")
        if item.strip()
    ]


VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))


def _load_local_env(path: Path) -> None:
    """Defaults for this checkout from ``var/local.env`` (written by ``make run``).

    ``NAME=value`` lines, ``#`` comments; a variable already in the environment wins,
    so production (which has no such file and sets its own) is unaffected.
    """
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip().isidentifier():
            raise ImproperlyConfigured(
                f"{path}:{number}: expected NAME=value, got {line!r}"
            )
        os.environ.setdefault(name.strip(), value.strip())


_load_local_env(VAR_DIR / "local.env")
DEBUG = env_bool("DEBUG", False)


def _secret_key() -> str:
    key = os.environ.get("SECRET_KEY", "")
    if key:
        return key
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set and DEBUG is off: set SECRET_KEY (50+ random "
            "characters), or DEBUG=1 for a local development server (`make run` "
            f"writes DEBUG=1 to {VAR_DIR / 'local.env'} for this checkout)."
        )
    # Development only: one random key per checkout, kept so sessions survive restarts.
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    key_file = VAR_DIR / "dev-secret-key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # Serves /api/docs' Swagger UI from this app's static files, not a CDN.
    "ninja",
    "radiology.apps.RadiologyConfig",
]

MIDDLEWARE = [
    "radiology.middleware.SecurityHeadersMiddleware",
    "radiology.middleware.RequestSizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "radiology.middleware.JsonErrorsMiddleware",
]

ROOT_URLCONF = "radiology.urls"
WSGI_APPLICATION = "radiology.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server read while the worker writes; IMMEDIATE transactions
    # take the write lock up front instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    if DATABASES["default"]["NAME"] not in ("", ":memory:"):
        Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
elif DATABASES["default"]["ENGINE"].startswith("django.db.backends.postgresql"):
    # No statement runs longer than this (a search gone wrong must not hold the
    # server): PostgreSQL cancels it and the request fails with a JSON error.
    timeout_ms = env_int("DATABASE_STATEMENT_TIMEOUT_MS", 30000)
    if timeout_ms > 0:
        DATABASES["default"].setdefault("OPTIONS", {})["options"] = (
            f"-c statement_timeout={timeout_ms}"
        )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {
        "NAME": "django.contrib.auth.password_validation."
        "UserAttributeSimilarityValidator"
    },
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "studies"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", VAR_DIR / "static"))
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))
MEDIA_URL = "/media/"  # never served directly: files go through access-checked views
STORAGES = {
    # Stored files live under MEDIA_ROOT (atomic renames and memory maps need a real
    # file system); workers on several hosts share it (NFS, EFS, CephFS).
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage",
    },
}
WHITENOISE_USE_FINDERS = DEBUG

# Uploads: large files stream to temporary files, never into memory.
UPLOAD_MAX_BYTES = env_int("UPLOAD_MAX_BYTES", 2 * 1024**3)
UPLOAD_MAX_FILES = env_int("UPLOAD_MAX_FILES", 5000)
ZIP_MAX_ENTRIES = env_int("ZIP_MAX_ENTRIES", 20000)
ZIP_MAX_UNCOMPRESSED_BYTES = env_int("ZIP_MAX_UNCOMPRESSED_BYTES", 4 * 1024**3)
ZIP_MAX_RATIO = env_int("ZIP_MAX_RATIO", 200)
DICOM_MAX_PIXELS = env_int("DICOM_MAX_PIXELS", 1024 * 1024 * 2000)
DATA_UPLOAD_MAX_NUMBER_FILES = UPLOAD_MAX_FILES
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
FILE_UPLOAD_PERMISSIONS = 0o640

# Models and inference.
MODELS_ROOT = Path(os.environ.get("MODELS_ROOT", BASE_DIR / "models"))
DENOISE_DEFAULT_MODEL = os.environ.get("DENOISE_DEFAULT_MODEL", "")
DENOISE_DEVICE = os.environ.get("DENOISE_DEVICE", "auto")
# Precision of jobs that ask for none; "auto" on a CPU times fp32 against bf16 once.
DENOISE_PRECISION = os.environ.get("DENOISE_PRECISION", "auto")
DENOISE_SOFT_TIME_LIMIT_S = env_int("DENOISE_SOFT_TIME_LIMIT_S", 1800)
DENOISE_HARD_TIME_LIMIT_S = env_int("DENOISE_HARD_TIME_LIMIT_S", 2100)
DENOISE_STALE_AFTER_S = env_int("DENOISE_STALE_AFTER_S", 120)
DENOISE_RESEND_QUEUED_AFTER_S = env_int("DENOISE_RESEND_QUEUED_AFTER_S", 900)
DENOISE_MAX_ATTEMPTS = env_int("DENOISE_MAX_ATTEMPTS", 5)

# Celery: embedded default is kombu's filesystem transport under var/, no Redis needed.
BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
    # Must exceed the hard time limit, or Redis redelivers a job that is still running.
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT_S", 3 * 3600),
}
if CELERY_BROKER_URL.startswith("filesystem"):
    for sub in ("in", "processed", "control"):
        (BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS.update(
        {
            "data_folder_in": str(BROKER_DIR / "in"),
            "data_folder_out": str(BROKER_DIR / "in"),
            "processed_folder": str(BROKER_DIR / "processed"),
            "control_folder": str(BROKER_DIR / "control"),
            "store_processed": False,
        }
    )
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "radiology.tasks.run_denoise_job": {"queue": "gpu"},
    "radiology.tasks.run_model_finetune": {"queue": "training"},
}
CELERY_TASK_ANNOTATIONS = {
    "radiology.tasks.run_denoise_job": {
        "soft_time_limit": DENOISE_SOFT_TIME_LIMIT_S,
        "time_limit": DENOISE_HARD_TIME_LIMIT_S,
    },
    # Up to 240 training minutes plus data preparation, export and the decision;
    # on its own queue ("training", its own worker), so denoise jobs never wait
    # behind it. Acknowledged on receipt, so Redis' visibility timeout never
    # redelivers it.
    "radiology.tasks.run_model_finetune": {
        "soft_time_limit": 5 * 3600,
        "time_limit": 5 * 3600 + 300,
    },
}
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# A pool process warms up the default model before it reports ready (tasks.py):
# CUDA start-up and the first kernels can take far longer than Celery's 4 s
# default, after which it would kill and restart the process again and again.
CELERY_WORKER_PROC_ALIVE_TIMEOUT = env_int("CELERY_WORKER_PROC_ALIVE_TIMEOUT_S", 120)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_BEAT_SCHEDULE = {
    "reconcile-stale-jobs": {
        "task": "radiology.tasks.reconcile_stale_jobs",
        "schedule": 60.0,
    },
    "check-fixity": {
        "task": "radiology.tasks.check_fixity",
        "schedule": 24 * 3600.0,
    },
    "sweep-orphan-temp-files": {
        "task": "radiology.tasks.sweep_orphan_files",
        "schedule": 3600.0,
    },
    # Access events queued while a write held the audit chain head (audit/queue.py).
    "fold-audit-queue": {
        "task": "radiology.tasks.fold_audit_queue",
        "schedule": 30.0,
        "options": {"expires": 30.0},
    },
}

# Production hardening, on whenever DEBUG is off (`check --deploy` is clean).
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", True)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# Sign-in throttling (services/throttle.py): failures per account and per client
# address within the window lock further attempts until they leave it.
AUTH_FAILURES_PER_ACCOUNT = int(os.environ.get("AUTH_FAILURES_PER_ACCOUNT", "5"))
AUTH_FAILURES_PER_ADDRESS = int(os.environ.get("AUTH_FAILURES_PER_ADDRESS", "20"))
AUTH_LOCKOUT_WINDOW_S = int(os.environ.get("AUTH_LOCKOUT_WINDOW_S", "900"))
# API tokens (services/tokens.py) are refused this many days after they were made.
# Audit chain: the HMAC key file and the checkpoint log live outside the database (keep
# them off the database host); `manage.py audit_key --new` makes or rotates the key.
AUDIT_KEY_FILE = Path(os.environ.get("AUDIT_KEY_FILE", VAR_DIR / "audit" / "audit.key"))
AUDIT_CHECKPOINT_FILE = Path(
    os.environ.get("AUDIT_CHECKPOINT_FILE", VAR_DIR / "audit" / "checkpoints.log")
)

API_TOKEN_LIFETIME_DAYS = int(os.environ.get("API_TOKEN_LIFETIME_DAYS", "90"))
