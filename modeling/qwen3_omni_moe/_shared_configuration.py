# Generated from the omnisift_hf package by `python -m omnisift_hf.tools.bundle`: do not edit this copy; edit
# the module of the same name in src/omnisift_hf/ and regenerate.
"""What every backbone's OmniSIFT configuration adds to its thinker's configuration: the compression knobs, their
validation, reading the backbone's own config.json, and saving its remote code next to config.json."""

import math
import os
import sys
from dataclasses import dataclass
from typing import Any

from .compression import check_keep_ratio
from .remote_code import class_reference, write_remote_code

__all__ = ["SELECTOR_ESTIMATORS", "OmniSiftConfigMixin", "write_config_remote_code"]

# The selector's training estimators (`selector_estimator`).
SELECTOR_ESTIMATORS = ("ste", "attention_policy")


@dataclass(kw_only=True, repr=False, eq=False)
class OmniSiftConfigMixin:
    r"""
    The OmniSIFT compression knobs, placed before a thinker configuration class in the bases of a backbone's
    configuration (`class OmniSiftConfig(OmniSiftConfigMixin, Qwen2_5OmniThinkerConfig)`, under `@strict`).

    The paper writes drop fractions, `rho = 1 - keep`; every knob here is a *keep* fraction.

    keep_ratio (`float`, *optional*, defaults to 0.25):
        Fraction of the audio + video tokens handed to the language model. Text and image tokens are never dropped.
        `1.0` switches compression off (the model is then exactly its backbone's thinker). Unless the per-modality
        ratios below are set, the split between video and audio is derived per sample, see `derive_keep_ratios`.
    video_keep_ratio (`float`, *optional*):
        Fraction of the video tokens kept by spatio-temporal video pruning (STVP). Overrides the derived split.
    audio_keep_ratio (`float`, *optional*):
        Fraction of the audio tokens kept by the vision-guided audio selector (VGAS). Overrides the derived split.
    selector_hidden_size (`int`, *optional*, defaults to 512):
        Width of the selector's audio/video projections and cross-attention.
    selector_num_heads (`int`, *optional*, defaults to 8):
        Attention heads of the selector's cross-attention (not recoverable from weight shapes: the reference uses 8).
    selector_mlp_size (`int`, *optional*, defaults to 256):
        Hidden width of the selector's scoring MLP.
    selector_estimator (`str`, *optional*, defaults to `"ste"`):
        How training reaches the selector (inference is the same for both). `"ste"`: the published straight-through
        gate `m = (hard - s).detach() + s` multiplied into the kept audio embeddings; it reaches kept tokens only.
        `"attention_policy"`: the scored audio tokens all stay in the training sequence and the keep decision
        `m = hard + z - stopgrad(z)` (on the selector's logit `z`) weighs each of them inside every decoder layer's
        attention softmax, so dropped tokens get a gradient too (see `omnisift_hf.attention_policy`).
    selector_distillation_weight (`float`, *optional*, defaults to 0.0):
        While training with `labels` and compression on, adds `selector_distillation_weight * KL(teacher || student)`
        to the loss: the KL divergence, averaged over the answer tokens (labels other than -100), from the same model
        at keep 1.0 on the same encoder outputs (no gradient) to the compressed forward. It tells the selector and the
        decoder what the dropped tokens would have changed. `0.0`: the plain language-modelling loss (no teacher
        forward). Works with either estimator; inference is unchanged.

    A backbone's configuration sets `base_config_key = "thinker_config"` and names the `model_type`s whose
    config.json it reads directly: `backbone_model_type` (the full model's; its `thinker_config` is read) and
    `backbone_thinker_model_type` (the thinker's alone, as its `save_pretrained` writes it).
    """

    keep_ratio: float | int = 0.25
    video_keep_ratio: float | int | None = None
    audio_keep_ratio: float | int | None = None
    selector_hidden_size: int = 512
    selector_num_heads: int = 8
    selector_mlp_size: int = 256
    selector_estimator: str = "ste"
    selector_distillation_weight: float | int = 0.0
    # Read by `get_rope_index` but not declared by the thinker configs: declared here so that a config built in code
    # (not loaded from a Qwen checkpoint, which carries them) still works.
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653

    def validate_keep_ratios(self):
        """Part of `@strict` validation: every ratio lies in (0, 1]."""
        check_keep_ratio("keep_ratio", self.keep_ratio, allow_none=False)
        check_keep_ratio("video_keep_ratio", self.video_keep_ratio)
        check_keep_ratio("audio_keep_ratio", self.audio_keep_ratio)

    def validate_selector_estimator(self):
        """Part of `@strict` validation: a known training estimator."""
        if self.selector_estimator not in SELECTOR_ESTIMATORS:
            raise ValueError(
                f'selector_estimator={self.selector_estimator!r}; use one of {SELECTOR_ESTIMATORS} ("ste": the '
                'published straight-through gate; "attention_policy": keep decisions inside the attention softmax).'
            )

    def validate_selector_distillation_weight(self):
        """Part of `@strict` validation: a finite, non-negative weight."""
        weight = self.selector_distillation_weight
        if isinstance(weight, bool) or not math.isfinite(weight) or weight < 0:
            raise ValueError(
                f"selector_distillation_weight={weight!r}; use a finite number >= 0 (0.0: no distillation term, "
                "e.g. 1.0 to weigh the KL divergence from the keep-1.0 teacher like the language-modelling loss)."
            )

    def validate_selector_sizes(self):
        """Part of `@strict` validation: the selector's sizes are positive and its heads divide its width."""
        for name in ("selector_hidden_size", "selector_num_heads", "selector_mlp_size"):
            value = getattr(self, name)
            if value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value}.")
        if self.selector_hidden_size % self.selector_num_heads != 0:
            raise ValueError(
                f"`selector_hidden_size` ({self.selector_hidden_size}) must be divisible by `selector_num_heads` "
                f"({self.selector_num_heads})."
            )

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs) -> tuple[dict[str, Any], dict[str, Any]]:
        # Overwritten -- read the backbone's configs (full model or thinker) as OmniSIFT configs without the "model of
        # type X to instantiate a model of type omnisift..." warning; the knobs then take their defaults.
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        if config_dict.get("model_type") == cls.backbone_model_type and cls.base_config_key in config_dict:
            config_dict = dict(config_dict[cls.base_config_key])
        if config_dict.get("model_type") == cls.backbone_thinker_model_type:
            config_dict = {**config_dict, "model_type": cls.model_type}
            config_dict.pop("architectures", None)
        return config_dict, kwargs

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs) -> None:
        # Overwritten -- also write this configuration's file (with what it imports) next to config.json and record
        # it in `auto_map`, so that the directory loads with `trust_remote_code=True` where omnisift_hf is not
        # installed. transformers' own copying (`register_for_auto_class`) cannot follow this package's imports
        # across folders.
        write_config_remote_code(self, save_directory)
        super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)


def write_config_remote_code(config, save_directory: str | os.PathLike) -> None:
    """Write the remote-code bundle of `config`'s module into `save_directory` and point
    `config.auto_map["AutoConfig"]` at the config's class in it."""
    config.auto_map = {**(getattr(config, "auto_map", None) or {}), "AutoConfig": class_reference(type(config))}
    os.makedirs(save_directory, exist_ok=True)
    write_remote_code(save_directory, sys.modules[type(config).__module__].__file__)
