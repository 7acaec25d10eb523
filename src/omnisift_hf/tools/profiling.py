"""FLOP counting for one prefill, split by stage (vision encoder, audio encoder, compression, decoder, lm_head).

Every count comes from `torch.utils.flop_counter.FlopCounterMode`, never from hand-written formulas. FlopCounterMode
counts matrix products only (`mm`, `addmm`, `bmm`, convolutions, attention): norms, activations, softmax, rotary
embeddings and every other elementwise op count 0, in every stage alike. Attention is counted dense (a causal mask does
not halve it). Two ways to count:

- `count_prefill_flops(model, inputs)`: a real forward of a model you have (any size, any device), split by module.
- `MetaTalkerPrefillFlops(config).count(length)`: the prefill of the full model's talker (`qwen2_5_omni_talker_config`:
  the real 7B talker) on a prompt of `length` tokens, on the meta device; see that class.
- `MetaPrefillFlops(config).count(layout)`: the real Qwen2.5-Omni-7B / 3B sizes (`qwen2_5_omni_config`) without
  weights, on the meta device. The meta device has shapes but no values, and OmniSIFT's token selection reads values
  (top-k, gathers, `.item()`), so the count is taken per stage from the shapes a prefill has:
  1. `measure_clip_layouts` runs the tiny random model of `omnisift_hf.testing_utils` on CPU on the same token
     layout (the processor's placeholder layout for the clip) and reads the kept-token counts and the selector's
     input shapes. Both depend only on the layout and the keep ratios (STVP drops `floor(n * rho)` tokens per frame,
     VGAS keeps a fixed number per window), never on values or on the hidden size, so they are those of the 7B model.
  2. The real-size encoders, selector, decoder and lm_head then run on meta tensors of those shapes; identical layers
     are counted once and multiplied (see `MetaPrefillFlops`). The test suite checks that this equals
     FlopCounterMode on a real forward of the same (small) model, stage for stage.
  STVP's scoring (cosine similarities, ranking) has no matrix product: it counts 0 here, like every norm of the model
  (its elementwise work is about 13 * Nv * D operations, under 0.01% of a prefill).
- `MetaQwen3PrefillFlops(config).count(layout)`: the same for the real Qwen3-Omni-30B-A3B MoE thinker
  (`qwen3_omni_config`), with layouts from `measure_clip_layouts(..., backbone="qwen3_omni_moe")`. In every
  mixture-of-experts layer a token counts the router and the `num_experts_per_tok` experts it is routed to (not all
  experts); see that class. A real forward of a Qwen3-Omni model is counted by `count_prefill_flops` only with
  `model.set_experts_implementation("eager")`: FlopCounterMode does not see the default `grouped_mm` experts kernel
  (its experts count 0).
"""

import copy
import types
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.qwen2_5_omni.configuration_qwen2_5_omni import Qwen2_5OmniTalkerConfig
from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import (
    chunk_and_pad_features,
    get_audio_cu_seqlens,
    get_pool_indices,
    get_valid_indices,
)
from transformers.models.qwen3_omni_moe import modeling_qwen3_omni_moe as qwen3_omni_modeling
from transformers.utils import logging as transformers_logging
from transformers.vision_utils import (
    get_vision_attention_seqlens,
    get_vision_interpolation_indices_and_weights,
    get_vision_position_ids,
    get_vision_window_index,
)

from ..media import AUDIO_TOKENS_PER_SECOND
from ..models.qwen2_5_omni.configuration_omnisift import OmniSiftConfig
from ..models.qwen2_5_omni.modeling_omnisift import (
    OmniSiftForConditionalGeneration,
    OmniSiftTalkerForConditionalGeneration,
)
from ..models.qwen3_omni_moe.configuration_omnisift import OmniSiftQwen3OmniConfig
from ..models.qwen3_omni_moe.modeling_omnisift import OmniSiftQwen3OmniForConditionalGeneration
from ..testing_utils import tiny_inputs, tiny_model, tiny_qwen3_inputs, tiny_qwen3_model

__all__ = [
    "FLOP_GROUPS",
    "QWEN2_5_OMNI_TALKER",
    "QWEN2_5_OMNI_THINKERS",
    "QWEN3_OMNI_THINKER",
    "TALKER_FLOP_GROUPS",
    "ClipLayout",
    "MetaPrefillFlops",
    "MetaQwen3PrefillFlops",
    "MetaTalkerPrefillFlops",
    "count_prefill_flops",
    "flop_counter",
    "measure_clip_layouts",
    "qwen2_5_omni_config",
    "qwen2_5_omni_talker_config",
    "qwen3_omni_config",
]

# Module path suffixes (below the model's class name) of each group.
FLOP_GROUPS = {
    "vision_encoder": ".model.visual",
    "audio_encoder": ".model.audio_tower",
    "selector": ".compressor",
    "decoder": ".model.language_model",
    "lm_head": ".lm_head",
}


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def flop_counter() -> FlopCounterMode:
    """A `FlopCounterMode` that also counts SDPA on CPU.

    On CPU, `scaled_dot_product_attention` runs `aten._scaled_dot_product_flash_attention_for_cpu`, which torch's
    FLOP registry (torch <= 2.14) does not list: without this mapping every CPU attention counts 0 FLOPs. It gets
    the formula torch uses for the CUDA SDPA kernels.
    """
    return FlopCounterMode(
        display=False,
        custom_mapping={torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops},
    )


