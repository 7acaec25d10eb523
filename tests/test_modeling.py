"""OmniSIFT inside the forward pass and `generate`: equivalences, batching, routing, training signal."""

import pytest
import torch
from helpers import IDS, build_inputs, select_sample
from transformers import GenerationMixin, Qwen2_5OmniThinkerForConditionalGeneration

from omnisift_hf import OmniSiftForConditionalGeneration
from omnisift_hf.testing_utils import tiny_config

BATCH = [
    [("text", 4), ("video", 4, 8, 8, 400), ("text", 5)],
    [("text", 2), ("video", 3, 8, 8, 300)],
    [("text", 9), ("video", 5, 8, 8, 500), ("text", 1)],
]
# Rows with nothing to compress, or with audio but no video, next to a row that is compressed.
MIXED_BATCH = [[("text", 6)], [("text", 2), ("video", 3, 8, 8, 300)], [("audio", 200), ("text", 3)]]


def _kept_real_index(output, row: int, input_mask: torch.Tensor) -> torch.Tensor:
    """Kept positions of one batch row, relative to its first real (unpadded) token."""
    index = output.kept_token_index[row][output.kept_attention_mask[row].bool()]
    return index - (~input_mask[row].bool()).sum()


def test_embedding_stage_matches_parent(model, av_inputs):
    """`_embed_multimodal` + positions are what the parent hands its language model (guards against drift)."""
    captured = {}

    def grab(_module, _args, kwargs):
        captured.update(inputs_embeds=kwargs["inputs_embeds"], position_ids=kwargs["position_ids"])

    handle = model.model.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    with torch.no_grad():
        model(**av_inputs, keep_ratio=1.0)
    handle.remove()
    media = {k: v for k, v in av_inputs.items() if k not in ("attention_mask", "use_audio_in_video")}
    media.pop("video_second_per_grid")
    with torch.no_grad():
        # Private on purpose: this is the stage copied from transformers, checked against the parent's.
        embeds, _ = model._embed_multimodal(
            **{k: media.get(k) for k in ("input_ids", "input_features", "pixel_values", "pixel_values_videos")},
            inputs_embeds=None,
            image_grid_thw=None,
            video_grid_thw=av_inputs["video_grid_thw"],
            feature_attention_mask=av_inputs["feature_attention_mask"],
            audio_feature_lengths=None,
            mm_encoder_outputs=None,
        )
        positions = model.model.compute_3d_position_ids(
            input_ids=av_inputs["input_ids"],
            image_grid_thw=None,
            video_grid_thw=av_inputs["video_grid_thw"],
            inputs_embeds=embeds,
            attention_mask=av_inputs["attention_mask"],
            cache=None,
            use_audio_in_video=True,
            audio_feature_lengths=av_inputs["feature_attention_mask"].sum(1),
            video_second_per_grid=av_inputs["video_second_per_grid"],
        )
    assert torch.equal(embeds, captured["inputs_embeds"])
    assert torch.equal(positions, captured["position_ids"])


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("samples", [BATCH, MIXED_BATCH], ids=["av-clips", "mixed"])
def test_padded_batch_equals_per_sample(attn_implementation, samples):
    torch.manual_seed(0)
    model = OmniSiftForConditionalGeneration(tiny_config()).eval()
    model.set_attn_implementation(attn_implementation)
    inputs = build_inputs(samples)
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
        real_length = int(inputs["attention_mask"][row].sum())
        single_index = single.kept_token_index
        single_index = torch.arange(real_length) if single_index is None else single_index[0]
        assert torch.equal(_kept_real_index(batched, row, inputs["attention_mask"]), single_index)
        kept = single.logits.shape[1]
        torch.testing.assert_close(batched.logits[row, -kept:], single.logits[0], rtol=1e-5, atol=1e-5)
        assert torch.equal(batched_tokens[row, -6:], single_tokens[0, -6:])
        for name in ("num_video_tokens", "num_kept_video_tokens", "num_audio_tokens", "num_kept_audio_tokens"):
            assert batched[name][row] == (0 if getattr(single, name) is None else getattr(single, name)[0])


