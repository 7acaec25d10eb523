"""Fine-tune OmniSIFT with `transformers.Trainer`: the audio selector alone, or the paper's recipe.

With no arguments this runs offline in about 10 s on a 2-core CPU: the embedded tiny default (a random-weight OmniSIFT
model with a real Qwen2.5-Omni processor) trains on a small synthetic dataset written next to the checkpoint (clips
of a square that changes colour every 2 seconds, with a tone; template questions about the colour and the tone),
saves a checkpoint (model + processor) and answers two questions with it through `pipeline("omni-qa")`.

    python examples/train.py
    python examples/train.py --freeze selector --keep-ratios 0.25 --output-dir selector-run
    python examples/train.py --model Qwen/Qwen2.5-Omni-7B --data train.jsonl --freeze selector --bf16 \\
        --gradient-checkpointing --learning-rate 1e-4 --output-dir omnisift-selector

Writes checkpoints, the final model and processor (and, with the default data, `synthetic-data/`) into --output-dir
(default: omnisift-finetuned). Multi-GPU (DDP, DeepSpeed ZeRO-2/3) and the paper's full recipe: see
examples/accelerate/README.md. The JSONL format is documented in `omnisift_hf.training.OmniQADataset`.
"""

import argparse
import json
import sys
from pathlib import Path

import torch
from transformers import AutoProcessor, Trainer, TrainingArguments, pipeline

import omnisift_hf  # noqa: F401  (registers the "omni-qa" pipeline and the "omnisift" model type)
from omnisift_hf import OmniSiftForConditionalGeneration
from omnisift_hf.media import video_sampling_of
from omnisift_hf.models.qwen2_5_omni.configuration_omnisift import SELECTOR_ESTIMATORS
from omnisift_hf.testing_utils import tiny_model, tiny_processor
from omnisift_hf.tools.avqa import avqa_model
from omnisift_hf.tools.cli import DTYPES, parse_dtype
from omnisift_hf.tools.synthetic import write_synthetic_audio, write_synthetic_clip
from omnisift_hf.training import (
    FREEZE_POLICIES,
    EncodedOmniQADataset,
    OmniQADataCollator,
    OmniQADataset,
    freeze,
    reset_selector,
)

# The synthetic clips: the square is red, then green, blue, yellow, 2 seconds each (see `write_synthetic_clip`).
COLORS = ("red", "green", "blue", "yellow")


