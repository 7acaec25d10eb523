"""Convert a Qwen2.5-Omni, Qwen3-Omni or OmniSIFT checkpoint into one directory in this package's format.

    omnisift-convert dingyue1011/OmniSIFT-7B omnisift-qwen2.5-omni-7b --subfolder OmniSIFT-7B
    omnisift-convert Qwen/Qwen2.5-Omni-7B omnisift-untuned --selector selector.safetensors --keep-ratio 0.35
    omnisift-convert dingyue1011/OmniSIFT-7B omnisift-omni-7b --subfolder OmniSIFT-7B --with-talker

(`omnisift-convert` is `python -m omnisift_hf.models.qwen2_5_omni.convert`.)

SRC is a local directory or a Hub repository id holding
- the published OmniSIFT checkpoint: a full Qwen2.5-Omni `config.json` (`thinker_config` inside) and safetensors shards
  with `thinker.*` keys, the selector as `thinker.compressor.*`, and `talker.*` / `token2wav.*` keys (dropped unless
  `--with-talker`); or
- a plain Qwen2.5-Omni checkpoint (full model, or the thinker as transformers saves it) plus `--selector PATH`, a
  safetensors file with selector weights (keys prefixed `thinker.compressor.`, `compressor.` or bare); or
- a directory this package saved (`omnisift`, or `omnisift_omni`: the full model), e.g. to change its keep ratios;
- a Qwen3-Omni checkpoint (full, `qwen3_omni_moe`, or its thinker) plus `--selector PATH` (no trained Qwen3-Omni
  selector is published), or an `omnisift_qwen3_omni` directory: DST is then a directory of
  `OmniSiftQwen3OmniForConditionalGeneration` (model_type `omnisift_qwen3_omni`; the talker and code2wav tensors are
  dropped; `--with-talker` is Qwen2.5-Omni only).

Every thinker tensor of SRC is kept (the published checkpoint fine-tuned the language model too). DST then holds
`config.json` (model_type `omnisift`, the keep ratios, the selector sizes, `auto_map`), safetensors shards in the
layout `OmniSiftForConditionalGeneration.save_pretrained` writes (one output shard per input shard), the remote-code
files, the processor/tokenizer files of SRC and a model card, so that
`OmniSiftForConditionalGeneration.from_pretrained`, `AutoModel.from_pretrained` (with `omnisift_hf` imported) and
`AutoModel.from_pretrained(..., trust_remote_code=True)` (without) all load it.

`--with-talker` keeps the speech half of a full SRC as well: every `talker.*` and `token2wav.*` tensor, as it is, and
the speakers (`spk_dict.pt` of SRC, or `--speakers PATH`). DST is then the full model (`config.json` of model_type
`omnisift_omni` whose `thinker_config` is the OmniSIFT config above, the `auto_map` of
`OmniSiftOmniForConditionalGeneration`, keys `thinker.*` / `talker.*` / `token2wav.*` as its `save_pretrained` writes
them, `spk_dict.pt`), which `OmniSiftOmniForConditionalGeneration.from_pretrained` and
`AutoModelForMultimodalLM.from_pretrained` load and which speaks (`generate(..., generation_mode="audio")`). A SRC
without talker weights, or without speakers, is refused: DST would load but fail at its first spoken reply.

Memory: one input shard at a time. Everything is written into a hidden sibling directory (`.DST.*.partial`) that is
renamed into place at the end, so a failed conversion leaves no DST behind: an error, Ctrl-C or SIGTERM removes it;
after SIGKILL (or a power cut) the next conversion into the same DST removes it, recognising it by the process id it
records. Every argument is checked, and SRC against DST, before any weight is read or any file written; the converter
never writes into its own SRC, nor replaces a DST that holds it.
"""

import argparse
import collections
import contextlib
import glob
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub import HfApi, ModelCardData, snapshot_download
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from transformers.core_model_loading import revert_weight_conversion
from transformers.modeling_utils import remove_tied_weights_from_state_dict
from transformers.utils import logging

from ...compression import check_keep_ratio
from ...remote_code import write_remote_code
from ...selector import OmniSiftAudioSelector
from .._shared_modeling import remote_code_auto_map as _auto_map_of
from ..qwen3_omni_moe import OmniSiftQwen3OmniConfig, OmniSiftQwen3OmniForConditionalGeneration
from .configuration_omnisift import OmniSiftConfig, OmniSiftOmniConfig
from .modeling_omnisift import (
    SPEAKERS_NAME,
    OmniSiftForConditionalGeneration,
    OmniSiftOmniForConditionalGeneration,
)

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
# What a Hub SRC needs: config, weights, and the files above (`spk_dict.pt` only with --with-talker).
_DOWNLOAD_PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.jinja")
# What each speaker of a `spk_dict.pt` holds (read by `OmniSiftOmniForConditionalGeneration.generate`).
_SPEAKER_FIELDS = ("cond", "ref_mel", "bos_token")

_THINKER_PREFIX = "thinker."
_SPEECH_PREFIXES = ("talker.", "token2wav.")
# Dropped from a full SRC without --with-talker: Qwen2.5-Omni's speech half, and Qwen3-Omni's (talker, code2wav).
_DROPPED_PREFIXES = (*_SPEECH_PREFIXES, "code2wav.")
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
# Written into the staging directory: which process (on which host) is writing it, so that a later run removes the
# directory only once that process is gone.
_STAGING_MARKER = ".omnisift-convert-staging.json"
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


@dataclass(frozen=True)
class _Backbone:
    """What the converter writes for one backbone: its OmniSIFT thinker config and model, and how SRC names it."""

    name: str
    config_class: type
    model_class: type
    tag: str
    # `model_type`s of SRC's config.json that read as this backbone (the full model, its thinker, OmniSIFT's own).
    model_types: tuple[str, ...]


_QWEN2_5_OMNI = _Backbone(
    "Qwen2.5-Omni",
    OmniSiftConfig,
    OmniSiftForConditionalGeneration,
    "qwen2_5_omni",
    ("qwen2_5_omni", "qwen2_5_omni_thinker", OmniSiftConfig.model_type, OmniSiftOmniConfig.model_type),
)
_QWEN3_OMNI = _Backbone(
    "Qwen3-Omni",
    OmniSiftQwen3OmniConfig,
    OmniSiftQwen3OmniForConditionalGeneration,
    "qwen3_omni_moe",
    ("qwen3_omni_moe", "qwen3_omni_moe_thinker", OmniSiftQwen3OmniConfig.model_type),
)
_BACKBONES = (_QWEN2_5_OMNI, _QWEN3_OMNI)


