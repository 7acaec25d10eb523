"""Helpers shared by the test modules (imported by name; `conftest.py` holds only fixtures).

`build_inputs` lays out placeholder tokens exactly as `Qwen2_5OmniProcessor` does (including the 2-second
interleaving of video and audio chunks), without needing a tokenizer, so each test controls every token count.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import Qwen2_5OmniConfig, Qwen2_5OmniThinkerConfig

from omnisift_hf.models.qwen2_5_omni import modeling_omnisift
from omnisift_hf.remote_code import remote_code_files
from omnisift_hf.testing_utils import TINY_TOKEN_IDS, tiny_inputs

ROOT = Path(__file__).resolve().parent.parent
# The checked-in remote-code bundle of the Qwen2.5-Omni backbone and the files `save_pretrained` writes from it.
BUNDLE_DIR = ROOT / "modeling" / "qwen2_5_omni"
REMOTE_CODE_FILES = tuple(sorted(remote_code_files(modeling_omnisift.__file__)))

IDS = TINY_TOKEN_IDS
build_inputs = tiny_inputs


def select_sample(inputs: dict, samples: list[list[tuple]], index: int, seed: int = 0) -> dict:
    """The inputs of sample `index` alone, with exactly the same media tensors as in the batch."""
    single = build_inputs([samples[index]], seed=seed)
    # Media tensors: slice this sample's share out of the batch tensors so values are identical.
    counts = [_media_counts(s) for s in samples]
    before = [sum(c[k] for c in counts[:index]) for k in range(4)]
    mine = counts[index]
    if "pixel_values_videos" in single:
        v0, v1 = before[0], before[0] + mine[0]
        single["pixel_values_videos"] = inputs["pixel_values_videos"][v0:v1]
    if "pixel_values" in single:
        i0, i1 = before[2], before[2] + mine[2]
        single["pixel_values"] = inputs["pixel_values"][i0:i1]
    if "input_features" in single:
        a0, a1 = before[1], before[1] + mine[1]
        frames = single["input_features"].shape[-1]
        single["input_features"] = inputs["input_features"][a0:a1, :, :frames]
    # Text tokens are random per build; take this sample's row from the batch instead.
    real = inputs["attention_mask"][index].bool()
    single["input_ids"] = inputs["input_ids"][index][real].unsqueeze(0)
    single["attention_mask"] = torch.ones_like(single["input_ids"])
    return single


def _media_counts(segments: list[tuple]) -> tuple[int, int, int, int]:
    """(video patches, audio items, image patches, unused) of one sample, in input order."""
    video_patches = sum(s[1] * s[2] * s[3] for s in segments if s[0] == "video")
    audio_items = sum(1 for s in segments if s[0] == "audio" or (s[0] == "video" and s[4] is not None))
    image_patches = sum(s[1] * s[2] for s in segments if s[0] == "image")
    return video_patches, audio_items, image_patches, 0


def full_model_config(thinker: Qwen2_5OmniThinkerConfig) -> Qwen2_5OmniConfig:
    """The full Qwen2.5-Omni config around `thinker`, its talker using the same (tiny) special token ids."""
    talker = {
        name: getattr(thinker, name)
        for name in ("audio_token_index", "image_token_index", "video_token_index", "vision_start_token_id",
                     "vision_end_token_id", "audio_start_token_id", "audio_end_token_id")
    }  # fmt: skip
    talker.update(tts_text_start_token_id=143, tts_text_end_token_id=144, tts_text_pad_token_id=145)
    return Qwen2_5OmniConfig(thinker_config=thinker.to_dict(), talker_config=talker)


@torch.no_grad()
def perturb(module: torch.nn.Module, seed: int, scale: float = 0.05) -> None:
    """Move every parameter of `module` away from its init by seeded noise of std `scale` (norm weights away from 1,
    biases away from 0), so that a tensor that was re-initialised instead of loaded can never compare equal by
    accident. The noise depends only on `seed`, `scale` and the parameters' shapes and order."""
    generator = torch.Generator().manual_seed(seed)
    for parameter in module.parameters():
        parameter.add_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * scale)


@dataclass(frozen=True)
class Case:
    """One row of the bad-input table (`test_bad_inputs.py`).

    name: a short id. call: performs the call, given a fresh temporary directory. error: the exception type the call
    must raise, or `None` when the call must succeed and warn (through transformers' logging). words: substrings the
    message (the exception's or the warning's) must contain: the argument or file, the value, and what to do.
    """

    name: str
    call: Callable[[Path], object]
    error: type[BaseException] | None
    words: tuple[str, ...]


# The start of a script run with `python -c` to prove that a saved directory loads from its own remote code: it makes
# `import omnisift_hf` fail in that process (and fails itself if the package is still importable).
BLOCK_OMNISIFT_HF = """
import importlib.abc
import sys


class BlockOmnisift(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "omnisift_hf":
            raise ImportError(f"{name} is blocked in this process")
        return None


sys.meta_path.insert(0, BlockOmnisift())
try:
    import omnisift_hf  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("omnisift_hf is importable: the test would not prove anything")
"""
