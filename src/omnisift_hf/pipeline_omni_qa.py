"""`pipeline("omni-qa")`: answer a question about a video (with its audio), an audio clip or an image with OmniSIFT.

Registered at `import omnisift_hf`. Each input is decoded with PyAV/soundfile (`omnisift_hf.media`), rendered through
the processor's chat template and processed on its own in `preprocess`; `_forward` pads a batch on the left and runs
one `generate()` per batch; `postprocess` decodes the answer and reports the kept-token counts (and, with
`return_audio=True` on a full Qwen2.5-Omni model, the spoken reply).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from contextlib import contextmanager, nullcontext

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
# Qwen2.5-Omni's token2wav writes mono 24 kHz waveforms (its config does not name the rate).
SPEECH_SAMPLING_RATE = 24_000
# Arguments of the full model's `generate` that the pipeline sets from its own call arguments.
_SPEECH_ARGUMENTS = {"generation_mode": "return_audio", "return_audio": "return_audio", "speaker": "speaker"}
# Prefixes of the full model's `generate` arguments that name the stage they go to.
_STAGE_PREFIXES = ("thinker_", "talker_", "token2wav_")


class OmniQAPipeline(Pipeline):
    """Answer questions about video (with its audio track), audio and images with an OmniSIFT model.

    ```python
    import omnisift_hf
    from transformers import pipeline

    pipe = pipeline("omni-qa", model="org/omnisift-qwen2.5-omni-7b", dtype="bfloat16", device="cuda")
    pipe(video="clip.mp4", question="What is the person doing?", keep_ratio=0.25)
    # {"answer": "...", "num_video_tokens": 2880, "num_kept_video_tokens": 596, "num_audio_tokens": 500, ...}
    pipe([{"video": "a.mp4", "question": "..."}, {"audio": "b.wav", "question": "..."}], batch_size=2)

    # The full Qwen2.5-Omni (`OmniSiftOmniForConditionalGeneration`, thinker + talker) also speaks its answer:
    pipe(video="clip.mp4", question="What is happening?", return_audio=True, speaker="Ethan")
    # {"answer": "...", ..., "audio": array([...], dtype=float32), "sampling_rate": 24000}
    ```

    Models: `OmniSiftForConditionalGeneration` (the Qwen2.5-Omni thinker, text replies),
    `OmniSiftOmniForConditionalGeneration` (the full Qwen2.5-Omni model) or `OmniSiftQwen3OmniForConditionalGeneration`
    (the Qwen3-Omni MoE thinker, text replies), each with its own processor (`Qwen2_5OmniProcessor` /
    `Qwen3OmniMoeProcessor`), which chooses the media policy (`media.media_policy_of`: frame size factor and pixel
    bounds, audio handling, default system turn). On the full model a call without `return_audio` runs its thinker
    only and answers as the thinker alone does.

    Inputs: keyword fields (`video=`, `audio=`, `image=`, `question=`), a dict with those keys, a list of dicts (a
    batch), or chat messages (`[{"role": "user", "content": [{"type": "video", "video": "clip.mp4"},
    {"type": "text", "text": "..."}]}]`). Media can be paths, http(s) URLs or arrays (`video_fps` / `sampling_rate`
    give the rate of array inputs).

    Call arguments: `keep_ratio`, `video_keep_ratio`, `audio_keep_ratio` (OmniSIFT knobs for this call; default: the
    model config's), `use_audio_in_video` (default: True for videos that have an audio track), `max_new_tokens`,
    `generate_kwargs` (or generation parameters such as `do_sample=True` directly), `system_prompt` (default: the
    Qwen2.5-Omni system prompt for Qwen2.5-Omni, no system turn for Qwen3-Omni), `video_sampling` (a
    `VideoSampling`, Qwen's 2 fps policy by default),
    `skip_special_tokens`. The default `video_sampling` is Qwen's with the frame-size bounds of the processor's video
    processor (`media.video_sampling_of`), so a checkpoint trained at another frame size is sampled as it was
    trained.

    Spoken replies (full model only): `return_audio=True`, and `speaker` (default: the model's, "Chelsie" for
    Qwen2.5-Omni). On the full model the generation parameters (`max_new_tokens`, `do_sample`, ...) are the
    thinker's, i.e. the text reply's; the talker's and token2wav's go in `generate_kwargs` with their prefix
    (`generate_kwargs={"talker_do_sample": False, "talker_max_new_tokens": 600}`). In a padded batch every spoken reply
    draws token2wav's noise from the random state of the batch's first one, so with a greedy thinker and talker a
    batch gives the waveforms of one-by-one calls each made after the same seed.

    Returns, per input, `{"answer": str, "num_video_tokens", "num_kept_video_tokens", "num_audio_tokens",
    "num_kept_audio_tokens", "prompt_tokens", "prefill_tokens"}`: media tokens before/after compression and the
    sequence length before/after it; with `return_audio=True` also `"audio"` (the spoken reply: a 1-D float32 numpy
    array, mono) and `"sampling_rate"` (24000).

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
                "omni-qa needs the model's processor (Qwen2.5-Omni or Qwen3-Omni): save one next to the model "
                "(`processor.save_pretrained`) or pass `processor=` to `pipeline()`."
            )
        # Any backbone: an OmniSIFT model is one with the public selection hook, or a full model whose `thinker` has
        # it (this module is saved as remote code next to a model and must not import the backbones).
        if _thinker_of(self.model) is None:
            raise ValueError(
                f"omni-qa runs OmniSIFT models, got a {type(self.model).__name__} (model_type="
                f"{getattr(self.model.config, 'model_type', None)!r}). For Qwen2.5-Omni weights load "
                "`OmniSiftForConditionalGeneration.from_pretrained(...)` (text replies) or "
                "`OmniSiftOmniForConditionalGeneration.from_pretrained(...)` (text and spoken replies), for "
                "Qwen3-Omni weights `OmniSiftQwen3OmniForConditionalGeneration.from_pretrained(...)`, and pass the "
                "model object to `pipeline()`."
            )
        _check_processor_fits(self.processor, _thinker_of(self.model))

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
        return_audio=None,
        speaker=None,
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
                "skip_special_tokens, return_audio, speaker, and generation parameters (do_sample, temperature, ...; "
                "the full model's talker_* / token2wav_* ones go in generate_kwargs)."
            )
        generate_kwargs.update(kwargs)
        for name, argument in _SPEECH_ARGUMENTS.items():
            if name in generate_kwargs:
                raise ValueError(
                    f"omni-qa: `{name}` in generate_kwargs is set by the pipeline; pass `{argument}=` as a call "
                    "argument instead."
                )
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
        forward.update(self._check_speech_arguments(return_audio, speaker))
        return preprocess, forward, postprocess

    def _check_speech_arguments(self, return_audio, speaker) -> dict:
        """`return_audio` and `speaker` of a call (on top of those given to `pipeline()`), checked against the model
        before any media is decoded or anything generated."""
        if return_audio is not None and not isinstance(return_audio, bool):
            raise TypeError(f"omni-qa: return_audio={return_audio!r} must be True or False.")
        if speaker is not None and not isinstance(speaker, str):
            raise TypeError(f"omni-qa: speaker={speaker!r} must be a speaker name (a string), e.g. 'Chelsie'.")
        defaults = getattr(self, "_forward_params", {})  # those given to `pipeline()`; absent while it runs
        speaks = defaults.get("return_audio", False) if return_audio is None else return_audio
        if speaker is not None and not speaks:
            raise ValueError(
                f"omni-qa: speaker={speaker!r} chooses the voice of a spoken reply; pass return_audio=True with it, "
                "or drop speaker."
            )
        model = self.model
        if speaks and _thinker_of(model) is not None:  # (`__init__` refuses other models once this returns)
            if _thinker_of(model) is model or not hasattr(model, "has_talker"):
                raise ValueError(
                    f"omni-qa: return_audio=True needs the full Qwen2.5-Omni model (thinker + talker), but this is a "
                    f"{type(model).__name__}, which replies in text only. Load "
                    "`OmniSiftOmniForConditionalGeneration.from_pretrained(...)` (a full Qwen2.5-Omni or OmniSIFT "
                    "checkpoint) and pass it to `pipeline()`, or drop return_audio."
                )
            if not model.has_talker:
                raise ValueError(
                    "omni-qa: return_audio=True, but this model's talker is disabled (loaded with "
                    "enable_audio_output=False, or `model.disable_talker()` was called). Load the model with "
                    "`from_pretrained(..., enable_audio_output=True)`, or drop return_audio for text replies."
                )
            speakers = getattr(model, "speaker_map", None) or {}
            if not speakers:
                raise ValueError(
                    "omni-qa: return_audio=True, but this model has no speakers loaded (its checkpoint has no "
                    "spk_dict.pt). Call `model.load_speakers(path_to_spk_dict_pt)`, or drop return_audio."
                )
            voice = speaker if speaker is not None else defaults.get("speaker")
            if voice is not None and voice not in speakers:
                raise ValueError(
                    f"omni-qa: speaker={voice!r} is not one of this model's speakers {sorted(speakers)}; pass one of "
                    "them, or leave speaker out for the model's default voice."
                )
        forward = {}
        if return_audio is not None:
            forward["return_audio"] = return_audio
        if speaker is not None:
            forward["speaker"] = speaker
        return forward

    def _get_set_generation_params(self, generate_kwargs: dict) -> dict:
        # Overwritten -- the answer is the thinker's: read the thinker's generation config (a full model's own one
        # is not what its thinker generates with), so that the full model answers as its thinker alone.
        params = _thinker_of(self.model).generation_config.to_diff_dict()
        if (generation_config := generate_kwargs.get("generation_config")) is not None:
            params.update(generation_config.to_diff_dict())
        return {**params, **generate_kwargs}

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
        # Its own generator: a DataLoader otherwise draws its workers' base seed from the global generator, and a list
        # would then sample (and speak) otherwise than the same request alone after the same seed.
        loader = DataLoader(
            dataset, num_workers=num_workers, batch_size=batch_size, collate_fn=list, generator=torch.Generator()
        )
        model_iterator = PipelineIterator(loader, self.forward, forward_params, loader_batch_size=batch_size)
        return PipelineIterator(model_iterator, self.postprocess, postprocess_params)

    def _forward(self, model_inputs, generate_kwargs=None, return_audio=False, speaker=None):
        samples = model_inputs if isinstance(model_inputs, list) else [model_inputs]
        # The counts come back with each generate() call (not from per-model state): safe when threads share a model.
        generate_kwargs = self._prepare_generate_kwargs(dict(generate_kwargs or {}), return_dict_in_generate=True)
        thinker = _thinker_of(self.model)
        if thinker is not self.model:  # the full model: its thinker answers, its talker speaks when asked to
            generate_kwargs = _full_model_kwargs(generate_kwargs, thinker, return_audio, speaker)
        results: list[dict | None] = [None] * len(samples)
        # Each spoken reply of the batch draws token2wav's noise from the same random state, as it would alone.
        token2wav = getattr(self.model, "token2wav", None) if return_audio else None
        with _same_noise_per_reply(token2wav) if token2wav is not None else nullcontext():
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
                    if return_audio:
                        result["audio"] = outputs.audio[row].detach().reshape(-1).float().cpu()
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
        if "audio" in model_outputs:
            result["audio"] = torch.as_tensor(first(model_outputs["audio"])).reshape(-1).float().numpy()
            result["sampling_rate"] = SPEECH_SAMPLING_RATE
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


