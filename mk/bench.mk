# The benchmark. The main Makefile includes this file (after $(STAMP) and $(BIN) are set).
#
#   make bench                       stock vs prefork workers, side by side, a few minutes
#   make bench BENCH_REPETITIONS=5   more repetitions of the cold-start measurements
#   make bench BENCH_FLAGS="--skip-resnet-152 --seconds 2"   a quicker run
#
# Results: bench/results/results.json, results.md, latency.png and memory.png (bench/run.py).

BENCH_REPETITIONS ?= 3
BENCH_OUT ?= bench/results
BENCH_FLAGS ?=

.PHONY: bench

bench: $(STAMP)
	$(BIN)/python -m bench.run --repetitions $(BENCH_REPETITIONS) --out $(BENCH_OUT) $(BENCH_FLAGS)
