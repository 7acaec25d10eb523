"""Media loading (`omnisift_hf.media`) on synthetic files written during the test, and the embedded tiny processor.

Video: mp4 (h264 + aac), mkv, webm (vp8 + opus) decoded with PyAV, sampled with Qwen's policy (`qwen-omni-utils`'
`smart_nframes`), frames resized to multiples of 28 and carrying the clip's content. Audio: the track of a video,
wav/flac/ogg/mp3 through soundfile, formats soundfile cannot read through PyAV, arrays. Errors name the argument and
the path. The tiny processor round-trips offline, renders Qwen's chat layout, and lays out placeholders exactly as
`tiny_inputs` does; the pipeline's short audio padding and its `fps` hand-off give the processor's own results.
"""

import itertools
import os

import av
import numpy as np
import pytest
import soundfile
import torch
from PIL import Image
from qwen_omni_utils.v2_5.vision_process import smart_nframes
from torchvision.transforms import InterpolationMode
from torchvision.transforms.functional import resize
from transformers import AutoProcessor, Qwen2_5OmniProcessor, pipeline

import omnisift_hf  # noqa: F401  (registers the "omni-qa" task)
from omnisift_hf.media import SAMPLING_RATE, VideoSampling, load_audio, load_image, load_video, video_sampling_of
from omnisift_hf.processing_omnisift import DEFAULT_SYSTEM_PROMPT, prepare_omni_inputs
from omnisift_hf.testing_utils import (
    TINY_SPECIAL_TOKENS,
    TINY_TOKEN_IDS,
    save_tiny_default,
    tiny_inputs,
    tiny_processor,
)
from omnisift_hf.tools.synthetic import write_synthetic_clip

IDS = TINY_TOKEN_IDS
# The synthetic clip's square colours (`write_synthetic_clip`), one per 2-second segment, and its background.
SQUARE_COLORS = np.array([[220, 40, 40], [40, 200, 60], [50, 80, 230], [240, 220, 40]], dtype=np.float32)
GREY = 128
# Pitch of the synthetic clip's tone in its first and second 2-second segment.
FIRST_PITCH, SECOND_PITCH = 220.0, 220.0 * 2**0.5
# AAC/Opus priming and frame granularity: the decoded track may be this many 16 kHz samples longer or shorter.
AUDIO_SLACK = 1100


# ---------------------------------------------------------------------------------------------------------------------
# Fixtures: every file written once per module
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    files = {
        "mp4": write_synthetic_clip(root / "clip.mp4", seconds=3, fps=25),
        "mkv": write_synthetic_clip(root / "clip.mkv", seconds=3, fps=25),
        "webm": write_synthetic_clip(root / "clip.webm", seconds=2, fps=25),  # VP8 encoding is slow: keep it short
        "mp4_10fps": write_synthetic_clip(root / "clip10.mp4", seconds=3.5, fps=10),
        "silent": write_synthetic_clip(root / "silent.mp4", seconds=1, fps=10, audio=False),
    }
    corrupt = root / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    files["corrupt"] = os.fspath(corrupt)
    (root / "a_directory.mp4").mkdir()
    files["directory"] = os.fspath(root / "a_directory.mp4")
    files["root"] = root
    return files


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    """The omni-qa pipeline on the embedded default, for its `preprocess` (nothing here generates)."""
    return pipeline("omni-qa", model=save_tiny_default(tmp_path_factory.mktemp("tiny-default")))


def square(frame: torch.Tensor) -> tuple[np.ndarray, float]:
    """Mean colour and horizontal centre of the synthetic clip's square in one (3, H, W) frame."""
    pixels = frame.numpy().astype(np.float32)
    mask = np.abs(pixels - GREY).sum(0) > 90
    assert mask.sum() > 0.02 * mask.size, "no square found in the frame"
    columns = np.nonzero(mask.any(0))[0]
    return pixels[:, mask].mean(1), (columns.min() + columns.max()) / 2


