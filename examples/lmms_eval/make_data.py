"""Write AVQA clips for the `avqa_omnisift` lmms-eval task (avqa_omnisift.yaml): `data/test.jsonl`,
`data/test.meta.jsonl` and `data/clips/test/*.mkv` beside this file (or --output-dir), with omnisift_hf.avqa's own
generator (`generate_avqa`: the test split's clips for the given seed).

    python examples/lmms_eval/make_data.py --per-task 2

lmms-eval 0.7.3 pins PyAV below 16, whose `VideoFrame.reformat` has no `threads` argument; the package's clip writer
(`omnisift_hf.tools.synthetic.mux_video`) passes `threads=1`. Under such a PyAV this script writes the clips with the
same encoder settings, converting frames with PyAV's default threading instead.
"""

import argparse
from pathlib import Path

import av

from omnisift_hf.tools import avqa


def _reformat_has_threads() -> bool:
    frame = av.VideoFrame(16, 16, "rgb24")
    try:
        frame.reformat(format="yuv420p", threads=1)
    except TypeError:
        return False
    return True


def _mux_video_without_threads(container, stream, frames) -> None:
    for frame in frames:
        picture = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format=stream.pix_fmt)
        for packet in stream.encode(picture):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def write_avqa(directory, per_task: int = 2, seed: int = 0) -> dict:
    """`generate_avqa(directory, counts={"test": per_task}, seed=seed)`, under any PyAV lmms-eval allows."""
    if not _reformat_has_threads():
        avqa.mux_video = _mux_video_without_threads  # the name avqa.write_clip calls
    return avqa.generate_avqa(directory, counts={"test": per_task}, seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-task", type=int, default=2, help="clips per AVQA task (5 tasks; default: 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default=str(Path(__file__).resolve().parent / "data"))
    args = parser.parse_args()
    write_avqa(args.output_dir, args.per_task, args.seed)
    print(f"wrote {len(avqa.TASKS) * args.per_task} AVQA clips to {args.output_dir}")


if __name__ == "__main__":
    main()
