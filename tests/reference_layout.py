"""Helpers of the checkpoint tests (`test_convert.py`, `test_hub.py`, `test_loading.py`, ...): tiny checkpoints in
the layouts the converter reads.

The published OmniSIFT checkpoint is a full Qwen2.5-Omni repository: config.json with `thinker_config`, safetensors
shards with `thinker.*` keys in the pre-5.21 layout (`thinker.model.layers...`, `thinker.visual...`,
`thinker.audio_tower...`, `thinker.lm_head...`), the selector as `thinker.compressor.*`, and `talker.*` /
`token2wav.*` tensors a thinker must ignore.
"""

import json
from pathlib import Path

import torch
from helpers import full_model_config, perturb
from safetensors.torch import save_file
from transformers import Qwen2_5OmniThinkerConfig

from omnisift_hf import OmniSiftForConditionalGeneration
from omnisift_hf.testing_utils import tiny_config

# In-memory prefix of OmniSiftForConditionalGeneration -> key prefix in the published checkpoint.
REFERENCE_PREFIXES = (
    ("model.language_model.", "thinker.model."),
    ("model.audio_tower.", "thinker.audio_tower."),
    ("model.visual.", "thinker.visual."),
    ("lm_head.", "thinker.lm_head."),
    ("compressor.", "thinker.compressor."),
)
OMNISIFT_FIELDS = (
    "keep_ratio",
    "video_keep_ratio",
    "audio_keep_ratio",
    "selector_hidden_size",
    "selector_num_heads",
    "selector_mlp_size",
)
# Processor/tokenizer files of a Qwen2.5-Omni repository (contents are stand-ins), and files that must stay behind.
PROCESSOR_FILES = {
    "preprocessor_config.json": '{"processor_class": "Qwen2_5OmniProcessor"}',
    "tokenizer_config.json": '{"model_max_length": 32768}',
    "tokenizer.json": '{"version": "1.0"}',
    "vocab.json": '{"a": 0}',
    "merges.txt": "#version: 0.2\n",
    "special_tokens_map.json": "{}",
    "added_tokens.json": "{}",
    "chat_template.json": '{"chat_template": "{{ messages }}"}',
    "generation_config.json": '{"eos_token_id": 141}',
}
LEFT_BEHIND = {"spk_dict.pt": "speaker embeddings of the talker"}


def reference_key(name: str) -> str:
    for in_memory, reference in REFERENCE_PREFIXES:
        if name.startswith(in_memory):
            return reference + name.removeprefix(in_memory)
    raise AssertionError(f"unexpected key {name}")


def native_thinker_config(**overrides) -> Qwen2_5OmniThinkerConfig:
    """The Qwen2.5-Omni thinker config with exactly the tiny OmniSIFT sizes and token ids."""
    fields = tiny_config(**overrides).to_dict()
    for key in (*OMNISIFT_FIELDS, "model_type", "architectures", "transformers_version", "auto_map", "_name_or_path"):
        fields.pop(key, None)
    return Qwen2_5OmniThinkerConfig(**fields)


def random_model(seed: int = 0) -> OmniSiftForConditionalGeneration:
    """A tiny OmniSIFT model with every weight, selector included, moved off its init."""
    torch.manual_seed(seed)
    model = OmniSiftForConditionalGeneration(tiny_config())
    perturb(model, seed=seed + 1)
    return model.eval()


def write_reference_checkpoint(
    directory: Path, model: OmniSiftForConditionalGeneration, with_selector: bool = True, extra: dict | None = None
) -> dict[str, torch.Tensor]:
    """Write `model` in the published checkpoint's layout (two shards + index, speech tensors in the second, processor
    files next to them); without its selector for `with_selector=False` (a plain Qwen2.5-Omni repository). `extra`
    tensors are added to the first shard as they are. Returns the written thinker tensors by key."""
    directory.mkdir(parents=True, exist_ok=True)
    thinker = {
        reference_key(name): tensor.detach().clone().contiguous()
        for name, tensor in model.state_dict().items()
        if with_selector or not name.startswith("compressor.")
    }
    generator = torch.Generator().manual_seed(123)
    speech = {
        "talker.model.embed_tokens.weight": torch.randn(8, 4, generator=generator),
        "talker.thinker_to_talker_proj.weight": torch.randn(4, 4, generator=generator),
        "token2wav.code2wav_dit_model.input_embed.proj.weight": torch.randn(3, 3, generator=generator),
    }
    names = sorted(thinker)
    half = len(names) // 2
    shards = {
        "model-00001-of-00002.safetensors": {**{k: thinker[k] for k in names[:half]}, **(extra or {})},
        "model-00002-of-00002.safetensors": {**{k: thinker[k] for k in names[half:]}, **speech},
    }
    weight_map = {}
    for filename, tensors in shards.items():
        save_file(tensors, directory / filename, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, filename))
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    full_model_config(native_thinker_config()).save_pretrained(directory)
    for name, content in {**PROCESSOR_FILES, **LEFT_BEHIND}.items():
        (directory / name).write_text(content)
    return thinker


def write_selector_file(path: Path, model: OmniSiftForConditionalGeneration, prefix: str) -> dict[str, torch.Tensor]:
    """The selector of `model` alone, keys `prefix + a_proj.weight` etc.; returns the tensors by bare name."""
    tensors = {name: tensor.detach().clone().contiguous() for name, tensor in model.compressor.state_dict().items()}
    save_file({prefix + name: tensor for name, tensor in tensors.items()}, path, metadata={"format": "pt"})
    return tensors
