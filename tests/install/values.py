"""Value sets the chart tests render: the defaults and non-default combinations that exercise every template branch.

Named so a failing test says which install it was.
"""

from __future__ import annotations

from typing import Any

DEFAULT: dict[str, Any] = {}

CLUSTER_EVERYTHING: dict[str, Any] = {
    "replicaCount": 2,
    "peering": {"enabled": True, "name": "specserve-ha"},
    "image": {"repository": "registry.example.com/specserve", "digest": "sha256:" + "a" * 64, "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "regcred"}],
    "operator": {"prometheusUrl": "http://prometheus.monitoring.svc:9090", "podMonitorApi": "true", "logFormat": "plain", "logLevel": "DEBUG", "healthPort": 9080, "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}], "allowedImagePrefixes": ["registry.example.com/vllm/", "vllm/vllm-openai:"]},
    "serviceAccount": {"annotations": {"iam.gke.io/gcp-service-account": "specserve@example.iam.gserviceaccount.com"}},
    "metrics": {"port": 9100, "service": {"port": 9100}, "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}},
    "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "LLM"}},
    "podAnnotations": {"example.com/team": "ml-platform"},
    "podLabels": {"team": "ml-platform"},
    "priorityClassName": "system-cluster-critical",
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
}

NAMESPACED: dict[str, Any] = {
    "watch": {"namespaces": ["team-a", "team-b"]},
    "replicaCount": 2,
    "peering": {"enabled": True},
}

NAMESPACED_MINIMAL: dict[str, Any] = {
    "watch": {"namespaces": ["team-a"]},
    "rbac": {"kopfDiscovery": False},
    "serviceAccount": {"create": False, "name": "existing"},
}

ALL = {"default": DEFAULT, "cluster-everything": CLUSTER_EVERYTHING, "namespaced": NAMESPACED, "namespaced-minimal": NAMESPACED_MINIMAL}
