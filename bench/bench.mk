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

.PHONY: bench-plot
## bench-plot: the pictures in docs/img: the predicted end over a recorded migration
## (migwatch's ETA and band, the naive remaining / rate, the true end, the flag)
PLOT_TRACES ?= bench/traces/mw4-hard1.jsonl bench/traces/qmp-disk.jsonl \
	bench/traces/mw5-nc.jsonl bench/traces/rp/rp-redis-mid.jsonl bench/traces/rp/rp-stress-48m.jsonl
bench-plot: venv
	$(PY) -m bench.plot_eta $(PLOT_TRACES) --out docs/img
