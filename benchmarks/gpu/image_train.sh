#!/usr/bin/env bash
# Push-T IMAGE policy (#21) in ONE call of a lent GPU machine (H100/H200 + 16 CPU cores, no network):
#   1. render the image demos ON THE DEVICE from the carried states (the 96x96 frames cannot travel:
#      the tree may carry 64 MiB) with gym-pusht's own observation renderer, exactly as evaluation draws
#      them (benchmarks/render_pusht_images.py; against the shared data/img: mean |diff| 0.077 of 255);
#   2. a short probe training (PROBE_STEPS) on the first rendered episodes, beside the full render,
#      measures this GPU's steps/s so that STEPS fills TRAIN_S and the cosine schedule ends inside it;
#   3. train `imle-train --task pusht-image --image-encoder light` on the GPU (and SECOND_ENCODER beside it);
#   4. export fp32 + int8 (imle-export), evaluate int8 on EPISODES gym-pusht episodes on the 16 cores,
#      then fp32 if FP32_MIN_S are left before DEADLINE_S;
#   5. bring back only small files (at most 8 come back, 16 MiB each): $OUT/package/ (the package: the
#      small U-Net's fp32 graph is ~18 MB, so any file over 15 MiB is split into .part-aa, .part-ab),
#      summary.json, results.tgz (logs, loss.png, metrics.jsonl, config.json, the evaluations'
#      summary.json + episodes.csv, the probe, the render summary): 7 files with the tee'd run.log.
# A training cut by TRAIN_S is exported from its last checkpoint (every 250 steps) and marked partial;
# an export that fails brings the slim checkpoint (EMA weights) back instead, so the GPU time is kept.
#
# Needs .gpu/ carried: cp312 wheels in .gpu/wheels and the state-only demos in .gpu/data/pusht.zarr
# (recreate both with the commands in benchmarks/gpu/session.sh's header; together ~29 MB, the tracked
# tree ~31 MB: check `du -sh .gpu` + `git ls-files | xargs du -cb` stays under 64 MiB with untracked files).
#
# On the device (the `run` tool, timeout_s 600, carry [".gpu"]):
#   set -o pipefail; OUT=$OUT bash benchmarks/gpu/image_train.sh 2>&1 | tee $OUT/run.log
# Knobs (env): STEPS (skip the probe), TRAIN_S, DEADLINE_S, PRESET, BATCH, M, LR, COMPILE, ENCODER,
#   SECOND_ENCODER=resnet18gn (trained beside on the same GPU; only its results come back: its fp32
#   graph is ~45 MB; it may slow the light run, whose STEPS the probe measured alone: a cut run is
#   exported partial).
# Budget on an H200 (DEADLINE_S 565 of the call's 600 s): wheels + torch ~20 s, render 25,650 frames
# ~15-25 s beside the probe (~30 s), training 300 s, export ~30 s (28 s on this 2-core CPU), int8
# evaluation of 100 episodes on 16 workers ~40-60 s (an episode of 300 steps took ~4 s on one core
# here), fp32 the same when FP32_MIN_S are left, packing ~10 s.
# Dry run on a CPU (end to end in a few minutes; what was run to test this script):
#   DEVICE=cpu NICE="nice -n 10" THREADS=1 WORKERS=1 RENDER_LIMIT=300 PROBE_LIMIT=300 PROBE_STEPS=10 STEPS_MIN=10 STEPS_MAX=30 \
#     BATCH=16 M=4 EPISODES=2 TRAIN_S=200 FP32_MIN_S=60 DEADLINE_S=900 SKIP_WHEELS=1 PY=.venv/bin/python \
#     OUT=/tmp/img-dry WORK=runs/img_dry bash benchmarks/gpu/image_train.sh
#
# At home (files_at = the folder the run tool names; P = exported_models/pusht-image-imle):
#   cp -r files_at/package P; for f in P/*.part-aa; do b=${f%.part-aa}; cat $b.part-* > $b && rm $b.part-*; done
#   tar xzf files_at/results.tgz     # recreates runs/img_gpu/ (WORK): logs, loss.png, metrics, evaluations
#   imle-verify P --allow-unsigned   # every graph's sha256 against the manifest (the joined parts too)
#   python -m trainer.evaluate.record P --summary runs/img_gpu/eval_int8/summary.json   # score into the manifest
#   imle-sign P && imle-verify P     # sign the final manifest (key: ~/.config/imle-policy/release.key)
#   imle-hil record P --robot emulator-lockstep --precision int8 --out exported_models/traces/pusht-image-imle.int8.npz
#   imle-hil record P --robot emulator-lockstep --precision fp32 --out exported_models/traces/pusht-image-imle.fp32.npz
#   python -m runtime.index; pytest -q tests/test_index.py hil_tests/test_shipped_package.py hil_tests/test_shipped_trace.py
#   then a row in exported_models/README.md (task, method, network, precisions + sizes, score over EPISODES
#   episodes with CI and success, "all 206 demos, STEPS steps, one H200") and docs/benchmarks.md's
#   "Image policies (#21)" (score, success, training budget, where it ran, summary.json's recipe).
#   record writes an int8 reference for this CPU class (its lock-step replay runs here: a few episodes).
# If the export failed there (package/ holds slim.pt.part-*): cat package/slim.pt.part-* > slim.pt, then
#   imle-export slim.pt --out P --quantize int8 --data ../shared/data/pusht/pusht_cchi_v7_replay.zarr
#   (calibration frames from the shared data/img: the rendered buffer stayed on the device) and imle-eval here.
set -u
DATA=${DATA:-.gpu/data/pusht.zarr}
WORK=${WORK:-runs/img_gpu}
NAME=${NAME:-pusht-image-imle}
ENCODER=${ENCODER:-light}
SECOND_ENCODER=${SECOND_ENCODER:-}  # e.g. resnet18gn: trained beside, evaluated int8 only if time is left
PRESET=${PRESET:-small}
# The recipe. On an H200 a training steps at 16-20/s whatever its size while the launching process is
# the bound (docs/benchmarks.md: tiny U-Net at batch 64, small at batch 128 while sharing the GPU), so
# the batch and m that the CPU cannot afford come nearly free: Diffusion Policy's batch 256, the
# paper's m = 20, the 'small' U-Net (as the shipped state package), the CPU recipe's lr 1e-3 (it beat
# 3e-4 on the H200 at 1500 steps). ~4,000 steps of 256 = ~1M samples, ~40 epochs of 25k windows.
BATCH=${BATCH:-256}
M=${M:-20}
LR=${LR:-1e-3}
WARMUP=${WARMUP:-200}
STEPS=${STEPS:-}                    # empty: planned from the probe's steps/s
STEPS_MIN=${STEPS_MIN:-1500}
STEPS_MAX=${STEPS_MAX:-12000}
PROBE_STEPS=${PROBE_STEPS:-120}
PROBE_LIMIT=${PROBE_LIMIT:-3000}    # frames the probe trains on (rendered first, in ~2 s on 16 workers)
RATE_FALLBACK=${RATE_FALLBACK:-12}  # steps/s to plan with when the probe gives no rate
EPISODES=${EPISODES:-100}
WORKERS=${WORKERS:-16}              # render and evaluation processes
DEVICE=${DEVICE:-cuda}
THREADS=${THREADS:-2}               # the trainer's torch CPU threads (the cores render and evaluate)
RENDER_LIMIT=${RENDER_LIMIT:-0}     # 0: all 25,650 frames; else the first whole episodes of <= N frames
NICE=${NICE:-}                      # dry runs on a shared CPU: "nice -n 10"
RENDER_S=${RENDER_S:-120}
PROBE_S=${PROBE_S:-90}
TRAIN_S=${TRAIN_S:-300}             # the main training, its start-up and data loading included
EXPORT_S=${EXPORT_S:-100}
DEADLINE_S=${DEADLINE_S:-565}       # the whole script (the call's limit is 600 s); evaluation gets what is left
FP32_MIN_S=${FP32_MIN_S:-90}        # start the fp32 evaluation only with this much left
PACK_S=15
CKPT_EVERY=${CKPT_EVERY:-250}       # a run cut by its budget is exported from its last checkpoint
COMPILE=${COMPILE:-auto}            # torch.compile (auto = off: unmeasured on a GPU, ~1 min per process)
if [ "$DEVICE" = cuda ]; then DOD=${DATA_ON_DEVICE:-on}; else DOD=${DATA_ON_DEVICE:-auto}; fi  # 0.7 GB of uint8 frames

