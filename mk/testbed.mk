# Test bed: a real control plane built from Go modules, a node agent of ours, and the
# end-to-end journeys.  See docs/testbed.md.

TESTBED_GO := tests/testbed/go
TESTBED_PINS := $(TESTBED_GO)/pins.env $(TESTBED_GO)/build.sh \
	$(wildcard $(TESTBED_GO)/*/go.mod) $(wildcard $(TESTBED_GO)/*/go.sum)
# The cache key: any change to a pin, a go.mod/go.sum or the build script rebuilds.
TESTBED_HASH = $(shell cat $(TESTBED_PINS) | sha256sum | cut -c1-16)
TESTBED_CACHE_BIN = $(W5XDE_CACHE)/testbed/$(TESTBED_HASH)/bin
TESTBED_CLI := $(BIN)/python tests/testbed/cli.py

TEST_PREREQUISITES += testbed-bin

.PHONY: testbed-bin cluster-up cluster-down cluster-env testbed-test e2e-test

testbed-bin: ## build etcd, kube-*, kubectl and helm once per pin set (cached in $(W5XDE_CACHE))
	@if [ ! -x "$(TESTBED_CACHE_BIN)/kubectl" ]; then \
		command -v go >/dev/null || { echo "testbed-bin: Go is required (go1.26+)" >&2; exit 1; }; \
		rm -rf "$(TESTBED_CACHE_BIN).tmp"; \
		echo "testbed-bin: building the control plane into $(TESTBED_CACHE_BIN) (cold: see docs/testbed.md)"; \
		time $(TESTBED_GO)/build.sh "$(TESTBED_CACHE_BIN).tmp" && \
		mv "$(TESTBED_CACHE_BIN).tmp" "$(TESTBED_CACHE_BIN)"; \
	fi
	@mkdir -p .testbed
	@ln -sfn "$(TESTBED_CACHE_BIN)" .testbed/bin
	@command -v ip >/dev/null && command -v unshare >/dev/null && command -v setpriv >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq iproute2 util-linux procps; }

cluster-up: install testbed-bin ## start the control plane and node agent (kubeconfig: .testbed/cluster/admin.kubeconfig)
	$(TESTBED_CLI) up

cluster-down: ## stop the control plane and node agent, remove pod namespaces and the bridge
	$(TESTBED_CLI) down

cluster-env: ## print `export KUBECONFIG=...; export PATH=...` for a shell
	@$(TESTBED_CLI) env

testbed-test: install testbed-bin ## the test bed's own tests and the e2e journeys
	$(BIN)/pytest tests/testbed tests/e2e $(PYTEST_ARGS)
