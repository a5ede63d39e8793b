#!/usr/bin/env bash
# Brings up everything Berth's tests need on this host: Debian packages, the Docker engine,
# the local registry and the test images, and an S3 server (`make services`). Each step is idempotent and
# returns at once when its service is already up.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)

# apt is slow even with nothing to do, so only call install-host.sh when a tool is missing.
for tool in dockerd docker-registry busybox chromium msgfmt age rclone; do
  if ! command -v "$tool" >/dev/null; then
    "$here/install-host.sh"
    break
  fi
done
"$here/start-docker.sh"
"$here/start-registry.sh"
"$here/build-test-images.sh"
"$here/start-s3.sh"
