"""OmniSIFT on Qwen3-Omni's MoE thinker: identity with the stock thinker, batching, `generate`, counts, labels, the
deepstack features of the kept tokens, the router outputs, Qwen3-Omni's timestamp interleaving and 13-token-per-second
audio, bad inputs and the training signal."""

import dataclasses
import hashlib
import inspect

import pytest
import torch
from transformers import GenerationMixin, Qwen3OmniMoeThinkerForConditionalGeneration
from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
    Qwen3OmniMoeThinkerModel,
    load_balancing_loss_func,
)

from omnisift_hf.attention_policy import KEEP_POLICY_ATTENTION
from omnisift_hf.models.qwen3_omni_moe import (
    OmniSiftQwen3OmniCausalLMOutputWithPast,
    OmniSiftQwen3OmniForConditionalGeneration,
)
from omnisift_hf.testing_utils import (
    QWEN3_AUDIO_TOKENS_PER_SECOND,
    TINY_TOKEN_IDS,
    qwen3_audio_token_count,
    tiny_qwen3_inputs,
    tiny_qwen3_model,
    tiny_qwen3_stock_config,
)

IDS = TINY_TOKEN_IDS
AV_CLIP = [("text", 4), ("video", 4, 8, 8, 400), ("text", 5)]  # 4 x 16 video tokens, 52 audio tokens (4 s)
BATCH = [
    AV_CLIP,
    [("text", 2), ("image", 4, 4), ("video", 3, 8, 8, 300)],  # an image too: deepstack joins image and video rows
    [("text", 9), ("video", 5, 8, 8, 500), ("text", 1)],
]
# Rows with nothing to compress, or with audio but no video, next to a row that is compressed.
MIXED_BATCH = [[("text", 6)], [("text", 2), ("video", 3, 8, 8, 300)], [("audio", 200), ("text", 3)]]
COUNT_NAMES = ("num_video_tokens", "num_kept_video_tokens", "num_audio_tokens", "num_kept_audio_tokens")
# sha256 of the parts of the stock thinker (transformers 5.24.0) that the OmniSIFT thinker follows: the embedding
# stage of `Qwen3OmniMoeThinkerModel.forward` up to its deepstack merge (`_embed_multimodal`, `_decoder_media_inputs`)
# and the router loss of `Qwen3OmniMoeThinkerForConditionalGeneration.forward` (`_router_outputs`).
EMBED_SOURCE_SHA256 = "4faff400ef5cc6f1229f6955f5e8e52b25f729b66668bb79256bad43206136c8"
ROUTER_LOSS_SOURCE_SHA256 = "52d776f8256388ed2fc0e13d00d47d023d6da6171b6779af4c601cc344f2078c"


@pytest.fixture(scope="module")
def model():
    return tiny_qwen3_model()


@pytest.fixture(scope="module")
def native(model):
    """The stock Qwen3-Omni thinker (the stock config class) with the OmniSIFT model's weights."""
    return stock_thinker(model)


@pytest.fixture
def av_inputs():
    return tiny_qwen3_inputs([AV_CLIP])


def stock_thinker(model: OmniSiftQwen3OmniForConditionalGeneration) -> Qwen3OmniMoeThinkerForConditionalGeneration:
    native = Qwen3OmniMoeThinkerForConditionalGeneration(tiny_qwen3_stock_config()).eval()
    missing, unexpected = native.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all(key.startswith("compressor.") for key in unexpected)
    return native


def select_sample(inputs: dict, samples: list[list[tuple]], index: int) -> dict:
    """The inputs of sample `index` alone, with exactly the same media tensors as in the batch."""
    single = tiny_qwen3_inputs([samples[index]])

    def share(segments):  # (video patches, audio items, image patches) of one sample
        return (
            sum(s[1] * s[2] * s[3] for s in segments if s[0] == "video"),
            sum(1 for s in segments if s[0] == "audio" or (s[0] == "video" and s[4] is not None)),
            sum(s[1] * s[2] for s in segments if s[0] == "image"),
        )

    before = [sum(share(s)[k] for s in samples[:index]) for k in range(3)]
    mine = share(samples[index])
    if "pixel_values_videos" in single:
        single["pixel_values_videos"] = inputs["pixel_values_videos"][before[0] : before[0] + mine[0]]
    if "input_features" in single:
        frames = single["input_features"].shape[-1]
        single["input_features"] = inputs["input_features"][before[1] : before[1] + mine[1], :, :frames]
    if "pixel_values" in single:
        single["pixel_values"] = inputs["pixel_values"][before[2] : before[2] + mine[2]]
    real = inputs["attention_mask"][index].bool()
    single["input_ids"] = inputs["input_ids"][index][real].unsqueeze(0)
    single["attention_mask"] = torch.ones_like(single["input_ids"])
    return single


