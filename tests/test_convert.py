"""The converter (`omnisift-convert`, `python -m omnisift_hf.models.qwen2_5_omni.convert`): a tiny checkpoint in the
published OmniSIFT layout (and a plain Qwen2.5-Omni one plus `--selector`) converted and loaded; selector placement,
a slow reference of the selector, full-model logits, file set and key layout, the model card, Hub source / push
stand-ins, and bad inputs that must stop the conversion with a clear message and leave no DST. `--with-talker`: a
stock full Qwen2.5-Omni (talker, token2wav, `spk_dict.pt`) converted into the full model, loaded bit-exactly, and
speaking."""

import configparser
import importlib
import json
import logging
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from cases_converter import CASES, stock_twin, write_full_checkpoint
from helpers import BUNDLE_DIR, REMOTE_CODE_FILES, build_inputs, perturb
from huggingface_hub import ModelCard
from reference_layout import (
    LEFT_BEHIND,
    PROCESSOR_FILES,
    native_thinker_config,
    random_model,
    write_reference_checkpoint,
    write_selector_file,
)
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoModelForMultimodalLM, Qwen2_5OmniThinkerForConditionalGeneration

import omnisift_hf.models.qwen2_5_omni.convert as convert_module
from omnisift_hf import (
    OmniSiftAudioSelector,
    OmniSiftConfig,
    OmniSiftForConditionalGeneration,
    OmniSiftOmniForConditionalGeneration,
)
from omnisift_hf.models.qwen2_5_omni.convert import convert, main
from omnisift_hf.testing_utils import tiny_omni_model, tiny_speakers

ROOT = Path(__file__).resolve().parent.parent
SELECTOR_PREFIX = "thinker.compressor."
# What every converted directory holds besides the weights and the processor files.
CONVERTED_FILES = {"config.json", "README.md", *REMOTE_CODE_FILES}
RATIOS = {"keep_ratio": 0.35, "audio_keep_ratio": 0.6}
NUM_HEADS = 2  # the tiny selector's head count (`tiny_config`)


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for path in sorted(directory.glob("*.safetensors")):
        tensors.update(load_file(path))
    return tensors


def leftovers(parent: Path, name: str) -> list[str]:
    """Entries of `parent` a conversion into `parent / name` may have left: DST itself or its staging directory."""
    return sorted(p.name for p in parent.iterdir() if p.name == name or p.name.startswith(f".{name}."))


def reference_selector_scores(
    raw: dict[str, torch.Tensor], audio: torch.Tensor, video: torch.Tensor, num_heads: int
) -> torch.Tensor:
    """VGAS written out from the paper with plain matmuls, in float64: `a = LN(W_a audio)`, `v = LN(W_v video)`,
    `x = LN(MHA(q=a, k=v, v=v) + a)`, `s = sigmoid(W_2 SiLU(W_1 x))`. `raw` holds the checkpoint's tensors by bare
    name; the stacked in-projection is q | k | v and q is applied to the audio.

    Args:
        audio (`torch.Tensor` of shape `(A, D)`), video (`torch.Tensor` of shape `(V, D)`): one window.

    Returns:
        `torch.Tensor` of shape `(A,)`.
    """
    raw = {name: tensor.double() for name, tensor in raw.items()}
    audio, video = audio.double(), video.double()

    def linear(x, name):
        return x @ raw[f"{name}.weight"].T + raw[f"{name}.bias"]

    def layer_norm(x, name):
        mean = x.mean(-1, keepdim=True)
        variance = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(variance + 1e-5) * raw[f"{name}.weight"] + raw[f"{name}.bias"]

    a = layer_norm(linear(audio, "a_proj"), "a_norm")  # (A, d)
    v = layer_norm(linear(video, "v_proj"), "v_norm")  # (V, d)
    width = a.shape[-1]
    w_q, w_k, w_v = raw["cross_attn.in_proj_weight"].split(width)
    b_q, b_k, b_v = raw["cross_attn.in_proj_bias"].split(width)
    q, k, values = a @ w_q.T + b_q, v @ w_k.T + b_k, v @ w_v.T + b_v
    head = width // num_heads
    heads = []
    for h in range(num_heads):
        columns = slice(h * head, (h + 1) * head)
        weights = torch.softmax(q[:, columns] @ k[:, columns].T / math.sqrt(head), dim=-1)  # (A, V)
        heads.append(weights @ values[:, columns])
    attended = linear(torch.cat(heads, dim=-1), "cross_attn.out_proj")
    x = layer_norm(attended + a, "post_attn_norm")
    return torch.sigmoid(linear(F.silu(linear(x, "score_head.0")), "score_head.2")).squeeze(-1)


# ---------------------------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """(model, directory) of a tiny OmniSIFT checkpoint in the published layout."""
    directory = tmp_path_factory.mktemp("reference") / "OmniSIFT-tiny"
    model = random_model(seed=0)
    write_reference_checkpoint(directory, model)
    return model, directory


@pytest.fixture(scope="module")
def converted(source, tmp_path_factory):
    _, directory = source
    dst = tmp_path_factory.mktemp("converted") / "omnisift-tiny"
    convert(directory, dst, selector_num_heads=NUM_HEADS, base_model="dingyue1011/OmniSIFT-7B", **RATIOS)
    return dst


@pytest.fixture(scope="module")
def raw_selector(source) -> dict[str, torch.Tensor]:
    """The selector tensors exactly as the source checkpoint stores them, by bare name."""
    _, directory = source
    raw = {}
    for path in sorted(directory.glob("*.safetensors")):
        with safe_open(path, framework="pt") as f:
            for key in f.keys():
                if key.startswith(SELECTOR_PREFIX):
                    raw[key.removeprefix(SELECTOR_PREFIX)] = f.get_tensor(key)
    assert len(raw) == 18
    return raw


@pytest.fixture(scope="module")
def media_inputs():
    """One clip: 4 temporal slices of 4 x 4 patches (4 tokens each) with 100 audio tokens interleaved."""
    return build_inputs([[("text", 3), ("video", 4, 4, 4, 400), ("text", 2)]])


@pytest.fixture(scope="module")
def expected_output(source, media_inputs):
    """The source model's output at the ratios the converted config records."""
    model, _ = source
    with torch.no_grad():
        return model(**media_inputs, **RATIOS)


