"""Pure renderers, one module per owned kind: a spec in, a Kubernetes object (dict) out.

Nothing here talks to the API server; the handlers only apply what these return.
"""
