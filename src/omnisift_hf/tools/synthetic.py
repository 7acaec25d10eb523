"""Synthetic media written with PyAV / soundfile: offline clips for the tests, the examples and the benchmarks."""

import math
import os

import av
import numpy as np
import soundfile

from ..media import SAMPLING_RATE

__all__ = ["mux_audio", "mux_video", "write_synthetic_audio", "write_synthetic_clip"]


def write_synthetic_clip(
    path,
    seconds: float = 20.0,
    fps: int = 10,
    size: tuple[int, int] = (112, 112),
    audio: bool = True,
    sampling_rate: int = SAMPLING_RATE,
) -> str:
    """Write a synthetic audio-visual clip with PyAV (H.264 video; AAC audio in .mp4/.mkv, Opus in .webm, Vorbis in
    .ogv).

    The video shows a coloured square that moves across a grey background and changes colour every 2 seconds; the
    audio is a tone whose pitch follows the square's colour. Deterministic, offline, well under a second for 20 s.
    """

    height, width = size
    num_frames = max(1, round(seconds * fps))
    colors = np.array([[220, 40, 40], [40, 200, 60], [50, 80, 230], [240, 220, 40]], dtype=np.uint8)
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    audio_codec = {".webm": "libopus", ".ogv": "libvorbis"}.get(suffix, "aac")
    video_codec = {".webm": "libvpx", ".ogv": "libtheora"}.get(suffix, "libx264")
    with av.open(os.fspath(path), mode="w") as container:
        video_stream = container.add_stream(video_codec, rate=fps)
        video_stream.width, video_stream.height, video_stream.pix_fmt = width, height, "yuv420p"
        audio_stream = None
        if audio:
            audio_rate = 48000 if audio_codec == "libopus" else sampling_rate
            audio_stream = container.add_stream(audio_codec, rate=audio_rate, layout="mono")

        def frames():
            for index in range(num_frames):
                frame = np.full((height, width, 3), 128, dtype=np.uint8)
                side = max(2, min(height, width) // 4)
                x = int((width - side) * (index / max(num_frames - 1, 1)))
                y = (height - side) // 2
                frame[y : y + side, x : x + side] = colors[int(index / fps // 2) % len(colors)]
                yield frame

        mux_video(container, video_stream, frames())
        if audio_stream is not None:
            rate = audio_stream.rate
            time = np.arange(round(seconds * rate)) / rate
            pitch = 220.0 * 2.0 ** ((time // 2) % len(colors) / 2.0)
            mux_audio(
                container, audio_stream, (0.3 * np.sin(2 * math.pi * np.cumsum(pitch) / rate)).astype(np.float32)
            )
    return os.fspath(path)


def mux_video(container, stream, frames) -> None:
    """Encode RGB uint8 frames (H, W, 3) into `stream` of the PyAV output `container`, then flush the encoder."""

    for frame in frames:
        # Converted here on one thread: left to the encoder, PyAV converts with automatic slice threading.
        picture = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format=stream.pix_fmt, threads=1)
        for packet in stream.encode(picture):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def mux_audio(container, stream, waveform, chunk: int = 1024) -> None:
    """Encode a mono waveform (float32 -> "flt", int16 -> "s16") at `stream.rate` into `stream` of the PyAV output
    `container`, in chunks with sample-count timestamps, then flush the encoder."""

    sample_format = {np.dtype(np.float32): "flt", np.dtype(np.int16): "s16"}[waveform.dtype]
    for start in range(0, len(waveform), chunk):
        piece = np.ascontiguousarray(waveform[None, start : start + chunk])
        frame = av.AudioFrame.from_ndarray(piece, format=sample_format, layout="mono")
        frame.sample_rate, frame.pts = stream.rate, start
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def write_synthetic_audio(path, seconds: float = 4.0, sampling_rate: int = SAMPLING_RATE) -> str:
    """Write a mono tone sweep with soundfile (format from the suffix: .wav, .flac, .ogg)."""

    time = np.arange(round(seconds * sampling_rate)) / sampling_rate
    wave = 0.3 * np.sin(2 * np.pi * (220.0 + 110.0 * time / max(seconds, 1e-6)) * time)
    soundfile.write(os.fspath(path), wave.astype(np.float32), sampling_rate)
    return os.fspath(path)
