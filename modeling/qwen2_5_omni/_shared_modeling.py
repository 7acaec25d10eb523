# Generated from the omnisift_hf package by `python -m omnisift_hf.tools.bundle`: do not edit this copy; edit
# the module of the same name in src/omnisift_hf/ and regenerate.
"""What every backbone's OmniSIFT thinker adds to its transformers thinker: token compression between the encoders
and the language model (`OmniSiftThinkerMixin`), the output fields that report it, and the loading, saving and
generation plumbing around it.

A backbone's thinker is `class X(OmniSiftThinkerMixin, <Backbone>ThinkerForConditionalGeneration)`; its own module adds
the backbone's differences (for Qwen3-Omni, the deepstack features and the MoE router outputs) through the two hooks
`_decoder_media_inputs` and `_router_outputs`.
"""

import os
import sys
import threading
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass

import torch
from transformers.cache_utils import StaticCache
from transformers.conversion_mapping import get_model_conversion_mapping
from transformers.core_model_loading import WeightConverter, WeightRenaming, dot_natural_key, rename_source_key
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import logging
from transformers.utils.generic import ModelOutput

from .attention_policy import KEEP_POLICY_ATTENTION
from .compression import KeepRatios, KeptSequence, gather_kept_tokens, media_runs, resolve_keep_ratios
from .remote_code import class_reference, write_remote_code
from .selector import OmniSiftAudioSelector, TokenSelection, select_tokens

logger = logging.get_logger(__name__)

__all__ = [
    "OmniSiftKeptTokensOutput",
    "OmniSiftThinkerMixin",
    "TokenSelector",
    "push_with_processor",
    "remote_code_auto_map",
    "report_untrained_selector",
    "save_processor",
    "write_model_remote_code",
]

# What `forward(token_selector=...)` accepts: a callable with the arguments of `OmniSiftThinkerMixin.select_tokens`
# that returns a `TokenSelection`.
TokenSelector = Callable[[torch.LongTensor, torch.Tensor, torch.Tensor, torch.Tensor, KeepRatios], TokenSelection]


@dataclass(repr=False, eq=False)
class OmniSiftKeptTokensOutput:
    r"""
    The fields an OmniSIFT thinker's output adds to its backbone's (placed first among the bases of the output class,
    so that they come after the backbone's fields).

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
    kept_position_ids (`torch.Tensor` of shape `(4, batch_size, kept_length)`, *optional*):
        Text positions (row 0) and M-RoPE temporal/height/width positions (rows 1-3) of the shortened sequence (float
        where the backbone's M-RoPE ids are, as Qwen3-Omni's).
    """

    num_video_tokens: torch.LongTensor | None = None
    num_kept_video_tokens: torch.LongTensor | None = None
    num_audio_tokens: torch.LongTensor | None = None
    num_kept_audio_tokens: torch.LongTensor | None = None
    kept_token_index: torch.LongTensor | None = None
    kept_attention_mask: torch.LongTensor | None = None
    kept_position_ids: torch.Tensor | None = None


