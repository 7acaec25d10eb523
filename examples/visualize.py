"""Draw what OmniSIFT keeps of a clip: the sampled frames with dropped patches greyed out, and the audio timeline with
the kept tokens marked, as a PNG.

With no arguments this runs offline in seconds on the embedded tiny default (random weights drawn from --seed, so
which tokens survive is arbitrary; the layout, counts and mapping are real) and a synthetic 20 s clip with sound:

    python examples/visualize.py                                    # writes ./compressed.png
    python examples/visualize.py --model org/omnisift-qwen2.5-omni-7b --video clip.mp4 --keep-ratio 0.25 \
        --output-dir pictures --device cuda --dtype bfloat16

Writes `<output-dir>/compressed.png`.
"""

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from transformers import pipeline

import omnisift_hf  # noqa: F401  (registers the "omni-qa" pipeline)
from omnisift_hf.testing_utils import tiny_model, tiny_processor
from omnisift_hf.tools.cli import add_device_and_dtype, parse_device
from omnisift_hf.tools.synthetic import write_synthetic_clip
from omnisift_hf.tools.visualization import render_pipeline


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="OmniSIFT checkpoint (directory or Hub id); default: the embedded tiny model")
    parser.add_argument("--video", help="video file; default: a synthetic 20 s clip with audio")
    parser.add_argument("--keep-ratio", type=float, default=0.25, help="fraction of audio+video tokens kept")
    parser.add_argument("--seed", type=int, default=0, help="seed of the tiny default's random weights (default: 0)")
    parser.add_argument("--output-dir", default=".", help="where compressed.png is written (default: .)")
    parser.add_argument("--columns", type=int, help="frames per row (default: up to 8)")
    parser.add_argument("--block-pixels", type=int, default=12, help="size of one token's block in the picture")
    add_device_and_dtype(parser, dtype_default="auto")
    args = parser.parse_args()
    device = parse_device(parser, args)

    if args.model is None:
        model = tiny_model(seed=args.seed)
        if args.dtype != "auto":
            model = model.to(getattr(torch, args.dtype))
        pipe = pipeline("omni-qa", model=model, processor=tiny_processor(), device=device)
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
    output = Path(args.output_dir) / "compressed.png"
    output.parent.mkdir(parents=True, exist_ok=True)
    picture.save(output)
    print(
        f"wrote {output} ({picture.image.width} x {picture.image.height}): video tokens kept "
        f"{picture.num_kept_video_tokens}/{picture.num_video_tokens}, audio tokens kept "
        f"{picture.num_kept_audio_tokens}/{picture.num_audio_tokens}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
