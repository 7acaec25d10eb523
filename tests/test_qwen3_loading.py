"""The Qwen3-Omni backbone's configuration, registration and loading: a full Qwen3-Omni checkpoint (talker dropped), a
thinker saved by transformers and our own load bit-exactly; save/load, the plain `load_state_dict` of the saved layout,
the remote-code bundle and a `trust_remote_code=True` load without omnisift_hf."""

import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import transformers.conversion_mapping as conversion_mapping
from helpers import BLOCK_OMNISIFT_HF, ROOT, perturb
from huggingface_hub.errors import StrictDataclassError
from safetensors.torch import load_file, save_file
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageTextToText,
    AutoModelForMultimodalLM,
    Qwen3OmniMoeConfig,
    Qwen3OmniMoeThinkerConfig,
    Qwen3OmniMoeThinkerForConditionalGeneration,
)
from transformers.utils import logging as hf_logging

from omnisift_hf import OmniSiftAudioSelector
from omnisift_hf.models.qwen3_omni_moe import (
    OmniSiftQwen3OmniConfig,
    OmniSiftQwen3OmniForConditionalGeneration,
    modeling_omnisift,
)
from omnisift_hf.remote_code import remote_code_files
from omnisift_hf.testing_utils import tiny_qwen3_config, tiny_qwen3_inputs, tiny_qwen3_stock_config
from omnisift_hf.tools.bundle import backbone_bundles, stale_bundle_files

CLASS_NAME = "OmniSiftQwen3OmniForConditionalGeneration"
AUTO_CLASSES = ("AutoModel", "AutoModelForImageTextToText", "AutoModelForMultimodalLM")
BUNDLE_DIR = ROOT / "modeling" / "qwen3_omni_moe"
REMOTE_CODE_FILES = tuple(sorted(remote_code_files(modeling_omnisift.__file__)))
AV_CLIP = [("text", 3), ("video", 4, 4, 4, 400), ("text", 2)]


def stock_thinker(seed: int) -> Qwen3OmniMoeThinkerForConditionalGeneration:
    torch.manual_seed(seed)
    model = Qwen3OmniMoeThinkerForConditionalGeneration(tiny_qwen3_stock_config())
    perturb(model, seed=seed + 1)
    return model.eval()


def our_model(seed: int, **overrides) -> OmniSiftQwen3OmniForConditionalGeneration:
    """Every weight, selector included, moved off its init."""
    torch.manual_seed(seed)
    model = OmniSiftQwen3OmniForConditionalGeneration(tiny_qwen3_config(**overrides))
    perturb(model, seed=seed + 1)
    return model.eval()


def assert_weights_equal(model, reference: dict[str, torch.Tensor]) -> None:
    loaded = model.state_dict()
    missing = sorted(set(reference) - set(loaded))
    assert not missing, f"not in the model: {missing[:5]}"
    different = [name for name, tensor in reference.items() if not torch.equal(loaded[name], tensor)]
    assert not different, f"{len(different)} of {len(reference)} tensors differ, e.g. {different[:5]}"


def assert_selector_initialised(model) -> None:
    for name, tensor in model.compressor.state_dict().items():
        assert tensor.device.type != "meta" and torch.isfinite(tensor).all(), name
    assert model.compressor.a_proj.weight.abs().sum() > 0


def untrained_messages(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if r.levelno >= logging.WARNING and "untrained" in r.getMessage()]


def load_reports(records: list[logging.LogRecord]) -> list[str]:
    words = ("MISSING", "UNEXPECTED", "MISMATCH", "to instantiate a model of type")
    return [r.getMessage() for r in records if any(word in r.getMessage() for word in words)]


def selector_parameter_count(hidden: int, width: int = 512, mlp: int = 256) -> int:
    """Parameters of VGAS, written out from the paper's equations."""
    return 2 * (hidden * width + width) + 3 * 2 * width + 4 * (width * width + width) + (width * mlp + mlp) + mlp + 1


