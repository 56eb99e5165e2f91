#!/usr/bin/env bash
# The whole GPU check in one call, for a lent machine (see DEVELOPERS notes in README):
#   builds genrec there, runs a full training run, the decode and kernel benchmarks and the `cuda`
#   tests, then writes one JSON under $OUT (copy it to bench/results/).
#
# Usage (from the repo root):  GENREC_GIT_SHA=<sha> bash bench/gpu_check.sh [steps]
#   steps: comma-separated subset of build,train,decode,kernels,sanitize,tests,seeds (default: all, in this
#   order; sanitize: the small-shape `cuda` tests of both ops under compute-sanitizer memcheck, racecheck and
#   synccheck, GPU_CHECK_SANITIZE_S seconds each at most (default 25), error counts in the JSON; it skips,
#   saying why, without a GPU or compute-sanitizer (GPU_CHECK_SANITIZE_REHEARSE=1 runs it anyway, e.g. with
#   COMPUTE_SANITIZER pointing at a stand-in, to rehearse on a CPU); seeds: two more training seeds if the
#   budget still has room for them)
# A lent machine gives one call of at most 10 minutes, so the steps share a deadline
# (GPU_CHECK_BUDGET_S, default 560 s from the start): each runs under the smaller of its own cap and
# the time left, most important first; tests go last and are interrupted (SIGINT: pytest still
# writes its JUnit file) rather than killed when the time runs out.
# Carried Python wheels in .whl/ are installed first when a package is missing there.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/bench/results/local}"
mkdir -p "$OUT"
STEPS="${1:-build,train,decode,kernels,sanitize,tests,seeds}"
START=$(date +%s)
BUDGET="${GPU_CHECK_BUDGET_S:-560}"
LOG="$OUT/gpu_check.log"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}" MAX_JOBS="${MAX_JOBS:-16}"
export GENREC_GIT_SHA="${GENREC_GIT_SHA:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
PY="${PYTHON:-python3}"
has() { [[ ",$STEPS," == *",$1,"* ]]; }
stamp() { date +%s.%N; }
# seconds a step may run: its cap, or what is left of the budget less 15 s for the summary
allot() { local left=$(( START + BUDGET - 15 - $(date +%s) )); (( left < $1 )) && echo $(( left > 5 ? left : 5 )) || echo "$1"; }
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

cache_args=()
TRAIN_CAP=""
# Extra `genrec train` arguments for both training steps, recorded in the JSON (e.g. a rehearsal on a
# CPU: GPU_CHECK_TRAIN_ARGS="--set train.epochs=1"); empty for the real check.
TRAIN_ARGS="${GPU_CHECK_TRAIN_ARGS:-}"
# train_run RUN_DIR SECONDS [more genrec train args]: the recipe on the carried data and stage cache.
train_run() {
  local dir=$1 seconds=$2; shift 2
  timeout "$seconds" "$PY" -m genrec.cli train --config configs/tiger_beauty.toml --set data.prepared=.carry/beauty \
    "${cache_args[@]}" --set train.time_budget_s="$TRAIN_CAP" "$@" $TRAIN_ARGS --no-progress --run-dir "$dir" 2>&1
}

if has build; then
  t0=$(stamp)
  "$PY" -m pip install --no-build-isolation --no-deps -e . 2>&1 | tail -3 | tee -a "$LOG"
  step_time build "$t0" "$(stamp)"
fi
"$PY" -c "import genrec; assert genrec.extension_loaded(), genrec.extension_error()" 2>&1 | tee -a "$LOG"

# The embed and tokenize stages come from the stage cache computed on the CPU machine and carried in
# .carry/cache (there: genrec train --config configs/tiger_beauty.toml --until tokenize
#   --set data.prepared=.carry/beauty --set run.cache_dir=.carry/cache); their keys hash contents, not paths.
if has train && [ -f configs/tiger_beauty.toml ] && [ -d .carry/beauty ]; then
  t0=$(stamp)
  [ -d .carry/cache ] && cache_args=(--set run.cache_dir=.carry/cache)
  # The recipe's own time budget, capped so that training stops (lr decayed) and the test still runs
  # inside this step's allotment; the run's config.json records the value used.
  T=$(allot 360); TRAIN_CAP=$(( T - 75 < 480 ? T - 75 : 480 ))
  train_run "$OUT/tiger_beauty" "$T" | tail -40 | tee -a "$LOG"
  step_time train "$t0" "$(stamp)"
