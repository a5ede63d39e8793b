"""Errors of the snapshot engine, each with an untranslated message and its parameters.

The message is the English source text (marked with gettext_noop where it is
raised); str() translates it into the active language, so an API response is
in the caller's language while a row keeps the source text and its
parameters, to be translated when it is shown.
"""

from __future__ import annotations

from django.utils.translation import gettext


class SnapshotError(Exception):
    # A fixed code a failed row keeps beside the message (Snapshot.FailureCode); most have none.
    code = ""

    def __init__(self, message: str, **params: object) -> None:
        super().__init__(message)
        self.message = message
        self.params = params

    def __str__(self) -> str:
        # A `what` parameter is itself a message ("a symbolic link"); names and
        # numbers are shown as they are.
        params = {
            key: gettext(value) if key == "what" else value for key, value in self.params.items()
        }
        text = gettext(self.message)
        return text % params if params else text

    @property
    def english(self) -> str:
        """The English text, storable anywhere (PostgreSQL refuses NUL in text and jsonb)."""
        text = self.message % self.params if self.params else self.message
        return storable(text)


def storable(text: str) -> str:
    """`text` with NUL written as \\x00: a hostile archive's member names may hold one."""
    return text.replace("\x00", "\\x00")


class ArchiveError(SnapshotError):
    """The archive is hostile, corrupt or over a limit; nothing of it was kept."""


class InsufficientSpace(ArchiveError):
    """The staging filesystem lacks the free space or inodes to hold the archive."""


class CaptureError(SnapshotError):
    """A capture could not finish; the message says why."""


class OverBudget(CaptureError):
    """A capture given a budget (the pre-deploy snapshot's) went past it and was abandoned."""

    code = "over_budget"


class RestoreError(SnapshotError):
    """A restore could not go on; every volume is (or is being put) back as it was."""


class PreflightError(RestoreError):
    """A restore was refused before anything was touched."""
