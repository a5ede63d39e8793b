"""Host path derivation and containment for the three volume scopes."""

from __future__ import annotations

import os

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError

from lib import paths
from workloads.models import VolumeMount


def volumes() -> str:
    return os.path.join(str(settings.DATA_DIR), "volumes")


def test_it_derives_the_project_and_stage_paths():
    assert paths.host_path("project", "shop", "prod", "db") == f"{volumes()}/shop/db"
    assert paths.host_path("stage", "shop", "prod", "db") == f"{volumes()}/shop/prod/db"
    assert paths.host_path("stage", "shop", "prod", "db/main") == f"{volumes()}/shop/prod/db/main"


def test_it_takes_an_absolute_source_as_it_is(tmp_path):
    assert paths.host_path("absolute", "shop", "prod", str(tmp_path / "d")) == str(tmp_path / "d")


@pytest.mark.parametrize("scope", ["stage", "project"])
@pytest.mark.parametrize(
    "source",
    [
        "../escape", "db/../../escape", "..", "/etc", "/srv/data",
        "./db", "db//x", "db/", "", "a\x00b", "a\\b",
    ],
)
def test_it_rejects_escaping_or_absolute_sources_in_relative_scopes(scope, source):
    with pytest.raises(ValidationError):
        paths.host_path(scope, "shop", "prod", source)


@pytest.mark.parametrize("source", ["relative/dir", "data", "/", "/etc", "/srv/../etc", ""])
def test_it_needs_a_safe_absolute_path_for_the_absolute_scope(source):
    with pytest.raises(ValidationError):
        paths.host_path("absolute", "shop", "prod", source)


def test_it_rejects_a_symlink_planted_inside_the_scope(tmp_path):
    base = os.path.join(volumes(), "shop", "prod")
    os.makedirs(base, exist_ok=True)
    link = os.path.join(base, "planted")
    os.symlink(str(tmp_path), link)
    try:
        with pytest.raises(ValidationError, match="escapes"):
            paths.host_path("stage", "shop", "prod", "planted")
    finally:
        os.unlink(link)


def test_it_rejects_unknown_scopes():
    with pytest.raises(ValidationError):
        paths.host_path("volume", "shop", "prod", "db")
    assert set(paths.SUPPORTED_SCOPES) == {c.value for c in VolumeMount.Scope}


@pytest.mark.parametrize("target", ["data", "/", "/data/../etc", "/a\x00"])
def test_it_rejects_bad_container_paths(target):
    with pytest.raises(ValidationError):
        paths.validate_target(target)


@pytest.mark.django_db
def test_the_model_validates_and_derives(make_workload):
    workload = make_workload()
    volume = VolumeMount(workload=workload, scope="stage", source="../x", target="/data")
    with pytest.raises(ValidationError) as caught:
        volume.full_clean()
    assert "source" in caught.value.message_dict
    volume.source = "site"
    volume.full_clean()
    stage = workload.stage
    assert volume.host_path() == f"{volumes()}/{stage.project.slug}/{stage.slug}/site"
