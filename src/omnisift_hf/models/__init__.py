"""The backbones OmniSIFT runs on, one folder each (configuration, modelling, checkpoint conversion)."""

from .qwen2_5_omni import AUTO_MODEL_CLASSES as QWEN2_5_OMNI_AUTO_CLASSES
from .qwen2_5_omni import OmniSiftConfig, OmniSiftForConditionalGeneration

__all__ = ["BACKBONES"]

# (config class, model class, names of the transformers Auto classes that resolve its `model_type`) per backbone.
BACKBONES = ((OmniSiftConfig, OmniSiftForConditionalGeneration, QWEN2_5_OMNI_AUTO_CLASSES),)
