"""omnisift_hf: OmniSIFT token compression for Qwen2.5-Omni and Qwen3-Omni, as native transformers models.

`import omnisift_hf` registers each backbone's model type with the transformers Auto classes and the `omni-qa`
pipeline task. It imports the library only: the tools (`omnisift_hf.tools`) and the tiny test builders
(`omnisift_hf.testing_utils`) are imported on their own.

In an environment whose transformers is not the one the modelling code is written against (a vLLM environment pins
an older one), `import omnisift_hf` still works: it offers the pure token-selection modules (`compression`,
`selector`) and the vLLM plugin (`omnisift_hf.vllm`), registers nothing with transformers, and names the supported
version when anything else is asked for.
"""

import transformers
from packaging.version import Version

from .compression import KeepRatios, derive_keep_ratios
from .selector import OmniSiftAudioSelector, TokenSelection

# The transformers releases the modelling code is written and tested against (setup.cfg pins the same range).
SUPPORTED_TRANSFORMERS = ("5.24", "5.25")
_TRANSFORMERS_SUPPORTED = (
    Version(SUPPORTED_TRANSFORMERS[0])
    <= Version(Version(transformers.__version__).base_version)
    < Version(SUPPORTED_TRANSFORMERS[1])
)

if _TRANSFORMERS_SUPPORTED:
    from transformers import AutoConfig, AutoModelForMultimodalLM
    from transformers.pipelines import PIPELINE_REGISTRY

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
    from .models.qwen3_omni_moe import (
        OmniSiftQwen3OmniCausalLMOutputWithPast,
        OmniSiftQwen3OmniConfig,
        OmniSiftQwen3OmniForConditionalGeneration,
    )
    from .pipeline_omni_qa import OmniQAPipeline
    from .training import (
        EncodedOmniQADataset,
        OmniQADataCollator,
        OmniQADataset,
        TrainableParameters,
        freeze,
        reset_selector,
    )

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
    "OmniSiftQwen3OmniCausalLMOutputWithPast",
    "OmniSiftQwen3OmniConfig",
    "OmniSiftQwen3OmniForConditionalGeneration",
    "TokenSelection",
    "TrainableParameters",
    "VideoSampling",
    "derive_keep_ratios",
    "freeze",
    "load_audio",
    "load_image",
    "load_video",
    "reset_selector",
]


def _unsupported_transformers(name: str):
    raise ImportError(
        f"omnisift_hf.{name} needs transformers>={SUPPORTED_TRANSFORMERS[0]},<{SUPPORTED_TRANSFORMERS[1]}; this "
        f"environment has transformers {transformers.__version__}. A vLLM environment pins an older transformers: "
        "there, serve OmniSIFT checkpoints with vLLM (the plugin `omnisift_hf.vllm` loads by itself), and run the "
        "transformers model in an environment of its own (`pip install omnisift_hf`; README, 'Serving with vLLM')."
    )


if _TRANSFORMERS_SUPPORTED:
    # Registration: each backbone's model type resolves to its OmniSIFT classes through every Auto class users
    # reach for.
    for _config_class, _model_class, _auto_class_names in BACKBONES:
        AutoConfig.register(_config_class.model_type, _config_class, exist_ok=True)
        for _name in _auto_class_names:
            getattr(transformers, _name).register(_config_class, _model_class, exist_ok=True)
    # The `omni-qa` task: `pipeline("omni-qa", model=...)`. Models load through AutoModelForMultimodalLM (a
    # transformers class, so that a saved pipeline's `custom_pipelines` entry resolves in any process).
    PIPELINE_REGISTRY.register_pipeline(
        "omni-qa", pipeline_class=OmniQAPipeline, pt_model=AutoModelForMultimodalLM, type="multimodal"
    )
else:

    def __getattr__(name: str):
        if name in __all__:
            _unsupported_transformers(name)
        raise AttributeError(f"module 'omnisift_hf' has no attribute {name!r}")
