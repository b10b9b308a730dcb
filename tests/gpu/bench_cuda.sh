#!/usr/bin/env bash
# On the GPU machine: test_cuda on gpu-pkg/, then decode and prefill timings
# for each package directory given (default gpu-pkg), and a per-kernel
# profile of one decode step (GPTC_CUDA_PROF) with the first package.
set -u
cd "$(dirname "$0")/../.."
export LD_LIBRARY_PATH="$PWD/gpu-pkg/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export GPTC_ROOT=$PWD
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader
if [ -z "${NO_TEST:-}" ]; then
  gpu-pkg/test_cuda > /tmp/test_cuda.log 2>&1; echo "test_cuda rc=$?"
  grep -c '^ok' /tmp/test_cuda.log; grep -E '^FAIL' /tmp/test_cuda.log | head -20
  [ -n "${OUT:-}" ] && cp /tmp/test_cuda.log "$OUT/"
fi
if [ -n "${SAN:-}" ]; then
  ids=1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20
  for tool in memcheck racecheck synccheck; do
    echo "== compute-sanitizer $tool"
    compute-sanitizer --tool $tool --error-exitcode 3 gpu-pkg/gptc generate -m tests/fixtures/base-gelu_new \
      --backend cuda --prompt-ids $ids --max-new-tokens 6 --ids 2>&1 | tail -3
  done
fi
for pkg in ${PKGS:-gpu-pkg}; do
  for shape in ${SHAPES:-gpt2 gpt2-xl}; do
    echo "== $pkg $shape"
    $pkg/gptc bench --backend cuda --shape $shape --prompt-len 16 --new-tokens 256 2>&1 | tail -3
    $pkg/gptc bench --backend cuda --shape $shape --prompt-len 1024 --new-tokens 0 2>&1 | tail -3
  done
done
if [ -n "${NOPDL:-}" ]; then
  for shape in ${SHAPES:-gpt2 gpt2-xl}; do
    echo "== no PDL $shape"
    GPTC_CUDA_NO_PDL=1 gpu-pkg/gptc bench --backend cuda --shape $shape --prompt-len 16 --new-tokens 256 2>&1 | grep decode
  done
fi
if [ -n "${PROF:-}" ]; then
  for shape in ${SHAPES:-gpt2 gpt2-xl}; do
    GPTC_CUDA_PROF=144 gpu-pkg/gptc bench --backend cuda --shape $shape --prompt-len 16 --new-tokens 256 2>&1 | grep -A12 "profile"
    GPTC_CUDA_PROF_PREFILL=1024 gpu-pkg/gptc bench --backend cuda --shape $shape --prompt-len 1024 --new-tokens 0 2>&1 | grep -A10 "profile"
  done
fi