def dominant_frequency(wave: np.ndarray, rate: int = SAMPLING_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.argmax(spectrum) * rate / len(wave))


def qwen_sampling(seconds: float, fps: int) -> tuple[int, int]:
    """(total frames of a synthetic clip, frames Qwen's reference policy samples from it)."""
    total = max(1, round(seconds * fps))
    return total, smart_nframes({"fps": 2.0}, total_frames=total, video_fps=fps)


# ---------------------------------------------------------------------------------------------------------------------
# Video: sampling policy, geometry, content
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("seconds", "fps"),
    [(3, 25), (3.5, 10), (2.5, 10), (0.5, 10), (0.3, 10)],
    ids=["75-frames", "35-frames-odd", "25-frames-odd", "5-frames", "3-frames"],
)
def test_frame_count_follows_qwen_policy(tmp_path, seconds, fps):
    path = write_synthetic_clip(tmp_path / "clip.mp4", seconds=seconds, fps=fps, size=(56, 140), audio=False)
    total, expected = qwen_sampling(seconds, fps)
    video = load_video(path)
    assert video.frames.shape[0] == expected
    assert video.frames.shape[0] % 2 == 0  # Qwen's temporal patch
    assert video.fps == pytest.approx(expected / total * fps)
    assert video.audio is None


def test_single_frame_clip_repeats_the_frame(tmp_path):
    # qwen-omni-utils refuses fewer than 2 frames; the loader repeats the frame (as qwen-omni-utils does for lists).
    path = write_synthetic_clip(tmp_path / "one.mp4", seconds=0.1, fps=10, audio=False)
    video = load_video(path)
    assert video.frames.shape[0] == 2
    assert torch.equal(video.frames[0], video.frames[1])
    assert video.fps == pytest.approx(2 / 1 * 10)


@pytest.mark.parametrize("container", ["mp4", "mkv", "webm"])
def test_video_geometry_and_rate(media, container):
    seconds = 2 if container == "webm" else 3
    total, expected = qwen_sampling(seconds, 25)
    assert (total, expected) == ((50, 4) if container == "webm" else (75, 6))
    video = load_video(media[container])
    count, channels, height, width = video.frames.shape
    assert (count, channels) == (expected, 3)
    assert video.frames.dtype == torch.float32
    assert height % 28 == 0 and width % 28 == 0
    sampling = VideoSampling()
    assert sampling.min_pixels <= height * width <= sampling.max_pixels
    assert 0 <= float(video.frames.min()) and float(video.frames.max()) <= 255
    assert video.fps == pytest.approx(expected / total * 25) == 2.0


def test_custom_sampling_bounds_are_respected(media):
    sampling = VideoSampling(fps=1.0, min_pixels=4 * 28 * 28, max_pixels=16 * 28 * 28)
    video = load_video(media["mp4"], sampling)
    count, _, height, width = video.frames.shape
    assert count == smart_nframes({"fps": 1.0}, total_frames=75, video_fps=25) == 4  # 3 frames, raised to 4
    assert video.fps == pytest.approx(4 / 75 * 25)
    assert height % 28 == 0 and width % 28 == 0
    assert sampling.min_pixels <= height * width <= sampling.max_pixels


def test_default_sampling_comes_from_the_processor(media, tmp_path):
    processor = tiny_processor()
    assert video_sampling_of(processor) == VideoSampling()  # Qwen's processor config holds Qwen's pixel bounds
    processor.video_processor.size = {"shortest_edge": 16 * 28 * 28, "longest_edge": 16 * 28 * 28}
    processor.save_pretrained(tmp_path)
    reloaded = AutoProcessor.from_pretrained(tmp_path)
    assert video_sampling_of(reloaded) == VideoSampling(min_pixels=16 * 28 * 28, max_pixels=16 * 28 * 28)
    # The pipeline's and the collator's shared preprocessing samples at the checkpoint's frame size by default.
    grid = prepare_omni_inputs(reloaded, {"video": media["mp4"], "question": "?"})["video_grid_thw"]
    assert grid[0, 1:].tolist() == [8, 8]  # 112 x 112 frames: 4 x 4 merged tokens of 28 x 28 pixels
    processor.video_processor.size = {"shortest_edge": 2 * 12544, "longest_edge": 12544}
    with pytest.raises(ValueError, match="shortest_edge"):
        video_sampling_of(processor)


