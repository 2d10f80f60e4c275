"""TLS over a plain socket through memory BIOs, so TLS costs no extra system calls.

`ssl.SSLSocket` lets OpenSSL do the socket I/O, one record (16 KiB) at a time: a
receive is two `recv` calls per record (header, then body) and a 256 KiB coalesced
send is sixteen `send` calls, each waking the receiver.  Here the stream code's own
large reads and writes move ciphertext, and OpenSSL only encrypts and decrypts in
memory: one `recv` for up to `RECEIVE_BYTES` of records, one `send` per flush.

`TlsChannel` is a `socket.socket` (it takes over the descriptor, as `SSLSocket`
does), so selectors, `setsockopt` and `shutdown` work on it unchanged; `recv_into`,
`send` and `sendall` carry plaintext.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from typing import Any, cast

from w5xde.worker.counters import Counters

#: Ciphertext read from the kernel per system call.
#: 64 KiB: the incoming memory BIO keeps the largest write it ever got (OpenSSL does not
#: shrink it), so this bounds what an idle connection holds; measured as cheap per byte
#: as 256 KiB reads (0.68-0.71 against 0.67-0.68 s/GB receiving, bench_tls_cost.py).
RECEIVE_BYTES = 64 * 1024


#: One ciphertext buffer per thread, not per connection: the receive loop serves every
#: incoming connection from one thread, so an idle connection holds none.
_scratch = threading.local()


def _ciphertext_buffer() -> memoryview:
    view: memoryview | None = getattr(_scratch, "view", None)
    if view is None:
        view = _scratch.view = memoryview(bytearray(RECEIVE_BYTES))
    return view


#: Plaintext handed to OpenSSL per write (see `send_buffers`).
WRITE_BYTES = 64 * 1024
#: TLS's largest record: frames are gathered into records this full.
RECORD_BYTES = 16 * 1024


class TlsChannel(socket.socket):
    """One TLS connection; blocking or not, like the socket it was made from."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, *, server_side: bool):
        timeout = sock.gettimeout()
        super().__init__(sock.family, sock.type, sock.proto, fileno=sock.detach())
        self.settimeout(timeout)
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=server_side)
        #: Ciphertext of data `send` accepted that the kernel has not taken yet.
        self._unsent = b""
        #: The kernel had nothing more and what is buffered is not a whole record.
        self._starved = False
        #: Where the seconds spent on TLS (encrypting, decrypting, the memory-BIO copies)
        #: are counted: the stream's or connection's counters once it has them.
        self.counters: Counters = Counters()
        self._kernel_seconds = 0.0

    # --- the handshake (blocking, under a deadline) ------------------------------------

    def handshake(self, deadline: float) -> None:
        while True:
            try:
                self._tls.do_handshake()
            except ssl.SSLWantReadError:
                self._flush_blocking(deadline)
                self._fill_blocking(deadline)
                continue
            except ssl.SSLError:
                # The alert that says why (unknown CA, no certificate) goes to the peer.
                with contextlib.suppress(OSError):
                    self._flush_blocking(deadline)
                raise
            self._flush_blocking(deadline)
            return

    def _flush_blocking(self, deadline: float) -> None:
        data = self._unsent + self._outgoing.read()
        self._unsent = b""
        if data:
            self._within(deadline)
            super().sendall(data)

    def _fill_blocking(self, deadline: float) -> None:
        self._within(deadline)
        data = super().recv(RECEIVE_BYTES)
        if not data:
            raise ConnectionResetError("peer closed the connection during the TLS handshake")
        self._incoming.write(data)

    def _within(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("TLS handshake deadline")
        super().settimeout(remaining)

    # --- plaintext I/O -----------------------------------------------------------------

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        """Decrypted bytes into `buffer`: every whole record buffered, up to `nbytes`;
        0 at the end of the stream.

        Reads the kernel only when no whole record is buffered and nothing was decrypted
        yet; a non-blocking socket with nothing to read raises BlockingIOError, as a
        plain one does.  (OpenSSL hands out one 16 KiB record per read: filling the
        caller's chunk here saves it a parse and a loop turn per record.)
        """
        if flags:
            raise ValueError("flags are not supported on a TLS channel")
        began = time.perf_counter()
        self._kernel_seconds = 0.0
        try:
            return self._decrypt_into(buffer, nbytes or len(buffer))
        finally:
            self.counters.tls_seconds += time.perf_counter() - began - self._kernel_seconds

    def _decrypt_into(self, buffer: Any, size: int) -> int:
        read = self._tls.read
        filled = 0
        view: memoryview | None = None
        while True:
            try:
                if not filled:
                    filled = cast(int, read(size, buffer))
                else:
                    if view is None:
                        view = memoryview(buffer)
                    count = cast(int, read(size - filled, view[filled:size]))
                    if not count:
                        return filled
                    filled += count
                if filled >= size or not filled:
                    return filled
                continue
            except ssl.SSLWantReadError:
                if filled:
                    return filled
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return filled
            entered = time.perf_counter()
            try:
                scratch = _ciphertext_buffer()
                count = super().recv_into(scratch)
            except BlockingIOError:
                self._starved = True
                raise
            finally:
                self._kernel_seconds += time.perf_counter() - entered
            self._starved = False
            if not count:
                self._incoming.write_eof()
                continue
            self._incoming.write(scratch[:count])

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        buffer = bytearray(bufsize)
        count = self.recv_into(buffer, bufsize, flags)
        return bytes(buffer[:count])

    def send(self, data: Any, flags: int = 0) -> int:
        """Accept all of `data` or none (BlockingIOError); what the kernel does not take
        now waits in `unsent` and goes first next time."""
        if flags:
            raise ValueError("flags are not supported on a TLS channel")
        if self._unsent:
            sent = super().send(self._unsent)
            self._unsent = self._unsent[sent:]
            if self._unsent:
                raise BlockingIOError("earlier ciphertext still waits for the kernel")
        began = time.perf_counter()
        self._tls.write(data)
        ciphertext = self._outgoing.read()
        self.counters.tls_seconds += time.perf_counter() - began
        try:
            sent = super().send(ciphertext)
        except BlockingIOError:
            sent = 0
        self._unsent = ciphertext[sent:]
        return len(data)

    def sendall(self, data: Any, flags: int = 0) -> None:
        if flags:
            raise ValueError("flags are not supported on a TLS channel")
        self.send_buffers([data])

    def send_buffers(self, buffers: Sequence[Any]) -> None:
        """Encrypt the buffers in order into full records and send them in one `sendall`.

        OpenSSL makes one record per write (at most 16 KiB): written one by one, a 24-byte
        frame header would be a record of its own, and 3.6 KB batches two records each.
        So short buffers, and the part of a long one beyond its last whole record, are
        gathered (copied, a few KiB) until they fill records; the whole records of a long
        buffer go to OpenSSL straight from it, in pieces of at most `WRITE_BYTES` (one
        large write into a memory BIO costs about 2.7x the CPU per byte: measured 1.3
        against 0.5 s/GB).  Every record but the flush's last is full.
        """
        began = time.perf_counter()
        write = self._tls.write
        gathered = bytearray()
        for buffer in buffers:
            size = len(buffer)
            if size < RECORD_BYTES:
                gathered += buffer
                if len(gathered) >= WRITE_BYTES:
                    write(gathered)
                    gathered.clear()
                continue
            view = memoryview(buffer)
            start = 0
            if gathered:
                start = -len(gathered) % RECORD_BYTES  # what completes a record
                gathered += view[:start]
                write(gathered)
                gathered.clear()
            whole = size - (size - start) % RECORD_BYTES
            for piece in range(start, whole, WRITE_BYTES):
                write(view[piece : min(piece + WRITE_BYTES, whole)])
            if whole < size:
                gathered += view[whole:]
        if gathered:
            write(gathered)
        # One read of the whole flush and one sendall: measured cheaper than reading the
        # BIO every 64 KiB and a sendmsg of the pieces (0.69 against 0.96 s/GB sending
        # 4 MiB payloads, bench/bench_tls_cost.py).
        ciphertext = self._unsent + self._outgoing.read()
        self._unsent = b""
        self.counters.tls_seconds += time.perf_counter() - began
        super().sendall(ciphertext)

    def flush_unsent(self) -> bool:
        """Push ciphertext that an earlier `send` left behind; True once none is left.

        A non-blocking writer must call this when the socket becomes writable: the
        records are already encrypted, and the peer waits for them (an ACK's tail left
        here stalls the stream until the next ACK, which the peer's own wait prevents).
        """
        if self._unsent:
            try:
                sent = super().send(self._unsent)
            except BlockingIOError:
                return False
            self._unsent = self._unsent[sent:]
        return not self._unsent

    @property
    def unsent(self) -> int:
        """Ciphertext bytes accepted by `send` that still wait for the kernel."""
        return len(self._unsent)

    def pending(self) -> int:
        """Bytes buffered here that select() cannot see: decrypted, or ciphertext read."""
        return self._tls.pending() + (0 if self._starved else self._incoming.pending)

    def getpeercert(self) -> Any:
        return self._tls.getpeercert()

    def version(self) -> str | None:
        return self._tls.version()

    def cipher(self) -> tuple[str, str, int] | None:
        return self._tls.cipher()
