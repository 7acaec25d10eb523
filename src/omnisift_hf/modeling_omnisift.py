"""OmniSIFT for Qwen2.5-Omni: the thinker with token compression between its encoders and its language model."""

from dataclasses import dataclass

import torch
from torch import nn
from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping
from transformers.core_model_loading import WeightConverter, rename_source_key
from transformers.modeling_outputs import BaseModelOutputWithPooling, MultimodalCausalLMOutputWithPast
from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import Qwen2_5OmniThinkerForConditionalGeneration
from transformers.utils import logging
from transformers.utils.generic import can_return_tuple

from .compression import (
    KeepRatios,
    MediaLayout,
    compact_kept_tokens,
    derive_keep_ratios,
    media_layout,
    resolve_keep_ratios,
    spatio_temporal_prune,
    top_audio_per_window,
)
from .configuration_omnisift import OmniSiftConfig, check_keep_ratio

logger = logging.get_logger(__name__)

__all__ = [
    "AUTO_MODEL_CLASSES",
    "OmniSiftAudioSelector",
    "OmniSiftCausalLMOutputWithPast",
    "OmniSiftForConditionalGeneration",
    "remote_code_auto_map",
]

# The Auto classes that resolve the `omnisift` model type (see the registration in `__init__.py`). A saved directory
# lists each of them in `auto_map`, so that each also loads it with `trust_remote_code=True`.
AUTO_MODEL_CLASSES = ("AutoModel", "AutoModelForImageTextToText", "AutoModelForMultimodalLM")

