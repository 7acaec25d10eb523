"""`pipeline("omni-qa")` and media loading with a Qwen3-Omni model (`OmniSiftQwen3OmniForConditionalGeneration`) and
its processor (`Qwen3OmniMoeProcessor`): the tiny processor lays out placeholders as the model expects, frames follow
Qwen3-Omni's policy (32-pixel multiples, its pixel bounds), every kind of request is answered with sane counts, a
batch equals one-by-one calls, keep 1.0 equals the stock thinker, and a processor of the other backbone is refused."""

import os

import av
import numpy as np
import pytest
import soundfile
import torch
from PIL import Image
from transformers import AutoProcessor, Qwen3OmniMoeProcessor, Qwen3OmniMoeThinkerForConditionalGeneration, pipeline

import omnisift_hf  # noqa: F401  (registers the "omni-qa" pipeline)
from omnisift_hf import VideoSampling
from omnisift_hf.media import (
    QWEN2_5_OMNI_MEDIA,
    QWEN3_OMNI_MEDIA,
    frame_factor_of,
    load_video,
    media_policy_of,
    video_sampling_of,
)
from omnisift_hf.processing_omnisift import prepare_omni_inputs
from omnisift_hf.testing_utils import (
    TINY_TOKEN_IDS,
    qwen3_audio_token_count,
    tiny_model,
    tiny_processor,
    tiny_qwen3_inputs,
    tiny_qwen3_model,
    tiny_qwen3_processor,
    tiny_qwen3_stock_config,
)
from omnisift_hf.tools.synthetic import write_synthetic_audio, write_synthetic_clip

COUNT_KEYS = ("num_video_tokens", "num_kept_video_tokens", "num_audio_tokens", "num_kept_audio_tokens")
NEW_TOKENS = 3
NAMES = ("av", "silent", "av_short", "image", "text", "audio")
AT = {name: index for index, name in enumerate(NAMES)}
MEDIA_IDS = {TINY_TOKEN_IDS[name] for name in ("video", "audio", "image")}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen3-media")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(root / "image.png")
    return {
        "av": write_synthetic_clip(root / "av.mp4", seconds=3, fps=10),
        "av_short": write_synthetic_clip(root / "av_short.mp4", seconds=2, fps=10),
        "silent": write_synthetic_clip(root / "silent.mp4", seconds=3, fps=10, audio=False),
        "wav": write_synthetic_audio(root / "tone.wav", seconds=3),
        "png": os.fspath(root / "image.png"),
    }


@pytest.fixture(scope="module")
def processor():
    return tiny_qwen3_processor()


@pytest.fixture(scope="module")
def pipe(processor):
    return pipeline("omni-qa", model=tiny_qwen3_model(), processor=processor)


@pytest.fixture(scope="module")
def requests(files):
    by_name = {
        "av": {"video": files["av"], "question": "What is happening in this video?"},
        "silent": {"video": files["silent"], "question": "What color is the square?"},
        "av_short": {"video": files["av_short"], "question": "What do you hear?"},
        "image": {"image": files["png"], "question": "What color is the box?"},
        "text": {"question": "Describe the clip."},
        "audio": {"audio": files["wav"], "question": "What sound do you hear in the audio?"},
    }
    return [by_name[name] for name in NAMES]


class PrefillRecorder:
    """Sequence length of `inputs_embeds` at every decoder call (the first one is the prefill) and the prefill's
    next-token logits, one row per sample."""

    def __init__(self, model):
        self.lengths, self.logits = [], []
        self.handles = [
            model.model.language_model.register_forward_pre_hook(self.decoder_hook, with_kwargs=True),
            model.register_forward_hook(self.logits_hook, with_kwargs=True),
        ]

    def decoder_hook(self, module, args, kwargs):
        self.lengths.append(kwargs["inputs_embeds"].shape[1])

    def logits_hook(self, module, args, kwargs, output):
        input_ids = kwargs.get("input_ids")
        if input_ids is not None and input_ids.shape[1] > 1:
            self.logits += list(output.logits[:, -1].detach().float())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


@pytest.fixture(scope="module")
def one_by_one(pipe, requests):
    with PrefillRecorder(pipe.model) as recorder:
        results = [pipe(request, max_new_tokens=NEW_TOKENS) for request in requests]
    assert len(recorder.logits) == len(requests)
    return results, recorder.logits


