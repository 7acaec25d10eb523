"""Pictures of what OmniSIFT keeps and what it saves, drawn with Pillow only.

- `render_pipeline(pipe, "clip.mp4", keep_ratio=0.25)`, `render_model_output(outputs, inputs, config)` and the drawing
  primitive `render_compressed_clip(...)`: the sampled frames (one tile per temporal slice of 2 frames) with the
  dropped patch blocks greyed out, and the audio timeline with the kept audio tokens marked.
- `plot_benchmark(report)`: FLOPs, latency and memory against the keep ratio, from `omnisift_hf.tools.benchmark`'s
  JSON.

How kept tokens map back to pixels: the Qwen2-VL video processor cuts each temporal slice (2 frames) into 14-pixel
patches and orders them block by block (2 x 2 patches per block, blocks in row-major order); the vision encoder merges
each block into one LLM token and undoes its window reordering before the tokens reach the language model. So LLM video
token `j` of a slice is the 28 x 28-pixel block at row `j // (W / 2)`, column `j % (W / 2)` of the slice, `W` being the
slice's patch columns. `tests/test_visualization.py` checks each link of that chain.

Shape vocabulary: `T` temporal slices, `Hb x Wb` blocks (LLM tokens) per slice, `Na` audio tokens, `B` batch, `L`
sequence, `K` kept sequence.
"""

import math
from dataclasses import dataclass, field

import torch
from PIL import Image, ImageDraw, ImageFont

from ..media import AUDIO_TOKENS_PER_SECOND, CLIP_MEAN, CLIP_STD
from ..processing_omnisift import to_model_inputs

__all__ = [
    "CompressionPicture",
    "frames_from_pixel_values",
    "kept_token_mask",
    "media_keep_masks",
    "plot_benchmark",
    "render_compressed_clip",
    "render_model_output",
    "render_pipeline",
]

# Layout of `render_compressed_clip`, in pixels. Image width: 2 * MARGIN + columns * tile width + (columns - 1) * GAP.
# Height: MARGIN + TITLE_HEIGHT + rows * (tile height + LABEL_HEIGHT) + (rows - 1) * GAP, plus
# GAP + STRIP_TITLE_HEIGHT + STRIP_HEIGHT + AXIS_HEIGHT with audio, plus MARGIN. A tile is Wb x Hb blocks of
# `block_pixels` pixels each.
MARGIN = 16
GAP = 8
TITLE_HEIGHT = 24
LABEL_HEIGHT = 16
STRIP_TITLE_HEIGHT = 18
STRIP_HEIGHT = 28
AXIS_HEIGHT = 16
DROPPED_GREY = (222, 222, 222)
DROPPED_EDGE = (196, 196, 196)
KEPT_AUDIO = (232, 118, 18)
DROPPED_AUDIO = (228, 228, 228)
BACKGROUND = (255, 255, 255)
INK = (30, 30, 30)


def _font(size: int = 11) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


