"""Image garbage collection: remove the images of Berth's that nothing needs any more.

Berth pulls a digest per image deploy and builds an image per git commit. An
image is Berth's when this instance's labels say it built it (`berth.image.*`,
or the labels of a build before images had keys of their own), or when a row of
this instance says it pulled it (`PulledImage`, or a ledger row's pinned digest).
Nothing else is ever touched. Of Berth's images, kept are:

- every image a container uses (any container: the engine refuses anyway);
- every image a ledger row can roll back to (a succeeded row with a pinned
  reference; the ledger holds BERTH_DEPLOY_HISTORY_KEEP rows per workload);
- the BERTH_IMAGE_KEEP most recent of each workload;
- every image of a workload whose deploy is queued or running, or whose lock
  another process holds (the deploy may be about to use one), and every image
  a deploy pulled after the collection began.

The rest is removed by id, never by force, under the try-locks of the
workloads that still exist and named it: an image a container took meanwhile,
or one already gone, is skipped, not an error. docs/deploys.md, "Images".
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext as _

from lib import locks, runtime
from workloads.models import DeployRecord, PulledImage, Workload

logger = logging.getLogger(__name__)


@dataclass
class Verdict:
    image: runtime.ImageInfo
    workloads: set[int]
    why: str = ""  # why it is kept; "" if it is to be removed
    recency: float = 0.0  # seconds since the epoch: when Berth last built or pulled it

    @property
    def name(self) -> str:
        short = self.image.id.removeprefix("sha256:")[:12]
        tags = self.image.repo_tags or tuple(d.split("@")[0] for d in self.image.repo_digests)
        return f"{short} ({', '.join(tags) or _('untagged')})"


@dataclass
class Plan:
    verdicts: list[Verdict] = field(default_factory=list)
    images: list[runtime.ImageInfo] = field(default_factory=list)  # all the engine holds

    @property
    def kept(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.why]

    @property
    def removable(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.why]


@dataclass
class PruneReport:
    removed: list[Verdict] = field(default_factory=list)
    kept: list[Verdict] = field(default_factory=list)
    skipped: list[Verdict] = field(default_factory=list)  # in use or gone meanwhile, or locked

    @property
    def bytes_freed(self) -> int:
        return sum(v.image.size for v in self.removed)


def _label_workload(labels: dict[str, str]) -> int | None:
    """The workload a build of this instance names in its labels; None if not Berth's."""
    instance = settings.BERTH_INSTANCE_ID
    prefix = runtime.IMAGE_LABEL_PREFIX
    if labels.get(prefix + "instance") == instance:
        value = labels.get(prefix + "workload", "")
    elif (labels.get(runtime.INSTANCE_LABEL) == instance and runtime.COMMIT_LABEL in labels
          and runtime.REPLICA_LABEL not in labels):
        # Built before images had keys of their own. A container inherits its image's
        # labels, and one committed to an image carries a replica: not a build.
        value = labels.get(runtime.WORKLOAD_LABEL, "")
    else:
        return None
    return int(value) if value.isdigit() else None


def _owned(images: list[runtime.ImageInfo], *, workload_id: int | None = None
           ) -> dict[str, Verdict]:
    """Berth's images by id, each with the workloads that built or pulled it (only those of
    `workload_id` if given)."""
    by_id = {image.id: image for image in images}
    by_digest = {digest: image.id for image in images for digest in image.repo_digests}
    owned: dict[str, Verdict] = {}

    def own(image_id: str, workload_id: int, when: float) -> None:
        if image_id in by_id:
            verdict = owned.setdefault(image_id, Verdict(by_id[image_id], set()))
            verdict.workloads.add(workload_id)
            verdict.recency = max(verdict.recency, when)

    pulled, ledger = PulledImage.objects.all(), DeployRecord.objects.exclude(pinned_reference="")
    if workload_id is not None:
        pulled = pulled.filter(workload_number=workload_id)
        ledger = ledger.filter(workload_id=workload_id)
    for image in images:
        labelled = _label_workload(image.labels)
        # Labels are inherited: an image built by hand FROM a Berth build carries them too,
        # but not the tag Berth gives its builds.
        if labelled is not None and workload_id in (None, labelled) and _berth_tagged(image):
            own(image.id, labelled, image.created)
    for row in pulled:
        own(row.image_id, row.workload_number, row.pulled.timestamp())
    for row in ledger.only(
            "workload_id", "source_kind", "pinned_reference", "image_id", "created"):
        image_id = row.image_id if row.is_git else by_digest.get(row.pinned_reference, "")
        own(image_id, row.workload_id, row.created.timestamp())
    return owned


BUILD_TAG_PREFIX = "berth/"  # engine.locked.sources.image_tag


