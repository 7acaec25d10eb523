# Generated from the omnisift_hf package by `python -m omnisift_hf.tools.bundle`: do not edit this copy; edit
# the module of the same name in src/omnisift_hf/ and regenerate.
"""OmniSIFT configurations: the Qwen2.5-Omni thinker's plus the compression knobs, and the full model's (thinker,
talker, token2wav) whose thinker is OmniSIFT's."""

import os
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers.models.qwen2_5_omni.configuration_qwen2_5_omni import (
    Qwen2_5OmniConfig,
    Qwen2_5OmniTalkerConfig,
    Qwen2_5OmniThinkerConfig,
    Qwen2_5OmniToken2WavConfig,
)

from ._shared_configuration import SELECTOR_ESTIMATORS, OmniSiftConfigMixin, write_config_remote_code

__all__ = ["SELECTOR_ESTIMATORS", "OmniSiftConfig", "OmniSiftOmniConfig"]

# `model_type`s whose config.json these classes read directly: the full Qwen2.5-Omni model (its `thinker_config`) and
# the thinker alone, as `save_pretrained` of `Qwen2_5OmniThinkerForConditionalGeneration` writes it.
_QWEN_OMNI_MODEL_TYPE = "qwen2_5_omni"
_QWEN_OMNI_THINKER_MODEL_TYPE = "qwen2_5_omni_thinker"


@strict
class OmniSiftConfig(OmniSiftConfigMixin, Qwen2_5OmniThinkerConfig):
    r"""
    Configuration of [`OmniSiftForConditionalGeneration`]: every field of [`Qwen2_5OmniThinkerConfig`] plus the
    OmniSIFT compression knobs of [`~omnisift_hf.models._shared_configuration.OmniSiftConfigMixin`] (`keep_ratio`,
    `video_keep_ratio`, `audio_keep_ratio`, `selector_hidden_size`, `selector_num_heads`, `selector_mlp_size`,
    `selector_estimator`). Loading a full Qwen2.5-Omni `config.json` reads its `thinker_config`.

    Example:

    ```python
    >>> from omnisift_hf import OmniSiftConfig

    >>> config = OmniSiftConfig(keep_ratio=0.35)
    >>> config.keep_ratio
    0.35
    ```"""

    model_type = "omnisift"
    base_config_key = "thinker_config"
    backbone_model_type = _QWEN_OMNI_MODEL_TYPE
    backbone_thinker_model_type = _QWEN_OMNI_THINKER_MODEL_TYPE


@strict
class OmniSiftOmniConfig(Qwen2_5OmniConfig):
    r"""
    Configuration of [`OmniSiftOmniForConditionalGeneration`], the full Qwen2.5-Omni (thinker, talker, token2wav) with
    OmniSIFT in its thinker: every field of [`Qwen2_5OmniConfig`], with `thinker_config` an [`OmniSiftConfig`] (the
    compression knobs live there: `config.thinker_config.keep_ratio`). Loading a Qwen2.5-Omni `config.json` reads it
    as this class, the knobs at their defaults.

    Example:

    ```python
    >>> from omnisift_hf import OmniSiftConfig, OmniSiftOmniConfig

    >>> config = OmniSiftOmniConfig(thinker_config=OmniSiftConfig(keep_ratio=0.35), enable_audio_output=False)
    >>> config.thinker_config.keep_ratio
    0.35
    ```"""

    model_type = "omnisift_omni"
    sub_configs_defaults = {
        "thinker_config": OmniSiftConfig,
        "talker_config": Qwen2_5OmniTalkerConfig,
        "token2wav_config": Qwen2_5OmniToken2WavConfig,
    }

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs) -> tuple[dict[str, Any], dict[str, Any]]:
        # Overwritten -- read a Qwen2.5-Omni config.json as this class's without the "model of type qwen2_5_omni to
        # instantiate a model of type omnisift_omni" warning; its thinker becomes an OmniSIFT thinker.
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        if config_dict.get("model_type") == _QWEN_OMNI_MODEL_TYPE:
            config_dict = {**config_dict, "model_type": cls.model_type}
            config_dict.pop("architectures", None)
        thinker = config_dict.get("thinker_config")
        if isinstance(thinker, dict) and thinker.get("model_type") == _QWEN_OMNI_THINKER_MODEL_TYPE:
            config_dict["thinker_config"] = {**thinker, "model_type": OmniSiftConfig.model_type}
        return config_dict, kwargs

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs) -> None:
        # Overwritten -- as `OmniSiftConfig.save_pretrained`: the remote-code files and `auto_map` next to config.json.
        write_config_remote_code(self, save_directory)
        super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
