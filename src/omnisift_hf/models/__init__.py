"""The backbones OmniSIFT runs on, one folder each (configuration, modelling, checkpoint conversion)."""

from .qwen2_5_omni import AUTO_MODEL_CLASSES as QWEN2_5_OMNI_AUTO_CLASSES
from .qwen2_5_omni import OMNI_AUTO_MODEL_CLASSES as QWEN2_5_OMNI_FULL_AUTO_CLASSES
from .qwen2_5_omni import (
    OmniSiftConfig,
    OmniSiftForConditionalGeneration,
    OmniSiftOmniConfig,
    OmniSiftOmniForConditionalGeneration,
)

__all__ = ["BACKBONES"]

# (config class, model class, names of the transformers Auto classes that resolve its `model_type`) per backbone and
# model: the thinker (text output) and the full model (text and speech).
BACKBONES = (
    (OmniSiftConfig, OmniSiftForConditionalGeneration, QWEN2_5_OMNI_AUTO_CLASSES),
    (OmniSiftOmniConfig, OmniSiftOmniForConditionalGeneration, QWEN2_5_OMNI_FULL_AUTO_CLASSES),
)
