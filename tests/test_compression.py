"""The pure token-selection functions of `omnisift_hf.compression`, each against a slow loop reference.

References are written as literally as possible from the method as the OmniSIFT paper states it (summarised in
README.md): Python loops over frames, pairs, windows and rows, float64, no vectorisation. Random inputs are seeded;
every test runs in milliseconds on CPU.
"""

import math

import pytest
import torch

from omnisift_hf.compression import (
    KeepRatios,
    compact_kept_tokens,
    derive_keep_ratios,
    drop_count,
    media_layout,
    resolve_keep_ratios,
    segment_rank,
    spatio_temporal_prune,
    top_audio_per_window,
)

PAPER_RHOS = (0.3, 0.5, 0.7, 0.77)  # the paper's drop fractions: "35%" = audio 0.3 / video 0.7, "25%" = 0.5 / 0.77


# ---------------------------------------------------------------------------------------------------------------------
# Loop references
# ---------------------------------------------------------------------------------------------------------------------
def _reference_drop(n: int, rho: float) -> int:
    """The reference's count: `int(n * rho)` with rho given directly."""
    return int(n * rho)


def _segment_rank_reference(scores: list[float], segment: list[int]) -> list[int]:
    rank = [0] * len(scores)
    for s in set(segment):
        members = [i for i in range(len(scores)) if segment[i] == s]
        for r, i in enumerate(sorted(members, key=lambda i: (-scores[i], i))):
            rank[i] = r
    return rank


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(sum(x * y for x, y in zip(a.tolist(), b.tolist(), strict=True))) / (
        math.sqrt(sum(x * x for x in a.tolist())) * math.sqrt(sum(y * y for y in b.tolist()))
    )


def _stvp_reference(x: torch.Tensor, sizes: list[int], is_second: list[bool], rhos: list[float]) -> list[bool]:
    """STVP as the paper states it (README.md summarises it), one frame at a time."""
    starts = [sum(sizes[:f]) for f in range(len(sizes))]
    frames = [x[starts[f] : starts[f] + sizes[f]] for f in range(len(sizes))]
    keep = [True] * x.shape[0]
    for f, frame in enumerate(frames):
        n = sizes[f]
        if not is_second[f]:
            # First frame (or a lone last frame): spatial redundancy against the frame's mean token.
            mean = [sum(frame[i, d].item() for i in range(n)) / n for d in range(x.shape[1])]
            scores = [_cosine(frame[i], torch.tensor(mean, dtype=x.dtype)) for i in range(n)]
            n_p = n
        else:
            first = frames[f - 1]  # unpruned
            if first.shape[0] != n:
                continue  # different token counts: the second frame is kept whole
            scores = [_cosine(frame[i], first[i]) for i in range(n)]
            n_p = first.shape[0]
        most_similar_first = sorted(range(n), key=lambda i: (-scores[i], i))
        for i in most_similar_first[: _reference_drop(n_p, rhos[f])]:
            keep[starts[f] + i] = False
    return keep


def _top_audio_reference(scores: list[float], window: list[int], rhos: dict[int, float]) -> list[bool]:
    keep = [False] * len(scores)
    for w in set(window):
        members = [i for i in range(len(scores)) if window[i] == w]
        n_a = len(members)
        best_first = sorted(members, key=lambda i: (-scores[i], i))
        for i in best_first[: n_a - _reference_drop(n_a, rhos[w])]:
            keep[i] = True
    return keep


