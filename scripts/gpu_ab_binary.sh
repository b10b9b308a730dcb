#!/usr/bin/env bash
# Keeps the gptc binary of the current build-gpu/ (scripts/gpu_package.sh
# builds it) as gpu-pkg-ab/NAME.xz, for an A/B of two builds in one call on
# the GPU machine: carry ["gpu-pkg", "gpu-pkg-ab"] and give bench/decode_ab.sh
# the variant GPTC=gpu-pkg-ab/NAME. gptc links the library statically, so the
# binary is all a build needs beside gpu-pkg's shared libraries.
# usage: scripts/gpu_ab_binary.sh NAME   (e.g. after checking out the old code
# and rebuilding: scripts/gpu_ab_binary.sh before)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 1 ] && [[ $1 =~ ^[A-Za-z0-9_.-]+$ ]] || { echo "usage: scripts/gpu_ab_binary.sh NAME (letters, digits, . _ -)" >&2; exit 2; }
[ -x build-gpu/gptc ] || { echo "gpu_ab_binary: build-gpu/gptc missing: run scripts/gpu_package.sh first" >&2; exit 1; }
mkdir -p gpu-pkg-ab
strip --strip-unneeded -o "gpu-pkg-ab/$1" build-gpu/gptc
xz -6 -T2 -f "gpu-pkg-ab/$1"
du -sh "gpu-pkg-ab/$1.xz"
