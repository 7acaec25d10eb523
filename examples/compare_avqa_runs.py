"""Compare selector training arms on AVQA, each trained with several seeds: every run, each arm's mean, paired
intervals against a baseline at the same retention (per clip averaged over the arm's runs, so the interval covers
the clips and the spread of the runs enters through the mean), the arms against each other, and keep-1.0 accuracy
against the checkpoint they started from.

    python examples/compare_avqa_runs.py --arm ste=eval/ste-s0,eval/ste-s1 --arm policy=eval/policy-s0,eval/policy-s1 \
        --reference eval/start --output-dir compare

Each directory is an `examples/evaluate_avqa.py --per-clip` output (report.json) on the same clips, with keep ratios
1.0 and --keep-ratio and the --baseline method. Writes `comparison.json` and `comparison.md` into --output-dir.
"""

import argparse
import json
import sys
from pathlib import Path

from omnisift_hf.tools.avqa import BASELINES, compare_runs, compare_runs_markdown


def _arm(text: str) -> tuple[str, list[Path]]:
    name, sep, directories = text.partition("=")
    if not sep or not name or not directories:
        raise argparse.ArgumentTypeError(f"--arm {text!r}: write NAME=DIR[,DIR...], e.g. policy=eval/p-s0,eval/p-s1")
    return name, [Path(d) for d in directories.split(",") if d]


def _report(directory: Path) -> dict:
    path = directory / "report.json"
    if not path.is_file():
        raise SystemExit(f"no report.json in {directory}: pass examples/evaluate_avqa.py --output-dir folders")
    report = json.loads(path.read_text())
    report["settings"]["model"] = directory.name  # the tables name each run by its report folder
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arm", type=_arm, action="append", required=True, help="NAME=DIR[,DIR...] (repeat)")
    parser.add_argument("--reference", type=Path, help="report folder whose keep-1.0 accuracy the arms are held to")
    parser.add_argument("--keep-ratio", type=float, default=0.25)
    parser.add_argument("--baseline", default="stvp_random_audio", choices=BASELINES)
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, default=Path("avqa-compare"))
    args = parser.parse_args()

    arms = {name: [_report(d) for d in directories] for name, directories in args.arm}
    reference = _report(args.reference) if args.reference else None
    comparison = compare_runs(arms, args.keep_ratio, args.baseline, reference, args.bootstrap, args.seed)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "comparison.json").write_text(json.dumps(comparison, indent=1) + "\n")
    markdown = compare_runs_markdown(comparison)
    (args.output_dir / "comparison.md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
