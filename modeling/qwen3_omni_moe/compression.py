# Generated from the omnisift_hf package by `python -m omnisift_hf.tools.bundle`: do not edit this copy; edit
# the module of the same name in src/omnisift_hf/ and regenerate.
"""OmniSIFT's token selection as pure tensor functions (torch only; no model, no config).

Shape vocabulary used throughout:
    B  batch size                      L  padded sequence length
    D  hidden size                     Nv / Na  video / audio tokens of the whole batch (flattened, row-major)
    F  video frames (temporal slices)  P  frame pairs = audio windows
    K  longest kept sequence           S  segments (frames or windows) in `segment_rank`

A *keep* ratio is the fraction of tokens kept; the paper writes drop fractions `rho = 1 - keep`.

The functions never leave the tensors' device. They synchronise with the host only where an output size depends on
the data (one `max()` per padded layout), never per token.
"""

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "KeepRatios",
    "KeptSequence",
    "MediaLayout",
    "check_keep_ratio",
    "compact_kept_tokens",
    "derive_keep_ratios",
    "drop_count",
    "frame_drop_counts",
    "gather_kept_tokens",
    "media_layout",
    "media_runs",
    "pad_segments",
    "resolve_keep_ratios",
    "segment_rank",
    "spatio_temporal_prune",
    "token_keep_mask",
    "top_audio_per_window",
]


# ---------------------------------------------------------------------------------------------------------------------
# Keep ratios
# ---------------------------------------------------------------------------------------------------------------------
def check_keep_ratio(name: str, value: Any, allow_none: bool = True) -> float | None:
    """Validate one keep ratio (the fraction of tokens kept, `1 - rho` in the paper's notation).

    Args:
        name (`str`): the argument or field name, repeated in the error message.
        value: the value to check. An `int` `1` is accepted; `bool` is not a number here.
        allow_none (`bool`): whether `None` ("not set") is a valid value.

    Returns:
        `float | None`: the value as a float, or `None`.

    Raises:
        `TypeError`: the value is not a real number.
        `ValueError`: the value is NaN or outside `(0, 1]`.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"`{name}` must be a number in (0, 1] (the fraction of audio/video tokens to keep), "
            f"got {value!r} of type {type(value).__name__}."
        )
    value = float(value)
    if math.isnan(value) or not 0.0 < value <= 1.0:
        raise ValueError(
            f"`{name}` must be in (0, 1] (the fraction of audio/video tokens to keep; 1.0 turns compression off), "
            f"got {value!r}."
        )
    return value


@dataclass(frozen=True)
class KeepRatios:
    """The ratios one forward pass uses. `video` / `audio` of `None` mean "derived from `keep`"."""

    keep: float
    video: float | None = None
    audio: float | None = None

    @property
    def is_identity(self) -> bool:
        """True when nothing would be dropped: compression is skipped before any arithmetic."""
        video = self.keep if self.video is None else self.video
        audio = self.keep if self.audio is None else self.audio
        return video == 1.0 and audio == 1.0

    def per_sample(self, num_video: torch.Tensor, num_audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Video and audio keep ratios of each sample, float64 (float32 on MPS), shape `(B,)`: the split
        `derive_keep_ratios` makes of `keep`, replaced by `video` / `audio` where those are set.

        Args:
            num_video (`torch.LongTensor` of shape `(B,)`): video tokens per sample.
            num_audio (`torch.LongTensor` of shape `(B,)`): prunable audio tokens per sample.
        """
        video, audio = derive_keep_ratios(self.keep, num_video, num_audio)
        if self.video is not None:
            video = torch.full_like(video, self.video)
        if self.audio is not None:
            audio = torch.full_like(audio, self.audio)
        return video, audio


