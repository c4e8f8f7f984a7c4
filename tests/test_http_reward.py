"""The HTTP reward against a stdlib server on 127.0.0.1: scores, batching, timeouts, retries, bad answers, NaNs."""

from __future__ import annotations

import base64
import io
import json
import math
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from PIL import Image

from srsoup.errors import SrsoupError
from srsoup.rewards.http import HttpReward

# conftest's one_torch_thread for every test of this module.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Service:
    """A scripted reward service: each request pops the next action (default ``ok``) and is recorded."""

    def __init__(self):
        self.actions: list = []
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        self.headers: list[dict] = []

    def next_action(self):
        with self.lock:
            return self.actions.pop(0) if self.actions else "ok"


def brightness_of(png_b64: str) -> float:
    with Image.open(io.BytesIO(base64.b64decode(png_b64))) as im:
        return float(np.asarray(im.convert("RGB"), dtype=np.float64).mean() / 255)


def make_handler(service: Service):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the stdlib's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with service.lock:
                service.requests.append(body)
                service.headers.append(dict(self.headers))
                service.in_flight += 1
                service.most_in_flight = max(service.most_in_flight, service.in_flight)
            try:
                self.answer(body, service.next_action())
            finally:
                with service.lock:
                    service.in_flight -= 1

        def answer(self, body, action):
            if isinstance(action, tuple) and action[0] in ("trickle_head", "trickle_body"):
                return self.trickle(action[0], action[1])
            if isinstance(action, tuple) and action[0] == "unannounced":  # no Content-Length: read until close
                self.send_response(200)
                self.end_headers()
                return self.wfile.write(action[1])
            if isinstance(action, tuple) and action[0] == "sleep":
                time.sleep(action[1])
                action = "ok"
            if isinstance(action, int):
                return self.reply(action, b"server trouble")
            if action == "ok":
                payload = json.dumps({"scores": [brightness_of(im) for im in body["images"]]}).encode()
            elif action == "echo_prompts":
                payload = json.dumps({"scores": [len(p) for p in body["prompts"]]}).encode()
            else:
                payload = action if isinstance(action, bytes) else json.dumps(action).encode()
            self.reply(200, payload)

        def trickle(self, where: str, delay: float):
            """One byte every ``delay`` seconds, in the status line or in a 100-byte body, for up to 10 s."""
            head = b"HTTP/1.0 200 OK\r\nContent-Length: 100\r\n\r\n"
            try:
                if where == "trickle_body":
                    self.wfile.write(head)
                for _ in range(int(10 / delay)):
                    self.wfile.write(b"H" if where == "trickle_head" else b" ")
                    self.wfile.flush()
                    time.sleep(delay)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up: what the deadline is for

        def reply(self, code: int, payload: bytes):
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            try:
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout tests)

        def log_message(self, *args):
            pass

    return Handler


@pytest.fixture
def service():
    svc = Service()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(svc))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    svc.url = f"http://127.0.0.1:{server.server_address[1]}/score"
    yield svc
    server.shutdown()
    server.server_close()


def images(n: int) -> torch.Tensor:
    """n flat images of distinct, exactly representable brightness k/255."""
    levels = torch.arange(10, 10 + 20 * n, 20)[:n].float() / 255
    return levels.view(n, 1, 1, 1).expand(n, 3, 8, 8).clone()


def test_scores_come_back_in_order_and_batched(service):
    reward = HttpReward(service.url, batch_size=3, timeout=5, max_concurrency=1)  # requests in order
    imgs = images(7)
    prompts = [f"prompt {i}" for i in range(7)]
    scores = reward(imgs, prompts)
    assert scores.shape == (7,) and scores.dtype == torch.float32
    torch.testing.assert_close(scores, imgs.mean(dim=(1, 2, 3)))
    assert [len(r["images"]) for r in service.requests] == [3, 3, 1]
    assert [p for r in service.requests for p in r["prompts"]] == prompts
    service.actions = ["echo_prompts"]
    assert reward(images(2), ["ab", "abcd"]).tolist() == [2.0, 4.0]


