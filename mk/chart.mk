# Helm chart charts/w5xde: lint and render tests (docs/helm.md).
# helm comes from the test bed's cached build (.testbed/bin/helm, target testbed-bin).

CHART_DIR := charts/w5xde
HELM := .testbed/bin/helm
# The test bed's Kubernetes: the chart requires >=1.29 and `helm template` alone assumes 1.20.
CHART_KUBE_VERSION ?= 1.37.2

TEST_PREREQUISITES += chart-lint

.PHONY: chart-lint chart-test chart-install-test chart-template

chart-lint: install testbed-bin ## helm lint --strict the chart; ruff on its node-tuning script
	$(HELM) lint --strict $(CHART_DIR) --kube-version $(CHART_KUBE_VERSION)
	$(BIN)/ruff format --check $(CHART_DIR)/files
	$(BIN)/ruff check $(CHART_DIR)/files

chart-test: install testbed-bin ## the chart's render, RBAC and schema tests (helm tier, seconds)
	$(BIN)/pytest tests/chart tests/unit/test_chart_schema.py $(PYTEST_ARGS)

chart-install-test: install testbed-bin ## helm install on the test bed: namespaced RBAC, 2 replicas (root)
	$(BIN)/pytest tests/testbed_api/test_chart_install.py $(PYTEST_ARGS)

chart-template: testbed-bin ## print the chart rendered with VALUES=<file> (default values if unset)
	@$(HELM) template w5xde $(CHART_DIR) --namespace w5xde-system \
		--kube-version $(CHART_KUBE_VERSION) $(if $(VALUES),--values $(VALUES))
