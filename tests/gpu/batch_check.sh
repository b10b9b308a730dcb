#!/usr/bin/env bash
# On the GPU machine (carrying gpu-pkg/ from scripts/gpu_package.sh): the
# checks of the paged K/V cache on CUDA in one run - kernel tests, the batch
# and beam tests on the CUDA backend (also with the multi-token GEMV taking
# every pass), test_cuda (sessions), memchecks of batched and beam runs, and
# batched decode timings on the gpt2 shape with A/B variants (graph or not,
# GEMV tokens per block) and a per-kernel profile. With gpu-pkg/base-gptc.xz
# (an xz'd gptc built from a commit without the paged cache) the same
# timings of the one-session-per-request fallback, for comparison.
# Logs go to $OUT (if set). SKIP_TESTS=1: timings only; SKIP_TEST_CUDA=1:
# without test_cuda; VARIANTS= (empty): without the A/B variants.
set -u -o pipefail
cd "$(dirname "$0")/../.."
. scripts/gpu_env.sh
if [ -f gpu-pkg/base-gptc.xz ] && [ ! -x /tmp/base-gptc ]; then
  python3 -c "import lzma, shutil; shutil.copyfileobj(lzma.open('gpu-pkg/base-gptc.xz'), open('/tmp/base-gptc', 'wb'))"
  chmod +x /tmp/base-gptc