# ---------------------------------------------------------------------------------------------------------------------
# From model inputs and outputs to per-token keep flags and frames
# ---------------------------------------------------------------------------------------------------------------------
def kept_token_mask(
    kept_token_index: torch.Tensor | None,
    input_ids: torch.Tensor,
    kept_attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Which input positions reached the language model.

    Args:
        kept_token_index (`torch.LongTensor` of shape `(B, K)`, *optional*): the model output's `kept_token_index`
            (`None` when nothing was compressed: every position is kept).
        input_ids (`torch.LongTensor` of shape `(B, L)`): the model input.
        kept_attention_mask (`torch.LongTensor` of shape `(B, K)`, *optional*): the output's mask of the
            shortened sequence; without it, padding slots (index 0) mark position 0, which is never a media token.

    Returns:
        `torch.BoolTensor` of shape `(B, L)`.
    """
    if kept_token_index is None:
        return torch.ones_like(input_ids, dtype=torch.bool)
    index = kept_token_index.to(input_ids.device)
    keep = torch.zeros_like(input_ids, dtype=torch.bool)
    valid = (
        torch.ones_like(index, dtype=torch.bool)
        if kept_attention_mask is None
        else kept_attention_mask.to(input_ids.device).bool()
    )
    rows = torch.arange(index.shape[0], device=index.device).unsqueeze(1).expand_as(index)
    keep[rows[valid], index[valid]] = True
    return keep


def media_keep_masks(
    input_ids: torch.Tensor,
    keep: torch.Tensor,
    video_grid_thw: torch.Tensor,
    video_token_id: int,
    audio_token_id: int,
    sample: int = 0,
    video: int = 0,
    merge_size: int = 2,
) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Keep flags of one video of one sample, as a grid of LLM tokens, and of the audio interleaved with it.

    Args:
        input_ids (`torch.LongTensor` of shape `(B, L)`), keep (`torch.BoolTensor` of shape `(B, L)`): the batch and
            `kept_token_mask(...)`.
        video_grid_thw (`torch.LongTensor` of shape `(num_videos, 3)`): patch grids of every video of the batch, in
            order.
        sample, video: which sample, and which of its videos.

    Returns:
        `(video_keep, audio_keep, video_number)`: `torch.BoolTensor` of shape `(T, Hb, Wb)`; `torch.BoolTensor` of
        shape `(Na,)` for the audio tokens in the same run of placeholders as the video (its track, with
        `use_audio_in_video=True`), or `None` without such audio; the video's row in `video_grid_thw`.
    """
    ids, kept = input_ids[sample], keep[sample]
    grids = [tuple(int(v) for v in row) for row in video_grid_thw.tolist()]
    tokens_per_video = [t * h * w // merge_size**2 for t, h, w in grids]
    videos_per_sample, first = [], 0
    for row in range(input_ids.shape[0]):
        remaining, count = int((input_ids[row] == video_token_id).sum()), 0
        while remaining > 0 and first + count < len(tokens_per_video):
            remaining -= tokens_per_video[first + count]
            count += 1
        if remaining != 0:
            raise ValueError("video_grid_thw does not match the number of video tokens in input_ids.")
        videos_per_sample.append((first, count))
        first += count
    start, count = videos_per_sample[sample]
    if not 0 <= video < count:
        raise ValueError(f"video={video}: sample {sample} has {count} video(s).")
    number = start + video

    positions = torch.nonzero(ids == video_token_id).squeeze(1)
    offset = sum(tokens_per_video[start:number])
    mine = positions[offset : offset + tokens_per_video[number]]
    slices, height, width = grids[number]
    video_keep = kept[mine].view(slices, height // merge_size, width // merge_size)

    # The run of consecutive audio/video placeholders holding this video holds its audio track too.
    media = (ids == video_token_id) | (ids == audio_token_id)
    lo, hi = int(mine[0]), int(mine[-1])
    while lo > 0 and media[lo - 1]:
        lo -= 1
    while hi + 1 < ids.shape[0] and media[hi + 1]:
        hi += 1
    audio_positions = torch.nonzero(ids[lo : hi + 1] == audio_token_id).squeeze(1) + lo
    audio_keep = kept[audio_positions] if audio_positions.numel() else None
    return video_keep, audio_keep, number


def frames_from_pixel_values(
    pixel_values_videos: torch.Tensor,
    video_grid_thw: torch.Tensor,
    image_mean: tuple[float, ...] = CLIP_MEAN,
    image_std: tuple[float, ...] = CLIP_STD,
    patch_size: int = 14,
    temporal_patch_size: int = 2,
    merge_size: int = 2,
) -> list[torch.Tensor]:
    """The frames the model saw, rebuilt from the processor's patches (the inverse of the Qwen2-VL video
    processor's patchify and normalisation).

    Args:
        pixel_values_videos (`torch.Tensor` of shape `(sum of T * H * W, 3 * temporal_patch_size * patch_size**2)`).
        video_grid_thw (`torch.LongTensor` of shape `(num_videos, 3)`): `(T, H, W)` patch grid of each video.

    Returns:
        `list[torch.ByteTensor]`: one `(T * temporal_patch_size, 3, H * patch_size, W * patch_size)` tensor per video.
    """
    mean = torch.tensor(image_mean, dtype=torch.float32).view(3, 1, 1, 1)  # broadcasts over (3, tp, p, p)
    std = torch.tensor(image_std, dtype=torch.float32).view(3, 1, 1, 1)
    videos, start = [], 0
    for slices, height, width in video_grid_thw.tolist():
        rows = pixel_values_videos[start : start + slices * height * width].float().cpu()
        start += slices * height * width
        m, p, tp = merge_size, patch_size, temporal_patch_size
        # rows: (T, Hb, Wb, m, m) patches of (3, tp, p, p) values, as the processor flattens them
        patches = rows.view(slices, height // m, width // m, m, m, 3, tp, p, p)
        patches = patches * std + mean
        frames = patches.permute(0, 6, 5, 1, 3, 7, 2, 4, 8)  # (T, tp, 3, Hb, m, p, Wb, m, p)
        frames = frames.reshape(slices * tp, 3, height * p, width * p)
        videos.append((frames * 255).round().clamp(0, 255).to(torch.uint8))
    return videos


# ---------------------------------------------------------------------------------------------------------------------
# Drawing a compressed clip
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class CompressionPicture:
    """A rendered compressed clip.

    Attributes:
        image (`PIL.Image.Image`): the picture.
        num_video_tokens / num_kept_video_tokens: video tokens (blocks) shown, and those not greyed out.
        num_audio_tokens / num_kept_audio_tokens: audio tokens on the timeline, and those marked as kept.
        tile_boxes: `(left, top, right, bottom)` of each slice's tile, in slice order.
        block_pixels: side of one block (one LLM video token) in the picture.
    """

    image: Image.Image
    num_video_tokens: int
    num_kept_video_tokens: int
    num_audio_tokens: int = 0
    num_kept_audio_tokens: int = 0
    tile_boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    block_pixels: int = 12

    def save(self, path, **kwargs) -> None:
        """Save the image (format from the suffix, e.g. `.png`)."""
        self.image.save(path, **kwargs)


def _grey_out(tile: Image.Image, box: tuple[int, int, int, int]) -> None:
    """A dropped block: its content faded to pale grey, with a thin frame so that neighbouring blocks stay apart."""
    region = tile.crop(box).convert("L").convert("RGB")
    region = Image.blend(region, Image.new("RGB", region.size, DROPPED_GREY), 0.85)
    ImageDraw.Draw(region).rectangle((0, 0, region.width - 1, region.height - 1), outline=DROPPED_EDGE)
    tile.paste(region, box[:2])


def render_compressed_clip(
    frames: torch.Tensor,
    video_keep: torch.Tensor,
    audio_keep: torch.Tensor | None = None,
    seconds_per_slice: float = 1.0,
    audio_tokens_per_second: float = AUDIO_TOKENS_PER_SECOND,
    columns: int | None = None,
    block_pixels: int = 12,
    title: str | None = None,
) -> CompressionPicture:
    """Draw the slices of a video with their dropped blocks greyed out, and its audio timeline.

    Args:
        frames (`torch.Tensor` of shape `(T, 3, H, W)`): one frame per temporal slice (uint8, or float in 0..255),
            any resolution (each is resized to its tile).
        video_keep (`torch.BoolTensor` of shape `(T, Hb, Wb)`): kept LLM video tokens of each slice, row-major blocks.
        audio_keep (`torch.BoolTensor` of shape `(Na,)`, *optional*): kept audio tokens, in time order.
        seconds_per_slice: seconds covered by one slice (1.0 at Qwen's 2 fps).
        audio_tokens_per_second: audio tokens per second (`media.AUDIO_TOKENS_PER_SECOND`, 25 in Qwen2.5-Omni).
        columns: tiles per row (default: up to 8).
        block_pixels: side of one block in the picture.
        title: first line (default: the kept counts).

    Returns:
        [`CompressionPicture`].
    """
    slices, blocks_h, blocks_w = video_keep.shape
    if frames.shape[0] != slices:
        raise ValueError(f"frames: expected one frame per slice ({slices}), got {frames.shape[0]}.")
    video_keep = video_keep.bool().cpu()
    columns = columns or min(slices, 8)
    rows = math.ceil(slices / columns)
    tile_w, tile_h = blocks_w * block_pixels, blocks_h * block_pixels
    kept_video = int(video_keep.sum())
    num_audio = 0 if audio_keep is None else audio_keep.numel()
    kept_audio = 0 if audio_keep is None else int(audio_keep.sum())
    if title is None:
        title = f"video: {kept_video}/{video_keep.numel()} tokens kept ({kept_video / video_keep.numel():.1%})"
        if audio_keep is not None and num_audio:
            title += f"   audio: {kept_audio}/{num_audio} kept ({kept_audio / num_audio:.1%})"
    title_font = _font(13)

    # Wide enough for the tiles and for the title (a short clip has few tiles).
    width = max(
        2 * MARGIN + columns * tile_w + (columns - 1) * GAP, 2 * MARGIN + math.ceil(title_font.getlength(title))
    )
    height = MARGIN + TITLE_HEIGHT + rows * (tile_h + LABEL_HEIGHT) + (rows - 1) * GAP + MARGIN
    if audio_keep is not None:
        height += GAP + STRIP_TITLE_HEIGHT + STRIP_HEIGHT + AXIS_HEIGHT
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = _font(11)
    draw.text((MARGIN, MARGIN), title, fill=INK, font=title_font)

    boxes = []
    for index in range(slices):
        row, column = divmod(index, columns)
        left = MARGIN + column * (tile_w + GAP)
        top = MARGIN + TITLE_HEIGHT + row * (tile_h + LABEL_HEIGHT + GAP)
        frame = frames[index].detach().float().clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        tile = Image.fromarray(frame).convert("RGB").resize((tile_w, tile_h), Image.BILINEAR)
        for block_row, block_column in torch.nonzero(~video_keep[index]).tolist():
            x, y = block_column * block_pixels, block_row * block_pixels
            _grey_out(tile, (x, y, x + block_pixels, y + block_pixels))
        image.paste(tile, (left, top))
        boxes.append((left, top, left + tile_w, top + tile_h))
        start = index * seconds_per_slice
        label = f"{start:g}-{start + seconds_per_slice:g} s  {int(video_keep[index].sum())}/{blocks_h * blocks_w}"
        draw.text((left, top + tile_h + 2), label, fill=INK, font=font)

    if audio_keep is not None:
        top = MARGIN + TITLE_HEIGHT + rows * (tile_h + LABEL_HEIGHT) + (rows - 1) * GAP + GAP
        _draw_audio_strip(
            draw, audio_keep.bool().cpu(), top, width, slices * seconds_per_slice, audio_tokens_per_second, font
        )
    return CompressionPicture(
        image=image,
        num_video_tokens=video_keep.numel(),
        num_kept_video_tokens=kept_video,
        num_audio_tokens=num_audio,
        num_kept_audio_tokens=kept_audio,
        tile_boxes=boxes,
        block_pixels=block_pixels,
    )


def _draw_audio_strip(
    draw: ImageDraw.ImageDraw,
    audio_keep: torch.Tensor,
    top: int,
    width: int,
    video_seconds: float,
    tokens_per_second: float,
    font,
) -> None:
    """Audio tokens as columns on a time axis shared with the slices: kept in orange, dropped in light grey."""
    num_audio = audio_keep.numel()
    draw.text(
        (MARGIN, top),
        f"audio, {tokens_per_second:g} tokens/s: kept tokens in orange, dropped in grey",
        fill=INK,
        font=font,
    )
    top += STRIP_TITLE_HEIGHT
    span = max(video_seconds, num_audio / tokens_per_second, 1e-6)
    left, right = MARGIN, width - MARGIN
    scale = (right - left) / span

    def x(seconds: float) -> int:
        return left + round(seconds * scale)

    draw.rectangle((left, top, right - 1, top + STRIP_HEIGHT - 1), fill=DROPPED_AUDIO)
    for token in torch.nonzero(audio_keep).squeeze(1).tolist():
        x0 = x(token / tokens_per_second)
        x1 = max(x0, x((token + 1) / tokens_per_second) - 1)
        draw.rectangle((x0, top, x1, top + STRIP_HEIGHT - 1), fill=KEPT_AUDIO)
    # Ticks each second, labels at a readable spacing.
    step = next(s for s in (1, 2, 5, 10, 20, 30, 60, 120, 300, 600) if s * scale >= 36 or s == 600)
    axis = top + STRIP_HEIGHT
    for second in range(math.floor(span) + 1):
        draw.line((x(second), axis, x(second), axis + 3), fill=INK)
        if second % step == 0:
            label = f"{second} s"
            draw.text(
                (min(x(second) + 2, right - draw.textlength(label, font=font)), axis + 2), label, fill=INK, font=font
            )


def render_model_output(
    outputs,
    inputs: dict,
    config,
    sample: int = 0,
    video: int = 0,
    frames: torch.Tensor | None = None,
    image_mean: tuple[float, ...] = CLIP_MEAN,
    image_std: tuple[float, ...] = CLIP_STD,
    **style,
) -> CompressionPicture:
    """Render one video of one sample from an OmniSIFT forward pass.

    Args:
        outputs ([`OmniSiftCausalLMOutputWithPast`]): the model output (`kept_token_index`,
            `kept_attention_mask`), or `model.compression_stats` after `generate()`.
        inputs (`dict`): the model inputs: `input_ids`, `video_grid_thw`, and `pixel_values_videos` unless `frames`
            is given; `video_second_per_grid` when present.
        config ([`OmniSiftConfig`]): the model config (token ids, merge size, audio tokens per second).
        sample, video: which sample of the batch, and which of its videos.
        frames (`torch.Tensor` of shape `(T, 3, H, W)` or `(2T, 3, H, W)`, *optional*): the frames to draw (one per
            slice, or every sampled frame, of which the first of each slice is drawn). Default: rebuilt from
            `pixel_values_videos` with `image_mean` / `image_std` (the processor's normalisation).
        style: keyword arguments of `render_compressed_clip` (`columns`, `block_pixels`, `title`).
    """
    vision = config.vision_config
    merge_size = vision.spatial_merge_size
    input_ids = inputs["input_ids"]
    keep = kept_token_mask(
        getattr(outputs, "kept_token_index", None), input_ids, getattr(outputs, "kept_attention_mask", None)
    )
    grid = inputs["video_grid_thw"]
    video_keep, audio_keep, number = media_keep_masks(
        input_ids.cpu(),
        keep.cpu(),
        grid.cpu(),
        config.video_token_id,
        config.audio_token_id,
        sample,
        video,
        merge_size,
    )
    slices = video_keep.shape[0]
    if frames is None:
        offsets = torch.cumsum(torch.cat([grid.new_zeros(1), grid.prod(-1)]), 0)
        pixels = inputs["pixel_values_videos"][offsets[number] : offsets[number + 1]]
        frames = frames_from_pixel_values(
            pixels,
            grid[number : number + 1],
            image_mean,
            image_std,
            vision.patch_size,
            vision.temporal_patch_size,
            merge_size,
        )[0]
    if frames.shape[0] != slices:  # every sampled frame: draw the first of each slice
        frames = frames[torch.clamp(torch.arange(slices) * vision.temporal_patch_size, max=frames.shape[0] - 1)]
    seconds = inputs.get("video_second_per_grid")
    seconds_per_slice = float(seconds[number]) if seconds is not None else 1.0
    return render_compressed_clip(
        frames,
        video_keep,
        audio_keep,
        seconds_per_slice=seconds_per_slice,
        audio_tokens_per_second=float(config.position_id_per_seconds),
        **style,
    )


def render_pipeline(
    pipe,
    video,
    keep_ratio: float | None = None,
    question: str = "What is happening in this video?",
    **style,
) -> CompressionPicture:
    """Run the prefill of `pipe` (a `pipeline("omni-qa")`) on `video` at `keep_ratio` and render what was kept.

    Args:
        pipe ([`OmniQAPipeline`]): the pipeline (its processor's normalisation is used to redraw the frames).
        video: a video path, URL or array, as the pipeline takes it.
        keep_ratio: overall keep ratio (default: the model config's).
        question: the prompt's question (it does not change which media tokens are kept).
        style: keyword arguments of `render_compressed_clip` (`columns`, `block_pixels`, `title`).

    Example:

    ```python
    >>> from transformers import pipeline
    >>> import omnisift_hf
    >>> from omnisift_hf.testing_utils import tiny_model, tiny_processor
    >>> from omnisift_hf.tools.synthetic import write_synthetic_clip
    >>> from omnisift_hf.tools.visualization import render_pipeline

    >>> pipe = pipeline("omni-qa", model=tiny_model(), processor=tiny_processor())
    >>> picture = render_pipeline(pipe, write_synthetic_clip("/tmp/clip.mp4", seconds=4.0), keep_ratio=0.25)
    >>> picture.save("/tmp/compressed.png")
    ```
    """
    model = pipe.model
    model_inputs = to_model_inputs(pipe.preprocess({"video": video, "question": question}), model, pipe.device)
    with torch.no_grad():
        outputs = model(**model_inputs, keep_ratio=keep_ratio)
    processor = pipe.processor.video_processor
    if style.get("title") is None:
        ratio = model.config.keep_ratio if keep_ratio is None else keep_ratio
        kept = int(outputs.num_kept_video_tokens[0] + outputs.num_kept_audio_tokens[0])
        total = int(outputs.num_video_tokens[0] + outputs.num_audio_tokens[0])
        style["title"] = (
            f"keep_ratio={ratio}: {kept}/{total} audio+video tokens kept "
            f"(video {int(outputs.num_kept_video_tokens[0])}/{int(outputs.num_video_tokens[0])}, "
            f"audio {int(outputs.num_kept_audio_tokens[0])}/{int(outputs.num_audio_tokens[0])})"
        )
    return render_model_output(
        outputs,
        model_inputs,
        model.config,
        image_mean=tuple(processor.image_mean),
        image_std=tuple(processor.image_std),
        **style,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Plotting the benchmark
# ---------------------------------------------------------------------------------------------------------------------
PALETTE = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
]
PANEL_SIZE = (560, 440)


def _panel(
    draw: ImageDraw.ImageDraw,
    origin: tuple[int, int],
    title: str,
    series: list[tuple[str, list[tuple[float, float]]]],
    y_label: str,
    reference: bool = False,
    x_label: str = "keep ratio",
) -> None:
    """One line chart in a PANEL_SIZE box at `origin`: x (`x_label`) in [0, 1], y from 0 to the data's maximum."""
    font, small = _font(13), _font(11)
    left, top = origin[0] + 56, origin[1] + 48
    right, bottom = origin[0] + PANEL_SIZE[0] - 16, origin[1] + PANEL_SIZE[1] - 160
    draw.text((origin[0] + 8, origin[1] + 4), title, fill=INK, font=font)
    values = [y for _, points in series for _, y in points if y is not None]
    if not values:
        draw.text((left + 10, (top + bottom) // 2), "not measured", fill=INK, font=font)
        return
    y_top = max(1.0, max(values)) * 1.05
    y_step = next(s for s in (0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 20, 50) if y_top / s <= 8)

    def px(x: float, y: float) -> tuple[int, int]:
        return left + round(x * (right - left)), bottom - round(y / y_top * (bottom - top))

    for tenth in range(11):
        x_tick = px(tenth / 10, 0)[0]
        draw.line((x_tick, bottom, x_tick, bottom + 4), fill=INK)
        if tenth % 2 == 0:
            label = f"{tenth / 10:g}"
            draw.text((x_tick - draw.textlength(label, font=small) / 2, bottom + 6), label, fill=INK, font=small)
    y = 0.0
    while y <= y_top + 1e-9:
        draw.line((left - 4, px(0, y)[1], right, px(0, y)[1]), fill=(232, 232, 232) if y else INK)
        draw.text((left - 40, px(0, y)[1] - 6), f"{y:g}", fill=INK, font=small)
        y += y_step
    draw.line((left, top, left, bottom), fill=INK)
    draw.text(((left + right) // 2 - 30, bottom + 20), x_label, fill=INK, font=small)
    draw.text((origin[0] + 8, top - 22), y_label, fill=INK, font=small)
    if reference:
        draw.line((*px(0, 0), *px(1, 1)), fill=(180, 180, 180), width=1)
    legend_top = bottom + 40
    for index, (name, points) in enumerate(series):
        color = PALETTE[index % len(PALETTE)]
        points = sorted((x, y) for x, y in points if y is not None)
        if len(points) > 1:
            draw.line([px(x, y) for x, y in points], fill=color, width=2)
        for x, y in points:
            cx, cy = px(x, y)
            draw.ellipse((cx - 3, cy - 3, cx + 3, cy + 3), fill=color)
        column, row = divmod(index, 6)
        lx, ly = origin[0] + 16 + column * (PANEL_SIZE[0] // 2), legend_top + row * 16
        draw.line((lx, ly + 7, lx + 18, ly + 7), fill=color, width=2)
        draw.text((lx + 24, ly), name, fill=INK, font=small)
    if reference:
        draw.text((origin[0] + 16, legend_top + 6 * 16), "grey diagonal: y = keep ratio", fill=INK, font=small)


def plot_benchmark(report: dict) -> Image.Image:
    """FLOPs, latency and memory against the keep ratio, from a `python -m omnisift_hf.benchmark --json` report.

    Left: prefill FLOPs of the real 7B / 3B thinkers (meta-device section) relative to the full model, one line per
    model and clip length. Right: the measured prefill time, time to first token, prefill FLOPs and peak memory of the
    timed config, each relative to keep ratio 1.0. Missing sections leave their panel empty. A report with spoken-reply
    sections (`--talker`) gets a second row: the real-size talker's prefill FLOPs and the measured spoken reply.
    """
    speech = "talker" in report or "talker_flops" in report
    thinker = not speech or any(section in report for section in ("flops", "prefill", "generate"))
    rows_of_panels = int(thinker) + int(speech)
    image = Image.new("RGB", (2 * PANEL_SIZE[0] + 24, rows_of_panels * (PANEL_SIZE[1] + 8) + 36), BACKGROUND)
    draw = ImageDraw.Draw(image)
    env = report.get("environment", {})
    draw.text(
        (16, 10),
        f"OmniSIFT: cost against keep ratio  ({env.get('device', '?')}, {env.get('dtype', '?')})",
        fill=INK,
        font=_font(15),
    )

    if thinker:
        flops_series: dict[str, list[tuple[float, float]]] = {}
        for row in report.get("flops", {}).get("rows", []):
            full = next(
                (
                    other["flops"]["total"]
                    for other in report["flops"]["rows"]
                    if other["model"] == row["model"]
                    and other["seconds"] == row["seconds"]
                    and other["keep_ratio"] == 1
                ),
                None,
            )
            name = f"{row['model'].removeprefix('Qwen2.5-Omni-')}, {row['seconds']} s"
            if full:
                name_full = f"{name} ({full / 1e12:.0f} TFLOPs full)"
                flops_series.setdefault(name_full, []).append((row["keep_ratio"], row["flops"]["total"] / full))
        _panel(
            draw,
            (8, 36),
            "Prefill FLOPs, real sizes (meta device)",
            list(flops_series.items()),
            "x full model",
            reference=True,
        )

        measured = []
        model = env.get("model", "timed")
        for section, key, name in (
            ("prefill", "prefill_vs_full", "prefill time"),
            ("generate", "time_to_first_token_vs_full", "time to first token"),
            ("prefill", "total_flops_vs_full", "prefill FLOPs"),
            ("prefill", "peak_memory_vs_full", "prefill peak memory"),
            ("generate", "peak_memory_vs_full", "generate peak memory"),
        ):
            rows = report.get(section, {}).get("rows", [])
            points = [(row["keep_ratio"], row.get(key)) for row in rows if row.get(key) is not None]
            if points:
                measured.append((name, points))
        _panel(
            draw,
            (PANEL_SIZE[0] + 16, 36),
            f"Measured, {model} config",
            measured,
            "x keep ratio 1.0",
            reference=True,
        )
    if speech:
        _plot_spoken_replies(draw, report, top=36 + (PANEL_SIZE[1] + 8 if thinker else 0))
    return image


def _plot_spoken_replies(draw: ImageDraw.ImageDraw, report: dict, top: int) -> None:
    """The second row of `plot_benchmark` (`--talker` reports): the real-size talker's prefill FLOPs, and the measured
    spoken reply, each relative to keep ratio 1.0."""
    flops_series: dict[str, list[tuple[float, float]]] = {}
    for row in report.get("talker_flops", {}).get("rows", []):
        flops_series.setdefault(f"{row['seconds']} s clip", []).append((row["keep_ratio"], row["total_flops_vs_full"]))
    _panel(draw, (8, top), "Talker prefill FLOPs, 7B talker (meta device)", list(flops_series.items()), "x full",
           reference=True)  # fmt: skip
    measured = []
    for key, name in (
        ("talker_prompt_length_vs_full", "talker prefill tokens"),
        ("time_to_first_codec_token_vs_full", "time to first codec token"),
        ("total_vs_full", "spoken reply time"),
        ("peak_memory_vs_full", "peak memory"),
    ):
        points = [(row["keep_ratio"], row.get(key)) for row in report.get("talker", {}).get("rows", [])]
        points = [(x, y) for x, y in points if y is not None]
        if points:
            measured.append((name, points))
    environment = report.get("environment", {}).get("model", "timed")
    _panel(draw, (PANEL_SIZE[0] + 16, top), f"Spoken reply measured, {environment} config", measured,
           "x keep ratio 1.0", reference=True)  # fmt: skip
