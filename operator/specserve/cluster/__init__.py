"""The cluster side: Kopf handlers (reconcile, drift, availability), Kubernetes client, apply, cache, queue, health loop.

All Kubernetes I/O lives here; it may import every other layer of specserve, never the simulator.
"""
