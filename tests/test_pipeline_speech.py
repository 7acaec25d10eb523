"""`pipeline("omni-qa")` on the full Qwen2.5-Omni (`OmniSiftOmniForConditionalGeneration`: thinker + talker +
token2wav), tiny and random, on synthetic files written during the test: text answers equal its thinker's alone,
`return_audio=True` adds a waveform per sample (a padded batch speaks as each sample alone after the same seed),
`speaker` reaches the model, bad arguments fail before any work, and `examples/speak.py` writes a readable wav."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from transformers import pipeline

import omnisift_hf
from omnisift_hf import OmniSiftForConditionalGeneration, OmniSiftOmniForConditionalGeneration
from omnisift_hf.testing_utils import tiny_omni_model, tiny_processor
from omnisift_hf.tools.synthetic import write_synthetic_audio, write_synthetic_clip

ROOT = Path(__file__).resolve().parent.parent
COUNT_KEYS = ("num_video_tokens", "num_kept_video_tokens", "num_audio_tokens", "num_kept_audio_tokens")
TEXT_KEYS = {"answer", *COUNT_KEYS, "prompt_tokens", "prefill_tokens"}
NEW_TOKENS = 4  # the thinker's reply: enough to compare answers (a spoken reply needs 2 or more), cheap on CPU
CODES = 8  # the talker's bound: 8 codec codes, 0.16 s of speech (a random talker rarely stops on its own)
SAMPLES_PER_CODE = 480  # 2 mel frames of 240 samples at 24 kHz
GREEDY_TALKER = {"talker_max_new_tokens": CODES, "talker_do_sample": False}


# ---------------------------------------------------------------------------------------------------------------------
# Fixtures: one tiny full model, its thinker's pipeline and the media files, built once
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """token2wav runs thousands of tiny ops per reply: with several intra-op threads on a busy CPU each op can wait a
    scheduler slice at its barrier (measured: 37 s instead of 0.1 s per reply on 2 loaded cores). Results within this
    module are compared with each other only, so they do not depend on the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("speech-media")
    return {
        "av": write_synthetic_clip(root / "av.mp4", seconds=2, fps=10),
        "silent": write_synthetic_clip(root / "silent.mp4", seconds=2, fps=10, audio=False),
        "wav": write_synthetic_audio(root / "tone.wav", seconds=2),
    }


@pytest.fixture(scope="module")
def requests(files):
    """A video with sound, a silent video, an audio clip and a text-only question."""
    return {
        "av": {"video": files["av"], "question": "What is happening in this video?"},
        "silent": {"video": files["silent"], "question": "What color is the square?"},
        "audio": {"audio": files["wav"], "question": "What sound do you hear in the audio clip?"},
        "text": {"question": "Describe the clip."},
    }


@pytest.fixture(scope="module")
def pipe():
    return pipeline("omni-qa", model=tiny_omni_model(seed=0), processor=tiny_processor())


@pytest.fixture(scope="module")
def thinker_pipe(pipe):
    """The same weights without talker: the full model's `thinker` on its own."""
    return pipeline("omni-qa", model=pipe.model.thinker, processor=pipe.processor)


class GenerateCalls:
    """Records each `model.generate` call (batch rows and generation mode), or refuses every call."""

    def __init__(self, model, monkeypatch, refuse: bool = False):
        self.calls: list[tuple[int, str | None]] = []
        generate = model.generate

        def spy(*args, **kwargs):
            if refuse:
                raise AssertionError("generate() ran before the arguments were checked")
            self.calls.append((kwargs["input_ids"].shape[0], kwargs.get("generation_mode")))
            return generate(*args, **kwargs)

        monkeypatch.setattr(model, "generate", spy)


