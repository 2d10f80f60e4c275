"""API types of `w5xde.io`: the pydantic models are the single source of truth.

The CRD in `crds/` and the chart is generated from these models; the worker's config
embeds the same sub-models, so the operator renders them into the pods unchanged.
"""