fi

if has decode && "$PY" -m genrec.cli bench --help 2>/dev/null | grep -q decode; then
  t0=$(stamp)
  timeout "$(allot 180)" "$PY" -m genrec.cli bench decode --device cuda --out "$OUT" --gpu-check 2>&1 | tail -30 | tee -a "$LOG"
  step_time decode "$t0" "$(stamp)"
fi

if has kernels; then
  t0=$(stamp)
  timeout "$(allot 90)" "$PY" -m genrec.cli bench kernels --device cuda --out "$OUT" --dtype float32 --dtype bfloat16 2>&1 \
    | tail -30 | tee -a "$LOG"
  step_time kernels "$t0" "$(stamp)"
fi

# The small-shape cuda tests of both ops under each compute-sanitizer tool (short runs: a few seconds of
# kernels, most of each run is Python and CUDA start-up); the collect step reads the error summaries.
if has sanitize; then
  t0=$(stamp)
  SAN="${COMPUTE_SANITIZER:-$(command -v compute-sanitizer || echo "$CUDA_HOME/bin/compute-sanitizer")}"
  : > "$OUT/sanitizer_status.txt"
  if [ "${GPU_CHECK_SANITIZE_REHEARSE:-0}" != 1 ] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "skipped no CUDA GPU (torch.cuda.is_available() is False)" > "$OUT/sanitizer_status.txt"
  elif [ ! -x "$SAN" ]; then
    echo "skipped compute-sanitizer not found (looked for $SAN)" > "$OUT/sanitizer_status.txt"
  else
    for tool in memcheck racecheck synccheck; do
      cap=$(allot "${GPU_CHECK_SANITIZE_S:-25}")
      if (( cap < 10 )); then echo "$tool skipped no time left in the budget" >> "$OUT/sanitizer_status.txt"; continue; fi
      s0=$(stamp)
      # No caching allocator: memcheck then sees each tensor's own bounds.
      PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout -s INT -k 10 "$cap" "$SAN" --tool "$tool" --print-limit 100 \
        --log-file "$OUT/sanitizer_$tool.log" "$PY" -m pytest -q -m cuda -p no:cacheprovider \
        -k small_shapes_for_sanitizer --junitxml="$OUT/sanitizer_$tool.xml" \
        tests/ops/test_beam_step.py tests/ops/test_rq_encode.py > "$OUT/sanitizer_$tool.out" 2>&1
      rc=$?
      awk -v t="$tool" -v r="$rc" -v a="$s0" -v b="$(stamp)" -v c="$cap" \
        'BEGIN { printf "%s ran %d %.1f %d\n", t, r, b - a, c }' >> "$OUT/sanitizer_status.txt"
      tail -3 "$OUT/sanitizer_$tool.out" | tee -a "$LOG"
      grep -h "SUMMARY" "$OUT/sanitizer_$tool.log" 2>/dev/null | tee -a "$LOG"
    done
  fi
  cat "$OUT/sanitizer_status.txt" | tee -a "$LOG"
  step_time sanitize "$t0" "$(stamp)"
fi

if has tests; then
  t0=$(stamp)
  timeout -s INT -k 20 "$(allot 240)" "$PY" -m pytest -q -m cuda -p no:cacheprovider --continue-on-collection-errors --junitxml="$OUT/cuda_tests.xml" tests 2>&1 \
    | tail -25 | tee -a "$LOG"
  step_time tests "$t0" "$(stamp)"
fi

# More seeds, only while a whole run still fits in what is left of the budget.
if has seeds && [ -f "$OUT/tiger_beauty/summary.json" ]; then
  need=$(awk '$1 == "train" { printf "%d", $2 * 1.15 + 10 }' "$OUT/step_seconds.txt")
  need=${need:-999999}  # no train step timed in this call: no room known
  for seed in 43 44; do
    (( $(allot 100000) >= need )) || break
    t0=$(stamp)
    train_run "$OUT/tiger_beauty_seed$seed" "$(allot 330)" --set run.seed=$seed | tail -12 | tee -a "$LOG"
    step_time "seed$seed" "$t0" "$(stamp)"
  done
fi

"$PY" bench/gpu_check_collect.py "$OUT" 2>&1 | tee -a "$LOG"
