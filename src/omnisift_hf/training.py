"""Fine-tuning OmniSIFT with `transformers.Trainer`: freezing policies, a JSONL dataset and its data collator.

The selector (VGAS) is trained by the ordinary language-model loss: its scores gate the kept audio embeddings through a
straight-through estimator, so nothing here adds a loss or a training loop. Three pieces plug into an unchanged
`transformers.Trainer` (and so into `accelerate launch`, DDP and DeepSpeed):

- [`freeze`]: one call that sets which parameters train (`"selector"`, `"paper"` or `"full"`) and reports the counts.
- [`OmniQADataset`]: a JSONL file of examples (media paths plus a question/answer pair or a chat conversation),
  validated line by line when it is opened; media are decoded only when a batch is built.
- [`OmniQADataCollator`]: decodes the media and renders the prompt exactly as `pipeline("omni-qa")` does, appends the
  answer, pads the batch on the left and masks everything but the answer tokens in `labels`. It also carries the
  training-time keep ratios (`keep_ratio`, `video_keep_ratio`, `audio_keep_ratio`) into every batch, so the model's
  `forward` compresses at the ratio you train for.
- [`EncodedOmniQADataset`]: the collator's per-example work (media decoding, processor) done once and kept on disk,
  for many epochs over the same clips (the collator then only pads).

```python
import omnisift_hf
from omnisift_hf.training import OmniQADataCollator, OmniQADataset, freeze
from transformers import AutoProcessor, Trainer, TrainingArguments

model = omnisift_hf.OmniSiftForConditionalGeneration.from_pretrained("Qwen/Qwen2.5-Omni-7B")
processor = AutoProcessor.from_pretrained("Qwen/Qwen2.5-Omni-7B")
print(freeze(model, "selector"))  # only the audio selector trains
trainer = Trainer(
    model=model,
    args=TrainingArguments("out", bf16=True, activation_checkpointing=True, learning_rate=1e-4),
    train_dataset=OmniQADataset("train.jsonl"),
    data_collator=OmniQADataCollator(processor, keep_ratio=0.25),
)
trainer.train()
```
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import Dataset
from transformers import ProcessorMixin
from transformers.utils import logging

from .compression import check_keep_ratio
from .media import MEDIA_TYPES, VideoSampling, video_sampling_of
from .models.qwen2_5_omni.modeling_omnisift import OmniSiftForConditionalGeneration
from .processing_omnisift import collate_omni_inputs, prepare_omni_inputs

logger = logging.get_logger(__name__)

__all__ = [
    "FREEZE_POLICIES",
    "PARAMETER_GROUPS",
    "EncodedOmniQADataset",
    "OmniQADataCollator",
    "OmniQADataset",
    "OmniQAExample",
    "TrainableParameters",
    "count_trainable_parameters",
    "freeze",
]

# ---------------------------------------------------------------------------------------------------------------------
# Freezing policies
# ---------------------------------------------------------------------------------------------------------------------
# Every OmniSIFT model declares its parameter groups by name prefix (`parameter_groups`); the group names are the same
# for every backbone, the prefixes are its own. These are Qwen2.5-Omni's. Anything else (nothing, in the stock model)
# is reported as "other" and trains only under the "full" policy.
PARAMETER_GROUPS = OmniSiftForConditionalGeneration.parameter_groups
_OTHER_GROUP = "other"

# Which groups train under each policy.
FREEZE_POLICIES = {
    # Only the vision-guided audio selector: cheap, on top of a frozen Qwen2.5-Omni.
    "selector": ("compressor",),
    # The published OmniSIFT recipe: encoders frozen; decoder (with its embeddings), lm_head and selector train.
    "paper": ("language_model", "lm_head", "compressor"),
    # Everything, encoders included.
    "full": (*PARAMETER_GROUPS, _OTHER_GROUP),
}


@dataclass(frozen=True)
class TrainableParameters:
    """Parameter counts of a model, per group (`audio_tower`, `visual`, `language_model`, `lm_head`, `compressor`).

    policy (`str | None`): the policy [`freeze`] applied, `None` when only counted.
    trainable (`dict[str, int]`): parameters with `requires_grad=True`, per group.
    total (`dict[str, int]`): all parameters, per group.

    `str(counts)` is a small table, for logs.
    """

    policy: str | None
    trainable: dict[str, int]
    total: dict[str, int]

    @property
    def num_trainable(self) -> int:
        return sum(self.trainable.values())

    @property
    def num_total(self) -> int:
        return sum(self.total.values())

    def __str__(self) -> str:
        share = self.num_trainable / self.num_total if self.num_total else 0.0
        title = "trainable parameters" if self.policy is None else f"freeze policy {self.policy!r}"
        lines = [f"{title}: {self.num_trainable:,} of {self.num_total:,} parameters train ({share:.2%})"]
        width = max(len(group) for group in self.total)
        for group, total in self.total.items():
            lines.append(f"  {group:<{width}}  {self.trainable[group]:>15,} / {total:>15,}")
        return "\n".join(lines)


def _group_of(name: str, groups: dict[str, str]) -> str:
    return next((group for group, prefix in groups.items() if name.startswith(prefix)), _OTHER_GROUP)


def _named_parameters(model: nn.Module) -> tuple[list[tuple[str, nn.Parameter]], dict[str, str]]:
    """The model's parameters and its parameter groups (name prefixes)."""
    groups = getattr(model, "parameter_groups", None)
    named = list(model.named_parameters())
    if not isinstance(groups, dict) or not any(name.startswith(groups["compressor"]) for name, _ in named):
        raise TypeError(
            f"expected an OmniSIFT model such as OmniSiftForConditionalGeneration (its `parameter_groups`: "
            "`compressor.*`, `model.visual.*`, ...), "
            f"got a {type(model).__name__}. Freeze the model before wrapping it (PEFT, DDP, DeepSpeed)."
        )
    return named, groups


