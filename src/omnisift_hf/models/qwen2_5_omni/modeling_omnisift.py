"""OmniSIFT for Qwen2.5-Omni: the thinker with token compression between its encoders and its language model, and the
full model (thinker, talker, token2wav) whose spoken replies are generated from the kept tokens only."""

import os
from dataclasses import dataclass

import torch
from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping
from transformers.modeling_outputs import MultimodalCausalLMOutputWithPast
from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import (
    Qwen2_5OmniForConditionalGeneration,
    Qwen2_5OmniPreTrainedModel,
    Qwen2_5OmniTalkerForConditionalGeneration,
    Qwen2_5OmniThinkerForConditionalGeneration,
    Qwen2_5OmniToken2WavModel,
)
from transformers.utils import cached_file, logging
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import ModelOutput, can_return_tuple

from .._shared_modeling import (
    OmniSiftKeptTokensOutput,
    OmniSiftThinkerMixin,
    TokenSelector,
    push_with_processor,
    report_untrained_selector,
    save_processor,
    write_model_remote_code,
)
from .._shared_modeling import remote_code_auto_map as _remote_code_auto_map
from .configuration_omnisift import OmniSiftConfig, OmniSiftOmniConfig

logger = logging.get_logger(__name__)

__all__ = [
    "AUTO_MODEL_CLASSES",
    "OMNI_AUTO_MODEL_CLASSES",
    "OmniSiftCausalLMOutputWithPast",
    "OmniSiftForConditionalGeneration",
    "OmniSiftOmniForConditionalGeneration",
    "OmniSiftOmniGenerateOutput",
    "OmniSiftTalkerForConditionalGeneration",
    "TokenSelector",
    "remote_code_auto_map",
]

# The Auto classes that resolve the `omnisift` model type (see the registration in `__init__.py`). A saved directory
# lists each of them in `auto_map`, so that each also loads it with `trust_remote_code=True`.
AUTO_MODEL_CLASSES = ("AutoModel", "AutoModelForImageTextToText", "AutoModelForMultimodalLM")
# The same for the full model (`omnisift_omni`): the Auto classes transformers maps Qwen2.5-Omni's full model to, and
# `AutoModel`.
OMNI_AUTO_MODEL_CLASSES = ("AutoModel", "AutoModelForMultimodalLM", "AutoModelForTextToWaveform")
# The speakers of a full Qwen2.5-Omni checkpoint (each a `cond` vector, a `ref_mel` spectrogram and a `bos_token`).
SPEAKERS_NAME = "spk_dict.pt"

# Qwen2.5-Omni checkpoints store the thinker under `thinker.` (and its decoder under `thinker.model.`); transformers
# renames those keys only for classes it knows or that are registered. Without this line every decoder weight would be
# silently re-initialised. The selector lives at the top level (`compressor.*`), outside `model.`, so the stock
# renaming of `model.*` into `model.language_model.*` never touches it.
register_checkpoint_conversion_mapping(
    "OmniSiftForConditionalGeneration",
    get_checkpoint_conversion_mapping("Qwen2_5OmniThinkerForConditionalGeneration"),
    overwrite=True,
)


@dataclass
class OmniSiftCausalLMOutputWithPast(OmniSiftKeptTokensOutput, MultimodalCausalLMOutputWithPast):
    r"""
    Output of [`OmniSiftForConditionalGeneration`]: the thinker's output plus what compression kept (the fields of
    [`~omnisift_hf.models._shared_modeling.OmniSiftKeptTokensOutput`]: `num_video_tokens`, `num_kept_video_tokens`,
    `num_audio_tokens`, `num_kept_audio_tokens` `(batch_size,)`, `kept_token_index`, `kept_attention_mask`
    `(batch_size, kept_length)` and `kept_position_ids` `(4, batch_size, kept_length)`).
    """