def _compact_reference(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [[j for j in range(keep.shape[1]) if keep[b, j]] for b in range(keep.shape[0])]
    longest = max(len(r) for r in rows)
    index = [[0] * (longest - len(r)) + r for r in rows]
    mask = [[0] * (longest - len(r)) + [1] * len(r) for r in rows]
    return torch.tensor(index, dtype=torch.long).view(len(rows), longest), torch.tensor(mask).view(len(rows), longest)


def _layout_reference(video_mask: torch.Tensor, audio_mask: torch.Tensor, temporal_ids: torch.Tensor) -> dict:
    """Runs, frames, pairs and windows by walking the batch token by token."""
    batch_size, seq_len = video_mask.shape
    tokens = []  # (flat position, row, kind, run, temporal id)
    run = -1
    for b in range(batch_size):
        in_media = False
        for j in range(seq_len):
            kind = "video" if video_mask[b, j] else "audio" if audio_mask[b, j] else None
            if kind is not None and not in_media:
                run += 1
            in_media = kind is not None
            if kind is not None:
                tokens.append((b * seq_len + j, b, kind, run, int(temporal_ids[b, j])))
    video = [t for t in tokens if t[2] == "video"]
    audio = [t for t in tokens if t[2] == "audio"]

    frames = []  # lists of video tokens
    for tok in video:
        if frames and frames[-1][-1][3] == tok[3] and frames[-1][-1][4] == tok[4]:
            frames[-1].append(tok)
        else:
            frames.append([tok])
    frame_is_second, pair_of_frame, pairs = [], [], []  # pairs: (run, temporal id of first frame, row)
    for f, frame in enumerate(frames):
        position_in_run = sum(1 for g in frames[:f] if g[0][3] == frame[0][3])
        frame_is_second.append(position_in_run % 2 == 1)
        if position_in_run % 2 == 0:
            pairs.append((frame[0][3], frame[0][4], frame[0][1]))
        pair_of_frame.append(len(pairs) - 1)

    window_of_audio = []
    for tok in audio:
        own = [p for p, pair in enumerate(pairs) if pair[0] == tok[3]]
        if not own:
            window_of_audio.append(-1)
            continue
        started = [p for p in own if pairs[p][1] <= tok[4]]
        window_of_audio.append(started[-1] if started else own[0])

    return {
        "video_index": [t[0] for t in video],
        "audio_index": [t[0] for t in audio],
        "video_sample": [t[1] for t in video],
        "audio_sample": [t[1] for t in audio],
        "frame_of_video": [f for f, frame in enumerate(frames) for _ in frame],
        "frame_size": [len(frame) for frame in frames],
        "frame_is_second": frame_is_second,
        "pair_of_frame": pair_of_frame,
        "pair_sample": [p[2] for p in pairs],
        "window_of_audio": window_of_audio,
    }


# ---------------------------------------------------------------------------------------------------------------------
# segment_rank
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_segment_rank_matches_loop_reference(seed):
    generator = torch.Generator().manual_seed(seed)
    n = 200
    # Integer-valued scores: many ties, which must go to the earlier element.
    scores = torch.randint(0, 6, (n,), generator=generator).double()
    # Unsorted, interleaved segment ids with gaps (id 3 and 6 never occur).
    segment = torch.tensor([0, 1, 2, 4, 5, 7])[torch.randint(0, 6, (n,), generator=generator)]

    rank = segment_rank(scores, segment)

    expected = _segment_rank_reference(scores.tolist(), segment.tolist())
    assert rank.dtype == torch.long
    assert rank.tolist() == expected


def test_segment_rank_ties_go_to_earlier_element():
    scores = torch.tensor([1.0, 3.0, 1.0, 3.0, 1.0, 2.0])
    segment = torch.tensor([1, 0, 0, 1, 1, 0])
    # Segment 0: elements 1 (3.0), 5 (2.0), 2 (1.0). Segment 1: 3 (3.0), then the tied 0 and 4 in index order.
    assert segment_rank(scores, segment).tolist() == [1, 0, 2, 0, 2, 1]


def test_segment_rank_float_scores_single_segment():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(50, generator=generator)
    rank = segment_rank(scores, torch.zeros(50, dtype=torch.long))
    assert rank.tolist() == _segment_rank_reference(scores.tolist(), [0] * 50)


# ---------------------------------------------------------------------------------------------------------------------
# drop_count
# ---------------------------------------------------------------------------------------------------------------------
def test_drop_count_float_trap():
    # 1 - 0.9 == 0.09999999999999998 and int(50 * (1 - 0.9)) == 4; the intended count is 5.
    assert drop_count(torch.tensor([50]), torch.tensor([0.9])).tolist() == [5]
    assert drop_count(torch.tensor([50]), torch.tensor([0.9], dtype=torch.float64)).tolist() == [5]
    # A float32 keep ratio of 0.23 (0.23000000417...) still drops floor(100 * 0.77) = 77.
    assert drop_count(torch.tensor([100]), torch.tensor([0.23], dtype=torch.float32)).tolist() == [77]


@pytest.mark.parametrize("rho", PAPER_RHOS)
def test_drop_count_matches_reference_int(rho):
    """The reference is given rho directly and drops int(n * rho), float error included (90 * 0.7 -> 62)."""
    n = torch.arange(1, 300)
    drops = drop_count(n, torch.tensor(1 - rho, dtype=torch.float64))
    assert drops.dtype == torch.long
    assert drops.tolist() == [_reference_drop(k, rho) for k in range(1, 300)]


def test_drop_count_broadcasts():
    n = torch.tensor([[10], [20]])
    keep = 1 - torch.tensor([0.3, 0.5, 0.77], dtype=torch.float64)
    assert drop_count(n, keep).tolist() == [[3, 5, 7], [6, 10, 15]]


# ---------------------------------------------------------------------------------------------------------------------
# spatio_temporal_prune (STVP)
# ---------------------------------------------------------------------------------------------------------------------
def _frame_tensors(sizes: list[int], is_second: list[bool]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    frame_size = torch.tensor(sizes)
    frame_of_video = torch.repeat_interleave(torch.arange(len(sizes)), frame_size)
    return frame_of_video, frame_size, torch.tensor(is_second)


def _videos(per_video: list[list[int]]) -> tuple[list[int], list[bool], list[int]]:
    """Frame sizes, `frame_is_second` (pairs restart at each video) and the video of each frame."""
    sizes, is_second, video_of_frame = [], [], []
    for v, frames in enumerate(per_video):
        sizes += frames
        is_second += [i % 2 == 1 for i in range(len(frames))]
        video_of_frame += [v] * len(frames)
    return sizes, is_second, video_of_frame


@pytest.mark.parametrize(
    "per_video",
    [
        pytest.param([[9, 9, 9, 9, 9, 9]], id="three-pairs"),
        pytest.param([[7, 7, 7, 7, 7]], id="odd-frame-count"),
        pytest.param([[6, 10, 8, 8, 11, 5]], id="unequal-frame-sizes"),
        pytest.param([[6, 6, 6], [6, 6, 6, 6], [13]], id="several-videos"),
        pytest.param([[4, 4, 4], [9, 9], [5, 5, 5], [3, 7]], id="mixed"),
    ],
)
@pytest.mark.parametrize("seed", range(3))
def test_spatio_temporal_prune_matches_loop_reference(per_video, seed):
    generator = torch.Generator().manual_seed(seed)
    sizes, is_second, video_of_frame = _videos(per_video)
    # One drop fraction per video, as the model passes it (one per sample).
    video_rho = [PAPER_RHOS[i] for i in torch.randint(0, len(PAPER_RHOS), (len(per_video),), generator=generator)]
    rhos = [video_rho[v] for v in video_of_frame]
    x = torch.randn(sum(sizes), 8, generator=generator, dtype=torch.float64)  # random: no tied scores

    keep = spatio_temporal_prune(x, *_frame_tensors(sizes, is_second), 1 - torch.tensor(rhos, dtype=torch.float64))

    assert keep.dtype == torch.bool
    assert keep.tolist() == _stvp_reference(x, sizes, is_second, rhos)


def test_spatio_temporal_prune_counts():
    """Both frames of a comparable pair drop floor(n_p * rho); a second frame of another size drops nothing."""
    sizes, is_second, _ = _videos([[10, 10, 10], [8, 12]])
    x = torch.randn(sum(sizes), 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    frame_of_video, frame_size, frame_is_second = _frame_tensors(sizes, is_second)
    keep = spatio_temporal_prune(x, frame_of_video, frame_size, frame_is_second, torch.full((5,), 0.23))
    kept_per_frame = torch.bincount(frame_of_video[keep], minlength=5)
    assert kept_per_frame.tolist() == [3, 3, 3, 2, 12]  # 10 - floor(7.7), 10 - 7, lone 10 - 7, 8 - floor(6.16), whole


def test_spatio_temporal_prune_hand_worked():
    # Two frames of 4 tokens, D = 2, rho = 0.5: each frame drops floor(4 * 0.5) = 2 tokens.
    # Frame 0 = (1,0), (1,1), (0,1), (2,1); mean = (1, 0.75), direction (4, 3) / 5. Cosine to the mean:
    #   t0: 4/5 = 0.800   t1: 7/(5*sqrt 2) = 0.990   t2: 3/5 = 0.600   t3: 11/(5*sqrt 5) = 0.984
    #   -> drop the two most similar, t1 and t3; keep t0, t2 (flat 0, 2).
    # Frame 1 = (2,0), (-1,1), (1,1), (1,2); cosine to the same position of the unpruned frame 0:
    #   t0: (2,0).(1,0) -> 1.000   t1: (-1,1).(1,1) -> 0.000   t2: (1,1).(0,1) -> 1/sqrt 2 = 0.707
    #   t3: (1,2).(2,1) -> 4/5 = 0.800   -> drop t0 and t3; keep t1, t2 (flat 5, 6).
    # (Scored spatially, frame 1 would instead keep t0, t1: its mean (0.75, 1) is closest to t2 and t3.)
    x = torch.tensor(
        [[1, 0], [1, 1], [0, 1], [2, 1], [2, 0], [-1, 1], [1, 1], [1, 2]],
        dtype=torch.float64,
    )
    keep = spatio_temporal_prune(
        x,
        torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]),
        torch.tensor([4, 4]),
        torch.tensor([False, True]),
        torch.tensor([0.5, 0.5], dtype=torch.float64),
    )
    assert torch.nonzero(keep).squeeze(1).tolist() == [0, 2, 5, 6]


def test_spatio_temporal_prune_ties_drop_earlier_tokens():
    # Four identical tokens: every spatial score is 1; the two earliest are dropped. The second frame repeats the
    # first, so every temporal score is 1 as well.
    x = torch.tensor([[1.0, 2.0]] * 8, dtype=torch.float64)
    keep = spatio_temporal_prune(
        x,
        torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]),
        torch.tensor([4, 4]),
        torch.tensor([False, True]),
        torch.tensor([0.5, 0.5], dtype=torch.float64),
    )
    assert keep.tolist() == [False, False, True, True, False, False, True, True]


