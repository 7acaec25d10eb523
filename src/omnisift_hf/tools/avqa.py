"""AVQA: a synthetic audio-visual question-answering benchmark for measuring what token compression keeps.

Every clip is a static grey background with silence plus steady low noise, and the answer depends on *brief* events:
a coloured square visible for about one second and/or a beep of 0.3-0.5 s. Throwing away the wrong tokens loses the
answer, so accuracy against retention measures whether a selector keeps the informative tokens.

Clips (`clip_seconds` = 6 s by default) are 112 x 112 H.264 video at 10 fps with a lossless FLAC audio track
(16 kHz) in Matroska (`.mkv`, so beep timings are exact: no AAC priming delay). Sample them with
[`AVQA_VIDEO_SAMPLING`] (Qwen's 2 fps policy, but `min_pixels = max_pixels = 112 * 112`): frames stay 112 x 112 =
4 x 4 merged tokens = **16 video tokens per temporal slice** (one slice = 2 sampled frames = ~1 s). With the default
`VideoSampling` the processor upscales every frame to >= 128 tokens (8x the tokens and far slower training for no
extra information).

Task mix (one question per clip; every clip also has an event of the other modality as a distractor):

| task    | clip                                                 | question (`QUESTIONS`)                          |
|---------|------------------------------------------------------|-------------------------------------------------|
| `color` | 1 square (~1 s), 1 beep of random pitch              | What color was the square?                      |
| `pitch` | 1 beep, 1 square                                     | Which pitch was the beep, 1 (lowest) to 4?      |
| `count` | 1-3 beeps (same pitch), 1 square                     | How many beeps did you hear?                    |
| `order` | 1 square, 1 beep at different times (>= 0.5 s apart) | Which came first, the beep or the square?       |
| `cross` | 2 squares of different colours, 1 beep during one    | What color was on screen when the beep sounded? |

Answers (`ANSWERS`): `color` and `cross` ` red` ` green` ` blue` ` yellow`; `pitch` `1` `2` `3` `4`; `count` `1`
`2` `3`; `order` ` beep` ` square`.

Beep pitches are 300 / 500 / 800 / 1300 Hz. Every answer is one token of `tiny_tokenizer()` (the answer strings carry
their leading space where the single token has one: `" red"` is one token, `"red"` is two). Answers are drawn
uniformly per task (`order`: the two events are placed at random times, so its answers are balanced only on average).
`avqa_model()` builds a larger random model (text hidden 128, 4 layers, 2-layer encoders) to train on it.

Events map to tokens through the processor's layout (`event_token_masks`): video token `k` of a sample is temporal
slice `k // 16`, merged patch row `(k % 16) // 4`, column `k % 4` (28 x 28 pixels each); slice `s` is sampled frames
`2s, 2s+1`, whose times come from the same sampling as `load_video`. A square token is a (slice, patch) where the
square covers >= 1/4 of the patch in either frame. Audio token `j` covers `[0.04 j, 0.04 (j+1))` s
(`AUDIO_TOKENS_PER_SECOND` = 25 per second);
a beep token overlaps a beep by >= 20 ms.

Evaluation ([`evaluate_avqa`]) is teacher-forced: the prompt plus the answer is run once per condition and the logits
at the answer position are compared over the task's candidate answer tokens (single-token answers make this a
classification); `accuracy` is that, `top1` is the argmax over the whole vocabulary. Baselines are `token_selector`s
([`baseline_selector`], the model's public selection hook): they run OmniSIFT's selection first and then choose
*different* tokens with *the same counts* per frame (video) and per window (audio), so retention matches exactly:
`random` (random video per frame, random audio per window), `uniform` (whole frames evenly spaced in time, the
sample's kept-video count filled exactly, the last chosen frame partly with evenly spaced patches; audio evenly
strided per window), `stvp_random_audio` (STVP's video, random audio per window) and the ablation `no_audio` (all
video, no audio tokens).

Diagnostics of the learned audio selector: `oracle_audio` ([`ORACLES`]) is an upper bound for any audio selector at
OmniSIFT's retention: STVP's video, and in every window the selector scored, as many audio tokens as OmniSIFT keeps
there, the event (beep) tokens first, then the other tokens in the selector's order (highest score first; with no
beep in a window it keeps exactly OmniSIFT's tokens). The report's `selector_auroc` gives, per OmniSIFT keep ratio and
task, the AUROC of the selector's logits for beep against other audio tokens ([`selector_auroc`]; the tokens the
selector scored, pooled over the task's clips that have both kinds; `clip_mean` averages the clips' own AUROCs;
`window_auroc` counts only pairs of one window, the comparisons top-k per window makes): 0.5 is chance, 1.0 ranks
every beep token above every other token.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import os
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image, ImageDraw

from ..compression import segment_rank
from ..media import AUDIO_TOKENS_PER_SECOND, SAMPLING_RATE, VideoSampling, _sample_indices
from ..models.qwen2_5_omni.modeling_omnisift import OmniSiftForConditionalGeneration
from ..processing_omnisift import to_model_inputs
from ..testing_utils import TINY_TOKEN_IDS, TINY_VOCAB_SIZE, tiny_config, tiny_model
from ..training import OmniQADataCollator, OmniQADataset
from .synthetic import mux_audio, mux_video
from .visualization import _panel

__all__ = [
    "ANSWERS",
    "AVQA_CHECKPOINT",
    "AVQA_VIDEO_SAMPLING",
    "BASELINES",
    "COLORS",
    "METHODS",
    "ORACLES",
    "PITCHES_HZ",
    "QUESTIONS",
    "SPLITS",
    "TASKS",
    "avqa_model",
    "baseline_selector",
    "compare_runs",
    "compare_runs_markdown",
    "evaluate_avqa",
    "event_token_masks",
    "generate_avqa",
    "load_avqa_split",
    "make_clip_spec",
    "markdown_report",
    "plot_avqa",
    "selector_auroc",
    "write_clip",
]

TASKS = ("color", "pitch", "count", "order", "cross")
SPLITS = ("train", "validation", "test")
COLORS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 230), "yellow": (240, 220, 40)}
PITCHES_HZ = (300.0, 500.0, 800.0, 1300.0)
QUESTIONS = {
    "color": "What color was the square?",
    "pitch": "Which pitch was the beep, 1 (lowest) to 4 (highest)?",
    "count": "How many beeps did you hear?",
    "order": "Which came first, the beep or the square?",
    "cross": "What color was on screen when the beep sounded?",
}
ANSWERS = {
    "color": tuple(f" {c}" for c in COLORS),
    "pitch": ("1", "2", "3", "4"),
    "count": ("1", "2", "3"),
    "order": (" beep", " square"),
    "cross": tuple(f" {c}" for c in COLORS),
}
# 112 x 112 frames stay 112 x 112: 16 merged tokens per temporal slice (see the module docstring).
AVQA_VIDEO_SAMPLING = VideoSampling(fps=2.0, min_pixels=112 * 112, max_pixels=112 * 112)
BASELINES = ("random", "uniform", "stvp_random_audio")
# Upper bounds that read the events (not a selector a model could use); see the module docstring.
ORACLES = ("oracle_audio",)
METHODS = ("omnisift", *BASELINES, *ORACLES)

# The embedded default: a small OmniSIFT model trained on AVQA (how: examples/avqa_default.sh), installed with
# the package. `pipeline("omni-qa", model=str(AVQA_CHECKPOINT))`; its processor samples frames at 112 x 112.
AVQA_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "avqa-tiny"

_SPLIT_INDEX = {split: i for i, split in enumerate(SPLITS)}


# ---------------------------------------------------------------------------------------------------------------------
# Clip specifications
# ---------------------------------------------------------------------------------------------------------------------
def _place(rng, duration: float, lo: float, hi: float, taken: list[tuple[float, float]], gap: float) -> float:
    """A start time in [lo, hi - duration] whose interval keeps `gap` seconds from every interval in `taken`."""
    for _ in range(1000):
        start = float(rng.uniform(lo, hi - duration))
        if all(start + duration + gap <= s or start >= e + gap for s, e in taken):
            return round(start, 3)
    raise RuntimeError("AVQA: could not place an event; use longer clips")


def _square(rng, color: str, start: float, duration: float, size: int, side: int) -> dict:
    x, y = (int(v) for v in rng.integers(0, size - side + 1, size=2))
    return {"color": color, "start": start, "end": round(start + duration, 3), "x": x, "y": y, "side": side}


def make_clip_spec(task: str, rng: np.random.Generator, clip_seconds: float = 6.0, size: int = 112) -> dict:
    """The events and the question/answer of one clip of `task` (pure function of `rng`).

    Returns `{"task", "question", "answer", "squares": [{color, start, end, x, y, side}], "beeps": [{pitch, hz,
    start, end}], "seconds", "size"}` (times in seconds, square position in pixels of the `size` x `size` frame).
    """
    if task not in TASKS:
        raise ValueError(f"AVQA: unknown task {task!r}; choose from {TASKS}")
    colors = list(COLORS)
    lo, hi = 0.3, clip_seconds - 0.3
    side = int(rng.integers(size // 4, size // 2 + 1))
    squares, beeps, taken = [], [], []

    def add_beep(pitch: int, start: float | None = None, gap: float = 0.3) -> None:
        duration = round(float(rng.uniform(0.3, 0.5)), 3)
        if start is None:
            start = _place(rng, duration, lo, hi, taken, gap)
        beeps.append({"pitch": pitch + 1, "hz": PITCHES_HZ[pitch], "start": start, "end": round(start + duration, 3)})
        taken.append((start, start + duration))

    def add_square(color: str, gap: float = 0.0, avoid: bool = False) -> dict:
        duration = round(float(rng.uniform(0.9, 1.2)), 3)
        start = _place(rng, duration, lo, hi, taken if avoid else [s[:2] for s in square_spans], gap)
        square = _square(rng, color, start, duration, size, side)
        squares.append(square)
        square_spans.append((start, start + duration))
        if avoid:
            taken.append((start, start + duration))
        return square

    square_spans: list[tuple[float, float]] = []
    if task == "color":
        answer_color = colors[int(rng.integers(len(colors)))]
        add_square(answer_color)
        add_beep(int(rng.integers(len(PITCHES_HZ))))
        answer = f" {answer_color}"
    elif task == "pitch":
        pitch = int(rng.integers(len(PITCHES_HZ)))
        add_beep(pitch)
        add_square(colors[int(rng.integers(len(colors)))])
        answer = str(pitch + 1)
    elif task == "count":
        count = int(rng.integers(1, 4))
        pitch = int(rng.integers(len(PITCHES_HZ)))
        for _ in range(count):
            add_beep(pitch, gap=0.4)
        beeps.sort(key=lambda beep: beep["start"])
        add_square(colors[int(rng.integers(len(colors)))])
        answer = str(count)
    elif task == "order":
        beep_first = bool(rng.integers(2))
        color = colors[int(rng.integers(len(colors)))]
        if beep_first:
            add_beep(int(rng.integers(len(PITCHES_HZ))))
            add_square(color, gap=0.5, avoid=True)
        else:
            add_square(color, gap=0.5, avoid=True)
            add_beep(int(rng.integers(len(PITCHES_HZ))), gap=0.5)
        first_is_beep = beeps[0]["start"] < squares[0]["start"]
        answer = " beep" if first_is_beep else " square"
    else:  # cross
        first, second = rng.choice(len(colors), size=2, replace=False)
        add_square(colors[int(first)])
        add_square(colors[int(second)], gap=0.5)
        target = squares[int(rng.integers(2))]
        duration = round(float(rng.uniform(0.3, 0.5)), 3)
        start = round(float(rng.uniform(target["start"] + 0.1, target["end"] - 0.1 - duration)), 3)
        add_beep(int(rng.integers(len(PITCHES_HZ))), start=start)
        answer = f" {target['color']}"
    return {
        "task": task,
        "question": QUESTIONS[task],
        "answer": answer,
        "squares": sorted(squares, key=lambda s: s["start"]),
        "beeps": beeps,
        "seconds": clip_seconds,
        "size": size,
    }


def write_clip(path, spec: dict, rng: np.random.Generator, fps: int = 10, noise: float = 0.005) -> str:
    """Write the clip of `spec` with PyAV: H.264 video (grey 128 background, the squares while visible; frame `i`
    shows a square when `start <= i / fps < end`) and mono 16 kHz FLAC audio (lossless) (Gaussian noise of std
    `noise`, sine beeps of amplitude 0.5 with 10 ms fades). Use a `.mkv` path."""
    size, seconds = spec["size"], spec["seconds"]
    num_frames = round(seconds * fps)
    samples = round(seconds * SAMPLING_RATE)
    wave = (noise * rng.standard_normal(samples)).astype(np.float32)
    for beep in spec["beeps"]:
        start, end = round(beep["start"] * SAMPLING_RATE), round(beep["end"] * SAMPLING_RATE)
        time = np.arange(end - start) / SAMPLING_RATE
        envelope = np.minimum(1.0, np.minimum(time, time[::-1]) / 0.01)
        wave[start:end] += (0.5 * envelope * np.sin(2 * math.pi * beep["hz"] * time)).astype(np.float32)
    pcm = (np.clip(wave, -1, 1) * 32767).astype(np.int16)

    # bitexact: no random Matroska UIDs or encoder version strings, so the same seed writes the same bytes.
    with av.open(os.fspath(path), mode="w", options={"fflags": "+bitexact"}) as container:
        video = container.add_stream("libx264", rate=fps)
        video.width = video.height = size
        video.pix_fmt = "yuv420p"
        video.options = {"crf": "18", "preset": "veryfast", "threads": "1"}
        # One encoding thread, set on the context itself too: PyAV opens codecs with automatic slice threading.
        video.codec_context.thread_count = 1
        video.codec_context.thread_type = "NONE"
        video.codec_context.flags |= av.codec.context.Flags.bitexact
        audio = container.add_stream("flac", rate=SAMPLING_RATE, layout="mono")

        def frames():
            for index in range(num_frames):
                frame = np.full((size, size, 3), 128, dtype=np.uint8)
                for square in spec["squares"]:
                    if square["start"] <= index / fps < square["end"]:
                        x, y, side = square["x"], square["y"], square["side"]
                        frame[y : y + side, x : x + side] = COLORS[square["color"]]
                yield frame

        mux_video(container, video, frames())
        mux_audio(container, audio, pcm)
    return os.fspath(path)


def _write_one(job: tuple) -> tuple[dict, dict]:
    directory, seed, split, task, index, clip_seconds, size, fps = job
    rng = np.random.default_rng([seed, _SPLIT_INDEX[split], TASKS.index(task), index])
    spec = make_clip_spec(task, rng, clip_seconds, size)
    clip_id = f"{split}-{task}-{index:05d}"
    relative = f"clips/{split}/{clip_id}.mkv"
    write_clip(Path(directory) / relative, spec, rng, fps=fps)
    line = {"id": clip_id, "video": relative, "question": spec["question"], "answer": spec["answer"]}
    return line, {"id": clip_id, "video": relative, "fps": fps, **spec}


def generate_avqa(
    directory,
    counts: dict[str, int] | int = 200,
    seed: int = 0,
    tasks: Sequence[str] = TASKS,
    clip_seconds: float = 6.0,
    size: int = 112,
    fps: int = 10,
    num_workers: int = 1,
) -> dict:
    """Write an AVQA dataset into `directory`: `clips/<split>/<id>.mkv`, `<split>.jsonl` (the `OmniQADataset`
    format: `video`, `question`, `answer`, `id`), `<split>.meta.jsonl` (the same ids with their events, for
    evaluation) and `avqa.json` (the settings). Returns the settings.

    counts: clips per task and split (`{"train": 2000, "validation": 100, "test": 500}`, or one int for all).
    Each clip is drawn from `np.random.default_rng([seed, split, task, index])`: deterministic, independent of the
    other counts and of `num_workers` (processes writing clips in parallel), and the splits never share a generator
    (disjoint by construction).
    """
    directory = Path(directory)
    if isinstance(counts, int):
        counts = dict.fromkeys(SPLITS, counts)
    unknown = set(counts) - set(SPLITS)
    if unknown:
        raise ValueError(f"AVQA: unknown split(s) {sorted(unknown)}; use {SPLITS}")
    if not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"AVQA: num_workers={num_workers!r}; use an integer >= 1")
    settings = {
        "seed": seed,
        "counts_per_task": dict(counts),
        "tasks": list(tasks),
        "clip_seconds": clip_seconds,
        "size": size,
        "fps": fps,
        "answers": {task: list(ANSWERS[task]) for task in tasks},
        "questions": {task: QUESTIONS[task] for task in tasks},
        "video_sampling": dataclasses.asdict(AVQA_VIDEO_SAMPLING),
    }
    for split, count in counts.items():
        (directory / "clips" / split).mkdir(parents=True, exist_ok=True)
        jobs = [
            (os.fspath(directory), seed, split, task, index, clip_seconds, size, fps)
            for index in range(count)
            for task in tasks
        ]
        if num_workers == 1:
            written = [_write_one(job) for job in jobs]
        else:
            with multiprocessing.get_context("spawn").Pool(num_workers) as pool:
                written = pool.map(_write_one, jobs, chunksize=16)
        (directory / f"{split}.jsonl").write_text("".join(json.dumps(line) + "\n" for line, _ in written))
        (directory / f"{split}.meta.jsonl").write_text("".join(json.dumps(meta) + "\n" for _, meta in written))
    (directory / "avqa.json").write_text(json.dumps(settings, indent=2) + "\n")
    return settings


def load_avqa_split(directory, split: str = "test", limit_per_task: int | None = None):
    """The `OmniQADataset` of `<split>.jsonl` and its metadata records (same order), optionally the first
    `limit_per_task` clips of each task."""
    directory = Path(directory)
    missing = [name for name in (f"{split}.jsonl", f"{split}.meta.jsonl") if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"AVQA: {directory} has no {' or '.join(missing)}: write the dataset first "
            f"(python examples/make_avqa.py --output-dir {directory})"
        )
    dataset = OmniQADataset(directory / f"{split}.jsonl")
    metas = [json.loads(line) for line in (directory / f"{split}.meta.jsonl").read_text().splitlines() if line]
    if len(metas) != len(dataset):
        raise ValueError(f"AVQA: {split}.jsonl and {split}.meta.jsonl differ in length")
    examples = list(dataset)
    if limit_per_task is not None:
        seen: dict[str, int] = {}
        chosen = []
        for example, meta in zip(examples, metas, strict=True):
            seen[meta["task"]] = seen.get(meta["task"], 0) + 1
            if seen[meta["task"]] <= limit_per_task:
                chosen.append((example, meta))
        examples, metas = [c[0] for c in chosen], [c[1] for c in chosen]
    return examples, metas


# ---------------------------------------------------------------------------------------------------------------------
# A trainable tiny model for AVQA
# ---------------------------------------------------------------------------------------------------------------------
def avqa_model(
    hidden_size: int = 128,
    num_layers: int = 4,
    num_heads: int = 4,
    vision_depth: int = 2,
    audio_layers: int = 2,
    encoder_size: int = 64,
    seed: int = 0,
):
    """A randomly initialised OmniSIFT model for training on AVQA: the tiny vocabulary and processor layout of
    `omnisift_hf.testing_utils`, with a larger decoder (the issue's recipe: text hidden 128-256, 4 layers, 2-layer
    audio encoder). Pair it with `tiny_processor()`."""
    head_dim = hidden_size // num_heads
    half = head_dim // 2
    temporal = half // 4
    height = (half - temporal) // 2
    config = tiny_config(
        text_config={
            "vocab_size": TINY_VOCAB_SIZE,
            "hidden_size": hidden_size,
            "intermediate_size": 4 * hidden_size,
            "num_hidden_layers": num_layers,
            "num_attention_heads": num_heads,
            "num_key_value_heads": max(1, num_heads // 2),
            "max_position_embeddings": 4096,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1000000.0,
                "mrope_section": [temporal, height, half - temporal - height],
            },
            "pad_token_id": TINY_TOKEN_IDS["pad"],
            "eos_token_id": TINY_TOKEN_IDS["im_end"],
        },
        vision_config={
            "depth": vision_depth,
            "hidden_size": encoder_size,
            "intermediate_size": 2 * encoder_size,
            "num_heads": 2,
            "out_hidden_size": hidden_size,
            "fullatt_block_indexes": [vision_depth - 1],
        },
        audio_config={
            "num_mel_bins": 128,
            "encoder_layers": audio_layers,
            "encoder_attention_heads": 2,
            "encoder_ffn_dim": 2 * encoder_size,
            "d_model": encoder_size,
            "output_dim": hidden_size,
        },
        selector_hidden_size=32,
        selector_num_heads=2,
        selector_mlp_size=16,
    )
    model = tiny_model(seed)  # for its generation config
    torch.manual_seed(seed)
    trained = OmniSiftForConditionalGeneration(config).eval()
    trained.generation_config = model.generation_config
    return trained


# ---------------------------------------------------------------------------------------------------------------------
# Events -> tokens
# ---------------------------------------------------------------------------------------------------------------------
def _sampled_frame_times(meta: dict, sampling: VideoSampling) -> list[float]:
    total = round(meta["seconds"] * meta["fps"])
    indices, _ = _sample_indices(total, float(meta["fps"]), sampling)
    return [index / meta["fps"] for index in indices]


def event_token_masks(
    meta: dict, video_grid_thw: Sequence[int], num_audio_tokens: int, sampling: VideoSampling = AVQA_VIDEO_SAMPLING
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks over a clip's video tokens (in sequence order) and audio tokens: True where a square / a beep is.

    video_grid_thw: the clip's `(t, h, w)` patch grid (processor output); tokens are `(t, h // 2, w // 2)` row-major.
    """
    grid_t, grid_h, grid_w = (int(v) for v in video_grid_thw)
    rows, cols = grid_h // 2, grid_w // 2
    scale_y, scale_x = meta["size"] / rows, meta["size"] / cols  # source pixels per merged token
    times = _sampled_frame_times(meta, sampling)
    video = np.zeros((grid_t, rows, cols), dtype=bool)
    for slice_index in range(grid_t):
        for frame_time in times[2 * slice_index : 2 * slice_index + 2]:
            for square in meta["squares"]:
                if not square["start"] <= frame_time + 1e-9 < square["end"]:
                    continue
                x0, y0, side = square["x"], square["y"], square["side"]
                for r in range(rows):
                    for c in range(cols):
                        dy = max(0.0, min(y0 + side, (r + 1) * scale_y) - max(y0, r * scale_y))
                        dx = max(0.0, min(x0 + side, (c + 1) * scale_x) - max(x0, c * scale_x))
                        if dx * dy >= 0.25 * scale_x * scale_y:
                            video[slice_index, r, c] = True
    audio = np.zeros(num_audio_tokens, dtype=bool)
    step = 1.0 / AUDIO_TOKENS_PER_SECOND
    for beep in meta["beeps"]:
        for j in range(num_audio_tokens):
            if min(beep["end"], (j + 1) * step) - max(beep["start"], j * step) >= 0.02 - 1e-9:
                audio[j] = True
    return video.reshape(-1), audio