mkdir -p "$WORK/logs"
NEEDS="zarr, gym_pusht, onnxruntime" . "$(dirname "$0")/prologue.sh"
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1 PYGAME_HIDE_SUPPORT_PROMPT=1
LOGS=$WORK/logs
IMG=$WORK/pusht_img.zarr
RUN=$WORK/$ENCODER
PKG=$WORK/package
left() { echo $(( DEADLINE_S - ($(date +%s) - t0) )); }
train_budget() {  # TRAIN_S, less when export and 100 s of evaluation would not fit after it
  local t=$(( $(left) - EXPORT_S - 100 )); [ "$t" -lt "$TRAIN_S" ] && echo "$t" || echo "$TRAIN_S"; }
phase() { echo "\"$1\": $(( $(date +%s) - t0 ))," >> "$LOGS/phases.txt"; }
rm -rf "$IMG" "$WORK/probe.zarr" "$WORK/probe" "$RUN" "$PKG" "$WORK"/eval_* "$WORK/second"*
: > "$LOGS/phases.txt"
TRAIN_ARGS=(--task pusht-image --preset "$PRESET" --batch-size "$BATCH" --n-samples "$M" --lr "$LR"
            --warmup "$WARMUP" --device "$DEVICE" --threads "$THREADS" --data-on-device "$DOD" --compile "$COMPILE"
            --no-resume --no-progress)

