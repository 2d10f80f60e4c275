# `kubectl w5xde` outside a venv: a self-extracting zipapp and its krew manifest.
# See src/w5xde/plugin/krew/ and docs/plugin.md.

PLUGIN_DIST := dist
PLUGIN_SITE := .plugin/site
#: What the plugin imports (not the operator's kopf nor the worker's zstandard).
PLUGIN_REQUIREMENTS := kubernetes pydantic PyYAML rich

.PHONY: plugin-zipapp plugin-krew krew-lint

plugin-zipapp: install ## dist/kubectl-w5xde: one self-extracting file (needs python3 >= 3.11)
	rm -rf $(PLUGIN_SITE) && mkdir -p $(PLUGIN_SITE) $(PLUGIN_DIST)
	$(BIN)/pip install --quiet --target $(PLUGIN_SITE) --no-deps .
	$(BIN)/pip install --quiet --target $(PLUGIN_SITE) $(PLUGIN_REQUIREMENTS)
	find $(PLUGIN_SITE) -name __pycache__ -type d -prune -exec rm -rf {} +
	cp src/w5xde/plugin/krew/bootstrap.py $(PLUGIN_SITE)/__main__.py
	$(BIN)/python -c 'import sys; print(f"{sys.version_info.major}.{sys.version_info.minor}")' > $(PLUGIN_SITE)/PYTHON_VERSION
	rm -rf $(PLUGIN_SITE)/bin
	$(BIN)/python -m zipapp $(PLUGIN_SITE) -c -p "/usr/bin/env python3" -o $(PLUGIN_DIST)/kubectl-w5xde
	@ls -l $(PLUGIN_DIST)/kubectl-w5xde

plugin-krew: plugin-zipapp ## dist/kubectl-w5xde_linux_amd64.tar.gz and dist/krew/w5xde.yaml
	mkdir -p $(PLUGIN_DIST)/krew .plugin/archive
	cp $(PLUGIN_DIST)/kubectl-w5xde .plugin/archive/
	[ -f LICENSE ] && cp LICENSE .plugin/archive/ || echo "Apache-2.0 (pyproject.toml)" > .plugin/archive/LICENSE
	tar -C .plugin/archive -czf $(PLUGIN_DIST)/kubectl-w5xde_linux_amd64.tar.gz kubectl-w5xde LICENSE
	$(BIN)/python -P -m w5xde.plugin.krew render \
		"$$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)" \
		"$$(sha256sum $(PLUGIN_DIST)/kubectl-w5xde_linux_amd64.tar.gz | cut -c1-64)" \
		> $(PLUGIN_DIST)/krew/w5xde.yaml

krew-lint: install ## validate the krew manifest template (part of `make lint`)
	$(BIN)/python -P -m w5xde.plugin.krew check
