"""Qwen2.5-Omni / Qwen3-Omni input processing shared by `pipeline("omni-qa")`, training and the tools: one request
(dict form or chat messages) -> processor outputs for one sample, and per-sample outputs -> one left-padded batch.

What differs between the backbones (frame size factor and pixel bounds, audio truncation, the shortest audio that
makes a token, the default system turn) comes from `media.media_policy_of(processor)`."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from transformers.utils import logging
from transformers.utils.chat_template_utils import Chat

from .media import (
    MEDIA_TYPES,
    QWEN2_5_OMNI_MEDIA,
    SAMPLING_RATE,
    VideoSampling,
    _describe,
    check_source,
    frame_factor_of,
    load_audio,
    load_image,
    load_video,
    media_policy_of,
    video_sampling_of,
)

logger = logging.get_logger(__name__)

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "INPUT_KEYS",
    "check_omni_request",
    "check_request_options",
    "collate_omni_inputs",
    "group_by_audio_in_video",
    "prepare_omni_inputs",
    "to_model_inputs",
]

# Keys of the dict form (and keyword form) of one request.
INPUT_KEYS = ("question", *MEDIA_TYPES, "messages", "video_fps", "sampling_rate")
# Qwen2.5-Omni's recommended system prompt (the model was trained with it); the pipeline's default for Qwen2.5-Omni
# (Qwen3-Omni's default is no system turn, as its chat template renders it).
DEFAULT_SYSTEM_PROMPT = QWEN2_5_OMNI_MEDIA.default_system_prompt
_ROLES = ("system", "user", "assistant")
# The keys of a media content item that give the rate of an array source (frames or samples per second).
_RATE_KEYS = {"video": ("fps", "video_fps"), "audio": ("sampling_rate",), "image": ()}
# Per-item sampling keys of Qwen's own message format (qwen-omni-utils); here sampling is one `VideoSampling` per call.
_QWEN_SAMPLING_KEYS = (
    "nframes", "min_frames", "max_frames", "min_pixels", "max_pixels", "total_pixels", "resized_height",
    "resized_width", "video_start", "video_end",
)  # fmt: skip
# Whisper's FFT window: padding an audio item with at least this many zero samples makes its features independent of
# how much more padding follows (the same as the processor's 300 s padding, far faster).
_AUDIO_PAD_SAMPLES = 400


def prepare_omni_inputs(processor, inputs, use_audio_in_video=None, system_prompt=None, video_sampling=None) -> dict:
    """One request (dict form or chat messages) -> `Qwen2_5OmniProcessor` / `Qwen3OmniMoeProcessor` outputs for one
    sample, plus the `use_audio_in_video` flag it needs (None without video). The request is checked first
    (`check_omni_request`), then media are loaded with `omnisift_hf.media` under the processor's backbone policy
    (`media.media_policy_of`), the prompt is rendered with the processor's chat template (with an explicit system
    turn; `system_prompt` is the one for requests without their own; without it Qwen2.5-Omni gets its recommended
    prompt and Qwen3-Omni no system turn), audio is padded to its length plus one FFT window. `video_sampling`
    defaults to `media.video_sampling_of(processor)`. Used by `OmniQAPipeline.preprocess` and the training
    collator.

    Raises `TypeError` / `ValueError` / `FileNotFoundError` naming the field and the value for a malformed request or
    option (see `check_omni_request`, `check_request_options`) and for media the loaders refuse. Warns once when an
    audio clip is too short for one audio token (the model does not hear it) and when a video's sound is dropped.
    """
    check_request_options(use_audio_in_video, system_prompt, video_sampling)
    messages = check_omni_request(inputs)
    policy = media_policy_of(processor)
    if video_sampling is None:
        video_sampling = video_sampling_of(processor)
    frame_factor = frame_factor_of(processor)
    min_samples = policy.min_audio_samples  # fewer make no audio token
    videos, video_rates, audios, audio_from_video, images = [], [], [], [], []
    with_audio, silent = 0, 0
    template_messages = []
    for message in messages:
        items = []
        for item in message["content"]:
            kind, source, rate = item["type"], item.get("source"), item.get("rate")
            if kind == "text":
                items.append({"type": "text", "text": item["text"]})
                continue
            if kind == "image":
                images.append(load_image(source))
            elif kind == "audio":
                audio = load_audio(source, SAMPLING_RATE, source_sampling_rate=rate)
                _warn_if_too_short(f"audio={_describe(source)}", audio, min_samples)
                audios.append(audio)
                audio_from_video.append(None)
            else:
                video = load_video(
                    source,
                    video_sampling,
                    load_audio=use_audio_in_video is not False,
                    source_fps=rate,
                    frame_factor=frame_factor,
                )
                videos.append(video.frames)
                video_rates.append(video.fps)
                if video.audio is not None and video.audio.size:
                    if len(video.audio) < min_samples:  # the position ids cannot interleave no tokens
                        raise ValueError(
                            f"omni-qa: the audio track of video={_describe(source)} lasts {len(video.audio)} samples "
                            f"({len(video.audio) / SAMPLING_RATE * 1000:.1f} ms), too short for one audio token (at "
                            f"least {min_samples}); the model cannot interleave it with the frames. Pass "
                            "`use_audio_in_video=False` to use the picture alone."
                        )
                    audios.append(video.audio)
                    audio_from_video.append(len(videos) - 1)
                    with_audio += 1
                else:
                    silent += 1
                    if video.audio is not None:  # an audio stream without samples
                        logger.warning_once(
                            f"omni-qa: video={_describe(source)} has an audio track without samples; it is used "
                            "without sound."
                        )
                    elif use_audio_in_video:
                        logger.warning_once(
                            "omni-qa: use_audio_in_video=True, but a video has no audio track; it is used "
                            "without sound."
                        )
            items.append({"type": kind})
        template_messages.append({"role": message["role"], "content": items})

    if with_audio and silent:
        raise ValueError(
            "omni-qa: one request mixes a video with an audio track and a video without one; the model's "
            "position ids support only one kind per sequence. Send them as separate requests, or pass "
            "`use_audio_in_video=False`."
        )
    if len({round(rate, 6) for rate in video_rates}) > 1:
        raise ValueError(
            f"omni-qa: the videos of one request were sampled at different rates {video_rates}; the processor "
            "takes one `fps` per call. Send them as separate requests."
        )
    system = policy.default_system_prompt if system_prompt is None else system_prompt
    if template_messages[0]["role"] != "system" and system is not None:
        # An explicit system turn: chat templates (Qwen2.5-Omni's too) add their own default one otherwise.
        template_messages.insert(0, {"role": "system", "content": [{"type": "text", "text": system}]})
    prompt = processor.apply_chat_template(template_messages, tokenize=False, add_generation_prompt=True)

    processor_kwargs = {"text": [prompt], "return_tensors": "pt", "padding": True}
    if images:
        processor_kwargs["images"] = images
    if videos:
        processor_kwargs["videos"] = videos
        processor_kwargs["videos_kwargs"] = {
            "fps": video_rates[0],
            "do_sample_frames": False,
            "do_resize": False,  # already resized by `load_video` under `video_sampling`
            "cap_pixels_per_frame": True,
        }
    if audios:
        longest = max(len(audio) for audio in audios)
        audio_kwargs = {"max_length": longest + _AUDIO_PAD_SAMPLES}
        if policy.max_audio_samples is not None:  # Qwen2.5-Omni reads at most 300 s per audio item
            limit = processor.feature_extractor.n_samples
            if longest > limit:
                logger.warning_once(f"omni-qa: audio longer than {limit / SAMPLING_RATE:.0f} s is truncated.")
            audio_kwargs["max_length"] = min(longest + _AUDIO_PAD_SAMPLES, limit)
        else:  # Qwen3-Omni's processor pads to the longest item and never truncates: pad as above instead
            audio_kwargs.update(padding="max_length", truncation=False)
            processor_kwargs["text_kwargs"] = {"padding": processor_kwargs.pop("padding")}  # else given twice
        processor_kwargs["audio"] = audios
        processor_kwargs["audio_kwargs"] = audio_kwargs
    if with_audio:
        processor_kwargs["load_audio_from_video"] = True
        processor_kwargs["audio_from_video_indices"] = audio_from_video
    model_inputs = dict(processor(**processor_kwargs))
    model_inputs["use_audio_in_video"] = bool(with_audio) if videos else None
    return model_inputs


def check_request_options(use_audio_in_video=None, system_prompt=None, video_sampling=None) -> None:
    """Check `prepare_omni_inputs`' options (the pipeline's call arguments of the same names): `use_audio_in_video`
    a bool or None, `system_prompt` a string or None, `video_sampling` a `VideoSampling` or None. Raises `TypeError`
    naming the option and the value."""
    if use_audio_in_video is not None and not isinstance(use_audio_in_video, bool):
        raise TypeError(
            f"omni-qa: use_audio_in_video={use_audio_in_video!r} must be True, False or None (None: True for videos "
            "that have an audio track)."
        )
    if system_prompt is not None and not isinstance(system_prompt, str):
        raise TypeError(
            f'omni-qa: system_prompt={system_prompt!r} must be a string ("" for an empty system turn) or None for '
            "Qwen2.5-Omni's default."
        )
    if video_sampling is not None and not isinstance(video_sampling, VideoSampling):
        raise TypeError(
            f"omni-qa: video_sampling={video_sampling!r} must be a VideoSampling (e.g. `VideoSampling(fps=1.0)`) or "
            "None for the processor's default."
        )


def check_omni_request(inputs) -> list[dict]:
    """Check one request (dict form or chat messages) without reading any media: its keys and turns, each content
    item's type, keys and source (type; local files exist), and the rate of each array (`media.check_source`).

    Returns the request as chat messages whose content is a list of items `{"type": "text", "text": str}` and
    `{"type": "video" | "audio" | "image", "source": ..., "rate": float | int | None}` (`rate`: the rate of an
    array source). `prepare_omni_inputs` starts with it; the pipeline runs it on every request of a call before
    decoding any media.

    Raises:
        `TypeError`: a request, message, item, question or source of the wrong type.
        `ValueError`: unknown keys, an empty question or conversation, a misplaced or missing turn, an item without a
        source, a rate that is not positive and finite or that comes with a file.
        `FileNotFoundError` / `IsADirectoryError`: a local media path that is missing or a directory.
    """
    messages, rates = _to_messages(inputs)
    used = set()
    checked = []
    for position, message in enumerate(messages):
        content = message["content"]
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        items = []
        for item in content:
            kind = _item_type(item)
            _check_item_keys(item, kind)
            if kind == "text":
                if not isinstance(item.get("text"), str):
                    raise TypeError(f"omni-qa: a text item needs a string 'text', got {dict(item)!r}.")
                items.append({"type": "text", "text": item["text"]})
                continue
            source = _item_source(item, kind)
            rate_name = next((key for key in _RATE_KEYS[kind] if item.get(key) is not None), None)
            rate = item[rate_name] if rate_name is not None else None
            request_rate = {"video": "video_fps", "audio": "sampling_rate"}.get(kind)
            if rate_name is None and request_rate in rates and not isinstance(source, (str, os.PathLike)):
                rate_name, rate = request_rate, rates[request_rate]
                used.add(request_rate)
            check_source(kind, source, rate, rate_name)
            items.append({"type": kind, "source": source, "rate": rate})
        if message["role"] == "user" and all(item["type"] == "text" and not item["text"].strip() for item in items):
            raise ValueError(f"omni-qa: turn {position} (user) is empty. Give it text or media, or leave it out.")
        checked.append({"role": message["role"], "content": items})
    for name, kind in (("video_fps", "video"), ("sampling_rate", "audio")):
        if name in rates and name not in used:
            hint = (
                " To sample frames at another rate, pass `video_sampling=VideoSampling(fps=...)`."
                if kind == "video"
                else ""
            )
            raise ValueError(
                f"omni-qa: {name}={rates[name]!r} is the rate of {kind} arrays, but no {kind} array of the request "
                f"uses it (files carry their own rate). Leave {name} out.{hint}"
            )
    return checked


def _warn_if_too_short(what: str, audio, min_samples: int) -> None:
    if len(audio) < min_samples:
        logger.warning_once(
            f"omni-qa: {what} lasts {len(audio)} samples ({len(audio) / SAMPLING_RATE * 1000:.1f} ms), too short "
            f"for one audio token (at least {min_samples} samples, {min_samples / SAMPLING_RATE * 1000:.0f} ms at "
            f"{SAMPLING_RATE} Hz): the model does not hear it. Pass a longer clip."
        )


def _to_messages(inputs) -> tuple[list[dict], dict]:
    """One request (dict form or chat messages) as chat messages with media items, plus array sampling rates."""
    if isinstance(inputs, Chat):
        inputs = inputs.messages
    if isinstance(inputs, (list, tuple)):
        return _check_messages(inputs), {}
    if not isinstance(inputs, Mapping):
        raise TypeError(
            f"omni-qa: expected a dict such as {{'video': 'clip.mp4', 'question': '...'}}, chat messages or a list of "
            f"those, got {type(inputs).__name__}."
        )
    unknown = sorted(set(inputs) - set(INPUT_KEYS), key=str)
    if unknown:
        raise ValueError(f"omni-qa: unknown key(s) {unknown} in the input; expected some of {list(INPUT_KEYS)}.")
    rates = {key: inputs[key] for key in ("video_fps", "sampling_rate") if inputs.get(key) is not None}
    if inputs.get("messages") is not None:
        if any(inputs.get(key) is not None for key in ("question", *MEDIA_TYPES)):
            raise ValueError("omni-qa: pass either `messages` or `question` with media, not both.")
        return _check_messages(inputs["messages"]), rates
    question = inputs.get("question")
    if question is not None and not isinstance(question, str):
        raise TypeError(f"omni-qa: question={question!r} must be a string, got {type(question).__name__}.")
    if question is None or not question.strip():
        raise ValueError(f"omni-qa: question={question!r}; pass a non-empty question string.")
    content = []
    for kind in MEDIA_TYPES:
        value = inputs.get(kind)
        for source in value if isinstance(value, (list, tuple)) else ([] if value is None else [value]):
            content.append({"type": kind, kind: source})
    content.append({"type": "text", "text": question})
    return [{"role": "user", "content": content}], rates


def _check_messages(messages) -> list[dict]:
    if not isinstance(messages, (list, tuple)):
        raise TypeError(
            f"omni-qa: chat messages must be a list of {{'role': ..., 'content': ...}} dicts, got "
            f"{type(messages).__name__}."
        )
    if not messages or not all(isinstance(m, Mapping) and "role" in m and "content" in m for m in messages):
        raise ValueError(
            "omni-qa: chat messages must be a non-empty list of {'role': ..., 'content': ...} dicts, got "
            f"{_short(messages)}."
        )
    for position, message in enumerate(messages):
        role, content = message["role"], message["content"]
        if role not in _ROLES:
            raise ValueError(f"omni-qa: turn {position} has role={role!r}; use one of {list(_ROLES)}.")
        if role == "system" and position:
            raise ValueError(f"omni-qa: turn {position} is a system turn; only the first turn may be the system's.")
        if not isinstance(content, (str, list, tuple)):
            raise TypeError(
                f"omni-qa: turn {position}: content={_short(content)} must be a string or a list of items such as "
                "{'type': 'text', 'text': '...'}."
            )
    if not any(message["role"] == "user" for message in messages):
        raise ValueError("omni-qa: the chat messages have no user turn. Add one with the question.")
    return list(messages)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _item_type(item) -> str:
    if not isinstance(item, Mapping):
        raise TypeError(f"omni-qa: a message content item must be a dict, got {_short(item)}.")
    kind = item.get("type") or next((k for k in ("text", *MEDIA_TYPES) if k in item), None)
    if kind == "image_url":
        kind = "image"
    if kind not in ("text", *MEDIA_TYPES):
        raise ValueError(f"omni-qa: content item of type {kind!r} is not supported; use text, video, audio or image.")
    return kind


def _check_item_keys(item: Mapping, kind: str) -> None:
    known = {"type", "text"} if kind == "text" else {"type", *_source_keys(kind), *_RATE_KEYS[kind]}
    unknown = sorted(set(item) - known, key=str)
    if unknown:
        hint = (
            " Frame sampling is set per call: pass `video_sampling=VideoSampling(...)`."
            if set(unknown) & set(_QWEN_SAMPLING_KEYS)
            else ""
        )
        raise ValueError(f"omni-qa: the {kind} item has unknown key(s) {unknown}; known: {sorted(known)}.{hint}")


def _source_keys(kind: str) -> tuple[str, ...]:
    return (kind, "path", "url", f"{kind}_url")


def _item_source(item: Mapping, kind: str):
    given = [key for key in _source_keys(kind) if item.get(key) is not None]
    if len(given) > 1:
        raise ValueError(f"omni-qa: the {kind} item names several sources {given}; keep one.")
    if not given:
        raise ValueError(
            f"omni-qa: the {kind} item {_short(dict(item))} has no source; add '{kind}': <path, URL or array>."
        )
    source = item[given[0]]
    if isinstance(source, Mapping) and "url" in source:  # OpenAI style: {"type": "image_url", "image_url": {"url"}}
        source = source["url"]
    return source


def group_by_audio_in_video(samples: list[dict]) -> dict[bool, list[int]]:
    """Indices of the samples per value of `use_audio_in_video` (samples without video join either group)."""
    flags = [sample.get("use_audio_in_video") for sample in samples]
    groups: dict[bool, list[int]] = {}
    default = True in flags
    for index, flag in enumerate(flags):
        groups.setdefault(default if flag is None else flag, []).append(index)
    return groups


def collate_omni_inputs(samples: list[dict], pad_token_id: int) -> dict:
    """Merge per-sample `Qwen2_5OmniProcessor` outputs into one left-padded batch: token rows padded on the left,
    audio features padded on the right (the model reads them through `feature_attention_mask`), patches and grids
    concatenated in sample order."""
    batch: dict = {}
    length = max(sample["input_ids"].shape[1] for sample in samples)
    input_ids = torch.full((len(samples), length), pad_token_id, dtype=samples[0]["input_ids"].dtype)
    attention_mask = torch.zeros((len(samples), length), dtype=samples[0]["attention_mask"].dtype)
    for row, sample in enumerate(samples):
        size = sample["input_ids"].shape[1]
        input_ids[row, length - size :] = sample["input_ids"][0]
        attention_mask[row, length - size :] = sample["attention_mask"][0]
    batch["input_ids"], batch["attention_mask"] = input_ids, attention_mask

    with_audio = [sample for sample in samples if sample.get("input_features") is not None]
    if with_audio:
        frames = max(sample["input_features"].shape[-1] for sample in with_audio)
        batch["input_features"] = torch.cat(
            [
                torch.nn.functional.pad(s["input_features"], (0, frames - s["input_features"].shape[-1]))
                for s in with_audio
            ]
        )
        batch["feature_attention_mask"] = torch.cat(
            [
                torch.nn.functional.pad(
                    s["feature_attention_mask"], (0, frames - s["feature_attention_mask"].shape[-1])
                )
                for s in with_audio
            ]
        )
    for key in ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw", "video_second_per_grid"):
        parts = [torch.as_tensor(sample[key]) for sample in samples if sample.get(key) is not None]
        if parts:
            batch[key] = torch.cat(parts)
    return batch


def to_model_inputs(inputs: dict, model, device=None) -> dict:
    """Processor outputs ready for `model`: tensors on `device` (default: the model's), floating ones (pixels, mel
    features) in the model's dtype (bf16 checkpoints); ids, masks, grids and non-tensors as they are."""
    device = model.device if device is None else device
    return {
        key: (value.to(device, model.dtype) if value.is_floating_point() else value.to(device))
        if torch.is_tensor(value)
        else value
        for key, value in inputs.items()
    }