def test_spatio_temporal_prune_nothing_dropped_at_zero_rho():
    sizes, is_second, _ = _videos([[5, 5, 5]])
    x = torch.randn(15, 4, generator=torch.Generator().manual_seed(0))
    keep = spatio_temporal_prune(x, *_frame_tensors(sizes, is_second), torch.ones(3, dtype=torch.float64))
    assert keep.all()


# ---------------------------------------------------------------------------------------------------------------------
# top_audio_per_window (VGAS selection)
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("tied", [False, True], ids=["distinct", "tied"])
def test_top_audio_per_window_matches_loop_reference(seed, tied):
    generator = torch.Generator().manual_seed(seed)
    num_windows, n = 6, 240
    # Windows interleaved in any order; sizes vary (one window may be small).
    window = torch.randint(0, num_windows, (n,), generator=generator)
    if tied:
        scores = torch.randint(0, 4, (n,), generator=generator).float() / 4
    else:
        scores = torch.rand(n, generator=generator)
    rhos = [PAPER_RHOS[i] for i in torch.randint(0, len(PAPER_RHOS), (num_windows,), generator=generator)]
    window_size = torch.bincount(window, minlength=num_windows)

    keep = top_audio_per_window(scores, window, window_size, 1 - torch.tensor(rhos, dtype=torch.float64))

    expected = _top_audio_reference(scores.tolist(), window.tolist(), dict(enumerate(rhos)))
    assert keep.dtype == torch.bool
    assert keep.tolist() == expected
    kept_per_window = torch.bincount(window[keep], minlength=num_windows)
    assert kept_per_window.tolist() == [
        int(s) - _reference_drop(int(s), r) for s, r in zip(window_size, rhos, strict=True)
    ]


