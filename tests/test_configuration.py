"""OmniSiftConfig: defaults, validation of every knob, JSON round trip and reading Qwen2.5-Omni config files."""

import json
import math
import re

import pytest
from helpers import full_model_config
from huggingface_hub.errors import StrictDataclassError
from reference_layout import native_thinker_config
from transformers import AutoConfig, Qwen2_5OmniThinkerConfig

from omnisift_hf import OmniSiftConfig
from omnisift_hf.testing_utils import tiny_config

RATIO_FIELDS = ("keep_ratio", "video_keep_ratio", "audio_keep_ratio")


def assert_default_knobs(config: OmniSiftConfig) -> None:
    assert config.keep_ratio == 0.25
    assert config.video_keep_ratio is None
    assert config.audio_keep_ratio is None
    assert (config.selector_hidden_size, config.selector_num_heads, config.selector_mlp_size) == (512, 8, 256)


# ---------------------------------------------------------------------------------------------------------------------
# Defaults and identity
# ---------------------------------------------------------------------------------------------------------------------
def test_defaults():
    config = OmniSiftConfig()
    assert_default_knobs(config)
    assert config.model_type == "omnisift"
    assert OmniSiftConfig.model_type == "omnisift"
    assert isinstance(config, Qwen2_5OmniThinkerConfig)
    assert issubclass(OmniSiftConfig, Qwen2_5OmniThinkerConfig)
    # The default thinker is Qwen2.5-Omni-7B's: the selector is sized from this.
    assert config.text_config.hidden_size == 3584


def test_tiny_config_knob_overrides():
    config = tiny_config(keep_ratio=0.35, audio_keep_ratio=0.6)
    assert config.keep_ratio == 0.35
    assert config.audio_keep_ratio == 0.6
    assert config.video_keep_ratio is None


# ---------------------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------------------
# (value, how the error message shows it)
INVALID_RATIOS = [(0, "0.0"), (-0.1, "-0.1"), (1.5, "1.5"), (math.nan, "nan"), ("0.5", "'0.5'"), (True, "True")]


@pytest.mark.parametrize("field", RATIO_FIELDS)
@pytest.mark.parametrize(("value", "shown"), INVALID_RATIOS, ids=[repr(v) for v, _ in INVALID_RATIOS])
def test_invalid_keep_ratio_rejected(field, value, shown):
    # `@strict` wraps both its type check ("0.5", True) and `validate_keep_ratios` in its own error classes.
    with pytest.raises(StrictDataclassError) as excinfo:
        OmniSiftConfig(**{field: value})
    message = str(excinfo.value)
    quoted = re.compile(r"[`']({})[`']".format("|".join(RATIO_FIELDS)))
    assert set(quoted.findall(message)) == {field}, message
    assert f"got {shown}" in message or f"value {shown}" in message, message


@pytest.mark.parametrize("field", RATIO_FIELDS)
def test_int_one_accepted(field):
    config = OmniSiftConfig(**{field: 1})
    assert getattr(config, field) == 1


@pytest.mark.parametrize("field", ["video_keep_ratio", "audio_keep_ratio"])
def test_per_modality_ratios_accept_values_and_none(field):
    assert getattr(OmniSiftConfig(**{field: 0.3}), field) == 0.3
    assert getattr(OmniSiftConfig(**{field: None}), field) is None


def test_selector_heads_must_divide_width():
    with pytest.raises(StrictDataclassError) as excinfo:
        OmniSiftConfig(selector_hidden_size=30, selector_num_heads=8)
    message = str(excinfo.value)
    assert "selector_hidden_size" in message and "30" in message
    assert "selector_num_heads" in message and "8" in message


@pytest.mark.parametrize("field", ["selector_hidden_size", "selector_num_heads", "selector_mlp_size"])
def test_selector_sizes_must_be_positive(field):
    with pytest.raises(StrictDataclassError) as excinfo:
        OmniSiftConfig(**{field: 0})
    assert field in str(excinfo.value)


def test_invalid_ratio_set_after_construction_is_caught_on_validate_and_save(tmp_path):
    config = tiny_config()
    config.keep_ratio = 2.0  # `@strict` class validators do not run on assignment
    with pytest.raises(StrictDataclassError, match="keep_ratio"):
        config.validate()
    with pytest.raises(StrictDataclassError, match="keep_ratio"):
        config.save_pretrained(tmp_path)


def test_invalid_ratio_in_config_json_rejected_on_load(tmp_path):
    tiny_config().save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    data = json.loads(path.read_text())
    data["audio_keep_ratio"] = 0
    path.write_text(json.dumps(data))
    with pytest.raises(StrictDataclassError) as excinfo:
        OmniSiftConfig.from_pretrained(tmp_path)
    assert "audio_keep_ratio" in str(excinfo.value)


