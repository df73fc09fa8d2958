#!/usr/bin/env bash
# Build (once) and print the path of a llama-cpp-python wheel.
#
# Usage: scripts/llamacpp_wheel.sh [exact|fast] [avx2|avx512]
#   exact (default): -DGGML_LLAMAFILE=OFF. A token's logits are the same in a batch as alone, so
#                    speculative output equals plain greedy decoding token for token (README, "llama.cpp").
#   fast:            llama.cpp's default kernels (llamafile sgemm for batches of 2+): cheaper trees,
#                    but batch logits differ from one-token logits, so greedy near-ties can flip.
#   avx2 (default):  runs on any x86-64 with AVX2.
#   avx512:          AVX-512 F/BW/VL with VNNI, VBMI and BF16, never AMX (a native build, which
#                    turns AMX on, crashed on batches of 2+ tokens on these machines).
#
# PyPI ships llama-cpp-python as source only, and pip's wheel cache ignores CMAKE_ARGS, so the
# wheel is built with --no-cache-dir and kept under a key of version + flags in
# $ADASPEC_CACHE/wheels (default ~/.cache/adaspec/wheels): a second run, a CI run included,
# finds it there and compiles nothing (~12 min on 2 cores the first time).
set -euo pipefail
flavour="${1:-exact}"
isa="${2:-avx2}"
version="0.3.36"
python="${PYTHON:-python3}"
case "$isa" in
  avx2)   vector="-DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF" ;;
  avx512) vector="-DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_BF16=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" ;;
  *) echo "llamacpp_wheel.sh: unknown instruction set '$isa' (expected avx2 or avx512)" >&2; exit 2 ;;
esac
common="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON $vector -DLLAVA_BUILD=OFF"
case "$flavour" in
  exact) flags="$common -DGGML_LLAMAFILE=OFF" ;;
  fast)  flags="$common -DGGML_LLAMAFILE=ON" ;;
  *) echo "llamacpp_wheel.sh: unknown flavour '$flavour' (expected exact or fast)" >&2; exit 2 ;;
esac
key=$(printf '%s %s' "$version" "$flags" | sha256sum | cut -c1-12)
dir="${ADASPEC_CACHE:-$HOME/.cache/adaspec}/wheels/llama-cpp-python-$version-$flavour-$isa-$key"
wheel=$(ls "$dir"/llama_cpp_python-*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$wheel" ]; then
  echo "building llama-cpp-python $version ($flavour, $isa: $flags), ~12 min on 2 cores, once" >&2
  tmp="$dir.partial.$$"
  rm -rf "$tmp" && mkdir -p "$tmp"
  CMAKE_ARGS="$flags" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$python" -m pip wheel -q --no-deps --no-cache-dir "llama-cpp-python==$version" -w "$tmp" >&2
  rm -rf "$dir" && mv "$tmp" "$dir"   # the cache holds whole wheels only
  wheel=$(ls "$dir"/llama_cpp_python-*.whl | head -n 1)
fi
echo "$wheel"