def count_prefill_flops(model, inputs: dict, **forward_kwargs) -> dict[str, int]:
    """FLOPs of `model(**inputs, **forward_kwargs)` (e.g. `keep_ratio=0.25`) by group of `FLOP_GROUPS`, plus
    "compression" (the selector and everything outside the groups: STVP, re-padding; in practice the selector, since
    the rest has no matrix product) and "total"."""
    with torch.no_grad(), flop_counter() as counter:
        model(**inputs, **forward_kwargs)
    per_module = counter.get_flop_counts()
    root = type(model).__name__
    flops = {name: sum(per_module.get(root + suffix, {}).values()) for name, suffix in FLOP_GROUPS.items()}
    flops["total"] = sum(per_module.get("Global", {}).values())
    flops["compression"] = flops["total"] - sum(flops[name] for name in FLOP_GROUPS) + flops["selector"]
    return flops


# ---------------------------------------------------------------------------------------------------------------------
# The real Qwen2.5-Omni thinker sizes
# ---------------------------------------------------------------------------------------------------------------------
# Written from the public `thinker_config` of Qwen/Qwen2.5-Omni-7B and Qwen/Qwen2.5-Omni-3B (config.json on the Hub;
# no download here). Both share the vision encoder (32 blocks, width 1280, 16 heads, MLP 3420, window 112 px, full
# attention in blocks 7/15/23/31) and the audio encoder (32 layers, d_model 1280, 20 heads, FFN 5120, 128 mel bins);
# their merger / projection outputs the text width. The 7B values equal transformers' `Qwen2_5OmniThinkerConfig`
# defaults except the vision width (transformers defaults `hidden_size` to 3584; the checkpoint's is 1280).
QWEN2_5_OMNI_THINKERS = {
    "7B": {
        "text": {
            "vocab_size": 152064,
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
        },
        "out_hidden_size": 3584,
    },
    "3B": {
        "text": {
            "vocab_size": 151936,
            "hidden_size": 2048,
            "intermediate_size": 11008,
            "num_hidden_layers": 36,
            "num_attention_heads": 16,
            "num_key_value_heads": 2,
        },
        "out_hidden_size": 2048,
    },
}
_QWEN2_5_OMNI_VISION = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
}
_QWEN2_5_OMNI_AUDIO = {
    "num_mel_bins": 128,
    "encoder_layers": 32,
    "encoder_attention_heads": 20,
    "encoder_ffn_dim": 5120,
    "d_model": 1280,
    "n_window": 100,
    "max_source_positions": 1500,
}


def qwen2_5_omni_config(size: str = "7B", **overrides) -> OmniSiftConfig:
    """The OmniSIFT config of the real Qwen2.5-Omni-7B or -3B thinker (`size` in `QWEN2_5_OMNI_THINKERS`), with its
    token ids and the default selector (512 wide, 8 heads, MLP 256). Keyword arguments override top-level fields."""
    if size not in QWEN2_5_OMNI_THINKERS:
        raise ValueError(f"size={size!r}: expected one of {sorted(QWEN2_5_OMNI_THINKERS)}.")
    sizes = QWEN2_5_OMNI_THINKERS[size]
    text = {
        **sizes["text"],
        "max_position_embeddings": 32768,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
    }
    fields = {
        "text_config": text,
        "vision_config": {**_QWEN2_5_OMNI_VISION, "out_hidden_size": sizes["out_hidden_size"]},
        "audio_config": {**_QWEN2_5_OMNI_AUDIO, "output_dim": sizes["out_hidden_size"]},
        "vision_start_token_id": 151652,
        "vision_end_token_id": 151653,
    }
    fields.update(overrides)
    return OmniSiftConfig(**fields)


# ---------------------------------------------------------------------------------------------------------------------
# Token layout of a clip (cheap CPU run of the tiny model)
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClipLayout:
    """What one prefill of one clip hands each stage: token counts before/after compression and the selector's input
    shapes. Independent of the model's widths.

    Attributes:
        seconds: clip length; keep_ratio: the requested overall keep ratio.
        video_grid_thw: (temporal slices, patch rows, patch columns) of the video.
        mel_frames: mel frames of the audio track (100 per second).
        input_length: prompt length before compression (text + placeholders).
        num_video_tokens / num_kept_video_tokens / num_audio_tokens / num_kept_audio_tokens: media token counts.
        kept_length: sequence length the decoder runs on.
        selector_audio_shape / selector_video_shape: `(W, A)` / `(W, V)` windows x padded tokens the selector scores
            and attends to; `None` when it did not run (keep ratio 1.0).
    """

    seconds: float
    keep_ratio: float
    video_grid_thw: tuple[int, int, int]
    mel_frames: int
    input_length: int
    num_video_tokens: int
    num_kept_video_tokens: int
    num_audio_tokens: int
    num_kept_audio_tokens: int
    kept_length: int
    selector_audio_shape: tuple[int, int] | None = None
    selector_video_shape: tuple[int, int] | None = None

    @property
    def retention(self) -> float:
        media = self.num_video_tokens + self.num_audio_tokens
        return (self.num_kept_video_tokens + self.num_kept_audio_tokens) / media if media else 1.0

    def to_dict(self) -> dict:
        return {**asdict(self), "retention": self.retention}


