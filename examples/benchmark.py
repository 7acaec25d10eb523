"""Benchmark OmniSIFT against the full model: prefill FLOPs of the real 7B / 3B thinkers (meta device), prefill and
generate() latency and peak memory on a mid-size random config, padded-batch throughput. Markdown on stdout.

    python examples/benchmark.py                                 # everything (CPU: ~10 minutes)
    python examples/benchmark.py --json results.json             # also the raw numbers
    python examples/benchmark.py --sections flops                # the deterministic FLOPs table only (~1 minute)
    python examples/benchmark.py --quick                         # a smoke run in seconds
    python examples/plot_benchmark.py results.json               # ./benchmark.png: FLOPs, latency against keep ratio

The same as `python -m omnisift_hf.benchmark`; `--help` lists every option and says what is measured how.
"""

import sys

from omnisift_hf.tools.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
