"""Evaluate an OmniSIFT checkpoint on the AVQA test split: accuracy per task at several keep ratios, baselines at the
same retention (random dropping, uniform temporal subsampling, STVP + random audio), event-token recall, paired
bootstrap 95% intervals of OmniSIFT minus each baseline, and a "drop all audio" ablation.

    python examples/make_avqa.py --output-dir avqa
    python examples/evaluate_avqa.py --model omnisift-avqa --data avqa --output-dir avqa-eval
    python examples/evaluate_avqa.py --data avqa --limit-per-task 20      # the embedded default, 20 clips per task

Writes `report.json` (per-condition summaries and paired differences; `--per-clip` adds every clip's result),
`report.md` (the tables) and `accuracy_vs_retention.png` into --output-dir. Scoring is teacher-forced over each task's
candidate answer tokens (see `omnisift_hf.avqa`).
"""

import argparse
import json
import sys
import time
from pathlib import Path

from transformers import AutoProcessor

from omnisift_hf import OmniSiftForConditionalGeneration
from omnisift_hf.tools.avqa import AVQA_CHECKPOINT, METHODS, evaluate_avqa, load_avqa_split, markdown_report, plot_avqa
from omnisift_hf.tools.cli import add_device_and_dtype, parse_device, parse_dtype


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", help="OmniSIFT checkpoint directory (model + processor); default: the embedded AVQA model"
    )
    parser.add_argument("--data", default="avqa", help="directory written by examples/make_avqa.py (default: avqa)")
    parser.add_argument("--split", default="test", choices=["train", "validation", "test"])
    parser.add_argument("--limit-per-task", type=int, help="evaluate only the first N clips of each task")
    parser.add_argument("--keep-ratios", type=float, nargs="+", default=[1.0, 0.5, 0.35, 0.25, 0.15])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--no-ablation", action="store_true", help="skip the drop-all-audio ablation")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the paired intervals")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the random baselines and the bootstrap (default: 0)"
    )
    parser.add_argument("--per-clip", action="store_true", help="keep every clip's result in report.json")
    parser.add_argument("--output-dir", default="avqa-eval", help="where the reports are written (default: avqa-eval)")
    add_device_and_dtype(parser, dtype_default="float32")
    args = parser.parse_args()
    device = parse_device(parser, args)

    try:
        examples, metas = load_avqa_split(args.data, args.split, args.limit_per_task)
    except FileNotFoundError as error:
        parser.error(str(error))
    checkpoint = args.model or str(AVQA_CHECKPOINT)
    dtype = parse_dtype(args)
    model = OmniSiftForConditionalGeneration.from_pretrained(checkpoint, dtype=dtype)
    processor = AutoProcessor.from_pretrained(checkpoint)
    model.to(device).eval()
    start = time.perf_counter()
    report = evaluate_avqa(
        model,
        processor,
        examples,
        metas,
        keep_ratios=args.keep_ratios,
        methods=args.methods,
        no_audio=not args.no_ablation,
        batch_size=args.batch_size,
        seed=args.seed,
        bootstrap=args.bootstrap,
        progress=True,
    )
    report["settings"] = {
        "model": args.model or "the embedded default (omnisift_hf.avqa.AVQA_CHECKPOINT)",
        "data": str(args.data),
        "split": args.split,
        "clips": len(examples),
        "seed": args.seed,
        "seconds": round(time.perf_counter() - start, 1),
        "device": device,
        "dtype": str(model.dtype).removeprefix("torch."),
    }
    if not args.per_clip:
        report.pop("per_clip")
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    table = markdown_report(report)
    (output / "report.md").write_text(table)
    plot_avqa(report).save(output / "accuracy_vs_retention.png")
    print(table)
    print(
        f"wrote {output / 'report.json'}, report.md and accuracy_vs_retention.png ({len(examples)} clips, "
        f"{report['settings']['seconds']} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
