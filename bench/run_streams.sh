#!/usr/bin/env bash
# The issue-4 result runs (docs/results.md): D0-D5 for ccd, ft and lwckd on one
# dataset, sharing one base stage. Resumable: rerun the same command after a
# crash or a stop; finished stages are skipped.
#
#   bench/run_streams.sh yelp|gowalla STORE RUNS_DIR [method ...]
#
# Logs go to RUNS_DIR/<dataset>_<method>.log; wall time and peak RSS of each
# command are appended by /usr/bin/time -v.
#
# Settings beyond the reference (docs/results.md), all optional:
#   EXTRA="--set kd.rrd_idle_users=true --set kd.epochs=40"   every run, the base stage included
#   CCD_EXTRA="--set teacher_update.graph=cumulative"          the ccd run only
#   TAG=v2   suffixes the run folders; a tagged base reuses the untagged base's
#            teacher members when that base exists (only changed stages rerun)
set -euo pipefail
dataset=$1 store=$2 runs=$3
shift 3
if [ $# -gt 0 ]; then methods=("$@"); else methods=(ccd ft lwckd); fi
case $dataset in
  yelp) caps=(--set teacher.train.epochs=20 --set teacher.train.patience=5) ;;
  # Gowalla's Mult-VAE members need about 50 epochs (one pass over the users each; docs/results.md).
  gowalla) caps=(--set teacher.train.epochs=10 --set teacher.train.patience=5 --set teacher.vae_epochs=50) ;;
  *) echo "dataset must be yelp or gowalla" >&2; exit 2 ;;
esac
read -r -a extra <<< "${EXTRA:-}"
read -r -a ccd_extra <<< "${CCD_EXTRA:-}"
suffix=${TAG:+_$TAG}
export RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1
mkdir -p "$runs"
base="$runs/${dataset}_base$suffix"
seed=()
if [ -n "$suffix" ] && [ -d "$runs/${dataset}_base/block_0" ]; then seed=(--base-from "$runs/${dataset}_base"); fi
/usr/bin/time -v ccd-dist run --data "$store" --preset "$dataset" --blocks 0 --out "$base" --executor local \
  "${seed[@]}" "${caps[@]}" "${extra[@]}" >> "$runs/${dataset}_base$suffix.log" 2>&1
for m in "${methods[@]}"; do
  more=()
  if [ "$m" = ccd ]; then more=("${ccd_extra[@]}"); fi
  /usr/bin/time -v ccd-dist run --data "$store" --preset "$dataset" --method "$m" --out "$runs/${dataset}_$m$suffix" \
    --base-from "$base" --executor local "${caps[@]}" "${extra[@]}" "${more[@]}" >> "$runs/${dataset}_$m$suffix.log" 2>&1
done
