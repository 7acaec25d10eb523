"""Hub readiness: what `save_pretrained` / `push_to_hub` write (auto_map for four Auto classes, the remote-code files,
sharded weights), `push_to_hub` against a local stand-in for the Hub API, and a `trust_remote_code=True` load in a
process where `omnisift_hf` cannot be imported."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import transformers.utils.hub as transformers_hub
from helpers import BLOCK_OMNISIFT_HF, BUNDLE_DIR, REMOTE_CODE_FILES, build_inputs
from huggingface_hub import ModelCard
from huggingface_hub.errors import EntryNotFoundError
from reference_layout import random_model, write_reference_checkpoint
from transformers import AutoModel

from omnisift_hf import OmniSiftConfig, OmniSiftForConditionalGeneration
from omnisift_hf.models.qwen2_5_omni.convert import convert

ROOT = Path(__file__).resolve().parent.parent
MODEL_REFERENCE = "modeling_omnisift.OmniSiftForConditionalGeneration"
AUTO_MAP = {
    "AutoConfig": "configuration_omnisift.OmniSiftConfig",
    "AutoModel": MODEL_REFERENCE,
    "AutoModelForImageTextToText": MODEL_REFERENCE,
    "AutoModelForMultimodalLM": MODEL_REFERENCE,
}
RATIOS = {"keep_ratio": 0.35, "audio_keep_ratio": 0.6}


def assert_state_dicts_equal(loaded: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert set(loaded) == set(expected)
    different = [name for name, tensor in expected.items() if not torch.equal(loaded[name], tensor)]
    assert different == [], f"{len(different)} tensors differ, e.g. {different[:5]}"


def assert_remote_code_files(files: dict[str, bytes]) -> None:
    for name in set(files) & set(REMOTE_CODE_FILES):
        assert files[name] == (BUNDLE_DIR / name).read_bytes(), f"{name} differs from modeling/qwen2_5_omni/{name}"


@pytest.fixture(scope="module")
def model():
    return random_model(seed=90)


@pytest.fixture(scope="module")
def media_inputs():
    return build_inputs([[("text", 3), ("video", 4, 4, 4, 400), ("text", 2)]])


# ---------------------------------------------------------------------------------------------------------------------
# save_pretrained
# ---------------------------------------------------------------------------------------------------------------------
def test_save_pretrained_writes_auto_map_and_remote_code(model, tmp_path):
    model.save_pretrained(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"config.json", "generation_config.json", "model.safetensors", *REMOTE_CODE_FILES}
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == AUTO_MAP
    assert config["model_type"] == "omnisift"
    assert_remote_code_files({name: (tmp_path / name).read_bytes() for name in REMOTE_CODE_FILES})


def test_save_pretrained_replaces_foreign_model_entries_of_auto_map(tmp_path):
    """A model loaded from a repository whose code lives elsewhere (`repo--module.Class`) is saved with its own
    code: the model entries point at the files written next to it; unrelated entries stay."""
    model = random_model(seed=91)
    model.config.auto_map = {"AutoModel": "other/repo--modeling_x.Model", "AutoProcessor": "processing_x.Processor"}
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["auto_map"] == {
        **AUTO_MAP,
        "AutoProcessor": "processing_x.Processor",
    }


def test_config_save_pretrained_writes_its_own_code(tmp_path):
    OmniSiftConfig(keep_ratio=0.5).save_pretrained(tmp_path)
    # The configuration and the modules it imports (its ratio check, the bundle writer), as in the model's bundle.
    code = {"configuration_omnisift.py", "_shared_configuration.py", "compression.py", "remote_code.py"}
    assert code < set(REMOTE_CODE_FILES)
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", *code}
    assert_remote_code_files({name: (tmp_path / name).read_bytes() for name in code})
    assert json.loads((tmp_path / "config.json").read_text())["auto_map"] == {"AutoConfig": AUTO_MAP["AutoConfig"]}


def test_sharded_save_and_load_bit_exact(model, tmp_path, media_inputs):
    state_dict = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    total_bytes = sum(t.numel() * t.element_size() for t in state_dict.values())
    model.save_pretrained(tmp_path, max_shard_size=total_bytes // 4)
    shards = sorted(p.name for p in tmp_path.glob("model-*.safetensors"))
    assert len(shards) == 5, shards  # tensors are never split: 5 shards of <= 1/4 of the bytes
    assert not (tmp_path / "model.safetensors").exists()
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == shards
    compressor_keys = [k for k in index["weight_map"] if k.startswith("compressor.")]
    assert len(compressor_keys) == 18

    for loaded in (OmniSiftForConditionalGeneration.from_pretrained(tmp_path), AutoModel.from_pretrained(tmp_path)):
        assert type(loaded) is OmniSiftForConditionalGeneration
        assert_state_dicts_equal(loaded.state_dict(), state_dict)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(**media_inputs, **RATIOS).logits, model(**media_inputs, **RATIOS).logits)


# ---------------------------------------------------------------------------------------------------------------------
# push_to_hub against a local stand-in for the Hub API
# ---------------------------------------------------------------------------------------------------------------------
class FakeHubApi:
    """What transformers' `PushToHubMixin.push_to_hub` calls on `hf_api()`: `create_repo`, then one `create_commit`."""

    def __init__(self):
        self.repos: list[str] = []
        self.commits: list[dict[str, bytes]] = []

    def create_repo(self, repo_id, private=None, token=None, exist_ok=False, **kwargs):
        self.repos.append(repo_id)
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def create_commit(self, repo_id, operations, **kwargs):
        assert repo_id in self.repos
        # The files live in a temporary directory that is gone after the call: read them now.
        self.commits.append({op.path_in_repo: Path(op.path_or_fileobj).read_bytes() for op in operations})

    def __getattr__(self, name):
        raise AssertionError(f"push_to_hub called HfApi.{name}, which the stand-in does not expect")