# ---------------------------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def thinker_checkpoint(tmp_path_factory):
    """(directory, state dict) of a stock thinker saved by transformers (experts one by one, no `thinker.` prefix)."""
    directory = tmp_path_factory.mktemp("qwen3_thinker")
    model = stock_thinker(seed=10)
    model.save_pretrained(directory)
    return directory, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def hub_checkpoint(tmp_path_factory, thinker_checkpoint):
    """(directory, state dict) of a Qwen/Qwen3-Omni-style repository: full-model config.json (`thinker_config`), two
    shards with an index, keys `thinker.*` plus talker and code2wav tensors that a thinker must drop."""
    directory = tmp_path_factory.mktemp("qwen3_hub")
    source, state_dict = thinker_checkpoint
    thinker = {f"thinker.{key}": value for key, value in load_file(source / "model.safetensors").items()}
    assert "thinker.model.layers.0.mlp.experts.3.gate_proj.weight" in thinker  # the Hub layout: experts apart
    generator = torch.Generator().manual_seed(123)
    speech = {
        "talker.model.embed_tokens.weight": torch.randn(8, 4, generator=generator),
        "talker.text_projection.linear_fc1.weight": torch.randn(4, 4, generator=generator),
        "talker.code_predictor.model.layers.0.mlp.up_proj.weight": torch.randn(4, 4, generator=generator),
        "code2wav.decoder.0.conv.weight": torch.randn(3, 3, generator=generator),
    }
    names = sorted(thinker)
    shards = {
        "model-00001-of-00002.safetensors": {k: thinker[k] for k in names[: len(names) // 2]},
        "model-00002-of-00002.safetensors": {**{k: thinker[k] for k in names[len(names) // 2 :]}, **speech},
    }
    weight_map = {}
    for filename, tensors in shards.items():
        save_file(tensors, directory / filename, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, filename))
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    Qwen3OmniMoeConfig(thinker_config=tiny_qwen3_stock_config().to_dict()).save_pretrained(directory)
    return directory, state_dict


@pytest.fixture(scope="module")
def omnisift_checkpoint(tmp_path_factory):
    """(directory, state dict) of an OmniSIFT Qwen3-Omni model saved by itself, with knobs set."""
    directory = tmp_path_factory.mktemp("omnisift_qwen3")
    model = our_model(seed=20, keep_ratio=0.35, audio_keep_ratio=0.6)
    model.save_pretrained(directory)
    return directory, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture
def log_records(caplog):
    """Warnings of the test's own call phase, from transformers' loggers and ours, read as `log_records()`."""
    hf_logging.warning_once.cache_clear()
    hf_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            yield lambda: caplog.get_records("call")
    finally:
        hf_logging.disable_propagation()
        hf_logging.warning_once.cache_clear()


# ---------------------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------------------
def test_config_defaults():
    config = OmniSiftQwen3OmniConfig()
    assert isinstance(config, Qwen3OmniMoeThinkerConfig) and config.model_type == "omnisift_qwen3_omni"
    assert (config.keep_ratio, config.video_keep_ratio, config.audio_keep_ratio) == (0.25, None, None)
    assert (config.selector_hidden_size, config.selector_num_heads, config.selector_mlp_size) == (512, 8, 256)
    assert config.selector_estimator == "ste"
    assert config.text_config.hidden_size == 2048  # Qwen3-Omni-30B-A3B's thinker: the selector is sized from it
    # Read by the stock `get_rope_index` but not declared by the stock thinker config: declared here.
    assert config.vision_start_token_id == 151652 and not hasattr(Qwen3OmniMoeThinkerConfig(), "vision_start_token_id")
    assert config.position_id_per_seconds == Qwen3OmniMoeThinkerConfig().position_id_per_seconds == 25


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("keep_ratio", 0, ("`keep_ratio`", "(0, 1]", "got 0.0")),
        ("video_keep_ratio", 1.5, ("`video_keep_ratio`", "got 1.5")),
        ("audio_keep_ratio", "0.5", ("audio_keep_ratio", "'0.5'")),
        ("selector_estimator", "gumbel", ("selector_estimator='gumbel'", "'ste'", "'attention_policy'")),
        ("selector_num_heads", 3, ("`selector_hidden_size` (512)", "`selector_num_heads` (3)")),
    ],
)
def test_config_validation(field, value, words):
    with pytest.raises(StrictDataclassError) as excinfo:
        OmniSiftQwen3OmniConfig(**{field: value})
    assert all(word in str(excinfo.value) for word in words), str(excinfo.value)


@pytest.mark.parametrize("source", ["hub_checkpoint", "thinker_checkpoint"])
def test_config_reads_qwen3_omni_config_files(source, request, log_records):
    directory, _ = request.getfixturevalue(source)
    config = OmniSiftQwen3OmniConfig.from_pretrained(directory)
    assert type(config) is OmniSiftQwen3OmniConfig
    assert config.text_config.hidden_size == 32 and config.text_config.num_experts == 4
    assert config.vision_config.deepstack_visual_indexes == [0, 1]
    assert (config.position_id_per_seconds, config.keep_ratio) == (13, 0.25)
    assert load_reports(log_records()) == []


def test_config_save_pretrained_round_trip(tmp_path):
    OmniSiftQwen3OmniConfig(keep_ratio=0.35, audio_keep_ratio=1.0).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "omnisift_qwen3_omni"
    assert saved["auto_map"] == {"AutoConfig": "configuration_omnisift.OmniSiftQwen3OmniConfig"}
    code = {"configuration_omnisift.py", "_shared_configuration.py", "compression.py", "remote_code.py"}
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", *code}
    for name in code:
        assert (tmp_path / name).read_text() == (BUNDLE_DIR / name).read_text(), name
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is OmniSiftQwen3OmniConfig and (loaded.keep_ratio, loaded.audio_keep_ratio) == (0.35, 1.0)


# ---------------------------------------------------------------------------------------------------------------------
# Registration and sizes
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("auto_class", [AutoModel, AutoModelForImageTextToText, AutoModelForMultimodalLM])
def test_auto_classes_from_config(auto_class):
    assert type(auto_class.from_config(tiny_qwen3_config())) is OmniSiftQwen3OmniForConditionalGeneration


def test_conversion_mapping_registered_for_class():
    assert conversion_mapping.get_checkpoint_conversion_mapping(CLASS_NAME) is not None
    assert CLASS_NAME in conversion_mapping.USER_REGISTERED_MAPPINGS
    assert OmniSiftQwen3OmniForConditionalGeneration.is_custom_code()  # why the registration is needed at all


def test_selector_is_sized_from_the_text_hidden_size():
    with torch.device("meta"):
        model = OmniSiftQwen3OmniForConditionalGeneration(OmniSiftQwen3OmniConfig())
    assert model.compressor.a_proj.in_features == model.compressor.v_proj.in_features == 2048
    assert model.compressor.cross_attn.num_heads == 8
    assert sum(p.numel() for p in model.compressor.parameters()) == selector_parameter_count(2048)
    with torch.device("meta"):
        selector = OmniSiftAudioSelector(hidden_size=3584, selector_hidden_size=512, num_heads=8, mlp_size=256)
    assert sum(p.numel() for p in selector.parameters()) == selector_parameter_count(3584) == 4_856_321
    tiny = OmniSiftQwen3OmniForConditionalGeneration(tiny_qwen3_config())
    assert tiny.compressor.a_proj.weight.shape == (16, 32) and len(tiny.compressor.state_dict()) == 18


# ---------------------------------------------------------------------------------------------------------------------
# The loading matrix
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["hub_checkpoint", "thinker_checkpoint"])
def test_load_qwen3_omni_checkpoint(source, request, log_records):
    directory, state_dict = request.getfixturevalue(source)
    model = OmniSiftQwen3OmniForConditionalGeneration.from_pretrained(directory)
    assert type(model.config) is OmniSiftQwen3OmniConfig and model.config.keep_ratio == 0.25
    assert_weights_equal(model, state_dict)  # experts fused, decoder under model.language_model
    assert_selector_initialised(model)
    assert not any(name.startswith(("talker", "code2wav")) for name in model.state_dict())
    assert len(untrained_messages(log_records())) == 1, [r.getMessage() for r in log_records()]
    assert load_reports(log_records()) == []  # nothing else went wrong silently


def test_load_own_checkpoint_round_trip(omnisift_checkpoint, log_records):
    directory, state_dict = omnisift_checkpoint
    for model in (
        OmniSiftQwen3OmniForConditionalGeneration.from_pretrained(directory),
        AutoModel.from_pretrained(directory),
    ):
        assert type(model) is OmniSiftQwen3OmniForConditionalGeneration
        assert set(model.state_dict()) == set(state_dict)
        assert_weights_equal(model, state_dict)
        assert (model.config.keep_ratio, model.config.audio_keep_ratio, model.config.video_keep_ratio) == (
            0.35,
            0.6,
            None,
        )
    assert untrained_messages(log_records()) == [] and load_reports(log_records()) == []


def test_own_checkpoint_files(omnisift_checkpoint):
    directory, _ = omnisift_checkpoint
    config = json.loads((directory / "config.json").read_text())
    assert config["model_type"] == "omnisift_qwen3_omni"
    reference = f"modeling_omnisift.{CLASS_NAME}"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_omnisift.OmniSiftQwen3OmniConfig",
        **dict.fromkeys(AUTO_CLASSES, reference),
    }
    for name in REMOTE_CODE_FILES:
        assert (directory / name).read_text() == (BUNDLE_DIR / name).read_text(), name
    saved = load_file(directory / "model.safetensors")
    # The selector at the top level, the experts one by one as in Qwen3-Omni checkpoints.
    assert len([k for k in saved if k.startswith("compressor.")]) == 18
    assert "model.layers.0.mlp.experts.0.gate_proj.weight" in saved


