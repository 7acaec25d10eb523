"""A tiny random OmniSIFT configuration: offline, CPU-sized, with the real Qwen2.5-Omni structure.

Used by the tests, the examples and anyone who wants to try the API without downloading 7B weights. All sizes
follow the Qwen2.5-Omni processor's assumptions (128 mel bins, 14-pixel patches, temporal patch 2, merge size 2,
25 position ids per second, 2-second chunks) so that real processor outputs fit the model.
"""

import torch

from .configuration_omnisift import OmniSiftConfig

__all__ = ["TINY_TOKEN_IDS", "audio_token_count", "tiny_config", "tiny_inputs"]

# Special token ids of the tiny vocabulary (size 160); ids 1..139 are ordinary text tokens, 0 is padding.
TINY_TOKEN_IDS = {
    "pad": 0,
    "im_start": 140,
    "im_end": 141,
    "endoftext": 142,
    "audio": 150,
    "image": 151,
    "video": 152,
    "vision_start": 153,
    "vision_end": 154,
    "audio_start": 155,
    "audio_end": 156,
}


def tiny_config(**overrides) -> OmniSiftConfig:
    """A Qwen2.5-Omni thinker config with text hidden size 32 (2 layers), a 2-block vision encoder and a 2-layer audio
    encoder, plus the OmniSIFT knobs. Keyword arguments override top-level fields (e.g. `keep_ratio=0.35`)."""
    ids = TINY_TOKEN_IDS
    fields = {
        "text_config": {
            "vocab_size": 160,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [1, 1, 2]},
            "pad_token_id": ids["pad"],
            "eos_token_id": ids["im_end"],
        },
        "vision_config": {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 32,
            "fullatt_block_indexes": [1],
        },
        "audio_config": {
            "num_mel_bins": 128,
            "encoder_layers": 2,
            "encoder_attention_heads": 2,
            "encoder_ffn_dim": 64,
            "d_model": 32,
            "output_dim": 32,
        },
        "audio_token_index": ids["audio"],
        "image_token_index": ids["image"],
        "video_token_index": ids["video"],
        "vision_start_token_id": ids["vision_start"],
        "vision_end_token_id": ids["vision_end"],
        "audio_start_token_id": ids["audio_start"],
        "audio_end_token_id": ids["audio_end"],
        "user_token_id": 5,
        "selector_hidden_size": 16,
        "selector_num_heads": 2,
        "selector_mlp_size": 8,
    }
    fields.update(overrides)
    return OmniSiftConfig(**fields)


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


def tiny_inputs(samples: list[list[tuple]], seed: int = 0, seconds_per_grid: float = 1.0) -> dict:
    """Model inputs for a batch of synthetic samples, left-padded, laid out exactly as `Qwen2_5OmniProcessor` lays
    out placeholders (video and audio interleaved in 2-second chunks when a video has audio). Media are random.

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
        tokens = [TINY_TOKEN_IDS["im_start"], 5]
        for segment in segments:
            kind = segment[0]
            if kind == "text":
                tokens += torch.randint(1, 139, (segment[1],), generator=generator).tolist()
            elif kind == "image":
                _, h, w = segment
                images.append((h, w))
                tokens += (
                    [TINY_TOKEN_IDS["vision_start"]]
                    + [TINY_TOKEN_IDS["image"]] * (h * w // 4)
                    + [TINY_TOKEN_IDS["vision_end"]]
                )
            elif kind == "audio":
                audios.append(segment[1])
                n = audio_token_count(segment[1])
                tokens += (
                    [TINY_TOKEN_IDS["audio_start"]] + [TINY_TOKEN_IDS["audio"]] * n + [TINY_TOKEN_IDS["audio_end"]]
                )
            elif kind == "video":
                _, t, h, w, mel = segment
                videos.append((t, h, w))
                per_frame = h * w // 4
                if mel is None:
                    tokens += (
                        [TINY_TOKEN_IDS["vision_start"]]
                        + [TINY_TOKEN_IDS["video"]] * (t * per_frame)
                        + [TINY_TOKEN_IDS["vision_end"]]
                    )
                    continue
                use_audio_in_video = True
                audios.append(mel)
                video_times = [i * seconds_per_grid * POSITIONS_PER_SECOND for i in range(t) for _ in range(per_frame)]
                video_chunks = _chunks(video_times)
                audio_chunks = _chunks(list(range(audio_token_count(mel))))
                tokens += [TINY_TOKEN_IDS["vision_start"], TINY_TOKEN_IDS["audio_start"]]
                for j in range(max(len(video_chunks), len(audio_chunks))):
                    tokens += [TINY_TOKEN_IDS["video"]] * (video_chunks[j] if j < len(video_chunks) else 0)
                    tokens += [TINY_TOKEN_IDS["audio"]] * (audio_chunks[j] if j < len(audio_chunks) else 0)
                tokens += [TINY_TOKEN_IDS["audio_end"], TINY_TOKEN_IDS["vision_end"]]
        tokens += torch.randint(1, 139, (3,), generator=generator).tolist() + [
            TINY_TOKEN_IDS["im_end"],
            TINY_TOKEN_IDS["im_start"],
            7,
        ]
        rows.append(tokens)

    length = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), length), TINY_TOKEN_IDS["pad"], dtype=torch.long)
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
