"""Convert a Qwen2.5-Omni or OmniSIFT checkpoint into one directory in this package's format.

    omnisift-convert dingyue1011/OmniSIFT-7B omnisift-qwen2.5-omni-7b --subfolder OmniSIFT-7B
    omnisift-convert Qwen/Qwen2.5-Omni-7B omnisift-untuned --selector selector.safetensors --keep-ratio 0.35

(`omnisift-convert` is `python -m omnisift_hf.models.qwen2_5_omni.convert`.)

SRC is a local directory or a Hub repository id holding
- the published OmniSIFT checkpoint: a full Qwen2.5-Omni `config.json` (`thinker_config` inside) and safetensors shards
  with `thinker.*` keys, the selector as `thinker.compressor.*`, and `talker.*` / `token2wav.*` keys (dropped); or
- a plain Qwen2.5-Omni checkpoint (full model, or the thinker as transformers saves it) plus `--selector PATH`, a
  safetensors file with selector weights (keys prefixed `thinker.compressor.`, `compressor.` or bare).

Every thinker tensor of SRC is kept (the published checkpoint fine-tuned the language model too). DST then holds
`config.json` (model_type `omnisift`, the keep ratios, the selector sizes, `auto_map`), safetensors shards in the
layout `OmniSiftForConditionalGeneration.save_pretrained` writes (one output shard per input shard), the remote-code
files, the processor/tokenizer files of SRC and a model card, so that
`OmniSiftForConditionalGeneration.from_pretrained`, `AutoModel.from_pretrained` (with `omnisift_hf` imported) and
`AutoModel.from_pretrained(..., trust_remote_code=True)` (without) all load it.

Memory: one input shard at a time. Everything is written into a hidden sibling directory that is renamed into place at
the end, so a failed conversion leaves no DST behind.
"""

import argparse
import collections
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub import HfApi, ModelCardData, snapshot_download
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from safetensors import safe_open
from safetensors.torch import save_file
from transformers.core_model_loading import revert_weight_conversion
from transformers.modeling_utils import remove_tied_weights_from_state_dict
from transformers.utils import logging

from ...compression import check_keep_ratio
from ...remote_code import write_remote_code
from ...selector import OmniSiftAudioSelector
from . import modeling_omnisift
from .configuration_omnisift import OmniSiftConfig
from .modeling_omnisift import OmniSiftForConditionalGeneration, remote_code_auto_map

logger = logging.get_logger(__name__)

__all__ = ["PROCESSOR_FILE_PATTERNS", "convert", "main", "model_card"]

# Files of SRC copied to DST as they are: processor, tokenizer, chat template and generation settings.
PROCESSOR_FILE_PATTERNS = (
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "processor_config.json",
    "tokenizer*.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template*.json",
    "chat_template*.jinja",
)
GENERATION_CONFIG_FILE = "generation_config.json"
# What a Hub SRC needs: config, weights, and the files above (never `spk_dict.pt` or other speech assets).
_DOWNLOAD_PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.jinja")

_THINKER_PREFIX = "thinker."
_SPEECH_PREFIXES = ("talker.", "token2wav.")
# Top-level prefixes of a thinker state dict as `save_pretrained` writes it (the pre-5.21 layout), selector included.
_THINKER_MODULES = ("model.", "visual.", "audio_tower.", "lm_head.", "compressor.")
# The in-memory layout of transformers >= 5.21, renamed to the saved one should a checkpoint carry it.
_IN_MEMORY_PREFIXES = (
    ("model.language_model.", "model."),
    ("model.visual.", "visual."),
    ("model.audio_tower.", "audio_tower."),
)
_SELECTOR_PREFIX = "compressor."
_SELECTOR_FILE_PREFIXES = ("thinker.compressor.", "compressor.")
_SAFETENSORS_DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64"}
_PAPER_CITATION = """@misc{ding2026omnisift,
  title         = {OmniSIFT: Modality-Asymmetric Token Compression for Efficient Omni-modal Large Language Models},
  author        = {Yue Ding and Yiyan Ji and Jungang Li and Xuyang Liu and Xinlong Chen and Junfei Wu and Bozhou Li and
                   Bohan Zeng and Yang Shi and Yushuo Guan and Yuanxing Zhang and Jiaheng Liu and Qiang Liu and
                   Pengfei Wan and Liang Wang},
  year          = {2026},
  eprint        = {2602.04804},
  archivePrefix = {arXiv},
  url           = {https://arxiv.org/abs/2602.04804}
}"""