fi
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv,noheader
if [ -z "${SKIP_TESTS:-}" ]; then
  run test_kernels gpu-pkg/test_kernels
  grep -E 'paged|gemv rows' "$out/test_kernels.log" | head -60
  # With the passes launched ahead of the host counted (taken whole, in
  # part, dropped), and once with none launched ahead.
  run test_batch-cuda env GPTC_BATCH_SPEC_STATS=1 GPTC_BATCH_BACKEND=cuda gpu-pkg/test_batch
  grep -h "launched ahead" "$out/test_batch-cuda.log" | tr -d ',' |
    awk '{l += $6; w += $9; p += $12; d += $14} END {print "   passes launched ahead", l, "- taken whole", w, "in part", p, "dropped", d}'
  run test_batch-cuda-noahead env GPTC_BATCH_SPEC=0 GPTC_BATCH_BACKEND=cuda gpu-pkg/test_batch
  run test_beam-cuda env GPTC_BEAM_BACKEND=cuda gpu-pkg/test_beam
  # cuBLASLt's algorithm cache with room for 3 shapes: entries evicted and
  # asked for again all the time, the outputs still batch = alone.
  run test_batch-cuda-lt3 env GPTC_CUDA_LT_CACHE=3 GPTC_BATCH_BACKEND=cuda gpu-pkg/test_batch
  # A pass's picks copied back after it (not written into mapped memory).
  run test_batch-cuda-copy env GPTC_CUDA_TOKEN_COPY=1 GPTC_BATCH_BACKEND=cuda gpu-pkg/test_batch
  # The passes of these tests have fewer tokens than the multi-token GEMV
  # takes (GEMV_NT_MIN): once more with it taking every pass of two or more.
  run test_batch-cuda-nt2 env GPTC_BATCH_BACKEND=cuda GPTC_GEMV_NT_MIN=2 gpu-pkg/test_batch
  run test_beam-cuda-nt2 env GPTC_BEAM_BACKEND=cuda GPTC_GEMV_NT_MIN=2 gpu-pkg/test_beam
  # The split attention's two-buffer kernel where blocks take several
  # chunks (one block a (head, query): GPTC_ATT_SPLIT_BLOCKS=1); by default
  # only passes of few pairs take it, mostly a chunk a block.
  run test_kernels-two env GPTC_ATT_WARP=0 GPTC_ATT_PRE=8 GPTC_ATT_SPLIT_BLOCKS=1 gpu-pkg/test_kernels
  run test_batch-cuda-two env GPTC_ATT_WARP=0 GPTC_ATT_PRE=8 GPTC_ATT_SPLIT_BLOCKS=1 GPTC_BATCH_BACKEND=cuda gpu-pkg/test_batch
  run test_batch-gpt2-two env GPTC_ATT_WARP=0 GPTC_ATT_PRE=8 GPTC_ATT_SPLIT_BLOCKS=1 GPTC_BATCH_SHAPE=gpt2 GPTC_BATCH_BACKEND=cuda \
    gpu-pkg/test_batch
  # A block a chunk with tickets (by default a pass's chunks run as groups
  # of one block where they fit), and groups of at most 2 (more blocks a
  # (head, query), their own tickets).
  run test_kernels-tickets env GPTC_ATT_WARP=0 GPTC_ATT_SPLIT_GROUPS=0 gpu-pkg/test_kernels
  run test_batch-cuda-tickets env GPTC_ATT_WARP=0 GPTC_ATT_SPLIT_GROUPS=0 GPTC_BATCH_BACKEND=cuda gpu-pkg/test_batch
  run test_kernels-groups2 env GPTC_ATT_WARP=0 GPTC_ATT_SPLIT_GROUPS=2 gpu-pkg/test_kernels
  # A batch pass's attention a warp a chunk (attn_warp_kernel) at any
  # number of pairs: one warp a block (every chunk in turn), and eight.
  run test_kernels-warp1 env GPTC_ATT_WARP_MIN=0 GPTC_ATT_WARP_W=1 gpu-pkg/test_kernels
  run test_kernels-warp8 env GPTC_ATT_WARP_MIN=0 GPTC_ATT_WARP_W=8 gpu-pkg/test_kernels
  run test_batch-gpt2-warp1 env GPTC_ATT_WARP_MIN=0 GPTC_ATT_WARP_W=1 GPTC_BATCH_SHAPE=gpt2 GPTC_BATCH_BACKEND=cuda \
    gpu-pkg/test_batch
  run test_beam-cuda-warp env GPTC_ATT_WARP_MIN=0 GPTC_BEAM_BACKEND=cuda gpu-pkg/test_beam
  # The pipelined product (gemv_pipe_kernel) past its default 32 tokens
  # (test_kernels' 41), with its other shapes: rows of 8 wherever it runs
  # (and 32 tokens a block), one slab of warps a block.
  run test_kernels-pipe-rb8 env GPTC_GEMV_PIPE=64 GPTC_GEMV_PIPE_RB=8 GPTC_GEMV_PIPE_TPB=32 gpu-pkg/test_kernels
  run test_kernels-pipe-slab1 env GPTC_GEMV_PIPE=64 GPTC_GEMV_PIPE_SLABS=1 gpu-pkg/test_kernels
  run test_batch-cuda-pipe env GPTC_GEMV_PIPE=64 GPTC_BATCH_BACKEND=cuda gpu-pkg/test_batch
  # The pipe normalising its own tokens (gemv_pipe_ln_kernel) in every
  # pass of one group - by default only up to 64 KB of rows up to 1280 wide a block - also
  # 32 tokens a block (two a warp); and never (ln_stage_kernel before every pipe).
  run test_kernels-pipe-ln env GPTC_GEMV_PIPE_LN=1000 GPTC_GEMV_PIPE_LN_I=2048 gpu-pkg/test_kernels
  run test_kernels-pipe-ln32 env GPTC_GEMV_PIPE_LN=1000 GPTC_GEMV_PIPE_LN_I=2048 GPTC_GEMV_PIPE=64 GPTC_GEMV_PIPE_TPB=32 gpu-pkg/test_kernels
  run test_batch-cuda-pipe-ln env GPTC_GEMV_PIPE_LN=1000 GPTC_GEMV_PIPE_LN_I=2048 GPTC_BATCH_BACKEND=cuda gpu-pkg/test_batch
  run test_kernels-pipe-ln0 env GPTC_GEMV_PIPE_LN=0 gpu-pkg/test_kernels
  # Every pipe product of 17-32 tokens in one group (by default only the LM head's many rows).
  run test_kernels-wide1 env GPTC_GEMV_PIPE_WIDE=1 gpu-pkg/test_kernels
  # Units of one step a warp for 2-4 tiles (the default takes 2), and the
  # K split of the products the pipe cannot stage in groups of 16 tokens.
  run test_kernels-pipe-small env GPTC_GEMV_PIPE_BIG=0 gpu-pkg/test_kernels
  run test_kernels-ksplit16 env GPTC_GEMV_KSPLIT=16 gpu-pkg/test_kernels
  [ -z "${SKIP_TEST_CUDA:-}" ] && run test_cuda gpu-pkg/test_cuda
  printf '%s\n' "Hello world" "The quick brown fox jumps over the lazy dog and keeps running far away" \
    "a" "Once upon a time, in a land far far away, there lived a king who had three daughters and a dog" \
    "1 2 3" > /tmp/prompts.txt
  for dt in f16 f32; do
    echo "== memcheck: generate --prompts-file, $dt"
    compute-sanitizer --tool memcheck --error-exitcode 3 gpu-pkg/gptc generate -m tests/fixtures/gpt2vocab-f16 \
      --backend cuda --dtype $dt --prompts-file /tmp/prompts.txt --batch-size 3 --max-new-tokens 20 --ids \
      > "$out/memcheck-batch-$dt.log" 2>&1 || status=1
    tail -2 "$out/memcheck-batch-$dt.log"
  done
  echo "== memcheck: generate --prompts-file --do-sample (the samplers' picks into mapped memory)"
  compute-sanitizer --tool memcheck --error-exitcode 3 gpu-pkg/gptc generate -m tests/fixtures/gpt2vocab-f16 \
    --backend cuda --prompts-file /tmp/prompts.txt --batch-size 3 --max-new-tokens 20 --ids --do-sample \
    --top-k 20 --seed 5 > "$out/memcheck-batch-sample.log" 2>&1 || status=1
  tail -2 "$out/memcheck-batch-sample.log"
  echo "== memcheck: beam search (paged), bench --shape gpt2 --batch 3"
  compute-sanitizer --tool memcheck --error-exitcode 3 gpu-pkg/gptc generate -m tests/fixtures/gpt2vocab-f16 \
    --backend cuda --prompt "Hello world, this is a test of beams" --num-beams 4 --max-new-tokens 20 --ids 2>&1 | tail -2
  compute-sanitizer --tool memcheck --error-exitcode 3 gpu-pkg/gptc bench --backend cuda --shape gpt2 \
    --batch 3 --prompt-len 40 --new-tokens 3 2>&1 | tail -2
  # racecheck of the split attention's two buffers, blocks taking two chunks
  # (prompts of 7 tokens: no cuBLASLt product, whose kernels the sanitizer
  # fails on, before the decode steps reach 87 positions)
  echo "== racecheck: the two-buffer split attention, 2 sequences"
  GPTC_ATT_PRE=8 GPTC_ATT_SPLIT_BLOCKS=1 compute-sanitizer --tool racecheck --error-exitcode 3 \
    --kernel-name kns=attn_split gpu-pkg/gptc bench --backend cuda --shape gpt2 --batch 2 --prompt-len 7 \
    --new-tokens 80 > "$out/racecheck-two.log" 2>&1 || status=1
  grep SUMMARY "$out/racecheck-two.log" | tail -1
  # The pipelined product's stages (cp.async into shared memory, a slab's
  # named barrier): a batch of 4 takes it at every decode step.
  for tool in racecheck synccheck; do
    echo "== $tool: the pipelined product, batch 4"
    compute-sanitizer --tool $tool --error-exitcode 3 --kernel-name kns=gemv_pipe gpu-pkg/gptc bench \
      --backend cuda --shape gpt2 --batch 4 --prompt-len 7 --new-tokens 6 > "$out/$tool-pipe.log" 2>&1 || status=1
    grep SUMMARY "$out/$tool-pipe.log" | tail -1
  done
  # The K split (a cluster's shared memory read across blocks): gpt2-xl's
  # MLP projection at every decode step of a batch of 12.
  for tool in memcheck racecheck synccheck; do
    echo "== $tool: the K-split product, gpt2-xl batch 12"
    compute-sanitizer --tool $tool --error-exitcode 3 --kernel-name kns=gemv_ksplit gpu-pkg/gptc bench \
      --backend cuda --shape gpt2-xl --batch 12 --prompt-len 7 --new-tokens 3 > "$out/$tool-ksplit.log" 2>&1 ||
      status=1
    grep SUMMARY "$out/$tool-ksplit.log" | tail -1
  done
