"""`pipeline("omni-qa")` end to end on the embedded tiny default and synthetic files written during the test (a video
with audio, a silent video, a wav, a png): every call form, batches equal one-by-one calls, the keep ratios reach the
decoder's prefill, generation arguments, `save_pretrained` + reload, and clear errors for bad input."""

import json
import os

import av
import numpy as np
import pytest
import soundfile
import torch
from PIL import Image
from reference_layout import native_thinker_config
from transformers import (
    AutoProcessor,
    Qwen2_5OmniProcessor,
    Qwen2_5OmniThinkerForConditionalGeneration,
    pipeline,
)
from transformers.utils.chat_template_utils import Chat

import omnisift_hf
from omnisift_hf import OmniQAPipeline, OmniSiftForConditionalGeneration, VideoSampling
from omnisift_hf.media import load_video
from omnisift_hf.processing_omnisift import DEFAULT_SYSTEM_PROMPT
from omnisift_hf.testing_utils import save_tiny_default, tiny_processor
from omnisift_hf.tools.synthetic import write_synthetic_audio, write_synthetic_clip

COUNT_KEYS = ("num_video_tokens", "num_kept_video_tokens", "num_audio_tokens", "num_kept_audio_tokens")
RESULT_KEYS = {"answer", *COUNT_KEYS, "prompt_tokens", "prefill_tokens"}
NEW_TOKENS = 3  # enough to compare answers, cheap on CPU


