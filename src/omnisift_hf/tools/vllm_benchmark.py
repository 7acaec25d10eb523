"""Serving benchmark: OmniSIFT in vLLM, keep 1.0 against the checkpoint's keep ratio (0.25), side by side in one run.

Two steps, in two environments (a vLLM environment pins an older transformers than this package's model code needs):

    # 1. the package's environment (transformers 5.24): a random-weight checkpoint, its processor, synthetic clips
    python -m omnisift_hf.tools.vllm_benchmark prepare OUT_DIR            # mid-size config, 8 clips of 20 s
    # 2. the vLLM environment (vllm + `pip install --no-deps omnisift_hf`): one engine, both keep ratios
    python -m omnisift_hf.tools.vllm_benchmark run OUT_DIR --json results.json --markdown results.md

`prepare` writes OUT_DIR/checkpoint/ (`save_pretrained` of a random `OmniSiftForConditionalGeneration` at keep ratio
0.25 with the tiny processor of `omnisift_hf.testing_utils`), OUT_DIR/clips.npz (video frames, uint8, and 16 kHz audio
of each clip) and OUT_DIR/workload.json (the prompt, the clips' sizes, and the first clip's prompt length at keep 1.0
and 0.25 as the transformers model lays it out: what vLLM's prompts must hold). The mid-size config is the
benchmark's (`omnisift_hf.tools.benchmark.MID_SIZE`: text hidden 1024, 8 layers, 16 / 4 heads of 64); the clips are
20 s at 2 fps, 336 x 336 pixels (24 x 24 patches: the processor's default resolution) with their audio track
(`use_audio_in_video`), about 3500 prompt tokens each at keep 1.0, as in the benchmark's prefill section. `--quick`: a
tiny config (heads of 32, the smallest vLLM's CPU attention runs) and 4 s clips of 112 x 112 pixels (the processor
scales them up to 24 x 24 patches), for the tests.

`run` starts ONE engine (`vllm.LLM`, eager, prefix caching off, a fixed KV-cache budget: `--kv-cache-gib`) on the
checkpoint and sends the same `--requests` clips (different contents, same length) at keep 1.0 (the per-request
override `mm_processor_kwargs={"keep_ratio": 1.0}`) and at the checkpoint's ratio. It measures per keep ratio:

- prompt tokens per request: `len(RequestOutput.prompt_token_ids)`, the tokens the decoder reads and caches;
- KV-cache blocks per request: `ceil((prompt tokens + max_tokens) / block_size)` with the engine's block size;
- requests that fit the engine's KV-cache budget at once: the engine's KV blocks (`cache_config.num_gpu_blocks`, less
  the one null block vLLM's block pool reserves) divided by the blocks per request, rounded down;
- throughput of `--requests` concurrent requests: one `LLM.generate` call with all of them (greedy, exactly
  `--max-tokens` new tokens each: `ignore_eos`), wall time from the call to the last output, including the
  processor's work on the raw frames and audio; requests per second from the median over `--repeats` rounds after
  `--warmup` rounds. Each round is also split into stages by the engine's per-request timestamps
  (`RequestOutput.metrics`): the frontend (the processor, before the engine runs the requests), the prefill (the
  encoders, OmniSIFT's selection and the decoder's prefill: up to the last first token) and the decode.

Both keep ratios run in every round, their order alternating, so a load change on a shared machine hits both alike.
Every round sends clips that differ from every earlier round's in one pixel, so no processor, encoder or prefix cache
serves a request from an earlier one. The 0.25 requests use the checkpoint's ratio; the 1.0 requests override it on
the same engine (vLLM places pruned tokens only when the checkpoint compresses, so the engine must start at 0.25).

`run` imports only vLLM, torch, numpy and this package's pure modules (never the transformers model code). On CPU it
defaults `VLLM_ENABLE_V1_MULTIPROCESSING=0` (the engine core in this process) and `VLLM_CPU_OMP_THREADS_BIND=nobind`,
and drops `VLLM_CPU_KVCACHE_SPACE` (a legacy setting that would override `--kv-cache-gib`).
"""

import argparse
import json
import math
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

from .reporting import cpu_name, fmt, markdown_table, median, ratio

__all__ = ["QUICK", "SIZES", "build_parser", "format_markdown", "main", "prepare", "run"]

