# Test bed: a real control plane and two real nodes (kubelet, containerd, CNI,
# kube-proxy, CoreDNS) built from Go modules, and the end-to-end journeys.
# See docs/testbed.md.

TESTBED_GO := tests/testbed/go
TESTBED_PINS := $(TESTBED_GO)/pins.env $(TESTBED_GO)/build.sh \
	$(wildcard $(TESTBED_GO)/*/go.mod) $(wildcard $(TESTBED_GO)/*/go.sum) \
	$(wildcard $(TESTBED_GO)/*/*.go)
# The cache key: any change to a pin, a go.mod/go.sum, a Go file (CoreDNS's main.go) or the
# build script rebuilds.
TESTBED_HASH = $(shell cat $(TESTBED_PINS) | sha256sum | cut -c1-16)
TESTBED_CACHE_BIN = $(W5XDE_CACHE)/testbed/$(TESTBED_HASH)/bin
TESTBED_CLI := $(BIN)/python tests/testbed/cli.py

TEST_PREREQUISITES += testbed-bin

.PHONY: testbed-bin cluster-up cluster-down cluster-env testbed-test e2e-test faults-test

testbed-bin: ## build the control plane, kubelet, containerd, CNI, CoreDNS once per pin set (cached in $(W5XDE_CACHE))
	@if [ ! -x "$(TESTBED_CACHE_BIN)/kubectl" ]; then \
		command -v go >/dev/null || { echo "testbed-bin: Go is required (go1.26+)" >&2; exit 1; }; \
		command -v gcc >/dev/null || { echo "testbed-bin: gcc is required (apt-get install gcc libc6-dev)" >&2; exit 1; }; \
		rm -rf "$(TESTBED_CACHE_BIN).tmp"; \
		echo "testbed-bin: building the control plane into $(TESTBED_CACHE_BIN) (cold: see docs/testbed.md)"; \
		time $(TESTBED_GO)/build.sh "$(TESTBED_CACHE_BIN).tmp" && \
		mv "$(TESTBED_CACHE_BIN).tmp" "$(TESTBED_CACHE_BIN)"; \
	fi
	@mkdir -p .testbed
	@ln -sfn "$(TESTBED_CACHE_BIN)" .testbed/bin
	@command -v ip >/dev/null && command -v nft >/dev/null && command -v runc >/dev/null || \
		{ echo "testbed-bin: installing iproute2 nftables runc (apt)"; \
		  apt-get -o DPkg::Lock::Timeout=600 update -qq && \
		  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
			--no-install-recommends iproute2 nftables runc mount >/dev/null; }

cluster-up: install testbed-bin images ## start the control plane and two real nodes (kubeconfig: .testbed/cluster/admin.kubeconfig)
	$(TESTBED_CLI) up

cluster-down: ## stop everything: processes, containers, mounts, cgroups, netns, links, nftables, host sysctls
	$(TESTBED_CLI) down

cluster-env: ## print `export KUBECONFIG=...; export PATH=...` for a shell
	@$(TESTBED_CLI) env

testbed-test: install testbed-bin images ## the test bed's own tests and the e2e journeys
	$(BIN)/pytest tests/testbed tests/e2e $(PYTEST_ARGS)

faults-test: install testbed-bin images ## the fault tier: SIGKILL, pod delete, node freeze, partition, operator and API server restarts, scale mid-run (root)
	$(BIN)/pytest -m faults tests/faults $(PYTEST_ARGS)