def capture_decoder_inputs(language_model: torch.nn.Module, call) -> dict:
    """The keyword arguments `call()` hands `language_model` (its first call)."""
    captured = {}

    def grab(_module, _args, kwargs):
        if not captured:
            captured.update(kwargs)

    handle = language_model.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            call()
    finally:
        handle.remove()
    return captured


def stock_positions(model, inputs: dict) -> torch.Tensor:
    """The stock `get_rope_index` M-RoPE positions `(3, B, L)` (float) of one video with its audio."""
    positions, _ = model.get_rope_index(
        inputs["input_ids"],
        video_grid_thw=inputs["video_grid_thw"],
        attention_mask=inputs["attention_mask"],
        use_audio_in_video=True,
        audio_seqlens=inputs["feature_attention_mask"].sum(1),
        second_per_grids=inputs["video_second_per_grid"],
    )
    return positions


def media_labels(input_ids: torch.Tensor) -> torch.Tensor:
    return input_ids.masked_fill(input_ids >= IDS["audio"], -100)


# ---------------------------------------------------------------------------------------------------------------------
# keep_ratio = 1.0 is the stock thinker
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "segments",
    [AV_CLIP, BATCH[1], [("video", 4, 8, 8, None), ("audio", 300)], [("text", 12)]],
    ids=["video-with-audio", "image-and-video", "silent-video-and-audio", "text-only"],
)
def test_keep_ratio_one_is_the_stock_thinker(model, native, segments):
    inputs = tiny_qwen3_inputs([segments])
    labels = media_labels(inputs["input_ids"])
    with torch.no_grad():
        expected = native(**inputs, labels=labels, output_router_logits=True)
        ours = model(**inputs, labels=labels, output_router_logits=True, keep_ratio=1.0)
    assert type(ours) is OmniSiftQwen3OmniCausalLMOutputWithPast
    assert torch.equal(ours.logits, expected.logits)
    assert torch.equal(ours.loss, expected.loss) and torch.equal(ours.aux_loss, expected.aux_loss)
    assert all(torch.equal(a, b) for a, b in zip(ours.router_logits, expected.router_logits, strict=True))
    assert ours.kept_token_index is None


def test_generate_keep_ratio_one_is_the_stock_thinker(model, native, av_inputs):
    settings = {"max_new_tokens": 5, "do_sample": False, "return_dict_in_generate": True, "output_scores": True}
    with torch.no_grad():
        compressed = model.generate(**av_inputs, keep_ratio=0.25, **settings)
        ours = model.generate(**av_inputs, keep_ratio=1.0, **settings)
        base = native.generate(**av_inputs, **settings)
    assert torch.equal(ours.sequences, base.sequences)
    assert all(torch.equal(a, b) for a, b in zip(ours.scores, base.scores, strict=True))
    assert not torch.equal(compressed.scores[0], base.scores[0])
    # The stats describe the latest call (nothing dropped), not the earlier compressed one.
    assert model.compression_stats.num_kept_video_tokens.item() == model.compression_stats.num_video_tokens.item()
    assert model.compression_stats.kept_token_index is None