@dataclass
class _Plan:
    """Where every tensor of DST comes from, read from the safetensors headers only."""

    # (input shard, [(SRC key, DST key)]) in input order; selector tensors included when SRC has them.
    shards: list[tuple[Path, list[tuple[str, str]]]] = field(default_factory=list)
    # selector tensor name (`a_proj.weight`, ...) -> its shape, from SRC or from `--selector`.
    selector_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # DST key -> (SRC key, shape) of every tensor kept.
    tensors: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)
    # The speech prefixes (`talker.`, `token2wav.`) SRC has tensors under.
    speech_prefixes: set[str] = field(default_factory=set)
    # safetensors dtype name -> number of floating thinker tensors of that dtype. The model's dtype, as
    # `save_pretrained` records it, is the thinker's (the talker shares it; token2wav runs in float32 regardless).
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
    with_talker: bool = False,
    speakers: str | Path | None = None,
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
        with_talker (`bool`, defaults to `False`): write the full model ([`OmniSiftOmniForConditionalGeneration`],
            model_type `omnisift_omni`): keep SRC's talker and token2wav tensors and its speakers. SRC must be a full
            Qwen2.5-Omni (or OmniSIFT) checkpoint with `spk_dict.pt`, unless `speakers` is given.
        speakers (`str` or `Path`, *optional*): a Qwen2.5-Omni `spk_dict.pt` written to DST instead of SRC's (only
            with `with_talker`); for a SRC that ships none.

    Raises:
        `FileNotFoundError`: SRC, its config.json, its safetensors weights, the `selector` file, or (with
            `with_talker`) the speakers are missing.
        `FileExistsError`: `dst` is a file, or exists and is not empty (pass `overwrite=True`).
        `NotADirectoryError`, `PermissionError`: SRC is a file, or `dst` cannot be created where it is.
        `TypeError`: an argument of the wrong type.
        `ValueError`: DST and SRC overlap, a bad keep ratio or head count, no selector, a selector that does not fit
            SRC, an unknown key layout, an incomplete SRC, a config.json, index, safetensors or speakers file that
            cannot be read (truncated or corrupted), or `with_talker` for a SRC without talker (thinker only).
    """
    # 0. Check every argument, and a local SRC against DST, before downloading, reading or writing anything.
    given_dst, dst = dst, _absolute(dst, "dst")
    ratios = _check_arguments(
        src,
        dst,
        selector=selector,
        ratios={"keep_ratio": keep_ratio, "video_keep_ratio": video_keep_ratio, "audio_keep_ratio": audio_keep_ratio},
        selector_num_heads=selector_num_heads,
        subfolder=subfolder,
        revision=revision,
        base_model=base_model,
        processor=processor,
        overwrite=overwrite,
        push_to_hub=push_to_hub,
        with_talker=with_talker,
        speakers=speakers,
    )
    selector = Path(selector) if selector is not None else None
    speakers = Path(speakers) if speakers is not None else None
    root, source, is_hub = _resolve_source(src, subfolder, revision, with_talker)
    inputs = {"--selector": selector, "--speakers": speakers}
    _check_apart(src, root, source, dst, inputs)  # again: a Hub SRC is known only now, as its local snapshot
    if base_model is None and is_hub:
        base_model = str(src)

    # 1. Plan from config.json and the headers alone, and check everything before writing anything.
    config_dict, backbone = _read_config(source)
    if with_talker and backbone is not _QWEN2_5_OMNI:
        raise ValueError(
            f"--with-talker: SRC {str(src)!r} is a {backbone.name} checkpoint; the converter keeps the speech half of "
            "Qwen2.5-Omni only (Qwen3-Omni's talker is not supported). Leave out --with-talker for a thinker DST."
        )
    full_config_dict = _read_full_config(source) if with_talker else None
    plan = _plan(source, with_talker)
    speakers_file = _check_speech(src, source, plan, speakers) if with_talker else None
    # Where the selector's tensors go in DST: `compressor.*` in the thinker, `thinker.compressor.*` in the full model.
    selector_prefix = (_THINKER_PREFIX if with_talker else "") + _SELECTOR_PREFIX
    external_selector = _read_selector_file(selector) if selector is not None else None
    if external_selector is not None:
        if plan.selector_shapes:
            logger.warning(f"SRC has selector weights; they are replaced by the ones in {selector}.")
        plan.shards = [
            (shard, [(s, d) for s, d in pairs if not d.startswith(selector_prefix)]) for shard, pairs in plan.shards
        ]
        plan.selector_shapes = {name: tuple(tensor.shape) for name, tensor in external_selector.items()}
    selector_origin = f"--selector {str(selector)!r}" if selector is not None else f"SRC {str(src)!r}"
    config = _build_config(source, config_dict, plan, selector_num_heads, ratios, selector_origin, backbone)
    if full_config_dict is not None:
        config = _build_full_config(source, full_config_dict, config)
    keys = [d for _, pairs in plan.shards for _, d in pairs]
    keys += [selector_prefix + name for name in external_selector or {}]
    _check_complete(config, keys, source, plan)

    # 2. Write into a hidden sibling directory; rename it into place only once complete.
    _remove_stale_staging(dst)
    with _sigterm_raises():
        staging = _make_staging(dst)
        try:
            _write_weights(staging, plan, external_selector, selector_prefix)
            config.save_pretrained(staging)
            write_remote_code(staging, sys.modules[_model_class_of(config).__module__].__file__)
            if speakers_file is not None:  # as it is: the speakers load exactly as from SRC
                shutil.copyfile(speakers_file, staging / SPEAKERS_NAME)
            if processor is not None:
                processor.save_pretrained(staging)
            else:
                _copy_files(source, staging, PROCESSOR_FILE_PATTERNS)
            _copy_files(source, staging, (GENERATION_CONFIG_FILE,))
            model_id = push_to_hub or str(given_dst)
            (staging / "README.md").write_text(model_card(config, base_model=base_model, model_id=model_id))
            (staging / _STAGING_MARKER).unlink()
            _publish(staging, dst)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    # 3. Upload the complete directory.
    if push_to_hub is not None:
        try:
            api = HfApi()
            repo_id = api.create_repo(push_to_hub, private=private, exist_ok=True).repo_id
            api.upload_folder(
                repo_id=repo_id, folder_path=dst, commit_message="Upload OmniSIFT checkpoint (omnisift_hf)"
            )
        except Exception as error:  # no token, no access, offline, ...
            raise OSError(
                f"DST {str(dst)!r} is complete, but uploading it to --push-to-hub {push_to_hub!r} failed ({error}); "
                f"fix the cause and upload it with `hf upload {push_to_hub} {dst}`."
            ) from error
    return Path(given_dst)


# ---------------------------------------------------------------------------------------------------------------------
# Arguments, source and destination
# ---------------------------------------------------------------------------------------------------------------------
def _absolute(path: object, name: str) -> Path:
    """`path` (a `str` or `os.PathLike`) as an absolute path, `.` and `..` resolved but not symbolic links."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`{name}` must be a path (str or os.PathLike), got {path!r} of type {type(path).__name__}.")
    if not os.fspath(path):
        raise ValueError(f"`{name}` is an empty path; pass a directory.")
    return Path(os.path.abspath(path))


