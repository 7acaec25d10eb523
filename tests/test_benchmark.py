"""The benchmark harness: its quick mode end to end, the meta-device FLOP count against a real forward, the plot."""

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from omnisift_hf import OmniSiftForConditionalGeneration
from omnisift_hf.testing_utils import tiny_config, tiny_inputs
from omnisift_hf.tools.benchmark import main
from omnisift_hf.tools.profiling import (
    MetaPrefillFlops,
    clip_segments,
    count_prefill_flops,
    flop_counter,
    measure_clip_layouts,
)
from omnisift_hf.tools.visualization import plot_benchmark

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
STAGES = ("vision_encoder", "audio_encoder", "selector", "decoder", "lm_head")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    path = tmp_path_factory.mktemp("benchmark") / "quick.json"
    stdout = sys.stdout
    try:
        sys.stdout = printed = __import__("io").StringIO()
        assert main(["--quick", "--no-progress", "--json", str(path)]) == 0
    finally:
        sys.stdout = stdout
    return json.loads(path.read_text()), printed.getvalue(), path


def test_quick_report_is_well_formed(quick):
    report, printed, _ = quick
    assert set(report) == {"environment", "flops", "prefill", "generate", "batch"}
    env = report["environment"]
    assert env["quick"] and env["model"] == "tiny" and env["repeats"] == 1
    assert env["dtype"] == "float32" and env["command"].endswith("--json " + str(quick[2]))
    for title in ("Prefill FLOPs at real sizes", "### Prefill (tiny", "### generate()", "### Batched generate()"):
        assert title in printed
    assert printed.count("| 0.25 |") >= 3


def test_quick_flops_at_7b(quick):
    rows = {row["keep_ratio"]: row for row in quick[0]["flops"]["rows"]}
    assert set(rows) == {1.0, 0.35, 0.25}
    for keep_ratio, row in rows.items():
        assert row["model"] == "Qwen2.5-Omni-7B" and row["seconds"] == 4
        flops, layout = row["flops"], row["layout"]
        assert all(flops[stage] >= 0 for stage in STAGES) and flops["total"] > 0
        assert flops["total"] == sum(flops[stage] for stage in STAGES)
        assert flops["compression"] == flops["selector"]
        media = layout["num_video_tokens"] + layout["num_audio_tokens"]
        kept = layout["num_kept_video_tokens"] + layout["num_kept_audio_tokens"]
        assert layout["kept_length"] == layout["input_length"] - (media - kept)
        assert abs(layout["retention"] - keep_ratio) < 0.02
        if keep_ratio < 1:
            assert kept < media and flops["selector"] > 0
    # Encoders cost the same at every ratio; the decoder's share shrinks with the keep ratio.
    assert len({row["flops"]["vision_encoder"] for row in rows.values()}) == 1
    assert rows[0.25]["total_flops_vs_full"] < rows[0.35]["total_flops_vs_full"] < 1
    assert rows[0.25]["decoder_share"] < rows[0.35]["decoder_share"] < rows[1.0]["decoder_share"]


def test_quick_timings(quick):
    report = quick[0]
    prefill = {row["keep_ratio"]: row for row in report["prefill"]["rows"]}
    for keep_ratio, row in prefill.items():
        assert row["prefill_s"] > 0 and row["sequence_length"] <= row["input_length"]
        assert (row["compression_s"] > 0) == (keep_ratio < 1)
    assert prefill[0.25]["sequence_length"] < prefill[1.0]["sequence_length"]
    assert prefill[0.25]["total_flops_vs_full"] < 1 and prefill[1.0]["prefill_vs_full"] == 1

    for row in report["generate"]["rows"]:
        assert row["new_tokens"] == 4
        assert 0 < row["time_to_first_token_s"] <= row["total_s"] and row["tokens_per_s"] > 0

    batch = {row["batch_size"]: row for row in report["batch"]["rows"]}
    assert set(batch) == {1, 4}
    assert batch[1]["padded_lengths"] == sorted(batch[1]["padded_lengths"]) and batch[1]["pad_fraction"] == 0
    assert batch[4]["padded_lengths"] == [max(batch[1]["padded_lengths"])] and batch[4]["pad_fraction"] > 0
    assert batch[1]["speedup_vs_one_by_one"] == 1 and batch[4]["tokens_per_s"] > 0


def test_plot_benchmark_renders_a_png(quick, tmp_path):
    image = plot_benchmark(quick[0])
    assert image.size == (1144, 484)
    assert len(image.getcolors(1 << 16)) > 10  # lines, text and legend, not a blank canvas
    out = tmp_path / "benchmark.png"
    sys_argv = sys.argv
    try:
        sys.argv = ["plot_benchmark.py", str(quick[2]), "--output-dir", str(tmp_path)]
        runpy.run_path(str(EXAMPLES / "plot_benchmark.py"), run_name="__main__")
    except SystemExit as exit:
        assert exit.code in (0, None)
    finally:
        sys.argv = sys_argv
    assert Image.open(out).format == "PNG" and Image.open(out).size == image.size


def test_plot_benchmark_with_missing_sections():
    assert plot_benchmark({"environment": {}}).size == (1144, 484)


@pytest.mark.slow
def test_meta_device_stages_match_a_real_forward():
    # The stage-by-stage meta count (layout from the tiny CPU run, one layer of each kind counted and multiplied,
    # vision counted per slice) equals FlopCounterMode on a real forward of the same model, and the meta count of
    # every layer: 3 decoder layers, 4 vision blocks (2 windowed, 2 full attention), 3 audio layers; 4 slices of
    # 8 x 12 patches (2 attention windows each) with audio.
    base = tiny_config()
    config = tiny_config(
        text_config={**base.text_config.to_dict(), "num_hidden_layers": 3, "layer_types": None},
        vision_config={**base.vision_config.to_dict(), "depth": 4, "fullatt_block_indexes": [1, 3]},
        audio_config={**base.audio_config.to_dict(), "encoder_layers": 3},
    )
    torch.manual_seed(0)
    model = OmniSiftForConditionalGeneration(config).eval()
    inputs = tiny_inputs([clip_segments(4, (8, 12))])
    scaled, exact = MetaPrefillFlops(config), MetaPrefillFlops(config, exact=True)
    for layout in measure_clip_layouts(4, [1.0, 0.25], patches=(8, 12)):
        real = count_prefill_flops(model, inputs, keep_ratio=layout.keep_ratio)
        assert scaled.count(layout) == real
        assert exact.count(layout) == real


def test_flop_counter_counts_cpu_attention():
    query = torch.randn(1, 2, 16, 8)
    with flop_counter() as counter:
        F.scaled_dot_product_attention(query, query, query, is_causal=True)
    assert counter.get_total_flops() == 4 * 2 * 16 * 16 * 8


@pytest.mark.slow
def test_cpu_memory_comes_from_a_fresh_process():
    """Full (non-quick) CPU runs measure each peak in a new process: a second call in the same process reuses memory
    the allocator kept resident and would report ~0. The probe runs the real child command line and returns bytes."""
    from omnisift_hf.tools.benchmark import build_parser, fresh_process_memory_probe

    args = build_parser().parse_args(["--quick", "--seconds", "2", "--patches", "4", "4", "--threads", "1"])
    args.max_new_tokens = 2
    peak = fresh_process_memory_probe(args)("prefill", 0.25)
    assert isinstance(peak, int) and peak > 0
