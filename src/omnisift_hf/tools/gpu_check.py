"""The prepared GPU check: real 7B-size speed and memory, the CUDA tests and the benchmark on CUDA, in one command.

    python -m omnisift_hf.tools.gpu_check                      # on a CUDA machine: about 4-7 minutes on an H200
    python -m omnisift_hf.tools.gpu_check --dry-run            # the same code paths on CPU, tiny sizes (CI, seconds)
    examples/gpu_check.sh                                      # the same, after a version check (no package import)

Steps, in order (each recorded as ok / failed / skipped; the results are rewritten after every step, so a run cut
short still leaves what it measured):

1. `environment`: device, driver, CUDA, torch, transformers, omnisift_hf versions, and the version check: transformers
   must be the pinned 5.24.x, `qwen_omni_utils`, `av` and `soundfile` importable. Fails before any work otherwise.
2. `cuda_tests`: `pytest -m cuda tests/test_cuda.py` in a subprocess (its output in `pytest_cuda.log`).
3. `benchmark`: `omnisift_hf.tools.benchmark` with `--device cuda` in bf16 at the mid-size config (prefill,
   generate, batch sections; the CPU-bound FLOPs section is left out).
4. `thinker_7b`: the real Qwen2.5-Omni-7B thinker sizes (`omnisift_hf.tools.profiling.qwen2_5_omni_config("7B")`)
   with random weights, built directly on the GPU in bf16. Parameter count and bf16 size first (meta device). Then,
   for 20 s and 60 s clips at 2 fps with audio (24 x 24 patches per frame, as `omnisift_hf.benchmark`), keep ratios
   1.0 / 0.35 / 0.25 interleaved in every round: prefill time, time to first token and a forced 64-token greedy
   generation (CUDA events, medians of `--repeats` rounds after `--warmup`), peak memory of one prefill and one
   generation (`torch.cuda.reset_peak_memory_stats` / `max_memory_allocated`: above the weights and in total), and
   padded batches of 1 / 4 / 8 clips of different lengths, again all keep ratios per round.

`--dry-run` (alias `--cpu-smoke`) runs every step on CPU: the version check, the CUDA tests (all skipped without
CUDA), the benchmark's `--quick` run and the 7B step on the tiny config with short clips; the 7B model is then only
built on the meta device (parameter count and bf16 size). Its timings and memory figures are not measurements.

A time budget (`--time-budget`, seconds from the start) skips whatever measurement would start after it, so the
command ends in time on a slower GPU; skipped measurements are listed. Results go to `--output-dir` (default
`gpu_check_results/`): `gpu_check.json`, `gpu_check.md` and `pytest_cuda.log`, nothing else, no sub-folders.

This module imports only the standard library at the top: `python src/omnisift_hf/tools/gpu_check.py
--check-versions` checks the environment without importing transformers or `omnisift_hf` (whose import fails outright
under another transformers version).
"""

import argparse
import importlib
import json
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path

__all__ = [
    "PINNED_TRANSFORMERS",
    "REQUIRED_MODULES",
    "RESULT_FILES",
    "VersionCheckError",
    "build_parser",
    "check_versions",
    "format_markdown",
    "installed_version",
    "main",
    "run",
]

PINNED_TRANSFORMERS = "5.24"
MINIMUM_TORCH = (2, 6)
# Import name -> distribution to install.
REQUIRED_MODULES = {"qwen_omni_utils": "qwen-omni-utils", "av": "av", "soundfile": "soundfile"}
RESULT_FILES = ("gpu_check.json", "gpu_check.md", "pytest_cuda.log")
REPOSITORY = Path(__file__).resolve().parents[3]
CUDA_TESTS = REPOSITORY / "tests" / "test_cuda.py"
INSTALL_HINT = (
    "Install them (offline: carry wheels in .whl/ and `python3 -m pip install -q --no-index --no-deps --no-compile "
    "--target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:src`; see README.md, 'GPU check')."
)

