# migwatch — the two commands are `make run` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 50051
PYTEST_ARGS ?=
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: run test proto lint bench bench-hub bench-preflight clean venv

# The venv is rebuilt when the declared dependencies change.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

## run: a simulated agent on 127.0.0.1:$(PORT) with converging, slow, non-converging and disk migrations, watched live
run: venv
	@$(VENV)/bin/migwatch-agent --listen 127.0.0.1:$(PORT) --log-level warning & \
	agent=$$!; trap 'kill $$agent 2>/dev/null; wait $$agent 2>/dev/null' EXIT; \
	for i in $$(seq 50); do $(VENV)/bin/migwatch list --agent 127.0.0.1:$(PORT) >/dev/null 2>&1 && break; sleep 0.1; done; \
	$(VENV)/bin/migwatch watch --agent 127.0.0.1:$(PORT)

## test: install what is missing (venv, and the libvirt lab unless MIGWATCH_SKIP_LAB=1), then lint
##       and the whole suite. The lab's daemons and guests are stopped when it ends (pass, fail
##       or Ctrl-C) unless they were already up before (`make lab`) or MIGWATCH_KEEP_LAB=1.
test: venv
	$(MAKE) --no-print-directory lint
	@if [ "$${MIGWATCH_SKIP_LAB:-0}" = 1 ]; then \
	  echo "*** MIGWATCH_SKIP_LAB=1: the real-libvirt lab tests will be reported as SKIPPED ***"; \
	  exec $(PY) -m pytest -q -rs $(PYTEST_ARGS); \
	fi; \
	if $(LABCTL) status >/dev/null 2>&1; then \
	  echo "lab: already up before this run; it is left up afterwards"; \
	elif [ "$${MIGWATCH_KEEP_LAB:-0}" = 1 ]; then \
	  echo "lab: MIGWATCH_KEEP_LAB=1, the lab stays up afterwards (make lab-down stops it)"; \
	else \
	  trap 'echo "lab: stopping what this run started"; $(LABCTL) down >/dev/null || true' EXIT; \
	  trap 'exit 130' INT TERM; \
	fi; \
	$(MAKE) --no-print-directory lab && $(PY) -m pytest -q -rs $(PYTEST_ARGS)

## proto: regenerate the stubs (and .pyi) beside proto/migwatch/v1/migwatch.proto
proto: venv
	$(PY) -m grpc_tools.protoc -Iproto --python_out=proto --pyi_out=proto \
	  --grpc_python_out=proto --mypy_grpc_out=proto proto/migwatch/v1/migwatch.proto

## lint: buf lint (STANDARD), ruff (with line length) and ruff format, the import contracts, strict mypy over the package as installed, tests/, bench/ and lab/
lint: venv
	$(VENV)/bin/buf lint
	$(VENV)/bin/ruff check agent client tests bench lab
	$(VENV)/bin/ruff format --check agent client tests bench lab
	@# mypy cannot follow setuptools' editable import hook: give it the installed shape.
	rm -rf build/typecheck && mkdir -p build/typecheck/migwatch
	for f in __init__.py py.typed v1; do ln -s ../../../proto/migwatch/$$f build/typecheck/migwatch/$$f; done
	ln -s ../../../agent build/typecheck/migwatch/agent
	ln -s ../../../client build/typecheck/migwatch/client
	@# The layer contracts of pyproject.toml [tool.importlinter], on the same installed shape.
	PYTHONPATH=build/typecheck $(VENV)/bin/lint-imports
	MYPYPATH=build/typecheck $(VENV)/bin/mypy -p migwatch
	MYPYPATH=build/typecheck $(VENV)/bin/mypy bench lab
	@# tests/ too, so a test fake that does not satisfy the Backend protocol fails here.
	MYPYPATH=build/typecheck:. $(VENV)/bin/mypy --explicit-package-bases tests

## bench: bench-hub and bench-eta, figures printed with their method (the others run on
##        their own: bench-evacuation, bench-fleet, bench-plot, bench-preflight)
bench: venv bench-hub bench-eta

bench-hub: venv
	$(PY) -m bench.hub

## bench-preflight: CPU cost of background dirty-rate sampling (needs the lab, root)
bench-preflight: venv lab
	$(PY) -m bench.preflight_cost

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache

-include lab/lab.mk
-include bench/bench.mk
