"""The flags the example scripts and the benchmark share: `--device` and `--dtype`, parsed and resolved once."""

import argparse

import torch

__all__ = ["DTYPES", "add_device_and_dtype", "parse_device", "parse_dtype"]

DTYPES = ("auto", "float32", "bfloat16", "float16")


def add_device_and_dtype(parser: argparse.ArgumentParser, dtype_default: str = "auto") -> None:
    """Add `--device auto|cpu|cuda` (auto: cuda if available, else cpu) and `--dtype` (`DTYPES`) to `parser`."""
    parser.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto (default): cuda if available, else cpu"
    )
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default=dtype_default,
        help=f"dtype the model is loaded in (default: {dtype_default}); auto: the checkpoint's own",
    )


def parse_device(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The device `args.device` names; a parser error when `cuda` is asked for and absent."""
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    return ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device


def parse_dtype(args: argparse.Namespace) -> torch.dtype | str:
    """`args.dtype` as `from_pretrained(dtype=...)` takes it: a torch dtype, or `"auto"`."""
    return args.dtype if args.dtype == "auto" else getattr(torch, args.dtype)
