"""OmniSIFT on Qwen3-Omni: the MoE thinker (text output) with token compression, deepstack features pruned with the
video tokens."""

from .configuration_omnisift import OmniSiftQwen3OmniConfig
from .modeling_omnisift import (
    AUTO_MODEL_CLASSES,
    OmniSiftQwen3OmniCausalLMOutputWithPast,
    OmniSiftQwen3OmniForConditionalGeneration,
)

__all__ = [
    "AUTO_MODEL_CLASSES",
    "OmniSiftQwen3OmniCausalLMOutputWithPast",
    "OmniSiftQwen3OmniConfig",
    "OmniSiftQwen3OmniForConditionalGeneration",
]
