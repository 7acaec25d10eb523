"""Plot FLOPs, latency and memory against the keep ratio from a benchmark report (Pillow only, no matplotlib).

    python examples/benchmark.py --json results.json
    python examples/plot_benchmark.py results.json                     # writes ./benchmark.png
    python examples/plot_benchmark.py results.json --output-dir plots  # writes plots/benchmark.png

Left panel: prefill FLOPs of the real Qwen2.5-Omni-7B / 3B thinkers relative to the full model (one line per model and
clip length). Right panel: the measured prefill time, time to first token, prefill FLOPs and peak memory of the timed
config, relative to keep ratio 1.0.
"""

import argparse
import json
import sys
from pathlib import Path

from omnisift_hf.tools.visualization import plot_benchmark


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", help="JSON written by `python examples/benchmark.py --json FILE`")
    parser.add_argument("--output-dir", default=".", help="where benchmark.png is written (default: .)")
    args = parser.parse_args()
    with open(args.report) as handle:
        report = json.load(handle)
    output = Path(args.output_dir) / "benchmark.png"
    output.parent.mkdir(parents=True, exist_ok=True)
    plot_benchmark(report).save(output)
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