SAMPLING_RATE = 16000
FPS = 2.0
QUESTION = "What happens in the clip, and what do you hear?"
CHECKPOINT_KEEP_RATIO = 0.25
# Clips per size: seconds, frame side in pixels (a multiple of 28: 14-pixel patches, merged 2 x 2).
SIZES = {"mid-size": {"seconds": 20, "side": 336}, "tiny": {"seconds": 4, "side": 112}}
# What `--quick` changes in `run`: a small KV budget and few tokens, one round (a smoke run: its timings mean nothing).
QUICK = {"kv_cache_gib": 0.0625, "max_tokens": 4, "repeats": 1, "warmup": 0}


# ---------------------------------------------------------------------------------------------------------------------
# prepare (the package's environment)
# ---------------------------------------------------------------------------------------------------------------------
def synthetic_clip(seed: int, seconds: float, side: int, fps: float = FPS):
    """A deterministic clip: `seconds * fps` frames (side x side, RGB uint8) of coloured squares moving over a
    coloured background, and a tone with a beep (float32 mono, 16 kHz). Different seeds give different clips."""
    import numpy as np

    rng = np.random.default_rng(seed)
    frames = max(2, round(seconds * fps))
    video = np.empty((frames, side, side, 3), dtype=np.uint8)
    video[:] = rng.integers(0, 255, 3, dtype=np.uint8)
    square = side // 5
    colours = rng.integers(0, 255, (3, 3), dtype=np.uint8)
    for i in range(frames):
        for j, colour in enumerate(colours):
            x = (i * (5 + 3 * j) + seed * 13 + j * side // 3) % (side - square)
            y = (j * side // 3 + i * (1 + j)) % (side - square)
            video[i, y : y + square, x : x + square] = colour
    t = np.arange(int(seconds * SAMPLING_RATE)) / SAMPLING_RATE
    audio = 0.2 * np.sin(2 * math.pi * (220 + 40 * seed) * t)
    beep = (t > seconds / 3) & (t < seconds / 3 + 0.4)
    audio[beep] += 0.4 * np.sin(2 * math.pi * 1500 * t[beep])
    return video, audio.astype(np.float32)


def config_overrides(quick: bool) -> dict:
    """`tiny_config` overrides of the benchmark's model: `MID_SIZE`, or (`quick`) the tiny config with attention heads
    of 32 (vLLM's CPU attention runs head sizes of 32 and up; the tiny config's are 8)."""
    if not quick:
        from .benchmark import MID_SIZE

        return MID_SIZE
    from ..testing_utils import tiny_config

    base = tiny_config()
    text = base.text_config.to_dict()
    text.update(
        hidden_size=64,
        intermediate_size=128,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 6, 6]},
    )
    vision = base.vision_config.to_dict()
    vision.update(out_hidden_size=64)
    audio = base.audio_config.to_dict()
    audio.update(output_dim=64)
    return {"text_config": text, "vision_config": vision, "audio_config": audio}


