"""Running git for git-built workloads: a per-workload cache, fetched incrementally.

The cache is a bare repository at `$BERTH_DATA_DIR/git/<workload id>/`. It
has no remote configured: the URL is passed on each fetch (it may have
changed since the last one), so neither the URL nor a credential is ever
written into the cache's config. Branches land in `refs/remotes/origin/*`,
tags in `refs/tags/*`, and every commit Berth has built is pinned under
`refs/berth/built/<sha>` so that a rollback can rebuild it even after the
branch was force-pushed away upstream.

How git is run, and why:
- a list of arguments, never a shell; every value was checked by giturls
  first, and `--` / `--end-of-options` end the options anyway;
- a scrubbed environment: no GIT_* variable of Berth's own environment (a
  GIT_TRACE_CURL would print the credential), no system or global config
  (a credential helper there could store the credential on disk, a
  url.insteadOf could reroute the fetch), no terminal prompts, only the
  https, ssh and file protocols, ssh in batch mode;
- the credential as an HTTP header set through GIT_CONFIG_COUNT variables:
  not on the command line (visible to every user in `ps`), not in a file,
  and scoped to the repository's own scheme, host and port;
- no HTTP redirect followed (http.followRedirects=false): git sends the
  header of the URL it started from to wherever a redirect points, so a
  repository that moved fails the fetch with a message asking for its new URL;
- a file:// repository checked again right before each fetch
  (giturls.check_file_repository: BERTH_GIT_FILE_ROOTS, no gitfile, no
  alternates), since what lies at a path can change after it was validated;
- a timeout (BERTH_GIT_TIMEOUT) after which the whole process group is killed,
  and git's messages read as they come, keeping only their tail
  (STDERR_TAIL bytes): a server can make git print without end.
"""

from __future__ import annotations

import base64
import os
import re
import selectors
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

from lib import giturls

ALLOWED_PROTOCOLS = "https:ssh:file"
BUILT_PREFIX = "refs/berth/built/"
# What git may see of Berth's environment: how to find programs and the SSH
# keys/agent, proxies, and a CA bundle for a private forge.
PASSTHROUGH = {
    "PATH", "HOME", "SSH_AUTH_SOCK", "GIT_SSL_CAINFO", "GIT_SSL_CAPATH",
    "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
}
# Fixed settings for every git command (passed as GIT_CONFIG_* variables): no
# hooks, an automatic gc that stays in the foreground, inside the timeout, and
# no HTTP redirect followed (the credential header would follow it).
BASE_CONFIG = [
    ("core.hooksPath", os.devnull), ("gc.autoDetach", "false"),
    ("http.followRedirects", "false"),
]
# How much of git's messages (stderr) is kept: the tail, where its error is.
STDERR_TAIL = 64 * 1024
_READ_SIZE = 64 * 1024
_REDIRECT = re.compile(r"The requested URL returned error: 30[0-8]\b")


class GitError(Exception):
    """A git step failed; `code` is a DeployRecord.Failure value, `raw` git's own words."""

    code = "fetch_failed"

    def __init__(self, raw: str = "") -> None:
        super().__init__(self.code)
        self.raw = raw


class FetchFailed(GitError):
    code = "fetch_failed"


class UnknownRef(GitError):
    code = "unknown_ref"


class CommitMissing(GitError):
    code = "commit_missing"


class ExportFailed(GitError):
    code = "build_failed"


@dataclass(frozen=True)
class Credential:
    username: str
    password: str

    def header(self) -> str:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return f"Authorization: Basic {token}"

    def secrets(self) -> list[str]:
        """What to mask in logs: the parts, and the header value they make."""
        values = [self.password, self.header().removeprefix("Authorization: Basic ")]
        # A short username ("git", "oauth2") is no secret, and masking it
        # would garble every log line that happens to contain it.
        if len(self.username) >= 4:
            values.append(self.username)
        return [v for v in values if v]


def cache_path(workload_id: int) -> Path:
    return Path(settings.DATA_DIR) / "git" / str(int(workload_id))


