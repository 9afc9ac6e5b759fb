"""The daemon under malformed input: N random frames, and what they did to it.

Frames are drawn from a seeded generator (the same run every time): random bytes, JSON of random
shape, and envelopes of every request type (but daemon.stop) with random payloads: deep nesting,
huge and out-of-range integers, NaN, lone surrogates, NUL in paths, long strings, wildcards in
session references. Prints the counts of replies by error code, INTERNAL replies (target 0), the
daemon's RSS before and after, frames without a reply, and tracebacks in the daemon log (target 0).
Then 200 connections with a 64-character user each, and the RSS after them. Figures, no pass/fail.

    python benchmarks/fuzz_daemon.py [--frames 10000] [--seed 1]
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import time

import psutil
import zmq

from virsim import protocol as p
from virsim.client import Client, daemon_pid
from virsim.private import PrivateDaemon

TYPES = sorted(set(p.REQUESTS) - {"daemon.stop"})
FIELDS = sorted({name for req, _ in p.REQUESTS.values() for name in req.model_fields})
NASTY_STRINGS = ["", "___", "%", "a" * 50_000, "\udcff", "\ud800x", "/tmp/a\x00b", "../../etc/passwd", "\x00" * 64,
                 "/dev/zero", "mps2-an385", "💥" * 100]
NASTY_NUMBERS = [0, -1, 2**31, 2**63, 2**64, -(2**70), 10**30, 1e308, float("inf"), 0.5]


def value(rng: random.Random, depth: int = 0):  # type: ignore[no-untyped-def]
    kind = rng.randrange(8 if depth < 6 else 5)
    if kind == 0:
        return rng.choice(NASTY_STRINGS)
    if kind == 1:
        return rng.choice(NASTY_NUMBERS)
    if kind == 2:
        return rng.choice([None, True, False])
    if kind == 3:
        return "".join(chr(rng.randrange(1, 0x3000)) for _ in range(rng.randrange(20)))
    if kind == 4:
        return rng.randrange(-1000, 1000)
    if kind == 5:
        return [value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 6:
        return {rng.choice(FIELDS): value(rng, depth + 1) for _ in range(rng.randrange(4))}
    return json.loads("[" * 200 + "]" * 200) if rng.random() < 0.5 else {"x": [[[[[[[[[1]]]]]]]]]}


def frame(rng: random.Random) -> bytes:
    kind = rng.random()
    if kind < 0.1:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
    if kind < 0.15:
        return b"[" * rng.randrange(1000, 100_000)
    payload = {rng.choice(FIELDS + ["session"]): value(rng) for _ in range(rng.randrange(6))}
    env = {"v": p.PROTOCOL_VERSION, "id": str(rng.randrange(10**6)), "type": rng.choice(TYPES), "payload": payload}
    if rng.random() < 0.05:
        env["deadline"] = rng.choice(NASTY_NUMBERS)
    text = json.dumps(env, allow_nan=True)
    if rng.random() < 0.05:
        text = text.replace('"payload": {', '"payload": {"n": NaN, ', 1)
    return text.encode("utf-8", "surrogatepass")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    home = PrivateDaemon("vfz-")
    try:
        client = Client(home.paths, lifeline=True).connect()
        daemon = psutil.Process(daemon_pid(home.paths))
        rss_before = daemon.memory_info().rss
        codes: collections.Counter[str] = collections.Counter()
        lost = 0
        started = time.monotonic()
        for _ in range(args.frames):
            try:
                reply = client.send_raw([frame(rng)], timeout=30)
            except Exception:  # no reply (ZeroMQ dropped it) or the daemon died: counted
                lost += 1
                client.close()
                continue
            codes[reply["payload"].get("code", "ok") if reply["type"] == "error" else "ok"] += 1
            for s in client.session_list():
                client.session("delete", s.id)
        took = time.monotonic() - started
        rss_fuzzed = daemon.memory_info().rss
        ctx = zmq.Context.instance()
        for _ in range(200):
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(f"ipc://{home.paths.control_socket}")
            s.send(json.dumps({"v": p.PROTOCOL_VERSION, "id": "c", "type": "hello",
                               "payload": {"user": "u" * 64}}).encode())
            s.poll(10_000)
            s.close()
        rss_connections = daemon.memory_info().rss
        tracebacks = home.paths.daemon_log.read_text(errors="replace").count("Traceback")
        alive = daemon.is_running()
        print(f"frames: {args.frames} in {took:.1f} s ({args.frames / took:.0f}/s), seed {args.seed}")
        for code, n in codes.most_common():
            print(f"  {code:<24} {n}")
        print(f"INTERNAL replies: {codes.get('INTERNAL', 0)}   frames without a reply: {lost}")
        print(f"daemon RSS: {rss_before / 1e6:.1f} MB before, {rss_fuzzed / 1e6:.1f} MB after the frames "
              f"(+{(rss_fuzzed - rss_before) / 1e6:.1f}), {rss_connections / 1e6:.1f} MB after 200 connections "
              f"(+{(rss_connections - rss_fuzzed) / 1e6:.1f})")
        print(f"tracebacks in the daemon log: {tracebacks}   daemon alive: {alive}")
    finally:
        home.close()


if __name__ == "__main__":
    main()