@pytest.fixture(scope="module")
def plain_qwen(tmp_path_factory):
    """(model, directory) of a plain Qwen2.5-Omni checkpoint (no selector) whose thinker is `model`'s."""
    directory = tmp_path_factory.mktemp("plain") / "Qwen2.5-Omni-tiny"
    model = random_model(seed=40)
    write_reference_checkpoint(directory, model, with_selector=False)
    return model, directory


# ---------------------------------------------------------------------------------------------------------------------
# The published layout, converted
# ---------------------------------------------------------------------------------------------------------------------
def test_converted_file_set(converted):
    names = {p.name for p in converted.iterdir()}
    weights = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json"}
    assert names == CONVERTED_FILES | weights | set(PROCESSOR_FILES)
    assert not names & set(LEFT_BEHIND)  # speech assets stay behind
    for name, content in PROCESSOR_FILES.items():
        assert (converted / name).read_text() == content, name
    for name in REMOTE_CODE_FILES:
        assert (converted / name).read_text() == (BUNDLE_DIR / name).read_text(), name
    assert leftovers(converted.parent, converted.name) == [converted.name]  # no staging directory left


def test_converted_config(converted, tmp_path):
    config = json.loads((converted / "config.json").read_text())
    assert config["model_type"] == "omnisift"
    assert config["architectures"] == ["OmniSiftForConditionalGeneration"]
    assert config["keep_ratio"] == 0.35
    assert config["audio_keep_ratio"] == 0.6
    assert config.get("video_keep_ratio") is None
    # Sizes from the tensor shapes (16 wide, scoring MLP 8), heads from the option.
    assert (config["selector_hidden_size"], config["selector_num_heads"], config["selector_mlp_size"]) == (16, 2, 8)
    # The same auto_map as `save_pretrained` writes: config plus the four Auto classes.
    random_model(seed=3).save_pretrained(tmp_path)
    assert config["auto_map"] == json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert set(config["auto_map"]) == {
        "AutoConfig",
        "AutoModel",
        "AutoModelForImageTextToText",
        "AutoModelForMultimodalLM",
    }
    assert config["dtype"] == "float32"


def test_converted_keys_are_the_save_pretrained_layout(source, converted, tmp_path):
    model, _ = source
    model.save_pretrained(tmp_path)
    saved, ours = read_weights(tmp_path), read_weights(converted)
    assert set(ours) == set(saved)
    assert [k for k in ours if not torch.equal(ours[k], saved[k])] == []


def test_one_output_shard_per_input_shard(source, converted):
    _, directory = source
    source_map = json.loads((directory / "model.safetensors.index.json").read_text())["weight_map"]
    converted_map = json.loads((converted / "model.safetensors.index.json").read_text())["weight_map"]
    expected = {k.removeprefix("thinker."): shard for k, shard in source_map.items() if k.startswith("thinker.")}
    assert converted_map == expected


def test_selector_tensors_land_in_place(converted, raw_selector):
    model = OmniSiftForConditionalGeneration.from_pretrained(converted)
    width = model.config.selector_hidden_size
    attention = model.compressor.cross_attn
    assert attention.num_heads == NUM_HEADS
    assert attention._qkv_same_embed_dim  # the stacked in-projection, as in the reference
    for block, rows in zip(
        "qkv", (slice(0, width), slice(width, 2 * width), slice(2 * width, 3 * width)), strict=True
    ):
        assert torch.equal(attention.in_proj_weight[rows], raw_selector["cross_attn.in_proj_weight"][rows]), block
        assert torch.equal(attention.in_proj_bias[rows], raw_selector["cross_attn.in_proj_bias"][rows]), block
    loaded = model.compressor.state_dict()
    assert set(loaded) == set(raw_selector)
    assert [name for name, tensor in raw_selector.items() if not torch.equal(loaded[name], tensor)] == []


def test_selector_matches_slow_reference(converted, raw_selector):
    """Two windows of different lengths (the shorter one padded), scored by the loaded selector and by plain matmuls
    on the checkpoint's raw tensors."""
    model = OmniSiftForConditionalGeneration.from_pretrained(converted)
    generator = torch.Generator().manual_seed(7)
    hidden = model.config.text_config.hidden_size
    audio = torch.randn(2, 6, hidden, generator=generator)  # (W, A, D)
    video = torch.randn(2, 5, hidden, generator=generator)  # (W, V, D)
    padding = torch.zeros(2, 5, dtype=torch.bool)
    padding[1, 3:] = True  # the second window has 3 real video tokens
    with torch.no_grad():
        scores = model.compressor(audio, video, video_padding_mask=padding)  # (W, A)
    for window, real_video in ((0, 5), (1, 3)):
        expected = reference_selector_scores(raw_selector, audio[window], video[window, :real_video], NUM_HEADS)
        torch.testing.assert_close(scores[window].double(), expected, atol=1e-6, rtol=1e-5)
    # The reference is sensitive to the q | k | v order: swapping q and k changes the scores.
    width = model.config.selector_hidden_size
    swapped = dict(raw_selector)
    w_q, w_k, w_v = raw_selector["cross_attn.in_proj_weight"].split(width)
    swapped["cross_attn.in_proj_weight"] = torch.cat([w_k, w_q, w_v])
    wrong = reference_selector_scores(swapped, audio[0], video[0], NUM_HEADS)
    assert not torch.allclose(scores[0].double(), wrong, atol=1e-4)


@pytest.mark.parametrize("loader", ["class", "auto", "auto_trust_remote_code"])
def test_logits_equal_source_model(converted, media_inputs, expected_output, loader):
    if loader == "class":
        loaded = OmniSiftForConditionalGeneration.from_pretrained(converted)
    else:  # with omnisift_hf imported, even trust_remote_code=True resolves to the installed class
        loaded = AutoModel.from_pretrained(converted, trust_remote_code=loader == "auto_trust_remote_code")
    assert type(loaded) is OmniSiftForConditionalGeneration
    with torch.no_grad():
        got = loaded.eval()(**media_inputs)  # at the ratios recorded in the config
    # keep 0.35 with audio at 0.6 of 16 video + 100 audio tokens: the config's ratios, not keep 1.0
    assert (got.num_kept_audio_tokens.item(), got.num_audio_tokens.item()) == (60, 100)
    assert (got.num_kept_video_tokens.item(), got.num_video_tokens.item()) == (4, 16)
    assert torch.equal(got.kept_token_index, expected_output.kept_token_index)
    assert torch.equal(got.logits, expected_output.logits)


