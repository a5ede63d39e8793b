#!/usr/bin/env bash
# Ensures two Distribution registries (Debian docker-registry) answer:
#   127.0.0.1:5000  open, where the test images are pushed;
#   127.0.0.1:5001  the same storage behind htpasswd auth (user "berth",
#                   password "berth-registry-test"), for tests of registry
#                   credentials and of a wrong password.
# Plain HTTP on 127.0.0.1 needs no insecure-registries setting in dockerd.
set -euo pipefail

services_dir=${BERTH_SERVICES_DIR:-/tmp/berth-services}
storage=$services_dir/registry
mkdir -p "$storage"

ping() { curl -sS --max-time 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/v2/" 2>/dev/null | grep -qE '^(200|401)$'; }

# serve PORT NAME EXTRA_YAML
serve() {
  local port=$1 name=$2 extra=$3
  local config=$services_dir/$name.yml log=$services_dir/$name.log
  ping "$port" && return 0
  # Our own config: the packaged /etc/docker/registry/config.yml asks for
  # htpasswd auth. delete.enabled lets tests remove manifests.
  cat >"$config" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
$extra
YAML
  if ! pgrep -f "docker-registry serve $config" >/dev/null; then
    setsid nohup docker-registry serve "$config" >>"$log" 2>&1 </dev/null &
  fi
  for _ in $(seq 60); do
    ping "$port" && return 0
    sleep 0.5
  done
  echo "berth: the registry did not answer on 127.0.0.1:$port within 30 s; last lines of $log:" >&2
  tail -n 30 "$log" >&2 || true
  exit 1
}

serve 5000 registry ""

htpasswd=$services_dir/registry-auth.htpasswd
if [ ! -s "$htpasswd" ]; then
  # bcrypt, the only hash the registry accepts; Python 3.11's crypt module makes it.
  python3 -W ignore -c 'import crypt; print("berth:" + crypt.crypt("berth-registry-test", crypt.mksalt(crypt.METHOD_BLOWFISH)))' >"$htpasswd"
fi
serve 5001 registry-auth "auth:
  htpasswd:
    realm: berth-test
    path: $htpasswd"
