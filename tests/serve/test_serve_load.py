"""Many clients at once and hostile inputs: every client gets an HTTP answer (never a reset or a hang),
the queue bound answers 429, and the server keeps serving after each malformed request."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.parse

import openai
from serve_testlib import KEY, call, chat_body

from skillsd_jax.serve import start_server

CLIENTS = 256
MSG = [{"role": "user", "content": "Open the door to the hall."}]


async def _many(url: str, n: int) -> list[str]:
    """`n` concurrent chat requests, one connection each; the outcome of each ("200", "429", ...)."""
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)

    async def one(i: int) -> str:
        try:
            out = await client.chat.completions.create(model="tiny", messages=MSG, temperature=0, max_tokens=4)
            assert out.choices[0].finish_reason in ("stop", "length")
            return "200"
        except openai.APIStatusError as e:
            return str(e.status_code)
        except openai.APIError as e:  # connection reset, timeout: what must not happen
            return type(e).__name__

    try:
        return list(await asyncio.gather(*(one(i) for i in range(n))))
    finally:
        await client.close()


def test_256_concurrent_clients_all_answered(model, tok):
    lock = threading.Lock()
    with start_server(model, tok, served_model_name="tiny", max_batch=16, batch_window_s=0.01, lock=lock) as srv:
        t0 = time.monotonic()
        outcomes = asyncio.run(_many(srv.url, CLIENTS))
        took = time.monotonic() - t0
        stats = srv.stats()
        assert outcomes == ["200"] * CLIENTS, {o: outcomes.count(o) for o in set(outcomes)}
        assert stats["jobs"] == CLIENTS and stats["max_rows_per_call"] > 1
        assert stats["device_calls"] < CLIENTS / 2 and stats["joined_while_busy"] > 0, stats
        print(f"{CLIENTS} clients in {took:.1f}s, {stats['device_calls']} sampler calls")

        # The same crowd while the device is held: the queue bound answers the overflow with 429 at once.
        srv.batcher.max_pending = 32
        results: list = []
        with lock:
            crowd = threading.Thread(target=lambda: results.extend(asyncio.run(_many(srv.url, CLIENTS))))
            crowd.start()
            deadline = time.monotonic() + 120
            while srv.stats()["rejected_busy"] - stats["rejected_busy"] < CLIENTS - 32 - 16:
                assert time.monotonic() < deadline, srv.stats()
                time.sleep(0.01)
        crowd.join(120)
        assert not crowd.is_alive()
        after = srv.stats()
        counts = {o: results.count(o) for o in set(results)}
        assert set(counts) <= {"200", "429"}, counts
        assert counts["429"] == after["rejected_busy"] - stats["rejected_busy"]
        assert counts["200"] == after["jobs"] - stats["jobs"] and 32 <= counts["200"] <= 32 + 16
        assert call(srv.url + "/health", key=None)[0] == 200


def _raw(url: str, data: bytes, *, shut_write: bool = False, timeout: float = 20.0) -> bytes:
    """Sends raw bytes on a fresh connection and returns everything the server sends back until it closes
    the connection or goes quiet after answering."""
    u = urllib.parse.urlparse(url)
    with socket.create_connection((u.hostname, u.port), timeout=timeout) as s:
        s.sendall(data)
        if shut_write:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (socket.timeout, TimeoutError):
                break
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out:
                s.settimeout(0.5)  # the answer has begun: read its body, then stop
        return out


def _status(reply: bytes) -> int:
    assert reply.startswith(b"HTTP/1.1 "), reply[:200]
    return int(reply.split()[1])


def _post(path: str, body: bytes, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def test_malformed_requests_get_4xx_and_server_keeps_serving(server):
    url = server.url
    chat = "/v1/chat/completions"
    cases = {
        "invalid json": (_post(chat, b'{"messages": [')),
        "wrong types": (_post(chat, json.dumps({"messages": "hello", "n": "two"}).encode())),
        "huge max_tokens": (_post(chat, json.dumps(chat_body("hi", max_tokens=10**12)).encode())),
        "huge n": (_post(chat, json.dumps(chat_body("hi", n=10**6)).encode())),
        "non-utf8": (_post(chat, b'{"messages": "\xff\xfe\xfa"}')),
        "not an object": (_post(chat, b"[1, 2, 3]")),
        "8 MB body": (_post(chat, b'{"messages": "' + b"x" * (8 << 20) + b'"}')),
        "garbage request line": b"HELLO THERE\r\n\r\n",
        "bad content-length": (f"POST {chat} HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n").encode(),
    }
    for name, data in cases.items():
        status = _status(_raw(url, data))
        assert 400 <= status < 500, (name, status)
        assert call(url + "/health", key=None)[0] == 200, name
    # A chunked 8 MB body (no Content-Length) is cut off at the limit too.
    head = (f"POST {chat} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nTransfer-Encoding: chunked\r\n\r\n")
    piece = b"x" * (1 << 20)
    chunked = head.encode() + b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(8)) + b"0\r\n\r\n"
    assert _status(_raw(url, chunked)) == 413
    # Half-open: the body never finishes arriving. The server answers 408 once its body timeout passes.
    t0 = time.monotonic()
    stalled = _post(chat, b'{"messages": [', extra="")[:-len(b'{"messages": [')] + b'{"mess'
    stalled = stalled.replace(b"Content-Length: 14", b"Content-Length: 400")
    assert _status(_raw(url, stalled)) == 408 and time.monotonic() - t0 < 15
    # The client closes its sending side mid-body: no answer is owed; the server just drops it.
    reply = _raw(url, stalled, shut_write=True)
    assert reply == b"" or 400 <= _status(reply) < 500, reply[:200]
    status, out = call(url + chat, chat_body("Open the door to the hall.", temperature=0, max_tokens=4))
    assert status == 200 and out["choices"][0]["finish_reason"] in ("stop", "length")
