# The two commands of the README:
#   make book   builds the static site into _build/html
#   make test   runs every test (unit, property, nbval, exercises) and the -W book build
# Both create or refresh the virtual environment .venv from requirements.txt first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# MathJax 3 from the npm registry, served with the site so it renders offline.
# Installed at build time, never committed (see book/_ext/local_mathjax.py).
MATHJAX := _mathjax/node_modules/mathjax/es5/tex-mml-chtml.js
# PyPI's torch for Linux is a CUDA build of several GB; PyTorch's own CPU index serves the
# same version without CUDA (as binder/ uses). pip is pointed at it when it answers within
# 5 s; offline, or with TORCH_INDEX= , pip uses its usual sources (on the course machines a
# CPU wheel on local disk).
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_FLAGS = $(shell test -n "$(TORCH_INDEX)" && curl -fsS --max-time 5 -o /dev/null \
	"$(TORCH_INDEX)/torch/" 2>/dev/null && echo --extra-index-url $(TORCH_INDEX))
PYTEST_NOTEBOOKS := --nbval book solutions --nbval-current-env --nbval-sanitize-with tests/sanitize.cfg

.PHONY: book test env clean

book: env $(MATHJAX)
	$(BIN)/jupyter-book build . -W -n --keep-going
	@echo "The book is at $(CURDIR)/_build/html/index.html"

# The site is built first (from scratch, so no warning hides in a cached page): the
# browser tests in tests/ open the built pages.
test: env $(MATHJAX)
	$(BIN)/jupyter-book build . --all -W -n --keep-going
	$(BIN)/python -m pytest --durations=10 tests $(PYTEST_NOTEBOOKS)

env: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_FLAGS) -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (rnnbook)"
	touch $@

$(MATHJAX):
	npm install --prefix _mathjax --no-audit --no-fund --loglevel=error mathjax@3.2.2

clean:
	rm -rf _build
