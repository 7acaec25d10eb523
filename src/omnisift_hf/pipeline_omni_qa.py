"""`pipeline("omni-qa")`: answer a question about a video (with its audio), an audio clip or an image with OmniSIFT.

Registered at `import omnisift_hf`. Each input is decoded with PyAV/soundfile (`omnisift_hf.media`), rendered through
the processor's chat template and processed on its own in `preprocess`; `_forward` pads a batch on the left and runs
one `generate()` per batch; `postprocess` decodes the answer and reports the kept-token counts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch
from torch.utils.data import DataLoader
from transformers import GenerationConfig, Pipeline
from transformers.pipelines.base import PipelineDataset
from transformers.pipelines.pt_utils import PipelineIterator
from transformers.utils import logging
from transformers.utils.chat_template_utils import Chat

from .compression import check_keep_ratio
from .media import VideoSampling
from .processing_omnisift import (
    INPUT_KEYS,
    check_omni_request,
    check_request_options,
    collate_omni_inputs,
    group_by_audio_in_video,
    prepare_omni_inputs,
    to_model_inputs,
)

logger = logging.get_logger(__name__)

__all__ = ["OmniQAPipeline"]

# The media-token counts of `model.compression_stats` that every answer reports.
_COUNT_KEYS = ("num_video_tokens", "num_kept_video_tokens", "num_audio_tokens", "num_kept_audio_tokens")


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

    Every call argument and every request of a list is checked before any media is decoded (`check_omni_request`,
    `media.check_source`); bad input raises `TypeError` / `ValueError` / `FileNotFoundError` naming the argument, the
    value and the fix. Legal but degraded input (an audio clip too short for one audio token, a truncated video file)
    warns once.
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
        # Any backbone: an OmniSIFT model is one with the public selection hook (this module is saved as remote code
        # next to a model and must not import the backbones).
        if not callable(getattr(self.model, "select_tokens", None)):
            raise ValueError(
                f"omni-qa runs OmniSIFT models, got a {type(self.model).__name__} (model_type="
                f"{getattr(self.model.config, 'model_type', None)!r}). For Qwen2.5-Omni weights load "
                "`OmniSiftForConditionalGeneration.from_pretrained(...)` and pass the model object to `pipeline()`."
            )

    # -----------------------------------------------------------------------------------------------------------------
    # Arguments
    # -----------------------------------------------------------------------------------------------------------------
    def __call__(self, inputs=None, **kwargs):
        """Answer one request (keyword fields, a dict, a question string plus media keywords, chat messages) or a
        list of them; see the class docstring. Every request of a list and every argument is checked before any media
        is decoded."""
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
        for name, value, low in (
            ("batch_size", kwargs.get("batch_size", self._batch_size), 1),
            ("num_workers", kwargs.get("num_workers", self._num_workers), 0),
        ):
            if value is not None:
                _check_count(name, value, low)
        # A list of chat messages is one request; any other list is a batch of requests (as the base class reads it).
        # Generators and datasets stream: their requests are checked one by one in `preprocess`.
        batch = isinstance(inputs, list) and not (
            isinstance(inputs[0], Mapping) and {"role", "content"} <= set(inputs[0])
        )
        streamed = not isinstance(inputs, (Mapping, list, tuple, Chat))
        for request in [] if streamed else inputs if batch else [inputs]:
            messages = check_omni_request(request)
            if kwargs.get("system_prompt") is not None and messages[0]["role"] == "system":
                raise ValueError(
                    f"omni-qa: system_prompt={kwargs['system_prompt']!r} was passed, but a request has its own system "
                    "turn. Keep one of them."
                )
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
        if isinstance(video_sampling, Mapping):
            known = [field.name for field in dataclasses.fields(VideoSampling)]
            unknown = sorted(set(video_sampling) - set(known), key=str)
            if unknown:
                raise TypeError(f"omni-qa: video_sampling has unknown field(s) {unknown}; known: {known}.")
            video_sampling = VideoSampling(**video_sampling)
        check_request_options(use_audio_in_video, system_prompt, video_sampling)
        if use_audio_in_video is not None:
            preprocess["use_audio_in_video"] = use_audio_in_video
        if system_prompt is not None:
            preprocess["system_prompt"] = system_prompt
        if video_sampling is not None:
            preprocess["video_sampling"] = video_sampling

        if generate_kwargs is not None and not isinstance(generate_kwargs, Mapping):
            raise TypeError(
                f"omni-qa: generate_kwargs={generate_kwargs!r} must be a dict of generation parameters, e.g. "
                "{'do_sample': True}."
            )
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
        for name, value in (
            ("max_new_tokens", max_new_tokens),
            ("keep_ratio", keep_ratio),
            ("video_keep_ratio", video_keep_ratio),
            ("audio_keep_ratio", audio_keep_ratio),
        ):
            if value is not None:
                if name in generate_kwargs:
                    raise ValueError(f"omni-qa: `{name}` was given both directly and in `generate_kwargs`.")
                generate_kwargs[name] = value
        for name in ("keep_ratio", "video_keep_ratio", "audio_keep_ratio"):
            check_keep_ratio(name, generate_kwargs.get(name))
        if generate_kwargs.get("max_new_tokens") is not None:
            _check_count("max_new_tokens", generate_kwargs["max_new_tokens"], 1)
        if generate_kwargs:
            forward["generate_kwargs"] = generate_kwargs
        if skip_special_tokens is not None:
            if not isinstance(skip_special_tokens, bool):
                raise TypeError(f"omni-qa: skip_special_tokens={skip_special_tokens!r} must be True or False.")
            postprocess["skip_special_tokens"] = skip_special_tokens
        return preprocess, forward, postprocess

    # -----------------------------------------------------------------------------------------------------------------
    # Preprocess: one request -> processor outputs
    # -----------------------------------------------------------------------------------------------------------------
    def preprocess(self, inputs, use_audio_in_video=None, system_prompt=None, video_sampling=None):
        return prepare_omni_inputs(self.processor, inputs, use_audio_in_video, system_prompt, video_sampling)

    # -----------------------------------------------------------------------------------------------------------------
    # Batching and generation
    # -----------------------------------------------------------------------------------------------------------------
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
        # The counts come back with each generate() call (not from per-model state): safe when threads share a model.
        generate_kwargs = self._prepare_generate_kwargs(dict(generate_kwargs or {}), return_dict_in_generate=True)
        results: list[dict | None] = [None] * len(samples)
        # Videos with and without interleaved audio need different position ids: one generate() per kind.
        for use_audio_in_video, indices in group_by_audio_in_video(samples).items():
            batch = collate_omni_inputs([samples[i] for i in indices], self.processor.tokenizer.pad_token_id)
            batch = to_model_inputs(batch, self.model, self.device)
            outputs = self.model.generate(**batch, use_audio_in_video=use_audio_in_video, **generate_kwargs)
            prompt_length = batch["input_ids"].shape[1]
            counts = _kept_counts(outputs, batch["input_ids"].shape[0])
            for row, index in enumerate(indices):
                result = {name: value[row] for name, value in counts.items()}
                result["generated"] = outputs.sequences[row, prompt_length:].cpu()
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
        for name in _COUNT_KEYS:
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


# ---------------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------------
def _check_count(name: str, value, low: int) -> None:
    """A call argument that counts something (`batch_size`, `num_workers`, `max_new_tokens`): an int >= `low`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"omni-qa: {name}={value!r} must be an integer >= {low}, got {type(value).__name__}.")
    if value < low:
        raise ValueError(f"omni-qa: {name}={value!r} must be an integer >= {low}.")


def _kept_counts(outputs, batch_size: int) -> dict[str, torch.Tensor]:
    """Kept-token counts of one `generate(..., return_dict_in_generate=True)` call; zeros when the batch had no
    audio/video."""
    counts = {}
    for name in _COUNT_KEYS:
        value = outputs.get(name)
        counts[name] = value.cpu() if value is not None else torch.zeros(batch_size, dtype=torch.long)
    return counts
