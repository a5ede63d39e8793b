"""A build context's `.dockerignore`, read and applied as the docker CLI does.

The docker CLI, not the engine, leaves out what `.dockerignore` excludes: Berth
sends the engine a tar it made from a commit (`git archive`), so it applies the
file itself. The rules are Docker's (moby's patternmatcher and the CLI's
reader): a line starting with `#` is a comment; blank lines are skipped; each
pattern is cleaned like a path (`./a/../b` is `b`, a leading `/` dropped);
`*` is any run of characters but `/`, `?` one character but `/`, `[...]` a
class, `\\` escapes the next character, and `**` any number of directories,
none too. A path is excluded when the last pattern that matches it or one of
its parent directories is not a `!` exception. The Dockerfile and
`.dockerignore` always stay in the context (the engine needs them, and leaves
them out of the image itself when they are excluded).
"""

from __future__ import annotations

import posixpath
import re
import tarfile
from typing import IO

FILENAME = ".dockerignore"
# What Berth reads of a .dockerignore; a larger one is a mistake, not a context's rules.
MAX_BYTES = 1024 * 1024


class DockerignoreError(Exception):
    pass


def read(text: str) -> list[str]:
    """The patterns of a .dockerignore's text, in order (`!` kept as a prefix)."""
    patterns = []
    for number, line in enumerate(text.splitlines()):
        if number == 0:
            line = line.removeprefix("\ufeff")
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = posixpath.normpath(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern.lstrip("/")
        patterns.append("!" + pattern if invert else pattern)
    return patterns


def _regex(pattern: str) -> re.Pattern[str]:
    out, i = "^", 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*" and pattern[i + 1:i + 2] == "*":
            i += 2
            if pattern[i:i + 1] == "/":
                i += 1
            out += ".*" if i >= len(pattern) else "(.*/)?"
            continue
        if ch == "*":
            out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        elif ch in "[]":
            out += ch
        else:
            out += re.escape(ch)
        i += 1
    try:
        return re.compile(out + "$", re.DOTALL)
    except re.error as exc:
        raise DockerignoreError(f"{FILENAME}: bad pattern {pattern!r} ({exc})") from None


class Matcher:
    def __init__(self, patterns: list[str]) -> None:
        self.rules = [(p.startswith("!"), _regex(p.removeprefix("!"))) for p in patterns]

    def excluded(self, path: str) -> bool:
        """Whether `path` (relative to the context, `/`-separated) is left out."""
        path = posixpath.normpath(path.strip("/"))
        parents = path.split("/")[:-1]
        matched = False
        for exception, regex in self.rules:
            if exception != matched:
                continue  # an exception only matters once excluded, and the reverse
            hit = bool(regex.match(path)) or any(
                regex.match("/".join(parents[:n])) for n in range(1, len(parents) + 1))
            if hit:
                matched = not exception
        return matched


def filter_context(source: IO[bytes], out: IO[bytes], *, dockerfile: str) -> int | None:
    """Copy the tar build context `source` to `out` without what its .dockerignore excludes.

    Returns how many entries were left out; None, and nothing written, when the
    context has no .dockerignore (or only comments in it). A directory that is
    excluded but holds a kept file stays, so the file keeps its place. Raises
    DockerignoreError for a .dockerignore too large or with a broken pattern.
    """
    with tarfile.open(fileobj=source, mode="r:") as tar:
        members = tar.getmembers()
        patterns = _patterns(tar, members)
        if not patterns:
            return None
        keep = _kept(members, patterns, dockerfile)
        with tarfile.open(fileobj=out, mode="w:", format=tarfile.PAX_FORMAT) as written:
            for member in members:
                if member.name.rstrip("/") in keep:
                    data = tar.extractfile(member) if member.isfile() else None
                    written.addfile(member, data)
    return len(members) - len(keep)


def _patterns(tar: tarfile.TarFile, members: list[tarfile.TarInfo]) -> list[str]:
    found = [m for m in members if posixpath.normpath(m.name) == FILENAME and m.isfile()]
    if not found:
        return []
    if found[-1].size > MAX_BYTES:
        raise DockerignoreError(f"{FILENAME} is larger than {MAX_BYTES} bytes")
    raw = tar.extractfile(found[-1]).read()
    return read(raw.decode("utf-8", "replace"))


def _kept(members: list[tarfile.TarInfo], patterns: list[str], dockerfile: str) -> set[str]:
    names = [m.name.rstrip("/") for m in members]
    matcher = Matcher(patterns)
    always = {FILENAME, posixpath.normpath(dockerfile)}
    keep = {n for n in names if posixpath.normpath(n) in always or not matcher.excluded(n)}
    # A directory left out whose kept entries need it as a parent stays.
    for name in list(keep):
        parts = name.split("/")
        keep |= {"/".join(parts[:n]) for n in range(1, len(parts))} & set(names)
    return keep
