"""Bad-input rows for the converter surface: `convert(...)` of `omnisift_hf.models.qwen2_5_omni.convert` (walked by
test_bad_inputs.py). Each row writes its own tiny checkpoint (`omni-src`, the published layout: two shards and an
index; for `--with-talker`, `omni-full`: a stock full Qwen2.5-Omni with talker, token2wav, `spk_dict.pt` and the
selector as `thinker.compressor.*`) into the row's temporary directory; the tiny models behind them are built once."""

import functools
import json
import subprocess
from pathlib import Path
from unittest import mock

import torch
from helpers import Case, perturb
from reference_layout import native_thinker_config, random_model, write_reference_checkpoint, write_selector_file
from safetensors.torch import load_file, save_file
from transformers import (
    Qwen2_5OmniConfig,
    Qwen2_5OmniForConditionalGeneration,
    Qwen2_5OmniThinkerForConditionalGeneration,
)

import omnisift_hf.models.qwen2_5_omni.convert as convert_module
from omnisift_hf import OmniSiftOmniForConditionalGeneration
from omnisift_hf.models.qwen2_5_omni.convert import convert
from omnisift_hf.testing_utils import tiny_omni_model, tiny_speakers

NUM_HEADS = 2  # the tiny selector's head count
SHARD = "model-00001-of-00002.safetensors"


@functools.cache
def model():
    return random_model(seed=0)


def stock_twin(omni: OmniSiftOmniForConditionalGeneration) -> Qwen2_5OmniForConditionalGeneration:
    """The stock full Qwen2.5-Omni (`qwen2_5_omni`, thinker `qwen2_5_omni_thinker`, no selector) with `omni`'s
    sizes and weights."""
    config = omni.config.to_dict()
    config["thinker_config"]["model_type"] = "qwen2_5_omni_thinker"
    stock = Qwen2_5OmniForConditionalGeneration(
        Qwen2_5OmniConfig(**{key: config[key] for key in ("thinker_config", "talker_config", "token2wav_config")})
    ).eval()
    stock.load_state_dict({k: v for k, v in omni.state_dict().items() if ".compressor." not in k}, strict=True)
    return stock


