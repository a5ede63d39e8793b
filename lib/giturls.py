"""Git source settings checked before anything runs git: URLs, refs, paths, build args.

Pure functions, no subprocess and no models, so the model, the forms, the
serializers and the fetcher share one set of rules. Every value here ends up
as an argument of `git` or of a Docker build, so the rules are strict: an
allow-list of URL schemes, refs and paths that cannot be read as options or
climb out of the repository, and no credential left inside a URL.

Error messages never repeat the value they refuse: a URL can carry a
credential, and an error message ends up on a page or in an API response.

file:// repositories are off unless the operator lists the directories they
may live in (BERTH_GIT_FILE_ROOTS): git reads a local repository with Berth's
own rights, so a path must never lead it to Berth's data (other workloads'
repository caches, keys) or to another process's files. check_file_repository()
holds the rules; it runs when a URL is validated and again right before each
fetch (see gitcache). A path, and its real path, must lie inside an allowed
root and overlap neither the data directory nor /proc, /sys or /dev, and both
must name the same directory (a "magic" link such as /proc/<pid>/root/... has
a real path that names something else). The repository found there, the way
git finds it, must be a plain git directory: not a gitfile (a `.git` file
pointing elsewhere), no objects/info/alternates, http-alternates or commondir
(which borrow another repository's objects or refs), and no symbolic link
inside it that leads outside those rules.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

from lib.paths import is_within, overlaps

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

# Never a file:// repository, whatever BERTH_GIT_FILE_ROOTS says: the kernel's
# views of the host and of every process (/proc/<pid>/root is a container's root).
FILE_FORBIDDEN = ("/proc", "/sys", "/dev")
# The order in which git (enter_repo) looks for the repository a local path names.
GIT_DIR_SUFFIXES = ("/.git", "", ".git/.git", ".git")
# Files that make a repository read objects or refs from another one.
FOREIGN_POINTERS = (
    "objects/info/alternates", "objects/info/http-alternates", "commondir",
)
# What git reads of a repository directory: symbolic links there must obey the rules too.
GIT_DIR_ENTRIES = ("HEAD", "packed-refs", "objects", "refs")


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


def may_hide_credential(url: str) -> bool:
    """Whether `url` has an '@' after its scheme that split_credential could not take as a
    userinfo's (a password holding '#', '?' or '/' ends the host part before it)."""
    scheme, sep, rest = url.strip().partition("://")
    if not sep or "@" not in rest:
        return False
    try:
        netloc = urlsplit(url.strip()).netloc
    except ValueError:
        return True
    return "@" not in netloc


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
    absolute local path inside BERTH_GIT_FILE_ROOTS and outside Berth's data
    directory (which holds other workloads' repository caches and Berth's
    keys), and, if a repository is already there, one that passes
    check_file_repository()'s rules.
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
    path = _file_path(parts)
    _check_file_path(path)
    if _git_dirs(path):
        _check_git_dirs(path)


def _file_path(parts) -> str:
    """The local path a file:// URL names, decoded as git decodes it."""
    if parts.netloc not in {"", "localhost"}:
        raise ValidationError(_("A file:// URL names a local path: file:///path/to/repository."))
    try:
        path = unquote(parts.path, errors="strict")
    except UnicodeDecodeError:
        path = ""  # not a path Berth can check the way git will read it
    if not path.startswith("/") or ".." in path.split("/") or "\x00" in path:
        raise ValidationError(_("A file:// URL needs an absolute path without '..'."))
    return os.path.normpath(path)


