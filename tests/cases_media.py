"""Bad-input rows for the media surface (walked by test_bad_inputs.py): the loaders (`load_audio`, `load_video`,
`load_image`, `VideoSampling`), request processing (`prepare_omni_inputs`) and the `omni-qa` pipeline's call and
arguments. Each row builds what it needs in its own temporary directory (small synthetic files, milliseconds); the
tiny pipeline and processor are built once."""

import functools
import os
from pathlib import Path

import av
import numpy as np
import soundfile
from helpers import Case
from PIL import Image
from transformers import pipeline

import omnisift_hf  # noqa: F401  (registers the "omni-qa" task)
from omnisift_hf.media import SAMPLING_RATE, VideoSampling, load_audio, load_image, load_video
from omnisift_hf.processing_omnisift import prepare_omni_inputs
from omnisift_hf.testing_utils import tiny_model, tiny_processor
from omnisift_hf.tools.synthetic import mux_audio, mux_video, write_synthetic_audio, write_synthetic_clip

QUESTION = "What happens?"


@functools.cache
def _processor():
    return tiny_processor()


@functools.cache
def _pipe():
    return pipeline("omni-qa", model=tiny_model(), processor=_processor())


def _ask(inputs=None, **request):
    """One pipeline call with a one-token answer (the rows are about the inputs, not the answer): `inputs` (a dict,
    chat messages), or keyword fields with a default question."""
    if inputs is None:
        request.setdefault("question", QUESTION)
    request.setdefault("max_new_tokens", 1)
    return _pipe()(inputs, **request)


def _prepare(request, **options):
    return prepare_omni_inputs(_processor(), {"question": QUESTION, **request}, **options)


def _clip(tmp, name="clip.mp4", **kwargs):
    return write_synthetic_clip(tmp / name, seconds=kwargs.pop("seconds", 1), **kwargs)


def _corrupt(tmp, name="corrupt.mp4"):
    """Random bytes under a video name: decoding them fails, so a row using it shows what was checked first."""
    path = tmp / name
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return os.fspath(path)


def _clip_with_pcm_track(tmp, samples: int):
    """A 1 s video whose audio track holds exactly `samples` 16 kHz samples (PCM in Matroska: no codec padding)."""
    path = os.fspath(tmp / f"track{samples}.mkv")
    with av.open(path, "w") as container:
        video = container.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 112, 112, "yuv420p"
        audio = container.add_stream("pcm_s16le", rate=SAMPLING_RATE, layout="mono")
        mux_video(container, video, (np.full((112, 112, 3), 100, dtype=np.uint8) for _ in range(10)))
        if samples:
            mux_audio(container, audio, (8000 * np.sin(np.arange(samples) / 5)).astype(np.int16))
    return path


def _truncated_mkv(tmp):
    """A 4 s Matroska clip cut after 30% of its bytes: its header still declares 4 s, about 1.2 s decodes."""
    data = Path(_clip(tmp, "full.mkv", seconds=4)).read_bytes()
    path = tmp / "truncated.mkv"
    path.write_bytes(data[: int(len(data) * 0.3)])
    return os.fspath(path)


def _empty(tmp, name):
    (tmp / name).write_bytes(b"")
    return os.fspath(tmp / name)


def _zero_length_wav(tmp):
    soundfile.write(tmp / "zero.wav", np.zeros(0, dtype=np.float32), SAMPLING_RATE)
    return os.fspath(tmp / "zero.wav")


def _frames(value=100, dtype=np.uint8, count=4):
    return np.full((count, 56, 56, 3), value, dtype=dtype)


def _wave(samples=SAMPLING_RATE, dtype=np.float32, value=0.1):
    return np.full(samples, value, dtype=dtype)


def _chat(*items, role="user"):
    return [{"role": role, "content": list(items)}]


