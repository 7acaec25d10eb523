"""Run OmniSIFT on one audio-visual clip and show what it keeps.

With no arguments this runs offline on the embedded tiny random model and a synthetic clip (a 20 s, 2 fps video
with its audio track interleaved, laid out exactly as the Qwen2.5-Omni processor does), so it shows the mechanics:
tokens kept per modality and prefill FLOPs saved. The tiny model is untrained, so its generated tokens are noise.

    python examples/quickstart.py
    python examples/quickstart.py --keep-ratio 0.35 --seconds 10
"""

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from omnisift_hf import OmniSiftForConditionalGeneration
from omnisift_hf.tiny import tiny_config, tiny_inputs


def prefill_flops(model, inputs, keep_ratio: float) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(**inputs, keep_ratio=keep_ratio)
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep-ratio", type=float, default=0.25, help="fraction of audio+video tokens kept")
    parser.add_argument("--seconds", type=int, default=20, help="length of the synthetic clip (2 fps)")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    model = OmniSiftForConditionalGeneration(tiny_config()).eval()
    # One temporal slice per second at 2 fps; 24 x 24 patches per slice is the processor's default for small
    # frames (144 LLM tokens per slice); 100 mel frames per second give 25 audio tokens per second.
    clip = [("text", 8), ("video", args.seconds, 24, 24, 100 * args.seconds), ("text", 12)]
    inputs = tiny_inputs([clip], seed=args.seed)

    with torch.no_grad():
        out = model(**inputs, keep_ratio=args.keep_ratio)
        tokens = model.generate(**inputs, keep_ratio=args.keep_ratio, max_new_tokens=args.max_new_tokens)
    full, compressed = prefill_flops(model, inputs, 1.0), prefill_flops(model, inputs, args.keep_ratio)

    video, kept_video = out.num_video_tokens.item(), out.num_kept_video_tokens.item()
    audio, kept_audio = out.num_audio_tokens.item(), out.num_kept_audio_tokens.item()
    print(f"clip: {args.seconds} s at 2 fps with audio; keep_ratio={args.keep_ratio}")
    print(f"video tokens kept: {kept_video}/{video} ({kept_video / video:.1%})")
    print(f"audio tokens kept: {kept_audio}/{audio} ({kept_audio / audio:.1%})")
    print(f"audio+video retention: {(kept_video + kept_audio) / (video + audio):.1%}")
    print(f"sequence length: {inputs['input_ids'].shape[1]} -> {out.logits.shape[1]}")
    print(f"prefill FLOPs: {full / 1e9:.2f} G -> {compressed / 1e9:.2f} G ({1 - compressed / full:.1%} saved)")
    print(f"generated token ids (untrained tiny model): {tokens[0, inputs['input_ids'].shape[1] :].tolist()}")


if __name__ == "__main__":
    main()
