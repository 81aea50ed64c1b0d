#!/usr/bin/env bash
# Re-measure every record that the documentation's quality tables take at today's defaults
# (docs/gen_benchmarks.py: headline, retrieval, regions, compositional, objects, counting,
# rivals, refine-photo, photo-world), with
# the bundled model on synthetic test scenes. Run it after a change of defaults, from the
# repository root, on a quiet machine, with the code committed: each record names its commit.
#
#     bash benchmarks/rerecord.sh            # about an hour on 2 free cores
#     HARMOSEARCH="python -m harmosearch" PYTHON=python bash benchmarks/rerecord.sh
set -euo pipefail
read -r -a hs <<< "${HARMOSEARCH:-harmosearch}"
R=benchmarks/results
run() { echo "+ harmosearch $*" >&2; "${hs[@]}" "$@" --json > /dev/null; }

for detail in normal high; do  # every task of the default set, 500 scenes
  run bench --dataset synthetic --split test --n 500 --detail "$detail" --no-refine --record $R/bench.jsonl
done
for objects in small large; do
  for detail in normal high; do
    for refine in --no-refine --refine; do
      run bench --dataset synthetic --objects "$objects" --split test --n 300 --task search --task grounding \
        --task boxcls "$refine" --detail "$detail" --record $R/small_objects.jsonl
    done
  done
done
for detail in normal high; do  # phrase search on the default set with --refine
  run bench --dataset synthetic --split test --n 500 --task search --refine --detail "$detail" \
    --record $R/small_objects.jsonl
done
run bench --task counting --task negation --split test --n 300 --record $R/counting.jsonl
run --config benchmarks/configs/counting_high.toml bench --task counting --task negation --split test --n 300 \
  --detail high --record $R/counting.jsonl
run bench --task counting --task negation --split test --n 300 --world photo --record $R/counting.jsonl
# The rivals: today's everyday list against the model's own training phrases, on the same scenes.
for config in "" "--config benchmarks/configs/rivals_trained.toml"; do
  # shellcheck disable=SC2086
  run $config bench --dataset synthetic --split test --n 200 --task search --task grounding --task retrieval \
    --record $R/rivals.jsonl
done
# The photo world's test photographs, every task of the default set, at each detail.
for detail in normal high; do
  run bench --dataset synthetic --world photo --split test --n 500 --detail "$detail" --no-refine \
    --record $R/photo_world.jsonl
done
# --refine on the photo world's test photographs, at each detail.
for detail in normal high; do
  for refine in --no-refine --refine; do
    run bench --dataset synthetic --world photo --split test --n 200 --detail "$detail" "$refine" --task search \
      --task grounding --record $R/refine_photo.jsonl
  done
done
# The transfer table and the calibration's (weak results) table, each model on both worlds.
py() { echo "+ python $*" >&2; "${PYTHON:-python}" "$@" > /dev/null; }
py benchmarks/transfer.py --n 300
py benchmarks/calibration.py --split test --n 300 --model harmo-mix harmo-tiny harmo-tiny-gc
