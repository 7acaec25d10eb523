"""The vLLM plugin's pure layout functions (`omnisift_hf.vllm_plugin.spans`) against the transformers model they serve:
positions equal `get_rope_index` at keep 1.0, kept counts equal the model's selection, and a pruned prompt's positions
(text from `prompt_positions`, kept media filled by `fill_media_positions`) equal the model's kept positions."""

import pytest
import torch

from omnisift_hf.compression import KeepRatios
from omnisift_hf.testing_utils import TINY_TOKEN_IDS, tiny_inputs, tiny_model
from omnisift_hf.vllm_plugin.spans import (
    PromptItem,
    audio_output_length,
    audio_span,
    fill_media_positions,
    image_span,
    kept_span_mask,
    prompt_positions,
    video_span,
)

IDS = TINY_TOKEN_IDS
MEDIA_IDS = (IDS["video"], IDS["audio"], IDS["image"])

LAYOUTS = {
    "video_with_audio": [("text", 3), ("video", 4, 4, 4, 330), ("text", 2)],
    "video_with_audio_odd_frames": [("text", 2), ("video", 5, 4, 6, 500), ("text", 4)],
    "silent_video": [("text", 3), ("video", 3, 4, 4, None), ("text", 2)],
    "audio": [("text", 3), ("audio", 200), ("text", 2)],
    "image": [("text", 3), ("image", 4, 6), ("text", 2)],
    # (transformers lays out a silent video wrongly in a prompt with use_audio_in_video: not mixed here)
    "mixed": [("image", 4, 4), ("text", 2), ("video", 4, 4, 4, 330), ("audio", 120), ("text", 1)],
    "two_silent_videos_and_audio": [("video", 2, 4, 4, None), ("audio", 90), ("video", 3, 4, 6, None)],
}


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=0).eval()


def _items(input_ids: torch.Tensor, inputs: dict, config) -> list[PromptItem]:
    """The unpruned prompt items of one unpadded row, from its tokens and the processor outputs (as the vLLM model
    derives them from its features)."""
    tokens = input_ids.tolist()
    merge = config.vision_config.spatial_merge_size
    videos = iter(inputs.get("video_grid_thw", torch.empty(0, 3)).tolist())
    seconds = iter(inputs.get("video_second_per_grid", torch.empty(0)).tolist())
    images = iter(inputs.get("image_grid_thw", torch.empty(0, 3)).tolist())
    mel = iter(inputs["feature_attention_mask"].sum(-1).tolist() if "feature_attention_mask" in inputs else [])
    items, i = [], 0
    while i < len(tokens):
        if tokens[i] not in MEDIA_IDS:
            i += 1
            continue
        start = i
        while i < len(tokens) and tokens[i] in MEDIA_IDS:
            i += 1
        kinds = set(tokens[start:i])
        with_audio = IDS["video"] in kinds and IDS["audio"] in kinds
        if IDS["video"] in kinds:
            span = video_span(
                videos.__next__(),
                merge,
                seconds.__next__(),
                config.position_id_per_seconds,
                config.seconds_per_chunk,
                audio_output_length(int(next(mel))) if with_audio else None,
            )
        elif IDS["image"] in kinds:
            span = image_span(next(images), merge, config.position_id_per_seconds)
        else:
            span = audio_span(audio_output_length(int(next(mel))))
        offset, length = (start - 1, i - start + 2) if with_audio else (start, i - start)
        items.append(PromptItem(offset=offset, length=length, span=span, with_audio=with_audio))
    return items


