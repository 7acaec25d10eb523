"""OmniSIFT for Qwen3-Omni: the MoE thinker (text output) with token compression between its encoders and its
language model, the deepstack features of the kept visual tokens and the router outputs of the shortened sequence."""

from dataclasses import dataclass

import torch
from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping
from transformers.modeling_outputs import BaseModelOutputWithPooling, MultimodalMoeCausalLMOutputWithPast
from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
    Qwen3OmniMoeThinkerForConditionalGeneration,
    load_balancing_loss_func,
)
from transformers.utils.generic import ModelOutput, can_return_tuple

from ...compression import KeptSequence
from .._shared_modeling import OmniSiftKeptTokensOutput, OmniSiftThinkerMixin
from .configuration_omnisift import OmniSiftQwen3OmniConfig

__all__ = [
    "AUTO_MODEL_CLASSES",
    "OmniSiftQwen3OmniCausalLMOutputWithPast",
    "OmniSiftQwen3OmniForConditionalGeneration",
]

# The Auto classes that resolve the `omnisift_qwen3_omni` model type (those transformers maps the Qwen3-Omni thinker
# to, and `AutoModel`). A saved directory lists each of them in `auto_map`.
AUTO_MODEL_CLASSES = ("AutoModel", "AutoModelForImageTextToText", "AutoModelForMultimodalLM")

# Qwen3-Omni checkpoints store the thinker under `thinker.` (its decoder under `thinker.model.`, each expert's
# projections apart); transformers renames those keys only for classes it knows or that are registered. Without this
# line every decoder weight would be silently re-initialised. The decoder's expert fusion comes with its own (stock)
# class; the selector lives at the top level (`compressor.*`), which no renaming touches.
register_checkpoint_conversion_mapping(
    "OmniSiftQwen3OmniForConditionalGeneration",
    get_checkpoint_conversion_mapping("Qwen3OmniMoeThinkerForConditionalGeneration"),
    overwrite=True,
)


@dataclass
class OmniSiftQwen3OmniCausalLMOutputWithPast(OmniSiftKeptTokensOutput, MultimodalMoeCausalLMOutputWithPast):
    r"""
    Output of [`OmniSiftQwen3OmniForConditionalGeneration`]: the MoE thinker's output (`aux_loss` and
    `router_logits` of the shortened sequence with `output_router_logits=True`) plus what compression kept (the fields
    of [`~omnisift_hf.models._shared_modeling.OmniSiftKeptTokensOutput`]; `kept_position_ids` are float, as
    Qwen3-Omni's M-RoPE ids).
    """


