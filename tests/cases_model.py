"""Bad-input rows for the model surface: `forward` / `generate` of `OmniSiftForConditionalGeneration` (walked by
test_bad_inputs.py)."""

import dataclasses
import functools

import torch
from helpers import Case, build_inputs

from omnisift_hf.testing_utils import tiny_model, tiny_omni_model

SILENT_VIDEO = [("text", 4), ("video", 4, 4, 4, None), ("text", 3)]
VIDEO_WITH_AUDIO = [("text", 2), ("video", 4, 4, 4, 400), ("text", 3)]


@functools.cache
def model():
    return tiny_model()


def inputs(*samples, **overrides) -> dict:
    """Tiny inputs for `samples` (default: one video with its audio), with entries replaced or (value None) removed."""
    built = build_inputs(list(samples) or [VIDEO_WITH_AUDIO])
    built.update(overrides)
    return {key: value for key, value in built.items() if value is not None or key == "use_audio_in_video"}


def forward(keep_ratio=0.25, samples=(), **overrides):
    def call(_tmp_path):
        with torch.no_grad():
            return model()(**inputs(*samples, **overrides), keep_ratio=keep_ratio)

    return call


def generate(**kwargs):
    def call(_tmp_path):
        with torch.no_grad():
            return model().generate(**inputs(), max_new_tokens=2, do_sample=False, **kwargs)

    return call


@functools.cache
def omni_model():
    return tiny_omni_model()


def speak(model=omni_model, **kwargs):
    """A spoken reply of the full model (`model()` builds it) to one video with its audio."""

    def call(_tmp_path):
        return model().generate(**inputs(), thinker_max_new_tokens=3, talker_max_new_tokens=4, **kwargs)

    return call


def omni_without(change):
    """A tiny full model changed by `change` (it disables the talker or empties the speakers)."""

    def build():
        built = tiny_omni_model()
        change(built)
        return built

    return build


def with_config(field: str, value):
    """A forward with a config field reassigned after validation (restored afterwards)."""

    def call(tmp_path):
        saved = getattr(model().config, field)
        setattr(model().config, field, value)
        try:
            return forward()(tmp_path)
        finally:
            setattr(model().config, field, saved)

    return call


def training_with_config(field: str, value):
    """A training forward (train mode, labels on the answer) with a config field reassigned after validation
    (restored afterwards, with eval mode)."""

    def call(_tmp_path):
        given = inputs()
        labels = torch.full_like(given["input_ids"], -100)
        labels[:, -2:] = given["input_ids"][:, -2:]
        saved = getattr(model().config, field)
        setattr(model().config, field, value)
        model().train()
        try:
            return model()(**given, labels=labels, keep_ratio=0.25)
        finally:
            setattr(model().config, field, saved)
            model().eval()

    return call


def with_selector(change):
    def call(_tmp_path):
        def selector(*args):
            return change(model().select_tokens(*args))

        with torch.no_grad():
            return model()(**inputs(), keep_ratio=0.25, token_selector=selector)

    return call


def only_embeddings(_tmp_path):
    given = inputs()
    embeds = model().get_input_embeddings()(given.pop("input_ids"))
    return model()(**given, inputs_embeds=embeds, keep_ratio=0.25)


