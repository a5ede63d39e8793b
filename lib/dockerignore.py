"""A build context's `.dockerignore`, read and applied as the docker CLI does.

The docker CLI, not the engine, leaves out what `.dockerignore` excludes: Berth
sends the engine a tar it made from a commit (`git archive`), so it applies the
file itself. The rules are Docker's (moby's patternmatcher and the CLI's
reader): a line starting with `#` is a comment; blank lines are skipped; each
pattern is cleaned like a path (`./a/../b` is `b`, a leading `/` dropped);
`*` is any run of characters but `/`, `?` one character but `/`, `[...]` a
class (`[^...]` negated, as Go's filepath.Match reads it), `\\` escapes the next
character, and `**` any number of directories, none too. Patterns are matched
without backtracking (a walk over the positions each token can reach), in time
linear in the pattern times the path, since a repository's author writes them;
and a .dockerignore has at most MAX_PATTERNS patterns of MAX_PATTERN_CHARS.
A path is excluded when the last pattern that matches it or one of its parent
directories is not a `!` exception. The Dockerfile and
`.dockerignore` always stay in the context (the engine needs them, and leaves
them out of the image itself when they are excluded).
"""

from __future__ import annotations

import posixpath
import tarfile
import time
from typing import IO

FILENAME = ".dockerignore"
# What Berth reads of a .dockerignore; a larger one is a mistake, not a context's rules.
MAX_BYTES = 64 * 1024


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


# Token kinds of a compiled pattern.
_CHAR, _ONE, _STAR, _DIRS, _ALL, _CLASS = range(6)
# Bounds on what a repository's .dockerignore may ask of Berth's worker.
MAX_PATTERNS = 1000
MAX_PATTERN_CHARS = 1024
# However many files and patterns: applying the rules is part of a deploy that holds the
# workload's lock, before the build's own timeout starts.
MAX_SECONDS = 60


def _compile(pattern: str) -> list[tuple]:
    """`pattern` as tokens: (kind, argument). Matching them takes time linear in the
    pattern times the path (_match), never the backtracking a regex could need."""
    tokens: list[tuple] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*" and pattern[i + 1:i + 2] == "*":
            i += 2
            if pattern[i:i + 1] == "/":
                i += 1
            tokens.append((_ALL, None) if i >= len(pattern) else (_DIRS, None))
            continue
        if ch == "*":
            if not tokens or tokens[-1][0] != _STAR:  # a run of stars is one star
                tokens.append((_STAR, None))
        elif ch == "?":
            tokens.append((_ONE, None))
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            tokens.append((_CHAR, pattern[i]))
        elif ch == "[":
            i, token = _class(pattern, i)
            tokens.append(token)
            continue
        else:
            tokens.append((_CHAR, ch))
        i += 1
    return tokens


def _class(pattern: str, at: int) -> tuple[int, tuple]:
    """The class starting at pattern[at] (`[`), as Go's filepath.Match reads it: `^`
    negates, `a-z` is a range, `\\` escapes; (index after it, token)."""
    i = at + 1
    negate = pattern[i:i + 1] == "^"
    if negate:
        i += 1
    ranges: list[tuple[str, str]] = []
    first = True
    while True:
        if i >= len(pattern):
            raise DockerignoreError(f"{FILENAME}: bad pattern {pattern!r} (an unclosed class)")
        ch = pattern[i]
        if ch == "]" and not first:
            return i + 1, (_CLASS, (negate, tuple(ranges)))
        first = False
        if ch == "\\":
            i += 1
            if i >= len(pattern):
                raise DockerignoreError(f"{FILENAME}: bad pattern {pattern!r}")
            ch = pattern[i]
        low = high = ch
        if pattern[i + 1:i + 2] == "-" and pattern[i + 2:i + 3] not in ("", "]"):
            high = pattern[i + 2]
            if high == "\\":
                if i + 3 >= len(pattern):
                    raise DockerignoreError(f"{FILENAME}: bad pattern {pattern!r}")
                high = pattern[i + 3]
                i += 1
            i += 2
            if high < low:
                raise DockerignoreError(f"{FILENAME}: bad pattern {pattern!r} (a bad range)")
        ranges.append((low, high))
        i += 1


def _in_class(argument: tuple, ch: str) -> bool:
    negate, ranges = argument
    return ch != "/" and (any(low <= ch <= high for low, high in ranges) != negate)


def _match(tokens: list[tuple], path: str) -> bool:
    """Whether the tokens match all of `path`: one pass over the tokens, each keeping the
    set of positions in `path` reachable so far (an NFA walk: no backtracking)."""
    reach = {0}
    n = len(path)
    for kind, argument in tokens:
        if not reach:
            return False
        if kind == _CHAR:
            reach = {j + 1 for j in reach if j < n and path[j] == argument}
        elif kind == _ONE:
            reach = {j + 1 for j in reach if j < n and path[j] != "/"}
        elif kind == _CLASS:
            reach = {j + 1 for j in reach if j < n and _in_class(argument, path[j])}
        elif kind == _STAR:  # any run of characters but /
            spread = set()
            for j in sorted(reach):
                if j in spread:
                    continue
                k = j
                spread.add(k)
                while k < n and path[k] != "/":
                    k += 1
                    spread.add(k)
            reach = spread
        elif kind == _ALL:  # anything to the end
            return True
        else:  # _DIRS: nothing, or anything that ends with a /
            start = min(reach)
            reach = reach | {k + 1 for k in range(start, n) if path[k] == "/"}
    return n in reach


class Matcher:
    def __init__(self, patterns: list[str]) -> None:
        if len(patterns) > MAX_PATTERNS:
            raise DockerignoreError(f"{FILENAME} has more than {MAX_PATTERNS} patterns")
        if any(len(p) > MAX_PATTERN_CHARS for p in patterns):
            raise DockerignoreError(
                f"{FILENAME} has a pattern longer than {MAX_PATTERN_CHARS} characters")
        self.rules = [(p.startswith("!"), _compile(p.removeprefix("!"))) for p in patterns]

    def excluded(self, path: str) -> bool:
        """Whether `path` (relative to the context, `/`-separated) is left out."""
        path = posixpath.normpath(path.strip("/"))
        parents = path.split("/")[:-1]
        matched = False
        for exception, tokens in self.rules:
            if exception != matched:
                continue  # an exception only matters once excluded, and the reverse
            hit = _match(tokens, path) or any(
                _match(tokens, "/".join(parents[:n])) for n in range(1, len(parents) + 1))
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
    named = [m for m in members if posixpath.normpath(m.name) == FILENAME]
    if named and not named[-1].isfile():
        # The docker CLI follows a symlink; Berth refuses it rather than build without rules.
        raise DockerignoreError(f"{FILENAME} is not a regular file (a symlink?)")
    found = [m for m in named if m.isfile()]
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
    deadline = time.monotonic() + MAX_SECONDS
    keep = set()
    for name in names:
        if time.monotonic() > deadline:
            raise DockerignoreError(f"applying {FILENAME} took more than {MAX_SECONDS} s")
        if posixpath.normpath(name) in always or not matcher.excluded(name):
            keep.add(name)
    # A directory left out whose kept entries need it as a parent stays.
    for name in list(keep):
        parts = name.split("/")
        keep |= {"/".join(parts[:n]) for n in range(1, len(parts))} & set(names)
    return keep
