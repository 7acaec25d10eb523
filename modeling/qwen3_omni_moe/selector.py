# Generated from the omnisift_hf package by `python -m omnisift_hf.tools.bundle`: do not edit this copy; edit
# the module of the same name in src/omnisift_hf/ and regenerate.
"""OmniSIFT's token selection for one batch: STVP on the video tokens, then VGAS, the learned vision-guided audio
selector, on the audio tokens. torch only (no transformers), so that any host (transformers, a serving engine) runs
the same selection.

The selector module is stored under the attribute `compressor` of every OmniSIFT model: the published checkpoint's
parameter names (`thinker.compressor.*`) depend on it. Everywhere else it is called the selector.
"""

from dataclasses import dataclass

import torch
from torch import nn

from .compression import (
    KeepRatios,
    MediaLayout,
    drop_count,
    frame_drop_counts,
    media_layout,
    pad_segments,
    spatio_temporal_prune,
    token_keep_mask,
    top_audio_per_window,
)

__all__ = ["OmniSiftAudioSelector", "TokenSelection", "kept_token_counts", "select_tokens"]


class OmniSiftAudioSelector(nn.Module):
    """VGAS, the vision-guided audio selector: scores each audio token of a time window by cross-attending to the
    window's kept video tokens. 4,856,321 parameters at hidden size 3584 (Qwen2.5-Omni-7B).

    `a = LN(W_a audio)`, `v = LN(W_v video)`, `x = LN(MHA(q=a, k=v, v=v) + a)`, `s = sigmoid(MLP(x))`.
    Parameter names follow the published OmniSIFT checkpoint (`thinker.compressor.*`).
    """

    def __init__(self, hidden_size: int, selector_hidden_size: int, num_heads: int, mlp_size: int):
        super().__init__()
        self.a_proj = nn.Linear(hidden_size, selector_hidden_size)
        self.v_proj = nn.Linear(hidden_size, selector_hidden_size)
        self.a_norm = nn.LayerNorm(selector_hidden_size)
        self.v_norm = nn.LayerNorm(selector_hidden_size)
        self.cross_attn = nn.MultiheadAttention(selector_hidden_size, num_heads, batch_first=True)
        self.post_attn_norm = nn.LayerNorm(selector_hidden_size)
        self.score_head = nn.Sequential(nn.Linear(selector_hidden_size, mlp_size), nn.SiLU(), nn.Linear(mlp_size, 1))

    def forward(
        self,
        audio: torch.Tensor,
        video: torch.Tensor,
        video_padding_mask: torch.Tensor | None = None,
        return_logits: bool = False,
    ) -> torch.Tensor:
        """
        Args:
            audio (`torch.Tensor` of shape `(W, A, D)`): audio tokens of `W` windows (padded to `A`).
            video (`torch.Tensor` of shape `(W, V, D)`): kept video tokens of the same windows (padded to `V`).
            video_padding_mask (`torch.BoolTensor` of shape `(W, V)`, *optional*): True at video padding. Every
                window needs at least one real video token.
            return_logits (`bool`, *optional*, defaults to `False`): return the scores before the sigmoid (what
                the attention-policy estimator trains through).

        Returns:
            `torch.Tensor` of shape `(W, A)`: keep scores in (0, 1) (logits with `return_logits`). Rows at audio
            padding are meaningless.
        """
        a = self.a_norm(self.a_proj(audio))  # (W, A, d)
        v = self.v_norm(self.v_proj(video))  # (W, V, d)
        attended, _ = self.cross_attn(a, v, v, key_padding_mask=video_padding_mask, need_weights=False)
        x = self.post_attn_norm(attended + a)
        logits = self.score_head(x).squeeze(-1)
        return logits if return_logits else torch.sigmoid(logits)


