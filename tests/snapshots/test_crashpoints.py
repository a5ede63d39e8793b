"""Crash points are a test-only switch: Berth's own settings cannot turn them on."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lib import crashpoints
from tests.conftest import REPO_ROOT, child_env

PROBE = """
import django
django.setup()
from lib import crashpoints
print("enabled" if crashpoints.enabled() else "disabled", flush=True)
crashpoints.reached("restore.committed")
print("still alive", flush=True)
"""


@pytest.mark.django_db
def test_berth_settings_cannot_enable_them_whatever_the_environment_says():
    env = child_env() | {
        "DJANGO_SETTINGS_MODULE": "berth.settings",
        "BERTH_CRASH_POINT": "restore.committed",
        # Every spelling someone might try in a deployment's environment:
        "BERTH_TEST_CRASH_POINTS": "1", "BERTH_CRASH_POINTS": "1",
    }
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["disabled", "still", "alive"]
    assert "CRASH_POINT" not in (REPO_ROOT / "berth" / "settings.py").read_text()


def test_the_test_settings_enable_them_and_a_named_point_ends_the_process(monkeypatch):
    assert crashpoints.enabled()
    exits = []
    monkeypatch.setattr(crashpoints.os, "_exit", exits.append)
    monkeypatch.setenv("BERTH_CRASH_POINT", "restore.swapped")
    crashpoints.reached("restore.committed")
    assert exits == []
    crashpoints.reached("restore.swapped")
    assert exits == [crashpoints.CRASH_EXIT]


def test_they_do_nothing_when_the_setting_is_off(settings, monkeypatch):
    settings.BERTH_TEST_CRASH_POINTS = False
    monkeypatch.setenv("BERTH_CRASH_POINT", "restore.swapped")
    monkeypatch.setattr(crashpoints.os, "_exit", lambda code: pytest.fail("it exited"))
    crashpoints.reached("restore.swapped")
