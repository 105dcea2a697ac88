"""Stream one URL to a `.part` file: resumable (HTTP Range), retried with back-off.

Retried: 429 and 5xx (honouring Retry-After), connection errors and timeouts, and bodies cut
short of their Content-Length (the next attempt resumes with `Range: bytes=<have>-`). Any other
HTTP status is an error at once (404: no such accession).
"""

from __future__ import annotations

import email.utils
import http.client
import logging
import socket
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import InputError

log = logging.getLogger(__name__)
RETRY_STATUS = {429, 500, 502, 503, 504}
USER_AGENT = "vqdna-download/0.1 (+https://github.com/vqdna)"


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    backoff_s: float = 2.0
    backoff_max_s: float = 120.0
    timeout_s: float = 60.0
    chunk_bytes: int = 1 << 20

    @classmethod
    def from_config(cls, ncfg: dict) -> "RetryPolicy":
        """From the `genomes.ncbi` config section."""
        return cls(max_attempts=ncfg["max_attempts"], backoff_s=ncfg["backoff_s"],
                   backoff_max_s=ncfg["backoff_max_s"], timeout_s=ncfg["timeout_s"], chunk_bytes=ncfg["chunk_bytes"])

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), max(self.backoff_max_s, retry_after))
        return min(self.backoff_s * (2 ** attempt), self.backoff_max_s)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After is either seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _Retry(Exception):
    def __init__(self, why: str, retry_after: float | None = None):
        super().__init__(why)
        self.retry_after = retry_after


def fetch_to_part(url: str, part: Path, *, headers: dict[str, str] | None = None,
                  policy: RetryPolicy = RetryPolicy(), sleep: Callable[[float], None] = time.sleep,
                  progress=None) -> dict:
    """Download `url` into `part` (appending to what is there); return {'bytes', 'attempts', 'status'}."""
    part.parent.mkdir(parents=True, exist_ok=True)
    last_error = "no attempt made"
    for attempt in range(policy.max_attempts):
        try:
            total = _attempt(url, part, headers or {}, policy, progress)
            return {"bytes": total, "attempts": attempt + 1}
        except _Retry as exc:
            last_error = str(exc)
            if attempt + 1 == policy.max_attempts:
                break
            wait = policy.delay(attempt, exc.retry_after)
            log.warning("%s: %s; retry %d/%d in %.1fs", url, exc, attempt + 1, policy.max_attempts - 1, wait)
            sleep(wait)
    raise InputError(url, f"download failed after {policy.max_attempts} attempts; last error: {last_error}")


def fetch_bytes(url: str, *, headers: dict[str, str] | None = None, policy: RetryPolicy = RetryPolicy(),
                sleep: Callable[[float], None] = time.sleep) -> bytes:
    """A small body (an API's JSON answer) in memory, with the same retries, back-off and
    cut-off handling as a genome download (it goes through a throw-away `.part` file)."""
    with tempfile.TemporaryDirectory(prefix="vqdna-fetch-") as tmp:
        part = Path(tmp) / "body.part"
        fetch_to_part(url, part, headers=headers, policy=policy, sleep=sleep)
        return part.read_bytes() if part.exists() else b""


def _attempt(url: str, part: Path, headers: dict[str, str], policy: RetryPolicy, progress) -> int:
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **headers})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=policy.timeout_s)
    except urllib.error.HTTPError as exc:
        retry_after = parse_retry_after(exc.headers.get("Retry-After") if exc.headers else None)
        exc.close()
        if exc.code in RETRY_STATUS:
            raise _Retry(f"HTTP {exc.code} {exc.reason}", retry_after) from None
        if exc.code == 416 and have:
            part.unlink()  # our .part is not a prefix of what the server has now: start over
            raise _Retry("HTTP 416 on resume; restarting from byte 0", 0.0) from None
        what = "not found (wrong accession?)" if exc.code == 404 else exc.reason
        raise InputError(url, f"HTTP {exc.code}: {what}") from None
    except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError, http.client.HTTPException) as exc:
        raise _Retry(f"connection error: {getattr(exc, 'reason', exc)}") from None

    with resp:
        length = resp.headers.get("Content-Length")
        if resp.status == 206:
            start = _content_range_start(resp.headers.get("Content-Range"))
            if start != have:
                part.unlink(missing_ok=True)
                raise _Retry(f"server resumed at byte {start}, we have {have}; restarting", 0.0)
            mode = "ab"
        else:
            if have:
                log.info("%s: server ignored Range, downloading from byte 0", url)
            have = 0
            mode = "wb"
        expected = have + int(length) if length is not None else None
        got = have
        try:
            with open(part, mode) as out:
                while block := resp.read(policy.chunk_bytes):
                    out.write(block)
                    got += len(block)
                    if progress is not None:
                        progress.update(len(block))
        except (http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError) as exc:
            raise _Retry(f"body cut off after {got} bytes ({type(exc).__name__}); resuming") from None
    if expected is not None and got < expected:
        raise _Retry(f"body cut off: {got} of {expected} bytes; resuming")
    return got


def _content_range_start(value: str | None) -> int | None:
    # "bytes 100-199/200"
    if not value or not value.startswith("bytes "):
        return None
    try:
        return int(value[6:].split("-", 1)[0])
    except ValueError:
        return None
