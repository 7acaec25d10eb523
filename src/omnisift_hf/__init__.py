"""omnisift_hf: OmniSIFT token compression for Qwen2.5-Omni, as a native transformers model.

`import omnisift_hf` registers the `omnisift` model type with the transformers Auto classes and the `omni-qa`
pipeline task.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageTextToText,
    AutoModelForMultimodalLM,
)
from transformers.pipelines import PIPELINE_REGISTRY

from .compression import KeepRatios, derive_keep_ratios
from .configuration_omnisift import OmniSiftConfig
from .media import LoadedVideo, VideoSampling, load_audio, load_image, load_video
from .modeling_omnisift import OmniSiftAudioSelector, OmniSiftCausalLMOutputWithPast, OmniSiftForConditionalGeneration
from .pipeline_omni_qa import OmniQAPipeline
from .training import EncodedOmniQADataset, OmniQADataCollator, OmniQADataset, TrainableParameters, freeze

__version__ = "0.1.0"

__all__ = [
    "EncodedOmniQADataset",
    "KeepRatios",
    "LoadedVideo",
    "OmniQADataCollator",
    "OmniQADataset",
    "OmniQAPipeline",
    "OmniSiftAudioSelector",
    "OmniSiftCausalLMOutputWithPast",
    "OmniSiftConfig",
    "OmniSiftForConditionalGeneration",
    "TrainableParameters",
    "VideoSampling",
    "derive_keep_ratios",
    "freeze",
    "load_audio",
    "load_image",
    "load_video",
]

# Registration: the `omnisift` model type resolves to OmniSIFT through every Auto class users reach for.
AutoConfig.register(OmniSiftConfig.model_type, OmniSiftConfig, exist_ok=True)
for _auto_class in (AutoModel, AutoModelForImageTextToText, AutoModelForMultimodalLM):
    _auto_class.register(OmniSiftConfig, OmniSiftForConditionalGeneration, exist_ok=True)
# The `omni-qa` task: `pipeline("omni-qa", model=...)`. Models load through AutoModelForMultimodalLM (a transformers
# class, so that a saved pipeline's `custom_pipelines` entry resolves in any process).
PIPELINE_REGISTRY.register_pipeline(
    "omni-qa", pipeline_class=OmniQAPipeline, pt_model=AutoModelForMultimodalLM, type="multimodal"
)
