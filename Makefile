# Two commands do everything on a fresh machine: `make book` and `make test` (see README).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export FEDCORE_DATA_DIR ?= $(CURDIR)/data

.PHONY: book test check-book benchmark clean

$(VENV)/installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[book,test]"
	$(PY) -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	touch $@

book: $(VENV)/installed
	$(PY) scripts/build_book.py

# Every page of the built book in headless Chromium (Debian's chromium and chromium-driver).
FIGURE_PAGES := intro setup uniform mild-bias heavy-bias full-bias comparison
check-book: $(VENV)/installed
	$(PY) scripts/check_book.py _build/html --screenshots _build/screenshots --expect-figures $(addprefix book/,$(FIGURE_PAGES))

test: $(VENV)/installed
	$(PY) -m ruff check .
	$(PY) -m pytest

benchmark: $(VENV)/installed
	$(PY) benchmarks/round_speed.py

clean:
	rm -rf _build runs book/notebooks
