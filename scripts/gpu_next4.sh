#!/usr/bin/env bash
# exp-next3, one product and one attention launch for a batch's prompts:
# tests/gpu/prefill_check.sh (every check of the prefill paths; batch =
# alone bitwise on fixtures and a gpt2-shape model), then the batch bench of
# this build against gpu-pkg-ab/old (the build before: a chain per prompt on
# 4 streams), A B A B. Carries gpu-pkg/ and gpu-pkg-ab/. ~6 min.
set -u -o pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_env.sh
SHAPES="gpt2 gpt2-xl" bash tests/gpu/prefill_check.sh; st=$?
python3 -c "import lzma, shutil; shutil.copyfileobj(lzma.open('gpu-pkg-ab/old.xz'), open('gpu-pkg-ab/old', 'wb'))"
chmod +x gpu-pkg-ab/old
for shape in gpt2 gpt2-xl; do
  for b in 32 128; do
    for r in 1 2; do
      for bin in gpu-pkg-ab/old gpu-pkg/gptc; do
        echo "$shape batch $b $bin: $($bin bench --backend cuda --shape $shape --prompt-len 128 --new-tokens 128 \
          --batch $b 2>&1 | grep -E '^(prefill|decode|total)' | sed -E 's/ +/ /g' | tr '\n' ';')"
      done
    done
  done
done
exit $st