def test_model_card(converted):
    card = ModelCard.load(converted / "README.md")
    assert card.data.library_name == "transformers"
    assert card.data.pipeline_tag == "any-to-any"
    assert card.data.base_model == "dingyue1011/OmniSIFT-7B"
    text = card.text
    assert "arxiv.org/abs/2602.04804" in text and "eprint        = {2602.04804}" in text
    assert "| `keep_ratio` | `0.35` |" in text
    assert "| `audio_keep_ratio` | `0.6` |" in text
    assert "| `video_keep_ratio` | derived from `keep_ratio` |" in text
    assert f'AutoModel.from_pretrained("{converted}"' in text


# ---------------------------------------------------------------------------------------------------------------------
# Other sources
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("prefix", ["thinker.compressor.", "compressor.", ""])
def test_plain_qwen_plus_selector_file(plain_qwen, tmp_path, prefix):
    model, directory = plain_qwen
    selector = write_selector_file(tmp_path / "selector.safetensors", model, prefix)
    dst = tmp_path / "out"
    convert(directory, dst, selector=tmp_path / "selector.safetensors", selector_num_heads=NUM_HEADS)
    assert json.loads((dst / "model.safetensors.index.json").read_text())["weight_map"][
        "compressor.a_proj.weight"
    ] == ("model-00003-of-00003.safetensors")
    loaded = OmniSiftForConditionalGeneration.from_pretrained(dst)
    state = loaded.compressor.state_dict()
    assert [name for name, tensor in selector.items() if not torch.equal(state[name], tensor)] == []
    assert loaded.config.keep_ratio == OmniSiftConfig().keep_ratio  # nothing given: the default
    reference = {k: v for k, v in model.state_dict().items() if not k.startswith("compressor.")}
    assert [name for name, tensor in reference.items() if not torch.equal(loaded.state_dict()[name], tensor)] == []


def test_thinker_only_checkpoint_plus_selector(tmp_path):
    """A thinker saved by transformers (`qwen2_5_omni_thinker`, keys without `thinker.`), one shard."""
    torch.manual_seed(50)
    native = Qwen2_5OmniThinkerForConditionalGeneration(native_thinker_config())
    perturb(native, seed=51)
    native.save_pretrained(tmp_path / "thinker")
    donor = random_model(seed=52)
    selector = write_selector_file(tmp_path / "selector.safetensors", donor, "compressor.")
    convert(tmp_path / "thinker", tmp_path / "out", selector=tmp_path / "selector.safetensors", selector_num_heads=2)
    loaded = OmniSiftForConditionalGeneration.from_pretrained(tmp_path / "out").state_dict()
    expected = {**native.state_dict(), **{f"compressor.{k}": v for k, v in selector.items()}}
    assert [name for name, tensor in expected.items() if not torch.equal(loaded[name], tensor)] == []


def test_omnisift_directory_keeps_its_ratios(tmp_path):
    model = random_model(seed=60)
    model.config.keep_ratio, model.config.video_keep_ratio = 0.5, 0.4
    model.save_pretrained(tmp_path / "saved")
    convert(tmp_path / "saved", tmp_path / "out", selector_num_heads=2, audio_keep_ratio=0.9)
    config = OmniSiftConfig.from_pretrained(tmp_path / "out")
    assert (config.keep_ratio, config.video_keep_ratio, config.audio_keep_ratio) == (0.5, 0.4, 0.9)
    assert read_weights(tmp_path / "out").keys() == read_weights(tmp_path / "saved").keys()


def test_hub_source_is_downloaded(source, tmp_path, monkeypatch):
    """A SRC that is not a local directory goes through `snapshot_download` (a stand-in here), only its subfolder."""
    _, directory = source
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(directory.parent)  # the repository root, the checkpoint in a subfolder

    monkeypatch.setattr(convert_module, "snapshot_download", fake_snapshot_download)
    with pytest.raises(FileNotFoundError, match=f"pass --subfolder {directory.name}"):
        convert("org/omnisift-tiny", tmp_path / "out", selector_num_heads=2)
    assert leftovers(tmp_path, "out") == []
    convert("org/omnisift-tiny", tmp_path / "out", selector_num_heads=2, subfolder=directory.name)
    repo_id, kwargs = calls[-1]
    assert repo_id == "org/omnisift-tiny"
    assert all(p.startswith(f"{directory.name}/") for p in kwargs["allow_patterns"])
    assert f"{directory.name}/*.safetensors" in kwargs["allow_patterns"]
    assert ModelCard.load(tmp_path / "out" / "README.md").data.base_model == "org/omnisift-tiny"
    assert OmniSiftForConditionalGeneration.from_pretrained(tmp_path / "out").config.model_type == "omnisift"


def test_processor_object_is_saved_instead_of_source_files(source, tmp_path):
    _, directory = source

    class Processor:
        def save_pretrained(self, save_directory):
            (Path(save_directory) / "processor_config.json").write_text('{"processor_class": "Stand-in"}')

    convert(directory, tmp_path / "out", selector_num_heads=2, processor=Processor())
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert "processor_config.json" in names
    assert not names & (set(PROCESSOR_FILES) - {"generation_config.json"})
    assert "generation_config.json" in names  # not a processor file: still copied


def test_push_to_hub_uploads_the_converted_directory(source, tmp_path, monkeypatch):
    _, directory = source
    uploads = {}

    class FakeApi:
        def create_repo(self, repo_id, private=None, exist_ok=False):
            uploads["created"] = (repo_id, private, exist_ok)
            return type("RepoUrl", (), {"repo_id": repo_id})()

        def upload_folder(self, repo_id, folder_path, commit_message=None):
            uploads["files"] = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
            uploads["repo_id"] = repo_id

    monkeypatch.setattr(convert_module, "HfApi", FakeApi)
    dst = tmp_path / "out"
    convert(directory, dst, selector_num_heads=2, push_to_hub="org/omnisift-tiny", private=True)
    assert uploads["created"] == ("org/omnisift-tiny", True, True)
    assert uploads["repo_id"] == "org/omnisift-tiny"
    assert uploads["files"] == {p.name: p.read_bytes() for p in dst.iterdir()}
    assert 'AutoModel.from_pretrained("org/omnisift-tiny"' in uploads["files"]["README.md"].decode()


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------
def test_console_script_entry_point():
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    lines = parser["options.entry_points"]["console_scripts"].strip().splitlines()
    scripts = {name.strip(): target.strip() for name, target in (line.split("=") for line in lines)}
    module, function = scripts["omnisift-convert"].split(":")
    assert getattr(importlib.import_module(module), function) is main


