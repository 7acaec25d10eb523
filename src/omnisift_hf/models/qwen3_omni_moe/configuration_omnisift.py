"""OmniSIFT configuration for Qwen3-Omni: the MoE thinker's (`Qwen3OmniMoeThinkerConfig`) plus the compression
knobs."""

from huggingface_hub.dataclasses import strict
from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeThinkerConfig

from .._shared_configuration import OmniSiftConfigMixin

__all__ = ["OmniSiftQwen3OmniConfig"]


@strict
class OmniSiftQwen3OmniConfig(OmniSiftConfigMixin, Qwen3OmniMoeThinkerConfig):
    r"""
    Configuration of [`OmniSiftQwen3OmniForConditionalGeneration`]: every field of [`Qwen3OmniMoeThinkerConfig`] plus
    the OmniSIFT compression knobs of [`~omnisift_hf.models._shared_configuration.OmniSiftConfigMixin`] (`keep_ratio`,
    `video_keep_ratio`, `audio_keep_ratio`, `selector_hidden_size`, `selector_num_heads`, `selector_mlp_size`,
    `selector_estimator`), with the same meaning and precedence as for Qwen2.5-Omni. Loading a full Qwen3-Omni
    `config.json` reads its `thinker_config`; a thinker saved by transformers loads as well.

    Qwen3-Omni's audio runs at about 13 tokens per second and its M-RoPE temporal ids step by
    `position_id_per_seconds` (13 in the Qwen3-Omni checkpoints and processor; the thinker config's own default is
    25, kept here so that a config built in code equals the stock one). The ratios count tokens, so at the same
    `keep_ratio` a second of audio weighs about half what it weighs in Qwen2.5-Omni (25 tokens per second).

    Example:

    ```python
    >>> from omnisift_hf.models.qwen3_omni_moe import OmniSiftQwen3OmniConfig

    >>> config = OmniSiftQwen3OmniConfig(keep_ratio=0.35, audio_keep_ratio=1.0)
    >>> (config.keep_ratio, config.text_config.hidden_size)
    (0.35, 2048)
    ```"""

    model_type = "omnisift_qwen3_omni"
    base_config_key = "thinker_config"
    backbone_model_type = "qwen3_omni_moe"
    backbone_thinker_model_type = "qwen3_omni_moe_thinker"
