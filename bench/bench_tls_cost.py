"""What TLS costs per byte, in CPU seconds per GB, old channel against new, by cipher.

The worker pair's wall-clock figures swing by 2x on a shared 2-core machine; CPU time
per byte of each side's thread does not depend on what else runs.  Each measurement is
a fresh process (OpenSSL reads its cipher configuration once per process): a sender
thread writes coalesced frames (24-byte header + payload, in flushes of 256 KiB, as the
stream does) through a `TlsChannel` over loopback TCP, a receiver thread reads them with
`recv_into` in 64 KiB chunks, and each thread's own CPU time is taken.  A plain-socket
run (sendmsg / recv_into) gives what the bytes cost without TLS.

    .venv/bin/python bench/bench_tls_cost.py --json bench/tls-cost.json
    .venv/bin/python bench/bench_tls_cost.py --baseline main   # old channel too
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

FLUSH_BYTES = 256 * 1024
CHUNK = 64 * 1024
HEADER = 24
#: Compressed payload sizes of the pair's batches at level 1 (ratio about 1.9).
PAYLOADS = {"64KiB": 34000, "3.6KB": 1900}


def _channel_module(tree: str) -> Any:
    spec = importlib.util.spec_from_file_location("tls_channel_under_test", tree)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def child(channel_file: str, payload: int, megabytes: int, tls: bool) -> dict[str, Any]:
    """One measurement in this process; the cipher is whatever OpenSSL was configured for."""
    from w5xde.local.run import issue_identities
    from w5xde.worker.tls import TlsIdentity

    module = _channel_module(channel_file)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        plain_client = socket.create_connection(listener.getsockname())
        plain_server, _ = listener.accept()
    for sock in (plain_client, plain_server):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    cipher = "none"
    client: Any = plain_client  # a socket, or an old or new TlsChannel
    server: Any = plain_server
    if tls:
        directory = Path(tempfile.mkdtemp(prefix="w5xde-tls-cost-"))
        sections = issue_identities(["a", "b"], directory)
        made = [
            TlsIdentity.from_files(
                name,
                Path(sections[name]["certificateFile"]),
                Path(sections[name]["keyFile"]),
                Path(sections[name]["caFile"]),
            ).contexts
            for name in ("a", "b")
        ]
        assert made[0] is not None
        assert made[1] is not None
        client = module.TlsChannel(plain_client, made[0].client, server_side=False)
        server = module.TlsChannel(plain_server, made[1].server, server_side=True)
        shake = threading.Thread(target=server.handshake, args=(time.monotonic() + 10,))
        shake.start()
        client.handshake(time.monotonic() + 10)
        shake.join()
        cipher = client._tls.cipher()[0]  # (an old channel has no cipher())
    total = megabytes * 1024 * 1024
    body = os.urandom(payload)
    header = os.urandom(HEADER)
    per_flush = max(1, FLUSH_BYTES // (payload + HEADER))
    flush = [piece for _ in range(per_flush) for piece in (header, memoryview(body))]
    flush_bytes = per_flush * (payload + HEADER)
    flushes = total // flush_bytes
    figures: dict[str, float] = {}

    def send() -> None:
        started = time.thread_time()
        for _ in range(flushes):
            if tls:
                client.send_buffers(flush)
            else:
                buffers: list[Any] = list(flush)
                remaining = flush_bytes
                while remaining:
                    sent = client.sendmsg(buffers)
                    remaining -= sent
                    while sent and buffers:
                        size = len(buffers[0])
                        if sent >= size:
                            sent -= size
                            buffers.pop(0)
                        else:
                            buffers[0] = memoryview(buffers[0])[sent:]
                            sent = 0
        figures["send_cpu_s"] = time.thread_time() - started

    def receive() -> None:
        buffer = bytearray(2 * CHUNK)
        view = memoryview(buffer)
        got = 0
        started = time.thread_time()
        while got < flushes * flush_bytes:
            got += server.recv_into(view[:CHUNK])
        figures["receive_cpu_s"] = time.thread_time() - started

    threads = [threading.Thread(target=send), threading.Thread(target=receive)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    gigabytes = flushes * flush_bytes / 1e9
    return {
        "cipher": cipher,
        "payload_bytes": payload,
        "gigabytes": round(gigabytes, 3),
        "send_s_per_gb": round(figures["send_cpu_s"] / gigabytes, 3),
        "receive_s_per_gb": round(figures["receive_cpu_s"] / gigabytes, 3),
        "wall_s": round(wall, 2),
    }


def measure(channel_file: str, payload: int, megabytes: int, tls: bool, aes128: bool) -> Any:
    env = {key: value for key, value in os.environ.items() if key != "OPENSSL_CONF"}
    if aes128:
        from w5xde.worker.openssl_config import CONFIG_FILE

        env["OPENSSL_CONF"] = str(CONFIG_FILE)
    command = [
        sys.executable, __file__, "--child", channel_file,
        "--payload", str(payload), "--megabytes", str(megabytes),
    ] + ([] if tls else ["--plain"])  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return json.loads(result.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child")
    parser.add_argument("--payload", type=int, default=0)
    parser.add_argument("--megabytes", type=int, default=768)
    parser.add_argument("--plain", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", default="", help="git ref whose tls_channel.py runs too")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.payload, args.megabytes, not args.plain)))
        return 0
    here = Path(__file__).resolve().parent.parent
    channels = {"new": str(here / "worker" / "tls_channel.py")}
    if args.baseline:
        old = subprocess.run(
            ["git", "show", f"{args.baseline}:worker/tls_channel.py"],
            capture_output=True,
            text=True,
            check=True,
            cwd=here,
        ).stdout
        path = Path(tempfile.mkdtemp(prefix="w5xde-old-channel-")) / "tls_channel.py"
        path.write_text(old)
        channels = {"old": str(path), **channels}
    variants = [(code, True, aes128) for code in channels for aes128 in (False, True)] + [
        ("new", False, False)
    ]
    rows: dict[str, list[Any]] = {}
    for _ in range(args.repeat):  # alternating, so background load hits every variant
        for size, payload in PAYLOADS.items():
            for code, tls, aes128 in variants:
                name = f"{size} {code} " + (("aes128" if aes128 else "default") if tls else "plain")
                row = measure(channels[code], payload, args.megabytes, tls, aes128)
                rows.setdefault(name, []).append(row)
                print(name, row, file=sys.stderr, flush=True)
    summary = {}
    for name, runs in rows.items():
        send = sorted(run["send_s_per_gb"] for run in runs)
        receive = sorted(run["receive_s_per_gb"] for run in runs)
        summary[name] = {
            "cipher": runs[0]["cipher"],
            "send_s_per_gb": send[len(send) // 2],
            "receive_s_per_gb": receive[len(receive) // 2],
            "send_runs": send,
            "receive_runs": receive,
        }
        print(
            f"{name:28} {runs[0]['cipher']:24} send {send[len(send) // 2]:.3f} "
            f"receive {receive[len(receive) // 2]:.3f} s/GB  (runs {send} / {receive})"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"load_average_at_end": os.getloadavg(), "rows": summary}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
