# Generated from the omnisift_hf package by `python -m omnisift_hf.tools.bundle`: do not edit this copy; edit
# the module of the same name in src/omnisift_hf/ and regenerate.
"""The attention of the selector's attention-policy estimator (`OmniSiftConfig.selector_estimator="attention_policy"`).

While training, the audio tokens the selector scored all stay in the sequence, and its keep decision `m_j` weighs key
`j` inside every decoder layer's softmax:

    p_qj = m_j exp(a_qj) / sum_l m_l exp(a_ql)        (each query still attends to itself: m = 1 on the diagonal)

with `m = hard + z - stopgrad(z)` on the selector's logit `z`. The value of `m` is the hard decision (0 or 1), so the
forward pass computes exactly what the shortened sequence computes; its gradient is finite at `m = 0`, so dropped
tokens are scored on the same footing as kept ones, and it acts on attention weights, not on a token's scale (which a
pre-norm decoder's first RMSNorm erases). DynamicViT (Rao et al., 2021) trains its token selection the same way.

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
    else:
        query_len, key_len = scores.shape[-2:]
        policy = keep_policy.to(scores.dtype)[:, None, None, :]  # (B, 1, 1, S)
        # Query i sits at key position key_len - query_len + i: it always attends to itself.
        own = torch.arange(query_len, device=scores.device).unsqueeze(1) + key_len - query_len == torch.arange(
            key_len, device=scores.device
        )  # (Q, S)
        policy = torch.where(own, torch.ones_like(policy), policy)  # (B, 1, Q, S)
        exponent = torch.exp(scores - scores.amax(dim=-1, keepdim=True).detach()) * policy
        weights = exponent / exponent.sum(dim=-1, keepdim=True)
    weights = nn.functional.dropout(weights.to(query.dtype), p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()  # (B, Q, H, d)
    return output, weights


AttentionInterface.register(KEEP_POLICY_ATTENTION, keep_policy_attention)
AttentionMaskInterface.register(KEEP_POLICY_ATTENTION, eager_mask)