def count_trainable_parameters(model: nn.Module) -> TrainableParameters:
    """Count the parameters of an OmniSIFT model per group, and which of them have `requires_grad=True`.

    Tied weights count once. Under DeepSpeed ZeRO-3 the full (unpartitioned) sizes are counted.
    """
    named, groups = _named_parameters(model)
    trainable = dict.fromkeys(groups, 0)
    total = dict.fromkeys(groups, 0)
    for name, parameter in named:
        group = _group_of(name, groups)
        size = getattr(parameter, "ds_numel", parameter.numel())  # ZeRO-3 partitions leave numel() == 0
        total[group] = total.get(group, 0) + size
        trainable[group] = trainable.get(group, 0) + (size if parameter.requires_grad else 0)
    return TrainableParameters(policy=None, trainable=trainable, total=total)


def freeze(model: nn.Module, policy: str) -> TrainableParameters:
    """Set which parameters of an OmniSIFT model train, and report the counts.

    Args:
        model ([`OmniSiftForConditionalGeneration`]): the model, before it is wrapped for training (call this before
            `Trainer(...)`; the Trainer's optimiser takes only parameters with `requires_grad=True`).
        policy (`str`): one of
            - `"selector"`: only the audio selector (`model.compressor`, 4.9M parameters at 7B) trains. Its gradient
              comes from the language-model loss through the straight-through gate on the kept audio, so it needs
              batches where audio is actually dropped (video with its audio track, keep ratio below 1).
            - `"paper"`: the published OmniSIFT recipe. The audio and vision encoders are frozen; the language model
              (with its token embeddings), `lm_head` and the selector train.
            - `"full"`: everything trains.

    Returns:
        [`TrainableParameters`]: counts per group after freezing (`print()` it for a table).

    Raises:
        `ValueError`: `policy` is not one of `FREEZE_POLICIES`.
        `TypeError`: `model` is not an OmniSIFT model.

    Example:

    ```python
    >>> from omnisift_hf.testing_utils import tiny_model
    >>> from omnisift_hf.training import freeze

    >>> counts = freeze(tiny_model(), "selector")
    >>> counts.num_trainable == counts.total["compressor"] == counts.trainable["compressor"]
    True
    ```
    """
    if policy not in FREEZE_POLICIES:
        raise ValueError(f"freeze: unknown policy {policy!r}; choose one of {', '.join(map(repr, FREEZE_POLICIES))}.")
    trained_groups = FREEZE_POLICIES[policy]
    named, groups = _named_parameters(model)
    for name, parameter in named:
        parameter.requires_grad_(_group_of(name, groups) in trained_groups)
    counts = count_trainable_parameters(model)
    counts = TrainableParameters(policy=policy, trainable=counts.trainable, total=counts.total)
    logger.info(str(counts))
    return counts


