# The two commands a newcomer types:  make demo  |  make test
# Both create .venv if needed and install the package with its dependencies.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cagelib-installed
# Installed only when the environment has no torch yet: a user's CUDA build is kept. pip's default torch wheel
# on Linux x86-64 is the CUDA build (several GB); for PyTorch's CPU build pass
# TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu".
# (On the project's own CI machines pip finds a local CPU wheel of torch 2.13.0 and downloads nothing.)
TORCH ?= torch==2.13.0
TORCH_PIP_ARGS ?=

.PHONY: setup demo test test-kernels browser-test lab tensorboard reproduce peers bench strip clean-outputs data

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install $(TORCH_PIP_ARGS) "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $(STAMP)

demo: setup
	$(PY) -m cagelib demo $(ARGS)

test: setup
	$(PY) -m pytest

# The unit tests again under a second set of CPU kernels (PyTorch's AVX2 kernels, oneDNN limited to AVX2):
# a test that holds only on one CPU's rounding fails here before it fails on another machine. CI runs it.
test-kernels: setup
	ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 $(PY) -m pytest tests -p no:cacheprovider

# Every notebook run in JupyterLab in headless Chromium (tests/browser; `make test` skips it). Needs
# Debian's chromium package at $(CHROMIUM): when it is missing, it asks before installing it system-wide
# with apt-get (about 115 packages); CI=true or YES=1 installs without asking. Installs the `browser` extra
# (Playwright, which drives that Chromium: no browser download) into .venv. ~7 min on 2 cores;
# screenshots in outputs/browser/<notebook>/.
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
YES ?=

browser-test: setup
	@test -x $(CHROMIUM) || [ -n "$(CI)$(YES)" ] || { \
	  printf 'browser-test needs Chromium at %s. Install Debian'"'"'s chromium system-wide now (%s, ~115 packages)? [y/N] ' "$(CHROMIUM)" "$(strip $(SUDO) apt-get install chromium)"; \
	  { read answer </dev/tty; } 2>/dev/null || answer=; case "$$answer" in [yY]*) ;; *) echo; echo "browser-test: not installed; run again with YES=1, or pass CHROMIUM=<path>"; exit 1;; esac; }
	@test -x $(CHROMIUM) || { $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium; }
	@test -x $(CHROMIUM) || { echo "browser-test: no Chromium at $(CHROMIUM); install it or pass CHROMIUM=<path>"; exit 1; }
	@$(PY) -c "import playwright" 2>/dev/null || $(PY) -m pip install -q -e ".[browser]"
	CAGELIB_BROWSER_TEST=1 CAGELIB_CHROMIUM=$(CHROMIUM) OMP_NUM_THREADS=1 $(PY) -m pytest -rP tests/browser

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

# every run's metrics as TensorBoard scalars (each run folder's tensorboard/ beside its metrics.jsonl)
tensorboard: setup
	$(VENV)/bin/tensorboard --logdir outputs

# make reproduce ARGS="--config reproduce/paper --device cuda" for the paper's grid on a GPU
reproduce: setup
	$(PY) -m cagelib reproduce $(ARGS)

# every pretraining method x 3 seeds on the same split and probes, with the controls (resumable; hours on 2 cores)
peers: setup
	$(PY) -m cagelib peers $(ARGS)

bench: setup
	$(PY) -m cagelib bench $(ARGS)

strip: setup
	$(PY) -m cagelib strip notebooks/*.ipynb

data: setup
	$(PY) -m cagelib data $(ARGS)

clean-outputs:
	find outputs -mindepth 1 ! -name README.md -exec rm -rf {} +