def prepare(out_dir: str, quick: bool = False, clips: int = 8, seed: int = 0) -> dict:
    """Write the checkpoint, processor, clips and workload description into `out_dir`; return the workload."""
    import numpy as np
    import torch

    from ..testing_utils import TINY_TOKEN_IDS, tiny_model, tiny_processor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_name = "tiny" if quick else "mid-size"
    size = SIZES[model_name]
    model = tiny_model(seed=seed, keep_ratio=CHECKPOINT_KEEP_RATIO, **config_overrides(quick))
    model.generation_config.eos_token_id = [TINY_TOKEN_IDS["im_end"]]
    processor = tiny_processor()
    model.save_pretrained(out / "checkpoint")
    processor.save_pretrained(out / "checkpoint")
    media = {}
    for i in range(clips):
        media[f"video_{i}"], media[f"audio_{i}"] = synthetic_clip(seed * 1000 + i, size["seconds"], size["side"])
    np.savez(out / "clips.npz", **media)
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    # The prompt length at keep 1.0 as the transformers processor lays it out (what vLLM's keep-1.0 prompt must be).
    inputs = processor(
        text=[prompt],
        videos=[media["video_0"]],
        audio=[media["audio_0"]],
        videos_kwargs={"fps": FPS},
        audio_kwargs={"max_length": len(media["audio_0"]) + 160},
        load_audio_from_video=True,
        audio_from_video_indices=[0],
        return_tensors="pt",
    )
    # ... and the decoder's prompt at the checkpoint's ratio: the kept tokens of the transformers model's prefill.
    inputs["use_audio_in_video"] = True
    with torch.no_grad():
        kept = model.eval()(**inputs).kept_token_index.shape[1]
    text = model.config.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    workload = {
        "model": model_name,
        "config": (
            f"text hidden {text.hidden_size}, {text.num_hidden_layers} layers, {text.num_attention_heads} / "
            f"{text.num_key_value_heads} heads of {head_dim}, "
            f"intermediate {text.intermediate_size}; vision depth {model.config.vision_config.depth}, hidden "
            f"{model.config.vision_config.hidden_size}; audio {model.config.audio_config.encoder_layers} layers, "
            f"d_model {model.config.audio_config.d_model}; vocabulary {text.vocab_size}"
        ),
        "parameters": sum(p.numel() for p in model.parameters()),
        "checkpoint_keep_ratio": CHECKPOINT_KEEP_RATIO,
        "prompt": prompt,
        "clips": clips,
        "seconds": size["seconds"],
        "fps": FPS,
        "frame_size": [size["side"], size["side"]],
        "frames": int(media["video_0"].shape[0]),
        "sampling_rate": SAMPLING_RATE,
        "use_audio_in_video": True,
        "transformers_prompt_tokens": {
            "1.0": int(inputs["input_ids"].shape[1]),
            str(CHECKPOINT_KEEP_RATIO): int(kept),
        },
        "seed": seed,
        "prepared_with": {"torch": torch.__version__, "transformers": metadata.version("transformers")},
    }
    (out / "workload.json").write_text(json.dumps(workload, indent=2))
    return workload


# ---------------------------------------------------------------------------------------------------------------------
# run (the vLLM environment)
# ---------------------------------------------------------------------------------------------------------------------
def _versions() -> dict:
    import torch
    import vllm

    from .. import __version__

    return {
        "vllm": vllm.__version__,
        "torch": torch.__version__,
        "transformers": metadata.version("transformers"),
        "omnisift_hf": __version__,
    }


def _prompts(workload: dict, videos: list, audios: list, keep_ratio: float | None) -> list[dict]:
    kwargs = {"use_audio_in_video": True, "fps": workload["fps"]}
    if keep_ratio is not None:
        kwargs["keep_ratio"] = keep_ratio
    return [
        {
            "prompt": workload["prompt"],
            "multi_modal_data": {"video": video, "audio": (audio, workload["sampling_rate"])},
            "mm_processor_kwargs": dict(kwargs),
        }
        for video, audio in zip(videos, audios, strict=True)
    ]


def _round_videos(videos: list, round_index: int) -> list:
    """The clips of one round: each differs from every other round's in its first pixel (no cache hits across rounds;
    round 0 sends the clips as prepared)."""
    if round_index == 0:
        return videos
    marked = []
    for video in videos:
        video = video.copy()
        video[0, 0, 0, 0] ^= round_index & 0xFF
        video[0, 0, 1, 0] ^= (round_index >> 8) & 0xFF
        marked.append(video)
    return marked


# The stages of one `LLM.generate` call, from the engine's per-request timestamps (`RequestOutput.metrics`; monotonic
# clock). The engine runs in this process: it starts once the frontend has processed every request.
STAGES = ("frontend_s", "prefill_s", "decode_s")


def _stages(outputs, started_monotonic: float) -> dict:
    """`frontend_s`: from the call to the last request queued in the engine (the processor's work on the raw frames
    and audio of every request); `prefill_s`: from the first request scheduled to the last first token (encoders,
    OmniSIFT's selection, the decoder's prefill); `decode_s`: from the last first token to the last token."""
    stats = [output.metrics for output in outputs]
    if any(stat is None or not stat.last_token_ts for stat in stats):
        return dict.fromkeys(STAGES)
    first_tokens = max(stat.first_token_ts for stat in stats)
    return {
        "frontend_s": max(stat.queued_ts for stat in stats) - started_monotonic,
        "prefill_s": first_tokens - min(stat.scheduled_ts for stat in stats),
        "decode_s": max(stat.last_token_ts for stat in stats) - first_tokens,
    }


