"""Run statistics: `SampleStats` is part of the API's status (`status.run`), so it lives in
`w5xde.api.statistics`; this name stays for the callers that read it as a contract.

`api` imports nothing from `contract` (the imports run one way: contract -> api).
"""

from w5xde.api.statistics import SampleStats, t_quantile_975

__all__ = ["SampleStats", "t_quantile_975"]
