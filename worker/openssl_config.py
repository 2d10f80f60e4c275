"""AES-128-GCM first for TLS 1.3, through OpenSSL's own configuration file.

Python's `ssl` sets TLS 1.2 ciphers only; TLS 1.3 suites come from OpenSSL's
configuration (`Ciphersuites` in a `system_default` section), which OpenSSL reads once,
when the process first initialises it (importing `ssl` or `hashlib`).  So `w5xde worker`
points `OPENSSL_CONF` at the file shipped next to this module before anything imports
them.  AES-128-GCM costs about 25-30 % less CPU per byte than AES-256-GCM (OpenSSL's
default first choice) with AES-NI; both ends prefer it, TLS 1.3 and the identities are
unchanged.  A machine that sets `OPENSSL_CONF` itself keeps its own.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV = "OPENSSL_CONF"
CONFIG_FILE = Path(__file__).with_name("openssl-aes128.cnf")


def prefer_aes128() -> None:
    """Make this process run with the worker's OpenSSL configuration.

    Sets `OPENSSL_CONF` when nobody has; if OpenSSL is already initialised in this
    process (the CLI's imports may have loaded `hashlib`), the process starts over with
    the same command line (`exec`, once: the variable is set then), which costs about a
    tenth of a second at start.  `w5xde local` sets it for its children, and a pod can
    set it in its environment, so neither restarts.
    """
    if ENV in os.environ or not CONFIG_FILE.is_file():
        return
    os.environ[ENV] = str(CONFIG_FILE)
    if "_ssl" in sys.modules or "_hashlib" in sys.modules:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, sys.orig_argv)  # noqa: S606 - this very command, restarted


def child_environment() -> dict[str, str]:
    """What `w5xde local` adds to its workers' environment (so they need no restart)."""
    if ENV in os.environ or not CONFIG_FILE.is_file():
        return {}
    return {ENV: str(CONFIG_FILE)}
