"""Images come from their registry, with the workload's own credential, every time.

The engine serves an image it already holds without asking anyone: a digest
pull, or a build's FROM, would otherwise hand a workload without the
credential a private image another workload pulled, or another workload's
built image. And a build that runs (silently) past BERTH_BUILD_TIMEOUT fails
as a build, saying so.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
import time
import uuid
from types import SimpleNamespace

import docker.errors
import pytest
import requests.exceptions
import urllib3.exceptions
from django.test import override_settings

from lib import runtime
from tests.fixtures import images
from tests.workloads.test_git_deploys import remove_built_images


def context(dockerfile: str | None, files: dict[str, str] | None = None,
            links: dict[str, str] | None = None) -> io.BytesIO:
    """A tar build context: `dockerfile` as ./Dockerfile, other files, symbolic links."""
    buffer = io.BytesIO()
    files = dict(files or {})
    if dockerfile is not None:
        files["Dockerfile"] = dockerfile
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    buffer.seek(0)
    return buffer


def build(dockerfile: str | io.BytesIO, output: list[str] | None = None, *,
          path: str = "Dockerfile", buildargs: dict[str, str] | None = None) -> str:
    return runtime.build(
        context(dockerfile) if isinstance(dockerfile, str) else dockerfile, dockerfile=path,
        tag=f"berth-test-build/{uuid.uuid4().hex[:8]}:x", buildargs=buildargs or {},
        labels=runtime.image_labels_for(0), on_output=(output if output is not None else []).append,
    )


@pytest.fixture
def built(docker):
    yield
    remove_built_images()


@pytest.fixture
def private_pinned(docker) -> str:
    """The auth registry's image, pulled (so the engine holds it) with the credential."""
    return runtime.pull(
        images.AUTH_HTTPD_V1, username=images.AUTH_USERNAME, password=images.AUTH_PASSWORD
    )


# --- pulls -------------------------------------------------------------------

def test_a_private_image_on_the_engine_is_not_pulled_without_the_credential(private_pinned):
    assert private_pinned.startswith(f"{images.AUTH_REGISTRY}/berth-test/httpd@sha256:")

    for reference in (private_pinned, images.AUTH_HTTPD_V1):
        with pytest.raises(runtime.RegistryAuthFailed) as caught:
            runtime.pull(reference)
        assert str(caught.value) == runtime.RegistryAuthFailed.message
        assert caught.value.__cause__ is None and caught.value.__suppress_context__
        with pytest.raises(runtime.RegistryAuthFailed):
            runtime.pull(reference, username=images.AUTH_USERNAME, password="wrong-password")

    # With the credential, the same digest is handed out as before.
    assert runtime.pull(
        private_pinned, username=images.AUTH_USERNAME, password=images.AUTH_PASSWORD
    ) == private_pinned


def test_an_open_registrys_image_is_still_pulled_and_pinned(docker):
    pinned = runtime.pull(images.HTTPD_V2)
    assert pinned.startswith(f"{images.HTTPD}@sha256:")
    assert runtime.pull(pinned) == pinned


def test_the_registry_is_asked_with_the_given_credential_before_pulling(monkeypatch):
    calls = []

    def registry_data(name, auth_config=None):
        calls.append(("registry", name, auth_config))
        raise docker.errors.APIError("denied", explanation="unauthorized: authentication required")

    def pull(*args, **kwargs):
        calls.append(("pull", args, kwargs))

    fake = SimpleNamespace(images=SimpleNamespace(get_registry_data=registry_data, pull=pull))
    monkeypatch.setattr(runtime, "_client", lambda purpose="": fake)

    with pytest.raises(runtime.PullFailed) as caught:
        runtime.pull("registry.example/app@sha256:" + "a" * 64, username="u", password="p")

    assert calls == [(
        "registry", "registry.example/app@sha256:" + "a" * 64, {"username": "u", "password": "p"}
    )]
    assert "unauthorized" in caught.value.raw


# --- builds ------------------------------------------------------------------

def test_a_build_cannot_start_from_a_private_image_it_has_no_credential_for(
    built, private_pinned
):
    """The engine holds the image and its manifest: pull=True alone would not ask."""
    with pytest.raises(runtime.BuildFailed) as caught:
        build(f"FROM {private_pinned}\nRUN true\n")
    assert caught.value.__cause__ is None
    assert caught.value.raw.startswith(f"{private_pinned}: its registry does not hand it out")

    with pytest.raises(runtime.BuildFailed):
        build(f"FROM {images.AUTH_HTTPD_V1}\nRUN true\n")  # by tag: pull=True asks


REFERENCES = {
    "copy-from": "FROM {busybox}\nCOPY --from={private} /bin/busybox /x\n",
    "arg-default": "ARG BASE={private}\nFROM $BASE\nRUN true\n",
    "build-arg": "ARG BASE\nFROM ${{BASE}}\nRUN true\n",
    "default-word": "ARG BASE\nFROM ${{BASE:-{private}}}\nRUN true\n",
    "nested-arg": "ARG REPO={private_repo}\nARG BASE=$REPO@{digest}\nFROM $BASE\n",
    "escape-directive": "# escape=`\nFROM {busybox}\nRUN echo \\\nFROM {private}\nRUN true\n",
    "continued-quoted": (
        "FROM {busybox}\nRUN true \\\n  && true\nfrom \\\n  --platform=linux/amd64 \\\n"
        "  \"{private}\" AS x\n"
    ),
    "escaped-at": "FROM {private_repo}\\@{digest}\n",
    "onbuild": "FROM {busybox} AS one\nONBUILD COPY --from={private} /bin/busybox /x\n",
}