# What the full run measures; `--dry-run` replaces it with `DRY_RUN`.
FULL = {
    "seconds": [20, 60],
    "patches": [24, 24],
    "keep_ratios": [1.0, 0.35, 0.25],
    "max_new_tokens": 64,
    "batch_sizes": [1, 4, 8],
    "batch_seconds": [10, 11, 12, 13, 14, 15, 16, 17],
    "batch_new_tokens": 32,
    "repeats": 3,
    "warmup": 1,
    "batch_repeats": 2,
}
DRY_RUN = {
    "seconds": [2, 4],
    "patches": [8, 8],
    "keep_ratios": [1.0, 0.35, 0.25],
    "max_new_tokens": 4,
    "batch_sizes": [1, 4, 8],
    "batch_seconds": [2, 2, 3, 3, 4, 4, 5, 5],
    "batch_new_tokens": 2,
    "repeats": 1,
    "warmup": 0,
    "batch_repeats": 1,
}


class VersionCheckError(RuntimeError):
    """The environment lacks what the GPU check needs; the message names what to install."""


# ---------------------------------------------------------------------------------------------------------------------
# Versions (standard library only)
# ---------------------------------------------------------------------------------------------------------------------
def installed_version(distribution: str) -> str | None:
    """The installed version of `distribution`, `None` when it is not installed (tests monkeypatch this)."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])


def check_versions() -> dict:
    """Check transformers (pinned `PINNED_TRANSFORMERS`.x), torch (>= 2.6) and the `REQUIRED_MODULES`; return the
    versions found. Raises `VersionCheckError` naming everything missing, before any work is done."""
    problems, versions = [], {}
    transformers = installed_version("transformers")
    versions["transformers"] = transformers
    if transformers is None or _release(transformers)[:2] != _release(PINNED_TRANSFORMERS)[:2]:
        problems.append(
            f"transformers {transformers or 'is not installed'}: omnisift_hf needs transformers "
            f"{PINNED_TRANSFORMERS}.x (install transformers=={PINNED_TRANSFORMERS}.0)"
        )
    torch_version = installed_version("torch")
    versions["torch"] = torch_version
    if torch_version is None or _release(torch_version)[:2] < MINIMUM_TORCH:
        problems.append(f"torch {torch_version or 'is not installed'}: needs torch >= 2.6")
    for module, distribution in REQUIRED_MODULES.items():
        versions[distribution] = installed_version(distribution)
        try:
            importlib.import_module(module)
        except Exception as error:  # an installed package can still fail to import (missing shared library)
            problems.append(f"{distribution}: `import {module}` fails ({type(error).__name__}: {error})")
    if problems:
        raise VersionCheckError(
            "The GPU check cannot run in this environment:\n  - " + "\n  - ".join(problems) + "\n" + INSTALL_HINT
        )
    return versions


def _command(command: list[str]) -> str | None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def environment(dry_run: bool) -> dict:
    """Device, driver, CUDA, torch, transformers and omnisift_hf versions (recorded with every figure)."""
    import torch
    import transformers

    import omnisift_hf

    from .reporting import cpu_name

    cuda = torch.cuda.is_available() and not dry_run
    driver = _command(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    env = {
        "device": torch.cuda.get_device_name(0) if cuda else cpu_name(),
        "device_memory_gib": torch.cuda.get_device_properties(0).total_memory / 2**30 if cuda else None,
        "driver": driver.splitlines()[0] if driver else None,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "omnisift_hf": omnisift_hf.__version__,
        "python": platform.python_version(),
        "dtype": "float32" if dry_run else "bfloat16",
        "dry_run": dry_run,
    }
    try:
        import flash_attn  # noqa: F401

        env["flash_attn"] = metadata.version("flash-attn")
    except Exception:
        env["flash_attn"] = None
    return env


def _short_env(env: dict) -> dict:
    keys = ("device", "driver", "cuda", "torch", "transformers", "omnisift_hf", "dtype", "dry_run")
    return {key: env.get(key) for key in keys}


# ---------------------------------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------------------------------
def cuda_tests(output_dir: Path, timeout: int = 300) -> dict:
    """`pytest -m cuda tests/test_cuda.py` in a subprocess; its output goes to `pytest_cuda.log`."""
    log = output_dir / "pytest_cuda.log"
    if not CUDA_TESTS.exists():
        log.write_text(f"{CUDA_TESTS} not found (not a checkout of the repository)\n")
        return {"status": "skipped", "reason": f"{CUDA_TESTS} not found"}
    command = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-rs", "-p", "no:cacheprovider"]
    command += ["-p", "no:warnings", str(CUDA_TESTS)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY / "src"), env.get("PYTHONPATH")]))
    started = time.perf_counter()
    try:
        result = subprocess.run(command, cwd=REPOSITORY, env=env, capture_output=True, text=True, timeout=timeout)
        output, returncode = result.stdout + result.stderr, result.returncode
    except subprocess.TimeoutExpired as error:
        output = f"{error.stdout or ''}{error.stderr or ''}\ntimed out after {timeout} s"
        output, returncode = output if isinstance(output, str) else str(output), None
    log.write_text(f"$ {' '.join(command)}\n\n{output}")
    counts = {
        word: int(number)
        for number, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)", output)
    }
    return {
        "status": "ok" if returncode == 0 else "failed",
        "command": " ".join(command),
        "returncode": returncode,
        "counts": counts,
        "summary": output.strip().splitlines()[-1] if output.strip() else "",
        "seconds": time.perf_counter() - started,
    }


def benchmark(dry_run: bool, repeats: int) -> dict:
    """`omnisift_hf.tools.benchmark` (prefill, generate, batch) on CUDA in bf16 at the mid-size config; on CPU its
    `--quick` smoke run."""
    from . import benchmark as bench

    argv = ["--sections", "prefill", "generate", "batch", "--no-progress"]
    argv += ["--quick", "--device", "cpu"] if dry_run else ["--device", "cuda", "--dtype", "bfloat16"]
    argv += [] if dry_run else ["--repeats", str(repeats)]
    report = bench.run(bench.build_parser().parse_args(argv))
    report["environment"]["command"] = "python -m omnisift_hf.benchmark " + " ".join(argv)
    return {"status": "ok", "command": report["environment"]["command"], "report": report}


def _meta_size(config) -> dict:
    import torch

    from ..models.qwen2_5_omni.modeling_omnisift import OmniSiftForConditionalGeneration

    with torch.device("meta"):
        model = OmniSiftForConditionalGeneration(config)
    parameters = sum(parameter.numel() for parameter in model.parameters())
    parts = {
        "vision_encoder": model.model.visual,
        "audio_encoder": model.model.audio_tower,
        "decoder": model.model.language_model,
        "lm_head": model.lm_head,
        "selector": model.compressor,
    }
    return {
        "parameters": parameters,
        "bf16_bytes": parameters * 2,
        "parameters_by_part": {name: sum(p.numel() for p in part.parameters()) for name, part in parts.items()},
    }


def _thinker_config(dry_run: bool):
    """The real 7B thinker sizes with the tiny tokenizer's token ids (its inputs are `tiny_inputs`); the tiny config
    in a dry run."""
    from ..testing_utils import TINY_TOKEN_IDS, tiny_config
    from .profiling import qwen2_5_omni_config

    if dry_run:
        return tiny_config()
    ids = TINY_TOKEN_IDS
    return qwen2_5_omni_config(
        "7B",
        audio_token_index=ids["audio"],
        image_token_index=ids["image"],
        video_token_index=ids["video"],
        vision_start_token_id=ids["vision_start"],
        vision_end_token_id=ids["vision_end"],
        audio_start_token_id=ids["audio_start"],
        audio_end_token_id=ids["audio_end"],
        user_token_id=5,
    )


def build_model(config, device: str, dtype, seed: int = 0):
    """`OmniSiftForConditionalGeneration(config)` built directly on `device` in `dtype` (no float32 copy on the host:
    8.9 B parameters of the 7B thinker are 17.9 GB in bf16), random weights, eval mode, sdpa attention, the tiny
    tokenizer's end and pad tokens."""
    import torch

    from ..models.qwen2_5_omni.modeling_omnisift import OmniSiftForConditionalGeneration
    from ..testing_utils import TINY_TOKEN_IDS

    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = OmniSiftForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(default)
    model = model.to(device, dtype).eval()
    model.set_attn_implementation("sdpa")
    model.generation_config.eos_token_id = [TINY_TOKEN_IDS["im_end"], TINY_TOKEN_IDS["endoftext"]]
    model.generation_config.pad_token_id = TINY_TOKEN_IDS["pad"]
    return model


