"""OmniSIFT in vLLM: the Qwen2.5-Omni thinker whose prompts hold only the audio/video tokens OmniSIFT keeps.

How a request flows (vLLM's in-model pruning mechanism, `SupportsMultiModalPruning`, as its EVS uses it):
1. The processor ([`OmniSiftVllmMultiModalProcessor`]) sizes each video's placeholders before any encoder runs: the
   counts OmniSIFT keeps per frame and per audio window are a function of the layout and the ratios only
   (`spans.kept_span_mask`). A video's own audio track (`use_audio_in_video`) is folded into the video item, so that
   one encoder call sees both.
2. `get_mrope_input_positions` gives every text token its final position (as transformers' `get_rope_index` does for
   the unpruned prompt: text after a clip continues from the unpruned clip's maximum + 1).
3. `embed_multimodal` runs both encoders on a video item, lays its tokens out as the transformers model does, runs the
   same `select_tokens` (STVP + VGAS, `omnisift_hf.selector`) and returns the kept rows in prompt order, each with its
   original position appended (exactly, in 8-bit digits: `spans.encode_positions`).
4. `recompute_mrope_positions` (called by the model runner before the prefill reads them) writes those positions in.

Ratios come from the checkpoint's config; a request may override them through `mm_processor_kwargs` (`keep_ratio`,
`video_keep_ratio`, `audio_keep_ratio`): they enter the item's cache key, so the processor, encoder and prefix caches
stay consistent. With several videos in one prompt, the split of `keep_ratio` is derived per video here (the
transformers model derives it per prompt): set `video_keep_ratio` / `audio_keep_ratio` for identical results.
"""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from transformers.feature_extraction_utils import BatchFeature
from vllm.config import VllmConfig
from vllm.inputs import mm_input
from vllm.logger import init_logger
from vllm.model_executor.models.interfaces import SupportsMultiModal, SupportsMultiModalPruning
from vllm.model_executor.models.qwen2_5_omni_thinker import (
    Qwen2_5OmniThinkerDummyInputsBuilder,
    Qwen2_5OmniThinkerForConditionalGeneration,
    Qwen2_5OmniThinkerMultiModalProcessor,
    Qwen2_5OmniThinkerProcessingInfo,
)
from vllm.model_executor.models.utils import WeightsMapper
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.hasher import MultiModalHasher
from vllm.multimodal.inputs import MultiModalFieldConfig
from vllm.multimodal.parse import MultiModalDataItems
from vllm.multimodal.processing.processor import (
    MultiModalProcessingResult,
    PromptReplacement,
    PromptUpdateDetails,
)

from ..compression import KeepRatios, resolve_keep_ratios
from ..selector import OmniSiftAudioSelector, select_tokens
from .config import keep_ratios_of
from .spans import (
    POSITION_CHANNELS,
    MediaSpan,
    PromptItem,
    audio_output_length,
    audio_span,
    decode_positions,
    encode_positions,
    fill_media_positions,
    image_span,
    kept_span_mask,
    prompt_positions,
    video_span,
)

logger = init_logger(__name__)

__all__ = ["OmniSiftVllmForConditionalGeneration"]

# Per-request compression knobs (`mm_processor_kwargs`): consumed here, never passed to the HF processor.
REQUEST_KNOBS = ("keep_ratio", "video_keep_ratio", "audio_keep_ratio")
# Fields of a video item that carry OmniSIFT's inputs: its audio track (`use_audio_in_video`) and its ratios.
VIDEO_AUDIO_FEATURES = "omnisift_audio_features"
VIDEO_AUDIO_LENGTHS = "omnisift_audio_feature_lengths"
VIDEO_RATIOS = "omnisift_keep_ratios"


def _ratios_tensor(ratios: KeepRatios) -> torch.Tensor:
    nan = float("nan")
    return torch.tensor(
        [ratios.keep, nan if ratios.video is None else ratios.video, nan if ratios.audio is None else ratios.audio],
        dtype=torch.float64,
    )


def _ratios_from_tensor(values: torch.Tensor) -> KeepRatios:
    keep, video, audio = (float(v) for v in values.flatten().tolist())
    return KeepRatios(keep=keep, video=None if video != video else video, audio=None if audio != audio else audio)


