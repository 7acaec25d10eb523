"""Real-size FLOPs of the Qwen3-Omni-30B-A3B MoE thinker on the meta device: the counter against a real forward of
the tiny Qwen3 model, the mixture-of-experts counted per executed expert (top-k of the router), the real config, the
benchmark's `--backbone qwen3_omni_moe` and the saved results."""

import json
from pathlib import Path

import pytest
import torch
from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import Qwen3OmniMoeThinkerTextExperts

from omnisift_hf.models.qwen3_omni_moe import OmniSiftQwen3OmniForConditionalGeneration
from omnisift_hf.testing_utils import tiny_qwen3_config, tiny_qwen3_inputs
from omnisift_hf.tools.benchmark import main
from omnisift_hf.tools.profiling import (
    QWEN3_OMNI_THINKER,
    MetaQwen3PrefillFlops,
    clip_segments,
    count_prefill_flops,
    flop_counter,
    measure_clip_layouts,
    qwen3_omni_config,
)
from omnisift_hf.tools.profiling import _executed_experts as executed_experts

RESULTS = Path(__file__).resolve().parents[1] / "examples" / "results"
STAGES = ("vision_encoder", "audio_encoder", "selector", "decoder", "lm_head")


def _tiny_counted_config():
    # 3 decoder layers (the first 2 take deepstack features), 4 vision blocks with deepstack mergers after blocks 1 and
    # 3, 3 audio layers: layers to multiply and mergers to multiply.
    base = tiny_qwen3_config()
    return tiny_qwen3_config(
        vision_config={**base.vision_config.to_dict(), "depth": 4, "deepstack_visual_indexes": [1, 3]},
        audio_config={**base.audio_config.to_dict(), "encoder_layers": 3},
    )


def _expert_flops(tokens: int, config) -> int:
    """Matrix-product FLOPs of the experts of one MoE layer when each of `tokens` tokens runs `num_experts_per_tok`
    SwiGLU experts: gate + up (H -> 2I) and down (I -> H), 2 FLOPs per multiply-add."""
    text = config.text_config
    return tokens * text.num_experts_per_tok * 2 * 3 * text.hidden_size * text.moe_intermediate_size


@pytest.mark.slow
def test_meta_device_stages_match_a_real_forward():
    # Layout from the tiny CPU run (Qwen3 processor layout: 16-pixel patches, 13 audio tokens/s interleaved by
    # timestamp); then every stage on meta tensors, one layer / merger of each kind multiplied (and every layer,
    # `exact=True`), equals FlopCounterMode on a real forward of the same model with its real routing (eager experts:
    # FlopCounterMode does not see the `grouped_mm` kernel). 9 s: 9 slices of 8 x 12 patches, 900 mel frames = two
    # audio attention windows of 800.
    config = _tiny_counted_config()
    torch.manual_seed(0)
    model = OmniSiftQwen3OmniForConditionalGeneration(config).eval()
    model.set_experts_implementation("eager")
    inputs = tiny_qwen3_inputs([clip_segments(9, (8, 12))])
    scaled, exact = MetaQwen3PrefillFlops(config), MetaQwen3PrefillFlops(config, exact=True)
    assert scaled._decoder_layers == {0: 3} and scaled._vision_blocks == {0: 4} and scaled._deepstack_mergers == {0: 2}
    layouts = measure_clip_layouts(9, [1.0, 0.25], patches=(8, 12), backbone="qwen3_omni_moe")
    assert layouts[0].mel_frames == 900 and layouts[0].num_audio_tokens == 9 * 13
    assert layouts[1].kept_length < layouts[0].kept_length and layouts[1].selector_video_shape is not None
    for layout in layouts:
        real = count_prefill_flops(model, inputs, keep_ratio=layout.keep_ratio)
        assert scaled.count(layout) == real
        assert exact.count(layout) == real
        assert all(real[stage] > 0 for stage in STAGES if stage != "selector" or layout.keep_ratio < 1)


