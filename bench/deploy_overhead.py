"""Deploy overhead: Berth's API deploy against a plain `docker run -d`, in the same run.

Berth, per round: `POST /api/workloads/{id}/deploy` (DRF's APIClient, an
operator), then `GET /api/deploys/{id}` until the deploy is `succeeded` — Berth
only succeeds once the new container is running. Every round is a redeploy: the
previous container is replaced, as operators do.

Baseline, per round: `docker run -d` of the same image by the same reference,
then `docker inspect -f {{.State.Running}}` must say true; the previous
baseline container is removed after the timed window.

By default the deploy runs where it runs in production: a real
`manage.py qcluster` worker on the ORM broker (the embedded default), so the
figure includes the broker hop. `--sync` runs it in-process on django-q2's sync
mode instead (API + dispatch only). See bench/README.md for why.

Stand-alone: a temporary BERTH_DATA_DIR with a fresh SQLite database, removed at
the end together with every container the run created.

    .venv/bin/python bench/deploy_overhead.py [--rounds 7] [--sync]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _common import REPO_ROOT, BenchError, docker, prepare_environment, remove_labelled

IMAGE = "127.0.0.1:5000/berth-test/httpd:v1"
DEPLOY_TIMEOUT = 120.0  # seconds for one deploy before the bench gives up
POLL_SECONDS = 0.01  # GET /api/deploys/{id} interval in worker mode
WORKER_STOP_TIMEOUT = 20.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="measured rounds (default 7)")
    parser.add_argument(
        "--sync",
        action="store_true",
        help="run the deploy in-process (django-q2 sync mode) instead of on a qcluster worker",
    )
    parser.add_argument("--image", default=IMAGE, help=f"image reference (default {IMAGE})")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def check_services(image: str) -> None:
    if shutil.which("docker") is None:
        raise BenchError("no docker CLI on PATH (run `make services` as root)")
    docker("version", "--format", "{{.Server.Version}}")
    registry = image.split("/", 1)[0]
    try:
        urllib.request.urlopen(f"http://{registry}/v2/", timeout=3)  # noqa: S310
    except OSError as exc:
        raise BenchError(f"no registry on {registry} ({exc}); run `make services`") from None
    if not docker("image", "inspect", "--format", "{{.Id}}", image, check=False):
        # The baseline must not pay for a pull Berth's warm-up already did: have it local.
        docker("pull", "-q", image)


# --- the task worker -------------------------------------------------------


class Worker:
    """A real `manage.py qcluster` on the ORM broker, in its own process group."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = self.log_path.open("wb")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "manage.py", "qcluster"],
                cwd=REPO_ROOT,
                env=os.environ.copy(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its worker children share its process group
            )
        finally:
            log.close()

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(f"qcluster exited with {self.proc.returncode}:\n{self.log_tail()}")

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        # SIGTERM to the cluster process alone: django-q2 then stops its sentinel,
        # pusher, workers and monitor in order (signalling the whole group makes the
        # sentinel die first, and the cluster then hangs until its stop timeout).
        proc.terminate()
        try:
            proc.wait(timeout=WORKER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # Reap any stragglers of that same group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no worker log)"


# --- Berth -----------------------------------------------------------------


class BerthDeployer:
    def __init__(self, image: str, worker: Worker | None) -> None:
        from django.contrib.auth.models import Group, User
        from rest_framework.test import APIClient

        from workloads.models import Project, Stage, Workload

        self.worker = worker
        operator = User.objects.create_user(username="bench-operator", password=None)
        operator.groups.add(Group.objects.get(name="operators"))
        project = Project.objects.create(name="Bench", slug=f"bench{secrets.token_hex(4)}")
        stage = Stage.objects.create(project=project, name="Prod", slug="prod")
        self.workload = Workload.objects.create(stage=stage, name="Web", slug="web", image=image)
        # SERVER_NAME: a host in ALLOWED_HOSTS (no test runner adds "testserver" here).
        self.client = APIClient(SERVER_NAME="localhost")
        self.client.force_authenticate(operator)

    def deploy(self) -> tuple[float, dict]:
        """POST the deploy and wait for `succeeded`; returns (seconds, deploy)."""
        started = time.perf_counter()
        response = self.client.post(f"/api/workloads/{self.workload.pk}/deploy")
        if response.status_code != 202:
            raise BenchError(f"POST deploy answered {response.status_code}: {response.content!r}")
        deploy = response.json()
        deadline = started + DEPLOY_TIMEOUT
        while deploy["outcome"] not in {"succeeded", "failed"}:
            if time.perf_counter() > deadline:
                raise BenchError(f"deploy {deploy['id']} still {deploy['outcome']} after "
                                 f"{DEPLOY_TIMEOUT:.0f} s")
            if self.worker is not None:
                self.worker.check_alive()
            time.sleep(POLL_SECONDS)
            response = self.client.get(deploy["url"])
            if response.status_code != 200:
                raise BenchError(f"GET {deploy['url']} answered {response.status_code}")
            deploy = response.json()
        elapsed = time.perf_counter() - started
        if deploy["outcome"] != "succeeded":
            log = f"\nworker log:\n{self.worker.log_tail()}" if self.worker else ""
            raise BenchError(f"deploy {deploy['id']} failed: {deploy['failure_code']} "
                             f"({deploy['failure_message']}){log}")
        return elapsed, deploy

    def check_running(self, deploy: dict) -> None:
        """Outside the timed window: the workload's container is this deploy's, and runs."""
        from lib import runtime

        name = self.workload.container_name(1)
        template = f'{{{{.State.Running}}}} {{{{index .Config.Labels "{runtime.DEPLOY_LABEL}"}}}}'
        out = docker("inspect", "-f", template, name)
        if out != f"true {deploy['id']}":
            raise BenchError(f"{name} after deploy {deploy['id']}: {out!r}")
        live = runtime.list_containers(self.workload.pk)
        if len(live) != 1:
            raise BenchError(f"expected 1 container for the workload, found {len(live)}")


# --- the baseline ----------------------------------------------------------


class DockerRun:
    def __init__(self, image: str, label: str) -> None:
        self.image = image
        self.label = label
        self.prefix = f"berth-bench-baseline-{label.rsplit('=', 1)[1]}"
        self.count = 0
        self.previous: str | None = None

    def run(self) -> tuple[float, float]:
        """`docker run -d`, then check it runs; returns (seconds, seconds to remove the old one)."""
        self.count += 1
        started = time.perf_counter()
        container_id = docker("run", "-d", "--label", self.label,
                              "--name", f"{self.prefix}-{self.count}", self.image)
        running = docker("inspect", "-f", "{{.State.Running}}", container_id)
        elapsed = time.perf_counter() - started
        if running != "true":
            raise BenchError(f"baseline container {container_id[:12]} is not running: {running!r}")
        removed = 0.0
        if self.previous:
            t = time.perf_counter()
            docker("rm", "-f", self.previous)
            removed = time.perf_counter() - t
        self.previous = container_id
        return elapsed, removed


# --- the run ---------------------------------------------------------------


def bench(args: argparse.Namespace, instance: str, data_dir: Path) -> None:
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    call_command("createcachetable", verbosity=0)  # django-q2's monitoring cache

    worker = None
    if args.sync:
        print("deploy_overhead: mode sync — BERTH_TASKS_SYNC=1: the POST runs the deploy "
              "in-process (API + dispatch path, no broker hop, no worker)")
    else:
        worker = Worker(data_dir / "qcluster.log")
        print("deploy_overhead: mode worker — POST queues on the ORM broker, a real "
              "`manage.py qcluster` runs it; the bench polls GET /api/deploys/{id} "
              f"every {POLL_SECONDS * 1000:.0f} ms until succeeded")
    print(f"deploy_overhead: image {args.image}, instance {instance}, {args.rounds} rounds")

    bench_label = f"berth.bench={instance}"
    try:
        if worker is not None:
            worker.start()
        berth = BerthDeployer(args.image, worker)
        baseline = DockerRun(args.image, bench_label)

        # Warm-up, untimed: the first deploy creates the container (and, in worker
        # mode, waits for the worker to come up); the first docker run warms the CLI.
        _, deploy = berth.deploy()
        berth.check_running(deploy)
        baseline.run()

        berth_times: list[float] = []
        docker_times: list[float] = []
        ratios: list[float] = []
        for n in range(1, args.rounds + 1):
            # Interleaved, so drift on the host weighs on both sides alike.
            b, deploy = berth.deploy()
            berth.check_running(deploy)
            d, removed = baseline.run()
            berth_times.append(b)
            docker_times.append(d)
            ratios.append(b / d)
            print(f"round {n}: berth redeploy {b:.3f} s (deploy {deploy['id']}), "
                  f"docker run -d {d:.3f} s (previous removed in {removed:.3f} s, untimed), "
                  f"ratio {b / d:.2f}")
    finally:
        if worker is not None:
            worker.stop()
        removed = remove_labelled(f"berth.instance={instance}") + remove_labelled(bench_label)
        print(f"deploy_overhead: removed {removed} container(s)")

    print(f"deploy_overhead: berth median {statistics.median(berth_times):.3f} s, "
          f"docker run median {statistics.median(docker_times):.3f} s, "
          f"ratio {statistics.median(ratios):.2f} ({args.rounds} rounds)")


def main() -> int:
    args = parse_args()
    # A plain `kill` must still clean up: turn SIGTERM into SystemExit so finally runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    data_dir = Path(tempfile.mkdtemp(prefix="berth-bench-"))
    try:
        instance = prepare_environment(data_dir, sync=args.sync)
        check_services(args.image)
        bench(args, instance, data_dir)
    except BenchError as exc:
        print(f"deploy_overhead: FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