def remove_cache(workload_id: int) -> None:
    shutil.rmtree(cache_path(workload_id), ignore_errors=True)


def _environment(url: str = "", credential: Credential | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key in PASSTHROUGH}
    env.setdefault("PATH", os.defpath)
    env |= {
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "",
        "SSH_ASKPASS": "",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_ALLOW_PROTOCOL": ALLOWED_PROTOCOLS,
        "GIT_SSH_COMMAND": "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new",
        "LC_ALL": "C",
    }
    config = list(BASE_CONFIG)
    if credential is not None and giturls.scheme_of(url) == "https":
        parts = urlsplit(url)
        config.append((f"http.{parts.scheme}://{parts.netloc}/.extraHeader", credential.header()))
    env["GIT_CONFIG_COUNT"] = str(len(config))
    for index, (key, value) in enumerate(config):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


def _git(
    cache: Path, *args: str, env: dict[str, str] | None = None,
    stdout: int | IO[bytes] = subprocess.PIPE, error: type[GitError] = FetchFailed,
) -> subprocess.CompletedProcess:
    """Run `git --git-dir=<cache> <args>`; raise `error` (with git's stderr) if it fails.

    stderr (and stdout, when piped) are read as they come, within the timeout;
    of stderr only the last STDERR_TAIL bytes are kept.
    """
    command = ["git", f"--git-dir={cache}", *args]
    try:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.PIPE,
            env=env or _environment(), start_new_session=True,
        )
    except FileNotFoundError:
        raise error("git is not installed on the Berth host") from None
    with process:
        try:
            out, err = _read(process, time.monotonic() + settings.BERTH_GIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            # git fetch runs helpers (git-remote-https, ssh): end the whole group.
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise error(f"git {args[0]} took longer than {settings.BERTH_GIT_TIMEOUT} s") from None
    result = subprocess.CompletedProcess(command, process.returncode, out, err)
    if result.returncode != 0:
        raise error(_text(err))
    return result


def _read(process: subprocess.Popen, deadline: float) -> tuple[bytes, bytes]:
    """Read the process's pipes until they close and it exits, or raise TimeoutExpired.

    Returns stdout (whole; only small outputs are piped) and the tail of stderr.
    """
    out, err = bytearray(), bytearray()
    dropped = 0
    with selectors.DefaultSelector() as selector:
        selector.register(process.stderr, selectors.EVENT_READ, err)
        if process.stdout is not None:
            selector.register(process.stdout, selectors.EVENT_READ, out)
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise subprocess.TimeoutExpired(process.args, settings.BERTH_GIT_TIMEOUT)
            for key, _events in selector.select(remaining):
                chunk = os.read(key.fd, _READ_SIZE)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                key.data.extend(chunk)
                if key.data is err and len(err) > 2 * STDERR_TAIL:
                    dropped += len(err) - STDERR_TAIL
                    del err[:-STDERR_TAIL]
    try:
        process.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise subprocess.TimeoutExpired(process.args, settings.BERTH_GIT_TIMEOUT) from None
    if len(err) > STDERR_TAIL:
        dropped += len(err) - STDERR_TAIL
        del err[:-STDERR_TAIL]
    if dropped:
        err[:0] = f"[{dropped} earlier bytes of git's messages dropped]\n".encode()
    return bytes(out), bytes(err)


def _text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", "replace")


def ensure_cache(workload_id: int) -> Path:
    cache = cache_path(workload_id)
    if not (cache / "HEAD").exists():
        cache.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # An empty template: no sample hooks, nothing but what git needs.
        _git(cache, "init", "--quiet", "--bare", "--template=")
        cache.chmod(0o700)
    return cache


def fetch(cache: Path, url: str, credential: Credential | None = None) -> str:
    """Fetch every branch and tag of `url` into the cache; returns git's report."""
    _check_source(url)
    try:
        result = _git(
            cache, "fetch", "--prune", "--force", "--no-write-fetch-head", "--", url,
            "+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*",
            env=_environment(url, credential),
        )
    except FetchFailed as exc:
        raise FetchFailed(_explained(exc.raw)) from None
    return _text(result.stderr)


def fetch_commit(cache: Path, url: str, sha: str, credential: Credential | None = None) -> bool:
    """Ask the server for one commit by id (servers that allow it); False if it would not."""
    _check_source(url)
    try:
        _git(
            cache, "fetch", "--no-write-fetch-head", "--", url, sha,
            env=_environment(url, credential),
        )
    except FetchFailed:
        return False
    return has_commit(cache, sha)


def _check_source(url: str) -> None:
    """Right before git reads a file:// repository: is it still one it may read?"""
    if giturls.scheme_of(url) != "file":
        return
    try:
        giturls.check_file_repository(url)
    except ValidationError as exc:
        raise FetchFailed(" ".join(exc.messages)) from None


def _explained(raw: str) -> str:
    """git's words, with what Berth makes of a redirect put first."""
    if _REDIRECT.search(raw):
        return (
            "the repository's server answered with a redirect, which Berth does not follow "
            "(the credential would go along): use the URL it redirects to\n" + raw
        )
    return raw


def has_commit(cache: Path, sha: str) -> bool:
    if not giturls.is_full_sha(sha):
        return False
    try:
        _git(cache, "cat-file", "-e", f"{sha}^{{commit}}")
    except FetchFailed:
        return False
    return True


def resolve(cache: Path, ref: str) -> str:
    """The commit `ref` names in the cache: a branch, then a tag, then a commit id.

    A name that is both a branch and a tag means the branch; `refs/tags/NAME`
    names the tag.
    """
    if giturls.is_full_sha(ref):
        if has_commit(cache, ref):
            return ref
        raise UnknownRef(f"commit {ref} is not in the repository")
    candidates = [f"refs/remotes/origin/{ref}", f"refs/tags/{ref}"]
    if ref.startswith("refs/heads/"):
        candidates = [f"refs/remotes/origin/{ref.removeprefix('refs/heads/')}"]
    elif ref.startswith("refs/tags/"):
        candidates = [ref]
    elif giturls.looks_like_short_sha(ref):
        candidates.append(ref)
    for name in candidates:
        sha = _rev_parse(cache, name)
        if sha:
            return sha
    raise UnknownRef(f"no branch, tag or commit named {ref}")


def _rev_parse(cache: Path, name: str) -> str:
    try:
        result = _git(
            cache, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{name}^{{commit}}"
        )
    except FetchFailed:
        return ""
    sha = _text(result.stdout).strip()
    return sha if giturls.is_full_sha(sha) else ""


def export(cache: Path, sha: str, context: str, out: IO[bytes]) -> None:
    """Write the commit's `context` directory to `out` as a tar: the build context.

    Built from the commit's objects, not from a checkout: the context holds
    exactly what the commit holds (symlinks stay symlinks, nothing of the host
    or of .git), whatever the cache's state.
    """
    tree = f"{sha}:" if context in {"", "."} else f"{sha}:{context}"
    try:
        _git(cache, "archive", "--format=tar", tree, stdout=out, error=ExportFailed)
    except ExportFailed as exc:
        raise ExportFailed(
            f"the build context {context or '.'} is not a directory of commit {sha}: {exc.raw}"
        ) from None


def pin(cache: Path, sha: str) -> None:
    """Keep a built commit in the cache, whatever happens to its branch upstream."""
    _git(cache, "update-ref", f"{BUILT_PREFIX}{sha}", sha)


def unpin_except(cache: Path, keep: set[str]) -> None:
    """Drop the pins of commits no kept deploy refers to (the ledger is pruned)."""
    result = _git(cache, "for-each-ref", "--format=%(refname)", BUILT_PREFIX)
    for name in _text(result.stdout).split():
        if name.removeprefix(BUILT_PREFIX) not in keep:
            _git(cache, "update-ref", "-d", name)
