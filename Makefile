# `make demo`: a light install in .venv (no Keras/TensorFlow), then the bundled example through every command.
# `make test`: the test extras on top (Keras, JAX, TensorFlow for the SavedModel checks, photutils, Dask), ruff,
# the architecture contracts (import-linter) and the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BASE := $(VENV)/.installed
TEST := $(VENV)/.installed-test
EX := examples/fitswcs_tpv_ctio_mosaic2.fits

.PHONY: demo test venv lint bench clean

$(BASE): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $(BASE)

$(TEST): $(BASE)
	$(PY) -m pip install -q -e '.[test]'
	touch $(TEST)

venv: $(BASE)

demo: $(BASE)
	$(VENV)/bin/maxidetect mask $(EX) -o demo_output --overwrite -v
	$(VENV)/bin/maxidetect mask $(EX) -o demo_output/single --single-mask --overwrite
	$(VENV)/bin/maxidetect detect $(EX) -o demo_output --overwrite -v
	if command -v source-extractor >/dev/null 2>&1 || command -v sex >/dev/null 2>&1; then \
	  $(VENV)/bin/maxidetect sex $(EX) -o demo_output --overwrite -v; \
	else echo "SExtractor not installed: skipping 'maxidetect sex' (apt-get install source-extractor)"; fi
	$(VENV)/bin/maxidetect track $(EX)
	@echo "Outputs in demo_output/: NAME.masks.fits (uint8 cube, one plane per class), single/NAME.masks.fits"
	@echo "  (int32 bit-coded FLAG map), NAME.weight.fits and NAME.flag.fits (SExtractor maps), NAME.sep.cat.fits"
	@echo "  (SEP catalogue) and NAME.sex.cat.fits (SExtractor catalogue, if installed)"

lint: $(TEST)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

test: $(TEST)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -ra; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests ran" >&2; exit 1; fi; exit $$rc

bench: $(TEST)
	$(VENV)/bin/maxidetect bench --variants default,undersampled,crowded -o benchmarks/results/bench_default -q
	$(VENV)/bin/maxidetect bench --real ../shared/data/real/*.fits -o benchmarks/results/real
	$(PY) benchmarks/independent.py
	$(PY) benchmarks/engines.py
	$(PY) benchmarks/throughput.py

clean:
	rm -rf $(VENV) demo_output
