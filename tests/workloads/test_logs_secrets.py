"""A workload's logs mask its secrets wherever a line puts them: across the 2,000-character
cut, across the engine's 16 KiB split, line by line for a multi-line secret, base64- and
URL-encoded, and with the values the running containers were given, whatever Berth holds now.
From real containers (the review's reproductions, docs/logs.md)."""

from __future__ import annotations

import base64
import json
import subprocess
from urllib.parse import quote

import pytest

from engine import logs
from lib import runtime
from tests.fixtures import chatty
from tests.fixtures.chatty import wait_for
from workloads.models import EnvVar, Workload

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]
chatty_image, printing = chatty.chatty_image, chatty.printing

SECRET = "hunter2-very-secret-value-XYZ"  # noqa: S105 - 29 characters


@pytest.fixture
def logs_api(api_as, operator):
    api = api_as(operator)

    def get(workload: Workload, suffix: str = "", **params):
        response = api.get(f"/api/workloads/{workload.pk}/logs{suffix}", params)
        assert response.status_code == 200, response.content
        return response

    return get


def leaked(body: str, secret: str = SECRET) -> list[str]:
    """The pieces of `secret`, 8 characters long, that `body` shows."""
    return sorted({secret[i:i + 8] for i in range(len(secret) - 7) if secret[i:i + 8] in body})


def until_done(logs_api, workload: Workload) -> dict:
    return wait_for(lambda: logs_api(workload).json(),
                    lambda a: a["lines"] and a["lines"][-1]["text"] == "done")


def test_it_masks_a_secret_across_the_2000_character_cut(printing, logs_api):
    workload = printing(
        'printf "%s%s tail\\n" "$(head -c 1995 /dev/zero | tr "\\0" A)" "$API_TOKEN"; '
        'echo done; sleep 3600', secrets={"API_TOKEN": SECRET})
    answer = until_done(logs_api, workload)
    assert answer["lines"][0]["text"] == "A" * 1995 + "[reda…"
    assert answer["cut"] is True
    assert leaked(json.dumps(answer)) == []
    assert leaked(logs_api(workload, "/download").content.decode()) == []
    search = logs_api(workload, search="hunter2-very").json()
    assert search["lines"] == []


def test_it_joins_the_pieces_of_a_line_the_engine_split_before_masking(printing, logs_api):
    workload = printing(
        'printf "%s%s tail\\n" "$(head -c 16370 /dev/zero | tr "\\0" A)" "$API_TOKEN"; '
        'echo done; sleep 3600', secrets={"API_TOKEN": SECRET})
    answer = until_done(logs_api, workload)
    assert len(answer["lines"]) == 2  # one line of 16,404 characters, then "done"
    assert leaked(json.dumps(answer)) == []
    assert logs_api(workload, search="XYZ tail").json()["lines"] == []
    assert [line["text"] for line in logs_api(workload, search="redacted] tail").json()[
        "lines"]] == [answer["lines"][0]["text"]]


def test_it_masks_each_line_of_a_multi_line_secret(printing, logs_api):
    key = ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"
           "-----END PRIVATE KEY-----")
    workload = printing('echo "$TLS_KEY"; echo done; sleep 3600', secrets={"TLS_KEY": key})
    answer = until_done(logs_api, workload)
    assert [line["text"] for line in answer["lines"]] == ["[redacted]"] * 3 + ["done"]


def test_it_masks_the_base64_and_url_quoted_forms_of_a_secret(printing, logs_api):
    secret = "p@ss word/with+signs"  # noqa: S105
    workload = printing(
        'echo "b64 $(printf %s "$API_TOKEN" | base64)"; '
        'echo "basic $(printf "user:%s" "$API_TOKEN" | base64)"; '
        f'echo "quoted {quote(secret, safe="")}"; '
        'echo "upper $(printf %s "$API_TOKEN" | tr a-z A-Z)"; '
        'echo done; sleep 3600', secrets={"API_TOKEN": secret})
    texts = [line["text"] for line in until_done(logs_api, workload)["lines"]]
    encoded = base64.b64encode(secret.encode()).decode()
    assert texts[0] == "b64 [redacted]"
    assert encoded not in texts[1] and "[redacted]" not in texts[1]  # not alone: documented
    assert texts[2] == "quoted [redacted]"
    assert texts[3] == f"upper {secret.upper()}"  # not masked: documented as a limit


