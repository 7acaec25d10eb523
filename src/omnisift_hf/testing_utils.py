"""Tiny random OmniSIFT configurations: offline, CPU-sized, with the real Qwen2.5-Omni and Qwen3-Omni structures.

Used by the tests, the examples and anyone who wants to try the API without downloading 7B weights. The Qwen2.5-Omni
sizes follow its processor's assumptions (128 mel bins, 14-pixel patches, temporal patch 2, merge size 2, 25
position ids per second, 2-second chunks) so that real processor outputs fit the model; the Qwen3-Omni ones follow
its processor's (128 mel bins, 16-pixel patches, temporal patch 2, merge size 2, 13 position ids and about 13 audio
tokens per second, audio interleaved by timestamp).
"""

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tokenizers import Regex, Tokenizer, pre_tokenizers, trainers
from tokenizers.models import BPE
from transformers import (
    Qwen2_5OmniProcessor,
    Qwen2Tokenizer,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
    Qwen3OmniMoeProcessor,
    Qwen3OmniMoeThinkerConfig,
    WhisperFeatureExtractor,
)
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

from .media import AUDIO_TOKENS_PER_SECOND, CLIP_MEAN, CLIP_STD, SAMPLING_RATE
from .models.qwen2_5_omni.configuration_omnisift import OmniSiftConfig, OmniSiftOmniConfig
from .models.qwen2_5_omni.modeling_omnisift import (
    OmniSiftForConditionalGeneration,
    OmniSiftOmniForConditionalGeneration,
)
from .models.qwen3_omni_moe.configuration_omnisift import OmniSiftQwen3OmniConfig
from .models.qwen3_omni_moe.modeling_omnisift import OmniSiftQwen3OmniForConditionalGeneration
from .processing_omnisift import DEFAULT_SYSTEM_PROMPT

__all__ = [
    "QWEN3_AUDIO_TOKENS_PER_SECOND",
    "TINY_TOKEN_IDS",
    "audio_token_count",
    "qwen3_audio_token_count",
    "save_tiny_default",
    "tiny_config",
    "tiny_inputs",
    "tiny_model",
    "tiny_omni_config",
    "tiny_omni_model",
    "tiny_processor",
    "tiny_qwen3_config",
    "tiny_qwen3_inputs",
    "tiny_qwen3_model",
    "tiny_qwen3_processor",
    "tiny_qwen3_stock_config",
    "tiny_speakers",
    "tiny_tokenizer",
]

# The tiny vocabulary: ids 0..399 are the byte-level BPE of `tiny_tokenizer()` (256 bytes + 144 merges), then the
# Qwen2.5-Omni special tokens, in this order, then unused ids up to the embedding size 416. Padding is
# `<|endoftext|>`, as in Qwen2.5-Omni.
TINY_TEXT_VOCAB_SIZE = 400
TINY_VOCAB_SIZE = 416
TINY_SPECIAL_TOKENS = {
    "im_start": "<|im_start|>",
    "im_end": "<|im_end|>",
    "endoftext": "<|endoftext|>",
    "audio": "<|AUDIO|>",
    "image": "<|IMAGE|>",
    "video": "<|VIDEO|>",
    "vision_start": "<|vision_bos|>",
    "vision_end": "<|vision_eos|>",
    "audio_start": "<|audio_bos|>",
    "audio_end": "<|audio_eos|>",
}
TINY_TOKEN_IDS = {name: TINY_TEXT_VOCAB_SIZE + i for i, name in enumerate(TINY_SPECIAL_TOKENS)}
TINY_TOKEN_IDS["pad"] = TINY_TOKEN_IDS["endoftext"]


