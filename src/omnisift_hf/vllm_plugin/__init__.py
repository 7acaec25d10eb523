"""OmniSIFT for vLLM: an out-of-tree model plugin (entry point group `vllm.general_plugins`, see setup.cfg).

vLLM calls [`register`] in every process it starts. It makes the architectures named in this package's checkpoints
(`OmniSiftForConditionalGeneration`, `OmniSiftOmniForConditionalGeneration`) resolve to
`omnisift_hf.vllm_plugin.model.OmniSiftVllmForConditionalGeneration`, teaches the environment's transformers their
config types, and turns on vLLM's in-model pruning hook for them when their config compresses.

This module imports nothing from vLLM or transformers until `register` runs, and never the package's transformers
modelling code: a vLLM environment pins an older transformers than that code needs.
"""

ARCHITECTURES = ("OmniSiftForConditionalGeneration", "OmniSiftOmniForConditionalGeneration")
MODEL_CLASS = "omnisift_hf.vllm_plugin.model:OmniSiftVllmForConditionalGeneration"

__all__ = ["ARCHITECTURES", "register"]


class _PruningConfigHook:
    """vLLM's per-architecture config hook (`MODELS_CONFIG_MAP`): validates the checkpoint's ratios at start-up and
    enables vLLM's multimodal pruning path (`recompute_mrope_positions`) when they compress."""

    @staticmethod
    def verify_and_update_model_config(model_config) -> None:
        return

    @staticmethod
    def verify_and_update_config(vllm_config) -> None:
        from .config import keep_ratios_of

        model_config = vllm_config.model_config
        thinker = getattr(model_config.hf_config, "thinker_config", model_config.hf_config)
        ratios = keep_ratios_of(thinker)  # a bad ratio in config.json fails here, at load time
        mm_config = model_config.multimodal_config
        if mm_config is None or ratios.is_identity:
            return
        if mm_config.video_pruning_rate:
            raise ValueError(
                f"--video-pruning-rate={mm_config.video_pruning_rate} does not apply to OmniSIFT checkpoints: their "
                "keep ratios come from config.json (keep_ratio, video_keep_ratio, audio_keep_ratio) or from a "
                "request's mm_processor_kwargs. Drop the flag."
            )
        # vLLM runs a model's pruning hook only while a video pruning rate is set: set OmniSIFT's (nominal) video
        # drop fraction, which only this flag reads for this architecture.
        video = ratios.video if ratios.video is not None else ratios.keep
        mm_config.video_pruning_rate = min(max(1.0 - video, 1e-6), 0.999999)


def register() -> None:
    """Register the OmniSIFT architectures and config types with vLLM and the environment's transformers."""
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from vllm import ModelRegistry
    from vllm.model_executor.models.config import MODELS_CONFIG_MAP

    from .config import OmniSiftOmniVllmConfig, OmniSiftVllmConfig

    for config_class in (OmniSiftVllmConfig, OmniSiftOmniVllmConfig):
        # Where omnisift_hf's own transformers model is importable it has registered its configs already.
        if config_class.model_type not in CONFIG_MAPPING:
            AutoConfig.register(config_class.model_type, config_class)
    for architecture in ARCHITECTURES:
        if architecture not in ModelRegistry.get_supported_archs():
            ModelRegistry.register_model(architecture, MODEL_CLASS)
        MODELS_CONFIG_MAP[architecture] = _PruningConfigHook
