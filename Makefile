# Atelier: `make up` starts the embedded stack; `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
GPU_WHEELS := .gpu-wheels
# At most half of the 64 MiB that may travel with the working tree to the GPU machine.
GPU_WHEELS_MAX_KIB := 32768
# The GPU check runs on the GPU machine's stock python3; here the venv's stands in for it.
GPU_PYTHON ?= $(if $(wildcard $(PY)),$(PY),python3)

.PHONY: ui screenshots up test lint typecheck unit unit-threads integration e2e client-test test-under-load compose-check bench-api bench-load bench-claims bench-scale bench-style bench-fast-style bench-apply-batch bench-quality bench-gan bench-unknown-keys bench-upload-bombs bench-threads bench-events bench-ui gpu-check gpu-wheels clean

$(STAMP): pyproject.toml client/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python >= 3.11 is required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[worker,embedded,dev]"
	$(PY) -m pip install -q -e "./client[cli]"
	touch $(STAMP)

## Start Postgres, Redis, the API on :8000, a worker and beat (data in .atelier/). Ctrl-C stops all.
up: $(STAMP)
	$(PY) -m services.stack $(ARGS)

## Re-vendor the dashboard's front-end libraries (services/api/ui/package-lock.json) into static/vendor/.
ui:
	bash services/api/ui/vendor.sh

## Run the browser tests and copy the job page's screenshot into docs/img/ (the README's picture).
screenshots: $(STAMP)
	ATELIER_SCREENSHOT_DIR=.artifacts/screenshots $(PY) -m pytest -q tests/e2e/test_dashboard.py
	mkdir -p docs/img && cp .artifacts/screenshots/job-top.png docs/img/job-page.png

## Everything CI runs: lint, types, compose validation, unit + integration + e2e tests.
test: $(STAMP) lint typecheck compose-check
	$(PY) -m pytest -q -ra --durations=15

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(STAMP)
	$(PY) -m mypy services shared workers client

compose-check:
	bash deploy/check-compose.sh

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

## The unit suite at 2 intra-op threads: float checks must hold at any thread count (docs/DESIGN.md, Testing).
unit-threads: $(STAMP)
	ATELIER_TEST_TORCH_THREADS=2 $(PY) -m pytest -q tests/unit

integration: $(STAMP)
	$(PY) -m pytest -q tests/integration

e2e: $(STAMP)
	$(PY) -m pytest -q tests/e2e

## The users' client library and `atelier` CLI: its unit tests (no network) and its end-to-end test.
client-test: $(STAMP)
	$(PY) -m pytest -q tests/unit/client tests/e2e/test_client_cli.py

## The whole fault suite with a CPU hog of nproc busy processes beside it (about twice as long as alone).
test-under-load: $(STAMP)
	$(PY) -m tests.support.hog -- $(PY) -m pytest -q -ra --durations=10 tests/faults

## API benchmark: GET /v1/jobs/{id} vs a bare endpoint, and queue latency.
bench-api: $(STAMP)
	$(PY) -m bench.api

## Unknown-key flood: a tenant's poll p50 during 2,000 unknown-key requests from its address / quiet (target <= 2.0).
bench-unknown-keys: $(STAMP)
	$(PY) -m bench.unknown_keys $(ARGS)

## Upload bombs: a tenant's poll p50 while another sends archive bombs ten at a time / quiet (target <= 2.0).
bench-upload-bombs: $(STAMP)
	$(PY) -m bench.upload_bombs $(ARGS)

## Load: 1,000 short jobs on 2 workers exactly once, submit/poll throughput, polling at 200 rps while a job trains.
bench-load: $(STAMP)
	$(PY) -m bench.load $(ARGS)

## Claims: 64 concurrent claimers through the fair-share claim on real Postgres vs the claim by id: claims/s, p99, 0 double claims.
bench-claims: $(STAMP)
	$(PY) -m bench.claims $(ARGS)

## Scale: a discrete-event simulation of 10 / 100 / 1,000 GPU workers driving the production claim on real Postgres (long at 1,000).
bench-scale: $(STAMP)
	$(PY) -m bench.scale $(ARGS)

## Style-transfer benchmark: time to the PyTorch tutorial's final loss (CPU 128 px; GPU 512 px).
bench-style: $(STAMP)
	$(PY) -m bench.style $(ARGS)

## Fast style: style.train (johnson) images/s vs pytorch/examples fast_neural_style, apply speed-up and quality vs Gatys (CPU ~10 min).
bench-fast-style: $(STAMP)
	$(PY) -m bench.fast_style $(ARGS)

## style.apply batch: 1,000 pictures in one job vs 100, pictures/s and the worker's peak memory ratio (CPU ~9 min).
bench-apply-batch: $(STAMP)
	$(PY) -m bench.apply_batch $(ARGS)

## GAN throughput: gan.train with all hooks vs the pytorch/examples dcgan loop, images/s ratio (CPU 40 steps; GPU 1000).
bench-gan: $(STAMP)
	$(PY) -m bench.gan_speed $(ARGS)

## GAN quality: ring8/grid25 mode coverage for the lesson and stable presets, beside the papers (CPU, minutes).
bench-quality: $(STAMP)
	$(PY) -m bench.gan_quality $(ARGS)

## Torch threads: two workers training at once vs one alone, aggregate steps/s (target >= 0.9; ~2-3 min).
bench-threads: $(STAMP)
	$(PY) -m bench.threads $(ARGS)

## Live events: 1,000 SSE clients on one API process while a job trains: latency p50/p99, RSS per connection, steps/s ratio.
bench-events: $(STAMP)
	$(PY) -m bench.events $(ARGS)

## Dashboard page speed in headless Chromium: jobs page with 10,000 jobs, charts of 100,000 metric rows vs 20 / 1,000 (target < 1 s).
bench-ui: $(STAMP)
	$(PY) -m bench.ui_speed $(ARGS)

## GPU check (docs/benchmarks.md, GPU): every GAN and style path for a few steps, checkpoint/resume, OOM -> too_large, throughput; results in $OUT or .artifacts/gpu-check/.
# On the GPU machine its stock python3 runs it (the venv stays here); CI: ARGS="--device cpu --quick".
gpu-check:
	$(GPU_PYTHON) -m bench.gpu_check $(ARGS)

## Download what the GPU machine's python3 lacks (bench/gpu-wheels.txt; cp312 manylinux wheels) and unpack it into .gpu-wheels/site.
gpu-wheels: $(STAMP)
	rm -rf $(GPU_WHEELS)
	$(PY) -m pip download -q --only-binary=:all: --no-deps --implementation cp --python-version 3.12 \
		--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
		-r bench/gpu-wheels.txt -d $(GPU_WHEELS)/dist
	@for wheel in $(GPU_WHEELS)/dist/*.whl; do \
		echo "$$(du -k "$$wheel" | cut -f1) KiB  $$(basename "$$wheel")"; \
		$(PY) -m zipfile -e "$$wheel" $(GPU_WHEELS)/site || exit 1; \
	done
	rm -rf $(GPU_WHEELS)/dist
	@kib=$$(du -sk $(GPU_WHEELS) | cut -f1); echo "$(GPU_WHEELS): $$kib KiB unpacked (limit: $(GPU_WHEELS_MAX_KIB) KiB)"; \
		test "$$kib" -le $(GPU_WHEELS_MAX_KIB) || { echo "$(GPU_WHEELS) is over $(GPU_WHEELS_MAX_KIB) KiB"; exit 1; }

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