@pytest.mark.parametrize("container", ["mp4", "mkv", "webm"])
def test_frames_show_the_moving_square(media, container):
    fps, seconds = 25, (2 if container == "webm" else 3)
    total, count = qwen_sampling(seconds, fps)
    frames = load_video(media[container]).frames
    indices = torch.linspace(0, total - 1, count).round().long().tolist()  # Qwen's frame indices
    centres = []
    for frame, index in zip(frames, indices, strict=True):
        colour, centre = square(frame)
        expected = SQUARE_COLORS[int(index / fps // 2) % len(SQUARE_COLORS)]
        assert np.abs(colour - expected).max() < 40, (index, colour, expected)
        centres.append(centre)
    width = frames.shape[-1]
    assert centres == sorted(centres) and len(set(centres)) == len(centres)  # moves left to right
    assert centres[0] < width / 3 < 2 * width / 3 < centres[-1]


def test_square_changes_colour_after_two_seconds(media):
    frames = load_video(media["mp4"]).frames  # indices 0, 15, 30, 44, 59, 74 of a 25 fps clip
    first, _ = square(frames[0])
    late, _ = square(frames[-1])
    assert np.abs(first - SQUARE_COLORS[0]).max() < 40  # red at 0 s
    assert np.abs(late - SQUARE_COLORS[1]).max() < 40  # green at 2.96 s


def test_containers_decode_the_same_frames(media):
    mp4 = load_video(media["mp4"]).frames
    mkv = load_video(media["mkv"]).frames
    assert torch.allclose(mp4, mkv, atol=1.0)  # the same H.264 stream in another container
    webm = load_video(media["webm"]).frames  # VP8: another codec, the same picture
    assert (webm[0] - mp4[0]).abs().mean() < 8


def test_frames_in_memory_follow_the_same_policy(media):
    decoded = []
    with av.open(media["mp4_10fps"]) as container:
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    array = np.stack(decoded)  # (35, H, W, 3) at 10 fps
    from_file = load_video(media["mp4_10fps"], load_audio=False)
    from_array = load_video(array, source_fps=10)
    assert from_array.frames.shape == from_file.frames.shape
    assert from_array.fps == pytest.approx(from_file.fps)
    assert torch.allclose(from_array.frames, from_file.frames)
    channels_first = load_video(torch.from_numpy(array).permute(0, 3, 1, 2), source_fps=10)
    assert torch.equal(channels_first.frames, from_array.frames)


# ---------------------------------------------------------------------------------------------------------------------
# Audio
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("container", ["mp4", "mkv", "webm"])
def test_audio_track_of_a_video(media, container):
    seconds = 2 if container == "webm" else 3
    audio = load_video(media[container]).audio
    assert audio is not None and audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - seconds * SAMPLING_RATE) <= AUDIO_SLACK
    assert dominant_frequency(audio[3200:28800]) == pytest.approx(FIRST_PITCH, abs=2)  # 0.2 .. 1.8 s


def test_audio_track_follows_the_picture(media):
    """The tone changes pitch together with the square's colour (2 s): the track is aligned and complete."""
    audio = load_video(media["mp4"]).audio
    assert dominant_frequency(audio[3200:28800]) == pytest.approx(FIRST_PITCH, abs=2)
    assert dominant_frequency(audio[35200:46400]) == pytest.approx(SECOND_PITCH, abs=3)  # 2.2 .. 2.9 s


@pytest.mark.parametrize(
    "container",
    [
        "mp4",
        "mkv",
        "webm",
    ],
)
def test_audio_track_equals_load_audio(media, container):
    """The track decoded by `load_video` is the same as `load_audio` of the file (PyAV from the start)."""
    from_video = load_video(media[container]).audio
    from_file = load_audio(media[container])
    assert len(from_video) == len(from_file)
    np.testing.assert_allclose(from_video, from_file, atol=1e-6)


def test_no_audio_for_a_silent_video_or_when_not_requested(media):
    assert load_video(media["silent"]).audio is None
    assert load_video(media["mp4"], load_audio=False).audio is None


def test_resampled_sine_keeps_its_frequency(tmp_path):
    rate, frequency = 44100, 1000.0
    wave = 0.5 * np.sin(2 * np.pi * frequency * np.arange(rate) / rate)
    soundfile.write(tmp_path / "sine.wav", wave.astype(np.float32), rate)
    audio = load_audio(tmp_path / "sine.wav")
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - SAMPLING_RATE) <= 1
    assert dominant_frequency(audio) == pytest.approx(frequency, abs=2)
    assert np.abs(audio).max() == pytest.approx(0.5, abs=0.05)  # resampling keeps the level
    assert len(load_audio(tmp_path / "sine.wav", sampling_rate=8000)) == pytest.approx(8000, abs=1)


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg", ".mp3"])
def test_audio_files_through_soundfile(tmp_path, monkeypatch, suffix):
    if suffix[1:].upper() not in soundfile.available_formats():
        pytest.skip(f"this libsndfile cannot write {suffix}")
    rate, frequency = 22050, 660.0
    wave = (0.3 * np.sin(2 * np.pi * frequency * np.arange(rate) / rate)).astype(np.float32)
    soundfile.write(tmp_path / f"tone{suffix}", wave, rate)

    def no_pyav(*args, **kwargs):
        raise AssertionError("a format soundfile reads went through PyAV")

    monkeypatch.setattr(av, "open", no_pyav)
    audio = load_audio(os.fspath(tmp_path / f"tone{suffix}"))
    assert abs(len(audio) - SAMPLING_RATE) <= (0 if suffix in (".wav", ".flac") else AUDIO_SLACK)
    assert dominant_frequency(audio) == pytest.approx(frequency, abs=2)
    if suffix == ".flac":  # lossless: the same samples as the wav (16-bit quantisation aside)
        soundfile.write(tmp_path / "tone.wav", wave, rate)
        np.testing.assert_allclose(audio, load_audio(tmp_path / "tone.wav"), atol=1e-4)


