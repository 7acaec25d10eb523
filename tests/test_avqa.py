"""AVQA: the synthetic audio-visual QA generator and its evaluation (`omnisift_hf.avqa`)."""

import dataclasses
import json

import av
import numpy as np
import pytest
import torch

from omnisift_hf.media import load_audio, load_video
from omnisift_hf.testing_utils import tiny_model, tiny_processor, tiny_tokenizer
from omnisift_hf.tools.avqa import (
    ANSWERS,
    AVQA_VIDEO_SAMPLING,
    BASELINES,
    COLORS,
    ORACLES,
    SPLITS,
    TASKS,
    _summarise,
    compare_runs,
    compare_runs_markdown,
    evaluate_avqa,
    event_token_masks,
    generate_avqa,
    load_avqa_split,
    markdown_report,
    plot_avqa,
    selector_auroc,
)

COUNTS = {"train": 2, "validation": 1, "test": 1}


def decoded(path) -> tuple[list[np.ndarray], np.ndarray]:
    """The clip's decoded frames (yuv420p planes as one array each) and its audio samples."""
    with av.open(str(path)) as container:
        frames = [frame.to_ndarray() for frame in container.decode(video=0)]
    with av.open(str(path)) as container:
        audio = np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)])
    return frames, audio


def assert_same_clip(a, b) -> None:
    """Same bytes; or, when x264 made another rate decision (seen in about 1 of 20 test runs on a loaded 2-core
    machine, in fresh worker processes too: one frame's packet a few bytes longer, cause not found), the same audio
    samples (FLAC is lossless), the same number of frames, and frames within 8 of 255 levels of each other."""
    if a.read_bytes() == b.read_bytes():
        return
    (frames_a, audio_a), (frames_b, audio_b) = decoded(a), decoded(b)
    assert np.array_equal(audio_a, audio_b), f"{a.name}: audio differs"
    assert len(frames_a) == len(frames_b), f"{a.name}: {len(frames_a)} vs {len(frames_b)} frames"
    worst = max(int(np.abs(x.astype(int) - y.astype(int)).max()) for x, y in zip(frames_a, frames_b, strict=True))
    assert worst <= 8, f"{a.name}: decoded frames differ by up to {worst} levels"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Written by worker processes: `test_deterministic_given_the_seed` compares it with a serial run (serial ==
    parallel) and `test_parallel_writing_gives_the_same_files` with another parallel run."""
    directory = tmp_path_factory.mktemp("avqa")
    generate_avqa(directory, counts=COUNTS, seed=3, num_workers=2)
    return directory


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


def test_deterministic_given_the_seed(dataset, tmp_path):
    generate_avqa(tmp_path, counts={"test": 1}, seed=3)
    assert (tmp_path / "test.jsonl").read_text() == (dataset / "test.jsonl").read_text()
    assert (tmp_path / "test.meta.jsonl").read_text() == (dataset / "test.meta.jsonl").read_text()
    for clip in (tmp_path / "clips" / "test").iterdir():
        assert_same_clip(clip, dataset / "clips" / "test" / clip.name)
    other = tmp_path / "other-seed"
    generate_avqa(other, counts={"test": 1}, seed=4, tasks=("color",))
    first = json.loads((other / "test.meta.jsonl").read_text().splitlines()[0])
    ours = json.loads((dataset / "test.meta.jsonl").read_text().splitlines()[0])
    assert first["squares"] != ours["squares"]


@pytest.mark.slow
def test_parallel_writing_gives_the_same_files(dataset, tmp_path):
    generate_avqa(tmp_path, counts={"train": 2}, seed=3, num_workers=2)
    assert (tmp_path / "train.jsonl").read_text() == (dataset / "train.jsonl").read_text()
    assert (tmp_path / "train.meta.jsonl").read_text() == (dataset / "train.meta.jsonl").read_text()
    clips = sorted((dataset / "clips" / "train").iterdir())
    assert [clip.name for clip in clips] == sorted(clip.name for clip in (tmp_path / "clips" / "train").iterdir())
    for clip in clips:
        assert_same_clip(clip, tmp_path / "clips" / "train" / clip.name)
    with pytest.raises(ValueError, match="num_workers=0"):
        generate_avqa(tmp_path, counts=1, num_workers=0)


def test_splits_are_disjoint_and_load_as_omniqa_datasets(dataset):
    seen_ids, seen_events = set(), set()
    for split in SPLITS:
        examples, metas = load_avqa_split(dataset, split)
        assert len(examples) == COUNTS[split] * len(TASKS)
        assert sorted({meta["task"] for meta in metas}) == sorted(TASKS)
        for example, meta in zip(examples, metas, strict=True):
            assert example.answer == meta["answer"]
            assert example.messages[0]["content"][0]["video"].endswith(meta["video"])
            events = json.dumps([meta["squares"], meta["beeps"]], sort_keys=True)
            assert meta["id"] not in seen_ids and events not in seen_events
            seen_ids.add(meta["id"])
            seen_events.add(events)


def test_answers_are_single_tokens():
    tokenizer = tiny_tokenizer()
    for task, answers in ANSWERS.items():
        for answer in answers:
            assert len(tokenizer(answer, add_special_tokens=False)["input_ids"]) == 1, (task, answer)
        # Different candidates of one task are different tokens.
        ids = [tokenizer(answer, add_special_tokens=False)["input_ids"][0] for answer in answers]
        assert len(set(ids)) == len(ids)


def test_answers_match_the_events(dataset):
    for split in SPLITS:
        _, metas = load_avqa_split(dataset, split)
        for meta in metas:
            assert meta["answer"] in ANSWERS[meta["task"]]
            squares, beeps = meta["squares"], meta["beeps"]
            if meta["task"] == "color":
                assert meta["answer"] == f" {squares[0]['color']}"
            elif meta["task"] == "pitch":
                assert meta["answer"] == str(beeps[0]["pitch"])
            elif meta["task"] == "count":
                assert meta["answer"] == str(len(beeps))
            elif meta["task"] == "order":
                assert meta["answer"] == (" beep" if beeps[0]["start"] < squares[0]["start"] else " square")
            else:
                (beep,) = beeps
                during = [s for s in squares if s["start"] <= beep["start"] and beep["end"] <= s["end"]]
                assert len(squares) == 2 and squares[0]["color"] != squares[1]["color"]
                assert squares[0]["end"] <= squares[1]["start"]
                assert [f" {s['color']}" for s in during] == [meta["answer"]]


def test_events_appear_where_expected_in_the_decoded_media(dataset):
    _, metas = load_avqa_split(dataset, "test")
    meta = next(m for m in metas if m["task"] == "cross")
    clip = dataset / meta["video"]
    video = load_video(clip, AVQA_VIDEO_SAMPLING)
    assert tuple(video.frames.shape[1:]) == (3, 112, 112)  # not upscaled: 16 tokens per temporal slice
    total = round(meta["seconds"] * meta["fps"])
    times = np.round(np.linspace(0, total - 1, video.frames.shape[0])) / meta["fps"]
    shown = 0
    for frame, time in zip(video.frames, times, strict=True):
        visible = [s for s in meta["squares"] if s["start"] <= time < s["end"]]
        for square in meta["squares"]:
            cy, cx = square["y"] + square["side"] // 2, square["x"] + square["side"] // 2
            pixel = frame[:, cy, cx].numpy()
            expected = COLORS[square["color"]] if square in visible else (128, 128, 128)
            if square in visible or not visible:
                assert np.abs(pixel - np.array(expected)).max() < 40, (time, square, pixel)
        shown += bool(visible)
    assert shown >= 2  # each square is caught by at least one sampled frame

    # The token masks agree with the pixels: slice s = frames 2s, 2s+1; token (r, c) = a 28 x 28 patch.
    square_mask, _ = event_token_masks(meta, (video.frames.shape[0] // 2, 8, 8), 150)
    square_mask = square_mask.reshape(-1, 4, 4)
    coloured = (video.frames - 128).abs().amax(1) > 40  # (T, 112, 112)
    share = coloured.reshape(-1, 2, 4, 28, 4, 28).float().mean((3, 5)).amax(1)  # (slices, 4, 4), best frame
    assert square_mask.any()
    share = share.numpy()
    assert square_mask[share > 0.35].all() and not square_mask[share < 0.15].any()  # edges: codec and resize blur

    audio = load_audio(clip)
    assert audio.shape[0] == round(meta["seconds"] * 16000)
    loud = np.zeros(audio.shape[0], dtype=bool)
    for beep in meta["beeps"]:
        start, end = round(beep["start"] * 16000), round(beep["end"] * 16000)
        assert np.sqrt(np.mean(audio[start + 320 : end - 320] ** 2)) > 0.3
        loud[max(0, start - 320) : end + 320] = True
    assert np.sqrt(np.mean(audio[~loud] ** 2)) < 0.02


@pytest.fixture(scope="module")
def report(dataset, processor):
    examples, metas = load_avqa_split(dataset, "test")
    keep = [i for i, meta in enumerate(metas) if meta["task"] in ("cross", "count", "order")]
    return evaluate_avqa(
        tiny_model(),
        processor,
        [examples[i] for i in keep],
        [metas[i] for i in keep],
        keep_ratios=(1.0, 0.25),
        batch_size=3,
        bootstrap=200,
    )


def test_evaluation_report_is_well_formed(report):
    names = ["omnisift@1", "omnisift@0.25", "random@0.25", "uniform@0.25", "stvp_random_audio@0.25"]
    names += ["oracle_audio@0.25", "no_audio"]
    assert list(report["conditions"]) == names
    assert report["tasks"] == ["count", "order", "cross"]
    for entry in report["conditions"].values():
        for key in ("accuracy", "top1", "retention", "square_recall", "beep_recall"):
            assert 0.0 <= entry[key] <= 1.0
        assert sorted(entry["tasks"]) == sorted(report["tasks"]) and all(t["n"] == 1 for t in entry["tasks"].values())
    for baseline in BASELINES:
        paired = report["paired"][f"omnisift-{baseline}@0.25"]
        for result in paired.values():
            low, high = result["ci95"]
            assert low <= result["difference"] <= high
    json.dumps(report)
    table = markdown_report(report)
    assert "stvp_random_audio" in table and "no_audio" in table
    assert plot_avqa(report).size[0] > 100


def test_baselines_keep_omnisifts_token_counts(report):
    clips = report["per_clip"]
    assert report["conditions"]["omnisift@0.25"]["retention"] < 0.35
    for baseline in (*BASELINES, *ORACLES):
        for ours, theirs in zip(clips["omnisift@0.25"], clips[f"{baseline}@0.25"], strict=True):
            assert ours["id"] == theirs["id"]
            assert ours["kept_video"] == theirs["kept_video"] and ours["kept_audio"] == theirs["kept_audio"]
    no_audio = report["conditions"]["no_audio"]
    assert no_audio["audio_retention"] == 0.0 and no_audio["video_retention"] == 1.0


def test_event_recall_is_complete_without_compression(report):
    full = report["conditions"]["omnisift@1"]
    assert full["retention"] == full["square_recall"] == full["beep_recall"] == 1.0
    for row in report["per_clip"]["omnisift@1"]:
        assert row["square_tokens"] > 0 and row["beep_tokens"] > 0
        assert row["video_tokens"] == 6 * 16 and row["audio_tokens"] == 150


def test_baselines_choose_other_tokens(dataset, processor):
    """Random dropping at the same per-frame counts picks different video tokens than STVP (same model, same clip)."""
    from omnisift_hf.tools.avqa import baseline_selector
    from omnisift_hf.training import OmniQADataCollator

    examples, _ = load_avqa_split(dataset, "test")
    batch = OmniQADataCollator(processor, video_sampling=AVQA_VIDEO_SAMPLING)(examples[:1])
    batch.pop("labels")
    model = tiny_model()
    kept = {}
    with torch.no_grad():
        for method in ("omnisift", "random", "stvp_random_audio"):
            selector = baseline_selector(model, method, seed=0)
            kept[method] = model(**batch, keep_ratio=0.25, token_selector=selector).kept_token_index
    assert "select_tokens" not in vars(model)  # the instance is not patched
    assert kept["omnisift"].shape == kept["random"].shape == kept["stvp_random_audio"].shape
    assert not torch.equal(kept["omnisift"], kept["random"])


def test_avqa_model_trains_on_a_batch(dataset, processor):
    from omnisift_hf.tools.avqa import avqa_model
    from omnisift_hf.training import OmniQADataCollator

    examples, _ = load_avqa_split(dataset, "train")
    model = avqa_model(hidden_size=64, num_layers=1).train()
    collator = OmniQADataCollator(processor, keep_ratio=0.25, video_sampling=AVQA_VIDEO_SAMPLING)
    output = model(**collator(examples[:2]))
    output.loss.backward()
    assert torch.isfinite(output.loss)
    assert model.compressor.a_proj.weight.grad is not None  # the selector gets a gradient when audio is dropped


def test_baselines_match_counts_per_frame_and_window(dataset, processor):
    from omnisift_hf.tools.avqa import _rechoose
    from omnisift_hf.training import OmniQADataCollator

    examples, _ = load_avqa_split(dataset, "test")
    batch = OmniQADataCollator(processor, video_sampling=AVQA_VIDEO_SAMPLING)(examples[:2])
    batch.pop("labels")
    model = tiny_model()
    selections = []

    def record(*args):
        selections.append(model.select_tokens(*args))
        return selections[-1]

    with torch.no_grad():
        model(**batch, keep_ratio=0.35, token_selector=record)
    (selection,) = selections
    layout, frames, windows = selection.layout, selection.layout.frame_size.shape[0], selection.layout.num_pairs
    windowed = layout.window_of_audio >= 0
    frame_sample = layout.pair_sample[layout.pair_of_frame]

    def per_frame(keep):
        return torch.bincount(layout.frame_of_video[keep], minlength=frames)

    def per_window(keep):
        return torch.bincount(layout.window_of_audio[keep & windowed], minlength=windows)

    generator = torch.Generator().manual_seed(0)
    for method in BASELINES:
        video_keep, audio_keep = _rechoose(method, layout, selection.video_keep, selection.audio_keep, generator)
        assert torch.equal(per_window(audio_keep), per_window(selection.audio_keep)), method
        if method == "uniform":  # whole frames: the same count per sample, not per frame
            ours = torch.zeros(2, dtype=torch.long).index_add_(0, frame_sample, per_frame(selection.video_keep))
            theirs = torch.zeros(2, dtype=torch.long).index_add_(0, frame_sample, per_frame(video_keep))
            assert torch.equal(ours, theirs)
            assert not torch.equal(per_frame(video_keep), per_frame(selection.video_keep))
        else:
            assert torch.equal(per_frame(video_keep), per_frame(selection.video_keep)), method
        if method == "stvp_random_audio":
            assert torch.equal(video_keep, selection.video_keep)


def gate_gradients_script_and_pitch_clip(dataset):
    """examples/avqa_gate_gradients.py as a module (examples are not a package) and the first pitch training clip."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "avqa_gate_gradients.py"
    spec = importlib.util.spec_from_file_location("avqa_gate_gradients", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    examples, metas = load_avqa_split(dataset, "train")
    example, meta = next((e, m) for e, m in zip(examples, metas, strict=True) if m["task"] == "pitch")
    return script, example, meta


def test_gate_gradients_script_matches_finite_differences(dataset, processor):
    """examples/avqa_gate_gradients.py reads the gate gradient of every kept audio token; each equals the change of
    the loss when that token alone is scaled (central differences), and the model instance is left as it was."""
    from omnisift_hf.tools.avqa import avqa_model
    from omnisift_hf.training import OmniQADataCollator

    script, example, meta = gate_gradients_script_and_pitch_clip(dataset)
    model = avqa_model(hidden_size=64, num_layers=2).double().eval()
    collator = OmniQADataCollator(processor, keep_ratio=0.25, video_sampling=AVQA_VIDEO_SAMPLING)
    on_beep, elsewhere = script.gate_gradients(model, collator, example, meta)
    assert "select_tokens" not in vars(model) and all(p.grad is None for p in model.parameters())
    assert on_beep and elsewhere  # this clip keeps part of its beep and some other audio

    batch = collator([example])
    batch = {k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in batch.items()}

    def loss_with_gate_offset(position: int, offset: float) -> float:
        def shifted(*args, **kwargs):
            selection = model.select_tokens(*args, **kwargs)
            gate = selection.audio_gate
            kept = torch.nonzero(gate.detach() > 0.5).squeeze(1)
            bump = offset * torch.nn.functional.one_hot(kept[position], gate.shape[0]).to(gate.dtype)
            return dataclasses.replace(selection, audio_gate=gate + bump)

        with torch.no_grad():
            logits = model(**batch, token_selector=shifted).logits  # float64; the model's own loss is float32
        # Batch of one, no padding: the answer and <|im_end|> end the kept sequence, predicted one position earlier.
        answer = batch["labels"][0][batch["labels"][0] != -100]
        return torch.nn.functional.cross_entropy(logits[0, -len(answer) - 1 : -1], answer).item()

    # The script lists kept tokens in row order, beep tokens first; compare through the row-ordered list.
    captured = {}

    def keep(*args, **kwargs):
        selection = model.select_tokens(*args, **kwargs)
        selection.audio_gate.retain_grad()
        captured.update(gate=selection.audio_gate)
        return selection

    model(**batch, token_selector=keep).loss.backward()
    gate = captured["gate"]
    kept_grads = gate.grad[gate.detach() > 0.5]
    assert sorted(kept_grads.tolist()) == pytest.approx(sorted(on_beep + elsewhere), rel=1e-5, abs=1e-9)
    # Parts of the model run in float32 even in a float64 model: use the token with the largest gradient and a step
    # large enough to rise above rounding.
    position, eps = int(kept_grads.abs().argmax()), 1e-2
    numeric = (loss_with_gate_offset(position, eps) - loss_with_gate_offset(position, -eps)) / (2 * eps)
    assert numeric == pytest.approx(kept_grads[position].item(), rel=2e-2)


def test_gate_gradient_vanishes_with_one_decoder_layer(dataset, processor):
    """A pre-norm decoder sees a media token only through RMSNorm(token) in its first layer: scaling the token (what
    the gate does) changes nothing there, and with a single layer nothing downstream reads the token's residual. The
    straight-through gradient then vanishes up to RMSNorm's epsilon: the selector needs >= 2 decoder layers to
    learn."""
    from omnisift_hf.tools.avqa import avqa_model
    from omnisift_hf.training import OmniQADataCollator

    script, example, meta = gate_gradients_script_and_pitch_clip(dataset)
    collator = OmniQADataCollator(processor, keep_ratio=0.25, video_sampling=AVQA_VIDEO_SAMPLING)
    largest = {}
    for layers in (1, 2):
        on_beep, elsewhere = script.gate_gradients(
            avqa_model(hidden_size=64, num_layers=layers), collator, example, meta
        )
        largest[layers] = max(abs(g) for g in on_beep + elsewhere)
    assert largest[1] < 1e-2 * largest[2]  # measured: 7e-8 against 4e-5 (float32 rounding against a real gradient)


@pytest.mark.parametrize("layers", [1, 2])
def test_decision_gradients_reach_dropped_tokens_only_with_the_attention_policy(dataset, processor, layers):
    """examples/avqa_gate_gradients.py --selector-estimator: with STE every dropped token's logit gradient is exactly
    0; with the attention policy dropped tokens get one, also with a single decoder layer (where STE's gradient on kept
    tokens vanishes, see above: the policy acts on attention weights, which RMSNorm does not erase)."""
    from omnisift_hf.tools.avqa import avqa_model
    from omnisift_hf.training import OmniQADataCollator

    script, example, meta = gate_gradients_script_and_pitch_clip(dataset)
    collator = OmniQADataCollator(processor, keep_ratio=0.25, video_sampling=AVQA_VIDEO_SAMPLING)
    results = {}
    for estimator in ("ste", "attention_policy"):
        model = avqa_model(hidden_size=64, num_layers=layers).eval()
        model.config.selector_estimator = estimator
        results[estimator] = script.decision_gradients(model, collator, example, meta)
        assert not model.training and all(p.grad is None for p in model.parameters())
    dropped = results["ste"]["dropped beep"] + results["ste"]["dropped other"]
    assert dropped and all(g == 0 for g in dropped)
    policy_dropped = results["attention_policy"]["dropped beep"] + results["attention_policy"]["dropped other"]
    assert max(abs(g) for g in policy_dropped) > 1e-6


def test_selector_auroc_matches_pairwise_counts():
    """The rank formula equals the brute-force count over every (event, other) pair, ties counting 1/2."""
    rng = np.random.default_rng(0)
    cases = [
        ([0.3, 0.3, 0.1, 0.9, 0.3, 0.5], [True, False, False, True, False, True]),
        ([1.0, 1.0, 1.0, 1.0], [True, False, True, False]),  # all tied: 0.5
        ([2.0, 1.0, 0.0], [True, False, False]),  # perfect
        ([2.0, 1.0, 0.0], [False, False, True]),  # reversed
    ]
    for _ in range(20):
        scores = rng.integers(0, 4, size=15).astype(float)  # many ties
        labels = rng.random(15) < 0.4
        labels[:2] = [True, False]
        cases.append((scores.tolist(), labels.tolist()))
    for scores, labels in cases:
        pos = [s for s, y in zip(scores, labels, strict=True) if y]
        neg = [s for s, y in zip(scores, labels, strict=True) if not y]
        pairs = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
        assert selector_auroc(scores, labels) == pytest.approx(pairs / (len(pos) * len(neg)), abs=1e-12)
    assert selector_auroc([1.0, 1.0, 1.0, 1.0], [True, False, True, False]) == 0.5
    assert selector_auroc([2.0, 1.0, 0.0], [True, False, False]) == 1.0
    assert np.isnan(selector_auroc([0.1, 0.2], [True, True])) and np.isnan(selector_auroc([0.1], [False]))
    assert np.isnan(selector_auroc([], []))


def test_report_has_the_oracle_and_the_selector_auroc(report):
    auroc = report["selector_auroc"]
    assert list(auroc) == ["omnisift@0.25"]  # keep 1.0 scores nothing
    for task in ["all", *report["tasks"]]:
        cell = auroc["omnisift@0.25"][task]
        assert set(cell) == {"auroc", "clip_mean", "window_auroc", "clips", "event_tokens", "other_tokens"}
        assert cell["clips"] >= 1 and cell["event_tokens"] > 0 and cell["other_tokens"] > 0
        assert 0.0 <= cell["auroc"] <= 1.0 and 0.0 <= cell["clip_mean"] <= 1.0
        assert cell["window_auroc"] is None or 0.0 <= cell["window_auroc"] <= 1.0
    assert auroc["omnisift@0.25"]["all"]["clips"] == sum(auroc["omnisift@0.25"][t]["clips"] for t in report["tasks"])
    oracle, ours = report["conditions"]["oracle_audio@0.25"], report["conditions"]["omnisift@0.25"]
    assert oracle["beep_recall"] >= ours["beep_recall"]
    assert oracle["square_recall"] == ours["square_recall"] and oracle["retention"] == ours["retention"]
    assert "omnisift-oracle_audio@0.25" in report["paired"]
    json.dumps(report)
    table = markdown_report(report)
    assert "oracle_audio" in table and "Selector AUROC" in table and "| omnisift@0.25 |" in table
    # A report without the diagnostics (older report.json files) still renders; undefined AUROCs read n/a.
    older = {key: value for key, value in report.items() if key != "selector_auroc"}
    assert "Selector AUROC" not in markdown_report(older)
    undefined = json.loads(json.dumps(report))
    undefined["selector_auroc"]["omnisift@0.25"]["count"].update(auroc=None, clip_mean=None, window_auroc=None)
    assert "n/a" in markdown_report(undefined)


def test_report_auroc_uses_the_selectors_own_scores(dataset, processor):
    """The report's AUROC equals one computed from the selection the model makes on the same clips."""
    from omnisift_hf.training import OmniQADataCollator

    examples, metas = load_avqa_split(dataset, "test")
    examples, metas = examples[:2], metas[:2]
    model = tiny_model()
    report = evaluate_avqa(
        model, processor, examples, metas, keep_ratios=(0.35,), methods=("omnisift",), no_audio=False, bootstrap=10
    )
    batch = OmniQADataCollator(processor, video_sampling=AVQA_VIDEO_SAMPLING)(examples)
    batch.pop("labels")
    selections = []

    def record(*args):
        selections.append(model.select_tokens(*args))
        return selections[-1]

    with torch.no_grad():
        model(**batch, keep_ratio=0.35, token_selector=record)
    (selection,) = selections
    audio_id = model.config.audio_token_id
    events = torch.zeros_like(batch["input_ids"], dtype=torch.bool)
    for b, meta in enumerate(metas):
        positions = torch.nonzero(batch["input_ids"][b] == audio_id).squeeze(1)
        _, beep = event_token_masks(meta, batch["video_grid_thw"][b].tolist(), positions.shape[0])
        events[b, positions] = torch.from_numpy(beep)
    scored = selection.layout.audio_index[selection.gated_audio]
    labels = events.reshape(-1)[scored].numpy()
    logits = selection.audio_logits.float().numpy()
    assert labels.any() and not labels.all()
    result = report["selector_auroc"]["omnisift@0.35"]["all"]
    assert result["auroc"] == pytest.approx(selector_auroc(logits, labels))
    assert result["event_tokens"] == labels.sum() and result["other_tokens"] == (~labels).sum()
    # Within-window AUROC: brute force over the (event, other) pairs of one window.
    window = selection.layout.window_of_audio[selection.gated_audio].numpy()
    wins = ties = pairs = 0
    for i in np.flatnonzero(labels):
        for j in np.flatnonzero(~labels & (window == window[i])):
            wins, ties, pairs = wins + (logits[i] > logits[j]), ties + (logits[i] == logits[j]), pairs + 1
    assert pairs > 0 and result["window_auroc"] == pytest.approx((wins + ties / 2) / pairs)


def test_oracle_keeps_omnisifts_counts_and_event_tokens_first(dataset, processor):
    """oracle_audio: STVP's video, OmniSIFT's kept audio count in every window, every beep token of a window whose
    count covers its beep tokens (otherwise only beep tokens), and the other tokens in the selector's order."""
    from omnisift_hf.tools.avqa import baseline_selector
    from omnisift_hf.training import OmniQADataCollator

    examples, metas = load_avqa_split(dataset, "test")
    batch = OmniQADataCollator(processor, video_sampling=AVQA_VIDEO_SAMPLING)(examples[:3])
    batch.pop("labels")
    model = tiny_model()
    audio_id = model.config.audio_token_id
    events = torch.zeros_like(batch["input_ids"], dtype=torch.bool)
    for b, meta in enumerate(metas[:3]):
        positions = torch.nonzero(batch["input_ids"][b] == audio_id).squeeze(1)
        _, beep = event_token_masks(meta, batch["video_grid_thw"][b].tolist(), positions.shape[0])
        events[b, positions] = torch.from_numpy(beep)
    with pytest.raises(ValueError, match="audio_events"):
        baseline_selector(model, "oracle_audio")
    with pytest.raises(ValueError, match="oracle_audio"):
        baseline_selector(model, "nonsense")

    for keep_ratio in (0.5, 0.25, 0.15):
        selections = []
        oracle = baseline_selector(model, "oracle_audio", audio_events=events)

        def record(*args, _oracle=oracle, _selections=selections):
            _selections.append((model.select_tokens(*args), _oracle(*args)))
            return _selections[-1][1]

        with torch.no_grad():
            model(**batch, keep_ratio=keep_ratio, token_selector=record)
        ((ours, theirs),) = selections
        layout = ours.layout
        assert torch.equal(theirs.video_keep, ours.video_keep) and theirs.audio_gate is None
        is_event = events.reshape(-1)[layout.audio_index]
        windowed = layout.window_of_audio >= 0
        assert torch.equal(theirs.audio_keep[~windowed], ours.audio_keep[~windowed])
        scored = torch.zeros_like(is_event)
        scored[ours.gated_audio] = True
        assert torch.equal(theirs.audio_keep[~scored], ours.audio_keep[~scored])  # unscored windows: all kept
        logit = torch.full(is_event.shape, float("nan"))
        logit[ours.gated_audio] = ours.audio_logits
        covered = checked = 0
        for w in layout.window_of_audio[scored].unique().tolist():
            members = scored & (layout.window_of_audio == w)
            count = int(ours.audio_keep[members].sum())
            assert int(theirs.audio_keep[members].sum()) == count
            beeps = int(is_event[members].sum())
            kept_beeps = int((theirs.audio_keep & members & is_event).sum())
            assert kept_beeps == min(beeps, count)
            others_kept = theirs.audio_keep & members & ~is_event
            others_dropped = ~theirs.audio_keep & members & ~is_event
            if others_kept.any() and others_dropped.any():  # the rest by the selector's order
                assert logit[others_kept].min() >= logit[others_dropped].max()
            if beeps == 0:  # no event: exactly OmniSIFT's tokens
                assert torch.equal(theirs.audio_keep[members], ours.audio_keep[members])
            covered += beeps > 0 and count >= beeps
            checked += beeps > 0
        assert checked > 0
        if keep_ratio == 0.5:
            assert covered > 0  # some window's budget covers its beep: all of that beep is kept
        beep_kept = int((theirs.audio_keep & is_event & scored).sum())
        assert beep_kept >= int((ours.audio_keep & is_event & scored).sum())


# ---------------------------------------------------------------------------------------------------------------------
# Comparing training arms (several seeds each) on the same clips
# ---------------------------------------------------------------------------------------------------------------------
def _run_report(name: str, correct: dict[str, list[int]], tasks=("color", "pitch")) -> dict:
    """A per-clip report as `evaluate_avqa` writes it, from each condition's correctness on 4 clips per task."""
    conditions = [("omnisift", 1.0, {}), ("omnisift", 0.25, {}), ("stvp_random_audio", 0.25, {})]
    ids = [(task, f"test-{task}-{i:05d}") for task in tasks for i in range(4)]
    counts = dict.fromkeys(("video_tokens", "kept_video", "audio_tokens", "kept_audio"), 10)
    counts.update(dict.fromkeys(("square_tokens", "kept_square", "beep_tokens", "kept_beep"), 2))
    per_clip = {
        condition: [
            {"id": clip, "task": task, "correct": c, "top1": c, **counts}
            for (task, clip), c in zip(ids, correct[condition], strict=True)
        ]
        for condition in ("omnisift@1", "omnisift@0.25", "stvp_random_audio@0.25")
    }
    report = _summarise(per_clip, conditions, bootstrap=200, seed=0)
    report["settings"] = {"model": name}
    report["selector_auroc"] = {"omnisift@0.25": {"all": {"window_auroc": 0.75}}}
    return report


def test_compare_runs_averages_each_arms_runs_per_clip_before_the_paired_bootstrap():
    full = [1] * 8
    a0 = _run_report("a0", {"omnisift@1": full, "omnisift@0.25": [1, 0, 1, 0] * 2, "stvp_random_audio@0.25": [1] * 8})
    a1 = _run_report("a1", {"omnisift@1": full, "omnisift@0.25": [1, 1, 0, 0] * 2, "stvp_random_audio@0.25": [1] * 8})
    b0 = _run_report("b0", {"omnisift@1": [0] + full[1:], "omnisift@0.25": [1] * 8, "stvp_random_audio@0.25": [0] * 8})
    reference = _run_report("start", {"omnisift@1": full, "omnisift@0.25": full, "stvp_random_audio@0.25": full})
    comparison = compare_runs({"A": [a0, a1], "B": [b0]}, reference=reference, bootstrap=300)
    assert comparison["runs"]["a0"]["accuracy"]["all"] == 0.5 and comparison["runs"]["a0"]["arm"] == "A"
    arm_a, arm_b = comparison["arms"]["A"], comparison["arms"]["B"]
    assert arm_a["runs"] == 2 and arm_a["accuracy"]["all"] == 0.5 and arm_a["window_auroc"] == 0.75
    # A per clip, averaged over its runs: 1, 0.5, 0.5, 0 on each task; its baseline is 1 everywhere.
    assert arm_a["minus_baseline"]["all"]["difference"] == pytest.approx(-0.5)
    low, high = arm_a["minus_baseline"]["pitch"]["ci95"]
    assert low <= -0.5 <= high and low < high
    assert arm_b["minus_baseline"]["color"] == {"difference": 1.0, "ci95": [1.0, 1.0]}  # constant: no spread
    assert arm_b["keep_1_minus_reference"]["all"]["difference"] == pytest.approx(-1 / 8)
    assert arm_b["keep_1_minus_reference"]["color"]["difference"] == pytest.approx(-1 / 4)
    assert comparison["arm_differences"]["B - A"]["all"]["difference"] == pytest.approx(0.5)
    markdown = compare_runs_markdown(comparison)
    assert "| A | a0 | 1.000 | 1.00 | 0.750 | 0.500 |" in markdown
    assert "| B - A | +0.500 [" in markdown and "| B | +1.000 [" in markdown


def test_compare_runs_refuses_reports_of_other_clips_or_without_per_clip_results():
    full = {c: [1] * 8 for c in ("omnisift@1", "omnisift@0.25", "stvp_random_audio@0.25")}
    other = _run_report("other", full, tasks=("color", "count"))
    with pytest.raises(ValueError, match="not made on the same clips"):
        compare_runs({"A": [_run_report("a", full)], "B": [other]})
    bare = _run_report("bare", full)
    del bare["per_clip"]
    with pytest.raises(ValueError, match="'bare' has no per-clip results of 'omnisift@0.25'.*--per-clip"):
        compare_runs({"A": [bare]})
    with pytest.raises(ValueError, match="at least one report for every arm"):
        compare_runs({"A": []})
    same = _run_report("a", full)
    with pytest.raises(ValueError, match="two reports of the run 'a'"):
        compare_runs({"A": [same], "B": [same]})