def _video_span(config, grid_thw, second_per_grid: float, audio_mel_frames: int | None) -> MediaSpan:
    return video_span(
        tuple(int(v) for v in grid_thw),
        config.vision_config.spatial_merge_size,
        float(second_per_grid),
        config.position_id_per_seconds,
        config.seconds_per_chunk,
        None if audio_mel_frames is None else audio_output_length(int(audio_mel_frames)),
    )


class OmniSiftVllmProcessingInfo(Qwen2_5OmniThinkerProcessingInfo):
    def get_hf_config(self):
        # Overwritten -- a thinker checkpoint is its own thinker config (no type check against Qwen2_5OmniConfig).
        return self.ctx.model_config.hf_config.thinker_config

    def request_ratios(self, hf_processor_mm_kwargs: Mapping[str, object]) -> KeepRatios:
        """The ratios of a request: its `mm_processor_kwargs` over the deployment's (`--mm-processor-kwargs`) over the
        checkpoint's config. Raises a `ValueError` naming the knob for a bad value."""
        merged = self.ctx.get_merged_mm_kwargs(hf_processor_mm_kwargs)
        config = self.get_hf_config()
        ratios = resolve_keep_ratios(
            *(merged.get(name) for name in REQUEST_KNOBS),
            config.keep_ratio,
            config.video_keep_ratio,
            config.audio_keep_ratio,
        )
        mm_config = self.ctx.model_config.multimodal_config
        if not ratios.is_identity and not mm_config.is_multimodal_pruning_enabled():
            raise ValueError(
                f"This deployment serves {self.ctx.model_config.model} without compression (its config sets "
                "keep_ratio=1.0), so a request cannot ask for keep ratios below 1 "
                f"({dict((k, merged[k]) for k in REQUEST_KNOBS if k in merged)}): vLLM places pruned tokens only when "
                "pruning is enabled at start-up. Set keep_ratio below 1 in the checkpoint's config.json to serve with "
                "compression (a request may then ask for 1.0)."
            )
        return ratios


