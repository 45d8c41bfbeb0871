# Included by the top-level Makefile (`-include bench/bench.mk`); uses its $(PY) and venv.
.PHONY: bench-eta

## bench-eta: ETA error, band coverage and verdict timing over bench/traces and bench/traces/shared
bench-eta: venv
	$(PY) -m bench.eta

.PHONY: bench-evacuation
## bench-evacuation: the evacuation band's coverage on pretend hosts of recorded migrations
bench-evacuation: venv
	$(PY) -m bench.evacuation
