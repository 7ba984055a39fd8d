"""`python -m specserve.cli ...`: the `specserve` command without its console script.

Same arguments, output and exit codes as `specserve`.
"""

import sys

from specserve.cli.commands import main

sys.exit(main())
