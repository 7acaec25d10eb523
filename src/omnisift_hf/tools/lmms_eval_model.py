"""`--model omnisift` for lmms-eval (0.7.3): OmniSIFT through `pipeline("omni-qa")`, a video's own audio included.

Registered through the `lmms_eval.models` entry point (`omnisift_lmms_eval:manifest`), so after `pip install -e
".[eval]"`::

    python -m lmms_eval --model omnisift \
        --model_args pretrained=org/omnisift-qwen2.5-omni-7b,keep_ratio=0.25,dtype=bfloat16,device=cuda \
        --tasks videomme --batch_size 4 --log_samples --output_path results/

Differences from lmms-eval's own `qwen2_5_omni` wrapper, each on purpose:

- model and processor load from `pretrained` (a local directory or a Hub id; `processor=` when it has none), the
  thinker only (no talker); inputs go to `device`, whatever it is (`cpu` works);
- every request is its own conversation; a batch is `batch_size` requests padded on the left and answered by one
  `generate()` (the pipeline's batching, which answers as one-by-one calls do);
- a video's audio track is fed with it (`use_audio_in_video` per request, from the file, as the pipeline decides:
  `use_audio_in_video=false` turns it off); frames are sampled by Qwen's 2 fps policy (`fps`, `max_frames`,
  `min_pixels`, `max_pixels`, `total_pixels` change it);
- a generation that fails raises (naming the documents) instead of being scored as an empty answer;
- kept-token counts are reported per sample (`token_counts` of the logged samples, with `--log_samples`:
  `input_tokens` = the prefill length the language model saw after compression, `output_tokens`, `prompt_tokens`
  before compression, `num_video_tokens` / `num_kept_video_tokens` / `num_audio_tokens` / `num_kept_audio_tokens`)
  and in the run's results (`efficiency`, built by lmms-eval from those, and `throughput` with the averages of the
  counts and the retention);
- a misspelt or invalid model argument is an error naming it.

Plain Qwen2.5-Omni weights (full model or thinker, e.g. `pretrained=Qwen/Qwen2.5-Omni-7B`) load into the OmniSIFT
thinker; at `keep_ratio=1.0` that is exactly Qwen2.5-Omni.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from lmms_eval.api.instance import GenerationResult, Instance, TokenCounts
from lmms_eval.api.model import lmms
from lmms_eval.models.model_utils.gen_metrics import log_metrics
from loguru import logger as eval_logger
from PIL import Image
from tqdm import tqdm
from transformers import AutoConfig, AutoProcessor, GenerationConfig, pipeline

import omnisift_hf  # noqa: F401  (registers "omnisift" with the Auto classes and the "omni-qa" task)
from omnisift_hf.compression import check_keep_ratio
from omnisift_hf.media import VideoSampling, video_sampling_of
from omnisift_hf.models.qwen2_5_omni import OmniSiftForConditionalGeneration, OmniSiftOmniForConditionalGeneration

__all__ = ["OmniSift", "OmniSiftTokenCounts"]

_AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".wma")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_DTYPES = ("auto", "float32", "float16", "bfloat16")
_SAMPLING_ARGS = ("fps", "min_frames", "max_frames", "min_pixels", "max_pixels", "total_pixels")
# Keys of a task's `generation_kwargs` that are not generation parameters: `until` is applied to the answer here,
# the others are lmms-eval's own.
_LMMS_GEN_KEYS = ("until", "image_aspect_ratio")
# AV-Odyssey's prompts mark where each media item goes: "<media_0>", "<media_1>", ...
_MEDIA_TAG = re.compile(r"<media_(\d+)>")


class OmniSiftTokenCounts(TokenCounts):
    """lmms-eval's `TokenCounts` plus the media-token counts of one answer; `to_dict` (what lmms-eval logs per sample)
    carries them all. `input_tokens` is the prefill length after compression (`prefill_tokens`): lmms-eval's
    `efficiency.total_input_tokens` is then the tokens the language model actually read."""

    def __init__(self, result: Mapping, output_tokens: int):
        super().__init__(input_tokens=int(result["prefill_tokens"]), output_tokens=int(output_tokens))
        self.prompt_tokens = int(result["prompt_tokens"])
        self.num_video_tokens = int(result["num_video_tokens"])
        self.num_kept_video_tokens = int(result["num_kept_video_tokens"])
        self.num_audio_tokens = int(result["num_audio_tokens"])
        self.num_kept_audio_tokens = int(result["num_kept_audio_tokens"])

    def to_dict(self) -> dict:
        return {
            **super().to_dict(),
            "prompt_tokens": self.prompt_tokens,
            "num_video_tokens": self.num_video_tokens,
            "num_kept_video_tokens": self.num_kept_video_tokens,
            "num_audio_tokens": self.num_audio_tokens,
            "num_kept_audio_tokens": self.num_kept_audio_tokens,
        }


class OmniSift(lmms):
    """OmniSIFT (or plain Qwen2.5-Omni at `keep_ratio=1.0`) for lmms-eval; see the module docstring.

    Model arguments (`--model_args key=value,...`):
        pretrained (required): OmniSIFT or Qwen2.5-Omni checkpoint, a local directory or a Hub id.
        processor: where the processor is, when not next to the weights (default: `pretrained`).
        keep_ratio, video_keep_ratio, audio_keep_ratio: OmniSIFT's keep fractions in (0, 1] (default: the
            checkpoint config's).
        system_prompt: the system turn (default: Qwen2.5-Omni's own; `""` for an empty one). A path to a text
            file is read, as lmms-eval's other models do.
        dtype: auto, float32, float16 or bfloat16 (default auto: the checkpoint's).
        device: cpu, cuda, cuda:1, ... (default: cuda when available, else cpu).
        max_new_tokens: overrides the task's `max_new_tokens` (default: the task's, else 256).
        batch_size: requests per padded batch (lmms-eval's `--batch_size` sets it too).
        use_audio_in_video: true/false; default: a video's audio is used when the file has an audio track.
        fps, min_frames, max_frames, min_pixels, max_pixels, total_pixels: frame sampling (default: Qwen's policy,
            2 fps, with the frame-size bounds of the processor).
        attn_implementation: passed to `from_pretrained` (e.g. sdpa, flash_attention_2).
    """

    is_simple = True

    def __init__(
        self,
        pretrained: str | None = None,
        processor: str | None = None,
        keep_ratio: float | None = None,
        video_keep_ratio: float | None = None,
        audio_keep_ratio: float | None = None,
        system_prompt: str | None = None,
        dtype: str = "auto",
        device: str | None = None,
        max_new_tokens: int | None = None,
        batch_size: int | str = 1,
        max_batch_size: int | None = None,
        use_audio_in_video: bool | None = None,
        attn_implementation: str | None = None,
        fps: float | None = None,
        min_frames: int | None = None,
        max_frames: int | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        total_pixels: float | None = None,
        **unknown,
    ) -> None:
        super().__init__()
        if unknown:
            raise TypeError(
                f"omnisift: unknown model_args {sorted(unknown)}. Known: pretrained, processor, keep_ratio, "
                "video_keep_ratio, audio_keep_ratio, system_prompt, dtype, device, max_new_tokens, batch_size, "
                f"use_audio_in_video, attn_implementation, {', '.join(_SAMPLING_ARGS)}."
            )
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise NotImplementedError(
                "omnisift: runs in one process (one device); launch lmms-eval without accelerate/torchrun data "
                "parallelism, or one run per shard of the task (--limit / separate tasks)."
            )
        if not isinstance(pretrained, str) or not pretrained:
            raise ValueError(
                f"omnisift: pretrained={pretrained!r}; pass --model_args pretrained=<checkpoint directory or Hub id>, "
                "e.g. pretrained=Qwen/Qwen2.5-Omni-7B."
            )
        if processor is not None and (not isinstance(processor, str) or not processor):
            raise ValueError(f"omnisift: processor={processor!r} must be a directory or Hub id.")
        self._ratios = {}
        for name, value in (
            ("keep_ratio", keep_ratio),
            ("video_keep_ratio", video_keep_ratio),
            ("audio_keep_ratio", audio_keep_ratio),
        ):
            try:
                value = check_keep_ratio(name, value)
            except (TypeError, ValueError) as error:
                raise type(error)(f"omnisift: model_args {name}={value!r}: {error}") from None
            if value is not None:
                self._ratios[name] = value
        if system_prompt is not None:
            system_prompt = self._resolve_system_prompt(str(system_prompt))
        self.system_prompt = system_prompt
        if dtype not in _DTYPES:
            raise ValueError(f"omnisift: model_args dtype={dtype!r}; use one of {list(_DTYPES)}.")
        self._max_new_tokens = _whole("max_new_tokens", max_new_tokens, 1)
        self.batch_size_per_gpu = _whole("batch_size", batch_size, 1)
        if max_batch_size is not None:
            _whole("max_batch_size", max_batch_size, 1)
        if use_audio_in_video is not None and not isinstance(use_audio_in_video, bool):
            raise TypeError(f"omnisift: model_args use_audio_in_video={use_audio_in_video!r}; use true or false.")
        self._use_audio_in_video = use_audio_in_video
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self._device = torch.device(device)
        except (RuntimeError, TypeError) as error:
            raise ValueError(f"omnisift: model_args device={device!r} is not a torch device: {error}") from None
        if self._device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"omnisift: model_args device={device!r}, but CUDA is not available; use device=cpu.")

        self._model = self._load_model(pretrained, dtype, attn_implementation)
        try:
            self.processor = AutoProcessor.from_pretrained(processor or pretrained)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"omnisift: no Qwen2.5-Omni processor at {processor or pretrained!r} ({error}); pass "
                "processor=<directory or Hub id>, e.g. processor=Qwen/Qwen2.5-Omni-7B."
            ) from error
        sampling = {name: value for name, value in zip(_SAMPLING_ARGS, (fps, min_frames, max_frames, min_pixels,
                    max_pixels, total_pixels), strict=True) if value is not None}  # fmt: skip
        try:
            self._video_sampling = VideoSampling(**{**vars(video_sampling_of(self.processor)), **sampling})
        except (TypeError, ValueError) as error:
            raise type(error)(f"omnisift: model_args {sampling}: {error}") from None
        self._pipe = pipeline("omni-qa", model=self._model, processor=self.processor, device=self._device)
        self._pipe.postprocess = _counting_postprocess(self._pipe, self._model)
        self._tokenizer = self.processor.tokenizer
        self._config = self._model.config
        self._rank, self._world_size = 0, 1
        self._warned_no_media = False

    # ---------------------------------------------------------------------------------------------------------------
    # Loading
    # ---------------------------------------------------------------------------------------------------------------
    def _load_model(self, pretrained: str, dtype: str, attn_implementation: str | None):
        try:
            config = AutoConfig.from_pretrained(pretrained)
        except (OSError, ValueError) as error:
            raise ValueError(f"omnisift: cannot read a model config at pretrained={pretrained!r}: {error}") from error
        kwargs = {"dtype": dtype}
        if attn_implementation is not None:
            kwargs["attn_implementation"] = attn_implementation
        model_type = getattr(config, "model_type", None)
        if model_type == "omnisift_omni":  # a saved full OmniSIFT model: its thinker answers, no talker loaded
            model = OmniSiftOmniForConditionalGeneration.from_pretrained(
                pretrained, enable_audio_output=False, **kwargs
            )
        elif model_type in ("omnisift", "qwen2_5_omni", "qwen2_5_omni_thinker"):
            # The thinker alone, also from a full Qwen2.5-Omni checkpoint (its talker weights are not loaded).
            model = OmniSiftForConditionalGeneration.from_pretrained(pretrained, **kwargs)
        else:
            raise ValueError(
                f"omnisift: pretrained={pretrained!r} is a {model_type!r} checkpoint; expected an OmniSIFT "
                "(omnisift, omnisift_omni) or Qwen2.5-Omni (qwen2_5_omni, qwen2_5_omni_thinker) one."
            )
        return model.to(self._device).eval()

    # ---------------------------------------------------------------------------------------------------------------
    # lmms interface
    # ---------------------------------------------------------------------------------------------------------------
    @property
    def config(self):
        return self._config

    @property
    def tokenizer(self):
        return self._tokenizer

    @property
    def model(self):
        return self._model

    @property
    def eot_token_id(self):
        return self._tokenizer.eos_token_id

    @property
    def batch_size(self):
        return self.batch_size_per_gpu

    @property
    def device(self):
        return self._device

    @property
    def rank(self):
        return self._rank

    @property
    def world_size(self):
        return self._world_size

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        """As lmms-eval's, but `batch_size` may be given in `--model_args` as well as by `--batch_size` (whose default
        is 1): the model argument wins over the default; two different explicit values are an error."""
        from lmms_eval import utils

        args = utils.simple_parse_args_string(arg_string)
        extra = {key: value for key, value in (additional_config or {}).items() if value is not None}
        for key in set(args) & set(extra):
            if key == "batch_size" and str(extra[key]) in ("1", str(args[key])):
                del extra[key]
            elif str(args[key]) == str(extra[key]):
                del extra[key]
            else:
                raise ValueError(
                    f"omnisift: {key} given twice, {key}={args[key]!r} in --model_args and {extra[key]!r} on the "
                    f"command line; keep one."
                )
        return cls(**args, **extra)

    def loglikelihood(self, requests: list[Instance]):
        raise NotImplementedError(
            "omnisift: answers by generation (pipeline('omni-qa')); loglikelihood / multiple_choice tasks are not "
            "supported. Use a generate_until task."
        )

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("omnisift: multi-round generation is not supported.")

    def generate_until(self, requests: list[Instance]) -> list[GenerationResult]:
        """Answer every request; requests with the same generation kwargs run together through the pipeline in
        padded batches of `batch_size`. Returns one `GenerationResult` (text and token counts) per request, in
        order."""
        results: list[GenerationResult | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(repr(sorted(request.args[1].items(), key=lambda item: item[0])), []).append(index)
        totals = dict.fromkeys(("prompt", "prefill", "video", "kept_video", "audio", "kept_audio", "output"), 0)
        start = time.perf_counter()
        progress = tqdm(total=len(requests), disable=self.rank != 0, desc="omnisift")
        for group in groups.values():
            gen_kwargs = dict(requests[group[0]].args[1])
            until, call_kwargs = self._generation_arguments(gen_kwargs)
            # One pipeline call per padded batch: progress, and a failure names the batch's documents.
            for first in range(0, len(group), self.batch_size):
                indices = group[first : first + self.batch_size]
                try:
                    pipe_requests = [self._pipe_request(requests[i]) for i in indices]
                    answers = self._pipe(pipe_requests, batch_size=self.batch_size, **call_kwargs)
                except Exception as error:
                    docs = [f"{requests[i].task_name}/{requests[i].doc_id}" for i in indices]
                    raise RuntimeError(
                        f"omnisift: generation failed for {len(docs)} request(s) (docs {_short_list(docs)}): "
                        f"{type(error).__name__}: {error}"
                    ) from error
                progress.update(len(indices))
                for index, answer in zip(indices, answers, strict=True):
                    text = _truncate(answer["answer"], until)
                    output_tokens = answer["generated_tokens"]
                    counts = OmniSiftTokenCounts(answer, output_tokens)
                    results[index] = GenerationResult(text=text, token_counts=counts)
                    request = requests[index]
                    self.cache_hook.add_partial("generate_until", (request.args[0], request.args[1]), text)
                    totals["prompt"] += counts.prompt_tokens
                    totals["prefill"] += counts.input_tokens
                    totals["video"] += counts.num_video_tokens
                    totals["kept_video"] += counts.num_kept_video_tokens
                    totals["audio"] += counts.num_audio_tokens
                    totals["kept_audio"] += counts.num_kept_audio_tokens
                    totals["output"] += output_tokens
        progress.close()
        elapsed = time.perf_counter() - start
        if requests:
            n = len(requests)
            media = totals["video"] + totals["audio"]
            log_metrics(
                total_elapsed_time=elapsed,
                total_gen_tokens=totals["output"],
                avg_speed=totals["output"] / elapsed if elapsed > 0 else 0.0,
                additional_metrics={
                    "total_requests": n,
                    "prompt_tokens_per_sample": totals["prompt"] / n,
                    "prefill_tokens_per_sample": totals["prefill"] / n,
                    "video_tokens_per_sample": totals["video"] / n,
                    "kept_video_tokens_per_sample": totals["kept_video"] / n,
                    "audio_tokens_per_sample": totals["audio"] / n,
                    "kept_audio_tokens_per_sample": totals["kept_audio"] / n,
                    "media_retention": (totals["kept_video"] + totals["kept_audio"]) / media if media else 1.0,
                },
            )
        return results

    # ---------------------------------------------------------------------------------------------------------------
    # Requests
    # ---------------------------------------------------------------------------------------------------------------
    def _generation_arguments(self, gen_kwargs: dict) -> tuple[list[str], dict]:
        """A task's `generation_kwargs` -> (stop strings, the pipeline's call arguments)."""
        until = gen_kwargs.pop("until", None)
        if isinstance(until, str):
            until = [until]
        elif until is None:
            until = []
        elif not isinstance(until, (list, tuple)) or not all(isinstance(stop, str) for stop in until):
            raise ValueError(f"omnisift: the task's until={until!r} must be a string or a list of strings.")
        for key in _LMMS_GEN_KEYS:
            gen_kwargs.pop(key, None)
        temperature = gen_kwargs.pop("temperature", None)
        do_sample = gen_kwargs.pop("do_sample", None)
        if do_sample is None:
            do_sample = bool(temperature) and temperature > 0
        generation: dict = {"do_sample": bool(do_sample)}
        if do_sample:
            if temperature:
                generation["temperature"] = float(temperature)
            if gen_kwargs.get("top_p") is not None:
                generation["top_p"] = float(gen_kwargs["top_p"])
        gen_kwargs.pop("top_p", None)
        max_new_tokens = gen_kwargs.pop("max_new_tokens", None)
        if self._max_new_tokens is not None:
            max_new_tokens = self._max_new_tokens
        generation["max_new_tokens"] = int(max_new_tokens) if max_new_tokens is not None else 256
        known = {key for key in vars(GenerationConfig()) if not key.startswith("_")}
        for key, value in gen_kwargs.items():
            if key in known:
                if value is not None:
                    generation[key] = value
            else:
                eval_logger.warning(f"omnisift: ignoring the task's generation kwarg {key}={value!r}")
        call = {**self._ratios, **generation, "video_sampling": self._video_sampling}
        if self.system_prompt is not None:
            call["system_prompt"] = self.system_prompt
        if self._use_audio_in_video is not None:
            call["use_audio_in_video"] = self._use_audio_in_video
        return until, call

    def _pipe_request(self, request: Instance) -> list[dict]:
        """One lmms-eval request -> one omni-qa request: a user turn with the document's media (videos, audio clips,
        images) and the task's prompt. A prompt with one `<media_N>` tag per media item (AV-Odyssey's) gets each item
        in its place; otherwise the media come first, then the prompt."""
        context, _, doc_to_visual, doc_id, task, split = request.args
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual is not None else []
        media = [_media_item(visual, f"{task}/{doc_id}") for visual in _flatten(visuals)]
        if not media and not self._warned_no_media:
            self._warned_no_media = True
            eval_logger.warning(
                f"omnisift: {task}/{doc_id} has no video, audio or image (its doc_to_visual returned none: a missing "
                "file? Some lmms-eval tasks only print a missing path); it is answered from the text alone."
            )
        pieces = _MEDIA_TAG.split(context)
        tags = [int(tag) for tag in pieces[1::2]]
        if media and sorted(tags) == list(range(len(media))):
            content = []
            for index, piece in enumerate(pieces):
                if index % 2:
                    content.append(media[int(piece)])
                elif piece.strip():
                    content.append({"type": "text", "text": piece})
        else:
            content = [*media, {"type": "text", "text": context}]
        return [{"role": "user", "content": content}]


# -------------------------------------------------------------------------------------------------------------------
# Helpers
# -------------------------------------------------------------------------------------------------------------------
def _whole(name: str, value, low: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"omnisift: model_args {name}={value!r}; use a whole number >= {low}.")
    return value


def _counting_postprocess(pipe, model):
    """`pipe.postprocess` plus `generated_tokens`: the tokens this answer generated, up to and including its first
    end-of-sequence token (a padded batch pads shorter answers after it)."""
    original = pipe.postprocess
    thinker = getattr(model, "thinker", model)
    eos = thinker.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])

    def postprocess(model_outputs, **kwargs):
        result = original(model_outputs, **kwargs)
        generated = model_outputs["generated"]
        while isinstance(generated, (list, tuple)):
            generated = generated[0]
        ids = torch.as_tensor(generated).reshape(-1).tolist()
        ends = [position for position, token in enumerate(ids) if token in eos]
        result["generated_tokens"] = ends[0] + 1 if ends else len(ids)
        return result

    return postprocess


def _flatten(visuals):
    if visuals is None:
        return []
    if isinstance(visuals, (list, tuple)):
        return [item for visual in visuals for item in _flatten(visual)]
    return [visuals]


def _media_item(visual, where: str) -> dict:
    """One item of `doc_to_visual`'s output as an omni-qa content item."""
    if isinstance(visual, Image.Image):
        return {"type": "image", "image": visual}
    if isinstance(visual, Mapping) and "array" in visual:  # a datasets Audio feature
        return {"type": "audio", "audio": np.asarray(visual["array"], dtype=np.float32),
                "sampling_rate": visual["sampling_rate"]}  # fmt: skip
    if isinstance(visual, (str, os.PathLike)):
        path = os.fspath(visual)
        suffix = Path(path.split("?")[0]).suffix.lower()
        if suffix in _AUDIO_SUFFIXES:
            return {"type": "audio", "audio": path}
        if suffix in _IMAGE_SUFFIXES:
            return {"type": "image", "image": path}
        return {"type": "video", "video": path}
    raise TypeError(
        f"omnisift: {where}: doc_to_visual gave a {type(visual).__name__}; expected a video/audio/image path, a PIL "
        "image or an audio dict with 'array' and 'sampling_rate'."
    )


def _truncate(text: str, until: Sequence[str]) -> str:
    for stop in until:
        if stop:
            text = text.split(stop)[0]
    return text


def _short_list(items: list[str], limit: int = 8) -> str:
    return ", ".join(items[:limit]) + (f", ... ({len(items)} in all)" if len(items) > limit else "")
