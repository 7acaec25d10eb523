"""The public selection hook: `select_tokens` returns a `TokenSelection`, `forward` / `generate` apply it or the one a
`token_selector` returns; the copied embedding stage is pinned to the transformers source it comes from."""

import dataclasses
import hashlib
import inspect

import pytest
import torch
from helpers import build_inputs
from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import Qwen2_5OmniThinkerModel

from omnisift_hf import KeepRatios, TokenSelection
from omnisift_hf.compression import resolve_keep_ratios

# sha256 of the part of `Qwen2_5OmniThinkerModel.forward` (transformers 5.24.0) that `_embed_multimodal` copies: from
# the `mm_encoder_outputs` check to the video scatter. A new transformers version that changes it fails here.
EMBED_SOURCE_SHA256 = "4f4b2aed712dc6c379e3bff10b16b2822a6d6671eb7bdbff4732da0e89472786"


def copied_embedding_source() -> str:
    source = inspect.getsource(Qwen2_5OmniThinkerModel.forward)
    start = source.index(
        "        if (pixel_values is not None or pixel_values_videos is not None) and mm_encoder_outputs"
    )
    return source[start : source.index("        if feature_attention_mask is not None:")]


def test_copied_embedding_stage_has_not_changed_upstream():
    digest = hashlib.sha256(copied_embedding_source().encode()).hexdigest()
    assert digest == EMBED_SOURCE_SHA256, (
        "transformers changed Qwen2_5OmniThinkerModel.forward's embedding stage: compare it with "
        "OmniSiftForConditionalGeneration._embed_multimodal, update the copy, then EMBED_SOURCE_SHA256."
    )


def selection_inputs(model, inputs):
    """The arguments `forward` hands `select_tokens` for `inputs` (keep 0.25)."""
    captured = {}

    def capture(*args):
        captured["args"] = args
        return model.select_tokens(*args)

    with torch.no_grad():
        model(**inputs, keep_ratio=0.25, token_selector=capture)
    return captured["args"]


def test_select_tokens_returns_the_selection_forward_applies(model, av_inputs):
    args = selection_inputs(model, av_inputs)
    input_ids, _, attention_mask, _, ratios = args
    assert ratios == KeepRatios(0.25)
    with torch.no_grad():
        selection = model.select_tokens(*args)
        output = model(**av_inputs, keep_ratio=0.25)
    assert isinstance(selection, TokenSelection)
    assert selection.video_keep.shape == (64,) and selection.audio_keep.shape == (100,)
    counts = selection.count_tokens(1)
    for name, value in counts.items():
        assert torch.equal(value, output[name]), name
    keep = selection.keep_mask(attention_mask)
    assert keep.shape == input_ids.shape
    assert torch.equal(torch.nonzero(keep[0]).squeeze(1), output.kept_token_index[0])
    # The gate covers the scored audio tokens only: 1 where kept, 0 where dropped (in value).
    assert selection.gated_audio.shape == selection.audio_gate.shape
    assert torch.equal(selection.audio_gate.round().bool(), selection.audio_keep[selection.gated_audio])


def test_a_selector_that_keeps_everything_is_the_uncompressed_model(model, av_inputs):
    def keep_all(*args):
        selection = model.select_tokens(*args)
        everything = torch.ones_like(selection.video_keep), torch.ones_like(selection.audio_keep)
        return dataclasses.replace(selection, video_keep=everything[0], audio_keep=everything[1], audio_gate=None)

    with torch.no_grad():
        kept_all = model(**av_inputs, keep_ratio=0.25, token_selector=keep_all)
        full = model(**av_inputs, keep_ratio=1.0)
    assert kept_all.num_kept_video_tokens.item() == full.num_video_tokens.item() == 64
    assert kept_all.num_kept_audio_tokens.item() == full.num_audio_tokens.item() == 100
    torch.testing.assert_close(kept_all.logits, full.logits, rtol=1e-5, atol=1e-5)


def test_token_selector_reaches_the_prefill_of_generate(model, av_inputs):
    """Through `generate`, a selector that drops every audio token leaves exactly the video STVP kept."""
    calls = []

    def drop_audio(*args):
        calls.append(args[0].shape)
        selection = model.select_tokens(*args)
        return dataclasses.replace(selection, audio_keep=torch.zeros_like(selection.audio_keep))

    with torch.no_grad():
        model.generate(**av_inputs, keep_ratio=0.25, token_selector=drop_audio, max_new_tokens=3, do_sample=False)
        stats = model.compression_stats
        reference = model(**av_inputs, keep_ratio=0.25)
    assert len(calls) == 1  # the prefill only
    assert stats.num_kept_audio_tokens.item() == 0
    assert stats.num_kept_video_tokens.item() == reference.num_kept_video_tokens.item() == 8  # STVP's 8 of 64


def test_given_inputs_embeds_are_used_on_the_compressed_path(model, av_inputs):
    """As in the parent, `inputs_embeds` passed with `input_ids` replace the embedding lookup (never ignored)."""
    embeds = model.get_input_embeddings()(av_inputs["input_ids"])
    with torch.no_grad():
        plain = model(**av_inputs, keep_ratio=0.25)
        same = model(**av_inputs, inputs_embeds=embeds, keep_ratio=0.25)
        text = av_inputs["input_ids"] < model.config.audio_token_id  # ordinary text tokens of the tiny vocabulary
        scaled = model(**av_inputs, inputs_embeds=embeds * torch.where(text, 3.0, 1.0).unsqueeze(-1), keep_ratio=0.25)
    assert torch.equal(plain.logits, same.logits)
    assert not torch.allclose(plain.logits, scaled.logits)


def test_only_inputs_embeds_cannot_be_compressed(model, av_inputs):
    embeds = model.get_input_embeddings()(av_inputs["input_ids"])
    inputs = {k: v for k, v in av_inputs.items() if k != "input_ids"}
    with pytest.raises(ValueError, match="needs `input_ids`"):
        model(**inputs, inputs_embeds=embeds, keep_ratio=0.25)


def test_one_ratio_resolver_validates_configured_values():
    with pytest.raises(ValueError, match=r"`config.keep_ratio` must be in \(0, 1\]"):
        resolve_keep_ratios(None, None, None, 1.5, None, None)
    with pytest.raises(TypeError, match="`video_keep_ratio` must be a number"):
        resolve_keep_ratios(None, "0.5", None, 0.25, None, None)


def test_per_sample_ratios_apply_the_overrides():
    num_video, num_audio = torch.tensor([64, 0]), torch.tensor([100, 50])
    derived = KeepRatios(0.25).per_sample(num_video, num_audio)
    video, audio = KeepRatios(0.25, video=0.1).per_sample(num_video, num_audio)
    assert torch.equal(video, torch.full((2,), 0.1, dtype=video.dtype))
    assert torch.equal(audio, derived[1])


def test_selection_counts_each_sample_of_a_padded_batch(model):
    """4 x 4 x 4 patches merge into 16 video tokens, 400 mel frames into 100 audio tokens."""
    samples = [
        [("text", 3), ("video", 4, 4, 4, 400), ("text", 2)],
        [("text", 6), ("video", 2, 4, 4, 200), ("text", 1)],
    ]
    inputs = build_inputs(samples)
    with torch.no_grad():
        selection = model.select_tokens(*selection_inputs(model, inputs))
    counts = selection.count_tokens(2)
    assert counts["num_video_tokens"].tolist() == [16, 8]
    assert counts["num_audio_tokens"].tolist() == [100, 50]
