"""The versions of what runs in this process, for results and for a worker's report.

Kept apart from `contract.results` so a worker can report them without importing the
results model.
"""

from __future__ import annotations

import functools
import platform
import ssl

from w5xde import __version__
from w5xde.api.v1alpha1 import SoftwareVersions


@functools.cache
def running_versions() -> SoftwareVersions:
    """This process's versions (the worker image has the same in a cluster)."""
    try:
        import zstandard

        zstd_version = str(zstandard.__version__)
        libzstd = ".".join(str(part) for part in zstandard.ZSTD_VERSION)
    except ImportError:  # pragma: no cover - a dependency
        zstd_version = libzstd = ""
    return SoftwareVersions(
        w5xde=__version__,
        zstandard=zstd_version,
        libzstd=libzstd,
        openssl=ssl.OPENSSL_VERSION,
        python=platform.python_version(),
        kernel=platform.release(),
    )