# The audio encoder's convolution and pooling each halve the mel frames: 4 mel frames (40 ms) per audio token.
_MEL_FRAMES_PER_AUDIO_TOKEN = 4


def clip_segments(seconds: int, patches: tuple[int, int] = (24, 24), text: tuple[int, int] = (16, 24)) -> list[tuple]:
    """One prompt of `omnisift_hf.testing_utils.tiny_inputs`: `text[0]` text tokens, a `seconds` clip at 2 fps (one
    temporal slice of 2 frames per second) of `patches` 14-pixel patches per frame with its audio track (100 mel
    frames per second -> `AUDIO_TOKENS_PER_SECOND` = 25 audio tokens per second), `text[1]` text tokens. The default
    is the processor's default resolution for small frames (24 x 24 patches, 144 LLM tokens per slice)."""
    mel_frames = _MEL_FRAMES_PER_AUDIO_TOKEN * AUDIO_TOKENS_PER_SECOND * seconds
    return [("text", text[0]), ("video", seconds, patches[0], patches[1], mel_frames), ("text", text[1])]


def measure_clip_layouts(
    seconds: int,
    keep_ratios: list[float],
    patches: tuple[int, int] = (24, 24),
    text: tuple[int, int] = (16, 24),
    backbone: str = "qwen2_5_omni",
) -> list[ClipLayout]:
    """Token layouts of `clip_segments(seconds, patches, text)` at each keep ratio, from forwards of the tiny random
    model on CPU (kept counts and selector shapes depend on the layout and the ratios only, not on values or widths).
    The selector's input shapes are read with a forward hook on `model.compressor`.

    `backbone="qwen3_omni_moe"` lays the clip out as Qwen3-Omni's processor does (`tiny_qwen3_inputs`: 16-pixel
    patches, 13 audio tokens per second of audio, each frame grid followed by the audio up to the next one) and runs
    `tiny_qwen3_model` (its tiny vision encoder runs too: the deepstack features come from it)."""
    if backbone == "qwen3_omni_moe":
        model = tiny_qwen3_model()
        inputs = tiny_qwen3_inputs([clip_segments(seconds, patches, text)])
        grid = inputs["video_grid_thw"]
    elif backbone == "qwen2_5_omni":
        model = tiny_model()
        inputs = tiny_inputs([clip_segments(seconds, patches, text)])
        grid = inputs.pop("video_grid_thw")
        num_video_tokens = int(grid.prod()) // model.config.vision_config.spatial_merge_size**2
        # Random video features stand in for the vision encoder's output (values do not matter, and the tiny encoder
        # is the slowest part of the tiny model on long clips); `generate` hands the model its video features the same
        # way.
        del inputs["pixel_values_videos"]
        inputs["mm_encoder_outputs"] = {
            "video": BaseModelOutputWithPooling(
                pooler_output=(torch.randn(num_video_tokens, model.config.text_config.hidden_size),)
            )
        }
        inputs["video_grid_thw"] = grid
    else:
        raise ValueError(f"backbone={backbone!r}: expected 'qwen2_5_omni' or 'qwen3_omni_moe'.")
    shapes: list[tuple] = []

    def record(module, args, kwargs, output):
        audio, video = args[0], args[1]
        shapes.append((tuple(audio.shape[:2]), tuple(video.shape[:2])))

    handle = model.compressor.register_forward_hook(record, with_kwargs=True)
    layouts = []
    try:
        for keep_ratio in keep_ratios:
            shapes.clear()
            with torch.no_grad():
                out = model(**inputs, keep_ratio=keep_ratio)
            selector = shapes[0] if shapes else (None, None)
            layouts.append(
                ClipLayout(
                    seconds=seconds,
                    keep_ratio=keep_ratio,
                    video_grid_thw=tuple(grid[0].tolist()),
                    mel_frames=int(inputs["feature_attention_mask"].sum()),
                    input_length=inputs["input_ids"].shape[1],
                    num_video_tokens=int(out.num_video_tokens[0]),
                    num_kept_video_tokens=int(out.num_kept_video_tokens[0]),
                    num_audio_tokens=int(out.num_audio_tokens[0]),
                    num_kept_audio_tokens=int(out.num_kept_audio_tokens[0]),
                    kept_length=out.logits.shape[1],
                    selector_audio_shape=selector[0],
                    selector_video_shape=selector[1],
                )
            )
    finally:
        handle.remove()
    return layouts


