"""`kubectl w5xde`: a CompressionCluster's results as a person reads them.

Installed as the console script `kubectl-w5xde`, so `kubectl w5xde ...` finds it when
the venv's bin is on PATH.  It only reads: the cluster's status (runs, spread,
notable workers) and, with `--workers`, each worker's signed report through the API
server's pod proxy.
"""