def _load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def run(args: argparse.Namespace) -> dict:
    """Measure both keep ratios on one engine; return the report."""
    out = Path(args.out_dir)
    workload = json.loads((out / "workload.json").read_text())
    import torch

    on_cuda = torch.cuda.is_available()
    if not on_cuda:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None)
    vllm_env = {key: value for key, value in sorted(os.environ.items()) if key.startswith("VLLM_")}
    import numpy as np
    from vllm import LLM, SamplingParams

    if args.quick:
        for key, value in QUICK.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
    defaults = {"kv_cache_gib": 1.0, "max_tokens": 16, "repeats": 3, "warmup": 1}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.requests > workload["clips"]:
        raise SystemExit(f"--requests {args.requests}: {out} holds {workload['clips']} clips (prepare more)")

    media = np.load(out / "clips.npz")
    videos = [media[f"video_{i}"] for i in range(args.requests)]
    audios = [media[f"audio_{i}"] for i in range(args.requests)]
    full = workload["transformers_prompt_tokens"]["1.0"]
    max_model_len = 2 ** math.ceil(math.log2(full + args.max_tokens + 64))
    kv_bytes = int(args.kv_cache_gib * 2**30)
    engine_args = {
        "model": str(out / "checkpoint"),
        "dtype": args.dtype,
        "enforce_eager": True,
        "enable_prefix_caching": False,
        "max_model_len": max_model_len,
        "kv_cache_memory_bytes": kv_bytes,
        "limit_mm_per_prompt": {"video": 1, "audio": 1, "image": 0},
        "seed": args.seed,
        "disable_log_stats": False,  # per-request timestamps (`RequestOutput.metrics`)
    }
    load_start = _load_average()
    started = time.perf_counter()
    llm = LLM(**engine_args)
    startup_s = time.perf_counter() - started
    cache = llm.llm_engine.vllm_config.cache_config
    block_size, num_blocks = int(cache.block_size), int(cache.num_gpu_blocks)
    usable_blocks = num_blocks - 1  # vLLM's block pool reserves one null block
    hf_config = llm.llm_engine.model_config.hf_config
    checkpoint_ratio = float(getattr(hf_config, "thinker_config", hf_config).keep_ratio)
    sampling = SamplingParams(max_tokens=args.max_tokens, min_tokens=args.max_tokens, temperature=0, ignore_eos=True)

    # None: the checkpoint's ratio (config.json); 1.0: the per-request override.
    keep_ratios = [(1.0, "request override (mm_processor_kwargs keep_ratio=1.0)"), (None, "checkpoint config.json")]
    runs = {source: [] for _, source in keep_ratios}
    prompt_tokens = {}
    generated = {}
    for round_index in range(args.warmup + args.repeats):
        round_videos = _round_videos(videos, round_index)
        order = keep_ratios if round_index % 2 == 0 else keep_ratios[::-1]
        for keep_ratio, source in order:
            prompts = _prompts(workload, round_videos, audios, keep_ratio)
            started, started_monotonic = time.perf_counter(), time.monotonic()
            outputs = llm.generate(prompts, sampling, use_tqdm=False)
            seconds = time.perf_counter() - started
            lengths = [len(output.prompt_token_ids) for output in outputs]
            if prompt_tokens.setdefault(source, lengths) != lengths:
                raise RuntimeError(
                    f"prompt lengths changed between rounds at {source}: {prompt_tokens[source]} / {lengths}"
                )
            generated[source] = [len(output.outputs[0].token_ids) for output in outputs]
            if round_index >= args.warmup:
                runs[source].append({"total_s": seconds, **_stages(outputs, started_monotonic)})
            print(
                f"round {round_index}{' (warm-up)' if round_index < args.warmup else ''}: keep "
                f"{keep_ratio or checkpoint_ratio}, {args.requests} requests in {seconds:.2f} s",
                file=sys.stderr,
            )

    rows = []
    for keep_ratio, source in keep_ratios:
        lengths = prompt_tokens[source]
        per_request = max(lengths)
        blocks = math.ceil((per_request + args.max_tokens) / block_size)
        seconds = median([stage["total_s"] for stage in runs[source]])
        rows.append(
            {
                "keep_ratio": checkpoint_ratio if keep_ratio is None else keep_ratio,
                "source": source,
                "prompt_tokens": lengths,
                "prompt_tokens_per_request": per_request,
                # The first clip's prompt as the transformers model lays it out (`prepare`), for comparison.
                "transformers_prompt_tokens": workload["transformers_prompt_tokens"].get(
                    str(checkpoint_ratio if keep_ratio is None else keep_ratio)
                ),
                "kv_blocks_per_request": blocks,
                "requests_fit": usable_blocks // blocks,
                "generated_tokens": generated[source],
                "times_s": [stage["total_s"] for stage in runs[source]],
                "median_s": seconds,
                **{
                    f"median_{stage}": median([run[stage] for run in runs[source] if run[stage] is not None])
                    for stage in STAGES
                },
                "rounds": runs[source],
                "requests_per_s": ratio(args.requests, seconds),
                "output_tokens_per_s": ratio(args.requests * args.max_tokens, seconds),
                "prompt_tokens_per_s": ratio(sum(lengths), seconds),
            }
        )
    base = rows[0]
    for row in rows:
        row["prompt_tokens_vs_full"] = ratio(row["prompt_tokens_per_request"], base["prompt_tokens_per_request"])
        row["kv_blocks_vs_full"] = ratio(row["kv_blocks_per_request"], base["kv_blocks_per_request"])
        row["requests_fit_vs_full"] = ratio(row["requests_fit"], base["requests_fit"])
        row["throughput_vs_full"] = ratio(row["requests_per_s"], base["requests_per_s"])
        # The same ratio within each round (both keep ratios back to back): steadier under a changing load.
        row["throughput_vs_full_per_round"] = [
            ratio(full, seconds) for full, seconds in zip(base["times_s"], row["times_s"], strict=True)
        ]
        row["throughput_vs_full_per_round_median"] = median(row["throughput_vs_full_per_round"])
    threads = torch.get_num_threads()
    device = torch.cuda.get_device_name() if on_cuda else cpu_name(threads)
    return {
        "environment": {
            "device": device,
            "dtype": args.dtype,
            **_versions(),
            "python": platform.python_version(),
            "threads": threads,
            # 1, 5 and 15 minute load averages before the engine starts and after the last round (os.getloadavg).
            "load_average": {"start": load_start, "end": _load_average()},
            "vllm_env": vllm_env,
            "model": workload["model"],
            "quick": args.quick,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "seed": args.seed,
            "command": " ".join(["python -m omnisift_hf.tools.vllm_benchmark", *args.argv]),
        },
        "workload": {
            **{key: value for key, value in workload.items() if key != "prompt"},
            "prompt": workload["prompt"],
            "requests": args.requests,
            "max_tokens": args.max_tokens,
            "sampling": "greedy (temperature 0), ignore_eos, exactly max_tokens new tokens",
        },
        "engine": {
            "args": {key: value for key, value in engine_args.items() if key != "model"},
            "startup_s": startup_s,
            "block_size": block_size,
            "num_gpu_blocks": num_blocks,
            "usable_blocks": usable_blocks,
            "kv_cache_tokens": usable_blocks * block_size,
            "kv_cache_bytes": kv_bytes,
            "checkpoint_keep_ratio": checkpoint_ratio,
        },
        "rows": rows,
    }


