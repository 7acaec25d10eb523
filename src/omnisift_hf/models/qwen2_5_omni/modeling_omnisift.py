"""OmniSIFT for Qwen2.5-Omni: the thinker with token compression between its encoders and its language model, and the
full model (thinker, talker, token2wav) whose spoken replies are generated from the kept tokens only."""

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers.cache_utils import StaticCache
from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping
from transformers.core_model_loading import WeightConverter, rename_source_key
from transformers.modeling_outputs import BaseModelOutputWithPooling, MultimodalCausalLMOutputWithPast
from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import (
    Qwen2_5OmniForConditionalGeneration,
    Qwen2_5OmniPreTrainedModel,
    Qwen2_5OmniTalkerForConditionalGeneration,
    Qwen2_5OmniThinkerForConditionalGeneration,
    Qwen2_5OmniToken2WavModel,
)
from transformers.utils import cached_file, logging
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import ModelOutput, can_return_tuple

from ...attention_policy import KEEP_POLICY_ATTENTION
from ...compression import KeepRatios, gather_kept_tokens, media_runs, resolve_keep_ratios
from ...remote_code import class_reference, write_remote_code
from ...selector import OmniSiftAudioSelector, TokenSelection, select_tokens
from .configuration_omnisift import OmniSiftConfig, OmniSiftOmniConfig

logger = logging.get_logger(__name__)

__all__ = [
    "AUTO_MODEL_CLASSES",
    "OMNI_AUTO_MODEL_CLASSES",
    "OmniSiftCausalLMOutputWithPast",
    "OmniSiftForConditionalGeneration",
    "OmniSiftOmniForConditionalGeneration",
    "OmniSiftOmniGenerateOutput",
    "OmniSiftTalkerForConditionalGeneration",
    "TokenSelector",
    "remote_code_auto_map",
]

# The Auto classes that resolve the `omnisift` model type (see the registration in `__init__.py`). A saved directory
# lists each of them in `auto_map`, so that each also loads it with `trust_remote_code=True`.
AUTO_MODEL_CLASSES = ("AutoModel", "AutoModelForImageTextToText", "AutoModelForMultimodalLM")
# The same for the full model (`omnisift_omni`): the Auto classes transformers maps Qwen2.5-Omni's full model to, and
# `AutoModel`.
OMNI_AUTO_MODEL_CLASSES = ("AutoModel", "AutoModelForMultimodalLM", "AutoModelForTextToWaveform")
# The speakers of a full Qwen2.5-Omni checkpoint (each a `cond` vector, a `ref_mel` spectrogram and a `bos_token`).
SPEAKERS_NAME = "spk_dict.pt"

# What `forward(token_selector=...)` accepts: a callable with the arguments of
# `OmniSiftForConditionalGeneration.select_tokens` that returns a `TokenSelection`.
TokenSelector = Callable[[torch.LongTensor, torch.Tensor, torch.Tensor, torch.Tensor, KeepRatios], TokenSelection]

# Qwen2.5-Omni checkpoints store the thinker under `thinker.` (and its decoder under `thinker.model.`); transformers
# renames those keys only for classes it knows or that are registered. Without this line every decoder weight would be
# silently re-initialised. The selector lives at the top level (`compressor.*`), outside `model.`, so the stock
# renaming of `model.*` into `model.language_model.*` never touches it.
register_checkpoint_conversion_mapping(
    "OmniSiftForConditionalGeneration",
    get_checkpoint_conversion_mapping("Qwen2_5OmniThinkerForConditionalGeneration"),
    overwrite=True,
)


@dataclass
class OmniSiftCausalLMOutputWithPast(MultimodalCausalLMOutputWithPast):
    r"""
    Output of [`OmniSiftForConditionalGeneration`]: the thinker's output plus what compression kept.

    The token counts are `None` when the forward pass saw no audio/video features (decode steps, text only).

    num_video_tokens (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
        Video tokens of each sample before compression.
    num_kept_video_tokens (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
        Video tokens of each sample handed to the language model.
    num_audio_tokens (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
        Audio tokens of each sample before compression.
    num_kept_audio_tokens (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
        Audio tokens of each sample handed to the language model.
    kept_token_index (`torch.LongTensor` of shape `(batch_size, kept_length)`, *optional*):
        For each position of the shortened, left-padded sequence, its position in the input sequence (0 at padding).
        `None` when nothing was compressed.
    kept_attention_mask (`torch.LongTensor` of shape `(batch_size, kept_length)`, *optional*):
        Attention mask of the shortened sequence (what `logits` are aligned with).
    kept_position_ids (`torch.LongTensor` of shape `(4, batch_size, kept_length)`, *optional*):
        Text positions (row 0) and M-RoPE temporal/height/width positions (rows 1-3) of the shortened sequence.
    """

    num_video_tokens: torch.LongTensor | None = None
    num_kept_video_tokens: torch.LongTensor | None = None
    num_audio_tokens: torch.LongTensor | None = None
    num_kept_audio_tokens: torch.LongTensor | None = None
    kept_token_index: torch.LongTensor | None = None
    kept_attention_mask: torch.LongTensor | None = None
    kept_position_ids: torch.LongTensor | None = None


