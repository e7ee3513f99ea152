#!/usr/bin/env bash
# One lent GPU session (H100/H200 + 16 CPU cores), prepared to fit its ~9 minutes in one call:
#   1. the shipped Push-T state model (imle-train on the full demos, CUDA);
#   2. the sample-efficiency study's training runs, in parallel on the same GPU;
#   3. export (fp32 + int8) and closed-loop evaluation of the study on the 16 CPU cores.
# The GPU machine has no network: Python wheels the image lacks are carried in .gpu/wheels and the
# Push-T state/action arrays in .gpu/data (both git-ignored). Recreate them with:
#   pip download -q --no-deps --python-version 3.12 --platform manylinux2014_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --only-binary=:all: -d .gpu/wheels \
#     zarr==3.1.5 numcodecs==0.16.6 donfig google-crc32c gym-pusht pymunk==6.11.1 shapely gymnasium \
#     pygame farama-notifications pyserial typing_extensions cloudpickle cffi pycparser
#   S=../shared/data/pusht/pusht_cchi_v7_replay.zarr D=.gpu/data/pusht.zarr; mkdir -p $D/data
#   cp $S/.zattrs $S/.zgroup $D/ && cp -r $S/meta $D/ && cp $S/data/.z* $D/data/ && cp -r $S/data/state $S/data/action $D/data/
# and call the device with carry [".gpu"].
# Usage (on the device): OUT=/path bash benchmarks/gpu/session.sh
set -u
DATA=${DATA:-.gpu/data/pusht.zarr}
SHIP_STEPS=${SHIP_STEPS:-7000}
STUDY_STEPS=${STUDY_STEPS:-2000}
TRAIN_S=${TRAIN_S:-240}      # wall budget of the training phase
EPISODES=${EPISODES:-50}
EXPORT_S=${EXPORT_S:-130}
EVAL_S=${EVAL_S:-170}
DEVICE=${DEVICE:-cuda}
mkdir -p runs
NEEDS="zarr, gym_pusht, onnxruntime" . "$(dirname "$0")/prologue.sh"

stamp "training: shipped model ($SHIP_STEPS steps) + study ($STUDY_STEPS steps per run)"
timeout "$TRAIN_S" $PY -m trainer.cli --task pusht-state --data "$DATA" --steps "$SHIP_STEPS" --device "$DEVICE" \
  --out runs/ship --checkpoint-every 500 --no-progress > "$OUT/ship_train.log" 2>&1 &
ship=$!
STUDY=${STUDY:-1}   # 0: the shipped model only (when little device time is left)
if [ "$STUDY" = 1 ]; then
  timeout "$TRAIN_S" $PY benchmarks/sample_efficiency.py --stage train --device "$DEVICE" --steps "$STUDY_STEPS" \
    --parallel 12 --threads 1 --runs-dir runs/se --data "$DATA" > "$OUT/se_train.log" 2>&1
fi
wait $ship
stop_trainers
stamp "training done"; grep -h "trained\|FAILED" "$OUT/se_train.log" | tail -14; tail -3 "$OUT/ship_train.log"

# The shipped checkpoint comes home slim (EMA weights only: under the 16 MiB a returned file may
# have) and is exported at home with the project's own imle-export.
$PY -c 'from trainer.train.checkpoint import slim_checkpoint as s; print("ship step", s("runs/ship/last.pt", "runs/ship/slim.pt")["step"])'
cp runs/ship/slim.pt runs/ship/metrics.jsonl runs/ship/loss.png "$OUT/" 2>/dev/null

[ "$STUDY" = 1 ] || { stamp "done (no study)"; exit 0; }
stamp "study: export + eval"
timeout "$EXPORT_S" $PY benchmarks/sample_efficiency.py --stage export --runs-dir runs/se --data "$DATA" \
  --export-parallel 12 > "$OUT/se_export.log" 2>&1
timeout "$EVAL_S" $PY benchmarks/sample_efficiency.py --stage eval --runs-dir runs/se --data "$DATA" \
  --episodes "$EPISODES" --eval-workers 16 > "$OUT/se_eval.log" 2>&1
$PY benchmarks/sample_efficiency.py --stage report --runs-dir runs/se --out runs/se-report > "$OUT/se_report.md" 2>&1
tar czf "$OUT/se_results.tgz" --exclude='*.pt' --exclude='*.onnx' runs/se runs/se-report 2>/dev/null
stamp "done"
