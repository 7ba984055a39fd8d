"""The `specserve` command line: run the operator, print the CRD, render, plan, export or replay a serving, simulate vLLM.

Reads files and prints; may import every layer of the operator, and the simulator only when `simulate` runs.
"""

from specserve.cli.commands import main

__all__ = ["main"]
