"""Bad-input rows for the training surface (walked by test_bad_inputs.py): the JSONL dataset, the data collator, the
encode-once cache and the freezing policies."""

import functools
import json
from pathlib import Path

import torch
from helpers import Case

from omnisift_hf.testing_utils import tiny_model, tiny_processor
from omnisift_hf.tools.synthetic import write_synthetic_clip
from omnisift_hf.training import (
    EncodedOmniQADataset,
    OmniQADataCollator,
    OmniQADataset,
    count_trainable_parameters,
    freeze,
    reset_selector,
)

TEXT_ONLY = {"question": "What is two and two?", "answer": "Four."}  # no media: encodes in milliseconds


@functools.cache
def _processor():
    return tiny_processor()


@functools.cache
def _model():
    return tiny_model()


@functools.cache
def _collator(system_prompt: str | None = None) -> OmniQADataCollator:
    return OmniQADataCollator(_processor(), system_prompt=system_prompt)


def _jsonl(directory: Path, *lines, name: str = "train.jsonl") -> Path:
    """A JSONL file of `lines` (dicts are written as JSON, strings as they are)."""
    path = directory / name
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def _dataset(directory: Path, *lines, **kwargs) -> OmniQADataset:
    return OmniQADataset(_jsonl(directory, *lines), **kwargs)


def _clip(directory: Path, name: str, audio: bool = True) -> str:
    write_synthetic_clip(directory / name, seconds=2.0, fps=4, size=(56, 56), audio=audio)
    return name


def _not_utf8(directory: Path) -> OmniQADataset:
    (directory / "train.jsonl").write_bytes(b'{"question": "caf\xe9?", "answer": "A."}\n')
    return OmniQADataset(directory / "train.jsonl")


def _mixed_batch(directory: Path) -> dict:
    """A clip with its audio track and a silent clip in one batch: one `use_audio_in_video` cannot serve both."""
    dataset = _dataset(
        directory,
        {"video": _clip(directory, "sound.mp4"), "question": "Q?", "answer": "A."},
        {"video": _clip(directory, "silent.mp4", audio=False), "question": "Q?", "answer": "A."},
    )
    return _collator()(list(dataset))


def _encoded(directory: Path) -> EncodedOmniQADataset:
    return EncodedOmniQADataset(_dataset(directory, TEXT_ONLY), _collator(), directory / "cache")