fi
echo "== timings (gpt2 shape, fp16): batch-1 session decode, then the batch engine"
gpu-pkg/gptc bench --backend cuda --shape gpt2 --prompt-len 16 --new-tokens 128 2>&1 | grep -E 'decode|prefill'
if [ -x /tmp/base-gptc ]; then
  echo "-- the same, built without the paged cache (session path before this change)"
  /tmp/base-gptc bench --backend cuda --shape gpt2 --prompt-len 16 --new-tokens 128 2>&1 | grep -E 'decode|prefill'
fi
bench() { # label, env..., -- then bench arguments
  local label=$1; shift
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  printf '%-34s ' "$label"
  env "${envs[@]}" "$@" 2>&1 | grep -E '^prefill|^decode|^beam|gptc cuda paged' | tr -s ' ' | tr '\n' ' '
  echo
}
B="bench --backend cuda --shape gpt2 --prompt-len 16 --new-tokens 64"
for n in ${BATCHES:-1 4 8 16 32 64}; do
  bench "paged, graph, batch $n" GPTC_X=1 -- gpu-pkg/gptc $B --batch $n
done
if [ -x /tmp/base-gptc ]; then
  for n in 8 32; do bench "sessions (fallback), batch $n" GPTC_X=1 -- /tmp/base-gptc $B --batch $n; done
fi
if [ -n "${VARIANTS-1}" ]; then
  for n in 1 8 16 32; do
    bench "no graph, batch $n" GPTC_CUDA_NO_PASS_GRAPH=1 -- gpu-pkg/gptc $B --batch $n
    bench "GEMV 1 token/block, batch $n" GPTC_GEMV_NT_MIN=0 -- gpu-pkg/gptc $B --batch $n
    bench "GEMV 8 tokens/block, batch $n" GPTC_GEMV_NT_MIN=2 -- gpu-pkg/gptc $B --batch $n
  done
  for v in GPTC_X=1; do
    echo "profile per kernel kind (uncaptured), batch 32, $v:"
    env $v GPTC_CUDA_PASS_PROF=2 gpu-pkg/gptc $B --batch 32 2>&1 | grep -E '^  [a-z]|paged passes|^decode'
  done
fi
bench "beams 4, paged" GPTC_X=1 -- gpu-pkg/gptc $B --num-beams 4
[ -x /tmp/base-gptc ] && bench "beams 4, sessions" GPTC_X=1 -- /tmp/base-gptc $B --num-beams 4
exit $status
