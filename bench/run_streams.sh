#!/usr/bin/env bash
# The issue-4 result runs (docs/results.md): D0-D5 for ccd, ft and lwckd on one
# dataset, sharing one base stage. Resumable: rerun the same command after a
# crash or a stop; finished stages are skipped.
#
#   bench/run_streams.sh yelp|gowalla STORE RUNS_DIR [method ...]
#
# Logs go to RUNS_DIR/<dataset>_<method>.log; wall time and peak RSS of each
# command are appended by /usr/bin/time -v.
set -euo pipefail
dataset=$1 store=$2 runs=$3
shift 3
if [ $# -gt 0 ]; then methods=("$@"); else methods=(ccd ft lwckd); fi
case $dataset in
  yelp) caps=(--set teacher.train.epochs=20 --set teacher.train.patience=5) ;;
  gowalla) caps=(--set teacher.train.epochs=10 --set teacher.train.patience=5) ;;
  *) echo "dataset must be yelp or gowalla" >&2; exit 2 ;;
esac
export RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1
mkdir -p "$runs"
base="$runs/${dataset}_base"
/usr/bin/time -v ccd-dist run --data "$store" --preset "$dataset" --blocks 0 --out "$base" --executor local \
  "${caps[@]}" >> "$runs/${dataset}_base.log" 2>&1
for m in "${methods[@]}"; do
  /usr/bin/time -v ccd-dist run --data "$store" --preset "$dataset" --method "$m" --out "$runs/${dataset}_$m" \
    --base-from "$base" --executor local "${caps[@]}" >> "$runs/${dataset}_$m.log" 2>&1
done
