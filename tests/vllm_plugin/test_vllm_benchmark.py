"""The vLLM serving benchmark (`omnisift_hf.tools.vllm_benchmark`) end to end on the tiny config: `prepare --quick`
in the package's own environment (`OMNISIFT_HF_MAIN_PYTHON`, default `<repo>/.venv/bin/python`), `run --quick` in
this one; the report's numbers are consistent and OmniSIFT's savings show (timings are not checked: a smoke run)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm")
# Where pytest puts `tests/` on sys.path (the package's own environment, through tests/conftest.py) and vLLM is not
# installed, `import vllm` finds this folder as a namespace package: ask for a module only the real vLLM has.
pytest.importorskip("vllm.version")

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
REQUESTS = 3
MAX_TOKENS = 4  # `run --quick`


def main_python() -> str:
    """The package's own environment (transformers 5.24), where `prepare` builds the checkpoint."""
    python = os.environ.get("OMNISIFT_HF_MAIN_PYTHON", str(REPO / ".venv" / "bin" / "python"))
    if not Path(python).exists():
        pytest.fail(
            f"The vLLM benchmark's `prepare` step runs in the package's own environment; {python} does not exist. "
            "Create it (README, Install) or set OMNISIFT_HF_MAIN_PYTHON."
        )
    return python


def benchmark(python: str, *args: str) -> None:
    command = [python, "-m", "omnisift_hf.tools.vllm_benchmark", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-4000:]}")


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> tuple[dict, dict, str]:
    out = tmp_path_factory.mktemp("vllm_benchmark")
    benchmark(main_python(), "prepare", str(out), "--quick", "--clips", str(REQUESTS))
    report, markdown = out / "report.json", out / "report.md"
    benchmark(
        sys.executable, "run", str(out), "--quick", "--requests", str(REQUESTS), "--repeats", "2", "--json",
        str(report), "--markdown", str(markdown),
    )  # fmt: skip
    workload = json.loads((out / "workload.json").read_text())
    return workload, json.loads(report.read_text()), markdown.read_text()


def test_prompts_match_the_transformers_model_and_shrink(results):
    workload, report, _ = results
    full, compressed = report["rows"]
    assert (full["keep_ratio"], compressed["keep_ratio"]) == (1.0, 0.25)
    assert report["engine"]["checkpoint_keep_ratio"] == 0.25
    for row in (full, compressed):
        # Every request has a clip of the same length: the same prompt length, the transformers model's.
        assert len(row["prompt_tokens"]) == REQUESTS
        assert set(row["prompt_tokens"]) == {row["prompt_tokens_per_request"]}
        assert row["prompt_tokens_per_request"] == workload["transformers_prompt_tokens"][str(row["keep_ratio"])]
        assert row["generated_tokens"] == [MAX_TOKENS] * REQUESTS
    assert compressed["prompt_tokens_per_request"] < full["prompt_tokens_per_request"]
    assert 0.1 < compressed["prompt_tokens_vs_full"] < 0.6


def test_kv_blocks_and_requests_in_the_budget(results):
    _, report, _ = results
    engine = report["engine"]
    block_size, usable = engine["block_size"], engine["usable_blocks"]
    assert block_size > 0 and usable == engine["num_gpu_blocks"] - 1 > 0
    assert engine["kv_cache_bytes"] == 2**26  # --quick: 1/16 GiB
    for row in report["rows"]:
        assert row["kv_blocks_per_request"] == math.ceil((row["prompt_tokens_per_request"] + MAX_TOKENS) / block_size)
        assert row["requests_fit"] == usable // row["kv_blocks_per_request"] >= REQUESTS
    full, compressed = report["rows"]
    assert compressed["kv_blocks_per_request"] < full["kv_blocks_per_request"]
    assert compressed["requests_fit"] > full["requests_fit"]
    assert compressed["requests_fit_vs_full"] == compressed["requests_fit"] / full["requests_fit"] > 1


def test_throughput_and_report(results):
    _, report, markdown = results
    env = report["environment"]
    assert (env["quick"], env["repeats"], env["warmup"], env["model"]) == (True, 2, 0, "tiny")
    assert env["device"] and env["threads"] >= 1
    assert env["vllm"] and env["torch"] and env["transformers"] and env["omnisift_hf"]
    assert env["command"].startswith("python -m omnisift_hf.tools.vllm_benchmark run ")
    in_process = env["vllm_env"].get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0"
    for row in report["rows"]:
        assert len(row["times_s"]) == 2 and all(seconds > 0 for seconds in row["times_s"])
        assert row["requests_per_s"] == pytest.approx(REQUESTS / row["median_s"])
        for stage in row["rounds"]:
            assert all(stage[key] is not None and stage[key] >= 0 for key in ("frontend_s", "prefill_s", "decode_s"))
            if in_process:  # the engine runs the requests once the frontend has processed them all
                assert stage["frontend_s"] + stage["prefill_s"] + stage["decode_s"] <= stage["total_s"] + 1e-3
    assert report["rows"][1]["throughput_vs_full"] == pytest.approx(
        report["rows"][1]["requests_per_s"] / report["rows"][0]["requests_per_s"]
    )
    assert "| keep | prompt tokens / request |" in markdown and "(equal)." in markdown
