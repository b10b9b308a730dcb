#!/usr/bin/env bash
# Installs what gptc needs on Debian 12 (run as root): the build tools and the
# Debian packages of the library; with --test also clang (libFuzzer) and a
# Python virtual environment (.venv) with the PyPI references the tests use.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(build-essential cmake pkg-config libpcre2-dev libcjson-dev libcurl4-openssl-dev libmicrohttpd-dev)
if [[ "${1:-}" == "--test" ]]; then
  pkgs+=(clang libclang-rt-dev python3 python3-venv python3-pip curl nginx)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [[ "${1:-}" == "--test" ]]; then
  if [[ ! -x .venv/bin/python3 ]]; then
    python3 -m venv .venv
  fi
  # tokenizers: the live reference of the differential tokenizer test;
  # openai: the real client that tests/test_serve.py drives `gptc serve` with.
  .venv/bin/python3 -m pip install -q --disable-pip-version-check tokenizers numpy openai
  # nvdisasm, for the test pdl_check (scripts/pdl_check.sh), where CUDA is
  # built: the toolkit's Debian-free install may lack it.
  if command -v nvcc >/dev/null || [[ -x /usr/local/cuda/bin/nvcc ]]; then
    .venv/bin/python3 -m pip install -q --disable-pip-version-check nvidia-cuda-nvdisasm
  fi
  # The 'wheel' package, for the test that pip-installs python/ offline
  # (test.sh points PIP_FIND_LINKS here; Debian 12's setuptools needs it).
  [[ -n "$(ls .venv/wheelhouse/wheel-*.whl 2>/dev/null)" ]] ||
    .venv/bin/python3 -m pip download -q --disable-pip-version-check "wheel<0.46" -d .venv/wheelhouse
fi
