# `make demo`: set up .venv and mask the bundled example; `make test`: set up and run the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test venv lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,plots]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/maxidetect mask examples/fitswcs_tpv_ctio_mosaic2.fits -o demo_output --overwrite -v
	$(VENV)/bin/maxidetect mask examples/fitswcs_tpv_ctio_mosaic2.fits -o demo_output/single --single-mask --overwrite
	$(VENV)/bin/maxidetect detect examples/fitswcs_tpv_ctio_mosaic2.fits -o demo_output --overwrite --verbose
	if command -v source-extractor >/dev/null 2>&1 || command -v sex >/dev/null 2>&1; then \
	  $(VENV)/bin/maxidetect sex examples/fitswcs_tpv_ctio_mosaic2.fits -o demo_output/sextractor --overwrite; \
	else echo "SExtractor not installed: skipping 'maxidetect sex' (apt-get install source-extractor)"; fi
	@echo "Outputs: demo_output/fitswcs_tpv_ctio_mosaic2.masks.fits (uint8 cube, one plane per class)"
	@echo "         demo_output/single/fitswcs_tpv_ctio_mosaic2.masks.fits (int32 bit-coded FLAG map)"
	@echo "         demo_output/fitswcs_tpv_ctio_mosaic2.{weight,flag}.fits (SExtractor maps)"
	@echo "         demo_output/fitswcs_tpv_ctio_mosaic2.cat.fits (SEP catalogue with IMAFLAGS_ISO)"
	@echo "         demo_output/sextractor/fitswcs_tpv_ctio_mosaic2.cat.fits (SExtractor catalogue, if installed)"

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -ra; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests ran" >&2; exit 1; fi; exit $$rc

bench: $(STAMP)
	$(VENV)/bin/maxidetect bench -o benchmarks/results/bench_default
	$(VENV)/bin/maxidetect bench --real ../shared/data/real/*.fits -o benchmarks/results/real
	$(PY) benchmarks/engines.py
	$(PY) benchmarks/throughput.py

clean:
	rm -rf $(VENV) demo_output