# ---------------------------------------------------------------------------------------------------------------------
# Real sizes on the meta device
# ---------------------------------------------------------------------------------------------------------------------
class MetaPrefillFlops:
    """Prefill FLOPs of a thinker of any size on the meta device (no weights, no allocation), stage by stage.

    How each stage is counted (FlopCounterMode throughout):
    - Identical layers are counted once and multiplied: the decoder's layers (all full attention in Qwen2.5-Omni), the
      audio encoder's layers, the vision encoder's windowed blocks and its full-attention blocks (one of each kind).
      Everything around the layers (patch embedding, merger, convolutions, projections, lm_head) is counted as it
      runs. `exact=True` builds and runs every layer instead (same result, many times slower on meta tensors, where
      each elementwise op is a Python shape computation).
    - The vision encoder attends only inside a temporal slice (windows and full-attention blocks alike), so a video
      counts as one slice times its slices; two slices are counted as well and must give exactly twice one slice.
    - The encoders run with eager attention (FlopCounterMode counts it exactly like SDPA; it is faster on meta). Their
      data-dependent index tensors (window order, chunk lengths) are computed on CPU with transformers' own helpers
      and handed to them precomputed, as the encoders allow.
    - The decoder runs on one unpadded sequence of the kept length; the selector on the `(W, A)` / `(W, V)` shapes of
      a [`ClipLayout`].

    Example:

    ```python
    >>> from omnisift_hf.tools.profiling import MetaPrefillFlops, measure_clip_layouts, qwen2_5_omni_config
    >>> counter = MetaPrefillFlops(qwen2_5_omni_config("7B"))
    >>> full, compressed = (counter.count(layout) for layout in measure_clip_layouts(2, [1.0, 0.25]))
    >>> compressed["total"] < full["total"]
    True
    ```
    """

    def __init__(self, config: OmniSiftConfig, exact: bool = False):
        self.config = config
        counted = self._counted_config(config)
        text, vision, audio = counted.text_config, counted.vision_config, counted.audio_config
        # Layer index in the counted model -> how many layers of the real model it stands for.
        self._decoder_layers = dict.fromkeys(range(text.num_hidden_layers), 1)
        self._vision_blocks = dict.fromkeys(range(vision.depth), 1)
        self._audio_layers = dict.fromkeys(range(audio.encoder_layers), 1)
        if not exact:
            if len(set(text.layer_types)) == 1:
                self._decoder_layers = {0: text.num_hidden_layers}
                text.num_hidden_layers, text.layer_types = 1, text.layer_types[:1]
            full = sorted(set(vision.fullatt_block_indexes) & set(range(vision.depth)))
            kinds = [count for count in (vision.depth - len(full), len(full)) if count]
            self._vision_blocks = dict(enumerate(kinds))
            vision.fullatt_block_indexes = [len(kinds) - 1] if full else []
            vision.depth = len(kinds)
            self._audio_layers = {0: audio.encoder_layers}
            audio.encoder_layers = 1
        with torch.device("meta"):
            self.model = OmniSiftForConditionalGeneration(counted).eval()
        self._vision_per_slice: dict[tuple[int, int], int] = {}
        self._audio: dict[int, int] = {}

    @staticmethod
    def _counted_config(config):
        """A copy of `config` for the counted model: eager attention in the encoders, SDPA in the decoder (what the
        counts are checked against in tests/test_benchmark.py and tests/test_qwen3_flops.py)."""
        counted = copy.deepcopy(config)
        counted.vision_config._attn_implementation = "eager"
        counted.audio_config._attn_implementation = "eager"
        counted.text_config._attn_implementation = "sdpa"
        return counted

    @staticmethod
    def _flops(function, *args, layers: tuple | list[tuple] | None = None, **kwargs) -> int:
        """FLOPs of `function(*args, **kwargs)`; `layers = (prefix, {index: multiplier})` (or a list of such pairs)
        counts module `{prefix}.{index}` `multiplier` times."""
        with torch.no_grad(), flop_counter() as counter:
            function(*args, **kwargs)
        counts = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
        total = counts.get("Global", 0)
        for prefix, multipliers in [layers] if isinstance(layers, tuple) else layers or []:
            total += sum(
                (multiplier - 1) * counts.get(f"{prefix}.{index}", 0) for index, multiplier in multipliers.items()
            )
        return total

    def _vision_exact(self, grid_thw: tuple[int, int, int]) -> int:
        visual = self.model.model.visual
        vision = visual.config
        grid = torch.tensor([grid_thw])
        window_index, cu_window_seqlens = get_vision_window_index(
            grid, vision.spatial_merge_size, vision.window_size, vision.patch_size
        )
        cu_seqlens, _ = get_vision_attention_seqlens(grid, vision)
        patch_dim = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
        pixels = torch.empty(grid_thw[0] * grid_thw[1] * grid_thw[2], patch_dim, device="meta")
        return self._flops(
            visual,
            pixels,
            layers=(f"{type(visual).__name__}.blocks", self._vision_blocks),
            grid_thw=grid,
            position_ids=get_vision_position_ids(grid, vision.spatial_merge_size).to("meta"),
            window_index=window_index.to("meta"),
            cu_window_seqlens=cu_window_seqlens,  # CPU: split sizes are read from it
            cu_seqlens=cu_seqlens,
        )

    def vision(self, grid_thw: tuple[int, int, int]) -> int:
        """Vision encoder FLOPs for one video of `grid_thw` patches."""
        slices, height, width = grid_thw
        if (height, width) not in self._vision_per_slice:
            one, two = self._vision_exact((1, height, width)), self._vision_exact((2, height, width))
            if two != 2 * one:
                raise RuntimeError(
                    f"vision encoder FLOPs are not linear in the temporal slices ({one} for one, {two} for two): "
                    "this transformers version attends across slices, which this counter does not support."
                )
            self._vision_per_slice[height, width] = one
        return slices * self._vision_per_slice[height, width]

    def audio(self, mel_frames: int) -> int:
        """Audio encoder FLOPs for one audio item of `mel_frames` mel frames."""
        if mel_frames not in self._audio:
            tower = self.model.model.audio_tower
            audio = tower.config
            lengths = torch.tensor([mel_frames])
            padded, chunk_lengths = chunk_and_pad_features(
                torch.zeros(audio.num_mel_bins, mel_frames), lengths, audio.n_window
            )
            self._audio[mel_frames] = self._flops(
                tower,
                torch.empty(audio.num_mel_bins, mel_frames, device="meta"),
                layers=(f"{type(tower).__name__}.layers", self._audio_layers),
                feature_lens=lengths.to("meta"),
                padded_feature=padded.to("meta"),
                chunk_lengths=chunk_lengths.to("meta"),
                valid_indices=get_valid_indices(chunk_lengths).to("meta"),
                pool_indices=get_pool_indices(lengths).to("meta"),
                cu_seqlens=get_audio_cu_seqlens(chunk_lengths),  # CPU: split sizes are read from it
            )
        return self._audio[mel_frames]

    def selector(self, audio_shape: tuple[int, int] | None, video_shape: tuple[int, int] | None) -> int:
        """Selector FLOPs for `W` windows of `A` audio tokens attending to `V` kept video tokens (padded)."""
        if audio_shape is None or video_shape is None:
            return 0
        hidden = self.config.text_config.hidden_size
        audio = torch.empty(*audio_shape, hidden, device="meta")
        video = torch.empty(*video_shape, hidden, device="meta")
        padding = torch.zeros(video_shape, dtype=torch.bool, device="meta")
        return self._flops(self.model.compressor, audio, video, video_padding_mask=padding)

    def decoder(self, length: int) -> dict[str, int]:
        """Decoder and lm_head FLOPs for one sequence of `length` tokens (the thinker's forward applies the lm_head to
        every position of a prefill, inside `generate` too)."""
        language_model = self.model.model.language_model
        embeds = torch.empty(1, length, self.config.text_config.hidden_size, device="meta")
        # Three M-RoPE rows (no text-position row): a single unpadded sequence needs no packed-sequence detection,
        # which would read values.
        positions = torch.zeros(3, 1, length, dtype=torch.long, device="meta")
        decoder = self._flops(
            language_model,
            inputs_embeds=embeds,
            position_ids=positions,
            use_cache=False,
            layers=(f"{type(language_model).__name__}.layers", self._decoder_layers),
        )
        return {"decoder": decoder, "lm_head": self._flops(self.model.lm_head, embeds)}

    def count(self, layout: ClipLayout) -> dict[str, int]:
        """FLOPs of one prefill of `layout` by stage: `vision_encoder`, `audio_encoder`, `selector`, `compression`
        (= the selector: STVP has no matrix product), `decoder`, `lm_head`, `total`."""
        flops = {
            "vision_encoder": self.vision(layout.video_grid_thw),
            "audio_encoder": self.audio(layout.mel_frames),
            "selector": self.selector(layout.selector_audio_shape, layout.selector_video_shape),
            **self.decoder(layout.kept_length),
        }
        flops["compression"] = flops["selector"]
        flops["total"] = sum(flops[name] for name in FLOP_GROUPS)
        return flops