class _Budget:
    def __init__(self, started: float, seconds: float):
        self.deadline = started + seconds
        self.skipped: list[str] = []

    def allows(self, what: str) -> bool:
        if time.perf_counter() < self.deadline:
            return True
        self.skipped.append(what)
        return False


def thinker_7b(args: argparse.Namespace, plan: dict, env: dict, budget: _Budget, save) -> dict:
    """The 7B step (see the module docstring). `save(section)` writes the results so far."""
    import torch

    from ..processing_omnisift import to_model_inputs
    from ..testing_utils import tiny_inputs
    from .benchmark import PeakMemory, Stopwatch, TokenClock, _forced_generation
    from .profiling import clip_segments
    from .reporting import median, ratio

    dry_run = args.dry_run
    device = "cpu" if dry_run else "cuda"
    dtype = torch.float32 if dry_run else torch.bfloat16
    section = {
        "environment": _short_env(env),
        "model": "tiny config (dry run: timings and memory are not measurements)"
        if dry_run
        else "Qwen2.5-Omni-7B thinker sizes, random weights, bf16, sdpa",
        "size_7b": _meta_size(_thinker_config(False)),
        "plan": plan,
        "timing": "perf_counter on CPU (not meaningful)" if dry_run else "CUDA events; medians",
        "memory_method": None,
        "clips": [],
        "batch": None,
    }
    save(section)
    config = _thinker_config(dry_run)
    started = time.perf_counter()
    model = build_model(config, device, dtype, seed=args.seed)
    if device == "cuda":
        torch.cuda.synchronize()
        section["weights_bytes"] = torch.cuda.memory_allocated()
    section["build_s"] = time.perf_counter() - started
    keep_ratios, patches = plan["keep_ratios"], tuple(plan["patches"])
    options = _forced_generation(plan["max_new_tokens"])
    clock = TokenClock()

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    for seconds in plan["seconds"]:
        inputs = to_model_inputs(tiny_inputs([clip_segments(seconds, patches)], seed=args.seed), model)
        runs = {keep: {"prefill_s": [], "ttft_s": [], "generate_s": []} for keep in keep_ratios}
        rows = {keep: {"keep_ratio": keep} for keep in keep_ratios}
        clip = {"seconds": seconds, "input_length": inputs["input_ids"].shape[1], "rows": []}
        section["clips"].append(clip)
        for step in range(plan["warmup"] + plan["repeats"]):
            if not budget.allows(f"{seconds} s clip, round {step + 1}"):
                break
            for keep in keep_ratios:  # interleaved: every round measures each keep ratio
                with torch.no_grad(), Stopwatch(model.device) as watch:
                    out = model(**inputs, keep_ratio=keep, logits_to_keep=1)
                prefill = watch.seconds
                sync()
                clock.start()
                with torch.no_grad(), Stopwatch(model.device) as watch:
                    sequences = model.generate(**inputs, keep_ratio=keep, streamer=clock, **options)
                if step >= plan["warmup"]:
                    runs[keep]["prefill_s"].append(prefill)
                    runs[keep]["ttft_s"].append(clock.times[0])
                    runs[keep]["generate_s"].append(watch.seconds)
                kept = int((out.num_kept_video_tokens + out.num_kept_audio_tokens).sum())
                media = int((out.num_video_tokens + out.num_audio_tokens).sum())
                rows[keep].update(
                    retention=kept / media if media else 1.0,
                    decoder_length=int(inputs["input_ids"].shape[1] - (media - kept)),
                    new_tokens=int(sequences.shape[1] - inputs["input_ids"].shape[1]),
                )
        for keep in keep_ratios:
            if not budget.allows(f"{seconds} s clip, keep {keep}, peak memory"):
                continue
            for kind in ("prefill", "generate"):
                with torch.no_grad(), PeakMemory(model.device) as memory:
                    if kind == "prefill":
                        model(**inputs, keep_ratio=keep, logits_to_keep=1)
                    else:
                        model.generate(**inputs, keep_ratio=keep, **options)
                rows[keep][f"{kind}_peak_bytes"] = memory.peak_bytes
                if device == "cuda":
                    rows[keep][f"{kind}_peak_total_bytes"] = torch.cuda.max_memory_allocated()
                section["memory_method"] = memory.method
        for keep in keep_ratios:
            row = rows[keep]
            for key, values in runs[keep].items():
                row[key] = median(values)
                row[f"{key.removesuffix('_s')}_runs_s"] = values
            new_tokens = row.get("new_tokens")
            if row["generate_s"] and new_tokens and new_tokens > 1 and row["generate_s"] > row["ttft_s"]:
                row["decode_tokens_per_s"] = (new_tokens - 1) / (row["generate_s"] - row["ttft_s"])
            clip["rows"].append(row)
        base = rows.get(1.0, {})
        for row in clip["rows"]:
            for key in ("prefill_s", "ttft_s", "generate_s", "prefill_peak_bytes", "generate_peak_bytes"):
                name = key.removesuffix("_s").removesuffix("_bytes")
                row[f"{name}_vs_full"] = ratio(row.get(key), base.get(key))
        save(section)
        del inputs
    section["batch"] = _batches(model, plan, args.seed, budget, device)
    save(section)
    return section


