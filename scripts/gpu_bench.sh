#!/usr/bin/env bash
# How the GPU figures in docs/benchmarks.md were made: run from the repository root on a CUDA machine.
# Writes JSON and logs to $OUT (default: bench-out/).
set -u
out=${OUT:-bench-out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/gpu.txt"
# 1. eager vs CUDA graphs, bf16 AMP, three batch sizes (the original trainer is measured first in each run)
python3 -m asym_tui.cli bench --device cuda --num-envs 4096,16384,65536 --amp on --cuda-graphs off,on --iterations 3 --out "$out/bench_amp.json"
# 2. float32 for reference
python3 -m asym_tui.cli bench --device cuda --num-envs 16384 --amp off --cuda-graphs on --iterations 3 --out "$out/bench_fp32.json"
# 3. torch.compile on top (compilation is warm-up, reported separately)
python3 -m asym_tui.cli bench --device cuda --num-envs 16384 --amp on --compile on --cuda-graphs on --iterations 3 --out "$out/bench_compile.json"
# 4. the cuda preset end to end: a real 60-second run with validation, test evaluation and the run folder
python3 -m asym_tui.cli train --preset cuda --duration 60s --out /tmp/gpu-runs --name cuda-preset --quiet
cp /tmp/gpu-runs/cuda-preset/summary.json "$out/cuda_preset_summary.json"
