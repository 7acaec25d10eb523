"""OmniSIFT on Qwen2.5-Omni: the thinker (text output) with token compression."""

from .configuration_omnisift import OmniSiftConfig
from .modeling_omnisift import (
    AUTO_MODEL_CLASSES,
    OmniSiftCausalLMOutputWithPast,
    OmniSiftForConditionalGeneration,
    TokenSelector,
)

__all__ = [
    "AUTO_MODEL_CLASSES",
    "OmniSiftCausalLMOutputWithPast",
    "OmniSiftConfig",
    "OmniSiftForConditionalGeneration",
    "TokenSelector",
]
