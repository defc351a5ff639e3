# The two commands a newcomer needs (see README): `make reproduce` and `make test`.
SHELL := /bin/bash
VENV := .venv/bin

.PHONY: setup reproduce test test-cold test-gpu docs export

setup:
	@bash tools/setup.sh

## Main job: set up, execute the tutorial and experiment notebooks (saving outputs), build the docs site.
reproduce: setup
	$(VENV)/python tools/run_nbs.py nbs/tutorials nbs/experiments
	$(VENV)/python docs/build.py
	@echo "Docs site built: $(CURDIR)/_docs/index.html (serve with: $(VENV)/python -m http.server -d _docs)"

## Tests: sync check, notebook tests, docs build, pytest (unit, property and browser tests).
test: setup
	@bash tools/test.sh

## The tests on an empty, temporary cache: what a brand-new machine meets (data sets, encodings, zoo training from scratch).
test-cold: setup
	@cache=$$(mktemp -d); echo "==> cold start: LATENT_COMM_CACHE=$$cache"; \
	LATENT_COMM_CACHE=$$cache bash tools/test.sh; rc=$$?; rm -rf "$$cache"; exit $$rc

## GPU checks for sessions lent an accelerator: `gpu`-flagged notebook cells and device-parametrised tests on CUDA.
test-gpu: setup
	$(VENV)/nbdev_test --flags gpu --n_workers 1
	$(VENV)/pytest -q tests -k cuda

docs: setup
	$(VENV)/python docs/build.py

export:
	$(VENV)/nbdev_export