@dataclass
class _Plan:
    """Where every tensor of DST comes from, read from the safetensors headers only."""

    # (input shard, [(SRC key, DST key)]) in input order; selector tensors included when SRC has them.
    shards: list[tuple[Path, list[tuple[str, str]]]] = field(default_factory=list)
    # selector tensor name (`a_proj.weight`, ...) -> its shape, from SRC or from `--selector`.
    selector_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # safetensors dtype name -> number of floating tensors of that dtype.
    dtypes: collections.Counter = field(default_factory=collections.Counter)


def convert(
    src: str | Path,
    dst: str | Path,
    *,
    selector: str | Path | None = None,
    keep_ratio: float | None = None,
    video_keep_ratio: float | None = None,
    audio_keep_ratio: float | None = None,
    selector_num_heads: int = 8,
    subfolder: str = "",
    revision: str | None = None,
    base_model: str | None = None,
    processor=None,
    overwrite: bool = False,
    push_to_hub: str | None = None,
    private: bool | None = None,
) -> Path:
    """Convert the checkpoint `src` into an OmniSIFT directory `dst` and return `dst`.

    Args:
        src (`str` or `Path`): a local directory, or a Hub repository id (downloaded with `snapshot_download`).
        dst (`str` or `Path`): the directory to write; must not exist or be empty, unless `overwrite`.
        selector (`str` or `Path`, *optional*): a safetensors file with the selector weights; required when SRC has
            none, and replaces SRC's when it has.
        keep_ratio, video_keep_ratio, audio_keep_ratio (`float`, *optional*): keep ratios recorded in the config
            (see [`OmniSiftConfig`]); unset ones keep SRC's value, or the default.
        selector_num_heads (`int`, defaults to 8): attention heads of the selector, which tensor shapes cannot tell.
            The published checkpoint uses 8. The other selector sizes are read from the tensors.
        subfolder (`str`, *optional*): the checkpoint's folder inside SRC (`OmniSIFT-7B` in `dingyue1011/OmniSIFT-7B`).
        revision (`str`, *optional*): the Hub revision of SRC.
        base_model (`str`, *optional*): Hub id recorded as `base_model` in the model card; defaults to SRC when SRC is
            a Hub id.
        processor (*optional*): an object with `save_pretrained(directory)` (a [`ProcessorMixin`]) whose files are
            written to DST instead of SRC's processor/tokenizer files.
        overwrite (`bool`, defaults to `False`): replace an existing, non-empty `dst`.
        push_to_hub (`str`, *optional*): a Hub repository id to upload `dst` to once it is complete.
        private (`bool`, *optional*): visibility of the repository `push_to_hub` creates.

    Raises:
        `FileNotFoundError`: SRC, its config.json or its safetensors weights are missing.
        `FileExistsError`: `dst` exists and is not empty (pass `overwrite=True`).
        `ValueError`: no selector, a selector that does not fit SRC, an unknown key layout or an incomplete SRC.
    """
    dst = Path(dst)
    _check_destination(dst, overwrite)
    ratios = {
        "keep_ratio": check_keep_ratio("keep_ratio", keep_ratio),
        "video_keep_ratio": check_keep_ratio("video_keep_ratio", video_keep_ratio),
        "audio_keep_ratio": check_keep_ratio("audio_keep_ratio", audio_keep_ratio),
    }
    source, is_hub = _resolve_source(src, subfolder, revision)
    if base_model is None and is_hub:
        base_model = str(src)

    # 1. Plan from the headers alone, and check everything before writing anything.
    plan = _plan(source)
    external_selector = _read_selector_file(Path(selector)) if selector is not None else None
    if external_selector is not None:
        if plan.selector_shapes:
            logger.warning(f"SRC has selector weights; they are replaced by the ones in {selector}.")
        plan.shards = [
            (shard, [(s, d) for s, d in pairs if not d.startswith(_SELECTOR_PREFIX)]) for shard, pairs in plan.shards
        ]
        plan.selector_shapes = {name: tuple(tensor.shape) for name, tensor in external_selector.items()}
    config = _build_config(source, plan, selector_num_heads, {k: v for k, v in ratios.items() if v is not None})
    keys = [d for _, pairs in plan.shards for _, d in pairs]
    keys += [_SELECTOR_PREFIX + name for name in external_selector or {}]
    _check_complete(config, keys)

    # 2. Write into a hidden sibling directory; rename it into place only once complete.
    dst.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent))
    try:
        _write_weights(staging, plan, external_selector)
        config.save_pretrained(staging)
        write_remote_code(staging, modeling_omnisift.__file__)
        if processor is not None:
            processor.save_pretrained(staging)
        else:
            _copy_files(source, staging, PROCESSOR_FILE_PATTERNS)
        _copy_files(source, staging, (GENERATION_CONFIG_FILE,))
        model_id = push_to_hub or str(dst)
        (staging / "README.md").write_text(model_card(config, base_model=base_model, model_id=model_id))
        _publish(staging, dst)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    if push_to_hub is not None:
        api = HfApi()
        repo_id = api.create_repo(push_to_hub, private=private, exist_ok=True).repo_id
        api.upload_folder(repo_id=repo_id, folder_path=dst, commit_message="Upload OmniSIFT checkpoint (omnisift_hf)")
    return dst


