#!/usr/bin/env bash
# Installs the Debian packages Berth's tests and `make run` need on this host.
# Runs as root (CI and the development machines are root); idempotent.
set -euo pipefail

packages=(docker.io docker-registry busybox-static gettext chromium zstd git age rclone curl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "berth: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
