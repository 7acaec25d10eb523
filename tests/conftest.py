"""Shared fixtures: a tiny random OmniSIFT / Qwen2.5-Omni thinker and hand-built multimodal inputs.

`build_inputs` lays out placeholder tokens exactly as `Qwen2_5OmniProcessor` does (including the 2-second
interleaving of video and audio chunks), without needing a tokenizer, so each test controls every token count.
"""

import math

import pytest
import torch

from omnisift_hf import OmniSiftForConditionalGeneration
from omnisift_hf.tiny import TINY_TOKEN_IDS, tiny_config

IDS = TINY_TOKEN_IDS
PATCH_DIM = 3 * 2 * 14 * 14  # channels * temporal patch * patch * patch
POSITIONS_PER_SECOND = 25
SECONDS_PER_CHUNK = 2


def audio_token_count(num_mel_frames: int) -> int:
    """Audio tokens the Qwen2.5-Omni audio encoder makes from `num_mel_frames` mel frames."""
    return ((num_mel_frames - 1) // 2 + 1 - 2) // 2 + 1


def _chunks(times: list[float]) -> list[int]:
    """Sizes of the 2-second chunks of a non-decreasing list of position ids (as the processor splits them)."""
    per_chunk = POSITIONS_PER_SECOND * SECONDS_PER_CHUNK
    sizes: dict[int, int] = {}
    for value in times:
        sizes[int(value // per_chunk)] = sizes.get(int(value // per_chunk), 0) + 1
    return [sizes.get(i, 0) for i in range(max(sizes) + 1)] if sizes else []


def build_inputs(samples: list[list[tuple]], seed: int = 0, seconds_per_grid: float = 1.0) -> dict:
    """Model inputs for a batch, left-padded.

    Each sample is a list of segments:
      ("text", n)                      n random text tokens
      ("video", t, h, w, mel_or_None)  a video of t temporal slices of h x w patches (h, w even), with its audio
                                       track of `mel` mel frames interleaved (use_audio_in_video), or silent
      ("audio", mel)                   a separate audio item
      ("image", h, w)                  an image of h x w patches
    """
    generator = torch.Generator().manual_seed(seed)
    rows, videos, audios, images, use_audio_in_video = [], [], [], [], False
    for segments in samples:
        tokens = [IDS["im_start"], 5]
        for segment in segments:
            kind = segment[0]
            if kind == "text":
                tokens += torch.randint(1, 139, (segment[1],), generator=generator).tolist()
            elif kind == "image":
                _, h, w = segment
                images.append((h, w))
                tokens += [IDS["vision_start"]] + [IDS["image"]] * (h * w // 4) + [IDS["vision_end"]]
            elif kind == "audio":
                audios.append(segment[1])
                n = audio_token_count(segment[1])
                tokens += [IDS["audio_start"]] + [IDS["audio"]] * n + [IDS["audio_end"]]
            elif kind == "video":
                _, t, h, w, mel = segment
                videos.append((t, h, w))
                per_frame = h * w // 4
                if mel is None:
                    tokens += [IDS["vision_start"]] + [IDS["video"]] * (t * per_frame) + [IDS["vision_end"]]
                    continue
                use_audio_in_video = True
                audios.append(mel)
                video_times = [i * seconds_per_grid * POSITIONS_PER_SECOND for i in range(t) for _ in range(per_frame)]
                video_chunks = _chunks(video_times)
                audio_chunks = _chunks(list(range(audio_token_count(mel))))
                tokens += [IDS["vision_start"], IDS["audio_start"]]
                for j in range(max(len(video_chunks), len(audio_chunks))):
                    tokens += [IDS["video"]] * (video_chunks[j] if j < len(video_chunks) else 0)
                    tokens += [IDS["audio"]] * (audio_chunks[j] if j < len(audio_chunks) else 0)
                tokens += [IDS["audio_end"], IDS["vision_end"]]
        tokens += torch.randint(1, 139, (3,), generator=generator).tolist() + [IDS["im_end"], IDS["im_start"], 7]
        rows.append(tokens)

    length = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), length), IDS["pad"], dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, length - len(row) :] = torch.tensor(row)
        attention_mask[i, length - len(row) :] = 1
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if videos:
        patches = sum(t * h * w for t, h, w in videos)
        inputs["pixel_values_videos"] = torch.randn(patches, PATCH_DIM, generator=generator)
        inputs["video_grid_thw"] = torch.tensor(videos, dtype=torch.long)
        inputs["video_second_per_grid"] = torch.full((len(videos),), seconds_per_grid)
    if images:
        inputs["pixel_values"] = torch.randn(sum(h * w for h, w in images), PATCH_DIM, generator=generator)
        inputs["image_grid_thw"] = torch.tensor([(1, h, w) for h, w in images], dtype=torch.long)
    if audios:
        frames = max(audios)
        inputs["input_features"] = torch.randn(len(audios), 128, frames, generator=generator)
        mask = torch.zeros(len(audios), frames, dtype=torch.long)
        for i, mel in enumerate(audios):
            mask[i, :mel] = 1
        inputs["feature_attention_mask"] = mask
    if use_audio_in_video:
        inputs["use_audio_in_video"] = True
    return inputs


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


@pytest.fixture
def config():
    return tiny_config()


@pytest.fixture
def model(config):
    torch.manual_seed(0)
    return OmniSiftForConditionalGeneration(config).eval()


@pytest.fixture
def av_inputs():
    """One 4-slice video (4 x 8 x 8 patches -> 16 tokens per slice) with ~4 s of audio interleaved."""
    return build_inputs([[("text", 4), ("video", 4, 8, 8, 400), ("text", 5)]])


def ceil_div(a: int, b: int) -> int:
    return math.ceil(a / b)