@pytest.mark.parametrize("case", REFERENCES.keys())
def test_a_private_digest_is_refused_however_the_dockerfile_names_it(
    built, private_pinned, case
):
    repository, _at, digest = private_pinned.partition("@")
    text = REFERENCES[case].format(
        busybox=images.BUSYBOX, private=private_pinned, private_repo=repository, digest=digest
    )
    buildargs = {"BASE": private_pinned} if case == "build-arg" else {}
    with pytest.raises(runtime.BuildFailed) as caught:
        build(text, buildargs=buildargs)
    assert "does not hand it out" in caught.value.raw


def test_a_dockerfile_behind_a_symbolic_link_is_read_too(built, private_pinned):
    files = {"real/Dockerfile.prod": f"FROM {private_pinned}\nRUN true\n"}
    links = {"docker": "real", "real/Dockerfile.link": "/real/Dockerfile.prod"}
    with pytest.raises(runtime.BuildFailed) as caught:
        build(context(None, files, links), path="docker/Dockerfile.link")
    assert "does not hand it out" in caught.value.raw


def test_an_image_named_through_an_unknown_variable_is_refused(built):
    with pytest.raises(runtime.BuildFailed) as caught:
        build("FROM ${BASE:?unset}\nRUN true\n")
    assert "variable Berth cannot resolve" in caught.value.raw


def test_a_missing_dockerfile_fails_the_build(built):
    with pytest.raises(runtime.BuildFailed) as caught:
        build(context(None, {"other": "x"}))
    assert caught.value.raw == "Cannot locate specified Dockerfile: Dockerfile"


def test_a_public_image_by_digest_still_builds(built):
    pinned = runtime.pull(images.BUSYBOX)
    build(
        f"ARG BASE={pinned}\nFROM $BASE AS one\nFROM {pinned}\nCOPY --from=one /bin/true /x\n"
    )


def test_a_build_cannot_start_from_an_image_only_the_engine_has(built):
    """Like another workload's built `berth/…:<commit>` image: on the engine, in no registry."""
    local = f"{images.REGISTRY}/berth-test/local-only-{uuid.uuid4().hex[:8]}:x"
    subprocess.run(["docker", "tag", images.BUSYBOX, local], check=True, capture_output=True)
    try:
        with pytest.raises(runtime.BuildFailed):
            build(f"FROM {local}\nRUN true\n")
    finally:
        subprocess.run(["docker", "rmi", local], capture_output=True, check=False)


def test_a_build_from_a_registry_image_still_builds(built):
    output: list[str] = []
    image_id = build(f"FROM {images.BUSYBOX}\nRUN echo built-here\n", output)
    assert image_id.startswith("sha256:")
    assert "built-here" in "".join(output)


def test_a_silent_build_past_the_timeout_fails_as_a_build_saying_so(built):
    started = time.monotonic()
    with override_settings(BERTH_BUILD_TIMEOUT=3), pytest.raises(runtime.BuildFailed) as caught:
        build(f"FROM {images.BUSYBOX}\nRUN sleep 30\n")

    assert caught.value.raw == "the build ran longer than BERTH_BUILD_TIMEOUT (3 s)"
    assert caught.value.code == "build_failed"
    assert caught.value.__cause__ is None
    assert time.monotonic() - started < 20


def fake_build_stream(monkeypatch, error: Exception) -> None:
    def build_api(**kwargs):
        yield {"stream": "Step 1/2 : FROM somewhere\n"}
        raise error

    fake = SimpleNamespace(api=SimpleNamespace(build=build_api))
    monkeypatch.setattr(runtime, "_client", lambda purpose="": fake)


def test_a_read_timeout_of_the_build_stream_is_the_builds_timeout(monkeypatch):
    # The stream's read timeout is BERTH_BUILD_TIMEOUT: the build was silent that long.
    fake_build_stream(
        monkeypatch, urllib3.exceptions.ReadTimeoutError(None, "/build", "Read timed out.")
    )
    with pytest.raises(runtime.BuildFailed) as caught:
        build("FROM somewhere\n")
    assert "BERTH_BUILD_TIMEOUT" in caught.value.raw
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize(
    "error",
    [urllib3.exceptions.ProtocolError("Connection broken: reset by peer"),
     requests.exceptions.ChunkedEncodingError("Connection broken: invalid chunk")],
)
def test_a_stream_that_breaks_before_the_timeout_means_the_engine_went_away(
    monkeypatch, error
):
    fake_build_stream(monkeypatch, error)
    with pytest.raises(runtime.EngineUnreachable) as caught:
        build("FROM somewhere\n")
    assert "Connection broken" in caught.value.raw
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_stream_that_breaks_after_the_deadline_is_the_builds_timeout(monkeypatch):
    fake_build_stream(monkeypatch, urllib3.exceptions.ProtocolError("Connection broken"))
    clock = iter([0.0, 100.0, 100.0, 100.0])
    monkeypatch.setattr(runtime.time, "monotonic", lambda: next(clock))
    with override_settings(BERTH_BUILD_TIMEOUT=30), pytest.raises(runtime.BuildFailed) as caught:
        build("FROM somewhere\n")
    assert caught.value.raw == "the build ran longer than BERTH_BUILD_TIMEOUT (30 s)"
