"""The vLLM tests run in a vLLM environment of their own (README, "Serving with vLLM"; `.ci/run` creates it) and are
skipped where vLLM is not installed. They compare vLLM with the transformers model, which runs in the package's own
environment: `OMNISIFT_HF_MAIN_PYTHON` (default `<repo>/.venv/bin/python`) builds the references."""

import os
from pathlib import Path

import pytest

# An engine in this process (no engine-core subprocess, small KV cache, no thread pinning on a 2-core machine).
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")


@pytest.fixture(scope="session")
def reference(tmp_path_factory) -> Path:
    """Tiny checkpoints (keep 0.25 and 1.0, same weights), media and the transformers model's results."""
    from vllm_helpers import run_reference

    out = tmp_path_factory.mktemp("vllm_reference")
    run_reference(out)
    return out