def _batches(model, plan: dict, seed: int, budget: _Budget, device: str) -> dict:
    """Padded batches of each size over the same clips, all keep ratios in every round (interleaved)."""
    import torch

    from ..processing_omnisift import to_model_inputs
    from ..testing_utils import tiny_inputs
    from .benchmark import Stopwatch, _forced_generation
    from .profiling import clip_segments
    from .reporting import median, ratio

    patches, samples = (
        tuple(plan["patches"]),
        [clip_segments(s, tuple(plan["patches"])) for s in plan["batch_seconds"]],
    )
    del patches
    options = _forced_generation(plan["batch_new_tokens"])
    batches = {
        size: [
            to_model_inputs(tiny_inputs(samples[start : start + size], seed=seed + start), model)
            for start in range(0, len(samples), size)
        ]
        for size in plan["batch_sizes"]
    }
    times = {(size, keep): [] for size in plan["batch_sizes"] for keep in plan["keep_ratios"]}
    for step in range(plan["warmup"] + plan["batch_repeats"]):
        if not budget.allows(f"batches, round {step + 1}"):
            break
        for keep in plan["keep_ratios"]:
            for size, inputs in batches.items():
                with torch.no_grad(), Stopwatch(model.device) as watch:
                    for batch in inputs:
                        model.generate(**batch, keep_ratio=keep, **options)
                if step >= plan["warmup"]:
                    times[size, keep].append(watch.seconds)
    rows = []
    for keep in plan["keep_ratios"]:
        for size, inputs in batches.items():
            seconds = median(times[size, keep])
            rows.append(
                {
                    "keep_ratio": keep,
                    "batch_size": size,
                    "padded_lengths": [batch["input_ids"].shape[1] for batch in inputs],
                    "pad_fraction": sum(int((b["attention_mask"] == 0).sum()) for b in inputs)
                    / sum(b["attention_mask"].numel() for b in inputs),
                    "total_s": seconds,
                    "runs_s": times[size, keep],
                    "tokens_per_s": len(samples) * plan["batch_new_tokens"] / seconds if seconds else None,
                }
            )
    for row in rows:
        one = next(r for r in rows if r["keep_ratio"] == row["keep_ratio"] and r["batch_size"] == 1)
        row["speedup_vs_one_by_one"] = ratio(one["total_s"], row["total_s"])
    return {"seconds": plan["batch_seconds"], "new_tokens": plan["batch_new_tokens"], "rows": rows}


