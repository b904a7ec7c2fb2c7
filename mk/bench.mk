# The benchmark. The main Makefile includes this file (after $(STAMP) and $(BIN) are set).
#
#   make bench                       all six benchmarks, about 19 minutes on a quiet 2-core machine
#   make bench BENCH_FLAGS="--only traffic --seconds 3 --rounds 1"   MME traffic only, quickly
#   make bench BENCH_FLAGS="--only workers --skip-resnet-152 --seconds 2"   workers only
#   make bench BENCH_BASELINE=old/mme-traffic.json   judge "no worse than today" against it
#   make bench BENCH_FLAGS="--only density --density-models 200"   density only, up to 200 models
#   make bench BENCH_FLAGS="--only metrics"   what the metrics cost an invocation
#   make bench BENCH_FLAGS="--only shared"    what a model's second worker costs
#   make bench BENCH_FLAGS="--only hot"       ResNet-18 and ResNet-152 against the in-process floors
#   make bench BENCH_REPETITIONS=5   more repetitions of the cold-start measurements
#
# Results (bench/run.py): bench/results/results.json, results.md, latency.png and memory.png
# (stock vs pre-forked workers); mme-traffic.json, .md and .png (the stock stack vs ours);
# density.json, .md and .png (up to 1,000 tiny models in one server); metrics-cost.json and
# .md (a no-op model with the metrics on and off); shared-workers.json and .md (ResNet-18 with
# 1 worker, 2 sharing one copy, 2 with a copy each); hot-model.json and .md (sequential and
# 16-client numbers against the in-process floors).

BENCH_REPETITIONS ?= 3
BENCH_OUT ?= bench/results
BENCH_BASELINE ?=
BENCH_FLAGS ?=

.PHONY: bench

bench: $(STAMP)
	$(BIN)/python -m bench.run --repetitions $(BENCH_REPETITIONS) --out $(BENCH_OUT) \
		$(if $(BENCH_BASELINE),--baseline $(BENCH_BASELINE)) $(BENCH_FLAGS)