def test_load_published_style_checkpoint_with_its_selector(tmp_path, hub_checkpoint, log_records):
    """A full Qwen3-Omni repository with the selector stored as `thinker.compressor.*` loads it, without a warning."""
    source, state_dict = hub_checkpoint
    for item in source.iterdir():
        (tmp_path / item.name).write_bytes(item.read_bytes())
    torch.manual_seed(30)
    selector = OmniSiftAudioSelector(hidden_size=32, selector_hidden_size=16, num_heads=2, mlp_size=8)
    perturb(selector, seed=31)
    tensors = {f"thinker.compressor.{k}": v.contiguous() for k, v in selector.state_dict().items()}
    save_file(tensors, tmp_path / "model-compressor.safetensors", metadata={"format": "pt"})
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    index["weight_map"].update(dict.fromkeys(tensors, "model-compressor.safetensors"))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    model = OmniSiftQwen3OmniForConditionalGeneration.from_pretrained(tmp_path, config=tiny_qwen3_config())
    assert_weights_equal(model, state_dict)
    assert_weights_equal(model, {f"compressor.{k}": v for k, v in selector.state_dict().items()})
    assert untrained_messages(log_records()) == [] and load_reports(log_records()) == []


def test_unregistered_conversion_mapping_is_detected(hub_checkpoint, monkeypatch):
    """Proves the loading tests see the trap: without the registration, the decoder's weights are not loaded."""
    directory, state_dict = hub_checkpoint
    decoder = {k: v for k, v in state_dict.items() if k.startswith("model.language_model.")}
    # Experts and routers left out: transformers 5.24 leaves them uninitialised when missing in a custom-code model
    # (its `_initialize_weights` skips the MoE block, which has no parameters of its own), so their memory may hold
    # the values of an earlier load of the same shapes.
    dense = {k: v for k, v in decoder.items() if ".mlp." not in k}
    with monkeypatch.context() as patch:
        patch.delitem(conversion_mapping._checkpoint_conversion_mapping_cache, CLASS_NAME)
        patch.setattr(
            conversion_mapping, "USER_REGISTERED_MAPPINGS", conversion_mapping.USER_REGISTERED_MAPPINGS - {CLASS_NAME}
        )
        broken = OmniSiftQwen3OmniForConditionalGeneration.from_pretrained(directory).state_dict()
        same = [k for k, v in dense.items() if torch.equal(broken[k], v)]
        assert len(dense) > 20 and not same, same
    assert_weights_equal(OmniSiftQwen3OmniForConditionalGeneration.from_pretrained(directory), decoder)