# ---------------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------------


def format_markdown(report: dict) -> str:
    """The report as markdown (what `gpu_check.md` holds)."""
    from .reporting import fmt, markdown_table

    env = report.get("environment") or {}
    title = "# GPU check" + (" (dry run on CPU: no figure below is a measurement)" if report.get("dry_run") else "")
    parts = [title, f"Command: `{report.get('command')}`; started {report.get('started')}."]
    if env:
        parts.append(
            f"{env.get('device')}, driver {env.get('driver')}, CUDA {env.get('cuda')}, torch {env.get('torch')}, "
            f"transformers {env.get('transformers')}, omnisift_hf {env.get('omnisift_hf')}, Python "
            f"{env.get('python')}, {env.get('dtype')}."
        )
    rows = [
        [
            name,
            step["status"],
            fmt(step.get("seconds"), ".1f"),
            step.get("error", "").splitlines()[-1:] and step["error"].splitlines()[-1][:200] or step.get("reason", ""),
        ]
        for name, step in report["steps"].items()
    ]
    parts.append(markdown_table(["step", "status", "seconds", "note"], rows))
    tests = report.get("cuda_tests")
    if tests:
        parts.append(f"## CUDA tests\n\n`{tests.get('command', '')}`: {tests.get('summary', tests.get('reason'))}")
    bench = report.get("benchmark")
    if bench and bench.get("report"):
        from .benchmark import format_markdown as benchmark_markdown

        parts.append(f"## Benchmark, mid-size config\n\n`{bench['command']}`\n\n{benchmark_markdown(bench['report'])}")
    section = report.get("thinker_7b")
    if section:
        parts.append(_thinker_markdown(section))
    skipped = report.get("skipped_for_time") or []
    if skipped:
        parts.append("Skipped for the time budget: " + "; ".join(skipped) + ".")
    return "\n\n".join(parts) + "\n"


