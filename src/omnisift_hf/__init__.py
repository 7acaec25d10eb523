"""omnisift_hf: OmniSIFT token compression for Qwen2.5-Omni, as a native transformers model.

`import omnisift_hf` registers each backbone's model type with the transformers Auto classes and the `omni-qa`
pipeline task. It imports the library only: the tools (`omnisift_hf.tools`) and the tiny test builders
(`omnisift_hf.testing_utils`) are imported on their own.
"""

import transformers
from transformers import AutoConfig, AutoModelForMultimodalLM
from transformers.pipelines import PIPELINE_REGISTRY

from .compression import KeepRatios, derive_keep_ratios
from .media import LoadedVideo, VideoSampling, load_audio, load_image, load_video
from .models import BACKBONES
from .models.qwen2_5_omni import (
    OmniSiftCausalLMOutputWithPast,
    OmniSiftConfig,
    OmniSiftForConditionalGeneration,
    OmniSiftOmniConfig,
    OmniSiftOmniForConditionalGeneration,
    OmniSiftOmniGenerateOutput,
)
from .pipeline_omni_qa import OmniQAPipeline
from .selector import OmniSiftAudioSelector, TokenSelection
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
    "OmniSiftOmniConfig",
    "OmniSiftOmniForConditionalGeneration",
    "OmniSiftOmniGenerateOutput",
    "TokenSelection",
    "TrainableParameters",
    "VideoSampling",
    "derive_keep_ratios",
    "freeze",
    "load_audio",
    "load_image",
    "load_video",
]

# Registration: each backbone's model type resolves to its OmniSIFT classes through every Auto class users reach for.
for _config_class, _model_class, _auto_class_names in BACKBONES:
    AutoConfig.register(_config_class.model_type, _config_class, exist_ok=True)
    for _name in _auto_class_names:
        getattr(transformers, _name).register(_config_class, _model_class, exist_ok=True)
# The `omni-qa` task: `pipeline("omni-qa", model=...)`. Models load through AutoModelForMultimodalLM (a transformers
# class, so that a saved pipeline's `custom_pipelines` entry resolves in any process).
PIPELINE_REGISTRY.register_pipeline(
    "omni-qa", pipeline_class=OmniQAPipeline, pt_model=AutoModelForMultimodalLM, type="multimodal"
)
