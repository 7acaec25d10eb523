"""Bad-input rows for the converter surface: `convert(...)` of `omnisift_hf.models.qwen2_5_omni.convert` (walked by
test_bad_inputs.py). Each row writes its own tiny checkpoint (`omni-src`, the published layout: two shards and an
index) into the row's temporary directory; the tiny model behind it is built once."""

import functools
import json
import subprocess
from pathlib import Path
from unittest import mock

import torch
from helpers import Case
from reference_layout import random_model, write_reference_checkpoint, write_selector_file
from safetensors.torch import save_file

import omnisift_hf.models.qwen2_5_omni.convert as convert_module
from omnisift_hf.models.qwen2_5_omni.convert import convert

NUM_HEADS = 2  # the tiny selector's head count
SHARD = "model-00001-of-00002.safetensors"


@functools.cache
def model():
    return random_model(seed=0)


def checkpoint(tmp_path: Path, with_selector: bool = True) -> Path:
    """A tiny checkpoint in the published layout at `tmp_path / "omni-src"`."""
    write_reference_checkpoint(tmp_path / "omni-src", model(), with_selector=with_selector)
    return tmp_path / "omni-src"


def run(dst: str = "omni-dst", **kwargs):
    """Convert the row's `omni-src` into `tmp_path / dst`."""

    def call(tmp_path):
        return convert(checkpoint(tmp_path), tmp_path / dst, selector_num_heads=NUM_HEADS, **kwargs)

    return call


def edited(change):
    """Convert `omni-src` into `omni-dst` after `change(source_directory)`."""

    def call(tmp_path):
        source = checkpoint(tmp_path)
        change(source)
        return convert(source, tmp_path / "omni-dst", selector_num_heads=NUM_HEADS)

    return call


def with_selector(tensors):
    """Convert the plain (selector-less) `omni-src` with `--selector omni-selector.safetensors` holding
    `tensors(selector_state_dict)`."""

    def call(tmp_path):
        source = checkpoint(tmp_path, with_selector=False)
        selector = {k: v.detach().clone().contiguous() for k, v in model().compressor.state_dict().items()}
        save_file(tensors(selector), tmp_path / "omni-selector.safetensors")
        return convert(
            source,
            tmp_path / "omni-dst",
            selector=tmp_path / "omni-selector.safetensors",
            selector_num_heads=NUM_HEADS,
        )

    return call


def truncate(name: str, keep: float):
    def change(source: Path) -> None:
        data = (source / name).read_bytes()
        (source / name).write_bytes(data[: int(len(data) * keep)])

    return change


def write(name: str, text: str):
    def change(source: Path) -> None:
        (source / name).write_text(text)

    return change


def thinker_config_without_hidden_size(source: Path) -> None:
    config = json.loads((source / "config.json").read_text())
    del config["thinker_config"]["text_config"]["hidden_size"]
    (source / "config.json").write_text(json.dumps(config))


def dst_is_src(tmp_path):
    source = checkpoint(tmp_path)
    return convert(source, source, overwrite=True, selector_num_heads=NUM_HEADS)


def dst_inside_src(tmp_path):
    source = checkpoint(tmp_path)
    return convert(source, source / "converted", selector_num_heads=NUM_HEADS)


def dst_contains_src(tmp_path):
    source = checkpoint(tmp_path)
    return convert(source, tmp_path, overwrite=True, selector_num_heads=NUM_HEADS)


def dst_links_to_src(tmp_path):
    source = checkpoint(tmp_path)
    (tmp_path / "omni-link").symlink_to(source, target_is_directory=True)
    return convert(source, tmp_path / "omni-link", overwrite=True, selector_num_heads=NUM_HEADS)


def hub_cache(tmp_path: Path) -> Path:
    """`omni-src` laid out as the Hub cache holds a snapshot: files in `blobs/`, linked from `snapshots/abc/`."""
    source = checkpoint(tmp_path)
    repo = tmp_path / "hub" / "models--org--omni"
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / "abc").mkdir(parents=True)
    for path in sorted(source.iterdir()):
        path.rename(repo / "blobs" / path.name)
        (repo / "snapshots" / "abc" / path.name).symlink_to(Path("..", "..", "blobs", path.name))
    return repo


