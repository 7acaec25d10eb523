"""Media loading for Qwen2.5-Omni with the declared dependencies only: PyAV for video (and the audio track of a
video), soundfile or PyAV for audio files, Pillow (through transformers) for images.

transformers 5.24's processor decodes file paths only through torchcodec, and `qwen-omni-utils` reads video with
decord, torchcodec or torchvision's ffmpeg bindings; none of those is needed here. Frame sampling and resizing follow
Qwen's policy as implemented by `qwen-omni-utils` (its `smart_nframes` and `smart_resize` are used directly): 2 frames
per second by default, between 4 and 768 frames, an even frame count, frames resized to multiples of 28 pixels within
128..768 tokens per frame and a total pixel budget. Every video comes back with the rate its frames were actually
sampled at: pass it to the processor as `fps`, or the audio/video time alignment is silently wrong.

Qwen3-Omni follows the same policy with its own frame factor (16-pixel patches, merge 2: multiples of 32 pixels,
`qwen-omni-utils` with `image_patch_size=16`) and pixel bounds (128..768 tokens of 32 x 32 pixels per frame, the
bounds of `Qwen3OmniMoeProcessor`); `media_policy_of(processor)` tells which policy a processor's model was trained
with (`MediaPolicy`).

Each loader checks its source before reading it (`check_source`: type, file, rate) and its values after (dtype, NaN,
range); errors name the argument and the value. Integer PCM is rescaled to [-1, 1] and pixels are brought to uint8;
a truncated video file is used as far as it decodes, with a warning.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields, replace

import numpy as np
import soundfile
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.functional import resize
from transformers.image_utils import load_image as transformers_load_image
from transformers.utils import logging

# PyAV and qwen-omni-utils are imported where they are used: together they would add ~0.4 s to `import omnisift_hf`.

__all__ = [
    "AUDIO_TOKENS_PER_SECOND",
    "CLIP_MEAN",
    "CLIP_STD",
    "MEDIA_TYPES",
    "QWEN2_5_OMNI_MEDIA",
    "QWEN3_OMNI_MEDIA",
    "SAMPLING_RATE",
    "LoadedVideo",
    "MediaPolicy",
    "VideoSampling",
    "check_source",
    "frame_factor_of",
    "load_audio",
    "load_image",
    "load_video",
    "media_policy_of",
    "video_sampling_of",
]

SAMPLING_RATE = 16000  # Hz: the audio sampling rate the Qwen2.5-Omni audio encoder expects
AUDIO_TOKENS_PER_SECOND = 25  # Qwen2.5-Omni audio tokens (and M-RoPE temporal positions) per second
MEDIA_TYPES = ("video", "audio", "image")  # the media a request can carry, in the order their items are listed
# The image/video processors' normalisation (OpenAI CLIP's per-channel RGB mean and std, on 0..1 pixel values).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_VIDEO_SUFFIXES = ".mp4, .mkv, .webm, .mov, .avi"
_AUDIO_SUFFIXES = ".wav, .flac, .mp3, .ogg, .m4a"
# Integer PCM sample formats: (offset, scale) that map them onto [-1, 1].
_PCM_SCALES = {
    np.dtype(np.int8): (0.0, 2.0**7),
    np.dtype(np.int16): (0.0, 2.0**15),
    np.dtype(np.int32): (0.0, 2.0**31),
    np.dtype(np.uint8): (128.0, 2.0**7),
}
# Float samples belong in [-1, 1]; resampling and loudness processing overshoot a little. A larger peak means integer
# PCM values cast to float without rescaling (their features would be far off what the audio encoder was trained on).
_MAX_FLOAT_PEAK = 2.0
# Float pixels on the 0..255 scale may overshoot by this much (then clipped): bicubic resizing of float frames rings
# at edges (up to about -113..368 for a checkerboard).
_PIXEL_OVERSHOOT = 128.0
# Qwen's `smart_resize` (images and video frames) refuses a longer side more than this many times the shorter one.
_MAX_ASPECT_RATIO = 200
# The name of the rate that comes with an array, per media type, in `load_video` / `load_audio`.
_RATE_ARGUMENTS = {"video": "source_fps", "audio": "source_sampling_rate"}

logger = logging.get_logger(__name__)


@dataclass(frozen=True)
class VideoSampling:
    """Qwen2.5-Omni's video sampling policy (the defaults of `qwen-omni-utils`).

    fps: frames sampled per second of video. min_frames / max_frames: bounds on the number of sampled frames.
    min_pixels / max_pixels: bounds on the pixels of one resized frame (multiples of 28 x 28).
    total_pixels: budget for all frames together (limits long clips).
    """

    fps: float = 2.0
    min_frames: int = 4
    max_frames: int = 768
    min_pixels: int = 128 * 28 * 28
    max_pixels: int = 768 * 28 * 28
    total_pixels: float = 128000 * 28 * 28 * 0.9

    def __post_init__(self):
        for field in fields(self):
            value, whole = getattr(self, field.name), field.name != "fps" and field.name != "total_pixels"
            kind = "a whole number" if whole else "a number"
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise TypeError(f"VideoSampling: {field.name}={value!r} must be {kind}, got {type(value).__name__}.")
            if not (math.isfinite(value) and value > 0) or (whole and not float(value).is_integer()):
                raise ValueError(f"VideoSampling: {field.name}={value!r} must be {kind} above 0.")
        if self.min_frames < 2 or self.max_frames < self.min_frames:
            raise ValueError(
                f"VideoSampling: min_frames={self.min_frames} / max_frames={self.max_frames} must satisfy "
                "2 <= min_frames <= max_frames."
            )
        if self.max_pixels < self.min_pixels:
            raise ValueError(
                f"VideoSampling: min_pixels={self.min_pixels} exceeds max_pixels={self.max_pixels}; pass "
                "min_pixels <= max_pixels (pixels of one resized frame)."
            )


@dataclass(frozen=True)
class MediaPolicy:
    """What a backbone's processor expects from the media loaders (its `media_policy_of`).

    backbone: the backbone's folder name in `omnisift_hf.models` (`"qwen2_5_omni"`, `"qwen3_omni_moe"`).
    frame_factor: sides of resized frames are multiples of this many pixels (vision patch size * merge size).
    sampling: the default `VideoSampling` (`qwen-omni-utils`' policy at that frame factor).
    audio_tokens_per_second: audio tokens (and M-RoPE temporal ids) per second of audio.
    max_audio_samples: the processor truncates audio items to this many samples (`None`: it does not truncate).
    min_audio_samples: the shortest audio (in samples at 16 kHz, with the feature extractor's 160-sample hop) that
        makes one audio token.
    default_system_prompt: the system turn of requests without one (`None`: no system turn, as the backbone's own
        chat template does).
    """

    backbone: str
    frame_factor: int
    sampling: VideoSampling
    audio_tokens_per_second: int
    max_audio_samples: int | None
    min_audio_samples: int
    default_system_prompt: str | None


_QWEN2_5_OMNI_SYSTEM_PROMPT = (
    "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving auditory and "
    "visual inputs, as well as generating text and speech."
)
# Qwen2.5-Omni: 14-pixel patches, 25 audio tokens per second (3 mel frames of 160 samples make the first one),
# audio truncated to 300 s, trained with its system prompt.
QWEN2_5_OMNI_MEDIA = MediaPolicy(
    backbone="qwen2_5_omni",
    frame_factor=28,
    sampling=VideoSampling(),
    audio_tokens_per_second=AUDIO_TOKENS_PER_SECOND,
    max_audio_samples=300 * SAMPLING_RATE,
    min_audio_samples=2 * 160 + 1,
    default_system_prompt=_QWEN2_5_OMNI_SYSTEM_PROMPT,
)
# Qwen3-Omni: 16-pixel patches (qwen-omni-utils' `image_patch_size=16`: frames within 128..768 tokens of 32 x 32
# pixels, the bounds `Qwen3OmniMoeProcessor` resizes to), about 13 audio tokens per second (one mel frame makes the
# first), no truncation (the processor passes `truncation=False`), no default system turn.
QWEN3_OMNI_MEDIA = MediaPolicy(
    backbone="qwen3_omni_moe",
    frame_factor=32,
    sampling=VideoSampling(min_pixels=128 * 32 * 32, max_pixels=768 * 32 * 32, total_pixels=128000 * 32 * 32 * 0.9),
    audio_tokens_per_second=13,
    max_audio_samples=None,
    min_audio_samples=1,
    default_system_prompt=None,
)


def media_policy_of(processor) -> MediaPolicy:
    """The `MediaPolicy` of a processor's backbone: `QWEN3_OMNI_MEDIA` for a `Qwen3OmniMoeProcessor` (or a subclass),
    `QWEN2_5_OMNI_MEDIA` otherwise (`Qwen2_5OmniProcessor`). Chosen by class name, so that remote code needs no
    import of either processor."""
    names = {cls.__name__ for cls in type(processor).__mro__}
    return QWEN3_OMNI_MEDIA if "Qwen3OmniMoeProcessor" in names else QWEN2_5_OMNI_MEDIA


def video_sampling_of(processor) -> VideoSampling:
    """The default `VideoSampling` of a checkpoint: its backbone's policy (`media_policy_of(processor).sampling`) with
    the per-frame pixel bounds its video processor stores (`size = {"shortest_edge": min_pixels, "longest_edge":
    max_pixels}`, as Qwen2.5-Omni's processor config does). For Qwen's own Qwen2.5-Omni checkpoints that is exactly
    `VideoSampling()`; a checkpoint trained at another frame size (the AVQA default, 112 x 112) carries it, so the
    pipeline and the training collator sample its frames as it was trained."""
    size = getattr(getattr(processor, "video_processor", None), "size", None)
    bounds = {}
    for key, name in (("shortest_edge", "min_pixels"), ("longest_edge", "max_pixels")):
        value = size.get(key) if size is not None else None
        if value is not None:
            bounds[name] = int(value)
    if bounds.get("min_pixels", 0) > bounds.get("max_pixels", float("inf")):
        raise ValueError(f"video processor size={dict(size)!r}: shortest_edge (min pixels) exceeds longest_edge.")
    return replace(media_policy_of(processor).sampling, **bounds)


def frame_factor_of(processor) -> int:
    """The multiple of pixels that frame sides are resized to for `processor`: its video processor's patch size times
    its merge size (28 for Qwen2.5-Omni, 32 for Qwen3-Omni), or its backbone's when the video processor lacks them."""
    video_processor = getattr(processor, "video_processor", None)
    patch, merge = getattr(video_processor, "patch_size", None), getattr(video_processor, "merge_size", None)
    if isinstance(patch, int) and isinstance(merge, int) and patch > 0 and merge > 0:
        return patch * merge
    return media_policy_of(processor).frame_factor


@dataclass
class LoadedVideo:
    """Frames sampled from a video, ready for `Qwen2_5OmniProcessor(videos=...)`.

    frames: float tensor (T, 3, H, W) in 0..255, T even, H and W multiples of `load_video`'s `frame_factor` (28 for
        Qwen2.5-Omni, 32 for Qwen3-Omni).
    fps: the rate the frames were sampled at (pass as the processor's `fps`).
    audio: the audio track, mono float32 at `load_video`'s `sampling_rate` (16 kHz by default), or None when the
        video has none (or it was not requested).
    """

    frames: torch.Tensor
    fps: float
    audio: np.ndarray | None = None


# ---------------------------------------------------------------------------------------------------------------------
# Checks: every loader validates its source here before reading anything (the pipeline runs the same checks on a whole
# batch of requests before decoding any of them).
# ---------------------------------------------------------------------------------------------------------------------
_EXPECTED = {
    "video": "a path, an http(s) URL, or frames in memory (an array/tensor (T, H, W, 3) or (T, 3, H, W), or a list of "
    "PIL images / (H, W, 3) arrays)",
    "audio": "a path, an http(s) URL, or an array/tensor of samples (1-D, or (channels, samples))",
    "image": "a path, an http(s) URL, base64 data, a PIL image, or an array/tensor (H, W, 3) or (3, H, W)",
}


def _describe(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return repr(os.fspath(source))
    if source is None or isinstance(source, (bool, int, float)):
        return repr(source)
    return f"<{type(source).__name__}>"


def _is_url(source) -> bool:
    return isinstance(source, str) and source.startswith(("http://", "https://"))


def _is_path(source) -> bool:
    return isinstance(source, (str, os.PathLike))


def _check_path(argument: str, source) -> str:
    path = os.fspath(source)
    if path.startswith("file://"):
        path = path[len("file://") :]
    if _is_url(path):
        return path
    if not path:
        raise FileNotFoundError(f"{argument}='': an empty path. Pass the path of an existing file.")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{argument}={path!r}: no such file. Pass the path of an existing file.")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{argument}={path!r} is a directory. Pass the path of a media file.")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{argument}={path!r} is an empty file (0 bytes). Pass a complete media file.")
    return path


def _check_rate(argument: str, value, unit: str, whole: bool = False) -> float | int:
    """`value` as a positive finite rate (an int with `whole`); TypeError / ValueError naming `argument` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{argument}={value!r}: expected a positive number of {unit}, got {type(value).__name__}.")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{argument}={value!r} must be a positive, finite number of {unit}.")
    if whole:
        if not float(value).is_integer():
            raise ValueError(f"{argument}={value!r} must be a whole number of {unit} (e.g. {SAMPLING_RATE}).")
        return int(value)
    return float(value)


def check_source(kind: str, source, rate=None, rate_argument: str | None = None) -> None:
    """Validate one media source without reading it: its type, that a local file exists, and the rate of an array.

    Args:
        kind (`str`): `"video"`, `"audio"` or `"image"` (the argument name in the messages).
        source: what `load_video` / `load_audio` / `load_image` would receive.
        rate: the rate of an array source (`source_fps` frames per second for video frames, `source_sampling_rate`
            samples per second for audio); files carry their own, so passing one with a file is refused.
        rate_argument (`str`, *optional*): the name the caller gave `rate` (default: the loader's).

    Raises:
        `TypeError`: the source or the rate has the wrong type. `FileNotFoundError` / `IsADirectoryError`: a local
        path that is missing or a directory. `ValueError`: a rate that is not positive and finite, a rate with a file,
        an audio array without its rate, an empty list of frames.
    """
    if kind not in MEDIA_TYPES:
        raise ValueError(f"media kind {kind!r} is not one of {MEDIA_TYPES}.")
    rate_argument = rate_argument or _RATE_ARGUMENTS.get(kind, "rate")
    if _is_path(source):
        path = os.fspath(source)
        if not (kind == "image" and path.startswith("data:")):
            _check_path(kind, path)
        if rate is not None:
            hint = " To sample its frames at another rate, pass `VideoSampling(fps=...)`." if kind == "video" else ""
            raise ValueError(
                f"{rate_argument}={rate!r} is the rate of {kind} arrays, but {kind}={path!r} is a file that carries "
                f"its own rate: leave {rate_argument} out.{hint}"
            )
        return
    arrays = (np.ndarray, torch.Tensor)
    allowed = {"video": (*arrays, list, tuple), "audio": arrays, "image": (*arrays, Image.Image)}[kind]
    if not isinstance(source, allowed):
        hint = (
            " For one image pass `image=`; frames of a video go in a list." if isinstance(source, Image.Image) else ""
        )
        raise TypeError(f"{kind}={_describe(source)}: expected {_EXPECTED[kind]}.{hint}")
    if kind == "video" and isinstance(source, (list, tuple)):
        if not source:
            raise ValueError("video=[]: an empty list of frames. Pass at least one frame.")
        for position, frame in enumerate(source):
            if not isinstance(frame, (*arrays, Image.Image)):
                raise TypeError(
                    f"video: frame {position} of the list is {_describe(frame)}; a list of frames holds PIL images "
                    "or (H, W, 3) arrays (for several videos, pass several `video` items)."
                )
    if kind == "image":
        if rate is not None:
            raise ValueError(f"{rate_argument}={rate!r}: an image has no rate; leave it out.")
        return
    if rate is not None:
        unit = "frames per second" if kind == "video" else "samples per second"
        _check_rate(rate_argument, rate, unit, whole=kind == "audio")
    elif kind == "audio":
        raise ValueError(
            "audio: an array was given without its sampling rate. Pass `sampling_rate` (e.g. "
            f'{{"audio": array, "sampling_rate": {SAMPLING_RATE}}}) or resample it to {SAMPLING_RATE} Hz yourself.'
        )


def _numpy(source) -> np.ndarray:
    """An array/tensor as a NumPy array of the same dtype (float tensors NumPy lacks, bfloat16, as float32)."""
    if isinstance(source, torch.Tensor):
        source = source.detach().cpu()
        return (source.float() if source.dtype == torch.bfloat16 else source).numpy()
    return np.asarray(source)


def _audio_samples(source) -> np.ndarray:
    """An audio array/tensor as mono float32 samples in [-1, 1]: integer PCM rescaled, channels averaged."""
    array = _numpy(source)
    if array.dtype in _PCM_SCALES:
        offset, scale = _PCM_SCALES[array.dtype]
        waveform = (array.astype(np.float32) - offset) / scale
    elif array.dtype.kind == "f":
        waveform = array.astype(np.float32)
    else:
        raise TypeError(
            f"audio: samples of dtype {array.dtype} are not supported. Pass float samples in [-1, 1], or integer PCM "
            "as int16, int32, int8 or uint8 (rescaled to [-1, 1])."
        )
    if waveform.ndim not in (1, 2):
        raise ValueError(f"audio: expected a 1-D waveform or (channels, samples), got shape {array.shape}.")
    if waveform.size == 0:
        raise ValueError(f"audio: the array has no samples (shape {array.shape}). Pass a non-empty waveform.")
    bad = int(np.count_nonzero(~np.isfinite(waveform)))
    if bad:
        raise ValueError(
            f"audio: {bad} of the {waveform.size} samples are NaN or infinite. Pass finite samples in [-1, 1] "
            "(e.g. `np.nan_to_num(samples)` if they come from a faulty pipeline)."
        )
    peak = float(np.abs(waveform).max())
    if array.dtype.kind == "f" and peak > _MAX_FLOAT_PEAK:
        raise ValueError(
            f"audio: float samples belong in [-1, 1], got a peak of {peak:g}. Integer PCM cast to float? Pass the "
            "integer array itself (int16 is rescaled) or divide by 32768; otherwise normalise the waveform."
        )
    if waveform.ndim == 2:
        waveform = waveform.mean(axis=0 if waveform.shape[0] <= waveform.shape[1] else 1)
    return waveform


def _check_decoded_audio(argument: str, path: str, waveform: np.ndarray) -> np.ndarray:
    """Decoded audio of a file, refused when it has no samples or holds NaN / infinite ones."""
    if waveform.size == 0:
        raise ValueError(
            f"{argument}={path!r} decodes to no audio samples (an empty or truncated file?). Pass a file with sound."
        )
    if not np.isfinite(waveform).all():
        raise ValueError(f"{argument}={path!r} holds NaN or infinite audio samples. Repair or re-encode the file.")
    return waveform


def _pixels(argument: str, values: torch.Tensor) -> torch.Tensor:
    """Pixel values as uint8, the form decoded frames have (so frames in memory are resized exactly as a file's):
    uint8 as is; other integers must lie in 0..255; floats in [0, 1] are scaled by 255, other floats are read on the
    0..255 scale (tolerating the overshoot of bicubic resizing, which is clipped) and rounded."""
    if values.dtype == torch.uint8:
        return values
    if values.dtype == torch.bool or values.is_complex():
        raise TypeError(f"{argument}: pixel values of dtype {values.dtype} are not supported. Pass uint8 pixels.")
    if values.numel() == 0:
        return values.to(torch.uint8)
    if not values.is_floating_point():
        low, high = int(values.min()), int(values.max())
        if low < 0 or high > 255:
            raise ValueError(
                f"{argument}: integer pixel values must lie in 0..255, got {low}..{high}. Pass 8-bit pixels (uint8), "
                "or floats in [0, 1]."
            )
        return values.to(torch.uint8)
    values = values.float()
    if not torch.isfinite(values).all():
        raise ValueError(f"{argument}: NaN or infinite pixel values. Pass uint8 pixels, or floats in [0, 1].")
    low, high = float(values.min()), float(values.max())
    if low >= 0 and high <= 1:
        values = values * 255.0
    elif low < -_PIXEL_OVERSHOOT or high > 255 + _PIXEL_OVERSHOOT or (low < 0 and high < 8):
        raise ValueError(
            f"{argument}: float pixel values from {low:g} to {high:g} are neither in [0, 1] nor on the 0..255 scale "
            "(mean/std-normalised pixels?). Pass raw pixels: uint8, or floats in [0, 1] or 0..255."
        )
    return values.round().clamp(0, 255).to(torch.uint8)


def _check_aspect(argument: str, height: int, width: int) -> None:
    if height < 1 or width < 1:
        raise ValueError(f"{argument}: an empty picture of {width}x{height} pixels. Pass at least one pixel.")
    if max(height, width) / min(height, width) > _MAX_ASPECT_RATIO:
        raise ValueError(
            f"{argument}: {width}x{height} pixels, an aspect ratio above Qwen2.5-Omni's limit of "
            f"{_MAX_ASPECT_RATIO}:1. Crop or pad it."
        )


# ---------------------------------------------------------------------------------------------------------------------
# Audio
# ---------------------------------------------------------------------------------------------------------------------
def _open_container(argument: str, path: str, suffixes: str):
    import av

    try:
        return av.open(path)
    except (av.error.InvalidDataError, av.error.EOFError, av.error.DemuxerNotFoundError) as error:
        raise ValueError(
            f"{argument}={path!r} is not a media file PyAV can decode ({error.strerror or error}). "
            f"Pass a file in a common format ({suffixes})."
        ) from None
    except av.error.FileNotFoundError:
        raise FileNotFoundError(f"{argument}={path!r}: no such file. Pass the path of an existing file.") from None
    except av.error.FFmpegError as error:  # network errors for URLs, permissions, ...
        raise ValueError(f"{argument}={path!r} could not be opened by PyAV: {error}.") from None


def _resample(waveform: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Mono float32 `waveform` at `rate` Hz resampled to `target` Hz with FFmpeg's resampler (through PyAV)."""
    waveform = np.ascontiguousarray(waveform, dtype=np.float32)
    if rate == target or waveform.size == 0:
        return waveform
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=target)
    frame = av.AudioFrame.from_ndarray(waveform[None, :], format="flt", layout="mono")
    frame.sample_rate, frame.pts = rate, 0
    pieces = [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
    pieces += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    return np.concatenate(pieces).astype(np.float32) if pieces else np.zeros(0, dtype=np.float32)


def _decode_audio_stream(container, stream, sampling_rate: int) -> np.ndarray:
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=sampling_rate)
    pieces = []
    for frame in container.decode(stream):
        frame.pts = None  # let the resampler follow the samples, not container timestamps
        pieces += [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
    pieces += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    return np.concatenate(pieces).astype(np.float32) if pieces else np.zeros(0, dtype=np.float32)


def load_audio(source, sampling_rate: int = SAMPLING_RATE, source_sampling_rate: int | None = None) -> np.ndarray:
    """Load audio as mono float32 at `sampling_rate` Hz.

    `source`: a path (wav/flac/ogg/mp3 through soundfile; anything else FFmpeg decodes, including the audio track of a
    video, through PyAV), an http(s) URL (PyAV), or an array/tensor of samples (1-D, or (channels, samples)) recorded
    at `source_sampling_rate` (required for arrays; a file carries its own rate). Array samples are float in [-1, 1]
    (peaks up to 2 are accepted) or integer PCM (int16, int32, int8, uint8), which is rescaled to [-1, 1].

    Raises `TypeError` / `ValueError` / `FileNotFoundError` naming the argument for a source of the wrong type, a
    missing file, a file without sound, an empty array, NaN or infinite samples, float samples far outside [-1, 1],
    an unsupported sample dtype, or a rate that is not a positive whole number.
    """
    _check_rate("sampling_rate", sampling_rate, "samples per second", whole=True)
    check_source("audio", source, source_sampling_rate)
    if not _is_path(source):
        return _resample(_audio_samples(source), int(source_sampling_rate), int(sampling_rate))

    path = _check_path("audio", source)
    if not _is_url(path):
        try:
            waveform, rate = soundfile.read(path, dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError, TypeError):
            pass  # not a format libsndfile reads (m4a, a video file, ...): FFmpeg below decodes it or says why not
        else:
            if waveform.size:  # libsndfile reads some damaged files as empty: FFmpeg below decodes them or says why
                waveform = _resample(waveform.mean(axis=1), rate, int(sampling_rate))
                return _check_decoded_audio("audio", path, waveform)
    with _open_container("audio", path, _AUDIO_SUFFIXES) as container:
        if not container.streams.audio:
            raise ValueError(f"audio={path!r} has no audio stream. Pass a file with sound.")
        try:
            waveform = _decode_audio_stream(container, container.streams.audio[0], int(sampling_rate))
        except Exception as error:  # FFmpeg decode errors of a damaged file
            raise ValueError(f"audio={path!r}: its audio stream could not be decoded ({error}).") from None
    return _check_decoded_audio("audio", path, waveform)


# ---------------------------------------------------------------------------------------------------------------------
# Video
# ---------------------------------------------------------------------------------------------------------------------
def _sample_indices(total_frames: int, source_fps: float, sampling: VideoSampling) -> tuple[list[int], float]:
    from qwen_omni_utils.v2_5.vision_process import smart_nframes

    options = {"fps": sampling.fps, "min_frames": sampling.min_frames, "max_frames": sampling.max_frames}
    # qwen-omni-utils refuses clips shorter than 2 frames; we repeat the last frame instead (as it does for frame
    # lists).
    nframes = smart_nframes(options, total_frames=max(total_frames, 2), video_fps=source_fps)
    indices = torch.linspace(0, total_frames - 1, nframes).round().long().tolist()
    return indices, nframes / max(total_frames, 1e-6) * source_fps


def _resize(frames: torch.Tensor, sampling: VideoSampling, frame_factor: int = 28) -> torch.Tensor:
    """Resize (T, 3, H, W) frames the way `qwen-omni-utils` does (bicubic, antialiased, float 0..255 out; sides
    multiples of `frame_factor`, its `image_patch_size * 2`)."""
    from qwen_omni_utils.v2_5.vision_process import smart_resize

    count, _, height, width = frames.shape
    max_pixels = max(min(sampling.max_pixels, sampling.total_pixels / count * 2), int(sampling.min_pixels * 1.05))
    new_height, new_width = smart_resize(
        height, width, factor=frame_factor, min_pixels=sampling.min_pixels, max_pixels=max_pixels
    )
    return resize(frames, [new_height, new_width], interpolation=InterpolationMode.BICUBIC, antialias=True).float()


def _frames_tensor(frames) -> torch.Tensor:
    """(T, H, W, 3) or (T, 3, H, W) array/tensor, or a list of images / (H, W, 3) arrays, as a uint8 (T, 3, H, W)
    tensor (see `_pixels`)."""
    if isinstance(frames, (list, tuple)):
        pictures = [
            np.asarray(frame.convert("RGB")) if isinstance(frame, Image.Image) else _numpy(frame) for frame in frames
        ]
        shapes = sorted({picture.shape for picture in pictures})
        if len(shapes) > 1:
            raise ValueError(f"video: the frames of the list differ in shape {shapes}. Resize them to one size.")
        dtypes = sorted({str(picture.dtype) for picture in pictures})
        if len(dtypes) > 1:
            raise ValueError(f"video: the frames of the list differ in dtype {dtypes}. Pass one dtype.")
        frames = np.stack(pictures)
    array = _numpy(frames)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"video: frames of dtype {array.dtype} are not supported. Pass uint8 pixels.")
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.ndim != 4 or 3 not in (tensor.shape[1], tensor.shape[-1]):
        raise ValueError(f"video: expected frames of shape (T, H, W, 3) or (T, 3, H, W), got {tuple(tensor.shape)}.")
    if tensor.shape[1] != 3:
        tensor = tensor.permute(0, 3, 1, 2)
    if tensor.shape[0] == 0:
        raise ValueError(f"video: no frames (shape {tuple(array.shape)}). Pass at least one frame.")
    _check_aspect("video", tensor.shape[2], tensor.shape[3])
    return _pixels("video", tensor).contiguous()


def load_video(
    source,
    sampling: VideoSampling | None = None,
    load_audio: bool = True,
    source_fps: float | None = None,
    sampling_rate: int = SAMPLING_RATE,
    frame_factor: int = 28,
) -> LoadedVideo:
    """Decode and sample a video for Qwen2.5-Omni.

    `source`: a path or http(s) URL of a video file (any container/codec FFmpeg decodes: mp4, mkv, webm, mov, ...),
    decoded with PyAV; or frames already in memory (an array/tensor (T, H, W, 3) or (T, 3, H, W), or a list of PIL
    images or (H, W, 3) arrays) recorded at `source_fps` frames per second (default: `sampling.fps`, i.e. taken as
    already sampled; a file carries its own rate). Pixels in memory are uint8, integers in 0..255, or floats: in
    [0, 1] (scaled by 255) or on the 0..255 scale (`LoadedVideo.frames` itself; the overshoot of bicubic resizing is
    clipped); they are rounded to 8 bits, as decoded frames are.
    With `load_audio`, the file's audio track (if any) is decoded too, as mono at `sampling_rate` Hz.
    Frame sides become multiples of `frame_factor` pixels: 28 for Qwen2.5-Omni, 32 for Qwen3-Omni
    (`frame_factor_of(processor)`).

    Raises `TypeError` / `ValueError` / `FileNotFoundError` naming the argument for a source of the wrong type, a
    missing, undecodable or silent-only file, no frames, NaN or out-of-range pixels, or a rate that is not positive
    and finite. A file that decodes fewer frames than it declares (truncated) is used as far as it goes, with a
    warning.
    """
    if sampling is None:
        sampling = VideoSampling()
    elif not isinstance(sampling, VideoSampling):
        raise TypeError(f"sampling={sampling!r}: expected a VideoSampling (e.g. `VideoSampling(fps=1.0)`) or None.")
    _check_rate("sampling_rate", sampling_rate, "samples per second", whole=True)
    if isinstance(frame_factor, bool) or not isinstance(frame_factor, int) or frame_factor < 2:
        raise ValueError(
            f"frame_factor={frame_factor!r} must be an integer >= 2 (28 for Qwen2.5-Omni, 32 for Qwen3-Omni)."
        )
    check_source("video", source, source_fps)
    if not _is_path(source):
        frames = _frames_tensor(source)
        rate = float(source_fps) if source_fps is not None else sampling.fps
        indices, sample_fps = _sample_indices(frames.shape[0], rate, sampling)
        return LoadedVideo(frames=_resize(frames[indices], sampling, frame_factor), fps=sample_fps)

    path = _check_path("video", source)
    with _open_container("video", path, _VIDEO_SUFFIXES) as container:
        if not container.streams.video:
            hint = " It has an audio stream: pass it as `audio=` instead." if container.streams.audio else ""
            raise ValueError(f"video={path!r} has no video stream.{hint}")
        stream = container.streams.video[0]
        _check_aspect(f"video={path!r}", stream.height or 1, stream.width or 1)
        rate = float(stream.average_rate or stream.guessed_rate or 0)
        total = stream.frames
        declared = None  # seconds the container declares, for containers without a frame count
        if total <= 0 or rate <= 0:  # containers without a frame count (some webm/mkv): count the packets
            total = sum(1 for packet in container.demux(stream) if packet.size)
            declared = float(stream.duration * stream.time_base) if stream.duration else None
            declared = declared or (float(container.duration) / 1e6 if container.duration else None)
            rate = rate if rate > 0 else (total / declared if declared else sampling.fps)
            container.seek(0)
        if total <= 0:
            raise ValueError(f"video={path!r} has a video stream without frames. Pass a file with at least one frame.")
        indices, sample_fps = _sample_indices(total, rate, sampling)
        wanted = {}
        for position, index in enumerate(indices):
            wanted.setdefault(index, []).append(position)
        picked: list[torch.Tensor | None] = [None] * len(indices)
        last, decoded, failure = None, 0, None
        try:
            for number, frame in enumerate(container.decode(stream)):
                decoded = number + 1
                if number in wanted:
                    last = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
                    for position in wanted[number]:
                        picked[position] = last
                if number >= indices[-1]:
                    break
        except Exception as error:  # FFmpeg decode errors of a damaged file
            if last is None:
                raise ValueError(f"video={path!r}: its video stream could not be decoded ({error}).") from None
            failure = error
        if last is None:
            raise ValueError(f"video={path!r}: no frame could be decoded.")
        missing = sum(frame is None for frame in picked)
        if missing or failure is not None:
            # A frame count from the header can overstate what decodes (a truncated file): repeat the last frame.
            reason = f"decoding failed after frame {decoded}: {failure}" if failure is not None else "it ends early"
            logger.warning_once(
                f"video={path!r}: {missing} of the {len(picked)} sampled frames could not be decoded ({reason}; a "
                "truncated file?); the last frame that decoded stands in for them."
            )
            picked = [frame if frame is not None else last for frame in picked]
        elif declared and total / rate < declared - max(1.0, 0.1 * declared):
            logger.warning_once(
                f"video={path!r}: the file declares {declared:.1f} s but holds only {total / rate:.1f} s of frames "
                "(a truncated file?); only those are used."
            )
        frames = _resize(torch.stack(picked), sampling, frame_factor)

        has_audio = bool(container.streams.audio)

    audio = None
    if load_audio and has_audio:
        # A fresh container: seeking back after a partial video decode skips the first audio packet in some formats
        # (Opus in webm loses 20 ms).
        import av

        with av.open(path) as audio_container:
            try:
                audio = _decode_audio_stream(audio_container, audio_container.streams.audio[0], int(sampling_rate))
            except Exception as error:  # FFmpeg decode errors of a damaged track
                raise ValueError(
                    f"video={path!r}: its audio track could not be decoded ({error}). Pass "
                    "`use_audio_in_video=False` (or `load_audio=False`) to use the picture alone."
                ) from None
        if not np.isfinite(audio).all():
            raise ValueError(f"video={path!r}: its audio track holds NaN or infinite samples. Re-encode the file.")
    return LoadedVideo(frames=frames, fps=sample_fps, audio=audio)


# ---------------------------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------------------------
def load_image(source):
    """Load an image as RGB `PIL.Image`: a path, an http(s) URL or base64 data (through transformers'
    `load_image`), a PIL image, or an array/tensor (H, W, 3), (H, W, 4) (RGBA) or (3, H, W) of uint8 pixels,
    integers in 0..255, or floats in [0, 1] (scaled by 255) or on the 0..255 scale.

    Raises `TypeError` / `ValueError` / `FileNotFoundError` naming the argument for a source of the wrong type, a
    missing or unreadable file, an empty picture, NaN or out-of-range pixels, or an aspect ratio above 200:1.
    """
    check_source("image", source)
    if isinstance(source, Image.Image):
        _check_aspect("image", source.height, source.width)
        return source.convert("RGB")
    if not _is_path(source):
        array = _numpy(source)
        if array.ndim != 3 or not (array.shape[-1] in (3, 4) or array.shape[0] == 3):
            raise ValueError(f"image: expected an array (H, W, 3) or (3, H, W), got shape {array.shape}.")
        if array.shape[-1] not in (3, 4):
            array = array.transpose(1, 2, 0)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"image: pixel values of dtype {array.dtype} are not supported. Pass uint8 pixels.")
        _check_aspect("image", array.shape[0], array.shape[1])
        pixels = _pixels("image", torch.from_numpy(np.ascontiguousarray(array)))
        return Image.fromarray(pixels.numpy()).convert("RGB")
    path = os.fspath(source)
    if not (_is_url(path) or path.startswith("data:")):
        path = _check_path("image", path)
    try:
        image = transformers_load_image(path).convert("RGB")
    except (OSError, ValueError) as error:
        raise ValueError(f"image={path!r} could not be read as an image ({error}).") from None
    _check_aspect(f"image={path!r}", image.height, image.width)
    return image