class OmniSiftForConditionalGeneration(Qwen2_5OmniThinkerForConditionalGeneration):
    r"""
    Qwen2.5-Omni thinker (text output) with OmniSIFT token compression: after the audio and vision encoders and
    before the language model, spatio-temporal video pruning (STVP) drops redundant video tokens and the
    vision-guided audio selector (VGAS, `self.compressor`) drops audio tokens. Kept tokens keep their M-RoPE
    positions. `keep_ratio=1.0` is exactly Qwen2.5-Omni.

    Loads Qwen2.5-Omni checkpoints (full model or thinker; the selector is then untrained) and its own.

    Example:

    ```python
    >>> import torch
    >>> from omnisift_hf import OmniSiftConfig, OmniSiftForConditionalGeneration

    >>> config = OmniSiftConfig(
    ...     text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
    ...                  "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 64,
    ...                  "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3]}},
    ...     vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2,
    ...                    "out_hidden_size": 32, "fullatt_block_indexes": [0]},
    ...     audio_config={"encoder_layers": 1, "d_model": 16, "encoder_attention_heads": 2,
    ...                   "encoder_ffn_dim": 32, "output_dim": 32},
    ...     selector_hidden_size=16, selector_num_heads=2, selector_mlp_size=8,
    ... )
    >>> model = OmniSiftForConditionalGeneration(config)
    >>> out = model(input_ids=torch.tensor([[1, 2, 3]]), keep_ratio=0.25)
    >>> out.logits.shape
    torch.Size([1, 3, 64])
    ```
    """

    config_class = OmniSiftConfig
    config: OmniSiftConfig
    # The selector runs as one unit: `device_map="auto"` must never split it across devices.
    _no_split_modules = [*Qwen2_5OmniThinkerForConditionalGeneration._no_split_modules, "OmniSiftAudioSelector"]
    # Token selection has data-dependent shapes: no full-graph compilation.
    _can_compile_fullgraph = False
    # Name prefixes of the parameter groups that the freezing policies of `omnisift_hf.training` choose from.
    parameter_groups = {
        "audio_tower": "model.audio_tower.",
        "visual": "model.visual.",
        "language_model": "model.language_model.",
        "lm_head": "lm_head.",
        "compressor": "compressor.",
    }

    def __init__(self, config: OmniSiftConfig):
        super().__init__(config)
        # The selector. Its attribute name is the published checkpoint's (`thinker.compressor.*`).
        self.compressor = OmniSiftAudioSelector(
            hidden_size=config.text_config.hidden_size,
            selector_hidden_size=config.selector_hidden_size,
            num_heads=config.selector_num_heads,
            mlp_size=config.selector_mlp_size,
        )
        # What the latest compressed forward kept, per thread (see `compression_stats`).
        self._compression_stats: dict[int, OmniSiftCausalLMOutputWithPast] = {}
        self.post_init()

    @property
    def compression_stats(self) -> OmniSiftCausalLMOutputWithPast | None:
        """The counts (`num_*`), `kept_token_index` and `kept_attention_mask` of the latest forward with audio/video
        run by the calling thread (`generate()`'s prefill), or `None`. Per thread, so threads sharing a model read
        their own; the same counts come back with each call in `forward`'s output and in
        `generate(..., return_dict_in_generate=True)`'s.
        """
        return self._compression_stats.get(threading.get_ident())

    @compression_stats.setter
    def compression_stats(self, value: OmniSiftCausalLMOutputWithPast | None) -> None:
        if value is None:
            self._compression_stats.pop(threading.get_ident(), None)
        else:
            self._compression_stats[threading.get_ident()] = value

    # -----------------------------------------------------------------------------------------------------------------
    # Loading
    # -----------------------------------------------------------------------------------------------------------------
    def _adjust_missing_and_unexpected_keys(self, loading_info) -> None:
        # Overwritten -- a Qwen2.5-Omni checkpoint has no selector: say so once, clearly, instead of listing its 18
        # tensors as missing. A checkpoint with only part of the selector stays reported as missing.
        _report_untrained_selector(loading_info, self.compressor, "compressor.")
        super()._adjust_missing_and_unexpected_keys(loading_info)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # Overwritten -- `save_pretrained` writes Qwen2.5-Omni's original key layout (`model.layers.*`, `visual.*`,
        # `audio_tower.*`) and `Trainer.train(resume_from_checkpoint=...)` reads it back with a plain
        # `load_state_dict` (transformers 5.24, huggingface/transformers#43701): without renaming, resuming would keep
        # the initial weights of everything but the selector, with only a warning.
        if not self.state_dict().keys() >= state_dict.keys():
            transforms = get_checkpoint_conversion_mapping(type(self).__name__) or []
            renamings = [t for t in transforms if not isinstance(t, WeightConverter)]
            converters = [t for t in transforms if isinstance(t, WeightConverter)]
            state_dict = {rename_source_key(key, renamings, converters)[0]: value for key, value in state_dict.items()}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # -----------------------------------------------------------------------------------------------------------------
    # Saving
    # -----------------------------------------------------------------------------------------------------------------
    def save_pretrained(self, save_directory, *args, processor=None, **kwargs) -> None:
        r"""
        As [`PreTrainedModel.save_pretrained`], plus the remote-code files with an `auto_map` for every Auto class,
        and:

        processor (`ProcessorMixin`, *optional*):
            The processor the model is used with (e.g. `Qwen2_5OmniProcessor`), saved into the same directory so that
            it serves `from_pretrained`, `AutoProcessor.from_pretrained` and `pipeline("omni-qa")` at once.
        """
        # Overwritten -- write this module and what it imports (the remote-code bundle) next to the weights and list
        # the config and every Auto class the model answers to in `auto_map`. transformers' own copying
        # (`register_for_auto_class`) cannot follow this package's imports across folders. `push_to_hub` saves
        # through this method too.
        _write_remote_code(self, save_directory)
        super().save_pretrained(save_directory, *args, **kwargs)
        _save_processor(self, save_directory, processor)

    def push_to_hub(self, repo_id: str, *args, processor=None, **kwargs) -> str:
        r"""
        As [`PreTrainedModel.push_to_hub`]; with `processor`, its files are uploaded in the same commit.
        """
        # Overwritten -- transformers' push_to_hub calls `save_pretrained(tmp_dir, max_shard_size=...)` without a way
        # to pass more arguments: hand the processor over for the duration of the call.
        return _push_with_processor(super().push_to_hub, self, repo_id, *args, processor=processor, **kwargs)

    def train(self, mode: bool = True):
        # Overwritten -- the attention-policy estimator trains through its own attention function: the decoder
        # switches to it in training mode and back to the configured implementation in eval mode (inference is
        # unchanged). With the default estimator ("ste") this is `nn.Module.train`.
        super().train(mode)
        text_config = self.model.language_model.config
        if mode and self.config.selector_estimator == "attention_policy":
            if text_config._attn_implementation != KEEP_POLICY_ATTENTION:
                self._inference_attn_implementation = text_config._attn_implementation
                text_config._attn_implementation = KEEP_POLICY_ATTENTION
        elif text_config._attn_implementation == KEEP_POLICY_ATTENTION:
            text_config._attn_implementation = self._inference_attn_implementation
        return self

    # -----------------------------------------------------------------------------------------------------------------
    # Forward
    # -----------------------------------------------------------------------------------------------------------------
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        input_features: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        video_grid_thw: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        feature_attention_mask: torch.Tensor | None = None,
        audio_feature_lengths: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        use_audio_in_video: bool | None = None,
        video_second_per_grid: torch.LongTensor | None = None,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        keep_ratio: float | None = None,
        video_keep_ratio: float | None = None,
        audio_keep_ratio: float | None = None,
        token_selector: TokenSelector | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> tuple | OmniSiftCausalLMOutputWithPast:
        r"""
        Arguments of [`Qwen2_5OmniThinkerForConditionalGeneration.forward`], plus:

        keep_ratio (`float`, *optional*):
            Fraction of the audio + video tokens to keep for this call (overrides `config.keep_ratio` and the
            configured per-modality ratios). `1.0` runs the unmodified Qwen2.5-Omni thinker.
        video_keep_ratio (`float`, *optional*):
            Fraction of the video tokens kept by STVP for this call.
        audio_keep_ratio (`float`, *optional*):
            Fraction of the audio tokens (in windows that have video) kept by VGAS for this call.
        token_selector (`Callable`, *optional*):
            Replaces [`~OmniSiftForConditionalGeneration.select_tokens`] for this call: called with the same
            arguments, it returns the [`TokenSelection`] the call applies. Baselines, timers and diagnostics wrap or
            replace the selection this way (`generate()` passes it to the prefill). Default: `self.select_tokens`.
        logits_to_keep (`int` or `torch.Tensor`, *optional*, defaults to 0):
            As in transformers' causal LMs: compute logits only for the last `logits_to_keep` positions (0: all), or
            for the given indices. `generate()` passes 1, so the prefill of a long clip never materialises
            `(B, K, vocab)` logits.

        Returns `OmniSiftCausalLMOutputWithPast`: `logits` (and `labels` for the loss) are aligned with the shortened
        sequence described by `kept_token_index` / `kept_attention_mask`.
        """
        config = self.config
        ratios = resolve_keep_ratios(
            keep_ratio,
            video_keep_ratio,
            audio_keep_ratio,
            config.keep_ratio,
            config.video_keep_ratio,
            config.audio_keep_ratio,
        )
        encoder_inputs = {
            "input_features": input_features,
            "pixel_values": pixel_values,
            "pixel_values_videos": pixel_values_videos,
            "image_grid_thw": image_grid_thw,
            "video_grid_thw": video_grid_thw,
            "feature_attention_mask": feature_attention_mask,
            "audio_feature_lengths": audio_feature_lengths,
            "mm_encoder_outputs": mm_encoder_outputs,
        }
        video_outputs = (mm_encoder_outputs or {}).get("video")
        has_media = input_features is not None or pixel_values_videos is not None or video_outputs is not None
        if has_media or pixel_values is not None:
            self._check_media_inputs(input_ids, attention_mask, use_audio_in_video, **encoder_inputs)
        if not has_media or ratios.is_identity:
            # The off switch: nothing to compress, so this is exactly the Qwen2.5-Omni thinker.
            outputs = super().forward(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache=cache,
                inputs_embeds=inputs_embeds,
                labels=labels,
                use_cache=use_cache,
                use_audio_in_video=use_audio_in_video,
                video_second_per_grid=video_second_per_grid,
                **encoder_inputs,
                **kwargs,
            )
            return self._uncompressed_output(outputs, input_ids if has_media else None, logits_to_keep)
        if input_ids is None:
            raise ValueError(
                "OmniSIFT compression needs `input_ids` to find the audio and video tokens, but only `inputs_embeds` "
                "was given. Pass `input_ids`, or `keep_ratio=1.0` to run without compression."
            )

        # 1. Encode: audio, image and video features scattered into the text embeddings.
        inputs_embeds, mm_encoder_outputs = self._embed_multimodal(
            input_ids, inputs_embeds, **encoder_inputs, **kwargs
        )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if position_ids is None:
            position_ids = self.model.compute_3d_position_ids(
                input_ids=input_ids,
                image_grid_thw=image_grid_thw,
                video_grid_thw=video_grid_thw,
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask,
                cache=cache,
                use_audio_in_video=use_audio_in_video,
                audio_feature_lengths=feature_attention_mask.sum(1) if feature_attention_mask is not None else None,
                video_second_per_grid=video_second_per_grid,
            )
        mrope_position_ids = position_ids[-3:]  # (3, B, L): temporal, height, width

        # 2-3. Prune video (STVP) and select audio (VGAS).
        select = self.select_tokens if token_selector is None else token_selector
        selection = select(input_ids, inputs_embeds, attention_mask, mrope_position_ids[0], ratios)
        if token_selector is not None:
            _check_selection(selection)

        # 4. Gather the kept tokens of each sample and re-pad on the left. Training with the attention-policy
        # estimator keeps the scored audio in the sequence and weighs it inside the attention instead (see
        # `omnisift_hf.attention_policy`); everything else trains and infers on the shortened sequence.
        keep, policy = selection.keep_mask(attention_mask), None
        if self.training and config.selector_estimator == "attention_policy" and selection.audio_logits is not None:
            keep, policy = _keep_policy(selection, keep)
        else:
            inputs_embeds = selection.apply_gate(inputs_embeds)
        kept = gather_kept_tokens(keep, inputs_embeds, mrope_position_ids, labels)
        # Decode steps without explicit positions continue from the last kept position.
        self.model.rope_deltas = kept.rope_deltas
        if policy is not None:
            kwargs["keep_policy"] = policy.gather(1, kept.index)  # (B, K)

        # 5. Decode the shortened sequence.
        decoder_outputs = self.model.language_model(
            attention_mask=kept.attention_mask,
            position_ids=kept.position_ids,
            cache=cache,
            inputs_embeds=kept.inputs_embeds,
            use_cache=use_cache,
            return_dict=True,
            **kwargs,
        )
        logits = self.lm_head(decoder_outputs.last_hidden_state[:, _logits_slice(logits_to_keep)])
        loss = None
        if kept.labels is not None:
            loss = self.loss_function(
                logits=logits, labels=kept.labels, vocab_size=config.get_text_config().vocab_size, **kwargs
            )

        # 6. Report what was kept.
        counts = selection.count_tokens(input_ids.shape[0])
        if token_selector is None and ratios.video is None and ratios.audio is None:
            _warn_if_retention_exceeds(ratios.keep, counts)
        output = OmniSiftCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=decoder_outputs.cache,
            hidden_states=decoder_outputs.hidden_states,
            attentions=decoder_outputs.attentions,
            image_outputs=mm_encoder_outputs.get("image"),
            kept_token_index=kept.index,
            kept_attention_mask=kept.attention_mask,
            kept_position_ids=kept.position_ids,
            **counts,
        )
        self.compression_stats = OmniSiftCausalLMOutputWithPast(
            **{key: output[key] for key in output if key.startswith("num_") or key in _STATS_FIELDS}
        )
        return output

    def _check_media_inputs(
        self,
        input_ids: torch.LongTensor | None,
        attention_mask: torch.Tensor | None,
        use_audio_in_video: bool | None,
        input_features: torch.Tensor | None,
        pixel_values: torch.Tensor | None,
        pixel_values_videos: torch.Tensor | None,
        image_grid_thw: torch.LongTensor | None,
        video_grid_thw: torch.LongTensor | None,
        feature_attention_mask: torch.Tensor | None,
        audio_feature_lengths: torch.LongTensor | None,
        mm_encoder_outputs: dict | None,
    ) -> None:
        """Refuse media inputs that would fail deep inside the encoders or, worse, silently skip compression."""
        if input_features is not None:
            if feature_attention_mask is None:
                raise ValueError(
                    "`input_features` were given without `feature_attention_mask`: pass the processor's "
                    "`feature_attention_mask` (1 at each real mel frame of each audio item) with them."
                )
            if feature_attention_mask.shape != (input_features.shape[0], input_features.shape[-1]):
                raise ValueError(
                    f"`feature_attention_mask` has shape {tuple(feature_attention_mask.shape)} but `input_features` "
                    f"{tuple(input_features.shape)} needs ({input_features.shape[0]}, {input_features.shape[-1]}) "
                    "(audio items, mel frames): pass both from the same processor call."
                )
        merge = self.config.vision_config.spatial_merge_size**2
        placeholder_ids = {"image": self.config.image_token_id, "video": self.config.video_token_id}
        for modality, pixels, grid in (
            ("image", pixel_values, image_grid_thw),
            ("video", pixel_values_videos, video_grid_thw),
        ):
            pixels_name = "pixel_values" if modality == "image" else "pixel_values_videos"
            if pixels is None:
                continue
            if grid is None:
                raise ValueError(f"`{pixels_name}` were given without `{modality}_grid_thw`: pass both.")
            patches = int(grid.prod(-1).sum())
            if patches != pixels.shape[0]:
                raise ValueError(
                    f"`{modality}_grid_thw` {grid.tolist()} describes {patches} patches but `{pixels_name}` has "
                    f"{pixels.shape[0]}: pass both from the same processor call."
                )
            if input_ids is not None:
                placeholders = int((input_ids == placeholder_ids[modality]).sum())
                if placeholders != patches // merge:
                    raise ValueError(
                        f"`input_ids` hold {placeholders} {modality} placeholders but `{modality}_grid_thw` "
                        f"{grid.tolist()} gives {patches // merge} {modality} tokens: the prompt and the "
                        f"{modality}s come from different processor calls."
                    )
        if input_ids is None:
            return
        real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        sample, holds_video, holds_audio = media_runs(
            (input_ids == self.config.video_token_id) & real, (input_ids == self.config.audio_token_id) & real
        )
        # A mismatch gives wrong M-RoPE positions and skips compression, with no error from the parent model.
        silent = holds_video & ~holds_audio
        interleaved = holds_video & holds_audio
        if use_audio_in_video and bool(silent.any()):
            raise ValueError(
                f"use_audio_in_video=True, but sample {int(sample[silent][0])} has a video without interleaved audio "
                "tokens (a video with no audio track, or a prompt built without its audio). Pass "
                "use_audio_in_video=False for such videos, and put videos with and without their audio in separate "
                "calls (`pipeline('omni-qa')` does this for you)."
            )
        if not use_audio_in_video and bool(interleaved.any()):
            raise ValueError(
                f"use_audio_in_video={use_audio_in_video!r}, but sample {int(sample[interleaved][0])} interleaves a "
                "video with its audio (the processor was called with the video's audio). Pass "
                "use_audio_in_video=True, as to the processor."
            )

    def select_tokens(
        self,
        input_ids: torch.LongTensor,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        temporal_ids: torch.Tensor,
        ratios: KeepRatios,
    ) -> TokenSelection:
        """OmniSIFT's selection for one batch: STVP on the video tokens, then the selector (`self.compressor`) on the
        audio tokens. `forward` calls it (or `token_selector`) between the encoders and the language model.

        Args:
            input_ids (`torch.LongTensor` of shape `(B, L)`): the token ids (placeholders mark audio and video).
            inputs_embeds (`torch.Tensor` of shape `(B, L, D)`): the embeddings with the encoder outputs scattered in.
            attention_mask (`torch.Tensor` of shape `(B, L)`): 1 at real tokens, 0 at padding.
            temporal_ids (`torch.Tensor` of shape `(B, L)`): temporal M-RoPE ids (row 1 of the 4-row position ids).
            ratios ([`KeepRatios`]): the call's resolved ratios.

        Returns:
            [`TokenSelection`]: keep decisions for the video and audio tokens, the selector's gate, the layout.
        """
        real = attention_mask.bool()
        return select_tokens(
            self.compressor,
            inputs_embeds,
            (input_ids == self.config.video_token_id) & real,
            (input_ids == self.config.audio_token_id) & real,
            temporal_ids,
            ratios,
        )

    def _uncompressed_output(
        self, outputs, media_input_ids: torch.LongTensor | None, logits_to_keep: int | torch.Tensor
    ) -> OmniSiftCausalLMOutputWithPast:
        """The parent's output as this class's, with the media token counts (all kept) when `media_input_ids` is
        given."""
        # The parent computes every position's logits (it has no `logits_to_keep`): keep what was asked for.
        outputs.logits = outputs.logits[:, _logits_slice(logits_to_keep)]
        if media_input_ids is None:
            return OmniSiftCausalLMOutputWithPast(**outputs)
        num_video = (media_input_ids == self.config.video_token_id).sum(-1)
        num_audio = (media_input_ids == self.config.audio_token_id).sum(-1)
        counts = {
            "num_video_tokens": num_video,
            "num_kept_video_tokens": num_video.clone(),
            "num_audio_tokens": num_audio,
            "num_kept_audio_tokens": num_audio.clone(),
        }
        self.compression_stats = OmniSiftCausalLMOutputWithPast(**counts)
        return OmniSiftCausalLMOutputWithPast(**outputs, **counts)

    def _embed_multimodal(
        self,
        input_ids: torch.LongTensor,
        inputs_embeds: torch.Tensor | None,
        input_features: torch.Tensor | None,
        pixel_values: torch.Tensor | None,
        pixel_values_videos: torch.Tensor | None,
        image_grid_thw: torch.LongTensor | None,
        video_grid_thw: torch.LongTensor | None,
        feature_attention_mask: torch.Tensor | None,
        audio_feature_lengths: torch.LongTensor | None,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None,
        **kwargs,
    ) -> tuple[torch.Tensor, dict[str, BaseModelOutputWithPooling]]:
        """Token embeddings (`inputs_embeds` if given, as in the parent) with the encoders' outputs scattered in:
        `(B, L, D)`, and the image/video encoder outputs.

        Copied from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni.Qwen2_5OmniThinkerModel.forward
        (transformers 5.24.0), its stages 1-2 (embed, merge audio, image and video) before it computes positions and
        calls its language model, which OmniSIFT must not run on the full sequence. The image and video branches are
        folded into one loop. `tests/test_modeling.py` fails when that source changes and checks that both hand the
        decoder identical inputs.
        """
        if (pixel_values is not None or pixel_values_videos is not None) and mm_encoder_outputs is not None:
            raise ValueError(
                "You cannot specify both pixel_values/pixel_values_videos and mm_encoder_outputs at the same time"
            )
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        if input_features is not None:
            audio_embeds = self.model.get_audio_features(
                input_features, feature_attention_mask, audio_feature_lengths, return_dict=True, **kwargs
            ).last_hidden_state
            audio_embeds = audio_embeds.to(inputs_embeds.device, inputs_embeds.dtype)
            _, _, audio_mask = self.model.get_placeholder_mask(input_ids, inputs_embeds=inputs_embeds)
            inputs_embeds = inputs_embeds.masked_scatter(audio_mask, audio_embeds)

        mm_encoder_outputs = dict(mm_encoder_outputs or {})
        if mm_encoder_outputs.get("image") is None and pixel_values is not None:
            mm_encoder_outputs["image"] = self.model.get_image_features(
                pixel_values, image_grid_thw, return_dict=True, **kwargs
            )
        if mm_encoder_outputs.get("video") is None and pixel_values_videos is not None:
            mm_encoder_outputs["video"] = self.model.get_video_features(
                pixel_values_videos, video_grid_thw, return_dict=True, **kwargs
            )
        for modality in ("image", "video"):
            if mm_encoder_outputs.get(modality) is None:
                continue
            embeds = torch.cat(mm_encoder_outputs[modality].pooler_output, dim=0)
            embeds = embeds.to(inputs_embeds.device, inputs_embeds.dtype)
            features = {f"{modality}_features": embeds}
            masks = self.model.get_placeholder_mask(input_ids, inputs_embeds=inputs_embeds, **features)
            inputs_embeds = inputs_embeds.masked_scatter(masks[0] if modality == "image" else masks[1], embeds)
        return inputs_embeds, mm_encoder_outputs

    # -----------------------------------------------------------------------------------------------------------------
    # Generation
    # -----------------------------------------------------------------------------------------------------------------
    def generate(self, *args, **kwargs):
        r"""
        As [`GenerationMixin.generate`], with the arguments `keep_ratio`, `video_keep_ratio`, `audio_keep_ratio` and
        `token_selector` of [`~OmniSiftForConditionalGeneration.forward`] (they reach the prefill, where compression
        happens once). With `return_dict_in_generate=True` the output also carries the prefill's `num_video_tokens`,
        `num_kept_video_tokens`, `num_audio_tokens`, `num_kept_audio_tokens` (`(B,)`), `kept_token_index` and
        `kept_attention_mask`: the counts of this call, also when threads share the model.
        """
        # Overwritten -- refuse a static cache with compression (its shapes are fixed before the prefill shortens the
        # sequence) and return the kept counts with the call.
        self._check_cache_for_compression(kwargs)
        self.compression_stats = None
        outputs = super().generate(*args, **kwargs)
        stats = self.compression_stats
        if isinstance(outputs, ModelOutput) and stats is not None:
            for key, value in stats.items():
                outputs[key] = value
        return outputs

    def _check_cache_for_compression(self, generate_kwargs: dict) -> None:
        config = self.config
        ratios = resolve_keep_ratios(
            generate_kwargs.get("keep_ratio"),
            generate_kwargs.get("video_keep_ratio"),
            generate_kwargs.get("audio_keep_ratio"),
            config.keep_ratio,
            config.video_keep_ratio,
            config.audio_keep_ratio,
        )
        if ratios.is_identity:
            return
        generation_config = generate_kwargs.get("generation_config") or self.generation_config
        implementation = generate_kwargs.get("cache_implementation", generation_config.cache_implementation)
        cache = generate_kwargs.get("cache", generate_kwargs.get("past_key_values"))
        if implementation not in (None, "dynamic") or isinstance(cache, StaticCache):
            shown = implementation if implementation not in (None, "dynamic") else type(cache).__name__
            raise ValueError(
                f"cache_implementation={shown!r} cannot hold a compressed prefill: its shapes are fixed before "
                "compression shortens the sequence. Use the default dynamic cache, or keep_ratio=1.0 (no compression)."
            )

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs, is_encoder_decoder=False, num_new_tokens=1):
        # Overwritten -- after a compressed prefill the cache holds the shortened sequence: continue from its
        # attention mask and positions, not from the unpruned ones `generate` prepared.
        if outputs.get("kept_attention_mask") is not None and outputs.get("cache") is not None:
            mask = outputs["kept_attention_mask"]
            if model_kwargs.get("attention_mask") is not None or not bool(mask.all()):
                model_kwargs["attention_mask"] = mask
            model_kwargs["position_ids"] = outputs["kept_position_ids"]
        return super()._update_model_kwargs_for_generation(
            outputs, model_kwargs, is_encoder_decoder=is_encoder_decoder, num_new_tokens=num_new_tokens
        )