def _check_arguments(
    src: object,
    dst: Path,
    *,
    selector: object,
    ratios: dict[str, object],
    selector_num_heads: object,
    subfolder: object,
    revision: object,
    base_model: object,
    processor: object,
    overwrite: bool,
    push_to_hub: object,
    with_talker: object,
    speakers: object,
) -> dict[str, float]:
    """Everything that can be checked without SRC's contents; returns the keep ratios that are set."""
    checked = {name: check_keep_ratio(name, value) for name, value in ratios.items()}
    if isinstance(selector_num_heads, bool) or not isinstance(selector_num_heads, int) or selector_num_heads <= 0:
        raise ValueError(f"--selector-num-heads must be a positive integer, got {selector_num_heads!r}.")
    for name, value in (("subfolder", subfolder), ("revision", revision), ("base_model", base_model)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"`{name}` must be a string, got {value!r} of type {type(value).__name__}.")
    if subfolder and (Path(subfolder).is_absolute() or ".." in Path(subfolder).parts):
        raise ValueError(f"--subfolder {subfolder!r} must be a relative folder inside SRC, without `..`.")
    if processor is not None and not callable(getattr(processor, "save_pretrained", None)):
        raise TypeError(
            f"`processor` must have a `save_pretrained(directory)` method (a ProcessorMixin), got "
            f"{type(processor).__name__}; pass None to copy SRC's processor files."
        )
    if push_to_hub is not None:
        try:
            validate_repo_id(push_to_hub)
        except HFValidationError as error:
            raise ValueError(
                f"--push-to-hub {push_to_hub!r} is not a Hub repository id ({error}); pass one like `org/name`."
            ) from None
    if selector is not None:
        path = _absolute(selector, "selector")
        if path.is_dir():
            raise IsADirectoryError(f"--selector {str(selector)!r} is a directory; pass the safetensors file in it.")
        if not path.is_file():
            raise FileNotFoundError(f"--selector {str(selector)!r} does not exist; pass a safetensors file.")
    if not isinstance(with_talker, bool):
        raise TypeError(
            f"`with_talker` must be True or False, got {with_talker!r} of type {type(with_talker).__name__}."
        )
    if speakers is not None:
        path = _absolute(speakers, "speakers")
        if not with_talker:
            raise ValueError(
                f"--speakers {str(speakers)!r} is only used with --with-talker (a thinker-only DST has no talker to "
                "speak with); add --with-talker, or leave out --speakers."
            )
        if path.is_dir():
            raise IsADirectoryError(
                f"--speakers {str(speakers)!r} is a directory; pass the {SPEAKERS_NAME} file in it."
            )
        if not path.is_file():
            raise FileNotFoundError(
                f"--speakers {str(speakers)!r} does not exist; pass a Qwen2.5-Omni {SPEAKERS_NAME} file."
            )

    src_path = _absolute(src, "src")
    if src_path.exists() and not src_path.is_dir():
        raise NotADirectoryError(
            f"SRC {str(src)!r} is a file; pass the checkpoint's directory (the one holding config.json) or a Hub "
            "repository id."
        )
    if src_path.is_dir():  # a Hub SRC is checked once downloaded
        source = src_path / subfolder if subfolder else src_path
        inputs = {"--selector": selector, "--speakers": speakers}
        _check_apart(src, src_path, source, dst, {flag: Path(p) for flag, p in inputs.items() if p is not None})
    _check_destination(dst, overwrite)
    return {name: value for name, value in checked.items() if value is not None}


def _check_apart(src: object, root: Path, source: Path, dst: Path, inputs: dict[str, Path | None]) -> None:
    """DST must neither be, nor lie inside, nor contain SRC (its folder `root`, the checkpoint's folder `source` in it,
    or any file of `source`: a Hub snapshot's files link into the cache), nor the other input files (`inputs`: option
    -> path, `--selector`, `--speakers`), with symbolic links resolved: the converter never writes into its source,
    and never deletes it by replacing DST."""
    target = dst.resolve()
    destination = _shown(dst, target)
    for directory in dict.fromkeys((root.resolve(), source.resolve())):
        if target == directory:
            relation = f"is SRC {_shown(src, directory)}"
        elif target.is_relative_to(directory):
            relation = f"is inside SRC {_shown(src, directory)}"
        elif directory.is_relative_to(target):
            relation = f"contains SRC {_shown(src, directory)}, which replacing DST would delete"
        else:
            continue
        raise ValueError(
            f"DST {destination} {relation}; the converter never writes into its source: pass a DST outside SRC."
        )
    for path in sorted(source.iterdir()) if source.is_dir() else []:
        if path.is_file() and path.resolve().is_relative_to(target):
            raise ValueError(
                f"DST {destination} holds {_shown(path, path.resolve())}, a file of SRC {str(src)!r}, which replacing "
                "DST would delete; pass a DST outside SRC."
            )
    for flag, path in inputs.items():
        if path is not None and path.resolve().is_relative_to(target):
            raise ValueError(
                f"{flag} {_shown(path, path.resolve())} is inside DST {destination}, which replacing DST would "
                f"delete; move the {flag.removeprefix('--')} file or pass another DST."
            )


def _shown(given: object, resolved: Path) -> str:
    """`given` quoted, followed by the path it resolves to where that differs."""
    return repr(str(given)) + ("" if str(given) == str(resolved) else f" ({str(resolved)!r})")


