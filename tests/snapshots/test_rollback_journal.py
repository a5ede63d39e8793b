"""The journal of a rollback with data: both digests, and old journals keep their meaning."""

from __future__ import annotations

import json
import os

import pytest

from lib import paths
from snapshots import journal

pytestmark = pytest.mark.django_db


def a_journal(**fields) -> journal.Journal:
    live = os.path.join(paths.volumes_root(), "p", "s", "data")
    staging, aside = (os.path.join(os.path.dirname(live), f".berth-restore-41-0-0123abcd.{e}")
                      for e in ("new", "old"))
    return journal.Journal(job=41, workload=41, snapshot=1, reference="repo@sha256:target",
                           targets=[journal.Target(index=0, live=live, staging=staging,
                                                   aside=aside, mode=journal.EXCHANGE,
                                                   live_id=[1, 2])], **fields)


def test_a_rollback_with_data_journals_both_digests_and_its_target():
    record = a_journal(previous="repo@sha256:running", rollback_to=7)
    record.record(journal.PREPARE)

    loaded = journal.load(record.path)

    assert loaded.reference == "repo@sha256:target"  # after the commit
    assert loaded.reference_before_commit == "repo@sha256:running"  # before it
    assert loaded.rollback_to == 7
    journal.remove(loaded)


def test_a_journal_without_the_new_fields_keeps_its_meaning():
    """A plain restore's journal (or one an older Berth wrote): one digest, both ways."""
    record = a_journal()
    record.record(journal.PREPARE)
    raw = json.loads(record.path.read_bytes())
    del raw["previous"], raw["rollback_to"]
    record.path.write_bytes(json.dumps(raw).encode())

    loaded = journal.load(record.path)

    assert loaded.previous is None and loaded.rollback_to is None
    assert loaded.reference_before_commit == loaded.reference == "repo@sha256:target"
    journal.remove(loaded)


@pytest.mark.parametrize("fields", [{"previous": 5}, {"rollback_to": "7"}, {"rollback_to": 0},
                                    {"rollback_to": True}])
def test_malformed_rollback_fields_make_the_journal_unreadable(fields):
    record = a_journal()
    record.record(journal.PREPARE)
    raw = json.loads(record.path.read_bytes()) | fields
    record.path.write_bytes(json.dumps(raw).encode())

    with pytest.raises(journal.JournalError):
        journal.load(record.path)
    record.path.unlink()