def test_stages_match_the_stock_thinker(model):
    """`_embed_multimodal`, the positions and `_decoder_media_inputs` (nothing dropped) hand the language model what
    the stock thinker hands it, deepstack features of an image and a video included (guards against drift)."""
    inputs = tiny_qwen3_inputs([BATCH[1]])
    captured = capture_decoder_inputs(model.model.language_model, lambda: model(**inputs, keep_ratio=1.0))
    with torch.no_grad():
        # Private on purpose: these are the stages that follow the stock thinker, checked against it.
        embeds, encoder_outputs = model._embed_multimodal(
            inputs["input_ids"],
            None,
            **{k: inputs.get(k) for k in ("input_features", "pixel_values", "pixel_values_videos", "image_grid_thw")},
            video_grid_thw=inputs["video_grid_thw"],
            feature_attention_mask=inputs["feature_attention_mask"],
            audio_feature_lengths=None,
            mm_encoder_outputs=None,
        )
        positions = model.model.compute_3d_position_ids(
            input_ids=inputs["input_ids"],
            image_grid_thw=inputs["image_grid_thw"],
            video_grid_thw=inputs["video_grid_thw"],
            inputs_embeds=embeds,
            attention_mask=inputs["attention_mask"],
            cache=None,
            use_audio_in_video=True,
            audio_feature_lengths=inputs["feature_attention_mask"].sum(1),
            video_second_per_grid=inputs["video_second_per_grid"],
        )
        everything = torch.ones_like(inputs["input_ids"], dtype=torch.bool)
        length = inputs["input_ids"].shape[1]
        kept = dataclasses.make_dataclass("Kept", ["index", "attention_mask"])(
            torch.arange(length).unsqueeze(0), torch.ones(1, length, dtype=torch.long)
        )
        media = model._decoder_media_inputs(inputs["input_ids"], encoder_outputs, everything, kept)
    assert torch.equal(embeds, captured["inputs_embeds"])
    assert torch.equal(positions, captured["position_ids"]) and positions.dtype == torch.float32
    assert torch.equal(media["visual_pos_masks"], captured["visual_pos_masks"])
    assert len(media["deepstack_visual_embeds"]) == len(captured["deepstack_visual_embeds"]) == 2
    for ours, stock in zip(media["deepstack_visual_embeds"], captured["deepstack_visual_embeds"], strict=True):
        assert torch.equal(ours, stock)


def test_followed_stock_sources_have_not_changed_upstream():
    source = inspect.getsource(Qwen3OmniMoeThinkerModel.forward)
    start = source.index("        if (pixel_values is not None or pixel_values_videos is not None) and mm_encoder")
    embed = source[start : source.index("        if feature_attention_mask is not None:")]
    source = inspect.getsource(Qwen3OmniMoeThinkerForConditionalGeneration.forward)
    router = source[
        source.index("        aux_loss = None") : source.index("        return MultimodalMoeCausalLMOutput")
    ]
    assert hashlib.sha256(embed.encode()).hexdigest() == EMBED_SOURCE_SHA256, (
        "transformers changed Qwen3OmniMoeThinkerModel.forward's embedding or deepstack stage: compare it with "
        "OmniSiftThinkerMixin._embed_multimodal and OmniSiftQwen3OmniForConditionalGeneration._decoder_media_inputs, "
        "update them, then EMBED_SOURCE_SHA256."
    )
    assert hashlib.sha256(router.encode()).hexdigest() == ROUTER_LOSS_SOURCE_SHA256, (
        "transformers changed the router loss of Qwen3OmniMoeThinkerForConditionalGeneration.forward: compare it "
        "with OmniSiftQwen3OmniForConditionalGeneration._router_outputs, update it, then ROUTER_LOSS_SOURCE_SHA256."
    )


