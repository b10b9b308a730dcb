#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: the suite in a
# Release build, the suite again under AddressSanitizer + UndefinedBehavior-
# Sanitizer, then each libFuzzer target for a short time.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh --test
py="$PWD/.venv/bin/python3"
export PIP_FIND_LINKS="$PWD/.venv/wheelhouse"
jobs=$(nproc)

log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "== Release build and tests"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE="$py" >/dev/null
cmake --build build -j"$jobs"
(cd build && ctest --output-on-failure -j"$jobs") | tee -a "$log"

echo "== ASan + UBSan build and tests"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DGPTC_SANITIZE=ON -DGPTC_NATIVE=OFF \
  -DPython3_EXECUTABLE="$py" >/dev/null
cmake --build build-asan -j"$jobs"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --output-on-failure -j"$jobs") | tee -a "$log"

echo "== libFuzzer targets (${GPTC_FUZZ_SECONDS:-30} s each)"
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGPTC_FUZZ=ON -DGPTC_NATIVE=OFF \
  -DGPTC_FUZZ_SECONDS="${GPTC_FUZZ_SECONDS:-30}" -DPython3_EXECUTABLE="$py" >/dev/null
cmake --build build-fuzz -j"$jobs" --target fuzz_tokenizer fuzz_safetensors
(cd build-fuzz && ctest --output-on-failure -L fuzz) | tee -a "$log"

# One closing line over the three runs (each ctest above stops the script if
# anything failed, so reaching here means all passed).
total=$(grep -oE 'tests failed out of [0-9]+' "$log" | awk '{s += $5} END {print s + 0}')
echo "gptc: $total passed, 0 failed"
