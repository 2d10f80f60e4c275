# Operator and API: the CRD is generated from the pydantic models (src/w5xde/api).

.PHONY: crd crd-check

crd: install ## regenerate crds/compressioncluster.yaml and the chart's copy from the models
	$(BIN)/w5xde crd
	$(BIN)/python -m w5xde.contract.results docs/results.schema.json

crd-check: install ## fail if the checked-in CRD files differ from the models
	$(BIN)/w5xde crd --check
