"""Regenerate the checked-in remote-code bundles in the repository's `modeling/`, one folder per backbone: the flat,
self-contained files `save_pretrained` writes next to the weights (see `omnisift_hf.remote_code`).

    python -m omnisift_hf.tools.bundle modeling
"""

import argparse
import shutil
import sys
from pathlib import Path

from ..models import BACKBONES
from ..remote_code import write_remote_code

__all__ = ["backbone_bundles", "main", "write_bundles"]


def backbone_bundles() -> dict[str, str]:
    """Folder name (the backbone's folder under `omnisift_hf/models/`) -> file of its modelling module."""
    bundles = {}
    for _, model_class, _ in BACKBONES:
        module_file = sys.modules[model_class.__module__].__file__
        bundles[Path(module_file).parent.name] = module_file
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", help="where to write them (the repository's `modeling/`)")
    for path in write_bundles(parser.parse_args(argv).directory):
        sys.stdout.write(f"{path}\n")


if __name__ == "__main__":
    main()
