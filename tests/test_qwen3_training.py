"""Training OmniSIFT on Qwen3-Omni with `transformers.Trainer`: the freezing policies on the MoE thinker's parameter
names (fused experts, routers, deepstack mergers), the collator with `Qwen3OmniMoeProcessor`, the STE gradient, the
loss on the kept sequence, a Trainer step that changes exactly the trained groups, and the encoded dataset."""

import json

import pytest
import torch
from transformers import Trainer, TrainingArguments

from omnisift_hf.testing_utils import TINY_TOKEN_IDS, tiny_qwen3_model, tiny_qwen3_processor
from omnisift_hf.tools.synthetic import write_synthetic_audio, write_synthetic_clip
from omnisift_hf.training import (
    FREEZE_POLICIES,
    PARAMETER_GROUPS,
    EncodedOmniQADataset,
    OmniQADataCollator,
    OmniQADataset,
    count_trainable_parameters,
    freeze,
)

EXAMPLES = [
    {"video": "clips/red.mp4", "question": "What color is the square?", "answer": "The square is red."},
    {"audio": "tone.wav", "question": "What sound do you hear in the audio?", "answer": "I hear a low tone."},
    {
        "system": "You describe clips.",
        "video": "clips/green.mp4",
        "question": "What color is the box?",
        "answer": "The box is green.",
    },
]
ANSWERS = [example["answer"] for example in EXAMPLES]
GROUPS_OF_POLICY = {policy: set(groups) & set(PARAMETER_GROUPS) for policy, groups in FREEZE_POLICIES.items()}
# The MoE decoder's own parameters: fused experts and routers, under `model.language_model.`.
MOE_PARAMETERS = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj", "mlp.gate.weight")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen3-data")
    (root / "clips").mkdir()
    write_synthetic_clip(root / "clips" / "red.mp4", seconds=2.0, fps=4, size=(56, 56))
    write_synthetic_clip(root / "clips" / "green.mp4", seconds=2.0, fps=4, size=(56, 56))
    write_synthetic_audio(root / "tone.wav", seconds=1.0)
    (root / "train.jsonl").write_text("".join(json.dumps(example) + "\n" for example in EXAMPLES))
    return root


@pytest.fixture(scope="module")
def processor():
    return tiny_qwen3_processor()


@pytest.fixture(scope="module")
def dataset(data_dir):
    return OmniQADataset(data_dir / "train.jsonl")


@pytest.fixture(scope="module")
def batch(dataset, processor):
    """A clip with sound and an audio-only example, left-padded, compressed at keep_ratio 0.25."""
    return OmniQADataCollator(processor, keep_ratio=0.25)([dataset[0], dataset[1]])


def _group(name: str) -> str:
    return next(group for group, prefix in PARAMETER_GROUPS.items() if name.startswith(prefix))


def _parameters(model) -> dict[str, torch.Tensor]:
    return {name: parameter.detach().clone() for name, parameter in model.named_parameters()}


# ---------------------------------------------------------------------------------------------------------------------
# Freezing policies on the MoE thinker
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["selector", "paper", "full"])
def test_freeze_sets_the_groups_of_the_moe_thinker(policy):
    model = tiny_qwen3_model()
    counts = freeze(model, policy)
    trained = GROUPS_OF_POLICY[policy]
    assert set(counts.total) == set(PARAMETER_GROUPS)  # no parameter outside the known groups
    for group in PARAMETER_GROUPS:
        assert counts.trainable[group] == (counts.total[group] if group in trained else 0), group
    assert counts.num_trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert count_trainable_parameters(model).trainable == counts.trainable
    named = dict(model.named_parameters())
    moe = [name for name in named if name.endswith(MOE_PARAMETERS)]
    assert len(moe) == 3 * model.config.text_config.num_hidden_layers  # every layer's experts and router
    assert all(_group(name) == "language_model" for name in moe)
    assert all(named[name].requires_grad == ("language_model" in trained) for name in moe)
    deepstack = [name for name in named if name.startswith("model.visual.merger_list.")]  # deepstack mergers
    assert deepstack and all(_group(name) == "visual" for name in deepstack)
    assert all(named[name].requires_grad == ("visual" in trained) for name in deepstack)


