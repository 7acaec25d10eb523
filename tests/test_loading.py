"""Loading: Auto-class registration, selector sizes, the checkpoint matrix (Hub full model, thinker-only, our own)
bit-exact, the checkpoint conversion mapping, dtype / device_map, and identity with the native thinker."""

import json
import logging

import pytest
import torch
import transformers.conversion_mapping as conversion_mapping
from helpers import build_inputs, full_model_config, perturb
from reference_layout import native_thinker_config
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModel,
    AutoModelForImageTextToText,
    AutoModelForMultimodalLM,
    Qwen2_5OmniThinkerConfig,
    Qwen2_5OmniThinkerForConditionalGeneration,
)
from transformers.integrations.accelerate import compute_module_sizes
from transformers.utils import logging as hf_logging

from omnisift_hf import OmniSiftAudioSelector, OmniSiftConfig, OmniSiftForConditionalGeneration
from omnisift_hf.testing_utils import tiny_config

CLASS_NAME = "OmniSiftForConditionalGeneration"

# The 18 selector tensors of the published OmniSIFT checkpoint (`thinker.compressor.*`), see `OmniSiftAudioSelector`.
REFERENCE_SELECTOR_KEYS = {
    *(f"{m}.{p}" for m in ("v_proj", "a_proj", "v_norm", "a_norm", "post_attn_norm", "score_head.0", "score_head.2")
      for p in ("weight", "bias")),
    "cross_attn.in_proj_weight",
    "cross_attn.in_proj_bias",
    "cross_attn.out_proj.weight",
    "cross_attn.out_proj.bias",
}  # fmt: skip

# In-memory prefix of the native thinker (transformers >= 5.21) -> key prefix in Qwen/Qwen2.5-Omni-* safetensors.
HUB_PREFIXES = (
    ("model.language_model.", "thinker.model."),
    ("model.audio_tower.", "thinker.audio_tower."),
    ("model.visual.", "thinker.visual."),
    ("lm_head.", "thinker.lm_head."),
)


def selector_parameter_count(hidden: int, width: int = 512, mlp: int = 256) -> int:
    """Parameters of VGAS, written out from the paper's equations."""
    projections = 2 * (hidden * width + width)  # a_proj, v_proj
    norms = 3 * 2 * width  # a_norm, v_norm, post_attn_norm
    attention = (3 * width * width + 3 * width) + (width * width + width)  # in_proj (q|k|v), out_proj
    score_head = (width * mlp + mlp) + (mlp + 1)
    return projections + norms + attention + score_head


def native_thinker(seed: int = 0) -> Qwen2_5OmniThinkerForConditionalGeneration:
    torch.manual_seed(seed)
    model = Qwen2_5OmniThinkerForConditionalGeneration(native_thinker_config())
    perturb(model, seed=seed + 1)
    return model.eval()


def hub_key(name: str) -> str:
    for in_memory, hub in HUB_PREFIXES:
        if name.startswith(in_memory):
            return hub + name[len(in_memory) :]
    raise AssertionError(f"unexpected thinker key {name}")


def write_hub_checkpoint(directory, state_dict: dict[str, torch.Tensor], thinker: Qwen2_5OmniThinkerConfig) -> None:
    """A Qwen/Qwen2.5-Omni-style repository: full-model config.json and two safetensors shards with an index, keys
    `thinker.*` in the pre-5.21 layout plus talker / token2wav tensors that a thinker must ignore."""
    thinker_tensors = {hub_key(k): v.detach().clone().contiguous() for k, v in state_dict.items()}
    generator = torch.Generator().manual_seed(123)
    speech_tensors = {
        "talker.model.embed_tokens.weight": torch.randn(8, 4, generator=generator),
        "talker.thinker_to_talker_proj.weight": torch.randn(4, 4, generator=generator),
        "talker.codec_head.bias": torch.randn(8, generator=generator),
        "token2wav.code2wav_dit_model.input_embed.proj.weight": torch.randn(3, 3, generator=generator),
    }
    names = sorted(thinker_tensors)
    half = len(names) // 2
    shards = {
        "model-00001-of-00002.safetensors": {k: thinker_tensors[k] for k in names[:half]},
        "model-00002-of-00002.safetensors": {**{k: thinker_tensors[k] for k in names[half:]}, **speech_tensors},
    }
    weight_map, total_size = {}, 0
    for filename, tensors in shards.items():
        save_file(tensors, directory / filename, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, filename))
        total_size += sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total_size}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    full_model_config(thinker).save_pretrained(directory)


