"""A black-box reward service over HTTP: POST images and prompts as JSON, read back one score per image.

Request: ``{"prompts": [...], "images": [base64 PNG, ...]}`` (``Content-Type: application/json``), at most
``batch_size`` images each. Response: ``{"scores": [...]}``, one number per image, in order; ``null`` or ``NaN``
is a missing score, handled by ``nan_policy``. Connection errors, timeouts, HTTP 429 and 5xx are retried up to
``retries`` times with exponential backoff (``backoff``·2^attempt seconds); other HTTP errors and malformed answers
fail at once with one line naming the URL and what was wrong. Only the standard library (urllib) is used.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import logging
import math
import time
import urllib.error
import urllib.request
from collections.abc import Mapping

import numpy as np
import torch
from PIL import Image

from srsoup.errors import SrsoupError

log = logging.getLogger(__name__)
NAN_POLICIES = ("error", "keep", "replace")


def png_base64(image: torch.Tensor) -> str:
    """One image [3,H,W] in [0,1] as base64 PNG (8-bit RGB)."""
    arr = (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


class _Retryable(Exception):
    """A failure worth another try (network, timeout, 429, 5xx)."""


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
    ):
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise SrsoupError(
                f"reward 'http': url={url!r} is not an http(s) URL; set rewards.http.url=http://host:port/path"
            )
        if nan_policy not in NAN_POLICIES:
            raise SrsoupError(f"reward 'http': nan_policy={nan_policy!r}; valid: {', '.join(NAN_POLICIES)}")
        if batch_size < 1 or retries < 0 or timeout <= 0 or backoff < 0:
            raise SrsoupError(
                f"reward 'http': need batch_size >= 1, retries >= 0, timeout > 0, backoff >= 0 (got {batch_size}, "
                f"{retries}, {timeout}, {backoff})"
            )
        self.url = url
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.batch_size = int(batch_size)
        self.nan_policy = nan_policy
        self.nan_value = float(nan_value)
        self.headers = {"Content-Type": "application/json", "Accept": "application/json", **dict(headers or {})}

    def __call__(self, images: torch.Tensor, prompts) -> torch.Tensor:
        prompts = list(prompts)
        scores = []
        for lo in range(0, len(images), self.batch_size):
            batch, texts = images[lo : lo + self.batch_size], prompts[lo : lo + self.batch_size]
            payload = {"prompts": texts, "images": [png_base64(im) for im in batch]}
            scores.extend(self._scores(self._post(json.dumps(payload).encode()), len(batch)))
        return torch.tensor(scores, dtype=torch.float32)

    def _post(self, body: bytes) -> bytes:
        """The response body, after up to ``retries`` retries of retryable failures."""
        for attempt in range(self.retries + 1):
            try:
                return self._post_once(body)
            except _Retryable as err:
                if attempt == self.retries:
                    raise SrsoupError(
                        f"reward 'http': {self.url} failed {attempt + 1} time(s), last: {err}"
                    ) from None
                wait = self.backoff * 2**attempt
                log.warning(
                    "reward 'http': %s (%s); retry %d/%d in %.1fs", self.url, err, attempt + 1, self.retries, wait
                )
                time.sleep(wait)
        raise AssertionError("unreachable")

    def _post_once(self, body: bytes) -> bytes:
        request = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as err:
            detail = err.read(200).decode("utf-8", "replace").strip().replace("\n", " ")
            if err.code == 429 or err.code >= 500:
                raise _Retryable(f"HTTP {err.code} {detail}".strip()) from None
            raise SrsoupError(f"reward 'http': {self.url} answered HTTP {err.code}: {detail}") from None
        except TimeoutError as err:
            raise _Retryable(f"no answer within timeout={self.timeout}s ({err})") from None
        except urllib.error.URLError as err:
            if isinstance(err.reason, TimeoutError):
                raise _Retryable(f"no answer within timeout={self.timeout}s") from None
            raise _Retryable(f"cannot connect ({err.reason})") from None
        except (OSError, http.client.HTTPException) as err:
            raise _Retryable(f"connection failed ({type(err).__name__}: {err})") from None

    def _scores(self, body: bytes, n: int) -> list[float]:
        """``{"scores": [n numbers]}`` checked, then missing scores handled by ``nan_policy``."""
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
            s = float(s)
            if not math.isfinite(s):
                if self.nan_policy == "error":
                    raise SrsoupError(
                        f"reward 'http': {self.url} returned {s} for image {i}; set rewards.http.nan_policy=keep "
                        "or replace (with rewards.http.nan_value) to accept it"
                    )
                if self.nan_policy == "replace":
                    s = self.nan_value
            out.append(s)
        return out
