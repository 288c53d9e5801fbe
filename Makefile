# Two commands set everything up: `make run` serves, `make test` tests. Both build .venv from the
# lock files; a lock change rebuilds it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
# pytest-xdist workers for `make test`: most tests wait on real servers rather than compute, so
# more workers than cores pays; tests that measure run in one group, one at a time
# (tests/conftest.py). PYTEST_WORKERS=0 runs everything in one process.
PYTEST_WORKERS ?= 4
XDIST := -n $(PYTEST_WORKERS) --dist loadgroup

.PHONY: run test typecheck test-fast test-container image load verify bench soak stall audit lint lock clean

$(VENV)/.runtime: requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --require-hashes -r requirements.lock
	touch $@

$(VENV)/.dev: requirements-dev.lock $(VENV)/.runtime
	$(PIP) install --require-hashes -r requirements-dev.lock
	touch $@

## run: start the service at http://127.0.0.1:8000 (MEMORY_PROFILE picks the allocator profile)
run: $(VENV)/.runtime
	HOST=$${HOST:-127.0.0.1} $(BIN)/python -m app.launch

## test: the whole suite; container tests run when a Docker engine can be had (required in CI)
test: $(VENV)/.dev
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

## test-fast: unit and local integration tests only
test-fast: $(VENV)/.dev
	$(BIN)/python -m pytest $(XDIST) -m "not container and not slow" $(PYTEST_ARGS)

## load: the workload's declared users, spike-then-idle, against LOCUST_HOST (default
##   http://127.0.0.1:8000); none declared: one line saying what to run, exit 2
load: $(VENV)/.dev
	mkdir -p results
	files=$$($(BIN)/python -m scripts.verify.core.declared) && \
	$(BIN)/locust -f $$files --headless --host $${LOCUST_HOST:-http://127.0.0.1:8000} \
		--csv results/load --only-summary $(LOAD_ARGS)

## verify: start the service, spike it, prove memory comes back (short preset, ~1 min; exit 0/1/2);
##   your own: VERIFY_ARGS='--command "CMD --port {port}" --locustfile FILE'
verify: $(VENV)/.dev
	$(BIN)/python -m scripts.verify run --preset short $(VERIFY_ARGS)

## bench: the allocator profiles and the peers, two rounds A B A B in a 500 MB cgroup, on this
##   service, on the two example services, and CPython's own mimalloc on a 3.13 (~60 min, root);
##   each run is published apart (docs/measured.md); the standard spike: VERIFY_ARGS=--preset standard
BENCH := compare --preset short --limit-mode cgroup --limit-mb 500 --rounds 2 --no-plot
BENCH_ROWS := baseline,glibc,glibc-tuned,glibc-seed,tcmalloc,jemalloc,jemalloc-nopymalloc,jemalloc-nopymalloc-large,baseline-recycle,granian-max-rss
EXAMPLE_ROWS := glibc,glibc-seed,tcmalloc,jemalloc-nopymalloc,jemalloc-nopymalloc-large
MIMALLOC_ROWS := glibc,jemalloc-nopymalloc,python-mimalloc,python-mimalloc-jemalloc
bench: $(VENV)/.dev
	@status=0; \
	$(BIN)/python -m scripts.verify $(BENCH) --rows $(BENCH_ROWS) $(VERIFY_ARGS) || status=1; \
	for ex in catalogue login; do \
	  rm -rf examples/$$ex/memory && cp -r app/memory examples/$$ex/memory && \
	  $(BIN)/python -m scripts.verify $(BENCH) --rows $(EXAMPLE_ROWS) $(VERIFY_ARGS) \
	    --command "$(BIN)/uvicorn --app-dir examples/$$ex service:app --port {port}" \
	    --locustfile examples/$$ex/locustfile.py || status=1; \
	done; \
	py313=$$($(BIN)/python -m lab.py312 --minor 3.13 --venv-only | tail -1) && \
	$(BIN)/python -m scripts.verify $(BENCH) --rows $(MIMALLOC_ROWS) $(VERIFY_ARGS) \
	  --command "$$py313 -m app.launch" || status=1; \
	exit $$status

## soak: repeated spike/idle cycles of the image under docker --memory=500m (~10 min; exit 0/1/2)
soak: $(VENV)/.dev
	$(BIN)/python -m scripts.verify soak $(VERIFY_ARGS)

## stall: lab instrument: /healthz latency while releases run, against none (~1 min; exit 0/1/2)
stall: $(VENV)/.dev
	$(BIN)/python -m lab.stall $(VERIFY_ARGS)

## test-container: build the image and run it per profile under a 500 MB limit (Docker, or root)
test-container: $(VENV)/.dev
	$(BIN)/python -m pytest tests/container $(PYTEST_ARGS)

## image: build lean-memory-service:test (lab: starts a private dockerd as root when none runs)
image: $(VENV)/.dev
	$(BIN)/python -m scripts.verify.core.docker_engine build

## audit: known vulnerabilities in the pinned dependencies, from the index's JSON API (exit 0/1/2)
audit:
	$(PYTHON) -m lab.audit

## typecheck: mypy over app/ and the tools, strict on app/memory (`make test` runs it too, tests/test_typecheck.py)
typecheck: $(VENV)/.dev
	$(BIN)/python -m mypy

lint: $(VENV)/.dev
	$(BIN)/ruff check app scripts lab loadtest tests examples .railway

## lock: re-resolve the lock files (needs network to the package index)
# --no-strip-extras: a pin keeps the extras something asks for (uvicorn[standard]==...), which pip
# before 24 needs under --require-hashes (a venv of pyenv's 3.12.1 refused the lock without it).
lock:
	$(PYTHON) -m venv .lockvenv && .lockvenv/bin/pip install -q uv
	.lockvenv/bin/uv pip compile pyproject.toml --universal --python-version 3.11 \
		--generate-hashes --no-header --no-strip-extras -o requirements.lock
	.lockvenv/bin/uv pip compile pyproject.toml --extra load --extra plot --extra servers --extra test \
		--universal --python-version 3.11 --generate-hashes --no-header --no-strip-extras \
		-o requirements-dev.lock

clean:
	rm -rf $(VENV) .lockvenv .pytest_cache

## clean-docker: drop the cached base image tarball and the private engine's state
clean-docker:
	rm -rf .cache/docker .cache/base
