"""Observation: PromQL over vLLM's metrics, the poll and its reading per serving, export to and replay from JSON Lines.

Does the Prometheus I/O and types what it reads once, for the decision core; never imports the cluster side.
"""