def test_load_state_dict_reads_the_saved_layout(omnisift_checkpoint):
    """What `Trainer.train(resume_from_checkpoint=...)` does: a plain `load_state_dict` of the saved file (experts
    stored one by one) restores every weight, fused as `from_pretrained` fuses them."""
    directory, state_dict = omnisift_checkpoint
    model = our_model(seed=99)
    result = model.load_state_dict(load_file(directory / "model.safetensors"))
    assert not result.missing_keys and not result.unexpected_keys
    assert_weights_equal(model, state_dict)


def test_dtype_bfloat16_includes_the_selector(omnisift_checkpoint):
    directory, state_dict = omnisift_checkpoint
    model = OmniSiftQwen3OmniForConditionalGeneration.from_pretrained(directory, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert torch.equal(model.compressor.a_proj.weight, state_dict["compressor.a_proj.weight"].bfloat16())
    inputs = tiny_qwen3_inputs([AV_CLIP])
    inputs = {k: v.bfloat16() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in inputs.items()}
    with torch.no_grad():
        out = model(**inputs)
    assert out.logits.dtype == torch.bfloat16
    assert (out.num_kept_audio_tokens.item(), out.num_audio_tokens.item()) == (32, 52)  # the bf16 selector ran


# ---------------------------------------------------------------------------------------------------------------------
# Identity with the stock thinker at keep_ratio = 1.0, through checkpoints
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("segments", [AV_CLIP, [("text", 12)]], ids=["video-with-audio", "text-only"])
def test_identity_through_checkpoints(thinker_checkpoint, omnisift_checkpoint, segments):
    inputs = tiny_qwen3_inputs([segments])
    for directory in (thinker_checkpoint[0], omnisift_checkpoint[0]):
        native = Qwen3OmniMoeThinkerForConditionalGeneration.from_pretrained(directory).eval()
        ours = OmniSiftQwen3OmniForConditionalGeneration.from_pretrained(directory).eval()
        with torch.no_grad():
            assert torch.equal(ours(**inputs, keep_ratio=1.0).logits, native(**inputs).logits), directory


# ---------------------------------------------------------------------------------------------------------------------
# Remote code
# ---------------------------------------------------------------------------------------------------------------------
def test_bundle_is_generated_from_src():
    assert backbone_bundles()["qwen3_omni_moe"] == modeling_omnisift.__file__
    assert REMOTE_CODE_FILES == (
        "_shared_configuration.py",
        "_shared_modeling.py",
        "attention_policy.py",
        "compression.py",
        "configuration_omnisift.py",
        "modeling_omnisift.py",
        "remote_code.py",
        "selector.py",
    )
    assert sorted(path.name for path in BUNDLE_DIR.glob("*.py")) == list(REMOTE_CODE_FILES)
    assert [path for path in stale_bundle_files(ROOT / "modeling") if path.startswith("qwen3_omni_moe/")] == [], (
        "modeling/qwen3_omni_moe drifted from src/: run `python -m omnisift_hf.tools.bundle modeling`"
    )


def test_bundle_check_names_a_stale_file(tmp_path):
    from omnisift_hf.tools.bundle import main, write_bundles

    write_bundles(tmp_path)
    with pytest.raises(SystemExit) as excinfo:
        main([str(tmp_path), "--check"])
    assert excinfo.value.code == 0
    (tmp_path / "qwen3_omni_moe" / "selector.py").write_text("# edited\n")
    (tmp_path / "qwen2_5_omni" / "compression.py").unlink()
    assert stale_bundle_files(tmp_path) == ["qwen2_5_omni/compression.py", "qwen3_omni_moe/selector.py"]
    with pytest.raises(SystemExit) as excinfo:
        main([str(tmp_path), "--check"])
    assert excinfo.value.code == 1


REMOTE_LOAD_SCRIPT = BLOCK_OMNISIFT_HF + textwrap.dedent(
    """
    import torch
    import transformers
    from transformers.conversion_mapping import USER_REGISTERED_MAPPINGS

    inputs_path, output_path, directory = sys.argv[1:]
    inputs = torch.load(inputs_path)
    results = {}
    for auto_class in ("AutoModel", "AutoModelForImageTextToText", "AutoModelForMultimodalLM"):
        model = getattr(transformers, auto_class).from_pretrained(directory, trust_remote_code=True).eval()
        with torch.no_grad():
            out = model(**inputs)
        results[auto_class] = {"module": type(model).__module__, "class": type(model).__name__, "logits": out.logits}
    results["omnisift_modules"] = sorted(name for name in sys.modules if name.split(".")[0] == "omnisift_hf")
    results["mapping_registered"] = "OmniSiftQwen3OmniForConditionalGeneration" in USER_REGISTERED_MAPPINGS
    torch.save(results, output_path)
    """
)


@pytest.mark.slow
def test_trust_remote_code_without_omnisift_hf(omnisift_checkpoint, tmp_path):
    """A saved directory loads through each Auto class from its own code alone, in a fresh process where
    `import omnisift_hf` fails, and gives this process's compressed outputs exactly."""
    directory, _ = omnisift_checkpoint
    inputs = tiny_qwen3_inputs([AV_CLIP])
    torch.save(inputs, tmp_path / "inputs.pt")
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    command = [sys.executable, "-c", REMOTE_LOAD_SCRIPT, str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")]
    completed = subprocess.run(
        [*command, str(directory)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = torch.load(tmp_path / "out.pt")
    with torch.no_grad():
        expected = OmniSiftQwen3OmniForConditionalGeneration.from_pretrained(directory).eval()(**inputs)
    assert expected.kept_token_index is not None  # compressed, with the configured ratios
    assert results["omnisift_modules"] == [] and results["mapping_registered"]
    for auto_class in AUTO_CLASSES:
        result = results[auto_class]
        assert result["module"].startswith("transformers_modules.") and result["module"].endswith(".modeling_omnisift")
        assert result["class"] == CLASS_NAME
        assert torch.equal(result["logits"], expected.logits), auto_class


# ---------------------------------------------------------------------------------------------------------------------
# The converter (`omnisift-convert`) with a Qwen3-Omni SRC
# ---------------------------------------------------------------------------------------------------------------------
def _qwen3_src(tmp_path, full: bool):
    """A stock Qwen3-Omni checkpoint (the thinker as transformers saves it, or the full layout: `thinker.*` plus talker
    and code2wav tensors under a `qwen3_omni_moe` config) and the stock thinker's state dict, as saved."""
    torch.manual_seed(5)
    stock = Qwen3OmniMoeThinkerForConditionalGeneration(tiny_qwen3_stock_config()).eval()
    src = tmp_path / ("full" if full else "thinker")
    stock.save_pretrained(src)
    saved = load_file(src / "model.safetensors")
    if full:
        tensors = {f"thinker.{key}": value for key, value in saved.items()}
        tensors |= {"talker.model.embed_tokens.weight": torch.ones(4, 2), "code2wav.decoder.weight": torch.ones(3)}
        save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
        thinker = json.loads((src / "config.json").read_text())
        (src / "config.json").write_text(json.dumps({"model_type": "qwen3_omni_moe", "thinker_config": thinker}))
    return src, saved


def _selector_file(path, hidden_size: int) -> dict:
    torch.manual_seed(6)
    selector = OmniSiftAudioSelector(hidden_size, 16, 2, 8)
    tensors = {f"compressor.{key}": value.contiguous() for key, value in selector.state_dict().items()}
    save_file(tensors, path)
    return tensors


@pytest.mark.parametrize("full", [False, True])
def test_converter_writes_a_qwen3_omnisift_checkpoint(tmp_path, full):
    """A Qwen3-Omni SRC (thinker or full layout) plus `--selector` converts into an `omnisift_qwen3_omni` directory
    that loads bit-exactly (every thinker tensor of SRC, the selector; talker and code2wav dropped), with its remote
    code and a model card naming Qwen3-Omni."""
    from omnisift_hf.models.qwen2_5_omni.convert import convert

    src, saved = _qwen3_src(tmp_path, full)
    hidden = tiny_qwen3_stock_config().text_config.hidden_size
    selector = _selector_file(tmp_path / "selector.safetensors", hidden)
    dst = convert(src, tmp_path / "dst", selector=tmp_path / "selector.safetensors", keep_ratio=0.35)

    config = json.loads((dst / "config.json").read_text())
    assert config["model_type"] == "omnisift_qwen3_omni" and config["keep_ratio"] == 0.35
    assert config["architectures"] == ["OmniSiftQwen3OmniForConditionalGeneration"]
    assert (dst / "modeling_omnisift.py").is_file() and "Qwen3-Omni" in (dst / "README.md").read_text()
    written = {key: value for shard in sorted(dst.glob("*.safetensors")) for key, value in load_file(shard).items()}
    assert set(written) == set(saved) | set(selector)  # no talker / code2wav tensor
    assert all(torch.equal(written[key], value) for key, value in {**saved, **selector}.items())

    model = OmniSiftQwen3OmniForConditionalGeneration.from_pretrained(dst)
    assert model.config.keep_ratio == 0.35
    reloaded = {key: value for key, value in model.state_dict().items() if key.startswith("compressor.")}
    assert all(torch.equal(reloaded[key], value) for key, value in selector.items())


def test_converter_qwen3_errors(tmp_path):
    """No selector, a selector of another width, `--with-talker`: each a clear error before DST exists."""
    from omnisift_hf.models.qwen2_5_omni.convert import convert

    src, _ = _qwen3_src(tmp_path, full=True)
    with pytest.raises(ValueError, match="plain Qwen3-Omni checkpoint; pass --selector"):
        convert(src, tmp_path / "dst")
    _selector_file(tmp_path / "wide.safetensors", 64)
    with pytest.raises(ValueError, match="holds a selector for another model size"):
        convert(src, tmp_path / "dst", selector=tmp_path / "wide.safetensors")
    with pytest.raises(ValueError, match="Qwen3-Omni's talker is not supported"):
        convert(src, tmp_path / "dst", with_talker=True)
    assert not (tmp_path / "dst").exists()
