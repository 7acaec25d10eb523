"""Benchmark OmniSIFT against the full model: FLOPs at real sizes, latency and memory, batched generation.

    python -m omnisift_hf.benchmark                          # every section but talker, markdown tables on stdout
    python -m omnisift_hf.benchmark --json results.json      # also the raw numbers
    python -m omnisift_hf.benchmark --quick                  # a smoke run: tiny model, one short clip, 1 repeat
    python -m omnisift_hf.benchmark --sections flops         # one section (flops, prefill, generate, batch, talker)
    python -m omnisift_hf.benchmark --talker                 # spoken replies only (same as --sections talker)
    python -m omnisift_hf.benchmark --backbone qwen3_omni_moe  # FLOPs of the Qwen3-Omni-30B-A3B thinker (flops only)

Sections (all keep ratios of one section are measured side by side in the same run):

- `flops`: FLOPs of one prefill of the real Qwen2.5-Omni-7B and -3B thinkers, counted on the meta device (no weights;
  see `omnisift_hf.tools.profiling.MetaPrefillFlops` for what is counted how), split into vision encoder, audio
  encoder, compression (the selector; STVP has no matrix product), decoder and lm_head, for 2 fps clips with audio at
  the processor's default resolution (24 x 24 patches per temporal slice of 2 frames -> 144 LLM tokens per second of
  video, 25 audio tokens per second). Deterministic: no timing. With `--backbone qwen3_omni_moe` (the only section
  that backbone has): the real Qwen3-Omni-30B-A3B MoE thinker instead (`MetaQwen3PrefillFlops`: each token counts the
  router and the 8 experts it is routed to, not all 128), for 2 fps clips at the Qwen3-Omni processor's minimum
  resolution (24 x 24 16-pixel patches per temporal slice -> 144 LLM tokens per second of video, 13 audio tokens per
  second, laid out as its processor interleaves them).
- `prefill`: the mid-size random config (text hidden 1024, 8 layers, 16 / 4 heads, intermediate 2816; vision depth 2,
  hidden 128; audio 2 layers, d_model 128; tiny vocabulary) on a 20 s clip: FLOPs of a real forward, median prefill
  time, the compression step's time (the model's `select_tokens` is wrapped from here, never timed inside the
  model) and peak memory.
- `generate`: the same model and clip through `generate()`: time to first token (a streamer records when each token
  reaches the host), total time, tokens/s and peak memory. Every run generates exactly `--max-new-tokens` tokens.
- `batch`: padded-batch throughput of `generate()` at each batch size against the same samples one by one (batch
  size 1); the samples are clips of different lengths, so padding is real.
- `talker` (not run by default; `--talker`): spoken replies of the full model (thinker + talker + token2wav,
  `OmniSiftOmniForConditionalGeneration`), whose talker is prompted with the thinker's kept positions only (`K + 2`
  prefill tokens instead of `L + 2`). Two parts: the talker's prefill FLOPs at the real 7B talker size on the meta
  device (`omnisift_hf.tools.profiling.MetaTalkerPrefillFlops`) for the `--flops-seconds` clips, K from the same tiny
  CPU run as the `flops` section; and, on the mid-size config with a talker scaled alike (`MID_SIZE_TALKER`) and the
  tiny token2wav of `omnisift_hf.testing_utils`, the talker's prefill tokens, time to the first codec token (a
  `TokenClock` passed as `talker_streamer`), the talker's prefill time and the thinker / talker / token2wav split
  (forward hooks on `model.thinker`, `model.talker`, `model.token2wav`), the whole reply's wall and process CPU time
  and peak memory. Every reply is greedy, exactly `--max-new-tokens` text tokens and `--talker-codec-tokens` codec
  tokens (end tokens suppressed by `min_new_tokens`), so both keep ratios do the same work apart from the prefills.
  The keep ratios (`--talker-keep-ratios`) alternate within each repeat, so a load change on a shared machine hits
  them alike.

The last table checks issue #8's targets at keep ratio 0.25 against 1.0 (prefill time <= 0.35x, compression step <= 1%
of the full prefill, batch 4 >= 2x one by one); with `talker`, issue #16's (talker prefill tokens <= 0.30x, whole
spoken reply <= 0.5x). `--dtype auto` (the default) is bfloat16 on CUDA and float32 on CPU.

Times are medians over `--repeats` runs after `--warmup` runs. CPU times use `time.perf_counter`; CUDA times use
CUDA events. Peak memory is measured in a separate run (never in a timed one): on CUDA,
`torch.cuda.max_memory_allocated()` minus the bytes allocated before the call (tensors only; not the CUDA context nor
cached free blocks); on CPU, the process's peak resident set size (RSS) during the call minus its RSS before the call,
sampled every millisecond by a background thread (psutil, or /proc/self/statm), for the first call of a fresh process
per keep ratio (the allocator keeps freed memory resident, so a second call in the same process would mostly reuse
it). The CPU figure includes one-time allocations of a first call and can miss a peak shorter than a millisecond.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import torch
import transformers
from tqdm.auto import tqdm
from transformers.generation.streamers import BaseStreamer

from ..media import AUDIO_TOKENS_PER_SECOND
from ..models.qwen2_5_omni.configuration_omnisift import OmniSiftOmniConfig
from ..models.qwen2_5_omni.modeling_omnisift import OmniSiftOmniForConditionalGeneration
from ..processing_omnisift import to_model_inputs
from ..testing_utils import (
    TINY_TOKEN_IDS,
    TINY_VOCAB_SIZE,
    tiny_inputs,
    tiny_model,
    tiny_omni_config,
    tiny_omni_model,
    tiny_speakers,
)
from .profiling import (
    MetaPrefillFlops,
    MetaQwen3PrefillFlops,
    MetaTalkerPrefillFlops,
    clip_segments,
    count_prefill_flops,
    measure_clip_layouts,
    qwen2_5_omni_config,
    qwen2_5_omni_talker_config,
    qwen3_omni_config,
)
from .reporting import cpu_name, fmt, markdown_table, median, ratio

__all__ = [
    "BACKBONES",
    "DEFAULT_SECTIONS",
    "MID_SIZE",
    "MID_SIZE_TALKER",
    "SECTIONS",
    "PeakMemory",
    "StageClock",
    "Stopwatch",
    "TokenClock",
    "flops_section",
    "format_markdown",
    "main",
    "run",
    "spoken_reply_model",
    "talker_flops_section",
    "talker_section",
    "talker_targets",
    "targets",
]

SECTIONS = ("flops", "prefill", "generate", "batch", "talker")
# `--backbone`: the sections each one has (Qwen3-Omni: the real-size FLOPs only).
BACKBONES = {"qwen2_5_omni": SECTIONS, "qwen3_omni_moe": ("flops",)}
# What runs without `--sections` / `--talker`: the thinker's sections (the spoken-reply one builds a second model).
DEFAULT_SECTIONS = ("flops", "prefill", "generate", "batch")

# The mid-size random config of the compression issue, on the tiny vocabulary of `omnisift_hf.testing_utils`.
MID_SIZE = {
    "text_config": {
        "vocab_size": TINY_VOCAB_SIZE,
        "hidden_size": 1024,
        "intermediate_size": 2816,
        "num_hidden_layers": 8,
        "num_attention_heads": 16,
        "num_key_value_heads": 4,
        "max_position_embeddings": 32768,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [8, 12, 12]},
        "pad_token_id": TINY_TOKEN_IDS["pad"],
        "eos_token_id": TINY_TOKEN_IDS["im_end"],
    },
    "vision_config": {
        "depth": 2,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_heads": 2,
        "out_hidden_size": 1024,
        "fullatt_block_indexes": [1],
    },
    "audio_config": {
        "num_mel_bins": 128,
        "encoder_layers": 2,
        "encoder_attention_heads": 2,
        "encoder_ffn_dim": 256,
        "d_model": 128,
        "output_dim": 1024,
    },
    "selector_hidden_size": 512,
    "selector_num_heads": 8,
    "selector_mlp_size": 256,
}

# The full model's talker at the mid-size config: each size of the real 7B talker (896 wide, 24 layers, 14 / 2 heads
# of 64, MLP 18944) scaled as the mid-size thinker scales the 7B thinker's (width 1024 / 3584, MLP 2816 / 18944,
# layers 8 / 28, heads 16 / 28, head_dim 64 / 128, KV heads 4 / 4): 256 wide, MLP 2816, 7 layers, 8 / 2 heads of 32.
# It reads the thinker's 1024-wide states; codec vocabulary, token ids and token2wav are the tiny model's.
MID_SIZE_TALKER = {
    "embedding_size": MID_SIZE["text_config"]["hidden_size"],
    "hidden_size": 256,
    "intermediate_size": 2816,
    "num_hidden_layers": 7,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "layer_types": None,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 6, 6]},
}

# What `--quick` changes: the tiny model, a 4 s clip of 8 x 8 patches per frame, one repeat, few tokens, 7B FLOPs
# for that clip only, one torch thread (a smoke run then stays fast on a busy machine; its timings mean nothing).
QUICK = {
    "threads": 1,
    "seconds": 4,
    "patches": [8, 8],
    "repeats": 1,
    "warmup": 1,
    "max_new_tokens": 4,
    "talker_codec_tokens": 8,
    "batch_sizes": [1, 4],
    "batch_seconds": [2, 3, 4, 5],
    "flops_models": ["7B"],
}


# ---------------------------------------------------------------------------------------------------------------------
# Probes: time, memory, tokens
# ---------------------------------------------------------------------------------------------------------------------
class Stopwatch:
    """Wall time of a block in seconds (`seconds`): CUDA events on CUDA, `perf_counter` elsewhere. On CUDA nothing
    synchronises until `seconds` is read, so a stopwatch inside a timed region adds no synchronisation."""

    def __init__(self, device: torch.device):
        self.cuda = torch.device(device).type == "cuda"
        self._seconds: float | None = None

    def __enter__(self) -> "Stopwatch":
        if self.cuda:
            self._start, self._end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            self._end.record()
        else:
            self._seconds = time.perf_counter() - self._start

    @property
    def seconds(self) -> float:
        if self._seconds is None and self.cuda:
            self._end.synchronize()
            self._seconds = self._start.elapsed_time(self._end) / 1000
        return self._seconds


def _resident_bytes() -> Callable[[], int] | None:
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        process = psutil.Process()
        return lambda: process.memory_info().rss
    if os.path.exists("/proc/self/statm"):
        page = os.sysconf("SC_PAGE_SIZE")

        def from_proc() -> int:
            with open("/proc/self/statm") as handle:
                return int(handle.read().split()[1]) * page

        return from_proc
    return None


class PeakMemory:
    """Peak memory of a block above what was in use before it, in bytes (`peak_bytes`; `None` where it cannot be
    measured). CUDA: `torch.cuda.max_memory_allocated` minus `memory_allocated` before (tensors only). CPU: peak minus
    initial resident set size of the process, sampled every `interval` seconds by a background thread."""

    def __init__(self, device: torch.device, interval: float = 0.001):
        self.device = torch.device(device)
        self.interval = interval
        self.peak_bytes: int | None = None
        self.method = "unavailable"

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._before = torch.cuda.memory_allocated(self.device)
            self.method = "torch.cuda.max_memory_allocated - memory_allocated before"
            return self
        self._read = _resident_bytes() if self.device.type == "cpu" else None
        if self._read is None:
            return self
        self.method = "peak process RSS - RSS before (sampled every %g ms)" % (self.interval * 1000)
        self._before = self._peak = self._read()
        self._stop = threading.Event()

        def sample() -> None:
            while not self._stop.wait(self.interval):
                self._peak = max(self._peak, self._read())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._before
        elif self._read is not None:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self._peak, self._read()) - self._before


# On CPU the allocator keeps freed memory resident, so the RSS growth of a second call in the same process says little
# (a call after a bigger one grows by ~0). Each CPU memory figure therefore comes from a fresh process.
FRESH_PROCESS_METHOD = "peak process RSS - RSS before, first call in a fresh process (sampled every 1 ms)"


def fresh_process_memory_probe(args: argparse.Namespace) -> Callable[[str, float], int | None]:
    """`probe(section, keep_ratio)`: peak memory of one prefill (`"prefill"`), `generate()` (`"generate"`) or spoken
    reply (`"talker"`, the full model) of the benchmark's model and clip at `keep_ratio`, measured by `PeakMemory`
    around the first call of a new Python process (`--memory-probe`)."""

    def probe(section: str, keep_ratio: float) -> int | None:
        command = [
            sys.executable,
            "-m",
            "omnisift_hf.benchmark",
            "--memory-probe",
            section,
            "--keep-ratios",
            str(keep_ratio),
            "--seconds",
            str(args.seconds),
            "--patches",
            *map(str, args.patches),
            "--dtype",
            args.dtype,
            "--device",
            "cpu",
            "--seed",
            str(args.seed),
            "--max-new-tokens",
            str(args.max_new_tokens),
            "--talker-codec-tokens",
            str(args.talker_codec_tokens),
            "--no-progress",
        ]
        command += ["--quick"] if args.quick else []
        command += ["--threads", str(args.threads)] if args.threads else []
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"memory probe failed ({' '.join(command)}):\n{result.stderr[-2000:]}")
        return json.loads(result.stdout.strip().splitlines()[-1])["peak_memory_bytes"]

    return probe


def _forced_generation(max_new_tokens: int) -> dict:
    """`generate()` options of every timed run: greedy, exactly `max_new_tokens` new tokens."""
    return {"max_new_tokens": max_new_tokens, "min_new_tokens": max_new_tokens, "do_sample": False}


# The speaker of every spoken reply (one of `omnisift_hf.testing_utils.tiny_speakers`, as of Qwen2.5-Omni's).
SPEAKER = "Chelsie"


def _forced_spoken_reply(thinker_tokens: int, codec_tokens: int) -> dict:
    """`generate()` options of the full model for every spoken reply: greedy thinker and talker, exactly
    `thinker_tokens` text tokens and `codec_tokens` codec tokens (`min_new_tokens` suppresses the end tokens)."""
    return {
        "generation_mode": "audio",
        "speaker": SPEAKER,
        "return_dict_in_generate": True,
        **{f"thinker_{key}": value for key, value in _forced_generation(thinker_tokens).items()},
        **{f"talker_{key}": value for key, value in _forced_generation(codec_tokens).items()},
    }


def peak_memory(
    model,
    inputs: dict,
    section: str,
    keep_ratio: float,
    max_new_tokens: int,
    memory_probe: Callable[[str, float], int | None] | None = None,
    codec_tokens: int = 0,
) -> tuple[int | None, str]:
    """Peak memory (bytes) of one prefill (`section="prefill"`), `generate()` (`"generate"`) or spoken reply of the
    full model (`"talker"`: `max_new_tokens` text and `codec_tokens` codec tokens) at `keep_ratio`, and how it was
    measured: by `memory_probe` (a fresh process, on CPU) when given, else by `PeakMemory` in process."""
    if memory_probe is not None:
        return memory_probe(section, keep_ratio), FRESH_PROCESS_METHOD
    with torch.no_grad(), PeakMemory(model.device) as memory:
        if section == "prefill":
            model(**inputs, keep_ratio=keep_ratio)
        elif section == "talker":
            model.generate(**inputs, keep_ratio=keep_ratio, **_forced_spoken_reply(max_new_tokens, codec_tokens))
        else:
            model.generate(**inputs, keep_ratio=keep_ratio, **_forced_generation(max_new_tokens))
    return memory.peak_bytes, memory.method


def _memory_probe_main(args: argparse.Namespace, model, inputs: dict) -> None:
    """The child side of `fresh_process_memory_probe`: one call, measured, printed as JSON."""
    peak_bytes, _ = peak_memory(
        model,
        inputs,
        args.memory_probe,
        args.keep_ratios[0],
        args.max_new_tokens,
        codec_tokens=args.talker_codec_tokens,
    )
    print(json.dumps({"peak_memory_bytes": peak_bytes}))


class TokenClock(BaseStreamer):
    """A `generate()` streamer that records when each new token reaches the host (`perf_counter` seconds after
    `start()`). `generate` first hands it the prompt, which is not a new token. On CPU and CUDA the streamer receives
    each token as soon as it is sampled; on MPS `generate` streams one step late."""

    def __init__(self):
        self.times: list[float] = []
        self._prompt_seen = False
        self._start = time.perf_counter()

    def start(self) -> None:
        self.times.clear()
        self._prompt_seen = False
        self._start = time.perf_counter()

    def put(self, value) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.times.append(time.perf_counter() - self._start)

    def end(self) -> None:
        pass


class StageClock:
    """When the forwards of named submodules start and end, from their public forward hooks (nothing is patched):
    for each name, the start and end of its first forward and the end of its last forward since `start()`, in seconds
    after `start()`. CUDA events on CUDA (no synchronisation until `seconds` is read), `perf_counter` elsewhere.

    Example: `StageClock(device, thinker=model.thinker, talker=model.talker)`; `clock.start()`; run;
    `clock.seconds("talker", "first_end") - clock.seconds("talker", "first_start")` is the talker's prefill. Call
    `remove()` to take the hooks off."""

    def __init__(self, device: torch.device, **modules: torch.nn.Module):
        self.cuda = torch.device(device).type == "cuda"
        self._marks: dict[tuple[str, str], object] = {}
        self._handles = []
        for name, module in modules.items():
            self._handles.append(module.register_forward_pre_hook(self._hook(name, "start")))
            self._handles.append(module.register_forward_hook(self._hook(name, "end")))
        self.start()

    def _now(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def _hook(self, name: str, kind: str) -> Callable:
        def hook(*args) -> None:
            now = self._now()
            self._marks.setdefault((name, f"first_{kind}"), now)
            if kind == "end":
                self._marks[name, "last_end"] = now

        return hook

    def start(self) -> None:
        self._marks.clear()
        self._origin = self._now()

    def seconds(self, name: str, mark: str) -> float | None:
        """Seconds from `start()` to `mark` (`"first_start"`, `"first_end"` or `"last_end"`) of `name`; `None` if
        that module did not run."""
        point = self._marks.get((name, mark))
        if point is None:
            return None
        if self.cuda:
            point.synchronize()
            return self._origin.elapsed_time(point) / 1000
        return point - self._origin

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


# ---------------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------------
def _inputs(samples: list[list[tuple]], model, seed: int = 0) -> dict:
    return to_model_inputs(tiny_inputs(samples, seed=seed), model)


def _progress(total: int, description: str, enabled: bool) -> tqdm:
    return tqdm(total=total, desc=description, disable=not enabled, leave=False, file=sys.stderr, dynamic_ncols=True)


# Qwen2.5-Omni's speech output: 24 kHz mono (token2wav).
SPEECH_SAMPLING_RATE = 24000


def spoken_reply_model(seed: int = 0, quick: bool = False) -> OmniSiftOmniForConditionalGeneration:
    """The full model of the `talker` section, randomly initialised, in eval mode, with the tiny speakers: the
    mid-size thinker (`MID_SIZE`) with the talker scaled alike (`MID_SIZE_TALKER`) and the tiny token2wav of
    `omnisift_hf.testing_utils.tiny_omni_config` (2-layer DiT, 64-channel BigVGAN); `quick`: `tiny_omni_model`."""
    if quick:
        return tiny_omni_model(seed=seed)
    base = tiny_omni_config(**MID_SIZE)
    config = OmniSiftOmniConfig(
        thinker_config=base.thinker_config,
        talker_config={**base.talker_config.to_dict(), **MID_SIZE_TALKER},
        token2wav_config=base.token2wav_config.to_dict(),
        enable_audio_output=True,
    )
    torch.manual_seed(seed)
    model = OmniSiftOmniForConditionalGeneration(config).eval()
    # As `tiny_omni_model`: the tiny tokenizer's end and pad tokens, its speakers.
    model.thinker.generation_config.eos_token_id = [TINY_TOKEN_IDS["im_end"], TINY_TOKEN_IDS["endoftext"]]
    model.thinker.generation_config.pad_token_id = TINY_TOKEN_IDS["pad"]
    model.speaker_map = tiny_speakers(seed)
    return model


def _talker_description(config) -> str:
    return (
        f"hidden {config.hidden_size}, {config.num_hidden_layers} layers, {config.num_attention_heads} / "
        f"{config.num_key_value_heads} heads of {config.head_dim}, intermediate {config.intermediate_size}, codec "
        f"vocabulary {config.vocab_size}, input width {config.embedding_size}"
    )


# ---------------------------------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------------------------------
def flops_section(
    models: list[str],
    seconds: list[int],
    keep_ratios: list[float],
    patches: tuple[int, int] = (24, 24),
    progress: bool = True,
    backbone: str = "qwen2_5_omni",
) -> dict:
    """Prefill FLOPs of the real Qwen2.5-Omni thinkers on the meta device (see `MetaPrefillFlops`); with
    `backbone="qwen3_omni_moe"`, of the real Qwen3-Omni-30B-A3B thinker (`MetaQwen3PrefillFlops`; `models` is
    ignored)."""
    if backbone == "qwen3_omni_moe":
        return _qwen3_flops_section(seconds, keep_ratios, patches, progress)
    bar = _progress(len(seconds) * len(keep_ratios) * (1 + len(models)), "FLOPs (meta device)", progress)
    layouts = {}
    for clip in seconds:
        for layout in measure_clip_layouts(clip, keep_ratios, patches=tuple(patches)):
            layouts[clip, layout.keep_ratio] = layout
            bar.update()
    rows = []
    for name in models:
        counter = MetaPrefillFlops(qwen2_5_omni_config(name))
        for clip in seconds:
            clip_rows = []
            for keep_ratio in keep_ratios:
                layout = layouts[clip, keep_ratio]
                clip_rows.append(_flops_row(f"Qwen2.5-Omni-{name}", clip, layout, counter.count(layout)))
                bar.update()
            _relative(clip_rows, ("total_flops",))
            rows += clip_rows
    bar.close()
    return {
        "method": (
            "torch.utils.flop_counter.FlopCounterMode on the meta device, stage by stage (matrix products only, "
            "attention dense); token counts and selector shapes from a CPU run of the tiny model on the same layout"
        ),
        "clip": (
            f"2 fps, {patches[0]} x {patches[1]} patches per temporal slice ({patches[0] * patches[1] // 4} video "
            f"tokens/s), {AUDIO_TOKENS_PER_SECOND} audio tokens/s, 16 + 24 text tokens"
        ),
        "rows": rows,
    }


def _flops_row(model: str, seconds: int, layout, flops: dict[str, int]) -> dict:
    """One row of `flops_section`: a model's prefill FLOPs on one clip layout."""
    return {
        "model": model,
        "seconds": seconds,
        "keep_ratio": layout.keep_ratio,
        "layout": layout.to_dict(),
        "flops": flops,
        "total_flops": flops["total"],
        "decoder_share": (flops["decoder"] + flops["lm_head"]) / flops["total"],
    }


