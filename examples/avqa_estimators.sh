#!/usr/bin/env bash
# How the selector's training estimators were compared on AVQA (README, "Training the selector: which estimator"):
# three arms (the published straight-through gate "ste", the attention policy, the attention policy + distillation
# from keep 1.0), three training seeds each, every arm from the same checkpoint, evaluated on the 2,500 test clips,
# then the pitch-only probe (each estimator trained on pitch clips only).
#
#     bash examples/avqa_estimators.sh [WORK_DIR]      # default WORK_DIR: avqa-estimators
#
# About 75 minutes on 2 CPU cores (each training run 2-6 min, each evaluation ~2.5 min idle); a GPU takes minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-avqa-estimators}
SIZE=12544  # 112 x 112 pixels per frame, as the embedded default was trained

# 1. Data: 200 training clips per task (the first 200 of the default's training clips: every clip has its own seed)
#    and the 500 test clips per task of the README's table.
python examples/make_avqa.py --output-dir "$WORK/avqa" --train 200 --validation 0 --test 500 --seed 0 --num-workers 2
grep '"id": "train-pitch-' "$WORK/avqa/train.jsonl" > "$WORK/avqa/train-pitch.jsonl"

# 2. The starting checkpoint: the embedded default (stage 1 and stage 2 finished) with its audio selector
#    re-initialised, as a freshly built model draws it (seed 0). Every arm starts here.
python - "$WORK/start" <<'PY'
import sys

import torch
from transformers import AutoProcessor

from omnisift_hf import OmniSiftForConditionalGeneration
from omnisift_hf.avqa import AVQA_CHECKPOINT

trained = OmniSiftForConditionalGeneration.from_pretrained(AVQA_CHECKPOINT)
torch.manual_seed(0)
start = OmniSiftForConditionalGeneration(trained.config)
missing, unexpected = start.load_state_dict(
    {k: v for k, v in trained.state_dict().items() if not k.startswith("compressor.")}, strict=False
)
assert all(k.startswith("compressor.") for k in missing) and not unexpected
start.save_pretrained(sys.argv[1], processor=AutoProcessor.from_pretrained(AVQA_CHECKPOINT))
PY

# 3. The arms: decoder and selector train together (encoders frozen, the paper's recipe) at keep 0.25, 300 steps,
#    batch 16, lr 5e-4; only the estimator (and the distillation weight) differ.
train() {  # NAME DATA SEED ESTIMATOR [extra train.py arguments]
    local name=$1 data=$2 seed=$3 estimator=$4
    shift 4
    python examples/train.py --model "$WORK/start" --data "$data" --cache-dir "$WORK/encoded-$(basename "$data" .jsonl)" \
        --video-min-pixels $SIZE --video-max-pixels $SIZE --freeze paper --keep-ratios 0.25 \
        --selector-estimator "$estimator" --learning-rate 5e-4 --batch-size 16 --max-steps 300 --save-steps 1000 \
        --logging-steps 25 --seed "$seed" --output-dir "$WORK/runs/$name" "$@"
}
for seed in 0 1 2; do
    train "ste-s$seed" "$WORK/avqa/train.jsonl" $seed ste
    train "policy-s$seed" "$WORK/avqa/train.jsonl" $seed attention_policy
    train "distill-s$seed" "$WORK/avqa/train.jsonl" $seed attention_policy --selector-distillation-weight 1.0
done
# The pitch-only probe: one consistent task drives the selector.
train pitch-ste "$WORK/avqa/train-pitch.jsonl" 0 ste
train pitch-policy "$WORK/avqa/train-pitch.jsonl" 0 attention_policy
train pitch-distill "$WORK/avqa/train-pitch.jsonl" 0 attention_policy --selector-distillation-weight 1.0

# 4. Evaluation: every run and the starting checkpoint on the 2,500 test clips, keep 1.0 and 0.25, OmniSIFT against
#    STVP + random audio, random dropping and the beep-first oracle on the same model, every clip kept (--per-clip).
ln -sfn "$(cd "$WORK" && pwd)/start" "$WORK/runs/start"
for run in "$WORK"/runs/*; do
    python examples/evaluate_avqa.py --model "$run" --data "$WORK/avqa" --keep-ratios 1.0 0.25 \
        --methods omnisift stvp_random_audio random oracle_audio --no-ablation --batch-size 10 --per-clip \
        --output-dir "$WORK/eval/$(basename "$run")"
done

# 5. The comparison tables (per run, arm means, arm minus STVP + random audio, arm minus arm, keep 1.0 against
#    the start), all tasks and the pitch-only probe.
E="$WORK/eval"
python examples/compare_avqa_runs.py --reference "$E/start" --output-dir examples/results/avqa_estimators \
    --arm "ste=$E/ste-s0,$E/ste-s1,$E/ste-s2" \
    --arm "attention_policy=$E/policy-s0,$E/policy-s1,$E/policy-s2" \
    --arm "attention_policy+distillation=$E/distill-s0,$E/distill-s1,$E/distill-s2"
python examples/compare_avqa_runs.py --reference "$E/start" --output-dir examples/results/avqa_estimators_pitch \
    --arm "ste=$E/pitch-ste" --arm "attention_policy=$E/pitch-policy" \
    --arm "attention_policy+distillation=$E/pitch-distill"
