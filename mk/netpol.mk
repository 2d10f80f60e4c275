# The test bed's NetworkPolicy enforcer: kube-network-policies (sigs.k8s.io), built from
# its Go module into its own cache entry. Its pins live in tests/testbed/netpol, outside
# tests/testbed/go, so the bed's own cache key (mk/testbed.mk) never changes with it.
# See docs/testbed.md, "NetworkPolicy enforcement".

NETPOL_GO := tests/testbed/netpol
NETPOL_PINS := $(NETPOL_GO)/pins.env $(NETPOL_GO)/build.sh $(NETPOL_GO)/go.mod \
	$(NETPOL_GO)/go.sum $(NETPOL_GO)/main.go
NETPOL_HASH = $(shell cat $(NETPOL_PINS) | sha256sum | cut -c1-16)
NETPOL_CACHE = $(W5XDE_CACHE)/netpol/$(NETPOL_HASH)

TEST_PREREQUISITES += netpol-bin

.PHONY: netpol-bin netpol-test

netpol-bin: ## build the bed's NetworkPolicy enforcer once per pin set (cached in $(W5XDE_CACHE))
	@if [ ! -x "$(NETPOL_CACHE)/w5n-netpol" ]; then \
		command -v go >/dev/null || { echo "netpol-bin: Go is required (go1.26+)" >&2; exit 1; }; \
		rm -rf "$(NETPOL_CACHE).tmp"; \
		echo "netpol-bin: building into $(NETPOL_CACHE)"; \
		time $(NETPOL_GO)/build.sh "$(NETPOL_CACHE).tmp" && \
		mv "$(NETPOL_CACHE).tmp" "$(NETPOL_CACHE)"; \
	fi
	@mkdir -p .testbed
	@ln -sfn "$(NETPOL_CACHE)" .testbed/netpol
	@command -v iptables-legacy >/dev/null || \
		{ echo "netpol-bin: installing iptables (apt): its NFQUEUE target feeds the enforcer"; \
		  apt-get -o DPkg::Lock::Timeout=600 update -qq && \
		  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
			--no-install-recommends iptables >/dev/null; }

netpol-test: install testbed-bin netpol-bin images ## the NetworkPolicy proofs on the test bed (enforced by kube-network-policies)
	$(BIN)/pytest tests/testbed_api/test_network_policy_enforced.py $(PYTEST_ARGS)