# ---------------------------------------------------------------------------------------------------------------------
# Data: JSONL examples
# ---------------------------------------------------------------------------------------------------------------------
_ROLES = ("system", "user", "assistant")
# Keys of one JSONL line.
_JSONL_KEYS = (
    *MEDIA_TYPES,
    "question",
    "answer",
    "messages",
    "conversation",
    "system",
    "use_audio_in_video",
    "id",
)


@dataclass(frozen=True)
class OmniQAExample:
    """One training example, as [`OmniQADataset`] yields it (media not loaded yet).

    messages (`list[dict]`): the prompt in the `omni-qa` pipeline's chat format (media items carry absolute paths);
        the last turn is the user's.
    answer (`str`): the assistant's reply to learn (the end-of-turn token is added by the collator).
    source (`str`): `"<file>, line <n>"`, repeated in every error about this example.
    use_audio_in_video (`bool | None`): whether a video's audio track is used; `None` = when it has one.

    Not a `dict` on purpose: `Trainer(remove_unused_columns=True)` (the default) strips dict keys that `forward` does
    not take before the collator sees them, and leaves other objects alone.
    """

    messages: list[dict]
    answer: str
    source: str
    use_audio_in_video: bool | None = None


class OmniQADataset(Dataset):
    """Examples from a JSONL file, one JSON object per line, checked when the file is opened (a malformed line or a
    missing media file raises an error naming the file and the line). Media are decoded later, by
    [`OmniQADataCollator`].

    Each line has media, and either `question` + `answer` or a chat conversation (each record is one line of the file;
    the last two are wrapped here):

    ```
    {"video": "clips/0001.mp4", "question": "What color is the square?", "answer": "The square is red."}
    {"audio": "tones/07.wav", "question": "What do you hear?", "answer": "A rising tone."}
    {"image": "a.png", "video": ["b.mp4"], "question": "...", "answer": "...", "system": "You are ..."}
    {"video": "c.mp4", "messages": [{"role": "user", "content": "What happens?"},
                                    {"role": "assistant", "content": "The ball falls."}]}
    {"messages": [{"role": "user", "content": [{"type": "video", "video": "c.mp4"}, {"type": "text", "text": "Why?"}]},
                  {"role": "assistant", "content": [{"type": "text", "text": "Because ..."}]}]}
    ```

    - `video`, `audio`, `image`: a path or a list of paths (or http(s) URLs). Relative paths are resolved against the
      directory of the JSONL file. A video's audio track is used when it has one (`"use_audio_in_video": false` to
      ignore it).
    - `messages` (or its alias `conversation`): `{"role": "system" | "user" | "assistant", "content": ...}` turns,
      content as a string or a list of `{"type": "text" | "video" | "audio" | "image", ...}` items. Top-level media
      are placed at the start of the first user turn. The last turn must be the assistant's: it is the answer that is
      learnt. Earlier assistant turns are context (masked in `labels`, like the rest of the prompt).
    - `system` (optional): a system prompt; without one the collator's `system_prompt` (by default Qwen2.5-Omni's) is
      used, as in `pipeline("omni-qa")`.
    - `id` (optional): ignored; any other key is an error (it catches typos such as `"vidoe"`).

    Args:
        path (`str` or `os.PathLike`): the JSONL file.
        check_media_files (`bool`, *optional*, defaults to `True`): check that every local media file exists.
    """

    def __init__(self, path: str | os.PathLike, check_media_files: bool = True):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(
                f"OmniQADataset: {os.fspath(path)!r} is not a file. Pass the path of a JSONL file."
            )
        self.examples: list[OmniQAExample] = []
        with open(self.path, encoding="utf-8-sig") as handle:  # tolerates a byte-order mark
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    self.examples.append(self._parse(line, number, check_media_files))
        if not self.examples:
            raise ValueError(f"{self.path}: no examples (the file is empty).")

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> OmniQAExample:
        return self.examples[index]

    def _parse(self, line: str, number: int, check_media_files: bool) -> OmniQAExample:
        source = f"{self.path}, line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{source}: not valid JSON ({error.msg} at column {error.colno}).") from None
        if not isinstance(record, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(record).__name__}.")
        unknown = sorted(set(record) - set(_JSONL_KEYS))
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; expected some of {list(_JSONL_KEYS)}.")

        conversation_keys = [key for key in ("messages", "conversation") if key in record]
        if len(conversation_keys) > 1:
            raise ValueError(f"{source}: give either `messages` or `conversation`, not both.")
        if conversation_keys and ("question" in record or "answer" in record):
            raise ValueError(f"{source}: give either `question` + `answer` or `{conversation_keys[0]}`, not both.")
        if conversation_keys:
            messages, answer = self._conversation(record[conversation_keys[0]], source)
        else:
            for key in ("question", "answer"):
                if not isinstance(record.get(key), str) or not record[key].strip():
                    raise ValueError(
                        f"{source}: `{key}` must be a non-empty string (or give a `messages` conversation), got "
                        f"{record.get(key)!r}."
                    )
            messages = [{"role": "user", "content": [{"type": "text", "text": record["question"]}]}]
            answer = record["answer"]

        media_items = []
        for kind in MEDIA_TYPES:
            value = record.get(kind)
            values = value if isinstance(value, list) else ([] if value is None else [value])
            media_items += [{"type": kind, kind: item} for item in values]
        if media_items:
            first_user = next(i for i, message in enumerate(messages) if message["role"] == "user")
            messages[first_user] = {"role": "user", "content": media_items + messages[first_user]["content"]}
        for message in messages:
            message["content"] = [self._resolve(item, source, check_media_files) for item in message["content"]]

        if "system" in record:
            if not isinstance(record["system"], str):
                raise ValueError(f"{source}: `system` must be a string, got {record['system']!r}.")
            if messages[0]["role"] == "system":
                raise ValueError(f"{source}: a `system` key and a system turn in the conversation; keep one.")
            messages.insert(0, {"role": "system", "content": [{"type": "text", "text": record["system"]}]})
        use_audio_in_video = record.get("use_audio_in_video")
        if use_audio_in_video is not None and not isinstance(use_audio_in_video, bool):
            raise ValueError(f"{source}: `use_audio_in_video` must be true or false, got {use_audio_in_video!r}.")
        return OmniQAExample(messages=messages, answer=answer, source=source, use_audio_in_video=use_audio_in_video)

    @staticmethod
    def _conversation(turns, source: str) -> tuple[list[dict], str]:
        """Prompt turns (content as lists of items) and the final assistant answer."""
        if not isinstance(turns, list) or not turns:
            raise ValueError(f"{source}: the conversation must be a non-empty list of {{'role', 'content'}} turns.")
        messages = []
        for position, turn in enumerate(turns):
            if not isinstance(turn, dict) or set(turn) != {"role", "content"} or turn["role"] not in _ROLES:
                raise ValueError(
                    f"{source}: turn {position} must be {{'role': 'system' | 'user' | 'assistant', 'content': ...}}, "
                    f"got {turn!r}."
                )
            content = turn["content"]
            if isinstance(content, str):
                content = [{"type": "text", "text": content}]
            if not isinstance(content, list) or not all(isinstance(item, dict) for item in content):
                raise ValueError(f"{source}: turn {position}: content must be a string or a list of item objects.")
            messages.append({"role": turn["role"], "content": [dict(item) for item in content]})
        if messages[-1]["role"] != "assistant":
            raise ValueError(
                f"{source}: the last turn must be the assistant's answer, got role {turns[-1]['role']!r}."
            )
        if not any(message["role"] == "user" for message in messages):
            raise ValueError(f"{source}: the conversation has no user turn.")
        final = messages.pop()["content"]
        if any(item.get("type", "text") != "text" or not isinstance(item.get("text"), str) for item in final):
            raise ValueError(f"{source}: the assistant's answer must be text only.")
        answer = "".join(item["text"] for item in final)
        if not answer.strip():
            raise ValueError(f"{source}: the assistant's answer is empty.")
        return messages, answer

    def _resolve(self, item: dict, source: str, check_media_files: bool) -> dict:
        """A content item with its media path made absolute (relative to the JSONL file) and checked."""
        kind = item.get("type") or next((key for key in ("text", *MEDIA_TYPES) if key in item), None)
        if kind == "text":
            if not isinstance(item.get("text"), str):
                raise ValueError(f"{source}: a text item needs a string 'text', got {item!r}.")
            return {"type": "text", "text": item["text"]}
        if kind not in MEDIA_TYPES:
            raise ValueError(
                f"{source}: content item of type {kind!r} is not supported; use text, video, audio, image."
            )
        value = next((item[key] for key in (kind, "path", "url") if item.get(key) is not None), None)
        if not isinstance(value, str) or not value:
            raise ValueError(f"{source}: the {kind} item {item!r} needs a path or URL string.")
        if value.startswith(("http://", "https://")):
            return {"type": kind, kind: value}
        path = Path(value.removeprefix("file://"))
        resolved = path if path.is_absolute() else self.path.parent / path
        if check_media_files and not resolved.is_file():
            raise FileNotFoundError(
                f"{source}: {kind} file {value!r} not found (looked for {os.fspath(resolved)!r}; relative paths are "
                "resolved against the JSONL file's directory)."
            )
        return {"type": kind, kind: os.fspath(resolved)}