class OmniSiftThinkerMixin:
    r"""
    OmniSIFT in a transformers omni thinker (text output): after the audio and vision encoders and before the language
    model, spatio-temporal video pruning (STVP) drops redundant video tokens and the vision-guided audio selector
    (VGAS, `self.compressor`, sized to the text hidden size) drops audio tokens. Kept tokens keep their M-RoPE
    positions. `keep_ratio=1.0` is exactly the backbone's thinker.

    A backbone's class sets `config_class`, `auto_model_classes` (the Auto classes it is registered with; a saved
    directory lists each of them in `auto_map`) and `_output_class` (its output, with the fields of
    [`OmniSiftKeptTokensOutput`]), and defines `forward` (the parent's explicit signature plus the knobs, which
    `generate()` needs to see) as a call of `_omnisift_forward`.
    """

    auto_model_classes: tuple[str, ...] = ()
    _output_class: type[ModelOutput]
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

    def __init__(self, config):
        super().__init__(config)
        # The selector. Its attribute name is the published checkpoint's (`thinker.compressor.*`).
        self.compressor = build_selector(config)
        # What the latest compressed forward kept, per thread (see `compression_stats`).
        self._compression_stats: dict[int, ModelOutput] = {}
        self.post_init()

    @property
    def compression_stats(self) -> ModelOutput | None:
        """The counts (`num_*`), `kept_token_index` and `kept_attention_mask` of the latest forward with audio/video
        run by the calling thread (`generate()`'s prefill), or `None`. Per thread, so threads sharing a model read
        their own; the same counts come back with each call in `forward`'s output and in
        `generate(..., return_dict_in_generate=True)`'s.
        """
        return self._compression_stats.get(threading.get_ident())

    @compression_stats.setter
    def compression_stats(self, value: ModelOutput | None) -> None:
        if value is None:
            self._compression_stats.pop(threading.get_ident(), None)
        else:
            self._compression_stats[threading.get_ident()] = value

    # -----------------------------------------------------------------------------------------------------------------
    # Loading
    # -----------------------------------------------------------------------------------------------------------------
    def _adjust_missing_and_unexpected_keys(self, loading_info) -> None:
        # Overwritten -- a checkpoint of the backbone has no selector: say so once, clearly, instead of listing its 18
        # tensors as missing. A checkpoint with only part of the selector stays reported as missing.
        report_untrained_selector(loading_info, self.compressor, "compressor.")
        super()._adjust_missing_and_unexpected_keys(loading_info)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # Overwritten -- `save_pretrained` writes the backbone's original key layout (`model.layers.*`, `visual.*`,
        # `audio_tower.*`; Qwen3-Omni's experts one by one) and `Trainer.train(resume_from_checkpoint=...)` reads it
        # back with a plain `load_state_dict` (transformers 5.24, huggingface/transformers#43701): without converting
        # it as `from_pretrained` does, resuming would keep the initial weights of everything but the selector, with
        # only a warning.
        if not self.state_dict().keys() >= state_dict.keys():
            state_dict = _state_dict_in_model_layout(self, state_dict)
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
        write_model_remote_code(self, save_directory)
        super().save_pretrained(save_directory, *args, **kwargs)
        save_processor(self, save_directory, processor)

    def push_to_hub(self, repo_id: str, *args, processor=None, **kwargs) -> str:
        r"""
        As [`PreTrainedModel.push_to_hub`]; with `processor`, its files are uploaded in the same commit.
        """
        # Overwritten -- transformers' push_to_hub calls `save_pretrained(tmp_dir, max_shard_size=...)` without a way
        # to pass more arguments: hand the processor over for the duration of the call.
        return push_with_processor(super().push_to_hub, self, repo_id, *args, processor=processor, **kwargs)

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
    def _omnisift_forward(
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
    ) -> ModelOutput:
        r"""
        Arguments of the backbone thinker's `forward` (e.g. [`Qwen2_5OmniThinkerForConditionalGeneration.forward`]),
        plus:

        keep_ratio (`float`, *optional*):
            Fraction of the audio + video tokens to keep for this call (overrides `config.keep_ratio` and the
            configured per-modality ratios). `1.0` runs the unmodified thinker.
        video_keep_ratio (`float`, *optional*):
            Fraction of the video tokens kept by STVP for this call.
        audio_keep_ratio (`float`, *optional*):
            Fraction of the audio tokens (in windows that have video) kept by VGAS for this call.
        token_selector (`Callable`, *optional*):
            Replaces [`~OmniSiftThinkerMixin.select_tokens`] for this call: called with the same arguments, it returns
            the [`TokenSelection`] the call applies. Baselines, timers and diagnostics wrap or replace the selection
            this way (`generate()` passes it to the prefill). Default: `self.select_tokens`.
        logits_to_keep (`int` or `torch.Tensor`, *optional*, defaults to 0):
            As in transformers' causal LMs: compute logits only for the last `logits_to_keep` positions (0: all), or
            for the given indices. `generate()` passes 1, so the prefill of a long clip never materialises
            `(B, K, vocab)` logits.

        Returns the backbone's output with the fields of [`OmniSiftKeptTokensOutput`]: `logits` (and `labels` for the
        loss) are aligned with the shortened sequence described by `kept_token_index` / `kept_attention_mask`.
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
            # The off switch: nothing to compress, so this is exactly the backbone's thinker.
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
        keep, policy, encoded_embeds = selection.keep_mask(attention_mask), None, inputs_embeds
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
            **self._decoder_media_inputs(input_ids, mm_encoder_outputs, keep, kept),
            **kwargs,
        )
        logits = self.lm_head(decoder_outputs.last_hidden_state[:, _logits_slice(logits_to_keep)])
        loss = None
        if kept.labels is not None:
            loss = self.loss_function(
                logits=logits, labels=kept.labels, vocab_size=config.get_text_config().vocab_size, **kwargs
            )
        if loss is not None and self.training:
            # A weight reassigned after validation (NaN, negative) must fail, not silently switch the term off.
            config.validate_selector_distillation_weight()
        if loss is not None and self.training and config.selector_distillation_weight > 0:
            teacher_logits = self._teacher_logits(
                input_ids, encoded_embeds, attention_mask, mrope_position_ids, labels, mm_encoder_outputs, **kwargs
            )
            loss = loss + config.selector_distillation_weight * distillation_loss(logits, kept.labels, *teacher_logits)
        loss, router_outputs = self._router_outputs(decoder_outputs, kept.attention_mask, loss)

        # 6. Report what was kept.
        counts = selection.count_tokens(input_ids.shape[0])
        if token_selector is None and ratios.video is None and ratios.audio is None:
            _warn_if_retention_exceeds(ratios.keep, counts)
        output = self._output_class(
            loss=loss,
            logits=logits,
            cache=decoder_outputs.cache,
            hidden_states=decoder_outputs.hidden_states,
            attentions=decoder_outputs.attentions,
            image_outputs=mm_encoder_outputs.get("image"),
            kept_token_index=kept.index,
            kept_attention_mask=kept.attention_mask,
            kept_position_ids=kept.position_ids,
            **router_outputs,
            **counts,
        )
        self.compression_stats = self._output_class(
            **{key: output[key] for key in output if key.startswith("num_") or key in _STATS_FIELDS}
        )
        return output

    @torch.no_grad()
    def _teacher_logits(
        self,
        input_ids: torch.LongTensor,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        mrope_position_ids: torch.Tensor,
        labels: torch.LongTensor,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling],
        **kwargs,
    ) -> tuple[torch.Tensor, torch.LongTensor]:
        """The distillation teacher: the same decoder at keep 1.0 on the same encoder outputs (every real token, plain
        attention, no gradient). Returns its logits `(B, L', V)` and labels `(B, L')` (the input re-padded on the
        left, as `gather_kept_tokens` lays out any kept sequence)."""
        keep = attention_mask.bool()
        full = gather_kept_tokens(keep, inputs_embeds.detach(), mrope_position_ids, labels)
        kwargs.pop("keep_policy", None)
        outputs = self.model.language_model(
            attention_mask=full.attention_mask,
            position_ids=full.position_ids,
            inputs_embeds=full.inputs_embeds,
            use_cache=False,
            return_dict=True,
            **self._decoder_media_inputs(input_ids, mm_encoder_outputs, keep, full),
            **kwargs,
        )
        return self.lm_head(outputs.last_hidden_state), full.labels

    def _decoder_media_inputs(
        self,
        input_ids: torch.LongTensor,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling],
        keep: torch.Tensor,
        kept: KeptSequence,
    ) -> dict[str, object]:
        """Media inputs the backbone's language model reads besides the embeddings, for the shortened sequence
        (Qwen3-Omni: the deepstack features of the kept visual tokens). None by default.

        Args:
            input_ids (`torch.LongTensor` of shape `(B, L)`): the token ids.
            mm_encoder_outputs (`dict`): the image/video encoder outputs of `_embed_multimodal`.
            keep (`torch.BoolTensor` of shape `(B, L)`): the positions that stay.
            kept ([`KeptSequence`]): the shortened sequence (`index` `(B, K)`, `attention_mask` `(B, K)`).
        """
        return {}

    def _router_outputs(
        self, decoder_outputs: ModelOutput, attention_mask: torch.Tensor, loss: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, dict[str, object]]:
        """The loss with the backbone's auxiliary terms added, and the output fields that carry them (a mixture of
        experts: `aux_loss`, `router_logits`), for the shortened sequence (`attention_mask` `(B, K)`). None by
        default: `loss` as it is."""
        return loss, {}

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
            temporal_ids (`torch.Tensor` of shape `(B, L)`): temporal M-RoPE ids (row 1 of the 4-row position ids;
                float for Qwen3-Omni).
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
    ) -> ModelOutput:
        """The parent's output as this class's, with the media token counts (all kept) when `media_input_ids` is
        given."""
        # The parent computes every position's logits (it has no `logits_to_keep`): keep what was asked for.
        outputs.logits = outputs.logits[:, _logits_slice(logits_to_keep)]
        if media_input_ids is None:
            return self._output_class(**outputs)
        num_video = (media_input_ids == self.config.video_token_id).sum(-1)
        num_audio = (media_input_ids == self.config.audio_token_id).sum(-1)
        counts = {
            "num_video_tokens": num_video,
            "num_kept_video_tokens": num_video.clone(),
            "num_audio_tokens": num_audio,
            "num_kept_audio_tokens": num_audio.clone(),
        }
        self.compression_stats = self._output_class(**counts)
        return self._output_class(**outputs, **counts)

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
        calls its language model, which OmniSIFT must not run on the full sequence; the same stages of
        `Qwen3OmniMoeThinkerModel.forward` are the same code (their deepstack part is `_decoder_media_inputs` of the
        Qwen3-Omni thinker). The image and video branches are folded into one loop. `tests/test_selection_hook.py`
        and `tests/test_qwen3_omni.py` fail when those sources change, and `tests/test_modeling.py` and
        `tests/test_qwen3_omni.py` check that both hand the decoder identical inputs.
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
        `token_selector` of `forward` (they reach the prefill, where compression happens once). With
        `return_dict_in_generate=True` the output also carries the prefill's `num_video_tokens`,
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


def remote_code_auto_map(model_class: type) -> dict[str, str]:
    """The `auto_map` of a saved directory of `model_class`: `AutoConfig` and every Auto class it registers with
    (`model_class.auto_model_classes`), each pointing at a class of the remote-code files saved next to the weights."""
    model_reference = class_reference(model_class)
    return {
        "AutoConfig": class_reference(model_class.config_class),
        **dict.fromkeys(model_class.auto_model_classes, model_reference),
    }


def write_model_remote_code(model, save_directory) -> None:
    """Write the remote-code bundle of `model`'s module into `save_directory`; list it in `model.config.auto_map`."""
    model.config.auto_map = {**(getattr(model.config, "auto_map", None) or {}), **remote_code_auto_map(type(model))}
    os.makedirs(save_directory, exist_ok=True)
    write_remote_code(save_directory, sys.modules[type(model).__module__].__file__)


