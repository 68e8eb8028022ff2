# datatools: `make demo` runs the demo pipeline end to end, `make test` runs the tests.
# Both create .venv and install everything first (make install).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ROOT   ?= demo_data
# Where the OpenCV wheels are sorted out (see scripts/install.sh): one contrib-headless cv2.
STAMP  := $(VENV)/.install-stamp

# Whole pipelines (download → validate → lists → extract → frame lists), resumable:
#   make ucf101 ROOT=data/ucf101 ARGS="--cluster slurm --slurm jobs=8 --slurm partition=cpu"
# ROOT defaults to data/<dataset> for these (demo_data is the demo's).
# The targets are the datasets datatools knows (datatools/datasets/ and installed plugins):
# `python -m datatools.datasets` lists them, from the venv once it exists.
DATASETS := $(shell $(if $(wildcard $(BIN)/python),$(BIN)/python,PYTHONPATH=. $(PYTHON)) -m datatools.datasets)
ARGS ?=

.PHONY: install demo test test-quick quick bench lint clean doctor native $(DATASETS)

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

# The inner loop: the suite without the tests marked slow (README: Development).
test-quick: install
	$(BIN)/python -m pytest -q -m "not slow"

quick: test-quick

bench: install
	$(BIN)/python bench/build_lists.py

$(DATASETS): install
	$(BIN)/datatools $@ prepare --root $(if $(filter demo_data,$(ROOT)),data/$@,$(ROOT)) $(ARGS)

# The native extractor (native/): CMake, Release; needs cmake, a C++17 compiler and
# libopencv-dev and libjpeg-dev (or an OpenCV built with CUDA and contrib).
native: native/build/datatools-flow

native/build/datatools-flow: native/CMakeLists.txt $(wildcard native/src/*.cpp native/src/*.hpp)
	cmake -S native -B native/build -DCMAKE_BUILD_TYPE=Release
	cmake --build native/build -j

lint: install
	$(BIN)/ruff check datatools tests bench

clean:
	rm -rf $(VENV) $(ROOT) bench/out .pytest_cache native/build