def tiny_config(**overrides) -> OmniSiftConfig:
    """A Qwen2.5-Omni thinker config with text hidden size 32 (2 layers), a 2-block vision encoder and a 2-layer audio
    encoder, plus the OmniSIFT knobs. Keyword arguments override top-level fields (e.g. `keep_ratio=0.35`)."""
    ids = TINY_TOKEN_IDS
    fields = {
        "text_config": {
            "vocab_size": TINY_VOCAB_SIZE,
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


# The tiny talker's codec vocabulary: codes 0..TINY_CODEC_VOCAB_SIZE-5, then pad, start, end and mask (as in
# Qwen2.5-Omni's 8448-entry codebook, whose last ids are the special codes). Its size covers the thinker's special
# token ids that the talker config repeats, so that transformers' vocabulary checks stay quiet.
TINY_CODEC_VOCAB_SIZE = TINY_VOCAB_SIZE
TINY_CODEC_IDS = {name: TINY_CODEC_VOCAB_SIZE - 4 + i for i, name in enumerate(("pad", "start", "end", "mask"))}
# The talker's text tokens (thinker vocabulary, unused ids of the tiny tokenizer) and the tiny speaker's bos.
TINY_TTS_TEXT_IDS = {"start": 410, "end": 411, "pad": 412, "speaker_bos": 413}


def tiny_omni_config(enable_audio_output: bool = True, **thinker_overrides) -> OmniSiftOmniConfig:
    """A full Qwen2.5-Omni config around `tiny_config(**thinker_overrides)`: a talker of hidden size 32 (2 layers),
    token2wav with a 2-layer DiT and a BigVGAN of 64 initial channels (the real upsample rates: 24 kHz output)."""
    ids = TINY_TOKEN_IDS
    talker = {
        "audio_token_index": ids["audio"],
        "image_token_index": ids["image"],
        "video_token_index": ids["video"],
        "vision_start_token_id": ids["vision_start"],
        "vision_end_token_id": ids["vision_end"],
        "audio_start_token_id": ids["audio_start"],
        "audio_end_token_id": ids["audio_end"],
        "vocab_size": TINY_CODEC_VOCAB_SIZE,
        "tts_codec_pad_token_id": TINY_CODEC_IDS["pad"],
        "tts_codec_start_token_id": TINY_CODEC_IDS["start"],
        "tts_codec_end_token_id": TINY_CODEC_IDS["end"],
        "tts_codec_mask_token_id": TINY_CODEC_IDS["mask"],
        "tts_text_start_token_id": TINY_TTS_TEXT_IDS["start"],
        "tts_text_end_token_id": TINY_TTS_TEXT_IDS["end"],
        "tts_text_pad_token_id": TINY_TTS_TEXT_IDS["pad"],
        "embedding_size": 32,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [1, 1, 2]},
    }
    token2wav = {
        "dit_config": {
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "head_dim": 16,
            "emb_dim": 16,
            "num_embeds": TINY_CODEC_VOCAB_SIZE,
            "enc_emb_dim": 16,
            "enc_dim": 16,
            "enc_channels": [32, 32, 32, 32, 96],
            "enc_attention_channels": 8,
            "enc_se_channels": 8,
            "look_ahead_layers": [1],
            "look_backward_layers": [0],
        },
        "bigvgan_config": {"upsample_initial_channel": 64},
    }
    return OmniSiftOmniConfig(
        thinker_config=tiny_config(**thinker_overrides),
        talker_config=talker,
        token2wav_config=token2wav,
        enable_audio_output=enable_audio_output,
    )


def tiny_speakers(seed: int = 0) -> dict[str, dict]:
    """Two random speakers in the format of Qwen2.5-Omni's `spk_dict.pt` (`cond`, `ref_mel`, `bos_token`)."""
    generator = torch.Generator().manual_seed(seed)
    return {
        name: {
            "cond": torch.randn(1, 16, generator=generator),
            "ref_mel": torch.randn(1, 30, 80, generator=generator),
            "bos_token": TINY_TTS_TEXT_IDS["speaker_bos"],
        }
        for name in ("Chelsie", "Ethan")
    }


PATCH_DIM = 3 * 2 * 14 * 14  # channels * temporal patch * patch * patch
SECONDS_PER_CHUNK = 2


def audio_token_count(num_mel_frames: int) -> int:
    """Audio tokens the Qwen2.5-Omni audio encoder makes from `num_mel_frames` mel frames."""
    return ((num_mel_frames - 1) // 2 + 1 - 2) // 2 + 1


def _chunks(times: list[float]) -> list[int]:
    """Sizes of the 2-second chunks of a non-decreasing list of position ids (as the processor splits them)."""
    per_chunk = AUDIO_TOKENS_PER_SECOND * SECONDS_PER_CHUNK
    sizes: dict[int, int] = {}
    for value in times:
        sizes[int(value // per_chunk)] = sizes.get(int(value // per_chunk), 0) + 1
    return [sizes.get(i, 0) for i in range(max(sizes) + 1)] if sizes else []


def _chunked_interleave(num_frames: int, per_frame: int, seconds_per_grid: float, num_audio: int) -> list[int]:
    """Qwen2.5-Omni's placeholders of a video with its audio: 2-second chunks of video tokens, each followed by the
    audio tokens of the same 2 seconds."""
    video_times = [i * seconds_per_grid * AUDIO_TOKENS_PER_SECOND for i in range(num_frames) for _ in range(per_frame)]
    video_chunks = _chunks(video_times)
    audio_chunks = _chunks(list(range(num_audio)))
    tokens = []
    for j in range(max(len(video_chunks), len(audio_chunks))):
        tokens += [TINY_TOKEN_IDS["video"]] * (video_chunks[j] if j < len(video_chunks) else 0)
        tokens += [TINY_TOKEN_IDS["audio"]] * (audio_chunks[j] if j < len(audio_chunks) else 0)
    return tokens


@dataclass(frozen=True)
class _TinyLayout:
    """How a backbone's processor lays out placeholders: vision patch size (flattened), audio tokens from mel frames,
    and the tokens of a video interleaved with its audio `(num_frames, per_frame, seconds_per_grid, num_audio)`."""

    patch_dim: int
    audio_token_count: Callable[[int], int]
    interleave: Callable[[int, int, float, int], list[int]]


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
    return _tiny_inputs(
        samples, seed, seconds_per_grid, _TinyLayout(PATCH_DIM, audio_token_count, _chunked_interleave)
    )


def _tiny_inputs(samples: list[list[tuple]], seed: int, seconds_per_grid: float, layout: _TinyLayout) -> dict:
    """`tiny_inputs` / `tiny_qwen3_inputs` for the placeholder `layout` of a backbone."""
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
                n = layout.audio_token_count(segment[1])
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
                tokens += [TINY_TOKEN_IDS["vision_start"], TINY_TOKEN_IDS["audio_start"]]
                tokens += layout.interleave(t, per_frame, seconds_per_grid, layout.audio_token_count(mel))
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
        inputs["pixel_values_videos"] = torch.randn(patches, layout.patch_dim, generator=generator)
        inputs["video_grid_thw"] = torch.tensor(videos, dtype=torch.long)
        inputs["video_second_per_grid"] = torch.full((len(videos),), seconds_per_grid)
    if images:
        inputs["pixel_values"] = torch.randn(sum(h * w for h, w in images), layout.patch_dim, generator=generator)
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


# ---------------------------------------------------------------------------------------------------------------------
# The embedded default: tokenizer, processor, model and a synthetic clip, all built offline in seconds.
# ---------------------------------------------------------------------------------------------------------------------
# A ChatML template that renders like Qwen2.5-Omni's: a default system turn, media items as
# <|vision_bos|><|VIDEO|><|vision_eos|> / <|vision_bos|><|IMAGE|><|vision_eos|> / <|audio_bos|><|AUDIO|><|audio_eos|>
# placeholders (the processor expands them), text items verbatim.
TINY_CHAT_TEMPLATE = (
    "{%- set default_system = '" + DEFAULT_SYSTEM_PROMPT + "' -%}"
    "{%- if messages[0]['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\n' + default_system + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' or 'image' in item or 'image_url' in item -%}"
    "{{- '<|vision_bos|><|IMAGE|><|vision_eos|>' -}}"
    "{%- elif item['type'] == 'video' or 'video' in item -%}{{- '<|vision_bos|><|VIDEO|><|vision_eos|>' -}}"
    "{%- elif item['type'] == 'audio' or 'audio' in item -%}{{- '<|audio_bos|><|AUDIO|><|audio_eos|>' -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

_COLORS = ("red", "green", "blue", "yellow", "white", "black", "orange", "purple")
_SHAPES = ("square", "circle", "ball", "box", "person", "dog", "car", "bird")
_ACTIONS = ("moves left", "moves right", "jumps", "stays still", "spins", "falls", "grows", "disappears")
_SOUNDS = ("a low tone", "a high tone", "a beep", "music", "speech", "silence", "a whistle", "a drum")


def _tokenizer_corpus() -> list[str]:
    """A few hundred template sentences about clips: enough text for 144 BPE merges."""
    lines = [
        "system\nuser\nassistant\n" + DEFAULT_SYSTEM_PROMPT,
        "What is happening in this video? Describe the clip.",
    ]
    for color in _COLORS:
        for shape in _SHAPES:
            lines.append(f"What color is the {shape}? The {shape} is {color}.")
            for action in _ACTIONS:
                sound = _SOUNDS[(len(color) + len(action)) % len(_SOUNDS)]
                lines.append(f"The {color} {shape} {action} while we hear {sound}.")
    lines += [f"What sound do you hear in the audio? I hear {sound}." for sound in _SOUNDS]
    return lines


def tiny_tokenizer():
    """A `Qwen2Tokenizer` (byte-level BPE, Qwen's pre-tokenizer) with a 400-token vocabulary trained in code on
    template sentences, plus every special token the Qwen2.5-Omni chat template and processor use, at the ids of
    `TINY_TOKEN_IDS`. Deterministic: the same vocabulary on every machine."""
    bpe = Tokenizer(BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_TEXT_VOCAB_SIZE, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(_tokenizer_corpus(), trainer)
    trained = json.loads(bpe.to_str())["model"]
    if len(trained["vocab"]) != TINY_TEXT_VOCAB_SIZE:  # a tokenizers release that merges differently
        raise RuntimeError(f"tiny tokenizer: expected {TINY_TEXT_VOCAB_SIZE} BPE tokens, got {len(trained['vocab'])}")
    vocab = dict(trained["vocab"])
    vocab.update({token: TINY_TOKEN_IDS[name] for name, token in TINY_SPECIAL_TOKENS.items()})
    merges = [tuple(pair) if isinstance(pair, list) else tuple(pair.split(" ")) for pair in trained["merges"]]
    special = TINY_SPECIAL_TOKENS
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token=special["im_end"],
        pad_token=special["endoftext"],
        extra_special_tokens={
            "image_token": special["image"],
            "audio_token": special["audio"],
            "video_token": special["video"],
            "vision_bos_token": special["vision_start"],
            "vision_eos_token": special["vision_end"],
            "audio_bos_token": special["audio_start"],
            "audio_eos_token": special["audio_end"],
        },
        padding_side="left",
        model_max_length=32768,
    )
    # Every special token is atomic when it appears in text (the vocabulary already holds them at their ids).
    tokenizer.add_tokens(list(special.values()), special_tokens=True)
    for name, token in special.items():
        if tokenizer.convert_tokens_to_ids(token) != TINY_TOKEN_IDS[name]:
            raise RuntimeError(f"tiny tokenizer: {token} got id {tokenizer.convert_tokens_to_ids(token)}")
    return tokenizer


def tiny_processor():
    """A `Qwen2_5OmniProcessor` for the tiny model: `tiny_tokenizer()`, Qwen2.5-Omni's image/video processors (14-pixel
    patches, temporal patch 2, merge size 2) and its 128-bin Whisper feature extractor (16 kHz), with
    `TINY_CHAT_TEMPLATE`. `save_pretrained` / `AutoProcessor.from_pretrained` round-trip offline."""
    vision = {
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": list(CLIP_MEAN),
        "image_std": list(CLIP_STD),
    }
    return Qwen2_5OmniProcessor(
        image_processor=Qwen2VLImageProcessor(**vision),
        video_processor=Qwen2VLVideoProcessor(**vision),
        feature_extractor=WhisperFeatureExtractor(feature_size=128, sampling_rate=SAMPLING_RATE, chunk_length=300),
        tokenizer=tiny_tokenizer(),
        chat_template=TINY_CHAT_TEMPLATE,
    )


def tiny_model(seed: int = 0, **config_overrides):
    """A randomly initialised `OmniSiftForConditionalGeneration` on `tiny_config(**config_overrides)`, in eval mode,
    with a generation config that stops at `<|im_end|>` and pads with `<|endoftext|>`."""
    torch.manual_seed(seed)
    model = OmniSiftForConditionalGeneration(tiny_config(**config_overrides)).eval()
    _tiny_generation_settings(model.generation_config)
    return model


def _tiny_generation_settings(generation_config) -> None:
    """Stop at `<|im_end|>` (or `<|endoftext|>`) and pad with `<|endoftext|>`, as Qwen's omni models do."""
    generation_config.eos_token_id = [TINY_TOKEN_IDS["im_end"], TINY_TOKEN_IDS["endoftext"]]
    generation_config.pad_token_id = TINY_TOKEN_IDS["pad"]


def tiny_omni_model(seed: int = 0, enable_audio_output: bool = True, **thinker_overrides):
    """A randomly initialised `OmniSiftOmniForConditionalGeneration` on `tiny_omni_config(...)`, in eval mode, with
    the thinker's generation settings of `tiny_model` and the speakers of `tiny_speakers(seed)`."""
    torch.manual_seed(seed)
    model = OmniSiftOmniForConditionalGeneration(tiny_omni_config(enable_audio_output, **thinker_overrides)).eval()
    _tiny_generation_settings(model.thinker.generation_config)
    model.speaker_map = tiny_speakers(seed)
    return model


def save_tiny_default(directory, seed: int = 0) -> str:
    """Write `tiny_model(seed)` and `tiny_processor()` into `directory` (one directory that `from_pretrained`,
    `AutoProcessor.from_pretrained` and `pipeline("omni-qa", model=directory)` load) and return its path."""
    tiny_model(seed).save_pretrained(directory)
    tiny_processor().save_pretrained(directory)
    return os.fspath(directory)


# ---------------------------------------------------------------------------------------------------------------------
# Qwen3-Omni: the MoE thinker on the same tiny vocabulary
# ---------------------------------------------------------------------------------------------------------------------
QWEN3_PATCH_DIM = 3 * 2 * 16 * 16  # channels * temporal patch * patch * patch
# Qwen3-Omni's processor: 13 M-RoPE temporal ids per second, and about 13 audio tokens per second of audio.
QWEN3_AUDIO_TOKENS_PER_SECOND = 13


def qwen3_audio_token_count(num_mel_frames: int, n_window: int = 50) -> int:
    """Audio tokens the Qwen3-Omni audio encoder makes from `num_mel_frames` mel frames (13 per 100 frames, i.e. per
    second, plus those of the last partial window)."""
    window = 2 * n_window
    rest = (num_mel_frames % window - 1) // 2 + 1
    return ((rest - 1) // 2 + 1 - 1) // 2 + 1 + (num_mel_frames // window) * 13


def _timestamp_interleave(num_frames: int, per_frame: int, seconds_per_grid: float, num_audio: int) -> list[int]:
    """Qwen3-Omni's placeholders of a video with its audio (as `Qwen3OmniMoeProcessor.replace_video_with_audio_token`):
    each frame grid at its start time, followed by the audio tokens up to the next grid (one position id each)."""
    video_times = [
        i * seconds_per_grid * QWEN3_AUDIO_TOKENS_PER_SECOND for i in range(num_frames) for _ in range(per_frame)
    ]
    tokens, video, audio = [], 0, 0
    while video < len(video_times) and audio < num_audio:
        if video_times[video] <= audio:
            tokens.append(TINY_TOKEN_IDS["video"])
            video += 1
        else:
            tokens.append(TINY_TOKEN_IDS["audio"])
            audio += 1
    return (
        tokens
        + [TINY_TOKEN_IDS["video"]] * (len(video_times) - video)
        + [TINY_TOKEN_IDS["audio"]] * (num_audio - audio)
    )


def _tiny_qwen3_fields() -> dict:
    """The fields of the tiny Qwen3-Omni thinker config (see `tiny_qwen3_config`), without the OmniSIFT knobs."""
    ids = TINY_TOKEN_IDS
    return {
        "text_config": {
            "vocab_size": TINY_VOCAB_SIZE,
            "hidden_size": 32,
            "intermediate_size": 64,
            "moe_intermediate_size": 16,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 1, 1]},
            "pad_token_id": ids["pad"],
            "eos_token_id": ids["im_end"],
        },
        "vision_config": {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 32,
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [0, 1],
        },
        "audio_config": {
            "num_mel_bins": 128,
            "encoder_layers": 2,
            "encoder_attention_heads": 2,
            "encoder_ffn_dim": 64,
            "d_model": 32,
            "output_dim": 32,
            "downsample_hidden_size": 8,
        },
        "audio_token_id": ids["audio"],
        "image_token_id": ids["image"],
        "video_token_id": ids["video"],
        "vision_start_token_id": ids["vision_start"],
        "vision_end_token_id": ids["vision_end"],
        "audio_start_token_id": ids["audio_start"],
        "user_token_id": 5,
        "position_id_per_seconds": QWEN3_AUDIO_TOKENS_PER_SECOND,
    }


def tiny_qwen3_config(**overrides) -> OmniSiftQwen3OmniConfig:
    """A Qwen3-Omni MoE thinker config: text hidden size 32 (3 layers, 4 experts, 2 per token), a 2-block vision
    encoder (16-pixel patches) whose two blocks both feed deepstack (added after decoder layers 0 and 1), a 2-layer
    audio encoder, 13 position ids per second (the Qwen3-Omni processor's), plus the OmniSIFT knobs. Keyword arguments
    override top-level fields (e.g. `keep_ratio=0.35`)."""
    fields = {**_tiny_qwen3_fields(), "selector_hidden_size": 16, "selector_num_heads": 2, "selector_mlp_size": 8}
    return OmniSiftQwen3OmniConfig(**{**fields, **overrides})


def tiny_qwen3_stock_config(**overrides) -> Qwen3OmniMoeThinkerConfig:
    """The stock `Qwen3OmniMoeThinkerConfig` with exactly the sizes and token ids of `tiny_qwen3_config` (no OmniSIFT
    knobs): what equivalence tests build the stock thinker from."""
    return Qwen3OmniMoeThinkerConfig(**{**_tiny_qwen3_fields(), **overrides})


def tiny_qwen3_model(seed: int = 0, **config_overrides) -> OmniSiftQwen3OmniForConditionalGeneration:
    """A randomly initialised `OmniSiftQwen3OmniForConditionalGeneration` on `tiny_qwen3_config(**config_overrides)`,
    in eval mode, with the generation settings of `tiny_model`."""
    torch.manual_seed(seed)
    model = OmniSiftQwen3OmniForConditionalGeneration(tiny_qwen3_config(**config_overrides)).eval()
    _tiny_generation_settings(model.generation_config)
    return model


# The tiny Qwen3-Omni chat template: `TINY_CHAT_TEMPLATE` without the default system turn (Qwen3-Omni's template adds
# none).
TINY_QWEN3_CHAT_TEMPLATE = TINY_CHAT_TEMPLATE.replace(
    "{%- if messages[0]['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\n' + default_system + '<|im_end|>\\n' -}}"
    "{%- endif -%}",
    "",
)


def tiny_qwen3_processor() -> Qwen3OmniMoeProcessor:
    """A `Qwen3OmniMoeProcessor` for `tiny_qwen3_model`: `tiny_tokenizer()`, Qwen2-VL image/video processors with
    Qwen3-Omni's 16-pixel patches (temporal patch 2, merge size 2; video frames within the processor's 128..768
    tokens of 32 x 32 pixels) and the 128-bin Whisper feature extractor (16 kHz), with a chat template like
    `TINY_CHAT_TEMPLATE` but without a default system turn. Its placeholder layout is `tiny_qwen3_inputs`' (13 audio
    tokens per second, audio interleaved by timestamp). `save_pretrained` / `AutoProcessor.from_pretrained`
    round-trip offline."""
    vision = {
        "patch_size": 16,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": list(CLIP_MEAN),
        "image_std": list(CLIP_STD),
    }
    video_size = {"shortest_edge": 128 * 32 * 32, "longest_edge": 768 * 32 * 32}
    return Qwen3OmniMoeProcessor(
        image_processor=Qwen2VLImageProcessor(**vision),
        video_processor=Qwen2VLVideoProcessor(**vision, size=video_size),
        feature_extractor=WhisperFeatureExtractor(feature_size=128, sampling_rate=SAMPLING_RATE, chunk_length=300),
        tokenizer=tiny_tokenizer(),
        chat_template=TINY_QWEN3_CHAT_TEMPLATE,
    )


def tiny_qwen3_inputs(samples: list[list[tuple]], seed: int = 0, seconds_per_grid: float = 1.0) -> dict:
    """Model inputs of `tiny_qwen3_model` for a batch of synthetic samples (the segments of `tiny_inputs`),
    left-padded, laid out as `Qwen3OmniMoeProcessor` lays out placeholders: 16-pixel patches, about 13 audio tokens
    per second (`qwen3_audio_token_count`), a video's audio interleaved by timestamp (each frame grid followed by the
    audio up to the next grid). `seconds_per_grid` may be fractional (`2 / fps`). Media are random."""
    layout = _TinyLayout(QWEN3_PATCH_DIM, qwen3_audio_token_count, _timestamp_interleave)
    return _tiny_inputs(samples, seed, seconds_per_grid, layout)
