# Generated from the omnisift_hf package by `python -m omnisift_hf.tools.bundle`: do not edit this copy; edit
# the module of the same name in src/omnisift_hf/ and regenerate.
"""The attention of the selector's attention-policy estimator (`OmniSiftConfig.selector_estimator="attention_policy"`).

While training, the audio tokens the selector scored all stay in the sequence, and its keep decision `m_j` weighs key
`j` inside every decoder layer's softmax:

    p_qj = m_j exp(a_qj) / sum_l m_l exp(a_ql)        (each query still attends to itself: m = 1 on the diagonal)

with `m = hard + z - stopgrad(z)` on the selector's logit `z`. The value of `m` is the hard decision (0 or 1), so the
forward pass computes exactly what the shortened sequence computes. The gradient reaches dropped tokens too, on the
same footing as kept ones, and acts on attention weights, not on a token's scale (which a pre-norm decoder's first
RMSNorm erases). DynamicViT (Rao et al., 2021) trains its token selection the same way.

The gradient with respect to `m_j` is `sum_q g_q . w_qj (v_j - o_q)` (`g_q` the gradient at the attention output
`o_q`), with `w_qj` key j's attention weight once kept: `e_qj / Z_q` for a kept key (the exact derivative) and
`e_qj / (Z_q + e_qj)` for a dropped one (the secant from dropping to keeping it), `Z_q` the kept keys' mass. The
derivative at `m_j = 0`, `e_qj / Z_q`, is unbounded when a dropped key would dominate the query's attention (a first
probe on AVQA saw gradient norms of 1e6 to 4e10); the secant is bounded by 1 and, for a loss linear in the attention
output, equals the exact change of the loss when the key is kept.

Registered with transformers' `AttentionInterface` (and an eager mask with `AttentionMaskInterface`) under
`KEEP_POLICY_ATTENTION`; the model switches its decoder to it while training with that estimator.
"""

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

__all__ = ["KEEP_POLICY_ATTENTION", "keep_policy_attention"]

KEEP_POLICY_ATTENTION = "omnisift_keep_policy"


def keep_policy_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    keep_policy: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention with each key weighted by `keep_policy` inside the softmax.

    Args:
        module (`nn.Module`): the attention layer (for `training`).
        query (`torch.Tensor` of shape `(B, H, Q, d)`), key, value (`torch.Tensor` of shape `(B, H_kv, S, d)`).
        attention_mask (`torch.Tensor` of shape `(B, 1, Q, S)`, *optional*): additive mask (0 or a large negative).
        scaling (`float`): the softmax scale.
        dropout (`float`): attention dropout while training.
        keep_policy (`torch.Tensor` of shape `(B, S)`, *optional*): the keep decision of each key position (1 for
            tokens the selector does not decide on). `None`: plain eager attention.

    Returns:
        `(output (B, Q, H, d), weights (B, H, Q, S))`.
    """
    groups = query.shape[1] // key.shape[1]
    key = key.repeat_interleave(groups, dim=1)  # (B, H, S, d)
    value = value.repeat_interleave(groups, dim=1)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, H, Q, S)
    if attention_mask is not None:
        scores = scores + attention_mask[..., : key.shape[-2]]
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))  # at least float32, float64 stays
    if keep_policy is None:
        weights = nn.functional.softmax(scores, dim=-1)
        weights = nn.functional.dropout(weights.to(query.dtype), p=dropout, training=module.training)
        return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights
    query_len, key_len = scores.shape[-2:]
    # Query i sits at key position key_len - query_len + i: it always attends to itself.
    own = torch.arange(query_len, device=scores.device).unsqueeze(1) + key_len - query_len == torch.arange(
        key_len, device=scores.device
    )  # (Q, S)
    policy = keep_policy.to(scores.dtype)[:, None, None, :]  # (B, 1, 1, S)
    hard = torch.where(own, torch.ones_like(policy), policy.detach())  # (B, 1, Q, S), the decisions' values
    exponent = torch.exp(scores - scores.amax(dim=-1, keepdim=True).detach())  # (B, H, Q, S)
    kept_mass = (exponent * hard).sum(dim=-1, keepdim=True)  # (B, H, Q, 1)
    weights = exponent * hard / kept_mass
    weights = nn.functional.dropout(weights.to(query.dtype), p=dropout, training=module.training)
    output = torch.matmul(weights, value)  # (B, H, Q, d)
    # The decisions' gradient, zero in value: d output / d m_j = w_qj (v_j - o_q), where w_qj is key j's weight
    # once kept, e_qj / (Z_q + (1 - m_j) e_qj) (Z_q the kept keys' mass). For a kept key that is the exact
    # derivative (its attention weight); for a dropped key it is the secant from dropping to keeping it, bounded by
    # 1, where the derivative at m_j = 0, e_qj / Z_q, is unbounded when the dropped key would dominate the query.
    step = torch.where(own, torch.zeros_like(policy), policy - policy.detach())  # (B, 1, Q, S), zero in value
    kept_weight = (exponent / (kept_mass + (1 - hard) * exponent)).detach() * step  # (B, H, Q, S)
    output = output + torch.matmul(kept_weight.to(value.dtype), value) - kept_weight.sum(-1, keepdim=True) * output
    return output.to(query.dtype).transpose(1, 2).contiguous(), weights


AttentionInterface.register(KEEP_POLICY_ATTENTION, keep_policy_attention)
AttentionMaskInterface.register(KEEP_POLICY_ATTENTION, eager_mask)
