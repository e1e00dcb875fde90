# One-command set-up on a fresh machine: `make run` (the main job), `make test` (the test suite) and
# `make test-fast` (the suite without the tests marked slow), `make lint` (ruff and mypy, which `make test` also
# runs through tests/test_static.py); `make csrc` builds the C reference model of the
# codec stream (csrc/, docs/FORMAT.md section 6) into build/csrc/.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
FMNIST := /usr/share/datasets/fashion-mnist
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast lint csrc clean

setup: $(STAMP) $(FMNIST)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Reinstalled only when the declared ranges or the tested set change: pyproject.toml says what the package
# runs on, constraints.txt pins the exact versions this repository tests (torch 2.14.1, torchvision 0.29.1).
$(STAMP): pyproject.toml constraints.txt | $(VENV)/bin/python
	$(PY) -m pip install --quiet --no-compile -c constraints.txt -e '.[test,onnx,tensorboard]'
	@# the bytecode compiled on every core (pip's own step compiles on one, about 30 s); the one file that fails,
	@# torch's test helper in Python 3.12 syntax, fails as silently under pip's own compile step
	$(PY) -m compileall -q -j 0 $$($(PY) -c 'import sysconfig as s; print(*{s.get_path("purelib"), s.get_path("platlib")})') >/dev/null || true
	touch $(STAMP)

$(FMNIST):
	@if [ ! -d $(FMNIST) ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	fi

run: setup
	$(VENV)/bin/zebra run

# One pytest-xdist worker per core, each with its share of PyTorch's threads (tests/conftest.py): most tests spend
# their time in Python, on one core, so two workers use the second; the tests of one xdist_group (those sharing an
# expensive module fixture, or the package build that writes into the checkout) run on one worker.
test: setup
	$(PY) -m pytest -n auto --dist loadgroup

test-fast: setup
	$(PY) -m pytest -m "not slow" -n auto --dist loadgroup

lint: setup
	$(PY) -m ruff check torchzebra benchmarks tests examples
	$(PY) -m mypy torchzebra benchmarks

CSRC_FLAGS := -std=c99 -O2 -Wall -Wextra -Wpedantic
CSRC_BUILD := build/csrc

csrc: $(CSRC_BUILD)/zebra-stream $(CSRC_BUILD)/libzebra_stream.so

$(CSRC_BUILD)/zebra-stream: csrc/zebra_stream.c csrc/zebra_stream_cli.c csrc/zebra_stream.h
	mkdir -p $(CSRC_BUILD)
	$(CC) $(CSRC_FLAGS) $(CFLAGS) -o $@ csrc/zebra_stream.c csrc/zebra_stream_cli.c

$(CSRC_BUILD)/libzebra_stream.so: csrc/zebra_stream.c csrc/zebra_stream.h
	mkdir -p $(CSRC_BUILD)
	$(CC) $(CSRC_FLAGS) $(CFLAGS) -shared -fPIC -o $@ csrc/zebra_stream.c

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis .mypy_cache .ruff_cache
