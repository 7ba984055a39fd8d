"""The SpeculativeServing API: what users write (spec) and read (status), the CRD generated from it, conditions.

Pure data and validation; imports nothing of specserve but the catalog. Its models are re-exported here (`api.X`).
"""

from specserve.api.spec import *  # noqa: F403
from specserve.api.spec import describe_error, name_problem, section  # noqa: F401
from specserve.api.status import *  # noqa: F403
