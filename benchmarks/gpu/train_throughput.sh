#!/usr/bin/env bash
# Training throughput (#22) with the paper networks (256/512/1024) on a lent GPU, in ONE call:
# rs_imle (m = 20) and diffusion at batch 128, eager float32 vs each speed flag (amp = bfloat16
# autocast, fused_adam, data_on_device, compile = inductor) and all together, state first, then
# image (each task its own run, so a cut leaves the finished one's JSON); then imle-train's own
# steps/s on the chip with the default (auto) flags. Compare with the issue's figures for the
# official implementation on an H200 (eager fp32: RS-IMLE 76 / 93 ms, diffusion 27 / 38 ms, state /
# image; bf16 + compile: 36.5 / 49.9 ms) and record the card beside every figure in
# docs/benchmarks.md. Needs .gpu/ carried (wheels + state-only demos; see session.sh's header); the
# image rows use a synthetic 96x96 buffer written on the device (timing does not depend on pixels).
# Usage (on the device): OUT=/path bash benchmarks/gpu/train_throughput.sh
#   TASKS="pusht-state" to skip images; CONFIGS=eager,amp,all to skip some rows; DEADLINE_S for the whole script.
set -u
DATA=${DATA:-.gpu/data/pusht.zarr}
PRESET=${PRESET:-paper}
BATCH=${BATCH:-128}
TASKS=${TASKS:-pusht-state pusht-image}
CONFIGS=${CONFIGS:-eager,amp,fused_adam,data_on_device,compile,all}
DEADLINE_S=${DEADLINE_S:-540}
NEEDS=zarr . "$(dirname "$0")/prologue.sh"
export PYTHONUNBUFFERED=1
for task in $TASKS; do
  left=$(( DEADLINE_S - ($(date +%s) - t0) ))
  [ "$left" -ge 90 ] || { stamp "$task skipped: $left s left"; continue; }
  stamp "$task: $CONFIGS ($left s left)"
  data=(); [ "$task" = pusht-state ] && [ -d "$DATA" ] && data=(--data "$DATA")
  scaling=""; [ "$task" = pusht-state ] && scaling=1   # one chip: imle-train's own rate, 1 process
  timeout "$left" $PY benchmarks/train_throughput.py --device cuda --preset "$PRESET" --batch "$BATCH" \
    --tasks "$task" --configs "$CONFIGS" --scaling-procs "$scaling" "${data[@]}" \
    --out "$OUT/train_throughput_cuda_${PRESET}_${task}.json" 2>&1 | tee "$OUT/train_throughput_$task.log" | tail -20
done
stamp "done"; ls "$OUT"
