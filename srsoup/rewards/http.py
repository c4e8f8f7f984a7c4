"""A black-box reward service over HTTP (often a paid judge): POST images and prompts as JSON, read one score each.

Request: ``{"prompts": [...], "images": [base64 PNG, ...]}`` (``Content-Type: application/json``), at most
``batch_size`` images each, up to ``max_concurrency`` requests at once. Response: ``{"scores": [...]}``, one number
per image, in order; ``null`` or ``NaN`` is a missing score, handled by ``nan_policy``.

``timeout`` bounds a whole request (connect, send, the complete answer): a server that trickles bytes is cut off
when it runs out, not when it pauses. Answers over ``max_response_bytes`` are refused. Connection errors,
timeouts, HTTP 429 and 5xx are retried up to ``retries`` times with exponential backoff (``backoff``·2^attempt
seconds); other HTTP errors and malformed answers fail at once with one line naming the URL and what was wrong.

``cache_dir``: scores are kept on disk by (URL, prompt, PNG bytes) so a resumed or repeated run does not pay for
an image twice (srsoup/rewards/cache.py). A cache hit is still one reward query of the method's ledger (the method
asked for the score; only the paid call is saved). ``stats()`` reports cache hits, paid queries (images in
answered requests), requests, retries, failed attempts and ``cost`` = paid queries × ``cost_per_query``;
summary.json shows them per reward (``reward_stats``). Only the standard library (urllib) is used, so the usual
``HTTP(S)_PROXY`` / ``NO_PROXY`` variables apply.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import logging
import math
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

from srsoup.errors import SrsoupError
from srsoup.rewards.cache import ScoreCache

log = logging.getLogger(__name__)
NAN_POLICIES = ("error", "keep", "replace")
COUNTERS = ("cache_hits", "paid_queries", "requests", "retries", "failed_attempts")


def png_bytes(image: torch.Tensor) -> bytes:
    """One image [3,H,W] in [0,1] as PNG bytes (8-bit RGB)."""
    arr = (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def png_base64(image: torch.Tensor) -> str:
    """One image [3,H,W] in [0,1] as base64 PNG (8-bit RGB)."""
    return base64.b64encode(png_bytes(image)).decode("ascii")


class _Retryable(Exception):
    """A failure worth another try (network, timeout, 429, 5xx)."""


def _recorded(connection_class, record: list):
    """``connection_class`` whose connections remember their sockets, so a deadline can shut them.

    urllib drops the connection's own reference to its socket once the headers are read (the response keeps the
    socket), so the socket is recorded when it connects.
    """

    def make(*args, **kwargs):
        conn = connection_class(*args, **kwargs)
        connect = conn.connect

        def connect_and_record():
            connect()
            record.append(conn.sock)

        conn.connect = connect_and_record
        return conn

    return make


class _Recording:
    """A urllib handler whose connections are ``_recorded``."""

    def __init__(self, record: list):
        super().__init__()
        self.record = record

    def do_open(self, http_class, req, **kwargs):
        return super().do_open(_recorded(http_class, self.record), req, **kwargs)


class _HTTPHandler(_Recording, urllib.request.HTTPHandler):
    pass


class _HTTPSHandler(_Recording, urllib.request.HTTPSHandler):
    pass


class HttpReward:
    """Callable ``(images, prompts) -> Tensor[B]`` that asks a remote service for the scores."""

    def __init__(
        self,
        url: str,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 1.0,
        batch_size: int = 16,
        nan_policy: str = "error",
        nan_value: float = 0.0,
        headers: Mapping[str, str] | None = None,
        max_concurrency: int = 4,
        max_response_bytes: int = 1_048_576,
        cost_per_query: float = 0.0,
        cache_dir: str | None = None,
    ):
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise SrsoupError(
                f"reward 'http': url={url!r} is not an http(s) URL; set rewards.http.url=http://host:port/path"
            )
        if nan_policy not in NAN_POLICIES:
            raise SrsoupError(f"reward 'http': nan_policy={nan_policy!r}; valid: {', '.join(NAN_POLICIES)}")
        numbers = dict(timeout=timeout, backoff=backoff, cost_per_query=cost_per_query)
        counts = dict(
            batch_size=(batch_size, 1),
            retries=(retries, 0),
            max_concurrency=(max_concurrency, 1),
            max_response_bytes=(max_response_bytes, 1),
        )
        for key, (value, low) in counts.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise SrsoupError(f"reward 'http': {key}={value!r} must be an integer >= {low}")
        for key, value in numbers.items():
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise SrsoupError(f"reward 'http': {key}={value!r} must be a finite number >= 0")
        if timeout <= 0:
            raise SrsoupError(f"reward 'http': timeout={timeout!r} must be > 0 seconds (a whole request)")
        self.url = url
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.batch_size = int(batch_size)
        self.nan_policy = nan_policy
        self.nan_value = float(nan_value)
        self.headers = {"Content-Type": "application/json", "Accept": "application/json", **dict(headers or {})}
        self.max_concurrency = int(max_concurrency)
        self.max_response_bytes = int(max_response_bytes)
        self.cost_per_query = float(cost_per_query)
        self.cache = ScoreCache(cache_dir, namespace=url) if cache_dir else None
        self._lock = threading.Lock()
        self.counts = dict.fromkeys(COUNTERS, 0)

    def stats(self) -> dict:
        """Cache hits, paid queries, requests, retries, failed attempts and cost so far."""
        with self._lock:
            return {**self.counts, "cost": round(self.counts["paid_queries"] * self.cost_per_query, 10)}

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def __call__(self, images: torch.Tensor, prompts) -> torch.Tensor:
        prompts = list(prompts)
        pngs = [png_bytes(im) for im in images]
        scores: list[float | None] = [None] * len(pngs)
        keys = [self.cache.key(p, png) for p, png in zip(prompts, pngs)] if self.cache else []
        for i, key in enumerate(keys):
            scores[i] = self.cache.get(key)
        self._count("cache_hits", sum(s is not None for s in scores))
        missing = [i for i, s in enumerate(scores) if s is None]
        batches = [missing[lo : lo + self.batch_size] for lo in range(0, len(missing), self.batch_size)]
        for batch, answer in zip(batches, self._ask_all(batches, prompts, pngs)):
            for i, score in zip(batch, answer):
                scores[i] = score
                if self.cache:
                    self.cache.put(keys[i], score)
        return torch.tensor([self._policy(s, i) for i, s in enumerate(scores)], dtype=torch.float32)

    def _ask_all(self, batches: list[list[int]], prompts: list[str], pngs: list[bytes]) -> list[list[float]]:
        """The answers of all batches, in order, up to ``max_concurrency`` requests at once."""

        def ask(batch: list[int]) -> list[float]:
            payload = {
                "prompts": [prompts[i] for i in batch],
                "images": [base64.b64encode(pngs[i]).decode("ascii") for i in batch],
            }
            return self._scores(self._post(json.dumps(payload).encode()), len(batch))

        if len(batches) <= 1 or self.max_concurrency == 1:
            return [ask(b) for b in batches]
        pool = ThreadPoolExecutor(min(self.max_concurrency, len(batches)), thread_name_prefix="http-reward")
        try:
            futures = [pool.submit(ask, b) for b in batches]
            return [f.result() for f in futures]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # a failed batch stops the ones not yet started

    def _post(self, body: bytes) -> bytes:
        """The response body, after up to ``retries`` retries of retryable failures."""
        for attempt in range(self.retries + 1):
            try:
                return self._post_once(body)
            except _Retryable as err:
                self._count("failed_attempts")
                if attempt == self.retries:
                    raise SrsoupError(
                        f"reward 'http': {self.url} failed {attempt + 1} time(s), last: {err}"
                    ) from None
                wait = self.backoff * 2**attempt
                log.warning(
                    "reward 'http': %s (%s); retry %d/%d in %.1fs", self.url, err, attempt + 1, self.retries, wait
                )
                self._count("retries")
                time.sleep(wait)
            except SrsoupError:
                self._count("failed_attempts")
                raise
        raise AssertionError("unreachable")

    def _post_once(self, body: bytes) -> bytes:
        """One request within the whole-request deadline: a timer shuts the connection's socket when it passes."""
        connections: list[socket.socket] = []
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            for sock in connections:
                with contextlib.suppress(OSError):
                    # The plain socket's shutdown (an SSL socket's own would drop its state under the reader).
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)

        late = f"no complete answer within timeout={self.timeout}s"
        opener = urllib.request.build_opener(_HTTPHandler(connections), _HTTPSHandler(connections))
        request = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        timer = threading.Timer(self.timeout, expire)
        timer.daemon = True
        timer.start()
        try:
            with opener.open(request, timeout=self.timeout) as response:
                length = response.headers.get("Content-Length")
                self._check_length(length)
                data = response.read(self.max_response_bytes + 1)
                announced = int(length) if length is not None and length.isdigit() else None
                if expired.is_set() and (announced is None or len(data) < announced):
                    raise _Retryable(late)  # the deadline's shutdown cut the answer short
                if announced is not None and len(data) < announced:
                    raise _Retryable(f"answer cut short ({len(data)} of {announced} bytes)")
        except urllib.error.HTTPError as err:
            detail = err.read(200).decode("utf-8", "replace").strip().replace("\n", " ")
            if err.code == 429 or err.code >= 500:
                raise _Retryable(f"HTTP {err.code} {detail}".strip()) from None
            raise SrsoupError(f"reward 'http': {self.url} answered HTTP {err.code}: {detail}") from None
        except (OSError, http.client.HTTPException, ValueError) as err:
            if isinstance(err, ValueError) and not expired.is_set():
                raise
            reason = getattr(err, "reason", err)
            if expired.is_set() or isinstance(err, TimeoutError) or isinstance(reason, TimeoutError):
                raise _Retryable(late) from None
            if isinstance(err, urllib.error.URLError):
                raise _Retryable(f"cannot connect ({reason})") from None
            raise _Retryable(f"connection failed ({type(err).__name__}: {err})") from None
        finally:
            timer.cancel()
        self._check_length(len(data))
        return data

    def _check_length(self, length) -> None:
        """Refuse an answer longer than ``max_response_bytes`` (announced, or as read)."""
        if length is not None and str(length).isdigit() and int(length) > self.max_response_bytes:
            raise SrsoupError(
                f"reward 'http': {self.url} answered more than max_response_bytes={self.max_response_bytes} bytes "
                f"({length}); raise rewards.http.max_response_bytes if that is expected"
            )

    def _scores(self, body: bytes, n: int) -> list[float]:
        """An answered request (paid for): its scores, or a failed attempt when they are malformed."""
        self._count("requests")
        self._count("paid_queries", n)
        try:
            return self._parse(body, n)
        except SrsoupError:
            self._count("failed_attempts")
            raise

    def _parse(self, body: bytes, n: int) -> list[float]:
        """``{"scores": [n numbers]}`` checked; a missing score (null, NaN) comes back as NaN."""
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            snippet = body[:80].decode("utf-8", "replace").replace("\n", " ")
            raise SrsoupError(f"reward 'http': {self.url} did not answer JSON: {snippet!r}") from None
        scores = data.get("scores") if isinstance(data, dict) else None
        if not isinstance(scores, list):
            keys = list(data) if isinstance(data, dict) else type(data).__name__
            raise SrsoupError(f"reward 'http': {self.url} answered without a 'scores' list (got {keys})")
        if len(scores) != n:
            raise SrsoupError(f"reward 'http': {self.url} returned {len(scores)} scores for {n} images")
        out = []
        for i, s in enumerate(scores):
            if s is None:
                s = math.nan
            if isinstance(s, bool) or not isinstance(s, int | float):
                raise SrsoupError(f"reward 'http': {self.url} score {i} is {s!r}, not a number")
            out.append(float(s))
        return out

    def _policy(self, s: float, i: int) -> float:
        """A missing score under ``nan_policy``: an error, kept as NaN, or ``nan_value``."""
        if math.isfinite(s) or self.nan_policy == "keep":
            return s
        if self.nan_policy == "replace":
            return self.nan_value
        raise SrsoupError(
            f"reward 'http': {self.url} returned {s} for image {i}; set rewards.http.nan_policy=keep "
            "or replace (with rewards.http.nan_value) to accept it"
        )
