"""Berth's snapshot archive format: its names, its manifest, and the limits both sides keep.

The writer (snapshots/writer.py) and the safe extractor (snapshots/archive.py)
share these rules; docs/archive-format.md describes the format in full.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from django.conf import settings
from django.utils.translation import gettext_noop

from lib.paths import SUPPORTED_SCOPES
from snapshots.errors import ArchiveError

FORMAT = "berth-snapshot"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
# No count in a manifest may exceed these (they have to fit the database's columns).
MAX_COUNT = 1 << 62
MAX_SKIPPED_COUNT = (1 << 31) - 1


@dataclass(frozen=True)
class Limits:
    """What the extractor (and so the capture) accepts; see README "Configuration"."""

    max_bytes: int
    max_file_bytes: int
    max_entries: int
    reserve_bytes: int
    reserve_inodes: int
    max_manifest_bytes: int = 16 * 1024 * 1024
    max_depth: int = 128
    max_path_bytes: int = 3072
    max_name_bytes: int = 255

    @classmethod
    def from_settings(cls) -> Limits:
        return cls(
            max_bytes=settings.BERTH_SNAPSHOT_MAX_BYTES,
            max_file_bytes=settings.BERTH_SNAPSHOT_MAX_FILE_BYTES,
            max_entries=settings.BERTH_SNAPSHOT_MAX_ENTRIES,
            reserve_bytes=settings.BERTH_SNAPSHOT_RESERVE_BYTES,
            reserve_inodes=settings.BERTH_SNAPSHOT_RESERVE_INODES,
        )


# Unicode's control characters (category Cc) are exactly these; with the slashes.
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f/\\\\]")


def name_problem(name: bytes, limits: Limits) -> str | None:
    """Why one path component cannot be stored, or None. Shared with the capture."""
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        return gettext_noop("not UTF-8")
    if text in ("", ".", ".."):
        return gettext_noop("an empty, '.' or '..' component")
    if len(name) > limits.max_name_bytes:
        return gettext_noop("a component longer than 255 bytes")
    if _FORBIDDEN.search(text):
        return gettext_noop("a NUL, a control character, a slash or a backslash")
    return None


def member_parts(raw: bytes, is_dir: bool, limits: Limits) -> tuple[str, ...]:
    """The components of a member's effective name, or ArchiveError saying why not."""
    shown = raw.decode("utf-8", "backslashreplace")[:300]
    if is_dir and raw.endswith(b"/"):
        raw = raw[:-1]
    if len(raw) > limits.max_path_bytes:
        raise ArchiveError(gettext_noop("The name %(name)s is too long."), name=shown)
    if raw.startswith(b"/"):
        raise ArchiveError(gettext_noop("The name %(name)s is absolute."), name=shown)
    parts = raw.split(b"/")
    # All components at once (this runs for every member); name_problem says
    # which rule a refused one breaks.
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if (text is None or _FORBIDDEN.search(text.replace("/", "")) or b"" in parts
            or b"." in parts or b".." in parts or max(map(len, parts)) > limits.max_name_bytes):
        problems = (name_problem(part, limits) for part in parts)
        problem = next((p for p in problems if p), gettext_noop("a forbidden character"))
        raise ArchiveError(
            gettext_noop("The name %(name)s has %(what)s."), name=shown, what=problem
        )
    return tuple(text.split("/"))


def manifest_bytes(manifest: dict) -> bytes:
    return json.dumps(manifest, ensure_ascii=False, indent=1, sort_keys=True).encode()


def _unique_object(pairs: list[tuple[str, object]]) -> dict:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


def _reject_constant(value: str) -> None:
    raise ValueError(value)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT


def parse_manifest(data: bytes, volume_count: int, limits: Limits) -> dict:
    """The manifest, checked: version, volumes numbered 0…n-1 and in range, sane counts."""
    try:
        manifest = json.loads(
            data.decode("utf-8"), object_pairs_hook=_unique_object,
            parse_constant=_reject_constant,
        )
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ArchiveError(gettext_noop("The manifest is not valid JSON.")) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArchiveError(gettext_noop("The archive is not a Berth snapshot."))
    if manifest.get("version") != FORMAT_VERSION:
        raise ArchiveError(
            gettext_noop("The archive's format version %(version)s is not supported."),
            version=str(manifest.get("version"))[:20],
        )
    volumes = manifest.get("volumes")
    if not isinstance(volumes, list) or not volumes:
        raise ArchiveError(gettext_noop("The manifest lists no volumes."))
    for position, volume in enumerate(volumes):
        _check_manifest_volume(volume, position, volume_count)
    skipped_count = manifest.get("skipped_count", 0)
    if not isinstance(manifest.get("skipped", []), list) or not _count(skipped_count) or (
        skipped_count > MAX_SKIPPED_COUNT
    ):
        raise ArchiveError(gettext_noop("The manifest's list of skipped entries is malformed."))
    if sum(v["bytes"] for v in volumes) > limits.max_bytes:
        raise ArchiveError(gettext_noop("The manifest declares more data than the limit allows."))
    if sum(v["files"] + v["directories"] for v in volumes) > limits.max_entries:
        raise ArchiveError(
            gettext_noop("The manifest declares more entries than the limit allows.")
        )
    for volume in volumes:
        # Caps before free space: a volume whose bytes its files could not hold under the
        # per-file cap (one file of 300 GiB) is an invalid archive, not a full disk.
        if volume["bytes"] > volume["files"] * limits.max_file_bytes:
            raise ArchiveError(
                gettext_noop("The manifest declares more data in volume %(index)d than its "
                             "files may hold under the per-file limit."),
                index=volume["index"],
            )
    return normalise_manifest(manifest)


# The manifest lists this many skipped entries at most; `skipped_count` has them all.
MAX_SKIPPED_LISTED = 1000
# What a stored manifest may hold: the known keys, strings of bounded length.


_TEXT_LIMITS = {"created": 64, "consistency": 16, "name": 200, "path": 1024, "scope": 16,
                "source": 1024, "target": 1024, "type": 32, "reason": 200}


def _text(value: object, key: str) -> str:
    if not isinstance(value, str):
        return ""
    limit = _TEXT_LIMITS[key]
    return value if len(value) <= limit else value[:limit - 1] + "…"


def _int_or_none(value: object) -> int | None:
    return value if _count(value) else None


def normalise_manifest(manifest: dict) -> dict:
    """A checked manifest reduced to what Berth stores: known keys only, typed, bounded.

    An imported manifest is stored and shown: whatever else it holds is
    dropped, strings are cut to a few hundred characters, `skipped` keeps its
    first 1000 well-formed entries and `skipped_count` is never below them.
    """
    workload = manifest.get("workload")
    workload = workload if isinstance(workload, dict) else {}
    skipped = manifest.get("skipped", [])
    listed = [
        {"volume": _int_or_none(item.get("volume")), "path": _text(item.get("path"), "path"),
         "type": _text(item.get("type"), "type"), "reason": _text(item.get("reason"), "reason")}
        for item in skipped[:MAX_SKIPPED_LISTED] if isinstance(item, dict)
    ]
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "created": _text(manifest.get("created"), "created"),
        "workload": {"id": _int_or_none(workload.get("id")),
                     "name": _text(workload.get("name"), "name"),
                     "path": _text(workload.get("path"), "path")},
        "consistency": _text(manifest.get("consistency"), "consistency"),
        "volumes": [
            {"index": v["index"], "scope": v["scope"], "source": _text(v["source"], "source"),
             "target": _text(v["target"], "target"), "files": v["files"],
             "directories": v["directories"], "bytes": v["bytes"],
             "missing": v.get("missing") is True}
            for v in manifest["volumes"]
        ],
        "skipped": listed,
        "skipped_count": min(max(manifest.get("skipped_count", 0), len(skipped)),
                             MAX_SKIPPED_COUNT),
    }


def _check_manifest_volume(volume: object, position: int, volume_count: int) -> None:
    if not isinstance(volume, dict) or volume.get("index") != position:
        raise ArchiveError(gettext_noop("The manifest's volumes are not numbered 0, 1, 2…"))
    if position >= volume_count:
        raise ArchiveError(
            gettext_noop("The archive holds volume %(index)d, but the workload has only "
                         "%(count)d volume(s)."),
            index=position, count=volume_count,
        )
    if volume.get("scope") not in SUPPORTED_SCOPES or not all(
        isinstance(volume.get(key), str) for key in ("source", "target")
    ):
        raise ArchiveError(gettext_noop("The manifest describes volume %(index)d badly."),
                           index=position)
    if not all(_count(volume.get(key)) for key in ("files", "directories", "bytes")):
        raise ArchiveError(gettext_noop("The manifest describes volume %(index)d badly."),
                           index=position)
