#!/usr/bin/env bash
# One short, prepared GPU benchmark of gadms on a machine with one NVIDIA GPU (H100/H200):
#   1. ViT-B-16 384x128 GA-DMS pretraining throughput in bf16 (samples/s) at the largest batch
#      of 64/128/256/512 that fits (an out-of-memory ends the list), FLOPs per step counted with
#      torch's FlopCounterMode, and model FLOP utilisation against the GPU's peak dense bf16
#      FLOP/s (H100 SXM and H200: 989.4 TFLOP/s; the table is in benchmarks/gpu_throughput.py);
#   2. the GA-DMS vs plain (clip, SDM only) step-time ratio with benchmarks/train_step.py, at
#      batch 64 (the paper's per-GPU batch) and at the largest batch that fitted;
#   3. a markdown summary.
# Not yet run on a GPU; each stage has its own timeout, under 6 minutes in all (200 + 2 x 75 s).
# Results go to $OUT if it is set (the device tool copies $OUT back), else docs/results/:
#   gpu-env.txt, gpu-throughput.json, gpu-train-step.jsonl, gpu-benchmark.md
#
# Setup: this script installs nothing and downloads nothing (random weights, random inputs).
# It needs a Python whose torch is a CUDA build, with the libraries the benchmark imports:
# torch, torchvision, open_clip_torch (+ ftfy, wcwidth), timm, huggingface_hub, regex,
# safetensors, pyyaml, numpy, pillow. The repo root is put on PYTHONPATH, so gadms itself
# need not be installed. The first Python of $PYTHON, .venv/bin/python, python3 that sees a
# GPU is used. Ways to get there:
#   - the repo's own environment: `make install` (or `python -m venv .venv && .venv/bin/pip
#     install -e .`) where a package index or local wheels are reachable
#     (`pip install --no-index --find-links /path/to/wheels -e .` offline);
#   - an existing PyTorch environment (e.g. the device image, which has torch, torchvision,
#     timm, safetensors, pyyaml but not open_clip): bring the three missing wheels (2.3 MB;
#     wcwidth's is built for x86-64 Linux, abi3) from a machine with pip access,
#         pip download --no-deps -d .whl open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
#     (with the device tool: list /.whl/ in .git/info/exclude and name .whl in `carry`),
#     and on the GPU machine, before this script,
#         python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#         export PYTHONPATH=/tmp/site
# Usage, from the repository root:  bash benchmarks/gpu.sh
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
RESULTS="${OUT:-$ROOT/docs/results}"
mkdir -p "$RESULTS"
failed=0

PY=""
for candidate in "${PYTHON:-}" "$ROOT/.venv/bin/python" python3; do
    [ -n "$candidate" ] || continue
    command -v "$candidate" >/dev/null 2>&1 || continue
    if "$candidate" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
        PY="$candidate"
        break
    fi
done
if [ -z "$PY" ]; then
    echo "gpu.sh: no Python with a CUDA build of torch that sees a GPU (tried \$PYTHON, .venv/bin/python, python3); see the setup notes at the top of this file" >&2
    exit 1
fi
if ! "$PY" -c "import open_clip, yaml, safetensors, gadms_cli.gadms.objective" ; then
    echo "gpu.sh: $PY lacks a library gadms needs (above); see the setup notes at the top of this file" >&2
    exit 1
fi

{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "python: $PY ($("$PY" -c 'import platform; print(platform.python_version())'))"
    "$PY" -c "import torch, open_clip; print(f'torch {torch.__version__} (CUDA {torch.version.cuda}), open_clip {open_clip.__version__}, device {torch.cuda.get_device_name(0)}')"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not available"
} | tee "$RESULTS/gpu-env.txt"

echo "== 1/3 ViT-B-16 384x128 pretraining throughput, FLOPs and MFU (bf16)"
if ! timeout 200 "$PY" benchmarks/gpu_throughput.py --models ViT-B-16 --device cuda --amp bf16 \
        --batches 64 128 256 512 --steps 5 --warmup 2 --json "$RESULTS/gpu-throughput.json"; then
    echo "gpu.sh: the throughput stage failed or timed out" >&2
    failed=1
fi
LARGEST=$("$PY" -c "import json, sys; print(json.load(open(sys.argv[1]))['models'][0]['largest_batch'] or '')" \
    "$RESULTS/gpu-throughput.json" 2>/dev/null || true)

echo "== 2/3 GA-DMS vs plain step ratio (benchmarks/train_step.py)"
: > "$RESULTS/gpu-train-step.jsonl"
for batch in 64 ${LARGEST:+$LARGEST}; do
    if grep -q "\"batch\": $batch," "$RESULTS/gpu-train-step.jsonl" 2>/dev/null; then
        continue  # the largest batch was 64: already measured
    fi
    if ! timeout 75 "$PY" benchmarks/train_step.py --models ViT-B-16 --device cuda --amp bf16 \
            --batch "$batch" --steps 10 --warmup 3 | tee -a "$RESULTS/gpu-train-step.jsonl"; then
        echo "gpu.sh: train_step.py at batch $batch failed or timed out" >&2
        failed=1
    fi
done

echo "== 3/3 summary"
"$PY" benchmarks/gpu_throughput.py --report "$RESULTS" || failed=1
cat "$RESULTS/gpu-benchmark.md" 2>/dev/null
exit $failed
