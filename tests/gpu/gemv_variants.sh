#!/usr/bin/env bash
# On the GPU machine: decode timings of GEMV launch variants (env switches
# GPTC_GEMV_{LNW,LNR,W,R}: warps per block and rows per warp, LN and plain).
cd "$(dirname "$0")/../.."
export LD_LIBRARY_PATH="$PWD/gpu-pkg/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export GPTC_ROOT=$PWD
gpu-pkg/test_cuda > /tmp/t.log 2>&1; echo "test_cuda rc=$? ok=$(grep -c '^ok' /tmp/t.log)"
GPTC_GEMV_LNR=2 GPTC_GEMV_R=2 gpu-pkg/test_cuda > /tmp/t2.log 2>&1; echo "test_cuda R=2 rc=$? ok=$(grep -c '^ok' /tmp/t2.log)"
variants=("X=0" "GPTC_GEMV_LNR=2" "GPTC_GEMV_R=2" "GPTC_GEMV_W=8" "GPTC_GEMV_W=8 GPTC_GEMV_R=2" "GPTC_GEMV_LNR=2 GPTC_GEMV_LNW=4" "GPTC_GEMV_W=2" "X=0")
for v in "${variants[@]}"; do
  for shape in gpt2 gpt2-xl; do
    echo "[$v] $shape $(env $v gpu-pkg/gptc bench --backend cuda --shape $shape --prompt-len 16 --new-tokens 256 2>&1 | grep decode)"
  done
done
