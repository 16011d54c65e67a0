# Two commands do everything on a fresh machine: `make book` and `make test` (see README).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export FEDCORE_DATA_DIR ?= $(CURDIR)/data

.PHONY: book design plan numbers-reference test test-avx2 check-book benchmark benchmark-flower clean fashion-mnist

$(VENV)/installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[book,cluster,test]"
	$(PY) -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	touch $@

# The book's runs use AVX2 kernels on every x86 processor (torch's own, MKL's with its reproducibility mode, and
# oneDNN's): an AVX-512 machine rounds otherwise, and the chaotic settings (full bias, heavy local work) turn
# that rounding into other tuning choices and verdicts. So every Intel-compatible machine with AVX2 builds the
# committed numbers bit for bit, at one thread per run.
KERNELS := ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 MKL_CBWR=AVX2 ONEDNN_MAX_CPU_ISA=AVX2

book: $(VENV)/installed fashion-mnist
	$(KERNELS) $(PY) scripts/build_book.py

# The design stage, outside CI: run the remedies' hyperparameter search and write its record, book/search.json
# (the book's tuning and remedies pages read it; every build retrains a sample of it), then record the seeds of the
# pages and series book/design.yml does not list yet, the seed rules deciding (delete the file to record every page
# anew), and the runs every page asks for, book/plan.json.
design: $(VENV)/installed fashion-mnist
	$(KERNELS) $(PY) -m fedcore.search_record --out book/search.json
	FEDCORE_DESIGN_RECORD=1 $(KERNELS) $(PY) scripts/build_book.py

# Make the runs the last build's pages asked for the committed plan that every `make book` trains first.
plan:
	@test -s _build/plan.json || { echo "no _build/plan.json: run make book first"; exit 2; }
	cp _build/plan.json book/plan.json

# Make the last build's numbers the committed reference that every `make book` compares with.
numbers-reference:
	@test -s _build/html/numbers.json || { echo "no _build/html/numbers.json: run make book first"; exit 2; }
	cp _build/html/numbers.json book/numbers.json

# Fashion-MNIST from Debian's dataset-fashion-mnist package, where installed (else torchvision downloads it).
FASHION := /usr/share/datasets/fashion-mnist
fashion-mnist:
	@if [ -d $(FASHION) ] && [ ! -e data/FashionMNIST/raw/t10k-labels-idx1-ubyte ]; then \
		mkdir -p data/FashionMNIST/raw && \
		for f in $(FASHION)/*-ubyte.gz; do gunzip -c $$f > data/FashionMNIST/raw/$$(basename $$f .gz); done; \
	fi

# Every page of the built book in headless Chromium (Debian's chromium and chromium-driver): fails on a
# console error or a request to another host on any page, and moves the explorer's slider.
FIGURE_PAGES := intro setup uniform mild-bias heavy-bias full-bias comparison why fixes generality
check-book: $(VENV)/installed
	$(PY) scripts/check_book.py _build/html --screenshots _build/screenshots \
		--expect-figures $(addprefix book/,$(FIGURE_PAGES)) --expect-explorer book/notebooks/explorer

test: $(VENV)/installed fashion-mnist
	$(PY) -m ruff check .
	$(PY) -m pytest

# The tests whose numbers come from torch's kernels, again on its and MKL's AVX2 kernels (on an AVX-512 machine
# they round otherwise): an assertion that only one processor's rounding meets shows up here.
KERNEL_TESTS := $(addprefix tests/test_,allocation.py data.py engine.py explorer.py finding.py lockstep.py \
	losses.py strategies.py tuning.py)
test-avx2: $(VENV)/installed fashion-mnist
	$(KERNELS) $(PY) -m pytest -q $(KERNEL_TESTS)

benchmark: $(VENV)/installed
	$(PY) benchmarks/round_speed.py
	$(PY) benchmarks/profile_round.py
	$(PY) benchmarks/sweep_speed.py
	$(PY) benchmarks/lockstep_groups.py
	$(KERNELS) $(PY) benchmarks/eval_chunk.py

# fedcore against Flower's simulation (benchmarks/vs_flower.py), in a venv of its own: Flower pulls in Ray
# and its own pins. Not part of CI.
FLOWER_VENV := .venv-flower
$(FLOWER_VENV)/installed: pyproject.toml
	$(PYTHON) -m venv $(FLOWER_VENV)
	$(FLOWER_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(FLOWER_VENV)/bin/python -m pip install --quiet -e ".[flower]"
	$(FLOWER_VENV)/bin/python -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	touch $@

benchmark-flower: $(FLOWER_VENV)/installed
	$(FLOWER_VENV)/bin/python benchmarks/vs_flower.py

clean:
	rm -rf _build runs book/notebooks
