#!/usr/bin/env bash
# On the GPU machine (carrying gpu-pkg/ from scripts/gpu_package.sh), one run:
# the batch tests on CUDA, the batch engine's decode-step split (device /
# copy / host), bench/batch_bench.py (gptc and transformers side by side) and
# bench/serve_bench.py against `gptc serve` on a random gpt2-shape model.
# Results go to $OUT (if set). Parts: PARTS="tests serve-tests split batch serve xl"
# (default all but xl); SERVE_LEVELS (default 1,8,32,64). serve and batch
# also run with --fast-decode.
set -u -o pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_env.sh
parts=" ${PARTS:-tests split batch serve} "
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv,noheader
status=0
if [[ $parts == *" tests "* ]]; then
  for nt in "" 2; do
    t0=$SECONDS
    env GPTC_BATCH_BACKEND=cuda ${nt:+GPTC_GEMV_NT_MIN=$nt} gpu-pkg/test_batch > "$out/test_batch$nt.log" 2>&1 || status=1
    echo "== test_batch cuda ${nt:+(GEMV_NT_MIN=$nt) }($((SECONDS - t0)) s): $(tail -1 "$out/test_batch$nt.log")"
    grep -E '^FAIL' "$out/test_batch$nt.log" | head -8
  done
  t0=$SECONDS
  gpu-pkg/test_cuda > "$out/test_cuda.log" 2>&1 || status=1
  echo "== test_cuda ($((SECONDS - t0)) s): $(tail -1 "$out/test_cuda.log")"
  # Sampled and processed requests of a batch draw on the device: memcheck it.
  printf '%s\n' "Hello world" "The quick brown fox jumps over the lazy dog" "a" "Once upon a time" > /tmp/prompts.txt
  for extra in "--do-sample --temperature 0.9 --top-k 40 --seed 3" "--do-sample --top-p 0.8 --seed 5" \
               "--repetition-penalty 1.3 --no-repeat-ngram-size 2 --min-new-tokens 5"; do
    echo "== memcheck: generate --prompts-file $extra"
    compute-sanitizer --tool memcheck --error-exitcode 3 gpu-pkg/gptc generate -m tests/fixtures/gpt2vocab-f16 \
      --backend cuda --prompts-file /tmp/prompts.txt --batch-size 3 --max-new-tokens 12 --ids $extra \
      > "$out/memcheck-sampled.log" 2>&1 || status=1
    tail -1 "$out/memcheck-sampled.log"
    # the same prompts one at a time (sessions): the same ids
    : > /tmp/alone.txt
    while IFS= read -r line; do
      gpu-pkg/gptc generate -m tests/fixtures/gpt2vocab-f16 --backend cuda --prompt "$line" \
        --max-new-tokens 12 --ids $extra >> /tmp/alone.txt 2>/dev/null
    done < /tmp/prompts.txt
    gpu-pkg/gptc generate -m tests/fixtures/gpt2vocab-f16 --backend cuda --prompts-file /tmp/prompts.txt \
      --batch-size 3 --max-new-tokens 12 --ids $extra > /tmp/batch.txt 2>/dev/null
    if cmp -s /tmp/alone.txt /tmp/batch.txt; then echo "   batch = one at a time"; else
      echo "   DIFFERENT from one at a time"; status=1; diff /tmp/alone.txt /tmp/batch.txt | head -6; fi
  done
fi
if [[ $parts == *" serve-tests "* ]]; then
  # The server's whole test on CUDA (every server and reference picks CUDA;
  # --devices 0,0: two engines on the one GPU).
  t0=$SECONDS
  GPTC_DEVICES_BACKEND=cuda python3 tests/test_serve.py > "$out/test_serve.log" 2>&1 || status=1
  echo "== test_serve.py on CUDA ($((SECONDS - t0)) s): $(tail -1 "$out/test_serve.log")"
  grep -E '^FAIL' "$out/test_serve.log" | cut -c1-400 | head -12
fi
if [[ $parts == *" split "* ]]; then
  echo "== decode step split (fp16, 128 + 64 tokens): default, host argmax, --fast-decode"
  for shape in gpt2 gpt2-xl; do
    for n in 1 8 32 64 128; do
      for v in "" host fast; do
        [ "$v" = host ] && [ "$shape" != gpt2 ] && continue
        printf '%-8s batch %-4s %-5s ' "$shape" "$n" "$v"
        hs=GPTC_X=0 fd=
        [ "$v" = host ] && hs=GPTC_HOST_SAMPLING=1
        [ "$v" = fast ] && fd=--fast-decode
        env GPTC_CUDA_PASS_PROF=1 $hs gpu-pkg/gptc bench --backend cuda \
          --shape "$shape" --prompt-len 128 --new-tokens 64 --batch "$n" $fd 2>&1 |
          grep -E '^decode|paged passes' | tr -s ' ' | tr '\n' ' '
        echo
      done
    done
  done
fi
if [[ $parts == *" batch "* ]]; then
  t0=$SECONDS
  python3 bench/batch_bench.py --gptc gpu-pkg/gptc --shapes gpt2 --out "$out" 2> "$out/batch_bench.err" || status=1
  echo "(batch_bench gpt2: $((SECONDS - t0)) s)"
fi
if [[ $parts == *" xl "* ]]; then
  t0=$SECONDS
  python3 bench/batch_bench.py --gptc gpu-pkg/gptc --shapes gpt2-xl --batches "${XL_BATCHES:-1,8,32,128}" \
    --out "$out/xl" 2> "$out/batch_bench_xl.err" || status=1
  echo "(batch_bench gpt2-xl: $((SECONDS - t0)) s)"
fi
if [[ $parts == *" serve "* ]]; then
  # A gpt2-shape model with random weights in Hugging Face's layout, and the
  # GPT-2 tokenizer of the fixtures.
  model=/tmp/gpt2-random
  python3 - "$model" <<'EOF'
import os, shutil, sys, torch
from transformers import GPT2Config, GPT2LMHeadModel
d = sys.argv[1]
torch.manual_seed(0)
GPT2LMHeadModel(GPT2Config()).half().save_pretrained(d)
for f in ("vocab.json", "merges.txt"):
    shutil.copy(os.path.join("tests/fixtures/gpt2vocab-f16", f), d)
EOF
  t0=$SECONDS
  python3 bench/serve_bench.py --gptc gpu-pkg/gptc -m "$model" --backend cuda \
    --levels "${SERVE_LEVELS:-1,8,32,64}" --out "$out/serve.md" 2> "$out/serve_bench.err" || status=1
  python3 bench/serve_bench.py --gptc gpu-pkg/gptc -m "$model" --backend cuda --server-arg=--fast-decode \
    --levels "${SERVE_LEVELS:-1,8,32,64}" --out "$out/serve-fast.md" 2>> "$out/serve_bench.err" || status=1
  python3 bench/serve_bench.py --gptc gpu-pkg/gptc -m "$model" --backend cuda --temperature 1 --top-p 0.9 \
    --levels "${SERVE_LEVELS:-1,8,32,64}" --out "$out/serve-sampled.md" 2>> "$out/serve_bench.err" || status=1
  python3 bench/serve_bench.py --gptc gpu-pkg/gptc -m "$model" --backend cuda --temperature 1 --top-p 0.9 \
    --server-arg=--fast-decode --levels "${SERVE_LEVELS:-1,8,32,64}" --out "$out/serve-sampled-fast.md" \
    2>> "$out/serve_bench.err" || status=1
  echo "(serve_bench: $((SECONDS - t0)) s)"
  tail -5 "$out/serve_bench.err"
fi
exit $status