# ---------------------------------------------------------------------------------------------------------------------
# Batching and generate()
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("samples", [BATCH, MIXED_BATCH], ids=["av-clips", "mixed"])
def test_padded_batch_equals_per_sample(attn_implementation, samples):
    model = tiny_qwen3_model()
    model.set_attn_implementation(attn_implementation)
    inputs = tiny_qwen3_inputs(samples)
    with torch.no_grad():
        batched = model(**inputs, keep_ratio=0.25)
        batched_tokens = model.generate(**inputs, keep_ratio=0.25, max_new_tokens=6, do_sample=False)
    for row in range(len(samples)):
        single_inputs = select_sample(inputs, samples, row)
        with torch.no_grad():
            single = model(**single_inputs, keep_ratio=0.25)
            single_tokens = model.generate(**single_inputs, keep_ratio=0.25, max_new_tokens=6, do_sample=False)
        # Kept indices exactly, then logits, then greedy tokens. A row alone with nothing to compress runs the
        # parent's forward and keeps every token.
        padding = int((inputs["attention_mask"][row] == 0).sum())
        real_length = inputs["attention_mask"].shape[1] - padding
        batched_index = batched.kept_token_index[row][batched.kept_attention_mask[row].bool()] - padding
        single_index = torch.arange(real_length) if single.kept_token_index is None else single.kept_token_index[0]
        assert torch.equal(batched_index, single_index)
        kept = single.logits.shape[1]
        torch.testing.assert_close(batched.logits[row, -kept:], single.logits[0], rtol=1e-5, atol=1e-5)
        assert torch.equal(batched_tokens[row, -6:], single_tokens[0, -6:])
        for name in COUNT_NAMES:
            single_count = getattr(single, name)
            assert batched[name][row] == (0 if single_count is None else single_count[0])


def test_generate_needs_the_pruned_state_after_prefill(monkeypatch):
    """Without swapping the pruned mask/positions into the generation state, padded batches decode wrongly."""
    model = tiny_qwen3_model()
    inputs = tiny_qwen3_inputs(BATCH)
    with torch.no_grad():
        right = model.generate(**inputs, keep_ratio=0.25, max_new_tokens=6, do_sample=False)
        # Private on purpose: the transformers generation hook the model overrides; the parent's version stands in
        # for a model without the override.
        monkeypatch.setattr(
            OmniSiftQwen3OmniForConditionalGeneration,
            "_update_model_kwargs_for_generation",
            GenerationMixin._update_model_kwargs_for_generation,
        )
        wrong = model.generate(**inputs, keep_ratio=0.25, max_new_tokens=6, do_sample=False)
    assert not torch.equal(right, wrong)


def test_generate_compresses_in_the_prefill_and_reports_its_counts(model, av_inputs):
    """generate() hands the prefill the encoder outputs, not the pixels: compression still happens, once."""
    seen = []

    def spy(*args):
        seen.append(args[3].dtype)  # the temporal ids
        return model.select_tokens(*args)

    with torch.no_grad():
        out = model.generate(
            **av_inputs,
            keep_ratio=0.25,
            max_new_tokens=3,
            do_sample=False,
            token_selector=spy,
            return_dict_in_generate=True,
        )
    assert seen == [torch.float32]  # prefill only; Qwen3-Omni's M-RoPE ids are float
    # keep 0.25 of 64 video + 52 audio tokens: STVP keeps 2 of each frame's 16, VGAS 11 of each window's 26.
    stats = model.compression_stats
    for counts in (stats, out):
        assert (counts.num_kept_video_tokens.tolist(), counts.num_video_tokens.tolist()) == ([8], [64])
        assert (counts.num_kept_audio_tokens.tolist(), counts.num_audio_tokens.tolist()) == ([22], [52])
    assert out.kept_token_index.shape == (1, av_inputs["input_ids"].shape[1] - 64 + 8 - 52 + 22)


def test_per_call_ratios_override_config(av_inputs):
    model = tiny_qwen3_model(video_keep_ratio=0.5, audio_keep_ratio=1.0)
    with torch.no_grad():
        configured = model(**av_inputs)
        per_call_video = model(**av_inputs, video_keep_ratio=0.75)
        per_call_keep = model(**av_inputs, keep_ratio=1.0)
        derived = model(**av_inputs, keep_ratio=0.25)
    assert (configured.num_kept_video_tokens.item(), configured.num_kept_audio_tokens.item()) == (32, 52)
    assert per_call_video.num_kept_video_tokens.item() == 4 * (16 - 4)
    assert per_call_video.num_kept_audio_tokens.item() == 52
    # A per-call overall ratio replaces the configured per-modality ones.
    assert per_call_keep.kept_token_index is None and per_call_keep.num_kept_video_tokens.item() == 64
    assert (derived.num_kept_video_tokens.item(), derived.num_kept_audio_tokens.item()) == (8, 22)


