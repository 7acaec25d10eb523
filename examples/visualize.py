"""Draw what OmniSIFT keeps of a clip: the sampled frames with dropped patches greyed out, and the audio timeline with
the kept tokens marked, as a PNG.

With no arguments this runs offline in seconds on the embedded tiny default (random weights, so which tokens survive
is arbitrary; the layout, counts and mapping are real) and a synthetic 20 s clip with sound:

    python examples/visualize.py
    python examples/visualize.py --model org/omnisift-qwen2.5-omni-7b --video clip.mp4 --keep-ratio 0.25 \
        --output kept.png --device cuda --dtype bfloat16
"""

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from transformers import pipeline

import omnisift_hf  # noqa: F401  (registers the "omni-qa" pipeline)
from omnisift_hf.testing_utils import tiny_model, tiny_processor
from omnisift_hf.tools.synthetic import write_synthetic_clip
from omnisift_hf.tools.visualization import render_pipeline


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="OmniSIFT checkpoint (directory or Hub id); default: the embedded tiny model")
    parser.add_argument("--video", help="video file; default: a synthetic 20 s clip with audio")
    parser.add_argument("--keep-ratio", type=float, default=0.25, help="fraction of audio+video tokens kept")
    parser.add_argument("--output", default="compressed.png", help="PNG to write (default compressed.png)")
    parser.add_argument("--columns", type=int, help="frames per row (default: up to 8)")
    parser.add_argument("--block-pixels", type=int, default=12, help="size of one token's block in the picture")
    parser.add_argument("--device", default=None, help="e.g. cuda, cpu (default: cuda if available)")
    parser.add_argument("--dtype", default="auto", help="model dtype: auto, bfloat16, float32")
    args = parser.parse_args()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")

    if args.model is None:
        pipe = pipeline("omni-qa", model=tiny_model(), processor=tiny_processor(), device=device)
    else:
        pipe = pipeline("omni-qa", model=args.model, device=device, dtype=args.dtype)
    with tempfile.TemporaryDirectory() as scratch:
        video = args.video or write_synthetic_clip(Path(scratch) / "clip.mp4", seconds=20.0)
        try:
            picture = render_pipeline(
                pipe, video, keep_ratio=args.keep_ratio, columns=args.columns, block_pixels=args.block_pixels
            )
        except (FileNotFoundError, IsADirectoryError, ValueError, TypeError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    picture.save(args.output)
    print(
        f"wrote {args.output} ({picture.image.width} x {picture.image.height}): video tokens kept "
        f"{picture.num_kept_video_tokens}/{picture.num_video_tokens}, audio tokens kept "
        f"{picture.num_kept_audio_tokens}/{picture.num_audio_tokens}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