def test_generate_needs_the_pruned_state_after_prefill(monkeypatch):
    """Without swapping the pruned mask/positions into the generation state, padded batches decode wrongly."""
    torch.manual_seed(0)
    model = OmniSiftForConditionalGeneration(tiny_config()).eval()
    inputs = build_inputs(BATCH)
    with torch.no_grad():
        right = model.generate(**inputs, keep_ratio=0.25, max_new_tokens=6, do_sample=False)
        # Private on purpose: this is the transformers generation hook the model overrides; the parent's version
        # stands in for a model without the override.
        monkeypatch.setattr(
            OmniSiftForConditionalGeneration,
            "_update_model_kwargs_for_generation",
            GenerationMixin._update_model_kwargs_for_generation,
        )
        wrong = model.generate(**inputs, keep_ratio=0.25, max_new_tokens=6, do_sample=False)
    assert not torch.equal(right, wrong)


def test_generate_compresses_inside_generate(model, av_inputs):
    """In transformers 5.24 the prefill gets `mm_encoder_outputs`, not pixels: compression must still happen."""
    seen = []

    def spy(*args, **kwargs):
        seen.append(True)
        return model.select_tokens(*args, **kwargs)

    with torch.no_grad():
        model.generate(**av_inputs, keep_ratio=0.25, max_new_tokens=3, do_sample=False, token_selector=spy)
    assert seen == [True]  # prefill only; decode steps skip compression
    stats = model.compression_stats  # keep 0.25 of 64 video + 100 audio tokens: 8 + 34 kept
    assert (stats.num_kept_video_tokens.tolist(), stats.num_video_tokens.tolist()) == ([8], [64])
    assert (stats.num_kept_audio_tokens.tolist(), stats.num_audio_tokens.tolist()) == ([34], [100])


def test_generate_keep_ratio_one_is_the_base_model(model, av_inputs):
    native = Qwen2_5OmniThinkerForConditionalGeneration(model.config).eval()
    missing, unexpected = native.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all(key.startswith("compressor.") for key in unexpected)
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


def test_generate_routes_modality_ratios(model, av_inputs):
    with torch.no_grad():
        model.generate(**av_inputs, video_keep_ratio=0.5, audio_keep_ratio=1.0, max_new_tokens=2, do_sample=False)
    stats = model.compression_stats
    assert stats.num_kept_video_tokens.item() == 32  # 4 slices x 16 tokens, each drops floor(16 * 0.5)
    assert stats.num_kept_audio_tokens.item() == stats.num_audio_tokens.item()


def test_per_call_ratios_override_config(av_inputs):
    torch.manual_seed(0)
    model = OmniSiftForConditionalGeneration(tiny_config(video_keep_ratio=0.5, audio_keep_ratio=1.0)).eval()
    with torch.no_grad():
        configured = model(**av_inputs)
        per_call_video = model(**av_inputs, video_keep_ratio=0.75)
        per_call_keep = model(**av_inputs, keep_ratio=1.0)
    assert configured.num_kept_video_tokens.item() == 32
    assert per_call_video.num_kept_video_tokens.item() == 4 * (16 - 4)
    assert per_call_video.num_kept_audio_tokens.item() == per_call_video.num_audio_tokens.item()
    # A per-call overall ratio replaces the configured per-modality ones: 1.0 switches everything off.
    assert per_call_keep.kept_token_index is None
    assert per_call_keep.num_kept_video_tokens.item() == 64


@pytest.mark.parametrize(
    "name, value, error",
    [
        ("keep_ratio", 0, ValueError),
        ("keep_ratio", -0.5, ValueError),
        ("video_keep_ratio", 1.5, ValueError),
        ("audio_keep_ratio", float("nan"), ValueError),
        ("keep_ratio", "0.25", TypeError),
        ("audio_keep_ratio", True, TypeError),
    ],
)
def test_invalid_per_call_ratios_raise(model, av_inputs, name, value, error):
    with pytest.raises(error, match=name):
        model(**av_inputs, **{name: value})
    with pytest.raises(error, match=name):
        model.generate(**av_inputs, **{name: value}, max_new_tokens=1)


def test_invalid_config_ratio_set_after_construction_raises(model, av_inputs):
    model.config.keep_ratio = 2.0  # assignment bypasses the config's own validation
    with pytest.raises(ValueError, match="config.keep_ratio"):
        model(**av_inputs)


def test_compression_needs_input_ids(model, av_inputs):
    embeds = model.get_input_embeddings()(av_inputs["input_ids"])
    inputs = {k: v for k, v in av_inputs.items() if k != "input_ids"}
    with pytest.raises(ValueError, match="input_ids"):
        model(**inputs, inputs_embeds=embeds, keep_ratio=0.25)


