"""A workload's logs through the API, from real containers: tail, follow, since, search, the
previous run after a crash, the permission, and the bounds a chatty container cannot break."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group

from engine import logs
from tests.fixtures import chatty
from tests.fixtures.chatty import WAIT_SECONDS, wait_for
from workloads.models import Workload

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]
chatty_image, printing = chatty.chatty_image, chatty.printing


def texts(answer: dict) -> list[str]:
    return [line["text"] for line in answer["lines"]]


@pytest.fixture
def logs_api(api_as, operator):
    api = api_as(operator)

    def get(workload: Workload, **params) -> dict:
        response = api.get(f"/api/workloads/{workload.pk}/logs", params)
        assert response.status_code == 200, response.content
        return response.json()

    return get


def test_it_returns_the_last_lines_of_every_replica_merged_by_time(printing, logs_api):
    workload = printing('for i in $(seq 1 30); do echo "line $i"; done; sleep 3600', replicas=2)

    everything = wait_for(lambda: logs_api(workload, tail=100),
                          lambda a: len(a["lines"]) == 60)
    assert sorted(texts(everything)) == sorted([f"line {i}" for i in range(1, 31)] * 2)
    assert {line["replica"] for line in everything["lines"]} == {1, 2}
    times = [line["time"] for line in everything["lines"]]
    assert times == sorted(times)

    last = logs_api(workload, tail=10)
    assert len(last["lines"]) == 10 and last["lines"] == everything["lines"][-10:]
    assert last["cut"] is True  # 60 lines, 10 shown

    one = logs_api(workload, tail=100, replica=2)
    assert texts(one) == [f"line {i}" for i in range(1, 31)]
    assert {line["replica"] for line in one["lines"]} == {2}


def test_following_with_the_cursor_gives_the_new_lines_once(printing, logs_api):
    workload = printing('i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 0.2; done')
    first = wait_for(lambda: logs_api(workload), lambda a: len(a["lines"]) >= 3)
    last_tick = int(texts(first)[-1].split()[1])

    later = wait_for(lambda: logs_api(workload, after=first["cursor"]),
                     lambda a: len(a["lines"]) >= 3)
    ticks = [int(text.split()[1]) for text in texts(later)]
    assert ticks[0] == last_tick + 1  # nothing repeated, nothing skipped
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks)))
    assert int(later["cursor"]) > int(first["cursor"])

    # Asked again at once with the newest cursor: no line is returned twice.
    again = logs_api(workload, after=later["cursor"])
    assert not set(texts(again)) & set(texts(later))


def test_since_keeps_the_lines_after_a_time(printing, logs_api):
    workload = printing('echo early; sleep 2; echo late; sleep 3600')
    both = wait_for(lambda: logs_api(workload), lambda a: "late" in texts(a))
    assert texts(both) == ["early", "late"]
    early = both["lines"][0]["time"]

    from datetime import datetime

    between = (datetime.fromisoformat(early) + timedelta(seconds=1)).isoformat()
    assert texts(logs_api(workload, since=between)) == ["late"]
    assert texts(logs_api(workload, since="1h")) == ["early", "late"]
    assert texts(logs_api(workload, after=5)) == ["early", "late"]  # 5 ns after the epoch


def test_search_is_case_insensitive_and_never_finds_a_secret(printing, logs_api):
    workload = printing(
        'echo "alpha one"; echo "BETA two"; echo "alpha three"; echo "token is $API_TOKEN"; '
        'sleep 3600', secrets={"API_TOKEN": "hunter2-very-secret"})
    everything = wait_for(lambda: logs_api(workload), lambda a: len(a["lines"]) == 4)
    assert texts(everything)[-1] == "token is [redacted]"
    assert "hunter2" not in json.dumps(everything)

    assert texts(logs_api(workload, search="beta")) == ["BETA two"]
    assert texts(logs_api(workload, search="ALPHA")) == ["alpha one", "alpha three"]
    assert texts(logs_api(workload, search="hunter2")) == []
    assert texts(logs_api(workload, search="redacted")) == ["token is [redacted]"]


def restart_count(workload: Workload) -> int:
    out = subprocess.run(["docker", "inspect", "-f", "{{.RestartCount}}",
                          workload.container_name(1)], capture_output=True, text=True,
                         check=True).stdout
    return int(out.strip())


def test_after_a_crash_the_previous_run_shows_the_lines_before_it(printing, logs_api):
    workload = printing('echo "run started"; sleep 1; echo "about to crash"; exit 3')
    # Docker starts the same container again (unless-stopped); its log goes on.
    deadline = time.monotonic() + WAIT_SECONDS
    while restart_count(workload) < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert restart_count(workload) >= 1

    previous = logs_api(workload, previous="true")
    assert texts(previous)[:2] == ["run started", "about to crash"]
    # Both runs, one log (the newest lines show once they settle: engine/logs.SETTLE_NS).
    everything = wait_for(lambda: logs_api(workload),
                          lambda a: texts(a).count("run started") >= 2)
    assert texts(everything).count("run started") >= 2


def test_a_container_that_never_restarted_has_no_previous_run(printing, logs_api):
    workload = printing('echo hello; sleep 3600')
    wait_for(lambda: logs_api(workload), lambda a: texts(a) == ["hello"])
    assert logs_api(workload, previous="true")["lines"] == []


def test_a_million_lines_give_a_bounded_answer(printing, api_as, operator, logs_api):
    workload = printing('seq 1 1000000; echo finished; sleep 3600')
    wait_for(lambda: logs_api(workload, tail=1), lambda a: texts(a) == ["finished"])
    api = api_as(operator)
    url = f"/api/workloads/{workload.pk}/logs"

    response = api.get(url, {"tail": logs.MAX_TAIL})
    lines = response.json()["lines"]
    assert len(lines) == logs.MAX_TAIL and lines[-1]["text"] == "finished"
    assert lines[0]["text"] == str(1_000_000 - logs.MAX_TAIL + 2)  # the newest, in order
    assert len(response.content) < 200_000  # 1,000 short lines and their times

    # A search matches many lines: it still returns at most `tail` of them.
    found = api.get(url, {"tail": 50, "search": "99"}).json()
    assert len(found["lines"]) == 50 and all("99" in line["text"] for line in found["lines"])

    download = api.get(f"{url}/download")
    assert download["Content-Disposition"].startswith("attachment;")
    body = download.content.decode()
    assert body.count("\n") == logs.DOWNLOAD_TAIL
    assert len(download.content) <= logs.DOWNLOAD_BYTES
    assert body.splitlines()[-1].endswith("[1] finished")

    assert api.get(url, {"tail": logs.MAX_TAIL + 1}).status_code == 400  # no bigger answer


def test_bad_parameters_are_refused_with_a_reason(api_as, operator, workload):
    api = api_as(operator)
    url = f"/api/workloads/{workload.pk}/logs"
    for params, field in (({"tail": 0}, "tail"), ({"tail": "many"}, "tail"),
                          ({"since": "yesterday"}, "since"), ({"after": -1}, "after"),
                          ({"replica": 0}, "replica"), ({"replica": 3}, "replica"),
                          ({"search": "x" * 201}, "search"), ({"previous": "perhaps"},
                                                               "previous")):
        response = api.get(url, params)
        assert response.status_code == 400, (params, response.content)
        assert field in response.json(), response.json()
    assert "30s, 15m, 2h, 7d" in api.get(url, {"since": "soon"}).json()["since"][0]
    assert api.get(url, {"since": "", "search": ""}).status_code == 200  # empty: no filter


def test_only_view_logs_may_read_them(api, api_as, operator, viewer, outsider, workload):
    url = f"/api/workloads/{workload.pk}/logs"
    assert api.get(url).status_code == 401
    assert api_as(viewer).get(url).status_code == 403
    assert api_as(outsider).get(url).status_code == 403
    assert api_as(viewer).get(f"{url}/download").status_code == 403
    answer = api_as(operator).get(url)
    assert answer.status_code == 200 and answer.json()["lines"] == []  # never deployed
    assert api_as(operator).get("/api/workloads/999999/logs").status_code == 404


def test_operators_have_view_logs_and_viewers_do_not(db):
    assert Group.objects.get(name="operators").permissions.filter(codename="view_logs").exists()
    viewers = Group.objects.get(name="viewers").permissions
    assert viewers.filter(codename="view_workload").exists()
    assert not viewers.filter(codename="view_logs").exists()


def test_since_takes_durations_and_times():
    from datetime import UTC, datetime

    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    assert logs.parse_since("15m", now=now) == now - timedelta(minutes=15)
    assert logs.parse_since("2d", now=now) == now - timedelta(days=2)
    assert logs.parse_since("2026-12-06T10:00:00Z") == datetime(2026, 12, 6, 10, tzinfo=UTC)
    for bad in ("", "15", "15y", "-1h", "tomorrow"):
        with pytest.raises(logs.LogsRefused):
            logs.parse_since(bad)


def test_the_byte_bound_still_ends_with_the_newest_lines(printing, logs_api, monkeypatch):
    from lib import runtime

    workload = printing('seq 1 5000; echo finished; sleep 3600')
    wait_for(lambda: logs_api(workload, tail=1), lambda a: texts(a) == ["finished"])
    monkeypatch.setattr(runtime, "LOG_READ_BYTES", 4000)  # about a hundred lines

    answer = logs_api(workload, tail=1000)
    assert answer["cut"] is True
    assert texts(answer)[-1] == "finished"
    assert 10 <= len(answer["lines"]) < 100
    numbers = [int(text) for text in texts(answer)[:-1]]
    assert numbers == list(range(numbers[0], 5001))  # the newest, none missing between


def test_a_replica_whose_container_went_away_is_reported_gone(printing, logs_api):
    workload = printing('echo "still here"; sleep 3600', replicas=2)
    wait_for(lambda: logs_api(workload), lambda a: len(a["lines"]) == 2)
    subprocess.run(["docker", "rm", "-f", workload.container_name(2)], check=True,
                   capture_output=True)

    answer = logs_api(workload)
    assert answer["gone"] == [2]
    assert [(line["replica"], line["text"]) for line in answer["lines"]] == [(1, "still here")]


def test_following_several_replicas_misses_no_line_of_any(printing, logs_api):
    # Each replica prints a numbered line about every 20 ms (busybox usleep).
    workload = printing('i=0; while true; do i=$((i+1)); echo "n $i"; usleep 20000; done',
                        replicas=2)
    first = wait_for(lambda: logs_api(workload, tail=1000), lambda a: len(a["lines"]) > 20)
    seen: dict[int, list[int]] = {1: [], 2: []}
    cursor = first["cursor"]
    for _poll in range(30):
        time.sleep(0.1)
        answer = logs_api(workload, tail=1000, after=cursor)
        assert answer["cut"] is False
        for line in answer["lines"]:
            seen[line["replica"]].append(int(line["text"].split()[1]))
        cursor = answer["cursor"]
    for numbers in seen.values():
        assert len(numbers) > 20
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # no gap


def test_a_cursor_or_time_not_reached_yet_gives_no_lines(printing, logs_api):
    workload = printing("echo hello; sleep 3600")
    wait_for(lambda: logs_api(workload), lambda a: texts(a) == ["hello"])
    for after in (10**19, 10**30, 2**63):
        answer = logs_api(workload, after=after)
        assert answer["lines"] == [] and answer["cursor"] == str(after)
    assert logs_api(workload, since="9999-12-31T00:00:00Z")["lines"] == []
    assert texts(logs_api(workload, since="0001-01-01T00:00:00Z")) == ["hello"]


@pytest.mark.parametrize("since", ["999999d", "87700h", "999999h"])
def test_a_duration_beyond_ten_years_is_refused(api_as, operator, workload, since):
    response = api_as(operator).get(f"/api/workloads/{workload.pk}/logs", {"since": since})
    assert response.status_code == 400
    assert response.json() == {"since": ["Give “since” as a duration of at most ten years."]}
    assert logs.parse_since("3650d")  # ten years is fine


def test_the_view_logs_migration_gives_operators_that_and_nothing_back(db):
    from django.apps import apps
    from django.contrib.auth.models import Group

    from workloads.groups import granted_to_operators

    operators = Group.objects.get(name="operators")
    operators.permissions.remove(*operators.permissions.filter(
        codename__in=["restore_workload", "view_logs"]))

    granted_to_operators("view_logs")(apps)

    codenames = set(operators.permissions.values_list("codename", flat=True))
    assert "view_logs" in codenames and "restore_workload" not in codenames
    assert not Group.objects.get(name="viewers").permissions.filter(
        codename="view_logs").exists()