class OmniSiftVllmMultiModalProcessor(Qwen2_5OmniThinkerMultiModalProcessor):
    def _call_hf_processor(self, hf_data: Mapping[str, object], hf_kwargs: Mapping[str, object]) -> BatchFeature:
        # Overwritten -- the compression knobs are this processor's, not the HF processor's.
        return super()._call_hf_processor(hf_data, {k: v for k, v in hf_kwargs.items() if k not in REQUEST_KNOBS})

    def _postprocess_hf_mm_data(self, hf_data, hf_kwargs, processed_data: BatchFeature) -> BatchFeature:
        processed_data = super()._postprocess_hf_mm_data(hf_data, hf_kwargs, processed_data)
        grids = processed_data.get("video_grid_thw")
        if grids is None or len(grids) == 0:
            return processed_data
        ratios = self.info.request_ratios(hf_kwargs)
        processed_data[VIDEO_RATIOS] = _ratios_tensor(ratios).expand(len(grids), -1).clone()
        if self.info.ctx.get_merged_mm_kwargs(hf_kwargs).get("use_audio_in_video"):
            # Fold each video's audio track into the video item (`apply` pairs them one to one).
            processed_data[VIDEO_AUDIO_FEATURES] = processed_data.pop("input_audio_features")
            processed_data[VIDEO_AUDIO_LENGTHS] = processed_data.pop("audio_feature_lengths")
            processed_data.pop("feature_attention_mask", None)
        return processed_data

    def _get_mm_fields_config(self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object]):
        fields = dict(super()._get_mm_fields_config(hf_inputs, hf_processor_mm_kwargs))
        if VIDEO_RATIOS in hf_inputs:
            fields[VIDEO_RATIOS] = MultiModalFieldConfig.batched("video", keep_on_cpu=True)
        if VIDEO_AUDIO_LENGTHS in hf_inputs:
            lengths = hf_inputs[VIDEO_AUDIO_LENGTHS].flatten()
            fields[VIDEO_AUDIO_FEATURES] = MultiModalFieldConfig.flat_from_sizes("video", lengths, dim=1)
            fields[VIDEO_AUDIO_LENGTHS] = MultiModalFieldConfig.batched("video", keep_on_cpu=True)
        return fields

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs: Mapping[str, Any], out_mm_kwargs):
        # Overwritten -- a video's placeholders hold only the tokens OmniSIFT keeps (with its audio, folded in).
        updates = [
            update
            for update in super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs)
            if update.modality != "video"
        ]
        merged = self.info.ctx.get_merged_mm_kwargs(hf_processor_mm_kwargs)
        if merged.get("use_audio_in_video"):
            updates = [update for update in updates if update.modality != "audio"]
        config = self.info.get_hf_config()
        vocab = self.info.get_tokenizer().get_vocab()
        processor = self.info.get_hf_processor(**hf_processor_mm_kwargs)
        video_id, audio_id = vocab[processor.video_token], vocab[processor.audio_token]
        items = out_mm_kwargs.get("video", [])

        def video_replacement(item_idx: int) -> PromptUpdateDetails:
            data = items[item_idx].get_data()
            mel = data.get(VIDEO_AUDIO_LENGTHS)
            span = _video_span(
                config, data["video_grid_thw"], _second_per_grid(data), None if mel is None else int(mel)
            )
            kept = kept_span_mask(span, _ratios_from_tensor(data[VIDEO_RATIOS]))
            tokens = torch.where(span.is_audio[kept], audio_id, video_id).tolist()
            if mel is not None:
                tokens = [config.audio_start_token_id, *tokens, config.audio_end_token_id]
            return PromptUpdateDetails.select_token_ids(tokens, [video_id, audio_id])

        return [*updates, PromptReplacement(modality="video", target=[video_id], replacement=video_replacement)]

    def apply(self, inputs, timing_ctx):
        # Overwritten -- check the request's ratios up front; fold each video's audio track into the video item.
        self.info.request_ratios(inputs.hf_processor_mm_kwargs)
        merged = self.info.ctx.get_merged_mm_kwargs(inputs.hf_processor_mm_kwargs)
        items = inputs.mm_data_items
        if not (merged.get("use_audio_in_video") and "video" in items):
            return super().apply(inputs, timing_ctx)
        num_videos, num_audios = len(items["video"]), len(items.get("audio", []))
        if num_audios != num_videos:
            raise ValueError(
                f"use_audio_in_video=True needs one audio track per video; this prompt has {num_videos} video(s) "
                f"and {num_audios} audio item(s). Give each video its own audio (the chat API extracts it from the "
                "video), and send separate audio in a request without use_audio_in_video."
            )
        # Like vLLM's Nemotron-Nano-VL: the HF processor sees the videos and their audio together (no processor
        # cache for these requests; the encoder cache still applies, keyed by the folded item).
        result = self._apply_hf_processor(inputs, timing_ctx)
        algorithm = self.info.ctx.get_mm_config().mm_hasher_algorithm
        hashes = dict(result.hashes)
        audio_hashes = hashes.pop("audio")
        hashes["video"] = [
            MultiModalHasher.hash_kwargs(algorithm, video=video, audio=audio)
            for video, audio in zip(hashes["video"], audio_hashes, strict=True)
        ]
        updates = {modality: value for modality, value in result.prompt_updates.items() if modality != "audio"}
        result = MultiModalProcessingResult(
            prompt_ids=result.prompt_ids, kwargs=result.kwargs, hashes=hashes, prompt_updates=updates
        )
        folded = MultiModalDataItems({modality: value for modality, value in items.items() if modality != "audio"})
        with timing_ctx.record("apply_prompt_updates"):
            prompt_ids, placeholders = self._maybe_apply_prompt_updates(mm_items=folded, mm_res=result)
        return mm_input(
            prompt_token_ids=prompt_ids,
            mm_kwargs=result.kwargs,
            mm_hashes=result.hashes,
            mm_placeholders={
                modality: [item.to_range() for item in values] for modality, values in placeholders.items()
            },
        )


def _second_per_grid(data: Mapping[str, Any]) -> float:
    value = data.get("second_per_grid_ts")
    return 1.0 if value is None else float(torch.as_tensor(value).flatten()[0])