def hub_source_into(where: str):
    """Convert the Hub id `org/omni` (its download replaced by the snapshot of `hub_cache`) into `where` in that
    repository's cache folder, with --overwrite."""

    def call(tmp_path):
        repo = hub_cache(tmp_path)
        snapshot = repo / "snapshots" / "abc"
        with mock.patch.object(convert_module, "snapshot_download", return_value=str(snapshot)):
            return convert("org/omni", repo / where, overwrite=True, selector_num_heads=NUM_HEADS)

    return call


def dst_parent_is_file(tmp_path):
    source = checkpoint(tmp_path)
    (tmp_path / "omni-file").write_text("not a directory")
    return convert(source, tmp_path / "omni-file" / "out", selector_num_heads=NUM_HEADS)


def dst_dangling_link(tmp_path):
    source = checkpoint(tmp_path)
    (tmp_path / "omni-dst").symlink_to(tmp_path / "omni-gone")
    return convert(source, tmp_path / "omni-dst", selector_num_heads=NUM_HEADS)


def selector_inside_dst(tmp_path):
    source = checkpoint(tmp_path, with_selector=False)
    (tmp_path / "omni-dst").mkdir()
    write_selector_file(tmp_path / "omni-dst" / "omni-selector.safetensors", model(), "compressor.")
    selector = tmp_path / "omni-dst" / "omni-selector.safetensors"
    return convert(source, tmp_path / "omni-dst", selector=selector, overwrite=True, selector_num_heads=NUM_HEADS)


def stale_staging_is_removed(tmp_path):
    """A staging directory left by a killed conversion (its process has ended) is removed, with a warning."""
    source = checkpoint(tmp_path)
    ended = subprocess.Popen(["true"])
    ended.wait()
    stale = tmp_path / ".omni-dst.killed.partial"
    stale.mkdir()
    marker = {"pid": ended.pid, "host": convert_module.socket.gethostname()}
    (stale / convert_module._STAGING_MARKER).write_text(json.dumps(marker))
    convert(source, tmp_path / "omni-dst", selector_num_heads=NUM_HEADS)
    assert not stale.exists()


def folder_in_place_of(name: str):
    def change(source: Path) -> None:
        (source / name).unlink()
        (source / name).mkdir()

    return change


def into_existing(make):
    """Convert `omni-src` into `omni-dst` after `make(tmp_path / "omni-dst")`."""

    def call(tmp_path):
        make(tmp_path / "omni-dst")
        return run()(tmp_path)

    return call


def non_empty_folder(path: Path) -> None:
    path.mkdir()
    (path / "mine.txt").write_text("mine")


def selector_file(name: str, contents: bytes | None = None):
    """Convert the plain `omni-src` with `--selector name` (the tiny model's selector, or `contents`); `name` is not
    created when `contents` is `b""`."""

    def call(tmp_path):
        if contents is None:
            write_selector_file(tmp_path / name, model(), "")
        elif contents:
            (tmp_path / name).write_bytes(contents)
        return convert(checkpoint(tmp_path, with_selector=False), tmp_path / "omni-dst", selector=tmp_path / name)

    return call


def replace_src_selector(tmp_path):
    write_selector_file(tmp_path / "omni-sel.safetensors", model(), "")
    return run(selector=tmp_path / "omni-sel.safetensors")(tmp_path)


def empty_source(tmp_path):
    (tmp_path / "omni-empty").mkdir()
    return convert(tmp_path / "omni-empty", tmp_path / "omni-dst")


