"""The remote-code bundle: the self-contained files a Hub repo receives so that `trust_remote_code=True` works
without `omnisift_hf` installed. They import only torch and transformers (relative imports among themselves).

Regenerate the checked-in copy in `modeling/` after changing any of them:

    python -m omnisift_hf.bundle modeling
"""

import argparse
import shutil
from pathlib import Path

__all__ = ["REMOTE_CODE_FILES", "write_remote_code"]

REMOTE_CODE_FILES = ("configuration_omnisift.py", "compression.py", "modeling_omnisift.py")


def write_remote_code(directory: str | Path) -> list[Path]:
    """Copy the remote-code files into `directory` (created if needed) and return their paths."""
    source = Path(__file__).parent
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name in REMOTE_CODE_FILES:
        shutil.copyfile(source / name, target / name)
        written.append(target / name)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the OmniSIFT remote-code files into a directory.")
    parser.add_argument("directory", help="where to write them (the repository's `modeling/`)")
    for path in write_remote_code(parser.parse_args().directory):
        print(path)


if __name__ == "__main__":
    main()