# ---------------------------------------------------------------------------------------------------------------------
# The real Qwen3-Omni-30B-A3B thinker sizes
# ---------------------------------------------------------------------------------------------------------------------
# Written from public knowledge of the `thinker_config` of Qwen/Qwen3-Omni-30B-A3B-Instruct (config.json on the Hub; no
# download here, so not re-checked against the file) and transformers 5.24's `Qwen3OmniMoe*Config` defaults, which
# are the checkpoint's only in some fields:
# - text: hidden 2048, 48 layers, 32 query / 4 key-value heads of head_dim 128, 128 experts of which 8 run per token
#   (`num_experts_per_tok`), expert MLP (`moe_intermediate_size`) 768, every layer a sparse MoE layer
#   (`decoder_sparse_step` 1, no `mlp_only_layers`), no shared expert (the architecture has none;
#   `shared_expert_intermediate_size` 0 in the public config), vocabulary 152064 (the embedding / lm_head rows; the
#   tokenizer has 151643 regular tokens + specials; 151936, the Qwen3 text models' size, is not this checkpoint's),
#   untied lm_head, M-RoPE sections [24, 20, 20] interleaved. transformers' defaults agree on the width, the experts
#   (128 / 8 / 768) and the KV heads; they differ on the vocabulary (3584), the layers (28) and the heads (28), so
#   those are written here from the public config (as quoted in several public repositories' copies of it).
# - vision: the transformers defaults (depth 27, width 1152, MLP 4304, 16 heads, 2304 learned positions, deepstack
#   mergers after blocks 8 / 16 / 24), 16-pixel patches merged 2 x 2, temporal patch 2 (the checkpoint's
#   `patch_size` is 16; transformers defaults it to 16 too), merger output = text width 2048 (default 3584).
# - audio: the transformers defaults (32 layers, d_model 1280, 20 heads, FFN 5120, 128 mel bins, conv downsampling
#   width 480, chunks of 2 * n_window = 100 mel frames, attention windows of n_window_infer = 800 mel frames), output =
#   text width 2048 (default 3584).
# - position_id_per_seconds 13 (the checkpoint's and the processor's; the config default is 25; FLOPs do not depend on
#   it). Token ids are the Qwen3-Omni tokenizer's (they do not change any count either).
# Every size that changes a count is a field below; `qwen3_omni_config` checks nothing against the Hub.
QWEN3_OMNI_THINKER = {
    "text": {
        "vocab_size": 152064,
        "hidden_size": 2048,
        "intermediate_size": 768,
        "moe_intermediate_size": 768,
        "num_hidden_layers": 48,
        "num_attention_heads": 32,
        "num_key_value_heads": 4,
        "head_dim": 128,
        "num_experts": 128,
        "num_experts_per_tok": 8,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
        "norm_topk_prob": True,
        "max_position_embeddings": 65536,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1000000.0,
            "mrope_section": [24, 20, 20],
            "interleaved": True,
        },
    },
    "vision": {
        "depth": 27,
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_heads": 16,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "num_position_embeddings": 2304,
        "deepstack_visual_indexes": [8, 16, 24],
        "out_hidden_size": 2048,
    },
    "audio": {
        "num_mel_bins": 128,
        "encoder_layers": 32,
        "encoder_attention_heads": 20,
        "encoder_ffn_dim": 5120,
        "d_model": 1280,
        "n_window": 50,
        "n_window_infer": 800,
        "downsample_hidden_size": 480,
        "conv_chunksize": 500,
        "max_source_positions": 1500,
        "output_dim": 2048,
    },
}


