"""The logs panel of a workload's page: shown only with view_logs, its lines, its follow poll
(new lines after the cursor, and the poll again with a newer one), and its download."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.fixtures import chatty
from tests.fixtures.chatty import wait_for

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]
chatty_image, printing = chatty.chatty_image, chatty.printing


def logged_in(client: Client, user: User) -> Client:
    client.force_login(user)
    return client


def htmx_get(client: Client, url: str, params: dict | None = None):
    return client.get(url, params or {}, headers={"HX-Request": "true"})


def line_texts(html: str) -> list[str]:
    return re.findall(r'<div class="log-line"[^>]*>.*?<code>(.*?)</code></div>', html)


def test_the_panel_is_on_the_page_only_with_view_logs(client, operator, viewer, workload):
    url = f"/workloads/{workload.pk}/"
    assert 'id="logs"' in logged_in(client, operator).get(url).content.decode()
    assert 'id="logs"' not in logged_in(Client(), viewer).get(url).content.decode()
    assert logged_in(Client(), viewer).get(f"{url}logs").status_code == 403
    assert logged_in(Client(), viewer).get(f"{url}logs/download").status_code == 403
    assert logged_in(Client(), viewer).get(f"{url}logs/follow").status_code == 403


def test_the_panel_shows_searches_follows_and_downloads_the_lines(client, operator, printing):
    workload = printing('echo "hello there"; echo "ERROR: disk full"; '
                        'i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 0.2; done')
    client = logged_in(client, operator)
    url = f"/workloads/{workload.pk}/logs"

    first = wait_for(lambda: {"html": htmx_get(client, url).content.decode()},
                     lambda a: "tick 3" in a["html"])["html"]
    assert line_texts(first)[:2] == ["hello there", "ERROR: disk full"]
    assert 'id="log-poller"' not in first  # no follow asked

    assert line_texts(htmx_get(client, url, {"search": "error"}).content.decode()) == [
        "ERROR: disk full"]
    previous = htmx_get(client, url, {"previous": "on", "follow": "on"}).content.decode()
    assert line_texts(previous) == [] and "A redeploy removes the old containers" in previous
    assert 'id="log-poller"' not in previous  # the previous run does not grow

    followed = htmx_get(client, url, {"follow": "on", "search": "tick"}).content.decode()
    poll = re.search(r'id="log-poller" hidden hx-get="([^"]+)"', followed).group(1)
    poll = poll.replace("&amp;", "&")
    assert "after=" in poll and "search=tick" in poll
    last_tick = int(line_texts(followed)[-1].split()[1])

    appended = wait_for(lambda: {"html": htmx_get(client, poll).content.decode()},
                        lambda a: line_texts(a["html"]))["html"]
    assert 'hx-swap-oob="beforeend:#log-lines"' in appended
    ticks = [int(text.split()[1]) for text in line_texts(appended)]
    assert ticks[0] == last_tick + 1
    newer = re.search(r'id="log-poller" hidden hx-get="([^"]+)"', appended).group(1)
    assert newer != poll  # the next poll asks after the newest line

    download = client.get(f"{url}/download", {"search": "disk"})
    assert download["Content-Disposition"] == (
        f'attachment; filename="workload-{workload.pk}-logs.txt"')
    assert download.content.decode().endswith(" [1] ERROR: disk full\n")


def test_bad_choices_say_why_and_read_nothing(client, operator, workload):
    client = logged_in(client, operator)
    url = f"/workloads/{workload.pk}/logs"
    shown = htmx_get(client, url, {"since": "whenever"}).content.decode()
    assert 'role="alert"' in shown and "30s, 15m, 2h, 7d" in shown
    assert "replica 4" in htmx_get(client, url, {"replica": 4}).content.decode()
    assert client.get(f"{url}/follow", {"tail": 7}).status_code == 400
    assert client.get(f"{url}/download", {"since": "whenever"}).status_code == 400


@pytest.mark.parametrize("suffix", ["logs/follow", "logs/download"])
def test_a_refused_choice_is_answered_as_plain_text_never_as_html(client, operator, workload,
                                                                  suffix):
    script = "<script>alert(document.cookie)</script>"
    logged_in(client, operator)

    response = client.get(f"/workloads/{workload.pk}/{suffix}", {"tail": script})

    assert response.status_code == 400
    assert response["Content-Type"] == "text/plain; charset=utf-8"  # the echo is inert


def test_a_since_beyond_ten_years_says_why(client, operator, workload):
    client = logged_in(client, operator)
    shown = htmx_get(client, f"/workloads/{workload.pk}/logs", {"since": "999999d"})
    assert shown.status_code == 200
    assert "at most ten years" in shown.content.decode()
