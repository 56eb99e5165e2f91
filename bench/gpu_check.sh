#!/usr/bin/env bash
# The whole GPU check in one call, for a lent machine (see DEVELOPERS notes in README):
#   builds genrec there, runs the `cuda` tests, the kernel benchmarks, the decode benchmark
#   and a full training run, then writes one JSON under $OUT (copy it to bench/results/).
#
# Usage (from the repo root):  GENREC_GIT_SHA=<sha> bash bench/gpu_check.sh [steps]
#   steps: comma-separated subset of build,tests,kernels,decode,train (default: all)
# Carried Python wheels in .whl/ are installed first when a package is missing there.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/bench/results/local}"
mkdir -p "$OUT"
STEPS="${1:-build,tests,kernels,decode,train}"
LOG="$OUT/gpu_check.log"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}" MAX_JOBS="${MAX_JOBS:-16}"
export GENREC_GIT_SHA="${GENREC_GIT_SHA:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
PY="${PYTHON:-python3}"
has() { [[ ",$STEPS," == *",$1,"* ]]; }
stamp() { date +%s.%N; }
step_time() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%s %.1f\n", n, b - a }' >> "$OUT/step_seconds.txt"; }
: > "$OUT/step_seconds.txt"

{
  echo "== gpu_check $(date -u +%FT%TZ) sha=$GENREC_GIT_SHA steps=$STEPS"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv || true
  "$PY" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
} 2>&1 | tee "$LOG"

missing=$("$PY" -c "
import importlib.util as u
print(' '.join(m for m in ('rich', 'safetensors', 'matplotlib') if u.find_spec(m) is None))")
echo "missing python packages: ${missing:-none}" | tee -a "$LOG"
if [ -n "$missing" ] && [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi

if has build; then
  t0=$(stamp)
  "$PY" -m pip install --no-build-isolation --no-deps -e . 2>&1 | tail -3 | tee -a "$LOG"
  step_time build "$t0" "$(stamp)"
fi
"$PY" -c "import genrec; assert genrec.extension_loaded(), genrec.extension_error()" 2>&1 | tee -a "$LOG"

if has tests; then
  t0=$(stamp)
  timeout 300 "$PY" -m pytest -q -m cuda -p no:cacheprovider --junitxml="$OUT/cuda_tests.xml" tests 2>&1 \
    | tail -25 | tee -a "$LOG"
  step_time tests "$t0" "$(stamp)"
fi

if has kernels; then
  t0=$(stamp)
  timeout 300 "$PY" -m genrec.cli bench kernels --device cuda --out "$OUT" --dtype float32 --dtype bfloat16 2>&1 \
    | tail -30 | tee -a "$LOG"
  step_time kernels "$t0" "$(stamp)"
fi

if has decode && "$PY" -m genrec.cli bench --help 2>/dev/null | grep -q decode; then
  t0=$(stamp)
  timeout 300 "$PY" -m genrec.cli bench decode --device cuda --out "$OUT" --gpu-check 2>&1 | tail -30 | tee -a "$LOG"
  step_time decode "$t0" "$(stamp)"
fi

# The embed and tokenize stages come from the stage cache computed on the CPU machine and carried in
# .carry/cache (there: genrec train --config configs/tiger_beauty.toml --until tokenize
#   --set data.prepared=.carry/beauty --set run.cache_dir=.carry/cache); their keys hash contents, not paths.
if has train && [ -f configs/tiger_beauty.toml ] && [ -d .carry/beauty ]; then
  t0=$(stamp)
  cache_args=()
  [ -d .carry/cache ] && cache_args=(--set run.cache_dir=.carry/cache)
  timeout 600 "$PY" -m genrec.cli train --config configs/tiger_beauty.toml --set data.prepared=.carry/beauty \
    "${cache_args[@]}" --no-progress --run-dir "$OUT/tiger_beauty" 2>&1 | tail -40 | tee -a "$LOG"
  step_time train "$t0" "$(stamp)"
fi

"$PY" bench/gpu_check_collect.py "$OUT" 2>&1 | tee -a "$LOG"
