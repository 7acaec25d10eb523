"""Prefill FLOPs and wall time of OmniSIFT against the full model, measured side by side in one run.

Default: the mid-size random config of the compression issue (text hidden 1024, 8 layers, 16 heads / 4 KV heads,
intermediate 2816; vision depth 2, hidden 128; audio 2 layers, d_model 128; tiny vocabulary), a 20 s clip at 2 fps
with its audio track at the processor's default resolution (24 x 24 patches per temporal slice -> 144 LLM tokens per
second of video, 25 audio tokens per second), sdpa attention.

FLOPs come from `torch.utils.flop_counter.FlopCounterMode`, split by module (vision encoder, audio encoder, selector,
decoder + lm_head). Times are medians over `--repeats` runs after one warm-up; the compression step (STVP + VGAS +
re-padding) is timed by wrapping the model's selection method here, never inside the model.

    python examples/benchmark.py                       # bf16 on CPU, as in the issue
    python examples/benchmark.py --dtype float32 --json results.json
"""

import argparse
import json
import statistics
import time

import torch

from omnisift_hf import OmniSiftForConditionalGeneration
from omnisift_hf.profiling import count_prefill_flops
from omnisift_hf.tiny import TINY_TOKEN_IDS, TINY_VOCAB_SIZE, tiny_config, tiny_inputs

MID_SIZE = {
    "text_config": {
        "vocab_size": TINY_VOCAB_SIZE,
        "hidden_size": 1024,
        "intermediate_size": 2816,
        "num_hidden_layers": 8,
        "num_attention_heads": 16,
        "num_key_value_heads": 4,
        "max_position_embeddings": 32768,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [8, 12, 12]},
        "pad_token_id": TINY_TOKEN_IDS["pad"],
        "eos_token_id": TINY_TOKEN_IDS["im_end"],
    },
    "vision_config": {
        "depth": 2,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_heads": 2,
        "out_hidden_size": 1024,
        "fullatt_block_indexes": [1],
    },
    "audio_config": {
        "num_mel_bins": 128,
        "encoder_layers": 2,
        "encoder_attention_heads": 2,
        "encoder_ffn_dim": 256,
        "d_model": 128,
        "output_dim": 1024,
    },
    "selector_hidden_size": 512,
    "selector_num_heads": 8,
    "selector_mlp_size": 256,
}

def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def move(value, device: str, dtype: torch.dtype):
    """Tensors to the device; floating-point ones (pixels, mel features) to the model dtype."""
    if not torch.is_tensor(value):
        return value
    return value.to(device, dtype) if torch.is_floating_point(value) else value.to(device)


def time_prefill(model, inputs, keep_ratio: float, repeats: int) -> dict[str, float]:
    """Median prefill and compression-step times in seconds (one warm-up run excluded)."""
    device = model.device
    compression_times: list[float] = []
    select = model._select_tokens

    def timed_select(*args, **kwargs):
        synchronize(device)
        start = time.perf_counter()
        result = select(*args, **kwargs)
        synchronize(device)
        compression_times.append(time.perf_counter() - start)
        return result

    model._select_tokens = timed_select
    prefill_times = []
    try:
        for step in range(repeats + 1):
            synchronize(device)
            start = time.perf_counter()
            with torch.no_grad():
                model(**inputs, keep_ratio=keep_ratio)
            synchronize(device)
            if step:
                prefill_times.append(time.perf_counter() - start)
    finally:
        del model._select_tokens
    compression = statistics.median(compression_times[1:]) if compression_times else 0.0
    return {"prefill_s": statistics.median(prefill_times), "compression_s": compression}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--keep-ratios", type=float, nargs="+", default=[1.0, 0.35, 0.25])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny config and a 4 s clip (a quick smoke run)")
    parser.add_argument("--json", help="write the results here as JSON")
    args = parser.parse_args()

    torch.manual_seed(0)
    config = tiny_config() if args.tiny else tiny_config(**MID_SIZE)
    seconds = 4 if args.tiny else args.seconds
    model = OmniSiftForConditionalGeneration(config).to(args.device, getattr(torch, args.dtype)).eval()
    clip = [("text", 16), ("video", seconds, 24, 24, 100 * seconds), ("text", 24)]
    inputs = {key: move(value, args.device, model.dtype) for key, value in tiny_inputs([clip]).items()}

    rows = []
    for keep_ratio in args.keep_ratios:
        with torch.no_grad():
            out = model(**inputs, keep_ratio=keep_ratio)
        kept = (out.num_kept_video_tokens + out.num_kept_audio_tokens).item()
        total = (out.num_video_tokens + out.num_audio_tokens).item()
        rows.append(
            {
                "keep_ratio": keep_ratio,
                "retention": kept / total,
                "sequence_length": out.logits.shape[1],
                "flops": count_prefill_flops(model, inputs, keep_ratio=keep_ratio),
                **time_prefill(model, inputs, keep_ratio, args.repeats),
            }
        )
    base = rows[0]
    device_name = (
        torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    )
    report = {
        "device": device_name,
        "dtype": args.dtype,
        "seconds": seconds,
        "input_length": inputs["input_ids"].shape[1],
        "rows": rows,
    }
    print(f"device: {device_name}, dtype {args.dtype}, {seconds} s clip, {inputs['input_ids'].shape[1]} input tokens")
    print(
        "| keep | retention | seq len | prefill GFLOPs | x full | decoder GFLOPs | prefill time (s) | x full | compression share |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        share = row["compression_s"] / base["prefill_s"]
        print(
            f"| {row['keep_ratio']} | {row['retention']:.3f} | {row['sequence_length']} | "
            f"{row['flops']['total'] / 1e9:.1f} | {row['flops']['total'] / base['flops']['total']:.3f} | "
            f"{row['flops']['decoder'] / 1e9:.1f} | {row['prefill_s']:.3f} | {row['prefill_s'] / base['prefill_s']:.3f} | "
            f"{share:.2%} |"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()