def test_gradient_reaches_selector_through_the_gate(av_inputs):
    torch.manual_seed(0)
    model = OmniSiftForConditionalGeneration(tiny_config()).train()
    labels = av_inputs["input_ids"].masked_fill(av_inputs["input_ids"] >= IDS["audio"], -100)
    out = model(**av_inputs, labels=labels, keep_ratio=0.25)
    out.loss.backward()
    grads = [p.grad for p in model.compressor.parameters()]
    assert all(g is not None for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0
    assert (out.num_kept_audio_tokens.item(), out.num_audio_tokens.item()) == (34, 100)


def test_labels_follow_the_kept_sequence(model, av_inputs):
    """The loss equals the loss of the decoder run by hand on the pruned sequence (no audio gate: audio kept)."""
    labels = av_inputs["input_ids"].clone()
    labels[labels >= IDS["audio"]] = -100
    with torch.no_grad():
        out = model(**av_inputs, labels=labels, video_keep_ratio=0.25, audio_keep_ratio=1.0)
        embeds, _ = model._embed_multimodal(  # private on purpose: the stage copied from transformers
            input_ids=av_inputs["input_ids"],
            inputs_embeds=None,
            input_features=av_inputs["input_features"],
            pixel_values=None,
            pixel_values_videos=av_inputs["pixel_values_videos"],
            image_grid_thw=None,
            video_grid_thw=av_inputs["video_grid_thw"],
            feature_attention_mask=av_inputs["feature_attention_mask"],
            audio_feature_lengths=None,
            mm_encoder_outputs=None,
        )
        positions, _ = model.get_rope_index(
            av_inputs["input_ids"],
            video_grid_thw=av_inputs["video_grid_thw"],
            attention_mask=av_inputs["attention_mask"],
            use_audio_in_video=True,
            audio_seqlens=av_inputs["feature_attention_mask"].sum(1),
            second_per_grids=av_inputs["video_second_per_grid"],
        )
        kept = out.kept_token_index[0]
        is_video = av_inputs["input_ids"][0] == IDS["video"]
        assert is_video[kept].sum() == out.num_kept_video_tokens[0] == 16 < is_video.sum() == 64
        hidden = model.model.language_model(inputs_embeds=embeds[:, kept], position_ids=positions[:, :, kept])
        logits = model.lm_head(hidden.last_hidden_state)
        expected = torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, kept][1:], ignore_index=-100)
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)


# Each case with the (video, audio) tokens kept at keep_ratio 0.25; the counts depend only on the layout.
@pytest.mark.parametrize(
    ("segments", "kept_video", "kept_audio"),
    [
        pytest.param([("text", 3), ("video", 4, 8, 8, None)], 16, 0, id="video-without-audio"),
        pytest.param([("video", 3, 8, 8, 300)], 6, 26, id="odd-slices-with-audio"),
        pytest.param([("video", 5, 8, 8, None), ("text", 2)], 20, 0, id="odd-slices-silent"),
        pytest.param([("video", 4, 8, 8, None), ("audio", 300)], 16, 75, id="separate-audio"),
        pytest.param([("audio", 300), ("text", 4)], 0, 75, id="audio-only"),
        pytest.param([("image", 8, 8), ("text", 4)], None, None, id="image-only"),
        pytest.param([("image", 4, 4), ("video", 4, 8, 8, 400)], 8, 34, id="image-and-video"),
        pytest.param(
            [("video", 4, 8, 8, 400), ("text", 2), ("video", 2, 4, 8, 200)], 10, 48, id="two-videos-two-sizes"
        ),
    ],
)
def test_every_input_shape(model, segments, kept_video, kept_audio):
    inputs = build_inputs([segments])
    with torch.no_grad():
        out = model(**inputs, keep_ratio=0.25)
        full = model(**inputs, keep_ratio=1.0)
    ids = inputs["input_ids"][0]
    num_video, num_audio = (ids == IDS["video"]).sum(), (ids == IDS["audio"]).sum()
    if not num_video and not num_audio:
        # No audio/video features: the parent's forward, with no token counts.
        assert out.num_video_tokens is None and torch.equal(out.logits, full.logits)
        return
    assert out.num_video_tokens.item() == num_video and out.num_audio_tokens.item() == num_audio
    assert out.num_kept_video_tokens.item() == kept_video
    if num_video:
        assert kept_video < num_video
    has_video_audio = any(s[0] == "video" and s[4] is not None for s in segments)
    if has_video_audio:
        assert out.num_kept_audio_tokens.item() == kept_audio < num_audio
    else:
        # Audio with no video in its time window has no guidance and is kept whole (see README).
        assert out.num_kept_audio_tokens.item() == num_audio == kept_audio
    if out.kept_token_index is not None:
        kept_ids = ids[out.kept_token_index[0]]
        # Text and image tokens are never dropped.
        for token in (ids != IDS["video"]) & (ids != IDS["audio"]), ids == IDS["image"]:
            assert token[out.kept_token_index[0]].sum() == token.sum()
        assert kept_ids.shape[0] == out.logits.shape[1]
    if not num_video:
        # Nothing prunable: the shortened sequence is the full one and the logits agree.
        torch.testing.assert_close(out.logits, full.logits, rtol=1e-5, atol=1e-5)


