#!/usr/bin/env bash
# Builds the `trailhound:dev` image with no base image to pull: the binary,
# the shared libraries `ldd` lists, CA certificates (for TLS to AWS and
# OpenSearch) and empty /tmp and /data, FROM scratch.
#   deploy/build-image.sh [path/to/trailhound] [tag]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-${CARGO_TARGET_DIR:-target}/release/trailhound}
tag=${2:-trailhound:dev}
if [ ! -x "$bin" ]; then
  cargo build --release --locked -p trailhound
fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
root="$ctx/rootfs"
mkdir -p "$root/tmp" "$root/data" "$root/etc/ssl/certs"
cp "$bin" "$root/trailhound"
for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
fi
cp deploy/Dockerfile "$ctx/"
docker build -q -t "$tag" "$ctx"
echo "built $tag from $bin"
