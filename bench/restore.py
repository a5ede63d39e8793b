"""Restore: the workload's downtime must not grow with its data, and extraction keeps pace.

For a workload whose one volume holds 1 MiB, then 1 GiB, each round restores
the same snapshot onto the deployed workload (the httpd test image from the
local registry) with `restores.restore()` and measures:

- the downtime window: from the moment the old container stopped running
  (Docker's `die` event for it) to the moment the new one runs (the `start`
  event of the container the restore's redeploy created), read from
  `docker events` for this bench's containers — outside Berth's own clock;
- the total restore time (pre-flight, SHA-256, extraction, swap, redeploy,
  archiving the previous data as a pre-restore snapshot and removing it).

It prints the ratio of the 1 GiB window to the 1 MiB window (target: at most
1.5). Then extraction throughput: the safe extractor (`archive.extract`, every
check on, as the restore calls it but without the final `syncfs`) against
`zstd -d -c ARCHIVE | tar -xf -` on the same 1 GiB archive, interleaved,
median of the rounds (target: at least 0.7).

Stand-alone: a temporary BERTH_DATA_DIR with a fresh SQLite database, its own
instance id; every container it made is removed and every file deleted at the
end, also on failure or Ctrl-C. Needs the Docker engine and the local
registry (`make services`).

    .venv/bin/python bench/restore.py [--rounds 3] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

from _common import MIB, half_compressible, prepare_environment, remove_labelled, setup_django

IMAGE = "127.0.0.1:5000/berth-test/httpd:v1"
SIZES = {"1 MiB": MIB, "1 GiB": 1 << 30}
SMALL = 64 << 10


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds (default 3)")
    parser.add_argument("--dir", default=None,
                        help="where the temporary data and archives go (default: $TMPDIR)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def fill(root: Path, total: int) -> None:
    """A quarter of `total` in 64 KiB files (in directories of 256), the rest in one file."""
    rnd = random.Random(total)
    root.mkdir(parents=True, exist_ok=True)
    small = total // 4 // SMALL if total >= 64 * MIB else total // SMALL
    for i in range(small):
        directory = root / f"d{i // 256:03d}"
        directory.mkdir(exist_ok=True)
        (directory / f"f{i:05d}.dat").write_bytes(half_compressible(rnd, SMALL))
    rest = total - small * SMALL
    if rest:
        with open(root / "big.bin", "wb") as fh:
            for _ in range(rest // MIB):
                fh.write(half_compressible(rnd, MIB))
            fh.write(half_compressible(rnd, rest % MIB))


def prepare_django(data_dir: Path) -> str:
    """A fresh Berth (settings read once, at import) on a SQLite file in `data_dir`."""
    instance = prepare_environment(data_dir)
    setup_django()
    return instance


def deployed_workload(label: str, size: int):
    from engine import deploys
    from workloads.models import Project, Stage, VolumeMount, Workload

    slug = label.replace(" ", "").lower()
    project, _ = Project.objects.get_or_create(name="Bench", slug="bench")
    stage, _ = Stage.objects.get_or_create(project=project, name="Bench", slug="bench")
    workload = Workload.objects.create(stage=stage, name=f"Bench {label}", slug=slug,
                                       image=IMAGE)
    volume = VolumeMount.objects.create(workload=workload, source=slug, target="/data")
    fill(Path(volume.host_path()), size)
    record = deploys.dispatch(workload=workload, reason="manual")
    if record.outcome != "succeeded":
        raise SystemExit(f"the deploy failed: {record.failure_message}")
    workload.refresh_from_db()
    return workload


class Events:
    """`docker events` for this bench's containers, read after the fact."""

    def __init__(self, instance: str) -> None:
        self.process = subprocess.Popen(
            ["docker", "events", "--format", "{{json .}}", "--filter", "type=container",
             "--filter", f"label=berth.instance={instance}"],
            stdout=subprocess.PIPE, text=True,
        )
        time.sleep(0.3)  # let it subscribe before anything happens

    def stop(self) -> list[dict]:
        time.sleep(0.3)  # the last events reach the CLI
        self.process.terminate()
        out, _ = self.process.communicate(timeout=10)
        return [json.loads(line) for line in out.splitlines() if line.strip()]


def downtime(events: list[dict], old_id: str, new_id: str) -> float:
    died = [e["timeNano"] for e in events if e.get("id") == old_id and e["status"] == "die"]
    started = [e["timeNano"] for e in events if e.get("id") == new_id and e["status"] == "start"]
    if not died or not started:
        raise SystemExit(f"missing events: die of {old_id[:12]} {died}, start of "
                         f"{new_id[:12]} {started}")
    return (started[-1] - died[-1]) / 1e9


