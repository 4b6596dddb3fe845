#!/usr/bin/env bash
# Houlsby, Pfeiffer and full fine-tuning on rotten_tomatoes with the default recipe, one after
# another (never concurrently: they share the CPU). Each run's folder holds metrics.json with
# its validation accuracy and wall time; the last lines print them side by side.
#   bash bench/rotten_tomatoes_side_by_side.sh > bench/side_by_side.log 2>&1
set -euo pipefail
cd "$(dirname "$0")/.."
for adapter in houlsby none pfeiffer; do
  extra=()
  [ "$adapter" = none ] && extra=(trainer.epochs=1)   # a full fine-tuning step costs about two adapter steps
  .venv/bin/adapterctl train task=rotten_tomatoes adapter=$adapter "${extra[@]}" output_dir=outputs/bench/rt_$adapter
done
for adapter in houlsby none pfeiffer; do
  .venv/bin/python -c "import json,sys; m=json.load(open(sys.argv[1])); print(sys.argv[2], m['accuracy'], m['wall_time_s'], 's', m['steps'], 'steps')" \
    outputs/bench/rt_$adapter/metrics.json $adapter
done