# ---------------------------------------------------------------------------------------------------------------------
# Data: the collator
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class OmniQADataCollator:
    """Turn [`OmniQAExample`]s into a left-padded training batch for `OmniSiftForConditionalGeneration`.

    Each example is prepared exactly like a `pipeline("omni-qa")` request (the same media loaders, chat template and
    processor call, so a model is trained on the prompts it is later asked), then the answer and the end-of-turn
    token are appended. `labels` equal `input_ids` on those answer tokens and `-100` everywhere else (system and user
    turns, media placeholders, the assistant header, left padding). The model gathers `labels` with the tokens it
    keeps, so the loss is over the answer whatever compression drops.

    Args:
        processor (`Qwen2_5OmniProcessor`): the model's processor.
        keep_ratio (`float` or a sequence of `float`, *optional*): fraction of the audio + video tokens kept during
            training, passed to `forward` with every batch (default: the model config's `keep_ratio`). `1.0` trains
            without compression (and gives the selector no gradient). A sequence, e.g. `(1.0, 0.25)`, draws one of
            its values per batch (uniformly, from Python's `random`, which `Trainer` seeds): one model then learns
            the full input and the compressed one, so full-token accuracy does not drift while the selector trains.
        video_keep_ratio (`float`, *optional*), audio_keep_ratio (`float`, *optional*): per-modality keep fractions
            for training, overriding the split derived from `keep_ratio` (see `OmniSiftConfig`).
        system_prompt (`str`, *optional*): the system turn for examples without one (default: Qwen2.5-Omni's, as in
            the pipeline; `""` for none).
        video_sampling ([`VideoSampling`], *optional*): frame sampling (default: Qwen's 2 fps policy with the frame
            size bounds of the processor, `media.video_sampling_of`).
        end_of_turn_token (`str`, *optional*, defaults to `"<|im_end|>"`): appended to every answer and learnt, so the
            model learns to stop.

    Returns (from `__call__`) a dict with `input_ids`, `attention_mask` (`(B, L)`, left-padded), `labels` (`(B, L)`),
    the media tensors of `collate_omni_inputs`, `use_audio_in_video` when the batch has video, and the keep ratios
    that were set.
    """

    processor: ProcessorMixin
    keep_ratio: float | Sequence[float] | None = None
    video_keep_ratio: float | None = None
    audio_keep_ratio: float | None = None
    system_prompt: str | None = None
    video_sampling: VideoSampling | None = None
    end_of_turn_token: str = "<|im_end|>"
    _end_id: int = field(init=False, repr=False)

    def __post_init__(self):
        if isinstance(self.keep_ratio, Sequence) and not isinstance(self.keep_ratio, str):
            if len(self.keep_ratio) == 0:
                raise ValueError(
                    f"OmniQADataCollator: keep_ratio={self.keep_ratio!r} is empty; pass one ratio, several to draw "
                    "from per batch, or None."
                )
            ratios = tuple(
                check_keep_ratio(f"keep_ratio[{index}]", value, allow_none=False)
                for index, value in enumerate(self.keep_ratio)
            )
            self.keep_ratio = ratios[0] if len(ratios) == 1 else ratios  # one value: no draw
        else:
            self.keep_ratio = check_keep_ratio("keep_ratio", self.keep_ratio)
        for name in ("video_keep_ratio", "audio_keep_ratio"):
            setattr(self, name, check_keep_ratio(name, getattr(self, name)))
        tokenizer = self.processor.tokenizer
        end_id = tokenizer.convert_tokens_to_ids(self.end_of_turn_token)
        if end_id is None or end_id == tokenizer.unk_token_id:
            raise ValueError(
                f"OmniQADataCollator: end_of_turn_token={self.end_of_turn_token!r} is not a token of this tokenizer."
            )
        self._end_id = end_id

    def __call__(self, features: Sequence[OmniQAExample | Mapping]) -> dict:
        samples = [feature if _is_encoded(feature) else self.encode(self._example(feature)) for feature in features]

        flags = {sample["use_audio_in_video"] for sample in samples} - {None}
        if len(flags) > 1:
            sources = "; ".join(sample.get("source", "<encoded example>") for sample in samples)
            raise ValueError(
                "OmniQADataCollator: one batch mixes videos with and without their audio track; the model takes one "
                f"`use_audio_in_video` per batch ({sources}). Use a per-device batch size of 1, or keep the two "
                "kinds in separate datasets."
            )
        batch = collate_omni_inputs(samples, self.processor.tokenizer.pad_token_id)
        length = batch["input_ids"].shape[1]
        labels = torch.full((len(samples), length), -100, dtype=torch.long)
        for row, sample in enumerate(samples):
            size = sample["labels"].shape[1]
            labels[row, length - size :] = sample["labels"][0]  # left padding, like input_ids
        batch["labels"] = labels
        if flags:
            batch["use_audio_in_video"] = flags.pop()
        if isinstance(self.keep_ratio, tuple):
            batch["keep_ratio"] = random.choice(self.keep_ratio)
        elif self.keep_ratio is not None:
            batch["keep_ratio"] = self.keep_ratio
        for name in ("video_keep_ratio", "audio_keep_ratio"):
            if getattr(self, name) is not None:
                batch[name] = getattr(self, name)
        return batch

    @staticmethod
    def _example(feature) -> OmniQAExample:
        if isinstance(feature, OmniQAExample):
            return feature
        if isinstance(feature, Mapping) and {"messages", "answer"} <= set(feature):
            return OmniQAExample(
                messages=list(feature["messages"]),
                answer=feature["answer"],
                source=feature.get("source", "<example>"),
                use_audio_in_video=feature.get("use_audio_in_video"),
            )
        keys = sorted(feature) if isinstance(feature, Mapping) else type(feature).__name__
        raise TypeError(
            f"OmniQADataCollator: expected OmniQAExample items (from OmniQADataset) or dicts with 'messages' and "
            f"'answer', got {keys}. If a Trainer removed those keys, pass "
            "TrainingArguments(remove_unused_columns=False)."
        )

    def encode(self, example: OmniQAExample) -> dict:
        """One example's processor outputs (batch of 1) with the answer tokens appended, `labels` `(1, L)`,
        `use_audio_in_video` and `source`: what `__call__` pads into a batch. `__call__` also accepts these dicts
        directly (see [`EncodedOmniQADataset`])."""
        try:
            sample = prepare_omni_inputs(
                self.processor,
                example.messages,
                use_audio_in_video=example.use_audio_in_video,
                system_prompt=self.system_prompt,
                video_sampling=self._video_sampling(),
            )
        except (OSError, ValueError, TypeError) as error:  # name the JSONL line in media and processor errors
            try:
                located = type(error)(f"{example.source}: {error}")
            except TypeError:  # an exception type with another signature
                error.add_note(f"while preparing {example.source}")
                raise error from None
            raise located from error

        tokenizer = self.processor.tokenizer
        answer_ids = tokenizer(example.answer, add_special_tokens=False)["input_ids"]
        special = set(tokenizer.all_special_ids) & set(answer_ids)
        if special:
            tokens = tokenizer.convert_ids_to_tokens(sorted(special))
            raise ValueError(f"{example.source}: the answer contains special tokens {tokens}; answers are plain text.")
        answer = torch.tensor([answer_ids + [self._end_id]], dtype=sample["input_ids"].dtype)  # (1, A)
        prompt_ids = sample["input_ids"]  # (1, P), ends with the assistant header
        sample["input_ids"] = torch.cat([prompt_ids, answer], dim=1)
        sample["attention_mask"] = torch.cat([sample["attention_mask"], torch.ones_like(answer)], dim=1)
        sample["labels"] = torch.cat([torch.full_like(prompt_ids, -100), answer], dim=1)
        sample["source"] = example.source
        return sample

    def _video_sampling(self) -> VideoSampling:
        return self.video_sampling or video_sampling_of(self.processor)

    def encoding_settings(self) -> dict:
        """What determines [`encode`]'s output besides the example: compared by [`EncodedOmniQADataset`] before it
        reuses a cache."""
        tokenizer = self.processor.tokenizer
        return {
            "processor": type(self.processor).__name__,
            "vocab_size": len(tokenizer),
            "chat_template": self.processor.chat_template,
            "system_prompt": self.system_prompt,
            "video_sampling": asdict(self._video_sampling()),
            "end_of_turn_token": self.end_of_turn_token,
        }