def assert_thinker_weights_equal(model: OmniSiftForConditionalGeneration, reference: dict[str, torch.Tensor]) -> None:
    loaded = model.state_dict()
    missing = sorted(set(reference) - set(loaded))
    assert not missing, f"not in the model: {missing[:5]}"
    different = [name for name, tensor in reference.items() if not torch.equal(loaded[name], tensor)]
    assert not different, f"{len(different)} of {len(reference)} tensors differ, e.g. {different[:5]}"


def assert_selector_initialised(model: OmniSiftForConditionalGeneration) -> None:
    selector = model.compressor.state_dict()
    assert set(selector) == REFERENCE_SELECTOR_KEYS
    for name, tensor in selector.items():
        assert tensor.device.type != "meta", name
        assert torch.isfinite(tensor).all(), name
    assert selector["a_proj.weight"].abs().sum() > 0  # not left at zeros


def untrained_messages(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if r.levelno >= logging.WARNING and "untrained" in r.getMessage()]


# ---------------------------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def native_state_dict() -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in native_thinker(seed=0).state_dict().items()}


@pytest.fixture(scope="module")
def hub_checkpoint(tmp_path_factory, native_state_dict):
    directory = tmp_path_factory.mktemp("qwen_omni_hub")
    write_hub_checkpoint(directory, native_state_dict, native_thinker_config())
    return directory


@pytest.fixture(scope="module")
def thinker_checkpoint(tmp_path_factory):
    """(directory, state dict) of a thinker saved by transformers itself."""
    directory = tmp_path_factory.mktemp("qwen_omni_thinker")
    model = native_thinker(seed=10)
    model.save_pretrained(directory)
    return directory, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def omnisift_checkpoint(tmp_path_factory):
    """(directory, state dict) of an OmniSIFT model with every weight, selector included, moved off its init."""
    directory = tmp_path_factory.mktemp("omnisift")
    torch.manual_seed(20)
    model = OmniSiftForConditionalGeneration(tiny_config(keep_ratio=0.35, audio_keep_ratio=0.6)).eval()
    perturb(model, seed=21)
    model.save_pretrained(directory)
    return directory, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture
def log_records(caplog):
    """Warnings of the test's own call phase, from transformers' loggers and ours, read as `log_records()`. The
    untrained-selector warning is a `warning_once`: its cache is cleared so that each test sees its own loads."""
    hf_logging.warning_once.cache_clear()
    hf_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            yield lambda: caplog.get_records("call")
    finally:
        hf_logging.disable_propagation()
        hf_logging.warning_once.cache_clear()


# ---------------------------------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("auto_class", [AutoModel, AutoModelForImageTextToText, AutoModelForMultimodalLM])
def test_auto_classes_from_config(auto_class):
    model = auto_class.from_config(tiny_config())
    assert type(model) is OmniSiftForConditionalGeneration


def test_auto_model_from_pretrained(omnisift_checkpoint):
    directory, state_dict = omnisift_checkpoint
    model = AutoModel.from_pretrained(directory)
    assert type(model) is OmniSiftForConditionalGeneration
    assert type(model.config) is OmniSiftConfig
    assert_thinker_weights_equal(model, state_dict)


def test_conversion_mapping_registered_for_class():
    mapping = conversion_mapping.get_checkpoint_conversion_mapping(CLASS_NAME)
    assert mapping is not None
    assert CLASS_NAME in conversion_mapping.USER_REGISTERED_MAPPINGS
    assert OmniSiftForConditionalGeneration.is_custom_code()  # why the registration is needed at all


# ---------------------------------------------------------------------------------------------------------------------
# Selector sizes (meta device: no memory, real shapes)
# ---------------------------------------------------------------------------------------------------------------------
def test_selector_parameter_count_7b():
    with torch.device("meta"):
        selector = OmniSiftAudioSelector(hidden_size=3584, selector_hidden_size=512, num_heads=8, mlp_size=256)
    state = selector.state_dict()
    assert set(state) == REFERENCE_SELECTOR_KEYS
    assert len(state) == 18
    assert sum(p.numel() for p in selector.parameters()) == 4_856_321
    assert selector_parameter_count(3584) == 4_856_321  # the formula below is the one the paper's number checks
    assert state["a_proj.weight"].shape == (512, 3584)
    assert state["v_proj.weight"].shape == (512, 3584)
    assert state["cross_attn.in_proj_weight"].shape == (3 * 512, 512)  # q | k | v stacked
    assert state["score_head.0.weight"].shape == (256, 512)
    assert state["score_head.2.weight"].shape == (1, 256)


