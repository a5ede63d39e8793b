"""Hostile archives for the safe extractor, built byte by byte (no binary files in the repo).

`corpus(canary)` returns one Case per attack, each with the error the
extractor must give. `canary` is a directory beside the staging directory:
attacks that try to write outside staging aim at it (by relative and by
absolute path), so a test can check it is untouched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

import zstandard

from snapshots.archive_format import Limits

POSIX = b"ustar\x0000"
GNU = b"ustar  \x00"
BLOCK = 512
EOA = bytes(1024)

# Small caps, so that every cap can be crossed with a small archive.
LIMITS = Limits(
    max_bytes=1 << 20, max_file_bytes=256 << 10, max_entries=50, reserve_bytes=0,
    reserve_inodes=0, max_manifest_bytes=4096, max_depth=8, max_path_bytes=200,
    max_name_bytes=255,
)


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\x00" % (width - 1, value)


def header(name: bytes, *, typeflag: bytes = b"0", size: int = 0, mode: int = 0o644,
           uid: int = 0, gid: int = 0, mtime: int = 1_700_000_000, linkname: bytes = b"",
           magic: bytes = POSIX, prefix: bytes = b"", fields: dict[str, bytes] | None = None,
           checksum_delta: int = 0) -> bytes:
    """One raw 512-byte header; `fields` overrides a field's raw bytes (name, mode, size…)."""
    raw = {
        "name": name, "mode": _octal(mode, 8), "uid": _octal(uid, 8), "gid": _octal(gid, 8),
        "size": _octal(size, 12), "mtime": _octal(mtime, 12), "linkname": linkname,
        "magic": magic, "prefix": prefix,
    } | (fields or {})
    block = bytearray(BLOCK)
    for key, start, width in (("name", 0, 100), ("mode", 100, 8), ("uid", 108, 8),
                              ("gid", 116, 8), ("size", 124, 12), ("mtime", 136, 12),
                              ("linkname", 157, 100), ("magic", 257, 8), ("prefix", 345, 155)):
        value = raw[key][:width]
        block[start:start + len(value)] = value
    block[156:157] = typeflag
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\x00 " % (sum(block) + checksum_delta)
    return bytes(block)


def pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


def member(name: str | bytes, data: bytes = b"", **kw) -> bytes:
    raw = name.encode() if isinstance(name, str) else name
    return header(raw, size=kw.pop("size", len(data)), **kw) + pad(data)


def directory(name: str | bytes, **kw) -> bytes:
    raw = name.encode() if isinstance(name, str) else name
    kw.setdefault("mode", 0o755)
    return header(raw if raw.endswith(b"/") else raw + b"/", typeflag=b"5", **kw)


def pax_record(key: str, value: str | bytes) -> bytes:
    value = value.encode() if isinstance(value, str) else value
    body = b" " + key.encode() + b"=" + value + b"\n"
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length = len(str(length)) + len(body)
    return str(length).encode() + body


def pax(records: dict[str, str | bytes] | bytes, *, typeflag: bytes = b"x") -> bytes:
    data = records if isinstance(records, bytes) else b"".join(
        pax_record(k, v) for k, v in records.items()
    )
    return header(b"PaxHeader/x", typeflag=typeflag, size=len(data)) + pad(data)


def longname(name: bytes) -> bytes:
    data = name + b"\x00"
    return header(b"././@LongLink", typeflag=b"L", size=len(data), magic=GNU) + pad(data)


def manifest(volumes: list[tuple[int, int, int]] | None = None, **extra) -> dict:
    """A manifest: one (files, directories, bytes) triple per volume."""
    volumes = volumes if volumes is not None else [(0, 1, 0)]
    return {
        "format": "berth-snapshot", "version": 1, "created": "2026-11-26T00:00:00+00:00",
        "workload": {"id": 1, "name": "web"}, "consistency": "stop",
        "volumes": [
            {"index": i, "scope": "stage", "source": f"data{i}", "target": f"/data{i}",
             "files": files, "directories": dirs, "bytes": size}
            for i, (files, dirs, size) in enumerate(volumes)
        ],
        "skipped": [], "skipped_count": 0,
    } | extra