# 1 + 2. render (all frames) beside the probe (on the first episodes, rendered first: ~2 s)
probe_pid="" probe_t=0
if [ -z "$STEPS" ]; then
  stamp "probe data: first episodes of <= $PROBE_LIMIT frames"
  $NICE $PY benchmarks/render_pusht_images.py --data "$DATA" --out "$WORK/probe.zarr" --limit "$PROBE_LIMIT" \
    --workers "$WORKERS" --no-progress > "$LOGS/render_probe.log" 2>&1 || cat "$LOGS/render_probe.log"
  probe_t=$(date +%s)
  timeout -k 10 "$PROBE_S" $NICE $PY -m trainer.cli "${TRAIN_ARGS[@]}" --data "$WORK/probe.zarr" \
    --image-encoder "$ENCODER" --steps "$PROBE_STEPS" --warmup 1 --log-every 10 --checkpoint-every 100000 \
    --out "$WORK/probe" > "$LOGS/probe.log" 2>&1 &
  probe_pid=$!
fi
stamp "render: $DATA -> $IMG ($WORKERS workers, limit ${RENDER_LIMIT:-0})"
rw=$WORKERS; [ -n "$probe_pid" ] && [ "$WORKERS" -gt 2 ] && rw=$(( WORKERS - 2 ))  # two cores for the probe
timeout -k 10 "$RENDER_S" $NICE $PY benchmarks/render_pusht_images.py --data "$DATA" --out "$IMG" \
  --workers "$rw" --limit "$RENDER_LIMIT" --no-progress > "$LOGS/render.log" 2>&1