@pytest.mark.slow
def test_real_forward_runs_top_k_experts_per_token_whatever_the_routing():
    # The experts of each MoE layer of a real forward cost exactly `num_experts_per_tok` experts per decoder token,
    # not `num_experts`: counted per module from the real forward (its real, uneven routing) and by hand.
    config = tiny_qwen3_config()
    torch.manual_seed(0)
    model = OmniSiftQwen3OmniForConditionalGeneration(config).eval()
    model.set_experts_implementation("eager")
    inputs = tiny_qwen3_inputs([clip_segments(4, (8, 12))])
    for keep_ratio in (1.0, 0.25):
        with torch.no_grad(), flop_counter() as counter:
            out = model(**inputs, keep_ratio=keep_ratio)
        tokens = out.logits.shape[1]
        counts = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
        experts = {name: flops for name, flops in counts.items() if name.endswith(".mlp.experts")}
        assert len(experts) == config.text_config.num_hidden_layers
        assert set(experts.values()) == {_expert_flops(tokens, config)}
        routers = [flops for name, flops in counts.items() if name.endswith(".mlp.gate")]
        assert routers == [2 * tokens * config.text_config.hidden_size * config.text_config.num_experts] * 3


@pytest.mark.parametrize("routing", ["one expert pair", "spread", "random"])
def test_executed_experts_cost_what_the_eager_experts_cost(routing):
    # A known routing (every token to experts 0 and 1; tokens spread over all experts; random): the eager experts'
    # FLOPs on real tensors == `_executed_experts` on meta tensors == the hand count, in every case.
    config = tiny_qwen3_config()
    config.text_config._experts_implementation = "eager"
    torch.manual_seed(0)
    experts = Qwen3OmniMoeThinkerTextExperts(config.text_config)
    torch.nn.init.normal_(experts.gate_up_proj)
    torch.nn.init.normal_(experts.down_proj)
    tokens, top_k, num_experts = 37, config.text_config.num_experts_per_tok, config.text_config.num_experts
    if routing == "one expert pair":
        index = torch.tensor([[0, 1]]).expand(tokens, top_k)
    elif routing == "spread":
        index = (torch.arange(tokens * top_k) % num_experts).view(tokens, top_k)
    else:
        index = torch.stack([torch.randperm(num_experts)[:top_k] for _ in range(tokens)])
    hidden = torch.randn(tokens, config.text_config.hidden_size)
    weights = torch.rand(tokens, top_k)
    with torch.no_grad(), flop_counter() as real:
        expected = experts(hidden, index, weights)
    with torch.no_grad(), flop_counter() as meta:
        with torch.device("meta"):
            meta_experts = Qwen3OmniMoeThinkerTextExperts(config.text_config)
        out = executed_experts(meta_experts, hidden.to("meta"), index.to("meta"), weights.to("meta"))
    assert out.shape == expected.shape
    assert torch.count_nonzero(expected.abs().sum(-1)) == tokens  # every token went through its experts
    assert real.get_total_flops() == meta.get_total_flops() == _expert_flops(tokens, config)


def test_real_config_sizes():
    config = qwen3_omni_config()
    text, vision, audio = config.text_config, config.vision_config, config.audio_config
    assert (text.hidden_size, text.num_hidden_layers, text.vocab_size) == (2048, 48, 152064)
    assert (text.num_attention_heads, text.num_key_value_heads, text.head_dim) == (32, 4, 128)
    assert (text.num_experts, text.num_experts_per_tok, text.moe_intermediate_size) == (128, 8, 768)
    assert text.decoder_sparse_step == 1 and text.mlp_only_layers == []
    assert (vision.depth, vision.hidden_size, vision.intermediate_size, vision.num_heads) == (27, 1152, 4304, 16)
    assert (vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size) == (16, 2, 2)
    assert list(vision.deepstack_visual_indexes) == [8, 16, 24] and vision.out_hidden_size == 2048
    assert (audio.encoder_layers, audio.d_model, audio.encoder_ffn_dim, audio.output_dim) == (32, 1280, 5120, 2048)
    assert config.position_id_per_seconds == 13 and not config.tie_word_embeddings
    assert QWEN3_OMNI_THINKER["text"]["num_experts_per_tok"] == 8
    counter = MetaQwen3PrefillFlops(config)
    # Every layer is a MoE layer, so one is counted and multiplied; the selector reads the 2048-wide text states.
    assert counter._decoder_layers == {0: 48} and counter._vision_blocks == {0: 27}
    assert counter._deepstack_mergers == {0: 3} and counter._audio_layers == {0: 32}
    assert counter.model.compressor.a_proj.in_features == counter.model.compressor.v_proj.in_features == 2048


