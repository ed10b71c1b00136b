#!/usr/bin/env bash
# Checks the Helm chart (deploy/helm/trailhound) without a cluster: helm
# lint, helm template with the default values, with values-aws.yaml and
# with values-tls.yaml (TLS, mTLS from cert-manager, OIDC and API tokens),
# with detect sharded over three replicas,
# every rendered object validated against the Kubernetes JSON schemas
# (kubernetes-validate, 1.33 and the newest it ships), and the policy test
# over the rendered objects (scripts/helm-policy.py), whose checks are
# themselves shown to catch a broken copy (--self-test).
set -euo pipefail
cd "$(dirname "$0")/.."
helm=.cache/bin/helm
python=.cache/venv/bin/python
chart=deploy/helm/trailhound
[ -x "$helm" ] || scripts/test-tools.sh
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$helm" lint --strict --quiet "$chart"
"$helm" lint --strict --quiet "$chart" -f "$chart/values-aws.yaml"
"$helm" template trailhound "$chart" --namespace trailhound > "$out/default.yaml"
"$helm" template trailhound "$chart" --namespace trailhound -f "$chart/values-aws.yaml" > "$out/aws.yaml"
"$helm" lint --strict --quiet "$chart" -f "$chart/values-aws.yaml" -f "$chart/values-tls.yaml"
"$helm" template trailhound "$chart" --namespace trailhound \
  -f "$chart/values-aws.yaml" -f "$chart/values-tls.yaml" > "$out/tls.yaml"
# TLS from Secrets you make yourself (no cert-manager) lints too.
"$helm" lint --strict --quiet "$chart" -f "$chart/values-tls.yaml" --set tls.certManager.enabled=false
# detect sharded over three replicas (--shard I/3, enrich to each pod).
"$helm" lint --strict --quiet "$chart" --set detect.replicas=3
"$helm" template trailhound "$chart" --namespace trailhound --set detect.replicas=3 \
  -f "$chart/values-tls.yaml" > "$out/sharded.yaml"
grep -qF -- '--detect-endpoint' "$out/sharded.yaml"
grep -qF 'https://trailhound-detect-2.trailhound-detect-headless.trailhound.svc:50053' "$out/sharded.yaml" \
  || { echo "helm chart: enrich does not reach detect's third replica by its pod name" >&2; exit 1; }
# The policy catches replicas whose shares do not add up to the pods.
sed 's#(TRAILHOUND_POD_INDEX)/3#(TRAILHOUND_POD_INDEX)/2#' "$out/sharded.yaml" > "$out/badshard.yaml"
if "$python" scripts/helm-policy.py --external-secret trailhound-oidc "$out/badshard.yaml" >/dev/null 2>&1; then
  echo "helm chart: the policy passed detect replicas with the wrong --shard" >&2; exit 1
fi
# values-tls.yaml names the dashboard's OIDC client Secret, made by hand.
"$python" scripts/helm-policy.py --external-secret trailhound-oidc \
  "$out/default.yaml" "$out/aws.yaml" "$out/tls.yaml" "$out/sharded.yaml"
"$python" scripts/helm-policy.py --self-test "$out/default.yaml" >/dev/null
"$python" scripts/helm-policy.py --external-secret trailhound-oidc --self-test "$out/tls.yaml" >/dev/null
# What the chart refuses, with the fix named: auth without mTLS, and a
# Certificate without an issuer.
refused() {
  local want="$1"; shift
  local err
  if err=$("$helm" template trailhound "$chart" "$@" 2>&1 >/dev/null); then
    echo "helm chart: rendered $* although it should refuse it" >&2; exit 1
  fi
  grep -qF "$want" <<<"$err" || { echo "helm chart: $* refused without naming $want: $err" >&2; exit 1; }
}
refused "tls.enabled and tls.mtls" --set auth.mode=tokens
refused "tls.enabled and tls.mtls" -f "$chart/values-tls.yaml" --set tls.mtls=false
refused "issuerRef.name" -f "$chart/values-tls.yaml" --set tls.certManager.issuerRef.name=
refused "detect.replicas must be at least 1" --set detect.replicas=0

echo "helm chart: lint, templates (TLS and auth too), schemas, policy and its self-tests, refusals passed"