def resolve_keep_ratios(
    keep_ratio: float | None,
    video_keep_ratio: float | None,
    audio_keep_ratio: float | None,
    default_keep_ratio: float,
    default_video_keep_ratio: float | None,
    default_audio_keep_ratio: float | None,
) -> KeepRatios:
    """Validate per-call and configured ratios and apply the precedence, most specific first: per-call modality ratio,
    per-call `keep_ratio` (its derived split), configured modality ratio, configured `keep_ratio`.

    The configured values are checked again on every call: config fields can be reassigned after validation. Errors
    name them `config.<field>`.
    """
    keep_ratio = check_keep_ratio("keep_ratio", keep_ratio)
    video_keep_ratio = check_keep_ratio("video_keep_ratio", video_keep_ratio)
    audio_keep_ratio = check_keep_ratio("audio_keep_ratio", audio_keep_ratio)
    default_keep_ratio = check_keep_ratio("config.keep_ratio", default_keep_ratio, allow_none=False)
    default_video_keep_ratio = check_keep_ratio("config.video_keep_ratio", default_video_keep_ratio)
    default_audio_keep_ratio = check_keep_ratio("config.audio_keep_ratio", default_audio_keep_ratio)
    if keep_ratio is not None:
        # A per-call overall budget replaces the configured per-modality values.
        return KeepRatios(keep=keep_ratio, video=video_keep_ratio, audio=audio_keep_ratio)
    return KeepRatios(
        keep=default_keep_ratio,
        video=video_keep_ratio if video_keep_ratio is not None else default_video_keep_ratio,
        audio=audio_keep_ratio if audio_keep_ratio is not None else default_audio_keep_ratio,
    )