def test_text_only_is_the_base_model(model):
    input_ids = torch.randint(1, 139, (2, 7))
    with torch.no_grad():
        out = model(input_ids=input_ids, keep_ratio=0.25)
        base = super(OmniSiftForConditionalGeneration, model).forward(input_ids=input_ids)
    assert torch.equal(out.logits, base.logits)
    assert out.num_video_tokens is None


def test_explicit_ratios_reproduce_reference_counts(model):
    """Per pair drop floor(n * rho); per window keep n_a - floor(n_a * rho_audio): counts by hand."""
    inputs = build_inputs([[("video", 5, 8, 12, None)]])  # 5 slices of 24 tokens
    with torch.no_grad():
        out = model(**inputs, video_keep_ratio=0.23, audio_keep_ratio=0.5)
    assert out.num_kept_video_tokens.item() == 5 * (24 - int(24 * 0.77))


@pytest.mark.parametrize("keep_ratio", [1.0, 0.25])
def test_logits_to_keep(model, av_inputs, keep_ratio):
    """`logits_to_keep=n` gives the last n columns of the full logits (generate passes 1, so the prefill never builds
    `(B, K, vocab)`), on the compressed path and on the parent's path alike; index tensors select positions."""
    with torch.no_grad():
        full = model(**av_inputs, keep_ratio=keep_ratio).logits
        last = model(**av_inputs, keep_ratio=keep_ratio, logits_to_keep=1).logits
        picked = model(**av_inputs, keep_ratio=keep_ratio, logits_to_keep=torch.tensor([0, 3])).logits
    assert last.shape == (full.shape[0], 1, full.shape[2])
    torch.testing.assert_close(last, full[:, -1:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(picked, full[:, [0, 3]], rtol=1e-5, atol=1e-5)


def test_generate_prefill_computes_last_logits_only(model, av_inputs):
    shapes = []
    handle = model.lm_head.register_forward_hook(lambda _m, args, _o: shapes.append(tuple(args[0].shape)))
    try:
        with torch.no_grad():
            model.generate(**av_inputs, keep_ratio=0.25, max_new_tokens=2, do_sample=False)
    finally:
        handle.remove()
    assert shapes and all(shape[1] == 1 for shape in shapes), shapes


def test_a_tiny_keep_ratio_keeps_one_video_token_per_frame_and_no_audio(model, av_inputs):
    """Before: a ratio that rounds to 0 dropped whole frames, and the audio of windows without kept video stayed
    (100 of 100 audio tokens at keep_ratio=1e-9)."""
    with torch.no_grad():
        out = model(**av_inputs, keep_ratio=1e-9)
    assert out.num_kept_video_tokens.item() == 4  # 4 frames (temporal slices) x 1 token
    assert out.num_kept_audio_tokens.item() == 0


def test_counts_come_back_with_each_generate_call_when_threads_share_the_model(model):
    """Two threads, one model, clips of different lengths: every call's counts (in its own output and in the
    thread's `compression_stats`) are those of its input, as in a single-threaded run."""
    import threading

    clips = {
        "short": build_inputs([[("text", 3), ("video", 2, 4, 4, 200), ("text", 2)]]),
        "long": build_inputs([[("text", 3), ("video", 6, 8, 8, 600), ("text", 2)]]),
    }
    options = {"keep_ratio": 0.25, "max_new_tokens": 2, "do_sample": False, "return_dict_in_generate": True}
    with torch.no_grad():
        expected = {
            name: model.generate(**inputs, **options).num_kept_audio_tokens.item() for name, inputs in clips.items()
        }
    assert expected["short"] != expected["long"]
    wrong = []

    def worker(name):
        for _ in range(25):
            with torch.no_grad():
                out = model.generate(**clips[name], **options)
            if out.num_kept_audio_tokens.item() != expected[name]:
                wrong.append((name, "output"))
            if model.compression_stats.num_kept_audio_tokens.item() != expected[name]:
                wrong.append((name, "compression_stats"))

    threads = [threading.Thread(target=worker, args=(name,)) for name in clips]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
