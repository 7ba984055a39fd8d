"""Rendering: a serving's spec and decisions become Kubernetes objects, and its GPU memory budget is planned.

Pure: spec in, objects and plans out. May import api, engine, catalog and the decision core; never the cluster side.
"""