def test_cli_converts(plain_qwen, tmp_path, capsys):
    model, directory = plain_qwen
    write_selector_file(tmp_path / "selector.safetensors", model, "thinker.compressor.")
    argv = [str(directory), str(tmp_path / "out"), "--selector", str(tmp_path / "selector.safetensors")]
    main([*argv, "--selector-num-heads", "2", "--keep-ratio", "0.35", "--video-keep-ratio", "0.3"])
    assert capsys.readouterr().out.strip() == str(tmp_path / "out")
    config = OmniSiftConfig.from_pretrained(tmp_path / "out")
    assert (config.keep_ratio, config.video_keep_ratio, config.audio_keep_ratio) == (0.35, 0.3, None)


def test_cli_error_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing"), str(tmp_path / "out")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("omnisift-convert: error: SRC") and "Traceback" not in error
    assert leftovers(tmp_path, "out") == []


# ---------------------------------------------------------------------------------------------------------------------
# Bad inputs: a clear message, no DST
# ---------------------------------------------------------------------------------------------------------------------
def test_missing_selector(plain_qwen, tmp_path):
    _, directory = plain_qwen
    with pytest.raises(ValueError, match=r"no selector weights \(`thinker.compressor.\*`\).*pass --selector PATH"):
        convert(directory, tmp_path / "out")
    assert leftovers(tmp_path, "out") == []


def test_selector_for_another_hidden_size(plain_qwen, tmp_path):
    _, directory = plain_qwen
    other = OmniSiftAudioSelector(hidden_size=48, selector_hidden_size=16, num_heads=2, mlp_size=8)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, tmp_path / "selector.safetensors")
    with pytest.raises(ValueError, match=r"input size 48, but SRC's text hidden size is 32"):
        convert(directory, tmp_path / "out", selector=tmp_path / "selector.safetensors", selector_num_heads=2)
    assert leftovers(tmp_path, "out") == []


def test_inconsistent_selector_shapes(plain_qwen, tmp_path):
    _, directory = plain_qwen
    selector = {k: v.contiguous() for k, v in random_model(seed=70).compressor.state_dict().items()}
    selector["post_attn_norm.weight"] = torch.ones(17)
    save_file(selector, tmp_path / "selector.safetensors")
    with pytest.raises(ValueError, match=r"'post_attn_norm.weight' has shape \[17\], expected \[16\]"):
        convert(directory, tmp_path / "out", selector=tmp_path / "selector.safetensors", selector_num_heads=2)
    assert leftovers(tmp_path, "out") == []


def test_selector_file_with_foreign_tensor(plain_qwen, tmp_path):
    _, directory = plain_qwen
    save_file({"thinker.model.norm.weight": torch.ones(32)}, tmp_path / "selector.safetensors")
    with pytest.raises(ValueError, match=r"holds 'thinker.model.norm.weight', which is not a selector tensor"):
        convert(directory, tmp_path / "out", selector=tmp_path / "selector.safetensors")
    assert leftovers(tmp_path, "out") == []


def test_heads_must_divide_selector_width(converted, source, tmp_path):
    _, directory = source
    with pytest.raises(ValueError, match=r"--selector-num-heads 3 does not divide the selector width 16"):
        convert(directory, tmp_path / "out", selector_num_heads=3)
    assert leftovers(tmp_path, "out") == []


@pytest.mark.parametrize("extra_key", ["vision_tower.blocks.0.weight", "thinker_extra.weight"])
def test_unknown_key_layout(tmp_path, extra_key):
    write_reference_checkpoint(tmp_path / "src", random_model(seed=80), extra={extra_key: torch.ones(2)})
    with pytest.raises(ValueError, match=rf"SRC tensor '{extra_key}' fits neither the full layout"):
        convert(tmp_path / "src", tmp_path / "out", selector_num_heads=2)
    assert leftovers(tmp_path, "out") == []


def test_unknown_key_in_thinker_only_layout(tmp_path):
    model = random_model(seed=81)
    model.save_pretrained(tmp_path / "src")
    tensors = load_file(tmp_path / "src" / "model.safetensors")
    save_file({**tensors, "encoder.weight": torch.ones(2)}, tmp_path / "src" / "model.safetensors")
    with pytest.raises(ValueError, match=r"SRC tensor 'encoder.weight' fits neither"):
        convert(tmp_path / "src", tmp_path / "out", selector_num_heads=2)
    assert leftovers(tmp_path, "out") == []


def test_incomplete_source(tmp_path):
    model = random_model(seed=82)
    model.save_pretrained(tmp_path / "src")
    tensors = load_file(tmp_path / "src" / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, tmp_path / "src" / "model.safetensors")
    with pytest.raises(ValueError, match=r"SRC lacks 1 thinker tensors .*'model.layers.1.mlp.up_proj.weight'"):
        convert(tmp_path / "src", tmp_path / "out", selector_num_heads=2)
    assert leftovers(tmp_path, "out") == []


def test_missing_source(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"is neither a local directory nor a Hub repository id"):
        convert(tmp_path / "does-not-exist", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"has no config.json"):
        convert(tmp_path / "empty", tmp_path / "out")
    assert leftovers(tmp_path, "out") == []


def test_unsupported_model_type(tmp_path):
    model = random_model(seed=83)
    model.save_pretrained(tmp_path / "src")
    config = json.loads((tmp_path / "src" / "config.json").read_text())
    (tmp_path / "src" / "config.json").write_text(json.dumps({**config, "model_type": "qwen2_vl"}))
    with pytest.raises(
        ValueError, match=r"SRC config.json '.*config.json' has model_type 'qwen2_vl'; expected a Qwen"
    ):
        convert(tmp_path / "src", tmp_path / "out", selector_num_heads=2)
    assert leftovers(tmp_path, "out") == []