# ---------------------------------------------------------------------------------------------------------------------
# Baselines: other token choices with OmniSIFT's counts
# ---------------------------------------------------------------------------------------------------------------------
def _random_within(segment: torch.Tensor, keep_count: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    scores = torch.rand(segment.shape[0], generator=generator).to(segment.device)
    return segment_rank(scores, segment) < keep_count[segment]


def _strided(n: int, k: int) -> list[int]:
    return [math.floor((i + 0.5) * n / k) for i in range(k)] if k > 0 else []


def _uniform_video(layout, video_keep: torch.Tensor) -> torch.Tensor:
    keep = torch.zeros_like(video_keep)
    frame_sample = layout.pair_sample[layout.pair_of_frame]
    frame_start = torch.cumsum(layout.frame_size, 0) - layout.frame_size
    kept_per_frame = torch.bincount(layout.frame_of_video[video_keep], minlength=layout.frame_size.shape[0])
    for sample in frame_sample.unique().tolist():
        frames = torch.nonzero(frame_sample == sample).squeeze(1).tolist()
        total = int(kept_per_frame[frames].sum())
        size = int(layout.frame_size[frames[0]])
        full, rest = divmod(total, size)
        chosen = [frames[i] for i in _strided(len(frames), full + (rest > 0))]
        for position, frame in enumerate(chosen):
            start, frame_size = int(frame_start[frame]), int(layout.frame_size[frame])
            take = range(frame_size) if (position < full or rest == 0) else _strided(frame_size, rest)
            for offset in take:
                keep[start + offset] = True
    return keep


def _uniform_audio(layout, audio_keep: torch.Tensor) -> torch.Tensor:
    keep = audio_keep.clone()
    window = layout.window_of_audio
    for w in window[window >= 0].unique().tolist():
        members = torch.nonzero(window == w).squeeze(1)
        count = int(audio_keep[members].sum())
        keep[members] = False
        keep[members[_strided(members.shape[0], count)]] = True
    return keep


def _rechoose(method: str, layout, video_keep, audio_keep, generator):
    windowed = layout.window_of_audio >= 0
    window = layout.window_of_audio.clamp(min=0)
    num_windows = layout.num_pairs
    audio_counts = torch.bincount(window[audio_keep & windowed], minlength=num_windows)

    def random_audio():
        chosen = _random_within(window, audio_counts, generator)
        return torch.where(windowed, chosen, audio_keep)

    if method == "random":
        video_counts = torch.bincount(layout.frame_of_video[video_keep], minlength=layout.frame_size.shape[0])
        return _random_within(layout.frame_of_video, video_counts, generator), random_audio()
    if method == "uniform":
        return _uniform_video(layout, video_keep), _uniform_audio(layout, audio_keep)
    if method == "stvp_random_audio":
        return video_keep, random_audio()
    # "no_audio", the last method `baseline_selector` accepts.
    return torch.ones_like(video_keep), audio_keep & ~windowed


def _oracle_audio(selection, audio_events: torch.Tensor) -> torch.Tensor:
    """`oracle_audio`'s audio decisions `(Na,)`: in each window the selector scored, OmniSIFT's kept count, event
    tokens first, then the others by the selector's logit (ties to the earlier token); everything else as OmniSIFT.

    audio_events (`torch.BoolTensor` of shape `(Na,)`): which of the layout's audio tokens are events."""
    keep = selection.audio_keep.clone()
    scored = selection.gated_audio
    if scored is None or scored.numel() == 0:
        return keep
    window = selection.layout.window_of_audio[scored]
    counts = torch.bincount(window[selection.audio_keep[scored]], minlength=selection.layout.num_pairs)
    order = torch.sort(selection.audio_logits.detach().float(), descending=True, stable=True).indices
    order = order[torch.sort((~audio_events[scored][order]).long(), stable=True).indices]  # events first
    priority = torch.empty(scored.shape[0], dtype=torch.float64, device=scored.device)
    priority[order] = -torch.arange(scored.shape[0], dtype=torch.float64, device=scored.device)
    keep[scored] = segment_rank(priority, window) < counts[window]
    return keep


def baseline_selector(model, method: str = "omnisift", seed: int = 0, audio_events: torch.Tensor | None = None):
    """The `token_selector` (argument of the model's `forward` / `generate`) that selects tokens with `method`:
    `None` for `"omnisift"` (the model's own selection), a baseline of `BASELINES`, an upper bound of `ORACLES`, or
    `"no_audio"` (all video, no audio; call the model with `video_keep_ratio=1.0, audio_keep_ratio=0.5` so that
    selection runs). Baselines and oracles keep OmniSIFT's token counts per frame and per audio window (see the
    module docstring).

    audio_events (`torch.BoolTensor` of shape `(B, L)`, *optional*): True at the positions (of the model's `input_ids`)
    of event audio tokens, e.g. the beeps of [`event_token_masks`]; required by `"oracle_audio"`.
    """
    if method == "omnisift":
        return None
    if method not in (*BASELINES, *ORACLES, "no_audio"):
        raise ValueError(f"AVQA: unknown method {method!r}; choose from {(*METHODS, 'no_audio')}")
    if method == "oracle_audio" and audio_events is None:
        raise ValueError("AVQA: oracle_audio needs `audio_events` (True at the event audio tokens' positions)")
    generator = torch.Generator().manual_seed(seed)

    def select(*args, **kwargs):
        selection = model.select_tokens(*args, **kwargs)
        if method == "oracle_audio":
            events = audio_events.reshape(-1).to(selection.layout.audio_index.device)[selection.layout.audio_index]
            audio_keep = _oracle_audio(selection, events)
            return dataclasses.replace(selection, audio_keep=audio_keep, audio_gate=None)
        video_keep, audio_keep = _rechoose(
            method, selection.layout, selection.video_keep, selection.audio_keep, generator
        )
        # No gate: the selector's gate zeroes the tokens it dropped, which a baseline may keep.
        return dataclasses.replace(selection, video_keep=video_keep, audio_keep=audio_keep, audio_gate=None)

    return select


# ---------------------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------------------
def _conditions(keep_ratios: Sequence[float], methods: Sequence[str], no_audio: bool) -> list[tuple[str, float, dict]]:
    conditions = []
    for keep in keep_ratios:
        for method in methods:
            if keep == 1.0 and method != "omnisift":
                continue  # nothing dropped: every method is the full model
            conditions.append((method, keep, {"keep_ratio": keep}))
    if no_audio:
        conditions.append(("no_audio", 1.0, {"video_keep_ratio": 1.0, "audio_keep_ratio": 0.5}))
    return conditions


def _condition_name(method: str, keep: float) -> str:
    return "no_audio" if method == "no_audio" else f"{method}@{keep:g}"


@torch.no_grad()
def evaluate_avqa(
    model,
    processor,
    examples,
    metas,
    keep_ratios: Sequence[float] = (1.0, 0.5, 0.35, 0.25, 0.15),
    methods: Sequence[str] = METHODS,
    no_audio: bool = True,
    batch_size: int = 8,
    seed: int = 0,
    sampling: VideoSampling = AVQA_VIDEO_SAMPLING,
    bootstrap: int = 2000,
    progress: bool = False,
) -> dict:
    """Teacher-forced accuracy of `model` on AVQA `examples` (with their `metas`, see [`load_avqa_split`]) for every
    method x keep ratio, with achieved retention, event-token recall and paired bootstrap 95% intervals of OmniSIFT
    minus each baseline and oracle, and (`selector_auroc`) the AUROC of the selector's scores for beep against other
    audio tokens per OmniSIFT keep ratio below 1 and task. Returns a JSON-serialisable report (see
    [`markdown_report`])."""
    collator = OmniQADataCollator(processor, video_sampling=sampling)
    tokenizer = processor.tokenizer
    video_id, audio_id = model.config.video_token_id, model.config.audio_token_id
    conditions = _conditions(keep_ratios, methods, no_audio)
    per_clip = {_condition_name(m, k): [] for m, k, _ in conditions}
    scored_scores: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {}  # OmniSIFT's (task, logits, is_event)
    model.eval()
    for start in range(0, len(examples), batch_size):
        batch_examples, batch_metas = examples[start : start + batch_size], metas[start : start + batch_size]
        batch = collator(batch_examples)
        labels = batch.pop("labels")
        answer_pos = (labels != -100).float().argmax(1)  # first answer token
        answer_ids = labels.gather(1, answer_pos[:, None]).squeeze(1)
        candidates = [
            [tokenizer.convert_tokens_to_ids(tokenizer.tokenize(a)) for a in ANSWERS[m["task"]]] for m in batch_metas
        ]
        real = batch["attention_mask"].bool()
        video_positions = [
            torch.nonzero((batch["input_ids"][b] == video_id) & real[b]).squeeze(1) for b in range(len(batch_metas))
        ]
        audio_positions = [
            torch.nonzero((batch["input_ids"][b] == audio_id) & real[b]).squeeze(1) for b in range(len(batch_metas))
        ]
        events = [
            event_token_masks(meta, batch["video_grid_thw"][b].tolist(), audio_positions[b].shape[0], sampling)
            for b, meta in enumerate(batch_metas)
        ]
        for b, (video_mask, _) in enumerate(events):
            if video_mask.shape[0] != video_positions[b].shape[0]:
                raise RuntimeError(f"AVQA: {batch_metas[b]['id']}: video tokens do not match the grid")
        audio_events = torch.zeros_like(batch["input_ids"], dtype=torch.bool)  # (B, L): the beep tokens' positions
        for b, (_, audio_mask) in enumerate(events):
            audio_events[b, audio_positions[b]] = torch.from_numpy(audio_mask)
        # The video encoder runs once per batch; every condition reuses its output (audio is re-encoded: cheap).
        inputs = to_model_inputs({key: value for key, value in batch.items() if key != "pixel_values_videos"}, model)
        inputs["mm_encoder_outputs"] = {
            "video": model.model.get_video_features(
                batch["pixel_values_videos"].to(model.device, model.dtype), inputs["video_grid_thw"], return_dict=True
            )
        }
        for method, keep, kwargs in conditions:
            selector = baseline_selector(model, method, seed=seed + start, audio_events=audio_events)
            recorded = []
            if method == "omnisift":  # the model's own selection, recorded for the selector's AUROC

                def selector(*args, _recorded=recorded, **kwargs):
                    _recorded.append(model.select_tokens(*args, **kwargs))
                    return _recorded[-1]

            output = model(**inputs, **kwargs, token_selector=selector)
            if recorded and recorded[0].gated_audio is not None:
                name = _condition_name(method, keep)
                scored_scores.setdefault(name, []).extend(
                    _scored_audio_by_clip(recorded[0], audio_events, batch_metas)
                )
            logits = output.logits.float().cpu()
            kept_token_index = None if output.kept_token_index is None else output.kept_token_index.cpu()
            kept_masks = None if kept_token_index is None else output.kept_attention_mask.cpu().bool()
            for b, meta in enumerate(batch_metas):
                if kept_token_index is None:
                    kept = real[b].clone()
                    row = int(answer_pos[b]) - 1
                else:
                    kept_mask = kept_masks[b]
                    kept_index = kept_token_index[b][kept_mask]
                    kept = torch.zeros_like(real[b])
                    kept[kept_index] = True
                    offset = int((~kept_mask).sum())
                    row = offset + int(torch.nonzero(kept_index == answer_pos[b]).item()) - 1
                scores = logits[b, row].float()
                cand = [ids[0] for ids in candidates[b]]
                predicted = cand[int(scores[cand].argmax())]
                video_mask, audio_mask = events[b]
                video_kept = kept[video_positions[b]].numpy()
                audio_kept = kept[audio_positions[b]].numpy()
                per_clip[_condition_name(method, keep)].append(
                    {
                        "id": meta["id"],
                        "task": meta["task"],
                        "correct": int(predicted == int(answer_ids[b])),
                        "top1": int(int(scores.argmax()) == int(answer_ids[b])),
                        "video_tokens": int(video_kept.shape[0]),
                        "kept_video": int(video_kept.sum()),
                        "audio_tokens": int(audio_kept.shape[0]),
                        "kept_audio": int(audio_kept.sum()),
                        "square_tokens": int(video_mask.sum()),
                        "kept_square": int((video_kept & video_mask).sum()),
                        "beep_tokens": int(audio_mask.sum()),
                        "kept_beep": int((audio_kept & audio_mask).sum()),
                    }
                )
        if progress:
            print(f"AVQA: {min(start + batch_size, len(examples))}/{len(examples)} clips", flush=True)
    report = _summarise(per_clip, conditions, bootstrap, seed)
    report["selector_auroc"] = _summarise_auroc(scored_scores, report["tasks"])
    return report


def _scored_audio_by_clip(selection, audio_events: torch.Tensor, metas) -> list[tuple]:
    """Per clip of the batch: its task, the selector's logits of its scored audio tokens, whether each is an event
    token, and each one's window."""
    layout, scored = selection.layout, selection.gated_audio
    events = audio_events.reshape(-1).to(layout.audio_index.device)[layout.audio_index[scored]].cpu().numpy()
    logits = selection.audio_logits.detach().float().cpu().numpy()
    sample = layout.audio_sample[scored].cpu().numpy()
    window = layout.window_of_audio[scored].cpu().numpy()
    return [
        (meta["task"], logits[sample == b], events[sample == b], window[sample == b]) for b, meta in enumerate(metas)
    ]


def _mann_whitney(scores, labels) -> tuple[float, int]:
    """`(U, positives x negatives)`: U counts the (positive, negative) pairs where the positive scores higher, ties
    1/2 (from average ranks, exact)."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return 0.0, 0
    order = np.argsort(scores, kind="stable")
    ordered = scores[order]
    # Average 1-based rank of each run of equal scores.
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], ordered.shape[0]]
    ranks = np.empty(scores.shape[0], dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return float(ranks[labels].sum() - positives * (positives + 1) / 2.0), positives * negatives


def selector_auroc(scores, labels) -> float:
    """AUROC of `scores` for `labels` (bool): the probability that a random positive outscores a random negative,
    ties counting 1/2 (Mann-Whitney U from average ranks, exact). NaN without both a positive and a negative."""
    u, pairs = _mann_whitney(scores, labels)
    return u / pairs if pairs else float("nan")


def _summarise_auroc(scored_scores: dict, tasks: list[str]) -> dict:
    """Per OmniSIFT condition and task (and `all`): the pooled AUROC over the clips with both event and other scored
    audio tokens (`auroc`, None when there are none), the mean of those clips' own AUROCs (`clip_mean`), the AUROC
    over the (event, other) pairs of one window (`window_auroc`: what top-k per window acts on; None without such a
    window), and the counts (`clips`, `event_tokens`, `other_tokens`)."""
    result = {}
    for name, clips in scored_scores.items():
        entry = {}
        for task in ["all", *tasks]:
            both = [
                (logits, events, window)
                for clip_task, logits, events, window in clips
                if task in ("all", clip_task) and events.any() and not events.all()
            ]
            window_u = window_pairs = 0.0
            for logits, events, window in both:
                for w in np.unique(window):
                    u, pairs = _mann_whitney(logits[window == w], events[window == w])
                    window_u, window_pairs = window_u + u, window_pairs + pairs
            if both:
                logits = np.concatenate([logits for logits, _, _ in both])
                events = np.concatenate([events for _, events, _ in both])
                pooled = selector_auroc(logits, events)
                clip_mean = float(np.mean([selector_auroc(logits, events) for logits, events, _ in both]))
            else:
                events, pooled, clip_mean = np.zeros(0, dtype=bool), None, None
            entry[task] = {
                "auroc": pooled,
                "clip_mean": clip_mean,
                "window_auroc": window_u / window_pairs if window_pairs else None,
                "clips": len(both),
                "event_tokens": int(events.sum()),
                "other_tokens": int((~events).sum()),
            }
        result[name] = entry
    return result


def _summarise(per_clip: dict, conditions, bootstrap: int, seed: int) -> dict:
    tasks = sorted({row["task"] for rows in per_clip.values() for row in rows}, key=TASKS.index)
    summary = {}
    for method, keep, _ in conditions:
        name = _condition_name(method, keep)
        rows = per_clip[name]

        def total(key, subset=rows):
            return sum(row[key] for row in subset)

        media = total("video_tokens") + total("audio_tokens")
        summary[name] = {
            "method": method,
            "keep_ratio": keep,
            "retention": (total("kept_video") + total("kept_audio")) / max(media, 1),
            "video_retention": total("kept_video") / max(total("video_tokens"), 1),
            "audio_retention": total("kept_audio") / max(total("audio_tokens"), 1),
            "square_recall": total("kept_square") / max(total("square_tokens"), 1),
            "beep_recall": total("kept_beep") / max(total("beep_tokens"), 1),
            "accuracy": float(np.mean([row["correct"] for row in rows])),
            "top1": float(np.mean([row["top1"] for row in rows])),
            "tasks": {
                task: {
                    "n": len(subset),
                    "accuracy": float(np.mean([row["correct"] for row in subset])),
                    "top1": float(np.mean([row["top1"] for row in subset])),
                }
                for task in tasks
                for subset in [[row for row in rows if row["task"] == task]]
            },
        }
    rng = np.random.default_rng(seed)
    paired = {}
    # Baselines first, then the oracles: the bootstrap draws (and intervals) of the baselines do not depend on
    # whether the oracles were evaluated.
    compared = [name for name, e in summary.items() if e["method"] in BASELINES]
    compared += [name for name, e in summary.items() if e["method"] in ORACLES]
    for name in compared:
        entry = summary[name]
        reference = per_clip[_condition_name("omnisift", entry["keep_ratio"])]
        ours = per_clip[name]
        result = {}
        for task in [None, *tasks]:
            a = np.array([r["correct"] for r in reference if task is None or r["task"] == task], dtype=float)
            b = np.array([r["correct"] for r in ours if task is None or r["task"] == task], dtype=float)
            result[task or "all"] = {
                **_paired_interval(a - b, rng, bootstrap),
                "omnisift_only": int(((a == 1) & (b == 0)).sum()),
                "baseline_only": int(((a == 0) & (b == 1)).sum()),
            }
        paired[f"omnisift-{name}"] = result
    return {"tasks": tasks, "conditions": summary, "paired": paired, "per_clip": per_clip}


def _paired_interval(diff: np.ndarray, rng: np.random.Generator, bootstrap: int) -> dict:
    """Mean of per-clip differences and its bootstrap 95% interval (clips resampled with replacement)."""
    draws = rng.integers(0, len(diff), size=(bootstrap, len(diff)))
    means = diff[draws].mean(1)
    return {
        "difference": float(diff.mean()),
        "ci95": [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))],
    }


def compare_runs(
    arms: dict[str, list[dict]],
    keep_ratio: float = 0.25,
    baseline: str = "stvp_random_audio",
    reference: dict | None = None,
    bootstrap: int = 2000,
    seed: int = 0,
) -> dict:
    """Compare training arms, each trained with several seeds, on the same AVQA clips.

    A bootstrap over clips covers the clips, not the training runs; so each arm's per-clip correctness is first
    averaged over its seeds (runs), then differences are taken clip by clip and resampled. Each run's baseline
    (`baseline` at `keep_ratio`) is measured on that run's own model, as `evaluate_avqa` does.

    Args:
        arms (`dict[str, list[dict]]`): arm name -> the `evaluate_avqa(..., per_clip=True)` reports of its runs (each
            with `omnisift@1` and `omnisift@<keep_ratio>` and `<baseline>@<keep_ratio>`), all on the same clips.
        keep_ratio (`float`): the compressed condition compared.
        baseline (`str`): the method every arm is compared with (one of `BASELINES`).
        reference (`dict`, *optional*): a report (e.g. of the checkpoint the arms started from) whose keep-1.0
            accuracy each arm's keep-1.0 accuracy is compared with.
        bootstrap (`int`), seed (`int`): resamples and seed of the intervals.

    Returns:
        `dict` with `tasks`, per `runs` (accuracy per task at keep 1.0 and `keep_ratio`, beep recall, window AUROC),
        per `arms` (means over runs; paired differences with intervals against the baseline and, with `reference`,
        at keep 1.0) and `arm_differences` (each later arm minus each earlier one, at `keep_ratio`).
    """
    if not arms or any(not reports for reports in arms.values()):
        raise ValueError("compare_runs: pass at least one report for every arm.")
    kept, full, base = (_condition_name("omnisift", keep_ratio), "omnisift@1", _condition_name(baseline, keep_ratio))

    def per_clip(report: dict, condition: str) -> list[dict]:
        if condition not in report.get("per_clip", {}):
            raise ValueError(
                f"compare_runs: a report of {report.get('settings', {}).get('model')!r} has no per-clip results of "
                f"{condition!r}: evaluate with per_clip=True (`--per-clip`) and that condition."
            )
        return report["per_clip"][condition]

    first = next(iter(arms.values()))[0]
    ids = [row["id"] for row in per_clip(first, kept)]
    tasks = first["tasks"]
    task_of = {row["id"]: row["task"] for row in per_clip(first, kept)}

    def correctness(report: dict, condition: str) -> np.ndarray:
        rows = {row["id"]: row["correct"] for row in per_clip(report, condition)}
        if set(rows) != set(ids):
            raise ValueError("compare_runs: the reports were not made on the same clips.")
        return np.array([rows[i] for i in ids], dtype=float)

    def intervals(diff: np.ndarray) -> dict:
        rng = np.random.default_rng(seed)
        return {
            task: _paired_interval(
                diff[[i for i, clip in enumerate(ids) if task == "all" or task_of[clip] == task]], rng, bootstrap
            )
            for task in ["all", *tasks]
        }

    def accuracy(report: dict, condition: str) -> dict:
        entry = report["conditions"][condition]
        return {"all": entry["accuracy"], **{task: entry["tasks"][task]["accuracy"] for task in tasks}}

    runs, arm_summaries, mean_correct = {}, {}, {}
    for arm, reports in arms.items():
        mean_correct[arm] = np.mean([correctness(report, kept) for report in reports], axis=0)
        baseline_correct = np.mean([correctness(report, base) for report in reports], axis=0)
        full_correct = np.mean([correctness(report, full) for report in reports], axis=0)
        members = []
        for report in reports:
            name = str(report["settings"]["model"])
            if name in runs:
                raise ValueError(f"compare_runs: two reports of the run {name!r}; name each run once.")
            auroc = (report.get("selector_auroc") or {}).get(kept, {}).get("all", {})
            runs[name] = {
                "arm": arm,
                "keep_1": accuracy(report, full)["all"],
                "accuracy": accuracy(report, kept),
                "baseline_accuracy": accuracy(report, base),
                "beep_recall": report["conditions"][kept]["beep_recall"],
                "window_auroc": auroc.get("window_auroc"),
                "minus_baseline": report["paired"][f"omnisift-{base}"],
            }
            members.append(runs[name])
        summary = {
            "runs": len(reports),
            "keep_1": float(np.mean([m["keep_1"] for m in members])),
            "accuracy": {t: float(np.mean([m["accuracy"][t] for m in members])) for t in ["all", *tasks]},
            "beep_recall": float(np.mean([m["beep_recall"] for m in members])),
            "window_auroc": (
                None
                if any(m["window_auroc"] is None for m in members)
                else float(np.mean([m["window_auroc"] for m in members]))
            ),
            "minus_baseline": intervals(mean_correct[arm] - baseline_correct),
        }
        if reference is not None:
            summary["keep_1_minus_reference"] = intervals(full_correct - correctness(reference, full))
        arm_summaries[arm] = summary
    names = list(arms)
    differences = {
        f"{later} - {earlier}": intervals(mean_correct[later] - mean_correct[earlier])
        for i, earlier in enumerate(names)
        for later in names[i + 1 :]
    }
    return {
        "tasks": tasks,
        "keep_ratio": keep_ratio,
        "baseline": baseline,
        "runs": runs,
        "arms": arm_summaries,
        "arm_differences": differences,
    }


def compare_runs_markdown(comparison: dict) -> str:
    """Markdown tables of [`compare_runs`]: every run, the arms' means with paired intervals against the baseline
    (and at keep 1.0 against the reference), and the arms against each other."""
    tasks, keep = comparison["tasks"], comparison["keep_ratio"]

    def cell(entry):
        return f"{entry['difference']:+.3f} [{entry['ci95'][0]:+.3f}, {entry['ci95'][1]:+.3f}]"

    def number(value):
        return "n/a" if value is None else f"{value:.3f}"

    header = " | ".join(tasks)
    lines = [
        f"| arm | run | keep 1.0 all | beep recall | window AUROC | all | {header} | all minus baseline | "
        "pitch minus baseline |",
        "|---|---|---|---|---|---|" + "---|" * len(tasks) + "---|---|",
    ]
    for name, run in comparison["runs"].items():
        lines.append(
            f"| {run['arm']} | {name} | {run['keep_1']:.3f} | {run['beep_recall']:.2f} | "
            f"{number(run['window_auroc'])} | {run['accuracy']['all']:.3f} | "
            + " | ".join(f"{run['accuracy'][t]:.3f}" for t in tasks)
            + f" | {cell(run['minus_baseline']['all'])} | "
            + (cell(run["minus_baseline"]["pitch"]) if "pitch" in run["minus_baseline"] else "n/a")
            + " |"
        )
    lines += [
        "",
        f"Arms, mean over runs (keep {keep:g}); minus {comparison['baseline']} at the same retention, per clip "
        "averaged over the runs (bootstrap 95% interval over clips):",
        "",
        f"| arm | runs | keep 1.0 all | beep recall | window AUROC | all | {header} |",
        "|---|---|---|---|---|---|" + "---|" * len(tasks),
    ]
    for arm, summary in comparison["arms"].items():
        lines.append(
            f"| {arm} | {summary['runs']} | {summary['keep_1']:.3f} | {summary['beep_recall']:.2f} | "
            f"{number(summary['window_auroc'])} | "
            + " | ".join(f"{summary['accuracy'][t]:.3f}" for t in ["all", *tasks])
            + " |"
        )
    lines += ["", f"| arm minus {comparison['baseline']} | all | {header} |", "|---|---|" + "---|" * len(tasks)]
    for arm, summary in comparison["arms"].items():
        lines.append(f"| {arm} | " + " | ".join(cell(summary["minus_baseline"][t]) for t in ["all", *tasks]) + " |")
    if any("keep_1_minus_reference" in s for s in comparison["arms"].values()):
        lines += ["", f"| keep 1.0, arm minus reference | all | {header} |", "|---|---|" + "---|" * len(tasks)]
        for arm, summary in comparison["arms"].items():
            if "keep_1_minus_reference" in summary:
                lines.append(
                    f"| {arm} | "
                    + " | ".join(cell(summary["keep_1_minus_reference"][t]) for t in ["all", *tasks])
                    + " |"
                )
    if comparison["arm_differences"]:
        lines += ["", f"| keep {keep:g}, arm minus arm | all | {header} |", "|---|---|" + "---|" * len(tasks)]
        for name, result in comparison["arm_differences"].items():
            lines.append(f"| {name} | " + " | ".join(cell(result[t]) for t in ["all", *tasks]) + " |")
    return "\n".join(lines) + "\n"


def markdown_report(report: dict) -> str:
    """Markdown tables of a report of [`evaluate_avqa`]: accuracy per task with retention and event recall, then the
    paired differences, then the selector's AUROC per task (`n/a` where undefined; reports without it skip it)."""
    tasks = report["tasks"]
    lines = [
        "| method | keep | retention (video / audio) | square recall | beep recall | all | "
        + " | ".join(tasks)
        + " |",
        "|---|---|---|---|---|---|" + "---|" * len(tasks),
    ]
    for entry in report["conditions"].values():
        keep = "-" if entry["method"] == "no_audio" else f"{entry['keep_ratio']:g}"
        lines.append(
            f"| {entry['method']} | {keep} | {entry['retention']:.3f} ({entry['video_retention']:.3f} / "
            f"{entry['audio_retention']:.3f}) | {entry['square_recall']:.2f} | {entry['beep_recall']:.2f} | "
            f"{entry['accuracy']:.3f} | " + " | ".join(f"{entry['tasks'][t]['accuracy']:.3f}" for t in tasks) + " |"
        )
    n = {t: next(iter(report["conditions"].values()))["tasks"][t]["n"] for t in tasks}
    lines += ["", f"Clips per task: {', '.join(f'{t} {n[t]}' for t in tasks)}.", ""]
    lines += [
        "| OmniSIFT minus | all | " + " | ".join(tasks) + " |",
        "|---|---|" + "---|" * len(tasks),
    ]
    for name, result in report["paired"].items():
        cells = [
            f"{result[t]['difference']:+.3f} [{result[t]['ci95'][0]:+.3f}, {result[t]['ci95'][1]:+.3f}]"
            for t in ["all", *tasks]
        ]
        lines.append(f"| {name.removeprefix('omnisift-')} | " + " | ".join(cells) + " |")
    if report.get("selector_auroc"):

        def auroc(cell):
            values = [cell["auroc"], cell["clip_mean"], cell.get("window_auroc")]
            return " / ".join("n/a" if value is None else f"{value:.3f}" for value in values)

        lines += [
            "",
            "Selector AUROC, beep against other audio tokens it scored (pooled over clips / mean of per-clip AUROCs / "
            "pairs within one window; 0.5 is chance):",
            "",
            "| OmniSIFT | all | " + " | ".join(tasks) + " |",
            "|---|---|" + "---|" * len(tasks),
        ]
        for name, result in report["selector_auroc"].items():
            lines.append(f"| {name} | " + " | ".join(auroc(result[t]) for t in ["all", *tasks]) + " |")
    return "\n".join(lines) + "\n"


def plot_avqa(report: dict):
    """A Pillow chart of overall accuracy against achieved retention, one line per method (`PIL.Image`)."""
    series = {}
    for entry in report["conditions"].values():
        if entry["method"] == "no_audio":
            continue
        series.setdefault(entry["method"], []).append((entry["retention"], entry["accuracy"]))
    full = next(
        (e["accuracy"] for e in report["conditions"].values() if e["method"] == "omnisift" and e["keep_ratio"] == 1.0),
        None,
    )
    lines = []
    for method, points in series.items():
        if method != "omnisift" and full is not None:
            points = [*points, (1.0, full)]
        lines.append((method, sorted(points)))
    lines.sort(key=lambda line: line[0] == "omnisift")  # OmniSIFT drawn last, on top of lines it coincides with
    image = Image.new("RGB", (576, 456), (255, 255, 255))
    _panel(
        ImageDraw.Draw(image),
        (8, 8),
        "AVQA accuracy vs retention",
        lines,
        "accuracy",
        x_label="retention (kept share)",
    )
    return image
