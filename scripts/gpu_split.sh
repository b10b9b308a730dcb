#!/usr/bin/env bash
# exp-gemv-split: one GPU call (carrying gpu-pkg/ from scripts/gpu_package.sh)
# that checks gemv_split_kernel (GPTC_GEMV_SPLIT=2/4: a batch's products with
# the block's warps spread over a cluster, each block staging 1/Q of the
# rows) bitwise against the single-token kernel, and times it. ~4 minutes.
set -u -o pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_env.sh
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader
for q in 2 4; do
  run "test_kernels_split$q" env GPTC_GEMV_SPLIT=$q gpu-pkg/test_kernels
  grep -E "gemv rows (f16|bf16)" "$out/test_kernels_split$q.log" | head -4
  run "test_batch_split$q" env GPTC_GEMV_SPLIT=$q GPTC_BATCH_BACKEND=cuda GPTC_BATCH_DTYPE=f16 gpu-pkg/test_batch
done
run test_batch_bf16_split4 env GPTC_GEMV_SPLIT=4 GPTC_BATCH_BACKEND=cuda GPTC_BATCH_DTYPE=bf16 gpu-pkg/test_batch
BATCH="8 32 128" SHAPES="gpt2 gpt2-xl" REPS=2 bash bench/decode_ab.sh X=0 GPTC_GEMV_SPLIT=2 GPTC_GEMV_SPLIT=4 \
  GPTC_GEMV_TPB=16
PROF=2 BATCH="32" SHAPES="gpt2-xl" REPS=1 bash bench/decode_ab.sh X=0 GPTC_GEMV_SPLIT=4
exit $status
