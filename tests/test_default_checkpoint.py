"""The embedded default (`omnisift_hf.avqa.AVQA_CHECKPOINT`): it loads completely through the Auto classes and the
pipeline, samples frames at the size it was trained at, and answers fresh AVQA clips above chance, with and without
compression, in the answer format it was trained on.

The 40 clips are fixed (seeded), so the accuracies are deterministic: 0.850 at keep 1.0 and 0.800 at keep 0.25 when
the floors were set (chance: 0.317; the default before its selector was retrained with the attention policy: 0.850
and 0.725). The floors sit 0.1 below, so they fail when loading, frame sampling,
preprocessing or compression break, not on noise. The checkpoint's real accuracy is in the README (2,500 test
clips)."""

import numpy as np
import pytest
from transformers import AutoModel, AutoProcessor, pipeline

import omnisift_hf  # noqa: F401  (registers the "omni-qa" pipeline and the "omnisift" model type)
from omnisift_hf import OmniSiftForConditionalGeneration
from omnisift_hf.media import video_sampling_of
from omnisift_hf.tools.avqa import ANSWERS, AVQA_CHECKPOINT, AVQA_VIDEO_SAMPLING, TASKS, make_clip_spec, write_clip

CLIPS_PER_TASK = 8
ACCURACY_FLOOR = {1.0: 0.75, 0.25: 0.70}


def test_the_checkpoint_is_installed_with_the_package():
    names = {path.name for path in AVQA_CHECKPOINT.iterdir()}
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json"} <= names
    assert not any(name.endswith(".py") for name in names)  # no remote-code copies inside the package
    assert sum(path.stat().st_size for path in AVQA_CHECKPOINT.iterdir()) < 8 * 2**20  # "a few MB"


def test_every_weight_is_loaded_and_the_processor_carries_the_frame_size():
    model, info = OmniSiftForConditionalGeneration.from_pretrained(AVQA_CHECKPOINT, output_loading_info=True)
    assert {key: value for key, value in info.items() if value} == {}  # nothing missing, unexpected or mismatched
    assert isinstance(AutoModel.from_pretrained(AVQA_CHECKPOINT), OmniSiftForConditionalGeneration)
    processor = AutoProcessor.from_pretrained(AVQA_CHECKPOINT)
    sampling = video_sampling_of(processor)
    assert (sampling.min_pixels, sampling.max_pixels) == (
        AVQA_VIDEO_SAMPLING.min_pixels,
        AVQA_VIDEO_SAMPLING.max_pixels,
    )


@pytest.fixture(scope="module")
def fresh_clips(tmp_path_factory):
    """CLIPS_PER_TASK clips per task from generators the dataset never uses (3-element seeds)."""
    root = tmp_path_factory.mktemp("fresh")
    requests, answers, tasks = [], [], []
    for task_index, task in enumerate(TASKS):
        for index in range(CLIPS_PER_TASK):
            rng = np.random.default_rng([2026, task_index, index])
            spec = make_clip_spec(task, rng)
            requests.append(
                {"video": write_clip(root / f"{task}-{index}.mkv", spec, rng), "question": spec["question"]}
            )
            answers.append(spec["answer"].strip())
            tasks.append(task)
    return requests, answers, tasks


@pytest.fixture(scope="module")
def pipe():
    return pipeline("omni-qa", model=str(AVQA_CHECKPOINT))


@pytest.mark.slow
@pytest.mark.parametrize("keep_ratio", [1.0, 0.25])
def test_answers_fresh_clips_above_chance(pipe, fresh_clips, keep_ratio):
    requests, answers, tasks = fresh_clips
    results = pipe(requests, batch_size=10, keep_ratio=keep_ratio, max_new_tokens=3)
    predicted = [result["answer"] for result in results]
    for prediction, task in zip(predicted, tasks, strict=True):
        assert prediction in {answer.strip() for answer in ANSWERS[task]}, (task, prediction)  # the answer format
    accuracy = float(np.mean([p == a for p, a in zip(predicted, answers, strict=True)]))
    chance = float(np.mean([1 / len(ANSWERS[task]) for task in tasks]))
    assert accuracy >= ACCURACY_FLOOR[keep_ratio] > chance, (accuracy, chance, predicted, answers)
    if keep_ratio < 1:
        kept = sum(r["num_kept_video_tokens"] + r["num_kept_audio_tokens"] for r in results)
        total = sum(r["num_video_tokens"] + r["num_audio_tokens"] for r in results)
        assert kept / total == pytest.approx(keep_ratio, abs=0.02)


def test_batched_answers_equal_one_by_one(pipe, fresh_clips):
    requests = fresh_clips[0][::CLIPS_PER_TASK]  # one clip per task
    batched = pipe(requests, batch_size=len(requests), max_new_tokens=3)
    single = [pipe(request, max_new_tokens=3) for request in requests]
    assert [r["answer"] for r in batched] == [r["answer"] for r in single]
    assert [r["num_kept_audio_tokens"] for r in batched] == [r["num_kept_audio_tokens"] for r in single]