def test_slow_answer_times_out_and_is_retried(service):
    service.actions = [("sleep", 0.6), ("sleep", 0.6), ("sleep", 0.6)]
    reward = HttpReward(service.url, timeout=0.15, retries=2, backoff=0.01)
    start = time.monotonic()
    with pytest.raises(SrsoupError) as e:
        reward(images(2), ["a", "b"])
    assert time.monotonic() - start < 1.5
    assert len(service.requests) == 3  # one try and two retries
    msg = str(e.value)
    assert "failed 3 time(s)" in msg and "timeout=0.15s" in msg and "\n" not in msg


def test_timeout_then_success(service):
    service.actions = [("sleep", 0.6)]
    reward = HttpReward(service.url, timeout=0.15, retries=1, backoff=0.01)
    torch.testing.assert_close(reward(images(2), ["a", "b"]), images(2).mean(dim=(1, 2, 3)))
    assert len(service.requests) == 2


def test_server_error_then_success_with_backoff(service):
    service.actions = [500, 503]
    reward = HttpReward(service.url, retries=3, backoff=0.05)
    start = time.monotonic()
    scores = reward(images(3), ["a"] * 3)
    torch.testing.assert_close(scores, images(3).mean(dim=(1, 2, 3)))
    assert len(service.requests) == 3
    assert time.monotonic() - start >= 0.05 + 0.1  # backoff 0.05 then 0.1


def test_persistent_server_error_and_client_error(service):
    service.actions = [500] * 3
    with pytest.raises(SrsoupError, match=r"failed 3 time\(s\), last: HTTP 500 server trouble"):
        HttpReward(service.url, retries=2, backoff=0)(images(1), ["a"])
    service.requests.clear()
    service.actions = [400]
    with pytest.raises(SrsoupError, match=r"answered HTTP 400: server trouble"):
        HttpReward(service.url, retries=5, backoff=0)(images(1), ["a"])
    assert len(service.requests) == 1  # a 4xx is not retried


@pytest.mark.parametrize(
    "answer,message",
    [
        (b"<html>oops</html>", "did not answer JSON"),
        ({"score": [1.0]}, "without a 'scores' list"),
        ([1.0], "without a 'scores' list"),
        ({"scores": [1.0, 2.0]}, "returned 2 scores for 1 images"),
        ({"scores": ["high"]}, "score 0 is 'high', not a number"),
    ],
)
def test_malformed_answers_are_clear_errors(service, answer, message):
    service.actions = [answer]
    with pytest.raises(SrsoupError) as e:
        HttpReward(service.url, retries=0)(images(1), ["a"])
    assert message in str(e.value) and service.url in str(e.value) and "\n" not in str(e.value)


def test_nan_policy(service):
    answer = b'{"scores": [1.5, null, NaN]}'
    service.actions = [answer]
    with pytest.raises(SrsoupError, match="returned nan for image 1; set rewards.http.nan_policy"):
        HttpReward(service.url)(images(3), ["a"] * 3)
    service.actions = [answer]
    kept = HttpReward(service.url, nan_policy="keep")(images(3), ["a"] * 3)
    assert kept[0] == 1.5 and math.isnan(kept[1]) and math.isnan(kept[2])
    service.actions = [answer]
    replaced = HttpReward(service.url, nan_policy="replace", nan_value=-1.0)(images(3), ["a"] * 3)
    assert replaced.tolist() == [1.5, -1.0, -1.0]


def test_unreachable_service_and_bad_config():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    with pytest.raises(SrsoupError, match=r"failed 2 time\(s\), last: cannot connect"):
        HttpReward(f"http://127.0.0.1:{port}/score", retries=1, backoff=0)(images(1), ["a"])
    with pytest.raises(SrsoupError, match=r"url=None is not an http\(s\) URL; set rewards.http.url="):
        HttpReward(None)
    with pytest.raises(SrsoupError, match="nan_policy='drop'; valid: error, keep, replace"):
        HttpReward("http://127.0.0.1:1/", nan_policy="drop")