# ---------------------------------------------------------------------------------------------------------------------
# JSON round trip
# ---------------------------------------------------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path):
    config = tiny_config(
        keep_ratio=0.35,
        video_keep_ratio=0.3,
        audio_keep_ratio=0.6,
        selector_hidden_size=24,
        selector_num_heads=3,
        selector_mlp_size=12,
    )
    config.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["model_type"] == "omnisift"
    assert data["keep_ratio"] == 0.35

    loaded = OmniSiftConfig.from_pretrained(tmp_path)
    assert type(loaded) is OmniSiftConfig
    assert loaded.keep_ratio == 0.35
    assert loaded.video_keep_ratio == 0.3
    assert loaded.audio_keep_ratio == 0.6
    assert (loaded.selector_hidden_size, loaded.selector_num_heads, loaded.selector_mlp_size) == (24, 3, 12)
    assert loaded.text_config.hidden_size == config.text_config.hidden_size == 32
    assert loaded.to_dict() == config.to_dict()


def test_round_trip_keeps_unset_modality_ratios_unset(tmp_path):
    tiny_config(keep_ratio=1).save_pretrained(tmp_path)
    loaded = OmniSiftConfig.from_pretrained(tmp_path)
    assert loaded.keep_ratio == 1
    assert loaded.video_keep_ratio is None
    assert loaded.audio_keep_ratio is None


def test_from_pretrained_kwargs_override_knobs(tmp_path):
    tiny_config(keep_ratio=0.35).save_pretrained(tmp_path)
    loaded = OmniSiftConfig.from_pretrained(tmp_path, keep_ratio=0.5, audio_keep_ratio=0.7)
    assert loaded.keep_ratio == 0.5
    assert loaded.audio_keep_ratio == 0.7


def test_auto_config_resolves_omnisift_directory(tmp_path):
    tiny_config(keep_ratio=0.35).save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is OmniSiftConfig
    assert loaded.keep_ratio == 0.35


# ---------------------------------------------------------------------------------------------------------------------
# Reading Qwen2.5-Omni config files
# ---------------------------------------------------------------------------------------------------------------------
def test_from_full_qwen_omni_config_reads_thinker_config(tmp_path):
    thinker = native_thinker_config()
    full_model_config(thinker).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "qwen2_5_omni"

    loaded = OmniSiftConfig.from_pretrained(tmp_path)
    assert type(loaded) is OmniSiftConfig
    assert loaded.model_type == "omnisift"
    # Not the 7B defaults: the thinker's own sub-configs and token ids.
    assert loaded.text_config.to_dict() == thinker.text_config.to_dict()
    assert loaded.vision_config.to_dict() == thinker.vision_config.to_dict()
    assert loaded.audio_config.to_dict() == thinker.audio_config.to_dict()
    assert loaded.text_config.hidden_size == 32
    for name in (
        "audio_token_id",
        "video_token_id",
        "image_token_id",
        "vision_start_token_id",
        "audio_start_token_id",
    ):
        assert getattr(loaded, name) == getattr(thinker, name), name
    assert_default_knobs(loaded)


def test_from_full_qwen_omni_config_with_knob_kwargs(tmp_path):
    full_model_config(native_thinker_config()).save_pretrained(tmp_path)
    loaded = OmniSiftConfig.from_pretrained(tmp_path, keep_ratio=0.35, selector_hidden_size=16, selector_num_heads=2)
    assert loaded.keep_ratio == 0.35
    assert (loaded.selector_hidden_size, loaded.selector_num_heads) == (16, 2)
    assert loaded.text_config.hidden_size == 32


def test_from_thinker_only_config(tmp_path):
    thinker = native_thinker_config()
    thinker.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "qwen2_5_omni_thinker"

    loaded = OmniSiftConfig.from_pretrained(tmp_path)
    assert type(loaded) is OmniSiftConfig
    assert loaded.model_type == "omnisift"
    assert loaded.text_config.to_dict() == thinker.text_config.to_dict()
    assert loaded.vision_config.to_dict() == thinker.vision_config.to_dict()
    assert loaded.audio_config.to_dict() == thinker.audio_config.to_dict()
    assert loaded.video_token_id == thinker.video_token_id
    assert loaded.vision_start_token_id == thinker.vision_start_token_id
    assert_default_knobs(loaded)


def test_from_qwen_config_then_save_is_an_omnisift_config(tmp_path):
    full_model_config(native_thinker_config()).save_pretrained(tmp_path / "qwen")
    OmniSiftConfig.from_pretrained(tmp_path / "qwen").save_pretrained(tmp_path / "omnisift")
    data = json.loads((tmp_path / "omnisift" / "config.json").read_text())
    assert data["model_type"] == "omnisift"
    assert "thinker_config" not in data
    assert type(AutoConfig.from_pretrained(tmp_path / "omnisift")) is OmniSiftConfig