class OmniSiftQwen3OmniForConditionalGeneration(OmniSiftThinkerMixin, Qwen3OmniMoeThinkerForConditionalGeneration):
    r"""
    Qwen3-Omni's MoE thinker (text output) with OmniSIFT token compression: after the audio and vision encoders and
    before the language model, spatio-temporal video pruning (STVP) drops redundant video tokens and the
    vision-guided audio selector (VGAS, `self.compressor`, sized to the text hidden size) drops audio tokens. Kept
    tokens keep their (fractional) M-RoPE positions; the deepstack features of the kept video tokens go with them,
    those of dropped ones are dropped. `keep_ratio=1.0` is exactly the Qwen3-Omni thinker.

    Frames are grouped by temporal id and paired as for Qwen2.5-Omni; each pair's audio window runs from its first
    frame's time to the next pair's, which follows Qwen3-Omni's interleaving (each frame grid, then the audio up to
    the next grid) at any frame rate.

    Loads Qwen3-Omni checkpoints (full model, talker dropped, or thinker; the selector is then untrained) and its own.

    Example:

    ```python
    >>> import torch
    >>> from omnisift_hf.models.qwen3_omni_moe import (
    ...     OmniSiftQwen3OmniConfig,
    ...     OmniSiftQwen3OmniForConditionalGeneration,
    ... )

    >>> config = OmniSiftQwen3OmniConfig(
    ...     text_config={"hidden_size": 32, "intermediate_size": 64, "moe_intermediate_size": 16,
    ...                  "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
    ...                  "num_experts": 4, "num_experts_per_tok": 2, "vocab_size": 64,
    ...                  "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3]}},
    ...     vision_config={"depth": 2, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2,
    ...                    "out_hidden_size": 32, "num_position_embeddings": 16, "deepstack_visual_indexes": [0]},
    ...     audio_config={"encoder_layers": 1, "d_model": 16, "encoder_attention_heads": 2, "encoder_ffn_dim": 32,
    ...                   "output_dim": 32, "downsample_hidden_size": 8},
    ...     selector_hidden_size=16, selector_num_heads=2, selector_mlp_size=8,
    ... )
    >>> model = OmniSiftQwen3OmniForConditionalGeneration(config)
    >>> out = model(input_ids=torch.tensor([[1, 2, 3]]), keep_ratio=0.25)
    >>> out.logits.shape
    torch.Size([1, 3, 64])
    ```
    """

    config_class = OmniSiftQwen3OmniConfig
    config: OmniSiftQwen3OmniConfig
    auto_model_classes = AUTO_MODEL_CLASSES
    _output_class = OmniSiftQwen3OmniCausalLMOutputWithPast
    # The selector runs as one unit: `device_map="auto"` must never split it across devices.
    _no_split_modules = [*Qwen3OmniMoeThinkerForConditionalGeneration._no_split_modules, "OmniSiftAudioSelector"]

    # Overwritten -- OmniSIFT between the encoders and the language model, with the parent's explicit signature plus
    # the compression knobs (see `OmniSiftThinkerMixin._omnisift_forward`). `output_router_logits` travels in
    # `**kwargs` (a transformers keyword of every model) to the parent's forward or to the language model.
    forward = can_return_tuple(OmniSiftThinkerMixin._omnisift_forward)

    def _embed_multimodal(self, *args, output_router_logits: bool | None = None, **kwargs):
        # Overwritten -- the router flag is the language model's: as in the parent's forward, the encoders never see
        # it.
        return super()._embed_multimodal(*args, **kwargs)

    def _decoder_media_inputs(
        self,
        input_ids: torch.LongTensor,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling],
        keep: torch.Tensor,
        kept: KeptSequence,
    ) -> dict[str, object]:
        """The deepstack inputs of the shortened sequence (arguments as in `OmniSiftThinkerMixin`): `visual_pos_masks`
        `(B, K)`, the kept image and video placeholders, and `deepstack_visual_embeds`, per deepstack layer the
        features of those tokens `(n_kept, D)`, from the encoder outputs' `deepstack_features`."""
        # Overwritten -- as `Qwen3OmniMoeThinkerModel.forward` (transformers 5.24.0), the features of the image and
        # video tokens, one row per visual placeholder in sequence order (the image and video branches folded into
        # one loop); then the rows and placeholders of the dropped video tokens leave with them.
        present = [
            (mm_encoder_outputs[modality].deepstack_features, input_ids == token_id)
            for modality, token_id in (("image", self.config.image_token_id), ("video", self.config.video_token_id))
            if mm_encoder_outputs.get(modality) is not None
        ]
        if not present:
            return {}
        visual_pos_masks = torch.stack([mask for _, mask in present]).any(0)  # (B, L)
        deepstack = []
        for layer_features in zip(*(features for features, _ in present), strict=True):
            layer_features = [torch.cat(features, dim=0) for features in layer_features]  # (n_modality, D) each
            joint = layer_features[0]
            if len(present) > 1:
                joint = joint.new_zeros(int(visual_pos_masks.sum()), joint.shape[-1])  # (n_visual, D)
                for features, (_, mask) in zip(layer_features, present, strict=True):
                    joint[mask[visual_pos_masks]] = features
            deepstack.append(joint)
        rows = keep[visual_pos_masks]  # (n_visual,): which visual placeholders stay
        kept_visual = visual_pos_masks.gather(1, kept.index) & kept.attention_mask.bool()  # (B, K)
        return {"visual_pos_masks": kept_visual, "deepstack_visual_embeds": [layer[rows] for layer in deepstack]}

    def _router_outputs(
        self, decoder_outputs: ModelOutput, attention_mask: torch.Tensor, loss: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, dict[str, object]]:
        """The load-balancing loss of the shortened sequence's router logits (`attention_mask` `(B, K)`), added to
        `loss` as the parent adds it, when the language model returned router logits (`output_router_logits`)."""
        # Overwritten -- as `Qwen3OmniMoeThinkerForConditionalGeneration.forward` (transformers 5.24.0), on the
        # shortened sequence.
        router_logits = decoder_outputs.router_logits
        if router_logits is None:
            return loss, {}
        aux_loss = load_balancing_loss_func(router_logits, self.num_experts, self.num_experts_per_tok, attention_mask)
        if loss is not None:
            loss = loss + self.router_aux_loss_coef * aux_loss.to(loss.device)
        return loss, {"aux_loss": aux_loss, "router_logits": router_logits}
