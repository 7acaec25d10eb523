"""The synthetic audio-visual QA benchmark, kept importable as `omnisift_hf.avqa`: it lives in
`omnisift_hf.tools.avqa` (tooling, never imported by the library)."""

from .tools.avqa import *  # noqa: F403
from .tools.avqa import __all__  # noqa: F401
