"""Pictures of a compressed clip: each link from an LLM video token back to its pixels, and the rendered PNG."""

import io
import math

import pytest
import torch
from PIL import Image
from transformers import pipeline

import omnisift_hf  # noqa: F401  (registers the "omni-qa" pipeline)
from omnisift_hf.testing_utils import TINY_TOKEN_IDS, tiny_inputs, tiny_model, tiny_processor
from omnisift_hf.tools.synthetic import write_synthetic_clip
from omnisift_hf.tools.visualization import (
    AXIS_HEIGHT,
    GAP,
    LABEL_HEIGHT,
    MARGIN,
    STRIP_HEIGHT,
    STRIP_TITLE_HEIGHT,
    TITLE_HEIGHT,
    _font,
    frames_from_pixel_values,
    kept_token_mask,
    media_keep_masks,
    render_compressed_clip,
    render_model_output,
    render_pipeline,
)

IDS = TINY_TOKEN_IDS


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


def test_frames_from_pixel_values_inverts_the_processor(processor):
    video = torch.randint(0, 256, (4, 3, 56, 84), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = processor.video_processor(videos=[video], do_resize=False, cap_pixels_per_frame=False, return_tensors="pt")
    assert out["video_grid_thw"].tolist() == [[2, 4, 6]]
    frames = frames_from_pixel_values(out["pixel_values_videos"], out["video_grid_thw"])[0]
    torch.testing.assert_close(frames, video, atol=0, rtol=0)


def test_processor_orders_patches_by_merged_block_row_major(processor):
    # Each 28 x 28 block of each slice gets its own flat colour: patch rows 4j..4j+3 must all show block
    # (j // Wb, j % Wb) of their slice, which is what the visualisation assumes for LLM video token j.
    slices, blocks_h, blocks_w = 2, 3, 4
    colors = torch.arange(slices * blocks_h * blocks_w, dtype=torch.uint8).view(slices, blocks_h, blocks_w) * 9 + 10
    video = colors.repeat_interleave(2, 0).repeat_interleave(28, 1).repeat_interleave(28, 2)  # (2T, H, W)
    video = video.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    out = processor.video_processor(
        videos=[video], do_resize=False, do_normalize=False, do_rescale=False, return_tensors="pt"
    )
    rows = out["pixel_values_videos"].view(slices, blocks_h * blocks_w, 4, -1)  # (T, Hb*Wb, 4 patches, values)
    for t in range(slices):
        for j in range(blocks_h * blocks_w):
            expected = float(colors[t, j // blocks_w, j % blocks_w])
            assert torch.all(rows[t, j] == expected), (t, j)


def test_vision_encoder_output_follows_processor_block_order():
    # With the attention output projections zeroed, each patch only passes through per-token layers, so merged token
    # j depends on patch rows 4j..4j+3 alone, if and only if the encoder undoes its window reordering. 8 x 8 blocks
    # per slice span 4 attention windows of the tiny encoder (112 px = 4 blocks), so the reordering is not trivial.
    model = tiny_model()
    for block in model.model.visual.blocks:
        torch.nn.init.zeros_(block.attn.proj.weight)
        torch.nn.init.zeros_(block.attn.proj.bias)
    grid = torch.tensor([[2, 16, 16]])
    pixels = torch.randn(2 * 16 * 16, 1176, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model.model.get_video_features(pixels, grid).pooler_output[0]
        for token in (0, 29, 64 + 7 * 8 + 6):  # slice 0 block (0, 0); slice 0 block (3, 5); slice 1 block (7, 6)
            moved = pixels.clone()
            moved[4 * token : 4 * token + 4] += 1.0
            after = model.model.get_video_features(moved, grid).pooler_output[0]
            changed = torch.nonzero((after - before).abs().amax(-1) > 0).squeeze(1).tolist()
            assert changed == [token]


def test_kept_video_tokens_map_to_their_mrope_height_and_width():
    # The model's own M-RoPE ids of every kept video token (rows 2-3 of `kept_position_ids`) give its block;
    # `media_keep_masks` must place the token at that block.
    model = tiny_model()
    inputs = tiny_inputs([[("text", 4), ("video", 4, 8, 12, 400), ("text", 3)], [("video", 2, 6, 4, 200)]])
    with torch.no_grad():
        out = model(**inputs, keep_ratio=0.25)
    keep = kept_token_mask(out.kept_token_index, inputs["input_ids"], out.kept_attention_mask)
    for sample in range(2):
        video_keep, audio_keep, number = media_keep_masks(
            inputs["input_ids"], keep, inputs["video_grid_thw"], IDS["video"], IDS["audio"], sample=sample
        )
        assert number == sample
        assert int(video_keep.sum()) == int(out.num_kept_video_tokens[sample])
        assert int(audio_keep.sum()) == int(out.num_kept_audio_tokens[sample])
        real = out.kept_attention_mask[sample].bool()
        index = out.kept_token_index[sample][real]
        is_video = inputs["input_ids"][sample][index] == IDS["video"]
        heights = out.kept_position_ids[2, sample][real][is_video]
        widths = out.kept_position_ids[3, sample][real][is_video]
        slices, blocks_h, blocks_w = video_keep.shape
        ordinal = torch.cumsum(inputs["input_ids"][sample] == IDS["video"], 0)[index[is_video]] - 1
        block = ordinal % (blocks_h * blocks_w)
        # Height and width ids are the block's row and column plus one offset per video.
        assert torch.unique(heights - block // blocks_w).numel() == 1
        assert torch.unique(widths - block % blocks_w).numel() == 1
        assert video_keep.view(-1)[ordinal].all()


def _greyed_blocks(picture, reference) -> int:
    """Blocks whose pixels differ from the same picture rendered with everything kept."""
    count, side = 0, picture.block_pixels
    image, plain = picture.image, reference.image
    for left, top, right, bottom in picture.tile_boxes:
        for y in range(top, bottom, side):
            for x in range(left, right, side):
                box = (x, y, x + side, y + side)
                count += image.crop(box).tobytes() != plain.crop(box).tobytes()
    return count


def test_render_pipeline_synthetic_clip(tmp_path, processor):
    model = tiny_model()
    pipe = pipeline("omni-qa", model=model, processor=processor)
    clip = write_synthetic_clip(tmp_path / "clip.mp4", seconds=4.0)
    picture = render_pipeline(pipe, clip, keep_ratio=0.25, block_pixels=6)

    # The same prefill, run here, for the model's own counts and an all-kept reference picture.
    inputs = pipe.preprocess({"video": clip, "question": "What is happening in this video?"})
    with torch.no_grad():
        out = model(**inputs, keep_ratio=0.25)
    grid = inputs["video_grid_thw"]
    assert grid.tolist() == [[4, 24, 24]]  # 4 s at 2 fps, the processor's default resolution
    slices, blocks = 4, 12
    columns, tile = 4, blocks * 6
    # Wide enough for the tiles and for the one-line title, whichever is wider (here the title: 4 tiles only).
    nv, kv = int(out.num_video_tokens[0]), int(out.num_kept_video_tokens[0])
    na, ka = int(out.num_audio_tokens[0]), int(out.num_kept_audio_tokens[0])
    title = f"keep_ratio=0.25: {kv + ka}/{nv + na} audio+video tokens kept (video {kv}/{nv}, audio {ka}/{na})"
    title_width = 2 * MARGIN + math.ceil(_font(13).getlength(title))
    width = max(2 * MARGIN + columns * tile + (columns - 1) * GAP, title_width)
    assert width == title_width
    height = (
        MARGIN + TITLE_HEIGHT + tile + LABEL_HEIGHT + MARGIN + GAP + STRIP_TITLE_HEIGHT + STRIP_HEIGHT + AXIS_HEIGHT
    )
    assert picture.image.size == (width, height)

    assert picture.num_video_tokens == int(out.num_video_tokens[0]) == slices * blocks * blocks
    assert picture.num_kept_video_tokens == int(out.num_kept_video_tokens[0])
    assert picture.num_audio_tokens == int(out.num_audio_tokens[0])
    assert picture.num_kept_audio_tokens == int(out.num_kept_audio_tokens[0])
    assert 0 < picture.num_kept_video_tokens < picture.num_video_tokens

    frames = frames_from_pixel_values(inputs["pixel_values_videos"], grid)[0][::2]
    reference = render_compressed_clip(
        frames, torch.ones(slices, blocks, blocks, dtype=torch.bool), None, block_pixels=6
    )
    # The reference has no audio strip; tiles sit at the same places.
    assert reference.tile_boxes == picture.tile_boxes
    greyed = _greyed_blocks(picture, reference)
    assert picture.num_video_tokens - greyed == picture.num_kept_video_tokens == int(out.num_kept_video_tokens[0])

    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    assert Image.open(io.BytesIO(buffer.getvalue())).size == (width, height)


def test_render_model_output_uncompressed_keeps_everything():
    model = tiny_model()
    inputs = tiny_inputs([[("text", 4), ("video", 2, 4, 4, 200), ("text", 3)]])
    with torch.no_grad():
        out = model(**inputs, keep_ratio=1.0)
    assert out.kept_token_index is None
    picture = render_model_output(out, inputs, model.config, block_pixels=4)
    assert picture.num_kept_video_tokens == picture.num_video_tokens == 2 * 2 * 2
    assert picture.num_kept_audio_tokens == picture.num_audio_tokens == int(out.num_audio_tokens[0])


def test_media_keep_masks_rejects_a_missing_video():
    inputs = tiny_inputs([[("video", 2, 4, 4, None)]])
    keep = torch.ones_like(inputs["input_ids"], dtype=torch.bool)
    with pytest.raises(ValueError, match="video=1"):
        media_keep_masks(inputs["input_ids"], keep, inputs["video_grid_thw"], IDS["video"], IDS["audio"], video=1)