def _check_destination(dst: Path, overwrite: bool) -> None:
    if not dst.name:
        raise ValueError(f"DST {str(dst)!r} is a filesystem root; pass a new directory.")
    if dst.is_symlink() and not dst.exists():
        raise FileExistsError(
            f"DST {str(dst)!r} is a symbolic link to {os.readlink(dst)!r}, which does not exist; remove the link or "
            "pass another DST."
        )
    if dst.exists() and not dst.is_dir():
        raise FileExistsError(f"DST {str(dst)!r} is a file; pass a directory that does not exist yet.")
    if dst.is_dir() and any(dst.iterdir()) and not overwrite:
        raise FileExistsError(
            f"DST {str(dst)!r} already exists and is not empty; pass --overwrite (overwrite=True) to replace it."
        )
    ancestor = dst.parent
    while not ancestor.exists() and not ancestor.is_symlink():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise NotADirectoryError(
            f"DST {str(dst)!r} cannot be created: {str(ancestor)!r} is a file, not a directory; pass another DST."
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PermissionError(
            f"DST {str(dst)!r} cannot be created: {str(ancestor)!r} is not writable; pass a DST in a directory you "
            "can write to."
        )


def _resolve_source(
    src: str | Path, subfolder: str, revision: str | None, with_talker: bool = False
) -> tuple[Path, Path, bool]:
    """The local folder of SRC, the one holding its config.json and weights in it, and whether SRC was a Hub id."""
    is_hub = not Path(src).is_dir()
    if is_hub:
        try:
            validate_repo_id(str(src))
        except HFValidationError:
            raise FileNotFoundError(
                f"SRC {str(src)!r} is neither a local directory nor a Hub repository id; check the path."
            ) from None
        prefix = f"{subfolder.strip('/')}/" if subfolder else ""
        # Only SRC's own folder: never another checkpoint nested in the repository, the speakers only for the talker.
        patterns = (*_DOWNLOAD_PATTERNS, SPEAKERS_NAME) if with_talker else _DOWNLOAD_PATTERNS
        try:
            root = Path(
                snapshot_download(
                    str(src),
                    revision=revision,
                    allow_patterns=[prefix + pattern for pattern in patterns],
                    ignore_patterns=[prefix + "*/*"],
                )
            )
        except Exception as error:  # offline, unknown repository, no access, ...
            raise FileNotFoundError(
                f"SRC {str(src)!r} is not a local directory, and downloading it from the Hub failed "
                f"({' '.join(str(error).split())}); check the path, or the repository id and the connection."
            ) from error
    else:
        root = Path(src)
    source = root / subfolder if subfolder else root
    if not (source / "config.json").is_file():
        nested = sorted(p.parent.name for p in root.glob("*/config.json"))
        hint = f" It has one in {nested}: pass --subfolder {nested[0]}." if nested and not subfolder else ""
        raise FileNotFoundError(f"SRC {str(src)!r} has no config.json in {str(source)!r}.{hint}")
    return root, source, is_hub


def _remove_stale_staging(dst: Path) -> None:
    """Remove the staging directories that earlier conversions into `dst` left when they were killed (SIGKILL, a
    power cut): only those holding this converter's marker, written by a process of this host that has ended."""
    if not dst.parent.is_dir():
        return
    for candidate in sorted(dst.parent.glob(f".{glob.escape(dst.name)}.*.partial")):
        try:
            owner = json.loads((candidate / _STAGING_MARKER).read_text())
            pid, host = owner["pid"], owner["host"]
        except (OSError, ValueError, TypeError, KeyError):
            continue  # not written by this converter: left alone
        if host != socket.gethostname() or _process_may_run(pid):
            continue
        shutil.rmtree(candidate, ignore_errors=True)
        logger.warning(
            f"Removed {str(candidate)!r}, left by a conversion into {str(dst)!r} that was killed (process {pid}, no "
            "longer running)."
        )


def _process_may_run(pid: object) -> bool:
    """Whether process `pid` of this host may still be running (`False` only when it certainly is not)."""
    if os.name != "posix" or isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return True  # cannot tell: keep its directory
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it runs, as another user
        return True
    return True


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """For the duration, SIGTERM raises `SystemExit(143)` as Ctrl-C raises `KeyboardInterrupt`, so that the staging
    directory is removed on the way out; a second SIGTERM does not interrupt that clean-up. Only where SIGTERM has its
    default action (which ends the process at once) and in the main thread (the only one Python signals); a handler
    the caller installed stays in charge."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    terminating = False

    def raise_system_exit(signum: int, frame: object) -> None:
        nonlocal terminating
        if not terminating:
            terminating = True
            raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, raise_system_exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _make_staging(dst: Path) -> Path:
    """A new hidden sibling of `dst`, with the marker that names the process writing it."""
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent))
    except OSError as error:
        raise OSError(
            f"DST {str(dst)!r} cannot be created: writing in {str(dst.parent)!r} failed ({error}); pass a DST in a "
            "directory you can write to."
        ) from error
    try:
        (staging / _STAGING_MARKER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def _publish(staging: Path, dst: Path) -> None:
    """Move the complete `staging` directory to `dst`, replacing what is there (empty, or allowed by --overwrite)."""
    if not dst.exists():
        staging.rename(dst)
        return
    previous = staging.with_suffix(".previous")
    dst.rename(previous)
    try:
        staging.rename(dst)
    except BaseException:  # put the previous DST back
        previous.rename(dst)
        raise
    try:
        if previous.is_symlink():  # DST was a link: replace the link, not the directory it points to
            previous.unlink()
        else:
            shutil.rmtree(previous)
    except OSError as error:
        logger.warning(
            f"DST {str(dst)!r} is written, but removing its previous contents, now in {str(previous)!r}, failed "
            f"({error}); remove them yourself."
        )


# ---------------------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _reading(path: Path, role: str) -> Iterator[None]:
    """Turn a failure to read the safetensors file `path` (`role`: "SRC shard", "--selector") into one `ValueError`
    that names it: a header that does not parse, data shorter than the header says, a folder in its place."""
    try:
        yield
    except (SafetensorError, OSError) as error:
        raise ValueError(
            f"{role} {str(path)!r} is not a readable safetensors file ({error}); it is truncated or corrupted: "
            "download or copy it again."
        ) from error


def _shard_files(source: Path) -> list[Path]:
    index = source / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text()).get("weight_map")
        except (ValueError, AttributeError) as error:  # not JSON, or JSON but not an object
            raise ValueError(
                f"SRC index {str(index)!r} is not a JSON object ({error}); download or copy it again."
            ) from error
        if (
            not isinstance(weight_map, dict)
            or not weight_map
            or not all(isinstance(n, str) for n in weight_map.values())
        ):
            raise ValueError(
                f"SRC index {str(index)!r} has no `weight_map` from tensor names to shard files; download or copy it "
                "again."
            )
        shards = [source / name for name in sorted(set(weight_map.values()))]
        missing = [shard.name for shard in shards if not shard.is_file()]
        if missing:
            raise FileNotFoundError(
                f"SRC {str(source)!r} lacks {len(missing)} of the {len(shards)} shards its index lists: "
                f"{missing[:3]}; download the missing files (or the whole checkpoint) again."
            )
        return shards
    if (source / "model.safetensors").is_file():
        return [source / "model.safetensors"]
    raise FileNotFoundError(
        f"SRC {str(source)!r} has neither model.safetensors nor model.safetensors.index.json; the converter reads "
        "safetensors only (convert .bin weights with transformers' save_pretrained first)."
    )


def _plan(source: Path, with_talker: bool = False) -> _Plan:
    """The plan of DST's tensors: the thinker's (under `thinker.` with `with_talker`), and with `with_talker` the
    `talker.*` / `token2wav.*` tensors of a full SRC as they are."""
    headers = []  # (shard, {key: (shape, dtype)})
    for shard in _shard_files(source):
        with _reading(shard, "SRC shard"), safe_open(shard, framework="pt") as f:
            slices = {key: f.get_slice(key) for key in f.keys()}
            headers.append((shard, {key: (tuple(s.get_shape()), s.get_dtype()) for key, s in slices.items()}))
    full_layout = any(key.startswith((_THINKER_PREFIX, *_DROPPED_PREFIXES)) for _, info in headers for key in info)

    plan, seen = _Plan(), {}
    for shard, info in headers:
        pairs = []
        for key, (shape, dtype) in info.items():
            speech = next((p for p in _SPEECH_PREFIXES if key.startswith(p)), None) if full_layout else None
            if speech is not None and with_talker:
                thinker_key, new_key = None, key
                plan.speech_prefixes.add(speech)
            else:
                thinker_key = new_key = _rename(key, full_layout)
                if new_key is None:
                    continue
                if with_talker:
                    new_key = _THINKER_PREFIX + new_key
            if new_key in seen:
                raise ValueError(
                    f"SRC tensors {seen[new_key]!r} and {key!r} both map to {new_key!r}; SRC is ambiguous."
                )
            seen[new_key] = key
            pairs.append((key, new_key))
            plan.tensors[new_key] = (key, shape)
            if thinker_key is None:
                continue  # a speech tensor: token2wav runs in float32 whatever the model's dtype
            if thinker_key.startswith(_SELECTOR_PREFIX):
                plan.selector_shapes[thinker_key.removeprefix(_SELECTOR_PREFIX)] = shape
            if dtype in _SAFETENSORS_DTYPES:
                plan.dtypes[dtype] += 1
        plan.shards.append((shard, pairs))
    return plan


def _rename(key: str, full_layout: bool) -> str | None:
    """SRC key -> DST key (the layout `save_pretrained` writes), `None` for tensors that are dropped."""
    new_key = key
    if full_layout:
        if key.startswith(_DROPPED_PREFIXES):
            return None
        new_key = key.removeprefix(_THINKER_PREFIX) if key.startswith(_THINKER_PREFIX) else None
    if new_key is not None:
        for in_memory, saved in _IN_MEMORY_PREFIXES:
            if new_key.startswith(in_memory):
                new_key = saved + new_key.removeprefix(in_memory)
                break
    if new_key is None or not new_key.startswith(_THINKER_MODULES):
        raise ValueError(
            f"SRC tensor {key!r} fits neither the full layout (`thinker.*`, `talker.*`, `token2wav.*` or "
            "`code2wav.*`) nor the thinker layout (`model.*`, `visual.*`, `audio_tower.*`, `lm_head.*`, "
            "`compressor.*`); SRC must be a Qwen2.5-Omni, Qwen3-Omni or OmniSIFT checkpoint (full or thinker)."
        )
    return new_key


def _selector_names() -> dict[str, int]:
    """Selector tensor name -> number of dimensions."""
    with torch.device("meta"):
        selector = OmniSiftAudioSelector(hidden_size=8, selector_hidden_size=8, num_heads=1, mlp_size=8)
    return {name: tensor.dim() for name, tensor in selector.state_dict().items()}


def _read_selector_file(path: Path) -> dict[str, torch.Tensor]:
    """The selector tensors of a `--selector` file, under their bare names (`a_proj.weight`, ...)."""
    names, tensors, keys = _selector_names(), {}, {}
    with _reading(path, "--selector"), safe_open(path, framework="pt") as f:
        for key in f.keys():
            prefix = next((p for p in _SELECTOR_FILE_PREFIXES if key.startswith(p)), "")
            name = key.removeprefix(prefix)
            if name not in names:
                raise ValueError(
                    f"--selector {str(path)!r} holds {key!r}, which is not a selector tensor; expected "
                    f"{sorted(names)}, each optionally prefixed `thinker.compressor.` or `compressor.`."
                )
            if name in keys:
                raise ValueError(f"--selector {str(path)!r} holds both {keys[name]!r} and {key!r}; keep one of them.")
            keys[name], tensors[name] = key, f.get_tensor(key)
    if not tensors:
        raise ValueError(f"--selector {str(path)!r} holds no tensors; pass the file with the trained selector.")
    not_float = sorted(
        f"{keys[name]} ({tensor.dtype})" for name, tensor in tensors.items() if not tensor.is_floating_point()
    )
    if not_float:
        raise ValueError(
            f"--selector {str(path)!r} holds tensors that are not floating point: {not_float[:3]}; pass the trained "
            "selector's weights."
        )
    return tensors


# ---------------------------------------------------------------------------------------------------------------------
# Checking
# ---------------------------------------------------------------------------------------------------------------------
def _read_config(source: Path) -> tuple[dict, _Backbone]:
    """SRC's thinker config as an OmniSIFT config dict of its backbone (`model_type` `omnisift` or
    `omnisift_qwen3_omni`), checked for what is read of it, and that backbone."""
    path = source / "config.json"
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as error:  # unreadable, not UTF-8, not JSON
        raise ValueError(
            f"SRC config.json {str(path)!r} is not valid JSON ({error}); download or copy it again."
        ) from error
    if not isinstance(raw, dict):
        raise ValueError(f"SRC config.json {str(path)!r} holds a {type(raw).__name__}, not a JSON object.")
    expected = (
        "expected a Qwen2.5-Omni (`qwen2_5_omni` with a `thinker_config`, or `qwen2_5_omni_thinker`), a Qwen3-Omni "
        "(`qwen3_omni_moe` with a `thinker_config`, or `qwen3_omni_moe_thinker`) or OmniSIFT (`omnisift`, "
        "`omnisift_omni` with a `thinker_config`, or `omnisift_qwen3_omni`) checkpoint"
    )
    backbone = next((b for b in _BACKBONES if raw.get("model_type") in b.model_types), _QWEN2_5_OMNI)
    config_class = backbone.config_class
    try:
        config_dict, _ = config_class.get_config_dict(str(source))
    except (OSError, ValueError, TypeError, AttributeError) as error:  # e.g. a `thinker_config` that is no object
        raise ValueError(f"SRC config.json {str(path)!r} cannot be read as a config ({error}); {expected}.") from error
    thinker = config_dict.get(config_class.base_config_key)
    if config_dict.get("model_type") == OmniSiftOmniConfig.model_type and isinstance(thinker, dict):
        config_dict = {**thinker, "model_type": OmniSiftConfig.model_type}  # a full model this package saved
    if config_dict.get("model_type") != config_class.model_type:
        raise ValueError(f"SRC config.json {str(path)!r} has model_type {raw.get('model_type')!r}; {expected}.")
    text_config = config_dict.get("text_config")
    hidden_size = text_config.get("hidden_size") if isinstance(text_config, dict) else None
    if isinstance(hidden_size, bool) or not isinstance(hidden_size, int) or hidden_size <= 0:
        raise ValueError(
            f"SRC config.json {str(path)!r} has no `text_config.hidden_size` (got {hidden_size!r}) in its thinker "
            f"config; {expected}."
        )
    config_dict.pop("auto_map", None)  # rewritten for the files DST receives
    return config_dict, backbone


def _read_full_config(source: Path) -> dict:
    """For --with-talker: SRC's config as a full-model config dict (`model_type` `omnisift_omni`), which must have a
    talker and token2wav config. `_read_config` has checked the file and its thinker config."""
    path = source / "config.json"
    config_dict, _ = OmniSiftOmniConfig.get_config_dict(str(source))
    model_type = json.loads(path.read_text()).get("model_type")
    needs = (
        "--with-talker needs a full Qwen2.5-Omni checkpoint (model_type `qwen2_5_omni` with `talker_config` and "
        "`token2wav_config`, and `talker.*` / `token2wav.*` weights): pass one, or leave out --with-talker for a "
        "thinker-only DST"
    )
    if config_dict.get("model_type") != OmniSiftOmniConfig.model_type:
        raise ValueError(
            f"--with-talker: SRC config.json {str(path)!r} has model_type {model_type!r}, the thinker alone (text "
            f"output, no talker); {needs}."
        )
    lacking = [
        f"`{key}`" for key in ("talker_config", "token2wav_config") if not isinstance(config_dict.get(key), dict)
    ]
    if lacking:
        raise ValueError(
            f"--with-talker: SRC config.json {str(path)!r} (model_type {model_type!r}) has no "
            f"{' and no '.join(lacking)}; {needs}."
        )
    for key in ("auto_map", "architectures"):  # rewritten for the files DST receives
        config_dict.pop(key, None)
    return config_dict


def _check_speech(src: object, source: Path, plan: _Plan, speakers: Path | None) -> Path:
    """For --with-talker: SRC has talker and token2wav tensors, and speakers (its `spk_dict.pt`, or `speakers`) that
    load; returns the speakers file DST receives."""
    missing = [prefix for prefix in _SPEECH_PREFIXES if prefix not in plan.speech_prefixes]
    if missing:
        what = " and no ".join(f"`{prefix}*`" for prefix in missing)
        raise ValueError(
            f"--with-talker: SRC {str(src)!r} has no {what} weights in {str(source)!r}"
            + (", so it is a thinker-only checkpoint" if len(missing) == len(_SPEECH_PREFIXES) else "")
            + "; --with-talker needs a full Qwen2.5-Omni checkpoint with talker and token2wav weights: pass one, or "
            "leave out --with-talker for a thinker-only DST."
        )
    own = source / SPEAKERS_NAME
    if speakers is None:
        if not own.is_file():
            raise FileNotFoundError(
                f"--with-talker: SRC {str(src)!r} has no {SPEAKERS_NAME} in {str(source)!r}, so the converted model "
                f"could not speak; pass --speakers PATH with the {SPEAKERS_NAME} of the Qwen2.5-Omni checkpoint SRC "
                f"comes from (e.g. `hf download Qwen/Qwen2.5-Omni-7B {SPEAKERS_NAME}`), or leave out --with-talker "
                "for a thinker-only DST."
            )
        _check_speakers(own, f"SRC {SPEAKERS_NAME}")
        return own
    if own.is_file():
        logger.warning(f"SRC has {SPEAKERS_NAME}; it is replaced by --speakers {speakers}.")
    _check_speakers(speakers, "--speakers")
    return speakers


def _check_speakers(path: Path, role: str) -> None:
    """The speakers file `path` (`role`: "SRC spk_dict.pt", "--speakers") loads as `load_speakers` loads it, and holds
    what a spoken reply reads of each speaker."""
    try:
        speakers = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # not a torch file, truncated, or objects `weights_only` refuses
        # torch's `weights_only` message is a page of advice (including to load unsafely); keep its cause only.
        text = str(error).strip()
        cause = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", text, re.DOTALL)
        reason = " ".join((cause.group(1) if cause else (text.splitlines() or [type(error).__name__])[0]).split())
        reason = reason.split(". ")[0].rstrip(".")
        raise ValueError(
            f"{role} {str(path)!r} is not a readable speakers file ({reason[:200]}); it is truncated, corrupted or "
            f"not Qwen2.5-Omni's: download or copy the {SPEAKERS_NAME} of a Qwen2.5-Omni checkpoint again."
        ) from error
    layout = f"a dict of speaker name -> {{{', '.join(map(repr, _SPEAKER_FIELDS))}}}"
    if not isinstance(speakers, dict) or not speakers:
        held = "an empty dict" if isinstance(speakers, dict) else f"a {type(speakers).__name__}"
        raise ValueError(
            f"{role} {str(path)!r} holds {held}, not Qwen2.5-Omni speakers ({layout}); pass the {SPEAKERS_NAME} of "
            "a Qwen2.5-Omni checkpoint."
        )
    bad = sorted(
        repr(name)
        for name, speaker in speakers.items()
        if not isinstance(speaker, dict)
        or not set(_SPEAKER_FIELDS) <= set(speaker)
        or not all(torch.is_tensor(speaker[field]) for field in ("cond", "ref_mel"))
    )
    if bad:
        raise ValueError(
            f"{role} {str(path)!r} has speakers {', '.join(bad[:3])} without a `cond` and `ref_mel` tensor and a "
            f"`bos_token` ({layout}); pass the {SPEAKERS_NAME} of a Qwen2.5-Omni checkpoint."
        )


def _build_config(
    source: Path,
    config_dict: dict,
    plan: _Plan,
    num_heads: int,
    ratios: dict[str, float],
    selector_origin: str,
    backbone: _Backbone = _QWEN2_5_OMNI,
):
    """SRC's thinker config as its backbone's OmniSIFT config ([`OmniSiftConfig`], [`OmniSiftQwen3OmniConfig`]),
    with the selector sizes of its tensors and the given ratios. `selector_origin` ("SRC ...", "--selector ...") names
    where the selector tensors come from."""
    shapes = plan.selector_shapes
    names = _selector_names()
    if not shapes:
        raise ValueError(
            f"SRC {str(source)!r} has no selector weights (`thinker.compressor.*`), so it is a plain {backbone.name} "
            "checkpoint; pass --selector PATH with the trained selector (a safetensors file)."
        )
    if set(shapes) != set(names):
        problems = [f"lack {sorted(set(names) - set(shapes))}"] if set(names) - set(shapes) else []
        problems += [f"have unknown tensors {sorted(set(shapes) - set(names))}"] if set(shapes) - set(names) else []
        raise ValueError(
            f"The selector weights of {selector_origin} {' and '.join(problems)}; pass a complete, trained selector."
        )
    wrong_rank = sorted(f"{name} {list(shapes[name])}" for name, ndim in names.items() if len(shapes[name]) != ndim)
    if wrong_rank or any(size <= 0 for shape in shapes.values() for size in shape):
        raise ValueError(
            f"The selector weights of {selector_origin} have impossible shapes "
            f"{wrong_rank or sorted(f'{n} {list(s)}' for n, s in shapes.items() if 0 in s)}; pass the trained "
            "selector's weights."
        )

    selector_in, selector_width = shapes["a_proj.weight"][1], shapes["a_proj.weight"][0]
    hidden_size = config_dict["text_config"]["hidden_size"]
    if selector_in != hidden_size:
        raise ValueError(
            f"The selector's `a_proj.weight` has shape {list(shapes['a_proj.weight'])}, i.e. input size "
            f"{selector_in}, but SRC's text hidden size is {hidden_size}; {selector_origin} holds a selector for "
            "another model size: pass the one trained for this model."
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
                f"weights of {selector_origin} are inconsistent: pass the trained selector's weights."
            )

    config_dict = {
        **config_dict,
        "selector_hidden_size": selector_width,
        "selector_num_heads": num_heads,
        "selector_mlp_size": mlp_size,
        **ratios,
    }
    try:
        config = backbone.config_class.from_dict(config_dict)
    except (ValueError, TypeError) as error:  # a field of SRC's config.json the config refuses
        raise ValueError(f"SRC config.json in {str(source)!r} is not a valid thinker config: {error}") from error
    config.architectures = [backbone.model_class.__name__]
    config.auto_map = _auto_map_of(backbone.model_class)
    if plan.dtypes:  # what `save_pretrained` records: the dtype the weights are stored in
        config.dtype = _SAFETENSORS_DTYPES[plan.dtypes.most_common(1)[0][0]]
    return config


def _build_full_config(source: Path, config_dict: dict, thinker: OmniSiftConfig) -> OmniSiftOmniConfig:
    """SRC's full-model config (`_read_full_config`) as an [`OmniSiftOmniConfig`] around the OmniSIFT thinker config
    `thinker` (`_build_config`), as `OmniSiftOmniForConditionalGeneration.save_pretrained` writes it: the
    architecture, `auto_map` and dtype at the top level only, the talker enabled."""
    thinker_dict = thinker.to_dict()
    for key in ("architectures", "auto_map", "dtype", "transformers_version"):
        thinker_dict.pop(key, None)
    config_dict = {**config_dict, "thinker_config": thinker_dict, "enable_audio_output": True}
    try:
        config = OmniSiftOmniConfig.from_dict(config_dict)
    except (ValueError, TypeError) as error:  # a field of SRC's talker or token2wav config the config refuses
        raise ValueError(f"SRC config.json in {str(source)!r} is not a valid Qwen2.5-Omni config: {error}") from error
    config.architectures = [OmniSiftOmniForConditionalGeneration.__name__]
    config.auto_map = _auto_map_of(OmniSiftOmniForConditionalGeneration)
    config.dtype = getattr(thinker, "dtype", None) or config.dtype
    return config


def _check_complete(config: OmniSiftConfig | OmniSiftOmniConfig, keys: list[str], source: Path, plan: _Plan) -> None:
    """Every tensor `save_pretrained` of this model would write is in `keys` (else the loader would silently
    initialise it at random); extra tensors are reported. For the full model, every tensor of SRC also has the shape
    the model needs (else DST would fail to load)."""
    full = isinstance(config, OmniSiftOmniConfig)
    with torch.device("meta"):
        model = _model_class_of(config)(config)
    state_dict = model.state_dict()
    required = set(revert_weight_conversion(model, remove_tied_weights_from_state_dict(state_dict, model)))
    known = revert_weight_conversion(model, state_dict)
    tensors, needed_by = (
        ("tensors", "the full model (thinker, talker, token2wav)") if full else ("thinker tensors", "the model")
    )
    missing = sorted(required - set(keys))
    if missing:
        raise ValueError(
            f"SRC lacks {len(missing)} {tensors} {needed_by} needs, e.g. {missing[:3]}; the checkpoint in "
            f"{str(source)!r} is incomplete or does not match its config.json: download it again."
        )
    if full:
        wrong = sorted(
            f"{plan.tensors[key][0]} {list(plan.tensors[key][1])} (needs {list(known[key].shape)})"
            for key in set(keys) & set(known) & set(plan.tensors)
            if tuple(plan.tensors[key][1]) != tuple(known[key].shape)
        )
        if wrong:
            raise ValueError(
                f"SRC has {len(wrong)} tensors whose shapes do not match its config.json, e.g. {wrong[:3]}; the "
                f"checkpoint in {str(source)!r} is corrupted or mixed from two models: download it again."
            )
    unexpected = sorted(set(keys) - set(known))
    if unexpected:
        logger.warning(
            f"SRC has {len(unexpected)} {tensors} the model does not use, kept as they are: {unexpected[:5]}"
        )


def _model_class_of(config) -> type:
    """The OmniSIFT model class DST holds for `config` (the full Qwen2.5-Omni model, or a backbone's thinker)."""
    if isinstance(config, OmniSiftOmniConfig):
        return OmniSiftOmniForConditionalGeneration
    return next(b.model_class for b in _BACKBONES if isinstance(config, b.config_class))


# ---------------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------------
def _write_weights(
    directory: Path, plan: _Plan, external_selector: dict[str, torch.Tensor] | None, selector_prefix: str
) -> None:
    """One output shard per input shard that has tensors to keep (plus one for a `--selector` file, its tensors under
    `selector_prefix`), named and indexed as `save_pretrained` names them."""
    outputs: list[tuple[Path | None, list[tuple[str, str]]]] = [
        (shard, pairs) for shard, pairs in plan.shards if pairs
    ]
    if external_selector:
        outputs.append((None, [(name, selector_prefix + name) for name in sorted(external_selector)]))
    weight_map, total_size, total_parameters = {}, 0, 0
    for number, (shard, pairs) in enumerate(outputs, start=1):
        filename = (
            "model.safetensors" if len(outputs) == 1 else f"model-{number:05d}-of-{len(outputs):05d}.safetensors"
        )
        if shard is None:
            tensors = {new_key: external_selector[key].contiguous() for key, new_key in pairs}
        else:
            with _reading(shard, "SRC shard"), safe_open(shard, framework="pt") as f:
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


def model_card(config: OmniSiftConfig | OmniSiftOmniConfig, *, base_model: str | None, model_id: str) -> str:
    """README.md of a converted checkpoint: Hub metadata, the method, its keep-ratio knobs, usage and citation. For a
    full-model `config` ([`OmniSiftOmniConfig`], `--with-talker`), the spoken-reply variant."""
    full = isinstance(config, OmniSiftOmniConfig)
    thinker = config.thinker_config if full else config
    backbone = next(b for b in _BACKBONES if isinstance(thinker, b.config_class))
    name = backbone.name
    width, heads, mlp_size = thinker.selector_hidden_size, thinker.selector_num_heads, thinker.selector_mlp_size
    tags = ["omnisift", backbone.tag, "token-compression", "video", "audio"]
    metadata = ModelCardData(
        base_model=base_model,
        library_name="transformers",
        pipeline_tag="any-to-any",
        tags=[*tags, "text-to-speech"] if full else tags,
    )

    def shown(value: float | None) -> str:
        return "derived from `keep_ratio`" if value is None else f"`{value}`"

    base = f"[{base_model}](https://huggingface.co/{base_model})" if base_model else f"a {name} checkpoint"
    if full:
        title = "Qwen2.5-Omni, thinker and talker"
        output = (
            "Text and spoken replies: the full Qwen2.5-Omni (thinker, talker,\ntoken2wav), its talker prompted with "
            "the tokens the thinker kept."
        )
        recorded = "`config.json` (`thinker_config`)"
    else:
        title = f"{name} thinker"
        output = f"Text output only: the {name} thinker, no talker."
        recorded = "`config.json`"
    return f"""---
{metadata.to_yaml()}
---

# OmniSIFT ({title})

[OmniSIFT](https://arxiv.org/abs/2602.04804) (ICML 2026) token compression for {name}, in the format of
`omnisift_hf` (a native 🤗 transformers model). {output}

Converted from {base}.

Between the audio/vision encoders and the language model, OmniSIFT drops most audio and video tokens:

- **STVP**, spatio-temporal video pruning (no parameters): in each pair of frames, the first frame drops the tokens
  most similar to its mean token, the second the tokens most similar to the same position in the first frame.
- **VGAS**, the vision-guided audio selector (the only parameters OmniSIFT adds): in each 2-second window, audio
  tokens attend to the kept video tokens and a small head scores them; the best-scored ones are kept. Here: width
  {width}, {heads} attention heads, scoring width {mlp_size}.

Kept tokens keep their original M-RoPE positions; text and image tokens are never dropped.

## Keep ratios

All knobs are **keep** fractions in (0, 1] (the paper writes drop fractions, `rho = 1 - keep`). Recorded in
{recorded}, and overridable per call in `forward` / `generate`:

| knob | this checkpoint | meaning |
|---|---|---|
| `keep_ratio` | `{thinker.keep_ratio}` | fraction of the audio + video tokens kept; `1.0` is exactly {name} |
| `video_keep_ratio` | {shown(thinker.video_keep_ratio)} | fraction of the video tokens kept by STVP |
| `audio_keep_ratio` | {shown(thinker.audio_keep_ratio)} | fraction of the audio tokens kept by VGAS |

The paper's operating points: "35%" = `audio_keep_ratio=0.7, video_keep_ratio=0.3`; "25%" =
`audio_keep_ratio=0.5, video_keep_ratio=0.23`.

## Usage

```python
{_full_model_usage(model_id) if full else _thinker_usage(model_id, backbone)}
```

## Citation

```bibtex
{_PAPER_CITATION}
```
"""


def _thinker_usage(model_id: str, backbone: _Backbone = _QWEN2_5_OMNI) -> str:
    if backbone is _QWEN3_OMNI:
        return _qwen3_usage(model_id)
    return f"""import torch
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
print(model.compression_stats.num_kept_video_tokens, model.compression_stats.num_kept_audio_tokens)"""


def _qwen3_usage(model_id: str) -> str:
    return f"""import torch
import omnisift_hf  # or `trust_remote_code=True` below, to run the code in this repository instead
from transformers import AutoModel, AutoProcessor, pipeline

model = AutoModel.from_pretrained("{model_id}", dtype=torch.bfloat16, device_map="auto")
processor = AutoProcessor.from_pretrained("{model_id}")  # Qwen3OmniMoeProcessor
pipe = pipeline("omni-qa", model=model, processor=processor)
print(pipe(video="clip.mp4", question="What is the person doing?"))  # or keep_ratio=..., per call"""


def _full_model_usage(model_id: str) -> str:
    return f"""import soundfile as sf
import torch
from qwen_omni_utils import process_mm_info
from transformers import AutoModelForMultimodalLM, AutoProcessor

# `trust_remote_code=True` runs the code in this repository; with `omnisift_hf` installed, `import omnisift_hf`
# instead and leave it out.
model = AutoModelForMultimodalLM.from_pretrained(
    "{model_id}", dtype=torch.bfloat16, device_map="auto", trust_remote_code=True
)
processor = AutoProcessor.from_pretrained("{model_id}")

conversation = [
    {{"role": "system", "content": [{{"type": "text", "text": (  # the system prompt Qwen2.5-Omni speaks with
        "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving auditory "
        "and visual inputs, as well as generating text and speech."
    )}}]}},
    {{"role": "user", "content": [
        {{"type": "video", "video": "clip.mp4"}},
        {{"type": "text", "text": "What is the person doing?"}},
    ]}},
]
text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
audios, images, videos = process_mm_info(conversation, use_audio_in_video=True)  # frames at 2 fps
inputs = processor(
    text=text, audio=audios, images=images, videos=videos, fps=2, load_audio_from_video=True, return_tensors="pt"
).to(model.device)
# A spoken reply (speaker "Chelsie" or "Ethan"); generation_mode="text" for text only; keep_ratio=..., per call.
ids, audio = model.generate(**inputs, use_audio_in_video=True, speaker="Chelsie", thinker_max_new_tokens=64)
print(processor.batch_decode(ids[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0])
sf.write("reply.wav", audio.float().cpu().numpy(), samplerate=24000)
print(model.compression_stats.num_kept_video_tokens, model.compression_stats.num_kept_audio_tokens)"""


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="omnisift-convert",
        description=(
            "Convert a Qwen2.5-Omni, Qwen3-Omni or OmniSIFT checkpoint into an omnisift_hf directory (one shard at a "
            "time): the thinker (text output), or with --with-talker the full Qwen2.5-Omni model (text and speech)."
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
    parser.add_argument(
        "--with-talker",
        action="store_true",
        help="keep the talker, token2wav and speakers of a full SRC: write the full model (omnisift_omni)",
    )
    parser.add_argument(
        "--speakers",
        metavar="PATH",
        help="with --with-talker: a Qwen2.5-Omni spk_dict.pt to write instead of SRC's (for a SRC without one)",
    )
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
            with_talker=args.with_talker,
            speakers=args.speakers,
        )
    except (OSError, ValueError, TypeError) as error:  # bad input: one line, no traceback
        parser.exit(2, f"{parser.prog}: error: {' '.join(str(error).split())}\n")
    except KeyboardInterrupt:
        parser.exit(130, f"{parser.prog}: interrupted; no partial DST is left behind.\n")
    print(dst)


if __name__ == "__main__":
    main()
