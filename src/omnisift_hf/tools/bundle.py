"""Regenerate the checked-in remote-code bundles in the repository's `modeling/`, one folder per backbone (named as the
backbone's folder under `omnisift_hf/models/`: `qwen2_5_omni`, `qwen3_omni_moe`): the flat, self-contained files
`save_pretrained` writes next to the weights (see `omnisift_hf.remote_code`).

    python -m omnisift_hf.tools.bundle modeling           # write them
    python -m omnisift_hf.tools.bundle modeling --check   # exit 1, naming each file, if any differs from src/
"""

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from ..models import BACKBONES
from ..remote_code import write_remote_code

__all__ = ["backbone_bundles", "main", "stale_bundle_files", "write_bundles"]


def backbone_bundles() -> dict[str, str]:
    """Folder name (the backbone's folder under `omnisift_hf/models/`) -> file of its modelling module. A backbone
    with several models (Qwen2.5-Omni's thinker and full model) has one modelling module, so one bundle."""
    bundles = {}
    for _, model_class, _ in BACKBONES:
        module_file = sys.modules[model_class.__module__].__file__
        name = Path(module_file).parent.name
        if bundles.setdefault(name, module_file) != module_file:
            raise ValueError(f"Backbone folder {name!r} has two modelling modules: {bundles[name]}, {module_file}.")
    return bundles


def write_bundles(directory: str | Path) -> list[Path]:
    """Write every backbone's bundle into `directory/<backbone>/` (replacing what is there) and return the paths."""
    written = []
    for name, module_file in backbone_bundles().items():
        target = Path(directory) / name
        if target.exists():
            shutil.rmtree(target)
        written += write_remote_code(target, module_file)
    return written


def stale_bundle_files(directory: str | Path) -> list[str]:
    """The files of `directory/<backbone>/` that differ from what `write_bundles` would write, are missing, or are
    left over (`<backbone>/<file>`, sorted); empty when the checked-in bundles are up to date."""
    with tempfile.TemporaryDirectory() as fresh:
        write_bundles(fresh)
        stale = []
        for name in backbone_bundles():
            expected, actual = Path(fresh) / name, Path(directory) / name
            names = {p.name for p in expected.glob("*.py")} | {p.name for p in actual.glob("*.py")}
            for file in sorted(names):
                both = (expected / file).is_file() and (actual / file).is_file()
                if not both or not filecmp.cmp(expected / file, actual / file, shallow=False):
                    stale.append(f"{name}/{file}")
        return stale


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", help="where to write them (the repository's `modeling/`)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a bundle differs from src/")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_bundle_files(args.directory)
        for path in stale:
            sys.stderr.write(f"{Path(args.directory) / path} differs from src/: run without --check to regenerate\n")
        raise SystemExit(1 if stale else 0)
    for path in write_bundles(args.directory):
        sys.stdout.write(f"{path}\n")


if __name__ == "__main__":
    main()
