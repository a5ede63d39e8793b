"""A restore's pre-flight: every check that can refuse it, before anything is touched.

All or nothing: either every check passes and the restore gets a Plan, or
PreflightError says what is wrong and nothing was written, stopped or moved.
Targets come from the workload's configuration as it is now; the snapshot's
manifest only says which archive subtree belongs to which volume index, and
its recorded paths are never used.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from dataclasses import dataclass
from typing import BinaryIO

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext_noop

from lib import exchange, paths, runtime
from snapshots import reservations, storage
from snapshots.archive_format import Limits
from snapshots.errors import PreflightError
from snapshots.models import Snapshot
from workloads import configuration
from workloads.models import DeployRecord, VolumeMount, Workload

# Room kept beyond the snapshot's own size: per file and directory the
# filesystem's block rounding, plus this share of the data for metadata.
SLACK_PERCENT = 2
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Plan:
    """What pre-flight found: the targets (host paths, in volume-index order) and what to run."""

    workload: Workload
    snapshot: Snapshot
    volumes: list[VolumeMount]
    targets: list[str]
    reference: str  # the digest the workload runs ("" if it was never deployed)

    def describe(self, index: int) -> dict:
        volume = self.volumes[index]
        return {"scope": volume.scope, "source": volume.source, "target": volume.target}


def check(*, workload: Workload, snapshot: Snapshot, limits: Limits,
          rollback_reference: str = "") -> Plan:
    """Every check that does not read the archive; PreflightError on the first that fails.

    `rollback_reference`: a rollback with data, which redeploys this digest after the
    swap; the volumes must be exactly those the snapshot captured, and the digest must
    be pullable now (so the redeploy inside the downtime has nothing to download).
    """
    if snapshot.workload_id != workload.pk:
        raise PreflightError(gettext_noop("Snapshot #%(id)d belongs to another workload."),
                             id=snapshot.pk)
    if not snapshot.is_ready:
        raise PreflightError(gettext_noop("Snapshot #%(id)d is not ready to restore."),
                             id=snapshot.pk)
    volumes = workload.captured_volumes()
    if not volumes:
        raise PreflightError(gettext_noop("This workload has no volumes to restore."))
    if rollback_reference:
        check_volumes_unchanged(snapshot, volumes)  # first: its reason says the most
    _check_indexes(snapshot, volumes)
    targets = [_host_path(volume) for volume in volumes]
    for volume, target in zip(volumes, targets, strict=True):
        _check_berths_own(volume, target)
    _check_overlaps(volumes, targets)
    for volume, target in zip(volumes, targets, strict=True):
        _check_target(volume, target)
    _check_neighbours(workload, targets)
    _check_space(snapshot, targets, limits)
    reference = _reference(workload)
    if reference:
        _check_redeployable(workload, reference)
    if rollback_reference:
        _check_rollback_reference(workload, rollback_reference)
    return Plan(workload=workload, snapshot=snapshot, volumes=volumes, targets=targets,
                reference=reference)


def _berths_own_paths() -> list[str]:
    """Directories and files Berth itself lives on: no restore may swap them away."""
    database = settings.DATABASES["default"]
    own = [str(settings.DATA_DIR), str(settings.BASE_DIR), paths.volumes_root(),
           str(storage.root()), str(settings.DATA_DIR / "restore-journal")]
    if database["ENGINE"].endswith("sqlite3"):
        own.append(str(database["NAME"]))
    return [os.path.normpath(path) for path in own]


def _check_berths_own(volume: VolumeMount, target: str) -> None:
    """A target may not hold Berth's data, code or database, nor sit in its data directory
    anywhere but under the volumes root (an `absolute` volume could name either)."""
    for own in _berths_own_paths():
        if paths.is_within(own, target):
            raise PreflightError(
                gettext_noop("The host path %(path)s of volume %(target)s holds Berth's own "
                             "files (%(own)s); a restore cannot swap it."),
                path=target, target=volume.target, own=own,
            )
    data_dir = os.path.normpath(str(settings.DATA_DIR))
    if paths.is_within(target, data_dir) and not paths.is_within(target,
                                                                       paths.volumes_root()):
        raise PreflightError(
            gettext_noop("The host path %(path)s of volume %(target)s is inside Berth's data "
                         "directory but not under its volumes; a restore cannot swap it."),
            path=target, target=volume.target,
        )


def _check_indexes(snapshot: Snapshot, volumes: list[VolumeMount]) -> None:
    """Every manifest index names a current volume, and every current volume is in the snapshot."""
    indexes = []
    for volume in snapshot.volumes:
        index = volume.get("index") if isinstance(volume, dict) else None
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise PreflightError(gettext_noop("The snapshot's manifest is malformed."))
        indexes.append(index)
    beyond = [index for index in indexes if index >= len(volumes)]
    if beyond:
        raise PreflightError(
            gettext_noop("The snapshot holds volume %(index)d, but the workload now has only "
                         "%(count)d volume(s); it cannot be restored onto this configuration."),
            index=max(beyond), count=len(volumes),
        )
    if sorted(indexes) != list(range(len(indexes))):
        raise PreflightError(gettext_noop("The snapshot's manifest is malformed."))
    for index, volume in enumerate(volumes):
        if index not in indexes:
            raise PreflightError(
                gettext_noop("The workload's volume %(target)s is not in the snapshot; "
                             "restoring the others alone would leave the volumes out of step."),
                target=volume.target,
            )
    _check_same_volumes(snapshot, volumes)


def _check_same_volumes(snapshot: Snapshot, volumes: list[VolumeMount]) -> None:
    """A snapshot Berth took of this workload goes back to the same container paths.

    Indexes follow the volumes' order, which changes when a volume is removed
    and added again: without this check a restore would put one volume's data
    into another. The recorded target is only compared, never used as a path;
    an imported archive (or one of another workload) is mapped by index alone.
    """
    recorded_workload = snapshot.manifest.get("workload") or {}
    if snapshot.imported or recorded_workload.get("id") != snapshot.workload_id:
        return
    for entry in snapshot.volumes:
        then, now = entry.get("target"), volumes[entry["index"]].target
        if then != now:
            raise PreflightError(
                gettext_noop("Volume %(index)d was mounted at %(then)s when the snapshot was "
                             "taken and is mounted at %(now)s now; restoring would put its data "
                             "in the wrong place."),
                index=entry["index"], then=str(then), now=now,
            )


def check_volumes_unchanged(snapshot: Snapshot, volumes: list[VolumeMount]) -> None:
    """A rollback with data: the workload's volumes are exactly those the snapshot captured.

    Stricter than a restore's index check: the same number of volumes, and each
    one's scope, source and container path as recorded, because the rollback puts
    the data back under the release that wrote it, as it was then. (Recorded values
    are only compared, never used as paths.)
    """
    recorded = sorted((v for v in snapshot.volumes if isinstance(v, dict)),
                      key=lambda v: v.get("index") if isinstance(v.get("index"), int) else -1)
    then = [(v.get("scope"), v.get("source"), v.get("target")) for v in recorded]
    now = [(v.scope, v.source, v.target) for v in volumes]
    if then != now:
        raise PreflightError(
            gettext_noop("The workload's volumes changed since snapshot #%(id)d was taken "
                         "before that deploy (then: %(then)s; now: %(now)s); its data cannot "
                         "be put back under that release. Roll back without the data, or "
                         "restore a snapshot by hand."),
            id=snapshot.pk, then=_describe_volumes(then), now=_describe_volumes(now),
        )


def _describe_volumes(volumes: list[tuple]) -> str:
    return ", ".join(f"{target} ({scope}:{source})" for scope, source, target in volumes) \
        or "-"


def check_rollback_configuration(workload: Workload, target: DeployRecord | None) -> None:
    """A rollback with data and configuration: the configuration can still be set back.

    Checked at the request and again here, under the lock and before anything is
    touched: the deploy row may have been pruned from the history while the job was
    queued, a kept secret with it, or a rule may refuse the configuration now.
    """
    if target is None or target.configuration is None:
        raise PreflightError(gettext_noop(
            "The deploy to roll back to is no longer in the history, so its configuration "
            "cannot be set back; nothing was changed."))
    missing = configuration.missing_secrets(workload, target.configuration)
    if missing:
        raise PreflightError(gettext_noop(
            "The value of the secret variable %(names)s that this deploy ran with is no "
            "longer kept; nothing was changed."), names=", ".join(missing))
    try:
        # A dry run: every rule an edit keeps today, rolled back at once.
        with transaction.atomic():
            configuration.apply(workload, target.configuration,
                                reference=target.pinned_reference)
            transaction.set_rollback(True)
    except ValidationError as exc:
        raise PreflightError(gettext_noop(
            "The recorded configuration is not allowed any more: %(reason)s"),
            reason="; ".join(exc.messages)) from None
    finally:
        workload.refresh_from_db()


def _check_rollback_reference(workload: Workload, reference: str) -> None:
    """The release a rollback with data brings back is pinned by digest and can be pulled."""
    if "@sha256:" not in reference:
        raise PreflightError(gettext_noop("A rollback with data needs a deploy pinned by image "
                                          "digest; %(reference)s is not."),
                             reference=reference)
    credential = workload.registry_credential
    try:
        runtime.pull(reference, username=credential.username if credential else "",
                     password=credential.get_password() if credential else "")
    except runtime.EngineError as exc:
        raise PreflightError(
            gettext_noop("The image of the deploy to roll back to (%(reference)s) cannot be "
                         "pulled now: %(error)s"),
            reference=reference, error=str(exc),
        ) from None


def _host_path(volume: VolumeMount) -> str:
    try:
        return volume.host_path()
    except ValidationError:
        raise PreflightError(
            gettext_noop("The volume %(target)s has a host path that is not valid."),
            target=volume.target,
        ) from None


def _check_overlaps(volumes: list[VolumeMount], targets: list[str]) -> None:
    for i, first in enumerate(targets):
        for j, second in enumerate(targets):
            if i != j and paths.is_within(second, first):
                raise PreflightError(
                    gettext_noop("The volumes %(first)s and %(second)s share a host directory "
                                 "(%(path)s); a restore cannot swap one without the other."),
                    first=volumes[i].target, second=volumes[j].target, path=second,
                )


def _check_target(volume: VolumeMount, target: str) -> None:
    try:
        info = os.lstat(target)
    except FileNotFoundError:
        info = None
    if info is not None and os.path.islink(target):
        raise PreflightError(
            gettext_noop("The host path %(path)s of volume %(target)s is a symbolic link; "
                         "a restore only swaps real directories."),
            path=target, target=volume.target,
        )
    if os.path.realpath(target) != target:
        raise PreflightError(
            gettext_noop("The host path %(path)s of volume %(target)s goes through a symbolic "
                         "link; a restore only swaps directories reached without one."),
            path=target, target=volume.target,
        )
    if info is not None and not os.path.isdir(target):
        raise PreflightError(
            gettext_noop("The host path %(path)s of volume %(target)s is not a directory."),
            path=target, target=volume.target,
        )
    mounts = exchange.mounts_at_or_below(target)
    if mounts:
        raise PreflightError(
            gettext_noop("The host path %(path)s of volume %(target)s is or holds a mount point "
                         "(%(mount)s); a restore cannot swap it safely. Restore inside the "
                         "mounted filesystem by making the volume a directory within it."),
            path=target, target=volume.target, mount=mounts[0],
        )


def _check_neighbours(workload: Workload, targets: list[str]) -> None:
    """No other workload's volume may lie in a directory this restore swaps away, nor hold
    one (a volume moved into another's by a rename Berth no longer allows, or by hand)."""
    others = VolumeMount.objects.exclude(workload=workload).select_related(
        "workload__stage__project"
    )
    for volume in others:
        try:
            path = volume.host_path()
        except ValidationError:
            continue
        for target in targets:
            if paths.is_within(path, target):
                raise PreflightError(
                    gettext_noop("The host path %(path)s is also a volume of %(other)s (at "
                                 "%(inner)s); restoring it would pull the data from under that "
                                 "workload."),
                    path=target, other=str(volume.workload), inner=path,
                )
            if paths.is_within(target, path):
                raise PreflightError(
                    gettext_noop("The host path %(path)s lies inside %(outer)s, a volume of "
                                 "%(other)s; restoring it would change that workload's data."),
                    path=target, other=str(volume.workload), outer=path,
                )


def existing_ancestor(path: str) -> str:
    while not os.path.isdir(path):
        path = os.path.dirname(path)
    return path


def _check_space(snapshot: Snapshot, targets: list[str], limits: Limits) -> None:
    """Free space and inodes per filesystem, for everything the staging directories will hold.

    The live data stays where it is until the swap, so the snapshot must fit
    beside it in full.
    """
    needs: dict[int, list] = defaultdict(lambda: [0, 0, ""])
    volumes = {v["index"]: v for v in snapshot.volumes}
    for index, target in enumerate(targets):
        where = existing_ancestor(os.path.dirname(target))
        stat = os.statvfs(where)
        volume = volumes[index]
        files, directories = _count(volume, "files"), _count(volume, "directories")
        block = stat.f_frsize or 4096
        data = _count(volume, "bytes")
        need = needs[os.stat(where).st_dev]
        need[0] += data + (files + directories) * block + data * SLACK_PERCENT // 100
        need[1] += files + directories
        need[2] = need[2] or where
    for device, (need_bytes, need_inodes, where) in needs.items():
        stat = os.statvfs(where)
        # What other extractions in progress have reserved is not free (the extractor
        # reserves this restore's own share when it starts).
        held_bytes, held_inodes = reservations.held(device)
        free = max(0, stat.f_bavail * stat.f_frsize - held_bytes)
        free_inodes = max(0, stat.f_favail - held_inodes)
        if need_bytes + limits.reserve_bytes > free:
            raise PreflightError(
                gettext_noop("Not enough free space on the filesystem of %(path)s: the snapshot "
                             "needs %(needed)s beside the current data (and %(reserve)s kept "
                             "free), but only %(free)s is free."),
                path=where, needed=filesizeformat(need_bytes),
                reserve=filesizeformat(limits.reserve_bytes), free=filesizeformat(free),
            )
        if stat.f_files and need_inodes + limits.reserve_inodes > free_inodes:
            raise PreflightError(
                gettext_noop("Not enough free inodes on the filesystem of %(path)s: the snapshot "
                             "needs %(needed)d (and %(reserve)d kept free), but only %(free)d "
                             "are free."),
                path=where, needed=need_inodes, reserve=limits.reserve_inodes,
                free=free_inodes,
            )


def _count(volume: dict, key: str) -> int:
    value = volume.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise PreflightError(gettext_noop("The snapshot's manifest is malformed."))
    return value


def _reference(workload: Workload) -> str:
    """The digest to bring the workload back on: what it runs now, never a newer tag."""
    reference = workload.running_reference
    if reference and "@sha256:" not in reference:
        raise PreflightError(gettext_noop("The workload's running version is not pinned by "
                                          "digest; deploy it once before restoring."))
    if not reference:
        try:
            containers = runtime.list_containers(workload.pk)
        except runtime.EngineError:
            containers = []
        if containers:
            raise PreflightError(gettext_noop("The workload has containers but no recorded "
                                              "running version; deploy it before restoring."))
    return reference


def _check_redeployable(workload: Workload, reference: str) -> None:
    """The workload must be able to come back: the engine answers and its image can be pulled.

    The pull also leaves the image on the host, so the redeploy inside the
    downtime window has nothing to download.
    """
    if not runtime.engine_status().reachable:
        raise PreflightError(gettext_noop("The Docker engine is unreachable: the workload "
                                          "could not be stopped and brought back."))
    credential = workload.registry_credential
    try:
        runtime.pull(reference, username=credential.username if credential else "",
                     password=credential.get_password() if credential else "")
    except runtime.EngineError as exc:
        raise PreflightError(
            gettext_noop("The image the workload runs (%(reference)s) cannot be pulled now, "
                         "so the workload could not be brought back after the restore: "
                         "%(error)s"),
            reference=reference, error=str(exc),
        ) from None


def open_verified(snapshot: Snapshot) -> BinaryIO:
    """The archive, opened once, after its size and SHA-256 match the snapshot's record.

    The restore extracts from this same open file, so replacing the file by
    name after the check changes nothing; the extractor validates every byte
    it reads anyway, and the restore compares the file's status after
    extracting to notice a write in place.
    """
    try:
        source = storage.open_archive(snapshot.workload_id, snapshot.archive)
    except (FileNotFoundError, ValueError):
        raise PreflightError(gettext_noop("The archive file of snapshot #%(id)d is missing."),
                             id=snapshot.pk) from None
    try:
        if os.fstat(source.fileno()).st_size != snapshot.size:
            raise _damaged(snapshot)
        digest = hashlib.sha256()
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
        if digest.hexdigest() != snapshot.sha256:
            raise _damaged(snapshot)
        source.seek(0)
    except BaseException:
        source.close()
        raise
    return source


def _damaged(snapshot: Snapshot) -> PreflightError:
    return PreflightError(
        gettext_noop("The archive of snapshot #%(id)d does not match its recorded size and "
                     "SHA-256: it is damaged or was changed."), id=snapshot.pk,
    )


def file_status(source: BinaryIO) -> tuple[int, int, int]:
    info = os.fstat(source.fileno())
    return info.st_size, info.st_mtime_ns, info.st_ctime_ns