def manifest_member(value: dict | bytes | None = None, **kw) -> bytes:
    data = value if isinstance(value, bytes) else json.dumps(value or manifest()).encode()
    return member("manifest.json", data, **kw)


def tar(*members: bytes, end: bytes = EOA) -> bytes:
    return b"".join(members) + end


def zst(data: bytes, *, checksum: bool = True) -> bytes:
    return zstandard.ZstdCompressor(level=3, write_checksum=checksum).compress(data)


def archive(*members: bytes, volumes: list[tuple[int, int, int]] | None = None,
            end: bytes = EOA) -> bytes:
    """manifest.json, volumes/0/, then `members`, compressed.

    Without `volumes` the manifest declares as much as LIMITS allow, so that a
    case meets its own rule before the manifest's upper bounds."""
    volumes = volumes if volumes is not None else [(40, 10, LIMITS.max_bytes)]
    return zst(tar(manifest_member(manifest(volumes)), directory("volumes/0"), *members, end=end))


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    error: str  # a regular expression the error's message must match
    volume_count: int = 1
    limits: Limits = field(default=LIMITS)


def corpus(canary: str) -> list[Case]:
    """Every hostile archive; `canary` is the absolute path of the directory to protect."""
    out = f"../../../{canary.rsplit('/', 1)[-1]}/pwned"
    absolute = f"{canary}/pwned"
    big = 300 << 10
    cases = [
        # --- types other than regular files and directories ---------------------
        Case("symlink", archive(member("volumes/0/link", typeflag=b"2", linkname=b"/etc")),
             "symbolic link"),
        Case("symlink-then-write-through-it", archive(
            member("volumes/0/link", typeflag=b"2", linkname=out.encode()),
            member("volumes/0/link/pwned", b"owned")), "symbolic link"),
        Case("hardlink", archive(member("volumes/0/passwd", typeflag=b"1",
                                        linkname=b"/etc/passwd")), "hard link"),
        Case("hardlink-to-canary", archive(member("volumes/0/c", typeflag=b"1",
                                                  linkname=absolute.encode())), "hard link"),
        Case("character-device", archive(member("volumes/0/null", typeflag=b"3")),
             "character device"),
        Case("block-device", archive(member("volumes/0/sda", typeflag=b"4")), "block device"),
        Case("fifo", archive(member("volumes/0/pipe", typeflag=b"6")), "FIFO"),
        Case("contiguous-file", archive(member("volumes/0/c", b"x", typeflag=b"7")),
             "contiguous file"),
        Case("gnu-sparse", archive(member("volumes/0/s", typeflag=b"S", magic=GNU)),
             "sparse"),
        Case("pax-sparse", archive(pax({"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}),
                                   member("volumes/0/s", b"x")), "sparse"),
        Case("gnu-multivolume", archive(member("volumes/0/m", typeflag=b"M", magic=GNU)),
             "multivolume"),
        Case("gnu-volume-label", archive(member("label", typeflag=b"V", magic=GNU)),
             "volume label"),
        Case("gnu-long-link", archive(
            header(b"././@LongLink", typeflag=b"K", size=4, magic=GNU) + pad(b"/etc"),
            member("volumes/0/f", b"x")), "long link name"),
        Case("unknown-type", archive(member("volumes/0/u", b"x", typeflag=b"Z")),
             "unknown type"),
        Case("global-pax-renames", archive(pax({"path": out}, typeflag=b"g"),
                                           member("volumes/0/f", b"x")), "global PAX header"),
        Case("global-pax-harmless", archive(pax({"comment": "hi"}, typeflag=b"g"),
                                            member("volumes/0/f", b"x")), "global PAX header"),
        # --- names -------------------------------------------------------------
        Case("absolute-into-canary", archive(member(absolute, b"owned")), "absolute"),
        Case("absolute-volumes", archive(member("/volumes/0/x", b"owned")), "absolute"),
        Case("dotdot-inside", archive(member(f"volumes/0/{out}", b"owned")), r"'\.\.'"),
        Case("dotdot-leading", archive(member(out, b"owned")), r"'\.\.'"),
        Case("dotdot-last", archive(directory("volumes/0/a"), directory("volumes/0/a/..")),
             r"'\.\.'"),
        Case("empty-component", archive(member("volumes/0//x", b"x")), "empty"),
        Case("dot-component", archive(member("volumes/0/./x", b"x")), r"'\.'"),
        Case("nul-in-pax-path", archive(pax({"path": b"volumes/0/a\x00/../../x"}),
                                        member("volumes/0/a", b"x")), "NUL"),
        Case("newline-in-name", archive(member("volumes/0/a\nb", b"x")), "control"),
        Case("escape-in-name", archive(member("volumes/0/\x1b[2Jx", b"x")), "control"),
        Case("c1-control-in-name", archive(member("volumes/0/a\u0085b", b"x")), "control"),
        Case("backslash", archive(member("volumes/0/..\\..\\pwned", b"x")), "backslash"),
        Case("undecodable-bytes", archive(member(b"volumes/0/\xff\xfe", b"x")), "not UTF-8"),
        Case("overlong-utf8-slash", archive(member(b"volumes/0/a\xc0\xafb", b"x")),
             "not UTF-8"),
        Case("component-too-long", archive(pax({"path": "volumes/0/" + "a" * 256}),
                                           member("volumes/0/a", b"x")), "255 bytes",
             limits=replace(LIMITS, max_path_bytes=4096)),
        Case("path-too-long", archive(pax({"path": "volumes/0/" + "/".join(["d" * 50] * 5)}),
                                      member("volumes/0/a", b"x")), "too long"),
        Case("too-deep", archive(*[directory("volumes/0/" + "/".join("d" * (i + 1)))
                                   for i in range(10)]), "too deeply"),
        Case("outside-volumes", archive(member("etc/passwd", b"x")), "not under volumes"),
        Case("bare-volumes-dir", archive(directory("volumes")), "not under volumes"),
        Case("index-leading-zero", archive(directory("volumes/00")), "not under volumes"),
        Case("index-with-sign", archive(directory("volumes/+0")), "not under volumes"),
        Case("index-arabic-digit", archive(directory("volumes/\u0660")), "not under volumes"),
        Case("index-not-in-manifest", archive(directory("volumes/1")), "does not list"),
        Case("index-beyond-configuration", zst(tar(
            manifest_member(manifest([(0, 1, 0), (0, 1, 0)])), directory("volumes/0"),
            directory("volumes/1"))), "only 1 volume"),
        Case("pax-path-override-escapes", archive(pax({"path": out}),
                                                  member("volumes/0/benign", b"x")), r"'\.\.'"),
        Case("gnu-longname-absolute", archive(longname(absolute.encode()),
                                              member("volumes/0/benign", b"x")), "absolute"),
        Case("ustar-prefix-escapes", archive(member(b"pwned", b"x", prefix=b"volumes/0/../..")),
             r"'\.\.'"),
        Case("nul-then-garbage-in-name", archive(member(b"volumes/0/a\x00../../pwned", b"x")),
             "after its NUL"),
        # --- duplicates and conflicts -------------------------------------------------
        Case("duplicate-file", archive(member("volumes/0/f", b"1"), member("volumes/0/f", b"2")),
             "twice"),
        Case("duplicate-directory", archive(directory("volumes/0/d"), directory("volumes/0/d")),
             "twice"),
        Case("duplicate-volume-root", archive(directory("volumes/0")), "twice"),
        Case("file-then-directory", archive(member("volumes/0/x", b"1"),
                                            directory("volumes/0/x")), "twice"),
        Case("directory-then-file", archive(directory("volumes/0/x"),
                                            member("volumes/0/x", b"1")), "twice"),
        Case("file-then-child", archive(member("volumes/0/x", b"1"),
                                        member("volumes/0/x/y", b"2")), "parent is a file"),
        Case("missing-parent", archive(member("volumes/0/a/b", b"1")), "before its parent"),
        Case("member-before-volume-root", zst(tar(
            manifest_member(), member("volumes/0/x", b"1"), directory("volumes/0"))),
             "before its parent"),
        Case("volume-root-is-a-file", zst(tar(manifest_member(), member("volumes/0", b"x"))),
             "not a directory"),
        Case("directory-with-data", archive(directory("volumes/0/d", size=10) + pad(b"x" * 10)),
             "has data"),
        Case("file-with-trailing-slash", archive(member("volumes/0/f/", b"x")), "empty"),
        # --- caps ----------------------------------------------------------------------
        Case("file-over-cap", archive(member("volumes/0/big", b"x" * big)), "per-file limit"),
        Case("pax-size-over-cap", archive(pax({"size": str(1 << 40)}),
                                          member("volumes/0/big", b"")), "per-file limit"),
        Case("total-over-cap", archive(*[member(f"volumes/0/f{i}", b"x" * (250 << 10))
                                         for i in range(5)]),
             "more data than the limit|more than its manifest declares"),
        Case("too-many-entries", archive(*[member(f"volumes/0/f{i}") for i in range(60)]),
             "more entries than the limit|more than its manifest declares"),
        Case("manifest-over-cap", zst(tar(manifest_member(manifest(
            skipped=[{"path": "x" * 100}] * 50)), directory("volumes/0"))),
             "manifest is larger"),
        Case("manifest-declares-too-much", zst(tar(manifest_member(manifest([(1, 1, 1 << 30)])),
                                                   directory("volumes/0"))),
             "declares more data"),
        Case("header-size-lies", zst(tar(manifest_member(manifest([(1, 1, 5000)])),
                                         directory("volumes/0"),
                                         header(b"volumes/0/f", size=5000) + b"short",
                                         end=b"")), "truncated"),
        Case("no-free-space", archive(member("volumes/0/f", b"x")), "out of free space",
             limits=replace(LIMITS, reserve_bytes=1 << 62)),
        Case("no-free-inodes", archive(member("volumes/0/f", b"x")), "out of free inodes",
             limits=replace(LIMITS, reserve_inodes=1 << 62)),
        # --- the manifest ---------------------------------------------------------------
        Case("missing-manifest", zst(tar(directory("volumes/0"))), "start with its manifest"),
        Case("empty-archive", zst(tar()), "start with its manifest"),
        Case("misplaced-manifest", zst(tar(directory("volumes/0"), manifest_member())),
             "start with its manifest"),
        Case("second-manifest", archive(manifest_member()), "not under volumes"),
        Case("manifest-is-a-directory", zst(tar(directory("manifest.json"))),
             "start with its manifest"),
        Case("manifest-not-json", zst(tar(manifest_member(b"{not json"), directory("volumes/0"))),
             "not valid JSON"),
        Case("manifest-duplicate-keys", zst(tar(
            manifest_member(b'{"format": "berth-snapshot", "format": "x"}'))), "not valid JSON"),
        Case("manifest-nan", zst(tar(manifest_member(
            json.dumps(manifest(extra=float("nan"))).encode()))), "not valid JSON"),
        Case("manifest-deeply-nested", zst(tar(manifest_member(b"[" * 2000 + b"]" * 2000))),
             "not valid JSON"),
        Case("manifest-huge-skipped-count", zst(tar(manifest_member(
            manifest(skipped_count=1 << 40)), directory("volumes/0"))), "skipped entries"),
        Case("manifest-wrong-format", zst(tar(manifest_member(manifest(format="tar")))),
             "not a Berth snapshot"),
        Case("manifest-wrong-version", zst(tar(manifest_member(manifest(version=2)))),
             "version 2"),
        Case("manifest-bad-volume", zst(tar(manifest_member(
            manifest() | {"volumes": [{"index": 0, "scope": "stage"}]}))), "badly"),
        Case("manifest-bad-scope", zst(tar(manifest_member(
            manifest() | {"volumes": [manifest()["volumes"][0] | {"scope": "docker"}]}))),
             "badly"),
        Case("manifest-boolean-count", zst(tar(manifest_member(
            manifest() | {"volumes": [manifest()["volumes"][0] | {"files": True}]}))), "badly"),
        Case("manifest-lies-about-counts", archive(member("volumes/0/f", b"x"),
                                                   volumes=[(2, 1, 1)]),
             "does not hold what the manifest says"),
        Case("manifest-volume-without-root", zst(tar(
            manifest_member(manifest([(0, 1, 0), (0, 1, 0)])), directory("volumes/0"))),
             "lacks the root of volume 1", volume_count=2),
        # --- the compressed stream and the tar framing ------------------------------------
        Case("not-compressed", tar(manifest_member(), directory("volumes/0")), "not a zstd"),
        Case("gzip", b"\x1f\x8b\x08\x00" + bytes(60), "not a zstd"),
        Case("empty-file", b"", "not a zstd"),
        Case("skippable-frame-first", b"\x50\x2a\x4d\x18\x04\x00\x00\x00abcd" + archive(),
             "not a zstd"),
        Case("truncated", archive(member("volumes/0/f", b"x" * 5000))[:-7], "truncated"),
        Case("truncated-header", archive()[:9], "truncated"),
        Case("corrupt", _flip(archive(member("volumes/0/f", bytes(range(256)) * 40))),
             "corrupt"),
        Case("trailing-garbage", archive() + b"garbage", "data after its end"),
        Case("trailing-skippable-frame", archive() + b"\x50\x2a\x4d\x18\x04\x00\x00\x00abcd",
             "data after its end"),
        Case("second-frame", archive() + zst(member("volumes/0/x", b"x")), "data after its end"),
        Case("no-checksum", zst(tar(manifest_member(), directory("volumes/0")), checksum=False),
             "no checksum"),
        Case("window-too-large", _huge_window(), "corrupt"),
        Case("data-after-end-marker", archive(end=EOA + member("volumes/0/late", b"x")),
             "data after its end"),
        Case("lone-zero-block", archive(end=bytes(BLOCK)), "truncated|lone zero block"),
        Case("lone-zero-block-then-member", archive(end=bytes(BLOCK) + member("volumes/0/x")),
             "lone zero block"),
        Case("no-end-marker", archive(end=b""), "truncated"),
        Case("bad-checksum", archive(header(b"volumes/0/f", checksum_delta=1)), "checksum"),
        Case("base-256-size", archive(header(b"volumes/0/f", fields={"size": b"\x80" + bytes(11)})),
             "base-256"),
        Case("non-octal-mode", archive(header(b"volumes/0/f", fields={"mode": b"0000x44\x00"})),
             "not an octal"),
        Case("v7-header-without-magic", archive(header(b"volumes/0/f", magic=bytes(8))),
             "not a POSIX or GNU"),
        Case("pax-bad-length", archive(pax(b"99 path=x\n"), member("volumes/0/f")),
             "malformed"),
        Case("pax-no-newline", archive(pax(b"9 path=xy"), member("volumes/0/f")), "malformed"),
        Case("pax-duplicate-key", archive(pax(pax_record("path", "volumes/0/a")
                                              + pax_record("path", out)),
                                          member("volumes/0/f")), "twice"),
        Case("pax-linkpath", archive(pax({"linkpath": "/etc/passwd"}), member("volumes/0/f")),
             "unsupported keyword"),
        Case("pax-hdrcharset-binary", archive(pax({"hdrcharset": "BINARY"}),
                                              member("volumes/0/f")), "unsupported keyword"),
        Case("pax-negative-size", archive(pax({"size": "-1"}), member("volumes/0/f")),
             "not a valid number"),
        Case("pax-uid-too-large", archive(pax({"uid": str(1 << 40)}), member("volumes/0/f")),
             "not a valid number"),
        Case("pax-mtime-garbage", archive(pax({"mtime": "1e9"}), member("volumes/0/f")),
             "not a valid time"),
        Case("two-extended-headers", archive(pax({"mtime": "1"}), pax({"path": out}),
                                             member("volumes/0/f")), "more than one"),
        Case("extended-header-at-end", archive(pax({"path": "volumes/0/x"})),
             "not followed by a member"),
        Case("link-name-on-a-file", archive(member("volumes/0/f", b"x", linkname=b"/etc/passwd")),
             "link target"),
    ]
    return cases


def _flip(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x55]) + data[middle + 1:]


def _huge_window() -> bytes:
    """A frame that asks for a 1 GiB window (the extractor allows 128 MiB)."""
    params = zstandard.ZstdCompressionParameters(window_log=30, write_content_size=False,
                                                 write_checksum=True)
    compressor = zstandard.ZstdCompressor(compression_params=params).compressobj()
    return compressor.compress(tar(manifest_member(), directory("volumes/0"))) + compressor.flush()