def qwen3_omni_config(**overrides) -> OmniSiftQwen3OmniConfig:
    """The OmniSIFT config of the real Qwen3-Omni-30B-A3B thinker (`QWEN3_OMNI_THINKER`), with its token ids and the
    default selector (512 wide, 8 heads, MLP 256, fed the 2048-wide text states). Keyword arguments override top-level
    fields."""
    sizes = QWEN3_OMNI_THINKER
    fields = {
        "text_config": copy.deepcopy(sizes["text"]),
        "vision_config": dict(sizes["vision"]),
        "audio_config": dict(sizes["audio"]),
        "position_id_per_seconds": 13,
        "audio_token_id": 151675,
        "image_token_id": 151655,
        "video_token_id": 151656,
        "vision_start_token_id": 151652,
        "vision_end_token_id": 151653,
        "audio_start_token_id": 151669,
        "user_token_id": 872,
    }
    fields.update(overrides)
    return OmniSiftQwen3OmniConfig(**fields)


def _executed_experts(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor):
    """What `Qwen3OmniMoeThinkerTextExperts` multiplies, without reading the routing (meta tensors have no values).

    The eager experts run expert `e` on the `n_e` (token, slot) pairs routed to it: `linear(n_e x H, gate_up[e])` and
    `linear(n_e x I, down[e])`. Every token has exactly `top_k` slots, so the pairs sum to `N * top_k` whatever the
    routing, and the products cost what one expert's costs on `N * top_k` rows: that is what runs here (expert 0's
    weights stand in; all experts have the same shape). The result has the right shape, not the right values."""
    tokens, hidden = hidden_states.shape
    pairs = hidden_states.repeat_interleave(top_k_index.shape[-1], dim=0)
    gate, up = F.linear(pairs, self.gate_up_proj[0]).chunk(2, dim=-1)
    out = F.linear(self.act_fn(gate) * up, self.down_proj[0])
    return out.view(tokens, -1, hidden).sum(dim=1)


