#!/usr/bin/env bash
# On the GPU machine (carrying gpu-pkg/ from scripts/gpu_package.sh): the
# checks and timings of the prefill path - the kernel tests (attention
# against float64, paged = contiguous), test_cuda and the batch tests on
# CUDA (a batch's prompts = sessions, bitwise), racecheck and memcheck of a
# gpt2-shape prefill through the tensor-core attention, then prefill of
# 1024 tokens for the gpt2 and gpt2-xl shapes with the per-phase profile.
# SHAPES= overrides the shapes; SKIP_TESTS=1 times only.
set -u -o pipefail
cd "$(dirname "$0")/../.."
. scripts/gpu_env.sh
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader
if [ -z "${SKIP_TESTS:-}" ]; then
  run test_kernels gpu-pkg/test_kernels
  grep -E '^ok.*attention f16.*mma' "$out/test_kernels.log" | head -8
  run test_cuda gpu-pkg/test_cuda
  for dt in f16 bf16; do
    run test_batch-cuda-$dt env GPTC_BATCH_BACKEND=cuda GPTC_BATCH_DTYPE=$dt gpu-pkg/test_batch
  done
  # A 200-token prompt: four query tiles, both key groups, a causal edge
  # inside a tile.
  san() { compute-sanitizer --tool $1 gpu-pkg/gptc bench --backend cuda --shape gpt2 --prompt-len 200 \
    --new-tokens 2 > "$out/$1.log" 2>&1; }
  san memcheck
  echo "== memcheck: $(grep -E 'SUMMARY' "$out/memcheck.log" | tail -1)"
  grep -q 'ERROR SUMMARY: 0 errors' "$out/memcheck.log" || status=1
  san racecheck
  echo "== racecheck: $(grep -E 'SUMMARY' "$out/racecheck.log" | tail -1), by kernel:"
  grep 'reported between' "$out/racecheck.log" | grep -oE 'at [A-Za-z_0-9]+' | sort | uniq -c
  # cuBLASLt's own nvjet kernels report hazards (with or without gptc's
  # changes, NOTES-cuda.md); any other kernel fails the check.
  grep 'reported between' "$out/racecheck.log" | grep -v ' at nvjet_' | grep -q . && status=1
fi
for shape in ${SHAPES:-gpt2 gpt2-xl}; do
  echo "== $shape"
  gpu-pkg/gptc bench --backend cuda --shape $shape --prompt-len 1024 --new-tokens 0 2>&1 | grep prefill
  GPTC_CUDA_PROF_PREFILL=1024 gpu-pkg/gptc bench --backend cuda --shape $shape --prompt-len 1024 \
    --new-tokens 0 2>&1 | grep -A14 'prefill profile'
done
exit $status
