"""`python -m specserve_simulator [vllm serve args] [--sim-* options]`.

Exits 2 on arguments vLLM would refuse, like `vllm serve`.
"""

import sys

from specserve_simulator import main

sys.exit(main(prog="python -m specserve_simulator"))
