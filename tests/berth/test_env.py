"""Settings from the environment: strict readers that fail loudly."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from berth import env
from tests.conftest import REPO_ROOT


@pytest.mark.parametrize(
    ("raw", "expected"), [("1", True), ("yes", True), ("off", False), ("", False)]
)
def test_envbool_reads_booleans(monkeypatch, raw, expected):
    monkeypatch.setenv("BERTH_X", raw)
    assert env.envbool("BERTH_X", not expected) is expected


def test_envbool_fails_loudly(monkeypatch):
    monkeypatch.setenv("BERTH_X", "maybe")
    with pytest.raises(ImproperlyConfigured, match="BERTH_X"):
        env.envbool("BERTH_X", False)


def test_envint_fails_loudly(monkeypatch):
    monkeypatch.setenv("BERTH_X", "ten")
    with pytest.raises(ImproperlyConfigured, match="BERTH_X"):
        env.envint("BERTH_X", 1)
    monkeypatch.setenv("BERTH_X", "0")
    with pytest.raises(ImproperlyConfigured, match="at least 1"):
        env.envint("BERTH_X", 1, minimum=1)


@pytest.mark.parametrize(
    "raw", ["8000", "127.0.0.1", "host:port", "127.0.0.1:0", ":8000", "h:70000"]
)
def test_listen_address_fails_loudly(monkeypatch, raw):
    monkeypatch.setenv("BERTH_LISTEN", raw)
    with pytest.raises(ImproperlyConfigured, match="BERTH_LISTEN"):
        env.listen_address("BERTH_LISTEN", "127.0.0.1:8000")


def test_listen_address_reads_host_and_port(monkeypatch):
    monkeypatch.setenv("BERTH_LISTEN", "[::1]:9000")
    assert env.listen_address("BERTH_LISTEN", "x") == ("::1", 9000)


def test_database_url_defaults_to_sqlite_in_the_data_dir(tmp_path):
    db = env.database_from_url("", sqlite_default=tmp_path / "berth.sqlite3")
    assert db["ENGINE"] == "django.db.backends.sqlite3"
    assert db["NAME"] == str(tmp_path / "berth.sqlite3")


def test_database_url_reads_postgres():
    db = env.database_from_url("postgres://u:p%40ss@db.example:6543/berth", sqlite_default=None)
    assert (db["ENGINE"], db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == (
        "django.db.backends.postgresql", "berth", "u", "p@ss", "db.example", "6543"
    )


@pytest.mark.parametrize("url", ["mysql://u@h/db", "postgres://u@h/", "sqlite:///"])
def test_database_url_fails_loudly(url):
    with pytest.raises(ImproperlyConfigured):
        env.database_from_url(url, sqlite_default=None)


def test_secret_key_is_generated_once_with_mode_0600(tmp_path, monkeypatch):
    monkeypatch.delenv("BERTH_SECRET_KEY", raising=False)
    first = env.secret_key(tmp_path)
    assert len(first) >= 50
    assert env.secret_key(tmp_path) == first
    assert stat.S_IMODE(os.stat(tmp_path / "secret_key").st_mode) == 0o600


def test_secret_key_from_the_environment_must_be_long(tmp_path, monkeypatch):
    monkeypatch.setenv("BERTH_SECRET_KEY", "short")
    with pytest.raises(ImproperlyConfigured, match="BERTH_SECRET_KEY"):
        env.secret_key(tmp_path)
    assert not (tmp_path / "secret_key").exists()


def test_a_bad_value_stops_django_at_start_up(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=False,
        env=os.environ | {"BERTH_DATA_DIR": str(tmp_path), "BERTH_DEBUG": "perhaps"},
    )
    assert result.returncode != 0
    assert "BERTH_DEBUG='perhaps' is not a boolean" in result.stderr


def test_the_data_dir_is_made_private(tmp_path):
    shared = tmp_path / "data"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    env.private_directory(shared)
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o700


def test_a_key_file_is_written_whole_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    monkeypatch.delenv("BERTH_SECRET_KEY", raising=False)
    key = env.secret_key(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret_key"]
    assert (tmp_path / "secret_key").read_text() == key


def test_an_empty_key_file_stops_berth(tmp_path, monkeypatch):
    monkeypatch.delenv("BERTH_SECRET_KEY", raising=False)
    (tmp_path / "secret_key").write_text("")
    with pytest.raises(ImproperlyConfigured, match="is empty"):
        env.secret_key(tmp_path)


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("3600", 3600), ("90m", 5400), ("36h", 129600), ("7d", 604800), ("2W", 1209600),
     (" 45s ", 45), ("", 99)],
)
def test_envduration_reads_seconds_or_a_number_and_a_unit(monkeypatch, raw, seconds):
    monkeypatch.setenv("BERTH_X", raw)
    assert env.envduration("BERTH_X", 99) == seconds


@pytest.mark.parametrize("raw", ["7 days", "1.5d", "1d12h", "-5", "d", "7y", "ten"])
def test_envduration_fails_loudly(monkeypatch, raw):
    monkeypatch.setenv("BERTH_X", raw)
    with pytest.raises(ImproperlyConfigured, match="BERTH_X"):
        env.envduration("BERTH_X", 60)


def test_envduration_has_a_minimum(monkeypatch):
    monkeypatch.setenv("BERTH_X", "30m")
    with pytest.raises(ImproperlyConfigured, match="at least 3600 seconds"):
        env.envduration("BERTH_X", 7200, minimum=3600)


@pytest.mark.parametrize(
    ("variables", "message"),
    [({"BERTH_STATS_INTERVAL": "0"}, "BERTH_STATS_INTERVAL=0 must be at least 1"),
     ({"BERTH_STATS_RETENTION": "a week"}, "BERTH_STATS_RETENTION"),
     ({"BERTH_STATS_RETENTION": "10m"}, "BERTH_STATS_RETENTION")],
)
def test_bad_stats_settings_stop_berth_at_start_up(tmp_path, variables, message):
    result = subprocess.run(
        [sys.executable, "-c", "import berth.settings"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=False,
        env=os.environ | {"BERTH_DATA_DIR": str(tmp_path)} | variables,
    )
    assert result.returncode != 0
    assert message in result.stderr


def test_the_stats_settings_default_to_fifteen_seconds_and_seven_days(tmp_path):
    env_vars = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_STATS_")}
    result = subprocess.run(
        [sys.executable, "-c", "from berth import settings as s; "
         "print(s.BERTH_STATS_INTERVAL, s.BERTH_STATS_RETENTION, s.BERTH_STATS_TIMEOUT)"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
        env=env_vars | {"BERTH_DATA_DIR": str(tmp_path)},
    )
    assert result.stdout.split() == ["15", "604800", "15"]


def test_it_reads_the_task_lost_after_setting(monkeypatch):
    monkeypatch.delenv("BERTH_TASK_TIMEOUT", raising=False)
    monkeypatch.delenv("BERTH_TASK_LOST_AFTER", raising=False)
    assert env.task_lost_after() == 4200
    monkeypatch.setenv("BERTH_TASK_LOST_AFTER", "2h")
    assert env.task_lost_after() == 7200
    monkeypatch.setenv("BERTH_TASK_LOST_AFTER", "60")
    with pytest.raises(ImproperlyConfigured, match="at least 660"):
        env.task_lost_after()


def test_it_still_accepts_the_old_task_timeout_name_with_a_warning(monkeypatch):
    monkeypatch.delenv("BERTH_TASK_LOST_AFTER", raising=False)
    monkeypatch.setenv("BERTH_TASK_TIMEOUT", "1800")
    with pytest.warns(env.BerthDeprecationWarning, match="BERTH_TASK_LOST_AFTER=2400"):
        assert env.task_lost_after() == 2400


def test_it_prefers_the_new_name_when_both_are_set(monkeypatch, recwarn):
    monkeypatch.setenv("BERTH_TASK_TIMEOUT", "1800")
    monkeypatch.setenv("BERTH_TASK_LOST_AFTER", "5000")
    assert env.task_lost_after() == 5000
    assert not [w for w in recwarn if issubclass(w.category, env.BerthDeprecationWarning)]


@pytest.mark.parametrize("raw", ["backups", "/", "/srv/nas,relative", "//"])
def test_backup_directory_roots_must_be_absolute_directories_other_than_root(monkeypatch, raw):
    monkeypatch.setenv("BERTH_BACKUP_DIRECTORY_ROOTS", raw)
    with pytest.raises(ImproperlyConfigured, match="BERTH_BACKUP_DIRECTORY_ROOTS"):
        env.envdirs("BERTH_BACKUP_DIRECTORY_ROOTS")


def test_backup_directory_roots_are_normalised(monkeypatch):
    monkeypatch.setenv("BERTH_BACKUP_DIRECTORY_ROOTS", "/srv/nas/, /mnt//disk")
    assert env.envdirs("BERTH_BACKUP_DIRECTORY_ROOTS") == ["/srv/nas", "/mnt/disk"]


def test_port_addresses_are_ip_addresses_in_their_canonical_spelling(monkeypatch):
    from berth.env import envaddresses

    monkeypatch.setenv("BERTH_PORT_ADDRESSES", "0.0.0.0, ::0, 192.0.2.7")
    assert envaddresses("BERTH_PORT_ADDRESSES") == ["0.0.0.0", "::", "192.0.2.7"]  # noqa: S104
    monkeypatch.setenv("BERTH_PORT_ADDRESSES", "192.0.2.7,example.com")
    with pytest.raises(ImproperlyConfigured, match="'example.com' is not one"):
        envaddresses("BERTH_PORT_ADDRESSES")


@pytest.mark.parametrize(
    ("variables", "message"),
    [({"BERTH_PRE_DEPLOY_BACKUP_TIMEOUT": "0"}, "BERTH_PRE_DEPLOY_BACKUP_TIMEOUT='0' must be at "
      "least 1 seconds"),
     ({"BERTH_PRE_DEPLOY_BACKUP_TIMEOUT": "soon"}, "BERTH_PRE_DEPLOY_BACKUP_TIMEOUT='soon' is "
      "not a duration"),
     ({"BERTH_PRE_DEPLOY_BACKUP_MAX_BYTES": "10G"}, "BERTH_PRE_DEPLOY_BACKUP_MAX_BYTES='10G' is "
      "not an integer"),
     ({"BERTH_PRE_DEPLOY_BACKUP_MAX_BYTES": "0"}, "BERTH_PRE_DEPLOY_BACKUP_MAX_BYTES=0 must be "
      "at least 1")],
)
def test_bad_pre_deploy_budgets_stop_berth_at_start_up(tmp_path, variables, message):
    result = subprocess.run(
        [sys.executable, "-c", "import berth.settings"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=False,
        env=os.environ | {"BERTH_DATA_DIR": str(tmp_path)} | variables,
    )
    assert result.returncode != 0
    assert message in result.stderr


@pytest.mark.parametrize(
    ("variables", "expected"),
    [({}, ["300", str(10 << 30)]),
     ({"BERTH_PRE_DEPLOY_BACKUP_TIMEOUT": "10m", "BERTH_PRE_DEPLOY_BACKUP_MAX_BYTES": "1048576"},
      ["600", "1048576"])],
)
def test_the_pre_deploy_budget_reads_its_settings(tmp_path, variables, expected):
    env_vars = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_PRE_DEPLOY_")}
    result = subprocess.run(
        [sys.executable, "-c", "from berth import settings as s; print("
         "s.BERTH_PRE_DEPLOY_BACKUP_TIMEOUT, s.BERTH_PRE_DEPLOY_BACKUP_MAX_BYTES)"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
        env=env_vars | {"BERTH_DATA_DIR": str(tmp_path)} | variables,
    )
    assert result.stdout.split() == expected