class OmniSiftForConditionalGeneration(OmniSiftThinkerMixin, Qwen2_5OmniThinkerForConditionalGeneration):
    r"""
    Qwen2.5-Omni thinker (text output) with OmniSIFT token compression: after the audio and vision encoders and
    before the language model, spatio-temporal video pruning (STVP) drops redundant video tokens and the
    vision-guided audio selector (VGAS, `self.compressor`) drops audio tokens. Kept tokens keep their M-RoPE
    positions. `keep_ratio=1.0` is exactly Qwen2.5-Omni.

    Loads Qwen2.5-Omni checkpoints (full model or thinker; the selector is then untrained) and its own.

    Example:

    ```python
    >>> import torch
    >>> from omnisift_hf import OmniSiftConfig, OmniSiftForConditionalGeneration

    >>> config = OmniSiftConfig(
    ...     text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
    ...                  "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 64,
    ...                  "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3]}},
    ...     vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2,
    ...                    "out_hidden_size": 32, "fullatt_block_indexes": [0]},
    ...     audio_config={"encoder_layers": 1, "d_model": 16, "encoder_attention_heads": 2,
    ...                   "encoder_ffn_dim": 32, "output_dim": 32},
    ...     selector_hidden_size=16, selector_num_heads=2, selector_mlp_size=8,
    ... )
    >>> model = OmniSiftForConditionalGeneration(config)
    >>> out = model(input_ids=torch.tensor([[1, 2, 3]]), keep_ratio=0.25)
    >>> out.logits.shape
    torch.Size([1, 3, 64])
    ```
    """

    config_class = OmniSiftConfig
    config: OmniSiftConfig
    auto_model_classes = AUTO_MODEL_CLASSES
    _output_class = OmniSiftCausalLMOutputWithPast
    # The selector runs as one unit: `device_map="auto"` must never split it across devices.
    _no_split_modules = [*Qwen2_5OmniThinkerForConditionalGeneration._no_split_modules, "OmniSiftAudioSelector"]

    # Overwritten -- OmniSIFT between the encoders and the language model, with the parent's explicit signature plus
    # the compression knobs (see `OmniSiftThinkerMixin._omnisift_forward`).
    forward = can_return_tuple(OmniSiftThinkerMixin._omnisift_forward)


class OmniSiftTalkerForConditionalGeneration(Qwen2_5OmniTalkerForConditionalGeneration):
    r"""
    The Qwen2.5-Omni talker, prompted with given M-RoPE positions: [`OmniSiftOmniForConditionalGeneration`] hands it
    only the positions its thinker kept, whose ids cannot be recomputed from the kept token ids. Without
    `prompt_position_ids` it is exactly the stock talker (same weights, same checkpoint keys).
    """

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        thinker_reply_part: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        prompt_position_ids: torch.LongTensor | None = None,
        **kwargs,
    ):
        r"""
        Arguments of [`Qwen2_5OmniTalkerForConditionalGeneration.forward`], plus:

        prompt_position_ids (`torch.LongTensor` of shape `(3, B, S)`, *optional*):
            Temporal, height and width M-RoPE positions of the prompt (`inputs_embeds` at the prefill, `S` long),
            used in place of the positions the stock talker computes from `input_text_ids` and the media grids.
            `generate` hands it to every step: decode steps continue from its maximum over the attended prompt
            positions + 1.
        """
        # Overwritten -- take the prompt's positions as given (and add the codec pad/bos embeddings to its last two
        # rows at the prefill, which the parent does only when it computes the positions itself). Decode positions
        # are derived from them at each step, not from `self.rope_deltas`, so threads sharing the model cannot mix
        # them up.
        if prompt_position_ids is not None and position_ids is None:
            length = prompt_position_ids.shape[-1]
            if attention_mask is None:
                attended = torch.ones(
                    prompt_position_ids.shape[1:], dtype=torch.bool, device=prompt_position_ids.device
                )
            else:
                attended = attention_mask[:, :length].bool()
            highest = prompt_position_ids.masked_fill(~attended.unsqueeze(0), 0).amax(dim=(0, 2))  # (B,)
            past = 0 if cache is None else cache.get_seq_length()
            if past == 0 and inputs_embeds is not None:
                codec_ids = torch.tensor([self.codec_pad_token, self.codec_bos_token], device=inputs_embeds.device)
                codec_embeds = self.get_input_embeddings()(codec_ids).to(inputs_embeds.dtype)  # (2, D)
                inputs_embeds = torch.cat([inputs_embeds[:, :-2], inputs_embeds[:, -2:] + codec_embeds], dim=1)
                position_ids = prompt_position_ids
            else:
                steps = (inputs_embeds if inputs_embeds is not None else input_ids).shape[1]
                offsets = torch.arange(steps, device=highest.device)
                position_ids = (highest + 1 - length + past).unsqueeze(1) + offsets  # (B, steps)
                position_ids = position_ids.unsqueeze(0).expand(3, -1, -1)  # (3, B, steps)
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            thinker_reply_part=thinker_reply_part,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )


@dataclass
class OmniSiftOmniGenerateOutput(ModelOutput):
    r"""
    What [`OmniSiftOmniForConditionalGeneration.generate`] returns for a spoken reply with
    `return_dict_in_generate=True`: the reply, its waveforms and what the thinker's compression kept.

    sequences (`torch.LongTensor` of shape `(B, L + new_tokens)`):
        The prompt ids followed by the thinker's reply (as `generate` returns them for text).
    audio (`list[torch.FloatTensor]`):
        One mono 24 kHz waveform `(num_samples,)` per sample, each trimmed to its own length.
    audio_codes (`list[torch.LongTensor]`):
        The talker's codec codes of each sample (before token2wav), without the end token.
    talker_prompt_length (`int`):
        Length of the talker's prefill (`K + 2`: the kept prompt positions, the speaker's bos and the first reply
        token; `L + 2` without compression).
    num_video_tokens, num_kept_video_tokens, num_audio_tokens, num_kept_audio_tokens (`torch.LongTensor`, *optional*):
        The thinker's counts `(B,)`, as in [`OmniSiftCausalLMOutputWithPast`] (`None` without audio/video).
    kept_token_index (`torch.LongTensor` of shape `(B, K)`, *optional*):
        As in [`OmniSiftCausalLMOutputWithPast`]; `None` when nothing was compressed.
    """

    sequences: torch.LongTensor | None = None
    audio: list[torch.FloatTensor] | None = None
    audio_codes: list[torch.LongTensor] | None = None
    talker_prompt_length: int | None = None
    num_video_tokens: torch.LongTensor | None = None
    num_kept_video_tokens: torch.LongTensor | None = None
    num_audio_tokens: torch.LongTensor | None = None
    num_kept_audio_tokens: torch.LongTensor | None = None
    kept_token_index: torch.LongTensor | None = None


# Arguments of the full model's `generate` that only the thinker reads: its inputs, media and compression knobs. The
# stock model also hands the unprefixed ones to the talker, which refuses the media ones (video input with audio output
# fails there); here the talker gets its positions and mask from the thinker instead.
_THINKER_ONLY_KWARGS = frozenset(
    {
        "attention_mask",
        "input_features",
        "feature_attention_mask",
        "audio_feature_lengths",
        "pixel_values",
        "pixel_values_videos",
        "image_grid_thw",
        "video_grid_thw",
        "video_second_per_grid",
        "mm_encoder_outputs",
        "use_audio_in_video",
        "keep_ratio",
        "video_keep_ratio",
        "audio_keep_ratio",
        "token_selector",
        "return_dict_in_generate",
        "output_hidden_states",
    }
)
_GENERATION_MODES = {None: None, True: "audio", False: "text", "audio": "audio", "text": "text"}


