#!/usr/bin/env bash
# Prints the llama.cpp instruction set to build for this CPU: avx512 (F/BW/VL with VNNI, VBMI and
# BF16; AMX is never used) or avx2.
flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
for feature in avx512f avx512bw avx512vl avx512_vnni avx512vbmi avx512_bf16; do
  if [[ " $flags " != *" $feature "* ]]; then echo avx2; exit 0; fi
done
echo avx512