def write_m4a(path, seconds: float = 1.0, rate: int = 22050, frequency: float = 660.0) -> str:
    wave = (0.3 * np.sin(2 * np.pi * frequency * np.arange(round(seconds * rate)) / rate)).astype(np.float32)
    with av.open(os.fspath(path), mode="w") as container:
        stream = container.add_stream("aac", rate=rate, layout="mono")
        for start in range(0, len(wave), 1024):
            piece = np.ascontiguousarray(wave[None, start : start + 1024])
            frame = av.AudioFrame.from_ndarray(piece, format="flt", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return os.fspath(path)


@pytest.fixture
def pyav_opens(monkeypatch):
    """Paths `av.open` was called with during the test."""
    opened, real_open = [], av.open

    def spy(path, *args, **kwargs):
        opened.append(os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(av, "open", spy)
    return opened


def test_formats_soundfile_cannot_read_go_through_pyav(tmp_path, media, pyav_opens):
    path = write_m4a(tmp_path / "tone.m4a")
    with pytest.raises(Exception):  # noqa: B017  (the precondition: libsndfile does not read AAC)
        soundfile.read(path)
    pyav_opens.clear()
    audio = load_audio(path)
    assert pyav_opens == [path]
    assert abs(len(audio) - SAMPLING_RATE) <= AUDIO_SLACK
    assert dominant_frequency(audio) == pytest.approx(660.0, abs=2)

    pyav_opens.clear()
    track = load_audio(media["mp4"])  # the audio track of a video given to load_audio
    assert pyav_opens == [media["mp4"]]
    np.testing.assert_array_equal(track, load_video(media["mp4"]).audio)


@pytest.mark.parametrize("layout", ["channels-first", "channels-last", "torch"])
def test_stereo_arrays_are_averaged(layout):
    rng = np.random.default_rng(0)
    left, right = (0.2 * rng.standard_normal((2, 4000))).astype(np.float32)  # samples in [-1, 1]
    stereo = np.stack([left, right])
    source = {"channels-first": stereo, "channels-last": stereo.T, "torch": torch.from_numpy(stereo)}[layout]
    audio = load_audio(source, source_sampling_rate=SAMPLING_RATE)
    np.testing.assert_allclose(audio, (left + right) / 2, atol=1e-6)


def test_stereo_file_is_averaged(tmp_path):
    rng = np.random.default_rng(1)
    stereo = (0.2 * rng.standard_normal((4000, 2))).astype(np.float32)  # (samples, channels) as soundfile writes
    soundfile.write(tmp_path / "stereo.wav", stereo, SAMPLING_RATE, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "stereo.wav"), stereo.mean(1), atol=1e-6)


def test_array_is_resampled_from_its_rate():
    wave = np.sin(2 * np.pi * 440.0 * np.arange(48000) / 48000).astype(np.float32)
    audio = load_audio(wave, source_sampling_rate=48000)
    assert abs(len(audio) - SAMPLING_RATE) <= 1
    assert dominant_frequency(audio) == pytest.approx(440.0, abs=2)


def test_array_without_sampling_rate_is_refused():
    with pytest.raises(ValueError, match="without its sampling rate"):
        load_audio(np.zeros(1600, dtype=np.float32))


@pytest.mark.parametrize(
    ("dtype", "offset", "scale"),
    [(np.int16, 0, 2**15), (np.int32, 0, 2**31), (np.int8, 0, 2**7), (np.uint8, 128, 2**7)],
    ids=["int16", "int32", "int8", "uint8"],
)
def test_integer_pcm_is_rescaled_to_unit_range(dtype, offset, scale):
    """Integer PCM (uint8 centred at 128) gives the waveform its float form gives: same features, same answer."""
    wave = 0.5 * np.sin(2 * np.pi * 440.0 * np.arange(4000) / SAMPLING_RATE)
    pcm = np.round(wave * (scale - 1) + offset).astype(dtype)
    audio = load_audio(pcm, source_sampling_rate=SAMPLING_RATE)
    assert audio.dtype == np.float32 and float(np.abs(audio).max()) <= 1.0
    np.testing.assert_allclose(audio, (pcm.astype(np.float64) - offset) / scale, atol=1e-6)
    np.testing.assert_allclose(audio, wave, atol=2 / 2**7)


def test_float_frames_in_unit_range_equal_uint8_frames():
    """Frames in memory as floats in [0, 1] are the same picture as their uint8 form (not a black video)."""
    frames = np.random.default_rng(0).integers(0, 256, (4, 56, 84, 3), dtype=np.uint8)
    from_uint8 = load_video(frames, source_fps=2)
    from_float = load_video(frames.astype(np.float32) / 255, source_fps=2)
    assert torch.equal(from_float.frames, from_uint8.frames)


def test_loaded_frames_can_be_passed_again():
    """`LoadedVideo.frames` is accepted back as frames (the same picture), and so are float frames on the 0..255 scale
    with the overshoot of bicubic resizing (clipped, as the uint8 frames of a decoder would be)."""
    frames = np.random.default_rng(0).integers(0, 256, (4, 56, 84, 3), dtype=np.uint8)
    video = load_video(frames, source_fps=2)
    again = load_video(video.frames, source_fps=video.fps)
    assert again.fps == pytest.approx(video.fps)
    assert torch.equal(again.frames, video.frames)
    ringing = resize(
        torch.from_numpy(frames).permute(0, 3, 1, 2).float(), [112, 168], InterpolationMode.BICUBIC, antialias=True
    )
    assert float(ringing.min()) < 0 and float(ringing.max()) > 255  # the overshoot this test is about
    clipped = ringing.round().clamp(0, 255).to(torch.uint8)
    assert torch.equal(load_video(ringing, source_fps=2).frames, load_video(clipped, source_fps=2).frames)


# ---------------------------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------------------------
def test_load_image_from_path_pil_and_arrays(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "image.png")
    for source in (
        tmp_path / "image.png",
        os.fspath(tmp_path / "image.png"),
        Image.fromarray(array),
        Image.fromarray(array).convert("RGBA"),
        array,
        array.transpose(2, 0, 1),  # (3, H, W)
        array.astype(np.float32) / 255.0,  # floats in 0..1
        torch.from_numpy(array),
    ):
        image = load_image(source)
        assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (30, 20)
        np.testing.assert_allclose(np.asarray(image), array, atol=1)


# ---------------------------------------------------------------------------------------------------------------------
# Errors name the argument and the path
# ---------------------------------------------------------------------------------------------------------------------
LOADERS = [(load_video, "video"), (load_audio, "audio"), (load_image, "image")]


@pytest.mark.parametrize(("loader", "argument"), LOADERS)
def test_missing_file(tmp_path, loader, argument):
    path = os.fspath(tmp_path / "nowhere" / "missing.mp4")
    with pytest.raises(FileNotFoundError) as error:
        loader(path)
    assert f"{argument}={path!r}" in str(error.value) and "no such file" in str(error.value)


@pytest.mark.parametrize(("loader", "argument"), LOADERS)
def test_directory(media, loader, argument):
    path = media["directory"]
    with pytest.raises(OSError) as error:
        loader(path)
    assert f"{argument}={path!r}" in str(error.value) and "directory" in str(error.value)


@pytest.mark.parametrize(("loader", "argument"), LOADERS)
def test_corrupt_file(media, loader, argument):
    path = media["corrupt"]
    with pytest.raises(ValueError) as error:
        loader(path)
    assert f"{argument}={path!r}" in str(error.value)


def test_empty_file(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    path = os.fspath(tmp_path / "empty.mp4")
    with pytest.raises(ValueError, match=f"video={path!r}"):
        load_video(path)


def test_audio_file_given_as_video(tmp_path):
    path = os.fspath(tmp_path / "tone.wav")
    soundfile.write(path, np.zeros(1600, dtype=np.float32), SAMPLING_RATE)
    with pytest.raises(ValueError) as error:
        load_video(path)
    message = str(error.value)
    assert f"video={path!r}" in message and "no video stream" in message and "audio=" in message


def test_video_without_audio_given_as_audio(media):
    path = media["silent"]
    with pytest.raises(ValueError) as error:
        load_audio(path)
    assert f"audio={path!r}" in str(error.value) and "no audio stream" in str(error.value)


def test_wrong_source_types():
    with pytest.raises(TypeError, match="audio="):
        load_audio(12)
    with pytest.raises(TypeError, match="image="):
        load_image(12)
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        load_video(np.zeros((4, 8, 8), dtype=np.uint8))


def test_invalid_sampling_policy():
    with pytest.raises(ValueError, match="fps"):
        VideoSampling(fps=0)
    with pytest.raises(ValueError, match="min_frames"):
        VideoSampling(min_frames=8, max_frames=4)


# ---------------------------------------------------------------------------------------------------------------------
# The embedded tiny processor
# ---------------------------------------------------------------------------------------------------------------------
def processor_call(processor, media) -> dict:
    """One call with every modality: text, image, audio, and a video with its audio track interleaved."""
    video = load_video(media["mp4"])
    image = load_image(np.random.default_rng(0).integers(0, 256, (56, 84, 3), dtype=np.uint8))
    messages = [
        {"role": "user", "content": [{"type": "video"}, {"type": "audio"}, {"type": "image"}, {"type": "text"}]}
    ]
    messages[0]["content"][-1]["text"] = "What color is the square?"
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    tone = np.sin(np.arange(8000) / 10).astype(np.float32)
    return processor(
        text=[prompt],
        images=[image],
        videos=[video.frames],
        audio=[video.audio, tone],
        videos_kwargs={"fps": video.fps, "do_sample_frames": False},
        load_audio_from_video=True,
        audio_from_video_indices=[0, None],
        return_tensors="pt",
    )


def test_processor_round_trip_offline(tmp_path, media):
    """save_pretrained + AutoProcessor.from_pretrained from a local directory (no network): identical outputs."""
    processor = tiny_processor()
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, Qwen2_5OmniProcessor)
    assert loaded.chat_template == processor.chat_template
    before, after = processor_call(processor, media), processor_call(loaded, media)
    assert set(before) == set(after)
    assert {"input_ids", "pixel_values", "pixel_values_videos", "input_features", "video_second_per_grid"} <= set(
        before
    )
    for key in before:
        assert torch.equal(torch.as_tensor(before[key]), torch.as_tensor(after[key])), key


def test_special_token_ids():
    processor = tiny_processor()
    tokenizer = processor.tokenizer
    for name, token in TINY_SPECIAL_TOKENS.items():
        assert tokenizer.convert_tokens_to_ids(token) == IDS[name], token
        assert tokenizer(f"hello {token} world", add_special_tokens=False).input_ids.count(IDS[name]) == 1
    assert (processor.image_token_id, processor.video_token_id, processor.audio_token_id) == (
        IDS["image"],
        IDS["video"],
        IDS["audio"],
    )
    assert tokenizer.pad_token_id == IDS["pad"] == IDS["endoftext"]
    assert tokenizer.eos_token_id == IDS["im_end"]
    assert tokenizer.padding_side == "left"


def test_special_token_ids_match_the_model_config(pipe):
    config, processor = pipe.model.config, pipe.processor
    assert config.image_token_id == processor.image_token_id
    assert config.video_token_id == processor.video_token_id
    assert config.audio_token_id == processor.audio_token_id
    assert config.vision_start_token_id == IDS["vision_start"]
    assert config.audio_start_token_id == IDS["audio_start"]
    assert config.get_text_config().vocab_size > max(IDS.values())


def test_chat_template_renders_turns_and_placeholders():
    processor = tiny_processor()
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {
            "role": "user",
            "content": [
                {"type": "video", "video": "clip.mp4"},
                {"type": "audio", "audio": "a.wav"},
                {"type": "image", "image": "b.png"},
                {"type": "text", "text": "What?"},
            ],
        },
        {"role": "assistant", "content": "A square."},
        {"role": "user", "content": "Why?"},
    ]
    rendered = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n<|vision_bos|><|VIDEO|><|vision_eos|><|audio_bos|><|AUDIO|><|audio_eos|>"
        "<|vision_bos|><|IMAGE|><|vision_eos|>What?<|im_end|>\n"
        "<|im_start|>assistant\nA square.<|im_end|>\n"
        "<|im_start|>user\nWhy?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # Without a system turn, Qwen2.5-Omni's default system prompt; without the generation prompt, no assistant turn.
    rendered = processor.apply_chat_template(messages[1:2], tokenize=False, add_generation_prompt=False)
    assert rendered.startswith(f"<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n")
    assert rendered.endswith("What?<|im_end|>\n")


