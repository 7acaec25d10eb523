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

`--selector-estimator attention_policy|ste` instead reports the gradient on the selector's logit `z` of every scored
audio token, kept and dropped, beep and other (the model in training mode with that estimator): the straight-through
gate leaves every dropped token at exactly 0, the attention policy does not (`omnisift_hf.attention_policy`).
"""

import argparse
import statistics
import sys

import torch
from transformers import AutoProcessor

from omnisift_hf import OmniSiftForConditionalGeneration
from omnisift_hf.models.qwen2_5_omni.configuration_omnisift import SELECTOR_ESTIMATORS
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


def decision_gradients(model, collator, example, meta) -> dict[str, list[float]]:
    """dL/dz on the selector's logits of one clip's scored audio tokens, grouped as kept / dropped beep / other
    tokens. Runs the model in training mode (the attention-policy estimator acts only there) and restores its mode."""
    captured = {}

    def keep_logits(*args, **kwargs):
        selection = model.select_tokens(*args, **kwargs)
        if selection.audio_logits is not None and selection.audio_logits.requires_grad:
            selection.audio_logits.retain_grad()
            captured["selection"] = selection
        return selection

    was_training = model.training
    model.train()
    try:
        batch = to_model_inputs(collator([example]), model)
        model(**batch, token_selector=keep_logits).loss.backward()
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    groups = {"kept beep": [], "dropped beep": [], "kept other": [], "dropped other": []}
    if not captured:
        return groups
    selection = captured["selection"]
    num_audio = int((batch["input_ids"][0] == model.config.audio_token_id).sum())
    _, beep = event_token_masks(meta, batch["video_grid_thw"][0].tolist(), num_audio)
    grads = selection.audio_logits.grad
    grads = torch.zeros_like(selection.audio_logits) if grads is None else grads
    for token, grad in zip(selection.gated_audio.tolist(), grads.tolist(), strict=True):
        kept = "kept" if bool(selection.audio_keep[token]) else "dropped"
        groups[f"{kept} {'beep' if beep[token] else 'other'}"].append(grad)
    return groups


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", help="OmniSIFT checkpoint directory (model + processor); default: the embedded AVQA model"
    )
    parser.add_argument("--data", default="avqa", help="directory written by examples/make_avqa.py (default: avqa)")
    parser.add_argument("--split", default="train", choices=["train", "validation", "test"])
    parser.add_argument("--clips-per-task", type=int, default=24, help="clips per task (default: 24)")
    parser.add_argument("--keep-ratio", type=float, default=0.25, help="fraction of audio+video tokens kept")
    parser.add_argument(
        "--selector-estimator",
        choices=list(SELECTOR_ESTIMATORS),
        help="report dL/dz on the selector's logits of kept and dropped tokens under this training estimator",
    )
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
    if args.selector_estimator:
        model.config.selector_estimator = args.selector_estimator
        print(f"keep {args.keep_ratio}, {args.selector_estimator}; mean dL/dz on the selector's logits, per group")
        names = ("kept beep", "dropped beep", "kept other", "dropped other")
        print("| task | " + " | ".join(f"{name} (n) | mean" for name in names) + " |")
        print("|---|" + "---|---|" * len(names))
        for task in TASKS:
            groups = {name: [] for name in names}
            for example, meta in zip(examples, metas, strict=True):
                if meta["task"] == task:
                    for name, values in decision_gradients(model, collator, example, meta).items():
                        groups[name] += values
            cells = [f"{len(v)} | {statistics.fmean(v):+.2e}" if v else "0 | -" for v in groups.values()]
            print(f"| {task} | " + " | ".join(cells) + " |")
        return 0
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
