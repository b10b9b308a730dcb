#!/usr/bin/env bash
# exp-next2 (main + exp-gemv-split + exp-att-smem): both branches' checks and
# A/Bs in one GPU call, carrying gpu-pkg/ from scripts/gpu_package.sh. ~6 min.
set -u -o pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_env.sh
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader
for v in GPTC_GEMV_SPLIT=2 GPTC_GEMV_SPLIT=4 GPTC_ATT_PRE=4; do
  run "test_kernels_${v#GPTC_}" env $v gpu-pkg/test_kernels
  run "test_batch_${v#GPTC_}" env $v GPTC_BATCH_BACKEND=cuda GPTC_BATCH_DTYPE=f16 gpu-pkg/test_batch
done
run test_batch_bf16_both env GPTC_GEMV_SPLIT=4 GPTC_ATT_PRE=4 GPTC_BATCH_BACKEND=cuda GPTC_BATCH_DTYPE=bf16 \
  gpu-pkg/test_batch
# memcheck and racecheck over a small batch with both switches (racecheck also
# reports cuBLASLt's own nvjet kernels: only gptc's kernels are shown)
printf '%s\n' "Hello world" "The quick brown fox jumps over the lazy dog" "a" "Once upon a time" > /tmp/prompts.txt
for tool in memcheck racecheck; do
  env GPTC_GEMV_SPLIT=4 GPTC_ATT_PRE=4 compute-sanitizer --tool $tool gpu-pkg/gptc generate \
    -m tests/fixtures/gpt2vocab-f16 --backend cuda --prompts-file /tmp/prompts.txt --batch-size 4 \
    --max-new-tokens 12 --ids > "$out/$tool.log" 2>&1
  echo "== $tool: $(grep -c 'gemv_split\|attn_split' "$out/$tool.log") lines naming the two kernels; $(tail -1 "$out/$tool.log")"
done
BATCH="8 32 128" SHAPES="gpt2 gpt2-xl" REPS=2 bash bench/decode_ab.sh X=0 GPTC_GEMV_SPLIT=2 GPTC_GEMV_SPLIT=4 \
  GPTC_GEMV_TPB=16 GPTC_ATT_PRE=4 "GPTC_GEMV_SPLIT=4 GPTC_ATT_PRE=4"
BATCH="1" SHAPES="gpt2 gpt2-xl" REPS=2 bash bench/decode_ab.sh X=0 GPTC_ATT_PRE=4
PROF=2 BATCH="32" SHAPES="gpt2-xl" REPS=1 bash bench/decode_ab.sh X=0 "GPTC_GEMV_SPLIT=4 GPTC_ATT_PRE=4"
exit $status
