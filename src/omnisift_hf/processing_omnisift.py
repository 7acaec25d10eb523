"""Qwen2.5-Omni input processing shared by `pipeline("omni-qa")`, training and the tools: one request (dict form or
chat messages) -> processor outputs for one sample, and per-sample outputs -> one left-padded batch."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from transformers.utils import logging
from transformers.utils.chat_template_utils import Chat

from .media import MEDIA_TYPES, SAMPLING_RATE, load_audio, load_image, load_video, video_sampling_of

logger = logging.get_logger(__name__)

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "INPUT_KEYS",
    "collate_omni_inputs",
    "group_by_audio_in_video",
    "prepare_omni_inputs",
    "to_model_inputs",
]

# Keys of the dict form (and keyword form) of one request.
INPUT_KEYS = ("question", *MEDIA_TYPES, "messages", "video_fps", "sampling_rate")
# Qwen2.5-Omni's recommended system prompt (the model was trained with it); the pipeline's default.
DEFAULT_SYSTEM_PROMPT = (
    "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving auditory and "
    "visual inputs, as well as generating text and speech."
)
# Whisper's FFT window: padding an audio item with at least this many zero samples makes its features independent of
# how much more padding follows (the same as the processor's 300 s padding, far faster).
_AUDIO_PAD_SAMPLES = 400


def prepare_omni_inputs(processor, inputs, use_audio_in_video=None, system_prompt=None, video_sampling=None) -> dict:
    """One request (dict form or chat messages) -> `Qwen2_5OmniProcessor` outputs for one sample, plus the
    `use_audio_in_video` flag it needs (None without video). Media are loaded with `omnisift_hf.media`, the prompt is
    rendered with the processor's chat template (with an explicit system turn), audio is padded to its length plus one
    FFT window. `video_sampling` defaults to `media.video_sampling_of(processor)`. Used by
    `OmniQAPipeline.preprocess` and the training collator."""
    messages, rates = _to_messages(inputs)
    if video_sampling is None:
        video_sampling = video_sampling_of(processor)
    videos, video_rates, audios, audio_from_video, images = [], [], [], [], []
    with_audio, silent = 0, 0
    template_messages = []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            template_messages.append({"role": message["role"], "content": [{"type": "text", "text": content}]})
            continue
        items = []
        for item in content:
            kind = _item_type(item)
            if kind == "text":
                items.append({"type": "text", "text": item["text"]})
                continue
            source = _item_source(item, kind)
            if kind == "image":
                images.append(load_image(source))
            elif kind == "audio":
                rate = item.get("sampling_rate", rates.get("sampling_rate"))
                audios.append(load_audio(source, SAMPLING_RATE, source_sampling_rate=rate))
                audio_from_video.append(None)
            else:
                fps = item.get("fps", item.get("video_fps", rates.get("video_fps")))
                video = load_video(source, video_sampling, load_audio=use_audio_in_video is not False, source_fps=fps)
                videos.append(video.frames)
                video_rates.append(video.fps)
                if video.audio is not None and video.audio.size:
                    audios.append(video.audio)
                    audio_from_video.append(len(videos) - 1)
                    with_audio += 1
                else:
                    silent += 1
                    if use_audio_in_video:
                        logger.warning_once(
                            "omni-qa: use_audio_in_video=True, but a video has no audio track; it is used "
                            "without sound."
                        )
            items.append({"type": kind})
        template_messages.append({"role": message["role"], "content": items})

    if with_audio and silent:
        raise ValueError(
            "omni-qa: one request mixes a video with an audio track and a video without one; Qwen2.5-Omni's "
            "position ids support only one kind per sequence. Send them as separate requests, or pass "
            "`use_audio_in_video=False`."
        )
    if len({round(rate, 6) for rate in video_rates}) > 1:
        raise ValueError(
            f"omni-qa: the videos of one request were sampled at different rates {video_rates}; the processor "
            "takes one `fps` per call. Send them as separate requests."
        )
    if template_messages[0]["role"] != "system":
        # Always an explicit system turn: chat templates (Qwen's too) add their own default one otherwise.
        system = DEFAULT_SYSTEM_PROMPT if system_prompt is None else system_prompt
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
        limit = processor.feature_extractor.n_samples  # Qwen2.5-Omni reads at most 300 s per audio item
        longest = max(len(audio) for audio in audios)
        if longest > limit:
            logger.warning_once(f"omni-qa: audio longer than {limit / SAMPLING_RATE:.0f} s is truncated.")
        processor_kwargs["audio"] = audios
        processor_kwargs["audio_kwargs"] = {"max_length": min(longest + _AUDIO_PAD_SAMPLES, limit)}
    if with_audio:
        processor_kwargs["load_audio_from_video"] = True
        processor_kwargs["audio_from_video_indices"] = audio_from_video
    model_inputs = dict(processor(**processor_kwargs))
    model_inputs["use_audio_in_video"] = bool(with_audio) if videos else None
    return model_inputs


def _to_messages(inputs) -> tuple[list[dict], dict]:
    """One request (dict form or chat messages) as chat messages with media items, plus array sampling rates."""
    if isinstance(inputs, Chat):
        inputs = inputs.messages
    if isinstance(inputs, (list, tuple)):
        return _check_messages(list(inputs)), {}
    if not isinstance(inputs, Mapping):
        raise TypeError(
            f"omni-qa: expected a dict such as {{'video': 'clip.mp4', 'question': '...'}}, chat messages or a list of "
            f"those, got {type(inputs).__name__}."
        )
    unknown = sorted(set(inputs) - set(INPUT_KEYS))
    if unknown:
        raise ValueError(f"omni-qa: unknown key(s) {unknown} in the input; expected some of {list(INPUT_KEYS)}.")
    rates = {key: inputs[key] for key in ("video_fps", "sampling_rate") if inputs.get(key) is not None}
    if inputs.get("messages") is not None:
        if any(inputs.get(key) is not None for key in ("question", *MEDIA_TYPES)):
            raise ValueError("omni-qa: pass either `messages` or `question` with media, not both.")
        return _check_messages(list(inputs["messages"])), rates
    question = inputs.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"omni-qa: question={question!r}; pass a non-empty question string.")
    content = []
    for kind in MEDIA_TYPES:
        value = inputs.get(kind)
        for source in value if isinstance(value, (list, tuple)) else ([] if value is None else [value]):
            content.append({"type": kind, kind: source})
    content.append({"type": "text", "text": question})
    return [{"role": "user", "content": content}], rates


def _check_messages(messages: list) -> list[dict]:
    if not messages or not all(isinstance(m, Mapping) and "role" in m and "content" in m for m in messages):
        raise ValueError("omni-qa: chat messages must be a non-empty list of {'role': ..., 'content': ...} dicts.")
    return messages


def _item_type(item) -> str:
    if not isinstance(item, Mapping):
        raise TypeError(f"omni-qa: a message content item must be a dict, got {item!r}.")
    kind = item.get("type") or next((k for k in ("text", *MEDIA_TYPES) if k in item), None)
    if kind == "image_url":
        kind = "image"
    if kind not in ("text", *MEDIA_TYPES):
        raise ValueError(f"omni-qa: content item of type {kind!r} is not supported; use text, video, audio or image.")
    return kind


def _item_source(item: Mapping, kind: str):
    for key in (kind, "path", "url", f"{kind}_url"):
        if item.get(key) is not None:
            return item[key]
    raise ValueError(f"omni-qa: the {kind} item {dict(item)!r} has no source; add '{kind}': <path, URL or array>.")


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
