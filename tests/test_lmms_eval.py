"""`--model omnisift` in lmms-eval, on the offline AVQA task of examples/lmms_eval (README: "Evaluating with
lmms-eval"). Runs only where lmms-eval is installed (`pip install -e ".[eval]"` in its own venv; .ci/run does it).

lmms-eval's accuracy on a few AVQA clips must equal omnisift_hf.avqa.evaluate_avqa's on the same clips and checkpoint
(the embedded AVQA_CHECKPOINT): the task asks for one greedy token, so the comparable figure is evaluate_avqa's `top1`
(argmax over the whole vocabulary at the answer position). Batch size 1 and 4 must give the same answers.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lmms_eval")

import torch  # noqa: E402
from lmms_eval.api.instance import Instance  # noqa: E402
from transformers import (  # noqa: E402
    AutoProcessor,
    Qwen2_5OmniThinkerConfig,
    Qwen2_5OmniThinkerForConditionalGeneration,
)

from omnisift_hf import OmniSiftForConditionalGeneration  # noqa: E402
from omnisift_hf.tools.avqa import AVQA_CHECKPOINT, evaluate_avqa, load_avqa_split  # noqa: E402
from omnisift_hf.tools.lmms_eval_model import OmniSift  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "examples" / "lmms_eval"
TASK = "avqa_omnisift"
PER_TASK = 2  # 10 clips: 2 of each AVQA task

pytestmark = pytest.mark.slow


def _offline_env(tmp: Path) -> dict:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HOME=str(tmp / "hf_home"),
        LMMS_EVAL_DATASETS_CACHE=str(tmp / "datasets_cache"),
    )
    return env


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("lmms_eval")


@pytest.fixture(scope="module")
def task_dir(workdir):
    """The recipe's task YAML and utils beside AVQA clips written by its make_data.py (the test split, seed 0)."""
    directory = workdir / "task"
    directory.mkdir()
    for name in ("avqa_omnisift.yaml", "utils.py"):
        shutil.copy(RECIPE / name, directory / name)
    spec = importlib.util.spec_from_file_location("lmms_eval_make_data", RECIPE / "make_data.py")
    make_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_data)
    make_data.write_avqa(directory / "data", per_task=PER_TASK, seed=0)
    return directory


def run_lmms_eval(task_dir: Path, workdir: Path, name: str, model_args: str, batch_size: int, check: bool = True):
    """`python -m lmms_eval --model omnisift ...` offline on CPU; returns (results dict, samples by doc_id) or, with
    `check=False`, the finished process."""
    output = workdir / name
    command = [
        sys.executable, "-m", "lmms_eval", "--model", "omnisift", "--model_args", model_args,
        "--include_path", str(task_dir), "--tasks", TASK, "--batch_size", str(batch_size),
        "--log_samples", "--output_path", str(output),
    ]  # fmt: skip
    process = subprocess.run(
        command, env=_offline_env(workdir), capture_output=True, text=True, timeout=600, cwd=workdir
    )
    if not check:
        return process
    assert process.returncode == 0, process.stdout[-4000:] + process.stderr[-4000:]
    (results_file,) = output.glob("*/*_results.json")
    (samples_file,) = output.glob(f"*/*_samples_{TASK}.jsonl")
    samples = [json.loads(line) for line in samples_file.read_text().splitlines() if line]
    return json.loads(results_file.read_text()), {sample["doc_id"]: sample for sample in samples}


@pytest.fixture(scope="module")
def reference(task_dir):
    """evaluate_avqa on the same clips and checkpoint, OmniSIFT at keep 1.0 and 0.25."""
    model = OmniSiftForConditionalGeneration.from_pretrained(AVQA_CHECKPOINT).eval()
    processor = AutoProcessor.from_pretrained(AVQA_CHECKPOINT)
    examples, metas = load_avqa_split(task_dir / "data", "test")
    with torch.no_grad():
        return evaluate_avqa(
            model, processor, examples, metas, keep_ratios=(1.0, 0.25), methods=("omnisift",), no_audio=False,
            batch_size=5, bootstrap=10,
        )  # fmt: skip