def test_top_audio_per_window_ties_keep_earlier():
    scores = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.9, 0.1, 0.1, 0.1])
    window = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    keep = top_audio_per_window(scores, window, torch.tensor([4, 4]), torch.tensor([0.5, 0.5], dtype=torch.float64))
    # Window 0 keeps its two earliest tied tokens; window 1 keeps 0.9 and the earliest 0.1.
    assert keep.tolist() == [True, True, False, False, True, True, False, False]


def test_top_audio_per_window_float_trap():
    # 50 audio tokens at keep 0.9: rho = 1 - 0.9 must drop 5 (keep 45), not 4.
    scores = torch.rand(50, generator=torch.Generator().manual_seed(0))
    window = torch.zeros(50, dtype=torch.long)
    keep = top_audio_per_window(scores, window, torch.tensor([50]), torch.tensor([0.9], dtype=torch.float64))
    assert int(keep.sum()) == 45


# ---------------------------------------------------------------------------------------------------------------------
# derive_keep_ratios
# ---------------------------------------------------------------------------------------------------------------------
CLIP_VIDEO, CLIP_AUDIO = 20 * 144, 500  # 20 s at 2 fps: 20 temporal slices x 144 tokens; audio at 25 tokens/s


def _retention(video: torch.Tensor, audio: torch.Tensor, nv: torch.Tensor, na: torch.Tensor) -> torch.Tensor:
    return (video * nv + audio * na) / (nv + na)


