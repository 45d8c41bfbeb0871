# Included by the top-level Makefile (`-include bench/bench.mk`); uses its $(PY) and venv.
.PHONY: bench-eta

## bench-eta: ETA error, band coverage and verdict timing over bench/traces and bench/traces/shared
bench-eta: venv
	$(PY) -m bench.eta

.PHONY: bench-evacuation
## bench-evacuation: the evacuation band's coverage on pretend hosts of recorded migrations
bench-evacuation: venv
	$(PY) -m bench.evacuation

.PHONY: bench-fleet
## bench-fleet: one client over gRPC vs N agents (the knee), 1,000 publishers on a private
## RabbitMQ, hub vs bare gRPC (~10 min)
bench-fleet: venv
	$(PY) -m bench.fleet