@pytest.fixture(scope="module")
def plain_qwen_checkpoint(workdir):
    """The AVQA checkpoint's weights as a stock Qwen2.5-Omni thinker (model_type qwen2_5_omni_thinker, no selector),
    saved by transformers' own class, with the processor."""
    omnisift = OmniSiftForConditionalGeneration.from_pretrained(AVQA_CHECKPOINT)
    stock_keys = set(Qwen2_5OmniThinkerConfig().to_dict()) - {"architectures", "model_type", "auto_map"}
    config = Qwen2_5OmniThinkerConfig.from_dict(
        {key: value for key, value in omnisift.config.to_dict().items() if key in stock_keys}
    )
    stock = Qwen2_5OmniThinkerForConditionalGeneration(config)
    missing, unexpected = stock.load_state_dict(omnisift.state_dict(), strict=False)
    assert not missing and unexpected  # every stock weight loaded; only the selector's left out
    directory = workdir / "plain-qwen2.5-omni"
    stock.save_pretrained(directory)
    AutoProcessor.from_pretrained(AVQA_CHECKPOINT).save_pretrained(directory)
    # Qwen's own config.json files carry the vision start/end ids (read by the M-RoPE positions), which the stock
    # config class does not declare, so its save drops them.
    saved = json.loads((directory / "config.json").read_text())
    assert saved["model_type"] == "qwen2_5_omni_thinker"
    saved.update({key: getattr(omnisift.config, key) for key in ("vision_start_token_id", "vision_end_token_id")})
    (directory / "config.json").write_text(json.dumps(saved, indent=2))
    return directory


def _answers(samples: dict) -> dict:
    return {doc_id: sample["filtered_resps"] for doc_id, sample in samples.items()}


_COUNT_KEYS = ("num_video_tokens", "num_kept_video_tokens", "num_audio_tokens", "num_kept_audio_tokens")


def _kept_row(sample: dict) -> tuple[int, int, int, int]:
    return tuple(sample["token_counts"][0][key] for key in _COUNT_KEYS)


def _kept(samples: dict) -> tuple[int, int, int, int]:
    return tuple(sum(_kept_row(sample)[k] for sample in samples.values()) for k in range(4))


