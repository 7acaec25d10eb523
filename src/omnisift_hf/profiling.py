"""FLOP counting for one prefill, split by module (vision encoder, audio encoder, selector, decoder, lm_head).

Counts come from `torch.utils.flop_counter.FlopCounterMode` (matmuls, convolutions and SDPA), never from formulas, and
work on the meta device too (shapes only, no weights), which is how real 7B sizes are measured without a GPU.
"""

import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["FLOP_GROUPS", "count_prefill_flops"]

# Module path suffixes (below the model's class name) of each group.
FLOP_GROUPS = {
    "vision encoder": ".model.visual",
    "audio encoder": ".model.audio_tower",
    "selector": ".compressor",
    "decoder": ".model.language_model",
    "lm_head": ".lm_head",
}


def count_prefill_flops(model, inputs: dict, **forward_kwargs) -> dict[str, int]:
    """FLOPs of `model(**inputs, **forward_kwargs)` (e.g. `keep_ratio=0.25`) by group of `FLOP_GROUPS`, plus
    "compression" (everything outside the groups: STVP, the selector's bookkeeping, re-padding) and "total"."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(**inputs, **forward_kwargs)
    per_module = counter.get_flop_counts()
    root = type(model).__name__
    flops = {name: sum(per_module.get(root + suffix, {}).values()) for name, suffix in FLOP_GROUPS.items()}
    flops["total"] = sum(per_module.get("Global", {}).values())
    flops["compression"] = flops["total"] - sum(flops[name] for name in FLOP_GROUPS) + flops["selector"]
    return flops
