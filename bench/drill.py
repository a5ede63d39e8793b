"""Restore drills: Berth's drill of a copy against `rclone cat | age -d | zstd -d | tar -x`.

Data set: the 1 GiB data set of bench/capture.py, captured once by Berth and
copied once (encrypted) to the tests' S3 server (moto's, 127.0.0.1:5002,
`make services`).

- **drill**: `engine.drills.run_drill` (download, decrypt with the stored
  identity, check against the sidecar, full extraction by the safe extractor
  into scratch, scratch removed), against the shell pipeline `rclone cat
  remote:copy | age -d -i key | zstd -d | tar -x -C scratch` of the same
  object, each after an untimed `sync`. Ratio = the pipeline's time ÷ Berth's
  (target ≥ 0.8). The pipeline checks less (no SHA-256, no manifest, no
  safety rules), so the ratio is Berth's price for them.

    .venv/bin/python bench/drill.py [--rounds 2] [--dir DIR]
"""

from __future__ import annotations

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
from offsite import ENDPOINT, KEY_ID, RCLONE_ENV, SECRET, berth_copy, parse_args


def pipeline(bucket: str, key: str, identity_file: Path, scratch: Path) -> float:
    """rclone cat | age -d | zstd -d | tar -x, four processes joined by pipes, timed."""
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"} | RCLONE_ENV
    scratch.mkdir()
    commands = [["rclone", "cat", f"moto:{bucket}/{key}"],
                ["age", "-d", "-i", str(identity_file)], ["zstd", "-q", "-d"],
                ["tar", "-x", "-C", str(scratch)]]
    started = time.perf_counter()
    processes, upstream = [], None
    for n, command in enumerate(commands):
        last = n == len(commands) - 1
        process = subprocess.Popen(command, stdin=upstream, env=env,
                                   stdout=None if last else subprocess.PIPE)
        if upstream is not None:
            upstream.close()  # the next process holds it now
        upstream = process.stdout
        processes.append(process)
    codes = [process.wait() for process in processes]
    elapsed = time.perf_counter() - started
    if any(codes):
        raise SystemExit(f"the pipeline failed: {codes}")
    shutil.rmtree(scratch)
    return elapsed


def run(args, base: Path) -> None:
    import boto3
    from pyrage import x25519

    data_set, data_dir = base / "dataset", base / "berth"
    data_dir.mkdir()
    make_data_set(data_set)
    os.environ["BERTH_ABSOLUTE_VOLUME_ROOTS"] = str(data_set)
    prepare_django(data_dir)
    from backups.models import BackupTarget, RestoreDrill
    from engine import drills

    snapshot = berth_capture(make_workload(data_set))
    size = snapshot.size
    print(f"archive: {size / MIB:.0f} MiB (the 1 GiB data set of bench/capture.py)")
    bucket = f"bench-{uuid.uuid4().hex[:10]}"
    s3 = boto3.client("s3", endpoint_url=ENDPOINT, region_name="us-east-1",
                      aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET)
    s3.create_bucket(Bucket=bucket)
    identity = x25519.Identity.generate()
    identity_file = base / "key.txt"
    identity_file.write_text(f"{identity}\n")
    identity_file.chmod(0o600)
    target = BackupTarget(name="bench", kind="s3", endpoint_url=ENDPOINT, region="us-east-1",
                          bucket=bucket, access_key_id=KEY_ID,
                          recipients=str(identity.to_public()))
    target.set_secret_access_key(SECRET)
    target.set_identity(str(identity))
    target.save()
    rows = []
    try:
        _seconds, _rss, copy = berth_copy(snapshot, target)
        key = f"{target.prefix}{copy.remote_key}"
        for n in range(args.rounds):
            os.sync()
            started = time.perf_counter()
            drill = drills.run_drill(drills.request_drill(copy=copy, queued=False))
            berth = time.perf_counter() - started
            if drill.state != RestoreDrill.State.PASSED:
                raise SystemExit(f"the drill failed: {drill.failure_code}")
            os.sync()
            shell = pipeline(bucket, key, identity_file, base / f"scratch-{n}")
            rows.append({"berth": berth, "pipeline": shell})
            print(f"round {n + 1}: drill berth {berth:.2f} s, pipeline {shell:.2f} s; load "
                  f"average {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=item["Key"])
        s3.delete_bucket(Bucket=bucket)
    berth = statistics.median(r["berth"] for r in rows)
    shell = statistics.median(r["pipeline"] for r in rows)
    print(f"drill: berth {size / MIB / berth:.0f} MiB/s (download, decrypt, verify, extract "
          f"and check), pipeline {size / MIB / shell:.0f} MiB/s")
    print(f"drill_bench: ratio {shell / berth:.2f} (target ≥ 0.8; median of {args.rounds} "
          "rounds)")


def main() -> None:
    args = parse_args()
    for tool in ("rclone", "age", "zstd", "tar"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench/drill.py needs {tool} on PATH (make host)")
    base = Path(tempfile.mkdtemp(prefix="berth-bench-drill-", dir=args.dir))
    try:
        run(args, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