def media_block(input_ids: list[int]) -> list[int]:
    """The tokens from the first media start token to the last media end token."""
    starts = {IDS["vision_start"], IDS["audio_start"]}
    ends = {IDS["vision_end"], IDS["audio_end"]}
    first = next(i for i, token in enumerate(input_ids) if token in starts)
    last = max(i for i, token in enumerate(input_ids) if token in ends)
    return input_ids[first : last + 1]


@pytest.mark.parametrize("clip", ["mp4", "mp4_10fps", "silent", "audio-only"])
def test_placeholder_layout_equals_tiny_inputs(pipe, media, clip):
    """The processor, called as the pipeline calls it, lays out placeholders exactly as `tiny_inputs` does."""
    request = {"audio": media["mp4"]} if clip == "audio-only" else {"video": media[clip]}
    processed = pipe.preprocess({**request, "question": "What happens?"})
    mel = int(processed["feature_attention_mask"].sum()) if "feature_attention_mask" in processed else None
    if clip == "audio-only":
        segment, seconds_per_grid = ("audio", mel), 1.0
    else:
        t, h, w = processed["video_grid_thw"][0].tolist()
        segment, seconds_per_grid = ("video", t, h, w, mel), float(processed["video_second_per_grid"][0])
    expected = media_block(tiny_inputs([[segment]], seconds_per_grid=seconds_per_grid)["input_ids"][0].tolist())
    actual = media_block(processed["input_ids"][0].tolist())
    assert actual == expected
    runs = [token for token, _ in itertools.groupby(actual)]
    if clip in ("mp4", "mp4_10fps"):  # interleaved in 2-second chunks: video, audio, video, audio
        assert runs[2:-2] == [IDS["video"], IDS["audio"]] * 2
        assert processed["use_audio_in_video"] is True