def _qwen3_flops_section(
    seconds: list[int], keep_ratios: list[float], patches: tuple[int, int], progress: bool
) -> dict:
    """`flops_section` for the Qwen3-Omni-30B-A3B thinker (layouts from the tiny Qwen3 model on the Qwen3 processor's
    layout)."""
    bar = _progress(len(seconds) * len(keep_ratios) * 2, "Qwen3-Omni FLOPs (meta device)", progress)
    counter = MetaQwen3PrefillFlops(qwen3_omni_config())
    text = counter.config.text_config
    rows = []
    for clip in seconds:
        layouts = measure_clip_layouts(clip, keep_ratios, patches=tuple(patches), backbone="qwen3_omni_moe")
        bar.update(len(layouts))
        clip_rows = []
        for layout in layouts:
            clip_rows.append(_flops_row("Qwen3-Omni-30B-A3B", clip, layout, counter.count(layout)))
            bar.update()
        _relative(clip_rows, ("total_flops",))
        rows += clip_rows
    bar.close()
    return {
        "backbone": "qwen3_omni_moe",
        "method": (
            "torch.utils.flop_counter.FlopCounterMode on the meta device, stage by stage (matrix products only, "
            f"attention dense; each MoE layer counts its router and the {text.num_experts_per_tok} of "
            f"{text.num_experts} experts each token is routed to); token counts and selector shapes from a CPU run of "
            "the tiny Qwen3 model on the same layout"
        ),
        "clip": (
            f"2 fps, {patches[0]} x {patches[1]} 16-pixel patches per temporal slice "
            f"({patches[0] * patches[1] // 4} video tokens/s), 13 audio tokens/s interleaved by timestamp, "
            "16 + 24 text tokens"
        ),
        "rows": rows,
    }


