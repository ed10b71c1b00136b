#!/usr/bin/env bash
# Builds a local container image of the AWS emulator (moto's server mode)
# for `TRAILHOUND_TEST_CONTAINERS=1`, without pulling anything: the Python
# interpreter and moto from .cache/venv (scripts/test-tools.sh) plus the
# shared libraries they load, imported as a FROM-scratch image.
#   scripts/moto-image.sh [TAG]      (default trailhound/moto:local)
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-trailhound/moto:local}"
scripts/test-tools.sh
venv="$PWD/.cache/venv"
# The same virtualenv makes the same image: skip when the image is of it.
stamp="$(cat "$venv/.installed")"
if [ "$(docker image inspect -f '{{index .Config.Labels "trailhound.venv"}}' "$tag" 2>/dev/null)" = "$stamp" ]; then
  echo "$tag is up to date"
  exit 0
fi
prefix="$("$venv/bin/python" -c 'import sys; print(sys.base_prefix)')"
ver="$("$venv/bin/python" -c 'import sys; print(f"python{sys.version_info[0]}.{sys.version_info[1]}")')"
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT

# The interpreter and its standard library, at the same path as here so
# the venv's pyvenv.cfg and symlinks stay valid.
mkdir -p "$root$prefix/bin" "$root$prefix/lib"
cp -a "$prefix/bin/$ver" "$root$prefix/bin/"
ln -sf "$ver" "$root$prefix/bin/python3"
ln -sf "$ver" "$root$prefix/bin/python"
tar -C "$prefix/lib" --exclude="$ver/site-packages" --exclude="$ver/test" \
    --exclude='__pycache__' -cf - "$ver" | tar -C "$root$prefix/lib" -xf -
cp -a "$prefix"/lib/lib"$ver"*.so* "$root$prefix/lib/" 2>/dev/null || true
mkdir -p "$root$(dirname "$venv")"
cp -a "$venv" "$root$venv"

# Every shared library the interpreter and the extension modules load.
find "$root" -type f \( -name '*.so*' -o -path "*/bin/$ver" \) -print0 |
  xargs -0 ldd 2>/dev/null | awk '/=> \//{print $3} /^\s*\/lib/{print $1}' |
  sort -u | while read -r lib; do
    [ -e "$root$lib" ] || { mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"; }
  done
for loader in /lib64/ld-linux-x86-64.so.2 /lib/ld-linux-aarch64.so.1; do
  [ -e "$loader" ] && { mkdir -p "$root$(dirname "$loader")"; cp -L "$loader" "$root$loader"; }
done
mkdir -p "$root/tmp" "$root/etc"
chmod 1777 "$root/tmp"
echo "root:x:0:0:root:/root:/bin/sh" > "$root/etc/passwd"

tar -C "$root" -cf - . | docker import \
  -c "ENTRYPOINT [\"$venv/bin/python\", \"-m\", \"moto.server\", \"-H\", \"0.0.0.0\", \"-p\", \"5000\"]" \
  -c 'EXPOSE 5000' -c 'ENV PYTHONDONTWRITEBYTECODE=1' -c "LABEL trailhound.venv=\"$stamp\"" - "$tag" >/dev/null
echo "built $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MiB", $1/1048576}'))"