def derive_keep_ratios(
    keep_ratio: float, num_video: torch.Tensor, num_audio: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split one overall keep ratio into per-sample video and audio keep ratios.

    Rule (per sample, `k = keep_ratio`, `nv` video tokens, `na` prunable audio tokens, budget `k * (nv + na)`):
      1. audio keeps `a = min(1, 2k)` (audio is denser in information per token than video: the paper's asymmetry,
         `k = 0.25 -> a = 0.5`, `k = 0.35 -> a = 0.7`);
      2. video keeps what is left of the budget: `v = (k * (nv + na) - a * na) / nv`, so the achieved retention
         matches `k` up to rounding;
      3. when the audio share leaves video less than half the overall rate (`v < k / 2`, clips with few video tokens),
         video keeps `k / 2` and audio shrinks to the rest of the budget.
    Samples without audio get `v = k`; samples without video get `a = k` (their audio is never pruned anyway).

    Args:
        keep_ratio (`float`): overall keep ratio in (0, 1].
        num_video (`torch.LongTensor` of shape `(B,)`): video tokens per sample.
        num_audio (`torch.LongTensor` of shape `(B,)`): prunable audio tokens per sample (audio that shares a time
            window with video).

    Returns:
        `tuple(torch.Tensor, torch.Tensor)`: video and audio keep ratios, float64 (float32 on MPS), shape `(B,)`.
    """
    dtype = _count_dtype(num_video.device)
    nv, na = num_video.to(dtype), num_audio.to(dtype)
    budget = keep_ratio * (nv + na)
    audio = torch.full_like(nv, min(1.0, 2.0 * keep_ratio))
    video = (budget - audio * na) / nv.clamp(min=1)
    floor = keep_ratio / 2
    starved = video < floor
    video = torch.where(starved, torch.full_like(video, floor), video)
    audio = torch.where(starved, (budget - floor * nv) / na.clamp(min=1), audio)
    video = torch.where(na == 0, torch.full_like(video, keep_ratio), video)
    audio = torch.where(nv == 0, torch.full_like(audio, keep_ratio), audio)
    return video.clamp(0.0, 1.0), audio.clamp(0.0, 1.0)


def drop_count(num_tokens: torch.Tensor, keep_ratio: torch.Tensor) -> torch.Tensor:
    """`floor(num_tokens * rho)` with `rho = 1 - keep_ratio`, computed like the reference's `int(n * rho)`.

    The reference is given `rho` directly (0.7, 0.77, ...). Here `rho` is rebuilt from the keep ratio and rounded to
    6 decimals first, which recovers the written decimal: `1 - 0.9` is `0.09999999999999998` and would drop 4 of 50
    tokens instead of 5; a float32 `0.23` would drop 76 of 100 instead of 77. The product is then floored in float64
    exactly as the reference floors it (so `90 * 0.7 = 62.99999999999999` drops 62, as in the reference).

    Args:
        num_tokens (`torch.LongTensor` of any shape): token counts.
        keep_ratio (`torch.Tensor` broadcastable to `num_tokens`): keep fractions.

    Returns:
        `torch.LongTensor`: the number of tokens to drop, same shape as the broadcast inputs.
    """
    dtype = _count_dtype(num_tokens.device)
    drop_ratio = torch.round(1.0 - keep_ratio.to(dtype), decimals=6)
    return torch.floor(num_tokens.to(dtype) * drop_ratio).long()


def _count_dtype(device: torch.device) -> torch.dtype:
    # MPS has no float64; CPU and CUDA count in float64 so that token counts stay exact.
    return torch.float32 if device.type == "mps" else torch.float64


# ---------------------------------------------------------------------------------------------------------------------
# Where the audio and video tokens are
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class MediaLayout:
    """Where the video and audio tokens of a batch sit and how they group into frames, pairs and windows.

    Token tensors index the flattened `(B * L)` sequence in row-major order, so video token `i` of the layout is
    row `i` of the concatenated video embeddings. A *run* is a maximal stretch of consecutive audio/video
    placeholders: one video with its interleaved audio (`use_audio_in_video=True`), one video alone, or one audio
    item. Frames are video tokens of one run sharing a temporal M-RoPE id; frames pair up in order inside their run
    (an odd last frame is alone). Pair `p` owns the audio of its run whose temporal id lies in
    `[t_p, t_{p+1})`; the run's last pair owns all the run's remaining audio.

    Attributes:
        video_index (`torch.LongTensor` of shape `(Nv,)`): flat position of each video token.
        audio_index (`torch.LongTensor` of shape `(Na,)`): flat position of each audio token.
        video_sample (`torch.LongTensor` of shape `(Nv,)`) / audio_sample (`(Na,)`): batch row of each token.
        frame_of_video (`torch.LongTensor` of shape `(Nv,)`): frame of each video token.
        frame_size (`torch.LongTensor` of shape `(F,)`): tokens per frame.
        frame_is_second (`torch.BoolTensor` of shape `(F,)`): whether the frame is the second of its pair.
        pair_of_frame (`torch.LongTensor` of shape `(F,)`): pair of each frame.
        pair_sample (`torch.LongTensor` of shape `(P,)`): batch row of each pair.
        window_of_audio (`torch.LongTensor` of shape `(Na,)`): pair whose window holds each audio token, -1 for audio
            without video in its run (separate audio items), which is never dropped.
    """

    video_index: torch.Tensor
    audio_index: torch.Tensor
    video_sample: torch.Tensor
    audio_sample: torch.Tensor
    frame_of_video: torch.Tensor
    frame_size: torch.Tensor
    frame_is_second: torch.Tensor
    pair_of_frame: torch.Tensor
    pair_sample: torch.Tensor
    window_of_audio: torch.Tensor

    @property
    def num_pairs(self) -> int:
        return self.pair_sample.shape[0]


def _run_starts(media: torch.Tensor) -> torch.Tensor:
    """`(B, L)` bool: the first placeholder of each run (a maximal stretch of consecutive media placeholders)."""
    previous = torch.zeros_like(media)
    previous[:, 1:] = media[:, :-1]
    return media & ~previous


def media_runs(video_mask: torch.Tensor, audio_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The runs of a batch (maximal stretches of consecutive audio/video placeholders: a video with its interleaved
    audio, a video alone, an audio item) and what they hold.

    Args:
        video_mask (`torch.BoolTensor` of shape `(B, L)`): video placeholder positions.
        audio_mask (`torch.BoolTensor` of shape `(B, L)`): audio placeholder positions.

    Returns:
        `tuple(torch.LongTensor, torch.BoolTensor, torch.BoolTensor)`, each of shape `(R,)`: the batch row of each
        run, whether it holds video tokens, whether it holds audio tokens.
    """
    starts = _run_starts(video_mask | audio_mask)
    run_of_token = starts.flatten().cumsum(0) - 1  # (B*L,)
    num_runs = int(starts.sum().item())
    holds_video = torch.bincount(run_of_token[video_mask.flatten()], minlength=num_runs) > 0
    holds_audio = torch.bincount(run_of_token[audio_mask.flatten()], minlength=num_runs) > 0
    return torch.nonzero(starts.flatten()).squeeze(1) // video_mask.shape[1], holds_video, holds_audio


def media_layout(video_mask: torch.Tensor, audio_mask: torch.Tensor, temporal_ids: torch.Tensor) -> MediaLayout:
    """Group the audio/video placeholders of a batch into frames, frame pairs and audio windows.

    Args:
        video_mask (`torch.BoolTensor` of shape `(B, L)`): video placeholder positions.
        audio_mask (`torch.BoolTensor` of shape `(B, L)`): audio placeholder positions.
        temporal_ids (`torch.LongTensor` of shape `(B, L)`): temporal M-RoPE ids (row `t` of the 3-D positions).

    Returns:
        [`MediaLayout`].
    """
    seq_len = video_mask.shape[1]
    device = video_mask.device
    run_of_token = _run_starts(video_mask | audio_mask).flatten().cumsum(0) - 1  # (B*L,)
    flat_t = temporal_ids.flatten()

    video_index = torch.nonzero(video_mask.flatten()).squeeze(1)  # (Nv,)
    audio_index = torch.nonzero(audio_mask.flatten()).squeeze(1)  # (Na,)
    video_run, video_t = run_of_token[video_index], flat_t[video_index]

    # Frames: a new one starts where the run or the temporal id changes between consecutive video tokens.
    new_frame = torch.ones_like(video_index, dtype=torch.bool)
    new_frame[1:] = (video_run[1:] != video_run[:-1]) | (video_t[1:] != video_t[:-1])
    frame_of_video = torch.cumsum(new_frame, 0) - 1  # (Nv,)
    frame_first_token = torch.nonzero(new_frame).squeeze(1)  # (F,)
    num_frames = frame_first_token.shape[0]
    frame_size = torch.bincount(frame_of_video, minlength=num_frames)
    frame_run, frame_t = video_run[frame_first_token], video_t[frame_first_token]

    # Pairs: frames (0, 1), (2, 3), ... counted from the first frame of each run.
    frame_ids = torch.arange(num_frames, device=device)
    new_run = torch.ones(num_frames, dtype=torch.bool, device=device)
    new_run[1:] = frame_run[1:] != frame_run[:-1]
    run_first_frame = torch.cummax(torch.where(new_run, frame_ids, 0), 0).values
    frame_is_second = (frame_ids - run_first_frame) % 2 == 1
    pair_of_frame = torch.cumsum(~frame_is_second, 0) - 1  # (F,)
    pair_first_frame = torch.nonzero(~frame_is_second).squeeze(1)  # (P,)
    pair_run, pair_t = frame_run[pair_first_frame], frame_t[pair_first_frame]

    # Windows: the last pair of the audio token's run that starts at or before the token's time.
    audio_run, audio_t = run_of_token[audio_index], flat_t[audio_index]
    span = int(flat_t.max().item()) + 1 if flat_t.numel() else 1
    pair_key = pair_run * span + pair_t  # increasing: runs are ordered, time increases inside a run
    audio_key = audio_run * span + audio_t
    window = torch.searchsorted(pair_key, audio_key, right=True) - 1
    # Audio earlier than its run's first pair (if any) joins that pair's window.
    run_first_pair = torch.searchsorted(pair_key, audio_run * span)
    window = torch.maximum(window, run_first_pair)
    window_of_audio = torch.full_like(audio_index, -1)
    if pair_key.numel():
        in_run = (window < pair_key.shape[0]) & (pair_run[window.clamp(max=pair_key.shape[0] - 1)] == audio_run)
        window_of_audio = torch.where(in_run, window, window_of_audio)

    return MediaLayout(
        video_index=video_index,
        audio_index=audio_index,
        video_sample=video_index // seq_len,
        audio_sample=audio_index // seq_len,
        frame_of_video=frame_of_video,
        frame_size=frame_size,
        frame_is_second=frame_is_second,
        pair_of_frame=pair_of_frame,
        pair_sample=video_index[frame_first_token[pair_first_frame]] // seq_len,
        window_of_audio=window_of_audio,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Ranking and selection
# ---------------------------------------------------------------------------------------------------------------------
def segment_rank(scores: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:
    """Rank of each element inside its segment, highest score first; ties go to the earlier element.

    Args:
        scores (`torch.Tensor` of shape `(N,)`): scores to rank.
        segment (`torch.LongTensor` of shape `(N,)`): segment id of each element (any order, ids >= 0).

    Returns:
        `torch.LongTensor` of shape `(N,)`: 0 for the highest score of each segment, 1 for the next, ...
    """
    by_score = torch.sort(scores, descending=True, stable=True).indices
    order = by_score[torch.sort(segment[by_score], stable=True).indices]  # by (segment, -score, index)
    segment_size = torch.bincount(segment)
    segment_start = torch.cumsum(segment_size, 0) - segment_size
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.shape[0], device=order.device) - segment_start[segment[order]]
    return rank


def spatio_temporal_prune(
    video_embeds: torch.Tensor,
    frame_of_video: torch.Tensor,
    frame_size: torch.Tensor,
    frame_is_second: torch.Tensor,
    frame_keep_ratio: torch.Tensor,
) -> torch.Tensor:
    """STVP: spatio-temporal video pruning (parameter-free).

    First frame of a pair: score each token by cosine similarity to its frame's mean token (spatial redundancy).
    Second frame: score each token by cosine similarity to the token at the same position of the (unpruned) first
    frame (temporal redundancy); when the two frames differ in size the second frame is kept whole. Both frames drop
    their `floor(n_p * rho)` highest-scoring tokens, `n_p` = size of the pair's first frame, and always keep at least
    one token.

    Args:
        video_embeds (`torch.Tensor` of shape `(Nv, D)`): video tokens, frames contiguous and in order.
        frame_of_video (`torch.LongTensor` of shape `(Nv,)`): frame of each token (non-decreasing).
        frame_size (`torch.LongTensor` of shape `(F,)`): tokens per frame.
        frame_is_second (`torch.BoolTensor` of shape `(F,)`): whether a frame is the second of its pair (its partner is
            the frame before it).
        frame_keep_ratio (`torch.Tensor` of shape `(F,)`): keep ratio of each frame (its video's).

    Returns:
        `torch.BoolTensor` of shape `(Nv,)`: True for kept tokens.
    """
    num_frames = frame_size.shape[0]
    x = video_embeds.float()  # cosine ranking in float32: bf16 scores tie far too often
    frame_start = torch.cumsum(frame_size, 0) - frame_size
    frame_mean = torch.zeros(num_frames, x.shape[1], dtype=x.dtype, device=x.device)
    frame_mean.index_add_(0, frame_of_video, x)
    frame_mean /= frame_size.unsqueeze(1).to(x.dtype)
    spatial = F.cosine_similarity(x, frame_mean[frame_of_video], dim=-1)  # (Nv,)

    previous = (torch.arange(num_frames, device=x.device) - 1).clamp(min=0)
    comparable = frame_is_second & (frame_size == frame_size[previous])  # (F,)
    token_comparable = comparable[frame_of_video]
    offset = torch.arange(x.shape[0], device=x.device) - frame_start[frame_of_video]
    partner = torch.where(token_comparable, frame_start[previous[frame_of_video]] + offset, 0)
    temporal = F.cosine_similarity(x, x[partner], dim=-1)
    scores = torch.where(token_comparable, temporal, spatial)

    drops = frame_drop_counts(frame_size, frame_is_second, frame_keep_ratio)
    return segment_rank(scores, frame_of_video) >= drops[frame_of_video]


def frame_drop_counts(
    frame_size: torch.Tensor, frame_is_second: torch.Tensor, frame_keep_ratio: torch.Tensor
) -> torch.Tensor:
    """How many tokens STVP drops of each frame, `(F,)`: `floor(n_p * rho)` with `n_p` the size of the pair's first
    frame, 0 for a second frame whose size differs from its first (kept whole), and never the whole frame. A function
    of the sizes only, so a serving engine can size its placeholders before the encoders run.

    Args:
        frame_size (`torch.LongTensor` of shape `(F,)`): tokens per frame.
        frame_is_second (`torch.BoolTensor` of shape `(F,)`): whether a frame is the second of its pair.
        frame_keep_ratio (`torch.Tensor` of shape `(F,)`): keep ratio of each frame (its video's).
    """
    previous = (torch.arange(frame_size.shape[0], device=frame_size.device) - 1).clamp(min=0)
    comparable = frame_is_second & (frame_size == frame_size[previous])
    pair_size = torch.where(frame_is_second, frame_size[previous], frame_size)
    # At least one token of each frame stays: the audio selector needs it, and only a ratio that rounds to 0 (below
    # 5e-7) would drop a whole frame; for every other ratio this is the reference's `int(n * rho)`.
    drops = torch.minimum(drop_count(pair_size, frame_keep_ratio), frame_size - 1)
    return torch.where(frame_is_second & ~comparable, 0, drops)


def top_audio_per_window(
    scores: torch.Tensor, window: torch.Tensor, window_size: torch.Tensor, window_keep_ratio: torch.Tensor
) -> torch.Tensor:
    """VGAS selection: keep the `n_a - floor(n_a * rho)` highest-scoring audio tokens of each window.

    Args:
        scores (`torch.Tensor` of shape `(Na,)`): selector scores of the audio tokens.
        window (`torch.LongTensor` of shape `(Na,)`): window of each token (ids >= 0).
        window_size (`torch.LongTensor` of shape `(P,)`): audio tokens per window.
        window_keep_ratio (`torch.Tensor` of shape `(P,)`): keep ratio of each window (its sample's).

    Returns:
        `torch.BoolTensor` of shape `(Na,)`: True for kept tokens.
    """
    keep = window_size - drop_count(window_size, window_keep_ratio)  # (P,)
    return segment_rank(scores.float(), window) < keep[window]


# ---------------------------------------------------------------------------------------------------------------------
# Shortening the sequences
# ---------------------------------------------------------------------------------------------------------------------
def token_keep_mask(
    attention_mask: torch.Tensor, layout: MediaLayout, video_keep: torch.Tensor, audio_keep: torch.Tensor
) -> torch.Tensor:
    """Which positions of the batch stay: real tokens, minus the dropped video and audio tokens.

    Args:
        attention_mask (`torch.Tensor` of shape `(B, L)`): 1 at real tokens, 0 at padding.
        layout ([`MediaLayout`]): where the video and audio tokens are.
        video_keep (`torch.BoolTensor` of shape `(Nv,)`), audio_keep (`torch.BoolTensor` of shape `(Na,)`): decisions.

    Returns:
        `torch.BoolTensor` of shape `(B, L)`.
    """
    keep = attention_mask.bool().flatten().clone()
    keep[layout.video_index] &= video_keep
    keep[layout.audio_index] &= audio_keep
    return keep.view(attention_mask.shape)


def compact_kept_tokens(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices that gather each row's kept tokens, in order, left-padded to the longest row.

    Args:
        keep (`torch.BoolTensor` of shape `(B, L)`): tokens to keep (padding must already be False).

    Returns:
        `tuple(torch.LongTensor, torch.LongTensor)`:
            index of shape `(B, K)` into the `L` axis (0 at padding slots) and the new attention mask `(B, K)`.
    """
    batch_size, seq_len = keep.shape
    counts = keep.sum(1)  # (B,)
    kept_len = int(counts.max().item())
    slot = kept_len - counts.unsqueeze(1) + torch.cumsum(keep, 1) - 1  # (B, L) target column of each kept token
    slot = torch.where(keep, slot, kept_len)  # dropped tokens go to a spare column, removed below
    positions = torch.arange(seq_len, device=keep.device).expand(batch_size, -1)
    index = torch.zeros(batch_size, kept_len + 1, dtype=torch.long, device=keep.device)
    index.scatter_(1, slot, positions)
    columns = torch.arange(kept_len, device=keep.device)
    attention_mask = (columns >= kept_len - counts.unsqueeze(1)).long()
    return index[:, :kept_len] * attention_mask, attention_mask


@dataclass
class KeptSequence:
    """The shortened, left-padded batch the language model reads (`K` = the longest kept row).

    Attributes:
        index (`torch.LongTensor` of shape `(B, K)`): position in the input sequence of each kept slot (0 at padding).
        attention_mask (`torch.LongTensor` of shape `(B, K)`): 1 at kept tokens, 0 at padding.
        inputs_embeds (`torch.Tensor` of shape `(B, K, D)`): their embeddings.
        position_ids (`torch.LongTensor` of shape `(4, B, K)`): contiguous text positions (row 0; a jump would be read
            as a new packed sequence) and the kept tokens' original M-RoPE temporal/height/width positions (rows 1-3,
            1 at padding, as `get_rope_index` writes it).
        labels (`torch.LongTensor` of shape `(B, K)`, *optional*): their labels, -100 at padding.
        rope_deltas (`torch.LongTensor` of shape `(B, 1)`): offset of the M-RoPE positions of the tokens that follow
            (last kept position + 1 - kept length), for decode steps without explicit positions.
    """

    index: torch.Tensor
    attention_mask: torch.Tensor
    inputs_embeds: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor | None
    rope_deltas: torch.Tensor


def gather_kept_tokens(
    keep: torch.Tensor,
    inputs_embeds: torch.Tensor,
    mrope_position_ids: torch.Tensor,
    labels: torch.Tensor | None = None,
) -> KeptSequence:
    """Gather each sample's kept tokens (embeddings, M-RoPE positions, labels) and re-pad them on the left.

    Args:
        keep (`torch.BoolTensor` of shape `(B, L)`): tokens to keep (padding must already be False).
        inputs_embeds (`torch.Tensor` of shape `(B, L, D)`): the merged (and gated) embeddings.
        mrope_position_ids (`torch.LongTensor` of shape `(3, B, L)`): temporal, height and width positions.
        labels (`torch.LongTensor` of shape `(B, L)`, *optional*): language-modelling labels.

    Returns:
        [`KeptSequence`].
    """
    index, attention_mask = compact_kept_tokens(keep)  # (B, K), (B, K)
    hidden_size = inputs_embeds.shape[-1]
    kept_embeds = inputs_embeds.gather(1, index.unsqueeze(-1).expand(-1, -1, hidden_size))  # (B, K, D)
    kept_mrope = mrope_position_ids.gather(2, index.unsqueeze(0).expand(3, -1, -1))  # (3, B, K)
    kept_mrope = kept_mrope.masked_fill(attention_mask == 0, 1)
    text_positions = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)  # (B, K)
    kept_labels = None
    if labels is not None:
        kept_labels = labels.gather(1, index).masked_fill(attention_mask == 0, -100)
    return KeptSequence(
        index=index,
        attention_mask=attention_mask,
        inputs_embeds=kept_embeds,
        position_ids=torch.cat([text_positions.unsqueeze(0), kept_mrope], dim=0),  # (4, B, K)
        labels=kept_labels,
        rope_deltas=(kept_mrope.amax(dim=(0, 2)) + 1 - attention_mask.sum(-1)).unsqueeze(1),
    )


def pad_segments(values: torch.Tensor, segment: torch.Tensor, num_segments: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lay out `(N, D)` values grouped in contiguous, ordered segments as a zero-padded `(S, M, D)` tensor, `M` the
    largest segment.

    Args:
        values (`torch.Tensor` of shape `(N, D)`): the values, segment after segment.
        segment (`torch.LongTensor` of shape `(N,)`): segment of each value (non-decreasing, ids in `[0, S)`).
        num_segments (`int`): `S`.

    Returns:
        `tuple(torch.Tensor, torch.LongTensor)`: the padded tensor `(S, M, D)` and each value's slot in its segment
        `(N,)` (value `i` sits at `[segment[i], slot[i]]`).
    """
    size = torch.bincount(segment, minlength=num_segments)
    start = torch.cumsum(size, 0) - size
    slot = torch.arange(segment.shape[0], device=segment.device) - start[segment]
    padded = values.new_zeros(num_segments, int(size.max().item()), values.shape[-1])
    return padded.index_put((segment, slot), values), slot