def one_restore(workload, snapshot, instance: str) -> tuple[float, float]:
    from engine import restores
    from lib import runtime
    from snapshots.models import Snapshot

    [old] = runtime.list_containers(workload.pk)
    events = Events(instance)
    start = time.perf_counter()
    job = restores.restore(workload=workload, snapshot=snapshot)
    total = time.perf_counter() - start
    seen = events.stop()
    job.refresh_from_db()
    if job.outcome != "succeeded":
        raise SystemExit(f"restore #{job.pk} ended {job.outcome}: {job.reason_text}")
    [new] = runtime.list_containers(workload.pk)
    window = downtime(seen, old.id, new.id)
    Snapshot.objects.filter(pk=job.pre_restore_snapshot_id).delete()  # keep the disk free
    return window, total


def berth_extract(snapshot, target: Path) -> None:
    from snapshots import archive, storage

    target.mkdir()
    with open(storage.archive_path(snapshot.workload_id, snapshot.archive), "rb") as source:
        archive.extract(source, [str(target / "0")], durable=False)


def tar_extract(snapshot, target: Path) -> None:
    from snapshots import storage

    target.mkdir()
    path = storage.archive_path(snapshot.workload_id, snapshot.archive)
    producer = subprocess.Popen(["zstd", "-q", "-d", "-c", str(path)], stdout=subprocess.PIPE)
    try:
        subprocess.run(["tar", "-C", str(target), "-xf", "-"], stdin=producer.stdout, check=True)
    finally:
        producer.stdout.close()
        if producer.wait() != 0:
            raise SystemExit("zstd -d failed")


def timed(step, *args) -> float:
    os.sync()
    start = time.perf_counter()
    step(*args)
    return time.perf_counter() - start


def run(args: argparse.Namespace, base: Path) -> None:
    data_dir, out = base / "berth", base / "out"
    data_dir.mkdir()
    out.mkdir()
    instance = prepare_django(data_dir)
    from engine import captures

    try:
        windows: dict[str, list[float]] = {}
        totals: dict[str, list[float]] = {}
        snapshots = {}
        for label, size in SIZES.items():
            workload = deployed_workload(label, size)
            snapshot = captures.capture_snapshot(workload=workload)
            if not snapshot.is_ready:
                raise SystemExit(f"capture failed: {snapshot.failure_text}")
            snapshots[label] = snapshot
            one_restore(workload, snapshot, instance)  # warm-up, untimed
            for n in range(args.rounds):
                window, total = one_restore(workload, snapshot, instance)
                windows.setdefault(label, []).append(window)
                totals.setdefault(label, []).append(total)
                print(f"  {label}: round {n + 1}: downtime {window:.3f} s, "
                      f"restore {total:.2f} s")
        extract_rounds(args, snapshots["1 GiB"], out)
        small, large = (statistics.median(windows[k]) for k in SIZES)
        for label in SIZES:
            print(f"{label}: downtime median {statistics.median(windows[label]):.3f} s, "
                  f"restore median {statistics.median(totals[label]):.2f} s")
        print(f"restore_bench: downtime ratio 1 GiB / 1 MiB {large / small:.2f} "
              f"(target ≤ 1.5; median of {args.rounds} rounds)")
    finally:
        remove_labelled(f"berth.instance={instance}")


def extract_rounds(args: argparse.Namespace, snapshot, out: Path) -> None:
    ratios, ours, theirs = [], [], []
    for n in range(args.rounds):
        berth = timed(berth_extract, snapshot, out / f"berth-{n}")
        tar = timed(tar_extract, snapshot, out / f"tar-{n}")
        ratios.append(tar / berth)
        ours.append(berth)
        theirs.append(tar)
        shutil.rmtree(out / f"berth-{n}")
        shutil.rmtree(out / f"tar-{n}")
    data = snapshot.data_bytes / MIB
    print(f"extract 1 GiB: berth {data / statistics.median(ours):.0f} MiB/s, zstd -d | tar -x "
          f"{data / statistics.median(theirs):.0f} MiB/s")
    print(f"restore_bench: extraction ratio {statistics.median(ratios):.2f} (target ≥ 0.7; "
          f"median of {args.rounds} rounds)")


def main() -> None:
    args = parse_args()
    for tool in ("tar", "zstd", "docker"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench/restore.py needs {tool} on PATH")
    base = Path(tempfile.mkdtemp(prefix="berth-bench-restore-", dir=args.dir))
    started = datetime.now()
    try:
        run(args, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"(took {(datetime.now() - started).total_seconds():.0f} s)")


if __name__ == "__main__":
    main()
