"""Snapshot throughput: Berth's capture and extractor against tar + zstd, in the same run.

Data set: 1 GiB in one volume — one 512 MiB file plus 20,000 small files
(about 26 KiB each, in 100 directories) — of half-compressible bytes, written
once to a temporary directory on the disk the archives go to.

Capture, per round:
- Berth: `capture_snapshot()` of a workload whose one volume is the data set
  (scan, manifest, tar + zstd level 3 on all cores, SHA-256, fsync, rename,
  directory fsync, the database row);
- baseline: `tar -cf - . | zstd -q -T0 -3 -o FILE` on the same data.

Extraction, per round:
- Berth: `extract_tree()` of that snapshot — the safe extractor, every check on;
- baseline: `zstd -d -c FILE | tar -xf -` of the baseline's archive.

Rounds are interleaved (Berth, baseline, Berth, baseline…) so load on the host
weighs on both alike; `sync` runs (untimed) before each timed step so one
step's writeback is not charged to the next. The printed ratios are
throughput(Berth) / throughput(baseline), the median over the rounds; the
target is at least 0.7 in both directions.

Stand-alone: a temporary BERTH_DATA_DIR with a fresh SQLite database beside
the data set, all removed at the end (also on failure or Ctrl-C).

    .venv/bin/python bench/capture.py [--rounds 3] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from _common import MIB, half_compressible, prepare_environment, setup_django

BIG_FILE = 512 * MIB
SMALL_FILES = 20_000
SMALL_DIRS = 100
TOTAL = 1 << 30


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds (default 3)")
    parser.add_argument("--dir", default=None,
                        help="where the temporary data set and archives go (default: $TMPDIR)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def make_data_set(root: Path) -> None:
    rnd = random.Random(20261126)
    root.mkdir()
    with open(root / "big.bin", "wb") as fh:
        for _ in range(BIG_FILE // MIB):
            fh.write(half_compressible(rnd, MIB))
    small = (TOTAL - BIG_FILE) // SMALL_FILES
    per_dir = SMALL_FILES // SMALL_DIRS
    for d in range(SMALL_DIRS):
        directory = root / f"d{d:03d}"
        directory.mkdir()
        for i in range(per_dir):
            (directory / f"f{i:04d}.dat").write_bytes(half_compressible(rnd, small))


def prepare_django(data_dir: Path) -> None:
    """A fresh Berth (settings read once, at import) on a SQLite file in `data_dir`."""
    prepare_environment(data_dir)
    setup_django()


def make_workload(data_set: Path):
    from workloads.models import Project, Stage, VolumeMount, Workload

    project = Project.objects.create(name="Bench", slug="bench")
    stage = Stage.objects.create(project=project, name="Bench", slug="bench")
    workload = Workload.objects.create(stage=stage, name="Bench", slug="bench",
                                       image="127.0.0.1:5000/berth-test/httpd:v1")
    VolumeMount.objects.create(workload=workload, scope="absolute", source=str(data_set),
                               target="/data")
    return workload


def pipeline(first: list[str], second: list[str]) -> None:
    """`first | second`, as a shell would run it, checking both exit codes."""
    producer = subprocess.Popen(first, stdout=subprocess.PIPE)
    try:
        subprocess.run(second, stdin=producer.stdout, check=True)
    finally:
        producer.stdout.close()
        if producer.wait() != 0:
            raise SystemExit(f"{first[0]} failed")


def timed(step, *args) -> tuple[float, object]:
    os.sync()
    start = time.perf_counter()
    result = step(*args)
    return time.perf_counter() - start, result


def berth_capture(workload):
    from engine import captures

    snapshot = captures.capture_snapshot(workload=workload)
    if not snapshot.is_ready:
        raise SystemExit(f"capture failed: {snapshot.failure_text}")
    return snapshot


def berth_extract(snapshot, staging: Path) -> None:
    from snapshots import archive, storage

    with open(storage.archive_path(snapshot.workload_id, snapshot.archive), "rb") as source:
        archive.extract_tree(source, str(staging), volume_count=1)


def tar_capture(data_set: Path, target: Path) -> None:
    pipeline(["tar", "-C", str(data_set), "-cf", "-", "."],
             ["zstd", "-q", "-T0", "-3", "-o", str(target)])


def tar_extract(source: Path, target: Path) -> None:
    target.mkdir()
    pipeline(["zstd", "-q", "-d", "-c", str(source)], ["tar", "-C", str(target), "-xf", "-"])


def one_round(workload, data_set: Path, out: Path) -> dict[str, float]:
    baseline = out / "baseline.tar.zst"
    times: dict[str, float] = {}
    times["berth capture"], snapshot = timed(berth_capture, workload)
    times["tar capture"], _ = timed(tar_capture, data_set, baseline)
    times["berth extract"], _ = timed(berth_extract, snapshot, out / "berth")
    times["tar extract"], _ = timed(tar_extract, baseline, out / "tar")
    if (out / "berth" / "volumes" / "0" / "big.bin").stat().st_size != BIG_FILE:
        raise SystemExit("Berth's extraction is incomplete")
    print(f"  capture berth {times['berth capture']:.2f} s ({snapshot.size / MIB:.0f} MiB) · "
          f"tar|zstd {times['tar capture']:.2f} s ({baseline.stat().st_size / MIB:.0f} MiB) · "
          f"extract berth {times['berth extract']:.2f} s · zstd|tar {times['tar extract']:.2f} s")
    snapshot.delete()
    shutil.rmtree(out / "berth")
    shutil.rmtree(out / "tar")
    baseline.unlink()
    return times


def run(args: argparse.Namespace, base: Path) -> None:
    data_set, data_dir, out = base / "dataset", base / "berth", base / "out"
    data_dir.mkdir()
    out.mkdir()
    started = time.perf_counter()
    make_data_set(data_set)
    print(f"data set: {TOTAL // MIB} MiB (1 × {BIG_FILE // MIB} MiB + {SMALL_FILES} small "
          f"files) in {time.perf_counter() - started:.1f} s, under {base}")
    # The data set is an `absolute` volume, which Berth allows only below the
    # directories an operator lists.
    os.environ["BERTH_ABSOLUTE_VOLUME_ROOTS"] = str(data_set)
    prepare_django(data_dir)
    workload = make_workload(data_set)
    rows = [one_round(workload, data_set, out) for _ in range(args.rounds)]

    def ratio(ours: str) -> float:
        theirs = ours.replace("berth", "tar")
        return statistics.median(r[theirs] / r[ours] for r in rows)

    def speed(key: str) -> float:
        return TOTAL / MIB / statistics.median(r[key] for r in rows)

    print(f"capture: berth {speed('berth capture'):.0f} MiB/s, tar | zstd -T0 -3 "
          f"{speed('tar capture'):.0f} MiB/s")
    print(f"extract: berth {speed('berth extract'):.0f} MiB/s, zstd -d | tar -x "
          f"{speed('tar extract'):.0f} MiB/s")
    print(f"capture_bench: capture ratio {ratio('berth capture'):.2f}, "
          f"extract ratio {ratio('berth extract'):.2f} (target ≥ 0.7; median of "
          f"{args.rounds} rounds)")


def main() -> None:
    args = parse_args()
    for tool in ("tar", "zstd"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench/capture.py needs {tool} on PATH")
    base = Path(tempfile.mkdtemp(prefix="berth-bench-capture-", dir=args.dir))
    try:
        run(args, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