def _cut_short(directory: Path) -> EncodedOmniQADataset:
    """An encoded file cut in half, as a crash in the middle of a non-atomic write would leave it."""
    encoded = _encoded(directory)
    whole = encoded.paths[0].read_bytes()
    encoded.paths[0].write_bytes(whole[: len(whole) // 2])
    return encoded


def _other_settings(directory: Path) -> EncodedOmniQADataset:
    _encoded(directory)
    return EncodedOmniQADataset(_dataset(directory, TEXT_ONLY), _collator("Be brief."), directory / "cache")


def _corrupt_manifest(directory: Path) -> EncodedOmniQADataset:
    _encoded(directory)
    (directory / "cache" / "omnisift_encoded.json").write_text("{")
    return _encoded(directory)


def _not_a_cache(directory: Path) -> EncodedOmniQADataset:
    (directory / "cache").mkdir()
    (directory / "cache" / "notes.txt").write_text("mine")
    return _encoded(directory)


CASES: list[Case] = [
    # The JSONL file: every row names the file and the line.
    Case(
        "training-jsonl-line-not-json",
        lambda tmp: _dataset(tmp, TEXT_ONLY, "{'question': 'Q?'}"),
        ValueError,
        ("train.jsonl, line 2", "not valid JSON", "one JSON object"),
    ),
    Case(
        "training-jsonl-line-not-an-object",
        lambda tmp: _dataset(tmp, "[1, 2]"),
        ValueError,
        ("train.jsonl, line 1", "expected a JSON object", "got a list", "[1, 2]"),
    ),
    Case(
        "training-jsonl-no-answer",
        lambda tmp: _dataset(tmp, {"question": "Q?"}),
        ValueError,
        ("train.jsonl, line 1", "`answer` must be a non-empty string", "got None", "`messages` conversation"),
    ),
    Case(
        "training-jsonl-answer-is-a-number",
        lambda tmp: _dataset(tmp, {"question": "Q?", "answer": 3}),
        ValueError,
        ("train.jsonl, line 1", "`answer`", "got 3"),
    ),
    Case(
        "training-jsonl-media-list-of-numbers",
        lambda tmp: _dataset(tmp, {"video": [1, 2], **TEXT_ONLY}),
        ValueError,
        ("train.jsonl, line 1", "video item", "'video': 1", "path or URL string"),
    ),
    Case(
        "training-jsonl-empty-media-list",
        lambda tmp: _dataset(tmp, {"audio": [], **TEXT_ONLY}),
        ValueError,
        ("train.jsonl, line 1", "`audio` is []", "leave the key out"),
    ),
    Case(
        "training-jsonl-unknown-key",
        lambda tmp: _dataset(tmp, {"vidoe": "clip.mp4", **TEXT_ONLY}),
        ValueError,
        ("train.jsonl, line 1", "unknown key(s) ['vidoe']", "'video'"),
    ),
    Case(
        "training-jsonl-unknown-item-key",
        lambda tmp: _dataset(
            tmp,
            {
                "messages": [
                    {"role": "user", "content": [{"type": "video", "video": "clip.mp4", "fps": 4}]},
                    {"role": "assistant", "content": "A."},
                ]
            },
            check_media_files=False,
        ),
        ValueError,
        ("train.jsonl, line 1", "unknown key(s) ['fps']", '{"type": "video", "video": <path or URL>}'),
    ),
    Case(
        "training-jsonl-key-given-twice",
        lambda tmp: _dataset(tmp, '{"question": "Q?", "answer": "A.", "answer": "B."}'),
        ValueError,
        ("train.jsonl, line 1", "['answer'] given twice", "remove the extra one"),
    ),
    Case(
        "training-jsonl-system-turn-not-first",
        lambda tmp: _dataset(
            tmp,
            {
                "messages": [
                    {"role": "user", "content": "Q?"},
                    {"role": "system", "content": "Be brief."},
                    {"role": "assistant", "content": "A."},
                ]
            },
        ),
        ValueError,
        ("train.jsonl, line 1", "turn 1 is a system turn", "only the first turn", "`system` key"),
    ),
    Case(
        "training-jsonl-not-utf8",
        _not_utf8,
        ValueError,
        ("train.jsonl, line 1", "not UTF-8", "b'\\xe9'", "save the file as UTF-8"),
    ),
    Case(
        "training-jsonl-media-file-missing",
        lambda tmp: _dataset(tmp, TEXT_ONLY, {"video": "clips/nope.mp4", **TEXT_ONLY}),
        FileNotFoundError,
        ("train.jsonl, line 2", "'clips/nope.mp4' not found", "resolved against the JSONL file's directory"),
    ),
    Case(
        "training-jsonl-empty-file",
        lambda tmp: _dataset(tmp, "", "  "),
        ValueError,
        ("train.jsonl", "has no examples", "one JSON object per line"),
    ),
    Case(
        "training-jsonl-check-media-files-not-a-bool",
        lambda tmp: _dataset(tmp, TEXT_ONLY, check_media_files="yes"),
        TypeError,
        ("check_media_files='yes'", "True or False"),
    ),
    # The collator: its settings, then the batch.
    Case(
        "training-collator-keep-ratio-out-of-range",
        lambda tmp: OmniQADataCollator(_processor(), keep_ratio=1.5),
        ValueError,
        ("`keep_ratio`", "1.5", "(0, 1]"),
    ),
    Case(
        "training-collator-keep-ratio-string",
        lambda tmp: OmniQADataCollator(_processor(), keep_ratio="0.25"),
        TypeError,
        ("`keep_ratio`", "'0.25'", "a number in (0, 1]"),
    ),
    Case(
        "training-collator-keep-ratio-list-entry",
        lambda tmp: OmniQADataCollator(_processor(), keep_ratio=[1.0, 0]),
        ValueError,
        ("`keep_ratio[1]`", "0.0", "(0, 1]"),
    ),
    Case(
        "training-collator-audio-keep-ratio-nan",
        lambda tmp: OmniQADataCollator(_processor(), audio_keep_ratio=float("nan")),
        ValueError,
        ("`audio_keep_ratio`", "nan", "(0, 1]"),
    ),
    Case(
        "training-collator-given-a-tokenizer",
        lambda tmp: OmniQADataCollator(_processor().tokenizer),
        TypeError,
        ("processor", "Tokenizer", "AutoProcessor.from_pretrained"),
    ),
    Case(
        "training-collator-system-prompt-not-a-string",
        lambda tmp: OmniQADataCollator(_processor(), system_prompt=3),
        TypeError,
        ("system_prompt=3", "int", "pass a string"),
    ),
    Case(
        "training-collator-empty-batch",
        lambda tmp: _collator()([]),
        ValueError,
        ("features", "empty", "at least one example"),
    ),
    Case(
        "training-collator-feature-of-the-wrong-type",
        lambda tmp: _collator()([3]),
        TypeError,
        ("expected OmniQAExample items", "got int", "remove_unused_columns=False"),
    ),
    Case(
        "training-collator-dict-answer-is-a-number",
        lambda tmp: _collator()([{"messages": [{"role": "user", "content": "Q?"}], "answer": 3, "source": "mine 7"}]),
        TypeError,
        ("mine 7", "answer=3", "int", "pass the text"),
    ),
    Case(
        "training-collator-video-with-and-without-sound",
        _mixed_batch,
        ValueError,
        (
            "train.jsonl, line 1: with its audio track",
            "train.jsonl, line 2: without its audio track",
            "one `use_audio_in_video` per batch",
            '"use_audio_in_video": false',
        ),
    ),
    # The encode-once cache.
    Case(
        "training-cache-dir-is-a-file",
        lambda tmp: EncodedOmniQADataset(
            _dataset(tmp, TEXT_ONLY), _collator(), (tmp / "cache.txt", (tmp / "cache.txt").write_text("x"))[0]
        ),
        ValueError,
        ("cache_dir=", "cache.txt", "is a file", "pass a directory"),
    ),
    Case(
        "training-cache-num-workers-negative",
        lambda tmp: EncodedOmniQADataset(_dataset(tmp, TEXT_ONLY), _collator(), tmp / "cache", num_workers=-1),
        ValueError,
        ("num_workers=-1", "integer >= 0"),
    ),
    Case(
        "training-cache-num-workers-bool",
        lambda tmp: EncodedOmniQADataset(_dataset(tmp, TEXT_ONLY), _collator(), tmp / "cache", num_workers=True),
        TypeError,
        ("num_workers=True", "integer >= 0"),
    ),
    Case(
        "training-cache-empty-dataset",
        lambda tmp: EncodedOmniQADataset([], _collator(), tmp / "cache"),
        ValueError,
        ("dataset is empty", "nothing to encode"),
    ),
    Case(
        "training-cache-other-settings",
        _other_settings,
        ValueError,
        ("cache_dir=", "other settings", "['system_prompt']", "delete it or pass another cache_dir"),
    ),
    Case(
        "training-cache-directory-not-a-cache",
        _not_a_cache,
        ValueError,
        ("cache_dir=", "not empty", "omnisift_encoded.json", "new or empty directory"),
    ),
    Case(
        "training-cache-manifest-corrupt",
        _corrupt_manifest,
        ValueError,
        ("omnisift_encoded.json", "cannot be read", "delete cache_dir="),
    ),
    Case(
        "training-cache-file-cut-short-when-read",
        lambda tmp: _cut_short(tmp)[0],
        ValueError,
        (
            ".safetensors",
            "train.jsonl, line 1",
            "cannot be read",
            "delete it and create the EncodedOmniQADataset again",
        ),
    ),
    Case(
        "training-cache-file-cut-short-when-opened",
        lambda tmp: (_cut_short(tmp), _encoded(tmp)),
        None,
        (".safetensors", "train.jsonl, line 1", "cannot be used", "encoding the example(s) again"),
    ),
    Case(
        "training-cache-media-file-gone",
        lambda tmp: EncodedOmniQADataset(
            _dataset(tmp, {"audio": "gone.wav", **TEXT_ONLY}, check_media_files=False), _collator(), tmp / "cache"
        ),
        FileNotFoundError,
        ("train.jsonl, line 1", "gone.wav", "not found", "restore the file or remove the example"),
    ),
    # Freezing.
    Case(
        "training-freeze-unknown-policy",
        lambda tmp: freeze(_model(), "decoder"),
        ValueError,
        ("'decoder'", "'selector', 'paper', 'full'"),
    ),
    Case(
        "training-freeze-policy-not-a-string",
        lambda tmp: freeze(_model(), ["selector"]),
        TypeError,
        ("policy=['selector']", "'selector', 'paper', 'full'"),
    ),
    Case(
        "training-freeze-not-an-omnisift-model",
        lambda tmp: freeze(torch.nn.Linear(2, 2), "full"),
        TypeError,
        ("freeze: model", "Linear", "OmniSiftForConditionalGeneration", "before wrapping it"),
    ),
    Case(
        "training-reset-selector-not-an-omnisift-model",
        lambda tmp: reset_selector(torch.nn.Linear(2, 2)),
        TypeError,
        ("reset_selector: model", "Linear", "no OmniSIFT audio selector", "model.thinker"),
    ),
    Case(
        "training-count-not-a-model",
        lambda tmp: count_trainable_parameters("model"),
        TypeError,
        ("count_trainable_parameters: model", "got a str", "OmniSiftForConditionalGeneration"),
    ),
]
