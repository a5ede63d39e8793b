"""Git source settings checked before anything runs git: URLs, refs, paths, build args.

Pure functions, no subprocess and no models, so the model, the forms, the
serializers and the fetcher share one set of rules. Every value here ends up
as an argument of `git` or of a Docker build, so the rules are strict: an
allow-list of URL schemes, refs and paths that cannot be read as options or
climb out of the repository, and no credential left inside a URL.

Error messages never repeat the value they refuse: a URL can carry a
credential, and an error message ends up on a page or in an API response.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

SCHEMES = ("https", "ssh", "file")
MAX_URL_LENGTH = 500
MAX_REF_LENGTH = 255
MAX_PATH_LENGTH = 255
MAX_BUILD_ARGS = 64
MAX_BUILD_ARG_LENGTH = 4096

# Web pages of the forges Berth links commits to; the host must match exactly
# (a suffix match would link "github.com.evil.example").
FORGE_COMMIT_PAGES = {
    "github.com": "{repo}/commit/{sha}",
    "gitlab.com": "{repo}/-/commit/{sha}",
    "codeberg.org": "{repo}/commit/{sha}",
    "bitbucket.org": "{repo}/commits/{sha}",
}

_CONTROL = re.compile(r"[\x00-\x20\x7f\\]")
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]+\])$")
_PORT = re.compile(r"^[0-9]{1,5}$")
_SSH_USER = re.compile(r"^[A-Za-z0-9._][A-Za-z0-9._-]{0,63}$")
_REF = re.compile(r"^[A-Za-z0-9._/-]+$")
_FULL_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_SHORT_SHA = re.compile(r"^[0-9a-f]{7,64}$")
_BUILD_ARG_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_FORGE_PATH_PART = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass(frozen=True)
class SplitUrl:
    """A URL with its credential taken out: `url` is safe to store and show."""

    url: str
    username: str = ""
    password: str = ""
    had_credential: bool = False


def split_credential(url: str) -> SplitUrl:
    """Take the credential out of `url`.

    For https:// and file:// the whole userinfo (`user:password@`, or a bare
    `token@`) is the credential. For ssh:// the user is the SSH login (the
    `git` of `ssh://git@host/…`) and stays; only a password is taken out.
    Percent-escapes in the credential are decoded, as git and curl would.
    Anything that does not parse is returned unchanged for validate_url() to refuse.
    """
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        return SplitUrl(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at:
        return SplitUrl(url)
    username, colon, password = userinfo.partition(":")
    if parts.scheme.lower() == "ssh":
        if not colon:
            return SplitUrl(url)
        clean = urlunsplit(parts._replace(netloc=f"{username}@{hostport}"))
        return SplitUrl(clean, unquote(username), unquote(password), had_credential=True)
    clean = urlunsplit(parts._replace(netloc=hostport))
    return SplitUrl(clean, unquote(username), unquote(password), had_credential=True)


def origin(url: str) -> str:
    """`scheme://host:port` of a URL (default port filled in), "" if it has none.

    A stored credential is bound to the origin it was given for: it is only
    sent there, and a URL moved to another origin must come with it again.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return ""
    if not parts.hostname:
        return ""
    scheme = parts.scheme.lower()
    port = port or {"https": 443, "ssh": 22}.get(scheme, 0)
    return f"{scheme}://{parts.hostname.lower()}:{port}"


def scheme_of(url: str) -> str:
    return url.partition("://")[0].lower() if "://" in url else ""


def validate_url(url: str) -> None:
    """Raise ValidationError unless `url` (already without credential) is fetchable.

    https:// and ssh:// need a host; ssh:// may name a login user; file:// an
    absolute local path outside Berth's data directory (which holds other
    workloads' repository caches and Berth's keys).
    """
    if not url:
        raise ValidationError(_("A git workload needs a repository URL."))
    if len(url) > MAX_URL_LENGTH or _CONTROL.search(url):
        raise ValidationError(
            _("The repository URL is too long or contains spaces or control characters.")
        )
    scheme = scheme_of(url)
    if scheme not in SCHEMES:
        raise ValidationError(_("Use an https://, ssh:// or file:// repository URL."))
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValidationError(_("The repository URL cannot be parsed.")) from None
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise ValidationError(_("A repository URL cannot have a query or a fragment."))
    if scheme == "file":
        _validate_file_url(parts)
    else:
        _validate_network_url(parts, scheme)


