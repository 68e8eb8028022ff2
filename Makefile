# datatools: `make demo` runs the demo pipeline end to end, `make test` runs the tests.
# Both create .venv and install everything first (make install).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ROOT   ?= demo_data
# Where the OpenCV wheels are sorted out (see scripts/install.sh): one contrib-headless cv2.
STAMP  := $(VENV)/.install-stamp

.PHONY: install demo test bench lint clean doctor

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/install.sh
	touch $(STAMP)

doctor: install
	$(BIN)/datatools doctor

demo: install
	$(BIN)/datatools demo --root $(ROOT)

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/build_lists.py

lint: install
	$(BIN)/ruff check datatools tests bench

clean:
	rm -rf $(VENV) $(ROOT) bench/out .pytest_cache