def _is_encoded(feature) -> bool:
    return isinstance(feature, Mapping) and "input_ids" in feature and "labels" in feature


# ---------------------------------------------------------------------------------------------------------------------
# Data: encode once, train many epochs
# ---------------------------------------------------------------------------------------------------------------------
_CACHE_MANIFEST = "omnisift_encoded.json"
_FLAG_VALUES = {"true": True, "false": False, "none": None}


class _EncodeJob(Dataset):
    def __init__(self, dataset, collator, paths):
        self.dataset, self.collator, self.paths = dataset, collator, paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        number, path = self.paths[index]
        sample = self.collator.encode(OmniQADataCollator._example(self.dataset[number]))
        flag = str(sample.pop("use_audio_in_video")).lower()
        source = sample.pop("source")
        tensors = {key: value.contiguous() for key, value in sample.items() if isinstance(value, torch.Tensor)}
        partial = path.with_suffix(".tmp")
        save_file(tensors, partial, metadata={"use_audio_in_video": flag, "source": source})
        partial.replace(path)  # complete files only: an interrupted run resumes where it stopped
        return index


class EncodedOmniQADataset(Dataset):
    """The examples of `dataset` encoded once by `collator` (media decoded, chat template and processor run, answer
    appended; [`OmniQADataCollator.encode`]) and stored in `cache_dir`, one safetensors file per example.

    Training for many epochs over the same clips then skips the media pipeline: the collator only pads (on the
    synthetic AVQA clips, batch 16, 2 CPU cores: ~0.7-1.2 s of media work per step saved). Items are the encoded
    dicts, which `OmniQADataCollator.__call__` accepts as they are; keep ratios still come from the collator used in
    training. Tensors are stored exactly as the processor made them (float32 features: about 2 MB per 6 s clip of
    112 x 112 frames), so a batch from the cache equals a batch built from the media.

    Args:
        dataset: an [`OmniQADataset`] or any sequence of examples the collator accepts.
        collator ([`OmniQADataCollator`]): whose processor, sampling and system prompt encode the examples.
        cache_dir (`str` or `os.PathLike`): created if missing. A directory written for another number of examples
            or other encoding settings is refused (`ValueError`): delete it or choose another. Files already there
            are reused, so an interrupted encoding resumes.
        num_workers (`int`, defaults to 0): processes encoding in parallel (0 = this process).
    """

    def __init__(self, dataset, collator: OmniQADataCollator, cache_dir, num_workers: int = 0):
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"EncodedOmniQADataset: num_workers={num_workers!r}; use an integer >= 0.")
        self.cache_dir = Path(cache_dir)
        settings = {"num_examples": len(dataset), **collator.encoding_settings()}
        if isinstance(dataset, OmniQADataset):
            settings["sources"] = [example.source for example in (dataset[0], dataset[len(dataset) - 1])]
        manifest = self.cache_dir / _CACHE_MANIFEST
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        if manifest.exists():
            found = json.loads(manifest.read_text())
            if found != settings:
                changed = sorted(key for key in set(found) | set(settings) if found.get(key) != settings.get(key))
                raise ValueError(
                    f"EncodedOmniQADataset: cache_dir={os.fspath(self.cache_dir)!r} holds examples encoded for "
                    f"another dataset or other settings (differs in {changed}); delete it or pass another cache_dir."
                )
        else:
            manifest.write_text(json.dumps(settings, indent=1) + "\n")
        self.paths = [self.cache_dir / f"{index:07d}.safetensors" for index in range(len(dataset))]
        missing = [(index, path) for index, path in enumerate(self.paths) if not path.exists()]
        if missing:
            logger.info(f"EncodedOmniQADataset: encoding {len(missing)} examples into {self.cache_dir}")
            loader = torch.utils.data.DataLoader(
                _EncodeJob(dataset, collator, missing), batch_size=None, num_workers=num_workers
            )
            for _ in loader:
                pass

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        with safe_open(self.paths[index], framework="pt") as handle:
            metadata = handle.metadata()
            sample = {key: handle.get_tensor(key) for key in handle.keys()}
        sample["use_audio_in_video"] = _FLAG_VALUES[metadata["use_audio_in_video"]]
        sample["source"] = metadata["source"]
        return sample
