"""scripts/run.sh, the long-running part of `make run`: Ctrl-C stops every process it started.

The five processes are stand-ins (shell scripts named like the venv's gunicorn and
python) that record when they start and stop: what is under test is how the script
starts, signals and waits for them, with real signals to a real process group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAND_IN = """#!/bin/sh
trap 'echo "stopped $*" >> "$RUN_LOG"; exit 0' TERM
echo "started $*" >> "$RUN_LOG"
while :; do sleep 0.05; done
"""


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("gunicorn", "python"):
        (bin_dir / name).write_text(STAND_IN)
        (bin_dir / name).chmod(0o755)
    return tmp_path / "venv"


def start(venv: Path, log: Path) -> subprocess.Popen:
    """run.sh in a session of its own, as `make run` is in a terminal's."""
    env = os.environ | {"VENV": str(venv), "RUN_LOG": str(log)}
    process = subprocess.Popen(
        [str(ROOT / "scripts" / "run.sh")], cwd=ROOT, env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # Python ignores nothing it hands on; SIGINT stays at its default.
        restore_signals=True,
    )
    wait_for(lambda: log.exists() and log.read_text().count("started") == 5)
    return process


def wait_for(condition, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def group_members(pgid: int) -> list[str]:
    out = subprocess.run(["ps", "-o", "pid=,stat=", "-g", str(pgid)], capture_output=True,
                         text=True, check=False).stdout.split("\n")
    return [line for line in out if line.strip() and "Z" not in line.split()[-1]]


def test_ctrl_c_stops_every_process_and_exits_cleanly(venv, tmp_path):
    log = tmp_path / "log"
    process = start(venv, log)

    os.killpg(process.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
    output, _ = process.communicate(timeout=20)

    assert process.returncode == 0, output
    assert "Segmentation fault" not in output
    stopped = [line for line in log.read_text().splitlines() if line.startswith("stopped")]
    assert sorted(stopped) == sorted([
        "stopped -c berth/gunicorn.conf.py", "stopped manage.py qcluster",
        "stopped manage.py sample_stats", "stopped manage.py follow_engine",
        "stopped manage.py recover --every 60",
    ])
    assert group_members(process.pid) == []


def test_one_process_ending_stops_the_others_with_its_status(venv, tmp_path):
    log = tmp_path / "log"
    # The web server fails once the others run.
    (venv / "bin" / "gunicorn").write_text(
        '#!/bin/sh\necho "started" >> "$RUN_LOG"\n'
        'until [ "$(grep -c started "$RUN_LOG")" -ge 5 ]; do sleep 0.05; done\nexit 3\n')
    process = start(venv, log)

    output, _ = process.communicate(timeout=20)

    assert process.returncode == 3
    assert "ended (status 3); stopping the others" in output
    assert log.read_text().count("stopped") == 4
    assert group_members(process.pid) == []
