"""The production profile (PORTAL_PROFILE=production, docs/deploy.md) in real
subprocesses, as systemd starts the portal: `check --deploy` clean, a clear refusal when
a required variable is missing, the proxy's headers honoured; the development profile
unchanged; the data folder 0700."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from portal.datadir import data_dir_ensure

ROOT = Path(__file__).resolve().parent.parent
SECRET = "k" * 20 + "Zq8-vL2_wP5xR7tY3uN6mB1cD4eF9gH0jK"  # 54 characters, not a real one


def _production_env(tmp_path: Path, **changes: str | None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PORTAL_") and k not in {"DATABASE_URL", "REDIS_URL"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="portal.settings",
        PORTAL_PROFILE="production",
        PORTAL_DATA_DIR=str(tmp_path / "data"),
        PORTAL_SECRET_KEY=SECRET,
        PORTAL_ALLOWED_HOSTS="portal.example.test",
        # Never connected to by these checks.
        DATABASE_URL=f"sqlite:///{tmp_path / 'never.sqlite3'}",
        REDIS_URL="redis://127.0.0.1:6379/5",
    )
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_check_deploy_is_clean_under_the_production_profile(tmp_path):
    result = _run(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"], _production_env(tmp_path)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNINGS" not in result.stdout + result.stderr


def test_check_deploy_warns_under_the_development_profile(tmp_path):
    """The same check fails on the development settings: the test above can fail."""
    env = _production_env(tmp_path, PORTAL_PROFILE=None, DATABASE_URL=None, REDIS_URL=None)
    result = _run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)
    assert result.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stderr, warning


@pytest.mark.parametrize(
    "missing", ["PORTAL_SECRET_KEY", "PORTAL_ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL"]
)
def test_production_refuses_to_start_without(missing, tmp_path):
    result = _run(["manage.py", "check"], _production_env(tmp_path, **{missing: None}))
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert f"PORTAL_PROFILE=production needs {missing}" in result.stderr


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"PORTAL_SECRET_KEY": "short"}, "PORTAL_SECRET_KEY is shorter than 50"),
        ({"PORTAL_DEBUG": "true"}, "PORTAL_DEBUG must be off"),
        ({"PORTAL_NO_REDIS": "1"}, "PORTAL_NO_REDIS cannot be used"),
        ({"PORTAL_PROFILE": "prod"}, "PORTAL_PROFILE='prod'"),
    ],
)
def test_production_refuses_unsafe_settings(change, expected, tmp_path):
    result = _run(["manage.py", "check"], _production_env(tmp_path, **change))
    assert result.returncode != 0 and expected in result.stderr


_REQUESTS = """
import json, django
django.setup()
from django.conf import settings
from django.test import Client
client = Client()
out = {}
plain = client.get("/login/", HTTP_HOST="portal.example.test", HTTP_X_FORWARDED_PROTO="http")
out["plain"] = [plain.status_code, plain.get("Location")]
tls = client.get("/login/", HTTP_HOST="portal.example.test", HTTP_X_FORWARDED_PROTO="https")
out["tls"] = [tls.status_code, tls.get("Strict-Transport-Security")]
out["csrf_cookie_secure"] = tls.cookies["csrftoken"]["secure"]
health = client.get("/healthz", HTTP_HOST="portal.example.test")
out["healthz"] = health.status_code
other = client.get("/login/", HTTP_HOST="evil.example.test", HTTP_X_FORWARDED_PROTO="https")
out["other_host"] = other.status_code
out["settings"] = {k: getattr(settings, k) for k in (
    "DEBUG", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "CSRF_TRUSTED_ORIGINS",
    "SECURE_SSL_REDIRECT", "WHITENOISE_USE_FINDERS")}
out["cache"] = settings.CACHES["default"]["BACKEND"]
print(json.dumps(out))
"""


def test_production_profile_behind_the_proxy(tmp_path):
    result = _run(["-c", _REQUESTS], _production_env(tmp_path))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["plain"] == [301, "https://portal.example.test/login/"]
    assert out["tls"] == [200, "max-age=31536000; includeSubDomains"]
    assert out["csrf_cookie_secure"] is True
    assert out["healthz"] == 200  # exempt from the redirect: local health checks
    assert out["other_host"] == 400  # not in PORTAL_ALLOWED_HOSTS
    assert out["settings"] == {
        "DEBUG": False,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "CSRF_TRUSTED_ORIGINS": ["https://portal.example.test"],
        "SECURE_SSL_REDIRECT": True,
        "WHITENOISE_USE_FINDERS": False,
    }
    assert out["cache"] == "django.core.cache.backends.redis.RedisCache"


def test_development_profile_is_unchanged(settings):
    """The settings of this very test process (default profile)."""
    assert settings.PROFILE == "development"
    assert settings.SESSION_COOKIE_SECURE is False and settings.SECURE_SSL_REDIRECT is False
    assert settings.SECURE_PROXY_SSL_HEADER is None
    assert settings.CSRF_TRUSTED_ORIGINS == ["http://127.0.0.1:8000", "http://localhost:8000"]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_data_folder_is_made_0700(settings, tmp_path):
    old = os.umask(0o022)
    try:
        settings.DATA_DIR = tmp_path / "new" / "data"
        settings.STATIC_ROOT = settings.DATA_DIR / "staticfiles"
        data_dir_ensure()
    finally:
        os.umask(old)
    assert _mode(settings.DATA_DIR) == 0o700
    assert settings.STATIC_ROOT.is_dir()


def test_a_looser_data_folder_is_tightened_with_a_warning(settings, tmp_path, capsys):
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o755)
    settings.DATA_DIR = loose
    settings.STATIC_ROOT = loose / "staticfiles"
    data_dir_ensure()
    assert _mode(loose) == 0o700
    assert (
        f"WARNING: the data folder {loose} was 0755: tightened to 0700" in capsys.readouterr().err
    )
    data_dir_ensure()  # already private: nothing said
    assert capsys.readouterr().err == ""


def test_the_secret_key_file_goes_into_a_0700_folder(tmp_path):
    env = _production_env(tmp_path, PORTAL_PROFILE=None, PORTAL_SECRET_KEY=None)
    env["PORTAL_DATA_DIR"] = str(tmp_path / "fresh")
    code = (
        "import django; django.setup(); from django.conf import settings; str(settings.SECRET_KEY)"
    )
    result = _run(["-c", code], env)
    assert result.returncode == 0, result.stderr
    assert _mode(tmp_path / "fresh") == 0o700
    assert _mode(tmp_path / "fresh" / "secret_key") == 0o600