@pytest.mark.parametrize(
    ("keep", "audio", "video_range"),
    [(0.25, 0.5, (0.19, 0.24)), (0.35, 0.7, (0.27, 0.32))],
    ids=["25%", "35%"],
)
def test_derive_keep_ratios_paper_operating_points(keep, audio, video_range):
    nv, na = torch.tensor([CLIP_VIDEO]), torch.tensor([CLIP_AUDIO])
    v, a = derive_keep_ratios(keep, nv, na)
    assert v.dtype == a.dtype == torch.float64 and v.shape == a.shape == (1,)
    torch.testing.assert_close(a, torch.tensor([audio], dtype=torch.float64), rtol=0, atol=1e-12)
    assert video_range[0] <= float(v) <= video_range[1]


def test_derive_keep_ratios_retention_tracks_request():
    nv = torch.tensor([CLIP_VIDEO, 1440, 4 * 144, 64 * 36, 16])
    na = torch.tensor([CLIP_AUDIO, 250, 100, 800, 100])
    for keep in torch.arange(0.15, 0.901, 0.05, dtype=torch.float64).tolist():
        v, a = derive_keep_ratios(keep, nv, na)
        assert bool(((v >= 0) & (v <= 1) & (a >= 0) & (a <= 1)).all())
        achieved = _retention(v, a, nv, na)
        torch.testing.assert_close(achieved, torch.full_like(achieved, keep), rtol=0, atol=0.01)
        # The paper's asymmetry: audio is kept at a higher rate than video.
        assert bool((a >= v).all())


