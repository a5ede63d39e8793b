"""Image references: their grammar, and which registry one names.

Follows the distribution reference grammar that Docker uses
(`[host[:port]/]path[:tag][@sha256:hex]`), so a malformed reference is refused
when it is saved instead of failing later as `pull_failed`.
"""

from __future__ import annotations

import re

DOCKER_HUB = "docker.io"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REMOTE = (
    rf"(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_HOST = rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-fA-F:]+\])(?::[0-9]{{1,5}})?"
WITH_HOST = re.compile(rf"^{_HOST}/{_REMOTE}")
WITHOUT_HOST = re.compile(rf"^{_REMOTE}")


def is_valid(reference: str) -> bool:
    if len(reference) > 255:
        return False
    # Whether the first component is a host is decided by its spelling, as
    # Docker decides it; the rest must then follow the path grammar.
    pattern = WITHOUT_HOST if registry_host(reference) == DOCKER_HUB else WITH_HOST
    return pattern.match(reference) is not None


def registry_host(reference: str) -> str:
    """The registry a reference pulls from, as Docker decides it.

    The first path component is a registry host only if it has a dot or a
    port, or is `localhost`; otherwise the image is on Docker Hub.
    """
    first, sep, _rest = reference.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        return first
    return DOCKER_HUB
