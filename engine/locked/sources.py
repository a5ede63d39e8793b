"""Where a deploy's image comes from: a registry, or a git repository built here.

dispatch() asks resolve() for the image to run and knows nothing else about
sources. Both kinds end in a pinned reference for the ledger and an exact
image for the containers:

- image: pull `repo:tag` and pin it by digest (`repo@sha256:…`);
- git: fetch the repository into the workload's cache, resolve the ref to a
  commit, export that commit's build context and build it with the engine,
  tagged `berth/<project>-<stage>-<workload>:<commit>`. The ledger pins the
  commit and records the image id; the containers run the image id.

A requested reference with "@" is a replay (rollback, restore): it is not
resolved anew. An image's `repo@sha256:…` is pulled as is; a git `ref@<commit>`
reuses the image built for that commit while the engine still has it, and
otherwise rebuilds that exact commit from the cache or, failing that, from the
repository. A replay rebuilds with the workload's current Dockerfile path,
context and build arguments: the commit is exact, the settings are today's.
"""

from __future__ import annotations

import logging
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from django.conf import settings

from engine.locked.buildlog import BuildLogWriter
from lib import dockerignore, gitcache, giturls, references, runtime
from workloads.models import DeployRecord, PulledImage, Workload

logger = logging.getLogger(__name__)


class SourceFailed(Exception):
    """Resolving the source failed; `code` is a DeployRecord.Failure value."""

    def __init__(self, code: str, raw: str = "") -> None:
        super().__init__(code)
        self.code = code
        self.raw = raw


@dataclass(frozen=True)
class Resolved:
    pinned: str  # the ledger's pinned reference: repo@sha256:… or a commit id
    image: str  # what the containers are created from: the same digest, or an image id
    image_id: str = ""  # the built (or reused) image of a git deploy


def is_replay(reference: str) -> bool:
    return "@" in reference


def resolve(workload: Workload, record: DeployRecord, secrets: list[str]) -> Resolved:
    if workload.source_kind == Workload.SourceKind.GIT:
        log = BuildLogWriter(record, secrets)
        try:
            return _resolve_git(workload, record, log)
        finally:
            log.close()
    reference = record.requested_reference
    credential = workload.registry_credential
    if credential and credential.registry != references.registry_host(reference):
        # A replayed digest may come from a registry the workload has since
        # left: its current credential is never sent anywhere but its own.
        credential = None
    try:
        pinned = runtime.pull(
            reference,
            username=credential.username if credential else "",
            password=credential.get_password() if credential else "",
        )
        # Before the containers are made from it: image collection (engine/images.py)
        # removes only images a row says Berth pulled.
        image_id = runtime.image_id(pinned)
    except runtime.EngineError as exc:
        raise SourceFailed(exc.code, exc.raw) from None
    if image_id:
        PulledImage.note(workload_id=workload.pk, image_id=image_id, reference=pinned)
    return Resolved(pinned=pinned, image=pinned)


def image_tag(workload: Workload, sha: str) -> str:
    stage = workload.stage
    return f"berth/{stage.project.slug}-{stage.slug}-{workload.slug}:{sha}"


def _credential(workload: Workload) -> gitcache.Credential | None:
    """The stored credential, only for the origin it was given for (clean() checks that too)."""
    username, password = workload.get_git_credential()
    if not (username or password) or not workload.git_credential_matches_url:
        return None
    return gitcache.Credential(username, password)


def _resolve_git(workload: Workload, record: DeployRecord, log: BuildLogWriter) -> Resolved:
    ref, at, sha = record.requested_reference.partition("@")
    try:
        if at:
            return _replay(workload, record, log, sha)
        return _deploy_ref(workload, record, log, ref)
    except gitcache.GitError as exc:
        log.note(f"failed: {exc.raw.strip() or exc.code}")
        if exc.code == DeployRecord.Failure.BUILD_FAILED:
            log.fail_step(exc.raw)
        raise SourceFailed(exc.code, exc.raw) from None
    except runtime.EngineError as exc:
        if exc.code == DeployRecord.Failure.BUILD_FAILED:
            # The engine's error is the build's own output (the failing
            # step's message), so it belongs in the log, redacted like the rest.
            log.write(exc.raw.rstrip("\n") + "\n")
            log.fail_step(exc.raw)
        else:
            log.note(f"failed: {exc.message}")
        raise SourceFailed(exc.code, exc.raw) from None


def _fetch(workload: Workload, log: BuildLogWriter) -> Path:
    cache = gitcache.ensure_cache(workload.pk)
    log.note(f"fetching {workload.git_url}")
    report = gitcache.fetch(cache, workload.git_url, _credential(workload))
    if report.strip():
        log.write(report)
    return cache


