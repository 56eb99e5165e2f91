#!/bin/bash
# The paired comparison of ../NOTES.md: processes of the old and the new commit alternate, each
# timing two passes over the same 40 batches (paired_step.py), at 12,000 and 1,000,000 items.
#   paired.sh OLD_WORKTREE NEW_WORKTREE OUT.jsonl REPS
# Each worktree needs its extension built (python setup.py build_ext --inplace).
set -euo pipefail
old=$1; new=$2; out=$3; reps=${4:-3}
here=$(cd "$(dirname "$0")" && pwd)
label() { git -C "$1" rev-parse --short=7 HEAD; }
for items in 12000 1000000; do
  for _ in $(seq "$reps"); do
    (cd "$old" && PYTHONPATH=. python "$here/paired_step.py" "$(label "$old")" "$items" "$out")
    (cd "$new" && PYTHONPATH=. python "$here/paired_step.py" "$(label "$new")" "$items" "$out")
  done
done
