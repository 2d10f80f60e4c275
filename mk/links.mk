# Shaped links (issue 12): w5xde levels none/1/3/6/auto and balance even/capacity across
# tc-tbf-shaped veths between network namespaces, against `zstd -1 | nc` and
# `zstd --adapt | nc`.  Root; creates and removes its own namespaces (prefix w5l-);
# about 6 minutes.  SOURCE=file:PATH picks the data (default: the synthetic mixed pool).

LINKS_OUT ?= bench/links-results.json

.PHONY: bench-links
bench-links: install worker-tools ## shaped links: levels, auto, zstd|nc, balance; table + $(LINKS_OUT) (root)
	timeout 900 $(BIN)/python bench/bench_links.py --json $(LINKS_OUT) $(if $(SOURCE),--source $(SOURCE)) $(BENCH_LINKS_ARGS)
