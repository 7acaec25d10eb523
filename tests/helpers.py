"""Helpers shared by the test modules (imported by name; `conftest.py` holds only fixtures)."""

from pathlib import Path

from omnisift_hf.models.qwen2_5_omni import modeling_omnisift
from omnisift_hf.remote_code import remote_code_files

ROOT = Path(__file__).resolve().parent.parent
# The checked-in remote-code bundle of the Qwen2.5-Omni backbone and the files `save_pretrained` writes from it.
BUNDLE_DIR = ROOT / "modeling" / "qwen2_5_omni"
REMOTE_CODE_FILES = tuple(sorted(remote_code_files(modeling_omnisift.__file__)))
