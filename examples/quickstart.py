"""Answer a question about an audio-visual clip with OmniSIFT, and show what it kept and what it saved.

With no arguments this runs offline in seconds: the embedded default, a small OmniSIFT model trained on the synthetic
audio-visual QA clips of `omnisift_hf.avqa` and shipped inside the package (`omnisift_hf.avqa.AVQA_CHECKPOINT`),
answers one question of each AVQA task about freshly written clips (a coloured square shown for about a second, beeps
of four pitches) at keep_ratio=0.25, in one batch, and prints its answers next to the true ones, the tokens kept and
the prefill FLOPs saved. With your own clip, or a real checkpoint:

    python examples/quickstart.py
    python examples/quickstart.py --seed 7 --keep-ratio 0.15
    python examples/quickstart.py --visualize --output-dir out      # also writes out/kept.png
    python examples/quickstart.py --model org/omnisift-qwen2.5-omni-7b --video clip.mp4 \
        --question "What is the person doing?" --keep-ratio 0.25 --device cuda --dtype bfloat16

Writes nothing unless --visualize is given.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from transformers import pipeline

import omnisift_hf  # noqa: F401  (registers the "omni-qa" pipeline and the "omnisift" model type)
from omnisift_hf.processing_omnisift import to_model_inputs
from omnisift_hf.tools.avqa import AVQA_CHECKPOINT, TASKS, make_clip_spec, write_clip
from omnisift_hf.tools.cli import add_device_and_dtype, parse_device
from omnisift_hf.tools.profiling import count_prefill_flops
from omnisift_hf.tools.visualization import render_pipeline


def step(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="OmniSIFT checkpoint (directory or Hub id); default: the embedded AVQA model")
    parser.add_argument("--video", help="video file (mp4, mkv, webm, ...); default: one synthetic AVQA clip per task")
    parser.add_argument("--question", default="What is happening in this video, and what do you hear?")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic clips (default: 0)")
    parser.add_argument("--keep-ratio", type=float, default=0.25, help="fraction of audio+video tokens kept")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    add_device_and_dtype(parser, dtype_default="auto")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count (two extra prefill passes)")
    parser.add_argument(
        "--visualize", action="store_true", help="also draw the kept patches and audio tokens into OUTPUT_DIR/kept.png"
    )
    parser.add_argument("--output-dir", default=".", help="where --visualize writes kept.png (default: .)")
    args = parser.parse_args()
    device = parse_device(parser, args)

    model = args.model or str(AVQA_CHECKPOINT)
    step(f"loading {'the embedded default ' if args.model is None else ''}{model} ...")
    pipe = pipeline("omni-qa", model=model, device=device, dtype=args.dtype)

    with tempfile.TemporaryDirectory() as scratch:
        if args.video is None:
            step(f"writing one synthetic 6 s AVQA clip per task (seed {args.seed}) ...")
            requests, truths = [], []
            for index, task in enumerate(TASKS):
                rng = np.random.default_rng([args.seed, 99, index])  # never a training clip's generator
                spec = make_clip_spec(task, rng)
                path = write_clip(Path(scratch) / f"{task}.mkv", spec, rng)
                requests.append({"video": path, "question": spec["question"]})
                truths.append(spec["answer"])
        else:
            requests, truths = [{"video": args.video, "question": args.question}], [None]
        step(f"decoding {len(requests)} clip(s) (2 frames per second, audio at 16 kHz) ...")
        try:
            inputs = pipe.preprocess(requests[0])
        except (FileNotFoundError, IsADirectoryError, ValueError, TypeError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        if args.visualize:  # inside the block: the synthetic clips live in `scratch`
            picture = Path(args.output_dir) / "kept.png"
            picture.parent.mkdir(parents=True, exist_ok=True)
            step(f"drawing what is kept into {picture} ...")
            render_pipeline(pipe, requests[0]["video"], keep_ratio=args.keep_ratio).save(picture)
        step(f"answering with keep_ratio={args.keep_ratio} (one batch) ...")
        results = pipe(
            requests, batch_size=len(requests), keep_ratio=args.keep_ratio, max_new_tokens=args.max_new_tokens
        )

    correct = 0
    for request, truth, result in zip(requests, truths, results, strict=True):
        print(f"\nquestion: {request['question']}")
        if truth is None:
            print(f"answer:   {result['answer']!r}")
        else:
            correct += result["answer"] == truth.strip()
            print(f"answer:   {result['answer']!r}   (true answer: {truth.strip()!r})")
    if truths[0] is not None:
        print(f"\n{correct}/{len(truths)} correct at keep_ratio={args.keep_ratio}")

    result = results[0]
    print(f"\nfirst clip: {Path(requests[0]['video']).name}")
    for modality in ("video", "audio"):
        total, kept = result[f"num_{modality}_tokens"], result[f"num_kept_{modality}_tokens"]
        share = f" ({kept / total:.1%})" if total else ""
        print(f"{modality} tokens kept: {kept}/{total}{share}")
    media = result["num_video_tokens"] + result["num_audio_tokens"]
    kept = result["num_kept_video_tokens"] + result["num_kept_audio_tokens"]
    if media:
        print(f"audio+video retention: {kept / media:.1%}")
    print(f"prefill length: {result['prompt_tokens']} -> {result['prefill_tokens']} tokens")

    if not args.no_flops:
        step("counting prefill FLOPs at keep_ratio=1.0 and the requested ratio ...")
        model_inputs = to_model_inputs(inputs, pipe.model, pipe.device)
        full = count_prefill_flops(pipe.model, model_inputs, keep_ratio=1.0)
        compressed = count_prefill_flops(pipe.model, model_inputs, keep_ratio=args.keep_ratio)
        for name in ("total", "decoder"):
            saved = 1 - compressed[name] / full[name]
            label = "prefill FLOPs" if name == "total" else "  of which decoder"
            print(f"{label}: {full[name] / 1e9:.2f} G -> {compressed[name] / 1e9:.2f} G ({saved:.1%} saved)")
        if args.model is None:
            print(
                "  (small model: the encoders, paid in full at every ratio, are a large share; "
                "see the README's benchmarks)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
