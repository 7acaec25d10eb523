"""vLLM serving OmniSIFT checkpoints saved by this package, against the transformers model on the same weights and
media (`reference.py`, run in the package's own environment): the prompt vLLM schedules, its M-RoPE positions and the
greedy reply, at keep 0.25 and 1.0; a batch of different clips; every modality; per-request ratios; bad input; and
`vllm serve` over HTTP."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import torch

pytest.importorskip("vllm")

from vllm import LLM, SamplingParams  # noqa: E402
from vllm_helpers import run_reference  # noqa: E402

from omnisift_hf.vllm_plugin.model import OmniSiftVllmForConditionalGeneration  # noqa: E402

pytestmark = pytest.mark.slow

CASES = ("video_audio_a", "video_audio_b", "silent_video", "audio_only", "image", "text")
MAX_TOKENS = 8
GREEDY = SamplingParams(max_tokens=MAX_TOKENS, temperature=0)


# ---------------------------------------------------------------------------------------------------------------------
# The positions each prompt was run with (the engine runs in this process), keyed by its token ids.
# ---------------------------------------------------------------------------------------------------------------------
POSITIONS: dict[tuple[int, ...], torch.Tensor] = {}


@pytest.fixture(scope="module", autouse=True)
def record_positions():
    cls = OmniSiftVllmForConditionalGeneration
    get_positions, recompute = cls.get_mrope_input_positions, cls.recompute_mrope_positions

    def get_mrope_input_positions(self, input_tokens, mm_features):
        positions, delta = get_positions(self, input_tokens, mm_features)
        POSITIONS[tuple(input_tokens)] = positions.clone()
        return positions, delta

    def recompute_mrope_positions(self, input_ids, multimodal_embeddings, mrope_positions, num_computed_tokens):
        embeddings, positions, delta = recompute(
            self, input_ids, multimodal_embeddings, mrope_positions, num_computed_tokens
        )
        POSITIONS[tuple(torch.as_tensor(input_ids).tolist())] = positions.detach().cpu().clone()
        return embeddings, positions, delta

    cls.get_mrope_input_positions, cls.recompute_mrope_positions = get_mrope_input_positions, recompute_mrope_positions
    yield
    cls.get_mrope_input_positions, cls.recompute_mrope_positions = get_positions, recompute


def load_llm(directory) -> LLM:
    return LLM(
        model=str(directory),
        enforce_eager=True,
        dtype="float32",
        max_model_len=4096,
        limit_mm_per_prompt={"video": 1, "audio": 1, "image": 1},
    )


@pytest.fixture(scope="module")
def cases(reference):
    return json.loads((reference / "cases.json").read_text())


@pytest.fixture(scope="module")
def media(reference):
    with np.load(reference / "media.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def llm_compressed(reference):
    return load_llm(reference / "keep_0.25")


@pytest.fixture(scope="module")
def llm_full(reference):
    return load_llm(reference / "keep_1.0")


# Engines live until the module ends: destroying one in this process tears down vLLM's parallel groups under the
# others.
@pytest.fixture(scope="module")
def llm_full_checkpoint(reference):
    return load_llm(reference / "full_0.25")


def request(case: dict, media: dict, **knobs) -> dict:
    data = {}
    for kind, key in case["content"]:
        data[kind] = (media[key], 16000) if kind == "audio" else media[key]
    for key in case["audio"]:
        data["audio"] = (media[key], 16000)
    if not data:
        return {"prompt": case["text"]}
    kwargs = {"use_audio_in_video": case["use_audio_in_video"], "fps": 2.0, **knobs}
    return {"prompt": case["text"], "multi_modal_data": data, "mm_processor_kwargs": kwargs}


def check_against_reference(output, expected: dict, positions: bool = True) -> None:
    """The prompt vLLM scheduled, its positions and the reply equal the transformers model's. `positions=False` for a
    prompt the engine has run before: its prefix-cached tokens keep the placeholder positions no forward reads."""
    assert output.prompt_token_ids == expected["prompt_ids"]
    assert len(output.prompt_token_ids) <= expected["unpruned_length"]
    if positions:
        assert POSITIONS[tuple(output.prompt_token_ids)].tolist() == expected["positions"]
    assert list(output.outputs[0].token_ids) == expected["reply"]


@pytest.mark.parametrize("keep", ["0.25", "1.0"])
def test_batch_of_every_modality_matches_transformers(request_fixture, cases, media, keep):
    """One `generate` call: two different clips with their audio, a silent video, audio only, an image, text only."""
    llm = request_fixture(keep)
    outputs = llm.generate([request(cases[name], media) for name in CASES], GREEDY)
    for name, output in zip(CASES, outputs, strict=True):
        check_against_reference(output, cases[name][f"keep_{keep}"])
    if keep == "0.25":
        # Compression shortened every video prompt, and nothing else.
        for name, output in zip(CASES, outputs, strict=True):
            shorter = len(output.prompt_token_ids) < cases[name]["keep_1.0"]["unpruned_length"]
            assert shorter == ("video" in name)


@pytest.fixture
def request_fixture(request):
    return lambda keep: request.getfixturevalue("llm_compressed" if keep == "0.25" else "llm_full")


def test_full_checkpoint_serves_its_thinker(llm_full_checkpoint, cases, media):
    """A full OmniSIFT checkpoint (`OmniSiftOmniForConditionalGeneration`, talker and token2wav included) serves its
    thinker: the same results as the thinker checkpoint with the same weights; the talker's weights are dropped."""
    llm = llm_full_checkpoint
    names = ("video_audio_b", "text")
    outputs = llm.generate([request(cases[name], media) for name in names], GREEDY)
    for name, output in zip(names, outputs, strict=True):
        check_against_reference(output, cases[name]["keep_0.25"])


