"""The cluster key as mounted, and the previous one while the operator rotates it.

A rotation writes a new `key` into the Secret and keeps the old one as `previous-key`
until every worker reports the new key's fingerprint; the kubelet updates the mounted
files in place and the worker reads them again when they change.  Meanwhile proofs
and signatures made with either key are accepted and the worker proves itself with
the old one (which all still accept), so no stream and no report is lost to a
rotation, and no restart is needed.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from w5xde.contract import auth

log = logging.getLogger("w5xde.worker")

#: The Secret's field (and mounted file) with the key being rotated out.
PREVIOUS_KEY_FILE = "previous-key"


fingerprint = auth.key_fingerprint


class KeyRing:
    """Thread-safe; `refresh()` re-reads the files when their modification time moves."""

    def __init__(self, current: bytes, previous: bytes | None = None) -> None:
        self._lock = threading.Lock()
        self._current = current
        self._previous = previous
        self._path: Path | None = None
        self._stamp: tuple[float, float] = (0.0, 0.0)

    @classmethod
    def from_file(cls, path: Path) -> KeyRing:
        ring = cls(path.read_bytes().strip())
        ring._path = path
        ring.refresh()
        return ring

    @property
    def current(self) -> bytes:
        return self._current

    @property
    def proving(self) -> bytes:
        """The key this worker proves itself with: while a rotation is under way the
        previous one, which every worker still accepts whether it read the new key yet
        or not; the new one once the rotation is over."""
        with self._lock:
            return self._previous if self._previous is not None else self._current

    @property
    def accepted(self) -> tuple[bytes, ...]:
        """The keys a peer or the operator may use: the current one first."""
        with self._lock:
            previous = self._previous
            return (self._current,) if previous is None else (self._current, previous)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self._current)

    def refresh(self) -> None:
        """Read the mounted files again if they changed (a key too short is ignored)."""
        if self._path is None:
            return
        previous_path = self._path.with_name(PREVIOUS_KEY_FILE)
        try:
            stamp = (
                self._path.stat().st_mtime,
                previous_path.stat().st_mtime if previous_path.exists() else 0.0,
            )
            if stamp == self._stamp:
                return
            current = self._path.read_bytes().strip()
            previous = previous_path.read_bytes().strip() if stamp[1] else None
        except OSError as error:
            log.error("cannot read the cluster key files (keeping the loaded keys): %s", error)
            return
        if len(current) < 32:
            return
        with self._lock:
            changed = current != self._current
            self._current, self._previous, self._stamp = current, previous or None, stamp
        if changed:
            log.warning("cluster key rotated (now %s)", fingerprint(current))
