"""Which audio tokens the straight-through gate asks the selector to keep, on AVQA clips.

The selector only learns from the gradient of the LM loss with respect to its gates `m = (hard - s).detach() + s`.
For a kept token that gradient is `<dL/d(gated embedding), embedding>`: negative means "scale this token up" (its score
rises), positive "scale it down". This script runs one clip at a time at a keep ratio, backpropagates the answer's
loss and reports the mean gate gradient over the kept beep tokens and over the other kept audio tokens, per task.
If the beeps do not get the more negative gradient, training cannot teach the selector to keep them.

    python examples/make_avqa.py --output-dir avqa          # the dataset (once)
    python examples/avqa_gate_gradients.py --model MODEL --data avqa --split train --clips-per-task 24

--model defaults to the embedded AVQA default; --data (default: avqa) must hold a dataset written by
examples/make_avqa.py. Prints a markdown table; writes nothing.
"""

import argparse
import statistics
import sys

from transformers import AutoProcessor

from omnisift_hf import OmniSiftForConditionalGeneration
from omnisift_hf.processing_omnisift import to_model_inputs
from omnisift_hf.tools.avqa import AVQA_CHECKPOINT, TASKS, event_token_masks, load_avqa_split
from omnisift_hf.tools.cli import add_device_and_dtype, parse_device, parse_dtype
from omnisift_hf.training import OmniQADataCollator


def gate_gradients(model, collator, example, meta) -> tuple[list[float], list[float]]:
    """Gate gradients of the kept beep tokens and of the other kept audio tokens of one clip."""
    captured = {}

    def keep_gate(*args, **kwargs):  # the model's own selection; only keeps a handle on the gate tensor
        selection = model.select_tokens(*args, **kwargs)
        if selection.audio_gate is not None and selection.audio_gate.requires_grad:
            selection.audio_gate.retain_grad()
            captured["selection"] = selection
        return selection

    batch = to_model_inputs(collator([example]), model)  # on the model's device, floating inputs in its dtype
    model(**batch, token_selector=keep_gate).loss.backward()
    model.zero_grad(set_to_none=True)
    if not captured:
        return [], []
    selection = captured["selection"]
    num_audio = int((batch["input_ids"][0] == model.config.audio_token_id).sum())
    _, beep = event_token_masks(meta, batch["video_grid_thw"][0].tolist(), num_audio)
    gate = selection.audio_gate
    on_beep, elsewhere = [], []
    for token, grad, kept in zip(
        selection.gated_audio.tolist(), gate.grad.tolist(), gate.detach().tolist(), strict=True
    ):
        if kept > 0.5:
            (on_beep if beep[token] else elsewhere).append(grad)
    return on_beep, elsewhere


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", help="OmniSIFT checkpoint directory (model + processor); default: the embedded AVQA model"
    )
    parser.add_argument("--data", default="avqa", help="directory written by examples/make_avqa.py (default: avqa)")
    parser.add_argument("--split", default="train", choices=["train", "validation", "test"])
    parser.add_argument("--clips-per-task", type=int, default=24, help="clips per task (default: 24)")
    parser.add_argument("--keep-ratio", type=float, default=0.25, help="fraction of audio+video tokens kept")
    add_device_and_dtype(parser, dtype_default="float32")
    args = parser.parse_args()
    device = parse_device(parser, args)

    try:
        examples, metas = load_avqa_split(args.data, args.split, limit_per_task=args.clips_per_task)
    except FileNotFoundError as error:
        parser.error(str(error))
    checkpoint = args.model or str(AVQA_CHECKPOINT)
    dtype = parse_dtype(args)
    model = OmniSiftForConditionalGeneration.from_pretrained(checkpoint, dtype=dtype).to(device).eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    collator = OmniQADataCollator(processor, keep_ratio=args.keep_ratio)  # frames sampled as the processor says
    print(f"keep {args.keep_ratio}; mean dL/dgate over kept audio tokens (negative = 'keep more')")
    print("| task | kept beep tokens | mean on beeps | kept other tokens | mean elsewhere |")
    print("|---|---|---|---|---|")
    for task in TASKS:
        on_beep, elsewhere = [], []
        for example, meta in zip(examples, metas, strict=True):
            if meta["task"] == task:
                beep, other = gate_gradients(model, collator, example, meta)
                on_beep += beep
                elsewhere += other
        mean = {name: f"{statistics.fmean(v):+.2e}" if v else "-" for name, v in (("b", on_beep), ("o", elsewhere))}
        print(f"| {task} | {len(on_beep)} | {mean['b']} | {len(elsewhere)} | {mean['o']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
