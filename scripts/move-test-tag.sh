#!/usr/bin/env bash
# Points REPO:TAG (default: 127.0.0.1:5000/berth-test/httpd:current) at v1 or v2 of
# 127.0.0.1:5000/berth-test/httpd and pushes it, so tests can move a tag in the registry.
# Each test run (each pytest-xdist worker) moves a tag in a repository of its own: the
# registry answers 500 now and then when one repository's tags are written concurrently.
# Usage: scripts/move-test-tag.sh v1|v2 [TAG [REPO]]
set -euo pipefail

case ${1:-} in
  v1 | v2) v=$1 ;;
  *) echo "usage: $0 v1|v2 [TAG]" >&2; exit 2 ;;
esac
tag=${2:-current}
httpd=127.0.0.1:5000/berth-test/httpd
repo=${3:-$httpd}

# A machine whose Docker data was wiped may still have the image in the registry.
docker image inspect "$httpd:$v" >/dev/null 2>&1 || docker pull -q "$httpd:$v" >/dev/null ||
  { echo "berth: $httpd:$v not found; run scripts/build-test-images.sh" >&2; exit 1; }
docker tag "$httpd:$v" "$repo:$tag"
out=$(docker push "$repo:$tag" 2>&1) || { echo "$out" >&2; exit 1; }
echo "berth: $repo:$tag -> $v ($(echo "$out" | grep -o 'sha256:[0-9a-f]*' | tail -n1))"
