#!/usr/bin/env bash
# Builds Berth's test images from Debian busybox-static (nothing can be pulled from the
# internet here) and pushes them to the local registry (scripts/start-registry.sh):
#   127.0.0.1:5000/berth-test/busybox:latest   bare busybox, base for other test images
#   127.0.0.1:5000/berth-test/httpd:v1, :v2    busybox httpd serving /data on port 80
#   127.0.0.1:5000/berth-test/httpd:current    moving tag, reset to v1 (see move-test-tag.sh)
#   127.0.0.1:5000/berth-test/slowstop:v1, :v2 a process that takes 3 s to stop on SIGTERM
# Skips the build when the images exist locally and in the registry, unless FORCE=1.
set -euo pipefail

registry=127.0.0.1:5000
base=$registry/berth-test/busybox:latest
httpd=$registry/berth-test/httpd
slowstop=$registry/berth-test/slowstop
here=$(cd "$(dirname "$0")" && pwd)
# The legacy builder resolves FROM against local images, so httpd can build on the
# unpushed base; BuildKit (if buildx is ever installed) would look in the registry.
export DOCKER_BUILDKIT=0

# Prints the registry's digest of name:tag ("" when absent).
registry_digest() {
  curl -fsSI --max-time 5 -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$registry/v2/$1/manifests/$2" 2>/dev/null |
    tr -d '\r' | awk 'tolower($1) == "docker-content-digest:" { print $2 }'
}
# Runs a noisy command, showing its output only if it fails.
quiet() {
  local out
  out=$("$@" 2>&1) || { echo "$out" >&2; echo "berth: failed: $*" >&2; return 1; }
}

images=("$base" "$httpd:v1" "$httpd:v2" "$slowstop:v1" "$slowstop:v2")
build=${FORCE:-0}
for image in "${images[@]}"; do
  docker image inspect "$image" >/dev/null 2>&1 || build=1
done

if [ "$build" = 1 ]; then
  ctx=$(mktemp -d)
  trap 'rm -rf "$ctx"' EXIT
  mkdir "$ctx/base"
  cp /bin/busybox "$ctx/base/busybox"
  cat >"$ctx/base/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
CMD ["sh"]
DOCKERFILE
  quiet docker build -t "$base" "$ctx/base"

  for v in v1 v2; do
    mkdir "$ctx/$v"
    # The ENV and /version differ, so v1 and v2 get different digests. Tests bind-mount
    # a host directory over /data; the baked index.html is only the default.
    cat >"$ctx/$v/Dockerfile" <<DOCKERFILE
FROM $base
ENV BERTH_TEST_VERSION=$v
RUN echo $v > /version && mkdir -p /data && echo "<h1>berth-test httpd $v</h1>" > /data/index.html
EXPOSE 80
# httpd as PID 1 has no SIGTERM handler, so docker stop would wait its full timeout;
# SIGKILL ends it at once (it has no state to save).
STOPSIGNAL SIGKILL
CMD ["httpd", "-f", "-p", "80", "-h", "/data"]
DOCKERFILE
    quiet docker build -t "$httpd:$v" "$ctx/$v"

    # A container whose `docker stop` takes a while, as a real app's does: the engine
    # goes on stopping it after the process that asked has died.
    mkdir "$ctx/slow-$v"
    cat >"$ctx/slow-$v/Dockerfile" <<DOCKERFILE
FROM $base
ENV BERTH_TEST_VERSION=$v
CMD ["sh", "-c", "trap 'sleep 3; exit 0' TERM; while true; do sleep 0.2; done"]
DOCKERFILE
    quiet docker build -t "$slowstop:$v" "$ctx/slow-$v"
  done
fi

for image in "${images[@]}"; do
  name=${image#"$registry"/}
  if [ "$build" = 1 ] || [ -z "$(registry_digest "${name%:*}" "${name##*:}")" ]; then
    quiet docker push "$image"
    echo "berth: pushed $image"
  fi
done

# Tests move `current`; every fresh setup starts with current = v1.
if [ "$(registry_digest berth-test/httpd current)" != "$(registry_digest berth-test/httpd v1)" ]; then
  "$here/move-test-tag.sh" v1
fi
