"""Metrics: one sampler tick against `docker stats --no-stream`, and the history API's latency.

Part 1, per round: `Sampler.tick()` over N running containers (default 20:
parallel one-shot stats, CPU and memory computed, one bulk insert) against
`docker stats --no-stream <the same N ids>`, interleaved. Prints the median
time ratio tick / docker stats (target: at most 0.6).

Part 2: `GET /api/workloads/{id}/stats/history?window=24h` for a workload of 10
containers sampled every 15 s for 24 hours (57,600 samples) on PostgreSQL,
authenticated by token as a script would be. Prints the median latency (target:
under 50 ms) and the query count.

Stand-alone: a temporary BERTH_DATA_DIR, and a PostgreSQL database of its own
(default postgres://postgres@127.0.0.1:5432/berth_bench_metrics), created fresh
and dropped at the end, like every container the run started.

    .venv/bin/python bench/metrics.py [--containers 20] [--rounds 7] [--requests 30]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

from _common import BenchError, docker, prepare_environment, remove_labelled

IMAGE = "127.0.0.1:5000/berth-test/busybox:latest"
DATABASE_URL = "postgres://postgres@127.0.0.1:5432/berth_bench_metrics"
HISTORY_CONTAINERS = 10
HISTORY_TICKS = 24 * 3600 // 15  # 5,760 ticks: 57,600 samples for 10 containers


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--containers", type=int, default=20, help="containers to sample (20)")
    parser.add_argument("--rounds", type=int, default=7, help="tick/docker stats rounds (7)")
    parser.add_argument("--requests", type=int, default=30, help="timed history requests (30)")
    parser.add_argument("--database-url", default=DATABASE_URL,
                        help=f"a PostgreSQL database of the bench's own (default {DATABASE_URL}); "
                             "it is dropped and created anew, and dropped at the end")
    args = parser.parse_args()
    if min(args.containers, args.rounds, args.requests) < 1:
        parser.error("--containers, --rounds and --requests must be at least 1")
    if urlparse(args.database_url).scheme not in {"postgres", "postgresql"}:
        parser.error("--database-url must be a postgres:// URL")
    return args


# --- the database and the environment ------------------------------------------------

def _maintenance(url: str):
    import psycopg

    parsed = urlparse(url)
    return psycopg.connect(
        host=parsed.hostname or "localhost", port=parsed.port or 5432,
        user=parsed.username or "postgres", password=parsed.password or None,
        dbname="postgres", autocommit=True,
    )


def recreate_database(url: str) -> None:
    from psycopg import sql

    name = urlparse(url).path.lstrip("/")
    try:
        with _maintenance(url) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except Exception as exc:  # noqa: BLE001 - any connection failure ends the bench with a reason
        raise BenchError(f"cannot (re)create the database {name}: {exc}") from None


def drop_database(url: str) -> None:
    from django.db import connections
    from psycopg import sql

    connections.close_all()
    name = urlparse(url).path.lstrip("/")
    with _maintenance(url) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def prepare_berth(data_dir: Path, database_url: str) -> str:
    """The shared stand-alone set-up, with the stats sampler's defaults (a 15 s interval)."""
    for name in [n for n in os.environ if n.startswith("BERTH_STATS_")]:
        del os.environ[name]
    return prepare_environment(data_dir, database_url=database_url)


def make_workload(name: str):
    from workloads.models import Project, Stage, Workload

    project = Project.objects.create(name=name, slug=f"bench{secrets.token_hex(4)}")
    stage = Stage.objects.create(project=project, name="Prod", slug="prod")
    return Workload.objects.create(stage=stage, name=name, slug="web", image=IMAGE)


# --- part 1: a tick against docker stats ---------------------------------------------------

def bench_tick(args: argparse.Namespace) -> float:
    from engine.sampler import Sampler
    from lib import runtime

    if shutil.which("docker") is None:
        raise BenchError("no docker CLI on PATH (run `make services` as root)")
    docker("version", "--format", "{{.Server.Version}}")
    workload = make_workload("Tick")
    # Berth's labels and a name of the form it gives: runtime.made_by_berth takes them on.
    labels = ["--label", runtime.instance_label(),
              "--label", f"{runtime.WORKLOAD_LABEL}={workload.pk}",
              "--label", f"{runtime.REPLICA_LABEL}=1"]
    ids = [docker("run", "-d", *labels, "--name", f"berth-bench-{workload.pk}-{n}-1", IMAGE,
                  "sleep", "3600") for n in range(args.containers)]
    sampler = Sampler()
    indexed = sampler.reconcile().indexed
    if sorted(indexed) != sorted(ids):
        raise BenchError(f"reconcile indexed {len(indexed)} of {len(ids)} containers")
    primed = sampler.tick()  # untimed: the first reading of each container only primes it
    docker("stats", "--no-stream", *ids)  # untimed warm-up of the CLI
    if primed.primed != len(ids):
        raise BenchError(f"the warm-up tick read {primed.primed} of {len(ids)} containers")
    print(f"metrics: tick — {len(ids)} running containers, {sampler.workers} stats workers, "
          f"engine API {'with' if _one_shot() else 'WITHOUT'} one-shot stats")

    ratios, ticks, baselines = [], [], []
    for n in range(1, args.rounds + 1):
        started = time.perf_counter()
        result = sampler.tick()
        tick = time.perf_counter() - started
        if result.written != len(ids):
            raise BenchError(f"round {n}: the tick wrote {result.written} of {len(ids)} samples")
        started = time.perf_counter()
        docker("stats", "--no-stream", *ids)
        baseline = time.perf_counter() - started
        ticks.append(tick)
        baselines.append(baseline)
        ratios.append(tick / baseline)
        print(f"round {n}: tick {tick:.3f} s, docker stats --no-stream {baseline:.3f} s, "
              f"ratio {tick / baseline:.2f}")
    ratio = statistics.median(ratios)
    print(f"metrics: tick median {statistics.median(ticks):.3f} s, docker stats median "
          f"{statistics.median(baselines):.3f} s, ratio {ratio:.2f} (target ≤ 0.60, "
          f"{args.rounds} rounds)")
    return ratio