# Qwen2.5-Omni checkpoints store the thinker under `thinker.` (and its decoder under `thinker.model.`); transformers
# renames those keys only for classes it knows or that are registered. Without this line every decoder weight would be
# silently re-initialised. The compressor lives at the top level (`compressor.*`), outside `model.`, so the stock
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
    compressed_attention_mask (`torch.LongTensor` of shape `(batch_size, kept_length)`, *optional*):
        Attention mask of the shortened sequence (what `logits` are aligned with).
    compressed_position_ids (`torch.LongTensor` of shape `(4, batch_size, kept_length)`, *optional*):
        Text positions (row 0) and M-RoPE temporal/height/width positions (rows 1-3) of the shortened sequence.
    """

    num_video_tokens: torch.LongTensor | None = None
    num_kept_video_tokens: torch.LongTensor | None = None
    num_audio_tokens: torch.LongTensor | None = None
    num_kept_audio_tokens: torch.LongTensor | None = None
    kept_token_index: torch.LongTensor | None = None
    compressed_attention_mask: torch.LongTensor | None = None
    compressed_position_ids: torch.LongTensor | None = None


class OmniSiftAudioSelector(nn.Module):
    """VGAS, the vision-guided audio selector: scores each audio token of a time window by cross-attending to the
    window's kept video tokens. 4,856,321 parameters at hidden size 3584 (Qwen2.5-Omni-7B).

    `a = LN(W_a audio)`, `v = LN(W_v video)`, `x = LN(MHA(q=a, k=v, v=v) + a)`, `s = sigmoid(MLP(x))`.
    Parameter names follow the published OmniSIFT checkpoint (`thinker.compressor.*`).
    """

    def __init__(self, hidden_size: int, selector_hidden_size: int, num_heads: int, mlp_size: int):
        super().__init__()
        self.a_proj = nn.Linear(hidden_size, selector_hidden_size)
        self.v_proj = nn.Linear(hidden_size, selector_hidden_size)
        self.a_norm = nn.LayerNorm(selector_hidden_size)
        self.v_norm = nn.LayerNorm(selector_hidden_size)
        self.cross_attn = nn.MultiheadAttention(selector_hidden_size, num_heads, batch_first=True)
        self.post_attn_norm = nn.LayerNorm(selector_hidden_size)
        self.score_head = nn.Sequential(nn.Linear(selector_hidden_size, mlp_size), nn.SiLU(), nn.Linear(mlp_size, 1))

    def forward(
        self, audio: torch.Tensor, video: torch.Tensor, video_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """
        Args:
            audio (`torch.Tensor` of shape `(W, A, D)`): audio tokens of `W` windows (padded to `A`).
            video (`torch.Tensor` of shape `(W, V, D)`): kept video tokens of the same windows (padded to `V`).
            video_padding_mask (`torch.BoolTensor` of shape `(W, V)`, *optional*): True at video padding. Every
                window needs at least one real video token.

        Returns:
            `torch.Tensor` of shape `(W, A)`: keep scores in (0, 1). Rows at audio padding are meaningless.
        """
        a = self.a_norm(self.a_proj(audio))  # (W, A, d)
        v = self.v_norm(self.v_proj(video))  # (W, V, d)
        attended, _ = self.cross_attn(a, v, v, key_padding_mask=video_padding_mask, need_weights=False)
        x = self.post_attn_norm(attended + a)
        return torch.sigmoid(self.score_head(x)).squeeze(-1)


@dataclass
class _Selection:
    """What one compressed forward kept: the gated embeddings and per-token keep decisions."""

    inputs_embeds: torch.Tensor  # (B, L, D), audio gated by the straight-through estimator
    keep: torch.Tensor  # (B, L) bool, False at padding and dropped tokens
    layout: MediaLayout
    video_keep: torch.Tensor  # (Nv,) bool
    audio_keep: torch.Tensor  # (Na,) bool


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

    def __init__(self, config: OmniSiftConfig):
        super().__init__(config)
        self.compressor = OmniSiftAudioSelector(
            hidden_size=config.text_config.hidden_size,
            selector_hidden_size=config.selector_hidden_size,
            num_heads=config.selector_num_heads,
            mlp_size=config.selector_mlp_size,
        )
        self.compression_stats: OmniSiftCausalLMOutputWithPast | None = None
        self.post_init()

    # ------------------------------------------------------------------------------------------------------------------
    # Loading
    # ------------------------------------------------------------------------------------------------------------------
    def _adjust_missing_and_unexpected_keys(self, loading_info) -> None:
        # Overwritten -- a Qwen2.5-Omni checkpoint has no selector: say so once, clearly, instead of listing its 18
        # tensors as missing. A checkpoint with only part of the selector stays reported as missing.
        selector_keys = {f"compressor.{name}" for name in self.compressor.state_dict()}
        if selector_keys <= set(loading_info.missing_keys):
            loading_info.missing_keys = set(loading_info.missing_keys) - selector_keys
            logger.warning(  # once per load, not once per process: every such model has an untrained selector
                "The OmniSIFT audio selector (`compressor.*`) is not in this checkpoint and was randomly initialised: "
                "it is untrained. Load an OmniSIFT checkpoint, train the selector, or use keep_ratio=1.0 (no "
                "compression) or audio_keep_ratio=1.0 (video pruning only, which has no parameters)."
            )
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

    # ------------------------------------------------------------------------------------------------------------------
    # Saving
    # ------------------------------------------------------------------------------------------------------------------
    def save_pretrained(self, save_directory, *args, processor=None, **kwargs) -> None:
        r"""
        As [`PreTrainedModel.save_pretrained`], plus the remote-code files with an `auto_map` for every Auto class, and:

        processor (`ProcessorMixin`, *optional*):
            The processor the model is used with (e.g. `Qwen2_5OmniProcessor`), saved into the same directory so that
            it serves `from_pretrained`, `AutoProcessor.from_pretrained` and `pipeline("omni-qa")` at once.
        """
        # Overwritten -- `register_for_auto_class` (end of this module) makes transformers copy the remote-code files,
        # but records a single Auto class in `auto_map`: list the config and every Auto class the model answers to.
        # `push_to_hub` saves through this method too.
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **remote_code_auto_map()}
        super().save_pretrained(save_directory, *args, **kwargs)
        processor = processor if processor is not None else getattr(self, "_processor_to_push", None)
        if processor is not None:
            processor.save_pretrained(save_directory)

    def push_to_hub(self, repo_id: str, *args, processor=None, **kwargs) -> str:
        r"""
        As [`PreTrainedModel.push_to_hub`]; with `processor`, its files are uploaded in the same commit.
        """
        # transformers' push_to_hub calls `save_pretrained(tmp_dir, max_shard_size=...)` without a way to pass more
        # arguments: hand the processor over for the duration of the call.
        self._processor_to_push = processor
        try:
            return super().push_to_hub(repo_id, *args, **kwargs)
        finally:
            self._processor_to_push = None

    # ------------------------------------------------------------------------------------------------------------------
    # Forward
    # ------------------------------------------------------------------------------------------------------------------
    def resolve_keep_ratios(
        self,
        keep_ratio: float | None = None,
        video_keep_ratio: float | None = None,
        audio_keep_ratio: float | None = None,
    ) -> KeepRatios:
        """Validate per-call ratios and combine them with the config's (per-call modality ratio, per-call
        `keep_ratio`, configured modality ratio, configured `keep_ratio`, most specific first)."""
        # The config validated itself when built, but its fields can be reassigned since: check them again.
        return resolve_keep_ratios(
            check_keep_ratio("keep_ratio", keep_ratio),
            check_keep_ratio("video_keep_ratio", video_keep_ratio),
            check_keep_ratio("audio_keep_ratio", audio_keep_ratio),
            check_keep_ratio("config.keep_ratio", self.config.keep_ratio, allow_none=False),
            check_keep_ratio("config.video_keep_ratio", self.config.video_keep_ratio),
            check_keep_ratio("config.audio_keep_ratio", self.config.audio_keep_ratio),
        )

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
        logits_to_keep (`int` or `torch.Tensor`, *optional*, defaults to 0):
            As in transformers' causal LMs: compute logits only for the last `logits_to_keep` positions (0: all), or
            for the given indices. `generate()` passes 1, so the prefill of a long clip never materialises
            `(B, K, vocab)` logits.

        Returns `OmniSiftCausalLMOutputWithPast`: `logits` (and `labels` for the loss) are aligned with the shortened
        sequence described by `kept_token_index` / `compressed_attention_mask`.
        """
        ratios = self.resolve_keep_ratios(keep_ratio, video_keep_ratio, audio_keep_ratio)
        video_outputs = (mm_encoder_outputs or {}).get("video")
        has_media = input_features is not None or pixel_values_videos is not None or video_outputs is not None
        parent_kwargs = {
            "input_ids": input_ids,
            "input_features": input_features,
            "pixel_values": pixel_values,
            "pixel_values_videos": pixel_values_videos,
            "image_grid_thw": image_grid_thw,
            "video_grid_thw": video_grid_thw,
            "attention_mask": attention_mask,
            "feature_attention_mask": feature_attention_mask,
            "audio_feature_lengths": audio_feature_lengths,
            "position_ids": position_ids,
            "cache": cache,
            "inputs_embeds": inputs_embeds,
            "use_cache": use_cache,
            "use_audio_in_video": use_audio_in_video,
            "video_second_per_grid": video_second_per_grid,
            "mm_encoder_outputs": mm_encoder_outputs,
        }
        if not has_media or ratios.is_identity:
            # The off switch: nothing to compress, so this is exactly the Qwen2.5-Omni thinker.
            outputs = super().forward(**parent_kwargs, labels=labels, **kwargs)
            # The parent computes every position's logits (it has no `logits_to_keep`): keep what was asked for.
            outputs.logits = outputs.logits[:, _logits_slice(logits_to_keep)]
            if not has_media:
                return OmniSiftCausalLMOutputWithPast(**outputs)
            counts = self._count_media_tokens(input_ids)
            self.compression_stats = OmniSiftCausalLMOutputWithPast(**counts)
            return OmniSiftCausalLMOutputWithPast(**outputs, **counts)
        if input_ids is None:
            raise ValueError(
                "OmniSIFT compression needs `input_ids` to find the audio and video tokens, but only `inputs_embeds` "
                "was given. Pass `input_ids`, or `keep_ratio=1.0` to run without compression."
            )

        # 1. Encode: audio, image and video features scattered into the text embeddings.
        inputs_embeds, mm_encoder_outputs = self._embed_multimodal(
            input_ids=input_ids,
            input_features=input_features,
            pixel_values=pixel_values,
            pixel_values_videos=pixel_values_videos,
            image_grid_thw=image_grid_thw,
            video_grid_thw=video_grid_thw,
            feature_attention_mask=feature_attention_mask,
            audio_feature_lengths=audio_feature_lengths,
            mm_encoder_outputs=mm_encoder_outputs,
            **kwargs,
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
        selection = self._select_tokens(input_ids, inputs_embeds, attention_mask, mrope_position_ids[0], ratios)

        # 4. Gather the kept tokens of each sample and re-pad on the left.
        kept_index, kept_mask = compact_kept_tokens(selection.keep)  # (B, K), (B, K)
        hidden_size = inputs_embeds.shape[-1]
        kept_embeds = selection.inputs_embeds.gather(1, kept_index.unsqueeze(-1).expand(-1, -1, hidden_size))
        kept_mrope = mrope_position_ids.gather(2, kept_index.unsqueeze(0).expand(3, -1, -1))
        kept_mrope = kept_mrope.masked_fill(kept_mask == 0, 1)  # padding positions as `get_rope_index` writes them
        # Row 0 (text positions) stays contiguous: a jump would be read as a new packed sequence.
        text_positions = (kept_mask.cumsum(-1) - 1).masked_fill(kept_mask == 0, 0)
        kept_position_ids = torch.cat([text_positions.unsqueeze(0), kept_mrope], dim=0)  # (4, B, K)
        kept_labels = None
        if labels is not None:
            kept_labels = labels.gather(1, kept_index).masked_fill(kept_mask == 0, -100)
        # Decode steps without explicit positions continue from the last kept position.
        self.model.rope_deltas = (kept_mrope.amax(dim=(0, 2)) + 1 - kept_mask.sum(-1)).unsqueeze(1)

        # 5. Decode the shortened sequence.
        decoder_outputs = self.model.language_model(
            attention_mask=kept_mask,
            position_ids=kept_position_ids,
            cache=cache,
            inputs_embeds=kept_embeds,
            use_cache=use_cache,
            return_dict=True,
            **kwargs,
        )
        logits = self.lm_head(decoder_outputs.last_hidden_state[:, _logits_slice(logits_to_keep)])
        loss = None
        if kept_labels is not None:
            loss = self.loss_function(
                logits=logits, labels=kept_labels, vocab_size=self.config.get_text_config().vocab_size, **kwargs
            )

        # 6. Report what was kept.
        output = OmniSiftCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=decoder_outputs.cache,
            hidden_states=decoder_outputs.hidden_states,
            attentions=decoder_outputs.attentions,
            image_outputs=mm_encoder_outputs.get("image"),
            kept_token_index=kept_index,
            compressed_attention_mask=kept_mask,
            compressed_position_ids=kept_position_ids,
            **self._count_kept_tokens(selection, input_ids.shape[0]),
        )
        self.compression_stats = OmniSiftCausalLMOutputWithPast(
            **{key: output[key] for key in output if key.startswith("num_") or key == "kept_token_index"}
        )
        return output

    def _count_media_tokens(self, input_ids: torch.LongTensor | None) -> dict[str, torch.LongTensor]:
        """Token counts when nothing is dropped."""
        if input_ids is None:
            return {}
        num_video = (input_ids == self.config.video_token_id).sum(-1)
        num_audio = (input_ids == self.config.audio_token_id).sum(-1)
        return {
            "num_video_tokens": num_video,
            "num_kept_video_tokens": num_video.clone(),
            "num_audio_tokens": num_audio,
            "num_kept_audio_tokens": num_audio.clone(),
        }

    @staticmethod
    def _count_kept_tokens(selection: _Selection, batch_size: int) -> dict[str, torch.LongTensor]:
        layout = selection.layout
        return {
            "num_video_tokens": torch.bincount(layout.video_sample, minlength=batch_size),
            "num_kept_video_tokens": torch.bincount(layout.video_sample[selection.video_keep], minlength=batch_size),
            "num_audio_tokens": torch.bincount(layout.audio_sample, minlength=batch_size),
            "num_kept_audio_tokens": torch.bincount(layout.audio_sample[selection.audio_keep], minlength=batch_size),
        }

    def _embed_multimodal(
        self,
        input_ids: torch.LongTensor,
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
        """Token embeddings with the encoders' outputs scattered in: `(B, L, D)`.

        Same stages, through the same public methods, as `Qwen2_5OmniThinkerModel.forward` (transformers 5.24) before
        it calls its language model; `tests/test_modeling.py` checks that both hand the decoder identical inputs.
        """
        if (pixel_values is not None or pixel_values_videos is not None) and mm_encoder_outputs is not None:
            raise ValueError(
                "You cannot specify both pixel_values/pixel_values_videos and mm_encoder_outputs at the same time"
            )
        inputs_embeds = self.get_input_embeddings()(input_ids)
        image_mask, video_mask, audio_mask = self.model.get_placeholder_mask(input_ids, inputs_embeds=inputs_embeds)
        if input_features is not None:
            audio_embeds = self.model.get_audio_features(
                input_features, feature_attention_mask, audio_feature_lengths, return_dict=True, **kwargs
            ).last_hidden_state
            audio_embeds = audio_embeds.to(inputs_embeds.device, inputs_embeds.dtype)
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

    def _select_tokens(
        self,
        input_ids: torch.LongTensor,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        temporal_ids: torch.LongTensor,
        ratios: KeepRatios,
    ) -> _Selection:
        """Run STVP and VGAS on one batch.

        Args:
            input_ids (`torch.LongTensor` of shape `(B, L)`), inputs_embeds (`torch.Tensor` of shape `(B, L, D)`),
            attention_mask (`torch.Tensor` of shape `(B, L)`), temporal_ids (`torch.LongTensor` of shape `(B, L)`):
                the merged sequence and its temporal M-RoPE ids.
            ratios ([`KeepRatios`]): the resolved ratios (not the identity).
        """
        batch_size, seq_len, hidden_size = inputs_embeds.shape
        real = attention_mask.bool()
        layout = media_layout(
            (input_ids == self.config.video_token_id) & real,
            (input_ids == self.config.audio_token_id) & real,
            temporal_ids,
        )
        num_video = torch.bincount(layout.video_sample, minlength=batch_size)
        prunable_audio = torch.bincount(layout.audio_sample[layout.window_of_audio >= 0], minlength=batch_size)
        video_keep_ratio, audio_keep_ratio = derive_keep_ratios(ratios.keep, num_video, prunable_audio)
        if ratios.video is not None:
            video_keep_ratio = torch.full_like(video_keep_ratio, ratios.video)
        if ratios.audio is not None:
            audio_keep_ratio = torch.full_like(audio_keep_ratio, ratios.audio)

        flat_embeds = inputs_embeds.reshape(batch_size * seq_len, hidden_size)
        video_embeds = flat_embeds[layout.video_index]  # (Nv, D)
        frame_sample = layout.pair_sample[layout.pair_of_frame]  # (F,)
        video_keep = spatio_temporal_prune(
            video_embeds,
            layout.frame_of_video,
            layout.frame_size,
            layout.frame_is_second,
            video_keep_ratio[frame_sample],
        )

        audio_keep = torch.ones_like(layout.audio_index, dtype=torch.bool)
        audio_rows, gate = self._select_audio(flat_embeds, layout, video_keep, audio_keep_ratio, audio_keep)
        if audio_rows is not None:
            # Straight-through estimator: kept tokens are scaled by ~1 but carry the selector's gradient.
            gated = flat_embeds[audio_rows] * gate.unsqueeze(-1).to(flat_embeds.dtype)
            flat_embeds = flat_embeds.index_copy(0, audio_rows, gated)

        keep = real.flatten().clone()
        keep[layout.video_index] &= video_keep
        keep[layout.audio_index] &= audio_keep
        return _Selection(
            inputs_embeds=flat_embeds.view(batch_size, seq_len, hidden_size),
            keep=keep.view(batch_size, seq_len),
            layout=layout,
            video_keep=video_keep,
            audio_keep=audio_keep,
        )

    def _select_audio(
        self,
        flat_embeds: torch.Tensor,
        layout: MediaLayout,
        video_keep: torch.Tensor,
        audio_keep_ratio: torch.Tensor,
        audio_keep: torch.Tensor,
    ) -> tuple[torch.LongTensor | None, torch.Tensor | None]:
        """VGAS over every active window at once; fills `audio_keep` `(Na,)` in place.

        A window is active when it has kept video, at least two audio tokens and its sample drops audio. Returns the
        flat rows of the scored audio tokens and their straight-through gates, or `(None, None)`.
        """
        num_pairs = layout.num_pairs
        window = layout.window_of_audio  # (Na,)
        has_window = window >= 0
        video_pair = layout.pair_of_frame[layout.frame_of_video]  # (Nv,)
        kept_video_per_pair = torch.bincount(video_pair[video_keep], minlength=num_pairs)
        audio_per_pair = torch.bincount(window[has_window], minlength=num_pairs)
        active = (kept_video_per_pair > 0) & (audio_per_pair > 1) & (audio_keep_ratio[layout.pair_sample] < 1)
        active_pairs = torch.nonzero(active).squeeze(1)  # (W,)
        if active_pairs.numel() == 0:
            return None, None
        renumber = torch.full((num_pairs,), -1, dtype=torch.long, device=active.device)
        renumber[active_pairs] = torch.arange(active_pairs.shape[0], device=active.device)

        scored_audio = torch.nonzero(has_window & active[window.clamp(min=0)]).squeeze(1)  # (n_a,) into audio
        audio_window = renumber[window[scored_audio]]
        guide_video = torch.nonzero(video_keep & active[video_pair]).squeeze(1)  # (n_v,) into video
        video_window = renumber[video_pair[guide_video]]

        audio_rows = layout.audio_index[scored_audio]
        audio_window_size, audio_slot, audio_len = _pad_slots(audio_window, active_pairs.shape[0])
        _, video_slot, video_len = _pad_slots(video_window, active_pairs.shape[0])
        audio = _scatter_padded(flat_embeds[audio_rows], audio_window, audio_slot, active_pairs.shape[0], audio_len)
        video = _scatter_padded(
            flat_embeds[layout.video_index[guide_video]], video_window, video_slot, active_pairs.shape[0], video_len
        )
        video_padding = torch.ones(video.shape[:2], dtype=torch.bool, device=video.device)
        video_padding[video_window, video_slot] = False
        scores = self.compressor(audio, video, video_padding_mask=video_padding)  # (W, A)
        scores = scores.to(flat_embeds.device)[audio_window, audio_slot]  # (n_a,); the selector may sit elsewhere

        hard = top_audio_per_window(
            scores, audio_window, audio_window_size, audio_keep_ratio[layout.pair_sample[active_pairs]]
        )
        audio_keep[scored_audio] = hard
        gate = (hard.to(scores.dtype) - scores).detach() + scores
        return audio_rows, gate

    # ------------------------------------------------------------------------------------------------------------------
    # Generation
    # ------------------------------------------------------------------------------------------------------------------
    def _update_model_kwargs_for_generation(self, outputs, model_kwargs, is_encoder_decoder=False, num_new_tokens=1):
        # Overwritten -- after a compressed prefill the cache holds the shortened sequence: continue from its
        # attention mask and positions, not from the unpruned ones `generate` prepared.
        if outputs.get("compressed_attention_mask") is not None and outputs.get("cache") is not None:
            mask = outputs["compressed_attention_mask"]
            if model_kwargs.get("attention_mask") is not None or not bool(mask.all()):
                model_kwargs["attention_mask"] = mask
            model_kwargs["position_ids"] = outputs["compressed_position_ids"]
        return super()._update_model_kwargs_for_generation(
            outputs, model_kwargs, is_encoder_decoder=is_encoder_decoder, num_new_tokens=num_new_tokens
        )


def remote_code_auto_map() -> dict[str, str]:
    """The `auto_map` of a saved OmniSIFT directory: `AutoConfig` and every Auto class in `AUTO_MODEL_CLASSES`, each
    pointing at a class of the remote-code files saved next to the weights (`configuration_omnisift.py`,
    `modeling_omnisift.py`)."""
    config_reference = f"{OmniSiftConfig.__module__.rsplit('.', 1)[-1]}.{OmniSiftConfig.__name__}"
    model_class = OmniSiftForConditionalGeneration
    model_reference = f"{model_class.__module__.rsplit('.', 1)[-1]}.{model_class.__name__}"
    return {"AutoConfig": config_reference, **dict.fromkeys(AUTO_MODEL_CLASSES, model_reference)}


# With an Auto class registered, `save_pretrained` / `push_to_hub` copy this module and the modules it imports
# relatively (the remote-code bundle) next to the weights and write `auto_map` into config.json, so that the saved
# directory loads with `trust_remote_code=True` where `omnisift_hf` is not installed.
OmniSiftForConditionalGeneration.register_for_auto_class("AutoModel")


def _logits_slice(logits_to_keep: int | torch.Tensor):
    """The positions whose logits are computed: the last `logits_to_keep` (0: all) or the given indices."""
    return slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep


def _pad_slots(segment: torch.Tensor, num_segments: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """For elements grouped in contiguous, ordered segments: segment sizes `(S,)`, slot of each element inside its
    segment `(N,)`, and the largest size."""
    size = torch.bincount(segment, minlength=num_segments)
    start = torch.cumsum(size, 0) - size
    slot = torch.arange(segment.shape[0], device=segment.device) - start[segment]
    return size, slot, int(size.max().item())


def _scatter_padded(
    values: torch.Tensor, segment: torch.Tensor, slot: torch.Tensor, num_segments: int, length: int
) -> torch.Tensor:
    """`(N, D)` values into a zero-padded `(S, length, D)` tensor at `(segment, slot)`."""
    padded = values.new_zeros(num_segments, length, values.shape[-1])
    return padded.index_put((segment, slot), values)