CASES: list[Case] = [
    # use_audio_in_video must describe the prompt: a mismatch gives wrong positions and skips compression.
    Case(
        "model-silent-video-with-use_audio_in_video",
        forward(samples=[SILENT_VIDEO], use_audio_in_video=True),
        ValueError,
        ("use_audio_in_video=True", "sample 0", "use_audio_in_video=False"),
    ),
    Case(
        "model-interleaved-audio-without-use_audio_in_video",
        forward(use_audio_in_video=False),
        ValueError,
        ("use_audio_in_video=False", "interleaves", "use_audio_in_video=True"),
    ),
    Case(
        "model-interleaved-audio-with-use_audio_in_video-none",
        forward(use_audio_in_video=None),
        ValueError,
        ("use_audio_in_video=None", "use_audio_in_video=True"),
    ),
    Case(
        "model-batch-mixing-silent-and-audio-videos",
        forward(samples=[SILENT_VIDEO, VIDEO_WITH_AUDIO], use_audio_in_video=False),
        ValueError,
        ("sample 1", "use_audio_in_video=True"),
    ),
    Case(
        "model-mismatch-refused-without-compression-too",
        forward(keep_ratio=1.0, samples=[SILENT_VIDEO, VIDEO_WITH_AUDIO], use_audio_in_video=True),
        ValueError,
        ("sample 0", "separate calls"),
    ),
    # Processor outputs that do not belong together.
    Case(
        "model-video-grid-does-not-match-pixels",
        forward(video_grid_thw=torch.tensor([[4, 4, 2]])),
        ValueError,
        ("`video_grid_thw` [[4, 4, 2]]", "32 patches", "`pixel_values_videos` has 64", "same processor call"),
    ),
    Case(
        "model-video-placeholders-do-not-match-grid",
        forward(
            samples=[VIDEO_WITH_AUDIO],
            pixel_values_videos=torch.randn(128, 1176),
            video_grid_thw=torch.tensor([[4, 8, 4]]),
        ),
        ValueError,
        ("16 video placeholders", "32 video tokens", "different processor calls"),
    ),
    Case(
        "model-video-pixels-without-grid",
        forward(video_grid_thw=None),
        ValueError,
        ("`pixel_values_videos`", "without `video_grid_thw`"),
    ),
    Case(
        "model-audio-features-without-mask",
        forward(feature_attention_mask=None),
        ValueError,
        ("`input_features`", "without `feature_attention_mask`"),
    ),
    Case(
        "model-audio-mask-of-another-shape",
        forward(feature_attention_mask=torch.ones(1, 300, dtype=torch.long)),
        ValueError,
        ("`feature_attention_mask` has shape (1, 300)", "(1, 400)"),
    ),
    Case(
        "model-only-inputs-embeds",
        only_embeddings,
        ValueError,
        ("needs `input_ids`", "keep_ratio=1.0"),
    ),
    # Ratios, per call and in the config.
    Case("model-keep-ratio-zero", forward(keep_ratio=0), ValueError, ("`keep_ratio`", "(0, 1]", "got 0.0")),
    Case("model-keep-ratio-above-one", forward(keep_ratio=1.5), ValueError, ("`keep_ratio`", "got 1.5")),
    Case("model-keep-ratio-nan", forward(keep_ratio=float("nan")), ValueError, ("`keep_ratio`", "nan")),
    Case("model-keep-ratio-string", forward(keep_ratio="0.5"), TypeError, ("`keep_ratio`", "'0.5'", "str")),
    Case("model-keep-ratio-bool", forward(keep_ratio=True), TypeError, ("`keep_ratio`", "True", "bool")),
    Case(
        "model-video-keep-ratio-negative",
        forward(keep_ratio=None, video_keep_ratio=-0.1),
        ValueError,
        ("`video_keep_ratio`", "-0.1"),
    ),
    Case(
        "model-config-keep-ratio-reassigned",
        with_config("keep_ratio", 2),
        ValueError,
        ("`config.keep_ratio`", "got 2.0"),
    ),
    Case(
        "model-config-distillation-weight-reassigned-nan",
        training_with_config("selector_distillation_weight", float("nan")),
        ValueError,
        ("selector_distillation_weight=nan", "finite number >= 0"),
    ),
    Case(
        "model-config-distillation-weight-reassigned-negative",
        training_with_config("selector_distillation_weight", -1.0),
        ValueError,
        ("selector_distillation_weight=-1.0", "finite number >= 0"),
    ),
    Case(
        "model-tiny-keep-ratio-warns",
        forward(keep_ratio=1e-9),
        None,
        ("keep_ratio=1e-09", "kept 4 of 116", "one video token of each frame", "video_keep_ratio"),
    ),
    # generate()
    Case(
        "generate-static-cache-with-compression",
        generate(keep_ratio=0.25, cache_implementation="static"),
        ValueError,
        ("cache_implementation='static'", "dynamic cache", "keep_ratio=1.0"),
    ),
    Case("generate-keep-ratio-negative", generate(keep_ratio=-1), ValueError, ("`keep_ratio`", "got -1.0")),
    # The selection hook.
    Case(
        "model-token-selector-returns-a-tensor",
        with_selector(lambda selection: selection.video_keep),
        TypeError,
        ("token_selector returned a Tensor", "TokenSelection"),
    ),
    Case(
        "model-token-selector-returns-wrong-shape",
        with_selector(lambda selection: dataclasses.replace(selection, audio_keep=selection.audio_keep[:3])),
        ValueError,
        ("audio_keep", "shape (3,)", "(100,)"),
    ),
    # Spoken replies (OmniSiftOmniForConditionalGeneration.generate): refused before the thinker runs.
    Case(
        "speak-keep-ratio-out-of-range",
        speak(keep_ratio=1.5),
        ValueError,
        ("`keep_ratio`", "got 1.5"),
    ),
    Case(
        "speak-unknown-speaker",
        speak(speaker="Nobody"),
        ValueError,
        ("speaker='Nobody'", "'Chelsie'", "'Ethan'"),
    ),
    Case(
        "speak-unknown-generation-mode",
        speak(generation_mode="speech"),
        ValueError,
        ("generation_mode", "'audio'", "'text'"),
    ),
    Case(
        "speak-with-talker-disabled",
        speak(omni_without(lambda model: model.disable_talker()), generation_mode="audio"),
        ValueError,
        ("generation_mode='audio'", "talker is disabled", "enable_talker()", "generation_mode='text'"),
    ),
    Case(
        "speak-without-speakers",
        speak(omni_without(lambda model: setattr(model, "speaker_map", {}))),
        ValueError,
        ("speaker='Chelsie'", "no speakers", "spk_dict.pt", "load_speakers"),
    ),
]