def spoken(pipe, request, seed=0, **kwargs):
    """A spoken reply with a greedy talker, after `torch.manual_seed(seed)`."""
    torch.manual_seed(seed)
    return pipe(request, return_audio=True, max_new_tokens=NEW_TOKENS, generate_kwargs=GREEDY_TALKER, **kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# Text replies: the thinker alone
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_size", [1, 2])
def test_text_answers_equal_the_thinker_alone(pipe, thinker_pipe, requests, monkeypatch, batch_size):
    """Without return_audio the full model runs its thinker only (generation_mode="text", the talker never runs):
    same answers and counts as the thinker's own pipeline, one by one and in padded batches."""
    listed = [requests[name] for name in ("av", "silent", "audio", "text")]
    talker_steps = []
    handle = pipe.model.talker.register_forward_pre_hook(lambda *_: talker_steps.append(1))
    generate = GenerateCalls(pipe.model, monkeypatch)
    try:
        full = pipe(listed, batch_size=batch_size, max_new_tokens=NEW_TOKENS)
    finally:
        handle.remove()
    assert full == thinker_pipe(listed, batch_size=batch_size, max_new_tokens=NEW_TOKENS)
    assert talker_steps == []
    assert {mode for _, mode in generate.calls} == {"text"}
    assert all(set(result) == TEXT_KEYS and result["answer"] for result in full)
    av = full[0]
    assert 0 < av["num_kept_video_tokens"] < av["num_video_tokens"] and 0 < av["num_kept_audio_tokens"]


def test_generation_parameters_reach_the_thinker(pipe, thinker_pipe, requests):
    """Generation parameters given directly are the thinker's (the text reply's), as on the thinker alone."""
    question = requests["text"]
    torch.manual_seed(3)
    sampled = pipe(question, max_new_tokens=NEW_TOKENS, do_sample=True)
    torch.manual_seed(3)
    assert sampled == thinker_pipe(question, max_new_tokens=NEW_TOKENS, do_sample=True)
    assert sampled["answer"] != pipe(question, max_new_tokens=NEW_TOKENS)["answer"]  # sampling did take place
    # A `thinker_*` parameter in generate_kwargs goes to the thinker too, over the pipeline's default max_new_tokens.
    short = thinker_pipe(question, max_new_tokens=2)
    assert pipe(question, generate_kwargs={"thinker_max_new_tokens": 2}) == short
    assert pipe(question, max_new_tokens=NEW_TOKENS, generate_kwargs={"thinker_max_new_tokens": 2}) == short


def test_loads_the_full_model_from_one_directory(pipe, requests, tmp_path):
    """A directory with a saved full model (and its spk_dict.pt) and the processor: the pipeline loads the full
    class with its speakers and answers, in text and speech, as the model it was saved from."""
    model = tiny_omni_model(seed=0)
    model.save_pretrained(tmp_path)
    tiny_processor().save_pretrained(tmp_path)
    loaded = pipeline("omni-qa", model=os.fspath(tmp_path))
    assert isinstance(loaded.model, OmniSiftOmniForConditionalGeneration)
    assert isinstance(loaded.model.thinker, OmniSiftForConditionalGeneration)
    assert sorted(loaded.model.speaker_map) == ["Chelsie", "Ethan"]
    request = requests["audio"]
    assert loaded(request, max_new_tokens=NEW_TOKENS) == pipe(request, max_new_tokens=NEW_TOKENS)
    from_directory, in_memory = spoken(loaded, request), spoken(pipe, request)
    assert from_directory["answer"] == in_memory["answer"]
    # Equal weights and noise; the loaded model may pick other kernels (last-bit differences).
    scale = np.abs(in_memory["audio"]).max()
    np.testing.assert_allclose(from_directory["audio"], in_memory["audio"], rtol=1e-3, atol=1e-6 * scale)


# ---------------------------------------------------------------------------------------------------------------------
# Spoken replies
# ---------------------------------------------------------------------------------------------------------------------
def test_return_audio_adds_a_waveform(pipe, requests):
    """return_audio=True: the text answer and counts of the text-only call, plus a mono float32 waveform at 24 kHz
    (one per codec code the talker wrote, at most CODES)."""
    request = requests["av"]
    text = pipe(request, max_new_tokens=NEW_TOKENS)
    result = spoken(pipe, request)
    assert set(result) == TEXT_KEYS | {"audio", "sampling_rate"}
    assert {key: result[key] for key in TEXT_KEYS} == text
    audio = result["audio"]
    assert isinstance(audio, np.ndarray) and audio.dtype == np.float32 and audio.ndim == 1
    assert 0 < audio.size <= CODES * SAMPLES_PER_CODE and audio.size % SAMPLES_PER_CODE == 0
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0
    assert result["sampling_rate"] == 24000
    assert result["num_kept_video_tokens"] < result["num_video_tokens"]  # the config's keep_ratio compressed it


def test_counts_come_with_each_spoken_call(pipe, requests):
    """The keep ratio of each call reaches the thinker of a spoken reply, and its counts come back with it."""
    request = requests["av"]
    full = spoken(pipe, request, keep_ratio=1.0)
    half = spoken(pipe, request, keep_ratio=0.5)
    assert full["num_kept_video_tokens"] == full["num_video_tokens"] > 0
    assert full["prefill_tokens"] == full["prompt_tokens"]
    assert half["num_video_tokens"] == full["num_video_tokens"]
    assert 0 < half["num_kept_video_tokens"] < full["num_kept_video_tokens"]
    assert half["prefill_tokens"] < half["prompt_tokens"] == full["prompt_tokens"]


def test_padded_batch_of_two_speaks_as_each_alone(pipe, requests, monkeypatch):
    """batch_size=2: one generate() call on a left-padded batch of two prompts of different lengths. With a greedy
    talker, each sample's answer, counts and waveform equal its call alone made after the same seed, although
    token2wav draws noise (another seed gives another waveform)."""
    pair = [requests["av"], requests["audio"]]  # the audio-only request joins the video-with-sound one
    generate = GenerateCalls(pipe.model, monkeypatch)
    torch.manual_seed(0)
    batch = pipe(pair, batch_size=2, return_audio=True, max_new_tokens=NEW_TOKENS, generate_kwargs=GREEDY_TALKER)
    assert generate.calls == [(2, "audio")]
    assert batch[0]["prompt_tokens"] != batch[1]["prompt_tokens"]  # padded
    for request, result in zip(pair, batch, strict=True):
        alone = spoken(pipe, request, seed=0)
        assert {key: result[key] for key in TEXT_KEYS} == {key: alone[key] for key in TEXT_KEYS}
        assert result["audio"].dtype == np.float32 and result["audio"].ndim == 1 and result["audio"].size > 0
        assert result["sampling_rate"] == 24000
        np.testing.assert_array_equal(result["audio"], alone["audio"])
    other_seed = spoken(pipe, pair[1], seed=1)
    assert other_seed["answer"] == batch[1]["answer"]
    assert not np.array_equal(other_seed["audio"], batch[1]["audio"])


def test_speaker_reaches_the_model(pipe, requests):
    """`speaker` picks the voice; `return_audio` given to `pipeline()` is the default of every call."""
    speaking = pipeline("omni-qa", model=pipe.model, processor=pipe.processor, return_audio=True)
    request = requests["text"]
    default, explicit, ethan = (
        spoken(speaking, request),
        spoken(pipe, request, speaker="Chelsie"),
        spoken(speaking, request, speaker="Ethan"),
    )
    np.testing.assert_array_equal(default["audio"], explicit["audio"])  # the model's default voice
    assert ethan["answer"] == default["answer"]
    assert ethan["audio"].shape == default["audio"].shape  # the same codes ...
    assert not np.array_equal(ethan["audio"], default["audio"])  # ... in another voice


# ---------------------------------------------------------------------------------------------------------------------
# Bad arguments: one clear error, before any media is decoded or anything generated
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture
def no_work(monkeypatch):
    """Refuses video decoding and `generate` on the models passed to it."""

    def no_decoding(*args, **kwargs):
        raise AssertionError("a video was decoded before the arguments were checked")

    monkeypatch.setattr(omnisift_hf.processing_omnisift, "load_video", no_decoding)
    return lambda model: GenerateCalls(model, monkeypatch, refuse=True)


def test_return_audio_on_a_thinker_only_model(thinker_pipe, requests, no_work):
    no_work(thinker_pipe.model)
    with pytest.raises(
        ValueError,
        match=r"return_audio=True needs the full Qwen2\.5-Omni model.*OmniSiftForConditionalGeneration.*"
        r"OmniSiftOmniForConditionalGeneration\.from_pretrained.*or drop return_audio",
    ):
        thinker_pipe([requests["av"], requests["text"]], batch_size=2, return_audio=True)
    with pytest.raises(ValueError, match="return_audio=True needs the full"):
        pipeline("omni-qa", model=thinker_pipe.model, processor=thinker_pipe.processor, return_audio=True)


@pytest.mark.parametrize("how", ["enable_audio_output=False", "disable_talker()"])
def test_return_audio_with_the_talker_disabled(requests, no_work, how):
    if how == "disable_talker()":
        model = tiny_omni_model(seed=0)
        model.disable_talker()
    else:
        model = tiny_omni_model(seed=0, enable_audio_output=False)
    assert not model.has_talker
    text_pipe = pipeline("omni-qa", model=model, processor=tiny_processor())
    result = text_pipe(requests["text"], max_new_tokens=NEW_TOKENS)  # text replies still work
    assert set(result) == TEXT_KEYS and result["answer"]
    no_work(model)
    with pytest.raises(
        ValueError, match=r"return_audio=True, but this model's talker is disabled.*enable_audio_output"
    ):
        text_pipe(requests["av"], return_audio=True)


def test_return_audio_without_speakers(requests, no_work):
    model = tiny_omni_model(seed=0)
    model.speaker_map = {}  # a checkpoint without spk_dict.pt
    no_work(model)
    with pytest.raises(ValueError, match=r"return_audio=True.*no speakers.*spk_dict\.pt.*load_speakers"):
        pipeline("omni-qa", model=model, processor=tiny_processor())(requests["av"], return_audio=True)


def test_speaker_without_return_audio(pipe, requests, no_work):
    no_work(pipe.model)
    with pytest.raises(ValueError, match=r"speaker='Ethan'.*pass return_audio=True with it"):
        pipe(requests["av"], speaker="Ethan")
    with pytest.raises(ValueError, match=r"speaker='Ethan'.*return_audio=True"):
        pipe(requests["av"], speaker="Ethan", return_audio=False)


def test_unknown_speaker(pipe, requests, no_work):
    no_work(pipe.model)
    with pytest.raises(ValueError, match=r"speaker='Bob' is not one of this model's speakers \['Chelsie', 'Ethan'\]"):
        pipe([requests["av"], requests["text"]], batch_size=2, return_audio=True, speaker="Bob")


@pytest.mark.parametrize(
    "arguments, error, words",
    [
        ({"return_audio": "yes"}, TypeError, r"return_audio='yes' must be True or False"),
        ({"return_audio": True, "speaker": 3}, TypeError, r"speaker=3 must be a speaker name"),
        ({"generate_kwargs": {"generation_mode": "audio"}}, ValueError, r"`generation_mode`.*`return_audio=`"),
        ({"generate_kwargs": {"speaker": "Ethan"}}, ValueError, r"`speaker` in generate_kwargs.*`speaker=`"),
        ({"return_audio": True, "generation_mode": "text"}, TypeError, r"unknown argument\(s\) \['generation_mode'\]"),
    ],
)
def test_malformed_speech_arguments(pipe, requests, no_work, arguments, error, words):
    no_work(pipe.model)
    with pytest.raises(error, match=words):
        pipe(requests["av"], **arguments)


# ---------------------------------------------------------------------------------------------------------------------
# The example
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_speak_example_writes_a_readable_wav(tmp_path):
    """examples/speak.py on its tiny default and synthetic clip: prints the answer and the kept counts, writes the
    spoken answer as a mono 24 kHz wav."""
    output = tmp_path / "out" / "reply.wav"
    completed = subprocess.run(
        [
            sys.executable,
            os.fspath(ROOT / "examples" / "speak.py"),
            "--output",
            os.fspath(output),
            "--max-new-tokens",
            str(NEW_TOKENS),
            "--talker-max-new-tokens",
            str(CODES),
            "--device",
            "cpu",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    for line in ("answer:", "video tokens kept:", "audio tokens kept:", "prefill length:", "spoken answer:"):
        assert line in completed.stdout
    audio, rate = soundfile.read(output, dtype="float32")
    assert rate == 24000 and audio.ndim == 1
    assert 0 < audio.size <= CODES * SAMPLES_PER_CODE and np.isfinite(audio).all() and np.abs(audio).max() > 0
