"""omnisift_hf: OmniSIFT token compression for Qwen2.5-Omni, as a native transformers model.

`import omnisift_hf` registers the `omnisift` model type with the transformers Auto classes.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageTextToText,
    AutoModelForMultimodalLM,
)

from .compression import KeepRatios, derive_keep_ratios
from .configuration_omnisift import OmniSiftConfig
from .modeling_omnisift import OmniSiftAudioSelector, OmniSiftCausalLMOutputWithPast, OmniSiftForConditionalGeneration

__version__ = "0.1.0"

__all__ = [
    "KeepRatios",
    "OmniSiftAudioSelector",
    "OmniSiftCausalLMOutputWithPast",
    "OmniSiftConfig",
    "OmniSiftForConditionalGeneration",
    "derive_keep_ratios",
]

# Registration: the `omnisift` model type resolves to OmniSIFT through every Auto class users reach for.
AutoConfig.register(OmniSiftConfig.model_type, OmniSiftConfig, exist_ok=True)
for _auto_class in (AutoModel, AutoModelForImageTextToText, AutoModelForMultimodalLM):
    _auto_class.register(OmniSiftConfig, OmniSiftForConditionalGeneration, exist_ok=True)