def time_prefill(model, inputs: dict, keep_ratio: float, repeats: int, warmup: int = 1, bar=None) -> dict:
    """Median prefill and compression-step times in seconds (warm-up runs excluded). The compression step is timed
    by wrapping the model's `select_tokens` in a `token_selector` (CUDA events on CUDA, so no extra
    synchronisation)."""
    device = model.device
    compression: list[Stopwatch] = []

    def timed_select(*args, **kwargs):
        with Stopwatch(device) as watch:
            selection = model.select_tokens(*args, **kwargs)
        compression.append(watch)
        return selection

    prefill = []
    for step in range(warmup + repeats):
        compression_before = len(compression)
        with torch.no_grad(), Stopwatch(device) as watch:
            model(**inputs, keep_ratio=keep_ratio, token_selector=timed_select)
        if step >= warmup:
            prefill.append(watch.seconds)
        else:
            del compression[compression_before:]
        if bar is not None:
            bar.update()
    return {
        "prefill_s": median(prefill),
        "prefill_runs_s": prefill,
        "compression_s": median([watch.seconds for watch in compression]) or 0.0,
    }


def prefill_section(
    model,
    inputs: dict,
    keep_ratios: list[float],
    repeats: int,
    warmup: int,
    progress: bool,
    memory_probe: Callable[[str, float], int | None] | None = None,
) -> dict:
    """Prefill FLOPs (real forward), median time, compression-step time and peak memory at each keep ratio
    (`memory_probe(section, keep_ratio)` measures the memory elsewhere, e.g. in a fresh process on CPU)."""
    bar = _progress(len(keep_ratios) * (warmup + repeats + 2), "prefill", progress)
    rows = []
    for keep_ratio in keep_ratios:
        with torch.no_grad():
            out = model(**inputs, keep_ratio=keep_ratio)
        kept = int((out.num_kept_video_tokens + out.num_kept_audio_tokens).sum())
        total = int((out.num_video_tokens + out.num_audio_tokens).sum())
        flops = count_prefill_flops(model, inputs, keep_ratio=keep_ratio)
        bar.update()
        times = time_prefill(model, inputs, keep_ratio, repeats, warmup, bar)
        peak_bytes, method = peak_memory(model, inputs, "prefill", keep_ratio, 0, memory_probe)
        bar.update()
        rows.append(
            {
                "keep_ratio": keep_ratio,
                "retention": kept / total if total else 1.0,
                "input_length": inputs["input_ids"].shape[1],
                "sequence_length": out.logits.shape[1],
                "flops": flops,
                **times,
                "peak_memory_bytes": peak_bytes,
            }
        )
    bar.close()
    for row in rows:
        row["total_flops"] = row["flops"]["total"]
    _relative(rows, ("total_flops", "prefill_s", "peak_memory_bytes"))
    base = next((row for row in rows if row["keep_ratio"] == 1.0), None)
    for row in rows:
        row["compression_share_of_full_prefill"] = ratio(row["compression_s"], base and base["prefill_s"])
    return {"memory_method": method, "rows": rows}