def test_real_size_decoder_matches_a_hand_count():
    # The 48-layer decoder at length L: q / k / v / o projections, dense attention (QK^T and AV), the router and
    # 8 of the 128 experts per token; lm_head on every position. Far below what running all experts would cost.
    config = qwen3_omni_config()
    text = config.text_config
    hidden, heads, kv, head_dim = text.hidden_size, text.num_attention_heads, text.num_key_value_heads, text.head_dim
    counter = MetaQwen3PrefillFlops(config)
    for length in (100, 1237):
        attention = 2 * length * hidden * (2 * heads * head_dim + 2 * kv * head_dim)
        attention += 4 * heads * length * length * head_dim
        router = 2 * length * hidden * text.num_experts
        layer = attention + router + _expert_flops(length, config)
        flops = counter.decoder(length)
        assert flops == {"decoder": 48 * layer, "lm_head": 2 * length * hidden * text.vocab_size}
        every_expert = 48 * (attention + router + _expert_flops(length, config) * text.num_experts // 8)
        assert flops["decoder"] * 5 < every_expert


def test_benchmark_backbone_option(tmp_path):
    path = tmp_path / "qwen3.json"
    assert main(["--backbone", "qwen3_omni_moe", "--quick", "--no-progress", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    assert set(report) == {"environment", "flops"}
    section = report["flops"]
    assert section["backbone"] == "qwen3_omni_moe" and "8 of 128 experts" in section["method"]
    rows = {row["keep_ratio"]: row for row in section["rows"]}
    assert set(rows) == {1.0, 0.35, 0.25}
    for keep_ratio, row in rows.items():
        assert row["model"] == "Qwen3-Omni-30B-A3B" and row["seconds"] == 4
        flops, layout = row["flops"], row["layout"]
        assert flops["total"] == sum(flops[stage] for stage in STAGES)
        assert layout["num_audio_tokens"] == 4 * 13 and layout["video_grid_thw"] == [4, 8, 8]
        assert abs(layout["retention"] - keep_ratio) < 0.05
    assert rows[0.25]["total_flops_vs_full"] < rows[0.35]["total_flops_vs_full"] < rows[1.0]["total_flops_vs_full"]
    with pytest.raises(ValueError, match="no section prefill"):
        main(["--backbone", "qwen3_omni_moe", "--sections", "flops", "prefill", "--no-progress"])


@pytest.mark.slow
def test_saved_results_are_reproduced():
    # examples/results/flops_qwen3_omni.json: its 10 s rows are what the counter gives now; every saved row adds up.
    report = json.loads((RESULTS / "flops_qwen3_omni.json").read_text())
    rows = report["flops"]["rows"]
    assert {(row["seconds"], row["keep_ratio"]) for row in rows} == {
        (seconds, keep) for seconds in (10, 20, 30, 60) for keep in (1.0, 0.35, 0.25)
    }
    for row in rows:
        assert row["flops"]["total"] == sum(row["flops"][stage] for stage in STAGES)
    counter = MetaQwen3PrefillFlops(qwen3_omni_config())
    saved = {row["keep_ratio"]: row for row in rows if row["seconds"] == 10}
    for layout in measure_clip_layouts(10, [1.0, 0.35, 0.25], backbone="qwen3_omni_moe"):
        assert layout.to_dict() == {
            **saved[layout.keep_ratio]["layout"],
            "video_grid_thw": tuple(saved[layout.keep_ratio]["layout"]["video_grid_thw"]),
            "selector_audio_shape": layout.selector_audio_shape,
            "selector_video_shape": layout.selector_video_shape,
        }
        assert counter.count(layout) == saved[layout.keep_ratio]["flops"]
    assert (RESULTS / "flops_qwen3_omni.md").read_text().count("| Qwen3-Omni-30B-A3B |") == 12
