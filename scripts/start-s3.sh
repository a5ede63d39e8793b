#!/usr/bin/env bash
# Ensures the S3 servers of the backup tests answer: moto's server (moto[server]
# from the dev dependencies in .venv), a real HTTP S3 API holding its buckets in
# memory, on 127.0.0.1:5002 (any key is accepted) and on 127.0.0.1:5003 (keys are
# checked). Idempotent: returns at once when both answer.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
services_dir=${BERTH_SERVICES_DIR:-/tmp/berth-services}
port=${BERTH_TEST_S3_PORT:-5002}
log=$services_dir/s3.log
mkdir -p "$services_dir"

ping() { curl -sS --max-time 2 -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null; }
server=$root/.venv/bin/moto_server
if [ ! -x "$server" ]; then
  make -s -C "$root" venv
fi
if ! ping; then
  if ! pgrep -f "moto_server -H 127.0.0.1 -p $port" >/dev/null; then
    setsid nohup "$server" -H 127.0.0.1 -p "$port" >>"$log" 2>&1 </dev/null &
  fi
fi
up=
for _ in $(seq 60); do
  ping && { up=1; break; }
  sleep 0.5
done
if [ -z "$up" ]; then
  echo "berth: the S3 server did not answer on 127.0.0.1:$port within 30 s; last lines of $log:" >&2
  tail -n 30 "$log" >&2 || true
  exit 1
fi

# A second server on 127.0.0.1:5003 that checks keys (IAM), for the tests of a
# wrong key and of a key that may not write: scripts/s3-auth-setup.py creates
# its users and bucket with the requests it still takes unauthenticated.
auth_port=${BERTH_TEST_S3_AUTH_PORT:-5003}
auth_keys=$services_dir/s3-auth.json
auth_ping() { curl -sS --max-time 2 -o /dev/null "http://127.0.0.1:$auth_port/" 2>/dev/null; }
keys_work() {
  [ -s "$auth_keys" ] && "$root/.venv/bin/python" - "$auth_keys" <<'PY' 2>/dev/null
import json, sys, boto3
keys = json.load(open(sys.argv[1]))
boto3.client("s3", endpoint_url=keys["endpoint"], region_name="us-east-1",
             aws_access_key_id=keys["berth"]["id"],
             aws_secret_access_key=keys["berth"]["secret"]).head_bucket(Bucket=keys["bucket"])
PY
}
if auth_ping && keys_work; then
  exit 0
fi
pkill -f "moto_server -H 127.0.0.1 -p $auth_port" 2>/dev/null || true
rm -f "$auth_keys"
INITIAL_NO_AUTH_ACTION_COUNT=7 setsid nohup "$server" -H 127.0.0.1 -p "$auth_port" \
  >>"$services_dir/s3-auth.log" 2>&1 </dev/null &
for _ in $(seq 60); do
  auth_ping && break
  sleep 0.5
done
"$root/.venv/bin/python" "$root/scripts/s3-auth-setup.py" "http://127.0.0.1:$auth_port" "$auth_keys"
keys_work || { echo "berth: the key-checking S3 server on 127.0.0.1:$auth_port is not usable" >&2; exit 1; }