# ---------------------------------------------------------------------------------------------------------------------
# Source and destination
# ---------------------------------------------------------------------------------------------------------------------
def _check_destination(dst: Path, overwrite: bool) -> None:
    if dst.is_file():
        raise FileExistsError(f"DST {str(dst)!r} is a file; pass a directory that does not exist yet.")
    if dst.is_dir() and any(dst.iterdir()) and not overwrite:
        raise FileExistsError(
            f"DST {str(dst)!r} already exists and is not empty; pass --overwrite (overwrite=True) to replace it."
        )


def _resolve_source(src: str | Path, subfolder: str, revision: str | None) -> tuple[Path, bool]:
    """The local directory holding SRC's config.json and weights, and whether SRC was a Hub id."""
    is_hub = not Path(src).is_dir()
    if is_hub:
        try:
            validate_repo_id(str(src))
        except HFValidationError:
            raise FileNotFoundError(
                f"SRC {str(src)!r} is neither a local directory nor a Hub repository id; check the path."
            ) from None
        prefix = f"{subfolder.strip('/')}/" if subfolder else ""
        # Only SRC's own folder: never the speech assets or another checkpoint nested in the repository.
        try:
            root = Path(
                snapshot_download(
                    str(src),
                    revision=revision,
                    allow_patterns=[prefix + pattern for pattern in _DOWNLOAD_PATTERNS],
                    ignore_patterns=[prefix + "*/*"],
                )
            )
        except Exception as error:  # offline, unknown repository, no access, ...
            raise FileNotFoundError(
                f"SRC {str(src)!r} is not a local directory, and downloading it from the Hub failed ({error}); check "
                "the path or the repository id."
            ) from error
    else:
        root = Path(src)
    source = root / subfolder if subfolder else root
    if not (source / "config.json").is_file():
        nested = sorted(p.parent.name for p in root.glob("*/config.json"))
        hint = f" It has one in {nested}: pass --subfolder {nested[0]}." if nested and not subfolder else ""
        raise FileNotFoundError(f"SRC {str(src)!r} has no config.json in {str(source)!r}.{hint}")
    return source, is_hub