# ---------------------------------------------------------------------------------------------------------------------
# The processor and the media policy
# ---------------------------------------------------------------------------------------------------------------------
def _media_span(input_ids: torch.Tensor) -> list[int]:
    """The tokens of one row from the start tokens before the first media placeholder to the end tokens after the
    last one."""
    row = input_ids.reshape(-1).tolist()
    media = [i for i, token in enumerate(row) if token in MEDIA_IDS]
    starts = {TINY_TOKEN_IDS["vision_start"], TINY_TOKEN_IDS["audio_start"]}
    ends = {TINY_TOKEN_IDS["vision_end"], TINY_TOKEN_IDS["audio_end"]}
    first, last = media[0], media[-1]
    while row[first - 1] in starts:
        first -= 1
    while row[last + 1] in ends:
        last += 1
    return row[first : last + 1]


@pytest.mark.parametrize("kind", ["av", "silent", "audio", "image"])
def test_processor_lays_out_placeholders_as_tiny_qwen3_inputs(processor, files, kind):
    """What the real processor makes from a file == what `tiny_qwen3_inputs` builds for the same grids and mel
    frames (the layout the modelling tests check against the stock thinker)."""
    source = {"av": files["av"], "silent": files["silent"], "audio": files["wav"], "image": files["png"]}[kind]
    key = {"audio": "audio", "image": "image"}.get(kind, "video")
    inputs = prepare_omni_inputs(processor, {key: source, "question": "What?"})
    if key == "video":
        t, h, w = inputs["video_grid_thw"][0].tolist()
        mel = int(inputs["feature_attention_mask"].sum()) if kind == "av" else None
        segment = ("video", t, h, w, mel)
        assert inputs["video_second_per_grid"].tolist() == [1.0]  # 2 frames per grid at 2 fps
        assert inputs["pixel_values_videos"].shape[1] == 3 * 2 * 16 * 16
    elif key == "audio":
        segment = ("audio", int(inputs["feature_attention_mask"].sum()))
    else:
        segment = ("image", *inputs["image_grid_thw"][0, 1:].tolist())
    expected = tiny_qwen3_inputs([[segment]])
    assert _media_span(inputs["input_ids"]) == _media_span(expected["input_ids"])
    if kind == "av":
        assert inputs["use_audio_in_video"] is True
        audio_tokens = int((inputs["input_ids"] == TINY_TOKEN_IDS["audio"]).sum())
        assert audio_tokens == qwen3_audio_token_count(int(inputs["feature_attention_mask"].sum()))
        assert abs(audio_tokens - 13 * 3) <= 2  # about 13 audio tokens per second


def test_media_policy_follows_the_processor(processor):
    assert media_policy_of(processor) is QWEN3_OMNI_MEDIA
    assert media_policy_of(tiny_processor()) is QWEN2_5_OMNI_MEDIA
    assert frame_factor_of(processor) == 32 and frame_factor_of(tiny_processor()) == 28
    # qwen-omni-utils with image_patch_size=16: 128..768 tokens of 32 x 32 pixels per frame.
    assert video_sampling_of(processor) == VideoSampling(
        min_pixels=128 * 32 * 32, max_pixels=768 * 32 * 32, total_pixels=128000 * 32 * 32 * 0.9
    )
    assert video_sampling_of(tiny_processor()) == VideoSampling()


