"""The selector's attention-policy estimator (`selector_estimator="attention_policy"`): a hard policy computes what the
shortened sequence computes, its gradient is right and finite at dropped tokens, it reaches the selector through the
tokens STE never reaches, and inference and the default estimator are unchanged."""

import pytest
import torch
from helpers import build_inputs, perturb
from huggingface_hub.errors import StrictDataclassError

from omnisift_hf import OmniSiftConfig
from omnisift_hf.attention_policy import KEEP_POLICY_ATTENTION, keep_policy_attention
from omnisift_hf.testing_utils import tiny_model

SAMPLES = [
    [("text", 4), ("video", 4, 4, 4, 400), ("text", 5)],
    [("text", 2), ("video", 2, 4, 4, 200), ("text", 3)],
]


def policy_model(**overrides):
    model = tiny_model(selector_estimator="attention_policy", **overrides)
    perturb(model.compressor, seed=1)
    return model


def labelled(inputs: dict) -> dict:
    """Inputs with labels on the text after the clip (the answer)."""
    labels = torch.full_like(inputs["input_ids"], -100)
    labels[:, -3:] = inputs["input_ids"][:, -3:]
    return {**inputs, "labels": labels}


class _Layer(torch.nn.Module):
    num_key_value_groups = 2


def test_hard_policy_equals_plain_softmax_without_the_dropped_keys():
    """float64: keys with policy 0 contribute nothing, policy 1 is plain attention, a query always sees itself."""
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(2, 4, 6, 8, generator=generator, dtype=torch.float64)
    key, value = (torch.randn(2, 2, 6, 8, generator=generator, dtype=torch.float64) for _ in range(2))
    causal = torch.full((6, 6), float("-inf"), dtype=torch.float64).triu(1)[None, None]
    policy = torch.tensor([[1, 0, 1, 1, 0, 1], [1, 1, 1, 1, 1, 1]], dtype=torch.float64)
    output, weights = keep_policy_attention(_Layer(), query, key, value, causal, scaling=0.3, keep_policy=policy)
    plain, _ = keep_policy_attention(_Layer(), query, key, value, causal, scaling=0.3)
    torch.testing.assert_close(output[1], plain[1], rtol=0, atol=1e-12)  # all ones: plain attention
    assert torch.all(weights[0, :, 2:, 1] == 0) and torch.all(weights[0, :, 5:, 4] == 0)
    assert torch.all(weights[0, :, 1, 1] > 0)  # a dropped token attends to itself
    # Row 0 without the dropped keys, from scratch: the kept queries see only kept keys.
    kept = torch.tensor([0, 2, 3, 5])
    reference, _ = keep_policy_attention(
        _Layer(), query[:1, :, kept], key[:1, :, kept], value[:1, :, kept], causal[..., :4, :4], scaling=0.3
    )
    torch.testing.assert_close(output[:1, kept], reference, rtol=0, atol=1e-12)


def test_decision_gradients_are_the_derivative_when_kept_and_the_secant_when_dropped():
    """float64, a loss linear in the attention output: the gradient at a kept key is the derivative (central finite
    differences); at a dropped key it is the exact change of the loss when that key is kept, bounded where the
    derivative at 0 is not."""
    generator = torch.Generator().manual_seed(1)
    query = torch.randn(1, 4, 5, 8, generator=generator, dtype=torch.float64)
    key, value = (torch.randn(1, 2, 5, 8, generator=generator, dtype=torch.float64) for _ in range(2))
    weights_out = torch.randn(1, 5, 4, 8, generator=generator, dtype=torch.float64)
    causal = torch.full((5, 5), float("-inf"), dtype=torch.float64).triu(1)[None, None]

    def loss(policy, scale=0.35):
        output, _ = keep_policy_attention(_Layer(), query, key, value, causal, scaling=scale, keep_policy=policy)
        return (output * weights_out).sum()

    decisions = [1.0, 0.0, 1.0, 0.0, 1.0]
    policy = torch.tensor([decisions], dtype=torch.float64, requires_grad=True)
    loss(policy).backward()
    for kept in (2, 4):
        step = 1e-6
        up, down = policy.detach().clone(), policy.detach().clone()
        up[0, kept] += step
        down[0, kept] -= step
        torch.testing.assert_close(policy.grad[0, kept], (loss(up) - loss(down)) / (2 * step), rtol=1e-6, atol=1e-9)
    for dropped in (1, 3):
        kept_too = policy.detach().clone()
        kept_too[0, dropped] = 1.0
        secant = loss(kept_too) - loss(policy.detach())
        torch.testing.assert_close(policy.grad[0, dropped], secant, rtol=1e-10, atol=1e-12)
        assert abs(float(secant)) > 1e-6

    # A dropped key that would dominate its queries: the derivative at 0 is huge, the secant stays bounded.
    key_big = key.clone()
    key_big[0, :, 1] = query[0, :2].mean(1) * 40  # key 1 aligns with every query
    policy = torch.tensor([decisions], dtype=torch.float64, requires_grad=True)
    output, _ = keep_policy_attention(_Layer(), query, key_big, value, causal, scaling=0.35, keep_policy=policy)
    (output * weights_out).sum().backward()
    assert torch.isfinite(policy.grad).all()
    bound = weights_out.abs().sum() * 2 * value.abs().amax()  # |w| <= 1, |v_j - o_q| <= 2 max|v|
    assert float(policy.grad.abs().max()) <= float(bound)