CASES: list[Case] = [
    # SRC and DST: the converter never writes into, nor replaces, its own source.
    Case("convert-dst-is-src", dst_is_src, ValueError, ("DST", "omni-src", "is SRC", "pass a DST outside SRC")),
    Case(
        "convert-dst-inside-src",
        dst_inside_src,
        ValueError,
        ("omni-src/converted", "is inside SRC", "pass a DST outside SRC"),
    ),
    Case(
        "convert-dst-contains-src",
        dst_contains_src,
        ValueError,
        ("contains SRC", "omni-src", "replacing DST would delete", "pass a DST outside SRC"),
    ),
    Case("convert-dst-links-to-src", dst_links_to_src, ValueError, ("omni-link", "omni-src", "is SRC")),
    Case(
        "convert-hub-src-snapshot-is-dst",
        hub_source_into("snapshots/abc"),
        ValueError,
        ("snapshots/abc", "is SRC 'org/omni'", "pass a DST outside SRC"),
    ),
    Case(
        "convert-hub-src-blobs-in-dst",
        hub_source_into("blobs"),
        ValueError,
        ("models--org--omni/blobs", "blobs/added_tokens.json", "a file of SRC 'org/omni'", "pass a DST outside SRC"),
    ),
    Case(
        "convert-selector-inside-dst",
        selector_inside_dst,
        ValueError,
        ("--selector", "omni-dst/omni-selector.safetensors", "move the selector file"),
    ),
    # SRC's files: one error naming the file and what to do, never a raw safetensors or JSON traceback.
    Case(
        "convert-src-missing",
        lambda tmp_path: convert(tmp_path / "omni-missing", tmp_path / "omni-dst"),
        FileNotFoundError,
        ("SRC", "omni-missing", "neither a local directory nor a Hub repository id", "check the path"),
    ),
    Case(
        "convert-src-is-a-file",
        lambda tmp_path: convert(checkpoint(tmp_path) / "config.json", tmp_path / "omni-dst"),
        NotADirectoryError,
        ("SRC", "omni-src/config.json", "is a file", "pass the checkpoint's directory"),
    ),
    Case(
        "convert-src-empty-directory",
        empty_source,
        FileNotFoundError,
        ("SRC", "omni-empty", "has no config.json"),
    ),
    Case(
        "convert-config-not-json",
        edited(write("config.json", "{not json")),
        ValueError,
        ("SRC config.json", "omni-src/config.json", "is not valid JSON", "download or copy it again"),
    ),
    Case(
        "convert-config-not-an-object",
        edited(write("config.json", "[1, 2]")),
        ValueError,
        ("SRC config.json", "omni-src/config.json", "holds a list, not a JSON object"),
    ),
    Case(
        "convert-config-not-qwen-omni",
        edited(write("config.json", '{"model_type": "bert", "hidden_size": 32}')),
        ValueError,
        ("omni-src/config.json", "model_type 'bert'", "expected a Qwen2.5-Omni"),
    ),
    Case(
        "convert-config-omni-without-thinker",
        edited(write("config.json", '{"model_type": "qwen2_5_omni"}')),
        ValueError,
        ("omni-src/config.json", "model_type 'qwen2_5_omni'", "with a `thinker_config`"),
    ),
    Case(
        "convert-config-without-hidden-size",
        edited(thinker_config_without_hidden_size),
        ValueError,
        ("omni-src/config.json", "no `text_config.hidden_size`", "got None"),
    ),
    Case(
        "convert-index-not-json",
        edited(write("model.safetensors.index.json", "nope")),
        ValueError,
        ("SRC index", "model.safetensors.index.json", "is not a JSON object", "download or copy it again"),
    ),
    Case(
        "convert-index-without-weight-map",
        edited(write("model.safetensors.index.json", '{"weight_map": {}}')),
        ValueError,
        ("SRC index", "model.safetensors.index.json", "no `weight_map`"),
    ),
    Case(
        "convert-shard-listed-but-missing",
        edited(lambda source: (source / SHARD).unlink()),
        FileNotFoundError,
        ("omni-src", "lacks 1 of the 2 shards its index lists", SHARD, "download the missing files"),
    ),
    Case(
        "convert-shard-is-a-folder",
        edited(folder_in_place_of(SHARD)),
        FileNotFoundError,
        ("omni-src", "lacks 1 of the 2 shards", SHARD),
    ),
    Case(
        "convert-shard-truncated",
        edited(truncate(SHARD, 0.5)),
        ValueError,
        ("SRC shard", f"omni-src/{SHARD}", "not a readable safetensors file", "truncated or corrupted", "again"),
    ),
    Case(
        "convert-shard-header-garbage",
        edited(write(SHARD, "garbage" * 10)),
        ValueError,
        ("SRC shard", f"omni-src/{SHARD}", "header", "truncated or corrupted", "download or copy it again"),
    ),
    Case(
        "convert-shard-empty",
        edited(write("model-00002-of-00002.safetensors", "")),
        ValueError,
        ("SRC shard", "model-00002-of-00002.safetensors", "header too small", "download or copy it again"),
    ),
    # --selector
    Case(
        "convert-selector-missing",
        selector_file("omni-nosel.st", contents=b""),
        FileNotFoundError,
        ("--selector", "omni-nosel.st", "does not exist", "pass a safetensors file"),
    ),
    Case(
        "convert-selector-is-a-folder",
        lambda tmp_path: convert(checkpoint(tmp_path, False), tmp_path / "omni-dst", selector=tmp_path),
        IsADirectoryError,
        ("--selector", "is a directory", "pass the safetensors file in it"),
    ),
    Case(
        "convert-selector-corrupt",
        selector_file("omni-sel.st", contents=b"\x00" * 3),
        ValueError,
        ("--selector", "omni-sel.st", "not a readable safetensors file", "download or copy it again"),
    ),
    Case(
        "convert-selector-empty",
        with_selector(lambda selector: {}),
        ValueError,
        ("--selector", "omni-selector.safetensors", "holds no tensors"),
    ),
    Case(
        "convert-selector-incomplete",
        with_selector(lambda selector: {k: v for k, v in selector.items() if k != "v_norm.bias"}),
        ValueError,
        ("--selector", "omni-selector.safetensors", "lack ['v_norm.bias']", "pass a complete, trained selector"),
    ),
    Case(
        "convert-selector-wrong-rank",
        with_selector(lambda selector: {**selector, "a_proj.weight": torch.ones(16)}),
        ValueError,
        ("--selector", "omni-selector.safetensors", "impossible shapes", "a_proj.weight [16]"),
    ),
    Case(
        "convert-selector-wrong-width",
        with_selector(lambda selector: {**selector, "v_norm.weight": torch.ones(15)}),
        ValueError,
        ("'v_norm.weight' has shape [15], expected [16]", "omni-selector.safetensors", "inconsistent"),
    ),
    Case(
        "convert-selector-key-twice",
        with_selector(lambda selector: {**selector, "compressor.a_norm.bias": selector["a_norm.bias"].clone()}),
        ValueError,
        ("--selector", "holds both 'a_norm.bias' and 'compressor.a_norm.bias'", "keep one of them"),
    ),
    Case(
        "convert-selector-integer-weights",
        with_selector(lambda selector: {k: v.to(torch.int64) for k, v in selector.items()}),
        ValueError,
        ("--selector", "not floating point", "torch.int64"),
    ),
    # Options
    Case("convert-keep-ratio-nan", run(keep_ratio=float("nan")), ValueError, ("`keep_ratio`", "(0, 1]", "got nan")),
    Case("convert-keep-ratio-zero", run(audio_keep_ratio=0.0), ValueError, ("`audio_keep_ratio`", "got 0.0")),
    Case(
        "convert-keep-ratio-string",
        run(video_keep_ratio="0.3"),
        TypeError,
        ("`video_keep_ratio`", "must be a number", "'0.3'"),
    ),
    Case(
        "convert-heads-zero",
        lambda tmp_path: convert(checkpoint(tmp_path), tmp_path / "omni-dst", selector_num_heads=0),
        ValueError,
        ("--selector-num-heads", "positive integer", "got 0"),
    ),
    Case(
        "convert-subfolder-escapes-src",
        run(subfolder="../elsewhere"),
        ValueError,
        ("--subfolder", "'../elsewhere'", "relative folder inside SRC"),
    ),
    Case(
        "convert-push-to-hub-bad-id",
        run(push_to_hub="not a repo!"),
        ValueError,
        ("--push-to-hub", "'not a repo!'", "pass one like `org/name`"),
    ),
    Case(
        "convert-processor-without-save-pretrained",
        run(processor=object()),
        TypeError,
        ("`processor`", "save_pretrained", "got object"),
    ),
    # DST
    Case(
        "convert-dst-is-a-file",
        into_existing(lambda path: path.write_text("x")),
        FileExistsError,
        ("DST", "omni-dst", "is a file"),
    ),
    Case(
        "convert-dst-not-empty",
        into_existing(non_empty_folder),
        FileExistsError,
        ("DST", "omni-dst", "not empty", "pass --overwrite"),
    ),
    Case(
        "convert-dst-parent-is-a-file",
        dst_parent_is_file,
        NotADirectoryError,
        ("DST", "omni-file/out", "cannot be created", "is a file, not a directory"),
    ),
    Case(
        "convert-dst-dangling-link",
        dst_dangling_link,
        FileExistsError,
        ("DST", "omni-dst", "symbolic link", "omni-gone", "does not exist", "remove the link"),
    ),
    # Warnings: the conversion succeeds and says what it did.
    Case(
        "convert-stale-staging-removed",
        stale_staging_is_removed,
        None,
        ("Removed", ".omni-dst.killed.partial", "was killed", "no longer running"),
    ),
    Case(
        "convert-selector-replaces-src-selector",
        replace_src_selector,
        None,
        ("SRC has selector weights", "replaced by the ones in", "omni-sel.safetensors"),
    ),
]