def _berth_tagged(image: runtime.ImageInfo) -> bool:
    return any(tag.startswith(BUILD_TAG_PREFIX) for tag in image.repo_tags)


def _rollback_images(images: list[runtime.ImageInfo]) -> set[str]:
    """The images a kept ledger row can roll back to."""
    by_digest = {digest: image.id for image in images for digest in image.repo_digests}
    found = set()
    for row in DeployRecord.objects.filter(outcome=DeployRecord.Outcome.SUCCEEDED).exclude(
            pinned_reference="").only("source_kind", "pinned_reference", "image_id"):
        found.add(row.image_id if row.is_git else by_digest.get(row.pinned_reference, ""))
    return found - {""}


def plan(*, images: list[runtime.ImageInfo] | None = None) -> Plan:
    """What a collection would keep (and why) and remove, without changing anything."""
    images = runtime.list_images() if images is None else images
    owned = _owned(images)
    in_use = runtime.images_in_use()
    rollback = _rollback_images(images)
    existing = set(Workload.objects.filter(
        pk__in={w for v in owned.values() for w in v.workloads}).values_list("pk", flat=True))
    deploying = set(DeployRecord.objects.active().values_list("workload_id", flat=True))
    recent = _most_recent(owned.values(), existing)
    for verdict in owned.values():
        if verdict.image.id in in_use:
            verdict.why = _("a container uses it")
        elif verdict.image.id in rollback:
            verdict.why = _("a deploy in the history can roll back to it")
        elif verdict.image.id in recent:
            verdict.why = _("one of its workload's %(count)d most recent images") % {
                "count": settings.BERTH_IMAGE_KEEP}
        elif verdict.workloads & deploying:
            verdict.why = _("its workload is being deployed")
    return Plan(sorted(owned.values(), key=lambda v: (-v.recency, v.image.id)), images)


def _most_recent(verdicts, existing: set[int]) -> set[str]:
    """The BERTH_IMAGE_KEEP most recent images of each workload that still exists."""
    per_workload: dict[int, list[Verdict]] = defaultdict(list)
    for verdict in verdicts:
        for workload_id in verdict.workloads & existing:
            per_workload[workload_id].append(verdict)
    keep = set()
    for found in per_workload.values():
        found.sort(key=lambda v: v.recency, reverse=True)
        keep |= {v.image.id for v in found[:settings.BERTH_IMAGE_KEEP]}
    return keep


def prune(*, dry_run: bool = False, say: Callable[[str], None] = logger.info) -> PruneReport:
    """Remove Berth's images that nothing needs (see the module); returns what happened.

    With `dry_run`, nothing is removed: `removed` lists what would be.
    """
    started = timezone.now()
    found = plan()
    report = PruneReport(kept=found.kept)
    existing = set(Workload.objects.values_list("pk", flat=True))
    for verdict in found.removable:
        if dry_run or _remove(verdict, existing & verdict.workloads, started):
            report.removed.append(verdict)
        else:
            report.skipped.append(verdict)
    if not dry_run:
        _forget_gone({i.id for i in found.images} - {v.image.id for v in report.removed},
                     before=started)
    return report


def _forget_gone(present: set[str], *, before: datetime) -> None:
    """Delete the PulledImage rows of images the engine no longer holds (removed here, or by
    hand), a few hundred at a time."""
    # Only rows older than the engine's listing: a pull since then is not in it yet.
    stale = [pk for pk, image_id in PulledImage.objects.filter(pulled__lt=before)
             .values_list("pk", "image_id") if image_id not in present]
    for start in range(0, len(stale), 500):
        PulledImage.objects.filter(pk__in=stale[start:start + 500]).delete()


def _remove(verdict: Verdict, workloads: set[int], started: datetime) -> bool:
    """Remove one image under its existing workloads' try-locks; False if skipped."""
    try:
        with ExitStack() as stack:
            for workload_id in sorted(workloads):
                stack.enter_context(locks.try_workload_lock(workload_id))
            if DeployRecord.objects.active().filter(workload_id__in=workloads).exists():
                return False  # queued after the plan was made: it may want this image
            if PulledImage.objects.filter(image_id=verdict.image.id, pulled__gte=started).exists():
                return False  # a deploy (of any workload) pulled it since: it is about to run
            return runtime.remove_image(verdict.image.id)
    except locks.LockTimeout:
        return False


def workload_image_bytes(*, workload: Workload) -> int | None:
    """The bytes of the engine's images that the workload built or pulled; None if the engine
    cannot be asked. One list of the engine's images; a layer shared by two images counts
    in both."""
    try:
        images = runtime.list_images()
    except runtime.EngineError:
        return None
    return sum(v.image.size for v in _owned(images, workload_id=workload.pk).values())
