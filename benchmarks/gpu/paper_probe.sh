#!/usr/bin/env bash
# Paper-size U-Net probe of one study cell (issue #4: RS-IMLE at 10% of the demos), all in ONE call
# of a lent GPU machine: train on the GPU with the study's 3000-step recipe and only the U-Net
# changed to the paper's 256/512/1024 (61M parameters), export (fp32 + int8) and evaluate fp32
# through runtime.Policy on the machine's 16 CPU cores. A checkpoint of this size (0.7 GB with its
# optimiser) cannot come home, so only evaluations, logs and loss curves do (runs.tgz).
# A training cut by TRAIN_S is still exported from its last checkpoint and marked "partial" in
# train.json (its cosine schedule did not finish), so a slow GPU still yields a reading.
# Needs .gpu/ carried (wheels + state-only demos; see session.sh's header).
# Usage (on the device): OUT=/path SEEDS=0,1,2,3 bash benchmarks/gpu/paper_probe.sh
# At home: tar xzf OUT/runs.tgz, then
#   python benchmarks/sample_efficiency.py --stage report --runs-dir runs/se_paper --against runs/se_3000
set -u
DATA=${DATA:-.gpu/data/pusht.zarr}
RUNS=${RUNS:-runs/se_paper}
METHODS=${METHODS:-rs_imle}
FRACTION=${FRACTION:-0.1}
SEEDS=${SEEDS:-0,1,2,3}
PRESET=${PRESET:-paper}
STEPS=${STEPS:-3000}
EPISODES=${EPISODES:-100}
DEVICE=${DEVICE:-cuda}
TRAIN_S=${TRAIN_S:-300}       # training phase wall budget
EXPORT_S=${EXPORT_S:-90}
DEADLINE_S=${DEADLINE_S:-540} # whole script; evaluation gets what is left (less PACK_S)
PACK_S=15
mkdir -p "$RUNS"
NEEDS="zarr, gym_pusht, onnxruntime" . "$(dirname "$0")/prologue.sh"
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
SE="$PY benchmarks/sample_efficiency.py --runs-dir $RUNS --data $DATA --methods $METHODS --fractions $FRACTION --seeds $SEEDS"


n_runs=$(( $(echo "$SEEDS" | tr ',' '\n' | grep -c .) * $(echo "$METHODS" | tr ',' '\n' | grep -c .) ))
stamp "train: $METHODS f$FRACTION seeds $SEEDS, preset $PRESET, $STEPS steps ($TRAIN_S s budget)"
( sleep 60; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader > "$OUT/gpu_util.txt" 2>&1 ) >/dev/null 2>&1 &
util=$!
timeout "$TRAIN_S" $SE --stage train --device "$DEVICE" --steps "$STEPS" --parallel "$n_runs" --threads 1 \
  --preset "$PRESET" --batch-size 64 --n-samples 10 --lr 1e-3 --warmup 200 --checkpoint-every 500 > "$OUT/train.log" 2>&1
stop_trainers
sleep 2
kill $util 2>/dev/null
stamp "train phase over"; cat "$OUT/train.log"
# A run cut short: export its last checkpoint anyway, marked partial.
$PY - "$RUNS" <<'PY'
import json, pathlib, sys
from trainer.train.checkpoint import load_checkpoint
for d in sorted(pathlib.Path(sys.argv[1]).glob("*_f*_s*")):
    if (d / "train.json").exists() or not (d / "last.pt").exists():
        continue
    step = load_checkpoint(d / "last.pt")["step"]
    (d / "train.json").write_text(json.dumps({"steps": step, "partial": True, "device": "cuda"}))
    print("partial run:", d.name, "step", step)
PY
for d in "$RUNS"/*/; do [ -f "$d/metrics.jsonl" ] && echo "$d $(tail -1 "$d/metrics.jsonl" | cut -c1-160)"; done

stamp "export"
timeout "$EXPORT_S" $SE --stage export --export-parallel "$n_runs" > "$OUT/export.log" 2>&1; cat "$OUT/export.log"
left=$(( DEADLINE_S - PACK_S - ($(date +%s) - t0) ))
stamp "eval fp32, $EPISODES episodes per run, $left s left"
timeout "$left" $SE --stage eval --precisions fp32 --episodes "$EPISODES" --eval-workers 16 > "$OUT/eval.log" 2>&1
grep -h "score\|done" "$OUT/eval.log"
tar czf "$OUT/runs.tgz" --exclude='*.pt' --exclude='*.onnx' --exclude='*.data' "$RUNS" 2>/dev/null
stamp "done"