class MetaQwen3PrefillFlops(MetaPrefillFlops):
    """Prefill FLOPs of a Qwen3-Omni MoE thinker of any size on the meta device, stage by stage (`MetaPrefillFlops`'
    counting, for `OmniSiftQwen3OmniForConditionalGeneration`).

    What differs from Qwen2.5-Omni:
    - Decoder: every layer is attention + a sparse MoE block (router `H -> num_experts`, then `num_experts_per_tok`
      SwiGLU experts of width `moe_intermediate_size` per token; no shared expert). Only the experts a token is routed
      to run: the counted model's experts are swapped for `_executed_experts`, which multiplies `N * top_k` rows by
      one expert's weights, exactly the products of the eager experts implementation summed over experts, for any
      routing (a test checks this against a real forward with its real routing). The router's product is counted as
      it runs. Deepstack adds the vision mergers' features to the hidden states of the first decoder layers: additions,
      which count 0.
    - Vision: 16-pixel patches, learned positions resampled to the grid (a gather-and-sum: 0), full attention inside
      each temporal slice in every block (no windows), the final merger plus one deepstack merger per
      `deepstack_visual_indexes` entry (`merger_list`). One block and one deepstack merger are counted and multiplied.
    - Audio: three stride-2 convolutions (480 channels) on chunks of `2 * n_window` mel frames, 32 layers attending
      inside windows of `n_window_infer` mel frames, `proj1` / `proj2`.
    `exact=True` builds and runs every layer (same result, slower).
    """

    def __init__(self, config: OmniSiftQwen3OmniConfig, exact: bool = False):
        self.config = config
        counted = self._counted_config(config)
        text, vision, audio = counted.text_config, counted.vision_config, counted.audio_config
        self._decoder_layers = dict.fromkeys(range(text.num_hidden_layers), 1)
        self._vision_blocks = dict.fromkeys(range(vision.depth), 1)
        self._deepstack_mergers = dict.fromkeys(range(len(vision.deepstack_visual_indexes)), 1)
        self._audio_layers = dict.fromkeys(range(audio.encoder_layers), 1)
        if not exact:
            sparse = [
                index not in text.mlp_only_layers
                and text.num_experts > 0
                and (index + 1) % text.decoder_sparse_step == 0
                for index in range(text.num_hidden_layers)
            ]
            if len(set(sparse)) == 1 and len(set(getattr(text, "layer_types", None) or [None])) == 1:
                self._decoder_layers = {0: text.num_hidden_layers}
                text.num_hidden_layers = 1
                if getattr(text, "layer_types", None):
                    text.layer_types = text.layer_types[:1]
            deepstack = sorted(set(vision.deepstack_visual_indexes) & set(range(vision.depth)))
            if len(deepstack) != len(vision.deepstack_visual_indexes):
                raise ValueError(
                    f"deepstack_visual_indexes {vision.deepstack_visual_indexes} outside the vision depth"
                )
            self._vision_blocks = {0: vision.depth}
            self._deepstack_mergers = {0: len(deepstack)} if deepstack else {}
            vision.depth, vision.deepstack_visual_indexes = 1, [0] if deepstack else []
            self._audio_layers = {0: audio.encoder_layers}
            audio.encoder_layers = 1
        with torch.device("meta"):
            self.model = OmniSiftQwen3OmniForConditionalGeneration(counted).eval()
        for module in self.model.modules():
            if isinstance(module, qwen3_omni_modeling.Qwen3OmniMoeThinkerTextExperts):
                module.forward = types.MethodType(_executed_experts, module)
        self._vision_per_slice: dict[tuple[int, int], int] = {}
        self._audio: dict[int, int] = {}

    def _vision_exact(self, grid_thw: tuple[int, int, int]) -> int:
        visual = self.model.model.visual
        vision = visual.config
        grid = torch.tensor([grid_thw])
        indices, weights = get_vision_interpolation_indices_and_weights(
            grid,
            num_grid_per_side=visual.num_grid_per_side,
            mode=visual.interpolation_mode,
            align_corners=visual.interpolation_align_corners,
            spatial_merge_size=vision.spatial_merge_size,
        )
        cu_seqlens, _ = get_vision_attention_seqlens(grid, vision)
        patch_dim = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
        pixels = torch.empty(grid_thw[0] * grid_thw[1] * grid_thw[2], patch_dim, device="meta")
        name = type(visual).__name__
        return self._flops(
            visual,
            pixels,
            layers=[(f"{name}.blocks", self._vision_blocks), (f"{name}.merger_list", self._deepstack_mergers)],
            grid_thw=grid,
            interp_indices=indices.to("meta"),
            interp_weights=weights.to("meta"),
            position_ids=get_vision_position_ids(grid, vision.spatial_merge_size).to("meta"),
            cu_seqlens=cu_seqlens,  # CPU: split sizes are read from it
        )

    def audio(self, mel_frames: int) -> int:
        """Audio encoder FLOPs for one audio item of `mel_frames` mel frames."""
        if mel_frames not in self._audio:
            tower = self.model.model.audio_tower
            audio = tower.config
            lengths = torch.tensor([mel_frames])
            padded, chunk_lengths = qwen3_omni_modeling.chunk_and_pad_features(
                torch.zeros(audio.num_mel_bins, mel_frames), lengths, audio.n_window
            )
            self._audio[mel_frames] = self._flops(
                tower,
                torch.empty(audio.num_mel_bins, mel_frames, device="meta"),
                layers=(f"{type(tower).__name__}.layers", self._audio_layers),
                feature_lens=lengths.to("meta"),
                padded_feature=padded.to("meta"),
                chunk_lengths=chunk_lengths.to("meta"),
                valid_indices=qwen3_omni_modeling.get_valid_indices(chunk_lengths, audio.n_window).to("meta"),
                cu_seqlens=qwen3_omni_modeling.get_audio_cu_seqlens(  # CPU: split sizes are read from it
                    chunk_lengths, lengths, audio.n_window_infer, audio.n_window
                ),
            )
        return self._audio[mel_frames]