def _validate_network_url(parts, scheme: str) -> None:
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if at and (scheme != "ssh" or ":" in userinfo or not _SSH_USER.fullmatch(userinfo)):
        raise ValidationError(_("Put the repository's credential in the credential fields."))
    host, port = _split_host_port(hostport)
    if not host or not _HOST.fullmatch(host) or host.startswith("-"):
        raise ValidationError(_("The repository URL needs a valid host name."))
    if port and (not _PORT.fullmatch(port) or not 0 < int(port) < 65536):
        raise ValidationError(_("The repository URL has an invalid port."))
    path = parts.path
    if not path.strip("/") or path.lstrip("/").startswith("-"):
        raise ValidationError(_("The repository URL needs a repository path."))


def _split_host_port(hostport: str) -> tuple[str, str]:
    if hostport.startswith("["):
        host, bracket, rest = hostport.partition("]")
        return host + bracket, rest[1:] if rest.startswith(":") else rest
    host, _colon, port = hostport.partition(":")
    return host, port


def _validate_file_url(parts) -> None:
    if parts.netloc not in {"", "localhost"}:
        raise ValidationError(_("A file:// URL names a local path: file:///path/to/repository."))
    path = unquote(parts.path)
    if not path.startswith("/") or ".." in path.split("/") or "\x00" in path:
        raise ValidationError(_("A file:// URL needs an absolute path without '..'."))
    data_dir = os.path.realpath(settings.DATA_DIR)
    real = os.path.realpath(path)
    if os.path.commonpath([real, data_dir]) == data_dir:
        raise ValidationError(_("A file:// repository cannot be inside Berth's data directory."))


def validate_ref(ref: str) -> None:
    """A branch, tag or commit name that git cannot mistake for an option or a range."""
    message = _(
        "Use a branch, tag or commit: letters, digits and . _ / -, not starting with "
        "'-', '.' or '/', without '..', '//' or a trailing '/', '.' or '.lock'."
    )
    if not ref or len(ref) > MAX_REF_LENGTH or not _REF.fullmatch(ref):
        raise ValidationError(message)
    parts = ref.split("/")
    if (
        ref.startswith(("-", "/"))
        or ref.endswith(("/", ".", ".lock"))
        or ".." in ref
        or any(not part or part.startswith(".") or part.endswith(".lock") for part in parts)
    ):
        raise ValidationError(message)


def validate_repo_path(path: str, *, allow_root: bool) -> None:
    """A path inside the repository: relative, no '..', nothing git could read as an option.

    With `allow_root`, "." and "" name the repository's root (a build context).
    """
    if allow_root and path in {"", "."}:
        return
    message = _(
        "Use a relative path inside the repository: no leading '/' or '-', "
        "no '..', '.' or empty parts."
    )
    if not path or len(path) > MAX_PATH_LENGTH or _CONTROL.search(path):
        raise ValidationError(message)
    if path.startswith(("/", "-")) or any(p in {"", ".", ".."} for p in path.split("/")):
        raise ValidationError(message)


def validate_build_args(build_args) -> None:
    if not isinstance(build_args, dict):
        raise ValidationError(_("Build arguments are an object of names and text values."))
    if len(build_args) > MAX_BUILD_ARGS:
        raise ValidationError(
            _("At most %(count)d build arguments are allowed.") % {"count": MAX_BUILD_ARGS}
        )
    for name, value in build_args.items():
        if not isinstance(name, str) or not _BUILD_ARG_NAME.fullmatch(name):
            raise ValidationError(
                _("Build argument names use letters, digits and underscores, "
                  "not starting with a digit.")
            )
        if not isinstance(value, str) or len(value) > MAX_BUILD_ARG_LENGTH or "\x00" in value:
            raise ValidationError(
                _("Build argument values are text of at most %(length)d characters.")
                % {"length": MAX_BUILD_ARG_LENGTH}
            )


def is_full_sha(value: str) -> bool:
    return bool(_FULL_SHA.fullmatch(value))


def looks_like_short_sha(value: str) -> bool:
    return bool(_SHORT_SHA.fullmatch(value))


def web_url(url: str) -> str | None:
    """The repository's page on a known forge (https:// or ssh:// URL), else None."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in {"https", "ssh"}:
        return None
    host = (parts.hostname or "").lower()
    if host not in FORGE_COMMIT_PAGES:
        return None
    if parts.scheme.lower() == "https" and parts.port not in {None, 443}:
        return None
    path = parts.path.strip("/").removesuffix(".git")
    segments = path.split("/")
    if len(segments) < 2 or not all(_FORGE_PATH_PART.fullmatch(s) for s in segments):
        return None
    return f"https://{host}/{path}"


def commit_url(url: str, sha: str) -> str | None:
    """The commit's page on a known forge, else None."""
    repo = web_url(url)
    if repo is None or not looks_like_short_sha(sha):
        return None
    host = urlsplit(repo).hostname
    return FORGE_COMMIT_PAGES[host].format(repo=repo, sha=sha)
