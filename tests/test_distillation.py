"""The selector's distillation term (`selector_distillation_weight`): while training, the loss adds the KL divergence
from the same model at keep 1.0 (no gradient) to the compressed forward at the answer tokens; with weight 0, in eval
mode or at keep 1.0 nothing changes."""

import math

import pytest
import torch
from helpers import build_inputs, perturb
from huggingface_hub.errors import StrictDataclassError

from omnisift_hf import OmniSiftConfig
from omnisift_hf.models._shared_modeling import distillation_loss
from omnisift_hf.testing_utils import tiny_model, tiny_qwen3_inputs, tiny_qwen3_model

SAMPLES = [
    [("text", 4), ("video", 4, 4, 4, 400), ("text", 5)],
    [("text", 2), ("video", 2, 4, 4, 200), ("text", 3)],
]


def labelled(inputs: dict) -> dict:
    """float64 inputs with labels on the last 3 tokens (the answer)."""
    inputs = {k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in inputs.items()}
    labels = torch.full_like(inputs["input_ids"], -100)
    labels[:, -3:] = inputs["input_ids"][:, -3:]
    return {**inputs, "labels": labels}


def by_hand(student_logits, student_labels, teacher_logits, teacher_labels) -> torch.Tensor:
    """sum_v p_t (log p_t - log p_s) at each position whose next label is an answer token, averaged; one sample and
    one position at a time."""
    terms = []
    for row in range(student_labels.shape[0]):
        s_pos = [i for i in range(student_labels.shape[1] - 1) if student_labels[row, i + 1] != -100]
        t_pos = [i for i in range(teacher_labels.shape[1] - 1) if teacher_labels[row, i + 1] != -100]
        assert len(s_pos) == len(t_pos) > 0
        for i, j in zip(s_pos, t_pos, strict=True):
            log_p_t = torch.log_softmax(teacher_logits[row, j], -1)
            log_p_s = torch.log_softmax(student_logits[row, i], -1)
            terms.append((log_p_t.exp() * (log_p_t - log_p_s)).sum())
    return torch.stack(terms).mean()


def _model(build, estimator, weight):
    model = build(selector_estimator=estimator, selector_distillation_weight=weight).double()
    if build is tiny_qwen3_model:
        model.set_experts_implementation("eager")  # the default grouped matmul refuses float64 on CPU
    perturb(model.compressor, seed=1)
    return model.train()


@pytest.mark.parametrize(
    ("build", "inputs_of", "estimator", "weight"),
    [
        (tiny_model, build_inputs, "ste", 0.5),
        (tiny_model, build_inputs, "attention_policy", 0.5),
        (tiny_qwen3_model, tiny_qwen3_inputs, "ste", 1.0),  # the teacher reads the deepstack rows of every token
    ],
    ids=["ste", "attention_policy", "qwen3"],
)
def test_loss_adds_the_kl_from_the_keep_1_model_at_the_answer_tokens(build, inputs_of, estimator, weight):
    """float64: loss(weight w) == loss(weight 0) + w * KL(model at keep 1.0 || compressed model), computed by hand from
    the two models' own outputs."""
    inputs = labelled(inputs_of(SAMPLES))
    plain, distilled = _model(build, estimator, 0.0), _model(build, estimator, weight)
    distilled.load_state_dict(plain.state_dict())
    with torch.no_grad():
        student = plain(**inputs, keep_ratio=0.25)
        teacher = plain(**inputs, keep_ratio=1.0)
        loss = distilled(**inputs, keep_ratio=0.25).loss
    student_labels = (
        inputs["labels"].gather(1, student.kept_token_index).masked_fill(student.kept_attention_mask == 0, -100)
    )
    kl = by_hand(student.logits, student_labels, teacher.logits, inputs["labels"])
    assert float(kl) > 1e-6  # compression changed the answer distribution, so the term is not trivially 0
    torch.testing.assert_close(loss, student.loss + weight * kl, rtol=1e-10, atol=1e-12)


def test_nothing_changes_at_weight_0_in_eval_mode_or_at_keep_1():
    """No teacher forward at weight 0; the weight is ignored in eval mode and at keep 1.0 (no compression)."""
    inputs = labelled(build_inputs(SAMPLES))
    plain, distilled = _model(tiny_model, "ste", 0.0), _model(tiny_model, "ste", 2.0)
    distilled.load_state_dict(plain.state_dict())
    calls = []
    plain.model.language_model.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        base = plain(**inputs, keep_ratio=0.25).loss
        assert len(calls) == 1  # weight 0: no teacher forward
        assert torch.equal(plain(**inputs, keep_ratio=1.0).loss, distilled(**inputs, keep_ratio=1.0).loss)
        plain.eval(), distilled.eval()
        assert torch.equal(plain(**inputs, keep_ratio=0.25).loss, distilled(**inputs, keep_ratio=0.25).loss)
    assert not torch.equal(base, distilled.train()(**inputs, keep_ratio=0.25).loss)


def test_the_teacher_gets_no_gradient_and_the_selector_gets_the_term():
    """The gradient of the distilled loss is the gradient of loss + w * KL with the teacher's distribution held fixed;
    with the attention policy the term reaches the selector."""
    inputs = labelled(build_inputs(SAMPLES))
    model = _model(tiny_model, "attention_policy", 1.0)
    out = model(**inputs, keep_ratio=0.25)
    out.loss.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    model.config.selector_distillation_weight = 0.0
    with torch.no_grad():
        teacher = model(**inputs, keep_ratio=1.0)
    student = model(**inputs, keep_ratio=0.25)
    student_labels = (
        inputs["labels"].gather(1, student.kept_token_index).masked_fill(student.kept_attention_mask == 0, -100)
    )
    (student.loss + by_hand(student.logits, student_labels, teacher.logits, inputs["labels"])).backward()
    expected = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert got.keys() == expected.keys()
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-8, atol=1e-12, msg=name)
    assert any(name.startswith("compressor.") and float(grad.abs().sum()) > 0 for name, grad in got.items())


def test_distillation_loss_needs_every_position_and_the_same_answers():
    logits, labels = torch.randn(1, 5, 7), torch.tensor([[-100, -100, -100, 3, 4]])
    teacher, teacher_labels = torch.randn(1, 8, 7), torch.tensor([[-100] * 6 + [3, 4]])
    assert float(distillation_loss(logits, labels, teacher, teacher_labels)) >= 0
    assert float(distillation_loss(teacher[:, -5:], labels, teacher, teacher_labels)) == pytest.approx(0, abs=1e-6)
    with pytest.raises(ValueError, match="logits_to_keep"):
        distillation_loss(logits[:, -1:], labels, teacher, teacher_labels)


@pytest.mark.parametrize("weight", [-0.5, math.nan, math.inf])
def test_bad_weights_name_the_field(weight):
    assert OmniSiftConfig().selector_distillation_weight == 0.0
    with pytest.raises(StrictDataclassError, match=r"selector_distillation_weight=.*finite number >= 0"):
        OmniSiftConfig(selector_distillation_weight=weight)