def _check_processor_fits(processor, thinker) -> None:
    """Refuse a processor of another backbone (a Qwen2.5-Omni processor for a Qwen3-Omni model or the reverse): its
    patches would not fit the vision encoder, and its audio and video placeholders would be laid out for the other
    model's position ids."""
    vision = getattr(thinker.config, "vision_config", None)
    model_patch = getattr(vision, "patch_size", None)
    processor_patch = getattr(getattr(processor, "video_processor", None), "patch_size", None)
    if model_patch is not None and processor_patch is not None and model_patch != processor_patch:
        raise ValueError(
            f"omni-qa: the processor ({type(processor).__name__}, {processor_patch}-pixel patches) does not fit the "
            f"model ({type(thinker).__name__}, {model_patch}-pixel patches). Pass the model's own processor "
            "(`AutoProcessor.from_pretrained` on its checkpoint: Qwen2_5OmniProcessor for Qwen2.5-Omni, "
            "Qwen3OmniMoeProcessor for Qwen3-Omni)."
        )


def _thinker_of(model):
    """The OmniSIFT thinker that answers: `model` itself (a thinker), the `thinker` of a full model, or `None`."""
    if callable(getattr(model, "select_tokens", None)):
        return model
    thinker = getattr(model, "thinker", None)
    return thinker if callable(getattr(thinker, "select_tokens", None)) else None


