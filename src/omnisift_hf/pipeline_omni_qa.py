"""`pipeline("omni-qa")`: answer a question about a video (with its audio), an audio clip or an image with OmniSIFT.

Registered at `import omnisift_hf`. Each input is decoded with PyAV/soundfile (`omnisift_hf.media`), rendered through
the processor's chat template and processed on its own in `preprocess`; `_forward` pads a batch on the left and runs
one `generate()` per batch; `postprocess` decodes the answer and reports the kept-token counts.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.utils.data import DataLoader
from transformers import GenerationConfig, Pipeline
from transformers.pipelines.base import PipelineDataset
from transformers.pipelines.pt_utils import PipelineIterator
from transformers.utils import logging
from transformers.utils.chat_template_utils import Chat

from .media import SAMPLING_RATE, VideoSampling, load_audio, load_image, load_video, video_sampling_of

logger = logging.get_logger(__name__)

__all__ = ["DEFAULT_SYSTEM_PROMPT", "OmniQAPipeline", "collate_omni_inputs", "prepare_omni_inputs", "to_model_inputs"]

# Keys of the dict form (and keyword form) of one request.
INPUT_KEYS = ("question", "video", "audio", "image", "messages", "video_fps", "sampling_rate")
_MEDIA_TYPES = ("video", "audio", "image")
# Qwen2.5-Omni's recommended system prompt (the model was trained with it); the pipeline's default.
DEFAULT_SYSTEM_PROMPT = (
    "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving auditory and "
    "visual inputs, as well as generating text and speech."
)
# Whisper's FFT window: padding an audio item with at least this many zero samples makes its features independent of
# how much more padding follows (the same as the processor's 300 s padding, far faster).
_AUDIO_PAD_SAMPLES = 400


class OmniQAPipeline(Pipeline):
    """Answer questions about video (with its audio track), audio and images with an OmniSIFT model.

    ```python
    import omnisift_hf
    from transformers import pipeline

    pipe = pipeline("omni-qa", model="org/omnisift-qwen2.5-omni-7b", dtype="bfloat16", device="cuda")
    pipe(video="clip.mp4", question="What is the person doing?", keep_ratio=0.25)
    # {"answer": "...", "num_video_tokens": 2880, "num_kept_video_tokens": 596, "num_audio_tokens": 500, ...}
    pipe([{"video": "a.mp4", "question": "..."}, {"audio": "b.wav", "question": "..."}], batch_size=2)
    ```

    Inputs: keyword fields (`video=`, `audio=`, `image=`, `question=`), a dict with those keys, a list of dicts (a
    batch), or chat messages (`[{"role": "user", "content": [{"type": "video", "video": "clip.mp4"},
    {"type": "text", "text": "..."}]}]`). Media can be paths, http(s) URLs or arrays (`video_fps` / `sampling_rate`
    give the rate of array inputs).

    Call arguments: `keep_ratio`, `video_keep_ratio`, `audio_keep_ratio` (OmniSIFT knobs for this call; default: the
    model config's), `use_audio_in_video` (default: True for videos that have an audio track), `max_new_tokens`,
    `generate_kwargs` (or generation parameters such as `do_sample=True` directly), `system_prompt` (default: the
    Qwen2.5-Omni system prompt), `video_sampling` (a `VideoSampling`, Qwen's 2 fps policy by default),
    `skip_special_tokens`. The default `video_sampling` is Qwen's with the frame-size bounds of the processor's video
    processor (`media.video_sampling_of`), so a checkpoint trained at another frame size is sampled as it was
    trained.

    Returns, per input, `{"answer": str, "num_video_tokens", "num_kept_video_tokens", "num_audio_tokens",
    "num_kept_audio_tokens", "prompt_tokens", "prefill_tokens"}`: media tokens before/after compression and the
    sequence length before/after it.
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False
    _pipeline_calls_generate = True
    _default_generation_config = GenerationConfig(max_new_tokens=256)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.processor is None:
            raise ValueError(
                "omni-qa needs a Qwen2.5-Omni processor: save one next to the model (`processor.save_pretrained`) or "
                "pass `processor=` to `pipeline()`."
            )
        if getattr(self.model.config, "model_type", None) != "omnisift":
            raise ValueError(
                f"omni-qa runs OmniSIFT models, got a {type(self.model).__name__} (model_type="
                f"{getattr(self.model.config, 'model_type', None)!r}). For Qwen2.5-Omni weights load "
                "`OmniSiftForConditionalGeneration.from_pretrained(...)` and pass the model object to `pipeline()`."
            )

    # ------------------------------------------------------------------------------------------------------------------
    # Arguments
    # ------------------------------------------------------------------------------------------------------------------
    def __call__(self, inputs=None, **kwargs):
        """Answer one request (keyword fields, a dict, a question string plus media keywords, chat messages) or a
        list of them; see the class docstring."""
        fields = {key: kwargs.pop(key) for key in INPUT_KEYS if key in kwargs}
        if isinstance(inputs, str):
            if "question" in fields:
                raise ValueError("omni-qa: the question was given twice (positionally and as `question=`).")
            inputs, fields["question"] = None, inputs
        if fields:
            if inputs is not None:
                raise ValueError(
                    f"omni-qa: got both an input ({type(inputs).__name__}) and the fields {sorted(fields)}; pass one "
                    "request as keyword fields or as a dict, not both."
                )
            inputs = fields
        if inputs is None:
            raise ValueError("omni-qa: nothing to answer. Pass e.g. `pipe(video='clip.mp4', question='...')`.")
        if isinstance(inputs, (list, tuple)) and len(inputs) == 0:
            return []
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(
        self,
        keep_ratio=None,
        video_keep_ratio=None,
        audio_keep_ratio=None,
        use_audio_in_video=None,
        max_new_tokens=None,
        generate_kwargs=None,
        system_prompt=None,
        video_sampling=None,
        skip_special_tokens=None,
        **kwargs,
    ):
        preprocess, forward, postprocess = {}, {}, {}
        if use_audio_in_video is not None:
            preprocess["use_audio_in_video"] = bool(use_audio_in_video)
        if system_prompt is not None:
            preprocess["system_prompt"] = system_prompt
        if video_sampling is not None:
            if isinstance(video_sampling, Mapping):
                video_sampling = VideoSampling(**video_sampling)
            if not isinstance(video_sampling, VideoSampling):
                raise TypeError(f"omni-qa: video_sampling={video_sampling!r} must be a VideoSampling or a dict.")
            preprocess["video_sampling"] = video_sampling

        generate_kwargs = dict(generate_kwargs or {})
        generation_keys = {key for key in vars(GenerationConfig()) if not key.startswith("_")}
        unknown = sorted(set(kwargs) - generation_keys)
        if unknown:
            raise TypeError(
                f"omni-qa: unknown argument(s) {unknown}. Known: keep_ratio, video_keep_ratio, audio_keep_ratio, "
                "use_audio_in_video, max_new_tokens, generate_kwargs, system_prompt, video_sampling, "
                "skip_special_tokens, and generation parameters (do_sample, temperature, ...)."
            )
        generate_kwargs.update(kwargs)
        if max_new_tokens is not None:
            if "max_new_tokens" in generate_kwargs:
                raise ValueError("omni-qa: `max_new_tokens` was given both directly and in `generate_kwargs`.")
            generate_kwargs["max_new_tokens"] = max_new_tokens
        for name, value in (
            ("keep_ratio", keep_ratio),
            ("video_keep_ratio", video_keep_ratio),
            ("audio_keep_ratio", audio_keep_ratio),
        ):
            if value is not None:
                generate_kwargs[name] = value
        if generate_kwargs:
            forward["generate_kwargs"] = generate_kwargs
        if skip_special_tokens is not None:
            postprocess["skip_special_tokens"] = skip_special_tokens
        return preprocess, forward, postprocess

    # ------------------------------------------------------------------------------------------------------------------
    # Preprocess: one request -> processor outputs
    # ------------------------------------------------------------------------------------------------------------------
    def preprocess(self, inputs, use_audio_in_video=None, system_prompt=None, video_sampling=None):
        return prepare_omni_inputs(self.processor, inputs, use_audio_in_video, system_prompt, video_sampling)

    # ------------------------------------------------------------------------------------------------------------------
    # Batching and generation
    # ------------------------------------------------------------------------------------------------------------------
    def get_iterator(
        self, inputs, num_workers: int, batch_size: int, preprocess_params, forward_params, postprocess_params
    ):
        # As the base class, but with a collate function that knows Qwen2.5-Omni's inputs (variable numbers of
        # patches and audio frames per sample) instead of the generic tensor padding.
        if isinstance(inputs, (list, tuple)):
            dataset = PipelineDataset(inputs, self.preprocess, preprocess_params)
        else:
            dataset = PipelineIterator(inputs, self.preprocess, preprocess_params)
            num_workers = min(num_workers, 1)
        loader = DataLoader(dataset, num_workers=num_workers, batch_size=batch_size, collate_fn=list)
        model_iterator = PipelineIterator(loader, self.forward, forward_params, loader_batch_size=batch_size)
        return PipelineIterator(model_iterator, self.postprocess, postprocess_params)

    def _forward(self, model_inputs, generate_kwargs=None):
        samples = model_inputs if isinstance(model_inputs, list) else [model_inputs]
        generate_kwargs = self._prepare_generate_kwargs(dict(generate_kwargs or {}), return_dict_in_generate=False)
        results: list[dict | None] = [None] * len(samples)
        # Videos with and without interleaved audio need different position ids: one generate() per kind.
        for use_audio_in_video, indices in _group_by_audio_in_video(samples).items():
            batch = collate_omni_inputs([samples[i] for i in indices], self.processor.tokenizer.pad_token_id)
            batch = to_model_inputs(batch, self.model, self.device)
            self.model.compression_stats = None
            sequences = self.model.generate(**batch, use_audio_in_video=use_audio_in_video, **generate_kwargs)
            prompt_length = batch["input_ids"].shape[1]
            counts = _kept_counts(self.model.compression_stats, batch["input_ids"].shape[0])
            for row, index in enumerate(indices):
                result = {name: value[row] for name, value in counts.items()}
                result["generated"] = sequences[row, prompt_length:].cpu()
                result["prompt_tokens"] = batch["attention_mask"][row].sum().cpu()
                results[index] = result
        return {key: [result[key] for result in results] for key in results[0]}

    def postprocess(self, model_outputs, skip_special_tokens=True):
        def first(value):
            while isinstance(value, (list, tuple)):
                value = value[0]
            return value

        generated = torch.as_tensor(first(model_outputs["generated"])).reshape(-1)
        answer = self.processor.tokenizer.decode(generated, skip_special_tokens=skip_special_tokens)
        result = {"answer": answer.strip()}
        for name in ("num_video_tokens", "num_kept_video_tokens", "num_audio_tokens", "num_kept_audio_tokens"):
            result[name] = int(torch.as_tensor(first(model_outputs[name])).reshape(-1)[0])
        result["prompt_tokens"] = int(torch.as_tensor(first(model_outputs["prompt_tokens"])).reshape(-1)[0])
        dropped = (
            result["num_video_tokens"]
            - result["num_kept_video_tokens"]
            + result["num_audio_tokens"]
            - result["num_kept_audio_tokens"]
        )
        result["prefill_tokens"] = result["prompt_tokens"] - dropped
        return result

    def save_pretrained(self, save_directory, **kwargs):
        """Save the model (with `custom_pipelines` in its config and this pipeline's code) and the whole processor, so
        that `pipeline(model=save_directory, trust_remote_code=True)` rebuilds this pipeline."""
        super().save_pretrained(save_directory, **kwargs)
        self.processor.save_pretrained(save_directory)


# ----------------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------------
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
        if any(inputs.get(key) is not None for key in ("question", *_MEDIA_TYPES)):
            raise ValueError("omni-qa: pass either `messages` or `question` with media, not both.")
        return _check_messages(list(inputs["messages"])), rates
    question = inputs.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"omni-qa: question={question!r}; pass a non-empty question string.")
    content = []
    for kind in _MEDIA_TYPES:
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
    kind = item.get("type") or next((k for k in ("text", *_MEDIA_TYPES) if k in item), None)
    if kind == "image_url":
        kind = "image"
    if kind not in ("text", *_MEDIA_TYPES):
        raise ValueError(f"omni-qa: content item of type {kind!r} is not supported; use text, video, audio or image.")
    return kind


def _item_source(item: Mapping, kind: str):
    for key in (kind, "path", "url", f"{kind}_url"):
        if item.get(key) is not None:
            return item[key]
    raise ValueError(f"omni-qa: the {kind} item {dict(item)!r} has no source; add '{kind}': <path, URL or array>.")


def _group_by_audio_in_video(samples: list[dict]) -> dict[bool, list[int]]:
    """Indices of the samples per value of `use_audio_in_video` (samples without video join either group)."""
    flags = [sample.get("use_audio_in_video") for sample in samples]
    groups: dict[bool, list[int]] = {}
    default = True if True in flags else False
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


def _kept_counts(stats, batch_size: int) -> dict[str, torch.Tensor]:
    """Kept-token counts of the latest prefill (`model.compression_stats`); zeros when the batch had no audio/video."""
    counts = {}
    for name in ("num_video_tokens", "num_kept_video_tokens", "num_audio_tokens", "num_kept_audio_tokens"):
        value = getattr(stats, name, None) if stats is not None else None
        counts[name] = value.cpu() if value is not None else torch.zeros(batch_size, dtype=torch.long)
    return counts
