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


# ---------------------------------------------------------------------------------------------------------------------
# Spoken replies (`--talker`): the full model's talker prompted with the kept positions only
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def talker_quick(tmp_path_factory):
    path = tmp_path_factory.mktemp("benchmark") / "talker.json"
    stdout = sys.stdout
    try:
        sys.stdout = printed = __import__("io").StringIO()
        assert main(["--talker", "--quick", "--no-progress", "--json", str(path)]) == 0
    finally:
        sys.stdout = stdout
    return json.loads(path.read_text()), printed.getvalue()


def test_talker_quick_report(talker_quick):
    # The tiny full model on the quick clip (4 s, 8 x 8 patches): the talker's prefill is K + 2 tokens, K + 2 < L + 2
    # at keep 0.25 and = L + 2 at 1.0; both ratios do the same reply (4 text, 8 codec tokens). No timing is asserted.
    report, printed = talker_quick
    assert set(report) == {"environment", "talker_flops", "talker"}
    for title in ("### Talker prefill FLOPs at the real size", "### Spoken replies (tiny", "### Issue #16 targets"):
        assert title in printed
    section = report["talker"]
    assert section["seconds"] == 4 and section["thinker_new_tokens"] == 4 and section["codec_tokens"] == 8
    rows = {row["keep_ratio"]: row for row in section["rows"]}
    assert set(rows) == {1.0, 0.25}
    length = section["input_length"]
    assert rows[1.0]["talker_prompt_length"] == length + 2 and rows[1.0]["kept_length"] == length
    assert rows[1.0]["talker_prompt_length_vs_full"] == 1 and rows[1.0]["retention"] == 1
    assert rows[0.25]["talker_prompt_length"] == rows[0.25]["kept_length"] + 2 < length + 2
    assert rows[0.25]["talker_prompt_length_vs_full"] == (rows[0.25]["kept_length"] + 2) / (length + 2)
    assert abs(rows[0.25]["retention"] - 0.25) < 0.02
    for row in rows.values():
        assert row["codec_tokens"] == 8 and row["thinker_new_tokens"] == 4
        assert row["audio_seconds"] > 0 and len(row["total_runs_s"]) == 1
        assert all(row[key] > 0 for key in ("time_to_first_codec_token_s", "talker_prefill_s", "token2wav_s"))
        assert row["thinker_s"] + row["talker_s"] <= row["total_s"]
    # The meta-device table counts the same layout: the timed run's K is the 7B table's K.
    flops = {row["keep_ratio"]: row for row in report["talker_flops"]["rows"]}
    assert {row["seconds"] for row in flops.values()} == {4}
    for keep_ratio, row in flops.items():
        assert row["input_length"] == length and row["kept_length"] == rows[keep_ratio]["kept_length"]
        assert row["prefill_tokens"] == row["kept_length"] + 2
        assert row["flops"]["total"] == sum(row["flops"][group] for group in ("projection", "decoder", "codec_head"))
    assert flops[0.25]["total_flops_vs_full"] < flops[0.25]["prefill_tokens_vs_full"] < 1


def test_talker_targets_read_the_20s_rows():
    from omnisift_hf.tools.benchmark import talker_targets

    report = {
        "talker_flops": {
            "rows": [
                {"seconds": 20, "keep_ratio": 0.25, "prefill_tokens_vs_full": 0.27, "total_flops_vs_full": 0.25},
                {"seconds": 10, "keep_ratio": 0.25, "prefill_tokens_vs_full": 0.5, "total_flops_vs_full": 0.5},
            ]
        },
        "talker": {
            "seconds": 20,
            "rows": [
                {
                    "keep_ratio": 0.25,
                    "talker_prompt_length_vs_full": 0.27,
                    "total_vs_full": 0.6,
                    "time_to_first_codec_token_vs_full": 0.4,
                    "talker_prefill_vs_full": 0.2,
                    "process_cpu_vs_full": 0.7,
                    "peak_memory_vs_full": 0.5,
                }
            ],
        },
    }
    checks = talker_targets(report)
    assert [(check["value"], check["met"]) for check in checks if check["target"]] == [
        (0.27, True),  # talker prefill tokens, 7B layout, 20 s
        (0.27, True),  # talker prefill tokens, timed run, 20 s
        (0.6, False),  # whole spoken reply time
    ]
    assert [check["value"] for check in checks if not check["target"]] == [0.4, 0.2, 0.7, 0.25, 0.5]
    assert all(check["met"] is None for check in checks if not check["target"])


def _talker_config():
    from omnisift_hf.tools.profiling import qwen2_5_omni_talker_config

    # A small talker: input width 48, hidden 32, 3 layers of 4 query / 2 key-value heads of 8, MLP 80, 40 codes.
    codec = {f"tts_codec_{name}_token_id": 36 + i for i, name in enumerate(("pad", "start", "end", "mask"))}
    return qwen2_5_omni_talker_config(
        vocab_size=40,
        embedding_size=48,
        hidden_size=32,
        intermediate_size=80,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        layer_types=None,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [1, 1, 2]},
        **codec,
    )