render_rc=$?
cat "$LOGS/render.log"; phase render_done
if [ -n "$probe_pid" ]; then
  wait "$probe_pid"; probe_rc=$?
  probe_wall=$(( $(date +%s) - probe_t ))
  stamp "probe exit $probe_rc in ${probe_wall} s"; tail -2 "$LOGS/probe.log"
  STEPS=$($PY - "$WORK/probe/metrics.jsonl" "$probe_wall" "$PROBE_STEPS" "$(train_budget)" "$STEPS_MIN" "$STEPS_MAX" \
          "$RATE_FALLBACK" "$LOGS/plan.json" <<'PY'
import json, sys
from pathlib import Path
path, wall, n, budget, lo, hi, fallback, plan = sys.argv[1], *map(float, sys.argv[2:8]), sys.argv[8]
lines = Path(path).read_text().splitlines() if Path(path).exists() else []
rates = [json.loads(x)["steps_per_s"] for x in lines if "steps_per_s" in x]
steady = sorted(rates[1:] or rates)  # the first window holds CUDA's warm-up
rate = steady[len(steady) // 2] if steady else 0.0
# start-up = the probe's wall less its steps; the full buffer loads ~8x the probe's frames (+15 s)
startup = max(20.0, wall - n / rate) + 15.0 if rate > 0 else 45.0
use = rate if rate > 0 else fallback
steps = int(max(lo, min(hi, 0.9 * use * (budget - startup))) // 10 * 10)
json.dump({"probe_rate": rate, "probe_windows": rates, "probe_wall_s": wall, "startup_s": startup,
           "planned_rate": use, "steps": steps, "from": "probe" if rate > 0 else "fallback (no probe rate)"},
          open(plan, "w"), indent=1)
print(steps)
PY
)
  [ -n "$STEPS" ] || STEPS=$(( RATE_FALLBACK * (TRAIN_S - 45) * 9 / 10 / 10 * 10 ))
  stamp "plan: $STEPS steps; $(tr -d '\n ' < "$LOGS/plan.json" 2>/dev/null | cut -c1-200)"
fi
phase probe_done
[ "$render_rc" = 0 ] || { stamp "render FAILED (exit $render_rc): nothing to train on"; }

# 3. training (the second encoder beside it, if asked)
train_rc=none second_pid=""
if [ "$render_rc" = 0 ]; then
  tb=$(train_budget)
  stamp "train $ENCODER: $PRESET U-Net, batch $BATCH, m $M, lr $LR, $STEPS steps ($tb s budget, data on device $DOD)"
  if [ -n "$SECOND_ENCODER" ]; then
    timeout -k 10 "$tb" $NICE $PY -m trainer.cli "${TRAIN_ARGS[@]}" --data "$IMG" --image-encoder "$SECOND_ENCODER" \
      --steps "$STEPS" --checkpoint-every "$CKPT_EVERY" --out "$WORK/second" > "$LOGS/train_second.log" 2>&1 &
    second_pid=$!
  fi
  ( sleep 60; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader > "$LOGS/gpu_util.txt" 2>&1 ) \
    >/dev/null 2>&1 &
  util=$!
  timeout -k 10 "$tb" $NICE $PY -m trainer.cli "${TRAIN_ARGS[@]}" --data "$IMG" --image-encoder "$ENCODER" \
    --steps "$STEPS" --checkpoint-every "$CKPT_EVERY" --out "$RUN" > "$LOGS/train.log" 2>&1
  train_rc=$?
  [ -n "$second_pid" ] && { wait "$second_pid"; echo "second ($SECOND_ENCODER) exit $?"; }
  kill "$util" 2>/dev/null
  stamp "train exit $train_rc"; tail -3 "$LOGS/train.log"; tail -1 "$RUN/metrics.jsonl" 2>/dev/null | cut -c1-200
fi
phase train_done

# 4. export (a run cut short: its last checkpoint, marked partial in summary.json)
export_rc=none
export_one() {  # run dir, package dir, log
  [ -f "$1/last.pt" ] || return 9
  timeout -k 10 "$EXPORT_S" $NICE $PY -m trainer.export.cli "$1/last.pt" --out "$2" --quantize int8 --name "$NAME" \
    --no-progress > "$3" 2>&1
}
if [ -f "$RUN/last.pt" ]; then
  stamp "export fp32 + int8"
  [ -n "$SECOND_ENCODER" ] && { export_one "$WORK/second" "$WORK/second_package" "$LOGS/export_second.log" & }
  export_one "$RUN" "$PKG" "$LOGS/export.log"; export_rc=$?
  wait
  stamp "export exit $export_rc"; tail -4 "$LOGS/export.log"
fi
phase export_done

# 5. evaluation: int8 first (the target), then the second encoder's int8, then fp32, each while time is left
evaluate() {  # package, precision, out dir, minimum seconds
  local t=$(( $(left) - PACK_S ))
  [ -f "$1/manifest.json" ] || return 9
  [ "$t" -ge "$4" ] || { stamp "eval $2 $1 skipped: $t s left, needs $4"; return 8; }
  stamp "eval $2 $(basename "$1"): $EPISODES episodes on $WORKERS workers ($t s)"
  timeout -k 5 "$t" $NICE $PY -m trainer.evaluate.cli "$1" --episodes "$EPISODES" --workers "$WORKERS" \
    --precision "$2" --out "$3" --quiet > "$3.log" 2>&1
  local rc=$?; tail -3 "$3.log"; return $rc
}
evaluate "$PKG" int8 "$WORK/eval_int8" 30; int8_rc=$?
[ -n "$SECOND_ENCODER" ] && evaluate "$WORK/second_package" int8 "$WORK/eval_second_int8" "$FP32_MIN_S"
evaluate "$PKG" fp32 "$WORK/eval_fp32" "$FP32_MIN_S"; fp32_rc=$?
phase eval_done

# 6. what comes back
stamp "pack"
export WORK RUN PKG LOGS ENCODER SECOND_ENCODER PRESET BATCH M LR WARMUP STEPS EPISODES DEVICE RENDER_LIMIT \
  TRAIN_S DEADLINE_S render_rc train_rc export_rc int8_rc fp32_rc DOD NAME
$PY - <<'PY' > "$OUT/summary.json"
import json, os, pathlib
e = os.environ
work, run = pathlib.Path(e["WORK"]), pathlib.Path(e["RUN"])
def read(p):
    try:
        return json.loads(pathlib.Path(p).read_text())
    except Exception:
        return None
def evals(d):
    s = read(work / d / "summary.json")
    return None if s is None else {"summary": s.get("summary"), "wall_s": s.get("wall_s"), "precision": s.get("precision")}
step = None
if (run / "last.pt").exists():
    from trainer.train.checkpoint import load_checkpoint
    step = int(load_checkpoint(run / "last.pt")["step"])
metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()] if (run / "metrics.jsonl").exists() else []
rates = [m["steps_per_s"] for m in metrics if "steps_per_s" in m]
try:
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
except Exception:
    gpu = "unknown"
phases = "{" + (work / "logs/phases.txt").read_text().strip().rstrip(",") + "}"
out = {
    "package": e["NAME"], "gpu": gpu, "device": e["DEVICE"],
    "recipe": {"task": "pusht-image", "image_encoder": e["ENCODER"], "preset": e["PRESET"], "batch_size": int(e["BATCH"]),
               "n_samples": int(e["M"]), "lr": float(e["LR"]), "warmup": int(e["WARMUP"]), "steps": int(e["STEPS"]),
               "data_on_device": e["DOD"], "render_limit": int(e["RENDER_LIMIT"])},
    "plan": read(work / "logs/plan.json"), "render": (read(work / "pusht_img.zarr/.zattrs") or {}).get("rendered"),
    "exit": {k: e[k] for k in ("render_rc", "train_rc", "export_rc", "int8_rc", "fp32_rc")},
    "trained_steps": step, "partial": step is not None and step < int(e["STEPS"]),
    "final_loss": metrics[-1].get("loss") if metrics else None,
    "steps_per_s_median": sorted(rates)[len(rates) // 2] if rates else None,
    "eval_int8": evals("eval_int8"), "eval_fp32": evals("eval_fp32"),
    "second": {"encoder": e["SECOND_ENCODER"], "eval_int8": evals("eval_second_int8")} if e["SECOND_ENCODER"] else None,
    "phases_s": json.loads(phases),
}
print(json.dumps(out, indent=1))
PY
mkdir -p "$OUT/package"
if [ -f "$PKG/manifest.json" ]; then
  cp "$PKG"/* "$OUT/package/"
else  # no package: the EMA weights come home for imle-export there
  [ -f "$RUN/last.pt" ] && $PY -c 'import sys; from trainer.train.checkpoint import slim_checkpoint as s; s(sys.argv[1], sys.argv[2])' \
    "$RUN/last.pt" "$OUT/package/slim.pt" && stamp "no package: slim checkpoint in package/slim.pt"
fi
for f in "$OUT"/package/*; do  # a file comes back only under 16 MiB
  [ -f "$f" ] && [ "$(stat -c %s "$f")" -gt 15728640 ] && split -b 15M "$f" "$f.part-" && rm "$f"
done
tar czf "$OUT/results.tgz" --exclude='*.pt' --exclude='*.onnx' --exclude='*.zarr' --exclude='package' \
  --exclude='second_package' "$WORK" 2>/dev/null
ls -la "$OUT" "$OUT/package"
cat "$OUT/summary.json" | head -c 3000; echo
stamp "done"