def _full_model_kwargs(generate_kwargs: dict, thinker, return_audio: bool, speaker: str | None) -> dict:
    """The pipeline's generation parameters as the full model's `generate` takes them: unprefixed ones are the
    thinker's (`max_new_tokens` -> `thinker_max_new_tokens`: unprefixed, the full model would hand it to the talker
    too), `thinker_*` / `talker_*` / `token2wav_*` ones as given (an explicit `thinker_*` one wins over its
    unprefixed twin, which may be the pipeline's default); a text reply runs the thinker only."""
    kwargs = {f"thinker_{key}": value for key, value in generate_kwargs.items() if not key.startswith(_STAGE_PREFIXES)}
    kwargs.update({key: value for key, value in generate_kwargs.items() if key.startswith(_STAGE_PREFIXES)})
    if "thinker_max_new_tokens" not in kwargs:  # else the full model's default (1024), not the thinker's own
        config = kwargs.get("thinker_generation_config") or thinker.generation_config
        kwargs["thinker_max_new_tokens"] = config.max_new_tokens
    kwargs["generation_mode"] = "audio" if return_audio else "text"
    if speaker is not None:
        kwargs["speaker"] = speaker
    return kwargs


@contextmanager
def _same_noise_per_reply(token2wav):
    """While active, every call of `token2wav` in this thread starts from the random state (CPU and the codes'
    device) of the first one: token2wav draws its initial noise from the global generators, so without this the
    second reply of a batch would get other noise than it gets alone after the same seed."""
    thread, saved = threading.get_ident(), []

    def restore(module, args, kwargs):
        if threading.get_ident() != thread:  # another thread's call of a shared model
            return
        code = args[0] if args else kwargs.get("code")
        device_module = None
        if torch.is_tensor(code) and code.device.type != "cpu":
            device_module = getattr(torch, code.device.type, None)
            if not callable(getattr(device_module, "get_rng_state", None)):
                device_module = None
        if not saved:
            state = device_module.get_rng_state(code.device) if device_module is not None else None
            saved.append((torch.get_rng_state(), state))
            return
        cpu_state, device_state = saved[0]
        torch.set_rng_state(cpu_state)
        if device_module is not None and device_state is not None:
            device_module.set_rng_state(device_state, code.device)

    handle = token2wav.register_forward_pre_hook(restore, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def _kept_counts(outputs, batch_size: int) -> dict[str, torch.Tensor]:
    """Kept-token counts of one `generate(..., return_dict_in_generate=True)` call; zeros when the batch had no
    audio/video."""
    counts = {}
    for name in _COUNT_KEYS:
        value = outputs.get(name)
        counts[name] = value.cpu() if value is not None else torch.zeros(batch_size, dtype=torch.long)
    return counts
