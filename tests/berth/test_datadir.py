"""manage.py says which data dir it uses and refuses one without a database (berth/datadir.py).

Real child processes: what is checked happens before Django is set up.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from berth import datadir
from tests.conftest import REPO_ROOT


def manage(*args: str, **variables: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items()
            if k not in {"BERTH_DATA_DIR", "DATABASE_URL"}
            and not k.startswith(("PYTEST_", "BERTH_TEST_"))}
    base["DJANGO_SETTINGS_MODULE"] = "berth.settings"
    return subprocess.run([sys.executable, str(REPO_ROOT / "manage.py"), *args],
                          cwd=REPO_ROOT, env=base | variables, capture_output=True, text=True,
                          timeout=300, check=False)


def test_a_command_refuses_a_data_dir_without_a_database_and_creates_nothing(tmp_path):
    data_dir = tmp_path / "not-yet"

    done = manage("deploy", "1", BERTH_DATA_DIR=str(data_dir))

    assert done.returncode == 2
    assert f"no database at {data_dir / 'berth.sqlite3'}" in done.stderr
    assert "manage.py migrate" in done.stderr
    assert "OperationalError" not in done.stderr + done.stdout
    assert not data_dir.exists()


def test_an_empty_database_file_is_no_database(tmp_path):
    (tmp_path / "berth.sqlite3").touch()

    done = manage("showmigrations", BERTH_DATA_DIR=str(tmp_path))

    assert done.returncode == 2
    assert "no database at" in done.stderr
    assert not (tmp_path / "secret_key").exists()


def test_migrate_creates_the_database_and_then_commands_run(tmp_path):
    data_dir = tmp_path / "fresh"

    migrated = manage("migrate", "--noinput", "-v", "0", BERTH_DATA_DIR=str(data_dir))
    listed = manage("createadmin", "--if-none", BERTH_DATA_DIR=str(data_dir))

    assert migrated.returncode == 0, migrated.stderr
    assert (data_dir / "berth.sqlite3").stat().st_size > 0
    assert listed.returncode == 0, listed.stderr
    # Named explicitly, the data dir needs no announcement.
    assert "berth: data dir" not in migrated.stderr + listed.stderr


def test_without_the_variable_a_command_names_the_default_and_refuses_it():
    default = REPO_ROOT / "var"
    if datadir.missing_database(default, {}) is None:
        pytest.skip(f"{default} holds a real installation's database; not touching it")
    existed = default.exists()

    done = manage("showmigrations")

    assert done.returncode == 2
    assert f"berth: data dir {default} (the default: BERTH_DATA_DIR is not set)" in done.stderr
    assert "OperationalError" not in done.stderr
    assert default.exists() == existed


def test_postgres_is_not_checked_here(tmp_path):
    environ = {"BERTH_DATA_DIR": str(tmp_path), "DATABASE_URL": "postgres://u@db/berth"}
    assert datadir.missing_database(tmp_path, environ) is None
    err = io.StringIO()
    assert datadir.preflight(["manage.py", "deploy", "1"], REPO_ROOT, err, environ) is None
    assert err.getvalue() == ""


@pytest.mark.parametrize("argv", [["manage.py"], ["manage.py", "--help"],
                                  ["manage.py", "check"], ["manage.py", "migrate"]])
def test_commands_that_need_no_database_are_let_through(tmp_path, argv):
    err = io.StringIO()
    environ = {"BERTH_DATA_DIR": str(tmp_path / "none")}
    assert datadir.preflight(argv, REPO_ROOT, err, environ) is None
    assert not Path(tmp_path / "none").exists()
