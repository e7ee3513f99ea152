#!/usr/bin/env bash
# Train sample-efficiency study runs on a lent GPU and bring them home for export + evaluation on CPU.
# One phase per demo fraction, run one after the other so that a phase that finishes is whole even
# when a later one runs out of time (a half-trained run is useless: it comes home without its
# optimiser). Trainings within a phase share the GPU; their checkpoints come home slim (EMA weights
# only: ~4 MB for the tiny U-Net, ~4x that for PRESET=small), packed a few runs per tarball (a call
# brings back at most 8 files) and split into parts under the device's 16 MiB-per-file limit. Mind the
# ~64 MiB a call brings back in all: about 12 tiny runs, or 3 small ones.
# Needs .gpu/ carried (wheels + state-only demos; see session.sh's header for how to recreate it).
# Usage (on the device): OUT=/path FRACTIONS="0.1 0.25" SEEDS=0,1,2,3,4,5 METHODS=rs_imle N_SAMPLES=20 \
#   bash benchmarks/gpu/study_train.sh
# At home: for r in $(ls OUT/*.tgz.part-* | sed 's/\.part-.*//' | sort -u); do cat $r.part-* | tar xz; done
#   then sample_efficiency.py --stage export/eval/report on that runs dir.
set -u
DATA=${DATA:-.gpu/data/pusht.zarr}
RUNS=${RUNS:-runs/se_gpu}
FRACTIONS=${FRACTIONS:-0.1 0.25}
SEEDS=${SEEDS:-0,1,2,3,4,5}
METHODS=${METHODS:-rs_imle}
PRESET=${PRESET:-tiny}          # U-Net size: tiny (the study's), small, paper
STEPS=${STEPS:-3000}
BATCH=${BATCH:-64}
N_SAMPLES=${N_SAMPLES:-20}
DEVICE=${DEVICE:-cuda}
DEADLINE_S=${DEADLINE_S:-470}   # whole script, packaging included
PACK_S=25
# At batch 64 a training steps at ~16-20/s on an H200 whether it runs alone or beside 11 others (the
# rate is bound by the launching process, not the GPU), so a 3000-step phase needs ~190 s whatever
# its size. At batch 256 RS-IMLE's m = 20 forward passes make the GPU the bound: 12/s with 6 runs
# at once, 7.7/s with 12 (6 of them DDPM). A phase given less is killed unfinished and comes home
# empty (seen: 120 s for 3 runs); a later call with the same RUNS resumes it from its last
# checkpoint (--checkpoint-every, 1000 steps) if the machine is still warm.
RATE=$([ "$BATCH" -le 64 ] && echo 15 || echo 8)   # steps/s to plan with
MIN_PHASE_S=${MIN_PHASE_S:-$(( STEPS / RATE + 15 ))}
mkdir -p "$RUNS"
NEEDS=zarr . "$(dirname "$0")/prologue.sh"
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1

n_seeds=$(echo "$SEEDS" | tr ',' '\n' | wc -l)
n_methods=$(echo "$METHODS" | tr ',' '\n' | wc -l)
for f in $FRACTIONS; do
  left=$(( DEADLINE_S - PACK_S - ($(date +%s) - t0) ))
  [ "$left" -ge "$MIN_PHASE_S" ] || { stamp "fraction $f skipped: $left s left, a phase needs $MIN_PHASE_S s"; break; }
  stamp "fraction $f: $METHODS x seeds $SEEDS, $STEPS steps, m = $N_SAMPLES ($left s left)"
  timeout "$left" $PY benchmarks/sample_efficiency.py --stage train --device "$DEVICE" --steps "$STEPS" \
    --methods "$METHODS" --fractions "$f" --seeds "$SEEDS" --n-samples "$N_SAMPLES" \
    --parallel $(( n_seeds * n_methods )) --threads 1 --preset "$PRESET" --batch-size "$BATCH" --lr 1e-3 --warmup 200 \
    --runs-dir "$RUNS" --data "$DATA" >> "$OUT/train.log" 2>&1
  stop_trainers
  stamp "fraction $f done"; grep -h "trained\|FAILED" "$OUT/train.log" | tail -$(( n_seeds * n_methods ))
done

# Slim the finished runs (train.json exists only for a run that reached its step budget).
$PY - "$RUNS" <<'PY'
import sys, pathlib
from trainer.train.checkpoint import slim_checkpoint
for d in sorted(pathlib.Path(sys.argv[1]).iterdir()):
    if not (d / "train.json").exists():
        print("unfinished, left behind:", d.name); continue
    print("slim", d.name, "step", slim_checkpoint(d / "last.pt")["step"])
PY
# Finished runs packed a few per tarball so that at most 7 files come back (a call returns 8 at most),
# each split into 15 MiB parts (the per-file limit); a part left out costs only its own group.
finished=$(for d in "$RUNS"/*/; do [ -f "$d/train.json" ] && echo "${d%/}"; done)
n=$(echo "$finished" | grep -c . || true)
per=$(( (n + 6) / 7 )); [ "$per" -ge 1 ] || per=1
i=0
echo "$finished" | grep . | xargs -n "$per" | while read -r group; do
  i=$(( i + 1 ))
  tar czf - $group | split -b 15M - "$OUT/runs_$i.tgz.part-"
done
ls -la "$OUT"
stamp "done"
