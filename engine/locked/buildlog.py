"""Writing a git deploy's build log while it runs: redacted, bounded, flushed often.

The deploy's page polls the DeployLog row, so the writer saves it at most
every FLUSH_SECONDS while output streams in, and once more at the end.

Redaction works on whole lines: a secret split across two chunks of the
engine's stream is still masked, because a line is only redacted (and kept)
once it is complete. A line longer than MAX_LINE is cut into pieces, and
there too no secret is cut in half: the text is masked before the cut, and
the last (longest secret - 1) characters stay behind for the next piece, so
a secret whose end has not arrived yet is masked whole with it. Lines of a
multi-line secret (a PEM key) are masked one by one too. The kept text is
the tail: whole lines are dropped from the front once it passes
BERTH_BUILD_LOG_KIB, so a secret is never cut in half by the truncation either.
"""

from __future__ import annotations

import re
import time
from collections import deque

from django.conf import settings
from django.utils import timezone

from lib.redact import MASK, redact, redact_url_credentials
from workloads.models import DeployLog, DeployRecord

FLUSH_SECONDS = 0.5
MAX_LINE = 8 * 1024
_STEP = re.compile(r"^Step \d+/\d+ : ")


def _fragments(secrets: list[str]) -> list[str]:
    """The secrets, and each long line of a multi-line one."""
    out = set(secrets)
    for secret in secrets:
        out.update(line.strip() for line in secret.splitlines() if len(line.strip()) >= 8)
    return [s for s in out if s]


class BuildLogWriter:
    def __init__(self, record: DeployRecord, secrets: list[str]) -> None:
        self.record = record
        self.secrets = _fragments(secrets)
        # What a forced cut of a long line holds back: a secret that straddles
        # the cut is then whole in the piece after it (a secret spanning lines
        # can only be masked line by line anyway).
        self.hold = max((len(s) - 1 for s in self.secrets if "\n" not in s), default=0)
        self.max_bytes = settings.BERTH_BUILD_LOG_KIB * 1024
        self.lines: deque[str] = deque()
        self.size = 0
        self.partial = ""
        self.truncated = False
        self.last_step = ""
        self.failed_step = ""
        self.flushed_at = 0.0
        # By id: a row cached on the record would go stale as the log grows.
        DeployLog.objects.update_or_create(
            deploy_id=record.pk, defaults={"text": "", "truncated": False, "failed_step": ""}
        )

    def note(self, message: str) -> None:
        """One line of Berth's own narration, marked so it stands out from the build's."""
        self.write(f"berth: {message}\n")

    def write(self, text: str) -> None:
        self.partial += text.replace("\r\n", "\n")
        while "\n" in self.partial:
            line, _nl, self.partial = self.partial.partition("\n")
            self._keep(line)
        while len(self.partial) > MAX_LINE + self.hold:
            # Masked first: every secret already whole in the text is masked,
            # and one still arriving lies wholly in the held-back tail.
            clean = self._clean(self.partial)
            cut = min(MAX_LINE, len(clean) - self.hold)
            mask = clean.rfind(MASK, 0, cut + len(MASK) - 1)
            if mask > 0 and mask + len(MASK) > cut:
                cut = mask  # nor a mask cut in two
            if cut <= 0:
                break
            self._keep(clean[:cut])
            self.partial = clean[cut:]
        if time.monotonic() - self.flushed_at >= FLUSH_SECONDS:
            self.flush()

    def fail_step(self, error: str) -> None:
        """Remember where the build failed: its last step, else the engine's error."""
        step = self.last_step or self._clean(error.strip().splitlines()[0] if error.strip() else "")
        self.failed_step = step[:300]

    def close(self) -> None:
        if self.partial:
            self._keep(self.partial)
            self.partial = ""
        self.flush()

    def flush(self) -> None:
        self.flushed_at = time.monotonic()
        DeployLog.objects.filter(pk=self.record.pk).update(
            text="".join(self.lines), truncated=self.truncated,
            failed_step=self.failed_step, updated=timezone.now(),
        )

    def _clean(self, line: str) -> str:
        return redact_url_credentials(redact(line, self.secrets))

    def _keep(self, line: str) -> None:
        line = self._clean(line.rstrip("\r"))
        if _STEP.match(line):
            self.last_step = line.strip()
        kept = line + "\n"
        self.lines.append(kept)
        self.size += len(kept.encode())
        while self.size > self.max_bytes and len(self.lines) > 1:
            self.size -= len(self.lines.popleft().encode())
            self.truncated = True