def test_existing_destination(source, tmp_path):
    _, directory = source
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"already exists and is not empty; pass --overwrite"):
        convert(directory, dst, selector_num_heads=2)
    assert [p.name for p in dst.iterdir()] == ["keep.txt"]
    convert(directory, dst, selector_num_heads=2, overwrite=True)
    assert "keep.txt" not in {p.name for p in dst.iterdir()}
    assert OmniSiftForConditionalGeneration.from_pretrained(dst).config.model_type == "omnisift"
    assert leftovers(tmp_path, "out") == ["out"]


def test_failure_while_writing_leaves_nothing(source, tmp_path, monkeypatch):
    _, directory = source

    def failing_write(target, module_file):
        raise OSError("disk full")

    monkeypatch.setattr(convert_module, "write_remote_code", failing_write)
    with pytest.raises(OSError, match="disk full"):
        convert(directory, tmp_path / "out", selector_num_heads=2)
    assert leftovers(tmp_path, "out") == []


def test_bad_keep_ratio_is_refused_before_reading(source, tmp_path):
    _, directory = source
    with pytest.raises(ValueError, match=r"`keep_ratio` must be in \(0, 1\]"):
        convert(directory, tmp_path / "out", keep_ratio=1.5)
    assert leftovers(tmp_path, "out") == []


# ---------------------------------------------------------------------------------------------------------------------
# SRC and DST apart, interruptions, corrupted files
# ---------------------------------------------------------------------------------------------------------------------
def file_contents(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def staging_leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*") if p.name.endswith((".partial", ".previous")))


def test_cli_never_replaces_its_source(source, tmp_path, capsys):
    """`omnisift-convert s s --overwrite` used to replace the source (talker, token2wav, spk_dict.pt gone)."""
    _, directory = source
    src = tmp_path / "ckpt"
    src.mkdir()
    for path in directory.iterdir():
        (src / path.name).write_bytes(path.read_bytes())
    before = file_contents(src)
    (tmp_path / "link").symlink_to(src, target_is_directory=True)
    for dst in (src, src / "converted", tmp_path, tmp_path / "link"):
        with pytest.raises(SystemExit) as exit_info:
            main([str(src), str(dst), "--overwrite", "--selector-num-heads", "2"])
        assert exit_info.value.code == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and "Traceback" not in error
        assert error.startswith(f"omnisift-convert: error: DST '{dst}'") and f"SRC '{src}'" in error, error
        assert "pass a DST outside SRC" in error
        assert file_contents(src) == before
    assert staging_leftovers(tmp_path) == []


def test_sigterm_removes_the_staging_directory(source, tmp_path, monkeypatch):
    """SIGTERM mid-way used to leave the hidden `.DST.*.partial` directory behind (the default action ends the process
    without any clean-up). The converter now turns it into `SystemExit(143)` for the duration of the conversion."""
    _, directory = source
    handlers = []

    def terminated_while_writing(target, module_file):
        handlers.append(signal.getsignal(signal.SIGTERM))
        assert handlers[-1] is not signal.SIG_DFL, "no SIGTERM handler: the signal would end the test process"
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends

    monkeypatch.setattr(convert_module, "write_remote_code", terminated_while_writing)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with pytest.raises(SystemExit) as exit_info:
        convert(directory, tmp_path / "out", selector_num_heads=2)
    assert exit_info.value.code == 128 + signal.SIGTERM
    assert leftovers(tmp_path, "out") == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored


def test_sigterm_handler_of_the_caller_stays_in_charge(source, tmp_path, monkeypatch):
    _, directory = source

    class Stop(Exception):
        pass

    def caller_handler(signum, frame):
        raise Stop

    def terminated_while_writing(target, module_file):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)

    monkeypatch.setattr(convert_module, "write_remote_code", terminated_while_writing)
    previous = signal.signal(signal.SIGTERM, caller_handler)
    try:
        with pytest.raises(Stop):
            convert(directory, tmp_path / "out", selector_num_heads=2)
        assert signal.getsignal(signal.SIGTERM) is caller_handler
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert leftovers(tmp_path, "out") == []