def _one_shot() -> bool:
    from docker.utils import version_gte

    from lib import runtime

    return version_gte(runtime._client(runtime.STATS).api.api_version, runtime.ONE_SHOT_API)


# --- part 2: the history API on PostgreSQL -------------------------------------------------

def bench_history(args: argparse.Namespace) -> float:
    from django.contrib.auth.models import Group, User
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from workloads.metrics_history import step_for
    from workloads.models import Container, ContainerStatsSample, DeployRecord

    workload = make_workload("History")
    now = timezone.now()
    last = int(now.timestamp()) // 15 * 15
    started = time.perf_counter()
    for replica in range(1, HISTORY_CONTAINERS + 1):
        container = Container.objects.create(
            workload=workload, docker_id=secrets.token_hex(32), name=f"history-{replica}",
            replica=replica, image_reference=IMAGE, created=now - timedelta(days=2),
        )
        ContainerStatsSample.objects.bulk_create(
            (
                ContainerStatsSample(
                    container=container,
                    timestamp=datetime.fromtimestamp(last - 15 * k, UTC),
                    cpu_percent=(replica * 7 + k) % 100 / 1.0,
                    memory_bytes=(64 + (k % 50)) * 1024 * 1024,
                    memory_limit=512 * 1024 * 1024,
                )
                for k in range(HISTORY_TICKS)
            ),
            batch_size=5000,
        )
    for minutes in (30, 300, 900):
        record = DeployRecord.open(workload=workload, reason=DeployRecord.Reason.MANUAL)
        DeployRecord.objects.filter(pk=record.pk).update(
            outcome=DeployRecord.Outcome.SUCCEEDED, finished=now - timedelta(minutes=minutes)
        )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # what autovacuum would have done on a live installation
    total = ContainerStatsSample.objects.filter(container__workload=workload).count()
    print(f"metrics: history — {total} samples ({HISTORY_CONTAINERS} containers × "
          f"{HISTORY_TICKS} ticks at 15 s) written in {time.perf_counter() - started:.1f} s "
          f"on PostgreSQL {connection.pg_version // 10000}")

    viewer = User.objects.create_user(username="bench-viewer", password=None)
    viewer.groups.add(Group.objects.get(name="viewers"))
    client = APIClient(SERVER_NAME="localhost")
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=viewer).key}")
    url = f"/api/workloads/{workload.pk}/stats/history?window=24h"

    def get() -> tuple[float, dict, int]:
        with CaptureQueriesContext(connection) as queries:
            t = time.perf_counter()
            response = client.get(url)
            elapsed = time.perf_counter() - t
        if response.status_code != 200:
            raise BenchError(f"GET {url} answered {response.status_code}: {response.content!r}")
        return elapsed, response.json(), len(queries.captured_queries)

    for _ in range(3):
        get()  # warm-up: connection, plan cache
    times, counts = [], set()
    for _ in range(args.requests):
        elapsed, body, queries = get()
        times.append(elapsed)
        counts.add(queries)
    # 720 buckets; one fewer when the clock crossed into a bucket the static data never reached.
    expected = 24 * 3600 // step_for(24 * 3600, 15)
    if not expected - 1 <= len(body["points"]) <= expected + 1 or len(body["markers"]) != 3:
        raise BenchError(f"unexpected answer: {len(body['points'])} points, "
                         f"{len(body['markers'])} markers")
    if {p["containers"] for p in body["points"]} != {HISTORY_CONTAINERS}:
        raise BenchError("a point does not sum all ten containers")
    median = statistics.median(times) * 1000
    p90 = sorted(times)[int(0.9 * (len(times) - 1))] * 1000
    print(f"metrics: history API 24h — {len(body['points'])} points at "
          f"{body['step_seconds']} s, median {median:.1f} ms, p90 {p90:.1f} ms, "
          f"min {min(times) * 1000:.1f} ms, "
          f"queries per request {sorted(counts)} (target median < 50 ms; "
          f"{args.requests} requests)")
    return median


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    data_dir = Path(tempfile.mkdtemp(prefix="berth-bench-"))
    instance = prepare_berth(data_dir, args.database_url)
    created = False
    try:
        recreate_database(args.database_url)
        created = True
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0, interactive=False)
        bench_tick(args)
        bench_history(args)
    except BenchError as exc:
        print(f"metrics: FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        removed = remove_labelled(f"berth.instance={instance}")
        print(f"metrics: removed {removed} container(s)")
        if created:
            drop_database(args.database_url)
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