def test_entry_point_registers_omnisift_without_importing_the_package():
    code = (
        "import sys, lmms_eval.models as m; "
        "print(m.get_model_manifest('omnisift').simple_class_path, 'omnisift_hf' in sys.modules, "
        "'transformers' in sys.modules)"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert output == ["omnisift_hf.tools.lmms_eval_model.OmniSift", "False", "False"]


def test_accuracy_equals_evaluate_avqa_and_batch_sizes_agree(task_dir, workdir, reference):
    args = f"pretrained={AVQA_CHECKPOINT},keep_ratio=0.25,device=cpu"
    results_1, samples_1 = run_lmms_eval(task_dir, workdir, "bs1", args, batch_size=1)
    results_4, samples_4 = run_lmms_eval(task_dir, workdir, "bs4", args, batch_size=4)
    assert len(samples_1) == len(samples_4) == 5 * PER_TASK
    assert _answers(samples_1) == _answers(samples_4)
    assert [s["token_counts"] for s in samples_1.values()] == [s["token_counts"] for s in samples_4.values()]

    expected = reference["conditions"]["omnisift@0.25"]
    for results in (results_1, results_4):
        assert results["results"][TASK]["accuracy,none"] == pytest.approx(expected["top1"], abs=1e-9)
    # Clip by clip (lmms-eval's doc_id is the line of test.jsonl, evaluate_avqa's order): the same right answers and
    # the same kept-token counts.
    rows = reference["per_clip"]["omnisift@0.25"]
    assert [samples_4[i]["accuracy"] for i in range(len(rows))] == [float(row["top1"]) for row in rows]
    assert [_kept_row(samples_4[i]) for i in range(len(rows))] == [
        (row["video_tokens"], row["kept_video"], row["audio_tokens"], row["kept_audio"]) for row in rows
    ]
    video, kept_video, audio, kept_audio = _kept(samples_4)
    assert kept_video < video and kept_audio < audio
    # ... and reach lmms-eval's own summaries: efficiency (input tokens = the prefill after compression) and
    # throughput (averages of the counts).
    counts = [s["token_counts"][0] for s in samples_4.values()]
    efficiency = results_4["efficiency"]["overall"]
    assert efficiency["total_input_tokens"] == sum(c["input_tokens"] for c in counts)
    assert efficiency["total_output_tokens"] == sum(c["output_tokens"] for c in counts) >= len(counts)
    assert all(c["input_tokens"] < c["prompt_tokens"] for c in counts)
    throughput = results_4["throughput"]
    assert throughput["avg_kept_video_tokens_per_sample"] == pytest.approx(kept_video / len(counts))
    assert throughput["avg_media_retention"] == pytest.approx((kept_video + kept_audio) / (video + audio))


def test_plain_qwen2_5_omni_weights_at_keep_ratio_1(task_dir, workdir, reference, plain_qwen_checkpoint):
    args = f"pretrained={plain_qwen_checkpoint},keep_ratio=1.0,device=cpu,dtype=float32"
    results, samples = run_lmms_eval(task_dir, workdir, "plain", args, batch_size=4)
    expected = reference["conditions"]["omnisift@1"]
    assert results["results"][TASK]["accuracy,none"] == pytest.approx(expected["top1"], abs=1e-9)
    rows = reference["per_clip"]["omnisift@1"]
    assert [samples[i]["accuracy"] for i in range(len(rows))] == [float(row["top1"]) for row in rows]
    video, kept_video, audio, kept_audio = _kept(samples)
    assert (kept_video, kept_audio) == (video, audio) and video > 0 and audio > 0  # every token, audio included


def test_bad_model_args_name_the_argument(task_dir, workdir):
    process = run_lmms_eval(
        task_dir, workdir, "bad", f"pretrained={AVQA_CHECKPOINT},keep_ration=0.25", batch_size=1, check=False
    )
    # lmms-eval's CLI prints the model's error and its traceback, writes no results, and exits 0 (it re-raises only
    # with --verbosity DEBUG).
    assert "unknown model_args ['keep_ration']" in process.stdout + process.stderr
    assert not list((workdir / "bad").glob("*/*_results.json"))
    with pytest.raises(ValueError, match="keep_ratio=1.5"):
        OmniSift(pretrained=str(AVQA_CHECKPOINT), keep_ratio=1.5, device="cpu")
    with pytest.raises(ValueError, match="dtype='float8'"):
        OmniSift(pretrained=str(AVQA_CHECKPOINT), dtype="float8", device="cpu")
    with pytest.raises(ValueError, match="batch_size=0"):
        OmniSift(pretrained=str(AVQA_CHECKPOINT), batch_size=0, device="cpu")
    with pytest.raises(ValueError, match="pretrained=None"):
        OmniSift(device="cpu")
    with pytest.raises(ValueError, match="batch_size given twice"):
        OmniSift.create_from_arg_string(f"pretrained={AVQA_CHECKPOINT},batch_size=2", {"batch_size": "4"})


def test_failed_generation_raises_instead_of_scoring_empty(task_dir):
    model = OmniSift(pretrained=str(AVQA_CHECKPOINT), device="cpu")
    model.task_dict = {TASK: {"test": [{"video": "missing.mkv"}]}}
    request = Instance(
        request_type="generate_until",
        arguments=("What color?", {"max_new_tokens": 1}, lambda doc: [str(task_dir / doc["video"])], 0, TASK, "test"),
        idx=0,
        metadata={"task": TASK, "doc_id": 0, "repeats": 1},
    )
    with pytest.raises(RuntimeError, match=f"generation failed .*{TASK}/0") as error:
        model.generate_until([request])
    assert isinstance(error.value.__cause__, FileNotFoundError)


def test_media_tags_place_each_item_and_a_video_brings_its_audio(task_dir):
    model = OmniSift(pretrained=str(AVQA_CHECKPOINT), device="cpu")
    docs = [json.loads(line) for line in (task_dir / "data" / "test.jsonl").read_text().splitlines()][:2]
    model.task_dict = {TASK: {"test": docs}}

    def request(context, doc_id):
        return Instance(
            request_type="generate_until",
            arguments=(
                context,
                {"max_new_tokens": 1},
                lambda doc: [str(task_dir / "data" / doc["video"])],
                doc_id,
                TASK,
                "test",
            ),
            idx=doc_id,
            metadata={"task": TASK, "doc_id": doc_id, "repeats": 1},
        )

    tagged = request("Watch <media_0> and answer: " + docs[0]["question"], 0)
    (turn,) = model._pipe_request(tagged)
    assert [item["type"] for item in turn["content"]] == ["text", "video", "text"]
    plain = request(docs[1]["question"], 1)
    assert [item["type"] for item in model._pipe_request(plain)[0]["content"]] == ["video", "text"]
    results = model.generate_until([tagged, plain])
    assert [r.token_counts.num_audio_tokens > 0 for r in results] == [True, True]  # the clips' own audio was fed
