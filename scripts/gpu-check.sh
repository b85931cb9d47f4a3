#!/usr/bin/env bash
# GPU checks and benchmarks of issue 14, in one call (run it the moment a CUDA machine is available):
#   bash scripts/gpu-check.sh            # from the repository root, in an environment where
#                                        # `pip install -e ".[dev]"` has been done (CUDA torch)
# Prints: the device and the cell key's device identity; the GPU tests (bf16 CUDA vs fp32 CPU mask
# agreement, every hot module inductor-compiled on CUDA against eager); one FSSAM episode at 512 px
# (SAM 2.0-S + DINOv2-B, random init, bf16 autocast) on precomputed features, eager and
# `--compile`d, batch 1 and 8, 1 and 5 shots (the README's target: under 20 ms per episode), with
# batched-vs-unbatched logits (can the batch size leave CUDA cell keys?); and `fssbench profile` of
# the 8-variant study on synthetic data, eager and with --compile, with the projected time of the
# full PASCAL-5i grid (the target: under 2 minutes), split into the model's and the harness's part;
# one episode of each field baseline (GF-SAM, PerSAM, PerSAM-F, Matcher) at its release's sizes; and
# the harness alone at real size (`profile --footprint` of the model-free scale grid, fold 0, on a
# real-size synthetic PASCAL root). Random-init weights throughout (timing only).
# CHECK_DEVICE=cpu CHECK_SIZE=128 CHECK_SAM2=t CHECK_DINO=vits14 CHECK_DINO_SIZE=112 CHECK_REPEATS=1
# CHECK_BACKEND=eager runs only the episode timing, on a CPU (a smoke run of its Python, no measurement).
set -euo pipefail
PY=${PYTHON:-python}
OUT=${OUT:-$(mktemp -d)}
DEVICE=${CHECK_DEVICE:-cuda}
if [ "$DEVICE" = cuda ]; then
  "$PY" - <<'PY'
import torch

from benchmark.device import device_identity

assert torch.cuda.is_available(), "no CUDA device: this script is for a GPU machine"
print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda)
print("cell-key device identity:", device_identity(torch.device("cuda")))
PY
  echo "== GPU tests (bf16 agreement, inductor-compiled hot modules on CUDA)"
  "$PY" -m pytest -q -rs -s -m "slow or not slow" -k cuda tests/test_gpu.py -p no:cacheprovider
fi
echo "== one FSSAM episode on precomputed features, eager and compiled (ms per episode)"
"$PY" - <<'PY'
import os
import statistics
import time

import torch

from benchmark.device import compile_method
from benchmark.methods import build_method, get_method

device = torch.device(os.environ.get("CHECK_DEVICE", "cuda"))
size = int(os.environ.get("CHECK_SIZE", "512"))
sam2, dino = os.environ.get("CHECK_SAM2", "s"), os.environ.get("CHECK_DINO", "vitb14")
repeats = int(os.environ.get("CHECK_REPEATS", "20"))
settings = {"sam2_size": sam2, "dinov2": dino, "image_size": size, "random_init": True}
if os.environ.get("CHECK_DINO_SIZE"):
    settings["dinov2_input_size"] = int(os.environ["CHECK_DINO_SIZE"])
model = build_method("fssam", get_method("fssam").resolve(settings), device)
print(f"FSSAM, SAM 2.0-{sam2} + DINOv2 {dino}, {size} px, {device}, precision {model.config.precision}")


def sync():
    if device.type == "cuda":
        torch.cuda.synchronize()


def features(images):
    return {k: v for enc in model.encoders.values() for k, v in enc.encode(images).items()}


g = torch.Generator().manual_seed(0)
cases = {}
for shots in (1, 5):
    for batch in (1, 8):
        query = (torch.rand(batch, 3, size, size, generator=g) * 255).to(device)
        supports = (torch.rand(batch * shots, 3, size, size, generator=g) * 255).to(device)
        masks = (torch.rand(batch, shots, size, size, generator=g) > 0.5).long().to(device)
        with torch.no_grad():
            cases[shots, batch] = (features(query), features(supports), masks)


def ms_per_episode(q, s, m):
    with torch.no_grad():
        model.predict(q, s, m)  # warm-up (compiles on the first call of a shape)
        sync()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model.predict(q, s, m)
            sync()
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times) / m.shape[0]


def batched_vs_unbatched(q, s, m):
    """Max |logit difference| and mask agreement of a batch of 8 against its episodes one by one."""
    b, k = m.shape[:2]
    with torch.no_grad():
        whole = model.predict(q, s, m)
        one = []
        for i in range(b):
            qi = {n: x[i : i + 1] for n, x in q.items()}
            si = {n: x[i * k : (i + 1) * k] for n, x in s.items()}  # supports are b-major
            one.append(model.predict(qi, si, m[i : i + 1]))
        one = torch.cat(one)
    return (whole - one).abs().max().item(), ((whole > 0) == (one > 0)).float().mean().item()


