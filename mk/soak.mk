# The soak run. The main Makefile includes this file (after $(STAMP) and $(BIN) are set).
#
#   make soak                          3 minutes of mixed traffic, then the leak census
#   make soak SOAK_SECONDS=1800        a longer soak
#   make soak SOAK_FLAGS="--worker-mode stock --concurrency 4 --seed 7"
#
# All traffic stays on 127.0.0.1. Results: $(SOAK_OUT)/results.json and results.md, with
# both servers' logs (see soak/run.py; `python -m soak.run --help` lists the options). CI
# runs the short setting as tests/soak/test_soak.py. Exit status 1 on any unexpected outcome,
# leak or unclean exit.

SOAK_SECONDS ?= 180
SOAK_OUT ?= .soak
SOAK_FLAGS ?=

.PHONY: soak

soak: $(STAMP)
	$(BIN)/python -m soak.run --seconds $(SOAK_SECONDS) --out $(SOAK_OUT) $(SOAK_FLAGS)
