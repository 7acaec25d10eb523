"""Where a media item's tokens sit and which M-RoPE positions they take, as the transformers model lays them out:
what a serving engine needs to size a clip's placeholders before its encoders run and to place the kept tokens after.

torch only (no transformers, no vLLM), so that the transformers tests check these functions against
`Qwen2_5OmniThinkerModel.get_rope_index` and the model's own selection, and the vLLM plugin runs the same code.

A *span* is the run of embedding placeholders of one item, in prompt order: a video's frames interleaved with its own
audio in chunks (`use_audio_in_video`), a video alone, an image, an audio clip. Positions inside a span are relative to
its *base*, the position that follows the token before the span; transformers' `get_rope_index` gives:
    text and bos/eos tokens: the previous maximum + 1;
    a video with its audio: `<|vision_bos|><|audio_bos|>` both at `p`, the span from `p + 1`, `<|audio_eos|>` and
        `<|vision_eos|>` both at the span's maximum + 1;
    every other item: `<bos>` at `p`, the span from `p + 1`, `<eos>` at the span's maximum + 1.
"""

from dataclasses import dataclass

import torch

from ..compression import KeepRatios, media_layout, segment_rank
from ..selector import kept_token_counts

__all__ = [
    "POSITION_CHANNELS",
    "MediaSpan",
    "PromptItem",
    "audio_output_length",
    "audio_span",
    "decode_positions",
    "encode_positions",
    "fill_media_positions",
    "image_span",
    "kept_span_mask",
    "prompt_positions",
    "video_span",
]


@dataclass(frozen=True)
class MediaSpan:
    """The unpruned placeholder run of one media item.

    Attributes:
        is_video (`torch.BoolTensor` of shape `(n,)`): video tokens.
        is_audio (`torch.BoolTensor` of shape `(n,)`): audio tokens.
        positions (`torch.LongTensor` of shape `(3, n)`): temporal, height, width positions relative to the base.
    """

    is_video: torch.Tensor
    is_audio: torch.Tensor
    positions: torch.Tensor

    def __len__(self) -> int:
        return self.positions.shape[1]