def _relative(rows: list[dict], keys: tuple[str, ...]) -> None:
    """Add `<key>_vs_full` to each row (`_s` / `_bytes` suffixes dropped): its value over the value of the row at keep
    ratio 1.0 (`None` without such a row)."""
    base = next((row for row in rows if row["keep_ratio"] == 1.0), None)
    for row in rows:
        for key in keys:
            name = key.removesuffix("_s").removesuffix("_bytes")
            row[f"{name}_vs_full"] = ratio(row[key], base and base[key])


def generate_section(
    model,
    inputs: dict,
    keep_ratios: list[float],
    repeats: int,
    warmup: int,
    max_new_tokens: int,
    progress: bool,
    memory_probe: Callable[[str, float], int | None] | None = None,
) -> dict:
    """Time to first token, total time, tokens/s and peak memory of `generate()` at each keep ratio."""
    bar = _progress(len(keep_ratios) * (warmup + repeats + 1), "generate", progress)
    clock = TokenClock()
    options = _forced_generation(max_new_tokens)
    rows = []
    for keep_ratio in keep_ratios:
        first, total, new_tokens = [], [], None
        for step in range(warmup + repeats):
            clock.start()
            with torch.no_grad(), Stopwatch(model.device) as watch:
                sequences = model.generate(**inputs, keep_ratio=keep_ratio, streamer=clock, **options)
            if step >= warmup:
                first.append(clock.times[0])
                total.append(watch.seconds)
                new_tokens = sequences.shape[1] - inputs["input_ids"].shape[1]
            bar.update()
        peak_bytes, method = peak_memory(model, inputs, "generate", keep_ratio, max_new_tokens, memory_probe)
        bar.update()
        ttft, seconds = median(first), median(total)
        rows.append(
            {
                "keep_ratio": keep_ratio,
                "new_tokens": new_tokens,
                "time_to_first_token_s": ttft,
                "total_s": seconds,
                "tokens_per_s": new_tokens / seconds,
                "decode_tokens_per_s": (new_tokens - 1) / (seconds - ttft) if new_tokens > 1 else None,
                "peak_memory_bytes": peak_bytes,
            }
        )
    bar.close()
    _relative(rows, ("time_to_first_token_s", "total_s", "peak_memory_bytes"))
    return {"memory_method": method, "rows": rows}


