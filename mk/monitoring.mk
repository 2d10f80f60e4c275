# Monitoring: prometheus and promtool (real ones, built from Go modules) for the
# tests/monitoring tier, actionlint for the release workflow.  See docs/metrics.md.

MONITORING_GO := tests/monitoring/go
MONITORING_PINS := $(MONITORING_GO)/pins.env $(MONITORING_GO)/build.sh
# The cache key: any change to a pin or to the build script rebuilds.
MONITORING_HASH = $(shell cat $(MONITORING_PINS) | sha256sum | cut -c1-16)
MONITORING_CACHE = $(W5XDE_CACHE)/monitoring/$(MONITORING_HASH)
MONITORING_BIN := .monitoring/bin
ACTIONLINT_BIN := .monitoring/actionlint

TEST_PREREQUISITES += monitoring-bin

.PHONY: monitoring-bin actionlint-bin workflow-lint rules-test monitoring-test

# $(call cached_go_build,WHAT,CHECK_FILE,LINK)
define cached_go_build
	@if [ ! -x "$(MONITORING_CACHE)/$(1)/$(2)" ]; then \
		command -v go >/dev/null || { echo "$(1): Go is required (go1.26+)" >&2; exit 1; }; \
		rm -rf "$(MONITORING_CACHE)/$(1).tmp"; \
		echo "$(1): building into $(MONITORING_CACHE)/$(1) (cold: see docs/metrics.md)"; \
		time $(MONITORING_GO)/build.sh "$(MONITORING_CACHE)/$(1).tmp" $(1) && \
		mv "$(MONITORING_CACHE)/$(1).tmp" "$(MONITORING_CACHE)/$(1)"; \
	fi
	@mkdir -p .monitoring
	@ln -sfn "$(MONITORING_CACHE)/$(1)" $(3)
endef

monitoring-bin: ## build prometheus and promtool once per pin set (cached in $(W5XDE_CACHE))
	$(call cached_go_build,prometheus,promtool,$(MONITORING_BIN))

actionlint-bin: ## build actionlint once per pin set (cached in $(W5XDE_CACHE))
	$(call cached_go_build,actionlint,actionlint,$(ACTIONLINT_BIN))

workflow-lint: actionlint-bin ## actionlint on .github/workflows (part of `make lint`)
	$(ACTIONLINT_BIN)/actionlint -color -shellcheck= -pyflakes=

lint: workflow-lint

rules-test: install monitoring-bin testbed-bin ## promtool test rules on the chart's alert rules (seconds)
	$(BIN)/pytest tests/monitoring/test_rules.py $(PYTEST_ARGS)

monitoring-test: install monitoring-bin testbed-bin ## the monitoring tier: rules, dashboard and alerts against a real Prometheus on the test bed
	$(BIN)/pytest tests/monitoring $(PYTEST_ARGS)

