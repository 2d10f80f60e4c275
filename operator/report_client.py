"""Pulls the workers' reports: one signed GET per worker, concurrent but bounded.

A worker whose report shows another cluster size than `spec.workers` is resized with a
signed `PUT /resize?workers=N&generation=G` (G the cluster's `metadata.generation`, so
a replayed older resize is refused) and its report pulled again.

Every failure becomes a `Fetched` with a reason (unreachable, or a bad report); nothing
raises to the caller, so one hanging or lying worker never holds up the others' fold.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterable

import aiohttp
from pydantic import ValidationError

from w5xde.contract import auth
from w5xde.contract.endpoints import (
    CERTIFICATE_PATH,
    GENERATION_PARAMETER,
    METRICS_PORT,
    REPORT_PATH,
    RESIZE_PATH,
    WORKERS_PARAMETER,
)
from w5xde.contract.report import WorkerReport
from w5xde.operator.observation import Fetched, FetchError, PodState

#: A report is a few hundred bytes; anything much larger is not a report.
MAX_REPORT_BYTES = 64 * 1024
#: Reports fetched at once, over all clusters (each is a short HTTP request).
DEFAULT_CONCURRENCY = 64


def report_timeout(interval_seconds: float) -> float:
    """Per request: long enough for a busy worker, short enough to fold within the interval."""
    return max(1.0, min(5.0, interval_seconds / 2))


class ReportClient:
    """Owns one aiohttp session and the concurrency bound; use inside the operator's loop."""

    def __init__(self, concurrency: int = DEFAULT_CONCURRENCY, port: int = METRICS_PORT) -> None:
        self._limit = asyncio.Semaphore(concurrency)
        self._port = port
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=0, force_close=True)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def fetch_all(
        self,
        pods: Iterable[PodState],
        cluster_key: bytes,
        workers: int,
        timeout_seconds: float,
        *,
        previous_key: bytes | None = None,
        generation: int = 0,
    ) -> list[Fetched]:
        """During a key rotation a worker that has not read the new key yet answers 401
        to it; its report is asked for again with the previous key.  A worker that
        reports another size than `workers` is resized (with `generation`, when given)
        and asked again."""
        key = auth.report_key(cluster_key)
        previous = auth.report_key(previous_key) if previous_key is not None else None

        async def pull(pod: PodState) -> Fetched:
            signing = key
            fetched = await self.fetch(pod, key, workers, timeout_seconds)
            if previous is not None and fetched.message == "HTTP 401":
                signing = previous
                fetched = await self.fetch(pod, previous, workers, timeout_seconds)
            report = fetched.report
            if report is not None and report.workers != workers and generation > 0:
                status = await self.put_resize(pod, signing, workers, generation, timeout_seconds)
                if status == 204:
                    fetched = await self.fetch(pod, signing, workers, timeout_seconds)
            return fetched

        return list(await asyncio.gather(*(pull(pod) for pod in pods if pod.ip)))

    async def fetch(
        self, pod: PodState, key: bytes, workers: int, timeout_seconds: float
    ) -> Fetched:
        """`GET /report`, a pure read (`workers` is kept for the callers' symmetry)."""
        target = REPORT_PATH
        host = f"[{pod.ip}]" if ":" in pod.ip else pod.ip
        nonce = auth.new_nonce()
        headers = {
            auth.AUTHORIZATION_HEADER: auth.authorization(key, "GET", target, time.time(), nonce)
        }
        timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        try:
            async with (
                self._limit,
                self._client().get(
                    f"http://{host}:{self._port}{target}",
                    headers=headers,
                    timeout=timeout,
                    allow_redirects=False,
                ) as response,
            ):
                body = await response.content.read(MAX_REPORT_BYTES + 1)
                signature = response.headers.get(auth.SIGNATURE_HEADER)
                status = response.status
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            return Fetched(pod.name, error=FetchError.UNREACHABLE, message=_describe(error))
        if status != 200:
            return Fetched(pod.name, error=FetchError.BAD_REPORT, message=f"HTTP {status}")
        if len(body) > MAX_REPORT_BYTES:
            return Fetched(pod.name, error=FetchError.BAD_REPORT, message="report too large")
        try:
            auth.verify_response(key, nonce, body, signature)
        except auth.AuthError as error:
            return Fetched(pod.name, error=FetchError.BAD_REPORT, message=str(error))
        try:
            report = WorkerReport.model_validate_json(body)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "report"
            return Fetched(
                pod.name, error=FetchError.BAD_REPORT, message=f"{where}: {first['msg']}"
            )
        if report.name != pod.name:
            return Fetched(
                pod.name,
                error=FetchError.BAD_REPORT,
                message=f"report names {report.name!r}, not the pod",
            )
        return Fetched(pod.name, report=report)

    async def put_resize(
        self, pod: PodState, key: bytes, workers: int, generation: int, timeout_seconds: float
    ) -> int:
        """`PUT /resize`: the HTTP status (204 applied or already so; 409 the worker has
        applied a newer generation), 0 when the worker could not be reached."""
        target = f"{RESIZE_PATH}?{WORKERS_PARAMETER}={workers}&{GENERATION_PARAMETER}={generation}"
        host = f"[{pod.ip}]" if ":" in pod.ip else pod.ip
        headers = {
            auth.AUTHORIZATION_HEADER: auth.authorization(
                key, "PUT", target, time.time(), auth.new_nonce()
            )
        }
        try:
            async with (
                self._limit,
                self._client().put(
                    f"http://{host}:{self._port}{target}",
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=timeout_seconds),
                    allow_redirects=False,
                ) as response,
            ):
                await response.content.read(512)
                return response.status
        except (aiohttp.ClientError, OSError, TimeoutError):
            return 0

    async def put_certificate(
        self, pod: PodState, cluster_key: bytes, certificate: bytes
    ) -> tuple[str, str]:
        """Hand a worker the certificate signed for its request: (result, detail), where
        result is "issued", "unreachable" or "rejected" (the worker refused it)."""
        key = auth.report_key(cluster_key)
        target = f"{CERTIFICATE_PATH}?sha256={hashlib.sha256(certificate).hexdigest()}"
        host = f"[{pod.ip}]" if ":" in pod.ip else pod.ip
        nonce = auth.new_nonce()
        headers = {
            auth.AUTHORIZATION_HEADER: auth.authorization(key, "PUT", target, time.time(), nonce),
            "Content-Type": "application/x-pem-file",
        }
        try:
            async with (
                self._limit,
                self._client().put(
                    f"http://{host}:{self._port}{target}",
                    data=certificate,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=5.0),
                    allow_redirects=False,
                ) as response,
            ):
                status = response.status
                text = (await response.content.read(512)).decode(errors="replace")
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            return "unreachable", _describe(error)
        if status == 204:
            return "issued", ""
        return "rejected", f"HTTP {status} {text}"


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    text = str(error) or type(error).__name__
    return text[:200]