def _talker_hand_count(length: int, E=48, H=32, I=80, layers=3, heads=4, kv_heads=2, head_dim=8, V=40) -> dict:  # noqa: E741
    """Matrix-product FLOPs (2 per multiply-add) of a talker prefill of `length` tokens, by hand."""
    projections = 2 * H * heads * head_dim + 2 * 2 * H * kv_heads * head_dim + 2 * heads * head_dim * H  # q, k, v, o
    mlp = 3 * 2 * H * I  # gate, up, down
    attention = 2 * 2 * length * heads * head_dim  # scores and weighted values, dense, per query token
    decoder = layers * length * (projections + mlp + attention)
    return {"projection": 2 * length * E * H, "decoder": decoder, "codec_head": 2 * length * H * V}


def test_talker_prefill_flops_match_a_hand_count():
    from omnisift_hf.tools.profiling import QWEN2_5_OMNI_TALKER, MetaTalkerPrefillFlops, qwen2_5_omni_talker_config

    config = _talker_config()
    scaled, exact = MetaTalkerPrefillFlops(config), MetaTalkerPrefillFlops(config, exact=True)
    for length in (7, 30):
        hand = _talker_hand_count(length)
        hand["total"] = sum(hand.values())
        assert scaled.count(length) == hand and exact.count(length) == hand
    # The real 7B talker: the sizes, the same formula.
    real = qwen2_5_omni_talker_config()
    assert {key: getattr(real, key) for key in QWEN2_5_OMNI_TALKER if key != "rope_parameters"} == {
        "vocab_size": 8448,
        "embedding_size": 3584,
        "hidden_size": 896,
        "intermediate_size": 18944,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "head_dim": 64,
    }
    sizes = {"E": 3584, "H": 896, "I": 18944, "layers": 24, "heads": 14, "kv_heads": 2, "head_dim": 64, "V": 8448}
    hand = _talker_hand_count(100, **sizes)
    assert MetaTalkerPrefillFlops(real).count(100) == {**hand, "total": sum(hand.values())}


def test_talker_prefill_flops_match_a_real_prompted_forward():
    # The meta count equals FlopCounterMode on a real CPU prefill of the same talker, run as the full model prompts it
    # (inputs_embeds with the kept prompt's M-RoPE positions, `prompt_position_ids`).
    from omnisift_hf.models.qwen2_5_omni.modeling_omnisift import OmniSiftTalkerForConditionalGeneration
    from omnisift_hf.tools.profiling import MetaTalkerPrefillFlops

    config = _talker_config()
    torch.manual_seed(0)
    talker = OmniSiftTalkerForConditionalGeneration(config).eval()
    length = 12
    positions = torch.arange(length).view(1, 1, -1).expand(3, 1, -1).clone()
    positions[:, :, 3:] += 40  # a gap, as where dropped positions were
    with torch.no_grad(), flop_counter() as counter:
        talker(
            input_ids=torch.full((1, length), 39),
            inputs_embeds=torch.randn(1, length, 48),
            prompt_position_ids=positions,
            thinker_reply_part=torch.randn(1, 3, 48),
        )
    assert MetaTalkerPrefillFlops(config).count(length)["total"] == counter.get_total_flops()


@pytest.mark.slow
def test_talker_memory_comes_from_a_fresh_process():
    # The spoken-reply probe runs the real child command line (the full tiny model, one reply) and returns bytes.
    from omnisift_hf.tools.benchmark import build_parser, fresh_process_memory_probe

    args = build_parser().parse_args(["--quick", "--seconds", "2", "--patches", "4", "4", "--threads", "1"])
    args.max_new_tokens, args.talker_codec_tokens = 2, 2
    peak = fresh_process_memory_probe(args)("talker", 0.25)
    assert isinstance(peak, int) and peak > 0


def test_plot_benchmark_draws_the_spoken_reply_row():
    """A `--talker` report gets the spoken-reply panels: alone (one row) or under the thinker's (two rows); the
    measured line's points are drawn (the image differs from the one without them)."""
    talker = {
        "rows": [
            {"keep_ratio": 1.0, "talker_prompt_length_vs_full": 1.0, "total_vs_full": 1.0},
            {"keep_ratio": 0.25, "talker_prompt_length_vs_full": 0.263, "total_vs_full": 0.457},
        ]
    }
    alone = plot_benchmark({"environment": {}, "talker": talker})
    assert alone.size == (1144, 484)
    empty = plot_benchmark({"environment": {}, "talker": {"rows": []}})
    assert alone.tobytes() != empty.tobytes()
    both = plot_benchmark({"environment": {}, "talker": talker, "prefill": {"rows": []}})
    assert both.size == (1144, 484 + 448)