def audio_output_length(num_mel_frames: int) -> int:
    """Audio tokens the Qwen2.5-Omni audio encoder makes of `num_mel_frames` mel frames (two stride-2 stages)."""
    return ((num_mel_frames - 1) // 2 + 1 - 2) // 2 + 1


def _grid_positions(grid_t: int, grid_h: int, grid_w: int, temporal_ids: torch.Tensor) -> torch.Tensor:
    """`(3, t*h*w)` positions of a merged grid, frame after frame, row after row."""
    t_index = temporal_ids.view(-1, 1).expand(-1, grid_h * grid_w).flatten()
    h_index = torch.arange(grid_h).view(1, -1, 1).expand(grid_t, -1, grid_w).flatten()
    w_index = torch.arange(grid_w).view(1, 1, -1).expand(grid_t, grid_h, -1).flatten()
    return torch.stack([t_index, h_index, w_index])


def _chunk_bounds(temporal_ids: list[int], ids_per_chunk: int) -> list[tuple[int, int]]:
    """Split increasing temporal ids into chunks the way `get_rope_index` does: a new chunk starts at the first id that
    reaches the next multiple of `ids_per_chunk` (one chunk per crossing, however far the id jumps)."""
    bounds, start, chunk = [], 0, 1
    for i, value in enumerate(temporal_ids):
        if value >= chunk * ids_per_chunk:
            bounds.append((start, i))
            start, chunk = i, chunk + 1
    bounds.append((start, len(temporal_ids)))
    return bounds


def video_span(
    grid_thw: tuple[int, int, int],
    spatial_merge_size: int,
    second_per_grid: float,
    position_id_per_seconds: int,
    seconds_per_chunk: int,
    num_audio_tokens: int | None = None,
) -> MediaSpan:
    """The span of a video, with its own audio interleaved in chunks when `num_audio_tokens` is given.

    Args:
        grid_thw (`tuple[int, int, int]`): the video's patch grid (before the spatial merge).
        spatial_merge_size (`int`): the vision encoder's merge (2).
        second_per_grid (`float`): seconds per temporal grid step (`video_second_per_grid`).
        position_id_per_seconds (`int`), seconds_per_chunk (`int`): the thinker config's values.
        num_audio_tokens (`int`, *optional*): audio tokens of the video's audio track (`use_audio_in_video`).
    """
    grid_t, grid_h, grid_w = (int(v) for v in grid_thw)
    grid_h, grid_w = grid_h // spatial_merge_size, grid_w // spatial_merge_size
    # As `get_rope_index`: float32 seconds times the rate, truncated.
    frame_ids = (
        torch.arange(grid_t) * torch.tensor(second_per_grid, dtype=torch.float32) * position_id_per_seconds
    ).long()
    video = _grid_positions(grid_t, grid_h, grid_w, frame_ids)
    if num_audio_tokens is None:
        flags = torch.ones(video.shape[1], dtype=torch.bool)
        return MediaSpan(is_video=flags, is_audio=~flags, positions=video)

    audio = torch.arange(num_audio_tokens).view(1, -1).expand(3, -1)
    ids_per_chunk = int(position_id_per_seconds * seconds_per_chunk)
    video_chunks = _chunk_bounds(video[0].tolist(), ids_per_chunk)
    audio_chunks = _chunk_bounds(audio[0].tolist(), ids_per_chunk)
    pieces, kinds = [], []
    for j in range(max(len(video_chunks), len(audio_chunks))):
        for chunks, source, is_video in ((video_chunks, video, True), (audio_chunks, audio, False)):
            if j < len(chunks):
                start, end = chunks[j]
                pieces.append(source[:, start:end])
                kinds.append(torch.full((end - start,), is_video, dtype=torch.bool))
    is_video = torch.cat(kinds)
    return MediaSpan(is_video=is_video, is_audio=~is_video, positions=torch.cat(pieces, dim=1))


def image_span(grid_thw: tuple[int, int, int], spatial_merge_size: int, position_id_per_seconds: int) -> MediaSpan:
    """The span of an image (never pruned)."""
    grid_t, grid_h, grid_w = (int(v) for v in grid_thw)
    frame_ids = (torch.arange(grid_t) * 1 * position_id_per_seconds).long()
    positions = _grid_positions(grid_t, grid_h // spatial_merge_size, grid_w // spatial_merge_size, frame_ids)
    flags = torch.zeros(positions.shape[1], dtype=torch.bool)
    return MediaSpan(is_video=flags, is_audio=flags, positions=positions)


def audio_span(num_audio_tokens: int) -> MediaSpan:
    """The span of an audio clip without video (never pruned)."""
    flags = torch.ones(num_audio_tokens, dtype=torch.bool)
    return MediaSpan(
        is_video=~flags, is_audio=flags, positions=torch.arange(num_audio_tokens).view(1, -1).expand(3, -1)
    )


def kept_span_mask(span: MediaSpan, ratios: KeepRatios) -> torch.BoolTensor:
    """A keep pattern of `span` with exactly the counts OmniSIFT keeps at `ratios` (per frame, per audio window): the
    first kept tokens of each frame and window. Which tokens the model keeps depends on the embeddings; how many does
    not, so this sizes the placeholders a serving engine writes into the prompt before its encoders run.

    Returns:
        `torch.BoolTensor` of shape `(n,)`.
    """
    if ratios.is_identity or not bool(span.is_video.any()):
        return torch.ones(len(span), dtype=torch.bool)
    layout = media_layout(span.is_video.unsqueeze(0), span.is_audio.unsqueeze(0), span.positions[0].unsqueeze(0))
    frame_kept, window_kept = kept_token_counts(layout, ratios)
    order = -torch.arange(len(span), dtype=torch.float32)  # earliest first
    keep = torch.ones(len(span), dtype=torch.bool)
    video_rank = segment_rank(order[layout.video_index], layout.frame_of_video)
    keep[layout.video_index] = video_rank < frame_kept[layout.frame_of_video]
    windowed = layout.window_of_audio >= 0
    if bool(windowed.any()):
        audio_index = layout.audio_index[windowed]
        window = layout.window_of_audio[windowed]
        keep[audio_index] = segment_rank(order[audio_index], window) < window_kept[window]
    return keep


@dataclass(frozen=True)
class PromptItem:
    """One media item of a prompt, for [`prompt_positions`].

    Attributes:
        offset (`int`): index of the first token of its placeholder run in the prompt (for a video with its audio,
            the run starts with `<|audio_bos|>` and ends with `<|audio_eos|>`).
        length (`int`): tokens of the placeholder run in the prompt (after pruning).
        span ([`MediaSpan`]): the item's unpruned span.
        with_audio (`bool`): a video with its audio (the run is wrapped in `<|audio_bos|>` / `<|audio_eos|>`).
    """

    offset: int
    length: int
    span: MediaSpan
    with_audio: bool = False


def prompt_positions(num_tokens: int, items: list[PromptItem]) -> tuple[torch.Tensor, int]:
    """M-RoPE positions `(3, N)` of a prompt whose media runs may be pruned, and the delta decoding continues with.

    Text tokens get the positions of the unpruned prompt (text after a clip continues from the unpruned clip's
    maximum + 1), so they are final here. The media tokens of an unpruned run get their original positions; those of
    a pruned run the base position, for [`fill_media_positions`] to overwrite once the encoders chose them.
    """
    positions = torch.empty(3, num_tokens, dtype=torch.long)
    next_position, cursor = 0, 0
    for item in sorted(items, key=lambda item: item.offset):
        text_len = item.offset - cursor
        positions[:, cursor : item.offset] = torch.arange(next_position, next_position + text_len)
        next_position += text_len
        media_start, media_len = item.offset, item.length
        if item.with_audio:
            # `<|audio_bos|>` shares the position of the `<|vision_bos|>` before it.
            positions[:, item.offset] = next_position - 1
            media_start, media_len = item.offset + 1, item.length - 2
        base = next_position
        span_max = base + int(item.span.positions.max()) if len(item.span) else base - 1
        if media_len == len(item.span):
            kept_positions = item.span.positions + base
        else:
            kept_positions = torch.full((3, media_len), base)
        positions[:, media_start : media_start + media_len] = kept_positions
        cursor = item.offset + item.length
        if item.with_audio:
            # `<|audio_eos|>` and the `<|vision_eos|>` after it both take the span's maximum + 1.
            positions[:, cursor - 1] = span_max + 1
            if cursor < num_tokens:
                positions[:, cursor] = span_max + 1
                cursor += 1
        next_position = span_max + 2 if item.with_audio else span_max + 1
    positions[:, cursor:] = torch.arange(next_position, next_position + num_tokens - cursor)
    delta = int(positions.max()) + 1 - num_tokens if num_tokens else 0
    return positions, delta


def fill_media_positions(
    positions: torch.Tensor,
    is_media: torch.Tensor,
    media_positions: torch.Tensor,
    first_row: int,
) -> torch.Tensor:
    """Write the positions of kept media tokens, given relative to their span's base, into a prompt's positions.

    Args:
        positions (`torch.LongTensor` of shape `(3, N)`): the prompt's positions ([`prompt_positions`]).
        is_media (`torch.BoolTensor` of shape `(N,)`): the embedding placeholders of the prompt, every item's.
        media_positions (`torch.LongTensor` of shape `(3, R)`): relative positions of `R` consecutive placeholders.
        first_row (`int`): index among the prompt's placeholders of the first of them.

    Returns:
        `torch.LongTensor` of shape `(3, N)`: a new tensor. A span's base is the position after the token that precedes
        its first placeholder (the bos, or the shared `<|vision_bos|>`/`<|audio_bos|>` position).
    """
    positions = positions.clone()
    media_index = torch.nonzero(is_media).squeeze(1)
    rows = media_index[first_row : first_row + media_positions.shape[1]]
    if rows.numel() == 0:
        return positions
    # The placeholder run of each row begins after the last non-placeholder token before it.
    run_start = torch.cummax(torch.where(is_media, 0, torch.arange(is_media.shape[0]) + 1), 0).values
    starts = run_start[rows]
    base = positions[0, starts - 1] + 1
    positions[:, rows] = media_positions.to(positions.dtype) + base
    return positions


# Positions ride along a kept row's embedding as 3 coordinates x 3 base-256 digits: every digit (0..255) is exact in
# bfloat16 and float16, so a clip's relative positions survive any model dtype (up to 2**24).
_DIGITS = 3
POSITION_CHANNELS = 3 * _DIGITS


def encode_positions(positions: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`(3, R)` non-negative integer positions -> `(R, 9)` channels of `dtype`, exact in any floating dtype."""
    if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= 256**_DIGITS):
        raise ValueError(
            f"relative positions must lie in [0, {256**_DIGITS}); got [{positions.min()}, {positions.max()}]"
        )
    digits = [(positions // 256**k) % 256 for k in reversed(range(_DIGITS))]  # each (3, R), most significant first
    return torch.stack(digits, dim=1).reshape(3 * _DIGITS, -1).T.to(dtype)  # (3, digits, R) -> (R, 9)


def decode_positions(channels: torch.Tensor) -> torch.Tensor:
    """Inverse of [`encode_positions`]: `(R, 9)` -> `(3, R)` long."""
    digits = channels.T.round().long().reshape(3, _DIGITS, -1)  # (3, digits, R)
    weights = torch.tensor([256**k for k in reversed(range(_DIGITS))]).view(1, -1, 1)
    return (digits * weights).sum(1)
