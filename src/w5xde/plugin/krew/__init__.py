"""Distribution of `kubectl w5xde` outside a venv: a zipapp and its krew manifest.

`make plugin-zipapp` builds `dist/kubectl-w5xde`, one file holding the plugin, its
dependencies and `bootstrap.py` as `__main__`; `make plugin-krew` packs it into the
archive krew installs and renders `dist/krew/w5xde.yaml` from `w5xde.yaml` with the
version and the archive's sha256.  `python -P -m w5xde.plugin.krew check` (part of
`make lint`) validates the template: the fields krew requires, the binary name kubectl
looks for, and one platform per archive the release builds.
"""
