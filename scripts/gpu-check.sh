#!/usr/bin/env bash
# GPU checks and benchmarks of issue 14, in one call (run it the moment a CUDA machine is available):
#   bash scripts/gpu-check.sh            # from the repository root, in an environment where
#                                        # `pip install -e ".[dev]"` has been done (CUDA torch)
# Prints: the device; the GPU smoke tests (bf16 CUDA vs fp32 CPU mask agreement, torch.compile);
# one FSSAM episode at 512 px (SAM 2-S + DINOv2-B, random init) on precomputed features, batch 1
# and 8, 1 and 5 shots; and `fssbench profile` of the 8-variant study on synthetic data with the
# projected time of the full PASCAL-5i grid. Random-init weights throughout (timing only).
set -euo pipefail
PY=${PYTHON:-python}
OUT=${OUT:-$(mktemp -d)}
"$PY" - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device: this script is for a GPU machine"
print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda)
PY
echo "== GPU smoke tests"
"$PY" -m pytest -q -rs -s -m "slow or not slow" tests/test_gpu.py -p no:cacheprovider
echo "== one FSSAM episode, 512 px, SAM 2.0-S + DINOv2-B, bf16 autocast"
for shots in 1 5; do
  for batch in 1 8; do
    "$PY" -m benchmark.cli bench-model --device cuda --sam2-size s --dinov2 vitb14 --image-size 512 \
      --shots "$shots" --batch-size "$batch" --repeats 20
  done
done
echo "== profile: component-prior-ablation (8 variants), synthetic PASCAL, 40 episodes, fold 0, 1 and 5 shots"
"$PY" -m benchmark.cli -q data synth --dataset pascal --out "$OUT/raw" >/dev/null
"$PY" -m benchmark.cli -q data prepare pascal --voc "$OUT/raw/VOCdevkit" --sbd "$OUT/raw/benchmark_RELEASE" \
  --out "$OUT/pascal" >/dev/null
"$PY" -m benchmark.cli -q profile ablations/component-prior-ablation.yaml "data.pascal=$OUT/pascal" \
  model.random_init=true "folds=[0]" "shots=[1,5]" episodes=40 batch_size=8 --device cuda --work-dir "$OUT"
