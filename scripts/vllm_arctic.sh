#!/usr/bin/env bash
# Build arctic-inference (vLLM's `suffix` speculative method needs it) for the vLLM venv that
# `make vllm` made, once, and install it apart from that venv:
# ${ADASPEC_CACHE:-~/.cache/adaspec}/vllm-arctic-inference, which only the benchmark's vllm-suffix
# engine puts on its PYTHONPATH (benchmarks/vllm_bench.py). PyPI has no wheel of it for CPU, only
# the source of 0.3.0 (vLLM 0.32 suggests 0.1.1, which PyPI does not serve): its C++ suffix tree
# compiles (~2 min on 2 cores); the package also registers a vLLM plugin, which patches nothing
# on vLLM versions other than the one it targets (0.26).
#
# Usage: scripts/vllm_arctic.sh [VENV_LINK]   (default .venv-vllm)
set -euo pipefail
cd "$(dirname "$0")/.."
link="${1:-.venv-vllm}"
version="${ARCTIC_VERSION:-0.3.0}"
cache="${ADASPEC_CACHE:-$HOME/.cache/adaspec}"
target="$cache/vllm-arctic-inference"
python="$link/shared/bin/python"
if [ -f "$target/.complete-$version" ]; then
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
quiet() { "$@" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2); }
# build tools beside the venv, not in it (vLLM pins setuptools and protobuf)
quiet "$python" -m pip install -q --target "$work/tools" "nanobind==2.9.2" cmake ninja grpcio-tools setuptools wheel
quiet "$python" -m pip download -q --no-deps --no-binary :all: -d "$work" "arctic-inference==$version"
PYTHONPATH="$work/tools" PATH="$work/tools/bin:$PATH" MAX_JOBS=2 \
  quiet "$python" -m pip wheel -q --no-build-isolation --no-deps -w "$work/wheel" "$work"/arctic_inference-*.tar.gz
rm -rf "$target"
quiet "$python" -m pip install -q --no-deps --target "$target" "$work"/wheel/arctic_inference-*.whl
PYTHONPATH="$target" "$python" -c 'from arctic_inference.suffix_decoding import SuffixDecodingCache; print("vllm_arctic.sh: arctic-inference builds and imports")'
touch "$target/.complete-$version"