@pytest.mark.parametrize("name", sorted(LAYOUTS))
@pytest.mark.parametrize("seconds_per_grid", [1.0, 2.0, 0.5])
def test_full_prompt_positions_equal_get_rope_index(model, name, seconds_per_grid):
    inputs = tiny_inputs([LAYOUTS[name]], seconds_per_grid=seconds_per_grid)
    input_ids = inputs["input_ids"][0]
    expected, delta = model.model.get_rope_index(
        inputs["input_ids"],
        inputs.get("image_grid_thw"),
        inputs.get("video_grid_thw"),
        inputs["attention_mask"],
        inputs.get("use_audio_in_video", False),
        inputs["feature_attention_mask"].sum(-1) if "feature_attention_mask" in inputs else None,
        inputs.get("video_second_per_grid"),
    )
    items = _items(input_ids, inputs, model.config)
    # The spans hold the prompt's own placeholder kinds, in order.
    for item in items:
        start = item.offset + (1 if item.with_audio else 0)
        run = input_ids[start : start + len(item.span)]
        assert torch.equal(item.span.is_video, run == IDS["video"])
        assert torch.equal(item.span.is_audio, run == IDS["audio"])
    positions, our_delta = prompt_positions(input_ids.shape[0], items)
    assert torch.equal(positions, expected[:, 0])
    assert our_delta == int(delta[0, 0])


@pytest.mark.parametrize("name", ["video_with_audio", "video_with_audio_odd_frames", "silent_video"])
@pytest.mark.parametrize("keep", [KeepRatios(0.25), KeepRatios(0.35), KeepRatios(0.5, video=0.3, audio=0.6)])
def test_pruned_prompt_positions_equal_the_models(model, name, keep):
    """The prompt vLLM schedules at `keep`: kept counts per clip equal the model's, text positions are final before
    the encoders run, and the kept media positions written afterwards equal the model's `kept_position_ids`."""
    inputs = tiny_inputs([LAYOUTS[name]], seed=3)
    input_ids = inputs["input_ids"][0]
    with torch.no_grad():
        out = model(**inputs, keep_ratio=keep.keep, video_keep_ratio=keep.video, audio_keep_ratio=keep.audio)
    kept_index = out.kept_token_index[0]
    expected = out.kept_position_ids[1:, 0]  # (3, K)

    (item,) = [it for it in _items(input_ids, inputs, model.config) if it.span.is_video.any()]
    start = item.offset + (1 if item.with_audio else 0)
    model_kept = torch.zeros(len(item.span), dtype=torch.bool)
    in_span = (kept_index >= start) & (kept_index < start + len(item.span))
    model_kept[kept_index[in_span] - start] = True
    pattern = kept_span_mask(item.span, keep)
    assert int(pattern.sum()) == int(model_kept.sum())
    assert int((pattern & item.span.is_audio).sum()) == int((model_kept & item.span.is_audio).sum())

    # The pruned prompt: the kept tokens of the original, in order.
    pruned_ids = input_ids[kept_index]
    num_kept = int(model_kept.sum())
    pruned_item = PromptItem(
        offset=item.offset,
        length=num_kept + (2 if item.with_audio else 0),
        span=item.span,
        with_audio=item.with_audio,
    )
    positions, _ = prompt_positions(pruned_ids.shape[0], [pruned_item])
    is_media = torch.isin(pruned_ids, torch.tensor(MEDIA_IDS))
    text = ~is_media
    assert torch.equal(positions[:, text], expected[:, text])
    # The encoder side returns each kept row's relative position; the runner writes them in.
    filled = fill_media_positions(positions, is_media, item.span.positions[:, model_kept], first_row=0)
    assert torch.equal(filled, expected)
    # In two chunks (a prefill split inside the clip), the same.
    split = num_kept // 2
    relative = item.span.positions[:, model_kept]
    chunked = fill_media_positions(positions, is_media, relative[:, :split], first_row=0)
    chunked = fill_media_positions(chunked, is_media, relative[:, split:], first_row=split)
    assert torch.equal(chunked, expected)


def test_kept_span_mask_is_everything_at_identity():
    span = video_span((4, 8, 8), 2, 1.0, 25, 2, num_audio_tokens=100)
    assert bool(kept_span_mask(span, KeepRatios(1.0)).all())
    assert int(kept_span_mask(span, KeepRatios(0.25)).sum()) < len(span)
