"""Answer a question about an audio-visual clip with OmniSIFT, and show what it kept and what it saved.

With no arguments this runs offline in seconds: the embedded tiny default (a random-weight OmniSIFT model with a real
Qwen2.5-Omni processor and a small tokenizer) answers a question about a synthetic 20 s clip with sound. The tiny model
is untrained, so its answer is noise; the token counts and FLOPs are real. With a real checkpoint and file:

    python examples/quickstart.py
    python examples/quickstart.py --visualize kept.png
    python examples/quickstart.py --model org/omnisift-qwen2.5-omni-7b --video clip.mp4 \
        --question "What is the person doing?" --keep-ratio 0.25 --device cuda --dtype bfloat16
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import pipeline

import omnisift_hf  # noqa: F401  (registers the "omni-qa" pipeline and the "omnisift" model type)
from omnisift_hf.pipeline_omni_qa import to_model_inputs
from omnisift_hf.profiling import count_prefill_flops
from omnisift_hf.tiny import tiny_model, tiny_processor, write_synthetic_clip
from omnisift_hf.visualization import render_pipeline


def step(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="OmniSIFT checkpoint (directory or Hub id); default: the embedded tiny model")
    parser.add_argument("--video", help="video file (mp4, mkv, webm, ...); default: a synthetic 20 s clip with audio")
    parser.add_argument("--question", default="What is happening in this video, and what do you hear?")
    parser.add_argument("--keep-ratio", type=float, default=0.25, help="fraction of audio+video tokens kept")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--device", default=None, help="e.g. cuda, cpu (default: cuda if available)")
    parser.add_argument("--dtype", default="auto", help="model dtype: auto, bfloat16, float32")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count (two extra prefill passes)")
    parser.add_argument("--visualize", metavar="PNG", help="save a picture of the kept patches and audio tokens")
    args = parser.parse_args()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")

    if args.model is None:
        step("building the embedded tiny default (random weights, real processor) ...")
        pipe = pipeline("omni-qa", model=tiny_model(), processor=tiny_processor(), device=device)
    else:
        step(f"loading {args.model} ...")
        pipe = pipeline("omni-qa", model=args.model, device=device, dtype=args.dtype)

    with tempfile.TemporaryDirectory() as scratch:
        video = args.video
        if video is None:
            step("writing a synthetic 20 s clip with audio (PyAV) ...")
            video = write_synthetic_clip(Path(scratch) / "clip.mp4", seconds=20.0)
        step(f"decoding {video} (2 frames per second, audio at 16 kHz) ...")
        try:
            inputs = pipe.preprocess({"video": video, "question": args.question})
        except (FileNotFoundError, IsADirectoryError, ValueError, TypeError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        if args.visualize:  # inside the block: the synthetic clip lives in `scratch`
            step(f"drawing what is kept into {args.visualize} ...")
            render_pipeline(pipe, video, keep_ratio=args.keep_ratio).save(args.visualize)

    step(f"answering with keep_ratio={args.keep_ratio} ...")
    outputs = pipe.forward(
        inputs, generate_kwargs={"keep_ratio": args.keep_ratio, "max_new_tokens": args.max_new_tokens}
    )
    result = pipe.postprocess(outputs)

    print(f"\nquestion: {args.question}")
    print(f"answer:   {result['answer']!r}" + ("  (untrained tiny model: noise)" if args.model is None else ""))
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
                "  (tiny model: the encoders, paid in full at every ratio, are a large share; see the README's benchmarks)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