def test_short_audio_padding_gives_the_processors_features(pipe, tmp_path):
    """The pipeline pads audio to its length + 400 samples instead of 300 s: the same features on the valid frames."""
    length = 2 * SAMPLING_RATE + 123  # odd, not a multiple of the 160-sample hop
    rng = np.random.default_rng(0)
    wave = 0.3 * np.sin(2 * np.pi * 440.0 * np.arange(length) / SAMPLING_RATE) + 0.01 * rng.standard_normal(length)
    wave[-300:] *= 3  # loud last frames: any effect of the padding shows there
    soundfile.write(tmp_path / "odd.wav", wave.astype(np.float32), SAMPLING_RATE, subtype="FLOAT")

    short = pipe.preprocess({"audio": os.fspath(tmp_path / "odd.wav"), "question": "What do you hear?"})
    processor = pipe.processor
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "What do you hear?"}]}],
        tokenize=False,
        add_generation_prompt=True,
    )
    full = processor(text=[prompt], audio=[load_audio(tmp_path / "odd.wav")], return_tensors="pt")
    assert full["input_features"].shape[-1] == processor.feature_extractor.n_samples // 160  # 300 s of frames
    assert short["input_features"].shape[-1] == (length + 400) // 160  # only what the clip needs
    valid = int(full["feature_attention_mask"].sum())
    assert valid == int(short["feature_attention_mask"].sum()) == -(-length // 160)
    assert bool(short["feature_attention_mask"][0, :valid].all())
    torch.testing.assert_close(
        short["input_features"][..., :valid], full["input_features"][..., :valid], atol=1e-5, rtol=0
    )
    assert torch.equal(short["input_ids"], full["input_ids"])


@pytest.mark.parametrize(("clip", "source_fps"), [("mp4", 25), ("mp4_10fps", 10)])
def test_video_second_per_grid_uses_the_real_fps(pipe, media, clip, source_fps):
    processed = pipe.preprocess({"video": media[clip], "question": "When does the colour change?"})
    video = load_video(media[clip], load_audio=False)
    temporal_patch = pipe.processor.video_processor.temporal_patch_size
    assert processed["video_second_per_grid"].tolist() == pytest.approx([temporal_patch / video.fps])
    if source_fps == 10:  # 35 frames at 10 fps -> 6 frames at 1.714 fps: not the processor's 2 fps default
        assert video.fps == pytest.approx(6 / 35 * 10)
        assert float(processed["video_second_per_grid"][0]) == pytest.approx(7 / 6)


def test_video_second_per_grid_of_frames_in_memory(pipe, media):
    with av.open(media["mp4_10fps"]) as container:
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    processed = pipe.preprocess({"video": frames, "video_fps": 10, "question": "What happens?"})
    assert float(processed["video_second_per_grid"][0]) == pytest.approx(2 / (6 / 35 * 10))