def test_it_masks_the_value_a_container_runs_with_after_a_rotation(printing, logs_api):
    workload = printing('while true; do echo "db password $DB_PASSWORD"; sleep 0.5; done',
                        secrets={"DB_PASSWORD": SECRET})
    wait_for(lambda: logs_api(workload).json(), lambda a: a["lines"])
    # Rotated in Berth; the redeploy has not happened (or failed): the containers
    # still run, and print, the old value.
    env = EnvVar.objects.get(workload=workload, name="DB_PASSWORD")
    env.set_value("the-new-password-not-deployed", secret=True)
    env.save()
    answer = logs_api(workload).json()
    assert answer["lines"][-1]["text"] == "db password [redacted]"
    assert leaked(json.dumps(answer)) == []


@pytest.mark.parametrize("change", ["delete", "make plain"])
def test_a_secret_deleted_or_made_plain_after_the_deploy_stays_masked(printing, logs_api,
                                                                       change):
    workload = printing('while true; do echo "token $API_TOKEN"; sleep 0.5; done',
                        secrets={"API_TOKEN": SECRET})
    wait_for(lambda: logs_api(workload).json(), lambda a: a["lines"])
    env = EnvVar.objects.get(workload=workload, name="API_TOKEN")
    if change == "delete":
        env.delete()
    else:
        env.set_value(SECRET, secret=False)
        env.save()
    answer = logs_api(workload).json()
    assert answer["lines"][-1]["text"] == "token [redacted]"
    assert leaked(json.dumps(answer)) == []
    assert logs_api(workload, search="hunter2").json()["lines"] == []


def test_the_deploy_records_which_names_were_secret_on_each_container(printing):
    workload = printing("sleep 3600", replicas=2, secrets={"B_TOKEN": "b" * 10, "A_KEY": "a" * 9})
    labels = subprocess.run(
        ["docker", "inspect", "-f", f'{{{{index .Config.Labels "{runtime.SECRET_ENV_LABEL}"}}}}',
         workload.container_name(1), workload.container_name(2)],
        capture_output=True, text=True, check=True).stdout.split()
    assert labels == ["A_KEY,B_TOKEN", "A_KEY,B_TOKEN"]  # names only, never values


def source(environment: dict[str, str], labels: dict[str, str]) -> runtime.LogSource:
    return runtime.LogSource(environment=environment, labels=labels, finished_at=None,
                             tty=False, image="sha256:image")


def test_masks_read_the_containers_own_values_of_names_secret_then_or_now(workload, monkeypatch):
    def image_env(image_id: str, *, deadline: float) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin", "HOME": "/root"}

    monkeypatch.setattr(runtime, "image_environment", image_env)
    current = EnvVar(workload=workload, name="NOW_SECRET")
    current.set_value("current-value", secret=True)
    current.save()
    workload.env_vars.create(name="PLAIN", value="plain-value")
    masks = logs._Masks(workload, deadline=0)
    env = {"NOW_SECRET": "deployed-value", "PLAIN": "plain-value", "WAS_SECRET": "old-secret",
           "DELETED": "deleted-value", "PATH": "/usr/bin:/bin", "HOME": "/root"}

    labelled = masks.for_container(source(env, {runtime.SECRET_ENV_LABEL: "WAS_SECRET"}))
    assert {"deployed-value", "current-value", "old-secret"} <= set(labelled)
    assert not {"plain-value", "deleted-value", "/root"} & set(labelled)

    # Made before the label: the names secret now, and those the workload no longer
    # has but the image does not set either.
    unlabelled = masks.for_container(source(env, {}))
    assert {"deployed-value", "current-value", "old-secret", "deleted-value"} <= set(unlabelled)
    assert not {"plain-value", "/root", "/usr/bin:/bin"} & set(unlabelled)


def test_a_tail_that_begins_inside_a_split_line_hides_the_start_of_its_first_line(
        printing, logs_api):
    # Pieces of 16 KiB: the secret's start ends the first, its end begins the second.
    workload = printing(
        'printf "%s%s%s\\n" "$(head -c 16370 /dev/zero | tr "\\0" A)" "$API_TOKEN" '
        '"$(head -c 20000 /dev/zero | tr "\\0" B)"; echo done; sleep 3600',
        secrets={"API_TOKEN": SECRET})
    whole = until_done(logs_api, workload)
    assert len(whole["lines"]) == 2 and leaked(json.dumps(whole)) == []
    # Two lines: the engine's three newest messages, the first of them the second piece.
    answer = logs_api(workload, tail=2).json()
    first = answer["lines"][0]["text"]
    assert first.startswith("…B") and set(first[1:-1]) == {"B"}
    assert answer["cut"] is True and leaked(json.dumps(answer)) == []
    assert logs_api(workload, tail=2, search="XYZBBB").json()["lines"] == []
