"""Small helpers the measuring tools share to summarise and print their results (standard library only, so that
`tools/gpu_check.py` can use them without importing torch or transformers first)."""

import os
import platform
import statistics

__all__ = ["cpu_name", "fmt", "markdown_table", "median", "ratio"]


def median(values: list[float]) -> float | None:
    """The median of `values`, `None` when there are none."""
    return statistics.median(values) if values else None


def ratio(value, base) -> float | None:
    """`value / base`, `None` when either is missing or `base` is 0."""
    return value / base if value is not None and base else None


def fmt(value, spec: str = ".3f", scale: float = 1.0, suffix: str = "") -> str:
    """`value / scale` formatted with `spec` and `suffix`, `-` when missing."""
    return "-" if value is None else f"{value / scale:{spec}}{suffix}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table of `rows` under `header`."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def cpu_name(torch_threads: int | None = None) -> str:
    """The CPU's model name and core count (and the torch threads, when given), as the reports record the device."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            name = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    threads = "" if torch_threads is None else f", {torch_threads} torch threads"
    return f"CPU {name} ({os.cpu_count()} cores{threads})"
