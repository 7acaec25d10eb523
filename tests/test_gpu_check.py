"""The prepared GPU check (`omnisift_hf.tools.gpu_check`): its CPU dry run end to end and its version check."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from omnisift_hf.tools import gpu_check

SCRIPT = Path(gpu_check.__file__)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("gpu_check")
    assert gpu_check.main(["--dry-run", "--output-dir", str(output)]) == 0
    return output, json.loads((output / "gpu_check.json").read_text())


def test_dry_run_writes_few_flat_files(dry_run):
    output, _ = dry_run
    files = sorted(path.name for path in output.iterdir())
    assert files == sorted(gpu_check.RESULT_FILES) and len(files) <= 8
    assert all(path.is_file() for path in output.iterdir())


def test_dry_run_report_is_well_formed(dry_run):
    output, report = dry_run
    assert report["dry_run"] and report["command"].endswith(f"--dry-run --output-dir {output}")
    assert {name: step["status"] for name, step in report["steps"].items()} == dict.fromkeys(
        ("environment", "cuda_tests", "benchmark", "thinker_7b"), "ok"
    )
    env = report["environment"]
    for key in ("device", "driver", "cuda", "torch", "transformers", "omnisift_hf", "python", "dtype"):
        assert key in env
    assert env["transformers"].startswith("5.24.") and report["versions"]["transformers"] == env["transformers"]
    # The CUDA tests ran (skipped without CUDA) and their log came back.
    tests = report["cuda_tests"]
    assert tests["counts"].get("skipped", 0) >= 10 and "test_cuda.py" in tests["command"]
    assert "skipped" in (output / "pytest_cuda.log").read_text()
    assert report["benchmark"]["report"]["environment"]["quick"]
    assert {"prefill", "generate", "batch"} <= set(report["benchmark"]["report"])


def test_dry_run_7b_section(dry_run):
    output, report = dry_run
    section = report["thinker_7b"]
    size = section["size_7b"]
    assert 8.5e9 < size["parameters"] < 9.5e9 and size["bf16_bytes"] == 2 * size["parameters"]
    assert sum(size["parameters_by_part"].values()) == size["parameters"]
    assert section["environment"]["dry_run"] and "not meaningful" in section["timing"]
    assert [clip["seconds"] for clip in section["clips"]] == gpu_check.DRY_RUN["seconds"]
    for clip in section["clips"]:
        rows = {row["keep_ratio"]: row for row in clip["rows"]}
        assert list(rows) == [1.0, 0.35, 0.25]
        assert rows[0.25]["decoder_length"] < rows[0.35]["decoder_length"] < rows[1.0]["decoder_length"]
        for row in rows.values():
            assert row["prefill_s"] > 0 and row["ttft_s"] > 0 and row["generate_s"] > 0
            assert row["new_tokens"] == gpu_check.DRY_RUN["max_new_tokens"]
    batch = {(row["keep_ratio"], row["batch_size"]): row for row in section["batch"]["rows"]}
    assert set(batch) == {(keep, size) for keep in (1.0, 0.35, 0.25) for size in (1, 4, 8)}
    assert batch[0.25, 1]["pad_fraction"] == 0 and batch[0.25, 8]["pad_fraction"] > 0
    assert len(batch[0.25, 8]["padded_lengths"]) == 1 and batch[0.25, 1]["speedup_vs_one_by_one"] == 1
    markdown = (output / "gpu_check.md").read_text()
    for title in ("# GPU check (dry run", "## CUDA tests", "## Benchmark, mid-size config", "Padded batches"):
        assert title in markdown
    assert "8.94 B parameters" in markdown


def test_version_check_names_a_wrong_transformers(monkeypatch, tmp_path):
    real = gpu_check.installed_version
    monkeypatch.setattr(
        gpu_check, "installed_version", lambda name: "4.57.1" if name == "transformers" else real(name)
    )
    with pytest.raises(gpu_check.VersionCheckError, match=r"transformers 4\.57\.1.*transformers==5\.24\.0"):
        gpu_check.check_versions()
    assert gpu_check.main(["--dry-run", "--output-dir", str(tmp_path)]) == 2
    assert not any(tmp_path.iterdir())  # failed before any work


def test_version_check_names_missing_packages(monkeypatch):
    monkeypatch.setattr(gpu_check, "installed_version", lambda name: None)
    monkeypatch.setitem(gpu_check.REQUIRED_MODULES, "omnisift_not_a_module", "omnisift-not-a-package")
    with pytest.raises(gpu_check.VersionCheckError) as error:
        gpu_check.check_versions()
    message = str(error.value)
    assert "transformers is not installed" in message and "torch is not installed" in message
    assert "omnisift-not-a-package" in message and ".whl" in message


def test_version_check_runs_without_importing_the_package():
    # `python src/omnisift_hf/tools/gpu_check.py --check-versions` (what examples/gpu_check.sh runs first).
    code = (
        "import runpy, sys; sys.argv = ['gpu_check.py', '--check-versions']\n"
        f"try:\n    runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\nexcept SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        "assert 'omnisift_hf' not in sys.modules, 'imported the package'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("environment ok: transformers 5.24")