class OmniSiftTalkerForConditionalGeneration(Qwen2_5OmniTalkerForConditionalGeneration):
    r"""
    The Qwen2.5-Omni talker, prompted with given M-RoPE positions: [`OmniSiftOmniForConditionalGeneration`] hands it
    only the positions its thinker kept, whose ids cannot be recomputed from the kept token ids. Without
    `prompt_position_ids` it is exactly the stock talker (same weights, same checkpoint keys).
    """

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        thinker_reply_part: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        prompt_position_ids: torch.LongTensor | None = None,
        **kwargs,
    ):
        r"""
        Arguments of [`Qwen2_5OmniTalkerForConditionalGeneration.forward`], plus:

        prompt_position_ids (`torch.LongTensor` of shape `(3, B, S)`, *optional*):
            Temporal, height and width M-RoPE positions of the prompt (`inputs_embeds` at the prefill, `S` long),
            used in place of the positions the stock talker computes from `input_text_ids` and the media grids.
            `generate` hands it to every step: decode steps continue from its maximum over the attended prompt
            positions + 1.
        """
        # Overwritten -- take the prompt's positions as given (and add the codec pad/bos embeddings to its last two
        # rows at the prefill, which the parent does only when it computes the positions itself). Decode positions
        # are derived from them at each step, not from `self.rope_deltas`, so threads sharing the model cannot mix
        # them up.
        if prompt_position_ids is not None and position_ids is None:
            length = prompt_position_ids.shape[-1]
            if attention_mask is None:
                attended = torch.ones(
                    prompt_position_ids.shape[1:], dtype=torch.bool, device=prompt_position_ids.device
                )
            else:
                attended = attention_mask[:, :length].bool()
            highest = prompt_position_ids.masked_fill(~attended.unsqueeze(0), 0).amax(dim=(0, 2))  # (B,)
            past = 0 if cache is None else cache.get_seq_length()
            if past == 0 and inputs_embeds is not None:
                codec_ids = torch.tensor([self.codec_pad_token, self.codec_bos_token], device=inputs_embeds.device)
                codec_embeds = self.get_input_embeddings()(codec_ids).to(inputs_embeds.dtype)  # (2, D)
                inputs_embeds = torch.cat([inputs_embeds[:, :-2], inputs_embeds[:, -2:] + codec_embeds], dim=1)
                position_ids = prompt_position_ids
            else:
                steps = (inputs_embeds if inputs_embeds is not None else input_ids).shape[1]
                offsets = torch.arange(steps, device=highest.device)
                position_ids = (highest + 1 - length + past).unsqueeze(1) + offsets  # (B, steps)
                position_ids = position_ids.unsqueeze(0).expand(3, -1, -1)  # (3, B, steps)
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            thinker_reply_part=thinker_reply_part,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )


@dataclass
class OmniSiftOmniGenerateOutput(ModelOutput):
    r"""
    What [`OmniSiftOmniForConditionalGeneration.generate`] returns for a spoken reply with
    `return_dict_in_generate=True`: the reply, its waveforms and what the thinker's compression kept.

    sequences (`torch.LongTensor` of shape `(B, L + new_tokens)`):
        The prompt ids followed by the thinker's reply (as `generate` returns them for text).
    audio (`list[torch.FloatTensor]`):
        One mono 24 kHz waveform `(num_samples,)` per sample, each trimmed to its own length.
    audio_codes (`list[torch.LongTensor]`):
        The talker's codec codes of each sample (before token2wav), without the end token.
    talker_prompt_length (`int`):
        Length of the talker's prefill (`K + 2`: the kept prompt positions, the speaker's bos and the first reply
        token; `L + 2` without compression).
    num_video_tokens, num_kept_video_tokens, num_audio_tokens, num_kept_audio_tokens (`torch.LongTensor`, *optional*):
        The thinker's counts `(B,)`, as in [`OmniSiftCausalLMOutputWithPast`] (`None` without audio/video).
    kept_token_index (`torch.LongTensor` of shape `(B, K)`, *optional*):
        As in [`OmniSiftCausalLMOutputWithPast`]; `None` when nothing was compressed.
    """

    sequences: torch.LongTensor | None = None
    audio: list[torch.FloatTensor] | None = None
    audio_codes: list[torch.LongTensor] | None = None
    talker_prompt_length: int | None = None
    num_video_tokens: torch.LongTensor | None = None
    num_kept_video_tokens: torch.LongTensor | None = None
    num_audio_tokens: torch.LongTensor | None = None
    num_kept_audio_tokens: torch.LongTensor | None = None
    kept_token_index: torch.LongTensor | None = None