# ---------------------------------------------------------------------------------------------------------------------
# Deepstack, labels and router outputs on the shortened sequence
# ---------------------------------------------------------------------------------------------------------------------
def test_deepstack_features_follow_the_kept_tokens(model, native):
    """A compressed forward (STVP only, so no audio gate) equals the stock text decoder run on the gathered tokens with
    the gathered positions and the gathered deepstack features, and so does its loss; the features matter and their
    rows must line up with the kept tokens."""
    inputs = tiny_qwen3_inputs([BATCH[1]])  # an image (never pruned) and a video with its audio
    labels = media_labels(inputs["input_ids"])
    full = capture_decoder_inputs(native.model.language_model, lambda: native(**inputs))
    with torch.no_grad():
        out = model(**inputs, labels=labels, video_keep_ratio=0.25, audio_keep_ratio=1.0)
    index = out.kept_token_index[0]  # (K,)
    ids = inputs["input_ids"][0]
    assert (ids[index] == IDS["video"]).sum() == out.num_kept_video_tokens[0] == 12 < (ids == IDS["video"]).sum()
    assert (ids[index] == IDS["image"]).sum() == (ids == IDS["image"]).sum() == 4
    visual = full["visual_pos_masks"]  # (1, L)
    kept_rows = torch.isin(torch.nonzero(visual[0]).squeeze(1), index)  # which deepstack rows stay
    deepstack = [features[kept_rows] for features in full["deepstack_visual_embeds"]]

    def reference(deepstack_visual_embeds):
        with torch.no_grad():
            hidden = native.model.language_model(
                inputs_embeds=full["inputs_embeds"][:, index],
                position_ids=full["position_ids"][:, :, index],
                visual_pos_masks=visual[:, index],
                deepstack_visual_embeds=deepstack_visual_embeds,
            ).last_hidden_state
            return native.lm_head(hidden)

    expected = reference(deepstack)
    torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-6)
    expected_loss = torch.nn.functional.cross_entropy(expected[0, :-1], labels[0, index][1:], ignore_index=-100)
    torch.testing.assert_close(out.loss, expected_loss, rtol=1e-5, atol=1e-6)
    # Without the features, or with the rows of other tokens (the first kept ones), the result is not the same.
    assert not torch.allclose(out.logits, reference(None), rtol=1e-3, atol=1e-3)
    misaligned = [features[: int(kept_rows.sum())] for features in full["deepstack_visual_embeds"]]
    assert not torch.allclose(out.logits, reference(misaligned), rtol=1e-3, atol=1e-3)


