#!/usr/bin/env bash
# Ensures a Docker engine answers on /var/run/docker.sock.
# There is no systemd on these machines, so the daemon is started by hand, as root.
set -euo pipefail

services_dir=${BERTH_SERVICES_DIR:-/tmp/berth-services}
log=$services_dir/dockerd.log
sock=/var/run/docker.sock

ping() { curl -fsS --max-time 2 --unix-socket "$sock" http://localhost/_ping >/dev/null 2>&1; }

ping && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "berth: Docker does not answer on $sock and only root can start dockerd" >&2
  exit 1
fi
mkdir -p "$services_dir"

# Another run may have started dockerd a moment ago: wait for it instead of starting a second one.
if ! pgrep -x dockerd >/dev/null; then
  # A pidfile left by a killed daemon makes dockerd refuse to start.
  rm -f /var/run/docker.pid
  # setsid + nohup: the daemon must outlive this script and the CI step's process group.
  setsid nohup dockerd >>"$log" 2>&1 </dev/null &
fi

for _ in $(seq 60); do
  ping && exit 0
  sleep 0.5
done
echo "berth: dockerd did not answer on $sock within 30 s; last lines of $log:" >&2
tail -n 30 "$log" >&2 || true
exit 1
