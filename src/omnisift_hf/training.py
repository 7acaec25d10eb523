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

Qwen3-Omni trains the same way: `OmniSiftQwen3OmniForConditionalGeneration` with its `Qwen3OmniMoeProcessor` (the
collator takes the media policy from the processor; the policies name the same groups, its fused MoE experts and
routers belong to `language_model`, its deepstack mergers to `visual`).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import Dataset
from transformers import ProcessorMixin
from transformers.utils import logging

from .compression import check_keep_ratio
from .media import MEDIA_TYPES, VideoSampling, video_sampling_of
from .models._shared_modeling import build_selector
from .models.qwen2_5_omni.modeling_omnisift import OmniSiftForConditionalGeneration
from .processing_omnisift import _item_source, _item_type, collate_omni_inputs, prepare_omni_inputs
from .selector import OmniSiftAudioSelector

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
    "reset_selector",
]

# ---------------------------------------------------------------------------------------------------------------------
# Freezing policies
# ---------------------------------------------------------------------------------------------------------------------
# Every OmniSIFT model declares its parameter groups by name prefix (`parameter_groups`); the group names are the same
# for every backbone, the prefixes are its own. These are Qwen2.5-Omni's (and Qwen3-Omni's, whose thinker has the same
# submodules). Anything else (nothing, in the stock models) is reported as "other" and trains only under "full".
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


def _named_parameters(model: nn.Module, caller: str) -> tuple[list[tuple[str, nn.Parameter]], dict[str, str]]:
    """The model's parameters and its parameter groups (name prefixes)."""
    groups = getattr(model, "parameter_groups", None) if isinstance(model, nn.Module) else None
    named = list(model.named_parameters()) if isinstance(model, nn.Module) else []
    prefix = groups.get("compressor") if isinstance(groups, dict) else None
    if not isinstance(prefix, str) or not any(name.startswith(prefix) for name, _ in named):
        raise TypeError(
            f"{caller}: model must be an OmniSIFT model such as OmniSiftForConditionalGeneration (its "
            "`parameter_groups`: `compressor.*`, `model.visual.*`, ...), "
            f"got a {type(model).__name__}. Freeze the model before wrapping it (PEFT, DDP, DeepSpeed)."
        )
    return named, groups


