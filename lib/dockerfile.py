"""Reading a Dockerfile for the images it builds from, as generously as the engine reads it.

The runtime asks the registry for every image a Dockerfile names by digest
before a build (lib/runtime.py, `build`): the engine would serve such an
image from its own store without asking. Nothing here talks to Docker.
"""

from __future__ import annotations

import itertools
import posixpath
import re
import tarfile
from typing import IO

MAX_DOCKERFILE_BYTES = 4 << 20
MAX_EXPANSIONS = 256
_FROM_FLAG = re.compile(r"(?i)--from=(\S+)")
_VARIABLE = re.compile(r"\$\{(\w+)(?::?[-+]([^${}]*))?\}|\$(\w+)")


class DockerfileError(ValueError):
    """The Dockerfile cannot be read, or names an image Berth cannot resolve; str() says why."""


def read_from_context(context: IO[bytes], dockerfile: str) -> str:
    """The Dockerfile's text, found in the tar context as the engine finds it."""
    start = context.tell()
    try:
        with tarfile.open(fileobj=context, mode="r:*") as tar:
            members = {posixpath.normpath(m.name.lstrip("/")): m for m in tar.getmembers()}
            name = _in_context(members, dockerfile)
            if name is None and dockerfile == "Dockerfile":
                name = _in_context(members, "dockerfile")  # the engine's own fallback
            member = members.get(name) if name else None
            if member is None or not (member.isfile() or member.islnk()):
                raise DockerfileError(f"Cannot locate specified Dockerfile: {dockerfile}")
            if member.size > MAX_DOCKERFILE_BYTES:
                raise DockerfileError(f"the Dockerfile {dockerfile} is larger than 4 MiB")
            data = tar.extractfile(member).read(MAX_DOCKERFILE_BYTES + 1)
    except (tarfile.TarError, OSError, KeyError) as exc:
        raise DockerfileError(f"the build context cannot be read: {exc}") from None
    finally:
        context.seek(start)
    return data.decode("utf-8", "replace")


def _in_context(members: dict[str, tarfile.TarInfo], path: str) -> str | None:
    """`path` in the context, its symbolic links followed inside the context's root."""
    parts = [p for p in posixpath.normpath(path).split("/") if p not in {"", "."}]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            resolved = resolved[:-1]
            continue
        current = "/".join([*resolved, part])
        member = members.get(current)
        if member is not None and member.issym():
            hops += 1
            if hops > 40:
                return None
            target = member.linkname
            base = [] if target.startswith("/") else resolved
            parts = [*base, *[p for p in target.split("/") if p not in {"", "."}], *parts]
            resolved = []
            continue
        resolved.append(part)
    return "/".join(resolved) or None


def digest_references(text: str, buildargs: dict[str, str]) -> set[str]:
    """Every image reference with a digest the Dockerfile may build from (FROM, --from)."""
    lines = [line.rstrip("\r") for line in text.lstrip("\ufeff").split("\n")]
    candidates: list[str] = []
    defaults: dict[str, set[str]] = {}
    for logical in [*lines, *_logical_lines(lines, "\\"), *_logical_lines(lines, "`")]:
        tokens = logical.split()
        keyword = tokens[0].lower() if tokens else ""
        if keyword == "from":
            names = [t for t in tokens[1:] if not t.startswith("--")]
            candidates += names[:1]
        elif keyword == "arg":
            for token in tokens[1:]:
                name, _eq, value = token.partition("=")
                defaults.setdefault(name, set()).add(_unquoted(value))
        candidates += _FROM_FLAG.findall(logical)
    found = set()
    for candidate in candidates:
        if candidate in {"\\", "`"}:
            continue  # a line continued on the next one
        for expanded in _expansions(candidate, defaults, buildargs):
            if "$" in expanded:
                raise DockerfileError(
                    f"the Dockerfile names an image through a variable Berth cannot resolve: "
                    f"{candidate}"
                )
            if "@" in expanded:
                found.add(expanded)
    return found


def _logical_lines(lines: list[str], escape: str) -> list[str]:
    """The Dockerfile's instructions, continued lines joined, with `escape` as the escape."""
    out: list[str] = []
    current: str | None = None
    continued = re.compile(re.escape(escape) + r"[ \t]*$")
    for line in lines:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = continued.search(line)
        piece = line[: match.start()] if match else line
        current = piece if current is None else current + piece
        if not match:
            out.append(current)
            current = None
    if current is not None:
        out.append(current)
    return out


def _expansions(
    candidate: str, defaults: dict[str, set[str]], buildargs: dict[str, str], depth: int = 0
) -> list[str]:
    """Every value `candidate` may take: each variable with each value it may have
    (an ARG's default may name another variable: expanded again, a few levels deep)."""
    names = sorted({a or b for a, _word, b in _VARIABLE.findall(candidate)})
    if not names:
        return [candidate if depth else _unquoted(candidate).replace("\\", "").replace("`", "")]
    choices = []
    for name in names:
        values = set(defaults.get(name, set())) | {""}
        if name in buildargs:
            values.add(str(buildargs[name]))
        choices.append(sorted(values))
    combinations = list(itertools.islice(itertools.product(*choices), MAX_EXPANSIONS + 1))
    if len(combinations) > MAX_EXPANSIONS:
        raise DockerfileError(f"the Dockerfile's image reference {candidate} has too many values")
    results: list[str] = []
    for combination in combinations:
        env = dict(zip(names, combination, strict=True))

        def value(match: re.Match, env=env) -> str:
            name = match.group(1) or match.group(3)
            word = match.group(2)
            if word is None:
                return env[name]
            operator = match.group(0)[len(name) + 2:].lstrip(":")[:1]
            if operator == "-":
                return env[name] or word
            return word if env[name] else ""

        expanded = _VARIABLE.sub(value, candidate)
        if "$" in expanded and depth < 3:
            results += _expansions(expanded, defaults, buildargs, depth + 1)
        else:
            results.append(expanded)
        if len(results) > MAX_EXPANSIONS:
            raise DockerfileError(
                f"the Dockerfile's image reference {candidate} has too many values"
            )
    if depth:
        return results
    return [_unquoted(r).replace("\\", "").replace("`", "") for r in results]


def _unquoted(value: str) -> str:
    return value.replace('"', "").replace("'", "")
