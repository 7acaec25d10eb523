"""Media loading for Qwen2.5-Omni with the declared dependencies only: PyAV for video (and the audio track of a
video), soundfile or PyAV for audio files, Pillow (through transformers) for images.

transformers 5.24's processor decodes file paths only through torchcodec, and `qwen-omni-utils` reads video with
decord, torchcodec or torchvision's ffmpeg bindings; none of those is needed here. Frame sampling and resizing follow
Qwen's policy as implemented by `qwen-omni-utils` (its `smart_nframes` and `smart_resize` are used directly): 2 frames
per second by default, between 4 and 768 frames, an even frame count, frames resized to multiples of 28 pixels within
128..768 tokens per frame and a total pixel budget. Every video comes back with the rate its frames were actually
sampled at: pass it to the processor as `fps`, or the audio/video time alignment is silently wrong.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.functional import resize
from transformers.image_utils import load_image as transformers_load_image

# PyAV and qwen-omni-utils are imported where they are used: together they would add ~0.4 s to `import omnisift_hf`.

__all__ = [
    "AUDIO_TOKENS_PER_SECOND",
    "CLIP_MEAN",
    "CLIP_STD",
    "MEDIA_TYPES",
    "SAMPLING_RATE",
    "LoadedVideo",
    "VideoSampling",
    "load_audio",
    "load_image",
    "load_video",
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
        if not (isinstance(self.fps, (int, float)) and self.fps > 0):
            raise ValueError(f"VideoSampling: fps={self.fps!r} must be a positive number of frames per second.")
        if self.min_frames < 2 or self.max_frames < self.min_frames:
            raise ValueError(
                f"VideoSampling: min_frames={self.min_frames} / max_frames={self.max_frames} must satisfy "
                "2 <= min_frames <= max_frames."
            )


def video_sampling_of(processor) -> VideoSampling:
    """The default `VideoSampling` of a checkpoint: Qwen's policy with the per-frame pixel bounds its video processor
    stores (`size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}`, as Qwen2.5-Omni's processor config
    does). For Qwen's own checkpoints that is exactly `VideoSampling()`; a checkpoint trained at another frame size
    (the AVQA default, 112 x 112) carries it, so the pipeline and the training collator sample its frames as it
    was trained."""
    size = getattr(getattr(processor, "video_processor", None), "size", None)
    bounds = {}
    for key, name in (("shortest_edge", "min_pixels"), ("longest_edge", "max_pixels")):
        value = size.get(key) if size is not None else None
        if value is not None:
            bounds[name] = int(value)
    if bounds.get("min_pixels", 0) > bounds.get("max_pixels", float("inf")):
        raise ValueError(f"video processor size={dict(size)!r}: shortest_edge (min pixels) exceeds longest_edge.")
    return VideoSampling(**bounds)


@dataclass
class LoadedVideo:
    """Frames sampled from a video, ready for `Qwen2_5OmniProcessor(videos=...)`.

    frames: float tensor (T, 3, H, W) in 0..255, T even, H and W multiples of 28.
    fps: the rate the frames were sampled at (pass as the processor's `fps`).
    audio: the audio track, mono float32 at `load_video`'s `sampling_rate` (16 kHz by default), or None when the
        video has none (or it was not requested).
    """

    frames: torch.Tensor
    fps: float
    audio: np.ndarray | None = None


def _describe(source) -> str:
    if isinstance(source, (str, Path)):
        return repr(os.fspath(source))
    return f"<{type(source).__name__}>"


def _is_url(source) -> bool:
    return isinstance(source, str) and source.startswith(("http://", "https://"))


def _check_path(argument: str, source) -> str:
    path = os.fspath(source)
    if path.startswith("file://"):
        path = path[len("file://") :]
    if _is_url(path):
        return path
    if not os.path.exists(path):
        raise FileNotFoundError(f"{argument}={path!r}: no such file. Pass the path of an existing file.")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{argument}={path!r} is a directory. Pass the path of a media file.")
    return path


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
    at `source_sampling_rate` (required for arrays).
    """
    if isinstance(source, (np.ndarray, torch.Tensor)):
        if source_sampling_rate is None:
            raise ValueError(
                "audio: an array was given without its sampling rate. Pass `sampling_rate` (e.g. "
                f'{{"audio": array, "sampling_rate": {SAMPLING_RATE}}}) or resample it to {SAMPLING_RATE} Hz yourself.'
            )
        waveform = source.detach().cpu().float().numpy() if isinstance(source, torch.Tensor) else np.asarray(source)
        if waveform.ndim == 2:
            waveform = waveform.mean(axis=0 if waveform.shape[0] <= waveform.shape[1] else 1)
        if waveform.ndim != 1:
            raise ValueError(f"audio: expected a 1-D waveform or (channels, samples), got shape {waveform.shape}.")
        return _resample(waveform.astype(np.float32), int(source_sampling_rate), sampling_rate)
    if not isinstance(source, (str, Path)):
        raise TypeError(f"audio={_describe(source)}: expected a path, a URL, or an array of samples.")

    path = _check_path("audio", source)
    if not _is_url(path):
        try:
            waveform, rate = soundfile.read(path, dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError, TypeError):
            pass  # not a format libsndfile reads (m4a, a video file, ...): FFmpeg below decodes it or says why not
        else:
            return _resample(waveform.mean(axis=1), rate, sampling_rate)
    with _open_container("audio", path, _AUDIO_SUFFIXES) as container:
        if not container.streams.audio:
            raise ValueError(f"audio={path!r} has no audio stream. Pass a file with sound.")
        try:
            return _decode_audio_stream(container, container.streams.audio[0], sampling_rate)
        except Exception as error:  # FFmpeg decode errors of a damaged file
            raise ValueError(f"audio={path!r}: its audio stream could not be decoded ({error}).") from None


def _sample_indices(total_frames: int, source_fps: float, sampling: VideoSampling) -> tuple[list[int], float]:
    from qwen_omni_utils.v2_5.vision_process import smart_nframes

    options = {"fps": sampling.fps, "min_frames": sampling.min_frames, "max_frames": sampling.max_frames}
    # qwen-omni-utils refuses clips shorter than 2 frames; we repeat the last frame instead (as it does for frame
    # lists).
    nframes = smart_nframes(options, total_frames=max(total_frames, 2), video_fps=source_fps)
    indices = torch.linspace(0, total_frames - 1, nframes).round().long().tolist()
    return indices, nframes / max(total_frames, 1e-6) * source_fps


def _resize(frames: torch.Tensor, sampling: VideoSampling) -> torch.Tensor:
    """Resize (T, 3, H, W) frames the way `qwen-omni-utils` does (bicubic, antialiased, float 0..255 out)."""
    from qwen_omni_utils.v2_5.vision_process import smart_resize

    count, _, height, width = frames.shape
    max_pixels = max(min(sampling.max_pixels, sampling.total_pixels / count * 2), int(sampling.min_pixels * 1.05))
    new_height, new_width = smart_resize(
        height, width, factor=28, min_pixels=sampling.min_pixels, max_pixels=max_pixels
    )
    return resize(frames, [new_height, new_width], interpolation=InterpolationMode.BICUBIC, antialias=True).float()


def _frames_tensor(frames) -> torch.Tensor:
    """(T, H, W, 3) or (T, 3, H, W) array/tensor, or a list of images, as a uint8-range tensor (T, 3, H, W)."""
    if isinstance(frames, (list, tuple)):
        frames = np.stack(
            [np.asarray(frame.convert("RGB") if hasattr(frame, "convert") else frame) for frame in frames]
        )
    tensor = torch.as_tensor(np.asarray(frames) if not isinstance(frames, torch.Tensor) else frames)
    if tensor.ndim != 4 or 3 not in (tensor.shape[1], tensor.shape[-1]):
        raise ValueError(f"video: expected frames of shape (T, H, W, 3) or (T, 3, H, W), got {tuple(tensor.shape)}.")
    if tensor.shape[1] != 3:
        tensor = tensor.permute(0, 3, 1, 2)
    return tensor.contiguous()


def load_video(
    source,
    sampling: VideoSampling | None = None,
    load_audio: bool = True,
    source_fps: float | None = None,
    sampling_rate: int = SAMPLING_RATE,
) -> LoadedVideo:
    """Decode and sample a video for Qwen2.5-Omni.

    `source`: a path or http(s) URL of a video file (any container/codec FFmpeg decodes: mp4, mkv, webm, mov, ...),
    decoded with PyAV; or frames already in memory (an array/tensor (T, H, W, 3) or (T, 3, H, W), or a list of PIL
    images) recorded at `source_fps` frames per second (default: `sampling.fps`, i.e. taken as already sampled).
    With `load_audio`, the file's audio track (if any) is decoded too, as mono at `sampling_rate` Hz.
    """
    sampling = sampling or VideoSampling()
    if not isinstance(source, (str, Path)):
        frames = _frames_tensor(source)
        rate = float(source_fps) if source_fps is not None else sampling.fps
        indices, sample_fps = _sample_indices(frames.shape[0], rate, sampling)
        return LoadedVideo(frames=_resize(frames[indices], sampling), fps=sample_fps)

    path = _check_path("video", source)
    with _open_container("video", path, _VIDEO_SUFFIXES) as container:
        if not container.streams.video:
            hint = " It has an audio stream: pass it as `audio=` instead." if container.streams.audio else ""
            raise ValueError(f"video={path!r} has no video stream.{hint}")
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or 0)
        total = stream.frames
        if total <= 0 or rate <= 0:  # containers without a frame count (some webm/mkv): count the packets
            total = sum(1 for packet in container.demux(stream) if packet.size)
            seconds = float(stream.duration * stream.time_base) if stream.duration else None
            seconds = seconds or (float(container.duration) / 1e6 if container.duration else None)
            rate = rate if rate > 0 else (total / seconds if seconds else sampling.fps)
            container.seek(0)
        if total <= 0:
            raise ValueError(f"video={path!r} has a video stream without frames.")
        indices, sample_fps = _sample_indices(total, rate, sampling)
        wanted = {}
        for position, index in enumerate(indices):
            wanted.setdefault(index, []).append(position)
        picked: list[torch.Tensor | None] = [None] * len(indices)
        last = None
        try:
            for number, frame in enumerate(container.decode(stream)):
                if number in wanted:
                    last = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
                    for position in wanted[number]:
                        picked[position] = last
                if number >= indices[-1]:
                    break
        except Exception as error:  # FFmpeg decode errors of a damaged file
            if last is None:
                raise ValueError(f"video={path!r}: its video stream could not be decoded ({error}).") from None
        if last is None:
            raise ValueError(f"video={path!r}: no frame could be decoded.")
        # A frame count from the header can overstate what decodes (a truncated file): repeat the last frame.
        picked = [frame if frame is not None else last for frame in picked]
        frames = _resize(torch.stack(picked), sampling)

        has_audio = bool(container.streams.audio)

    audio = None
    if load_audio and has_audio:
        # A fresh container: seeking back after a partial video decode skips the first audio packet in some formats
        # (Opus in webm loses 20 ms).
        import av

        with av.open(path) as audio_container:
            audio = _decode_audio_stream(audio_container, audio_container.streams.audio[0], sampling_rate)
    return LoadedVideo(frames=frames, fps=sample_fps, audio=audio)


def load_image(source):
    """Load an image as RGB `PIL.Image`: a path, an http(s) URL or base64 data (through transformers'
    `load_image`), a PIL image, or an array (H, W, 3)."""
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    if isinstance(source, (np.ndarray, torch.Tensor)):
        array = source.detach().cpu().numpy() if isinstance(source, torch.Tensor) else source
        if array.ndim != 3:
            raise ValueError(f"image: expected an array (H, W, 3), got shape {array.shape}.")
        if array.shape[0] == 3 and array.shape[-1] != 3:
            array = array.transpose(1, 2, 0)
        if array.dtype != np.uint8:
            array = np.clip(array * (255.0 if array.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        return Image.fromarray(array).convert("RGB")
    if not isinstance(source, (str, Path)):
        raise TypeError(f"image={_describe(source)}: expected a path, a URL, a PIL image or an array.")
    path = os.fspath(source)
    if not (_is_url(path) or path.startswith("data:")):
        path = _check_path("image", path)
    try:
        return transformers_load_image(path).convert("RGB")
    except (OSError, ValueError) as error:
        raise ValueError(f"image={path!r} could not be read as an image ({error}).") from None
