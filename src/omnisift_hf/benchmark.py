"""`python -m omnisift_hf.benchmark`: the benchmark harness, which lives in `omnisift_hf.tools.benchmark` (tooling,
never imported by the library)."""

import sys

from .tools.benchmark import *  # noqa: F403
from .tools.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
