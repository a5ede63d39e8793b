#!/usr/bin/env bash
# Ensures an S3 server answers on 127.0.0.1:5002 for the backup tests: moto's
# server (moto[server] from the dev dependencies in .venv), a real HTTP S3 API
# holding its buckets in memory. Idempotent: returns at once when it answers.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
services_dir=${BERTH_SERVICES_DIR:-/tmp/berth-services}
port=${BERTH_TEST_S3_PORT:-5002}
log=$services_dir/s3.log
mkdir -p "$services_dir"

ping() { curl -sS --max-time 2 -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null; }
ping && exit 0

server=$root/.venv/bin/moto_server
if [ ! -x "$server" ]; then
  make -s -C "$root" venv
fi
if ! pgrep -f "moto_server -H 127.0.0.1 -p $port" >/dev/null; then
  setsid nohup "$server" -H 127.0.0.1 -p "$port" >>"$log" 2>&1 </dev/null &
fi
for _ in $(seq 60); do
  ping && exit 0
  sleep 0.5
done
echo "berth: the S3 server did not answer on 127.0.0.1:$port within 30 s; last lines of $log:" >&2
tail -n 30 "$log" >&2 || true
exit 1
