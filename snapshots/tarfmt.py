"""The byte level of Berth's tar stream: building headers, and parsing them strictly.

Python's `tarfile` is not used for reading: this machine's Python 3.11.7
predates the 2024–2025 fixes to its header parsing (a regular-expression
blow-up in PAX headers, CVE-2024-6232; a loop on negative offsets,
CVE-2025-8194) and to its extraction filters. The parser below understands a
small, strict subset of POSIX ustar/pax (and GNU's long-name header), and
raises ArchiveError on anything else. docs/archive-format.md describes it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from django.utils.translation import gettext_noop

from snapshots.errors import ArchiveError

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
END_OF_ARCHIVE = ZERO_BLOCK * 2

POSIX_MAGIC = b"ustar\x0000"  # magic "ustar\0" + version "00"
GNU_MAGIC = b"ustar  \x00"  # magic "ustar " + version " \0"

REGULAR = b"0"
REGULAR_OLD = b"\x00"
DIRECTORY = b"5"
PAX_HEADER = b"x"
PAX_GLOBAL = b"g"
GNU_LONGNAME = b"L"

# Every typeflag that is refused, with what it is, for a message that says why.
REFUSED_TYPES = {
    b"1": gettext_noop("a hard link"),
    b"2": gettext_noop("a symbolic link"),
    b"3": gettext_noop("a character device"),
    b"4": gettext_noop("a block device"),
    b"6": gettext_noop("a FIFO"),
    b"7": gettext_noop("a contiguous file"),
    b"S": gettext_noop("a GNU sparse file"),
    b"M": gettext_noop("a GNU multivolume continuation"),
    b"V": gettext_noop("a GNU volume label"),
    b"K": gettext_noop("a GNU long link name"),
    b"D": gettext_noop("a GNU dump directory"),
    b"N": gettext_noop("an old GNU long name"),
    PAX_GLOBAL: gettext_noop("a global PAX header"),
}

# Largest values the ustar numeric fields hold; larger ones travel in a PAX header.
_MAX_ID = 0o7777777
_MAX_SIZE = 0o77777777777
_MAX_MTIME = 0o77777777777

_OCTAL = re.compile(rb" *([0-7]+)[ \x00]*")
_DECIMAL = re.compile(rb"0|[1-9][0-9]{0,18}")
_MTIME = re.compile(rb"(-?)(0|[1-9][0-9]{0,11})(?:\.([0-9]{1,9}))?")
_PAX_LENGTH = re.compile(rb"[1-9][0-9]{0,5}")

# PAX keywords that are applied, and those that are read and dropped (access
# times, owner names, comments, extended attributes and ACLs are not restored).
PAX_APPLIED = {"path", "size", "mtime", "uid", "gid"}
PAX_IGNORED = {"atime", "ctime", "uname", "gname", "comment"}
PAX_IGNORED_PREFIXES = ("SCHILY.xattr.", "LIBARCHIVE.xattr.", "SCHILY.acl.")


# --- writing ------------------------------------------------------------------

def _pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode()
    # The length counts its own digits, so grow it until it is stable.
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length = len(str(length)) + len(body)
    return str(length).encode() + body


# Everything after the typeflag, in the headers Berth writes: no link name, the
# POSIX magic, empty owner names, device numbers and prefix.
_TAIL = bytes(100) + POSIX_MAGIC + bytes(32 + 32 + 8 + 8 + 155 + 12)
_FIXED_SUM = sum(_TAIL) + 8 * ord(" ")  # the checksum field counts as eight spaces


def _ustar(name: bytes, typeflag: bytes, size: int, mode: int, uid: int, gid: int,
           mtime: int) -> bytes:
    """One ustar header block; `name` is at most 100 bytes. Built field by field (it is
    called for every member, so the checksum sums only the bytes that vary)."""
    numbers = b"%07o\x00%07o\x00%07o\x00%011o\x00%011o\x00" % (mode, uid, gid, size, mtime)
    checksum = sum(name) + sum(numbers) + typeflag[0] + _FIXED_SUM
    return b"".join(
        (name.ljust(100, b"\x00"), numbers, b"%06o\x00 " % checksum, typeflag, _TAIL)
    )


def pad(size: int) -> bytes:
    """The zero bytes that follow `size` bytes of member data."""
    return bytes(-size % BLOCK)


def member_header(name: str, *, is_dir: bool, size: int, mode: int, uid: int, gid: int,
                  mtime_ns: int) -> bytes:
    """The header block(s) of one member: a PAX header first when ustar cannot hold a value.

    Directories are named with a trailing slash; mtimes keep their nanoseconds
    (in the PAX header) when they have any.
    """
    if is_dir:
        name += "/"
    raw = name.encode()
    seconds, nanos = divmod(mtime_ns, 1_000_000_000)
    records = []
    if len(raw) > 100:
        records.append(_pax_record("path", name))
        raw = raw[:100]
    if nanos or not 0 <= seconds <= _MAX_MTIME:
        records.append(_pax_record("mtime", _format_mtime(mtime_ns)))
    if uid > _MAX_ID:
        records.append(_pax_record("uid", str(uid)))
    if gid > _MAX_ID:
        records.append(_pax_record("gid", str(gid)))
    if size > _MAX_SIZE:
        records.append(_pax_record("size", str(size)))
    header = _ustar(
        raw, DIRECTORY if is_dir else REGULAR, min(size, _MAX_SIZE), mode & 0o777,
        min(uid, _MAX_ID), min(gid, _MAX_ID), min(max(seconds, 0), _MAX_MTIME),
    )
    if not records:
        return header
    data = b"".join(records)
    return _pax_header(len(data)) + data + pad(len(data)) + header


@functools.lru_cache(maxsize=512)
def _pax_header(size: int) -> bytes:
    """The header of a PAX extended header; only its size varies (readers ignore its name)."""
    return _ustar(b"././@PaxHeader", PAX_HEADER, size, 0o644, 0, 0, 0)


def _format_mtime(mtime_ns: int) -> str:
    sign = "-" if mtime_ns < 0 else ""
    seconds, nanos = divmod(abs(mtime_ns), 1_000_000_000)
    return f"{sign}{seconds}.{nanos:09d}" if nanos else f"{sign}{seconds}"


# --- reading ------------------------------------------------------------------

@dataclass(frozen=True)
class RawHeader:
    """One 512-byte header as found, before any PAX or long-name override."""

    name: bytes
    typeflag: bytes
    size: int
    mode: int
    uid: int
    gid: int
    mtime: int


def _cstring(field: bytes, what: str) -> bytes:
    """A NUL-terminated field; anything but NULs after the terminator is refused."""
    end = field.find(b"\x00")
    if end == -1:
        return field
    if field[end:].strip(b"\x00"):
        raise ArchiveError(gettext_noop("A header's %(field)s field has data after its NUL."),
                           field=what)
    return field[:end]


def _octal(field: bytes, what: str) -> int:
    if field[:1] and field[0] & 0x80:
        raise ArchiveError(
            gettext_noop("A header's %(field)s field uses base-256 numbers, which are refused."),
            field=what,
        )
    match = _OCTAL.fullmatch(field)
    if match is None:
        raise ArchiveError(gettext_noop("A header's %(field)s field is not an octal number."),
                           field=what)
    return int(match.group(1), 8)


def parse_header(block: bytes) -> RawHeader | None:
    """The header in `block`, or None for a zero block (the end-of-archive marker)."""
    if block == ZERO_BLOCK:
        return None
    stored = _octal(block[148:156], "checksum")
    if sum(block) - sum(block[148:156]) + 8 * ord(" ") != stored:
        raise ArchiveError(gettext_noop("A tar header's checksum does not match."))
    magic = block[257:265]
    if magic not in (POSIX_MAGIC, GNU_MAGIC):
        raise ArchiveError(gettext_noop("A header is not a POSIX or GNU tar header."))
    name = _cstring(block[0:100], "name")
    if magic == POSIX_MAGIC:
        prefix = _cstring(block[345:500], "prefix")
        if prefix:
            name = prefix + b"/" + name
    typeflag = block[156:157]
    size = _octal(block[124:136], "size")
    if typeflag not in (REGULAR, REGULAR_OLD, DIRECTORY):
        # An extended header or a refused type: its other fields are never used.
        return RawHeader(name, typeflag, size, 0, 0, 0, 0)
    if _cstring(block[157:257], "link name"):
        raise ArchiveError(gettext_noop("A member names a link target; links are refused."))
    return RawHeader(
        name=name,
        typeflag=typeflag,
        size=size,
        mode=_octal(block[100:108], "mode"),
        uid=_octal(block[108:116], "uid"),
        gid=_octal(block[116:124], "gid"),
        mtime=_octal(block[136:148], "mtime") * 1_000_000_000,
    )


def parse_pax(data: bytes, max_records: int | None = None) -> dict[str, bytes]:
    """The records of a PAX extended header, strictly: `LEN KEY=VALUE\\n`, each key once
    (and at most `max_records` of them)."""
    records: dict[str, bytes] = {}
    pos = 0
    while pos < len(data):
        if max_records is not None and len(records) >= max_records:
            raise ArchiveError(gettext_noop("A PAX header has too many records."))
        space = data.find(b" ", pos, pos + 7)
        if space == -1 or not _PAX_LENGTH.fullmatch(data, pos, space):
            raise ArchiveError(gettext_noop("A PAX header record has a malformed length."))
        end = pos + int(data[pos:space])
        if end > len(data) or data[end - 1:end] != b"\n":
            raise ArchiveError(gettext_noop("A PAX header record is malformed."))
        key, eq, value = data[space + 1:end - 1].partition(b"=")
        if not eq or not key:
            raise ArchiveError(gettext_noop("A PAX header record is malformed."))
        try:
            keyword = key.decode("utf-8")
        except UnicodeDecodeError:
            raise ArchiveError(gettext_noop("A PAX header keyword is not UTF-8.")) from None
        if keyword in records:
            raise ArchiveError(gettext_noop("A PAX header sets %(key)s twice."), key=keyword)
        records[keyword] = value
        pos = end
    return records


def pax_decimal(value: bytes, key: str, maximum: int) -> int:
    if not _DECIMAL.fullmatch(value) or int(value) > maximum:
        raise ArchiveError(gettext_noop("A PAX header's %(key)s is not a valid number."), key=key)
    return int(value)


def pax_mtime(value: bytes) -> int:
    """A PAX mtime (`[-]SECONDS[.FRACTION]`) in nanoseconds."""
    match = _MTIME.fullmatch(value)
    if match is None:
        raise ArchiveError(gettext_noop("A PAX header's mtime is not a valid time."))
    sign, seconds, fraction = match.groups()
    ns = int(seconds) * 1_000_000_000 + int((fraction or b"0").ljust(9, b"0"))
    return -ns if sign else ns