class OmniSiftOmniForConditionalGeneration(Qwen2_5OmniForConditionalGeneration):
    r"""
    The full Qwen2.5-Omni (thinker, talker, token2wav) with OmniSIFT in its thinker: text and spoken replies, the
    talker prompted with the thinker's kept positions only, so its prefill and cache shrink as much as the thinker's.
    `self.thinker` is an [`OmniSiftForConditionalGeneration`]; `keep_ratio=1.0` is exactly Qwen2.5-Omni.

    Loads full Qwen2.5-Omni checkpoints (with their `spk_dict.pt`; the selector is then untrained) and its own.

    Example:

    ```python
    >>> from omnisift_hf import OmniSiftConfig, OmniSiftOmniConfig, OmniSiftOmniForConditionalGeneration

    >>> thinker = OmniSiftConfig(
    ...     text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
    ...                  "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 64,
    ...                  "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3]}},
    ...     vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2,
    ...                    "out_hidden_size": 32, "fullatt_block_indexes": [0]},
    ...     audio_config={"encoder_layers": 1, "d_model": 16, "encoder_attention_heads": 2,
    ...                   "encoder_ffn_dim": 32, "output_dim": 32},
    ...     selector_hidden_size=16, selector_num_heads=2, selector_mlp_size=8,
    ... )
    >>> config = OmniSiftOmniConfig(thinker_config=thinker, enable_audio_output=False)
    >>> model = OmniSiftOmniForConditionalGeneration(config)
    >>> type(model.thinker).__name__
    'OmniSiftForConditionalGeneration'
    ```
    """

    config_class = OmniSiftOmniConfig
    config: OmniSiftOmniConfig
    auto_model_classes = OMNI_AUTO_MODEL_CLASSES
    _no_split_modules = [
        "OmniSiftTalkerForConditionalGeneration",
        "Qwen2_5OmniToken2WavModel",
        "OmniSiftAudioSelector",
    ]

    def __init__(self, config: OmniSiftOmniConfig):
        # Overwritten -- the parent builds the stock thinker and talker; build OmniSIFT's, under the same attribute
        # names, so that Qwen2.5-Omni checkpoints load unchanged.
        Qwen2_5OmniPreTrainedModel.__init__(self, config)
        self.thinker = OmniSiftForConditionalGeneration(config.thinker_config)
        self.has_talker = config.enable_audio_output
        self.speaker_map = {}
        if config.enable_audio_output:
            self.enable_talker()
        self.post_init()

    def enable_talker(self) -> None:
        # Overwritten -- as the parent, with the talker that takes the thinker's kept positions.
        self.talker = OmniSiftTalkerForConditionalGeneration(self.config.talker_config)
        self.token2wav = Qwen2_5OmniToken2WavModel(self.config.token2wav_config)
        self.token2wav.float()
        self.has_talker = True

    @property
    def compression_stats(self) -> OmniSiftCausalLMOutputWithPast | None:
        """The thinker's [`~OmniSiftForConditionalGeneration.compression_stats`] (per thread)."""
        return self.thinker.compression_stats

    # -----------------------------------------------------------------------------------------------------------------
    # Loading and saving
    # -----------------------------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        r"""
        As [`Qwen2_5OmniForConditionalGeneration.from_pretrained`]: loads a full Qwen2.5-Omni checkpoint or an
        OmniSIFT one, and its speakers (`spk_dict.pt`). A checkpoint without `spk_dict.pt` loads too (text replies
        work); a spoken reply then raises until [`~Qwen2_5OmniForConditionalGeneration.load_speakers`] is called.
        """
        # Overwritten -- the parent fails to load a checkpoint without `spk_dict.pt`, even for text replies, and its
        # message names no file.
        hub_names = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")
        hub_kwargs = {name: kwargs[name] for name in hub_names if kwargs.get(name) is not None}
        model = super(Qwen2_5OmniForConditionalGeneration, cls).from_pretrained(
            pretrained_model_name_or_path, *model_args, **kwargs
        )
        speakers = cached_file(
            pretrained_model_name_or_path,
            SPEAKERS_NAME,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
            **hub_kwargs,
        )
        if speakers is not None:
            model.load_speakers(speakers)
        elif model.has_talker:
            logger.warning(
                f"{pretrained_model_name_or_path} has no {SPEAKERS_NAME}: text replies work, spoken replies raise "
                "until `model.load_speakers(path_to_spk_dict_pt)` is called."
            )
        return model

    def _adjust_missing_and_unexpected_keys(self, loading_info) -> None:
        # Overwritten -- as `OmniSiftForConditionalGeneration`'s: one warning for the selector a Qwen2.5-Omni
        # checkpoint does not have.
        report_untrained_selector(loading_info, self.thinker.compressor, "thinker.compressor.")
        super()._adjust_missing_and_unexpected_keys(loading_info)

    def save_pretrained(self, save_directory, *args, processor=None, **kwargs) -> None:
        r"""
        As [`PreTrainedModel.save_pretrained`], plus the speakers (`spk_dict.pt`), the remote-code files with an
        `auto_map` for every Auto class, and:

        processor (`ProcessorMixin`, *optional*):
            The processor the model is used with, saved into the same directory.
        """
        # Overwritten -- as `OmniSiftForConditionalGeneration.save_pretrained`, and the parent saves no speakers, so a
        # saved directory could not speak once reloaded.
        write_model_remote_code(self, save_directory)
        super().save_pretrained(save_directory, *args, **kwargs)
        if self.speaker_map and kwargs.get("is_main_process", True):
            torch.save(self.speaker_map, os.path.join(save_directory, SPEAKERS_NAME))
        save_processor(self, save_directory, processor)

    def push_to_hub(self, repo_id: str, *args, processor=None, **kwargs) -> str:
        r"""
        As [`PreTrainedModel.push_to_hub`]; with `processor`, its files are uploaded in the same commit.
        """
        # Overwritten -- see `OmniSiftForConditionalGeneration.push_to_hub`.
        return push_with_processor(super().push_to_hub, self, repo_id, *args, processor=processor, **kwargs)

    # -----------------------------------------------------------------------------------------------------------------
    # Generation
    # -----------------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor | None = None,
        speaker: str = "Chelsie",
        use_audio_in_video: bool = False,
        thinker_max_new_tokens: int = 1024,
        talker_max_new_tokens: int = 4096,
        talker_do_sample: bool = True,
        talker_top_k: int = 40,
        talker_top_p: float = 0.8,
        talker_temperature: float = 0.9,
        talker_eos_token_id: list[int] | None = None,
        talker_repetition_penalty: float = 1.05,
        **kwargs,
    ):
        r"""
        A text or spoken reply, as [`Qwen2_5OmniForConditionalGeneration.generate`], with OmniSIFT compression in the
        thinker and the talker prompted with the kept positions only.

        Arguments of [`Qwen2_5OmniForConditionalGeneration.generate`] (`thinker_*` / `talker_*` / `token2wav_*`
        prefixes included; `talker_eos_token_id` defaults to the talker config's codec pad and end tokens), plus:

        generation_mode (`str`, *optional*):
            `"audio"` (text and a spoken reply) or `"text"`. Defaults to `"audio"` when the talker is enabled, `"text"`
            otherwise.
        keep_ratio, video_keep_ratio, audio_keep_ratio, token_selector:
            As in [`OmniSiftForConditionalGeneration.forward`]; they reach the thinker only.
        return_dict_in_generate (`bool`, *optional*):
            For a spoken reply, return an [`OmniSiftOmniGenerateOutput`] (reply, waveforms, codec codes, the
            thinker's kept counts) instead of the `(sequences, waveform(s))` tuple. For a text reply, as the thinker's
            `generate`.

        Returns:
            `generation_mode="text"`: what [`OmniSiftForConditionalGeneration.generate`] returns. Otherwise
            `(sequences, waveform)` for one sample, `(sequences, [waveform, ...])` for a batch (mono, 24 kHz,
            float32), or an [`OmniSiftOmniGenerateOutput`] with `return_dict_in_generate=True`.
        """
        # Overwritten -- the parent prompts the talker with every position of the unpruned prompt (it cannot follow
        # a compressed thinker) and hands it the media inputs, which it refuses. Stages 1 and 3 follow the parent
        # (transformers 5.24.0); `tests/test_talker.py` checks both against it at keep_ratio=1.0.
        mode = _GENERATION_MODES.get(kwargs.pop("generation_mode", None), "invalid")
        if mode == "invalid":
            raise ValueError("generation_mode must be 'audio', 'text' or None (the talker decides).")
        if input_ids is None:
            raise ValueError("`input_ids` are required: pass the processor's output (`model.generate(**inputs)`).")
        speak = self.has_talker if mode is None else mode == "audio"
        if speak and not self.has_talker:
            raise ValueError(
                "generation_mode='audio' asks for a spoken reply, but this model's talker is disabled: call "
                "`model.enable_talker()` (and load its weights), or pass generation_mode='text'."
            )
        thinker_kwargs, talker_kwargs, token2wav_kwargs = self._split_generate_kwargs(
            use_audio_in_video,
            {
                "max_new_tokens": talker_max_new_tokens,
                "do_sample": talker_do_sample,
                "top_k": talker_top_k,
                "top_p": talker_top_p,
                "temperature": talker_temperature,
                "eos_token_id": talker_eos_token_id,
                "repetition_penalty": talker_repetition_penalty,
            },
            thinker_max_new_tokens,
            kwargs,
        )
        if not speak:
            return self.thinker.generate(input_ids=input_ids, **thinker_kwargs)
        speaker_params = self._speaker(speaker)
        return_dict = thinker_kwargs.pop("return_dict_in_generate", False)

        # 1. The thinker's reply, with the two hidden-state layers the talker reads: the input embeddings and the last.
        thinker_kwargs.update(output_hidden_states=[0, -1], return_dict_in_generate=True)
        thinker_result = self.thinker.generate(input_ids=input_ids, **thinker_kwargs)

        # 2. The talker's prompt: the kept positions, the speaker's bos, the first reply token.
        prompt = self._talker_prompt(input_ids, thinker_result, thinker_kwargs, speaker_params["bos_token"])
        talker_result = self.talker.generate(**prompt, suppress_tokens=[self.talker.codec_bos_token], **talker_kwargs)
        codes = talker_result[:, prompt["input_ids"].shape[1] :]  # (B, C)

        # 3. Codes to waveforms, one sample at a time, as the parent does.
        audio_codes, waveforms = self._speak(codes, talker_kwargs["eos_token_id"], speaker_params, token2wav_kwargs)
        if return_dict:
            stats = {key: thinker_result.get(key) for key in OmniSiftOmniGenerateOutput.__dataclass_fields__}
            stats.update(
                sequences=thinker_result.sequences,
                audio=waveforms,
                audio_codes=audio_codes,
                talker_prompt_length=prompt["input_ids"].shape[1],
            )
            return OmniSiftOmniGenerateOutput(**stats)
        return thinker_result.sequences, (waveforms[0] if input_ids.shape[0] == 1 else waveforms)

    def _split_generate_kwargs(
        self, use_audio_in_video: bool, talker_defaults: dict, thinker_max_new_tokens: int, kwargs: dict
    ) -> tuple[dict, dict, dict]:
        """The keyword arguments of the thinker's, the talker's and token2wav's calls: prefixed ones to their model,
        inputs/media/compression knobs to the thinker, anything else to thinker and talker (as in the parent)."""
        thinker_kwargs = {"max_new_tokens": thinker_max_new_tokens, "use_audio_in_video": use_audio_in_video}
        talker_kwargs = {**talker_defaults, "pad_token_id": self.talker.codec_pad_token} if self.has_talker else {}
        if talker_kwargs.get("eos_token_id") is None and self.has_talker:
            talker_kwargs["eos_token_id"] = [self.talker.codec_pad_token, self.talker.codec_eos_token]
        token2wav_kwargs, shared = {}, {}
        for key, value in kwargs.items():
            if key.startswith("thinker_"):
                thinker_kwargs[key[len("thinker_") :]] = value
            elif key.startswith("talker_"):
                talker_kwargs[key[len("talker_") :]] = value
            elif key.startswith("token2wav_"):
                token2wav_kwargs[key[len("token2wav_") :]] = value
            elif key in _THINKER_ONLY_KWARGS:
                thinker_kwargs[key] = value
            else:
                shared[key] = value
        for key, value in shared.items():
            thinker_kwargs.setdefault(key, value)
            talker_kwargs.setdefault(key, value)
        return thinker_kwargs, talker_kwargs, token2wav_kwargs

    def _speaker(self, speaker: str) -> dict:
        """The speaker's `cond`, `ref_mel` and `bos_token`, or a clear error."""
        if not self.speaker_map:
            raise ValueError(
                f"speaker={speaker!r}: this model has no speakers loaded (its checkpoint has no {SPEAKERS_NAME}). "
                f"Call `model.load_speakers(path)` with a Qwen2.5-Omni {SPEAKERS_NAME}, or pass "
                "generation_mode='text'."
            )
        if speaker not in self.speaker_map:
            raise ValueError(f"speaker={speaker!r} is not available; the speakers are {sorted(self.speaker_map)}.")
        return self.speaker_map[speaker]

    def _talker_prompt(
        self, input_ids: torch.LongTensor, thinker_result, thinker_kwargs: dict, text_bos_token: int
    ) -> dict[str, torch.Tensor]:
        """The talker's generate inputs (`input_ids`, `inputs_embeds`, `attention_mask`, `prompt_position_ids`,
        `thinker_reply_part`), each `K + 2` long: the thinker's kept positions, then the speaker's text bos and the
        first reply token."""
        batch_size, length = input_ids.shape
        device = input_ids.device
        embed = self.thinker.get_input_embeddings()
        attention_mask = thinker_kwargs.get("attention_mask")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        # Where each kept position came from: all of them without compression.
        index = thinker_result.get("kept_token_index")
        if index is None:
            index = torch.arange(length, device=device).expand(batch_size, -1)  # (B, K = L)
            kept_mask = attention_mask
        else:
            kept_mask = thinker_result.kept_attention_mask
        index = index.to(device)
        kept_ids = input_ids.gather(1, index)  # (B, K)

        # Positions: the unpruned prompt's, computed as the stock talker computes them, at the kept positions.
        reply_ids = thinker_result.sequences[:, length:].to(device)  # (B, R)
        text_bos = torch.full((batch_size, 1), text_bos_token, dtype=torch.long, device=device)
        audio_lengths = thinker_kwargs.get("feature_attention_mask")
        full_positions, _ = self.talker.get_rope_index(
            torch.cat([input_ids, text_bos, reply_ids[:, :1]], dim=1),
            thinker_kwargs.get("image_grid_thw"),
            thinker_kwargs.get("video_grid_thw"),
            torch.cat([attention_mask, attention_mask.new_ones(batch_size, 2)], dim=1),
            thinker_kwargs.get("use_audio_in_video", False),
            audio_lengths.sum(1) if audio_lengths is not None else None,
            thinker_kwargs.get("video_second_per_grid"),
        )  # (3, B, L + 2)
        tail = torch.arange(length, length + 2, device=device).expand(batch_size, -1)
        prompt_index = torch.cat([index, tail], dim=1)  # (B, K + 2)
        positions = full_positions.gather(2, prompt_index.unsqueeze(0).expand(3, -1, -1))  # (3, B, K + 2)

        # Embeddings: the thinker's last hidden state plus its input embedding, the latter zeroed at media tokens.
        prefill = thinker_result.hidden_states[0]
        token_embeds = prefill[0].to(device)  # (B, K, D)
        config = self.config.thinker_config
        media = torch.isin(
            kept_ids,
            torch.tensor([config.audio_token_id, config.image_token_id, config.video_token_id], device=device),
        )
        token_embeds = token_embeds.masked_fill(media.unsqueeze(-1), 0.0)
        # The reply stream: one row per generated token after the first (hidden state + input embedding).
        steps = thinker_result.hidden_states[1:]
        if not steps:
            raise ValueError(
                "The thinker's reply is a single token, too short for a spoken reply (the talker is prompted with its "
                "first token and reads the rest step by step): raise `thinker_max_new_tokens`."
            )
        reply_part = torch.cat([step[-1].to(device) + step[0].to(device) for step in steps], dim=1)  # (B, R - 1, D)
        inputs_embeds = torch.cat(
            [prefill[-1].to(device) + token_embeds, embed(text_bos).to(device), reply_part[:, :1]], dim=1
        )  # (B, K + 2, D)
        reply_part = self._reply_stream(reply_part, reply_ids, thinker_kwargs)

        codec = self.talker
        talker_ids = torch.cat(
            [
                torch.full_like(kept_ids, codec.codec_mask_token),
                torch.full((batch_size, 1), codec.codec_pad_token, dtype=torch.long, device=device),
                torch.full((batch_size, 1), codec.codec_bos_token, dtype=torch.long, device=device),
            ],
            dim=1,
        )
        return {
            "input_ids": talker_ids,
            "inputs_embeds": inputs_embeds,
            "attention_mask": torch.cat([kept_mask.to(device), kept_mask.new_ones(batch_size, 2).to(device)], dim=1),
            "prompt_position_ids": positions,
            "thinker_reply_part": reply_part,
        }

    def _reply_stream(
        self, reply_part: torch.Tensor, reply_ids: torch.LongTensor, thinker_kwargs: dict
    ) -> torch.Tensor:
        """What the talker reads at each of its steps: the reply tokens after the first `(B, R - 1, D)`, then the text
        eos and pad embeddings; in a batch, each row's eos right after its own last token and pads after it."""
        # As the parent's generate (transformers 5.24.0).
        batch_size, device = reply_ids.shape[0], reply_ids.device
        embed = self.thinker.get_input_embeddings()
        eos_embedding = embed(torch.full((batch_size, 1), self.talker.text_eos_token, device=device)).to(device)
        pad_embedding = embed(torch.full((batch_size, 1), self.talker.text_pad_token, device=device)).to(device)
        reply_part = torch.cat([reply_part[:, 1:], eos_embedding, pad_embedding], dim=1)
        eos_token_id = thinker_kwargs.get("eos_token_id", self.thinker.generation_config.eos_token_id)
        if eos_token_id is None:
            return reply_part
        is_eos = torch.isin(reply_ids, torch.as_tensor(eos_token_id, device=device).flatten())  # (B, R)
        generated = reply_ids.shape[1]
        first_eos = torch.where(is_eos, torch.arange(generated, device=device), generated).amin(dim=-1)
        first_eos = first_eos.clamp(min=1, max=generated - 1)
        steps = torch.arange(reply_part.shape[1], device=device).unsqueeze(0)  # (1, R + 1)
        reply_part = torch.where((steps >= first_eos.unsqueeze(1)).unsqueeze(-1), pad_embedding, reply_part)
        return torch.where((steps == first_eos.unsqueeze(1) - 1).unsqueeze(-1), eos_embedding, reply_part)

    def _speak(
        self, codes: torch.LongTensor, eos_token_id, speaker_params: dict, token2wav_kwargs: dict
    ) -> tuple[list[torch.LongTensor], list[torch.FloatTensor]]:
        """Each sample's codes up to its first end token `(C_b,)` and its waveform `(num_samples,)` (token2wav in
        float32, one sample at a time, drawing its noise from the global random state in turn, as the parent does;
        `pipeline("omni-qa")` restarts each sample from the batch's state: a batch speaks as separate calls)."""
        eos = torch.isin(codes, torch.as_tensor(eos_token_id, device=codes.device).flatten())  # (B, C)
        positions = torch.arange(codes.shape[1], device=codes.device)
        lengths = torch.where(eos, positions, codes.shape[1]).amin(dim=-1).tolist()
        if self.token2wav.dtype != torch.float:
            self.token2wav.float()
        conditioning = speaker_params["cond"].to(codes.device).float().expand(1, -1)  # (1, D_speaker)
        reference_mel = speaker_params["ref_mel"].to(codes.device).float().expand(1, -1, -1)  # (1, T_mel, mel_bins)
        sample_codes, waveforms = [], []
        for row, length in enumerate(lengths):
            sample_codes.append(codes[row, :length])
            waveform = self.token2wav(
                codes[row : row + 1, :length],
                conditioning=conditioning,
                reference_mel=reference_mel,
                **token2wav_kwargs,
            )
            waveforms.append(waveform.reshape(-1).float())
        return sample_codes, waveforms


def remote_code_auto_map(model_class: type = OmniSiftForConditionalGeneration) -> dict[str, str]:
    """The `auto_map` of a saved directory of `model_class` (the thinker or the full model): `AutoConfig` and every
    Auto class it registers with, each pointing at a class of the remote-code files saved next to the weights
    (`configuration_omnisift.py`, `modeling_omnisift.py`)."""
    return _remote_code_auto_map(model_class)