def test_request_keep_ratio_override(llm_compressed, cases, media):
    """`mm_processor_kwargs={"keep_ratio": 1.0}` on a compressing deployment gives the uncompressed model's result;
    `video_keep_ratio` / `audio_keep_ratio` are honoured too (fewer tokens kept at lower ratios)."""
    case = cases["video_audio_a"]
    full, lower = llm_compressed.generate(
        [request(case, media, keep_ratio=1.0), request(case, media, video_keep_ratio=0.1, audio_keep_ratio=0.3)],
        GREEDY,
    )
    check_against_reference(full, case["keep_1.0"])
    assert len(lower.prompt_token_ids) < len(case["keep_0.25"]["prompt_ids"])


def test_bad_requests_fail_alone(llm_compressed, llm_full, cases, media):
    """Each bad request gets a clear error naming the problem; the engine keeps serving the next request."""
    case = cases["video_audio_a"]
    with pytest.raises(ValueError, match="keep_ratio"):
        llm_compressed.generate([request(case, media, keep_ratio=1.5)], GREEDY)
    with pytest.raises((ValueError, TypeError), match="video_keep_ratio"):
        llm_compressed.generate([request(case, media, video_keep_ratio="half")], GREEDY)
    with pytest.raises(ValueError, match="without compression"):
        llm_full.generate([request(case, media, keep_ratio=0.25)], GREEDY)
    no_audio = {**request(case, media), "multi_modal_data": {"video": media["video_a"]}}
    with pytest.raises(ValueError, match="one audio track per video"):
        llm_compressed.generate([no_audio], GREEDY)
    (output,) = llm_compressed.generate([request(case, media)], GREEDY)
    check_against_reference(output, case["keep_0.25"], positions=False)


def _edited_checkpoint(reference, tmp_path, **changes):
    directory = tmp_path / "edited"
    shutil.copytree(reference / "keep_0.25", directory)
    config = json.loads((directory / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_bad_config_ratio_fails_at_load(reference, tmp_path):
    directory = _edited_checkpoint(reference, tmp_path, keep_ratio=0.0)
    with pytest.raises(Exception, match="keep_ratio"):
        load_llm(directory)


def test_checkpoint_that_is_not_omnisift_fails_at_load(reference, tmp_path):
    """A stock Qwen2.5-Omni thinker config under an OmniSIFT architecture name."""
    directory = _edited_checkpoint(
        reference,
        tmp_path,
        model_type="qwen2_5_omni_thinker",
        keep_ratio=None,
        video_keep_ratio=None,
        audio_keep_ratio=None,
        selector_hidden_size=None,
        selector_num_heads=None,
        selector_mlp_size=None,
        selector_estimator=None,
        auto_map=None,
    )
    with pytest.raises(Exception, match="not an OmniSIFT checkpoint"):
        load_llm(directory)


# ---------------------------------------------------------------------------------------------------------------------
# vllm serve
# ---------------------------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> tuple[int, dict]:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def test_vllm_serve_answers_a_local_video_like_transformers(reference, tmp_path):
    """`vllm serve` on 127.0.0.1: a chat request with a local video and its audio gets the transformers model's reply
    on the frames and samples vLLM decoded from that file; a bad request gets a 400 and the server keeps serving."""
    from vllm.multimodal.media import MediaConnector

    clip_url = (reference / "clip.mp4").as_uri()
    connector = MediaConnector(allowed_local_media_path=str(reference))
    frames, _ = connector.fetch_video(clip_url)
    audio, _ = connector.fetch_audio(clip_url)
    np.savez(reference / "served.npz", video=frames, audio=audio)
    run_reference(reference, "--served")
    expected = json.loads((reference / "served.json").read_text())["served"]["keep_0.25"]

    port = _free_port()
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen(
        [
            sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", str(reference / "keep_0.25"),
            "--host", "127.0.0.1", "--port", str(port), "--enforce-eager", "--dtype", "float32",
            "--max-model-len", "4096", "--allowed-local-media-path", str(reference),
            "--limit-mm-per-prompt", json.dumps({"video": 1, "audio": 1, "image": 1}),
            # A request's `use_audio_in_video` (and ratios) are mm_processor_kwargs: off unless trusted.
            "--trust-request-mm-kwargs",
        ],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "1"},
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-4000:]
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "vllm serve did not start in 300 s"
            time.sleep(2)

        def chat(**knobs):
            content = [
                {"type": "video_url", "video_url": {"url": clip_url}},
                {"type": "text", "text": "what happens in the clip"},
            ]
            return _post(
                f"{base}/v1/chat/completions",
                {
                    "model": str(reference / "keep_0.25"),
                    "messages": [{"role": "user", "content": content}],
                    "max_tokens": MAX_TOKENS,
                    "temperature": 0,
                    "mm_processor_kwargs": {"use_audio_in_video": True, "fps": 2.0, **knobs},
                    "return_token_ids": True,
                },
            )

        status, body = chat(keep_ratio=1.5)
        assert status == 400, body
        assert "keep_ratio" in json.dumps(body)
        status, body = chat()
        assert status == 200, body
        choice = body["choices"][0]
        assert body["usage"]["prompt_tokens"] == len(expected["prompt_ids"])
        assert choice["token_ids"] == expected["reply"]
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
