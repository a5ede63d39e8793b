#!/usr/bin/env bash
# Ensures a Distribution registry (Debian docker-registry) listens on 127.0.0.1:5000.
# Plain HTTP on 127.0.0.1 needs no insecure-registries setting in dockerd.
set -euo pipefail

services_dir=${BERTH_SERVICES_DIR:-/tmp/berth-services}
config=$services_dir/registry.yml
log=$services_dir/registry.log
url=http://127.0.0.1:5000/v2/

ping() { curl -fsS --max-time 2 "$url" >/dev/null 2>&1; }

ping && exit 0

mkdir -p "$services_dir/registry"
# Our own config: the packaged /etc/docker/registry/config.yml asks for htpasswd auth.
# delete.enabled lets tests remove manifests.
cat >"$config" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $services_dir/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
YAML

if ! pgrep -f "docker-registry serve $config" >/dev/null; then
  setsid nohup docker-registry serve "$config" >>"$log" 2>&1 </dev/null &
fi

for _ in $(seq 60); do
  ping && exit 0
  sleep 0.5
done
echo "berth: the registry did not answer on $url within 30 s; last lines of $log:" >&2
tail -n 30 "$log" >&2 || true
exit 1