CASES: list[Case] = [
    # ---- audio arrays: values, dtypes, shapes, rates --------------------------------------------------------------
    Case(
        "media_audio_nan_samples",
        lambda tmp: _ask(audio=_wave(value=np.nan), sampling_rate=SAMPLING_RATE),
        ValueError,
        ("audio", "NaN or infinite", "finite samples"),
    ),
    Case(
        "media_audio_inf_samples_in_load_audio",
        lambda tmp: load_audio(np.array([0.0, np.inf] * 800, dtype=np.float32), source_sampling_rate=SAMPLING_RATE),
        ValueError,
        ("audio", "800 of the 1600", "NaN or infinite"),
    ),
    Case(
        "media_audio_int_pcm_cast_to_float",
        lambda tmp: load_audio(_wave(value=16000.0), source_sampling_rate=SAMPLING_RATE),
        ValueError,
        ("audio", "peak of 16000", "[-1, 1]", "32768"),
    ),
    Case(
        "media_audio_int64_samples",
        lambda tmp: load_audio(_wave(dtype=np.int64, value=1000), source_sampling_rate=SAMPLING_RATE),
        TypeError,
        ("audio", "int64", "int16"),
    ),
    Case(
        "media_audio_bool_samples",
        lambda tmp: _ask(audio=_wave(dtype=bool, value=True), sampling_rate=SAMPLING_RATE),
        TypeError,
        ("audio", "bool", "float samples in [-1, 1]"),
    ),
    Case(
        "media_audio_empty_array",
        lambda tmp: _ask(audio=_wave(samples=0), sampling_rate=SAMPLING_RATE),
        ValueError,
        ("audio", "no samples", "(0,)"),
    ),
    Case(
        "media_audio_three_dimensional_array",
        lambda tmp: load_audio(np.zeros((2, 2, 100), dtype=np.float32), source_sampling_rate=SAMPLING_RATE),
        ValueError,
        ("audio", "(2, 2, 100)", "(channels, samples)"),
    ),
    Case(
        "media_audio_array_too_short_for_a_token",
        lambda tmp: _prepare({"audio": _wave(samples=100), "sampling_rate": SAMPLING_RATE}),
        None,
        ("audio=<ndarray>", "100 samples", "too short for one audio token", "321", "longer clip"),
    ),
    Case(
        "media_audio_file_too_short_for_a_token",
        lambda tmp: _prepare({"audio": write_synthetic_audio(tmp / "blip.wav", seconds=0.01)}),
        None,
        ("blip.wav", "160 samples", "too short for one audio token"),
    ),
    Case(
        "media_audio_without_its_rate",
        lambda tmp: _ask(audio=_wave()),
        ValueError,
        ("audio", "without its sampling rate", "sampling_rate"),
    ),
    Case(
        "media_audio_rate_zero",
        lambda tmp: _ask(audio=_wave(), sampling_rate=0),
        ValueError,
        ("sampling_rate=0", "positive"),
    ),
    Case(
        "media_audio_rate_nan",
        lambda tmp: _ask(audio=_wave(), sampling_rate=float("nan")),
        ValueError,
        ("sampling_rate=nan", "positive, finite"),
    ),
    Case(
        "media_audio_rate_fractional",
        lambda tmp: load_audio(_wave(), source_sampling_rate=16000.5),
        ValueError,
        ("source_sampling_rate=16000.5", "whole number"),
    ),
    Case(
        "media_audio_rate_string",
        lambda tmp: load_audio(_wave(), source_sampling_rate="16k"),
        TypeError,
        ("source_sampling_rate='16k'", "positive number"),
    ),
    Case(
        "media_audio_target_rate_zero",
        lambda tmp: load_audio(_wave(), sampling_rate=0, source_sampling_rate=SAMPLING_RATE),
        ValueError,
        ("sampling_rate=0", "positive"),
    ),
    Case(
        "media_audio_rate_with_a_file",
        lambda tmp: _ask(audio=write_synthetic_audio(tmp / "tone.wav", seconds=1), sampling_rate=8000),
        ValueError,
        (
            "sampling_rate=8000",
            "no audio array of the request uses it",
            "files carry their own rate",
            "Leave sampling_rate out",
        ),
    ),
    Case(
        "media_audio_rate_with_a_file_in_load_audio",
        lambda tmp: load_audio(write_synthetic_audio(tmp / "tone.wav", seconds=1), source_sampling_rate=8000),
        ValueError,
        ("source_sampling_rate=8000", "tone.wav", "carries its own rate"),
    ),
    # ---- audio sources: types and files ----------------------------------------------------------------------------
    Case(
        "media_audio_list_of_samples",
        lambda tmp: load_audio([0.0] * 1600, source_sampling_rate=SAMPLING_RATE),
        TypeError,
        ("audio=<list>", "array/tensor of samples"),
    ),
    Case("media_audio_none", lambda tmp: load_audio(None), TypeError, ("audio=None", "expected a path")),
    Case(
        "media_audio_missing_file",
        lambda tmp: _ask(audio=os.fspath(tmp / "missing.wav")),
        FileNotFoundError,
        ("audio=", "missing.wav", "no such file"),
    ),
    Case(
        "media_audio_directory",
        lambda tmp: load_audio(tmp),
        IsADirectoryError,
        ("audio=", "is a directory", "media file"),
    ),
    Case(
        "media_audio_empty_file",
        lambda tmp: load_audio(_empty(tmp, "empty.wav")),
        ValueError,
        ("audio=", "empty.wav", "empty file (0 bytes)"),
    ),
    Case(
        "media_audio_zero_length_wav",
        lambda tmp: load_audio(_zero_length_wav(tmp)),
        ValueError,
        ("audio=", "zero.wav", "no audio samples"),
    ),
    Case(
        "media_audio_file_without_sound",
        lambda tmp: load_audio(_clip(tmp, "silent.mp4", audio=False)),
        ValueError,
        ("audio=", "silent.mp4", "no audio stream", "file with sound"),
    ),
    # ---- video frames in memory ------------------------------------------------------------------------------------
    Case(
        "media_video_nan_frames",
        lambda tmp: _ask(video=_frames(np.nan, np.float32), video_fps=2),
        ValueError,
        ("video", "NaN or infinite pixel", "uint8"),
    ),
    Case(
        "media_video_int16_frames_out_of_range",
        lambda tmp: load_video(_frames(1000, np.int16)),
        ValueError,
        ("video", "0..255", "1000"),
    ),
    Case(
        "media_video_normalised_frames",
        lambda tmp: load_video(np.random.default_rng(0).normal(size=(4, 56, 56, 3)).astype(np.float32) / 2),
        ValueError,
        ("video", "neither in [0, 1] nor on the 0..255 scale", "normalised"),
    ),
    Case(
        "media_video_bool_frames",
        lambda tmp: load_video(_frames(True, bool)),
        TypeError,
        ("video", "torch.bool", "uint8"),
    ),
    Case(
        "media_video_zero_frames",
        lambda tmp: _ask(video=_frames(count=0), video_fps=2),
        ValueError,
        ("video", "no frames", "(0, 56, 56, 3)"),
    ),
    Case(
        "media_video_frames_without_channels",
        lambda tmp: load_video(np.zeros((4, 56, 56), dtype=np.uint8)),
        ValueError,
        ("video", "(T, H, W, 3)", "(4, 56, 56)"),
    ),
    Case(
        "media_video_frames_aspect_ratio",
        lambda tmp: load_video(np.zeros((4, 2, 500, 3), dtype=np.uint8)),
        ValueError,
        ("video", "500x2", "200:1"),
    ),
    Case(
        "media_video_list_of_frames_of_two_sizes",
        lambda tmp: load_video([np.zeros((56, 56, 3), np.uint8), np.zeros((28, 56, 3), np.uint8)]),
        ValueError,
        ("video", "differ in shape", "one size"),
    ),
    Case("media_video_empty_list", lambda tmp: load_video([]), ValueError, ("video=[]", "at least one frame")),
    Case(
        "media_video_fps_zero",
        lambda tmp: _ask(video=_frames(), video_fps=0),
        ValueError,
        ("video_fps=0", "positive"),
    ),
    Case(
        "media_video_fps_negative_in_load_video",
        lambda tmp: load_video(_frames(), source_fps=-1),
        ValueError,
        ("source_fps=-1", "positive, finite"),
    ),
    Case(
        "media_video_fps_nan_in_a_chat_item",
        lambda tmp: _ask(
            inputs=_chat({"type": "video", "video": _frames(), "fps": float("nan")}, {"type": "text", "text": "Hi?"})
        ),
        ValueError,
        ("fps=nan", "frames per second"),
    ),
    # ---- video sources: types and files ----------------------------------------------------------------------------
    Case("media_video_int", lambda tmp: _ask(video=3), TypeError, ("video=3", "expected a path")),
    Case("media_video_bytes", lambda tmp: load_video(b"\x00\x01"), TypeError, ("video=<bytes>", "frames in memory")),
    Case(
        "media_video_pil_image",
        lambda tmp: load_video(Image.new("RGB", (56, 56))),
        TypeError,
        ("video=<Image>", "image="),
    ),
    Case(
        "media_video_list_of_paths",
        lambda tmp: load_video([_clip(tmp)]),
        TypeError,
        ("video: frame 0", "clip.mp4", "several `video` items"),
    ),
    Case(
        "media_video_missing_file",
        lambda tmp: _ask(video=os.fspath(tmp / "missing.mp4")),
        FileNotFoundError,
        ("video=", "missing.mp4", "no such file"),
    ),
    Case(
        "media_video_directory",
        lambda tmp: _ask(video=os.fspath(tmp)),
        IsADirectoryError,
        ("video=", "is a directory", "media file"),
    ),
    Case(
        "media_video_empty_file",
        lambda tmp: _ask(video=_empty(tmp, "empty.mp4")),
        ValueError,
        ("video=", "empty.mp4", "empty file (0 bytes)"),
    ),
    Case(
        "media_video_corrupt_file",
        lambda tmp: load_video(_corrupt(tmp)),
        ValueError,
        ("video=", "corrupt.mp4", "not a media file", ".mp4, .mkv"),
    ),
    Case(
        "media_video_file_without_video_stream",
        lambda tmp: _ask(video=write_synthetic_audio(tmp / "tone.wav", seconds=1)),
        ValueError,
        ("video=", "tone.wav", "no video stream", "audio="),
    ),
    Case(
        "media_video_fps_with_a_file",
        lambda tmp: _ask(video=_clip(tmp), video_fps=10),
        ValueError,
        (
            "video_fps=10",
            "no video array of the request uses it",
            "files carry their own rate",
            "VideoSampling(fps=...)",
        ),
    ),
    Case(
        "media_video_fps_item_on_a_file",
        lambda tmp: _ask(
            inputs=_chat({"type": "video", "video": _clip(tmp), "fps": 1.0}, {"type": "text", "text": "Hi?"})
        ),
        ValueError,
        ("fps=1.0", "clip.mp4", "carries its own rate", "VideoSampling(fps=...)"),
    ),
    Case(
        "media_video_truncated_file",
        lambda tmp: load_video(_truncated_mkv(tmp)),
        None,
        ("truncated.mkv", "declares 4.1 s", "1.2 s", "truncated"),
    ),
    Case(
        "media_video_audio_track_too_short_for_a_token",
        lambda tmp: _prepare({"video": _clip_with_pcm_track(tmp, 100)}),
        ValueError,
        ("track100.mkv", "100 samples", "too short for one audio token", "use_audio_in_video=False"),
    ),
    Case(
        "media_video_audio_track_without_samples",
        lambda tmp: _prepare({"video": _clip_with_pcm_track(tmp, 0)}),
        None,
        ("track0.mkv", "audio track without samples", "without sound"),
    ),
    Case(
        "media_video_with_and_without_sound_in_one_request",
        lambda tmp: _ask(video=[_clip(tmp), _clip(tmp, "silent.mp4", audio=False)]),
        ValueError,
        ("one request mixes", "separate requests", "use_audio_in_video=False"),
    ),
    # ---- images ----------------------------------------------------------------------------------------------------
    Case(
        "media_image_nan_pixels",
        lambda tmp: _ask(image=np.full((28, 28, 3), np.nan, dtype=np.float32)),
        ValueError,
        ("image", "NaN or infinite pixel"),
    ),
    Case(
        "media_image_int16_out_of_range",
        lambda tmp: load_image(np.full((28, 28, 3), 1000, dtype=np.int16)),
        ValueError,
        ("image", "0..255", "1000"),
    ),
    Case(
        "media_image_empty_array",
        lambda tmp: load_image(np.zeros((0, 0, 3), dtype=np.uint8)),
        ValueError,
        ("image", "empty picture", "0x0"),
    ),
    Case(
        "media_image_aspect_ratio",
        lambda tmp: _ask(image=np.zeros((28, 28 * 250, 3), dtype=np.uint8)),
        ValueError,
        ("image", "7000x28", "200:1", "Crop or pad"),
    ),
    Case("media_image_int", lambda tmp: _ask(image=3), TypeError, ("image=3", "a PIL image")),
    Case(
        "media_image_corrupt_file",
        lambda tmp: load_image(_corrupt(tmp, "corrupt.png")),
        ValueError,
        ("image=", "corrupt.png", "could not be read as an image"),
    ),
    # ---- VideoSampling -------------------------------------------------------------------------------------------
    Case("media_sampling_fps_nan", lambda tmp: VideoSampling(fps=float("nan")), ValueError, ("fps=nan", "above 0")),
    Case(
        "media_sampling_min_pixels_above_max",
        lambda tmp: VideoSampling(min_pixels=10**6, max_pixels=10**5),
        ValueError,
        ("min_pixels=1000000", "max_pixels=100000", "min_pixels <= max_pixels"),
    ),
    Case(
        "media_sampling_max_frames_string",
        lambda tmp: VideoSampling(max_frames="64"),
        TypeError,
        ("max_frames='64'", "whole number"),
    ),
    Case(
        "media_sampling_min_frames_above_max",
        lambda tmp: VideoSampling(min_frames=8, max_frames=4),
        ValueError,
        ("min_frames=8", "max_frames=4", "2 <= min_frames <= max_frames"),
    ),
    Case(
        "media_pipeline_video_sampling_unknown_field",
        lambda tmp: _ask(video=_corrupt(tmp), video_sampling={"fsp": 1.0}),
        TypeError,
        ("video_sampling", "'fsp'", "known", "fps"),
    ),
    Case(
        "media_pipeline_video_sampling_string",
        lambda tmp: _ask(video=_corrupt(tmp), video_sampling="fast"),
        TypeError,
        ("video_sampling='fast'", "VideoSampling"),
    ),
    # ---- pipeline call arguments: refused before any media is decoded (the video is corrupt) -----------------------
    Case(
        "media_pipeline_keep_ratio_string",
        lambda tmp: _ask(video=_corrupt(tmp), keep_ratio="0.5"),
        TypeError,
        ("keep_ratio", "'0.5'", "(0, 1]"),
    ),
    Case(
        "media_pipeline_keep_ratio_above_one",
        lambda tmp: _ask(video=_corrupt(tmp), keep_ratio=2),
        ValueError,
        ("keep_ratio", "2.0", "(0, 1]"),
    ),
    Case(
        "media_pipeline_video_keep_ratio_zero",
        lambda tmp: _ask(video=_corrupt(tmp), video_keep_ratio=0),
        ValueError,
        ("video_keep_ratio", "0.0", "(0, 1]"),
    ),
    Case(
        "media_pipeline_audio_keep_ratio_in_generate_kwargs",
        lambda tmp: _ask(video=_corrupt(tmp), generate_kwargs={"audio_keep_ratio": [0.5]}),
        TypeError,
        ("audio_keep_ratio", "[0.5]"),
    ),
    Case(
        "media_pipeline_keep_ratio_given_twice",
        lambda tmp: _ask(video=_corrupt(tmp), keep_ratio=0.5, generate_kwargs={"keep_ratio": 0.25}),
        ValueError,
        ("keep_ratio", "both directly and in `generate_kwargs`"),
    ),
    Case(
        "media_pipeline_max_new_tokens_zero",
        lambda tmp: _ask(video=_corrupt(tmp), max_new_tokens=0),
        ValueError,
        ("max_new_tokens=0", "integer >= 1"),
    ),
    Case(
        "media_pipeline_max_new_tokens_float",
        lambda tmp: _ask(video=_corrupt(tmp), max_new_tokens=1.5),
        TypeError,
        ("max_new_tokens=1.5", "integer >= 1"),
    ),
    Case(
        "media_pipeline_batch_size_zero",
        lambda tmp: _pipe()([{"video": _corrupt(tmp), "question": QUESTION}] * 2, batch_size=0),
        ValueError,
        ("batch_size=0", "integer >= 1"),
    ),
    Case(
        "media_pipeline_batch_size_string",
        lambda tmp: _pipe()([{"video": _corrupt(tmp), "question": QUESTION}] * 2, batch_size="2"),
        TypeError,
        ("batch_size='2'", "integer >= 1"),
    ),
    Case(
        "media_pipeline_num_workers_negative",
        lambda tmp: _pipe()([{"video": _corrupt(tmp), "question": QUESTION}] * 2, num_workers=-1),
        ValueError,
        ("num_workers=-1", "integer >= 0"),
    ),
    Case(
        "media_pipeline_generate_kwargs_not_a_dict",
        lambda tmp: _ask(video=_corrupt(tmp), generate_kwargs=[("do_sample", True)]),
        TypeError,
        ("generate_kwargs=[('do_sample', True)]", "dict"),
    ),
    Case(
        "media_pipeline_use_audio_in_video_string",
        lambda tmp: _ask(video=_corrupt(tmp), use_audio_in_video="no"),
        TypeError,
        ("use_audio_in_video='no'", "True, False or None"),
    ),
    Case(
        "media_pipeline_system_prompt_not_a_string",
        lambda tmp: _ask(video=_corrupt(tmp), system_prompt=3),
        TypeError,
        ("system_prompt=3", "string"),
    ),
    Case(
        "media_pipeline_system_prompt_and_a_system_turn",
        lambda tmp: _ask(
            inputs=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}],
            system_prompt="Be long.",
        ),
        ValueError,
        ("system_prompt='Be long.'", "its own system turn", "Keep one"),
    ),
    Case(
        "media_pipeline_skip_special_tokens_string",
        lambda tmp: _ask(video=_corrupt(tmp), skip_special_tokens="no"),
        TypeError,
        ("skip_special_tokens='no'", "True or False"),
    ),
    Case(
        "media_pipeline_unknown_argument",
        lambda tmp: _ask(video=_corrupt(tmp), keep_ration=0.5),
        TypeError,
        ("keep_ration", "unknown argument", "keep_ratio"),
    ),
    # ---- pipeline requests: checked, every one of a batch, before any media is decoded ----------------------------
    Case(
        "media_request_unknown_key",
        lambda tmp: _pipe()({"vidoe": _corrupt(tmp), "question": QUESTION}),
        ValueError,
        ("unknown key(s) ['vidoe']", "question", "video"),
    ),
    Case("media_request_question_not_a_string", lambda tmp: _ask(question=3), TypeError, ("question=3", "string")),
    Case(
        "media_request_empty_question",
        lambda tmp: _ask(video=_corrupt(tmp), question="  "),
        ValueError,
        ("question='  '", "non-empty question"),
    ),
    Case(
        "media_request_bad_second_request_of_a_batch",
        lambda tmp: _pipe()([{"video": _corrupt(tmp), "question": QUESTION}, {"video": _corrupt(tmp)}]),
        ValueError,
        ("question=None", "non-empty question"),
    ),
    Case(
        "media_request_empty_messages", lambda tmp: _ask(inputs={"messages": []}), ValueError, ("got []", "non-empty")
    ),
    Case(
        "media_request_messages_string",
        lambda tmp: _pipe()({"messages": "Hi?"}),
        TypeError,
        ("chat messages", "got str"),
    ),
    Case(
        "media_request_no_user_turn",
        lambda tmp: _pipe()([{"role": "system", "content": "Be brief."}]),
        ValueError,
        ("no user turn",),
    ),
    Case(
        "media_request_unknown_role",
        lambda tmp: _pipe()([{"role": "robot", "content": "Hi?"}]),
        ValueError,
        ("role='robot'", "'system', 'user', 'assistant'"),
    ),
    Case(
        "media_request_empty_user_turn",
        lambda tmp: _pipe()(_chat()),
        ValueError,
        ("turn 0 (user) is empty", "text or media"),
    ),
    Case(
        "media_request_content_not_a_list",
        lambda tmp: _pipe()([{"role": "user", "content": 3}]),
        TypeError,
        ("content=3", "string or a list of items"),
    ),
    Case(
        "media_request_text_item_without_string",
        lambda tmp: _pipe()(_chat({"type": "text", "text": None})),
        TypeError,
        ("text item", "'text': None"),
    ),
    Case(
        "media_request_qwen_sampling_key_in_an_item",
        lambda tmp: _pipe()(
            _chat({"type": "video", "video": _corrupt(tmp), "max_pixels": 12544}, {"type": "text", "text": "Hi?"})
        ),
        ValueError,
        ("video item", "['max_pixels']", "video_sampling=VideoSampling"),
    ),
    Case(
        "media_request_item_with_two_sources",
        lambda tmp: _pipe()(
            _chat({"type": "video", "video": _corrupt(tmp), "path": "b.mp4"}, {"type": "text", "text": "Hi?"})
        ),
        ValueError,
        ("several sources", "'video'", "'path'"),
    ),
    Case(
        "media_request_unsupported_item_type",
        lambda tmp: _pipe()(_chat({"type": "pdf", "pdf": "a.pdf"}, {"type": "text", "text": "Hi?"})),
        ValueError,
        ("'pdf' is not supported", "text, video, audio or image"),
    ),
]