def _publish(staging: Path, dst: Path) -> None:
    """Move the complete `staging` directory to `dst`, replacing what is there (empty, or allowed by --overwrite)."""
    if not dst.exists():
        staging.rename(dst)
        return
    previous = staging.with_suffix(".previous")
    dst.rename(previous)
    staging.rename(dst)
    shutil.rmtree(previous)


# ---------------------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------------------
def _shard_files(source: Path) -> list[Path]:
    index = source / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [source / name for name in sorted(set(weight_map.values()))]
    if (source / "model.safetensors").is_file():
        return [source / "model.safetensors"]
    raise FileNotFoundError(
        f"SRC {str(source)!r} has neither model.safetensors nor model.safetensors.index.json; the converter reads "
        "safetensors only (convert .bin weights with transformers' save_pretrained first)."
    )


def _plan(source: Path) -> _Plan:
    headers = []  # (shard, {key: (shape, dtype)})
    for shard in _shard_files(source):
        with safe_open(shard, framework="pt") as f:
            slices = {key: f.get_slice(key) for key in f.keys()}
            headers.append((shard, {key: (tuple(s.get_shape()), s.get_dtype()) for key, s in slices.items()}))
    full_layout = any(key.startswith((_THINKER_PREFIX, *_SPEECH_PREFIXES)) for _, info in headers for key in info)

    plan, seen = _Plan(), {}
    for shard, info in headers:
        pairs = []
        for key, (shape, dtype) in info.items():
            new_key = _rename(key, full_layout)
            if new_key is None:
                continue
            if new_key in seen:
                raise ValueError(
                    f"SRC tensors {seen[new_key]!r} and {key!r} both map to {new_key!r}; SRC is ambiguous."
                )
            seen[new_key] = key
            pairs.append((key, new_key))
            if new_key.startswith(_SELECTOR_PREFIX):
                plan.selector_shapes[new_key.removeprefix(_SELECTOR_PREFIX)] = shape
            if dtype in _SAFETENSORS_DTYPES:
                plan.dtypes[dtype] += 1
        plan.shards.append((shard, pairs))
    return plan


def _rename(key: str, full_layout: bool) -> str | None:
    """SRC key -> DST key (the layout `save_pretrained` writes), `None` for tensors that are dropped."""
    new_key = key
    if full_layout:
        if key.startswith(_SPEECH_PREFIXES):
            return None
        new_key = key.removeprefix(_THINKER_PREFIX) if key.startswith(_THINKER_PREFIX) else None
    if new_key is not None:
        for in_memory, saved in _IN_MEMORY_PREFIXES:
            if new_key.startswith(in_memory):
                new_key = saved + new_key.removeprefix(in_memory)
                break
    if new_key is None or not new_key.startswith(_THINKER_MODULES):
        raise ValueError(
            f"SRC tensor {key!r} fits neither the Qwen2.5-Omni layout (`thinker.*`, `talker.*`, `token2wav.*`) nor "
            "the thinker layout (`model.*`, `visual.*`, `audio_tower.*`, `lm_head.*`, `compressor.*`); SRC must be a "
            "Qwen2.5-Omni, Qwen2.5-Omni thinker or OmniSIFT checkpoint."
        )
    return new_key


def _selector_names() -> set[str]:
    with torch.device("meta"):
        return set(OmniSiftAudioSelector(hidden_size=8, selector_hidden_size=8, num_heads=1, mlp_size=8).state_dict())


def _read_selector_file(path: Path) -> dict[str, torch.Tensor]:
    """The selector tensors of a `--selector` file, under their bare names (`a_proj.weight`, ...)."""
    if not path.is_file():
        raise FileNotFoundError(f"--selector {str(path)!r} does not exist; pass a safetensors file.")
    names, tensors = _selector_names(), {}
    with safe_open(path, framework="pt") as f:
        for key in f.keys():
            prefix = next((p for p in _SELECTOR_FILE_PREFIXES if key.startswith(p)), "")
            name = key.removeprefix(prefix)
            if name not in names:
                raise ValueError(
                    f"--selector {str(path)!r} holds {key!r}, which is not a selector tensor; expected "
                    f"{sorted(names)}, each optionally prefixed `thinker.compressor.` or `compressor.`."
                )
            tensors[name] = f.get_tensor(key)
    return tensors


