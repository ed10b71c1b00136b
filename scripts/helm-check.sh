#!/usr/bin/env bash
# Checks the Helm chart (deploy/helm/trailhound) without a cluster: helm
# lint, helm template with the default values and with values-aws.yaml,
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
"$python" scripts/helm-policy.py "$out/default.yaml" "$out/aws.yaml"
"$python" scripts/helm-policy.py --self-test "$out/default.yaml" >/dev/null
echo "helm chart: lint, templates, schemas, policy and its self-test passed"
