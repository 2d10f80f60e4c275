"""Moved: `w5xde local` is the package `w5xde.local` (`w5xde.local.run`).

Kept only so branches written before the move still import; new code imports
`w5xde.local.run`.  Remove once no branch imports `w5xde.worker.local`.
"""

from w5xde.local.run import free_ports, issue_identities

__all__ = ["free_ports", "issue_identities"]