def test_frames_are_multiples_of_32_and_the_processor_does_not_resize_them(processor, files):
    sampling = video_sampling_of(processor)
    frames = load_video(files["silent"], sampling, frame_factor=32).frames
    assert frames.shape[2] % 32 == 0 and frames.shape[3] % 32 == 0
    assert sampling.min_pixels <= frames.shape[2] * frames.shape[3] <= sampling.max_pixels
    inputs = prepare_omni_inputs(processor, {"video": files["silent"], "question": "What?"})
    assert inputs["video_grid_thw"].tolist() == [[frames.shape[0] // 2, frames.shape[2] // 16, frames.shape[3] // 16]]
    small = VideoSampling(min_pixels=4 * 32 * 32, max_pixels=16 * 32 * 32)
    inputs = prepare_omni_inputs(processor, {"video": files["silent"], "question": "What?"}, video_sampling=small)
    assert inputs["video_grid_thw"][0, 1:].prod() <= 16 * 4  # the bounds reach the tokens
    with pytest.raises(ValueError, match="frame_factor"):
        load_video(files["silent"], frame_factor=0)


def test_no_default_system_turn_but_an_explicit_one(processor):
    ids = prepare_omni_inputs(processor, {"question": "Hi"})["input_ids"][0]
    assert processor.tokenizer.decode(ids).startswith("<|im_start|>user\n")
    ids = prepare_omni_inputs(processor, {"question": "Hi"}, system_prompt="Be brief.")["input_ids"][0]
    assert processor.tokenizer.decode(ids).startswith("<|im_start|>system\nBe brief.<|im_end|>")


# ---------------------------------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------------------------------
def test_answers_every_kind_of_request_with_sane_counts(pipe, one_by_one):
    results, _ = one_by_one
    named = dict(zip(NAMES, results, strict=True))
    for result in results:
        assert isinstance(result["answer"], str) and result["answer"]
        dropped = sum(result[f"num_{m}_tokens"] - result[f"num_kept_{m}_tokens"] for m in ("video", "audio"))
        assert result["prefill_tokens"] == result["prompt_tokens"] - dropped > 0
    keep = pipe.model.config.keep_ratio
    av = named["av"]
    # 3 s at 2 fps -> 3 grids of 12 x 12 merged 32-pixel patches; ~3 s of audio at 13 tokens per second.
    assert av["num_video_tokens"] == 3 * 144
    assert abs(av["num_audio_tokens"] - 39) <= 2
    kept = av["num_kept_video_tokens"] + av["num_kept_audio_tokens"]
    assert abs(kept - keep * (av["num_video_tokens"] + av["num_audio_tokens"])) <= 3
    assert av["num_kept_audio_tokens"] / av["num_audio_tokens"] > keep  # audio kept at a higher rate
    silent = named["silent"]
    assert silent["num_audio_tokens"] == 0
    assert silent["num_kept_video_tokens"] == pytest.approx(keep * silent["num_video_tokens"], abs=1)
    assert named["av_short"]["num_video_tokens"] == 2 * 144
    assert 0 < named["av_short"]["num_audio_tokens"] < av["num_audio_tokens"]
    audio = named["audio"]
    assert audio["num_video_tokens"] == 0 and audio["num_kept_audio_tokens"] == audio["num_audio_tokens"] > 35
    for name in ("image", "text"):
        assert all(named[name][key] == 0 for key in COUNT_KEYS)
        assert named[name]["prefill_tokens"] == named[name]["prompt_tokens"]
    text_only = pipe(question="What color is the box?", max_new_tokens=1)  # the image request without its image
    assert named["image"]["prompt_tokens"] > text_only["prompt_tokens"]


@pytest.mark.parametrize("batch_size", [3, 6])
def test_batch_equals_one_by_one(pipe, requests, one_by_one, batch_size):
    """In batches of 3, [av, silent, av_short] runs as two generate() calls (with and without audio), two clips with
    audio tracks of different lengths padded in one, and [image, text, audio] is a padded batch of its own; in one
    batch of 6 the image, text and audio requests join the clips with audio."""
    results, logits = one_by_one
    with PrefillRecorder(pipe.model) as recorder:
        batched = pipe(requests, max_new_tokens=NEW_TOKENS, batch_size=batch_size)
    assert batched == results  # answers and every count
    assert len(recorder.logits) == len(requests)
    # The rows in generate() order: per batch, the samples with interleaved audio first (samples without video join
    # them), then the silent video.
    names = ("av", "av_short", "silent", "image", "text", "audio")
    if batch_size == 6:
        names = ("av", "av_short", "image", "text", "audio", "silent")
    order = [AT[name] for name in names]
    for row, index in zip(recorder.logits, order, strict=True):
        torch.testing.assert_close(row, logits[index], atol=1e-4, rtol=1e-4)


def test_keep_ratio_shortens_the_prefill(pipe, files):
    with PrefillRecorder(pipe.model) as full:
        uncompressed = pipe(video=files["av"], question="What?", keep_ratio=1.0, max_new_tokens=NEW_TOKENS)
    with PrefillRecorder(pipe.model) as compressed:
        quarter = pipe(video=files["av"], question="What?", keep_ratio=0.25, max_new_tokens=NEW_TOKENS)
    assert full.lengths[0] == uncompressed["prefill_tokens"] == uncompressed["prompt_tokens"]
    assert compressed.lengths[0] == quarter["prefill_tokens"] < full.lengths[0]
    assert set(compressed.lengths[1:]) <= {1}
    with PrefillRecorder(pipe.model) as recorder:
        split = pipe(video=files["av"], question="What?", video_keep_ratio=0.5, audio_keep_ratio=0.2, max_new_tokens=1)
    video, audio = split["num_video_tokens"], split["num_audio_tokens"]
    assert split["num_kept_video_tokens"] == video - int(video * 0.5)
    # Audio is dropped per window (3 grids: 2 frame-pair windows), each rounding its own count down.
    assert 0 <= split["num_kept_audio_tokens"] - (audio - int(round(audio * 0.8, 6))) <= 2
    assert recorder.lengths[0] == split["prefill_tokens"]


def test_keep_one_answers_as_the_stock_thinker(pipe, processor, requests):
    """At keep 1.0 the pipeline's greedy answer is the stock Qwen3-Omni thinker's on the same processor outputs."""
    stock = Qwen3OmniMoeThinkerForConditionalGeneration(tiny_qwen3_stock_config()).eval()
    state = {key: value for key, value in pipe.model.state_dict().items() if not key.startswith("compressor.")}
    stock.load_state_dict(state)
    stock.generation_config = pipe.model.generation_config
    for name in ("av", "silent"):
        inputs = prepare_omni_inputs(processor, requests[AT[name]])
        use_audio_in_video = inputs.pop("use_audio_in_video")
        with torch.no_grad():
            ids = stock.generate(
                **inputs, use_audio_in_video=use_audio_in_video, max_new_tokens=NEW_TOKENS, do_sample=False
            )
        expected = processor.tokenizer.decode(ids[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        result = pipe(requests[AT[name]], keep_ratio=1.0, max_new_tokens=NEW_TOKENS, do_sample=False)
        assert result["answer"] == expected.strip()
        assert result["num_kept_video_tokens"] == result["num_video_tokens"] > 0


def test_arrays_with_their_rates(pipe, files, requests, one_by_one):
    """Frames and samples in memory, with `video_fps` / `sampling_rate`, answer as the files do."""
    with av.open(files["silent"]) as container:
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    silent = requests[AT["silent"]]
    result = pipe({"video": frames, "video_fps": 10, "question": silent["question"]}, max_new_tokens=NEW_TOKENS)
    assert result == one_by_one[0][AT["silent"]]
    wave, rate = soundfile.read(files["wav"], dtype="float32")
    audio = requests[AT["audio"]]
    result = pipe({"audio": wave, "sampling_rate": rate, "question": audio["question"]}, max_new_tokens=NEW_TOKENS)
    assert result == one_by_one[0][AT["audio"]]


def test_use_audio_in_video_false_drops_the_track(pipe, files, one_by_one):
    result = pipe(video=files["av"], question="What?", use_audio_in_video=False, max_new_tokens=NEW_TOKENS)
    assert result["num_audio_tokens"] == 0
    assert result["num_video_tokens"] == one_by_one[0][AT["av"]]["num_video_tokens"]


@pytest.mark.slow
def test_saved_directory_reloads_as_a_qwen3_pipeline(pipe, requests, one_by_one, tmp_path):
    """The saved directory (model, its remote code, the pipeline's code with the media policies, the Qwen3
    processor) rebuilds the pipeline from its own code and answers as before."""
    pipe.save_pretrained(tmp_path)
    assert {"pipeline_omni_qa.py", "media.py", "processing_omnisift.py", "modeling_omnisift.py"} <= set(
        os.listdir(tmp_path)
    )
    assert isinstance(AutoProcessor.from_pretrained(tmp_path), Qwen3OmniMoeProcessor)
    reloaded = pipeline("omni-qa", model=os.fspath(tmp_path), trust_remote_code=True)
    assert type(reloaded).__module__.startswith("transformers_modules.")  # the saved pipeline code
    assert type(reloaded.model).__name__ == "OmniSiftQwen3OmniForConditionalGeneration"
    assert isinstance(reloaded.processor, Qwen3OmniMoeProcessor)
    assert reloaded(requests[AT["av"]], max_new_tokens=NEW_TOKENS) == one_by_one[0][AT["av"]]


def test_a_processor_of_the_other_backbone_is_refused():
    with pytest.raises(ValueError, match=r"Qwen2_5OmniProcessor, 14-pixel patches.*16-pixel patches"):
        pipeline("omni-qa", model=tiny_qwen3_model(), processor=tiny_processor())
    with pytest.raises(ValueError, match=r"Qwen3OmniMoeProcessor, 16-pixel patches.*14-pixel patches"):
        pipeline("omni-qa", model=tiny_model(), processor=tiny_qwen3_processor())