def batch_section(
    model,
    samples: list[list[tuple]],
    seed: int,
    batch_sizes: list[int],
    keep_ratio: float,
    repeats: int,
    warmup: int,
    max_new_tokens: int,
    progress: bool,
) -> dict:
    """Throughput of `generate()` on `samples` in padded batches of each size (1 = one by one). Every sample
    generates exactly `max_new_tokens` tokens; a run covers all samples; times are medians over `repeats` runs."""
    options = _forced_generation(max_new_tokens)
    bar = _progress(len(batch_sizes) * (warmup + repeats), "batched generate", progress)
    rows = []
    for batch_size in batch_sizes:
        batches = [
            _inputs(samples[start : start + batch_size], model, seed=seed + start)
            for start in range(0, len(samples), batch_size)
        ]
        times = []
        for step in range(warmup + repeats):
            with torch.no_grad(), Stopwatch(model.device) as watch:
                for batch in batches:
                    model.generate(**batch, keep_ratio=keep_ratio, **options)
            if step >= warmup:
                times.append(watch.seconds)
            bar.update()
        seconds = median(times)
        rows.append(
            {
                "batch_size": batch_size,
                "samples": len(samples),
                "padded_lengths": [batch["input_ids"].shape[1] for batch in batches],
                "pad_fraction": sum(int((batch["attention_mask"] == 0).sum()) for batch in batches)
                / sum(batch["attention_mask"].numel() for batch in batches),
                "total_s": seconds,
                "tokens_per_s": len(samples) * max_new_tokens / seconds,
            }
        )
    bar.close()
    one_by_one = next((row for row in rows if row["batch_size"] == 1), None)
    for row in rows:
        row["speedup_vs_one_by_one"] = ratio(one_by_one and one_by_one["total_s"], row["total_s"])
    return {"keep_ratio": keep_ratio, "max_new_tokens": max_new_tokens, "rows": rows}


def talker_flops_section(
    seconds: list[int], keep_ratios: list[float], patches: tuple[int, int] = (24, 24), progress: bool = True
) -> dict:
    """Prefill FLOPs of the real 7B talker (`qwen2_5_omni_talker_config`) on the meta device, prompted with every
    position of the clip's prompt (`L + 2` tokens, keep ratio 1.0: the stock model) or with the thinker's kept
    positions (`K + 2`), K from the same tiny CPU run as the `flops` section (`measure_clip_layouts`)."""
    config = qwen2_5_omni_talker_config()
    counter = MetaTalkerPrefillFlops(config)
    bar = _progress(len(seconds) * (len(keep_ratios) + 1), "talker FLOPs (meta device)", progress)
    rows = []
    for clip in seconds:
        clip_rows = []
        for layout in measure_clip_layouts(clip, keep_ratios, patches=tuple(patches)):
            bar.update()
            prefill_tokens = layout.kept_length + 2
            flops = counter.count(prefill_tokens)
            clip_rows.append(
                {
                    "seconds": clip,
                    "keep_ratio": layout.keep_ratio,
                    "retention": layout.retention,
                    "input_length": layout.input_length,
                    "kept_length": layout.kept_length,
                    "prefill_tokens": prefill_tokens,
                    "flops": flops,
                    "total_flops": flops["total"],
                }
            )
        bar.update()
        _relative(clip_rows, ("prefill_tokens", "total_flops"))
        rows += clip_rows
    bar.close()
    return {
        "model": "Qwen2.5-Omni-7B talker",
        "talker": _talker_description(config),
        "method": (
            "torch.utils.flop_counter.FlopCounterMode on the meta device (matrix products only, attention dense): "
            "thinker-to-talker projection, decoder, codec head on every prefill position; prefill = K + 2 tokens (the "
            "kept prompt positions, the speaker's bos, the first reply token), K from a CPU run of the tiny model on "
            "the same layout"
        ),
        "clip": (
            f"2 fps, {patches[0]} x {patches[1]} patches per temporal slice ({patches[0] * patches[1] // 4} video "
            f"tokens/s), {AUDIO_TOKENS_PER_SECOND} audio tokens/s, 16 + 24 text tokens"
        ),
        "rows": rows,
    }


# What `talker_section` times in each spoken reply (medians over the repeats).
SPOKEN_REPLY_TIMES = (
    "time_to_first_codec_token_s",
    "talker_prefill_s",
    "thinker_s",
    "talker_s",
    "token2wav_s",
    "total_s",
    "process_cpu_s",
)


def _stage_times(stages: StageClock, clock: TokenClock, watch: Stopwatch, cpu_seconds: float) -> dict[str, float]:
    """`SPOKEN_REPLY_TIMES` of one spoken reply from its probes (see `talker_section`)."""
    thinker_end, talker_end = stages.seconds("thinker", "last_end"), stages.seconds("talker", "last_end")
    return {
        "time_to_first_codec_token_s": clock.times[0],
        "talker_prefill_s": stages.seconds("talker", "first_end") - stages.seconds("talker", "first_start"),
        "thinker_s": thinker_end,
        "talker_s": talker_end - thinker_end,
        "token2wav_s": stages.seconds("token2wav", "last_end") - stages.seconds("token2wav", "first_start"),
        "total_s": watch.seconds,
        "process_cpu_s": cpu_seconds,
    }