# ---------------------------------------------------------------------------------------------------------------------
# Checking
# ---------------------------------------------------------------------------------------------------------------------
def _build_config(source: Path, plan: _Plan, num_heads: int, ratios: dict[str, float]) -> OmniSiftConfig:
    """SRC's thinker config as an [`OmniSiftConfig`], with the selector sizes of its tensors and the given ratios."""
    config_dict, _ = OmniSiftConfig.get_config_dict(str(source))
    if config_dict.get("model_type") != OmniSiftConfig.model_type:
        raise ValueError(
            f"SRC config.json has model_type {config_dict.get('model_type')!r}; expected a Qwen2.5-Omni "
            "(`qwen2_5_omni` or `qwen2_5_omni_thinker`) or OmniSIFT (`omnisift`) checkpoint."
        )
    config_dict.pop("auto_map", None)  # rewritten for the files DST receives
    shapes = plan.selector_shapes
    names = _selector_names()
    if not shapes:
        raise ValueError(
            f"SRC {str(source)!r} has no selector weights (`thinker.compressor.*`), so it is a plain Qwen2.5-Omni "
            "checkpoint; pass --selector PATH with the trained selector (a safetensors file)."
        )
    if set(shapes) != names:
        raise ValueError(f"The selector weights lack {sorted(names - set(shapes))}; pass a complete selector.")
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads <= 0:
        raise ValueError(f"--selector-num-heads must be a positive integer, got {num_heads!r}.")

    selector_in, selector_width = shapes["a_proj.weight"][1], shapes["a_proj.weight"][0]
    hidden_size = config_dict["text_config"]["hidden_size"]
    if selector_in != hidden_size:
        raise ValueError(
            f"The selector's `a_proj.weight` has shape {list(shapes['a_proj.weight'])}, i.e. input size "
            f"{selector_in}, but SRC's text hidden size is {hidden_size}; pass the selector trained for this model "
            "size."
        )
    if selector_width % num_heads != 0:
        raise ValueError(
            f"--selector-num-heads {num_heads} does not divide the selector width {selector_width} (rows of "
            "`a_proj.weight`); the published checkpoint uses 8."
        )
    mlp_size = shapes["score_head.0.weight"][0]
    with torch.device("meta"):
        expected = OmniSiftAudioSelector(hidden_size, selector_width, num_heads, mlp_size).state_dict()
    for name, tensor in sorted(expected.items()):
        if shapes[name] != tuple(tensor.shape):
            raise ValueError(
                f"Selector tensor {name!r} has shape {list(shapes[name])}, expected {list(tensor.shape)} for hidden "
                f"size {hidden_size}, selector width {selector_width} and scoring width {mlp_size}; the selector "
                "weights are inconsistent."
            )

    config_dict.update(
        selector_hidden_size=selector_width, selector_num_heads=num_heads, selector_mlp_size=mlp_size, **ratios
    )
    config = OmniSiftConfig.from_dict(config_dict)
    config.architectures = [OmniSiftForConditionalGeneration.__name__]
    config.auto_map = remote_code_auto_map()
    if plan.dtypes:  # what `save_pretrained` records: the dtype the weights are stored in
        config.dtype = _SAFETENSORS_DTYPES[plan.dtypes.most_common(1)[0][0]]
    return config


def _check_complete(config: OmniSiftConfig, keys: list[str]) -> None:
    """Every tensor `save_pretrained` of this model would write is in `keys` (else the loader would silently
    initialise it at random); extra tensors are reported."""
    with torch.device("meta"):
        model = OmniSiftForConditionalGeneration(config)
    state_dict = model.state_dict()
    required = set(revert_weight_conversion(model, remove_tied_weights_from_state_dict(state_dict, model)))
    known = set(revert_weight_conversion(model, state_dict))
    missing = sorted(required - set(keys))
    if missing:
        raise ValueError(
            f"SRC lacks {len(missing)} thinker tensors the model needs, e.g. {missing[:3]}; the checkpoint is "
            "incomplete or does not match its config.json."
        )
    unexpected = sorted(set(keys) - known)
    if unexpected:
        logger.warning(
            f"SRC has {len(unexpected)} thinker tensors the model does not use, kept as they are: {unexpected[:5]}"
        )


