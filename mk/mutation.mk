# Mutation testing: mutmut over the wire format, the codec, the sender's replay window
# and rate limiter, the receiver's sequence checks and the operator's fold, killed by
# the unit tests (see docs/testing.md for the figures and how long it takes).
# Not part of `make test`: it takes longer than the ten minutes a test run may take.
#
#   make mutation                    every target
#   make mutation MUTATE="protocol codec"   only the targets whose name has those words

MUTATE ?=

.PHONY: mutation mutation-report mutation-clean

mutation: install ## mutmut over protocol, codec, window, rate limiter, sequence checks, fold; prints survivors
	@$(BIN)/pip show -q mutmut >/dev/null 2>&1 || $(BIN)/pip install -q 'mutmut>=3.8,<4'
	$(BIN)/python tests/mutation/report.py --patterns $(MUTATE) | tr '\n' '\0' | \
		xargs -0 $(BIN)/mutmut run --max-children 2
	$(BIN)/python tests/mutation/report.py

mutation-report: ## the last `make mutation`'s figures and survivors, without running again
	$(BIN)/python tests/mutation/report.py

mutation-clean: ## forget every mutant and result (mutants/)
	rm -rf mutants