def _deploy_ref(
    workload: Workload, record: DeployRecord, log: BuildLogWriter, ref: str
) -> Resolved:
    cache = _fetch(workload, log)
    if giturls.is_full_sha(ref) and not gitcache.has_commit(cache, ref):
        # A commit no branch or tag reaches; servers that allow it hand it out by id.
        gitcache.fetch_commit(cache, workload.git_url, ref, _credential(workload))
    sha = gitcache.resolve(cache, ref)
    log.note(f"{ref} is commit {sha}")
    # Known from here on: a build that fails is recorded with the commit it failed on.
    record.pinned_reference = sha
    gitcache.unpin_except(cache, _kept_commits(workload))
    return _build(workload, record, log, cache, sha)


def _replay(workload: Workload, record: DeployRecord, log: BuildLogWriter, sha: str) -> Resolved:
    if not giturls.is_full_sha(sha):
        raise SourceFailed(DeployRecord.Failure.INVALID_CONFIG, f"not a commit id: {sha!r}")
    for image_id in _recorded_images(workload, record, sha):
        if runtime.image_exists(image_id):
            log.note(f"commit {sha}: reusing its image {image_id}")
            return Resolved(pinned=sha, image=image_id, image_id=image_id)
    log.note(f"commit {sha}: no image of it is left in the engine; rebuilding it")
    cache = gitcache.ensure_cache(workload.pk)
    if not gitcache.has_commit(cache, sha):
        cache = _fetch(workload, log)
        if not gitcache.has_commit(cache, sha) and not gitcache.fetch_commit(
            cache, workload.git_url, sha, _credential(workload)
        ):
            raise gitcache.CommitMissing(f"commit {sha} is not in the repository any more")
    record.pinned_reference = sha
    return _build(workload, record, log, cache, sha)


def _recorded_images(workload: Workload, record: DeployRecord, sha: str) -> list[str]:
    """Images built for `sha` by this workload, best first.

    The rolled-back deploy's own image; then, when `sha` is what runs, the
    running containers' image (what a restore must bring back, even after the
    ledger row that built it was pruned); then other deploys of `sha`, newest first.
    """
    images = []
    target = record.rolled_back_from
    if target is not None and target.pinned_reference == sha and target.image_id:
        images.append(target.image_id)
    if workload.running_commit == sha:
        images += workload.containers.live().values_list("image_reference", flat=True)
    images += (
        workload.deploys.filter(
            outcome=DeployRecord.Outcome.SUCCEEDED,
            source_kind=Workload.SourceKind.GIT,
            pinned_reference=sha,
        )
        .exclude(image_id="")
        .order_by("-created", "-id")
        .values_list("image_id", flat=True)
    )
    return list(dict.fromkeys(images))


def _kept_commits(workload: Workload) -> set[str]:
    """Commits the cache keeps pinned: every one in the ledger, and the running one."""
    commits = set(
        workload.deploys.filter(source_kind=Workload.SourceKind.GIT)
        .exclude(pinned_reference="")
        .values_list("pinned_reference", flat=True)
    )
    return commits | {workload.running_commit} - {""}


def _build(
    workload: Workload, record: DeployRecord, log: BuildLogWriter, cache: Path, sha: str
) -> Resolved:
    tag = image_tag(workload, sha)
    tmp = Path(settings.DATA_DIR) / "tmp"
    tmp.mkdir(mode=0o700, exist_ok=True)
    with tempfile.TemporaryFile(dir=tmp) as exported, \
            tempfile.TemporaryFile(dir=tmp) as filtered:
        gitcache.export(cache, sha, workload.git_context, exported)
        context = _apply_dockerignore(exported, filtered, workload, log)
        log.note(
            f"building {tag} from {workload.git_dockerfile} in {workload.git_context or '.'} "
            f"of commit {sha}"
        )
        image_id = runtime.build(
            context,
            dockerfile=workload.git_dockerfile,
            tag=tag,
            buildargs=dict(workload.build_args),
            labels=runtime.image_labels_for(
                workload.pk,
                **{runtime.COMMIT_LABEL: sha, runtime.DEPLOY_LABEL: str(record.pk)},
            ),
            on_output=log.write,
        )
    gitcache.pin(cache, sha)
    log.note(f"built image {image_id}")
    return Resolved(pinned=sha, image=image_id, image_id=image_id)


def _apply_dockerignore(exported: IO[bytes], filtered: IO[bytes], workload: Workload,
                        log: BuildLogWriter) -> IO[bytes]:
    """The build context without what its .dockerignore excludes, rewound for the build.

    The docker CLI applies .dockerignore, not the engine, so Berth does it for the
    context it exported. A broken .dockerignore fails the build (build_failed).
    """
    exported.seek(0)
    try:
        left_out = dockerignore.filter_context(exported, filtered,
                                               dockerfile=workload.git_dockerfile)
    except (dockerignore.DockerignoreError, tarfile.TarError) as exc:
        raise runtime.BuildFailed(str(exc)) from None
    if left_out is None:
        exported.seek(0)
        return exported
    log.note(f"{dockerignore.FILENAME}: {left_out} path(s) left out of the build context")
    filtered.seek(0)
    return filtered
