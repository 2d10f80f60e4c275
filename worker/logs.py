"""The seed's three log modes on the `w5xde` logger: silent=ERROR, normal=WARNING, verbose=INFO."""

from __future__ import annotations

import logging
import sys

from w5xde.api.v1alpha1 import LogMode

LOGGER_NAME = "w5xde"
_LEVELS = {
    LogMode.SILENT: logging.ERROR,
    LogMode.NORMAL: logging.WARNING,
    LogMode.VERBOSE: logging.INFO,
}


def configure_logging(mode: LogMode) -> logging.Logger:
    """Point the `w5xde` logger at stderr with the mode's level (idempotent)."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(_LEVELS[mode])
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    return logger