@dataclass
class TokenSelection:
    """What OmniSIFT keeps of one batch: returned by `select_tokens` (and by a model's `select_tokens`), applied by
    the model's `forward`. Baselines, timers and diagnostics may wrap or replace it (`dataclasses.replace`) through
    the `token_selector` argument of `forward` / `generate`.

    Attributes:
        layout ([`MediaLayout`]): where the video and audio tokens are and how they group into frames and windows.
        video_keep (`torch.BoolTensor` of shape `(Nv,)`): which video tokens stay.
        audio_keep (`torch.BoolTensor` of shape `(Na,)`): which audio tokens stay.
        gated_audio (`torch.LongTensor` of shape `(n,)`, *optional*): the audio tokens the selector scored (indices
            into the layout's audio tokens); `None` when it scored none.
        audio_gate (`torch.Tensor` of shape `(n,)`, *optional*): their straight-through gates, `hard - s` detached plus
            `s` (1 at kept, 0 at dropped tokens, with the selector's gradient), multiplied into their embeddings.
            `None`: no gate (nothing scored, or a selection that does not come from the selector).
        audio_logits (`torch.Tensor` of shape `(n,)`, *optional*): the selector's logits of the scored tokens (what
            the attention-policy estimator trains through); `None` as `audio_gate`.
    """

    layout: MediaLayout
    video_keep: torch.Tensor
    audio_keep: torch.Tensor
    gated_audio: torch.Tensor | None = None
    audio_gate: torch.Tensor | None = None
    audio_logits: torch.Tensor | None = None

    def count_tokens(self, batch_size: int) -> dict[str, torch.LongTensor]:
        """Per-sample counts `(B,)`: `num_video_tokens`, `num_kept_video_tokens`, `num_audio_tokens`,
        `num_kept_audio_tokens`."""
        layout = self.layout
        return {
            "num_video_tokens": torch.bincount(layout.video_sample, minlength=batch_size),
            "num_kept_video_tokens": torch.bincount(layout.video_sample[self.video_keep], minlength=batch_size),
            "num_audio_tokens": torch.bincount(layout.audio_sample, minlength=batch_size),
            "num_kept_audio_tokens": torch.bincount(layout.audio_sample[self.audio_keep], minlength=batch_size),
        }

    def keep_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """Which positions of the batch stay, `(B, L)` bool: real tokens (`attention_mask` `(B, L)`), minus the
        dropped video and audio tokens."""
        return token_keep_mask(attention_mask, self.layout, self.video_keep, self.audio_keep)

    def apply_gate(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """`inputs_embeds` `(B, L, D)` with the gated audio tokens multiplied by their gate (a new tensor; the input
        as it is when there is no gate)."""
        if self.audio_gate is None:
            return inputs_embeds
        batch_size, seq_len, hidden_size = inputs_embeds.shape
        flat_embeds = inputs_embeds.reshape(batch_size * seq_len, hidden_size)
        rows = self.layout.audio_index[self.gated_audio]
        gated = flat_embeds[rows] * self.audio_gate.unsqueeze(-1).to(flat_embeds.dtype)
        return flat_embeds.index_copy(0, rows, gated).view(batch_size, seq_len, hidden_size)


def select_tokens(
    selector: OmniSiftAudioSelector,
    inputs_embeds: torch.Tensor,
    video_mask: torch.Tensor,
    audio_mask: torch.Tensor,
    temporal_ids: torch.Tensor,
    ratios: KeepRatios,
) -> TokenSelection:
    """Run STVP and VGAS on one batch.

    Args:
        selector ([`OmniSiftAudioSelector`]): the audio selector (it may sit on another device).
        inputs_embeds (`torch.Tensor` of shape `(B, L, D)`): the merged sequence (encoder outputs scattered in).
        video_mask (`torch.BoolTensor` of shape `(B, L)`), audio_mask (`torch.BoolTensor` of shape `(B, L)`): the
            video and audio placeholders of real (not padding) positions.
        temporal_ids (`torch.Tensor` of shape `(B, L)`): temporal M-RoPE ids.
        ratios ([`KeepRatios`]): the resolved ratios.

    Returns:
        [`TokenSelection`].
    """
    batch_size, seq_len, hidden_size = inputs_embeds.shape
    layout = media_layout(video_mask, audio_mask, temporal_ids)
    num_video = torch.bincount(layout.video_sample, minlength=batch_size)
    prunable_audio = torch.bincount(layout.audio_sample[layout.window_of_audio >= 0], minlength=batch_size)
    video_keep_ratio, audio_keep_ratio = ratios.per_sample(num_video, prunable_audio)

    flat_embeds = inputs_embeds.reshape(batch_size * seq_len, hidden_size)
    frame_sample = layout.pair_sample[layout.pair_of_frame]  # (F,)
    video_keep = spatio_temporal_prune(
        flat_embeds[layout.video_index],
        layout.frame_of_video,
        layout.frame_size,
        layout.frame_is_second,
        video_keep_ratio[frame_sample],
    )
    audio_keep, gated_audio, audio_gate, audio_logits = _select_audio(
        selector, flat_embeds, layout, video_keep, audio_keep_ratio
    )
    return TokenSelection(
        layout=layout,
        video_keep=video_keep,
        audio_keep=audio_keep,
        gated_audio=gated_audio,
        audio_gate=audio_gate,
        audio_logits=audio_logits,
    )


def _active_windows(layout: MediaLayout, kept_video_per_pair: torch.Tensor, audio_keep_ratio: torch.Tensor):
    """`(P,)` bool: the windows VGAS scores: with kept video, at least two audio tokens, and a sample that drops
    audio. The audio of the other windows stays."""
    window = layout.window_of_audio
    audio_per_pair = torch.bincount(window[window >= 0], minlength=layout.num_pairs)
    return (kept_video_per_pair > 0) & (audio_per_pair > 1) & (audio_keep_ratio[layout.pair_sample] < 1)


def kept_token_counts(layout: MediaLayout, ratios: KeepRatios) -> tuple[torch.Tensor, torch.Tensor]:
    """How many tokens [`select_tokens`] keeps of each frame and of each audio window: a function of the layout and
    the ratios only, never of the embeddings, so a serving engine can size a clip's placeholders before its encoders
    run (the vLLM plugin does).

    Args:
        layout ([`MediaLayout`]): where the video and audio tokens are.
        ratios ([`KeepRatios`]): the resolved ratios (the split is derived per sample of the layout).

    Returns:
        `tuple(torch.LongTensor, torch.LongTensor)`: kept tokens per frame `(F,)` and per window `(P,)` (a window's
        audio is all kept when VGAS does not score it).
    """
    batch_size = int(layout.pair_sample.max().item()) + 1 if layout.num_pairs else 1
    num_video = torch.bincount(layout.video_sample, minlength=batch_size)
    prunable_audio = torch.bincount(layout.audio_sample[layout.window_of_audio >= 0], minlength=batch_size)
    video_keep_ratio, audio_keep_ratio = ratios.per_sample(num_video, prunable_audio)
    frame_sample = layout.pair_sample[layout.pair_of_frame]
    frame_kept = layout.frame_size - frame_drop_counts(
        layout.frame_size, layout.frame_is_second, video_keep_ratio[frame_sample]
    )
    kept_video_per_pair = torch.zeros(layout.num_pairs, dtype=torch.long, device=frame_kept.device)
    kept_video_per_pair.index_add_(0, layout.pair_of_frame, frame_kept)
    window = layout.window_of_audio
    window_size = torch.bincount(window[window >= 0], minlength=layout.num_pairs)
    active = _active_windows(layout, kept_video_per_pair, audio_keep_ratio)
    window_kept = window_size - drop_count(window_size, audio_keep_ratio[layout.pair_sample])
    return frame_kept, torch.where(active, window_kept, window_size)


def _select_audio(
    selector: OmniSiftAudioSelector,
    flat_embeds: torch.Tensor,
    layout: MediaLayout,
    video_keep: torch.Tensor,
    audio_keep_ratio: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """VGAS over every active window at once: the audio keep decisions `(Na,)`, the scored audio tokens `(n,)`, their
    straight-through gates `(n,)` and their logits `(n,)` (the last three `None` when no window is active).

    A window is active when it has kept video, at least two audio tokens and its sample drops audio; the audio of
    the other windows stays.
    """
    audio_keep = torch.ones_like(layout.audio_index, dtype=torch.bool)
    num_pairs = layout.num_pairs
    window = layout.window_of_audio  # (Na,)
    has_window = window >= 0
    video_pair = layout.pair_of_frame[layout.frame_of_video]  # (Nv,)
    kept_video_per_pair = torch.bincount(video_pair[video_keep], minlength=num_pairs)
    active = _active_windows(layout, kept_video_per_pair, audio_keep_ratio)
    active_pairs = torch.nonzero(active).squeeze(1)  # (W,)
    num_windows = active_pairs.shape[0]
    if num_windows == 0:
        return audio_keep, None, None, None
    renumber = torch.full((num_pairs,), -1, dtype=torch.long, device=active.device)
    renumber[active_pairs] = torch.arange(num_windows, device=active.device)

    scored_audio = torch.nonzero(has_window & active[window.clamp(min=0)]).squeeze(1)  # (n,) into audio
    audio_window = renumber[window[scored_audio]]
    guide_video = torch.nonzero(video_keep & active[video_pair]).squeeze(1)  # into video
    video_window = renumber[video_pair[guide_video]]

    audio, audio_slot = pad_segments(flat_embeds[layout.audio_index[scored_audio]], audio_window, num_windows)
    video, video_slot = pad_segments(flat_embeds[layout.video_index[guide_video]], video_window, num_windows)
    video_padding = torch.ones(video.shape[:2], dtype=torch.bool, device=video.device)  # (W, V)
    video_padding[video_window, video_slot] = False
    logits = selector(audio, video, video_padding_mask=video_padding, return_logits=True)  # (W, A)
    logits = logits.to(flat_embeds.device)[audio_window, audio_slot]  # (n,); the selector may sit elsewhere
    scores = torch.sigmoid(logits)

    window_size = torch.bincount(audio_window, minlength=num_windows)
    hard = top_audio_per_window(scores, audio_window, window_size, audio_keep_ratio[layout.pair_sample[active_pairs]])
    audio_keep[scored_audio] = hard
    # Straight-through estimator: kept tokens are scaled by ~1 but carry the selector's gradient.
    gate = (hard.to(scores.dtype) - scores).detach() + scores
    return audio_keep, scored_audio, gate, logits
