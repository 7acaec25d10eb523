"""The package layout: the library never imports the tooling, and the old import paths of the tools still work."""

import subprocess
import sys

import pytest


@pytest.mark.slow
def test_import_omnisift_hf_imports_no_tooling():
    code = "import sys, omnisift_hf; print(' '.join(sorted(m for m in sys.modules if m.startswith('omnisift_hf'))))"
    loaded = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    assert "omnisift_hf.models.qwen2_5_omni.modeling_omnisift" in loaded
    assert [m for m in loaded if m.startswith("omnisift_hf.tools") or m == "omnisift_hf.testing_utils"] == []
    assert "omnisift_hf.avqa" not in loaded and "omnisift_hf.benchmark" not in loaded


def test_former_tool_paths_still_import():
    from omnisift_hf import avqa, benchmark
    from omnisift_hf.tools import avqa as tools_avqa
    from omnisift_hf.tools import benchmark as tools_benchmark

    assert avqa.AVQA_CHECKPOINT == tools_avqa.AVQA_CHECKPOINT and avqa.AVQA_CHECKPOINT.is_dir()
    assert benchmark.main is tools_benchmark.main


@pytest.mark.slow
@pytest.mark.parametrize("module", ["omnisift_hf.benchmark", "omnisift_hf.tools.benchmark"])
def test_benchmark_module_runs_as_a_script(module):
    result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "--sections" in result.stdout