@pytest.mark.parametrize("where", ["trickle_head", "trickle_body"])
def test_a_trickling_server_is_cut_off_at_the_whole_request_deadline(service, where):
    """A byte every 0.05 s never trips a per-read timeout; the deadline ends the request at timeout=0.4 s."""
    service.actions = [(where, 0.05)] * 2
    reward = HttpReward(service.url, timeout=0.4, retries=1, backoff=0)
    start = time.monotonic()
    with pytest.raises(SrsoupError, match=r"failed 2 time\(s\), last: no complete answer within timeout=0.4s"):
        reward(images(1), ["a"])
    assert time.monotonic() - start < 2.5  # two attempts of 0.4 s, not 2 x 10 s of trickle
    assert reward.stats()["failed_attempts"] == 2 and reward.stats()["retries"] == 1


@pytest.mark.parametrize("announced", [True, False])
def test_an_answer_over_max_response_bytes_is_refused(service, announced):
    big = json.dumps({"scores": [0.5], "padding": "x" * 5000}).encode()
    service.actions = [big if announced else ("unannounced", big)]
    reward = HttpReward(service.url, max_response_bytes=1000, retries=3, backoff=0)
    with pytest.raises(SrsoupError, match="answered more than max_response_bytes=1000 bytes") as e:
        reward(images(1), ["a"])
    assert "\n" not in str(e.value) and len(service.requests) == 1  # not retried: it would answer the same
    service.actions = [("unannounced", json.dumps({"scores": [0.25]}).encode())]
    assert reward(images(1), ["a"]).tolist() == [0.25]  # a small answer without Content-Length is fine


def test_batches_run_concurrently_and_come_back_in_order(service):
    service.actions = [("sleep", 0.5)] * 4
    reward = HttpReward(service.url, batch_size=2, max_concurrency=4, timeout=10)
    start = time.monotonic()
    scores = reward(images(8), [f"p{i}" for i in range(8)])
    assert time.monotonic() - start < 4 * 0.5 - 0.3  # not one after another
    assert service.most_in_flight >= 2
    torch.testing.assert_close(scores, images(8).mean(dim=(1, 2, 3)))


def test_cache_retries_failed_attempts_and_cost(service, tmp_path):
    cache = tmp_path / "cache"
    service.actions = [503]
    reward = HttpReward(
        service.url, batch_size=2, backoff=0, cost_per_query=0.01, cache_dir=str(cache), max_concurrency=1
    )
    prompts = ["a", "b", "c"]
    first = reward(images(3), prompts)
    assert [len(r["images"]) for r in service.requests] == [2, 2, 1]  # the 503 was retried
    stats = reward.stats()
    assert stats == {
        "cache_hits": 0,
        "paid_queries": 3,
        "requests": 2,
        "retries": 1,
        "failed_attempts": 1,
        "cost": 0.03,
    }
    # The same images and prompts again, from a new reward object (a rerun): nothing is sent, nothing paid.
    again = HttpReward(service.url, batch_size=2, cost_per_query=0.01, cache_dir=str(cache))
    torch.testing.assert_close(again(images(3), prompts), first)
    assert len(service.requests) == 3 and again.stats()["cache_hits"] == 3 and again.stats()["cost"] == 0
    # Another prompt, another URL or other pixels are other queries.
    again(images(3), ["a", "b", "other"])
    assert [len(r["images"]) for r in service.requests[3:]] == [1]
    missing = HttpReward(service.url, nan_policy="keep", cache_dir=str(cache))
    service.actions = [{"scores": [None]}]
    assert math.isnan(missing(images(4)[3:], ["d"])[0])
    service.actions = [{"scores": [0.5]}]
    assert missing(images(4)[3:], ["d"]).tolist() == [0.5]  # a missing score was not cached


