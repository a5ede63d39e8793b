"""The build log writer: whole lines, redacted before they are kept, the tail bounded."""

from __future__ import annotations

import pytest
from django.test import override_settings

from engine.locked import buildlog
from engine.locked.buildlog import BuildLogWriter
from lib.redact import MASK
from workloads.models import DeployLog, DeployRecord

pytestmark = pytest.mark.django_db

SECRET = "s3cret-value-8c1d"  # noqa: S105


@pytest.fixture
def record(workload) -> DeployRecord:
    return DeployRecord.open(workload=workload, reason=DeployRecord.Reason.MANUAL)


def stored(record: DeployRecord) -> DeployLog:
    return DeployLog.objects.get(deploy=record)


def test_it_masks_a_secret_split_across_chunks(record):
    log = BuildLogWriter(record, [SECRET])
    for chunk in ["token=s3cr", "et-val", "ue-8c1d and more\nnext line\n"]:
        log.write(chunk)
    log.close()

    assert stored(record).text == f"token={MASK} and more\nnext line\n"


def test_it_masks_each_line_of_a_multi_line_secret(record):
    key = (
        "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n"
        "AAAAB3NzaC1yc2EAAAADAQAB\n-----END KEY-----"
    )
    log = BuildLogWriter(record, [key])
    log.write("printed: MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nthen AAAAB3NzaC1yc2EAAAADAQAB\n")
    log.close()

    text = stored(record).text
    assert "MIIEvQ" not in text and "AAAAB3" not in text
    assert text == f"printed: {MASK}\nthen {MASK}\n"


def test_it_keeps_the_tail_in_whole_lines_when_it_grows_past_the_cap(record):
    with override_settings(BERTH_BUILD_LOG_KIB=16):
        log = BuildLogWriter(record, [])
        for n in range(2000):
            log.write(f"line {n:05d} {'x' * 20}\n")
        log.close()

    row = stored(record)
    assert row.truncated
    assert len(row.text.encode()) <= 16 * 1024
    assert row.text.endswith(f"line 01999 {'x' * 20}\n")
    assert row.text.startswith("line ")  # a whole line, not the middle of one


def test_it_remembers_the_last_step_as_the_failed_one(record):
    log = BuildLogWriter(record, [SECRET])
    log.write("Step 1/3 : FROM base\n ---> abc\nStep 2/3 : RUN echo ")
    log.write(f"{SECRET} && false\n ---> Running in 123\n")
    log.fail_step("The command returned a non-zero code: 1")
    log.close()

    assert stored(record).failed_step == f"Step 2/3 : RUN echo {MASK} && false"


def test_without_a_step_the_engines_error_is_the_failed_step(record):
    log = BuildLogWriter(record, [])
    log.fail_step("dockerfile parse error line 2: unknown instruction: NOPE\nmore")
    log.close()

    assert stored(record).failed_step == "dockerfile parse error line 2: unknown instruction: NOPE"


def test_it_flushes_while_writing_not_only_at_the_end(record, monkeypatch):
    monkeypatch.setattr(buildlog, "FLUSH_SECONDS", 0)
    log = BuildLogWriter(record, [])
    log.write("first\n")

    assert stored(record).text == "first\n"
    log.write("partial line without end")
    assert stored(record).text == "first\n"  # an unfinished line waits for its end
    log.close()
    assert stored(record).text == "first\npartial line without end\n"


def test_a_new_writer_for_the_same_deploy_starts_empty(record):
    BuildLogWriter(record, []).write("old\n")
    BuildLogWriter(record, []).close()
    assert stored(record).text == ""


@pytest.mark.parametrize("split", range(1, len(SECRET)))
@pytest.mark.parametrize("padding", [buildlog.MAX_LINE - 4, buildlog.MAX_LINE + 10])
def test_a_secret_straddling_the_cut_of_an_over_long_line_is_masked(record, split, padding):
    log = BuildLogWriter(record, [SECRET, "short"])
    # One engine chunk that crosses MAX_LINE with the secret's head, its tail later.
    log.write("A" * padding + SECRET[:split])
    log.write(SECRET[split:] + " end\n")
    log.close()

    assert stored(record).text.replace("\n", "") == "A" * padding + f"{MASK} end"


def test_an_endless_line_is_cut_into_pieces_with_every_secret_masked(record):
    log = BuildLogWriter(record, [SECRET])
    # Secrets right across MAX_LINE, just before and after it, and close together.
    gaps = (buildlog.MAX_LINE - 8, 8180, 8170, 3, 0, 8100, 9000, 1)
    text = "".join("x" * gap + SECRET for gap in gaps)
    for start in range(0, len(text), 700):
        log.write(text[start:start + 700])
    log.close()

    text = stored(record).text
    assert SECRET not in text.replace("\n", "")
    assert text.count(MASK) == len(gaps)
    lines = text.splitlines()
    assert len(lines) > 1
    assert all(len(line) <= buildlog.MAX_LINE for line in lines[:-1])