SLOW_CONVERSION = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import omnisift_hf.models.qwen2_5_omni.convert as convert_module

    def stalled(target, module_file):
        Path(sys.argv[3]).write_text(str(target))
        time.sleep(60)

    convert_module.write_remote_code = stalled
    convert_module.main([sys.argv[1], sys.argv[2], "--selector-num-heads", "2"])
    """
)


@pytest.mark.slow
def test_killed_conversions_leave_nothing_behind(source, tmp_path, caplog):
    """SIGTERM: the staging directory is removed at once and the process exits 143. SIGKILL: nothing can run, so the
    next conversion into the same DST removes the directory (its marker names a process that has ended), and says so;
    directories it does not recognise, or whose process still runs, are left alone."""
    _, directory = source
    runs = {}
    for name in ("term", "kill"):
        flag = tmp_path / f"{name}.started"
        command = [sys.executable, "-c", SLOW_CONVERSION, str(directory), str(tmp_path / name), str(flag)]
        runs[name] = (subprocess.Popen(command, stderr=subprocess.PIPE), flag)
    deadline = time.monotonic() + 120
    while not all(flag.exists() for _, flag in runs.values()):
        assert time.monotonic() < deadline and all(p.poll() is None for p, _ in runs.values()), "no conversion started"
        time.sleep(0.1)
    assert len(leftovers(tmp_path, "term")) == len(leftovers(tmp_path, "kill")) == 1  # the staging directories
    runs["term"][0].send_signal(signal.SIGTERM)
    runs["kill"][0].kill()
    assert runs["term"][0].wait(timeout=60) == 128 + signal.SIGTERM, runs["term"][0].stderr.read().decode()
    assert runs["kill"][0].wait(timeout=60) == -signal.SIGKILL
    assert leftovers(tmp_path, "term") == []
    (killed,) = leftovers(tmp_path, "kill")

    foreign = tmp_path / ".kill.foreign.partial"  # not written by the converter
    foreign.mkdir()
    running = tmp_path / ".kill.running.partial"  # written by a process that still runs (this one)
    running.mkdir()
    marker = {"pid": os.getpid(), "host": convert_module.socket.gethostname()}
    (running / convert_module._STAGING_MARKER).write_text(json.dumps(marker))
    with caplog.at_level(logging.WARNING):
        convert(directory, tmp_path / "kill", selector_num_heads=2)
    assert leftovers(tmp_path, "kill") == sorted(["kill", foreign.name, running.name])
    removed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Removed")]
    assert len(removed) == 1 and killed in removed[0] and f"process {runs['kill'][0].pid}" in removed[0]


def test_truncated_shard_is_one_line(source, tmp_path, capsys):
    """A truncated shard used to end in a raw safetensors traceback."""
    _, directory = source
    src = tmp_path / "src"
    src.mkdir()
    for path in directory.iterdir():
        (src / path.name).write_bytes(path.read_bytes())
    shard = src / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(SystemExit) as exit_info:
        main([str(src), str(tmp_path / "out"), "--selector-num-heads", "2"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error
    assert error.startswith(f"omnisift-convert: error: SRC shard '{shard}' is not a readable safetensors file")
    assert "truncated or corrupted: download or copy it again" in error
    assert leftovers(tmp_path, "out") == []


def test_cli_interrupted(source, tmp_path, monkeypatch, capsys):
    _, directory = source

    def interrupted(target, module_file):
        raise KeyboardInterrupt

    monkeypatch.setattr(convert_module, "write_remote_code", interrupted)
    try:
        with pytest.raises(SystemExit) as exit_info:
            main([str(directory), str(tmp_path / "out"), "--selector-num-heads", "2"])
    except KeyboardInterrupt:  # would otherwise stop the whole test session
        pytest.fail("KeyboardInterrupt escaped main() with a traceback")
    assert exit_info.value.code == 130
    assert capsys.readouterr().err == "omnisift-convert: interrupted; no partial DST is left behind.\n"
    assert leftovers(tmp_path, "out") == []


@pytest.mark.parametrize("case", [case for case in CASES if case.error is not None], ids=lambda case: case.name)
def test_refused_conversions_leave_no_staging_directory(case, tmp_path):
    """Every bad input of `cases_converter.py` stops the conversion before anything is written."""
    with pytest.raises(case.error):
        case.call(tmp_path)
    assert staging_leftovers(tmp_path) == []
    assert not (tmp_path / "omni-dst" / "config.json").exists()


def test_dst_parent_not_writable(source, tmp_path, monkeypatch):
    _, directory = source
    parent = tmp_path / "read-only"
    parent.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: stand in for the permission check
        monkeypatch.setattr(convert_module.os, "access", lambda path, mode: Path(path) != parent)
    else:
        parent.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match=rf"DST '{parent}/new/out' cannot be created: '{parent}' is not"):
            convert(directory, parent / "new" / "out", selector_num_heads=2)
    finally:
        parent.chmod(0o700)
    assert list(parent.iterdir()) == []


def test_overwrite_replaces_a_link_not_its_target(source, tmp_path):
    """DST a symbolic link to a non-empty directory: `--overwrite` used to fail after writing (rmtree on the link)."""
    _, directory = source
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "mine.txt").write_text("mine")
    (tmp_path / "out").symlink_to(tmp_path / "target", target_is_directory=True)
    convert(directory, tmp_path / "out", selector_num_heads=2, overwrite=True)
    assert not (tmp_path / "out").is_symlink() and (tmp_path / "out" / "config.json").is_file()
    assert (tmp_path / "target" / "mine.txt").read_text() == "mine"
    assert leftovers(tmp_path, "out") == ["out"]


def test_failed_upload_says_dst_is_complete(source, tmp_path, monkeypatch):
    _, directory = source

    class OfflineApi:
        def create_repo(self, repo_id, private=None, exist_ok=False):
            raise ConnectionError("offline")

    monkeypatch.setattr(convert_module, "HfApi", OfflineApi)
    with pytest.raises(OSError, match=r"is complete, but uploading it to --push-to-hub 'org/x' failed \(offline\)"):
        convert(directory, tmp_path / "out", selector_num_heads=2, push_to_hub="org/x")
    assert OmniSiftConfig.from_pretrained(tmp_path / "out").model_type == "omnisift"


# ---------------------------------------------------------------------------------------------------------------------
# --with-talker: the full model (thinker, talker, token2wav, speakers)
# ---------------------------------------------------------------------------------------------------------------------
CLIP = [("text", 3), ("video", 4, 4, 4, 400), ("text", 2)]
SPEECH = {
    "generation_mode": "audio",
    "thinker_max_new_tokens": 4,
    "talker_max_new_tokens": 10,
    "talker_do_sample": False,
}
# PROCESSOR_FILES without the stand-in generation_config.json: a stock full model writes its own.
FULL_PROCESSOR_FILES = {name: content for name, content in PROCESSOR_FILES.items() if name != "generation_config.json"}


def assert_same_model(loaded: OmniSiftOmniForConditionalGeneration, expected: OmniSiftOmniForConditionalGeneration):
    """Every tensor (dtype included) and every speaker of `loaded` equal to `expected`'s."""
    ours, theirs = loaded.state_dict(), expected.state_dict()
    assert ours.keys() == theirs.keys()
    assert [k for k in ours if ours[k].dtype != theirs[k].dtype or not torch.equal(ours[k], theirs[k])] == []
    assert loaded.speaker_map.keys() == expected.speaker_map.keys()
    for name, speaker in expected.speaker_map.items():
        assert torch.equal(loaded.speaker_map[name]["cond"], speaker["cond"]), name
        assert torch.equal(loaded.speaker_map[name]["ref_mel"], speaker["ref_mel"]), name
        assert loaded.speaker_map[name]["bos_token"] == speaker["bos_token"], name


def speak(model, seed: int = 3, **kwargs):
    """A spoken reply to `CLIP`, greedy, with token2wav's noise seeded."""
    torch.manual_seed(seed)
    return model.generate(**build_inputs([CLIP]), **SPEECH, **kwargs)


@pytest.fixture(scope="module")
def omni():
    """The tiny full OmniSIFT model with every weight (selector included) moved off its init; speakers
    `tiny_speakers()`."""
    model = tiny_omni_model(seed=0)
    perturb(model, seed=90)
    return model


