"""OmniSIFT on Qwen2.5-Omni: the thinker (text output) with token compression, and the full model (spoken replies)."""

from .configuration_omnisift import OmniSiftConfig, OmniSiftOmniConfig
from .modeling_omnisift import (
    AUTO_MODEL_CLASSES,
    OMNI_AUTO_MODEL_CLASSES,
    OmniSiftCausalLMOutputWithPast,
    OmniSiftForConditionalGeneration,
    OmniSiftOmniForConditionalGeneration,
    OmniSiftOmniGenerateOutput,
    OmniSiftTalkerForConditionalGeneration,
    TokenSelector,
)

__all__ = [
    "AUTO_MODEL_CLASSES",
    "OMNI_AUTO_MODEL_CLASSES",
    "OmniSiftCausalLMOutputWithPast",
    "OmniSiftConfig",
    "OmniSiftForConditionalGeneration",
    "OmniSiftOmniConfig",
    "OmniSiftOmniForConditionalGeneration",
    "OmniSiftOmniGenerateOutput",
    "OmniSiftTalkerForConditionalGeneration",
    "TokenSelector",
]
