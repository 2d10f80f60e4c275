# Worker: the data plane's tools (zstd and nc for the benchmark baseline, nft for
# packet loss where the kernel has no sch_netem, iperf3 for a raw TCP figure,
# iproute2 for the network-namespace tests) and the benchmark.  See docs/worker.md.

WORKER_TOOLS := zstd nc nft iperf3 ip tc
BENCH_OUT ?= bench/results.json

TEST_PREREQUISITES += worker-tools

.PHONY: worker-tools worker-test bench

worker-tools: ## install zstd, netcat-openbsd, nftables, iperf3, iproute2 (apt, only when missing)
	@missing=""; for tool in $(WORKER_TOOLS); do command -v $$tool >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then \
		echo "worker-tools: installing zstd netcat-openbsd nftables iperf3 iproute2"; \
		apt-get -o DPkg::Lock::Timeout=600 update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
			--no-install-recommends zstd netcat-openbsd nftables iperf3 iproute2 >/dev/null; \
	fi

worker-test: install worker-tools ## the worker's tests: unit, local end to end, network namespaces
	$(BIN)/pytest tests/unit/test_protocol_*.py tests/unit/test_worker_*.py tests/local tests/netns $(PYTEST_ARGS)

bench: install worker-tools ## w5xde against zstd|nc and the codec ceiling; table + $(BENCH_OUT)
	$(BIN)/python bench/bench_worker.py --json $(BENCH_OUT) $(if $(BENCH_BASELINE),--baseline $(BENCH_BASELINE))

.PHONY: bench-memory
bench-memory: install ## where a worker's memory goes, the pair at the defaults, idle peers; table + bench/memory-results.json
	$(BIN)/python bench/bench_memory.py --json bench/memory-results.json

KWOK_VERSION := v0.8.0
# KWOK (sigs.k8s.io/kwok) keeps simulated nodes and pods alive for the reporting benchmark.
KWOK_DIR := $(W5XDE_CACHE)/kwok/$(KWOK_VERSION)
KWOK_BIN := $(KWOK_DIR)/kwok

$(KWOK_BIN):
	@command -v go >/dev/null || { echo "bench-status: Go is required to build kwok" >&2; exit 2; }
	rm -rf "$(KWOK_DIR).tmp" && mkdir -p "$(KWOK_DIR).tmp"
	GOBIN="$(KWOK_DIR).tmp" go install sigs.k8s.io/kwok/cmd/kwok@$(KWOK_VERSION)
	@# kwok ships its node and pod lifecycles ("stages") as YAML in its module: keep
	@# the ones the benchmark uses next to the binary.
	stages="$$(go env GOMODCACHE)/sigs.k8s.io/kwok@$(KWOK_VERSION)/kustomize/stage" && \
		mkdir -p "$(KWOK_DIR).tmp/stages" && \
		cp "$$stages/node/fast/node-initialize.yaml" "$$stages/node/heartbeat/node-heartbeat.yaml" \
			"$$stages/pod/fast/pod-ready.yaml" "$$stages/pod/fast/pod-complete.yaml" \
			"$$stages/pod/fast/pod-delete.yaml" "$(KWOK_DIR).tmp/stages/"
	rm -rf "$(KWOK_DIR)" && mv "$(KWOK_DIR).tmp" "$(KWOK_DIR)"

.PHONY: bench-status
bench-status: install testbed-bin $(KWOK_BIN) ## reporting at 10/100/1000 simulated workers on the real API server; table + bench/status-results.json
	$(BIN)/python bench/bench_status.py --kwok $(KWOK_BIN) --json bench/status-results.json $(BENCH_STATUS_ARGS)

.PHONY: docs-figures docs-figures-check
docs-figures: install ## render README's and docs/PERFORMANCE.md's figures from bench/*.json
	$(BIN)/python bench/render_docs.py

docs-figures-check: install ## fail if those docs differ from what bench/*.json renders
	$(BIN)/python bench/render_docs.py --check
