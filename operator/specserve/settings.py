"""Operator-wide settings, read from SPECSERVE_* environment variables and overridden by `specserve run` flags.

Per-object behaviour lives in the SpeculativeServing spec; only what is the same for every object is here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SPECSERVE_", extra="ignore")

    namespaces: list[str] = Field(default_factory=list, description="Namespaces to watch; empty means all (cluster-wide).")
    prometheus_url: str = Field(default="http://prometheus-operated.monitoring.svc:9090", description="Default Prometheus for the health loop.")
    log_format: Literal["plain", "json"] = "plain"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    metrics_port: int = Field(default=8081, ge=0, le=65535, description="Port of the operator's own /metrics; 0 turns it off.")
    liveness_endpoint: str = Field(default="http://0.0.0.0:8080/healthz", description="Kopf's liveness endpoint.")
    peering: str | None = Field(default=None, description="Kopf peering name, so only one of several operator replicas is active.")
    peering_lifetime_seconds: int = Field(default=20, ge=10, le=600, description="How long a silent peer counts as alive: a killed leader is replaced after at most this long.")
    poll_interval_seconds: float = Field(default=15.0, ge=1, le=3600, description="How often the poller asks Prometheus; each serving is evaluated at its own healthPolicy.intervalSeconds.")
    prometheus_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    namespace_label: str = Field(default="namespace", description="Metric label that carries the pod's namespace.")
    serving_label: str = Field(default="serving", description="Metric label that carries the specserve.dev/serving pod label.")
    role_label: str = Field(default="role", description="Metric label that carries the specserve.dev/role pod label.")
    retry_first_seconds: float = Field(default=10.0, ge=0.1, le=600, description="First delay after an apply the API server did not take; doubles per attempt.")
    retry_longest_seconds: float = Field(default=600.0, ge=1, le=3600, description="Longest delay between apply attempts.")
    list_chunk_size: int = Field(default=500, ge=0, le=100000, description="Objects per page when listing at start-up; 0 lists everything in one answer.")
    allowed_image_prefixes: list[str] = Field(
        default_factory=list,
        description="The image policy: a serving whose spec.engine.image starts with none of these is refused (Accepted=False, ImageNotAllowed); empty allows every image.",
    )
    pod_monitor_api: Literal["auto", "true", "false"] = Field(default="auto", description="Whether the cluster serves monitoring.coreos.com/v1; auto asks the API server.")