def test_run_with_http_reward_end_to_end(service, toy_cfg, tmp_path):
    from srsoup import runner

    cfg = toy_cfg(
        "rewards=http",
        f"rewards.http.url={service.url}",
        "rewards.http.batch_size=4",
        f"rewards.http.cache_dir={tmp_path / 'cache'}",
        "rewards.http.cost_per_query=0.5",
        "sampler.steps=2",
        "guidance.num_candidates=2",
        "eval_rewards=none",
    )
    run_dir = runner.run(cfg, tmp_path / "run")
    summary = json.loads((run_dir / "summary.json").read_text())
    # srsoup, T=2 soup steps, M=2 anchors x K=2 candidates: 4 queries of the http reward; plus 6 final images.
    assert summary["reward_queries_by_reward"] == {"http": 4, "jpeg_compressibility": 4}
    assert sum(len(r["images"]) for r in service.requests) == 4 + 6
    stats = summary["reward_stats"]["http"]
    assert stats["queries"] == 4 and stats["eval_queries"] == 6 and stats["paid_queries"] == 10
    assert stats["cost"] == 5.0 and stats["cache_hits"] == 0 and stats["failed_attempts"] == 0
    assert summary["reward_stats"]["jpeg_compressibility"] == {"queries": 4, "eval_queries": 6}
    (group,) = summary["groups"].values()
    assert group["reward_stats"]["http"]["paid_queries"] == 10
    # The same run into another dir: every score comes from the cache; the method's ledger still counts its
    # queries (it asked for them), the paid calls and the cost are zero.
    again = json.loads((runner.run(cfg, tmp_path / "again") / "summary.json").read_text())
    assert sum(len(r["images"]) for r in service.requests) == 4 + 6
    assert again["reward_queries_by_reward"] == summary["reward_queries_by_reward"]
    stats = again["reward_stats"]["http"]
    assert stats["cache_hits"] == 10 and stats["paid_queries"] == 0 and stats["cost"] == 0
    assert (tmp_path / "again" / "rewards.csv").read_text() == (run_dir / "rewards.csv").read_text()
    rows = (run_dir / "rewards.csv").read_text().splitlines()
    assert rows[0].split(",")[:6] == [
        "prompt_idx",
        "prompt",
        "seed",
        "weight_idx",
        "w_http",
        "w_jpeg_compressibility",
    ]
    assert len(rows) == 1 + 6


def test_secrets_never_reach_the_run_dir(service, toy_model_dir, tmp_path):
    """A token from the environment (the pattern reward/http.yaml suggests) and a literal header value are sent to
    the service, and written nowhere under the run dir: not in summary.json, the fingerprint, or .hydra/."""
    import os
    import subprocess
    import sys

    token, literal = "planted-env-token-8c1d", "planted-literal-key-5e2a"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "srsoup",
            "run",
            f"model.pretrained={toy_model_dir}",
            "rewards=http",
            f"rewards.http.url={service.url}",
            '+rewards.http.headers.Authorization="Bearer ${oc.env:REWARD_TOKEN}"',
            f"+rewards.http.headers.X-Api-Key={literal}",
            "rewards.http.cache_dir=null",
            "guidance=none",
            "sampler.steps=1",
            "eval_rewards=none",
            "progress=false",
            "prompts.texts=[a red circle on a blue background]",
            "hydra.run.dir=run",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "REWARD_TOKEN": token},
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert service.headers and all(h["Authorization"] == f"Bearer {token}" for h in service.headers)
    assert all(h["X-Api-Key"] == literal for h in service.headers)
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert {"summary.json", "config.yaml", "overrides.yaml", "hydra.yaml", "fingerprint.json"} <= {
        p.name for p in files
    }
    leaks = [
        str(p.relative_to(tmp_path))
        for p in files
        if token.encode() in p.read_bytes() or literal.encode() in p.read_bytes()
    ]
    assert leaks == []
    headers = json.loads((tmp_path / "run" / "summary.json").read_text())["config"]["rewards"]["http"]["headers"]
    assert headers == {"Authorization": "Bearer ${oc.env:REWARD_TOKEN}", "X-Api-Key": "<redacted>"}
