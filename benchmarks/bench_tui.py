"""The TUI under console floods: keystroke-to-screen latency while a console streams, against the
same with a quiet console, and whether the console pane got every byte the log got.

    python benchmarks/bench_tui.py                  # 8 s per stream, 40 keystrokes each
    python benchmarks/bench_tui.py --seconds 4 --keys 20

Streams, each watched by the TUI (headless, Textual's pilot, on the session's screen):
- `firmware flood`: examples/virt-a15/flood.elf on QEMU prints lines as fast as QEMU's PL011 takes
  them (QEMU writes each UART byte with its own syscall: ~0.15 MB/s on a 2-core machine).
- `1 MB/s`: no emulator here prints that fast, so a feeder appends 1 MB/s of lines to a paused
  QEMU session's console log, where QEMU's chardev would write them; the daemon tails and
  publishes them like any console output.
- `quiet`: the same paused session, nothing written.

Runs in a private VIRSIM_HOME and removes it; stops its daemon and emulators at the end."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from common import private_daemon

ROOT = Path(__file__).resolve().parents[1]
FLOOD = ROOT / "examples" / "virt-a15" / "flood.elf"
HELLO = ROOT / "examples" / "hello" / "hello.elf"


async def keystrokes(app: Any, n: int) -> list[float]:
    """ms from a key entering the app (as the terminal driver hands it over) to the first screen
    refresh after the console's input line shows it."""
    from textual import events
    from textual.widgets import Input

    field = app.screen.query_one("#console-input", Input)
    field.focus()
    await asyncio.sleep(0.1)
    out = []
    for i in range(n):
        key = "abcdefghij"[i % 10]
        drawn = asyncio.get_running_loop().create_future()
        t0 = time.perf_counter()
        event = events.Key(key, key)
        event.set_sender(app)
        app._driver.send_message(event)
        while not field.value.endswith(key):
            if time.perf_counter() - t0 > 30:
                raise SystemExit(f"bench: key {key!r} never reached the input line")
            await asyncio.sleep(0.0005)
        app.call_after_refresh(lambda: drawn.done() or drawn.set_result(time.perf_counter()))
        out.append((await asyncio.wait_for(drawn, 30) - t0) * 1000)
        if len(field.value) > 50:
            field.value = ""
        await asyncio.sleep(0.05)  # a typist's pace, not a burst
    return out


def feeder(log: Path, rate: float, stop: threading.Event) -> None:
    line = b"%09d the quick brown fox jumps over the lazy dog, 1 MB/s\n"
    n = 0
    with log.open("ab", buffering=0) as f:
        start = time.perf_counter()
        sent = 0
        while not stop.is_set():
            due = int((time.perf_counter() - start) * rate)
            chunk = bytearray()
            while sent + len(chunk) < due:
                chunk += line % n
                n += 1
            if chunk:
                f.write(chunk)
                sent += len(chunk)
            time.sleep(0.005)


def watch(client: Any, sid: str, seconds: float, keys: int, start_stream: Any, stop_stream: Any) -> dict[str, Any]:
    from virsim.tui.app import VirsimApp
    from virsim.tui.panes import ConsolePane

    result: dict[str, Any] = {}

    async def run() -> None:
        app = VirsimApp(session=sid)
        async with app.run_test(size=(160, 50)) as pilot:
            while not (app.screen.__class__.__name__ == "SessionScreen" and app.screen.info):
                await pilot.pause(0.05)
            pane = app.screen.query_one(ConsolePane)
            while pane.pos is None:
                await pilot.pause(0.05)
            start_stream()
            begin = client.session("show", sid).console_bytes
            t0 = time.perf_counter()
            result["latency"] = await keystrokes(app, keys)
            while time.perf_counter() - t0 < seconds:
                await pilot.pause(0.1)
            stop_stream()
            elapsed = time.perf_counter() - t0
            end = client.session("show", sid).console_bytes
            drain = time.perf_counter() + 30
            while (pane.pos is None or pane.pos < end) and time.perf_counter() < drain:
                await pilot.pause(0.05)
            result.update(rate=(end - begin) / elapsed, logged=end - begin, missing=end - (pane.pos or 0),
                          skipped=pane.skipped, thinned=pane.thinned,
                          kept=pane.query_one("#console-log").line_count)
    asyncio.run(run())
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--keys", type=int, default=40)
    args = ap.parse_args()
    with private_daemon() as client:
        flood = client.session_create("virt-a15", FLOOD, backend="qemu", name="flood", paused=True)
        fed = client.session_create("mps2-an385", HELLO, backend="qemu", name="fed", paused=True)
        stop = threading.Event()
        thread: list[threading.Thread] = []

        def start_feeder() -> None:
            thread.append(threading.Thread(target=feeder, args=(Path(fed.console_log), 1e6, stop), daemon=True))
            thread[0].start()

        def stop_feeder() -> None:
            stop.set()
            thread[0].join()
        runs = {
            "firmware flood (QEMU PL011)": watch(client, flood.id, args.seconds, args.keys,
                                                 lambda: client.session("resume", flood.id),
                                                 lambda: client.session("pause", flood.id)),
            "1 MB/s into the console log": watch(client, fed.id, args.seconds, args.keys, start_feeder, stop_feeder),
            "quiet": watch(client, fed.id, 0, args.keys, lambda: None, lambda: None),
        }
        quiet = statistics.median(runs["quiet"]["latency"])
        print(f"{'stream':<30} {'MB/s':>6} {'key->screen ms: median':>23} {'p95':>6} {'max':>6} {'÷ quiet':>8} "
              f"{'bytes logged':>13} {'missing':>8} {'skipped':>8} {'thinned lines':>14}")
        for name, r in runs.items():
            lat = sorted(r["latency"])
            med = statistics.median(lat)
            print(f"{name:<30} {r['rate'] / 1e6:>6.2f} {med:>23.1f} {lat[int(len(lat) * 0.95) - 1]:>6.1f} "
                  f"{lat[-1]:>6.1f} {med / quiet:>8.2f} {r['logged']:>13} {r['missing']:>8} {r['skipped']:>8} "
                  f"{r['thinned']:>14}")


if __name__ == "__main__":
    main()