def test_selector_parameter_count_3b():
    with torch.device("meta"):
        selector = OmniSiftAudioSelector(hidden_size=2048, selector_hidden_size=512, num_heads=8, mlp_size=256)
    assert set(selector.state_dict()) == REFERENCE_SELECTOR_KEYS
    assert sum(p.numel() for p in selector.parameters()) == selector_parameter_count(2048)


def test_full_default_model_selector_sized_from_text_config():
    config = OmniSiftConfig()
    with torch.device("meta"):
        model = OmniSiftForConditionalGeneration(config)
    hidden = config.text_config.hidden_size
    assert hidden == 3584
    assert model.compressor.a_proj.in_features == hidden
    assert model.compressor.v_proj.in_features == hidden
    assert model.compressor.cross_attn.num_heads == 8
    assert sum(p.numel() for p in model.compressor.parameters()) == 4_856_321
    assert {f"compressor.{k}" for k in REFERENCE_SELECTOR_KEYS} <= set(model.state_dict())


def test_full_3b_sized_model_selector_sized_from_text_config():
    config = OmniSiftConfig(
        text_config={"hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
                     "num_attention_heads": 16, "num_key_value_heads": 2},
        vision_config={"out_hidden_size": 2048},
        audio_config={"output_dim": 2048},
    )  # fmt: skip
    with torch.device("meta"):
        model = OmniSiftForConditionalGeneration(config)
    assert model.compressor.a_proj.in_features == 2048
    assert sum(p.numel() for p in model.compressor.parameters()) == selector_parameter_count(2048)


def test_selector_sizes_follow_config():
    model = OmniSiftForConditionalGeneration(tiny_config())
    assert model.compressor.a_proj.weight.shape == (16, 32)
    assert model.compressor.cross_attn.num_heads == 2
    assert model.compressor.score_head[0].weight.shape == (8, 16)


# ---------------------------------------------------------------------------------------------------------------------
# The loading matrix
# ---------------------------------------------------------------------------------------------------------------------
def test_load_hub_full_model_checkpoint(hub_checkpoint, native_state_dict, log_records):
    weight_map = json.loads((hub_checkpoint / "model.safetensors.index.json").read_text())["weight_map"]
    assert "thinker.model.layers.0.self_attn.q_proj.weight" in weight_map  # the Hub layout, not the in-memory one
    assert "thinker.audio_tower.conv1.weight" in weight_map and "thinker.visual.patch_embed.proj.weight" in weight_map
    model = OmniSiftForConditionalGeneration.from_pretrained(hub_checkpoint)
    assert type(model.config) is OmniSiftConfig
    assert model.config.text_config.hidden_size == 32
    assert model.config.keep_ratio == 0.25
    assert_thinker_weights_equal(model, native_state_dict)
    assert_selector_initialised(model)
    assert not any(name.startswith(("talker", "token2wav")) for name in model.state_dict())
    assert len(untrained_messages(log_records())) == 1, [r.getMessage() for r in log_records()]
    # Nothing else went wrong silently: no load report listing missing or unexpected keys.
    assert not [r for r in log_records() if "MISSING" in r.getMessage() or "UNEXPECTED" in r.getMessage()]


def test_load_thinker_checkpoint_saved_by_transformers(thinker_checkpoint, log_records):
    directory, state_dict = thinker_checkpoint
    saved_keys = set(load_file(directory / "model.safetensors"))
    assert "model.embed_tokens.weight" in saved_keys  # transformers writes the pre-5.21 layout
    model = OmniSiftForConditionalGeneration.from_pretrained(directory)
    assert type(model.config) is OmniSiftConfig
    assert_thinker_weights_equal(model, state_dict)
    assert_selector_initialised(model)
    assert len(untrained_messages(log_records())) == 1, [r.getMessage() for r in log_records()]
    assert not [r for r in log_records() if "MISSING" in r.getMessage() or "UNEXPECTED" in r.getMessage()]


