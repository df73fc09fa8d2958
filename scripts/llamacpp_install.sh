#!/usr/bin/env bash
# Build (once, cached) and install the llama.cpp backend for this CPU, then smoke-test it.
#
# Usage: PYTHON=.venv/bin/python scripts/llamacpp_install.sh [exact|fast] [auto|avx2|avx512]
#
# auto (default) picks AVX-512 (without AMX) on a CPU with AVX-512 F/BW/VL, VNNI, VBMI and BF16 -
# measured 5% faster at plain decoding and 9-12% faster on 8-32-token verify steps than the AVX2
# build on such a machine, and exact (benchmarks/llamacpp-builds) - else AVX2. The installed build
# must pass scripts/llamacpp_smoke.py (a multi-token batch runs, and is bit-exact where the build
# says it is); an AVX-512 build that does not is replaced by the AVX2 one.
set -euo pipefail
cd "$(dirname "$0")/.."
flavour="${1:-exact}"
isa="${2:-auto}"
python="${PYTHON:-python3}"
if [ "$isa" = auto ]; then
  isa=$(scripts/llamacpp_isa.sh)
fi
install() {
  local wheel
  wheel=$(PYTHON="$python" scripts/llamacpp_wheel.sh "$flavour" "$1")
  "$python" -m pip install -q --force-reinstall --no-deps "$wheel"
}
install "$isa"
"$python" -m pip install -q "typing-extensions>=4.5" "diskcache>=5.6.1" "jinja2>=2.11.3"
if ! "$python" scripts/llamacpp_smoke.py; then
  if [ "$isa" = avx2 ]; then
    echo "llamacpp_install.sh: the AVX2 build failed its smoke test" >&2
    exit 1
  fi
  echo "llamacpp_install.sh: the $isa build failed its smoke test; using the AVX2 build" >&2
  install avx2
  "$python" scripts/llamacpp_smoke.py
fi