@pytest.fixture(scope="module")
def stock_full(omni, tmp_path_factory):
    """(directory, selector file): `save_pretrained` of a stock `Qwen2_5OmniForConditionalGeneration` (config
    `qwen2_5_omni`, thinker `qwen2_5_omni_thinker`, no selector) with `omni`'s weights, `spk_dict.pt` and processor
    files; and `omni`'s selector as a safetensors file."""
    directory = tmp_path_factory.mktemp("stock-full") / "Qwen2.5-Omni-tiny"
    write_full_checkpoint(directory, omni, with_selector=False)
    for name, content in FULL_PROCESSOR_FILES.items():
        (directory / name).write_text(content)
    assert json.loads((directory / "config.json").read_text())["model_type"] == "qwen2_5_omni"
    write_selector_file(directory.parent / "selector.safetensors", omni.thinker, "thinker.compressor.")
    return directory, directory.parent / "selector.safetensors"


@pytest.fixture(scope="module")
def converted_full(stock_full, tmp_path_factory):
    directory, selector = stock_full
    dst = tmp_path_factory.mktemp("converted-full") / "omnisift-omni-tiny"
    convert(directory, dst, selector=selector, selector_num_heads=NUM_HEADS, with_talker=True, keep_ratio=0.35)
    return dst


def test_with_talker_file_set_and_config(converted_full, stock_full, omni, tmp_path):
    directory, _ = stock_full
    names = {p.name for p in converted_full.iterdir()}
    weights = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json"}
    expected = CONVERTED_FILES | weights | set(FULL_PROCESSOR_FILES) | {"generation_config.json", "spk_dict.pt"}
    assert names == expected
    assert (converted_full / "spk_dict.pt").read_bytes() == (directory / "spk_dict.pt").read_bytes()
    assert leftovers(converted_full.parent, converted_full.name) == [converted_full.name]
    # config.json and the remote code: exactly what `save_pretrained` of the same model writes.
    omni.save_pretrained(tmp_path / "omni")
    saved = json.loads((tmp_path / "omni" / "config.json").read_text())
    saved["thinker_config"]["keep_ratio"] = 0.35
    config = json.loads((converted_full / "config.json").read_text())
    assert config == saved
    for name in REMOTE_CODE_FILES:
        assert (converted_full / name).read_text() == (tmp_path / "omni" / name).read_text(), name
    assert config["model_type"] == "omnisift_omni"
    assert config["architectures"] == ["OmniSiftOmniForConditionalGeneration"]
    assert set(config["auto_map"]) == {
        "AutoConfig",
        "AutoModel",
        "AutoModelForMultimodalLM",
        "AutoModelForTextToWaveform",
    }
    thinker = config["thinker_config"]
    assert thinker["model_type"] == "omnisift" and thinker["keep_ratio"] == 0.35
    assert (thinker["selector_hidden_size"], thinker["selector_num_heads"], thinker["selector_mlp_size"]) == (16, 2, 8)
    assert config["enable_audio_output"] is True
    # The keys as `save_pretrained` writes them; the selector, from --selector, in its own shard.
    assert read_weights(converted_full).keys() == read_weights(tmp_path / "omni").keys()
    weight_map = json.loads((converted_full / "model.safetensors.index.json").read_text())["weight_map"]
    assert {k for k, shard in weight_map.items() if shard.startswith("model-00002")} == {
        f"thinker.compressor.{name}" for name in omni.thinker.compressor.state_dict()
    }


@pytest.mark.parametrize("loader", ["class", "auto"])
def test_with_talker_loads_bit_exactly(converted_full, omni, loader):
    if loader == "class":
        loaded = OmniSiftOmniForConditionalGeneration.from_pretrained(converted_full)
    else:
        loaded = AutoModelForMultimodalLM.from_pretrained(converted_full)
    assert type(loaded) is OmniSiftOmniForConditionalGeneration and loaded.has_talker
    assert type(loaded.config.thinker_config) is OmniSiftConfig
    assert loaded.config.thinker_config.keep_ratio == 0.35
    assert_same_model(loaded, omni)


@pytest.mark.slow
def test_with_talker_speaks(converted_full, omni):
    """The converted directory speaks, exactly as the model it was converted from (same reply, same waveform)."""
    loaded = OmniSiftOmniForConditionalGeneration.from_pretrained(converted_full).eval()
    sequences, waveform = speak(loaded)  # at the recorded keep_ratio 0.35
    assert waveform.dim() == 1 and waveform.dtype == torch.float32 and waveform.numel() > 0
    assert torch.isfinite(waveform).all()
    assert loaded.compression_stats.num_kept_video_tokens.item() < loaded.compression_stats.num_video_tokens.item()
    expected_sequences, expected_waveform = speak(omni, keep_ratio=0.35)
    assert torch.equal(sequences, expected_sequences)
    assert torch.equal(waveform, expected_waveform)


def test_with_talker_published_layout(omni, tmp_path):
    """A full Qwen2.5-Omni repository with the selector as `thinker.compressor.*` (the published OmniSIFT layout, two
    shards): the selector comes from SRC, the key layout and sharding are SRC's."""
    source = write_full_checkpoint(tmp_path / "src", omni)
    convert(source, tmp_path / "out", selector_num_heads=NUM_HEADS, with_talker=True)
    index = "model.safetensors.index.json"
    assert (
        json.loads((tmp_path / "out" / index).read_text())["weight_map"]
        == json.loads((source / index).read_text())["weight_map"]
    )
    loaded = OmniSiftOmniForConditionalGeneration.from_pretrained(tmp_path / "out")
    assert_same_model(loaded, omni)
    assert loaded.config.thinker_config.keep_ratio == OmniSiftConfig().keep_ratio  # nothing given: the default


def test_with_talker_keeps_the_dtypes_of_the_source(omni, tmp_path):
    """Thinker and talker in bfloat16, token2wav in float32 (as Qwen2.5-Omni runs it): DST loads tensor for tensor
    and dtype for dtype as SRC does."""
    stock = stock_twin(omni)
    stock.thinker.to(torch.bfloat16)
    stock.talker.to(torch.bfloat16)
    stock.save_pretrained(tmp_path / "src")
    torch.save(tiny_speakers(), tmp_path / "src" / "spk_dict.pt")
    write_selector_file(tmp_path / "selector.safetensors", omni.thinker, "")
    selector = tmp_path / "selector.safetensors"
    convert(tmp_path / "src", tmp_path / "out", selector=selector, selector_num_heads=NUM_HEADS, with_talker=True)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["dtype"] == "bfloat16"
    ours = OmniSiftOmniForConditionalGeneration.from_pretrained(tmp_path / "out")
    theirs = OmniSiftOmniForConditionalGeneration.from_pretrained(tmp_path / "src")
    theirs.thinker.compressor.load_state_dict(ours.thinker.compressor.state_dict())  # SRC has no selector
    assert {p.dtype for p in ours.token2wav.parameters()} == {torch.float32}
    assert {p.dtype for p in ours.talker.parameters()} == {torch.bfloat16}
    assert_same_model(ours, theirs)


