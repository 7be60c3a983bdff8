"""HTTP to a FHIR server: requests with a bounded number of retries (429, 5xx and connection errors, with
exponential backoff or the server's Retry-After), each bounded in time; the server's OperationOutcome as
text; what its CapabilityStatement says it supports."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import orjson

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
FATAL_STATUS = frozenset({401, 403, 404, 405})  # the URL or the credentials are wrong: no request can succeed
FHIR_JSON = "application/fhir+json"


class ServerError(RuntimeError):
    """The server refuses every request (wrong URL, credentials): loading stops."""


@dataclass(frozen=True)
class Response:
    status: int  # 0: no answer (connection error, time-out), after the retries
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> dict:
        try:
            value = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return {}
        return value if isinstance(value, dict) else {}


def outcome_text(value: object, fallback: str = "") -> str:
    """An OperationOutcome's issues as one line: 'error: Observation.code: Missing required property; ...'."""
    issues = value.get("issue") if isinstance(value, dict) else None
    if not isinstance(issues, list) or not issues:
        return fallback
    texts = []
    for issue in issues:
        if not isinstance(issue, dict):
            continue
        where = ", ".join(issue.get("expression") or issue.get("location") or [])
        text = (issue.get("details") or {}).get("text") or issue.get("diagnostics") or issue.get("code") or ""
        texts.append(f"{issue.get('severity', 'error')}: {where + ': ' if where else ''}{text}")
    return "; ".join(texts) or fallback


def check_server_url(url: str) -> str:
    """The base URL without a trailing '/', if it is an absolute http(s) URL, else ValueError."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"not an absolute http(s):// base URL of a FHIR server (got {url!r})")
    return url.rstrip("/")


def is_loopback(url: str) -> bool:
    return urlsplit(url).hostname in ("127.0.0.1", "::1", "localhost")


class FhirClient:
    """One server, shared by the loader's threads (httpx.Client is thread-safe). Every request is bounded:
    `timeout_s` per attempt, at most `retries` retries, waits of at most `max_wait_s`."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        connections: int = 4,
        timeout_s: float = 120.0,
        retries: int = 5,
        max_wait_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        headers = {"Accept": FHIR_JSON, "Content-Type": FHIR_JSON}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.Client(
            base_url=base_url + "/",
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )
        self.retries = retries
        self.max_wait_s = max_wait_s
        self.sleep = sleep
        self.lock = threading.Lock()
        self.n_requests = 0
        self.n_retries = 0

    def close(self) -> None:
        self.http.close()

    def _wait_s(self, attempt: int, retry_after: str | None) -> float:
        """Retry-After in seconds if the server gave it, else 0.5 s doubling with each attempt, jittered."""
        if retry_after is not None and retry_after.strip().isdigit():
            return min(float(retry_after), self.max_wait_s)
        return min(self.max_wait_s, 0.5 * 2**attempt) * random.uniform(0.5, 1.0)

    def request(self, method: str, path: str, body: bytes | None = None) -> Response:
        """One request, retried while the server is busy or unreachable (ServerError where it refuses
        every request)."""
        for attempt in range(self.retries + 1):
            with self.lock:
                self.n_requests += 1
                self.n_retries += attempt > 0
            retry_after = None
            try:
                reply = self.http.request(method, path, content=body)
                response = Response(reply.status_code, reply.content)
                retry_after = reply.headers.get("Retry-After")
            except httpx.TransportError as exc:
                response = Response(0, f"{type(exc).__name__}: {exc or 'no answer'}".encode())
            if response.status in FATAL_STATUS:
                text = outcome_text(response.json(), response.body[:200].decode(errors="replace"))
                raise ServerError(f"{method} {self.http.base_url}{path}: {response.status} {text}")
            if response.status and response.status not in RETRY_STATUS:
                return response
            if attempt < self.retries:
                self.sleep(self._wait_s(attempt, retry_after))
        return response

    def capabilities(self) -> dict:
        """The server's CapabilityStatement, or {} where it has none to give (ServerError where it does not
        answer at all)."""
        try:
            response = self.request("GET", "metadata")
        except ServerError:
            return {}
        if response.status == 0:
            raise ServerError(f"no answer from {self.http.base_url}: {response.body.decode(errors='replace')}")
        statement = response.json() if response.ok else {}
        return statement if statement.get("resourceType") == "CapabilityStatement" else {}

    def count(self, resource_type: str) -> int | None:
        """How many resources of this type the server holds (`_summary=count`), or None if it does not say."""
        try:
            response = self.request("GET", f"{resource_type}?_summary=count")
        except ServerError:  # the type is not supported there
            return None
        total = response.json().get("total") if response.ok else None
        return total if isinstance(total, int) else None


def interactions(statement: dict) -> set[str]:
    """The system-level interactions a CapabilityStatement declares (transaction, batch, ...)."""
    return {
        item.get("code")
        for rest in statement.get("rest") or []
        if rest.get("mode", "server") == "server"
        for item in rest.get("interaction") or []
    }