# ---------------------------------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------------------------------
def format_markdown(report: dict) -> str:
    """The report as markdown (what `run` prints)."""
    env, work, engine = report["environment"], report["workload"], report["engine"]
    versions = ", ".join(f"{name} {env[name]}" for name in ("vllm", "torch", "transformers") if env.get(name))
    note = " (quick smoke run: tiny model, not a measurement)" if env["quick"] else ""
    parts = [
        f"{env['device']}, {env['dtype']}, {versions}; medians of {env['repeats']} rounds after {env['warmup']} "
        f"warm-up{note}",
        f"### Serving with vLLM ({work['model']} config, {work['requests']} concurrent requests, one engine)",
        f"Model: {work['config']} (random weights, checkpoint keep ratio {engine['checkpoint_keep_ratio']}). Each "
        f"request: one {work['seconds']} s clip ({work['frames']} frames of {work['frame_size'][0]} x "
        f"{work['frame_size'][1]} at {work['fps']:g} fps) with its audio track (`use_audio_in_video`), greedy, "
        f"{work['max_tokens']} new tokens; the requests' clips differ. Engine: eager, prefix caching off, KV-cache "
        f"budget {engine['kv_cache_bytes'] / 2**30:g} GiB = {engine['usable_blocks']} blocks of "
        f"{engine['block_size']} tokens. Keep 1.0 is the per-request override (`mm_processor_kwargs`), on the same "
        f"engine. Throughput: one `LLM.generate` call with all {work['requests']} requests, wall time including the "
        "processor's work on the raw frames and audio. Stages (medians, from the engine's per-request timestamps): "
        "frontend = the processor's work on every request before the engine runs them; prefill = first request "
        "scheduled to the last first token (encoders, OmniSIFT's selection, the decoder's prefill); decode = the "
        "rest.",
    ]
    rows = []
    for row in report["rows"]:
        rows.append(
            [
                str(row["keep_ratio"]),
                str(row["prompt_tokens_per_request"]),
                fmt(row["prompt_tokens_vs_full"]),
                str(row["kv_blocks_per_request"]),
                fmt(row["kv_blocks_vs_full"]),
                str(row["requests_fit"]),
                fmt(row["requests_fit_vs_full"], ".2f", suffix="x"),
                fmt(row["median_s"], ".2f"),
                fmt(row["requests_per_s"], ".3f"),
                fmt(row["throughput_vs_full"], ".2f", suffix="x"),
                " / ".join(fmt(row[f"median_{stage}"], ".2f") for stage in STAGES),
                ", ".join(f"{seconds:.2f}" for seconds in row["times_s"]),
            ]
        )
    header = ["keep", "prompt tokens / request", "x full", "KV blocks / request", "x full"]
    header += [f"requests in the KV budget ({engine['usable_blocks']} blocks)", "x full"]
    header += [f"{work['requests']} requests: median (s)", "requests/s", "x full"]
    header += ["frontend / prefill / decode (s)", "single rounds (s)"]
    parts.append(markdown_table(header, rows))
    compressed = report["rows"][-1]
    rounds = ", ".join(fmt(value, ".2f") for value in compressed["throughput_vs_full_per_round"])
    load = env.get("load_average") or {}
    parts.append(
        f"Throughput of keep {compressed['keep_ratio']} x full within each round: {rounds} (median "
        f"{fmt(compressed['throughput_vs_full_per_round_median'], '.2f')}). Load average (1 / 5 / 15 min) before the "
        f"engine started: {' / '.join(map(str, load.get('start') or [])) or '-'}; after the last round: "
        f"{' / '.join(map(str, load.get('end') or [])) or '-'}."
    )
    same = all(row["prompt_tokens"][0] == row["transformers_prompt_tokens"] for row in report["rows"])
    parts.append(
        "The first clip's prompt in vLLM against the transformers model's on the same clip and weights: "
        + ", ".join(
            f"keep {row['keep_ratio']}: {row['prompt_tokens'][0]} / {row['transformers_prompt_tokens']}"
            for row in report["rows"]
        )
        + (" (equal)." if same else " (DIFFERENT).")
    )
    parts.append(f"Command: `{env['command']}`")
    return "\n\n".join(parts) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m omnisift_hf.tools.vllm_benchmark",
        description="Serving benchmark of OmniSIFT in vLLM: keep 1.0 against the checkpoint's 0.25 in one run.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare", help="(package environment) write a checkpoint, processor and clips")
    prep.add_argument("out_dir")
    prep.add_argument("--quick", action="store_true", help="tiny config and short clips (tests)")
    prep.add_argument("--clips", type=int, default=8, help="clips to write (default 8)")
    prep.add_argument("--seed", type=int, default=0)
    bench = commands.add_parser("run", help="(vLLM environment) measure both keep ratios on one engine")
    bench.add_argument("out_dir", help="what `prepare` wrote")
    bench.add_argument("--requests", type=int, default=8, help="concurrent requests (default 8)")
    bench.add_argument("--repeats", type=int, default=None, help="timed rounds (default 3; --quick 1)")
    bench.add_argument("--warmup", type=int, default=None, help="untimed rounds first (default 1; --quick 0)")
    bench.add_argument("--max-tokens", type=int, default=None, help="new tokens per request (default 16; --quick 4)")
    bench.add_argument("--kv-cache-gib", type=float, default=None, help="KV-cache budget (default 1; --quick 1/16)")
    bench.add_argument("--dtype", default="float32", help="engine dtype (default float32; bfloat16 on a GPU)")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--quick", action="store_true", help="a smoke run: small budget, few tokens, one round")
    bench.add_argument("--json", help="write the report here")
    bench.add_argument("--markdown", help="write the markdown here")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.command == "prepare":
        workload = prepare(args.out_dir, args.quick, args.clips, args.seed)
        print(json.dumps({key: value for key, value in workload.items() if key != "prompt"}, indent=2))
        return 0
    args.argv = argv
    report = run(args)
    markdown = format_markdown(report)
    print(markdown)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