def _state_dict_in_model_layout(model, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state_dict` in the key layout of `model.state_dict()`: renamed and converted by the transforms
    `from_pretrained` applies to `model` (its registered checkpoint conversion mapping and those of its stock
    submodules, e.g. the fusion of each expert's projections of a Qwen3-Omni decoder)."""
    transforms = get_model_conversion_mapping(model, add_legacy=False)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    converter_of_pattern = {pattern: c for c in converters for pattern in c.source_patterns}
    model_state = model.state_dict()
    converted, pending = {}, {}
    for key, tensor in sorted(state_dict.items(), key=lambda item: dot_natural_key(item[0])):
        name, pattern = rename_source_key(key, renamings, converters, model.base_model_prefix, model_state)
        if pattern is None:
            converted[name] = tensor
        else:  # one converter per target collects all its source tensors (e.g. the experts of a layer)
            pending.setdefault(name, deepcopy(converter_of_pattern[pattern])).add_tensor(name, key, pattern, tensor)
    for name, converter in pending.items():
        for target, value in converter.convert(name, model=model, config=model.config).items():
            converted[target] = value[0] if isinstance(value, list) else value
    return converted


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


def build_selector(config) -> OmniSiftAudioSelector:
    """The audio selector an OmniSIFT thinker of `config` holds (`compressor`), drawn from torch's random state."""
    return OmniSiftAudioSelector(
        hidden_size=config.text_config.hidden_size,
        selector_hidden_size=config.selector_hidden_size,
        num_heads=config.selector_num_heads,
        mlp_size=config.selector_mlp_size,
    )


def distillation_loss(
    logits: torch.Tensor,
    labels: torch.LongTensor,
    teacher_logits: torch.Tensor,
    teacher_labels: torch.LongTensor,
) -> torch.Tensor:
    """`KL(teacher || student)` of the next-token distributions at the answer tokens, averaged over them.

    The answer tokens are the positions whose next label is not -100 (as the causal-LM loss shifts them). Text is never
    dropped, so each sample has the same answer tokens, in the same order, in the compressed sequence and in the
    teacher's.

    Args:
        logits (`torch.Tensor` of shape `(B, K, V)`), labels (`torch.LongTensor` of shape `(B, K)`): the student's,
            on the shortened sequence.
        teacher_logits (`torch.Tensor` of shape `(B, L, V)`), teacher_labels (`torch.LongTensor` of shape `(B, L)`):
            the teacher's, on the whole sequence.
    """
    if logits.shape[:2] != labels.shape:
        raise ValueError(
            f"the distillation term needs logits at every position, got logits of shape {tuple(logits.shape)} for "
            f"labels of shape {tuple(labels.shape)}: leave `logits_to_keep` at 0 while training with "
            "`selector_distillation_weight` > 0."
        )
    answers = labels[:, 1:] != -100
    teacher_answers = teacher_labels[:, 1:] != -100
    if not torch.equal(answers.sum(-1), teacher_answers.sum(-1)):
        raise RuntimeError("the compressed and the teacher's sequence hold different answer tokens")  # a bug
    if not answers.any():
        return logits.sum() * 0.0
    dtype = torch.promote_types(logits.dtype, torch.float32)
    student = torch.log_softmax(logits[:, :-1][answers].to(dtype), dim=-1)  # (N, V)
    teacher = torch.log_softmax(teacher_logits[:, :-1][teacher_answers].to(dtype), dim=-1)
    return torch.nn.functional.kl_div(student, teacher, reduction="batchmean", log_target=True).to(logits.dtype)


def report_untrained_selector(loading_info, selector: OmniSiftAudioSelector, prefix: str) -> None:
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


def save_processor(model, save_directory, processor) -> None:
    """Save `processor` (or the one `push_to_hub` handed over) next to the model's files."""
    processor = processor if processor is not None else getattr(model, "_processor_to_push", None)
    if processor is not None:
        processor.save_pretrained(save_directory)


def push_with_processor(push_to_hub, model, repo_id: str, *args, processor=None, **kwargs) -> str:
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
