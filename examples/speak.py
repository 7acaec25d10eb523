"""Ask the full Qwen2.5-Omni with OmniSIFT a question about a clip and save its spoken answer as a .wav file.

With no arguments this runs offline in seconds: a tiny *random* full model (thinker + talker + token2wav, built in
code by `omnisift_hf.testing_utils.tiny_omni_model` and saved to a temporary directory) answers a question about a
freshly written 3 s synthetic clip with sound, through `pipeline("omni-qa", ..., return_audio=True)`. A random model
speaks noise (near silence at this size) and its text answer is gibberish: the run shows the plumbing, not a voice.
For a real voice, give a full checkpoint that has its talker and speakers (`spk_dict.pt`): Qwen2.5-Omni's own or a
converted OmniSIFT one.

    python examples/speak.py
    python examples/speak.py --output reply.wav --speaker Ethan --keep-ratio 0.15
    python examples/speak.py --model Qwen/Qwen2.5-Omni-7B --video clip.mp4 \\
        --question "What is the person doing?" --keep-ratio 0.25 --device cuda --dtype bfloat16

Prints the answer text and the tokens kept; writes the spoken answer to --output (default: reply.wav), mono 24 kHz,
32-bit float samples.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import soundfile
import torch
from transformers import AutoProcessor, pipeline

from omnisift_hf import OmniSiftOmniForConditionalGeneration
from omnisift_hf.testing_utils import tiny_omni_model, tiny_processor
from omnisift_hf.tools.cli import add_device_and_dtype, parse_device, parse_dtype
from omnisift_hf.tools.synthetic import write_synthetic_clip

TINY_TALKER_MAX_NEW_TOKENS = 40  # codec codes, 50 per second: 0.8 s of speech (a random talker rarely stops)


def step(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model",
        help="full Qwen2.5-Omni / OmniSIFT checkpoint with its talker (directory or Hub id); default: a tiny random "
        "model built in code",
    )
    media = parser.add_mutually_exclusive_group()
    media.add_argument("--video", help="video file (its audio track is heard); default: a synthetic 3 s clip")
    media.add_argument("--audio", help="audio file, instead of a video")
    media.add_argument("--image", help="image file, instead of a video")
    parser.add_argument("--question", default="What is happening in this clip, and what do you hear?")
    parser.add_argument("--speaker", help="voice of the answer (Qwen2.5-Omni: Chelsie or Ethan); default: the model's")
    parser.add_argument("--keep-ratio", type=float, default=0.25, help="fraction of audio+video tokens kept")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="length bound of the text answer")
    parser.add_argument(
        "--talker-max-new-tokens",
        type=int,
        help="length bound of the speech in codec codes, 50 per second (default: 1024 with --model, "
        f"{TINY_TALKER_MAX_NEW_TOKENS} for the tiny random model)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random weights of the tiny model, and torch's seed")
    parser.add_argument("--output", default="reply.wav", help="the .wav file the spoken answer goes to")
    add_device_and_dtype(parser, dtype_default="auto")
    args = parser.parse_args()
    device = parse_device(parser, args)
    talker_max_new_tokens = args.talker_max_new_tokens
    if talker_max_new_tokens is None:
        talker_max_new_tokens = 1024 if args.model else TINY_TALKER_MAX_NEW_TOKENS

    with tempfile.TemporaryDirectory() as scratch:
        model_path = args.model
        if model_path is None:
            step(f"building a tiny random full model (seed {args.seed}) in a temporary directory ...")
            model_path = scratch
            tiny_omni_model(seed=args.seed).save_pretrained(model_path)
            tiny_processor().save_pretrained(model_path)
        step(f"loading {model_path} ...")
        model = OmniSiftOmniForConditionalGeneration.from_pretrained(model_path, dtype=parse_dtype(args))
        processor = AutoProcessor.from_pretrained(model_path)
        pipe = pipeline("omni-qa", model=model, processor=processor, device=device)

        request = {"question": args.question}
        if args.audio or args.image:
            request.update({"audio": args.audio} if args.audio else {"image": args.image})
        else:
            if args.video is None:
                step("writing a synthetic 3 s clip with sound ...")
                args.video = write_synthetic_clip(Path(scratch) / "clip.mp4", seconds=3)
            request["video"] = args.video

        step(f"answering in speech with keep_ratio={args.keep_ratio} ...")
        torch.manual_seed(args.seed)  # the talker samples, token2wav draws noise
        try:
            result = pipe(
                request,
                return_audio=True,
                speaker=args.speaker,
                keep_ratio=args.keep_ratio,
                max_new_tokens=args.max_new_tokens,
                generate_kwargs={"talker_max_new_tokens": talker_max_new_tokens},
            )
        except (FileNotFoundError, IsADirectoryError, ValueError, TypeError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2

    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(output, result["audio"], result["sampling_rate"], subtype="FLOAT")

    print(f"\nquestion: {args.question}")
    print(f"answer:   {result['answer']!r}")
    for modality in ("video", "audio"):
        total, kept = result[f"num_{modality}_tokens"], result[f"num_kept_{modality}_tokens"]
        share = f" ({kept / total:.1%})" if total else ""
        print(f"{modality} tokens kept: {kept}/{total}{share}")
    print(f"prefill length: {result['prompt_tokens']} -> {result['prefill_tokens']} tokens")
    seconds = len(result["audio"]) / result["sampling_rate"]
    print(f"spoken answer: {output} ({seconds:.2f} s, {result['sampling_rate']} Hz, mono)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
