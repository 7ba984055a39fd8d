#!/usr/bin/env bash
# Refreshes the copies the install artifacts need (Helm and kustomize cannot read files outside
# their own directory). Run after `specserve crd > crds/...` or after editing the chart's files/.
# tests/install fails, naming this script, whenever a copy is stale.
set -euo pipefail
cd "$(dirname "$0")/.."
CRD=crds/specserve.dev_speculativeservings.yaml
cp "$CRD" charts/specserve/crds/
cp "$CRD" manifests/crds/
cp charts/specserve/crds/kopf.dev_peerings.yaml manifests/crds/
cp charts/specserve/files/grafana-dashboard.json manifests/monitoring/
{
  sed -n '1,/^spec:$/p' manifests/monitoring/prometheusrule.yaml
  sed 's/^/  /; s/^  $//' charts/specserve/files/specserve.rules.yaml
} > manifests/monitoring/prometheusrule.yaml.new
mv manifests/monitoring/prometheusrule.yaml.new manifests/monitoring/prometheusrule.yaml
echo "synced: $CRD, kopf peering CRDs, grafana dashboard, PrometheusRule"
