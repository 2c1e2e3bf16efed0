# golive: `make run` installs everything into .venv and runs the quickstart job; `make test` runs the suite.
# Every pip install goes through constraints.txt, which pins the CPU build of torch.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
PIPFLAGS := -q --disable-pip-version-check -c constraints.txt

.PHONY: run test lint install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install $(PIPFLAGS) torch==2.13.0
	$(PIP) install $(PIPFLAGS) -e '.[all,examples]'
	touch $@

# The web app's browser tests drive Debian's chromium (Playwright's own browser download does not work offline).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CHROMIUM := /usr/bin/chromium

# PySpark (SparkML sources) needs a Java runtime.
JAVA := /usr/bin/java

$(CHROMIUM):
	$(SUDO) apt-get update -q
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium

$(JAVA):
	$(SUDO) apt-get update -q
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q default-jre-headless

# OpenVINO's plugin package lists devices on Intel hardware only; the onnxruntime-openvino build has the provider built
# in and runs on any x86-64 CPU. The tests run their OpenVINO cases again with it (PYTHONPATH=$(ORT_OPENVINO)), so
# they run on every CI machine; it stays out of the venv's own onnxruntime.
ORT_OPENVINO := $(VENV)/ort-openvino
ORT_OPENVINO_SPEC := onnxruntime-openvino==1.24.1

$(VENV)/.installed-dev: $(VENV)/.installed | $(CHROMIUM) $(JAVA)
	$(PIP) install $(PIPFLAGS) -e '.[dev]'
	if [ "$$(uname -sm)" = "Linux x86_64" ]; then \
		rm -rf $(ORT_OPENVINO) && $(PIP) install $(PIPFLAGS) --no-deps --target $(ORT_OPENVINO) $(ORT_OPENVINO_SPEC); fi
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

run: $(VENV)/.installed
	$(BIN)/golive run examples/quickstart.yaml

# ruff (lint + format), mypy, and the layer map of DESIGN.md as import contracts: a loop or an upward import fails
# here with the edge named.
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/ruff format --check src tests benchmarks tools
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python tools/import_cycles.py

test: lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs test-artifacts