def test_training_forward_equals_the_shortened_forward_float64():
    """A hard policy computes exactly what inference computes on the shortened sequence: same logits at every
    position both keep (float64)."""
    model = policy_model().double()
    inputs = build_inputs(SAMPLES)
    inputs = {k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in inputs.items()}
    model.eval()
    with torch.no_grad():
        shortened = model(**inputs, keep_ratio=0.25)
    model.train()
    assert model.model.language_model.config._attn_implementation == KEEP_POLICY_ATTENTION
    with torch.no_grad():
        trained = model(**inputs, keep_ratio=0.25)
    model.eval()
    assert model.model.language_model.config._attn_implementation == "sdpa"
    assert trained.logits.shape[1] > shortened.logits.shape[1]  # the dropped audio stayed in the sequence
    for key in ("num_kept_audio_tokens", "num_kept_video_tokens"):
        assert torch.equal(trained[key], shortened[key])
    for row in range(len(SAMPLES)):
        real = shortened.kept_attention_mask[row].bool()
        positions = shortened.kept_token_index[row][real]
        train_real = trained.kept_attention_mask[row].bool()
        where = {int(p): i for i, p in enumerate(trained.kept_token_index[row][train_real])}
        rows = torch.tensor([where[int(p)] for p in positions])
        torch.testing.assert_close(
            trained.logits[row][train_real][rows], shortened.logits[row][real], rtol=0, atol=1e-10
        )


@pytest.mark.parametrize(("estimator", "dropped_gradient"), [("ste", False), ("attention_policy", True)])
def test_dropped_tokens_reach_the_selector_only_with_the_attention_policy(estimator, dropped_gradient):
    """STE's gradient never reaches the logits of dropped tokens (they are not in the sequence); the attention
    policy's does, and it is finite."""
    model = tiny_model(selector_estimator=estimator)
    perturb(model.compressor, seed=1)
    model.train()
    captured = []

    def selector(*args):
        selection = model.select_tokens(*args)
        selection.audio_logits.retain_grad()
        captured.append(selection)
        return selection

    out = model(**labelled(build_inputs(SAMPLES)), keep_ratio=0.25, token_selector=selector)
    out.loss.backward()
    selection = captured[0]
    grad = selection.audio_logits.grad
    dropped = ~selection.audio_keep[selection.gated_audio]
    assert bool(dropped.any()) and bool((~dropped).any())
    if dropped_gradient:
        assert torch.isfinite(grad).all()
        assert float(grad[dropped].abs().sum()) > 0
    else:
        assert grad is None or float(grad[dropped].abs().sum()) == 0
    assert all(torch.isfinite(p.grad).all() for p in model.compressor.parameters() if p.grad is not None)


def test_default_estimator_and_validation():
    assert OmniSiftConfig().selector_estimator == "ste"
    model = tiny_model()
    model.train()
    assert model.model.language_model.config._attn_implementation == "sdpa"  # STE trains on the usual attention
    with pytest.raises(StrictDataclassError, match=r"selector_estimator='gumbel'.*'ste', 'attention_policy'"):
        OmniSiftConfig(selector_estimator="gumbel")


def test_inference_is_unchanged_by_the_estimator():
    """eval mode: the same model with either estimator gives bit-identical outputs."""
    inputs = build_inputs(SAMPLES)
    ste, policy = tiny_model(), tiny_model(selector_estimator="attention_policy")
    policy.load_state_dict(ste.state_dict())
    policy.train()
    policy.eval()
    with torch.no_grad():
        a, b = ste(**inputs, keep_ratio=0.25), policy(**inputs, keep_ratio=0.25)
    assert torch.equal(a.logits, b.logits)
    assert torch.equal(a.kept_token_index, b.kept_token_index)