# ---------------------------------------------------------------------------------------------------------------------
# The collator
# ---------------------------------------------------------------------------------------------------------------------
def test_collator_builds_the_qwen3_layout_with_labels_on_the_answer(dataset, processor):
    batch = OmniQADataCollator(processor)(list(dataset))
    tokenizer = processor.tokenizer
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    for row, answer in enumerate(ANSWERS):
        target = labels[row] != -100
        assert tokenizer.decode(labels[row][target]) == answer + "<|im_end|>"
        length = int(target.sum())
        assert target[-length:].all() and not target[:-length].any()
        padding = int((mask[row] == 0).sum())
        assert mask[row, padding:].all() and (ids[row, :padding] == tokenizer.pad_token_id).all()
    # Qwen3-Omni's chat: no default system turn; an example's own system turn is kept.
    assert tokenizer.decode(ids[0][mask[0].bool()]).startswith("<|im_start|>user\n")
    assert tokenizer.decode(ids[2][mask[2].bool()]).startswith("<|im_start|>system\nYou describe clips.")
    # Qwen3-Omni's processor: 16-pixel patches, 1 s per grid at 2 fps, ~13 audio tokens per second.
    assert batch["pixel_values_videos"].shape[1] == 3 * 2 * 16 * 16
    assert batch["video_second_per_grid"].tolist() == [1.0, 1.0]
    assert abs(int((ids[1] == TINY_TOKEN_IDS["audio"]).sum()) - 13) <= 1
    media = (ids == TINY_TOKEN_IDS["video"]) | (ids == TINY_TOKEN_IDS["audio"])
    assert (labels[media] == -100).all()
    assert batch["use_audio_in_video"] is True


# ---------------------------------------------------------------------------------------------------------------------
# Gradients and the loss
# ---------------------------------------------------------------------------------------------------------------------
def test_selector_policy_gradients_reach_only_the_selector(batch):
    model = tiny_qwen3_model()
    freeze(model, "selector")
    out = model.train()(**batch)
    assert out.num_kept_audio_tokens[0] < out.num_audio_tokens[0]  # audio was dropped: the gate is in the graph
    out.loss.backward()
    for name, parameter in model.named_parameters():
        if name.startswith("compressor."):
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        else:
            assert parameter.grad is None, name


def test_loss_equals_cross_entropy_on_the_hand_pruned_sequence(batch):
    model = tiny_qwen3_model().train()
    out = model(**batch)
    index, mask = out.kept_token_index, out.kept_attention_mask  # (B, K)
    assert index.shape[1] < batch["input_ids"].shape[1]
    labels = batch["labels"].gather(1, index).masked_fill(mask == 0, -100)
    assert (labels != -100).sum() == (batch["labels"] != -100).sum()  # compression never drops answer tokens
    vocab = out.logits.shape[-1]
    expected = torch.nn.functional.cross_entropy(
        out.logits[:, :-1].reshape(-1, vocab).float(), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    if out.aux_loss is not None:  # the router's load-balancing loss, as the stock thinker adds it
        expected = expected + model.config.text_config.router_aux_loss_coef * out.aux_loss
    torch.testing.assert_close(out.loss, expected, rtol=1e-6, atol=1e-6)


def test_paper_policy_lowers_the_loss(batch):
    model = tiny_qwen3_model().train()
    freeze(model, "paper")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(4):
        loss = model(**batch).loss
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert losses[-1] < losses[0] - 0.1, losses


# ---------------------------------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("policy", ["selector", "paper", "full"])
def test_one_trainer_step_changes_exactly_the_trained_groups(policy, dataset, processor, tmp_path):
    model = tiny_qwen3_model()
    freeze(model, policy)
    trained = GROUPS_OF_POLICY[policy]
    before = _parameters(model)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        max_steps=1,
        learning_rate=1e-2,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        dataloader_num_workers=0,
        seed=0,
    )
    trainer = Trainer(
        model=model,
        args=args,  # remove_unused_columns left at its default (True)
        train_dataset=torch.utils.data.Subset(dataset, [0, 1]),
        data_collator=OmniQADataCollator(processor, keep_ratio=0.25),
    )
    trainer.train()
    changed = {name for name, value in _parameters(model).items() if not torch.equal(value, before[name])}
    frozen_changed = sorted(name for name in changed if _group(name) not in trained)
    trained_unchanged = sorted(name for name in before if _group(name) in trained and name not in changed)
    assert not frozen_changed, f"frozen parameters changed: {frozen_changed}"
    assert not trained_unchanged, f"trained parameters did not change: {trained_unchanged}"
    if "language_model" in trained:
        assert {name for name in changed if name.endswith(MOE_PARAMETERS)}  # experts and routers learn


def test_encoded_dataset_gives_the_batches_of_the_media(dataset, processor, tmp_path):
    collator = OmniQADataCollator(processor, keep_ratio=0.5)
    encoded = EncodedOmniQADataset(dataset, collator, tmp_path / "cache")
    from_media, from_cache = collator(list(dataset)), collator([encoded[i] for i in range(len(encoded))])
    assert from_media.keys() == from_cache.keys()
    for key, value in from_media.items():
        if torch.is_tensor(value):
            assert torch.equal(value, from_cache[key]), key
        else:
            assert value == from_cache[key], key
    assert (
        json.loads((tmp_path / "cache" / "omnisift_encoded.json").read_text())["processor"] == "Qwen3OmniMoeProcessor"
    )
