"""Metrics: one sampler tick against `docker stats --no-stream`, and the history API's latency.

Part 1, per round: `Sampler.tick()` over N running containers (default 20:
parallel one-shot stats, CPU and memory computed, one bulk insert) against
`docker stats --no-stream <the same N ids>`, interleaved. Prints the median
time ratio tick / docker stats (target: at most 0.6), the tick as a fraction of
the 15 s interval, the sampler's CPU time per tick (every thread of the
process) as a share of one core over the interval (target: under 5 %) and the
process's resident memory.

Part 2: `GET /api/workloads/{id}/stats/history` on PostgreSQL, authenticated by
token as a script would be, for two workloads: `window=24h` over 100 containers
sampled every 15 s (576,000 samples) and `window=7d` over 20 containers
(806,400 samples). Prints the median latency of each (target: under 50 ms) and
the query count.

Stand-alone: a temporary BERTH_DATA_DIR, and a PostgreSQL database of its own
(default postgres://postgres@127.0.0.1:5432/berth_bench_metrics), created fresh
and dropped at the end, like every container the run started.

    .venv/bin/python bench/metrics.py [--containers 20] [--rounds 7] [--requests 30]
    .venv/bin/python bench/metrics.py --containers 200   # issue #17's size
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

from _common import BenchError, docker, prepare_environment, remove_labelled

IMAGE = "127.0.0.1:5000/berth-test/busybox:latest"
DATABASE_URL = "postgres://postgres@127.0.0.1:5432/berth_bench_metrics"
INTERVAL = 15
# (window, containers): 24 h of 100 containers is 576,000 samples, 7 d of 20 is 806,400.
HISTORIES = (("24h", 100), ("7d", 20))
STARTERS = 8  # `docker run`s in flight while the containers start


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--containers", type=int, default=20, help="containers to sample (20)")
    parser.add_argument("--rounds", type=int, default=7, help="tick/docker stats rounds (7)")
    parser.add_argument("--requests", type=int, default=30, help="timed history requests (30)")
    parser.add_argument("--workers", type=int,
                        help="the sampler's stats workers (default: BERTH_STATS_WORKERS' default)")
    parser.add_argument("--only", choices=("tick", "history"),
                        help="run one part only (default: both)")
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

def start_containers(workload, count: int) -> list[str]:
    """`count` sleeping busybox containers with Berth's labels, STARTERS `docker run`s at a time.

    They carry this run's instance label, so main()'s `finally` removes every
    one of them, also those a Ctrl-C left starting.
    """
    from lib import runtime

    # Berth's labels and a name of the form it gives: runtime.made_by_berth takes them on.
    labels = ["--label", runtime.instance_label(),
              "--label", f"{runtime.WORKLOAD_LABEL}={workload.pk}",
              "--label", f"{runtime.REPLICA_LABEL}=1"]

    def run(n: int) -> str:
        return docker("run", "-d", *labels, "--name", f"berth-bench-{workload.pk}-{n}-1",
                      IMAGE, "sleep", "3600")

    pool = ThreadPoolExecutor(STARTERS, "bench-start")
    try:
        return list(pool.map(run, range(count)))
    finally:
        # On Ctrl-C, start no more: the ones in flight finish and are removed with the rest.
        pool.shutdown(wait=True, cancel_futures=True)


def remove_containers(instance: str) -> int:
    """Remove the run's containers STARTERS at a time, then any left; returns how many.

    Not all in one `docker rm -f`: 200 containers leaving the default bridge
    at once wedged Docker 20.10.24 here (libnetwork's lock-order deadlock
    between getSvcRecords and processEndpointDelete, moby/moby#42545, fixed
    after that release): every later call on a container hung until dockerd
    was restarted. Fewer at a time makes that race rarer.
    """
    label = f"berth.instance={instance}"
    ids = docker("ps", "-aq", "--filter", f"label={label}", check=False).split()
    for start in range(0, len(ids), STARTERS):
        docker("rm", "-f", *ids[start:start + STARTERS], check=False)
    return len(ids) + remove_labelled(label)


def resident_mib() -> tuple[float, float]:
    """This process's resident memory now and at its peak (VmRSS, VmHWM), in MiB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in {"VmRSS", "VmHWM"}:
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def cpu_seconds() -> float:
    """User + system CPU time of every thread of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench_tick(args: argparse.Namespace) -> float:
    from engine.sampler import Sampler

    if shutil.which("docker") is None:
        raise BenchError("no docker CLI on PATH (run `make services` as root)")
    docker("version", "--format", "{{.Server.Version}}")
    workload = make_workload("Tick")
    started = time.perf_counter()
    ids = start_containers(workload, args.containers)
    print(f"metrics: tick — started {len(ids)} containers in "
          f"{time.perf_counter() - started:.1f} s")
    sampler = Sampler(workers=args.workers)
    indexed = sampler.reconcile().indexed
    if sorted(indexed) != sorted(ids):
        raise BenchError(f"reconcile indexed {len(indexed)} of {len(ids)} containers")
    rss_before, _ = resident_mib()
    primed = sampler.tick()  # untimed: the first reading of each container only primes it
    docker("stats", "--no-stream", *ids)  # untimed warm-up of the CLI
    if primed.primed != len(ids):
        raise BenchError(f"the warm-up tick read {primed.primed} of {len(ids)} containers")
    print(f"metrics: tick — {len(ids)} running containers, {sampler.workers} stats workers, "
          f"engine API {'with' if _one_shot() else 'WITHOUT'} one-shot stats, "
          f"interval {sampler.interval} s")

    ratios, ticks, baselines, cpus = [], [], [], []
    for n in range(1, args.rounds + 1):
        cpu_started, started = cpu_seconds(), time.perf_counter()
        result = sampler.tick()
        tick = time.perf_counter() - started
        cpu = cpu_seconds() - cpu_started
        if result.written != len(ids):
            raise BenchError(f"round {n}: the tick wrote {result.written} of {len(ids)} samples")
        started = time.perf_counter()
        docker("stats", "--no-stream", *ids)
        baseline = time.perf_counter() - started
        ticks.append(tick)
        baselines.append(baseline)
        ratios.append(tick / baseline)
        cpus.append(cpu)
        print(f"round {n}: tick {tick:.3f} s (CPU {cpu:.3f} s), docker stats --no-stream "
              f"{baseline:.3f} s, ratio {tick / baseline:.2f}")
    ratio = statistics.median(ratios)
    tick, cpu = statistics.median(ticks), statistics.median(cpus)
    rss, peak = resident_mib()
    print(f"metrics: tick median {tick:.3f} s, docker stats median "
          f"{statistics.median(baselines):.3f} s, ratio {ratio:.2f} (target ≤ 0.60, "
          f"{args.rounds} rounds, {len(ids)} containers)")
    print(f"metrics: tick = {tick / sampler.interval:.1%} of the {sampler.interval} s interval; "
          f"sampler CPU {cpu * 1000:.0f} ms per tick = {cpu / sampler.interval:.2%} of one core "
          f"(target < 5 %); resident memory {rss:.0f} MiB (peak {peak:.0f} MiB, "
          f"{rss - rss_before:+.0f} MiB since before the first tick)")
    return ratio


def _one_shot() -> bool:
    from docker.utils import version_gte

    from lib import runtime

    return version_gte(runtime._client(runtime.STATS).api.api_version, runtime.ONE_SHOT_API)


# --- part 2: the history API on PostgreSQL -------------------------------------------------

def write_history(workload, *, containers: int, seconds: int, now: datetime) -> int:
    """`containers` containers sampled every INTERVAL s for `seconds`, written with COPY.

    COPY, not bulk_create: 800,000 rows in seconds rather than minutes.
    """
    from django.db import connection

    from workloads.models import Container, ContainerStatsSample

    last = int(now.timestamp()) // INTERVAL * INTERVAL
    count = seconds // INTERVAL
    table = ContainerStatsSample._meta.db_table
    columns = "container_id, timestamp, cpu_percent, memory_bytes, memory_limit"
    for replica in range(1, containers + 1):
        container = Container.objects.create(
            workload=workload, docker_id=secrets.token_hex(32), name=f"history-{replica}",
            replica=replica, image_reference=IMAGE, created=now - timedelta(days=8),
        )
        with connection.cursor() as cursor, cursor.copy(
            f"COPY {table} ({columns}) FROM STDIN"  # noqa: S608 - no input in it
        ) as copy:
            for k in range(count):
                copy.write_row((
                    container.pk, datetime.fromtimestamp(last - INTERVAL * k, UTC),
                    (replica * 7 + k) % 100 / 1.0, (64 + (k % 50)) * 1024 * 1024,
                    512 * 1024 * 1024,
                ))
    return containers * count


def bench_history(args: argparse.Namespace) -> list[float]:
    from django.contrib.auth.models import Group, User
    from django.db import connection
    from django.utils import timezone
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from engine.sampler import Sampler
    from workloads.metrics_history import WINDOWS
    from workloads.models import DeployRecord, StatsRollup

    now = timezone.now()
    workloads = []
    for window, containers in HISTORIES:
        workload = make_workload(f"History {window}")
        started = time.perf_counter()
        total = write_history(workload, containers=containers, seconds=WINDOWS[window], now=now)
        for minutes in (30, 300, 900):
            record = DeployRecord.open(workload=workload, reason=DeployRecord.Reason.MANUAL)
            DeployRecord.objects.filter(pk=record.pk).update(
                outcome=DeployRecord.Outcome.SUCCEEDED, finished=now - timedelta(minutes=minutes)
            )
        print(f"metrics: history {window} — {total:,} samples ({containers} containers × "
              f"{total // containers:,} ticks at {INTERVAL} s) written in "
              f"{time.perf_counter() - started:.1f} s")
        workloads.append((window, containers, workload))
    # What the sampler keeps up minute by minute, all at once: once every sample is written
    # (it resumes after the newest minute rolled up, whatever the workload).
    started = time.perf_counter()
    minutes, hours = Sampler().roll_up(now)
    print(f"metrics: history — rolled up into {minutes:,} minute and {hours:,} hour rows in "
          f"{time.perf_counter() - started:.1f} s")
    if not minutes or StatsRollup.objects.count() != minutes + hours:
        raise BenchError("the rollups were not written")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # what autovacuum would have done on a live installation
    print(f"metrics: history on PostgreSQL {connection.pg_version // 10000}")

    viewer = User.objects.create_user(username="bench-viewer", password=None)
    viewer.groups.add(Group.objects.get(name="viewers"))
    client = APIClient(SERVER_NAME="localhost")
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=viewer).key}")
    return [time_history(args, client, workload, window, containers)
            for window, containers, workload in workloads]


def time_history(args, client, workload, window: str, containers: int) -> float:
    """The median latency of the history API for one window, after three untimed requests."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from workloads.metrics_history import WINDOWS, history, step_for

    url = f"/api/workloads/{workload.pk}/stats/history?window={window}"

    def get() -> tuple[float, float, dict, int]:
        with CaptureQueriesContext(connection) as queries:
            t, cpu = time.perf_counter(), time.process_time()
            response = client.get(url)
            elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
        if response.status_code != 200:
            raise BenchError(f"GET {url} answered {response.status_code}: {response.content!r}")
        return elapsed, cpu, response.json(), len(queries.captured_queries)

    for _ in range(3):
        get()  # warm-up: connection, plan cache
    times, cpus, counts = [], [], set()
    for _ in range(args.requests):
        elapsed, cpu, body, queries = get()
        times.append(elapsed)
        cpus.append(cpu)
        counts.add(queries)
    # One bucket fewer when the clock crossed into a bucket the static data never reached.
    expected = WINDOWS[window] // step_for(WINDOWS[window], INTERVAL)
    if not expected - 1 <= len(body["points"]) <= expected + 1 or len(body["markers"]) != 3:
        raise BenchError(f"unexpected answer: {len(body['points'])} points, "
                         f"{len(body['markers'])} markers")
    if {p["containers"] for p in body["points"]} != {containers}:
        raise BenchError(f"a point does not sum all {containers} containers")
    median = statistics.median(times) * 1000
    p90 = sorted(times)[int(0.9 * (len(times) - 1))] * 1000
    alone = _median_ms(lambda: history(workload=workload, window=window), args.requests)
    # On a host other jobs load, the CPU time moves less than the wall-clock time.
    print(f"metrics: history {window} — metrics_history.history() alone median {alone:.1f} ms; "
          f"Berth's CPU time per request median {statistics.median(cpus) * 1000:.1f} ms "
          f"(PostgreSQL's not counted)")
    print(f"metrics: history API {window} × {containers} containers — "
          f"{len(body['points'])} points at {body['step_seconds']} s, median {median:.1f} ms, "
          f"p90 {p90:.1f} ms, min {min(times) * 1000:.1f} ms, "
          f"queries per request {sorted(counts)} (target median < 50 ms; "
          f"{args.requests} requests)")
    return median


def _median_ms(call, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


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
        if args.only != "history":
            bench_tick(args)
        if args.only != "tick":
            bench_history(args)
    except BenchError as exc:
        print(f"metrics: FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        removed = remove_containers(instance)
        print(f"metrics: removed {removed} container(s)")
        if created:
            drop_database(args.database_url)
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
