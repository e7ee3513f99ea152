# Shared start of the lent-GPU scripts (sourced, not run): PY, OUT and a stamp() clock; the carried
# wheels installed (.gpu/wheels, see session.sh's header); the repo on PYTHONPATH; then a check that
# the modules named in $NEEDS import, and which GPU this is.
PY=${PY:-python3}
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
# timeout ends a study driver, not the trainings it started
stop_trainers() { pkill -f "trainer.cli" 2>/dev/null; }

if [ -d .gpu/wheels ] && [ "${SKIP_WHEELS:-0}" != 1 ]; then
  $PY -m pip install -q --no-index --no-deps .gpu/wheels/*.whl 2>&1 | tail -2
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
$PY -c "import torch, ${NEEDS:-zarr}; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