# ---------------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------------
def _write_weights(directory: Path, plan: _Plan, external_selector: dict[str, torch.Tensor] | None) -> None:
    """One output shard per input shard that has thinker tensors (plus one for a `--selector` file), named and indexed
    as `save_pretrained` names them."""
    outputs: list[tuple[Path | None, list[tuple[str, str]]]] = [
        (shard, pairs) for shard, pairs in plan.shards if pairs
    ]
    if external_selector:
        outputs.append((None, [(name, _SELECTOR_PREFIX + name) for name in sorted(external_selector)]))
    weight_map, total_size, total_parameters = {}, 0, 0
    for number, (shard, pairs) in enumerate(outputs, start=1):
        filename = (
            "model.safetensors" if len(outputs) == 1 else f"model-{number:05d}-of-{len(outputs):05d}.safetensors"
        )
        if shard is None:
            tensors = {new_key: external_selector[key].contiguous() for key, new_key in pairs}
        else:
            with safe_open(shard, framework="pt") as f:
                tensors = {new_key: f.get_tensor(key) for key, new_key in pairs}
        save_file(tensors, directory / filename, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, filename))
        total_size += sum(t.numel() * t.element_size() for t in tensors.values())
        total_parameters += sum(t.numel() for t in tensors.values())
        del tensors  # one shard in memory at a time
    if len(outputs) > 1:
        index = {
            "metadata": {"total_parameters": total_parameters, "total_size": total_size},
            "weight_map": dict(sorted(weight_map.items())),
        }
        (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def _copy_files(source: Path, directory: Path, patterns: tuple[str, ...]) -> None:
    for pattern in patterns:
        for path in sorted(source.glob(pattern)):
            if path.is_file():
                shutil.copyfile(path, directory / path.name)


def model_card(config: OmniSiftConfig, *, base_model: str | None, model_id: str) -> str:
    """README.md of a converted checkpoint: Hub metadata, the method, its keep-ratio knobs, usage and citation."""
    metadata = ModelCardData(
        base_model=base_model,
        library_name="transformers",
        pipeline_tag="any-to-any",
        tags=["omnisift", "qwen2_5_omni", "token-compression", "video", "audio"],
    )

    def shown(value: float | None) -> str:
        return "derived from `keep_ratio`" if value is None else f"`{value}`"

    base = f"[{base_model}](https://huggingface.co/{base_model})" if base_model else "a Qwen2.5-Omni checkpoint"
    return f"""---
{metadata.to_yaml()}
---

# OmniSIFT (Qwen2.5-Omni thinker)

[OmniSIFT](https://arxiv.org/abs/2602.04804) (ICML 2026) token compression for Qwen2.5-Omni, in the format of
`omnisift_hf` (a native 🤗 transformers model). Text output only: the Qwen2.5-Omni thinker, no talker.

Converted from {base}.

Between the audio/vision encoders and the language model, OmniSIFT drops most audio and video tokens:

- **STVP**, spatio-temporal video pruning (no parameters): in each pair of frames, the first frame drops the tokens
  most similar to its mean token, the second the tokens most similar to the same position in the first frame.
- **VGAS**, the vision-guided audio selector (the only parameters OmniSIFT adds): in each 2-second window, audio
  tokens attend to the kept video tokens and a small head scores them; the best-scored ones are kept. Here: width
  {config.selector_hidden_size}, {config.selector_num_heads} attention heads, scoring width {config.selector_mlp_size}.

Kept tokens keep their original M-RoPE positions; text and image tokens are never dropped.

## Keep ratios

All knobs are **keep** fractions in (0, 1] (the paper writes drop fractions, `rho = 1 - keep`). Recorded in
`config.json`, and overridable per call in `forward` / `generate`:

| knob | this checkpoint | meaning |
|---|---|---|
| `keep_ratio` | `{config.keep_ratio}` | fraction of the audio + video tokens kept; `1.0` is exactly Qwen2.5-Omni |
| `video_keep_ratio` | {shown(config.video_keep_ratio)} | fraction of the video tokens kept by STVP |
| `audio_keep_ratio` | {shown(config.audio_keep_ratio)} | fraction of the audio tokens kept by VGAS |

The paper's operating points: "35%" = `audio_keep_ratio=0.7, video_keep_ratio=0.3`; "25%" =
`audio_keep_ratio=0.5, video_keep_ratio=0.23`.

## Usage

```python
import torch
from qwen_omni_utils import process_mm_info
from transformers import AutoModel, AutoProcessor

# `trust_remote_code=True` runs the code in this repository; with `omnisift_hf` installed, `import omnisift_hf`
# instead and leave it out.
model = AutoModel.from_pretrained("{model_id}", dtype=torch.bfloat16, device_map="auto", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{model_id}")

conversation = [{{"role": "user", "content": [
    {{"type": "video", "video": "clip.mp4"}},
    {{"type": "text", "text": "What is the person doing?"}},
]}}]
text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
audios, images, videos = process_mm_info(conversation, use_audio_in_video=True)  # frames at 2 fps
inputs = processor(
    text=text, audio=audios, images=images, videos=videos, fps=2, load_audio_from_video=True, return_tensors="pt"
).to(model.device)
ids = model.generate(**inputs, use_audio_in_video=True, max_new_tokens=64)  # or keep_ratio=..., per call
print(processor.batch_decode(ids[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0])
print(model.compression_stats.num_kept_video_tokens, model.compression_stats.num_kept_audio_tokens)
```

## Citation

```bibtex
{_PAPER_CITATION}
```
"""


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="omnisift-convert",
        description=(
            "Convert a Qwen2.5-Omni or OmniSIFT checkpoint into an omnisift_hf directory (one shard at a time)."
        ),
    )
    parser.add_argument("src", help="local directory or Hub repository id of the checkpoint")
    parser.add_argument("dst", help="directory to write (must not exist or be empty, unless --overwrite)")
    parser.add_argument("--selector", help="safetensors file with the selector weights (needed when SRC has none)")
    parser.add_argument("--keep-ratio", type=float, help="keep_ratio recorded in the config (default 0.25)")
    parser.add_argument("--video-keep-ratio", type=float, help="video_keep_ratio recorded in the config")
    parser.add_argument("--audio-keep-ratio", type=float, help="audio_keep_ratio recorded in the config")
    parser.add_argument("--selector-num-heads", type=int, default=8, help="selector attention heads (default 8)")
    parser.add_argument("--subfolder", default="", help="the checkpoint's folder inside SRC (e.g. OmniSIFT-7B)")
    parser.add_argument("--revision", help="Hub revision of SRC")
    parser.add_argument("--base-model", help="Hub id recorded as base_model in the model card (default: SRC)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing, non-empty DST")
    parser.add_argument("--push-to-hub", metavar="REPO", help="upload DST to this Hub repository once complete")
    parser.add_argument("--private", action="store_true", default=None, help="create the Hub repository as private")
    args = parser.parse_args(argv)
    try:
        dst = convert(
            args.src,
            args.dst,
            selector=args.selector,
            keep_ratio=args.keep_ratio,
            video_keep_ratio=args.video_keep_ratio,
            audio_keep_ratio=args.audio_keep_ratio,
            selector_num_heads=args.selector_num_heads,
            subfolder=args.subfolder,
            revision=args.revision,
            base_model=args.base_model,
            overwrite=args.overwrite,
            push_to_hub=args.push_to_hub,
            private=args.private,
        )
    except (FileNotFoundError, FileExistsError, ValueError, TypeError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(dst)


if __name__ == "__main__":
    main()
