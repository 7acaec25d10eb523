"""Build what the vLLM tests compare against, in the package's own environment (transformers 5.24): a tiny OmniSIFT
checkpoint vLLM can run on CPU, synthetic media, and the transformers model's prefill and greedy tokens for each case.

    python tests/vllm_plugin/reference.py OUT_DIR

writes OUT_DIR/{keep_0.25,keep_1.0}/ (thinker checkpoints, same weights, float32), OUT_DIR/full_0.25/ (a full
checkpoint, talker included, whose thinker has the same weights), OUT_DIR/media.npz, OUT_DIR/clip.mp4 (a
synthetic clip with audio, for `vllm serve`) and OUT_DIR/cases.json. Each case: the prompt text, its media, its
processor kwargs, and per checkpoint the kept prompt ids the decoder reads, their M-RoPE positions, the greedy reply.

    python tests/vllm_plugin/reference.py OUT_DIR --served

adds the case "served": clip.mp4 as vLLM decoded it (OUT_DIR/served.npz, written by the vLLM tests with vLLM's own
media loader), so that a served answer is compared with the transformers model on the very same frames and samples.
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from omnisift_hf import OmniSiftForConditionalGeneration, OmniSiftOmniForConditionalGeneration
from omnisift_hf.testing_utils import TINY_TOKEN_IDS, tiny_config, tiny_omni_config, tiny_processor, tiny_speakers
from omnisift_hf.tools.synthetic import write_synthetic_clip
from omnisift_hf.tools.vllm_benchmark import config_overrides

MAX_NEW_TOKENS = 8
SAMPLING_RATE = 16000
FPS = 2.0


def vllm_sized_fields(keep_ratio: float) -> dict:
    """`tiny_config` fields with attention heads of 32 (vLLM's CPU attention supports 32 and up)."""
    return {"keep_ratio": keep_ratio, **config_overrides(quick=True)}


def vllm_sized_config(keep_ratio: float):
    return tiny_config(**vllm_sized_fields(keep_ratio))


def save_full_model(directory: Path, thinker_weights: dict, keep_ratio: float) -> None:
    """A full OmniSIFT checkpoint (thinker, talker, token2wav; `model_type` omnisift_omni) whose thinker has
    `thinker_weights`: vLLM serves its thinker and drops the rest."""
    config = tiny_omni_config(**vllm_sized_fields(keep_ratio))
    config.talker_config.embedding_size = config.thinker_config.text_config.hidden_size
    model = OmniSiftOmniForConditionalGeneration(config).eval()
    model.thinker.load_state_dict(thinker_weights)
    model.speaker_map = tiny_speakers()
    model.save_pretrained(directory)


def clip(seed: int, frames: int, size: int, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """A moving coloured square on a noisy background and a tone with a beep: (frames, size, size, 3) uint8 and
    float32 mono audio. The noise keeps patches distinct: on a flat background, identical patches tie in STVP's
    scores and encoder rounding (vLLM's kernels vs transformers') decides which copy is kept."""
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 255, (frames, size, size, 3), dtype=np.uint8)
    for i in range(frames):
        x = (i * 7 + seed * 13) % (size - 24)
        video[i, 10:34, x : x + 24] = rng.integers(0, 255, 3, dtype=np.uint8)
    t = np.arange(int(seconds * SAMPLING_RATE)) / SAMPLING_RATE
    audio = 0.2 * np.sin(2 * math.pi * (220 + 40 * seed) * t)
    beep = (t > seconds / 3) & (t < seconds / 3 + 0.4)
    audio[beep] += 0.4 * np.sin(2 * math.pi * 1500 * t[beep])
    audio += 0.05 * rng.standard_normal(audio.shape)
    return video, audio.astype(np.float32)


def cases(out: Path, served: bool) -> tuple[dict, dict[str, np.ndarray]]:
    if served:
        with np.load(out / "served.npz") as data:
            media = {"video_served": data["video"], "audio_served": data["audio"]}
        spec = {
            "served": {"content": [("video", "video_served")], "audio": ["audio_served"], "use_audio_in_video": True}
        }
        return spec, media
    video_a, audio_a = clip(1, 8, 112, 4.0)
    video_b, audio_b = clip(2, 12, 112, 6.0)
    image = clip(3, 1, 112, 1.0)[0][0]
    media = {"video_a": video_a, "audio_a": audio_a, "video_b": video_b, "audio_b": audio_b, "image": image}
    spec = {
        "video_audio_a": {"content": [("video", "video_a")], "audio": ["audio_a"], "use_audio_in_video": True},
        "video_audio_b": {"content": [("video", "video_b")], "audio": ["audio_b"], "use_audio_in_video": True},
        "silent_video": {"content": [("video", "video_b")], "audio": [], "use_audio_in_video": False},
        "audio_only": {"content": [("audio", "audio_a")], "audio": ["audio_a"], "use_audio_in_video": False},
        "image": {"content": [("image", "image")], "audio": [], "use_audio_in_video": False},
        "text": {"content": [], "audio": [], "use_audio_in_video": False},
    }
    return spec, media


def render(processor, content) -> str:
    items = [{"type": kind} for kind, _ in content] + [{"type": "text", "text": "what happens in the clip"}]
    return processor.apply_chat_template(
        [{"role": "user", "content": items}], add_generation_prompt=True, tokenize=False
    )


def main(out_dir: str, served: bool = False) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    processor = tiny_processor()
    spec, media = cases(out, served)
    if not served:
        np.savez(out / "media.npz", **media)
        write_synthetic_clip(out / "clip.mp4", seconds=4.0, fps=int(FPS), size=(112, 112))
    torch.manual_seed(0)
    weights = OmniSiftForConditionalGeneration(vllm_sized_config(0.25)).state_dict()
    results = {}
    for keep in (0.25, 1.0):
        model = OmniSiftForConditionalGeneration(vllm_sized_config(keep)).eval()
        model.load_state_dict(weights)
        model.generation_config.eos_token_id = [TINY_TOKEN_IDS["im_end"]]
        model.generation_config.pad_token_id = TINY_TOKEN_IDS["pad"]
        if not served:
            model.save_pretrained(out / f"keep_{keep}")
            processor.save_pretrained(out / f"keep_{keep}")
            if keep == 0.25:
                save_full_model(out / "full_0.25", weights, keep)
                processor.save_pretrained(out / "full_0.25")
        for name, case in spec.items():
            text = render(processor, case["content"])
            kwargs = {"text": [text], "return_tensors": "pt"}
            videos = [media[key] for kind, key in case["content"] if kind == "video"]
            images = [media[key] for kind, key in case["content"] if kind == "image"]
            if videos:
                kwargs["videos"] = videos
                kwargs["videos_kwargs"] = {"fps": FPS}
            if images:
                kwargs["images"] = images
            if case["audio"]:
                kwargs["audio"] = [media[key] for key in case["audio"]]
                kwargs["audio_kwargs"] = {"max_length": max(len(a) for a in kwargs["audio"]) + 160}
            if case["use_audio_in_video"]:
                kwargs["load_audio_from_video"] = True
                kwargs["audio_from_video_indices"] = [0]
            inputs = processor(**kwargs)
            with torch.no_grad():
                inputs["use_audio_in_video"] = case["use_audio_in_video"]
                prefill = model(**inputs)
                generated = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
            prompt_len = inputs["input_ids"].shape[1]
            if prefill.kept_token_index is not None:
                kept_ids = inputs["input_ids"][0, prefill.kept_token_index[0]]
                positions = prefill.kept_position_ids[1:, 0]
            else:
                kept_ids = inputs["input_ids"][0]
                positions, _ = model.model.get_rope_index(
                    inputs["input_ids"],
                    inputs.get("image_grid_thw"),
                    inputs.get("video_grid_thw"),
                    inputs["attention_mask"],
                    case["use_audio_in_video"],
                    inputs["feature_attention_mask"].sum(-1) if "feature_attention_mask" in inputs else None,
                    inputs.get("video_second_per_grid"),
                )
                positions = positions[:, 0]
            results.setdefault(name, {"text": text, **case})[f"keep_{keep}"] = {
                "prompt_ids": kept_ids.tolist(),
                "positions": positions.tolist(),
                "unpruned_length": prompt_len,
                "reply": generated[0, prompt_len:].tolist(),
            }
    (out / ("served.json" if served else "cases.json")).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], served="--served" in sys.argv[2:])
