"""OmniSIFT checkpoint configs as a vLLM environment reads them.

vLLM pins an older transformers than the modelling code (`omnisift_hf.models`) is written against, so these classes
are built on that environment's own `Qwen2_5OmniThinkerConfig` / `Qwen2_5OmniConfig`: they read the `config.json` that
`OmniSiftForConditionalGeneration` / `OmniSiftOmniForConditionalGeneration` write (model types `omnisift` and
`omnisift_omni`), and check the compression knobs with the package's pure `compression` module.
"""

from huggingface_hub.dataclasses import strict
from transformers.models.qwen2_5_omni.configuration_qwen2_5_omni import Qwen2_5OmniConfig, Qwen2_5OmniThinkerConfig

from ..compression import KeepRatios, resolve_keep_ratios
from ..models._shared_configuration import OmniSiftConfigMixin

__all__ = ["OmniSiftOmniVllmConfig", "OmniSiftVllmConfig", "keep_ratios_of"]


@strict
class OmniSiftVllmConfig(OmniSiftConfigMixin, Qwen2_5OmniThinkerConfig):
    """An OmniSIFT thinker checkpoint's config (`model_type` `omnisift`) in a vLLM environment: the Qwen2.5-Omni
    thinker's fields plus the compression knobs, their validation and defaults (`OmniSiftConfigMixin`, the same as
    `omnisift_hf.OmniSiftConfig`'s)."""

    model_type = "omnisift"
    base_config_key = "thinker_config"
    backbone_model_type = "qwen2_5_omni"
    backbone_thinker_model_type = "qwen2_5_omni_thinker"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # The thinker's `lm_head` is tied (or not) as the thinker config says, whatever its text config's flag (which
        # vLLM's language model reads) defaults to.
        self.text_config.tie_word_embeddings = self.tie_word_embeddings

    @property
    def thinker_config(self) -> "OmniSiftVllmConfig":
        # vLLM's Qwen2.5-Omni classes read `hf_config.thinker_config`: a thinker checkpoint is its own thinker.
        return self


@strict
class OmniSiftOmniVllmConfig(Qwen2_5OmniConfig):
    """A full OmniSIFT checkpoint's config (`model_type` `omnisift_omni`: thinker, talker, token2wav) in a vLLM
    environment; vLLM serves its thinker (text output)."""

    model_type = "omnisift_omni"
    sub_configs = {**Qwen2_5OmniConfig.sub_configs, "thinker_config": OmniSiftVllmConfig}

    def __post_init__(self, **kwargs):
        if isinstance(self.thinker_config, dict):
            self.thinker_config = OmniSiftVllmConfig(**{**self.thinker_config, "model_type": "omnisift"})
        super().__post_init__(**kwargs)
        # vLLM serves the thinker and reads the top level's flag: the thinker's decides (a full config leaves the top
        # level's unset, and vLLM would then tie the thinker's untied `lm_head` to its embeddings).
        self.tie_word_embeddings = self.thinker_config.tie_word_embeddings


def keep_ratios_of(config) -> KeepRatios:
    """The configured [`KeepRatios`] of a thinker config, validated; errors name the `config.<field>`."""
    if not hasattr(config, "keep_ratio"):
        raise ValueError(
            f"This checkpoint (model_type {getattr(config, 'model_type', None)!r}) is not an OmniSIFT checkpoint: its "
            "config has no keep_ratio, yet its architecture names an OmniSIFT class. Convert a Qwen2.5-Omni "
            "checkpoint with `omnisift-convert SRC DST` (in the package's own environment), or serve it without the "
            "OmniSIFT architecture."
        )
    return resolve_keep_ratios(None, None, None, config.keep_ratio, config.video_keep_ratio, config.audio_keep_ratio)