def write_full_checkpoint(
    directory: Path, omni: OmniSiftOmniForConditionalGeneration, with_selector: bool = True, speakers: bool = True
) -> Path:
    """`omni` as a full Qwen2.5-Omni repository: the stock model's `save_pretrained` (one shard), plus its selector
    as `thinker.compressor.*` in a second shard with an index (the published OmniSIFT layout) for `with_selector`,
    plus `tiny_speakers()` as `spk_dict.pt` for `speakers`."""
    stock_twin(omni).save_pretrained(directory)
    if with_selector:
        shards = {
            "model-00001-of-00002.safetensors": load_file(directory / "model.safetensors"),
            "model-00002-of-00002.safetensors": {
                f"thinker.compressor.{name}": tensor.detach().clone().contiguous()
                for name, tensor in omni.thinker.compressor.state_dict().items()
            },
        }
        (directory / "model.safetensors").unlink()
        weight_map = {}
        for filename, tensors in shards.items():
            save_file(tensors, directory / filename, metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(tensors, filename))
        index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
        (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    if speakers:
        torch.save(tiny_speakers(), directory / "spk_dict.pt")
    return directory


@functools.cache
def omni_model() -> OmniSiftOmniForConditionalGeneration:
    model = tiny_omni_model(seed=0)
    perturb(model, seed=1)
    return model


def full_checkpoint(tmp_path: Path, speakers: bool = True) -> Path:
    """A tiny full checkpoint (talker, token2wav, selector; `spk_dict.pt` for `speakers`) at `tmp_path/"omni-full"`."""
    return write_full_checkpoint(tmp_path / "omni-full", omni_model(), speakers=speakers)


def with_talker(change=None, speakers: bool = True, **kwargs):
    """Convert `omni-full` into `omni-dst` with `with_talker=True`, after `change(source_directory)`."""

    def call(tmp_path):
        source = full_checkpoint(tmp_path, speakers=speakers)
        if change is not None:
            change(source)
        return convert(source, tmp_path / "omni-dst", selector_num_heads=NUM_HEADS, with_talker=True, **kwargs)

    return call


def edit_weights(edit):
    """A change of `omni-full`: its first shard's tensors replaced by `edit(tensors)`."""

    def change(source: Path) -> None:
        shard = source / "model-00001-of-00002.safetensors"
        tensors = edit(load_file(shard))
        save_file(tensors, shard, metadata={"format": "pt"})
        index = json.loads((source / "model.safetensors.index.json").read_text())
        index["weight_map"] = {k: v for k, v in index["weight_map"].items() if not v.endswith(shard.name)}
        index["weight_map"].update(dict.fromkeys(tensors, shard.name))
        (source / "model.safetensors.index.json").write_text(json.dumps(index))

    return change


def without_keys(*prefixes: str):
    return edit_weights(lambda tensors: {k: v for k, v in tensors.items() if not k.startswith(prefixes)})


def edit_full_config(edit):
    def change(source: Path) -> None:
        config = json.loads((source / "config.json").read_text())
        edit(config)
        (source / "config.json").write_text(json.dumps(config))

    return change


def save_speakers(value):
    def change(source: Path) -> None:
        torch.save(value, source / "spk_dict.pt")

    return change


def thinker_only_source(kind: str):
    """Convert a thinker-only directory (`omnisift`: this package's; `qwen2_5_omni_thinker`: transformers') with
    `with_talker=True`."""

    def call(tmp_path):
        source = tmp_path / "omni-thinker"
        if kind == "omnisift":
            model().save_pretrained(source)
        else:
            Qwen2_5OmniThinkerForConditionalGeneration(native_thinker_config()).save_pretrained(source)
        torch.save(tiny_speakers(), source / "spk_dict.pt")  # speakers do not make a talker
        return convert(source, tmp_path / "omni-dst", selector_num_heads=NUM_HEADS, with_talker=True)

    return call


def speakers_file(name: str, contents=None, **kwargs):
    """Convert `omni-full` (without `spk_dict.pt`) with `speakers=tmp_path/name`: `tiny_speakers()` saved there
    unless `contents` is `b""` (nothing written) or bytes (written as they are)."""

    def call(tmp_path):
        if contents is None:
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            torch.save(tiny_speakers(), tmp_path / name)
        elif contents:
            (tmp_path / name).write_bytes(contents)
        source = full_checkpoint(tmp_path, speakers=False)
        options = {"selector_num_heads": NUM_HEADS, "with_talker": True, **kwargs}
        return convert(source, tmp_path / "omni-dst", speakers=tmp_path / name, **options)

    return call


def speakers_replace_src_speakers(tmp_path):
    torch.save(tiny_speakers(seed=1), tmp_path / "omni-spk.pt")
    source = full_checkpoint(tmp_path)
    options = {"selector_num_heads": NUM_HEADS, "with_talker": True}
    return convert(source, tmp_path / "omni-dst", speakers=tmp_path / "omni-spk.pt", **options)


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
    # --with-talker: a full SRC (talker, token2wav, speakers) or a clear refusal; --speakers
    Case(
        "convert-with-talker-not-a-bool",
        run(with_talker="yes"),
        TypeError,
        ("`with_talker`", "must be True or False", "'yes'"),
    ),
    Case(
        "convert-with-talker-omnisift-thinker-src",
        thinker_only_source("omnisift"),
        ValueError,
        (
            "--with-talker",
            "omni-thinker/config.json",
            "model_type 'omnisift'",
            "the thinker alone",
            "full Qwen2.5-Omni",
        ),
    ),
    Case(
        "convert-with-talker-qwen-thinker-src",
        thinker_only_source("qwen2_5_omni_thinker"),
        ValueError,
        ("--with-talker", "model_type 'qwen2_5_omni_thinker'", "no talker", "leave out --with-talker"),
    ),
    Case(
        "convert-with-talker-config-without-talker-config",
        with_talker(edit_full_config(lambda config: config.pop("talker_config"))),
        ValueError,
        ("--with-talker", "omni-full/config.json", "has no `talker_config`", "leave out --with-talker"),
    ),
    Case(
        "convert-with-talker-no-speech-weights",
        with_talker(without_keys("talker.", "token2wav.")),
        ValueError,
        ("--with-talker", "omni-full", "no `talker.*` and no `token2wav.*` weights", "thinker-only checkpoint"),
    ),
    Case(
        "convert-with-talker-no-token2wav-weights",
        with_talker(without_keys("token2wav.")),
        ValueError,
        ("--with-talker", "no `token2wav.*` weights", "talker and token2wav weights", "leave out --with-talker"),
    ),
    Case(
        "convert-with-talker-talker-tensor-missing",
        with_talker(without_keys("talker.codec_head.")),
        ValueError,
        ("SRC lacks 1 tensors the full model", "talker.codec_head.weight", "omni-full", "download it again"),
    ),
    Case(
        "convert-with-talker-talker-tensor-wrong-shape",
        with_talker(edit_weights(lambda tensors: {**tensors, "talker.codec_head.weight": torch.zeros(3, 32)})),
        ValueError,
        ("talker.codec_head.weight [3, 32] (needs [416, 32])", "do not match its config.json", "download it again"),
    ),
    Case(
        "convert-with-talker-src-without-speakers",
        with_talker(speakers=False),
        FileNotFoundError,
        ("--with-talker", "omni-full", "no spk_dict.pt", "could not speak", "--speakers PATH", "leave out"),
    ),
    Case(
        "convert-with-talker-src-speakers-corrupt",
        with_talker(write("spk_dict.pt", "garbage")),
        ValueError,
        ("SRC spk_dict.pt", "omni-full/spk_dict.pt", "not a readable speakers file", "download or copy"),
    ),
    Case(
        "convert-with-talker-src-speakers-not-a-dict",
        with_talker(save_speakers(torch.ones(3))),
        ValueError,
        ("SRC spk_dict.pt", "holds a Tensor", "not Qwen2.5-Omni speakers", "'cond'"),
    ),
    Case(
        "convert-with-talker-src-speaker-without-ref-mel",
        with_talker(save_speakers({**tiny_speakers(), "Ethan": {"cond": torch.ones(1, 16), "bos_token": 413}})),
        ValueError,
        ("SRC spk_dict.pt", "speakers 'Ethan'", "without a `cond` and `ref_mel` tensor", "pass the spk_dict.pt"),
    ),
    Case(
        "convert-speakers-without-with-talker",
        lambda tmp_path: convert(checkpoint(tmp_path), tmp_path / "omni-dst", speakers=tmp_path / "spk_dict.pt"),
        ValueError,
        ("--speakers", "spk_dict.pt", "only used with --with-talker", "add --with-talker"),
    ),
    Case(
        "convert-speakers-missing",
        speakers_file("omni-nospk.pt", contents=b""),
        FileNotFoundError,
        ("--speakers", "omni-nospk.pt", "does not exist", "spk_dict.pt"),
    ),
    Case(
        "convert-speakers-is-a-folder",
        lambda tmp_path: convert(
            full_checkpoint(tmp_path, False), tmp_path / "omni-dst", with_talker=True, speakers=tmp_path
        ),
        IsADirectoryError,
        ("--speakers", "is a directory", "pass the spk_dict.pt file in it"),
    ),
    Case(
        "convert-speakers-corrupt",
        speakers_file("omni-spk.pt", contents=b"\x00" * 3),
        ValueError,
        ("--speakers", "omni-spk.pt", "not a readable speakers file", "download or copy"),
    ),
    Case(
        "convert-speakers-inside-dst",
        speakers_file("omni-dst/spk_dict.pt", overwrite=True),
        ValueError,
        ("--speakers", "omni-dst/spk_dict.pt", "is inside DST", "move the speakers file"),
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
    Case(
        "convert-speakers-replace-src-speakers",
        speakers_replace_src_speakers,
        None,
        ("SRC has spk_dict.pt", "replaced by --speakers", "omni-spk.pt"),
    ),
]