def _thinker_markdown(section: dict) -> str:
    from .reporting import fmt, markdown_table

    size = section["size_7b"]
    env = section["environment"]
    parts = [
        f"## {section['model']}",
        f"7B thinker: {size['parameters'] / 1e9:.2f} B parameters, {size['bf16_bytes'] / 2**30:.1f} GiB in bf16 "
        "(meta device count). " + f"{env['device']}, driver {env['driver']}, torch {env['torch']}, transformers "
        f"{env['transformers']}, {env['dtype']}. Timing: {section['timing']}. Peak memory: {section['memory_method']}"
        + (f"; weights {section['weights_bytes'] / 2**30:.2f} GiB" if section.get("weights_bytes") else "")
        + ".",
    ]
    plan = section["plan"]
    for clip in section["clips"]:
        header = ["keep", "retention", "decoder tokens", "prefill (s)", "x full", "first token (s)", "x full"]
        header += [f"{plan['max_new_tokens']} tokens (s)", "decode tok/s", "prefill peak MiB", "x full"]
        header += ["generate peak MiB", "x full", "total peak GiB"]
        rows = [
            [
                str(row["keep_ratio"]),
                fmt(row.get("retention")),
                str(row.get("decoder_length", "-")),
                fmt(row.get("prefill_s")),
                fmt(row.get("prefill_vs_full")),
                fmt(row.get("ttft_s")),
                fmt(row.get("ttft_vs_full")),
                fmt(row.get("generate_s")),
                fmt(row.get("decode_tokens_per_s"), ".1f"),
                fmt(row.get("prefill_peak_bytes"), ".0f", 2**20),
                fmt(row.get("prefill_peak_vs_full")),
                fmt(row.get("generate_peak_bytes"), ".0f", 2**20),
                fmt(row.get("generate_peak_vs_full")),
                fmt(row.get("generate_peak_total_bytes"), ".2f", 2**30),
            ]
            for row in clip["rows"]
        ]
        parts.append(
            f"### {clip['seconds']} s clip, {clip['input_length']} prompt tokens\n\n" + markdown_table(header, rows)
        )
    batch = section.get("batch")
    if batch:
        rows = [
            [
                str(row["keep_ratio"]),
                str(row["batch_size"]),
                ", ".join(map(str, row["padded_lengths"])),
                f"{row['pad_fraction']:.1%}",
                fmt(row["total_s"]),
                fmt(row["tokens_per_s"], ".1f"),
                fmt(row["speedup_vs_one_by_one"], ".2f"),
            ]
            for row in batch["rows"]
        ]
        parts.append(
            f"### Padded batches: clips of {batch['seconds']} s, {batch['new_tokens']} new tokens each\n\n"
            + markdown_table(
                ["keep", "batch size", "padded lengths", "padding", "time (s)", "tokens/s", "x one by one"], rows
            )
        )
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m omnisift_hf.tools.gpu_check",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--output-dir", default="gpu_check_results", help="results folder (default gpu_check_results)")
    parser.add_argument(
        "--dry-run",
        "--cpu-smoke",
        action="store_true",
        help="every step on CPU, tiny sizes (CI; not measurements)",
    )
    parser.add_argument("--check-versions", action="store_true", help="only check the environment, then exit")
    parser.add_argument("--skip", nargs="+", default=[], choices=["cuda_tests", "benchmark", "thinker_7b"])
    parser.add_argument("--repeats", type=int, help="timed rounds (default 3; dry run 1)")
    parser.add_argument("--seconds", type=int, nargs="+", help="clip lengths of the 7B step (default 20 60)")
    parser.add_argument(
        "--time-budget", type=float, default=420.0, help="seconds after which no new measurement starts (default 420)"
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser


def run(args: argparse.Namespace) -> dict:
    """Run the steps; returns the report (what `gpu_check.json` holds)."""
    started = time.perf_counter()
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    plan = dict(DRY_RUN if args.dry_run else FULL)
    if args.repeats:
        plan["repeats"] = args.repeats
    if args.seconds:
        plan["seconds"] = args.seconds
    budget = _Budget(started, args.time_budget)
    report = {
        "command": " ".join(["python -m omnisift_hf.tools.gpu_check", *args.argv]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "dry_run": args.dry_run,
        "environment": None,
        "steps": {},
    }

    def save() -> None:
        report["skipped_for_time"] = budget.skipped
        report["elapsed_s"] = time.perf_counter() - started
        (output_dir / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
        (output_dir / "gpu_check.md").write_text(format_markdown(report))

    def step(name: str, function) -> None:
        if name in args.skip:
            report["steps"][name] = {"status": "skipped", "reason": "--skip"}
            return save()
        begin = time.perf_counter()
        print(f"[gpu_check] {name} ...", file=sys.stderr, flush=True)
        try:
            result = function()
            status = result.pop("status", "ok") if isinstance(result, dict) else "ok"
            report["steps"][name] = {"status": status}
            if name in ("cuda_tests", "benchmark"):
                report[name] = result
        except Exception as error:
            report["steps"][name] = {"status": "failed", "error": "".join(traceback.format_exception(error))[-4000:]}
            print(report["steps"][name]["error"], file=sys.stderr)
        report["steps"][name]["seconds"] = time.perf_counter() - begin
        if name == "cuda_tests" and report.get("cuda_tests"):
            report["steps"][name]["reason"] = report["cuda_tests"].get("summary", "")
        print(f"[gpu_check] {name}: {report['steps'][name]['status']}", file=sys.stderr, flush=True)
        save()

    try:
        report["versions"] = check_versions()
    except VersionCheckError as error:
        report["steps"]["environment"] = {"status": "failed", "error": str(error), "seconds": 0.0}
        save()
        raise
    env = environment(args.dry_run)
    report["environment"] = env
    report["steps"]["environment"] = {"status": "ok", "seconds": time.perf_counter() - started}
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        report["steps"]["environment"] = {"status": "failed", "error": "no CUDA device (use --dry-run on CPU)"}
        save()
        raise VersionCheckError("No CUDA device is available: run with --dry-run on CPU.")
    save()
    step("cuda_tests", lambda: cuda_tests(output_dir))
    step("benchmark", lambda: benchmark(args.dry_run, plan["repeats"]))

    def seven_b() -> dict:
        def keep(section: dict) -> None:
            report["thinker_7b"] = section
            save()

        thinker_7b(args, plan, env, budget, keep)
        return {"status": "ok"}

    step("thinker_7b", seven_b)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        versions = check_versions()
    except VersionCheckError as error:
        print(error, file=sys.stderr)
        return 2
    if args.check_versions:
        print("environment ok: " + ", ".join(f"{name} {version}" for name, version in versions.items()))
        return 0
    try:
        report = run(args)
    except VersionCheckError as error:
        print(error, file=sys.stderr)
        return 2
    print(format_markdown(report))
    print(f"[gpu_check] results in {Path(args.output_dir).resolve()}: {', '.join(RESULT_FILES)}", file=sys.stderr)
    return 0 if all(step["status"] != "failed" for step in report["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
