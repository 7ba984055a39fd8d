"""specserve: a Kubernetes operator that serves LLMs on vLLM with speculative decoding and keeps it honest.

It renders vLLM Deployments from SpeculativeServing objects and turns speculation off when Prometheus says it hurts.
"""

__version__ = "0.1.0"