def test_load_own_checkpoint_round_trip(omnisift_checkpoint, log_records):
    directory, state_dict = omnisift_checkpoint
    model = OmniSiftForConditionalGeneration.from_pretrained(directory)
    loaded = model.state_dict()
    assert set(loaded) == set(state_dict)
    assert all(torch.equal(loaded[name], tensor) for name, tensor in state_dict.items())
    assert model.config.keep_ratio == 0.35
    assert model.config.audio_keep_ratio == 0.6
    assert model.config.video_keep_ratio is None
    assert (model.config.selector_hidden_size, model.config.selector_num_heads) == (16, 2)
    assert untrained_messages(log_records()) == []


def test_own_checkpoint_files(omnisift_checkpoint):
    directory, _ = omnisift_checkpoint
    assert {"config.json", "model.safetensors"} <= {p.name for p in directory.iterdir()}
    saved = load_file(directory / "model.safetensors")
    assert {k.removeprefix("compressor.") for k in saved if k.startswith("compressor.")} == REFERENCE_SELECTOR_KEYS
    # The selector is stored at the top level, never renamed into the decoder.
    assert not [k for k in saved if "compressor" in k and not k.startswith("compressor.")]
    assert json.loads((directory / "config.json").read_text())["model_type"] == "omnisift"


def test_load_hub_style_omnisift_checkpoint(tmp_path, native_state_dict, log_records):
    """The published OmniSIFT checkpoint stores its selector as `thinker.compressor.*` next to `thinker.model.*`."""
    write_hub_checkpoint(tmp_path, native_state_dict, native_thinker_config())
    torch.manual_seed(30)
    selector = OmniSiftAudioSelector(hidden_size=32, selector_hidden_size=16, num_heads=2, mlp_size=8)
    perturb(selector, seed=31)
    save_file(
        {f"thinker.compressor.{k}": v.contiguous() for k, v in selector.state_dict().items()},
        tmp_path / "model-compressor.safetensors",
        metadata={"format": "pt"},
    )
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    index["weight_map"].update(
        dict.fromkeys((f"thinker.compressor.{k}" for k in selector.state_dict()), "model-compressor.safetensors")
    )
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))

    model = OmniSiftForConditionalGeneration.from_pretrained(tmp_path, config=tiny_config())
    assert_thinker_weights_equal(model, native_state_dict)
    assert_thinker_weights_equal(model, {f"compressor.{k}": v for k, v in selector.state_dict().items()})
    assert untrained_messages(log_records()) == []


def test_unregistered_conversion_mapping_is_detected(hub_checkpoint, native_state_dict, monkeypatch):
    """Proves the loading tests see the trap: without the registration, decoder weights are re-initialised."""
    decoder = {k: v for k, v in native_state_dict.items() if k.startswith("model.language_model.")}
    with monkeypatch.context() as patch:
        cache = conversion_mapping._checkpoint_conversion_mapping_cache
        patch.delitem(cache, CLASS_NAME)
        patch.setattr(
            conversion_mapping, "USER_REGISTERED_MAPPINGS", conversion_mapping.USER_REGISTERED_MAPPINGS - {CLASS_NAME}
        )
        broken = OmniSiftForConditionalGeneration.from_pretrained(hub_checkpoint).state_dict()
        different = [k for k, v in decoder.items() if not torch.equal(broken[k], v)]
        assert len(different) == len(decoder), "without the mapping, every decoder tensor must be re-initialised"

    assert CLASS_NAME in conversion_mapping._checkpoint_conversion_mapping_cache
    assert CLASS_NAME in conversion_mapping.USER_REGISTERED_MAPPINGS
    assert_thinker_weights_equal(OmniSiftForConditionalGeneration.from_pretrained(hub_checkpoint), decoder)


# ---------------------------------------------------------------------------------------------------------------------
# dtype and device_map
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["hub_checkpoint", "omnisift_checkpoint"])
def test_dtype_bfloat16_includes_selector(source, request):
    directory = request.getfixturevalue(source)
    directory = directory[0] if isinstance(directory, tuple) else directory
    model = OmniSiftForConditionalGeneration.from_pretrained(directory, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.compressor.parameters()} == {torch.bfloat16}
    assert_selector_initialised(model)

    inputs = build_inputs([[("text", 4), ("video", 4, 8, 8, 400), ("text", 5)]])
    inputs["pixel_values_videos"] = inputs["pixel_values_videos"].bfloat16()
    inputs["input_features"] = inputs["input_features"].bfloat16()
    with torch.no_grad():
        out = model(**inputs, keep_ratio=0.35)
    assert out.logits.dtype == torch.bfloat16
    assert (out.num_kept_audio_tokens.item(), out.num_audio_tokens.item()) == (48, 100)  # the bf16 selector ran


