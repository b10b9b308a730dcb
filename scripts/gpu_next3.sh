#!/usr/bin/env bash
# exp-next3: the batch rules of this branch (shared-memory split attention
# where the prefetch's grid does not fit, a group of 17-32 tokens cut in two,
# GPTC_GEMV_SPLIT for long rows only) checked and measured against the old
# ones, and bench/lt_rows (is a cuBLASLt product's row independent of the
# rows beside it?). Carries gpu-pkg/ (gptc test_kernels test_batch lt_rows). ~5 min.
set -u -o pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_env.sh
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader
gpu-pkg/lt_rows 1024 > "$out/lt_rows.txt" 2>&1; cat "$out/lt_rows.txt"
run test_kernels gpu-pkg/test_kernels
run test_kernels_split4 env GPTC_GEMV_SPLIT=4 gpu-pkg/test_kernels
run test_batch env GPTC_BATCH_BACKEND=cuda GPTC_BATCH_DTYPE=f16 gpu-pkg/test_batch
run test_batch_bf16 env GPTC_BATCH_BACKEND=cuda GPTC_BATCH_DTYPE=bf16 gpu-pkg/test_batch
BATCH="16 32 64 128" SHAPES="gpt2 gpt2-xl" REPS=2 bash bench/decode_ab.sh X=0 GPTC_GEMV_TPB=32 GPTC_ATT_PRE=0 \
  GPTC_GEMV_SPLIT=4 GPTC_GEMV_SPLIT=2
exit $status