def test_derive_keep_ratios_starved_video():
    # 16 video tokens, 100 audio tokens, keep 0.25: audio at 0.5 alone (50 tokens) exceeds the budget of 29 tokens.
    nv, na = torch.tensor([16]), torch.tensor([100])
    v, a = derive_keep_ratios(0.25, nv, na)
    torch.testing.assert_close(v, torch.tensor([0.125], dtype=torch.float64), rtol=0, atol=1e-12)
    assert float(a) < 0.5
    torch.testing.assert_close(_retention(v, a, nv, na), torch.tensor([0.25], dtype=torch.float64), rtol=0, atol=0.01)


@pytest.mark.parametrize("keep", [0.15, 0.25, 0.35, 0.9, 1.0])
def test_derive_keep_ratios_single_modality(keep):
    nv, na = torch.tensor([0, 300, 0]), torch.tensor([120, 0, 0])
    v, a = derive_keep_ratios(keep, nv, na)
    for ratio in (v, a):
        assert bool(torch.isfinite(ratio).all()) and bool(((ratio >= 0) & (ratio <= 1)).all())
    # The modality that is present keeps exactly the requested rate.
    torch.testing.assert_close(a[0], torch.tensor(keep, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(v[1], torch.tensor(keep, dtype=torch.float64), rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------------
# resolve_keep_ratios and KeepRatios
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("call", "config", "expected"),
    [
        pytest.param((None, None, None), (0.25, None, None), KeepRatios(0.25), id="config-keep"),
        pytest.param((None, None, None), (0.25, 0.2, 0.6), KeepRatios(0.25, 0.2, 0.6), id="config-modality"),
        pytest.param((0.35, None, None), (0.25, 0.2, 0.6), KeepRatios(0.35), id="call-keep-beats-config-modality"),
        pytest.param((0.35, 0.1, None), (0.25, 0.2, 0.6), KeepRatios(0.35, 0.1, None), id="call-modality-beats-keep"),
        pytest.param((0.35, None, 0.9), (0.25, None, None), KeepRatios(0.35, None, 0.9), id="call-audio-with-keep"),
        pytest.param((None, 0.1, None), (0.25, 0.2, 0.6), KeepRatios(0.25, 0.1, 0.6), id="call-video-over-config"),
        pytest.param((None, None, 0.8), (0.25, 0.2, None), KeepRatios(0.25, 0.2, 0.8), id="call-audio-over-config"),
        pytest.param((None, 0.1, 0.8), (0.5, 0.2, 0.6), KeepRatios(0.5, 0.1, 0.8), id="call-both-over-config"),
    ],
)
def test_resolve_keep_ratios_precedence(call, config, expected):
    assert resolve_keep_ratios(*call, *config) == expected


@pytest.mark.parametrize(
    ("ratios", "identity"),
    [
        (KeepRatios(1.0), True),
        (KeepRatios(0.5, video=1.0, audio=1.0), True),
        (KeepRatios(1.0, video=1.0), True),
        (KeepRatios(0.25), False),
        (KeepRatios(1.0, video=0.5), False),
        (KeepRatios(1.0, audio=0.9), False),
        (KeepRatios(0.5, video=1.0), False),
        (KeepRatios(0.5, audio=1.0), False),
    ],
)
def test_keep_ratios_is_identity(ratios, identity):
    assert ratios.is_identity is identity


# ---------------------------------------------------------------------------------------------------------------------
# media_layout
# ---------------------------------------------------------------------------------------------------------------------
PAD_T = 1  # temporal id Qwen gives padding positions


class _Row:
    """Builds one row of a batch token by token: (kind, temporal id), kind in text / video / audio / pad."""

    def __init__(self):
        self.tokens: list[tuple[str, int]] = []

    def text(self, n: int, start: int) -> "_Row":
        self.tokens += [("text", start + i) for i in range(n)]
        return self

    def slice(self, t: int, n: int) -> "_Row":
        self.tokens += [("video", t)] * n  # one temporal slice: n tokens sharing one temporal id
        return self

    def audio(self, start: int, stop: int) -> "_Row":
        self.tokens += [("audio", t) for t in range(start, stop)]  # audio token k has temporal id k
        return self


def _batch(rows: list[_Row]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-pads the rows to one length: (video_mask, audio_mask, temporal_ids), each (B, L)."""
    length = max(len(r.tokens) for r in rows)
    padded = [[("pad", PAD_T)] * (length - len(r.tokens)) + r.tokens for r in rows]
    video_mask = torch.tensor([[k == "video" for k, _ in row] for row in padded])
    audio_mask = torch.tensor([[k == "audio" for k, _ in row] for row in padded])
    temporal_ids = torch.tensor([[t for _, t in row] for row in padded])
    return video_mask, audio_mask, temporal_ids


def _row_odd_slices_then_audio_item() -> _Row:
    # 3 text tokens; a 3-slice video (4 tokens per slice) interleaved with 3 s of audio in 2-second chunks:
    # [slices t=3, 28 | audio 3..52] [slice t=53 | audio 53..77]; 2 text tokens; a separate 10-token audio item.
    return (
        _Row()
        .text(3, 0)
        .slice(3, 4)
        .slice(28, 4)
        .audio(3, 53)
        .slice(53, 4)
        .audio(53, 78)
        .text(2, 78)
        .audio(80, 90)
        .text(1, 90)
    )


def _row_two_videos() -> _Row:
    # Video 1: 3 slices of 6 tokens, audio 1..75 plus 10 audio tokens past the last slice's chunk.
    # Video 2: 2 slices of 2 tokens, audio 88..137.
    return (
        _Row()
        .text(1, 0)
        .slice(1, 6)
        .slice(26, 6)
        .audio(1, 51)
        .slice(51, 6)
        .audio(51, 76)
        .audio(76, 86)
        .text(2, 86)
        .slice(88, 2)
        .slice(113, 2)
        .audio(88, 138)
        .text(1, 138)
    )


def _row_four_slices() -> _Row:
    # One 4-slice video, 3 tokens per slice: [t=0, 25 | audio 0..49] [t=50, 75 | audio 50..99].
    return _Row().slice(0, 3).slice(25, 3).audio(0, 50).slice(50, 3).slice(75, 3).audio(50, 100).text(2, 100)


def _assert_layout(layout, expected: dict):
    for name, value in expected.items():
        assert getattr(layout, name).tolist() == value, name


def test_media_layout_interleaved_even_slices_by_hand():
    layout = media_layout(*_batch([_row_four_slices()]))
    _assert_layout(
        layout,
        {
            "video_index": [*range(0, 6), *range(56, 62)],
            "audio_index": [*range(6, 56), *range(62, 112)],
            "frame_of_video": [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3],
            "frame_size": [3, 3, 3, 3],
            "frame_is_second": [False, True, False, True],
            "pair_of_frame": [0, 0, 1, 1],
            "pair_sample": [0, 0],
            "window_of_audio": [0] * 50 + [1] * 50,
        },
    )
    assert layout.num_pairs == 2


def test_media_layout_odd_slices_and_separate_audio_by_hand():
    layout = media_layout(*_batch([_row_odd_slices_then_audio_item()]))
    _assert_layout(
        layout,
        {
            "frame_size": [4, 4, 4],
            "frame_is_second": [False, True, False],  # the odd last slice is alone
            "pair_of_frame": [0, 0, 1],
            "pair_sample": [0, 0],
            # Chunk 1's audio -> pair 0, chunk 2's -> pair 1 (the lone slice), the separate audio item -> -1.
            "window_of_audio": [0] * 50 + [1] * 25 + [-1] * 10,
            "audio_sample": [0] * 85,
        },
    )


def test_media_layout_two_videos_in_one_sample_by_hand():
    layout = media_layout(*_batch([_row_two_videos()]))
    _assert_layout(
        layout,
        {
            "frame_size": [6, 6, 6, 2, 2],
            # Video 1 has an odd slice count; video 2 starts a new pair instead of completing video 1's last.
            "frame_is_second": [False, True, False, False, True],
            "pair_of_frame": [0, 0, 1, 2, 2],
            "pair_sample": [0, 0, 0],
            # Video 1: chunk 1 -> pair 0, chunk 2 and the trailing audio -> its last pair 1; video 2 -> pair 2.
            "window_of_audio": [0] * 50 + [1] * 35 + [2] * 50,
        },
    )


def test_media_layout_batch_of_two_rows_by_hand():
    rows = [_row_odd_slices_then_audio_item(), _row_two_videos()]
    video_mask, audio_mask, temporal_ids = _batch(rows)
    seq_len = video_mask.shape[1]
    pad = seq_len - len(rows[0].tokens)  # row 0 is the shorter one and is left-padded
    assert (len(rows[0].tokens), seq_len) == (103, 161) and pad == 58
    layout = media_layout(video_mask, audio_mask, temporal_ids)
    _assert_layout(
        layout,
        {
            "video_index": [pad + 3 + i for i in range(8)]
            + [pad + 61 + i for i in range(4)]
            + [seq_len + 1 + i for i in range(12)]
            + [seq_len + 63 + i for i in range(6)]
            + [seq_len + 106 + i for i in range(4)],
            "video_sample": [0] * 12 + [1] * 22,
            "audio_sample": [0] * 85 + [1] * 135,
            "frame_size": [4, 4, 4, 6, 6, 6, 2, 2],
            "frame_is_second": [False, True, False, False, True, False, False, True],
            "pair_of_frame": [0, 0, 1, 2, 2, 3, 4, 4],
            "pair_sample": [0, 0, 1, 1, 1],
            "window_of_audio": [0] * 50 + [1] * 25 + [-1] * 10 + [2] * 50 + [3] * 35 + [4] * 50,
        },
    )


def test_media_layout_matches_loop_reference():
    rows = [
        _row_two_videos(),
        # Audio whose first temporal ids precede the video's first slice joins the first pair's window.
        _Row().text(2, 0).slice(10, 5).slice(35, 5).audio(8, 60).slice(60, 5).audio(60, 85).text(1, 85),
        _row_four_slices(),
        # A video without audio (its own run) right before an audio item separated by one text token.
        _Row().slice(0, 4).slice(25, 4).slice(50, 4).text(1, 75).audio(76, 100),
        _row_odd_slices_then_audio_item(),
        _Row().text(3, 0),  # no media at all
    ]
    video_mask, audio_mask, temporal_ids = _batch(rows)
    layout = media_layout(video_mask, audio_mask, temporal_ids)
    _assert_layout(layout, _layout_reference(video_mask, audio_mask, temporal_ids))


def test_media_layout_without_video():
    video_mask, audio_mask, temporal_ids = _batch([_Row().text(2, 0).audio(2, 30).text(1, 30)])
    layout = media_layout(video_mask, audio_mask, temporal_ids)
    assert layout.num_pairs == 0 and layout.frame_size.numel() == 0
    assert layout.window_of_audio.tolist() == [-1] * 28


# ---------------------------------------------------------------------------------------------------------------------
# compact_kept_tokens
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_compact_kept_tokens_matches_loop_reference(seed):
    generator = torch.Generator().manual_seed(seed)
    keep = torch.rand(5, 23, generator=generator) < torch.rand(5, 1, generator=generator)
    keep[2] = False
    keep[2, 17] = True  # a row with a single kept token
    keep[4] = True  # a full row

    index, attention_mask = compact_kept_tokens(keep)

    expected_index, expected_mask = _compact_reference(keep)
    assert index.dtype == attention_mask.dtype == torch.long
    assert torch.equal(index, expected_index)
    assert torch.equal(attention_mask, expected_mask)


def test_compact_kept_tokens_by_hand():
    keep = torch.tensor([[False, True, False, True, True], [False, False, False, True, False]])
    index, attention_mask = compact_kept_tokens(keep)
    assert index.tolist() == [[1, 3, 4], [0, 0, 3]]
    assert attention_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