class NoRemoteCard(ModelCard):
    @classmethod
    def load(cls, repo_id_or_path, *args, **kwargs):
        raise EntryNotFoundError(f"{repo_id_or_path} has no README.md yet")


@pytest.fixture
def fake_hub(monkeypatch):
    api = FakeHubApi()
    monkeypatch.setattr(transformers_hub, "_hf_api", api)
    monkeypatch.setattr(transformers_hub, "ModelCard", NoRemoteCard)
    return api


def test_push_to_hub_uploads_expected_files(model, fake_hub, tmp_path):
    state_dict = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    total_bytes = sum(t.numel() * t.element_size() for t in state_dict.values())
    model.push_to_hub("org/omnisift-tiny", max_shard_size=total_bytes // 2)

    assert fake_hub.repos == ["org/omnisift-tiny"]
    assert len(fake_hub.commits) == 1
    files = fake_hub.commits[0]
    shards = {name for name in files if name.startswith("model-") and name.endswith(".safetensors")}
    assert len(shards) == 3, shards  # tensors are never split: 3 shards of <= 1/2 of the bytes
    expected = {
        "config.json",
        "generation_config.json",
        "model.safetensors.index.json",
        "README.md",
        *REMOTE_CODE_FILES,
    }
    assert set(files) == expected | shards
    assert json.loads(files["config.json"])["auto_map"] == AUTO_MAP
    assert_remote_code_files(files)

    # What the Hub received is a complete checkpoint.
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    assert_state_dicts_equal(OmniSiftForConditionalGeneration.from_pretrained(tmp_path).state_dict(), state_dict)
    assert ModelCard.load(tmp_path / "README.md").data.library_name == "transformers"


# ---------------------------------------------------------------------------------------------------------------------
# trust_remote_code without omnisift_hf
# ---------------------------------------------------------------------------------------------------------------------
REMOTE_LOAD_SCRIPT = BLOCK_OMNISIFT_HF + textwrap.dedent(
    """
    import torch
    import transformers
    from transformers.conversion_mapping import USER_REGISTERED_MAPPINGS

    inputs_path, output_path, *directories = sys.argv[1:]
    inputs = torch.load(inputs_path)
    results = {}
    for directory in directories:
        for auto_class in ("AutoModel", "AutoModelForImageTextToText", "AutoModelForMultimodalLM"):
            model = getattr(transformers, auto_class).from_pretrained(directory, trust_remote_code=True).eval()
            with torch.no_grad():
                out = model(**inputs, keep_ratio=0.35, audio_keep_ratio=0.6)
            results[f"{directory}:{auto_class}"] = {
                "module": type(model).__module__,
                "class": type(model).__name__,
                "logits": out.logits,
                "num_kept_audio_tokens": out.num_kept_audio_tokens,
                "num_kept_video_tokens": out.num_kept_video_tokens,
            }
    results["omnisift_modules"] = sorted(name for name in sys.modules if name.split(".")[0] == "omnisift_hf")
    results["mapping_registered"] = "OmniSiftForConditionalGeneration" in USER_REGISTERED_MAPPINGS
    torch.save(results, output_path)
    """
)


@pytest.mark.slow
def test_trust_remote_code_without_omnisift_hf(model, media_inputs, tmp_path):
    """Both a `save_pretrained` directory and a converted one load through each Auto class from their own code alone,
    in a fresh process where `import omnisift_hf` fails, and give this process's outputs exactly."""
    model.save_pretrained(tmp_path / "saved")
    write_reference_checkpoint(tmp_path / "reference", model)
    convert(tmp_path / "reference", tmp_path / "converted", selector_num_heads=2)
    torch.save(media_inputs, tmp_path / "inputs.pt")
    env = {
        **os.environ,
        "HF_MODULES_CACHE": str(tmp_path / "modules"),  # a fresh cache: no code left from another run
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": "",
    }
    directories = [str(tmp_path / "saved"), str(tmp_path / "converted")]
    command = [sys.executable, "-c", REMOTE_LOAD_SCRIPT, str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")]
    completed = subprocess.run(
        [*command, *directories], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = torch.load(tmp_path / "out.pt")

    with torch.no_grad():
        expected = model(**media_inputs, **RATIOS)
    assert (expected.num_kept_audio_tokens.item(), expected.num_audio_tokens.item()) == (60, 100)  # selector decided
    assert results["omnisift_modules"] == []
    assert results["mapping_registered"]  # registered by the remote modelling file itself
    for directory in directories:
        for auto_class in ("AutoModel", "AutoModelForImageTextToText", "AutoModelForMultimodalLM"):
            result = results[f"{directory}:{auto_class}"]
            assert result["module"].startswith("transformers_modules."), result["module"]
            assert result["module"].endswith(".modeling_omnisift")
            assert result["class"] == "OmniSiftForConditionalGeneration"
            assert torch.equal(result["num_kept_audio_tokens"], expected.num_kept_audio_tokens)
            assert torch.equal(result["num_kept_video_tokens"], expected.num_kept_video_tokens)
            assert torch.equal(result["logits"], expected.logits), f"{directory} via {auto_class}"


# ---------------------------------------------------------------------------------------------------------------------
# One directory for model, processor and pipeline
# ---------------------------------------------------------------------------------------------------------------------
PROCESSOR_FILES = {"processor_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"}


def test_save_pretrained_with_processor_serves_every_loader(tmp_path):
    from transformers import AutoProcessor, pipeline

    from omnisift_hf.testing_utils import tiny_model, tiny_processor

    model, processor = tiny_model(), tiny_processor()
    model.save_pretrained(tmp_path, processor=processor)
    assert PROCESSOR_FILES <= {path.name for path in tmp_path.iterdir()}

    loaded = AutoProcessor.from_pretrained(tmp_path)
    prompt = "<|im_start|>user\nWhat color is the square?<|im_end|>\n"
    assert loaded(text=[prompt])["input_ids"] == processor(text=[prompt])["input_ids"]
    pipe = pipeline("omni-qa", model=str(tmp_path))
    assert type(pipe.model) is OmniSiftForConditionalGeneration
    assert_state_dicts_equal(pipe.model.state_dict(), model.state_dict())
    # The saved directory answers exactly as the in-memory model and processor do (greedy, same prompt).
    result = pipe("What color is the square?", max_new_tokens=2)
    in_memory = pipeline("omni-qa", model=model, processor=processor)("What color is the square?", max_new_tokens=2)
    assert isinstance(result["answer"], str) and result["answer"]
    assert result == in_memory


def test_push_to_hub_with_processor_uploads_its_files_in_the_same_commit(model, fake_hub):
    from omnisift_hf.testing_utils import tiny_processor

    model.push_to_hub("org/omnisift-tiny", processor=tiny_processor())
    assert len(fake_hub.commits) == 1
    files = set(fake_hub.commits[0])
    assert PROCESSOR_FILES <= files
    assert {"config.json", "model.safetensors", *REMOTE_CODE_FILES} <= files
    # Private on purpose: transformers' push_to_hub cannot pass the processor on to save_pretrained, so the model
    # holds it in this attribute for the duration of the call; it must not outlive the call (see also the next push).
    assert model._processor_to_push is None

    model.push_to_hub("org/omnisift-tiny")  # without a processor: no processor files
    assert not PROCESSOR_FILES & set(fake_hub.commits[1])