def write_synthetic_dataset(directory: Path) -> Path:
    """Four clips with sound (2-8 s), three tones (1-3 s) and a JSONL file of template questions about them."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = []
    for index, color in enumerate(COLORS):
        clip = f"clip_{2 * (index + 1)}s.mp4"
        if not (directory / clip).exists():
            write_synthetic_clip(directory / clip, seconds=2.0 * (index + 1), fps=4, size=(56, 56))
        lines.append(
            {"video": clip, "question": "What color is the square at the end?", "answer": f"The square is {color}."}
        )
        lines.append({"video": clip, "question": "What color is the square?", "answer": "The square is red."})
    for seconds in (1, 2, 3):
        tone = f"tone_{seconds}s.wav"
        if not (directory / tone).exists():
            write_synthetic_audio(directory / tone, seconds=float(seconds))
        lines.append(
            {"audio": tone, "question": "What sound do you hear in the audio?", "answer": "I hear a low tone."}
        )
    path = directory / "train.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="OmniSIFT or Qwen2.5-Omni checkpoint (directory or Hub id); default: tiny")
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="dtype the weights are loaded in. float32 (default): fp32 master weights, the usual setting for "
        "--bf16 mixed precision; bfloat16 halves the memory of frozen weights but trains in pure bf16 (float16 "
        "likewise, in pure fp16); auto: the checkpoint's own (float32 for the tiny default)",
    )
    parser.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="auto (default): the accelerator if there is one (one per process under accelerate / torchrun), else cpu",
    )
    parser.add_argument(
        "--init",
        choices=["tiny", "avqa"],
        default="tiny",
        help="random model when --model is not given: the embedded tiny default (hidden 32) or the larger "
        "omnisift_hf.avqa.avqa_model() (hidden 128, 4 layers) for the synthetic audio-visual QA benchmark",
    )
    parser.add_argument("--hidden-size", type=int, default=128, help="--init avqa: text hidden size (default 128)")
    parser.add_argument("--num-layers", type=int, default=4, help="--init avqa: decoder layers (default 4)")
    parser.add_argument("--data", help="training JSONL file; default: a synthetic dataset written into --output-dir")
    parser.add_argument(
        "--video-min-pixels",
        type=int,
        help="minimum pixels per sampled frame (default: the processor's, Qwen's 128 x 28 x 28); saved with the "
        "processor",
    )
    parser.add_argument(
        "--video-max-pixels",
        type=int,
        help="maximum pixels per sampled frame (default: the processor's, Qwen's 768 x 28 x 28); saved with the "
        "processor",
    )
    parser.add_argument(
        "--freeze",
        choices=list(FREEZE_POLICIES),
        default="paper",
        help="what trains: 'selector' (the audio selector only), 'paper' (encoders frozen; decoder, lm_head and "
        "selector train, the published recipe), 'full' (everything). Default: paper",
    )
    parser.add_argument(
        "--keep-ratios",
        type=float,
        nargs="+",
        help="fraction(s) of audio+video tokens kept during training (default: the model config's); also written to "
        "the saved config, so the checkpoint answers at the ratio it was trained at. One value: every batch; several "
        "(e.g. 1.0 0.25): each batch draws one, and the config gets the smallest",
    )
    parser.add_argument(
        "--selector-estimator",
        choices=list(SELECTOR_ESTIMATORS),
        help="how training reaches the audio selector (default: the model config's, 'ste' unless set): 'ste' (the "
        "published straight-through gate) or 'attention_policy' (keep decisions inside the attention softmax; the "
        "dropped audio still gets a gradient). Saved in the config; inference is the same",
    )
    parser.add_argument(
        "--selector-distillation-weight",
        type=float,
        help="weight of the distillation term added to the loss while training: KL(the same model at keep 1.0, no "
        "gradient || the compressed model) at the answer tokens (default: the model config's, 0.0 unless set: no "
        "term, no teacher forward). Works with either estimator; saved in the config",
    )
    parser.add_argument(
        "--reset-selector",
        action="store_true",
        help="re-initialise the audio selector (from --seed) before training, everything else as loaded: to train "
        "a selector again with another --selector-estimator than the one that trained it",
    )
    # The spelling of --keep-ratios before the examples shared one flag vocabulary; older recipes still work.
    parser.add_argument("--keep-ratio", dest="keep_ratios", type=float, nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--video-keep-ratio", type=float, help="per-modality override of --keep-ratios (video)")
    parser.add_argument("--audio-keep-ratio", type=float, help="per-modality override of --keep-ratios (audio)")
    parser.add_argument("--output-dir", default="omnisift-finetuned", help="checkpoints and the final model")
    parser.add_argument(
        "--epochs", type=float, help="training epochs (default: 1, the paper's; 6 on the tiny default)"
    )
    parser.add_argument("--max-steps", type=int, default=-1, help="stop after this many optimiser steps (overrides)")
    parser.add_argument(
        "--learning-rate", type=float, help="peak learning rate (default: 1e-5, the paper's; 1e-2 on the tiny default)"
    )
    parser.add_argument("--lr-scheduler", default="cosine", help="transformers scheduler name (default: cosine)")
    parser.add_argument("--warmup-ratio", type=float, default=0.05, help="warm-up share of the steps (default: 0.05)")
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=2, help="examples per device and step (default: 2)")
    parser.add_argument("--gradient-accumulation-steps", type=int, default=1)
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed precision (fp32 master weights)")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations in backward")
    parser.add_argument("--logging-steps", type=int, default=5)
    parser.add_argument("--save-steps", type=int, default=500, help="checkpoint every N steps (default: 500)")
    parser.add_argument("--save-total-limit", type=int, default=2, help="checkpoints kept (default: 2)")
    parser.add_argument("--resume-from-checkpoint", help="a checkpoint-N directory of an earlier run to continue")
    parser.add_argument(
        "--cache-dir",
        help="encode every example once (media decoding + processor) into this directory and train from it: for "
        "several epochs over the same clips (see omnisift_hf.training.EncodedOmniQADataset)",
    )
    parser.add_argument("--encode-workers", type=int, default=0, help="--cache-dir: processes encoding (default: 0)")
    parser.add_argument("--dataloader-num-workers", type=int, default=0, help="processes decoding media (default: 0)")
    parser.add_argument("--deepspeed", help="a DeepSpeed JSON config (alternative to an accelerate config file)")
    parser.add_argument("--report-to", default="none", help="tensorboard, wandb, ... (default: none)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the random model, data order and keep-ratio draws (default: 0)"
    )
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    return args


def main() -> int:
    args = parse_args()
    tiny = args.model is None
    output_dir = Path(args.output_dir)
    on_accelerator = args.device != "cpu" and torch.accelerator.is_available()
    # Built before the model: under DeepSpeed ZeRO-3, `from_pretrained` must see the config to shard while loading.
    training_args = TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=args.epochs if args.epochs is not None else (6.0 if tiny else 1.0),
        max_steps=args.max_steps,
        learning_rate=args.learning_rate if args.learning_rate is not None else (1e-2 if tiny else 1e-5),
        lr_scheduler_type=args.lr_scheduler,
        warmup_steps=args.warmup_ratio,  # a float in [0, 1) is a share of the total steps
        weight_decay=args.weight_decay,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        bf16=args.bf16,
        activation_checkpointing=args.gradient_checkpointing,
        logging_steps=args.logging_steps,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=args.save_total_limit,
        dataloader_num_workers=args.dataloader_num_workers,
        # On the CPU (chosen, or no accelerator), say so: transformers then allows bf16 autocast and gloo DDP there.
        use_cpu=not on_accelerator,
        dataloader_pin_memory=on_accelerator,
        deepspeed=args.deepspeed,
        report_to=args.report_to,
        seed=args.seed,
        # The selector sits idle on batches with nothing to drop (audio-only, keep ratio 1): DDP must allow that.
        ddp_find_unused_parameters=True,
    )
    main_process = training_args.process_index == 0

    # Weights: the tiny default, a checkpoint to resume (read through from_pretrained, which understands the key
    # layout save_pretrained writes; Trainer's own reload does not in transformers 5.24), or --model.
    dtype = parse_dtype(args)
    if args.resume_from_checkpoint:
        model = OmniSiftForConditionalGeneration.from_pretrained(args.resume_from_checkpoint, dtype=dtype)
    elif tiny:
        model = (
            avqa_model(hidden_size=args.hidden_size, num_layers=args.num_layers, seed=args.seed)
            if args.init == "avqa"
            else tiny_model(seed=args.seed)
        )
        if dtype != "auto":
            model = model.to(dtype)
    else:
        model = OmniSiftForConditionalGeneration.from_pretrained(args.model, dtype=dtype)
    processor = tiny_processor() if tiny else AutoProcessor.from_pretrained(args.model)
    if args.selector_estimator:
        model.config.selector_estimator = args.selector_estimator
    if args.selector_distillation_weight is not None:
        model.config.selector_distillation_weight = args.selector_distillation_weight
        model.config.validate_selector_distillation_weight()
    if args.reset_selector:
        reset_selector(model, seed=args.seed)
    counts = freeze(model, args.freeze)
    if main_process:
        print(counts, flush=True)

    data = args.data
    if data is None:
        with training_args.main_process_first(desc="writing the synthetic dataset"):
            data = write_synthetic_dataset(output_dir / "synthetic-data")
    try:
        dataset = examples = OmniQADataset(data)
        # Frame-size bounds go into the processor's config: the saved checkpoint then samples frames as it was
        # trained, in the pipeline and in later training runs (omnisift_hf.media.video_sampling_of).
        if args.video_min_pixels or args.video_max_pixels:
            default = video_sampling_of(processor)
            bounds = {
                "shortest_edge": args.video_min_pixels or default.min_pixels,
                "longest_edge": args.video_max_pixels or default.max_pixels,
            }
            if bounds["shortest_edge"] > bounds["longest_edge"]:
                raise ValueError(
                    f"--video-min-pixels {bounds['shortest_edge']} exceeds --video-max-pixels "
                    f"{bounds['longest_edge']}; pass a minimum no larger than the maximum."
                )
            processor.video_processor.size = bounds
        collator = OmniQADataCollator(
            processor,
            keep_ratio=args.keep_ratios,
            video_keep_ratio=args.video_keep_ratio,
            audio_keep_ratio=args.audio_keep_ratio,
        )
        if args.cache_dir:
            with training_args.main_process_first(desc="encoding the dataset"):
                dataset = EncodedOmniQADataset(dataset, collator, args.cache_dir, num_workers=args.encode_workers)
    except (FileNotFoundError, ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    # The saved config records the training ratios: the checkpoint compresses that way unless told otherwise.
    # With several training ratios it records the smallest: the compressed operating point being trained for.
    # A training keep ratio replaces the per-modality ratios of the loaded config, as it does in forward: a checkpoint
    # trained with `--keep-ratios 0.25` alone must not keep an earlier stage's `audio_keep_ratio`.
    if collator.keep_ratio is not None:
        ratios = collator.keep_ratio
        model.config.keep_ratio = min(ratios) if isinstance(ratios, tuple) else ratios
        model.config.video_keep_ratio = collator.video_keep_ratio
        model.config.audio_keep_ratio = collator.audio_keep_ratio
    else:
        for name in ("video_keep_ratio", "audio_keep_ratio"):
            if getattr(collator, name) is not None:
                setattr(model.config, name, getattr(collator, name))

    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=processor,  # saved with every checkpoint: each one loads in pipeline("omni-qa")
    )
    result = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_model(str(output_dir))
    trainer.save_state()

    if main_process:
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        print(f"\ntrained {trainer.state.global_step} steps in {result.metrics['train_runtime']:.1f} s")
        if losses:
            print(f"loss: first logged {losses[0]:.4f}, last logged {losses[-1]:.4f}, mean {result.training_loss:.4f}")
        print(f"saved model and processor to {output_dir}")
        if tiny and args.data is None:
            # The checkpoint directory is all pipeline("omni-qa") needs. After 36 steps, the tiny random model has
            # learnt the answer format and the most frequent answer, not yet to read the colour off the frames.
            pipe = pipeline("omni-qa", model=str(output_dir))
            print(f"pipeline('omni-qa', model={str(output_dir)!r}):")
            for example in (examples[0], examples[len(COLORS) * 2 - 2]):  # the 2 s and the 8 s clip
                video = example.messages[0]["content"][0]["video"]
                question = example.messages[0]["content"][-1]["text"]
                answer = pipe(video=video, question=question, max_new_tokens=12)["answer"]
                print(f"  {Path(video).name}: {question!r} -> {answer!r} (trained on {example.answer!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