def count_trainable_parameters(model: nn.Module) -> TrainableParameters:
    """Count the parameters of an OmniSIFT model per group, and which of them have `requires_grad=True`.

    Tied weights count once. Under DeepSpeed ZeRO-3 the full (unpartitioned) sizes are counted.
    """
    named, groups = _named_parameters(model, "count_trainable_parameters")
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
        `TypeError`: `policy` is not a string, or `model` is not an OmniSIFT model.

    Example:

    ```python
    >>> from omnisift_hf.testing_utils import tiny_model
    >>> from omnisift_hf.training import freeze

    >>> counts = freeze(tiny_model(), "selector")
    >>> counts.num_trainable == counts.total["compressor"] == counts.trainable["compressor"]
    True
    ```
    """
    choices = ", ".join(map(repr, FREEZE_POLICIES))
    if not isinstance(policy, str):
        raise TypeError(f"freeze: policy={policy!r} (of type {type(policy).__name__}); pass one name: {choices}.")
    if policy not in FREEZE_POLICIES:
        raise ValueError(f"freeze: unknown policy {policy!r}; choose one of {choices}.")
    trained_groups = FREEZE_POLICIES[policy]
    named, groups = _named_parameters(model, "freeze")
    for name, parameter in named:
        parameter.requires_grad_(_group_of(name, groups) in trained_groups)
    counts = count_trainable_parameters(model)
    counts = TrainableParameters(policy=policy, trainable=counts.trainable, total=counts.total)
    logger.info(str(counts))
    return counts


def reset_selector(model: nn.Module, seed: int = 0) -> None:
    """Re-initialise the audio selector (`model.compressor`) as a freshly built model initialises it, from `seed`.

    For training a selector again: with another estimator (`config.selector_estimator`) than the one that trained
    it, or from scratch on other data. Everything else in the model stays as it is; the global random state is not
    touched.

    Args:
        model ([`OmniSiftForConditionalGeneration`] or another OmniSIFT thinker): the model.
        seed (`int`, *optional*, defaults to 0): seed of the new weights (the same seed gives the same weights).

    Raises:
        `TypeError`: `model` has no OmniSIFT audio selector.
    """
    selector = getattr(model, "compressor", None)
    if not isinstance(selector, OmniSiftAudioSelector) or not hasattr(model, "_init_weights"):
        raise TypeError(
            f"reset_selector: model of type {type(model).__name__} has no OmniSIFT audio selector (`compressor`); "
            "pass an OmniSIFT thinker such as OmniSiftForConditionalGeneration (for a full model: `model.thinker`)."
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = build_selector(model.config)
        fresh.apply(model._init_weights)
    selector.load_state_dict(fresh.state_dict())


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

    def __post_init__(self):
        source = self.source if isinstance(self.source, str) else "OmniQAExample"
        if not isinstance(self.source, str):
            raise TypeError(f"OmniQAExample: source={self.source!r}; pass a string such as 'train.jsonl, line 3'.")
        if not isinstance(self.messages, list) or not self.messages:
            raise TypeError(
                f"{source}: messages={self.messages!r}; pass a non-empty list of {{'role': ..., 'content': ...}} "
                "chat turns."
            )
        if not isinstance(self.answer, str):
            raise TypeError(f"{source}: answer={self.answer!r} (of type {type(self.answer).__name__}); pass the text.")
        if not self.answer.strip():
            raise ValueError(f"{source}: answer={self.answer!r} is empty; pass the text the model should learn.")
        if self.use_audio_in_video is not None and not isinstance(self.use_audio_in_video, bool):
            raise TypeError(
                f"{source}: use_audio_in_video={self.use_audio_in_video!r}; pass True, False or None (when the "
                "video has an audio track)."
            )


class _DuplicateKeys(Exception):
    pass


def _object_of_unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """`json.loads` hook: a JSON object as a dict, refusing a key given twice (JSON itself keeps the last)."""
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise _DuplicateKeys(repeated)
    return dict(pairs)


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

    - `video`, `audio`, `image`: a path or a non-empty list of paths (or http(s) URLs); leave the key out rather
      than writing `null` or `[]`. Relative paths are resolved against the directory of the JSONL file. A video's
      audio track is used when it has one (`"use_audio_in_video": false` to ignore it).
    - `messages` (or its alias `conversation`): `{"role": "system" | "user" | "assistant", "content": ...}` turns,
      content as a string or a list of items: `{"type": "text", "text": ...}` or `{"type": "video", "video": <path or
      URL>}` (likewise audio, image; `"path"` or `"url"` may name the source). Top-level media are placed at the start
      of the first user turn. Only the first turn may be the system's. The last turn must be the assistant's: it is
      the answer that is learnt. Earlier assistant turns are context (masked in `labels`, like the rest of the
      prompt).
    - `system` (optional): a system prompt; without one the collator's `system_prompt` (by default Qwen2.5-Omni's
      for a Qwen2.5-Omni processor, none for a Qwen3-Omni one) is used, as in `pipeline("omni-qa")`.
    - `id` (optional, a string or an integer): ignored; any other key, in a line or in a content item, is an error (it
      catches typos such as `"vidoe"`), and so is a key given twice in one object or a line that is not UTF-8.

    Args:
        path (`str` or `os.PathLike`): the JSONL file.
        check_media_files (`bool`, *optional*, defaults to `True`): check that every local media file exists.
    """

    def __init__(self, path: str | os.PathLike, check_media_files: bool = True):
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(
                f"OmniQADataset: path={path!r} (of type {type(path).__name__}); pass the path of a JSONL file (a str "
                "or pathlib.Path)."
            )
        if not isinstance(check_media_files, bool):
            raise TypeError(f"OmniQADataset: check_media_files={check_media_files!r}; pass True or False.")
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(
                f"OmniQADataset: {os.fspath(path)!r} is not a file. Pass the path of a JSONL file."
            )
        self.examples: list[OmniQAExample] = []
        with open(self.path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf-8-sig" if number == 1 else "utf-8")  # tolerates a byte-order mark
                except UnicodeDecodeError as error:
                    raise ValueError(
                        f"{self.path}, line {number}: not UTF-8 text (byte {raw[error.start : error.start + 1]!r} at "
                        f"column {error.start + 1}); save the file as UTF-8."
                    ) from None
                if line.strip():
                    self.examples.append(self._parse(line, number, check_media_files))
        if not self.examples:
            raise ValueError(
                f"OmniQADataset: {os.fspath(self.path)!r} has no examples (it is empty or blank); write one JSON "
                "object per line."
            )

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> OmniQAExample:
        return self.examples[index]

    def _parse(self, line: str, number: int, check_media_files: bool) -> OmniQAExample:
        source = f"{self.path}, line {number}"
        try:
            record = json.loads(line, object_pairs_hook=_object_of_unique_keys)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{source}: not valid JSON ({error.msg} at column {error.colno}); each line must be one JSON object."
            ) from None
        except _DuplicateKeys as error:
            raise ValueError(
                f"{source}: key(s) {error.args[0]} given twice in one object (JSON would keep only the last); "
                "remove the extra one."
            ) from None
        if not isinstance(record, dict):
            raise ValueError(
                f'{source}: expected a JSON object such as {{"video": ..., "question": ..., "answer": ...}}, '
                f"got a {type(record).__name__} ({line.strip()[:60]})."
            )
        unknown = sorted(set(record) - set(_JSONL_KEYS))
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; expected some of {list(_JSONL_KEYS)}.")
        if "id" in record and (isinstance(record["id"], bool) or not isinstance(record["id"], (str, int))):
            raise ValueError(f"{source}: `id` must be a string or an integer, got {record['id']!r}.")

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
        for kind in (kind for kind in MEDIA_TYPES if kind in record):
            value = record[kind]
            if value is None or value == []:
                raise ValueError(
                    f"{source}: `{kind}` is {json.dumps(value)}; give a path or a list of paths, or leave the key "
                    f"out for an example without {kind}."
                )
            media_items += [{"type": kind, kind: item} for item in (value if isinstance(value, list) else [value])]
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
        late = [position for position, message in enumerate(messages) if message["role"] == "system" and position]
        if late:
            raise ValueError(
                f"{source}: turn {late[0]} is a system turn; only the first turn may be the system's (or use the "
                "`system` key)."
            )
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
            if not isinstance(item.get("text"), str) or set(item) - {"type", "text"}:
                raise ValueError(
                    f'{source}: a text item is {{"type": "text", "text": <string>}}, got {json.dumps(item)}.'
                )
            return {"type": "text", "text": item["text"]}
        if kind not in MEDIA_TYPES:
            raise ValueError(
                f"{source}: content item of type {kind!r} is not supported; use text, video, audio, image."
            )
        given = [key for key in (kind, "path", "url") if item.get(key) is not None]
        unknown = sorted(set(item) - {"type", kind, "path", "url"})
        if unknown or len(given) > 1:
            raise ValueError(
                f"{source}: the {kind} item {json.dumps(item)} has "
                f"{f'unknown key(s) {unknown}' if unknown else f'several sources {given}'}; a {kind} item is "
                f'{{"type": "{kind}", "{kind}": <path or URL>}}.'
            )
        value = item[given[0]] if given else None
        if not isinstance(value, str) or not value:
            raise ValueError(f"{source}: the {kind} item {item!r} needs a path or URL string.")
        if value.startswith(("http://", "https://")):
            return {"type": kind, kind: value}
        path = Path(value.removeprefix("file://"))
        resolved = path if path.is_absolute() else self.path.parent / path
        if check_media_files and not resolved.is_file():
            problem = "is a directory" if resolved.is_dir() else "not found"
            raise FileNotFoundError(
                f"{source}: {kind} file {value!r} {problem} (looked for {os.fspath(resolved)!r}; relative paths are "
                "resolved against the JSONL file's directory). Fix the path, or remove the line."
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
        processor (`Qwen2_5OmniProcessor` or `Qwen3OmniMoeProcessor`): the model's processor; it chooses the media
            policy (`media.media_policy_of`).
        keep_ratio (`float` or a sequence of `float`, *optional*): fraction of the audio + video tokens kept during
            training, passed to `forward` with every batch (default: the model config's `keep_ratio`). `1.0` trains
            without compression (and gives the selector no gradient). A sequence, e.g. `(1.0, 0.25)`, draws one of
            its values per batch (uniformly, from Python's `random`, which `Trainer` seeds): one model then learns
            the full input and the compressed one, so full-token accuracy does not drift while the selector trains.
        video_keep_ratio (`float`, *optional*), audio_keep_ratio (`float`, *optional*): per-modality keep fractions
            for training, overriding the split derived from `keep_ratio` (see `OmniSiftConfig`).
        system_prompt (`str`, *optional*): the system turn for examples without one (default, as in the pipeline:
            Qwen2.5-Omni's for a Qwen2.5-Omni processor, no system turn for a Qwen3-Omni one).
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
        if getattr(self.processor, "tokenizer", None) is None or not callable(self.processor):
            raise TypeError(
                "OmniQADataCollator: processor must be the model's processor (Qwen2_5OmniProcessor or "
                f"Qwen3OmniMoeProcessor, from "
                f"AutoProcessor.from_pretrained), got a {type(self.processor).__name__}."
            )
        for name, kind, what in (
            ("system_prompt", str, 'a string ("" for no system turn) or None for the default'),
            ("video_sampling", VideoSampling, "an omnisift_hf.media.VideoSampling or None for the processor's"),
            ("end_of_turn_token", str, 'a token string such as "<|im_end|>"'),
        ):
            value = getattr(self, name)
            if not isinstance(value, kind) and not (value is None and name != "end_of_turn_token"):
                raise TypeError(f"OmniQADataCollator: {name}={value!r} (of type {type(value).__name__}); pass {what}.")
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
        if not isinstance(features, Sequence) or isinstance(features, (str, bytes)):
            raise TypeError(
                f"OmniQADataCollator: features must be a list of examples (from OmniQADataset or "
                f"EncodedOmniQADataset), got a {type(features).__name__}."
            )
        if not features:
            raise ValueError("OmniQADataCollator: features is an empty list; a batch needs at least one example.")
        samples = [feature if _is_encoded(feature) else self.encode(self._example(feature)) for feature in features]

        flags = {sample.get("use_audio_in_video") for sample in samples} - {None}
        if len(flags) > 1:
            sources = "; ".join(
                f"{sample.get('source', '<encoded example>')}: "
                f"{'with' if sample['use_audio_in_video'] else 'without'} its audio track"
                for sample in samples
                if sample.get("use_audio_in_video") is not None
            )
            raise ValueError(
                "OmniQADataCollator: one batch mixes videos with and without their audio track; the model takes one "
                f"`use_audio_in_video` per batch ({sources}). Use a per-device batch size of 1, keep the two kinds "
                'in separate datasets, or set "use_audio_in_video": false on the lines with sound.'
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
            return OmniQAExample(  # checks the fields
                messages=feature["messages"],
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
        reuses a cache. The tokenizer (vocabulary, merges, added tokens) and the image, video and audio processors'
        configurations enter as SHA-256 digests."""
        tokenizer = self.processor.tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        vocabulary = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
        to_dict = getattr(self.processor, "to_dict", None)
        configuration = json.dumps(to_dict() if callable(to_dict) else {}, sort_keys=True, default=str)
        return {
            "processor": type(self.processor).__name__,
            "processor_config": _digest(configuration),
            "tokenizer": _digest(vocabulary),
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
# Bumped whenever what `encode` stores, or how an example is fingerprinted, changes: caches of another format are
# refused like caches of other settings.
_CACHE_FORMAT = 2
_FLAG_VALUES = {"true": True, "false": False, "none": None}
_ENCODED_KEYS = ("input_ids", "attention_mask", "labels")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _canonical(value, source: str):
    """`value` (part of an example) as JSON data for its fingerprint; arrays and images by a digest of their bytes."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(key): _canonical(item, source) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(item, source) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.Tensor):
        flat = value.detach().cpu().contiguous().reshape(-1)
        return {
            "tensor": str(value.dtype),
            "shape": list(value.shape),
            "sha256": _bytes_digest(flat.view(torch.uint8)),
        }
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        return {"array": str(array.dtype), "shape": list(array.shape), "sha256": _bytes_digest(array)}
    if isinstance(value, Image.Image):
        return {"image": value.mode, "size": list(value.size), "sha256": _bytes_digest(value.tobytes())}
    raise TypeError(
        f"{source}: EncodedOmniQADataset cannot fingerprint a {type(value).__name__} in the example; give media as "
        "paths, URLs, arrays, tensors or PIL images."
    )


def _bytes_digest(data) -> str:
    if isinstance(data, torch.Tensor):
        data = data.numpy()
    return hashlib.sha256(memoryview(data).cast("B") if not isinstance(data, bytes) else data).hexdigest()


def _local_media_files(messages: list) -> list[str]:
    """The local files an example's media items name (URLs and in-memory media excluded), as absolute paths."""
    files = []
    for message in messages:
        content = message.get("content") if isinstance(message, Mapping) else None
        for item in content if isinstance(content, list) else []:
            kind = _item_type(item)  # the encoder's own reading of an item
            if kind == "text":
                continue
            source = _item_source(item, kind)
            if isinstance(source, (str, os.PathLike)):
                path = os.fspath(source)
                if not path.startswith(("http://", "https://", "data:")):
                    files.append(os.path.abspath(path.removeprefix("file://")))
    return files


def _fingerprint(example: OmniQAExample, settings: str) -> str:
    """SHA-256 of everything `encode` reads: the encoding settings (`settings`, a digest), the example's fields and
    the identity of its media files (path, size, modification time in ns)."""
    try:
        files = _local_media_files(example.messages)
    except (TypeError, ValueError) as error:  # a malformed content item, named with its example
        raise type(error)(f"{example.source}: {error}") from None
    media = []
    for path in files:
        try:
            status = os.stat(path)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{example.source}: media file {path!r} not found. EncodedOmniQADataset keys each example on its "
                "media files (size and modification time), so they must exist: restore the file or remove the example."
            ) from None
        media.append([path, status.st_size, status.st_mtime_ns])
    content = {
        "settings": settings,
        "messages": _canonical(example.messages, example.source),
        "answer": example.answer,
        "use_audio_in_video": example.use_audio_in_video,
        "media": media,
    }
    return _digest(json.dumps(content, sort_keys=True, ensure_ascii=False))


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """`write(temporary)` into a unique temporary file beside `path`, then rename it to `path`: readers (and a later
    run after a crash) see the complete file or none."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _damage(path: Path, fingerprint: str) -> str | None:
    """Why the encoded file at `path` cannot be used for the example `fingerprint` (`None`: it can)."""
    try:
        with safe_open(path, framework="pt") as handle:
            metadata, keys = handle.metadata() or {}, set(handle.keys())
    except (SafetensorError, OSError) as error:
        return f"unreadable: {error}"
    if metadata.get("fingerprint") != fingerprint:
        return "it holds another example"
    if not set(_ENCODED_KEYS) <= keys or metadata.get("use_audio_in_video") not in _FLAG_VALUES:
        return "incomplete"
    return None


class _EncodeJob(Dataset):
    """The examples to encode: (index in the dataset, fingerprint, file) triples."""

    def __init__(self, dataset, collator, jobs):
        self.dataset, self.collator, self.jobs = dataset, collator, jobs

    def __len__(self):
        return len(self.jobs)

    def __getitem__(self, index):
        number, fingerprint, path = self.jobs[index]
        sample = self.collator.encode(OmniQADataCollator._example(self.dataset[number]))
        metadata = {
            "format": str(_CACHE_FORMAT),
            "fingerprint": fingerprint,
            "use_audio_in_video": str(sample.pop("use_audio_in_video")).lower(),
        }
        sample.pop("source")
        tensors = {key: value.contiguous() for key, value in sample.items() if isinstance(value, torch.Tensor)}
        _write_atomically(path, lambda temporary: save_file(tensors, temporary, metadata=metadata))
        return index


class EncodedOmniQADataset(Dataset):
    """The examples of `dataset` encoded once by `collator` (media decoded, chat template and processor run, answer
    appended; [`OmniQADataCollator.encode`]) and stored in `cache_dir`, one safetensors file per example.

    Training for many epochs over the same clips then skips the media pipeline: the collator only pads (on the
    synthetic AVQA clips, batch 16, 2 CPU cores: ~0.7-1.2 s of media work per step saved). Items are the encoded
    dicts, which `OmniQADataCollator.__call__` accepts as they are; keep ratios still come from the collator used in
    training. Tensors are stored exactly as the processor made them (float32 features: about 2 MB per 6 s clip of
    112 x 112 frames), so a batch from the cache equals a batch built from the media.

    Each file is named by the example's fingerprint: a SHA-256 of its fields (messages, answer, system turn,
    `use_audio_in_video`), of its media files' identity (absolute path, size and modification time; not their
    bytes) and of the encoding settings. Opening the dataset encodes exactly the examples that have no valid file
    yet: new ones, edited ones (an answer changed, a clip replaced) and ones whose file is damaged (cut short by a
    crash: a warning names it); every other example reuses its file. Files are written under a temporary name and
    renamed when complete. Media at URLs are keyed on the URL only.

    Args:
        dataset: an [`OmniQADataset`] or any sequence of examples the collator accepts.
        collator ([`OmniQADataCollator`]): whose processor, sampling and system prompt encode the examples.
        cache_dir (`str` or `os.PathLike`): created if missing. A directory written with other encoding settings
            (processor, tokenizer, chat template, system prompt, frame sampling, transformers version) is refused
            (`ValueError`): delete it or choose another. Several datasets (or versions of one) may share a
            directory: each finds its own examples. Files of examples no longer in the dataset stay until the
            directory is deleted.
        num_workers (`int`, defaults to 0): processes encoding in parallel (0 = this process).

    Raises:
        `ValueError`, `TypeError`, `FileNotFoundError` (naming the argument, file or JSONL line) before any encoding;
        on reading, an error naming a file that is missing or damaged and what to do.
    """

    def __init__(self, dataset, collator: OmniQADataCollator, cache_dir, num_workers: int = 0):
        if not isinstance(collator, OmniQADataCollator):
            raise TypeError(
                f"EncodedOmniQADataset: collator must be an OmniQADataCollator, got a {type(collator).__name__}."
            )
        if (
            isinstance(dataset, (str, bytes, Mapping))
            or not hasattr(dataset, "__len__")
            or not hasattr(dataset, "__getitem__")
        ):
            raise TypeError(
                f"EncodedOmniQADataset: dataset must be an OmniQADataset or a sequence of examples, got a "
                f"{type(dataset).__name__}."
            )
        if len(dataset) == 0:
            raise ValueError("EncodedOmniQADataset: dataset is empty; there is nothing to encode.")
        if not isinstance(cache_dir, (str, os.PathLike)):
            raise TypeError(
                f"EncodedOmniQADataset: cache_dir={cache_dir!r} (of type {type(cache_dir).__name__}); pass a "
                "directory path (str or pathlib.Path)."
            )
        if isinstance(num_workers, bool) or not isinstance(num_workers, int):
            raise TypeError(f"EncodedOmniQADataset: num_workers={num_workers!r}; use an integer >= 0.")
        if num_workers < 0:
            raise ValueError(f"EncodedOmniQADataset: num_workers={num_workers!r}; use an integer >= 0.")
        self.cache_dir = Path(cache_dir)
        if self.cache_dir.exists() and not self.cache_dir.is_dir():
            raise ValueError(
                f"EncodedOmniQADataset: cache_dir={os.fspath(cache_dir)!r} is a file; pass a directory (it is created "
                "if missing)."
            )
        settings = {"format": _CACHE_FORMAT, "transformers": transformers.__version__, **collator.encoding_settings()}
        settings = json.loads(json.dumps(settings))  # as the manifest reads back (tuples become lists)
        examples = [OmniQADataCollator._example(dataset[index]) for index in range(len(dataset))]
        digest = _digest(json.dumps(settings, sort_keys=True))
        fingerprints = [_fingerprint(example, digest) for example in examples]
        self._check_manifest(settings)

        self._sources = [example.source for example in examples]
        self._fingerprints = fingerprints
        self.paths = [self.cache_dir / f"{fingerprint[:32]}.safetensors" for fingerprint in fingerprints]
        jobs, damaged = {}, []
        for index, (fingerprint, path) in enumerate(zip(fingerprints, self.paths, strict=True)):
            if path in jobs or not path.exists():
                jobs.setdefault(path, (index, fingerprint, path))
            elif (problem := _damage(path, fingerprint)) is not None:
                damaged.append(f"{path.name} ({self._sources[index]}; {problem})")
                jobs[path] = (index, fingerprint, path)
        if damaged:
            logger.warning_once(
                f"EncodedOmniQADataset: {len(damaged)} file(s) in {self.cache_dir} cannot be used (cut short by a "
                f"crash or a full disk?); encoding the example(s) again: {'; '.join(damaged[:3])}"
                f"{' ...' if len(damaged) > 3 else ''}"
            )
        if jobs:
            logger.info(
                f"EncodedOmniQADataset: encoding {len(jobs)} of {len(set(self.paths))} examples into {self.cache_dir} "
                "(the others are in the cache)"
            )
            job = _EncodeJob(dataset, collator, list(jobs.values()))
            for _ in torch.utils.data.DataLoader(job, batch_size=None, num_workers=num_workers):
                pass

    def _check_manifest(self, settings: dict) -> None:
        """Refuse a directory written with other settings, or one that is not an encoding cache; start a new one."""
        manifest = self.cache_dir / _CACHE_MANIFEST
        where = f"cache_dir={os.fspath(self.cache_dir)!r}"
        if manifest.is_file():
            try:
                found = json.loads(manifest.read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                found = error
            if not isinstance(found, dict):
                raise ValueError(
                    f"EncodedOmniQADataset: {os.fspath(manifest)!r} cannot be read ({found}); delete {where} (it is "
                    "encoded again) or pass another cache_dir."
                )
            if found != settings:
                changed = sorted(key for key in set(found) | set(settings) if found.get(key) != settings.get(key))
                raise ValueError(
                    f"EncodedOmniQADataset: {where} holds examples encoded with other settings (differs in "
                    f"{changed}); delete it or pass another cache_dir."
                )
            return
        if self.cache_dir.is_dir() and any(self.cache_dir.iterdir()):
            raise ValueError(
                f"EncodedOmniQADataset: {where} is not empty and has no {_CACHE_MANIFEST}, so it is not an encoding "
                "cache; pass a new or empty directory."
            )
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        text = json.dumps(settings, indent=1) + "\n"
        _write_atomically(manifest, lambda temporary: temporary.write_text(text, encoding="utf-8"))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path, source = self.paths[index], self._sources[index]
        try:
            with safe_open(path, framework="pt") as handle:
                metadata = handle.metadata() or {}
                sample = {key: handle.get_tensor(key) for key in handle.keys()}
        except FileNotFoundError:
            raise FileNotFoundError(
                f"EncodedOmniQADataset: {os.fspath(path)!r} (the encoding of {source}) is gone; create the "
                "EncodedOmniQADataset again: it encodes missing examples."
            ) from None
        except (SafetensorError, OSError) as error:
            raise ValueError(
                f"EncodedOmniQADataset: {os.fspath(path)!r} (the encoding of {source}) cannot be read ({error}); "
                "delete it and create the EncodedOmniQADataset again, which encodes it anew."
            ) from None
        if metadata.get("fingerprint") != self._fingerprints[index] or not set(_ENCODED_KEYS) <= set(sample):
            raise ValueError(
                f"EncodedOmniQADataset: {os.fspath(path)!r} does not hold the encoding of {source}; delete it and "
                "create the EncodedOmniQADataset again, which encodes it anew."
            )
        sample["use_audio_in_video"] = _FLAG_VALUES[metadata["use_audio_in_video"]]
        sample["source"] = source
        return sample