# ---------------------------------------------------------------------------------------------------------------------
# The full model's talker
# ---------------------------------------------------------------------------------------------------------------------
# The Qwen2.5-Omni-7B talker's sizes as issue #16 gives them (no download here): 896 wide, 24 layers, 14 query / 2
# key-value heads (head_dim 64), MLP 18944, a codec vocabulary of 8448, fed the thinker's 3584-wide hidden states.
# transformers' `Qwen2_5OmniTalkerConfig` defaults are not these (they repeat the thinker's sizes). The head layout was
# not re-checked against the checkpoint's config.json; the MLP and the width, which hold almost all of the FLOPs, are
# the issue's. M-RoPE splits head_dim / 2 = 32 rotary pairs 8 / 12 / 12 (the thinker's 16 / 24 / 24, halved).
QWEN2_5_OMNI_TALKER = {
    "vocab_size": 8448,
    "embedding_size": 3584,
    "hidden_size": 896,
    "intermediate_size": 18944,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [8, 12, 12]},
}

# Module path suffixes (below the talker's class name) of each group of `MetaTalkerPrefillFlops.count`.
TALKER_FLOP_GROUPS = {"projection": ".thinker_to_talker_proj", "decoder": ".model", "codec_head": ".codec_head"}


def qwen2_5_omni_talker_config(**overrides) -> Qwen2_5OmniTalkerConfig:
    """The config of the real Qwen2.5-Omni-7B talker (`QWEN2_5_OMNI_TALKER`); keyword arguments override fields."""
    fields = {**QWEN2_5_OMNI_TALKER, **overrides}
    # Its text / media token ids are the thinker's (151k vocabulary), which transformers flags as outside the codec
    # vocabulary on every construction: quiet for this counting config.
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        return Qwen2_5OmniTalkerConfig(**fields)
    finally:
        transformers_logging.set_verbosity(verbosity)


class MetaTalkerPrefillFlops:
    """Prefill FLOPs of a Qwen2.5-Omni talker of any size on the meta device (no weights, no allocation).

    The talker's prefill runs on its prompt of `length` tokens (`L + 2` for the stock model, `K + 2` when it is
    prompted with the thinker's kept positions only, see `OmniSiftOmniForConditionalGeneration`): the projection of
    the thinker's hidden states to the talker's width (`projection`), the decoder (`decoder`) and the codec head, which
    the talker applies to every position of its prefill (`codec_head`). Counted with FlopCounterMode like
    `MetaPrefillFlops`: matrix products only, attention dense; the decoder's identical layers are counted once and
    multiplied (`exact=True` builds and runs them all). The prompt's M-RoPE positions do not change any count.

    Example:

    ```python
    >>> from omnisift_hf.tools.profiling import MetaTalkerPrefillFlops, qwen2_5_omni_talker_config
    >>> counter = MetaTalkerPrefillFlops(qwen2_5_omni_talker_config())
    >>> counter.count(1000)["total"] > counter.count(250)["total"]
    True
    ```
    """

    def __init__(self, config: Qwen2_5OmniTalkerConfig, exact: bool = False):
        self.config = config
        counted = copy.deepcopy(config)
        counted._attn_implementation = "sdpa"
        self._layers = dict.fromkeys(range(counted.num_hidden_layers), 1)
        if not exact and len(set(counted.layer_types)) == 1:
            self._layers = {0: counted.num_hidden_layers}
            counted.num_hidden_layers, counted.layer_types = 1, counted.layer_types[:1]
        with torch.device("meta"):
            self.model = OmniSiftTalkerForConditionalGeneration(counted).eval()
        self._counts: dict[int, dict[str, int]] = {}

    def count(self, length: int) -> dict[str, int]:
        """FLOPs of one talker prefill of `length` tokens by group of `TALKER_FLOP_GROUPS`, plus `total`."""
        if length not in self._counts:
            embeds = torch.empty(1, length, self.config.embedding_size, device="meta")
            # Three M-RoPE rows and no attention mask: one unpadded sequence (a mask would be read for values).
            positions = torch.zeros(3, 1, length, dtype=torch.long, device="meta")
            root = type(self.model).__name__
            with torch.no_grad(), flop_counter() as counter:
                self.model(inputs_embeds=embeds, position_ids=positions, use_cache=False)
            counts = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
            layer = f"{root}.model.layers"
            extra = sum((times - 1) * counts.get(f"{layer}.{index}", 0) for index, times in self._layers.items())
            flops = {name: counts.get(root + suffix, 0) for name, suffix in TALKER_FLOP_GROUPS.items()}
            flops["decoder"] += extra
            flops["total"] = counts.get("Global", 0) + extra
            self._counts[length] = flops
        return dict(self._counts[length])
