#!/usr/bin/env bash
# Builds trailhound's images from one binary, pulling nothing:
#   trailhound:TAG                   the binary (CLI tools, `up`, `probe`)
#   trailhound-<service>:TAG         ingest, enrich, detect, insights,
#                                    notify, health: the same files, with
#                                    the service as entrypoint (see
#                                    deploy/Dockerfile.services)
#
#   deploy/build-images.sh [--binary PATH] [--tag TAG] [--base IMAGE]
#
# Without --binary it makes a release build (cargo build --release
# --locked -p trailhound); the compose test passes the debug binary its
# test build already made. Debug info is dropped from the image's copy
# (symbols stay, for backtraces). The base, trailhound/debian:<release>,
# is Debian's minbase plus ca-certificates for the build host's release
# (so its glibc is the one the binary was linked against), made once with
# mmdebstrap and imported; --base names another.
#
# Reproducible: every file in the images has the last commit's time and
# fixed owners, so the same binary and base give the same layer digests
# (printed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."

bin=""
tag="dev"
base=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) bin="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --base) base="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [ -z "$bin" ]; then
  cargo build --release --locked -p trailhound
  bin="${CARGO_TARGET_DIR:-target}/release/trailhound"
fi
[ -x "$bin" ] || { echo "no executable at $bin" >&2; exit 1; }

if [ -z "$base" ]; then
  # shellcheck disable=SC1091
  . /etc/os-release
  if [ "${ID:-}" != debian ] || [ -z "${VERSION_CODENAME:-}" ]; then
    echo "the binary was not built on Debian: pass --base IMAGE, an image of the distribution and release it was built on (with bash, ldd and ca-certificates)" >&2
    exit 1
  fi
  base="trailhound/debian:$VERSION_CODENAME"
  if ! docker image inspect "$base" >/dev/null 2>&1; then
    if ! command -v mmdebstrap >/dev/null 2>&1; then
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get install -y --no-install-recommends mmdebstrap >/dev/null \
          || { apt-get update >/dev/null && apt-get install -y --no-install-recommends mmdebstrap >/dev/null; }
      else
        echo "mmdebstrap is missing (apt-get install mmdebstrap), needed once to make $base" >&2
        exit 1
      fi
    fi
    echo "making $base with mmdebstrap (once; about a minute)" >&2
    SOURCE_DATE_EPOCH=0 mmdebstrap --quiet --variant=minbase --include=ca-certificates \
      "$VERSION_CODENAME" - | docker import - "$base" >/dev/null
  fi
fi

epoch=$(git log -1 --format=%ct 2>/dev/null || echo 0)
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
if command -v objcopy >/dev/null 2>&1; then
  objcopy --strip-debug "$bin" "$ctx/trailhound"
else
  cp "$bin" "$ctx/trailhound"
fi
touch -d "@$epoch" "$ctx/trailhound"
cp deploy/Dockerfile "$ctx/"

docker build --quiet --build-arg "BASE=$base" --build-arg "SOURCE_DATE_EPOCH=$epoch" \
  -t "trailhound:$tag" "$ctx" >/dev/null
# The services add configuration only: no context to send.
for service in ingest enrich detect insights notify health; do
  docker build --quiet --build-arg "IMAGE=trailhound:$tag" --target "$service" \
    -t "trailhound-$service:$tag" - < deploy/Dockerfile.services >/dev/null
done
size=$(docker image inspect -f '{{.Size}}' "trailhound:$tag" | awk '{printf "%.0f MiB", $1/1048576}')
layer=$(docker image inspect -f '{{range .RootFS.Layers}}{{.}} {{end}}' "trailhound:$tag")
echo "built trailhound:$tag and trailhound-{ingest,enrich,detect,insights,notify,health}:$tag from $bin on $base ($size; layers $layer)"
