"""Shared fixtures: a tiny random OmniSIFT / Qwen2.5-Omni thinker and hand-built multimodal inputs.

Fixtures only; the helpers the test modules import (`build_inputs`, `IDS`, `perturb`, ...) live in `helpers.py`.
"""

import pytest
import torch
from helpers import build_inputs

from omnisift_hf import OmniSiftForConditionalGeneration
from omnisift_hf.testing_utils import tiny_config


@pytest.fixture
def config():
    return tiny_config()


@pytest.fixture
def model(config):
    torch.manual_seed(0)
    return OmniSiftForConditionalGeneration(config).eval()


@pytest.fixture
def av_inputs():
    """One 4-slice video (4 x 8 x 8 patches -> 16 tokens per slice) with ~4 s of audio interleaved."""
    return build_inputs([[("text", 4), ("video", 4, 8, 8, 400), ("text", 5)]])


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "cuda: needs a CUDA device (skipped without one); `python -m omnisift_hf.tools.gpu_check` runs `-m cuda`",
    )