def test_a_selector_that_keeps_everything_is_the_uncompressed_model(model, av_inputs):
    """The compressed path with nothing dropped (deepstack masks rebuilt, router logits of the whole sequence) is the
    stock forward."""

    def keep_all(*args):
        selection = model.select_tokens(*args)
        everything = torch.ones_like(selection.video_keep), torch.ones_like(selection.audio_keep)
        return dataclasses.replace(selection, video_keep=everything[0], audio_keep=everything[1], audio_gate=None)

    with torch.no_grad():
        kept_all = model(**av_inputs, keep_ratio=0.25, token_selector=keep_all, output_router_logits=True)
        full = model(**av_inputs, keep_ratio=1.0, output_router_logits=True)
    assert kept_all.num_kept_video_tokens.item() == full.num_video_tokens.item() == 64
    torch.testing.assert_close(kept_all.logits, full.logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(kept_all.aux_loss, full.aux_loss, rtol=1e-6, atol=1e-7)


def test_router_outputs_describe_the_shortened_sequence(model):
    inputs = tiny_qwen3_inputs(BATCH[:2])
    labels = media_labels(inputs["input_ids"])
    with torch.no_grad():
        out = model(**inputs, labels=labels, keep_ratio=0.25, output_router_logits=True)
        plain = model(**inputs, labels=labels, keep_ratio=0.25)
    batch_size, kept_length = out.kept_attention_mask.shape
    assert len(out.router_logits) == model.config.text_config.num_hidden_layers
    assert all(logits.shape == (batch_size * kept_length, 4) for logits in out.router_logits)
    expected = load_balancing_loss_func(out.router_logits, 4, 2, out.kept_attention_mask)
    torch.testing.assert_close(out.aux_loss, expected, rtol=0, atol=0)
    assert plain.aux_loss is None and plain.router_logits is None
    torch.testing.assert_close(out.loss, plain.loss + model.config.text_config.router_aux_loss_coef * expected)


# ---------------------------------------------------------------------------------------------------------------------
# Qwen3-Omni's layout: timestamp interleaving, fractional temporal ids, 13 audio tokens per second
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "seconds_per_grid", [0.5, 2 / 3, 1.0, 2 / 1.7, 2.0], ids=["4fps", "3fps", "2fps", "1.7fps", "1fps"]
)
@pytest.mark.parametrize("num_frames", [4, 5])
def test_windows_follow_qwen3_interleaving(model, seconds_per_grid, num_frames):
    """Each audio token belongs to the pair of the frame grid it follows in the prompt (the processor places it after
    the last grid that starts at or before it); the last pair also takes the audio after its grids. Frames are the
    temporal slices, their ids `t * seconds_per_grid * 13` (fractional)."""
    per_frame, mel = 16, 100 * (num_frames * 2)  # audio runs past the last grid at every frame rate here
    inputs = tiny_qwen3_inputs(
        [[("text", 3), ("video", num_frames, 8, 8, mel), ("text", 2)]], seconds_per_grid=seconds_per_grid
    )
    captured = {}

    def capture(*args):
        selection = model.select_tokens(*args)
        captured.update(selection=selection, temporal_ids=args[3])
        return selection

    with torch.no_grad():
        model(**inputs, keep_ratio=0.25, token_selector=capture)
    layout, temporal_ids = captured["selection"].layout, captured["temporal_ids"][0]
    assert layout.frame_size.tolist() == [per_frame] * num_frames
    first = temporal_ids[layout.video_index[0]]
    frame_ids = temporal_ids[layout.video_index[::per_frame]] - first
    expected_ids = torch.arange(num_frames) * torch.tensor(seconds_per_grid).float() * QWEN3_AUDIO_TOKENS_PER_SECOND
    torch.testing.assert_close(frame_ids, expected_ids, rtol=0, atol=1e-4)
    # The slow reference: walk the prompt, counting the frame grids seen before each audio token.
    num_pairs = (num_frames + 1) // 2
    windows, video_seen = [], 0
    for token in inputs["input_ids"][0].tolist():
        if token == IDS["video"]:
            video_seen += 1
        elif token == IDS["audio"]:
            frames_seen = -(-video_seen // per_frame)
            windows.append(min(max(frames_seen - 1, 0) // 2, num_pairs - 1))
    assert len(windows) == qwen3_audio_token_count(mel)
    assert layout.window_of_audio.tolist() == windows


def test_derived_split_tracks_the_requested_retention_at_13_tokens_per_second(model):
    """10 s at 2 fps: 10 grids of 36 video tokens and 130 audio tokens (13 per second, 5 windows of 26). The achieved
    retention is the request, up to the rounding of each frame's and window's kept count (one token at most, always
    up); audio keeps a higher rate than video."""
    inputs = tiny_qwen3_inputs([[("text", 3), ("video", 10, 12, 12, 1000), ("text", 2)]])
    rounding = (10 + 5) / 490
    for keep in (0.15, 0.25, 0.35, 0.5, 0.75):
        with torch.no_grad():
            out = model(**inputs, keep_ratio=keep, logits_to_keep=1)
        assert (out.num_video_tokens.item(), out.num_audio_tokens.item()) == (360, 130)
        video, audio = out.num_kept_video_tokens.item(), out.num_kept_audio_tokens.item()
        assert 0 <= (video + audio) / 490 - keep < rounding, (keep, video, audio)
        assert audio / 130 > video / 360


def test_kept_positions_are_the_fractional_stock_positions(model):
    inputs = tiny_qwen3_inputs([AV_CLIP], seconds_per_grid=2 / 3)
    with torch.no_grad():
        out = model(**inputs, keep_ratio=0.25)
        positions = stock_positions(model, inputs)
    assert out.kept_position_ids.dtype == torch.float32
    assert torch.equal(out.kept_position_ids[1:], positions[:, :, out.kept_token_index[0]])
    temporal = out.kept_position_ids[1, 0]
    assert bool((temporal != temporal.round()).any())  # 2 / 3 s per grid: fractional ids survive the gather
    assert torch.equal(out.kept_position_ids[0, 0], torch.arange(out.kept_position_ids.shape[-1]).float())


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="transformers 5.24: Qwen3OmniMoeProcessor orders a grid and its audio by float64 times, get_rope_index "
    "by float32 ones; where they disagree (a grid time that is a whole number in float64 only: 1.7, 15, 30 fps) the "
    "grid's tokens and the audio token next to them swap positions",
)
def test_stock_positions_follow_the_prompt_at_every_frame_rate(model):
    """Upstream bug, pinned: at 1.7 fps grid 51 starts at 780 (float64) but 780.00006 (float32); the processor puts the
    grid before audio token 780, `get_rope_index` after it, so the grid's placeholder gets the audio token's position.
    OmniSIFT then sees that token as a frame of its own. This test starts passing when transformers fixes it."""
    seconds_per_grid, grids = 2 / 1.7, 53
    mel = int(grids * seconds_per_grid * 100) + 100
    segments = [("text", 2), ("video", grids, 2, 2, mel), ("text", 2)]  # one token per grid
    inputs = tiny_qwen3_inputs([segments], seconds_per_grid=seconds_per_grid)
    positions = stock_positions(model, inputs)
    video = torch.nonzero(inputs["input_ids"][0] == IDS["video"]).squeeze(1)
    start = positions[1, 0, video[0]]  # a grid's height and width ids are its start's (one token per grid)
    assert torch.equal(positions[1, 0, video], start.expand(grids)), positions[1, 0, video] - start


# Each case with the (video, audio) tokens kept at keep_ratio 0.25; the counts depend only on the layout.
@pytest.mark.parametrize(
    ("segments", "kept_video", "kept_audio"),
    [
        pytest.param([("text", 3), ("video", 4, 8, 8, None)], 16, 0, id="video-without-audio"),
        pytest.param([("video", 3, 8, 8, 300)], 6, 17, id="odd-grids-with-audio"),
        pytest.param([("video", 4, 8, 8, None), ("audio", 300)], 16, 39, id="separate-audio"),
        pytest.param([("audio", 300), ("text", 4)], 0, 39, id="audio-only"),
        pytest.param([("image", 8, 8), ("text", 4)], None, None, id="image-only"),
    ],
)
def test_every_input_shape(model, segments, kept_video, kept_audio):
    inputs = tiny_qwen3_inputs([segments])
    with torch.no_grad():
        out = model(**inputs, keep_ratio=0.25)
        full = model(**inputs, keep_ratio=1.0)
    ids = inputs["input_ids"][0]
    if kept_video is None:  # no audio/video features: the parent's forward, with no token counts
        assert out.num_video_tokens is None and torch.equal(out.logits, full.logits)
        return
    assert out.num_video_tokens.item() == (ids == IDS["video"]).sum()
    assert out.num_audio_tokens.item() == (ids == IDS["audio"]).sum()
    assert (out.num_kept_video_tokens.item(), out.num_kept_audio_tokens.item()) == (kept_video, kept_audio)
    if out.kept_token_index is not None:  # text and image tokens are never dropped
        text = (ids != IDS["video"]) & (ids != IDS["audio"])
        assert text[out.kept_token_index[0]].sum() == text.sum()


# ---------------------------------------------------------------------------------------------------------------------
# Bad inputs
# ---------------------------------------------------------------------------------------------------------------------
SILENT_VIDEO = [("text", 4), ("video", 4, 4, 4, None), ("text", 3)]
BAD_INPUTS = [
    ({"samples": [SILENT_VIDEO], "use_audio_in_video": True}, ValueError, ("use_audio_in_video=True", "sample 0")),
    (
        {"use_audio_in_video": False},
        ValueError,
        ("use_audio_in_video=False", "interleaves", "use_audio_in_video=True"),
    ),
    (
        {"video_grid_thw": torch.tensor([[4, 8, 4]])},
        ValueError,
        ("`video_grid_thw` [[4, 8, 4]]", "128 patches", "256"),
    ),
    ({"video_grid_thw": None}, ValueError, ("`pixel_values_videos`", "without `video_grid_thw`")),
    ({"feature_attention_mask": None}, ValueError, ("`input_features`", "without `feature_attention_mask`")),
    ({"keep_ratio": 0}, ValueError, ("`keep_ratio`", "(0, 1]", "got 0.0")),
    ({"keep_ratio": "0.5"}, TypeError, ("`keep_ratio`", "'0.5'", "str")),
    ({"audio_keep_ratio": float("nan")}, ValueError, ("`audio_keep_ratio`", "nan")),
]


@pytest.mark.parametrize(("overrides", "error", "words"), BAD_INPUTS, ids=lambda value: None)
def test_bad_inputs_raise_a_clear_error(model, overrides, error, words):
    overrides = dict(overrides)
    inputs = tiny_qwen3_inputs(overrides.pop("samples", [AV_CLIP]))
    ratios = {name: overrides.pop(name) for name in ("keep_ratio", "audio_keep_ratio") if name in overrides}
    inputs = {k: v for k, v in {**inputs, **overrides}.items() if v is not None or k == "use_audio_in_video"}
    with pytest.raises(error) as excinfo, torch.no_grad():
        model(**inputs, **{"keep_ratio": 0.25, **ratios})
    assert all(word in str(excinfo.value) for word in words), str(excinfo.value)


def test_compression_needs_input_ids_and_a_dynamic_cache(model, av_inputs):
    embeds = model.get_input_embeddings()(av_inputs["input_ids"])
    without_ids = {k: v for k, v in av_inputs.items() if k != "input_ids"}
    with pytest.raises(ValueError, match="needs `input_ids`"), torch.no_grad():
        model(**without_ids, inputs_embeds=embeds, keep_ratio=0.25)
    with pytest.raises(ValueError, match="cache_implementation='static'"), torch.no_grad():
        model.generate(**av_inputs, keep_ratio=0.25, cache_implementation="static", max_new_tokens=2)


# ---------------------------------------------------------------------------------------------------------------------
# Training signal
# ---------------------------------------------------------------------------------------------------------------------
def test_gradient_reaches_the_selector_through_the_gate(av_inputs):
    model = tiny_qwen3_model().train()
    out = model(**av_inputs, labels=media_labels(av_inputs["input_ids"]), keep_ratio=0.25, output_router_logits=True)
    out.loss.backward()
    grads = [p.grad for p in model.compressor.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum().item() for g in grads) > 0
    assert (out.num_kept_audio_tokens.item(), out.num_audio_tokens.item()) == (22, 52)


def test_attention_policy_trains_on_what_inference_computes(av_inputs):
    """The attention-policy estimator on Qwen3-Omni's attention: the training forward (float64) gives the logits of
    the shortened sequence at every position both keep, and the gradient reaches the dropped audio's logits."""
    model = tiny_qwen3_model(selector_estimator="attention_policy").double()
    model.set_experts_implementation("eager")  # the default grouped matmul refuses float64 on CPU
    inputs = {k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in av_inputs.items()}
    with torch.no_grad():
        shortened = model(**inputs, keep_ratio=0.25)
    model.train()
    assert model.model.language_model.config._attn_implementation == KEEP_POLICY_ATTENTION
    captured = []

    def selector(*args):
        selection = model.select_tokens(*args)
        selection.audio_logits.retain_grad()
        captured.append(selection)
        return selection

    trained = model(**inputs, labels=media_labels(inputs["input_ids"]), keep_ratio=0.25, token_selector=selector)
    trained.loss.backward()
    model.eval()
    where = {int(position): i for i, position in enumerate(trained.kept_token_index[0])}
    rows = torch.tensor([where[int(position)] for position in shortened.kept_token_index[0]])
    torch.testing.assert_close(trained.logits[0, rows], shortened.logits[0], rtol=0, atol=1e-10)
    selection = captured[0]
    dropped = ~selection.audio_keep[selection.gated_audio]
    assert bool(dropped.any()) and float(selection.audio_logits.grad[dropped].abs().sum()) > 0