eager = {key: ms_per_episode(*c) for key, c in cases.items()}
for shots in (1, 5):
    diff, agree = batched_vs_unbatched(*cases[shots, 8])
    print(f"  batched vs unbatched, {shots}-shot, batch 8: max |logit diff| {diff:.2e}, masks equal {100 * agree:.3f}%")
t0 = time.perf_counter()
compile_method(model, backend=os.environ.get("CHECK_BACKEND", "inductor"))
with torch.no_grad():
    model.predict(*cases[1, 1])
    sync()
print(f"  --compile: first compiled episode (compilation included) {time.perf_counter() - t0:.1f} s")
for (shots, batch), c in cases.items():
    print(
        f"  {shots}-shot, batch {batch}: eager {eager[shots, batch]:.1f} ms/episode, "
        f"compiled {ms_per_episode(*c):.1f} ms/episode (target: under 20)"
    )
PY
[ "$DEVICE" = cuda ] || exit 0
echo "== the field's SAM methods at their releases' sizes (SAM ViT-H, DINOv2-L/14; random init, fp32)"
"$PY" - <<'PY'
import statistics
import time

import torch

from benchmark.methods import build_method, get_method

device = torch.device("cuda")
g = torch.Generator().manual_seed(0)
for name in ("gfsam", "persam", "persam_f", "matcher"):
    model = build_method(name, get_method(name).resolve({"random_init": True}), device)
    size = model.image_size
    for shots in (1, 5):
        query = torch.rand(1, 3, size, size, generator=g) * 255
        supports = torch.rand(shots, 3, size, size, generator=g) * 255
        masks = torch.zeros(1, shots, size, size, dtype=torch.long)
        masks[..., size // 4 : 3 * size // 4, size // 3 : 2 * size // 3] = 1

        def encode(images, role):
            out = {}
            for enc in model.encoders.values():
                if role in getattr(enc, "roles", ("query", "support")):
                    out.update(enc.encode(images.to(device)))
            return out

        t0 = time.perf_counter()
        q, s = encode(query, "query"), encode(supports, "support")
        torch.cuda.synchronize()
        enc_ms = 1000 * (time.perf_counter() - t0)
        times = []
        with torch.no_grad():
            for _ in range(3):
                t0 = time.perf_counter()
                model.predict(q, s, masks.to(device))
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
        print(
            f"  {name}, {shots}-shot, {size} px: encoders {enc_ms:.0f} ms (first call), "
            f"episode on cached features {1000 * statistics.median(times):.0f} ms (median of 3)"
        )
    del model
    torch.cuda.empty_cache()
PY
echo "== profile: component-prior-ablation (8 variants), synthetic PASCAL, 40 episodes, fold 0, 1 and 5 shots"
"$PY" -m benchmark.cli -q data synth --dataset pascal --out "$OUT/raw" >/dev/null
"$PY" -m benchmark.cli -q data prepare pascal --voc "$OUT/raw/VOCdevkit" --sbd "$OUT/raw/benchmark_RELEASE" \
  --out "$OUT/pascal" >/dev/null
for mode in eager compiled; do
  flags=()
  [ "$mode" = compiled ] && flags=(--compile)
  echo "-- profile, $mode (the target: the full grid projected under 2 minutes)"
  "$PY" -m benchmark.cli -q profile ablations/component-prior-ablation.yaml "data.pascal=$OUT/pascal" \
    model.fssam_checkpoint=null model.random_init=true "folds=[0]" "shots=[1,5]" episodes=40 batch_size=8 --device cuda \
    --work-dir "$OUT/profile-$mode" "${flags[@]}"
done
echo "== harness cost at real size: the model-free scale grid (fold 0, 1 and 5 shots, 1000 episodes, 8 variants) on a real-size synthetic PASCAL root"
"$PY" -m benchmark.cli -q data synth --dataset pascal --scale real --out "$OUT/raw-real" >/dev/null
"$PY" -m benchmark.cli -q data prepare pascal --voc "$OUT/raw-real/VOCdevkit" --sbd "$OUT/raw-real/benchmark_RELEASE" \
  --out "$OUT/pascal-real" >/dev/null
"$PY" -m benchmark.cli -q profile ablations/scale/pascal-grid.yaml "data.pascal=$OUT/pascal-real" "folds=[0]" \
  --device cuda --footprint --work-dir "$OUT/footprint"
