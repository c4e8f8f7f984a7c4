"""An on-disk score cache for paid rewards: one small file per (reward, prompt, image bytes), safe to share.

Each score is a JSON file named by the SHA-256 of the reward's identity (its URL), the prompt and the exact PNG
bytes sent, written to a temporary name and renamed, so concurrent jobs (a Slurm array on a shared filesystem)
can read and fill one cache without a lock. A missing, torn or unreadable entry is a miss; only finite scores
are stored, so a missing score is asked for again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)


class ScoreCache:
    def __init__(self, folder: str | Path, namespace: str):
        self.folder = Path(folder).expanduser()
        self.namespace = namespace
        self._warned = False

    def key(self, prompt: str, image: bytes) -> str:
        digest = hashlib.sha256()
        for part in (self.namespace.encode(), prompt.encode(), image):
            digest.update(len(part).to_bytes(8, "little"))  # lengths first: no two inputs share a byte stream
            digest.update(part)
        return digest.hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> float | None:
        try:
            score = float(json.loads(self._path(key).read_text())["score"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return score if math.isfinite(score) else None

    def put(self, key: str, score: float) -> None:
        if not math.isfinite(score):
            return
        path = self._path(key)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"score": score}))
            os.replace(tmp, path)
        except OSError as err:  # a cache that cannot be written costs money later, not this run
            with contextlib.suppress(OSError):
                tmp.unlink()
            if not self._warned:
                self._warned = True
                log.warning("score cache %s cannot be written (%s): scores are not cached", self.folder, err)
