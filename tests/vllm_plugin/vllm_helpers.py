"""Helpers of the vLLM tests: the package's own environment runs the transformers references."""

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def main_python() -> str:
    """The package's own environment (transformers 5.24), where the transformers model runs."""
    python = os.environ.get("OMNISIFT_HF_MAIN_PYTHON", str(REPO / ".venv" / "bin" / "python"))
    if not Path(python).exists():
        pytest.fail(
            f"The vLLM tests compare with the transformers model, which runs in the package's own environment; "
            f"{python} does not exist. Create it (README, Install) or set OMNISIFT_HF_MAIN_PYTHON."
        )
    return python


def run_reference(out_dir: Path, *args: str) -> None:
    """`tests/vllm_plugin/reference.py OUT_DIR ARGS` in the package's own environment."""
    subprocess.run(
        [main_python(), str(REPO / "tests" / "vllm_plugin" / "reference.py"), str(out_dir), *args], check=True
    )