# ---------------------------------------------------------------------------------------------------------------------
# Fixtures: the tiny default directory, the files and the pipeline, built once
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_default(tmp_path_factory.mktemp("tiny-default"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline-media")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(root / "image.png")
    Image.fromarray(rng.integers(0, 256, (40, 120, 3), dtype=np.uint8)).save(root / "wide.png")
    corrupt = root / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return {
        "av": write_synthetic_clip(root / "av.mp4", seconds=3, fps=10),
        "av_short": write_synthetic_clip(root / "av_short.mp4", seconds=2, fps=10),
        "silent": write_synthetic_clip(root / "silent.mp4", seconds=3, fps=10, audio=False),
        "wav": write_synthetic_audio(root / "tone.wav", seconds=3),
        "png": os.fspath(root / "image.png"),
        "wide_png": os.fspath(root / "wide.png"),
        "corrupt": os.fspath(corrupt),
        "root": root,
    }


@pytest.fixture(scope="module")
def pipe(model_dir):
    return pipeline("omni-qa", model=model_dir)


# The mixed list of requests, in this order. In batches of 3: [av, silent, av_short] runs as two generate() calls
# (videos with and without audio), with two videos and two audio tracks of different lengths in one of them;
# [image, text, image_wide] is a padded batch without audio or video (the uncompressed path) holding two images of
# different sizes; [audio] is alone.
NAMES = ("av", "silent", "av_short", "image", "text", "image_wide", "audio")
AT = {name: index for index, name in enumerate(NAMES)}


@pytest.fixture(scope="module")
def requests(files):
    """A mixed list: videos with audio, a silent video, audio only, images, text only."""
    by_name = {
        "av": {"video": files["av"], "question": "What is happening in this video?"},
        "silent": {"video": files["silent"], "question": "What color is the square?"},
        "av_short": {"video": files["av_short"], "question": "What do you hear?"},
        "audio": {"audio": files["wav"], "question": "What sound do you hear in the audio?"},
        "image": {"image": files["png"], "question": "What color is the box?"},
        "image_wide": {"image": files["wide_png"], "question": "What is in the picture?"},
        "text": {"question": "Describe the clip."},
    }
    return [by_name[name] for name in NAMES]


class PrefillLogits:
    """Records the next-token logits at the last prompt position of every prefill (one row per sample): far more
    sensitive to the media than a 3-token answer of a random tiny model."""

    def __init__(self, model):
        self.rows: list[torch.Tensor] = []
        self.handle = model.register_forward_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs, output):
        input_ids = kwargs.get("input_ids")
        if input_ids is not None and input_ids.shape[1] > 1:  # the prefill; decode steps feed one token
            self.rows += list(output.logits[:, -1].detach().float())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


class EncoderInputs:
    """What the audio and vision encoders read, one tensor per media item: the audio encoder's valid mel frames
    (it reads `input_features` through `feature_attention_mask`) and the vision encoder's patches. The tiny random
    model's answers hardly depend on the audio, so a batch that fed the wrong frames would still answer the same."""

    def __init__(self, model):
        self.audio: list[torch.Tensor] = []
        self.vision: list[torch.Tensor] = []
        self.handles = [
            model.model.audio_tower.register_forward_pre_hook(self.audio_hook, with_kwargs=True),
            model.model.visual.register_forward_pre_hook(self.vision_hook, with_kwargs=True),
        ]

    def audio_hook(self, module, args, kwargs):
        features = args[0] if args else kwargs["input_features"]  # (mel bins, valid frames of all items)
        self.audio += [chunk.clone() for chunk in features.split(kwargs["feature_lens"].tolist(), dim=1)]

    def vision_hook(self, module, args, kwargs):
        patches = args[0] if args else kwargs["hidden_states"]  # (patches of all items, patch size)
        self.vision += [chunk.clone() for chunk in patches.split(kwargs["grid_thw"].prod(-1).tolist())]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


def assert_same_items(actual: list[torch.Tensor], expected: list[torch.Tensor]):
    """`actual` holds exactly the tensors of `expected`, in any order."""
    assert len(actual) == len(expected)
    remaining = list(actual)
    for tensor in expected:
        match = next(
            (i for i, other in enumerate(remaining) if other.shape == tensor.shape and torch.equal(other, tensor)),
            None,
        )
        assert match is not None, f"no batched item equals the one-by-one item of shape {tuple(tensor.shape)}"
        remaining.pop(match)


@pytest.fixture(scope="module")
def reference(pipe, requests):
    """One call per request (dict form): the answers, the prefill logits and the encoder inputs that every other
    call form is compared with."""
    with PrefillLogits(pipe.model) as logits, EncoderInputs(pipe.model) as encoders:
        results = [pipe(request, max_new_tokens=NEW_TOKENS) for request in requests]
    assert len(logits.rows) == len(requests)
    assert len(encoders.audio) == 3 and len(encoders.vision) == 5  # 3 audio items; 3 videos and 2 images
    return results, logits.rows, encoders


@pytest.fixture(scope="module")
def one_by_one(reference):
    return reference[0]


class PrefillRecorder:
    """Records the sequence length of `inputs_embeds` at every call of the decoder (the first one is the prefill)."""

    def __init__(self, model):
        self.lengths = []
        self.handle = model.model.language_model.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        embeds = kwargs.get("inputs_embeds")
        self.lengths.append(None if embeds is None else embeds.shape[1])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()

    @property
    def prefill(self) -> int:
        assert self.lengths, "the decoder was never called"
        return self.lengths[0]


# ---------------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------------
def test_loads_model_and_processor_from_one_directory(pipe, model_dir):
    assert isinstance(pipe, OmniQAPipeline)
    assert isinstance(pipe.model, OmniSiftForConditionalGeneration)
    assert isinstance(pipe.processor, Qwen2_5OmniProcessor)
    assert pipe.model.name_or_path == model_dir
    assert pipe.processor.tokenizer.convert_tokens_to_ids("<|VIDEO|>") == pipe.model.config.video_token_id
    assert not pipe.model.training


# ---------------------------------------------------------------------------------------------------------------------
# Results and call forms
# ---------------------------------------------------------------------------------------------------------------------
def test_results_have_answers_and_sane_counts(pipe, one_by_one):
    named = dict(zip(NAMES, one_by_one, strict=True))
    av, silent, audio, image, text = (named[name] for name in ("av", "silent", "audio", "image", "text"))
    for result in one_by_one:
        assert set(result) == RESULT_KEYS
        assert isinstance(result["answer"], str) and result["answer"]
        assert all(isinstance(result[key], int) for key in RESULT_KEYS - {"answer"})
        assert 0 <= result["num_kept_video_tokens"] <= result["num_video_tokens"]
        assert 0 <= result["num_kept_audio_tokens"] <= result["num_audio_tokens"]
        dropped = sum(result[f"num_{m}_tokens"] - result[f"num_kept_{m}_tokens"] for m in ("video", "audio"))
        assert result["prefill_tokens"] == result["prompt_tokens"] - dropped > 0
    keep = pipe.model.config.keep_ratio
    assert keep == 0.25

    # A video with audio: 3 s at 2 fps -> 3 slices of 12 x 12 merged patches; ~3 s of audio at 25 tokens/s.
    assert av["num_video_tokens"] == 3 * 144
    assert abs(av["num_audio_tokens"] - 75) <= 2
    media = av["num_video_tokens"] + av["num_audio_tokens"]
    kept = av["num_kept_video_tokens"] + av["num_kept_audio_tokens"]
    assert abs(kept - keep * media) <= 2  # the overall budget
    assert av["num_kept_audio_tokens"] / av["num_audio_tokens"] == pytest.approx(2 * keep, abs=0.02)  # audio 2k
    assert av["num_kept_video_tokens"] < keep * av["num_video_tokens"]  # video pays for the audio share
    # A silent video keeps the keep ratio's share of its video.
    assert silent["num_video_tokens"] == 3 * 144 and silent["num_audio_tokens"] == 0
    assert silent["num_kept_video_tokens"] == pytest.approx(keep * silent["num_video_tokens"], abs=1)
    # Audio only: VGAS scores only audio that shares a window with video, so all of it is kept.
    assert audio["num_video_tokens"] == 0 and audio["num_audio_tokens"] > 70
    assert audio["num_kept_audio_tokens"] == audio["num_audio_tokens"]
    assert audio["prefill_tokens"] == audio["prompt_tokens"]
    # A shorter clip: fewer tokens of both kinds.
    assert named["av_short"]["num_video_tokens"] == 2 * 144
    assert named["av_short"]["num_audio_tokens"] < av["num_audio_tokens"]
    # Images and text: nothing to compress.
    for result in (image, named["image_wide"], text):
        assert all(result[key] == 0 for key in COUNT_KEYS)
        assert result["prefill_tokens"] == result["prompt_tokens"]
    text_only = pipe(question="What color is the box?", max_new_tokens=1)  # the image request without its image
    assert image["prompt_tokens"] > text_only["prompt_tokens"]


def test_keyword_and_positional_forms(pipe, requests, one_by_one):
    av, silent, audio, image = (requests[AT[name]] for name in ("av", "silent", "audio", "image"))
    assert pipe(video=av["video"], question=av["question"], max_new_tokens=NEW_TOKENS) == one_by_one[AT["av"]]
    assert pipe(silent["question"], video=silent["video"], max_new_tokens=NEW_TOKENS) == one_by_one[AT["silent"]]
    result = pipe(audio=audio["audio"], question=audio["question"], max_new_tokens=NEW_TOKENS)
    assert result == one_by_one[AT["audio"]]
    result = pipe(image=image["image"], question=image["question"], max_new_tokens=NEW_TOKENS)
    assert result == one_by_one[AT["image"]]


def test_chat_message_forms(pipe, requests, one_by_one):
    def conversation(request, kind):
        content = [{"type": kind, kind: request[kind]}, {"type": "text", "text": request["question"]}]
        return [{"role": "user", "content": content}]

    video_messages = conversation(requests[AT["silent"]], "video")
    assert pipe(video_messages, max_new_tokens=NEW_TOKENS) == one_by_one[AT["silent"]]
    audio_messages = conversation(requests[AT["audio"]], "audio")
    assert pipe({"messages": audio_messages}, max_new_tokens=NEW_TOKENS) == one_by_one[AT["audio"]]
    assert pipe(Chat(audio_messages), max_new_tokens=NEW_TOKENS) == one_by_one[AT["audio"]]
    # Content given as a plain string, and an explicit system turn instead of the default system prompt.
    text = [{"role": "user", "content": requests[AT["text"]]["question"]}]
    assert pipe(text, max_new_tokens=NEW_TOKENS) == one_by_one[AT["text"]]
    with_system = pipe([{"role": "system", "content": "Answer in one word."}, *text], max_new_tokens=NEW_TOKENS)
    assert with_system["prompt_tokens"] < one_by_one[AT["text"]]["prompt_tokens"]


def test_arrays_with_their_rates(pipe, files, requests, one_by_one):
    """Media already in memory, with `sampling_rate` / `video_fps`, give the same answers as the files."""
    wave, rate = soundfile.read(files["wav"], dtype="float32")
    audio = requests[AT["audio"]]
    result = pipe({"audio": wave, "sampling_rate": rate, "question": audio["question"]}, max_new_tokens=NEW_TOKENS)
    assert result == one_by_one[AT["audio"]]
    with av.open(files["silent"]) as container:
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    silent = requests[AT["silent"]]
    result = pipe({"video": frames, "video_fps": 10, "question": silent["question"]}, max_new_tokens=NEW_TOKENS)
    assert result == one_by_one[AT["silent"]]


def test_integer_pcm_gives_the_features_of_its_float_form(pipe, files):
    """int16 samples are rescaled to [-1, 1], not fed to the audio encoder as values in the thousands."""
    pcm, rate = soundfile.read(files["wav"], dtype="int16")
    wave, _ = soundfile.read(files["wav"], dtype="float32")
    from_pcm = pipe.preprocess({"audio": pcm, "sampling_rate": rate, "question": "What do you hear?"})
    from_float = pipe.preprocess({"audio": wave, "sampling_rate": rate, "question": "What do you hear?"})
    torch.testing.assert_close(from_pcm["input_features"], from_float["input_features"], atol=1e-4, rtol=0)
    assert torch.equal(from_pcm["input_ids"], from_float["input_ids"])


def test_a_bad_request_or_argument_fails_before_any_decoding(pipe, files, monkeypatch):
    """Every request of a list and every call argument is checked before the first video is decoded."""

    def no_decoding(*args, **kwargs):
        raise AssertionError("a video was decoded before the inputs were checked")

    monkeypatch.setattr(omnisift_hf.processing_omnisift, "load_video", no_decoding)
    good = {"video": files["av"], "question": "What?"}
    with pytest.raises(ValueError, match="question=None"):
        pipe([good, good, {"video": files["av"]}], batch_size=2)
    with pytest.raises(TypeError, match="keep_ratio"):
        pipe([good, good], keep_ratio="0.5")
    with pytest.raises(ValueError, match="max_new_tokens=0"):
        pipe(good, max_new_tokens=0)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_batch_equals_one_by_one(pipe, requests, reference, batch_size):
    """A mixed list (videos with audio, a silent video, audio, images, text) in padded batches: a batch of 3 holds
    both kinds of video, so the pipeline runs it as two generate() calls split by use_audio_in_video. Answers, counts,
    what the encoders read and the prefill's next-token logits equal those of one call per request."""
    one_by_one, single_logits, single_encoders = reference
    generate = pipe.model.generate
    calls = []

    def counting_generate(*args, **kwargs):
        calls.append((kwargs["input_ids"].shape[0], kwargs.get("use_audio_in_video")))
        return generate(*args, **kwargs)

    pipe.model.generate = counting_generate
    try:
        with PrefillLogits(pipe.model) as logits, EncoderInputs(pipe.model) as encoders:
            results = pipe(requests, batch_size=batch_size, max_new_tokens=NEW_TOKENS)
    finally:
        del pipe.model.generate
    assert results == one_by_one
    assert_same_items(encoders.audio, single_encoders.audio)
    assert_same_items(encoders.vision, single_encoders.vision)
    # The batched rows come in generate() order: match each request to its row, then compare.
    batched = torch.stack(logits.rows)
    assert batched.shape[0] == len(requests)
    distances = torch.cdist(torch.stack(single_logits), batched)
    assert sorted(distances.argmin(1).tolist()) == list(range(len(requests)))
    for request, row in enumerate(distances.argmin(1).tolist()):
        torch.testing.assert_close(batched[row], single_logits[request], atol=1e-4, rtol=1e-4)
    if batch_size == 1:
        assert [rows for rows, _ in calls] == [1] * len(requests)
    else:  # [av, silent, av_short] -> {av, av_short} + {silent}; [image, text, image_wide]; [audio]
        assert sorted(calls) == [(1, False), (1, False), (2, True), (3, False)]


def test_batch_of_chat_conversations(pipe, requests, one_by_one):
    request = requests[AT["audio"]]
    content = [{"type": "audio", "audio": request["audio"]}, {"type": "text", "text": request["question"]}]
    conversations = [[{"role": "user", "content": content}]] * 2
    assert pipe(conversations, batch_size=2, max_new_tokens=NEW_TOKENS) == [one_by_one[AT["audio"]]] * 2


# ---------------------------------------------------------------------------------------------------------------------
# The keep ratios reach the model
# ---------------------------------------------------------------------------------------------------------------------
def test_keep_ratio_shortens_the_prefill(pipe, files):
    with PrefillRecorder(pipe.model) as full:
        uncompressed = pipe(video=files["av"], question="What?", keep_ratio=1.0, max_new_tokens=NEW_TOKENS)
    with PrefillRecorder(pipe.model) as compressed:
        quarter = pipe(video=files["av"], question="What?", keep_ratio=0.25, max_new_tokens=NEW_TOKENS)
    assert full.prefill == uncompressed["prefill_tokens"] == uncompressed["prompt_tokens"]
    assert uncompressed["num_kept_video_tokens"] == uncompressed["num_video_tokens"]
    assert compressed.prefill == quarter["prefill_tokens"] < full.prefill
    assert quarter["prompt_tokens"] == uncompressed["prompt_tokens"]
    media = quarter["num_video_tokens"] + quarter["num_audio_tokens"]
    assert full.prefill - compressed.prefill == pytest.approx(0.75 * media, abs=2)
    # Decode steps feed one token at a time.
    assert set(compressed.lengths[1:]) <= {1}


def test_modality_keep_ratios_reach_the_model(pipe, files):
    with PrefillRecorder(pipe.model) as recorder:
        result = pipe(
            video=files["av"],
            question="What?",
            video_keep_ratio=0.5,
            audio_keep_ratio=0.2,
            max_new_tokens=NEW_TOKENS,
        )
    video, audio = result["num_video_tokens"], result["num_audio_tokens"]
    assert result["num_kept_video_tokens"] == video - int(video * 0.5)
    assert result["num_kept_audio_tokens"] == audio - int(round(audio * 0.8, 6))
    assert recorder.prefill == result["prefill_tokens"]


def test_use_audio_in_video_false_drops_the_track(pipe, files, one_by_one):
    with PrefillRecorder(pipe.model) as recorder:
        result = pipe(video=files["av"], question="What?", use_audio_in_video=False, max_new_tokens=NEW_TOKENS)
    assert result["num_audio_tokens"] == result["num_kept_audio_tokens"] == 0
    assert result["num_video_tokens"] == one_by_one[AT["av"]]["num_video_tokens"]
    assert recorder.prefill == result["prefill_tokens"]


def test_invalid_keep_ratio_is_refused(pipe):
    with pytest.raises(ValueError, match="keep_ratio"):
        pipe(question="Hello?", keep_ratio=0.0, max_new_tokens=1)


# ---------------------------------------------------------------------------------------------------------------------
# System prompt
# ---------------------------------------------------------------------------------------------------------------------
def rendered_prompt(pipe, **preprocess_params) -> str:
    processed = pipe.preprocess({"question": "Hi?"}, **preprocess_params)
    return pipe.processor.tokenizer.decode(processed["input_ids"][0])


def test_system_prompt(pipe):
    assert rendered_prompt(pipe).startswith(f"<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user")
    custom = rendered_prompt(pipe, system_prompt="Be brief.")
    assert (
        custom == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
    )
    # The call argument reaches preprocess.
    default = pipe(question="Hi?", max_new_tokens=1)
    assert (
        pipe(question="Hi?", system_prompt="Be brief.", max_new_tokens=1)["prompt_tokens"] < default["prompt_tokens"]
    )


def test_empty_system_prompt_gives_an_empty_system_turn(pipe):
    prompt = rendered_prompt(pipe, system_prompt="")
    assert DEFAULT_SYSTEM_PROMPT not in prompt
    assert prompt.startswith("<|im_start|>system\n<|im_end|>\n")


# ---------------------------------------------------------------------------------------------------------------------
# Generation arguments
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture
def decoded_ids(pipe, monkeypatch):
    """Token ids the pipeline turned into each answer (through the tokenizer's decode)."""
    tokenizer = pipe.processor.tokenizer
    decode, seen = tokenizer.decode, []

    def spy(ids, *args, **kwargs):
        seen.append(torch.as_tensor(ids).reshape(-1).tolist())
        return decode(ids, *args, **kwargs)

    monkeypatch.setattr(tokenizer, "decode", spy)
    return seen


def test_max_new_tokens_bounds_the_answer(pipe, decoded_ids):
    one = pipe(question="Describe the clip.", max_new_tokens=1)
    five = pipe(question="Describe the clip.", max_new_tokens=5)
    two = pipe(question="Describe the clip.", generate_kwargs={"max_new_tokens": 2})
    short, long, middle = decoded_ids
    assert len(short) == 1 and 1 <= len(long) <= 5 and 1 <= len(middle) <= 2
    assert long[: len(short)] == short and long[: len(middle)] == middle  # greedy: the same answer, cut
    tokenizer = pipe.processor.tokenizer
    assert one["answer"] == tokenizer.decode(short, skip_special_tokens=True).strip()
    assert five["answer"] == tokenizer.decode(long, skip_special_tokens=True).strip()
    assert two["answer"] == tokenizer.decode(middle, skip_special_tokens=True).strip()


def test_generation_parameters_directly(pipe, decoded_ids):
    greedy = pipe(question="Describe the clip.", max_new_tokens=NEW_TOKENS)
    assert pipe(question="Describe the clip.", max_new_tokens=NEW_TOKENS, do_sample=False) == greedy
    assert pipe(question="Describe the clip.", generate_kwargs={"do_sample": False, "max_new_tokens": 3}) == greedy


def test_max_new_tokens_given_twice_is_refused(pipe):
    with pytest.raises(ValueError, match="max_new_tokens"):
        pipe(question="Hello?", max_new_tokens=2, generate_kwargs={"max_new_tokens": 2})


def test_unknown_call_argument_is_refused(pipe):
    with pytest.raises(TypeError, match="keep_ration"):
        pipe(question="Hello?", keep_ration=0.5)


# ---------------------------------------------------------------------------------------------------------------------
# save_pretrained and reload
# ---------------------------------------------------------------------------------------------------------------------
def test_save_pretrained_and_reload(pipe, files, one_by_one, tmp_path):
    pipe.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    entry = config["custom_pipelines"]["omni-qa"]
    assert entry["impl"] == "pipeline_omni_qa.OmniQAPipeline"
    assert entry["pt"] == ["AutoModelForMultimodalLM"]
    assert config["auto_map"]["AutoModelForMultimodalLM"] == "modeling_omnisift.OmniSiftForConditionalGeneration"
    saved = set(os.listdir(tmp_path))
    assert {"pipeline_omni_qa.py", "media.py", "modeling_omnisift.py", "configuration_omnisift.py"} <= saved
    assert {"model.safetensors", "processor_config.json", "tokenizer.json", "chat_template.jinja"} <= saved
    assert isinstance(AutoProcessor.from_pretrained(tmp_path), Qwen2_5OmniProcessor)

    reloaded = pipeline(model=os.fspath(tmp_path), trust_remote_code=True)
    assert type(reloaded).__name__ == "OmniQAPipeline"
    assert type(reloaded).__module__.startswith("transformers_modules.")  # the saved pipeline code
    assert type(reloaded).__module__.endswith(".pipeline_omni_qa")
    result = reloaded(video=files["av"], question="What is happening in this video?", max_new_tokens=NEW_TOKENS)
    assert result == one_by_one[AT["av"]]
    by_task = pipeline("omni-qa", model=os.fspath(tmp_path), trust_remote_code=True)
    assert by_task(question="Describe the clip.", max_new_tokens=NEW_TOKENS) == one_by_one[AT["text"]]


# ---------------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------------
def test_missing_file(pipe, files):
    path = os.fspath(files["root"] / "missing.mp4")
    with pytest.raises(FileNotFoundError, match=f"video={path!r}"):
        pipe(video=path, question="What?")
    with pytest.raises(FileNotFoundError, match=f"audio={path!r}"):
        pipe([{"audio": path, "question": "What?"}], batch_size=2)


def test_corrupt_file(pipe, files):
    with pytest.raises(ValueError, match=f"video={files['corrupt']!r}"):
        pipe(video=files["corrupt"], question="What?")
    with pytest.raises(ValueError, match=f"image={files['corrupt']!r}"):
        pipe(image=files["corrupt"], question="What?")


def test_audio_file_given_as_video(pipe, files):
    with pytest.raises(ValueError, match="no video stream.*audio="):
        pipe(video=files["wav"], question="What?")


@pytest.mark.parametrize("question", ["", "   "])
def test_empty_question(pipe, files, question):
    with pytest.raises(ValueError, match="non-empty question"):
        pipe(video=files["silent"], question=question)


def test_missing_question(pipe, files):
    with pytest.raises(ValueError, match="question=None"):
        pipe(video=files["silent"])
    with pytest.raises(ValueError, match="question=None"):
        pipe({"video": files["silent"]})


def test_nothing_to_answer(pipe):
    with pytest.raises(ValueError, match="nothing to answer"):
        pipe()


def test_unknown_key_in_dict_form(pipe, files):
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['vidoe'\]"):
        pipe({"vidoe": files["silent"], "question": "What?"})


def test_messages_and_question_together(pipe, files):
    messages = [{"role": "user", "content": [{"type": "text", "text": "Hello?"}]}]
    with pytest.raises(ValueError, match="either `messages` or `question`"):
        pipe({"messages": messages, "question": "What?"})
    with pytest.raises(ValueError, match="both an input"):
        pipe(messages, question="What?")


def test_question_given_twice(pipe):
    with pytest.raises(ValueError, match="question was given twice"):
        pipe("What?", question="What?")


def test_unsupported_content_item(pipe):
    messages = [{"role": "user", "content": [{"type": "pdf", "pdf": "a.pdf"}, {"type": "text", "text": "Hi?"}]}]
    with pytest.raises(ValueError, match="'pdf' is not supported"):
        pipe(messages)


def test_mixed_audio_and_silent_video_in_one_request(pipe, files):
    with pytest.raises(ValueError, match="separate requests"):
        pipe(video=[files["av"], files["silent"]], question="What?")


def test_audio_array_needs_its_rate(pipe):
    with pytest.raises(ValueError, match="sampling rate"):
        pipe(audio=np.zeros(16000, dtype=np.float32), question="What?")


def test_non_omnisift_model_is_refused():
    native = Qwen2_5OmniThinkerForConditionalGeneration(native_thinker_config()).eval()
    with pytest.raises(ValueError, match="omni-qa runs OmniSIFT models.*Qwen2_5OmniThinkerForConditionalGeneration"):
        pipeline("omni-qa", model=native, processor=tiny_processor())


# ---------------------------------------------------------------------------------------------------------------------
# Video sampling reaches the processor
# ---------------------------------------------------------------------------------------------------------------------
def patch_grid(frames: torch.Tensor) -> list[int]:
    """(temporal, height, width) patches of decoded (T, 3, H, W) frames: temporal patch 2, 14-pixel patches."""
    return [frames.shape[0] // 2, frames.shape[2] // 14, frames.shape[3] // 14]


# ---------------------------------------------------------------------------------------------------------------------
# Video sampling reaches the tokens
# ---------------------------------------------------------------------------------------------------------------------
def test_video_sampling_pixel_bounds_reach_the_tokens(pipe, files):
    sampling = VideoSampling(min_pixels=4 * 28 * 28, max_pixels=16 * 28 * 28)
    frames = load_video(files["silent"], sampling).frames  # (6, 3, 112, 112): 8 x 8 patches
    processed = pipe.preprocess({"video": files["silent"], "question": "What?"}, video_sampling=sampling)
    assert processed["video_grid_thw"].tolist() == [patch_grid(frames)]


def test_default_video_sampling_is_not_resized_again(pipe, files):
    """With the default policy the processor's second resize is a no-op: the grid is the decoded frames' grid."""
    frames = load_video(files["silent"]).frames
    processed = pipe.preprocess({"video": files["silent"], "question": "What?"})
    assert processed["video_grid_thw"].tolist() == [patch_grid(frames)]


def test_registered_task():
    from transformers.pipelines import PIPELINE_REGISTRY

    assert "omni-qa" in PIPELINE_REGISTRY.get_supported_tasks()
    assert PIPELINE_REGISTRY.check_task("omni-qa")[1]["impl"] is omnisift_hf.OmniQAPipeline


def test_empty_list_gives_empty_list(pipe):
    assert pipe([]) == []


def test_threads_sharing_a_pipeline_get_their_own_counts(pipe, files):
    """Before, counts were read back from per-model state: two threads got each other's (prefill_tokens -206)."""
    import threading

    calls = {
        "av": {"video": files["av"], "question": "What?", "keep_ratio": 0.25},
        "audio": {"audio": files["wav"], "question": "What?", "keep_ratio": 0.25},
    }
    expected = {name: pipe(**call, max_new_tokens=2) for name, call in calls.items()}
    assert expected["av"]["num_kept_video_tokens"] < expected["av"]["num_video_tokens"]
    assert expected["audio"]["num_video_tokens"] == 0
    wrong = []

    def worker(name):
        for _ in range(4):
            result = pipe(**calls[name], max_new_tokens=2)
            if {k: v for k, v in result.items() if k != "answer"} != {
                k: v for k, v in expected[name].items() if k != "answer"
            }:
                wrong.append((name, result))

    threads = [threading.Thread(target=worker, args=(name,)) for name in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
