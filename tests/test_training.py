"""Training OmniSIFT with `transformers.Trainer`: freezing policies, the JSONL data path, the STE gradient, label
alignment with the kept sequence, checkpoint round trips and activation checkpointing."""

import json
import logging
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import Trainer, TrainingArguments, pipeline

import omnisift_hf  # noqa: F401  (registers the "omni-qa" pipeline)
from omnisift_hf import OmniSiftForConditionalGeneration
from omnisift_hf.testing_utils import TINY_TOKEN_IDS, tiny_model, tiny_processor
from omnisift_hf.tools.synthetic import write_synthetic_audio, write_synthetic_clip
from omnisift_hf.training import (
    FREEZE_POLICIES,
    PARAMETER_GROUPS,
    EncodedOmniQADataset,
    OmniQADataCollator,
    OmniQADataset,
    OmniQAExample,
    count_trainable_parameters,
    freeze,
    reset_selector,
)

EXAMPLES = [
    {"video": "clips/red.mp4", "question": "What color is the square?", "answer": "The square is red."},
    {
        "audio": "tone.wav",
        "conversation": [
            {"role": "user", "content": "What sound do you hear in the audio?"},
            {"role": "assistant", "content": "I hear a low tone."},
        ],
    },
    {
        "system": "You describe clips.",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "video", "video": "clips/green.mp4"}, {"type": "text", "text": "Hi"}],
            },
            {"role": "assistant", "content": "What is happening in this video?"},
            {"role": "user", "content": "What color is the box?"},
            {"role": "assistant", "content": [{"type": "text", "text": "The box is green."}]},
        ],
    },
]
ANSWERS = ["The square is red.", "I hear a low tone.", "The box is green."]
# Qwen2.5-Omni's audio encoder holds begin/end-of-audio embeddings that the thinker never uses: no gradient, no update.
UNUSED_PARAMETERS = {"model.audio_tower.audio_bos_eos_token.weight"}
GROUPS_OF_POLICY = {policy: set(groups) & set(PARAMETER_GROUPS) for policy, groups in FREEZE_POLICIES.items()}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Two 2-second clips with sound, a 1-second tone and a JSONL file that refers to them by relative paths."""
    root = tmp_path_factory.mktemp("data")
    (root / "clips").mkdir()
    write_synthetic_clip(root / "clips" / "red.mp4", seconds=2.0, fps=4, size=(56, 56))
    write_synthetic_clip(root / "clips" / "green.mp4", seconds=2.0, fps=4, size=(56, 56))
    write_synthetic_audio(root / "tone.wav", seconds=1.0)
    (root / "train.jsonl").write_text("".join(json.dumps(example) + "\n" for example in EXAMPLES))
    return root


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


@pytest.fixture(scope="module")
def dataset(data_dir):
    return OmniQADataset(data_dir / "train.jsonl")


@pytest.fixture(scope="module")
def batch(dataset, processor):
    """A clip with sound and an audio-only example, left-padded, compressed at keep_ratio 0.25."""
    return OmniQADataCollator(processor, keep_ratio=0.25)([dataset[0], dataset[1]])


def _trainable_model(policy: str, seed: int = 0) -> OmniSiftForConditionalGeneration:
    model = tiny_model(seed)
    freeze(model, policy)
    return model


def _training_args(output_dir, **overrides) -> TrainingArguments:
    settings = {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": 2,
        "max_steps": 1,
        "learning_rate": 1e-2,
        "use_cpu": True,
        "report_to": "none",
        "save_strategy": "no",
        "logging_steps": 1,
        "dataloader_num_workers": 0,
        "seed": 0,
    }
    settings.update(overrides)
    return TrainingArguments(**settings)


def _parameters(model) -> dict[str, torch.Tensor]:
    return {name: parameter.detach().clone() for name, parameter in model.named_parameters()}


def _group(name: str) -> str:
    return next(group for group, prefix in PARAMETER_GROUPS.items() if name.startswith(prefix))


# ---------------------------------------------------------------------------------------------------------------------
# Freezing policies
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("estimator", "distillation"),
    [("ste", 0.0), ("attention_policy", 0.0), ("ste", 1.0), ("attention_policy", 1.0)],
    ids=["ste", "attention_policy", "ste+distillation", "attention_policy+distillation"],
)
@pytest.mark.parametrize("policy", ["selector", "paper", "full"])
def test_one_trainer_step_changes_exactly_the_trained_groups(
    policy, estimator, distillation, dataset, processor, tmp_path
):
    model = tiny_model(selector_estimator=estimator, selector_distillation_weight=distillation)
    counts = freeze(model, policy)
    trained = GROUPS_OF_POLICY[policy]
    assert counts.policy == policy
    assert set(counts.total) == set(PARAMETER_GROUPS)  # no parameter outside the known groups
    for group in PARAMETER_GROUPS:
        assert counts.trainable[group] == (counts.total[group] if group in trained else 0), group
    assert counts.num_trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert count_trainable_parameters(model).trainable == counts.trainable

    before = _parameters(model)
    trainer = Trainer(
        model=model,
        args=_training_args(tmp_path),  # remove_unused_columns left at its default (True)
        train_dataset=torch.utils.data.Subset(dataset, [0, 1]),
        data_collator=OmniQADataCollator(processor, keep_ratio=0.25),
    )
    trainer.train()
    changed = {name for name, value in _parameters(model).items() if not torch.equal(value, before[name])}
    frozen_changed = sorted(name for name in changed if _group(name) not in trained)
    trained_unchanged = sorted(
        name for name in before if _group(name) in trained and name not in changed | UNUSED_PARAMETERS
    )
    assert not frozen_changed, f"frozen parameters changed: {frozen_changed}"
    assert not trained_unchanged, f"trained parameters did not change: {trained_unchanged}"


def test_unknown_policy_or_model_raise_clearly():
    with pytest.raises(ValueError, match=r"'decoder'.*'selector', 'paper', 'full'"):
        freeze(tiny_model(), "decoder")
    with pytest.raises(TypeError, match="OmniSiftForConditionalGeneration.*Linear"):
        freeze(torch.nn.Linear(2, 2), "full")


def test_reset_selector_reinitialises_only_the_selector_reproducibly():
    """`reset_selector`: new selector weights as a fresh model draws them (biases 0, norms 1, weights at the configured
    init scale), the same for the same seed, everything else and the global random state untouched."""
    model, other = tiny_model(), tiny_model()
    for parameter in model.compressor.parameters():
        parameter.data.add_(1.0)  # stands in for a trained selector
    before, rng = _parameters(model), torch.get_rng_state()
    reset_selector(model, seed=3)
    reset_selector(other, seed=3)
    assert torch.equal(torch.get_rng_state(), rng)
    after = _parameters(model)
    for name, value in after.items():
        assert torch.equal(value, before[name]) != name.startswith("compressor."), name
        if name.startswith("compressor."):
            assert torch.equal(value, _parameters(other)[name]), name
    selector = model.compressor
    assert torch.all(selector.a_proj.bias == 0) and torch.all(selector.a_norm.weight == 1)
    scale = model.config.get_text_config().initializer_range
    assert 0.7 * scale < float(selector.score_head[0].weight.std()) < 1.3 * scale
    reset_selector(other, seed=4)
    assert not torch.equal(other.compressor.a_proj.weight, selector.a_proj.weight)
    with pytest.raises(TypeError, match="Linear has no OmniSIFT audio selector"):
        reset_selector(torch.nn.Linear(2, 2))


def test_counts_are_printable():
    text = str(freeze(tiny_model(), "paper"))
    assert text.startswith("freeze policy 'paper': ")
    assert all(group in text for group in PARAMETER_GROUPS)


# ---------------------------------------------------------------------------------------------------------------------
# The straight-through estimator and label alignment
# ---------------------------------------------------------------------------------------------------------------------
def test_selector_policy_gradients_reach_only_the_selector(batch):
    model = _trainable_model("selector").train()
    out = model(**batch)
    assert out.num_kept_audio_tokens[0] < out.num_audio_tokens[0]  # audio was dropped: the gate is in the graph
    out.loss.backward()
    for name, parameter in model.named_parameters():
        if name.startswith("compressor."):
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        else:
            assert parameter.grad is None, name


def test_loss_equals_cross_entropy_on_the_hand_pruned_sequence(batch):
    """Gather labels with the output's kept_token_index by hand; the model's loss must equal that cross-entropy, and
    every kept label must be the token that sits at its kept position."""
    model = tiny_model().train()
    out = model(**batch)
    index, mask = out.kept_token_index, out.kept_attention_mask  # (B, K)
    assert index.shape[1] < batch["input_ids"].shape[1]  # the sequence really was shortened
    labels = batch["labels"].gather(1, index).masked_fill(mask == 0, -100)
    answer = labels != -100
    assert answer.sum() == (batch["labels"] != -100).sum()  # compression never drops answer tokens
    assert torch.equal(labels[answer], batch["input_ids"].gather(1, index)[answer])
    vocab = out.logits.shape[-1]
    expected = torch.nn.functional.cross_entropy(
        out.logits[:, :-1].reshape(-1, vocab).float(), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    torch.testing.assert_close(out.loss, expected, rtol=1e-6, atol=1e-6)


def test_keep_ratio_in_the_batch_reaches_forward(dataset, processor):
    model = tiny_model()
    examples = [dataset[0]]
    with torch.no_grad():
        kept = {
            ratio: model(**OmniQADataCollator(processor, keep_ratio=ratio)(examples)) for ratio in (1.0, 0.5, 0.25)
        }
    media = {r: out.num_kept_video_tokens + out.num_kept_audio_tokens for r, out in kept.items()}
    total = kept[1.0].num_video_tokens + kept[1.0].num_audio_tokens
    assert torch.equal(media[1.0], total)
    assert total[0] > media[0.5][0] > media[0.25][0]
    batch = OmniQADataCollator(processor, video_keep_ratio=0.5, audio_keep_ratio=1.0)(examples)
    assert batch["video_keep_ratio"] == 0.5 and "keep_ratio" not in batch


@pytest.mark.slow
def test_several_keep_ratios_draw_one_per_batch_reproducibly(dataset, processor):
    collator = OmniQADataCollator(processor, keep_ratio=[1.0, 0.25])
    assert collator.keep_ratio == (1.0, 0.25)
    examples = [dataset[0]]
    random.seed(0)
    drawn = [collator(examples)["keep_ratio"] for _ in range(24)]
    assert set(drawn) == {1.0, 0.25}
    random.seed(0)
    assert [collator(examples)["keep_ratio"] for _ in range(24)] == drawn  # Trainer's seed fixes the sequence
    single = OmniQADataCollator(processor, keep_ratio=[0.5])
    assert single.keep_ratio == 0.5  # one value is a fixed ratio: nothing drawn, Python's random left untouched
    state = random.getstate()
    assert single(examples)["keep_ratio"] == 0.5
    assert random.getstate() == state


@pytest.mark.parametrize(
    "keep_ratio, error, pattern",
    [
        ([], ValueError, r"keep_ratio=\[\] is empty"),
        ((1.0, 1.5), ValueError, r"keep_ratio\[1\]"),
        ((0.25, "half"), TypeError, r"keep_ratio\[1\].*'half'"),
        ("0.25", TypeError, r"keep_ratio.*'0.25'"),
    ],
)
def test_bad_keep_ratios_name_the_entry(processor, keep_ratio, error, pattern):
    with pytest.raises(error, match=pattern):
        OmniQADataCollator(processor, keep_ratio=keep_ratio)


# ---------------------------------------------------------------------------------------------------------------------
# The collator
# ---------------------------------------------------------------------------------------------------------------------
def test_labels_cover_exactly_the_answer_and_padding_is_on_the_left(dataset, processor):
    batch = OmniQADataCollator(processor)(list(dataset))
    tokenizer = processor.tokenizer
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert ids.shape == mask.shape == labels.shape
    for row, answer in enumerate(ANSWERS):
        target = labels[row] != -100
        assert tokenizer.decode(labels[row][target]) == answer + "<|im_end|>"
        # The answer is the end of the row, right after the assistant header; everything before is masked.
        length = int(target.sum())
        assert target[-length:].all() and not target[:-length].any()
        header = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
        assert ids[row, -length - len(header) : -length].tolist() == header
        # Left padding: zeros then ones in the mask, pad ids where the mask is 0.
        padding = int((mask[row] == 0).sum())
        assert mask[row, padding:].all() and (ids[row, :padding] == tokenizer.pad_token_id).all()
    media = (ids == TINY_TOKEN_IDS["video"]) | (ids == TINY_TOKEN_IDS["audio"])
    assert media.any() and (labels[media] == -100).all()
    assert int((mask == 0).sum()) > 0  # rows of different lengths were padded
    # The earlier assistant turn of the multi-turn example is context, not a target.
    assert "What is happening" in tokenizer.decode(ids[2]) and "What is happening" not in tokenizer.decode(
        labels[2][labels[2] != -100]
    )
    assert batch["use_audio_in_video"] is True and batch["video_grid_thw"].shape[0] == 2


def test_collator_explains_stripped_features(processor):
    with pytest.raises(TypeError, match="remove_unused_columns=False"):
        OmniQADataCollator(processor)([{"use_audio_in_video": None}])


def test_collator_names_the_line_of_an_unreadable_media_file(tmp_path, processor):
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    (tmp_path / "data.jsonl").write_text(json.dumps({"video": "broken.mp4", "question": "Q?", "answer": "A."}) + "\n")
    example = OmniQADataset(tmp_path / "data.jsonl")[0]
    with pytest.raises(ValueError, match=r"data\.jsonl, line 1: .*broken\.mp4"):
        OmniQADataCollator(processor)([example])


def test_collator_rejects_answers_with_special_tokens(processor, data_dir):
    example = OmniQAExample(
        messages=[{"role": "user", "content": [{"type": "text", "text": "Q?"}]}],
        answer="<|VIDEO|>",
        source="mine.jsonl, line 9",
    )
    with pytest.raises(ValueError, match=r"mine\.jsonl, line 9: .*special tokens"):
        OmniQADataCollator(processor)([example])


# ---------------------------------------------------------------------------------------------------------------------
# Encode once, train many epochs
# ---------------------------------------------------------------------------------------------------------------------
def _assert_same_batch(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for key, value in first.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, second[key]), key
        else:
            assert value == second[key], key


def test_encoded_dataset_gives_the_batches_of_the_media(dataset, processor, tmp_path):
    collator = OmniQADataCollator(processor, keep_ratio=0.5)
    encoded = EncodedOmniQADataset(dataset, collator, tmp_path / "cache", num_workers=1)
    assert len(encoded) == len(dataset) == len(list((tmp_path / "cache").glob("*.safetensors")))
    # clips with their sound, an audio file, a multi-turn chat with a system turn
    _assert_same_batch(collator(list(dataset)), collator(list(encoded)))
    assert encoded[0]["source"] == dataset[0].source and encoded[0]["use_audio_in_video"] is True
    assert encoded[1]["use_audio_in_video"] is None
    # A batch mixing clips with and without their sound is refused like one of raw examples, naming the lines.
    with pytest.raises(ValueError, match=r"train\.jsonl, line 1.*train\.jsonl, line 3"):
        collator([encoded[0], {**encoded[2], "use_audio_in_video": False}])


def test_encoded_dataset_resumes_and_refuses_a_cache_of_other_settings(dataset, processor, tmp_path):
    collator = OmniQADataCollator(processor)
    first = EncodedOmniQADataset(dataset, collator, tmp_path)
    kept = first.paths[0].stat().st_mtime_ns
    first.paths[1].unlink()  # as if interrupted
    again = EncodedOmniQADataset(dataset, collator, tmp_path)
    assert again.paths[1].exists() and again.paths[0].stat().st_mtime_ns == kept  # only the missing one re-encoded
    _assert_same_batch(collator([dataset[1]]), collator([again[1]]))
    with pytest.raises(ValueError, match=r"cache_dir=.*differs in \['system_prompt'\]"):
        EncodedOmniQADataset(dataset, OmniQADataCollator(processor, system_prompt="Be brief."), tmp_path)
    # A part of the dataset (or another dataset) finds its own examples: the cache is keyed on each example's content.
    subset = EncodedOmniQADataset([dataset[2]], collator, tmp_path)
    assert subset.paths == [first.paths[2]] and subset[0]["source"] == dataset[2].source
    twice = EncodedOmniQADataset([dataset[1], dataset[1]], collator, tmp_path)  # one file for two equal examples
    assert twice.paths == [first.paths[1]] * 2
    with pytest.raises(ValueError, match="num_workers=-1"):
        EncodedOmniQADataset(dataset, collator, tmp_path, num_workers=-1)


def _copy_of_the_data(data_dir: Path, root: Path) -> Path:
    """The module's JSONL file and media, copied (modification times kept) into `root`, which the test may edit."""
    for name in ("clips/red.mp4", "clips/green.mp4", "tone.wav", "train.jsonl"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes((data_dir / name).read_bytes())
    return root / "train.jsonl"


def _answer(sample: dict, tokenizer) -> str:
    return tokenizer.decode(sample["labels"][sample["labels"] != -100])


def test_encoded_dataset_re_encodes_exactly_the_edited_examples(data_dir, processor, tmp_path):
    """An answer edited in the JSONL (same number of lines) and a media file rewritten: those examples are encoded
    again, the others are reused as they are, and the labels are the new answer's."""
    path = _copy_of_the_data(data_dir, tmp_path / "data")
    collator, tokenizer = OmniQADataCollator(processor), processor.tokenizer
    first = EncodedOmniQADataset(OmniQADataset(path), collator, tmp_path / "cache")
    times = [file.stat().st_mtime_ns for file in first.paths]
    assert _answer(first[0], tokenizer) == ANSWERS[0] + "<|im_end|>"

    edited = [dict(example) for example in EXAMPLES]
    edited[0]["answer"] = "The square is blue."
    path.write_text("".join(json.dumps(example) + "\n" for example in edited))
    again = EncodedOmniQADataset(OmniQADataset(path), collator, tmp_path / "cache")
    assert _answer(again[0], tokenizer) == "The square is blue.<|im_end|>"
    assert [file.stat().st_mtime_ns for file in again.paths[1:]] == times[1:]  # untouched examples reused

    # The tone rewritten (other samples, other size): its example's audio features are encoded again.
    write_synthetic_audio(tmp_path / "data" / "tone.wav", seconds=1.5)
    third = EncodedOmniQADataset(OmniQADataset(path), collator, tmp_path / "cache")
    assert third.paths[0] == again.paths[0] and third.paths[2] == again.paths[2] and third.paths[1] != again.paths[1]
    _assert_same_batch(collator([OmniQADataset(path)[1]]), collator([third[1]]))
    assert third[1]["input_features"].shape != again[1]["input_features"].shape


def test_encoded_dataset_detects_damaged_files(dataset, processor, tmp_path, caplog):
    """A file cut short (a crash in the middle of a write, a full disk) is encoded again when the dataset is opened,
    with a warning; one damaged while training is refused with an error naming the file and the fix."""
    collator = OmniQADataCollator(processor)
    first = EncodedOmniQADataset(dataset, collator, tmp_path)
    whole = first.paths[0].read_bytes()
    first.paths[0].write_bytes(whole[: len(whole) // 2])
    logging.Logger.warning_once.cache_clear()
    with caplog.at_level(logging.WARNING):
        again = EncodedOmniQADataset(dataset, collator, tmp_path)
    assert first.paths[0].name in caplog.text and "encoding the example(s) again" in caplog.text
    assert again.paths[0].stat().st_size == len(whole)  # whole again (the header's key order may differ)
    _assert_same_batch(collator([dataset[0]]), collator([again[0]]))

    again.paths[0].write_bytes(whole[:100])
    with pytest.raises(ValueError, match=rf"{re.escape(again.paths[0].name)}.*delete it"):
        again[0]
    again.paths[0].unlink()
    with pytest.raises(FileNotFoundError, match=rf"{re.escape(again.paths[0].name)}.*EncodedOmniQADataset again"):
        again[0]
    assert not list(tmp_path.glob("*.tmp"))  # complete files only: written to a temporary name, then renamed


# ---------------------------------------------------------------------------------------------------------------------
# The JSONL file
# ---------------------------------------------------------------------------------------------------------------------
def test_dataset_resolves_paths_against_the_jsonl_directory(dataset, data_dir):
    assert len(dataset) == 3
    first = dataset[0]
    assert first.messages[0]["content"][0] == {"type": "video", "video": str(data_dir / "clips" / "red.mp4")}
    assert first.answer == ANSWERS[0] and first.source.endswith("train.jsonl, line 1")
    assert dataset[1].messages == [
        {
            "role": "user",
            "content": [
                {"type": "audio", "audio": str(data_dir / "tone.wav")},
                {"type": "text", "text": "What sound do you hear in the audio?"},
            ],
        }
    ]
    assert dataset[2].messages[0] == {"role": "system", "content": [{"type": "text", "text": "You describe clips."}]}


@pytest.mark.parametrize(
    "bad_line, error, pattern",
    [
        ('{"video": "clips/red.mp4", "question": "Q?", "answer": "A."', ValueError, "not valid JSON"),
        (json.dumps({"video": "clips/missing.mp4", "question": "Q?", "answer": "A."}), FileNotFoundError, "missing"),
        (json.dumps({"audio": "tone.wav", "question": "Q?"}), ValueError, "`answer` must be a non-empty string"),
        (json.dumps({"vidoe": "clips/red.mp4", "question": "Q?", "answer": "A."}), ValueError, "unknown key"),
        (json.dumps({"messages": [{"role": "user", "content": "Q?"}]}), ValueError, "last turn must be the assistant"),
    ],
    ids=["malformed-json", "missing-media", "no-answer", "typo-key", "no-assistant-turn"],
)
def test_bad_lines_raise_naming_the_file_and_line(data_dir, tmp_path, bad_line, error, pattern):
    path = data_dir / f"bad-{tmp_path.name}.jsonl"
    good = json.dumps(EXAMPLES[0])
    path.write_text(f"{good}\n\n{good}\n{bad_line}\n{good}\n")  # line 2 is blank; the bad one is line 4
    with pytest.raises(error, match=rf"{re.escape(path.name)}, line 4: .*{pattern}"):
        OmniQADataset(path)


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(dataset, processor, tmp_path_factory):
    """Two Trainer steps ("paper" policy) with a checkpoint after each, then `save_model` + the processor."""
    root = tmp_path_factory.mktemp("run")
    args = _training_args(root / "run", max_steps=2, save_strategy="steps", save_steps=1, learning_rate=1e-3)
    model = _trainable_model("paper")
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=torch.utils.data.Subset(dataset, [0, 1]),
        data_collator=OmniQADataCollator(processor, keep_ratio=0.25),
    )
    trainer.train()
    trainer.save_model(root / "final")
    processor.save_pretrained(root / "final")
    return {"args": args, "final": root / "final", "checkpoint": root / "run" / "checkpoint-1", "trained": model}


def test_saved_model_loads_with_from_pretrained_and_pipeline(finished_run, dataset):
    trained = _parameters(finished_run["trained"])
    loaded = OmniSiftForConditionalGeneration.from_pretrained(finished_run["final"])
    assert _parameters(loaded).keys() == trained.keys()
    assert all(torch.equal(value, trained[name]) for name, value in _parameters(loaded).items())
    assert not torch.equal(trained["compressor.a_proj.weight"], tiny_model().compressor.a_proj.weight)

    pipe = pipeline("omni-qa", model=str(finished_run["final"]))
    result = pipe(video=dataset[0].messages[0]["content"][0]["video"], question="Color?", max_new_tokens=2)
    assert isinstance(result["answer"], str) and result["num_kept_video_tokens"] < result["num_video_tokens"]


def _resume(finished_run, dataset, processor, model) -> None:
    """Resume the finished run from its first checkpoint; the weights must end where the uninterrupted run ended."""
    trainer = Trainer(
        model=model,
        args=finished_run["args"],
        train_dataset=torch.utils.data.Subset(dataset, [0, 1]),
        data_collator=OmniQADataCollator(processor, keep_ratio=0.25),
    )
    trainer.train(resume_from_checkpoint=str(finished_run["checkpoint"]))
    assert trainer.state.global_step == 2
    trained = _parameters(finished_run["trained"])
    for name, value in _parameters(model).items():
        torch.testing.assert_close(value, trained[name], rtol=1e-5, atol=1e-6, msg=name)


def test_resume_with_the_model_loaded_from_the_checkpoint(finished_run, dataset, processor):
    """What examples/train.py --resume-from-checkpoint does: weights through `from_pretrained` (which reads the saved
    key layout), optimiser, scheduler and RNG states through the Trainer."""
    model = OmniSiftForConditionalGeneration.from_pretrained(finished_run["checkpoint"])
    freeze(model, "paper")
    _resume(finished_run, dataset, processor, model)


def test_resume_from_checkpoint_with_a_fresh_model(finished_run, dataset, processor):
    _resume(finished_run, dataset, processor, _trainable_model("paper", seed=1))


def test_bf16_and_activation_checkpointing_through_trainer_flags(dataset, processor, tmp_path):
    model = _trainable_model("selector")
    before = model.compressor.a_proj.weight.detach().clone()
    logits_dtypes = []
    model.lm_head.register_forward_hook(lambda _module, _args, output: logits_dtypes.append(output.dtype))
    trainer = Trainer(
        model=model,
        args=_training_args(tmp_path, bf16=True, activation_checkpointing=True),
        train_dataset=torch.utils.data.Subset(dataset, [0, 1]),
        data_collator=OmniQADataCollator(processor, keep_ratio=0.25),
    )
    result = trainer.train()
    assert logits_dtypes == [torch.bfloat16]  # the forward ran under bf16 autocast
    assert model.is_activation_checkpointing
    assert torch.isfinite(torch.tensor(result.training_loss))
    assert model.compressor.a_proj.weight.dtype == torch.float32  # fp32 master weights, bf16 compute
    assert not torch.equal(model.compressor.a_proj.weight, before)


# ---------------------------------------------------------------------------------------------------------------------
# Activation (gradient) checkpointing
# ---------------------------------------------------------------------------------------------------------------------
def test_activation_checkpointing_recomputes_and_matches(batch):
    """With checkpointing, a decoder layer and a vision and an audio encoder block run again in the backward pass (the
    recompute), and the loss and every gradient equal those of the plain run."""

    def run(checkpointing: bool):
        model = _trainable_model("full").train()
        if checkpointing:
            model.activation_checkpointing_enable()  # `gradient_checkpointing_enable()` is its deprecated alias
        # transformers checkpoints a layer's `forward`, so hooks on the layer itself stay outside the recompute:
        # count calls of each layer's first submodule instead.
        firsts = {
            "decoder": model.model.language_model.layers[0].input_layernorm,
            "vision": model.model.visual.blocks[0].norm1,
            "audio": model.model.audio_tower.layers[0].self_attn_layer_norm,
        }
        calls = dict.fromkeys(firsts, 0)
        for name, module in firsts.items():
            module.register_forward_pre_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
        out = model(**batch)
        out.loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        return out.loss.detach(), grads, calls

    plain_loss, plain_grads, plain_calls = run(False)
    loss, grads, calls = run(True)
    assert plain_calls == {"decoder": 1, "vision": 1, "audio": 1}
    assert calls == {"decoder": 2, "vision": 2, "audio": 2}
    torch.testing.assert_close(loss, plain_loss, rtol=0, atol=0)
    assert grads.keys() == plain_grads.keys() and any(name.startswith("compressor.") for name in grads)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, plain_grads[name], rtol=1e-5, atol=1e-7, msg=name)


def run_train_script(*args) -> None:
    script = Path(__file__).resolve().parents[1] / "examples" / "train.py"
    result = subprocess.run(
        [sys.executable, str(script), "--max-steps", "2", "--batch-size", "2", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_train_script_records_the_training_ratios(tmp_path):
    """examples/train.py end to end on its default tiny model and synthetic data. `--keep-ratio 1.0 0.25` trains on
    both and the checkpoint compresses at 0.25; a later stage trained with `--keep-ratio` alone drops the earlier
    stage's `--audio-keep-ratio` from the config (forward gives a per-call keep ratio the same precedence), and
    `--selector-estimator` is recorded in it."""
    first, second = tmp_path / "first", tmp_path / "second"
    run_train_script("--keep-ratios", "1.0", "0.25", "--audio-keep-ratio", "1.0", "--output-dir", first)
    config = OmniSiftForConditionalGeneration.from_pretrained(first).config
    assert (config.keep_ratio, config.video_keep_ratio, config.audio_keep_ratio) == (0.25, None, 1.0)
    run_train_script(
        "--model", first, "--keep-ratios", "0.35", "--freeze", "selector", "--output-dir", second,
        "--selector-estimator", "attention_policy", "--selector-distillation-weight", "0.5", "--reset-selector",
    )  # fmt: skip
    config = json.loads((second / "config.json").read_text())
    assert (config["keep_ratio"], config["video_keep_ratio"], config["audio_keep_ratio"]) == (0.35, None, None)
    assert config["selector_estimator"] == "attention_policy"
    assert config["selector_distillation_weight"] == 0.5
    assert json.loads((first / "config.json").read_text())["selector_estimator"] == "ste"