# Arguments of the full model's `generate` that only the thinker reads: its inputs, media and compression knobs. The
# stock model also hands the unprefixed ones to the talker, which refuses the media ones (video input with audio output
# fails there); here the talker gets its positions and mask from the thinker instead.
_THINKER_ONLY_KWARGS = frozenset(
    {
        "attention_mask",
        "input_features",
        "feature_attention_mask",
        "audio_feature_lengths",
        "pixel_values",
        "pixel_values_videos",
        "image_grid_thw",
        "video_grid_thw",
        "video_second_per_grid",
        "mm_encoder_outputs",
        "use_audio_in_video",
        "keep_ratio",
        "video_keep_ratio",
        "audio_keep_ratio",
        "token_selector",
        "return_dict_in_generate",
        "output_hidden_states",
    }
)
_GENERATION_MODES = {None: None, True: "audio", False: "text", "audio": "audio", "text": "text"}


class OmniSiftOmniForConditionalGeneration(Qwen2_5OmniForConditionalGeneration):
    r"""
    The full Qwen2.5-Omni (thinker, talker, token2wav) with OmniSIFT in its thinker: text and spoken replies, the
    talker prompted with the thinker's kept positions only, so its prefill and cache shrink as much as the thinker's.
    `self.thinker` is an [`OmniSiftForConditionalGeneration`]; `keep_ratio=1.0` is exactly Qwen2.5-Omni.

    Loads full Qwen2.5-Omni checkpoints (with their `spk_dict.pt`; the selector is then untrained) and its own.

    Example:

    ```python
    >>> from omnisift_hf import OmniSiftConfig, OmniSiftOmniConfig, OmniSiftOmniForConditionalGeneration

    >>> thinker = OmniSiftConfig(
    ...     text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
    ...                  "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 64,
    ...                  "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3]}},
    ...     vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2,
    ...                    "out_hidden_size": 32, "fullatt_block_indexes": [0]},
    ...     audio_config={"encoder_layers": 1, "d_model": 16, "encoder_attention_heads": 2,
    ...                   "encoder_ffn_dim": 32, "output_dim": 32},
    ...     selector_hidden_size=16, selector_num_heads=2, selector_mlp_size=8,
    ... )
    >>> config = OmniSiftOmniConfig(thinker_config=thinker, enable_audio_output=False)
    >>> model = OmniSiftOmniForConditionalGeneration(config)
    >>> type(model.thinker).__name__
    'OmniSiftForConditionalGeneration'
    ```
    """

    config_class = OmniSiftOmniConfig
    config: OmniSiftOmniConfig
    _no_split_modules = [
        "OmniSiftTalkerForConditionalGeneration",
        "Qwen2_5OmniToken2WavModel",
        "OmniSiftAudioSelector",
    ]

    def __init__(self, config: OmniSiftOmniConfig):
        # Overwritten -- the parent builds the stock thinker and talker; build OmniSIFT's, under the same attribute
        # names, so that Qwen2.5-Omni checkpoints load unchanged.
        Qwen2_5OmniPreTrainedModel.__init__(self, config)
        self.thinker = OmniSiftForConditionalGeneration(config.thinker_config)
        self.has_talker = config.enable_audio_output
        self.speaker_map = {}
        if config.enable_audio_output:
            self.enable_talker()
        self.post_init()

    def enable_talker(self) -> None:
        # Overwritten -- as the parent, with the talker that takes the thinker's kept positions.
        self.talker = OmniSiftTalkerForConditionalGeneration(self.config.talker_config)
        self.token2wav = Qwen2_5OmniToken2WavModel(self.config.token2wav_config)
        self.token2wav.float()
        self.has_talker = True

    @property
    def compression_stats(self) -> OmniSiftCausalLMOutputWithPast | None:
        """The thinker's [`~OmniSiftForConditionalGeneration.compression_stats`] (per thread)."""
        return self.thinker.compression_stats

    # -----------------------------------------------------------------------------------------------------------------
    # Loading and saving
    # -----------------------------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        r"""
        As [`Qwen2_5OmniForConditionalGeneration.from_pretrained`]: loads a full Qwen2.5-Omni checkpoint or an
        OmniSIFT one, and its speakers (`spk_dict.pt`). A checkpoint without `spk_dict.pt` loads too (text replies
        work); a spoken reply then raises until [`~Qwen2_5OmniForConditionalGeneration.load_speakers`] is called.
        """
        # Overwritten -- the parent fails to load a checkpoint without `spk_dict.pt`, even for text replies, and its
        # message names no file.
        hub_names = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")
        hub_kwargs = {name: kwargs[name] for name in hub_names if kwargs.get(name) is not None}
        model = super(Qwen2_5OmniForConditionalGeneration, cls).from_pretrained(
            pretrained_model_name_or_path, *model_args, **kwargs
        )
        speakers = cached_file(
            pretrained_model_name_or_path,
            SPEAKERS_NAME,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
            **hub_kwargs,
        )
        if speakers is not None:
            model.load_speakers(speakers)
        elif model.has_talker:
            logger.warning(
                f"{pretrained_model_name_or_path} has no {SPEAKERS_NAME}: text replies work, spoken replies raise "
                "until `model.load_speakers(path_to_spk_dict_pt)` is called."
            )
        return model

    def _adjust_missing_and_unexpected_keys(self, loading_info) -> None:
        # Overwritten -- as `OmniSiftForConditionalGeneration`'s: one warning for the selector a Qwen2.5-Omni
        # checkpoint does not have.
        _report_untrained_selector(loading_info, self.thinker.compressor, "thinker.compressor.")
        super()._adjust_missing_and_unexpected_keys(loading_info)

    def save_pretrained(self, save_directory, *args, processor=None, **kwargs) -> None:
        r"""
        As [`PreTrainedModel.save_pretrained`], plus the speakers (`spk_dict.pt`), the remote-code files with an
        `auto_map` for every Auto class, and:

        processor (`ProcessorMixin`, *optional*):
            The processor the model is used with, saved into the same directory.
        """
        # Overwritten -- as `OmniSiftForConditionalGeneration.save_pretrained`, and the parent saves no speakers, so a
        # saved directory could not speak once reloaded.
        _write_remote_code(self, save_directory)
        super().save_pretrained(save_directory, *args, **kwargs)
        if self.speaker_map and kwargs.get("is_main_process", True):
            torch.save(self.speaker_map, os.path.join(save_directory, SPEAKERS_NAME))
        _save_processor(self, save_directory, processor)

    def push_to_hub(self, repo_id: str, *args, processor=None, **kwargs) -> str:
        r"""
        As [`PreTrainedModel.push_to_hub`]; with `processor`, its files are uploaded in the same commit.
        """
        # Overwritten -- see `OmniSiftForConditionalGeneration.push_to_hub`.
        return _push_with_processor(super().push_to_hub, self, repo_id, *args, processor=processor, **kwargs)

    # -----------------------------------------------------------------------------------------------------------------
    # Generation
    # -----------------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor | None = None,
        speaker: str = "Chelsie",
        use_audio_in_video: bool = False,
        thinker_max_new_tokens: int = 1024,
        talker_max_new_tokens: int = 4096,
        talker_do_sample: bool = True,
        talker_top_k: int = 40,
        talker_top_p: float = 0.8,
        talker_temperature: float = 0.9,
        talker_eos_token_id: list[int] | None = None,
        talker_repetition_penalty: float = 1.05,
        **kwargs,
    ):
        r"""
        A text or spoken reply, as [`Qwen2_5OmniForConditionalGeneration.generate`], with OmniSIFT compression in the
        thinker and the talker prompted with the kept positions only.

        Arguments of [`Qwen2_5OmniForConditionalGeneration.generate`] (`thinker_*` / `talker_*` / `token2wav_*`
        prefixes included; `talker_eos_token_id` defaults to the talker config's codec pad and end tokens), plus:

        generation_mode (`str`, *optional*):
            `"audio"` (text and a spoken reply) or `"text"`. Defaults to `"audio"` when the talker is enabled, `"text"`
            otherwise.
        keep_ratio, video_keep_ratio, audio_keep_ratio, token_selector:
            As in [`OmniSiftForConditionalGeneration.forward`]; they reach the thinker only.
        return_dict_in_generate (`bool`, *optional*):
            For a spoken reply, return an [`OmniSiftOmniGenerateOutput`] (reply, waveforms, codec codes, the
            thinker's kept counts) instead of the `(sequences, waveform(s))` tuple. For a text reply, as the thinker's
            `generate`.

        Returns:
            `generation_mode="text"`: what [`OmniSiftForConditionalGeneration.generate`] returns. Otherwise
            `(sequences, waveform)` for one sample, `(sequences, [waveform, ...])` for a batch (mono, 24 kHz,
            float32), or an [`OmniSiftOmniGenerateOutput`] with `return_dict_in_generate=True`.
        """
        # Overwritten -- the parent prompts the talker with every position of the unpruned prompt (it cannot follow
        # a compressed thinker) and hands it the media inputs, which it refuses. Stages 1 and 3 follow the parent
        # (transformers 5.24.0); `tests/test_talker.py` checks both against it at keep_ratio=1.0.
        mode = _GENERATION_MODES.get(kwargs.pop("generation_mode", None), "invalid")
        if mode == "invalid":
            raise ValueError("generation_mode must be 'audio', 'text' or None (the talker decides).")
        if input_ids is None:
            raise ValueError("`input_ids` are required: pass the processor's output (`model.generate(**inputs)`).")
        speak = self.has_talker if mode is None else mode == "audio"
        if speak and not self.has_talker:
            raise ValueError(
                "generation_mode='audio' asks for a spoken reply, but this model's talker is disabled: call "
                "`model.enable_talker()` (and load its weights), or pass generation_mode='text'."
            )
        thinker_kwargs, talker_kwargs, token2wav_kwargs = self._split_generate_kwargs(
            use_audio_in_video,
            {
                "max_new_tokens": talker_max_new_tokens,
                "do_sample": talker_do_sample,
                "top_k": talker_top_k,
                "top_p": talker_top_p,
                "temperature": talker_temperature,
                "eos_token_id": talker_eos_token_id,
                "repetition_penalty": talker_repetition_penalty,
            },
            thinker_max_new_tokens,
            kwargs,
        )
        if not speak:
            return self.thinker.generate(input_ids=input_ids, **thinker_kwargs)
        speaker_params = self._speaker(speaker)
        return_dict = thinker_kwargs.pop("return_dict_in_generate", False)

        # 1. The thinker's reply, with the two hidden-state layers the talker reads: the input embeddings and the last.
        thinker_kwargs.update(output_hidden_states=[0, -1], return_dict_in_generate=True)
        thinker_result = self.thinker.generate(input_ids=input_ids, **thinker_kwargs)

        # 2. The talker's prompt: the kept positions, the speaker's bos, the first reply token.
        prompt = self._talker_prompt(input_ids, thinker_result, thinker_kwargs, speaker_params["bos_token"])
        talker_result = self.talker.generate(**prompt, suppress_tokens=[self.talker.codec_bos_token], **talker_kwargs)
        codes = talker_result[:, prompt["input_ids"].shape[1] :]  # (B, C)

        # 3. Codes to waveforms, one sample at a time, as the parent does.
        audio_codes, waveforms = self._speak(codes, talker_kwargs["eos_token_id"], speaker_params, token2wav_kwargs)
        if return_dict:
            stats = {key: thinker_result.get(key) for key in OmniSiftOmniGenerateOutput.__dataclass_fields__}
            stats.update(
                sequences=thinker_result.sequences,
                audio=waveforms,
                audio_codes=audio_codes,
                talker_prompt_length=prompt["input_ids"].shape[1],
            )
            return OmniSiftOmniGenerateOutput(**stats)
        return thinker_result.sequences, (waveforms[0] if input_ids.shape[0] == 1 else waveforms)

    def _split_generate_kwargs(
        self, use_audio_in_video: bool, talker_defaults: dict, thinker_max_new_tokens: int, kwargs: dict
    ) -> tuple[dict, dict, dict]:
        """The keyword arguments of the thinker's, the talker's and token2wav's calls: prefixed ones to their model,
        inputs/media/compression knobs to the thinker, anything else to thinker and talker (as in the parent)."""
        thinker_kwargs = {"max_new_tokens": thinker_max_new_tokens, "use_audio_in_video": use_audio_in_video}
        talker_kwargs = {**talker_defaults, "pad_token_id": self.talker.codec_pad_token} if self.has_talker else {}
        if talker_kwargs.get("eos_token_id") is None and self.has_talker:
            talker_kwargs["eos_token_id"] = [self.talker.codec_pad_token, self.talker.codec_eos_token]
        token2wav_kwargs, shared = {}, {}
        for key, value in kwargs.items():
            if key.startswith("thinker_"):
                thinker_kwargs[key[len("thinker_") :]] = value
            elif key.startswith("talker_"):
                talker_kwargs[key[len("talker_") :]] = value
            elif key.startswith("token2wav_"):
                token2wav_kwargs[key[len("token2wav_") :]] = value
            elif key in _THINKER_ONLY_KWARGS:
                thinker_kwargs[key] = value
            else:
                shared[key] = value
        for key, value in shared.items():
            thinker_kwargs.setdefault(key, value)
            talker_kwargs.setdefault(key, value)
        return thinker_kwargs, talker_kwargs, token2wav_kwargs

    def _speaker(self, speaker: str) -> dict:
        """The speaker's `cond`, `ref_mel` and `bos_token`, or a clear error."""
        if not self.speaker_map:
            raise ValueError(
                f"speaker={speaker!r}: this model has no speakers loaded (its checkpoint has no {SPEAKERS_NAME}). "
                f"Call `model.load_speakers(path)` with a Qwen2.5-Omni {SPEAKERS_NAME}, or pass "
                "generation_mode='text'."
            )
        if speaker not in self.speaker_map:
            raise ValueError(f"speaker={speaker!r} is not available; the speakers are {sorted(self.speaker_map)}.")
        return self.speaker_map[speaker]

    def _talker_prompt(
        self, input_ids: torch.LongTensor, thinker_result, thinker_kwargs: dict, text_bos_token: int
    ) -> dict[str, torch.Tensor]:
        """The talker's generate inputs (`input_ids`, `inputs_embeds`, `attention_mask`, `prompt_position_ids`,
        `thinker_reply_part`), each `K + 2` long: the thinker's kept positions, then the speaker's text bos and the
        first reply token."""
        batch_size, length = input_ids.shape
        device = input_ids.device
        embed = self.thinker.get_input_embeddings()
        attention_mask = thinker_kwargs.get("attention_mask")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        # Where each kept position came from: all of them without compression.
        index = thinker_result.get("kept_token_index")
        if index is None:
            index = torch.arange(length, device=device).expand(batch_size, -1)  # (B, K = L)
            kept_mask = attention_mask
        else:
            kept_mask = thinker_result.kept_attention_mask
        index = index.to(device)
        kept_ids = input_ids.gather(1, index)  # (B, K)

        # Positions: the unpruned prompt's, computed as the stock talker computes them, at the kept positions.
        reply_ids = thinker_result.sequences[:, length:].to(device)  # (B, R)
        text_bos = torch.full((batch_size, 1), text_bos_token, dtype=torch.long, device=device)
        audio_lengths = thinker_kwargs.get("feature_attention_mask")
        full_positions, _ = self.talker.get_rope_index(
            torch.cat([input_ids, text_bos, reply_ids[:, :1]], dim=1),
            thinker_kwargs.get("image_grid_thw"),
            thinker_kwargs.get("video_grid_thw"),
            torch.cat([attention_mask, attention_mask.new_ones(batch_size, 2)], dim=1),
            thinker_kwargs.get("use_audio_in_video", False),
            audio_lengths.sum(1) if audio_lengths is not None else None,
            thinker_kwargs.get("video_second_per_grid"),
        )  # (3, B, L + 2)
        tail = torch.arange(length, length + 2, device=device).expand(batch_size, -1)
        prompt_index = torch.cat([index, tail], dim=1)  # (B, K + 2)
        positions = full_positions.gather(2, prompt_index.unsqueeze(0).expand(3, -1, -1))  # (3, B, K + 2)

        # Embeddings: the thinker's last hidden state plus its input embedding, the latter zeroed at media tokens.
        prefill = thinker_result.hidden_states[0]
        token_embeds = prefill[0].to(device)  # (B, K, D)
        config = self.config.thinker_config
        media = torch.isin(
            kept_ids,
            torch.tensor([config.audio_token_id, config.image_token_id, config.video_token_id], device=device),
        )
        token_embeds = token_embeds.masked_fill(media.unsqueeze(-1), 0.0)
        # The reply stream: one row per generated token after the first (hidden state + input embedding).
        steps = thinker_result.hidden_states[1:]
        if not steps:
            raise ValueError(
                "The thinker's reply is a single token, too short for a spoken reply (the talker is prompted with its "
                "first token and reads the rest step by step): raise `thinker_max_new_tokens`."
            )
        reply_part = torch.cat([step[-1].to(device) + step[0].to(device) for step in steps], dim=1)  # (B, R - 1, D)
        inputs_embeds = torch.cat(
            [prefill[-1].to(device) + token_embeds, embed(text_bos).to(device), reply_part[:, :1]], dim=1
        )  # (B, K + 2, D)
        reply_part = self._reply_stream(reply_part, reply_ids, thinker_kwargs)

        codec = self.talker
        talker_ids = torch.cat(
            [
                torch.full_like(kept_ids, codec.codec_mask_token),
                torch.full((batch_size, 1), codec.codec_pad_token, dtype=torch.long, device=device),
                torch.full((batch_size, 1), codec.codec_bos_token, dtype=torch.long, device=device),
            ],
            dim=1,
        )
        return {
            "input_ids": talker_ids,
            "inputs_embeds": inputs_embeds,
            "attention_mask": torch.cat([kept_mask.to(device), kept_mask.new_ones(batch_size, 2).to(device)], dim=1),
            "prompt_position_ids": positions,
            "thinker_reply_part": reply_part,
        }

    def _reply_stream(
        self, reply_part: torch.Tensor, reply_ids: torch.LongTensor, thinker_kwargs: dict
    ) -> torch.Tensor:
        """What the talker reads at each of its steps: the reply tokens after the first `(B, R - 1, D)`, then the text
        eos and pad embeddings; in a batch, each row's eos right after its own last token and pads after it."""
        # As the parent's generate (transformers 5.24.0).
        batch_size, device = reply_ids.shape[0], reply_ids.device
        embed = self.thinker.get_input_embeddings()
        eos_embedding = embed(torch.full((batch_size, 1), self.talker.text_eos_token, device=device)).to(device)
        pad_embedding = embed(torch.full((batch_size, 1), self.talker.text_pad_token, device=device)).to(device)
        reply_part = torch.cat([reply_part[:, 1:], eos_embedding, pad_embedding], dim=1)
        eos_token_id = thinker_kwargs.get("eos_token_id", self.thinker.generation_config.eos_token_id)
        if eos_token_id is None:
            return reply_part
        is_eos = torch.isin(reply_ids, torch.as_tensor(eos_token_id, device=device).flatten())  # (B, R)
        generated = reply_ids.shape[1]
        first_eos = torch.where(is_eos, torch.arange(generated, device=device), generated).amin(dim=-1)
        first_eos = first_eos.clamp(min=1, max=generated - 1)
        steps = torch.arange(reply_part.shape[1], device=device).unsqueeze(0)  # (1, R + 1)
        reply_part = torch.where((steps >= first_eos.unsqueeze(1)).unsqueeze(-1), pad_embedding, reply_part)
        return torch.where((steps == first_eos.unsqueeze(1) - 1).unsqueeze(-1), eos_embedding, reply_part)

    def _speak(
        self, codes: torch.LongTensor, eos_token_id, speaker_params: dict, token2wav_kwargs: dict
    ) -> tuple[list[torch.LongTensor], list[torch.FloatTensor]]:
        """Each sample's codes up to its first end token `(C_b,)` and its waveform `(num_samples,)` (token2wav in
        float32, one sample at a time, drawing its noise from the global random state in turn, as the parent does;
        `pipeline("omni-qa")` restarts each sample from the batch's state: a batch speaks as separate calls)."""
        eos = torch.isin(codes, torch.as_tensor(eos_token_id, device=codes.device).flatten())  # (B, C)
        positions = torch.arange(codes.shape[1], device=codes.device)
        lengths = torch.where(eos, positions, codes.shape[1]).amin(dim=-1).tolist()
        if self.token2wav.dtype != torch.float:
            self.token2wav.float()
        conditioning = speaker_params["cond"].to(codes.device).float().expand(1, -1)  # (1, D_speaker)
        reference_mel = speaker_params["ref_mel"].to(codes.device).float().expand(1, -1, -1)  # (1, T_mel, mel_bins)
        sample_codes, waveforms = [], []
        for row, length in enumerate(lengths):
            sample_codes.append(codes[row, :length])
            waveform = self.token2wav(
                codes[row : row + 1, :length],
                conditioning=conditioning,
                reference_mel=reference_mel,
                **token2wav_kwargs,
            )
            waveforms.append(waveform.reshape(-1).float())
        return sample_codes, waveforms


def remote_code_auto_map(model_class: type = OmniSiftForConditionalGeneration) -> dict[str, str]:
    """The `auto_map` of a saved directory of `model_class` (the thinker or the full model): `AutoConfig` and every
    Auto class it registers with, each pointing at a class of the remote-code files saved next to the weights
    (`configuration_omnisift.py`, `modeling_omnisift.py`)."""
    model_reference = class_reference(model_class)
    full_model = model_class is OmniSiftOmniForConditionalGeneration
    auto_classes = OMNI_AUTO_MODEL_CLASSES if full_model else AUTO_MODEL_CLASSES
    return {
        "AutoConfig": class_reference(model_class.config_class),
        **dict.fromkeys(auto_classes, model_reference),
    }


def _keep_policy(selection: TokenSelection, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The attention-policy estimator's sequence and weights: `keep` `(B, L)` plus every scored audio token, and the
    keep decision of each position `(B, L)`: `hard + z - stopgrad(z)` at scored audio tokens (value 0 or 1, gradient
    of the selector's logit `z`), 1 elsewhere."""
    batch_size, seq_len = keep.shape
    rows = selection.layout.audio_index[selection.gated_audio]  # (n,) into the flattened batch
    logits = selection.audio_logits
    hard = selection.audio_keep[selection.gated_audio].to(logits.dtype)
    decision = hard + logits - logits.detach()  # (n,)
    policy = torch.ones(batch_size * seq_len, dtype=logits.dtype, device=logits.device).index_copy(0, rows, decision)
    keep = keep.reshape(-1).index_fill(0, rows, True).view(batch_size, seq_len)
    return keep, policy.view(batch_size, seq_len)


def _report_untrained_selector(loading_info, selector: OmniSiftAudioSelector, prefix: str) -> None:
    """When a checkpoint has none of the selector's tensors (`prefix*`), drop them from the missing keys and warn
    once that it is untrained."""
    selector_keys = {f"{prefix}{name}" for name in selector.state_dict()}
    if selector_keys <= set(loading_info.missing_keys):
        loading_info.missing_keys = set(loading_info.missing_keys) - selector_keys
        logger.warning(  # once per load, not once per process: every such model has an untrained selector
            f"The OmniSIFT audio selector (`{prefix}*`) is not in this checkpoint and was randomly initialised: "
            "it is untrained. Load an OmniSIFT checkpoint, train the selector, or use keep_ratio=1.0 (no "
            "compression) or audio_keep_ratio=1.0 (video pruning only, which has no parameters)."
        )


def _write_remote_code(model, save_directory) -> None:
    """Write the remote-code bundle into `save_directory` and list it in `model.config.auto_map`."""
    model.config.auto_map = {**(getattr(model.config, "auto_map", None) or {}), **remote_code_auto_map(type(model))}
    os.makedirs(save_directory, exist_ok=True)
    write_remote_code(save_directory, __file__)


def _save_processor(model, save_directory, processor) -> None:
    """Save `processor` (or the one `push_to_hub` handed over) next to the model's files."""
    processor = processor if processor is not None else getattr(model, "_processor_to_push", None)
    if processor is not None:
        processor.save_pretrained(save_directory)


def _push_with_processor(push_to_hub, model, repo_id: str, *args, processor=None, **kwargs) -> str:
    """Run the parent's `push_to_hub` with `processor` handed to the `save_pretrained` it calls."""
    model._processor_to_push = processor
    try:
        return push_to_hub(repo_id, *args, **kwargs)
    finally:
        model._processor_to_push = None


# What `compression_stats` keeps of a compressed forward's output besides the counts: where the kept tokens came from
# and their attention mask (what a spoken reply's talker is prompted with).
_STATS_FIELDS = ("kept_token_index", "kept_attention_mask")


def _logits_slice(logits_to_keep: int | torch.Tensor):
    """The positions whose logits are computed: the last `logits_to_keep` (0: all) or the given indices."""
    return slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep


def _warn_if_retention_exceeds(keep_ratio: float, counts: dict[str, torch.LongTensor]) -> None:
    """Warn once when a sample kept more than twice the requested share of its audio/video tokens: the request is
    below what the selection can reach (one video token per frame; the audio of windows the selector cannot score)."""
    media = counts["num_video_tokens"] + counts["num_audio_tokens"]
    kept = counts["num_kept_video_tokens"] + counts["num_kept_audio_tokens"]
    exceeded = (media > 0) & (kept > 2 * keep_ratio * media)
    if bool(exceeded.any()):
        row = int(torch.nonzero(exceeded)[0])
        logger.warning_once(
            f"keep_ratio={keep_ratio} is below what OmniSIFT can keep of this input: sample {row} kept "
            f"{int(kept[row])} of {int(media[row])} audio/video tokens ({float(kept[row]) / float(media[row]):.3f}). "
            "At least one video token of each frame stays, and audio in a window without kept video stays. Ask for a "
            "larger keep_ratio, or set video_keep_ratio / audio_keep_ratio explicitly."
        )


def _check_selection(selection) -> None:
    """A `token_selector`'s result must be a `TokenSelection` whose decisions cover its layout's tokens."""
    if not isinstance(selection, TokenSelection):
        raise TypeError(
            f"token_selector returned a {type(selection).__name__}; it must return a TokenSelection (for example "
            "`dataclasses.replace(model.select_tokens(*args), ...)`)."
        )
    layout = selection.layout
    for name, keep, expected in (
        ("video_keep", selection.video_keep, layout.video_index.shape),
        ("audio_keep", selection.audio_keep, layout.audio_index.shape),
    ):
        if keep.dtype != torch.bool or keep.shape != expected:
            raise ValueError(
                f"token_selector returned {name} of dtype {keep.dtype} and shape {tuple(keep.shape)}; it must be a "
                f"bool tensor of shape {tuple(expected)} (one decision per token of the layout)."
            )