def test_dtype_bfloat16_values_are_the_cast_checkpoint(omnisift_checkpoint):
    directory, state_dict = omnisift_checkpoint
    loaded = OmniSiftForConditionalGeneration.from_pretrained(directory, dtype=torch.bfloat16).state_dict()
    for name, tensor in state_dict.items():
        if tensor.is_floating_point():
            assert torch.equal(loaded[name], tensor.to(torch.bfloat16)), name


@pytest.mark.parametrize("device_map", ["cpu", "auto"])
def test_device_map(omnisift_checkpoint, device_map):
    directory, state_dict = omnisift_checkpoint
    model = OmniSiftForConditionalGeneration.from_pretrained(directory, device_map=device_map)
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert len({p.device for p in model.compressor.parameters()}) == 1
    assert_thinker_weights_equal(model, state_dict)
    with torch.no_grad():
        out = model(**build_inputs([[("text", 4), ("video", 4, 8, 8, 400), ("text", 5)]]), keep_ratio=0.35)
    assert (out.num_kept_audio_tokens.item(), out.num_audio_tokens.item()) == (48, 100)


def test_device_map_never_splits_selector(omnisift_checkpoint, tmp_path):
    """With a memory budget whose boundary falls inside the selector, `device_map="auto"` must move the selector
    as a whole (its forward adds tensors from different submodules, so a split across GPUs cannot run)."""
    directory, _ = omnisift_checkpoint
    model = OmniSiftForConditionalGeneration(tiny_config())
    sizes, _ = compute_module_sizes(model, None, only_modules=False)
    total, selector = sizes[""], sizes["compressor"]
    placements = {}
    for budget in range(total - selector, total, selector // 4):
        loaded = OmniSiftForConditionalGeneration.from_pretrained(
            directory, device_map="auto", max_memory={"cpu": budget}, offload_folder=tmp_path / str(budget)
        )
        device_map = getattr(loaded, "hf_device_map", None) or {"": "cpu"}
        placements[budget] = {
            name: device
            for name, device in device_map.items()
            if name == "" or name == "compressor" or name.startswith("compressor.")
        }
    split = {budget: p for budget, p in placements.items() if len(set(p.values())) > 1}
    assert not split, f"the selector was split across devices: {split}"


# ---------------------------------------------------------------------------------------------------------------------
# Identity with the native thinker at keep_ratio = 1.0
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("inputs_name", ["av_inputs", "text_only"])
def test_identity_omnisift_loaded_from_native_checkpoint(thinker_checkpoint, inputs_name, request):
    directory, _ = thinker_checkpoint
    inputs = request.getfixturevalue("av_inputs") if inputs_name == "av_inputs" else build_inputs([[("text", 12)]])
    if inputs_name == "av_inputs":
        assert inputs["use_audio_in_video"] is True
    native = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(directory).eval()
    ours_from_config = OmniSiftForConditionalGeneration.from_pretrained(directory, keep_ratio=1.0).eval()
    ours = OmniSiftForConditionalGeneration.from_pretrained(directory).eval()
    with torch.no_grad():
        expected = native(**inputs).logits
        assert torch.equal(ours_from_config(**inputs).logits, expected)
        assert torch.equal(ours(**inputs, keep_ratio=1.0).logits, expected)


@pytest.mark.parametrize("inputs_name", ["av_inputs", "text_only"])
def test_identity_native_loaded_from_omnisift_checkpoint(omnisift_checkpoint, inputs_name, request):
    directory, _ = omnisift_checkpoint
    inputs = request.getfixturevalue("av_inputs") if inputs_name == "av_inputs" else build_inputs([[("text", 12)]])
    ours = OmniSiftForConditionalGeneration.from_pretrained(directory).eval()
    native = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(directory).eval()
    with torch.no_grad():
        assert torch.equal(ours(**inputs, keep_ratio=1.0).logits, native(**inputs).logits)