def talker_section(
    model,
    inputs: dict,
    keep_ratios: list[float],
    repeats: int,
    warmup: int,
    thinker_tokens: int,
    codec_tokens: int,
    progress: bool,
    memory_probe: Callable[[str, float], int | None] | None = None,
) -> dict:
    """Spoken replies of the full model (`OmniSiftOmniForConditionalGeneration`) at each keep ratio: the talker's
    prefill tokens, time to the first codec token, the talker's prefill time, the thinker / talker / token2wav split,
    the whole reply's time and peak memory. Every reply is greedy with exactly `thinker_tokens` text tokens and
    `codec_tokens` codec tokens. The keep ratios alternate within each of the `warmup + repeats` rounds (times are
    medians over the `repeats` timed rounds), so a load change on a shared machine hits every ratio alike.

    Probes (public hooks only): time to the first codec token comes from a `TokenClock` passed as `talker_streamer`
    (the talker's `generate` hands it each codec token as soon as it is chosen), measured from the start of the call,
    so it includes the thinker's whole reply, which the talker reads first. The stages come from forward hooks
    (`StageClock`): thinker = start to the end of the thinker's last forward; talker = from there to the end of the
    talker's last forward (building its prompt, its prefill, its decoding); talker prefill = the talker's first
    forward; token2wav = its forwards (codes to waveform). `process_cpu_s` is the CPU time of this process over the
    call (`time.process_time`, all threads; host time only on CUDA): on a shared CPU it counts the work done, which
    other processes' load inflates less than the wall time."""
    device = model.device
    options = _forced_spoken_reply(thinker_tokens, codec_tokens)
    clock = TokenClock()
    stages = StageClock(device, thinker=model.thinker, talker=model.talker, token2wav=model.token2wav)
    runs: dict[float, list[dict]] = {keep_ratio: [] for keep_ratio in keep_ratios}
    last: dict[float, object] = {}
    bar = _progress(len(keep_ratios) * (warmup + repeats + 1), "spoken replies", progress)
    try:
        for step in range(warmup + repeats):
            for keep_ratio in keep_ratios:
                clock.start()
                stages.start()
                cpu_start = time.process_time()
                with torch.no_grad(), Stopwatch(device) as watch:
                    out = model.generate(**inputs, keep_ratio=keep_ratio, talker_streamer=clock, **options)
                cpu_seconds = time.process_time() - cpu_start
                new_tokens = out.sequences.shape[1] - inputs["input_ids"].shape[1]
                codes = out.audio_codes[0].numel()
                if new_tokens != thinker_tokens or codes != codec_tokens or len(clock.times) != codec_tokens:
                    raise RuntimeError(
                        f"keep_ratio={keep_ratio}: the reply has {new_tokens} text and {codes} codec tokens "
                        f"({len(clock.times)} streamed), expected exactly {thinker_tokens} and {codec_tokens}."
                    )
                if step >= warmup:
                    runs[keep_ratio].append(_stage_times(stages, clock, watch, cpu_seconds))
                last[keep_ratio] = out
                bar.update()
    finally:
        stages.remove()
    rows = []
    for keep_ratio in keep_ratios:
        out = last[keep_ratio]
        peak_bytes, method = peak_memory(
            model, inputs, "talker", keep_ratio, thinker_tokens, memory_probe, codec_tokens=codec_tokens
        )
        bar.update()
        media = sum(
            int(out[key].sum()) for key in ("num_video_tokens", "num_audio_tokens") if out.get(key) is not None
        )
        kept = sum(
            int(out[key].sum())
            for key in ("num_kept_video_tokens", "num_kept_audio_tokens")
            if out.get(key) is not None
        )
        timings = runs[keep_ratio]
        rows.append(
            {
                "keep_ratio": keep_ratio,
                "retention": kept / media if media else 1.0,
                "input_length": inputs["input_ids"].shape[1],
                "kept_length": out.talker_prompt_length - 2,
                "talker_prompt_length": out.talker_prompt_length,
                "thinker_new_tokens": thinker_tokens,
                "codec_tokens": codec_tokens,
                "audio_seconds": out.audio[0].numel() / SPEECH_SAMPLING_RATE,
                **{key: median([run[key] for run in timings]) for key in SPOKEN_REPLY_TIMES},
                "total_runs_s": [run["total_s"] for run in timings],
                "peak_memory_bytes": peak_bytes,
            }
        )
    bar.close()
    _relative(
        rows,
        (
            "talker_prompt_length",
            "time_to_first_codec_token_s",
            "talker_prefill_s",
            "thinker_s",
            "total_s",
            "process_cpu_s",
            "peak_memory_bytes",
        ),
    )
    return {
        "talker": _talker_description(model.config.talker_config),
        "thinker_new_tokens": thinker_tokens,
        "codec_tokens": codec_tokens,
        "memory_method": method,
        "rows": rows,
    }


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m omnisift_hf.benchmark",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=SECTIONS,
        help=f"sections to run (default: {' '.join(DEFAULT_SECTIONS)}; with --talker and no --sections: talker only)",
    )
    parser.add_argument(
        "--talker",
        action="store_true",
        help="benchmark spoken replies (the `talker` section: full model, talker FLOPs at 7B, time and memory)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: tiny model, 4 s clip, 1 repeat, 7B FLOPs only"
    )
    parser.add_argument("--seconds", type=int, default=20, help="clip length of prefill / generate (default 20)")
    parser.add_argument(
        "--patches",
        type=int,
        nargs=2,
        default=[24, 24],
        metavar=("ROWS", "COLUMNS"),
        help=(
            "14-pixel patches per frame (default 24 24: the processor's default resolution; 16-pixel patches with "
            "--backbone qwen3_omni_moe, 24 24 = its processor's minimum resolution)"
        ),
    )
    parser.add_argument("--keep-ratios", type=float, nargs="+", default=[1.0, 0.35, 0.25])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before the timed ones")
    parser.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: cuda if available, else cpu"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs (default 0)")
    parser.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        default="auto",
        help=(
            "model dtype; auto = bfloat16 on CUDA, float32 on CPU (CPUs without bf16 matrix units are very slow in "
            "bf16)"
        ),
    )
    parser.add_argument(
        "--max-new-tokens", type=int, default=32, help="tokens generated per sample (forced); text of a spoken reply"
    )
    parser.add_argument(
        "--talker-keep-ratios", type=float, nargs="+", default=[1.0, 0.25], help="keep ratios of the talker section"
    )
    parser.add_argument(
        "--talker-codec-tokens",
        type=int,
        default=480,
        help=(
            "codec tokens of each spoken reply (forced; 50 per second of speech: the default, 480 = 9.6 s, is about "
            "what the default 32 text tokens take to say)"
        ),
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument(
        "--batch-seconds", type=int, nargs="+", default=[4, 5, 6, 7, 8, 9, 10, 11], help="clip length of each sample"
    )
    parser.add_argument("--batch-keep-ratio", type=float, default=0.25)
    parser.add_argument(
        "--backbone",
        choices=sorted(BACKBONES),
        default="qwen2_5_omni",
        help="qwen3_omni_moe: the `flops` section for the Qwen3-Omni-30B-A3B thinker (default qwen2_5_omni)",
    )
    parser.add_argument("--flops-models", nargs="+", choices=["7B", "3B"], default=["7B", "3B"])
    parser.add_argument("--flops-seconds", type=int, nargs="+", default=[10, 20, 30, 60])
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's default)")
    parser.add_argument("--json", help="write the report here as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    probes = ["prefill", "generate", "talker"]
    parser.add_argument("--memory-probe", choices=probes, help=argparse.SUPPRESS)  # internal
    return parser


def run(args: argparse.Namespace) -> dict:
    """Run the requested sections; returns the report (what `--json` writes)."""
    backbone = getattr(args, "backbone", "qwen2_5_omni")
    if args.sections is None and backbone != "qwen2_5_omni":
        args.sections = list(BACKBONES[backbone])
    if args.sections is None:
        args.sections = ["talker"] if args.talker else list(DEFAULT_SECTIONS)
    elif args.talker and "talker" not in args.sections:
        args.sections = [*args.sections, "talker"]
    unsupported = [section for section in args.sections if section not in BACKBONES[backbone]]
    if unsupported:
        raise ValueError(f"--backbone {backbone} has no section {', '.join(unsupported)} (only {BACKBONES[backbone]})")
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
        args.flops_seconds = [args.seconds]
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> dict:
    quick = args.quick
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    dtype = {"auto": torch.bfloat16 if device.type == "cuda" else torch.float32}.get(args.dtype) or getattr(
        torch, args.dtype
    )
    progress = not args.no_progress
    report = {
        "environment": {
            "device": torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else cpu_name(torch.get_num_threads()),
            "dtype": str(dtype).removeprefix("torch."),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "threads": torch.get_num_threads(),
            "model": "tiny" if quick else "mid-size",
            "quick": quick,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "seed": args.seed,
        }
    }
    if args.memory_probe:
        # A probe child builds its model and measures one call, nothing else: whatever ran before in the process
        # would leave memory resident for the measured call to reuse.
        if args.memory_probe == "talker":
            model = spoken_reply_model(args.seed, quick).to(device, dtype)
        else:
            model = (tiny_model(seed=args.seed) if quick else tiny_model(seed=args.seed, **MID_SIZE)).to(device, dtype)
        samples = [clip_segments(args.seconds, tuple(args.patches))]
        _memory_probe_main(args, model, _inputs(samples, getattr(model, "thinker", model), seed=args.seed))
        return report
    if "flops" in args.sections:
        report["flops"] = flops_section(
            args.flops_models,
            args.flops_seconds,
            args.keep_ratios,
            args.patches,
            progress,
            backbone=getattr(args, "backbone", "qwen2_5_omni"),
        )
    if "talker" in args.sections:
        report.update(talker_sections(args, device, dtype, progress))
    timed = [section for section in ("prefill", "generate", "batch") if section in args.sections]
    if not timed:
        return report

    model = tiny_model(seed=args.seed) if quick else tiny_model(seed=args.seed, **MID_SIZE)
    model = model.to(device, dtype)
    patches = tuple(args.patches)
    inputs = _inputs([clip_segments(args.seconds, patches)], model, seed=args.seed)
    # CPU memory from fresh processes (a smoke run measures in process: quick, and not a measurement anyway).
    memory_probe = fresh_process_memory_probe(args) if device.type == "cpu" and not quick else None
    clip = {"seconds": args.seconds, "patches": list(patches), "input_length": inputs["input_ids"].shape[1]}
    if "prefill" in timed:
        report["prefill"] = {
            **clip,
            **prefill_section(model, inputs, args.keep_ratios, args.repeats, args.warmup, progress, memory_probe),
        }
    if "generate" in timed:
        report["generate"] = {
            **clip,
            **generate_section(
                model,
                inputs,
                args.keep_ratios,
                args.repeats,
                args.warmup,
                args.max_new_tokens,
                progress,
                memory_probe,
            ),
        }
    if "batch" in timed:
        samples = [clip_segments(seconds, patches) for seconds in args.batch_seconds]
        report["batch"] = {
            "seconds": args.batch_seconds,
            **batch_section(
                model,
                samples,
                args.seed,
                args.batch_sizes,
                args.batch_keep_ratio,
                args.repeats,
                args.warmup,
                args.max_new_tokens,
                progress,
            ),
        }
    return report


def talker_sections(args: argparse.Namespace, device: torch.device, dtype: torch.dtype, progress: bool) -> dict:
    """The `talker` section's two parts: `talker_flops` (7B talker, meta device) and `talker` (timed spoken replies
    of `spoken_reply_model`, one `--seconds` clip)."""
    flops = talker_flops_section(args.flops_seconds, args.talker_keep_ratios, args.patches, progress)
    report = {"talker_flops": flops}
    model = spoken_reply_model(args.seed, args.quick).to(device, dtype)
    patches = tuple(args.patches)
    inputs = _inputs([clip_segments(args.seconds, patches)], model.thinker, seed=args.seed)
    # CPU memory from fresh processes, as for the other sections (a smoke run measures in process).
    memory_probe = fresh_process_memory_probe(args) if device.type == "cpu" and not args.quick else None
    report["talker"] = {
        "seconds": args.seconds,
        "patches": list(patches),
        "input_length": inputs["input_ids"].shape[1],
        **talker_section(
            model,
            inputs,
            args.talker_keep_ratios,
            args.repeats,
            args.warmup,
            args.max_new_tokens,
            args.talker_codec_tokens,
            progress,
            memory_probe,
        ),
    }
    return report


# ---------------------------------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------------------------------


def format_markdown(report: dict) -> str:
    """The report as markdown tables (what the command prints)."""
    env = report["environment"]
    parts = [
        f"{env['device']}, {env['dtype']}, torch {env['torch']}, transformers {env['transformers']}; "
        f"medians of {env['repeats']} runs after {env['warmup']} warm-up"
    ]
    if "flops" in report:
        section = report["flops"]
        parts.append(f"### Prefill FLOPs at real sizes (meta device)\n\n{section['clip']}; {section['method']}.")
        rows = []
        for row in section["rows"]:
            flops, layout = row["flops"], row["layout"]
            rows.append(
                [
                    row["model"],
                    str(row["seconds"]),
                    str(row["keep_ratio"]),
                    f"{layout['retention']:.3f}",
                    f"{layout['input_length']} -> {layout['kept_length']}",
                    fmt(flops["vision_encoder"], ".2f", 1e12),
                    fmt(flops["audio_encoder"], ".2f", 1e12),
                    fmt(flops["compression"], ".1f", 1e9),
                    fmt(flops["decoder"] + flops["lm_head"], ".2f", 1e12),
                    fmt(flops["total"], ".2f", 1e12),
                    fmt(row["total_flops_vs_full"]),
                    fmt(row["total_flops_vs_full"] and 1 - row["total_flops_vs_full"], ".1%"),
                    f"{row['decoder_share']:.1%}",
                ]
            )
        header = ["model", "clip (s)", "keep", "retention", "tokens (in -> decoder)", "vision TFLOPs"]
        header += ["audio TFLOPs", "compression GFLOPs", "decoder + lm_head TFLOPs", "total TFLOPs", "x full"]
        header += ["saved", "decoder share"]
        parts.append(markdown_table(header, rows))
    if "prefill" in report:
        section = report["prefill"]
        parts.append(
            f"### Prefill ({env['model']} config, {section['seconds']} s clip, {section['input_length']} tokens)\n\n"
            f"Peak memory: {section['memory_method']}."
        )
        rows = [
            [
                str(row["keep_ratio"]),
                f"{row['retention']:.3f}",
                str(row["sequence_length"]),
                fmt(row["flops"]["total"], ".1f", 1e9),
                fmt(row["total_flops_vs_full"]),
                fmt(row["flops"]["decoder"], ".1f", 1e9),
                fmt(row["flops"]["compression"], ".2f", 1e9),
                fmt(row["prefill_s"]),
                fmt(row["prefill_vs_full"]),
                fmt(row["compression_share_of_full_prefill"], ".2%"),
                fmt(row["peak_memory_bytes"], ".1f", 2**20),
                fmt(row["peak_memory_vs_full"]),
            ]
            for row in section["rows"]
        ]
        header = ["keep", "retention", "seq len", "GFLOPs", "x full", "decoder GFLOPs", "compression GFLOPs"]
        header += ["prefill (s)", "x full", "compression step / full prefill", "peak memory (MiB)", "x full"]
        parts.append(markdown_table(header, rows))
    if "generate" in report:
        section = report["generate"]
        parts.append(f"### generate() ({env['model']} config, {section['seconds']} s clip)")
        rows = [
            [
                str(row["keep_ratio"]),
                fmt(row["time_to_first_token_s"]),
                fmt(row["time_to_first_token_vs_full"]),
                fmt(row["total_s"]),
                str(row["new_tokens"]),
                fmt(row["tokens_per_s"], ".1f"),
                fmt(row["decode_tokens_per_s"], ".1f"),
                fmt(row["peak_memory_bytes"], ".1f", 2**20),
                fmt(row["peak_memory_vs_full"]),
            ]
            for row in section["rows"]
        ]
        header = ["keep", "time to first token (s)", "x full", "total (s)", "new tokens", "tokens/s"]
        header += ["decode tokens/s", "peak memory (MiB)", "x full"]
        parts.append(markdown_table(header, rows))
    if "batch" in report:
        section = report["batch"]
        parts.append(
            f"### Batched generate() (keep {section['keep_ratio']}, clips of {section['seconds']} s, "
            f"{section['max_new_tokens']} new tokens each)"
        )
        rows = [
            [
                str(row["batch_size"]),
                str(row["samples"]),
                ", ".join(map(str, row["padded_lengths"])),
                f"{row['pad_fraction']:.1%}",
                fmt(row["total_s"]),
                fmt(row["tokens_per_s"], ".1f"),
                fmt(row["speedup_vs_one_by_one"], ".2f", suffix="x"),
            ]
            for row in section["rows"]
        ]
        header = ["batch size", "samples", "padded lengths", "padding", "time (s)", "tokens/s", "vs one by one"]
        parts.append(markdown_table(header, rows))
    if any(section in report for section in ("prefill", "generate", "batch")):
        note = " (quick smoke run: tiny model, not a measurement)" if env["quick"] else ""
        parts.append(f"### Issue #8 targets (keep 0.25 against 1.0, {env['model']} config, same run){note}")
        rows = [
            [
                check["name"],
                fmt(check["value"]),
                check["target"] or "-",
                {True: "met", False: "NOT met", None: "-"}[check["met"]],
            ]
            for check in targets(report)
        ]
        parts.append(markdown_table(["measure", "value", "target", ""], rows))
    parts += _talker_markdown(report)
    return "\n\n".join(parts) + "\n"


def _talker_markdown(report: dict) -> list[str]:
    env, parts = report["environment"], []
    if "talker_flops" in report:
        section = report["talker_flops"]
        parts.append(
            f"### Talker prefill FLOPs at the real size ({section['model']}, meta device)\n\n"
            f"Talker: {section['talker']}. {section['clip']}; {section['method']}."
        )
        rows = [
            [
                str(row["seconds"]),
                str(row["keep_ratio"]),
                f"{row['retention']:.3f}",
                f"{row['input_length']} -> {row['kept_length']}",
                str(row["prefill_tokens"]),
                fmt(row["prefill_tokens_vs_full"]),
                fmt(row["flops"]["projection"], ".1f", 1e9),
                fmt(row["flops"]["decoder"], ".2f", 1e12),
                fmt(row["flops"]["codec_head"], ".1f", 1e9),
                fmt(row["flops"]["total"], ".2f", 1e12),
                fmt(row["total_flops_vs_full"]),
                fmt(row["total_flops_vs_full"] and 1 - row["total_flops_vs_full"], ".1%"),
            ]
            for row in section["rows"]
        ]
        header = ["clip (s)", "keep", "retention", "thinker prompt (L -> K)", "talker prefill tokens", "x full"]
        header += ["projection GFLOPs", "decoder TFLOPs", "codec head GFLOPs", "total TFLOPs", "x full", "saved"]
        parts.append(markdown_table(header, rows))
    if "talker" in report:
        section = report["talker"]
        first = section["rows"][0]
        parts.append(
            f"### Spoken replies ({env['model']} config, {section['seconds']} s clip, {section['input_length']} "
            f"prompt tokens; {section['thinker_new_tokens']} text tokens, {section['codec_tokens']} codec tokens = "
            f"{first['audio_seconds']:.2f} s of speech per reply)\n\n"
            f"Talker: {section['talker']}. Time to first codec token: from the start of `generate()` (the thinker's "
            "whole reply comes first). Stages: thinker = up to its last forward; talker = its prompt, prefill and "
            f"decoding; token2wav = codes to waveform. Peak memory: {section['memory_method']}."
        )
        rows = [
            [
                str(row["keep_ratio"]),
                f"{row['retention']:.3f}",
                str(row["talker_prompt_length"]),
                fmt(row["talker_prompt_length_vs_full"]),
                fmt(row["time_to_first_codec_token_s"]),
                fmt(row["time_to_first_codec_token_vs_full"]),
                fmt(row["talker_prefill_s"]),
                fmt(row["talker_prefill_vs_full"]),
                fmt(row["thinker_s"]),
                fmt(row["talker_s"]),
                fmt(row["token2wav_s"]),
                fmt(row["total_s"]),
                fmt(row["total_vs_full"]),
                fmt(row["process_cpu_s"]),
                fmt(row["process_cpu_vs_full"]),
                fmt(row["peak_memory_bytes"], ".1f", 2**20),
                fmt(row["peak_memory_vs_full"]),
            ]
            for row in section["rows"]
        ]
        header = ["keep", "retention", "talker prefill tokens", "x full", "time to first codec token (s)", "x full"]
        header += ["talker prefill (s)", "x full", "thinker (s)", "talker (s)", "token2wav (s)", "total (s)", "x full"]
        header += ["process CPU time (s)", "x full"]
        header += ["peak memory (MiB)", "x full"]
        parts.append(markdown_table(header, rows))
    checks = talker_targets(report)
    if any(check["value"] is not None for check in checks):
        note = " (quick smoke run: tiny model, not a measurement)" if env["quick"] else ""
        parts.append(f"### Issue #16 targets (spoken replies, keep 0.25 against 1.0, same run){note}")
        rows = [
            [
                check["name"],
                fmt(check["value"]),
                check["target"] or "-",
                {True: "met", False: "NOT met", None: "-"}[check["met"]],
            ]
            for check in checks
        ]
        parts.append(markdown_table(["measure", "value", "target", ""], rows))
    return parts


def targets(report: dict, keep_ratio: float = 0.25) -> list[dict]:
    """Issue #8's targets at `keep_ratio` against keep ratio 1.0, measured in the same run: prefill time <= 0.35x,
    compression step <= 1% of the full prefill, batch 4 >= 2x the throughput of one by one; time to first token and
    peak memory are reported next to the FLOPs ratio ("lower in proportion")."""

    def row(section: str, key: str, value: float) -> dict | None:
        return next((r for r in report.get(section, {}).get("rows", []) if r.get(key) == value), None)

    prefill, generate = row("prefill", "keep_ratio", keep_ratio), row("generate", "keep_ratio", keep_ratio)
    batch = row("batch", "batch_size", 4)
    checks = [
        ("prefill time x full", prefill and prefill["prefill_vs_full"], "<=", 0.35),
        ("compression step / full prefill", prefill and prefill["compression_share_of_full_prefill"], "<=", 0.01),
        ("batch 4 throughput x one by one", batch and batch["speedup_vs_one_by_one"], ">=", 2.0),
        ("prefill FLOPs x full", prefill and prefill["total_flops_vs_full"], "", None),
        ("time to first token x full", generate and generate["time_to_first_token_vs_full"], "", None),
        ("prefill peak memory x full", prefill and prefill["peak_memory_vs_full"], "", None),
        ("generate peak memory x full", generate and generate["peak_memory_vs_full"], "", None),
    ]
    results = []
    for name, value, comparison, limit in checks:
        met = None
        if value is not None and limit is not None:
            met = value <= limit if comparison == "<=" else value >= limit
        results.append(
            {"name": name, "value": value, "target": f"{comparison} {limit}" if limit else None, "met": met}
        )
    return results


def talker_targets(report: dict, keep_ratio: float = 0.25, seconds: int = 20) -> list[dict]:
    """Issue #16's targets at `keep_ratio` against 1.0: the talker's prefill at most 0.30x the tokens of the stock
    model's on a `seconds` clip (the 7B FLOP table's row; the timed run's if its clip is that long) and the whole
    spoken reply at most 0.5x of the stock model's time (timed config); time to the first codec token, the talker's
    prefill FLOPs at 7B and peak memory are reported next to them."""
    flops = next(
        (
            row
            for row in report.get("talker_flops", {}).get("rows", [])
            if row["keep_ratio"] == keep_ratio and row["seconds"] == seconds
        ),
        None,
    )
    timed_section = report.get("talker", {})
    timed = next((row for row in timed_section.get("rows", []) if row["keep_ratio"] == keep_ratio), None)
    timed_clip = timed_section.get("seconds")
    run = f"timed run, {timed_clip} s" if timed_clip else "timed run"
    checks = [
        (f"talker prefill tokens x full, 7B layout, {seconds} s", flops and flops["prefill_tokens_vs_full"], 0.30),
        (
            f"talker prefill tokens x full, {run}",
            timed and timed["talker_prompt_length_vs_full"],
            0.30 if timed_clip == seconds else None,
        ),
        (f"spoken reply time x full, {run}", timed and timed["total_vs_full"], 0.5),
        ("time to first codec token x full", timed and timed["time_to_first_codec_token_vs_full"], None),
        ("talker prefill time x full", timed and timed["talker_prefill_vs_full"], None),
        ("spoken reply process CPU time x full", timed and timed["process_cpu_vs_full"], None),
        (f"talker prefill FLOPs x full, 7B, {seconds} s", flops and flops["total_flops_vs_full"], None),
        ("spoken reply peak memory x full", timed and timed["peak_memory_vs_full"], None),
    ]
    return [
        {
            "name": name,
            "value": value,
            "target": f"<= {limit}" if limit else None,
            "met": value <= limit if value is not None and limit is not None else None,
        }
        for name, value, limit in checks
    ]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = run(args)
    if args.memory_probe:
        return 0
    report["environment"]["command"] = " ".join(
        ["python -m omnisift_hf.benchmark", *(sys.argv[1:] if argv is None else argv)]
    )
    print(format_markdown(report))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