def check_file_repository(url: str) -> None:
    """Raise ValidationError unless the file:// `url` names a repository git may read now.

    The fetcher's check, right before git runs: the URL's rules, and a
    repository that exists and passes them (see the module's docstring).
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValidationError(_("The repository URL cannot be parsed.")) from None
    path = _file_path(parts)
    _check_file_path(path)
    if not _git_dirs(path):
        raise ValidationError(_("There is no git repository at the file:// URL's path."))
    _check_git_dirs(path)


def _real(path: str) -> str:
    try:
        return os.path.realpath(path)
    except OSError:
        raise ValidationError(_("The file:// repository's path cannot be resolved.")) from None


def _check_file_path(path: str) -> None:
    """`path` (absolute, normalised) and its real path obey BERTH_GIT_FILE_ROOTS."""
    configured = [
        os.path.normpath(r) for r in settings.BERTH_GIT_FILE_ROOTS if os.path.isabs(r)
    ]
    if not configured:
        raise ValidationError(
            _("file:// repositories are disabled: an operator must list the allowed "
              "directories in BERTH_GIT_FILE_ROOTS.")
        )
    roots = {*configured, *(os.path.realpath(r) for r in configured)}
    _check_allowed(path, roots)
    real = _real(path)  # only once the path itself is known to be no /proc one
    _check_allowed(real, roots)
    if not _same_file(path, real):
        # A link the kernel resolves by itself (/proc/<pid>/root/...) has a
        # real path that names another file: git would read that other file.
        raise ValidationError(_("The file:// repository's path cannot be resolved."))


def _check_allowed(path: str, roots: set[str]) -> None:
    data_dirs = {os.path.normpath(str(settings.DATA_DIR)), os.path.realpath(settings.DATA_DIR)}
    if any(is_within(path, d) for d in data_dirs):
        raise ValidationError(_("A file:// repository cannot be inside Berth's data directory."))
    if any(is_within(d, path) for d in data_dirs) or any(
        overlaps(path, f) for f in FILE_FORBIDDEN
    ):
        raise ValidationError(
            _("A file:// repository cannot be in /proc, /sys or /dev, "
              "nor contain Berth's data directory.")
        )
    if not any(is_within(path, root) for root in roots):
        raise ValidationError(
            _("The file:// repository is outside the directories BERTH_GIT_FILE_ROOTS allows.")
        )


def _same_file(path: str, real: str) -> bool:
    """Whether both name the same file (or neither exists)."""
    try:
        first = os.stat(path)
    except OSError:
        return not os.path.lexists(real)
    try:
        second = os.stat(real)
    except OSError:
        return False
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


def _git_dirs(path: str) -> list[str]:
    """What git could take for the repository at `path`: every candidate that exists.

    git takes the first of `path/.git`, `path`, `path.git/.git`, `path.git`
    that is a file (a gitfile) or a git directory. All of them are checked,
    so no candidate Berth and git might judge differently goes unchecked.
    """
    return [path + suffix for suffix in GIT_DIR_SUFFIXES if os.path.lexists(path + suffix)]


def _check_git_dirs(path: str) -> None:
    for candidate in _git_dirs(path):
        _check_file_path(candidate)
        if os.path.isdir(candidate):
            _check_git_dir(candidate)
        else:
            raise ValidationError(
                _("A file:// repository cannot be a .git file pointing to another directory.")
            )


def _check_git_dir(git_dir: str) -> None:
    """No pointer to another repository's objects or refs, no link leading out.

    Only what git reads of a repository is looked at, so a working tree's own
    symbolic links (content of the repository) are no concern here. A working
    tree is checked like a bare repository too (git falls back to it when its
    .git directory is not one git accepts): one whose content has such names
    at its root is refused.
    """
    if any(os.path.lexists(os.path.join(git_dir, name)) for name in FOREIGN_POINTERS):
        raise ValidationError(
            _("A file:// repository cannot borrow objects from another repository "
              "(objects/info/alternates or commondir).")
        )
    for name in GIT_DIR_ENTRIES:
        entry = os.path.join(git_dir, name)
        if os.path.islink(entry):
            _check_file_path(entry)
        if name in {"objects", "refs"} and os.path.isdir(entry):
            for directory, dirnames, filenames in os.walk(entry):
                for child in dirnames + filenames:
                    if os.path.islink(os.path.join(directory, child)):
                        _check_file_path(os.path.join(directory, child))


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
