#!/usr/bin/env bash
# Builds a local container image of osmem-server (the OpenSearch API
# server the OpenSearch suites run against) without pulling anything: the
# static binary PyPI's osmem-server wheel ships, from .cache/venv
# (scripts/test-tools.sh), imported as a FROM-scratch image. The fixture
# (crates/testkit/src/osmem.rs) passes --addr and --no-ja.
#   scripts/osmem-image.sh [TAG]      (default trailhound/osmem:local)
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-trailhound/osmem:local}"
scripts/test-tools.sh
bin="$(.cache/venv/bin/python -c 'import osmem_server; print(osmem_server.resolve_binary())')"
if ldd "$bin" >/dev/null 2>&1; then
  echo "$bin links shared libraries: this script copies only the binary" >&2
  exit 1
fi
# The same binary makes the same image: skip when the image is of it.
sum="$(sha256sum "$bin" | cut -d' ' -f1)"
if [ "$(docker image inspect -f '{{index .Config.Labels "trailhound.osmem"}}' "$tag" 2>/dev/null)" = "$sum" ]; then
  echo "$tag is up to date"
  exit 0
fi
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
install -m 0755 "$bin" "$root/osmem-server"
mkdir -p "$root/tmp"
chmod 1777 "$root/tmp"
# A container has no stdin to watch: without --no-stdin-watch the server
# would exit at once.
tar -C "$root" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - . |
  docker import -c 'ENTRYPOINT ["/osmem-server", "--no-stdin-watch"]' -c 'USER 65532:65532' \
    -c "LABEL trailhound.osmem=$sum" - "$tag" >/dev/null
echo "built $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MiB", $1/1048576}'))"
