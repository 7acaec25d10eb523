"""A tiny random OmniSIFT configuration: offline, CPU-sized, with the real Qwen2.5-Omni structure.

Used by the tests, the examples and anyone who wants to try the API without downloading 7B weights. All sizes
follow the Qwen2.5-Omni processor's assumptions (128 mel bins, 14-pixel patches, temporal patch 2, merge size 2,
25 position ids per second, 2-second chunks) so that real processor outputs fit the model.
"""

from .configuration_omnisift import OmniSiftConfig

__all__ = ["TINY_TOKEN_IDS", "tiny_config"]

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
