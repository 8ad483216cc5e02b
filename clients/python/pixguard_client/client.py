"""HTTP client for pixguard's /v1/score: pooled connections, retries on overload, per-row errors."""
from __future__ import annotations

import random
import re
import time
from typing import Any, Iterable, Optional

import requests
from requests.adapters import HTTPAdapter

try:
    # The caller's trace, when it uses OpenTelemetry: pixguard's span becomes a child of the span
    # current at the call (W3C traceparent; docs/serving.md, "Traces").
    from opentelemetry.propagate import inject as _inject_trace_context
except ImportError:  # OpenTelemetry is optional
    _inject_trace_context = None

# Answers that mean "not now" rather than "never": the queue is full (429), the replica is
# draining or its device failed (503), a gateway could not reach a replica (502, 504).
RETRYABLE = {429, 502, 503, 504}

_ROW = re.compile(r"^transactions\[(\d+)\](?:\.(.*))?$")


class PixguardError(Exception):
    """An answer pixguard refused: the HTTP status, its error code, the field to blame and why
    (``message``: the reason alone, without the field)."""

    def __init__(self, status: int, message: str, code: str = "", field: Optional[str] = None):
        super().__init__(f"{status} {code}: {field + ': ' if field else ''}{message}")
        self.status = status
        self.code = code
        self.field = field
        self.message = message


class PixguardClient:
    """Scores transactions (dicts shaped as /v1/score takes them) against one pixguard URL.

    One ``requests.Session`` keeps connections open across calls; share a client per process
    (Spark: per Python worker) rather than per batch.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8080",
        *,
        timeout: float = 30.0,
        retries: int = 8,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        pool: int = 4,
        session: Optional[requests.Session] = None,
    ):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.session = session or requests.Session()
        adapter = HTTPAdapter(pool_connections=pool, pool_maxsize=pool)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.retried = 0  # retries made, for tests and logs

    def close(self) -> None:
        """Closes the pooled connections."""
        self.session.close()

    def __enter__(self) -> "PixguardClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _delay(self, attempt: int, answer: Optional[requests.Response]) -> float:
        if answer is not None:
            after = answer.headers.get("retry-after", "")
            if after.strip().isdigit():
                return min(float(after), self.max_backoff * 4)
        # Capped exponential backoff with full jitter, so a fleet of executors does not retry in step.
        return random.uniform(0, min(self.max_backoff, self.backoff * (2 ** attempt)))

    def post(self, path: str, body: Any) -> Any:
        """POSTs JSON and answers the decoded body; retries what may succeed later."""
        last: Optional[BaseException] = None
        for attempt in range(self.retries + 1):
            answer = None
            headers: dict[str, str] = {}
            if _inject_trace_context is not None:
                _inject_trace_context(headers)
            try:
                answer = self.session.post(self.url + path, json=body, headers=headers or None,
                                           timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as e:
                last = e
            else:
                if answer.status_code < 300:
                    return answer.json()
                if answer.status_code not in RETRYABLE:
                    raise _error(answer)
                last = _error(answer)
            if attempt == self.retries:
                break
            self.retried += 1
            time.sleep(self._delay(attempt, answer))
        assert last is not None
        raise last

    def score(self, transactions: list[dict], explain: bool = False) -> list[dict]:
        """Scores a batch; one invalid transaction fails it (PixguardError naming its field)."""
        if not transactions:
            return []
        body: dict = {"transactions": transactions}
        if explain:
            body["explain"] = True
        return self.post("/v1/score", body)["results"]

    def score_tolerant(self, transactions: list[dict], explain: bool = False) -> list[dict]:
        """Scores a batch, answering one dict per input in order: the /v1 result, or
        ``{"error": reason, "field": path}`` for a transaction pixguard refused. The refused ones are
        taken out one by one and the rest sent again, so a bad row costs a round trip, not the batch.
        """
        out: list[Optional[dict]] = [None] * len(transactions)
        pending = list(range(len(transactions)))
        while pending:
            try:
                results = self.score([transactions[i] for i in pending], explain)
            except PixguardError as e:
                m = _ROW.match(e.field or "")
                if e.status not in (400, 422) or m is None or int(m.group(1)) >= len(pending):
                    raise
                bad = pending.pop(int(m.group(1)))
                out[bad] = {"error": e.message, "field": m.group(2) or ""}
                continue
            for i, r in zip(pending, results):
                out[i] = r
            break
        return [r if r is not None else {"error": "not scored", "field": ""} for r in out]

    def ready(self) -> bool:
        """Whether the server takes traffic (/readyz)."""
        try:
            return self.session.get(self.url + "/readyz", timeout=self.timeout).status_code == 200
        except requests.RequestException:
            return False

    def wait_ready(self, seconds: float = 60.0) -> None:
        """Waits until /readyz answers 200; raises TimeoutError after ``seconds``."""
        deadline = time.monotonic() + seconds
        while not self.ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.url} not ready after {seconds:.0f} s")
            time.sleep(0.2)


def _error(answer: requests.Response) -> PixguardError:
    try:
        body = answer.json()
    except ValueError:
        body = {"error": answer.text[:500]}
    message, field = body.get("error", ""), body.get("field")
    # pixguard's `error` leads with the field; kept once, a reason taken out of a resent batch
    # does not carry that batch's row index (score_tolerant).
    if field and message.startswith(field + ": "):
        message = message[len(field) + 2:]
    return PixguardError(answer.status_code, message, body.get("code", ""), field)


def batches(items: Iterable[Any], size: int) -> Iterable[list]:
    """Consecutive lists of at most ``size`` items."""
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