@MULTIMODAL_REGISTRY.register_processor(
    OmniSiftVllmMultiModalProcessor,
    info=OmniSiftVllmProcessingInfo,
    dummy_inputs=Qwen2_5OmniThinkerDummyInputsBuilder,
)
class OmniSiftVllmForConditionalGeneration(Qwen2_5OmniThinkerForConditionalGeneration, SupportsMultiModalPruning):
    """vLLM's Qwen2.5-Omni thinker with OmniSIFT: the selector (`compressor.*` weights) runs inside
    `embed_multimodal`, on both encoders' outputs of a video item, before the decoder sees any token."""

    # Thinker checkpoints (`model.*`, `lm_head.*`, `compressor.*`) and full ones (`thinker.*`, talker dropped).
    hf_to_vllm_mapper = WeightsMapper(
        orig_to_new_prefix={
            "thinker.lm_head.": "language_model.lm_head.",
            "thinker.model.": "language_model.model.",
            "thinker.": "",
            "talker.": None,
            "token2wav.": None,
            "lm_head.": "language_model.lm_head.",
            "model.": "language_model.model.",
        }
    )

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        config = self.config
        self.keep_ratios = keep_ratios_of(config)
        self.compressor = OmniSiftAudioSelector(
            config.text_config.hidden_size,
            config.selector_hidden_size,
            config.selector_num_heads,
            config.selector_mlp_size,
        )
        # Positions ride along the embeddings only while the runner calls `recompute_mrope_positions`.
        self.appends_positions = self.multimodal_config.is_multimodal_pruning_enabled()
        self.media_token_ids = torch.tensor(
            [config.video_token_index, config.audio_token_index, config.image_token_index]
        )

    # -----------------------------------------------------------------------------------------------------------------
    # Encoders and selection
    # -----------------------------------------------------------------------------------------------------------------
    def embed_multimodal(self, **kwargs: object):
        if kwargs.get("pixel_values_videos") is None:
            # Images and audio items are never pruned.
            embeddings = super().embed_multimodal(**kwargs)
            if not self.appends_positions:
                return embeddings
            return tuple(
                self._with_positions(embedding, span) for embedding, span in self._unpruned_spans(kwargs, embeddings)
            )
        ratios = kwargs.pop(VIDEO_RATIOS, None)
        audio_features = kwargs.pop(VIDEO_AUDIO_FEATURES, None)
        audio_lengths = kwargs.pop(VIDEO_AUDIO_LENGTHS, None)
        video_embeds = super().embed_multimodal(**kwargs)
        num_videos = len(video_embeds)
        seconds = kwargs.get("second_per_grid_ts")
        seconds = [1.0] * num_videos if seconds is None else torch.as_tensor(seconds).flatten().tolist()
        mels, audio_embeds = [None] * num_videos, [None] * num_videos
        if audio_features is not None:
            if isinstance(audio_features, (list, tuple)):
                audio_features = torch.cat(list(audio_features), dim=-1)
            audio_lengths = torch.as_tensor(audio_lengths).flatten()
            mels = audio_lengths.tolist()
            audio_embeds = self._process_audio_input(
                {"input_features": audio_features, "audio_feature_lengths": audio_lengths}
            )
        item_ratios = [self.keep_ratios] * num_videos
        if ratios is not None:
            item_ratios = [_ratios_from_tensor(values) for values in torch.as_tensor(ratios)]
        return tuple(
            self._select(video, audio, _video_span(self.config, grid, second, mel), item)
            for video, audio, grid, second, mel, item in zip(
                video_embeds, audio_embeds, kwargs["video_grid_thw"], seconds, mels, item_ratios, strict=True
            )
        )

    def _select(
        self, video: torch.Tensor, audio: torch.Tensor | None, span: MediaSpan, ratios: KeepRatios
    ) -> torch.Tensor:
        """One video item's kept rows in prompt order (positions appended while pruning is enabled)."""
        device = video.device
        embeds = video.new_empty(len(span), video.shape[-1])
        embeds[span.is_video.to(device)] = video
        if audio is not None:
            embeds[span.is_audio.to(device)] = audio.to(video.dtype)
        if ratios.is_identity:
            keep = torch.ones(len(span), dtype=torch.bool, device=device)
        else:
            selection = select_tokens(
                self.compressor,
                embeds.unsqueeze(0),
                span.is_video.to(device).unsqueeze(0),
                span.is_audio.to(device).unsqueeze(0),
                span.positions[0].to(device).unsqueeze(0),
                ratios,
            )
            keep = selection.keep_mask(torch.ones(1, len(span), dtype=torch.long, device=device))[0]
        expected = int(kept_span_mask(span, ratios).sum())
        if int(keep.sum()) != expected:
            raise RuntimeError(
                f"OmniSIFT kept {int(keep.sum())} tokens of a video whose placeholders hold {expected}: the processor "
                "and the model disagree on the layout (a bug; please report it with the clip's grid and audio length)."
            )
        kept = embeds[keep]
        if not self.appends_positions:
            return kept
        return torch.cat([kept, encode_positions(span.positions.to(device)[:, keep], kept.dtype)], dim=-1)

    def _unpruned_spans(self, kwargs: Mapping[str, object], embeddings: Sequence[torch.Tensor]):
        """(embedding, span) of each image / audio item of one `embed_multimodal` call, in its order."""
        config, merge = self.config, self.config.vision_config.spatial_merge_size
        if kwargs.get("pixel_values") is not None or kwargs.get("image_embeds") is not None:
            grids = kwargs["image_grid_thw"]
            spans = [image_span(grid.tolist(), merge, config.position_id_per_seconds) for grid in grids]
        else:
            spans = [audio_span(int(embedding.shape[0])) for embedding in embeddings]
        return zip(embeddings, spans, strict=True)

    def _with_positions(self, embedding: torch.Tensor, span: MediaSpan) -> torch.Tensor:
        positions = encode_positions(span.positions.to(embedding.device), embedding.dtype)
        return torch.cat([embedding, positions], dim=-1)

    def embed_input_ids(self, input_ids, multimodal_embeddings=None, *, is_multimodal=None):
        # Overwritten -- a video item's rows already interleave its video and audio in prompt order: scatter them into
        # the placeholders in order, as for any other model (not by modality, as the parent does).
        return SupportsMultiModal.embed_input_ids(self, input_ids, multimodal_embeddings, is_multimodal=is_multimodal)

    # -----------------------------------------------------------------------------------------------------------------
    # Positions
    # -----------------------------------------------------------------------------------------------------------------
    def get_mrope_input_positions(self, input_tokens: list[int], mm_features) -> tuple[torch.Tensor, int]:
        config, merge = self.config, self.config.vision_config.spatial_merge_size
        items = []
        for feature in mm_features:
            data = feature.data.get_data()
            position = feature.mm_position
            if feature.modality == "video":
                mel = data.get(VIDEO_AUDIO_LENGTHS)
                span = _video_span(
                    config, data["video_grid_thw"], _second_per_grid(data), None if mel is None else int(mel)
                )
                items.append(PromptItem(position.offset, position.length, span, with_audio=mel is not None))
            elif feature.modality == "image":
                span = image_span(
                    torch.as_tensor(data["image_grid_thw"]).tolist(), merge, config.position_id_per_seconds
                )
                items.append(PromptItem(position.offset, position.length, span))
            else:
                items.append(PromptItem(position.offset, position.length, audio_span(position.length)))
        return prompt_positions(len(input_tokens), items)

    def recompute_mrope_positions(
        self,
        input_ids,
        multimodal_embeddings: Sequence[torch.Tensor],
        mrope_positions: torch.LongTensor,
        num_computed_tokens: int,
    ) -> tuple[Sequence[torch.Tensor], torch.Tensor, int]:
        input_ids = torch.as_tensor(input_ids, device="cpu")
        is_media = torch.isin(input_ids, self.media_token_ids)
        embeddings = [embedding[:, :-POSITION_CHANNELS] for embedding in multimodal_embeddings]
        positions = mrope_positions
        if multimodal_embeddings:
            relative = decode_positions(torch.cat([e[:, -POSITION_CHANNELS:] for e in multimodal_embeddings]).cpu())
            first_row = int(is_media[:num_computed_tokens].sum())
            positions = fill_media_positions(mrope_positions.cpu(), is_media, relative, first_row)
            positions = positions.to(mrope_positions.device)
        delta = int(positions.max()) + 1 - input_ids.numel()
        return embeddings, positions, delta

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        loaded = super().load_weights(weights)
        missing = {name for name, _ in self.compressor.named_parameters(prefix="compressor")} - loaded
        if missing and not self.keep_ratios.is_identity:
            logger.warning(
                "The checkpoint has no trained OmniSIFT selector (%d `compressor.*` tensors missing): audio is chosen "
                "by an untrained selector. Serve a checkpoint with a trained selector, or set audio_keep_ratio=1.0.",
                len(missing),
            )
        return loaded