def test_with_talker_from_an_omnisift_omni_directory(omni, tmp_path):
    """A directory `OmniSiftOmniForConditionalGeneration.save_pretrained` wrote converts again (new ratios), and
    without --with-talker gives its thinker alone."""
    omni.save_pretrained(tmp_path / "saved")
    convert(
        tmp_path / "saved", tmp_path / "full", selector_num_heads=NUM_HEADS, with_talker=True, audio_keep_ratio=0.6
    )
    loaded = OmniSiftOmniForConditionalGeneration.from_pretrained(tmp_path / "full")
    assert (loaded.config.thinker_config.keep_ratio, loaded.config.thinker_config.audio_keep_ratio) == (0.25, 0.6)
    assert_same_model(loaded, omni)
    convert(tmp_path / "saved", tmp_path / "thinker", selector_num_heads=NUM_HEADS)
    assert "spk_dict.pt" not in {p.name for p in (tmp_path / "thinker").iterdir()}
    thinker = OmniSiftForConditionalGeneration.from_pretrained(tmp_path / "thinker").state_dict()
    expected = omni.thinker.state_dict()
    assert thinker.keys() == expected.keys()
    assert [k for k in expected if not torch.equal(thinker[k], expected[k])] == []


def test_without_the_flag_a_full_source_gives_the_thinker(stock_full, omni, tmp_path):
    directory, selector = stock_full
    convert(directory, tmp_path / "out", selector=selector, selector_num_heads=NUM_HEADS)
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert "spk_dict.pt" not in names
    assert json.loads((tmp_path / "out" / "config.json").read_text())["model_type"] == "omnisift"
    assert not [k for k in read_weights(tmp_path / "out") if k.startswith(("thinker.", "talker.", "token2wav."))]
    loaded = OmniSiftForConditionalGeneration.from_pretrained(tmp_path / "out").state_dict()
    expected = omni.thinker.state_dict()
    assert loaded.keys() == expected.keys()
    assert [k for k in expected if not torch.equal(loaded[k], expected[k])] == []


def test_cli_with_talker_and_speakers(omni, tmp_path, capsys):
    """A SRC without `spk_dict.pt`, given one with --speakers: DST speaks with those."""
    source = write_full_checkpoint(tmp_path / "src", omni, speakers=False)
    torch.save(tiny_speakers(seed=5), tmp_path / "voices.pt")
    argv = [str(source), str(tmp_path / "out"), "--with-talker", "--speakers", str(tmp_path / "voices.pt")]
    main([*argv, "--selector-num-heads", "2", "--video-keep-ratio", "0.3"])
    assert capsys.readouterr().out.strip() == str(tmp_path / "out")
    loaded = OmniSiftOmniForConditionalGeneration.from_pretrained(tmp_path / "out")
    assert loaded.config.thinker_config.video_keep_ratio == 0.3
    assert (tmp_path / "out" / "spk_dict.pt").read_bytes() == (tmp_path / "voices.pt").read_bytes()
    assert torch.equal(loaded.speaker_map["Ethan"]["ref_mel"], tiny_speakers(seed=5)["Ethan"]["ref_mel"])


def test_cli_with_talker_error_is_one_line(tmp_path, capsys):
    random_model(seed=84).save_pretrained(tmp_path / "thinker")
    capsys.readouterr()  # the progress bar of save_pretrained
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "thinker"), str(tmp_path / "out"), "--with-talker", "--selector-num-heads", "2"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error
    assert error.startswith("omnisift-convert: error: --with-talker: SRC config.json") and "'omnisift'" in error
    assert leftovers(tmp_path, "out") == []


@pytest.mark.parametrize("with_talker", [False, True])
def test_hub_source_downloads_speakers_only_with_talker(stock_full, tmp_path, monkeypatch, with_talker):
    directory, selector = stock_full
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append(kwargs)
        return str(directory)

    monkeypatch.setattr(convert_module, "snapshot_download", fake_snapshot_download)
    convert("org/omni-tiny", tmp_path / "out", selector=selector, selector_num_heads=2, with_talker=with_talker)
    assert ("spk_dict.pt" in calls[-1]["allow_patterns"]) is with_talker
    assert ((tmp_path / "out" / "spk_dict.pt").is_file()) is with_talker
    assert ModelCard.load(tmp_path / "out" / "README.md").data.base_model == "org/omni-tiny"


def test_with_talker_never_replaces_its_source(stock_full, tmp_path, capsys):
    directory, selector = stock_full
    before = file_contents(directory)
    for dst in (directory, directory / "converted", directory.parent):
        with pytest.raises(SystemExit):
            main([str(directory), str(dst), "--overwrite", "--with-talker", "--selector", str(selector)])
        assert "pass a DST outside SRC" in capsys.readouterr().err
    assert file_contents(directory) == before
    assert staging_leftovers(directory.parent) == []


def test_with_talker_sigterm_removes_the_staging_directory(stock_full, tmp_path, monkeypatch):
    directory, selector = stock_full
    before = file_contents(directory)

    def terminated_while_writing(target, module_file):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends

    monkeypatch.setattr(convert_module, "write_remote_code", terminated_while_writing)
    with pytest.raises(SystemExit) as exit_info:
        convert(directory, tmp_path / "out", selector=selector, selector_num_heads=2, with_talker=True)
    assert exit_info.value.code == 128 + signal.SIGTERM
    assert leftovers(tmp_path, "out") == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert file_contents(directory) == before


def test_with_talker_model_card(converted_full):
    card = ModelCard.load(converted_full / "README.md")
    assert "text-to-speech" in card.data.tags and card.data.pipeline_tag == "any-to-any"
    text = card.text
    assert "# OmniSIFT (Qwen2.5-Omni, thinker and talker)" in text
    assert f'AutoModelForMultimodalLM.from_pretrained(\n    "{converted_full}"' in text
    assert 'speaker="Chelsie"' in text and "sf.write(" in text
    assert "| `keep_ratio` | `0.35` |" in text and "`config.json` (`thinker_config`)" in text
