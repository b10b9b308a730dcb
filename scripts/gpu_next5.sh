#!/usr/bin/env bash
# exp-next3 after the int2-alignment fix: batch = alone on a gpt2-shape model
# (f16, bf16) and the fixtures, then device ms a decode pass of this build
# against gpu-pkg-ab/old. Carries gpu-pkg/ and gpu-pkg-ab/. ~3 min.
set -u -o pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_env.sh
for dt in f16 bf16; do
  run test_batch-shape-gpt2-$dt env GPTC_BATCH_SHAPE=gpt2 GPTC_BATCH_BACKEND=cuda GPTC_BATCH_DTYPE=$dt gpu-pkg/test_batch
  run test_batch-$dt env GPTC_BATCH_BACKEND=cuda GPTC_BATCH_DTYPE=$dt gpu-pkg/test_batch
done
run test_batch-shape-gpt2-medium env GPTC_BATCH_SHAPE=gpt2-medium GPTC_BATCH_BACKEND=cuda GPTC_BATCH_DTYPE=f16 gpu-pkg/test_batch
BATCH="32 128" SHAPES="gpt2-xl gpt2" REPS=2 bash bench/decode_ab.sh X=0 GPTC=gpu-pkg-ab/old
exit $status
