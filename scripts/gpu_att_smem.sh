#!/usr/bin/env bash
# exp-att-smem: one GPU call (carrying gpu-pkg/ from scripts/gpu_package.sh)
# that checks the batch's split attention with its K / V rows copied into
# shared memory by cp.async (GPTC_ATT_PRE=4: 32-40 registers, every load of
# the chunk in flight at once) bitwise against the contiguous cache, and
# times it against the default (prefetch registers for small grids, none
# above) and the two fixed choices. ~3 minutes.
set -u -o pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_env.sh
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader
run test_kernels_pre4 env GPTC_ATT_PRE=4 gpu-pkg/test_kernels
grep -E "paged" "$out/test_kernels_pre4.log" | head -4
run test_batch_pre4 env GPTC_ATT_PRE=4 GPTC_BATCH_BACKEND=cuda GPTC_BATCH_DTYPE=f16 gpu-pkg/test_batch
run test_batch_bf16_pre4 env GPTC_ATT_PRE=4 GPTC_BATCH_BACKEND=cuda GPTC_BATCH_DTYPE=bf16 gpu-pkg/test_batch
BATCH="1 8 32 128" SHAPES="gpt2 gpt2-xl" REPS=2 bash bench/decode_ab.sh X=0 GPTC_ATT_PRE=4 GPTC_ATT_PRE=0 GPTC_ATT_PRE=3
PROF=2 BATCH="32" SHAPES="gpt2-xl" REPS=1 bash bench/decode_ab.sh X=0 GPTC_ATT_PRE=4
exit $status
