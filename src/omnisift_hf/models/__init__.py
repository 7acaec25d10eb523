"""The backbones OmniSIFT runs on, one folder each (configuration, modelling, checkpoint conversion)."""

from .. import _TRANSFORMERS_SUPPORTED

__all__ = ["BACKBONES"]

# The modelling code needs the transformers release `omnisift_hf.SUPPORTED_TRANSFORMERS` names; elsewhere (a vLLM
# environment) only the backbone-independent modules of this folder import (`_shared_configuration`).
BACKBONES = ()
if _TRANSFORMERS_SUPPORTED:
    from .qwen2_5_omni import AUTO_MODEL_CLASSES as QWEN2_5_OMNI_AUTO_CLASSES
    from .qwen2_5_omni import OMNI_AUTO_MODEL_CLASSES as QWEN2_5_OMNI_FULL_AUTO_CLASSES
    from .qwen2_5_omni import (
        OmniSiftConfig,
        OmniSiftForConditionalGeneration,
        OmniSiftOmniConfig,
        OmniSiftOmniForConditionalGeneration,
    )
    from .qwen3_omni_moe import AUTO_MODEL_CLASSES as QWEN3_OMNI_MOE_AUTO_CLASSES
    from .qwen3_omni_moe import OmniSiftQwen3OmniConfig, OmniSiftQwen3OmniForConditionalGeneration

    # (config class, model class, names of the transformers Auto classes that resolve its `model_type`) per backbone
    # and model: Qwen2.5-Omni's thinker (text output) and full model (text and speech), Qwen3-Omni's MoE thinker.
    BACKBONES = (
        (OmniSiftConfig, OmniSiftForConditionalGeneration, QWEN2_5_OMNI_AUTO_CLASSES),
        (OmniSiftOmniConfig, OmniSiftOmniForConditionalGeneration, QWEN2_5_OMNI_FULL_AUTO_CLASSES),
        (OmniSiftQwen3OmniConfig, OmniSiftQwen3OmniForConditionalGeneration, QWEN3_OMNI_MOE_AUTO_CLASSES),
    )
