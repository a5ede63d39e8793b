"""Offsite copies: Berth's encrypted, verified copy and its recovery download against rclone.

Data set: the 1 GiB data set of bench/capture.py, captured once by Berth; the
archive is what is copied. Target: the S3 server of the tests (moto's, on
127.0.0.1:5002, `make services`), a fresh bucket per run.

- **copy**: Berth's `copy_snapshot` (age encryption in a thread, boto3's
  multipart upload, then the object read back and its SHA-256 compared) in a
  forked child, against `rclone copyto` of the same plaintext archive to the
  same server. Ratio = rclone's time ÷ Berth's (≥ 0.8 is the target). The
  child's peak RSS is reported (target under 256 MiB).
- **download**: the recovery's download (the object streamed from the server,
  decrypted, its SHA-256 checked against the snapshot's, written to a file)
  against `rclone cat remote:… > file`, each after an untimed `sync`. Ratio as
  above (target ≥ 0.8); each round's times and CPU seconds are printed too.

    .venv/bin/python bench/offsite.py [--rounds 2] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from _common import MIB
from capture import berth_capture, make_data_set, make_workload, prepare_django

ENDPOINT = "http://127.0.0.1:5002"
KEY_ID, SECRET = "bench-key-id", "bench-secret"
RCLONE_ENV = {
    "RCLONE_CONFIG_MOTO_TYPE": "s3", "RCLONE_CONFIG_MOTO_PROVIDER": "Other",
    "RCLONE_CONFIG_MOTO_ENDPOINT": ENDPOINT, "RCLONE_CONFIG_MOTO_REGION": "us-east-1",
    "RCLONE_CONFIG_MOTO_ACCESS_KEY_ID": KEY_ID, "RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY": SECRET,
    "RCLONE_CONFIG_MOTO_FORCE_PATH_STYLE": "true",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="measured rounds (default 2)")
    parser.add_argument("--dir", default=None, help="where the data set goes (default $TMPDIR)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def rclone(*args: str, stdout=None) -> None:
    # rclone 1.60's S3 client fails on AWS_CA_BUNDLE ("unsupported transport"); the
    # endpoint is plain HTTP on the loopback, so it needs none.
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"} | RCLONE_ENV
    subprocess.run(["rclone", *args], env=env, check=True, stdout=stdout)


def berth_copy(snapshot, target) -> tuple[float, int, object]:
    """Copy in a forked child; (seconds, the child's peak RSS in bytes, the copy row)."""
    from django.db import connections

    from backups.models import SnapshotCopy

    row = SnapshotCopy.objects.create(snapshot=snapshot, workload=snapshot.workload,
                                      target=target)
    connections.close_all()  # the child opens its own
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            from engine import copies

            copies.copy_snapshot(SnapshotCopy.objects.select_related(
                "target", "snapshot__workload__stage__project").get(pk=row.pk))
            code = 0
        finally:
            os._exit(code)
    _pid, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("the copy's child failed")
    row.refresh_from_db()
    if row.state != SnapshotCopy.State.VERIFIED:
        raise SystemExit(f"the copy failed: {row.failure_code}")
    return elapsed, usage.ru_maxrss * 1024, row


def berth_download(row, snapshot, identity, out: Path) -> tuple[float, float]:
    """What a recovery does: engine.copies.download (read ahead, decrypt, hash, write behind)
    into a file, its SHA-256 compared with the snapshot's; (seconds, CPU seconds)."""
    from engine import copies

    started, cpu = time.perf_counter(), time.process_time()
    with open(out, "wb") as sink:
        size, digest = copies.download(row, sink, identities=[identity])
    if (size, digest) != (snapshot.size, snapshot.sha256):
        raise SystemExit("the downloaded archive differs from the snapshot")
    return time.perf_counter() - started, time.process_time() - cpu


def children_cpu() -> float:
    times = os.times()
    return times.children_user + times.children_system


def run(args: argparse.Namespace, base: Path) -> None:
    import boto3
    from pyrage import x25519

    data_set, data_dir, out = base / "dataset", base / "berth", base / "out"
    data_dir.mkdir()
    out.mkdir()
    make_data_set(data_set)
    os.environ["BERTH_ABSOLUTE_VOLUME_ROOTS"] = str(data_set)
    prepare_django(data_dir)
    from backups.models import BackupTarget
    from snapshots import storage

    snapshot = berth_capture(make_workload(data_set))
    archive = storage.archive_path(snapshot.workload_id, snapshot.archive)
    size = archive.stat().st_size
    print(f"archive: {size / MIB:.0f} MiB (the 1 GiB data set of bench/capture.py)")

    bucket = f"bench-{uuid.uuid4().hex[:10]}"
    s3 = boto3.client("s3", endpoint_url=ENDPOINT, region_name="us-east-1",
                      aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET)
    s3.create_bucket(Bucket=bucket)
    identity = x25519.Identity.generate()
    target = BackupTarget(name="bench", kind="s3", endpoint_url=ENDPOINT, region="us-east-1",
                          bucket=bucket, access_key_id=KEY_ID,
                          recipients=str(identity.to_public()))
    target.set_secret_access_key(SECRET)
    target.save()

    rows = []
    try:
        for n in range(args.rounds):
            berth_seconds, rss, row = berth_copy(snapshot, target)
            started = time.perf_counter()
            rclone("copyto", str(archive), f"moto:{bucket}/rclone-{n}.tar.zst")
            rclone_seconds = time.perf_counter() - started
            # Untimed, as in bench/capture.py: the uploads' writeback (moto keeps objects in
            # files) is not charged to whichever download comes first.
            os.sync()
            download, download_cpu = berth_download(row, snapshot, identity,
                                                    out / "berth.tar.zst")
            os.sync()
            started, cpu = time.perf_counter(), children_cpu()
            with open(out / "rclone.tar.zst", "wb") as sink:
                rclone("cat", f"moto:{bucket}/rclone-{n}.tar.zst", stdout=sink)
            rclone_download = time.perf_counter() - started
            rows.append({"copy": berth_seconds, "rclone copy": rclone_seconds, "rss": rss,
                         "download": download, "rclone download": rclone_download,
                         "download cpu": download_cpu, "rclone download cpu": children_cpu() - cpu})
            print(f"round {n + 1}: download berth {download:.2f} s ({download_cpu:.2f} s CPU), "
                  f"rclone cat {rclone_download:.2f} s ({rows[-1]['rclone download cpu']:.2f} s "
                  f"CPU); load average {os.getloadavg()[0]:.1f}", flush=True)
            for key in (f"rclone-{n}.tar.zst", f"{target.prefix}{row.remote_key}"):
                s3.delete_object(Bucket=bucket, Key=key)
    finally:
        for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=item["Key"])
        s3.delete_bucket(Bucket=bucket)

    def median(key: str) -> float:
        return statistics.median(r[key] for r in rows)

    def speed(key: str) -> float:
        return size / MIB / median(key)

    print(f"copy: berth {speed('copy'):.0f} MiB/s (encrypt, upload, read back), "
          f"rclone copyto {speed('rclone copy'):.0f} MiB/s; berth's peak RSS "
          f"{max(r['rss'] for r in rows) / MIB:.0f} MiB")
    print(f"download: berth {speed('download'):.0f} MiB/s (download, decrypt, verify), "
          f"rclone cat {speed('rclone download'):.0f} MiB/s; CPU seconds berth "
          f"{median('download cpu'):.2f}, rclone {median('rclone download cpu'):.2f} "
          f"(the S3 server's not counted)")
    print(f"offsite_bench: copy ratio {median('rclone copy') / median('copy'):.2f}, "
          f"download ratio {median('rclone download') / median('download'):.2f} "
          f"(targets ≥ 0.8; peak RSS target < 256 MiB; median of {args.rounds} rounds)")


def main() -> None:
    args = parse_args()
    for tool in ("rclone",):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench/offsite.py needs {tool} on PATH (make host)")
    base = Path(tempfile.mkdtemp(prefix="berth-bench-offsite-", dir=args.dir))
    try:
        run(args, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
