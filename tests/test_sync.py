"""Multi-node lockstep (virsim.sync): the shared-memory barrier, the dual-core mailbox example on
two built-in engine processes, and the three-node board mixing built-in and QEMU nodes — the same
combined output on every rerun."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from conftest import ROOT, VIRTUAL_S, cli_debug_stop, session_progress, wait_console, wait_for, wait_progress
from virsim.client import Client
from virsim.paths import get_paths
from virsim.board import BoardConfig, resolve_board
from virsim.errors import NotSupported
from virsim.firmware import inspect
from virsim.sync import lockstep
from virsim.sync.system import Plan, System, merged_console, plan, quantum_cycles

BOARD = ROOT / "boards" / "dual-core-mailbox.yaml"
FIRMWARE = {n: ROOT / "examples" / "multinode" / f"{n}.elf" for n in ("cpu0", "cpu1")}
MAILBOX_OUTPUT = b"[cpu1] cpu1: ready\n[cpu0] cpu0: start\n" + b"".join(
    b"[cpu1] cpu1: got %d (%d)\n[cpu0] cpu0: sent %d\n" % (n, n * n, n) for n in range(1, 11)) + b"[cpu0] cpu0: done\n"


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="vst-", dir="/tmp"))  # short: Unix socket paths
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_barrier_delivers_events_in_virtual_time_order(short_tmp: Path) -> None:
    seg = short_tmp / "seg"
    lockstep.create(seg, 2, 1000)
    got: dict[int, list[list[lockstep.Event]]] = {0: [], 1: []}

    def node(index: int) -> None:
        lock = lockstep.Lockstep(seg, index)
        for q in range(50):
            other = 1 - index
            # two events per quantum, produced out of time order: delivered sorted by cycle
            events = [(q * 1000 + 900, other, lockstep.KIND_IRQ, 7, 1), (q * 1000 + 100, other, lockstep.KIND_UART, 0, q)]
            if index == 0:
                time.sleep(0.0005 * (q % 3))  # host timing must not matter
            got[index].append(lock.barrier(events))
        lock.close()

    threads = [threading.Thread(target=node, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    for index in (0, 1):
        assert len(got[index]) == 50
        for q, inbox in enumerate(got[index]):
            assert [(e.cycle, e.kind, e.source) for e in inbox] == [
                (q * 1000 + 100, lockstep.KIND_UART, 1 - index), (q * 1000 + 900, lockstep.KIND_IRQ, 1 - index)]


def logged(path: Path) -> bytes:
    """A node's console log so far (nothing before the node created it)."""
    return path.read_bytes() if path.exists() else b""


def wait_nodes(p: Plan, done: Callable[[], Any], what: str, virtual_s: float = VIRTUAL_S) -> None:
    """Wait for `done` while the nodes of `p` run with no daemon (tests/conftest.py: waiting).
    Progress: the nodes' console logs and the cycles they reached at their barriers; it fails once
    every node is `virtual_s` seconds of the board's time in."""
    lock = lockstep.Lockstep(p.segment, 0)

    def progress() -> tuple[Any, ...]:
        reached = [lock.reached(n.index) for n in p.nodes]
        ran = min(cycles / n.spec.node.processor.frequency for cycles, n in zip(reached, p.nodes))
        if ran > virtual_s:
            raise AssertionError(f"the nodes ran {ran:.2f}s of virtual time, more than the {virtual_s:g}s allowed")
        return tuple(reached), tuple(len(logged(n.spec.console_log)) for n in p.nodes)
    try:
        wait_progress(done, progress=progress, what=what)
    finally:
        lock.close()


def run_system(board: BoardConfig, images: dict[str, Any], tmp: Path, until: dict[str, bytes],
               mode: str = "timeslice", quantum: str = "100us") -> tuple[bytes, list[dict[str, int]]]:
    """Run `board` until each node in `until` printed its text; the merged console and every
    node's barrier statistics. No node process is left behind."""
    p = plan(board, images, tmp / "work", tmp / "run", quantum_cycles(board, mode, quantum), mode=mode)
    system = System(p)
    try:
        system.start()
        logs = {n.spec.console_log: until[n.node] for n in p.nodes if n.node in until}
        wait_nodes(p, lambda: all(end in logged(log) for log, end in logs.items()), f"{board.system_id} output")
        lock = lockstep.Lockstep(p.segment, 0)
        stats = [lock.stats(i) for i in range(lock.nodes)]
        lock.close()
        pids = [pid for inst in system.instances.values() for pid in inst.pids()]
    finally:
        system.stop()
    assert pids and not [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    return merged_console(p), stats


def run_mailbox(tmp: Path, mode: str = "timeslice", quantum: str = "100us") -> bytes:
    board, _ = resolve_board(str(BOARD))
    images = {n: inspect(path) for n, path in FIRMWARE.items()}
    return run_system(board, images, tmp, {"cpu0": b"cpu0: done"}, mode, quantum)[0]


def test_dual_core_mailbox_is_the_same_on_every_rerun(short_tmp: Path) -> None:
    runs = [run_mailbox(short_tmp / f"run{i}") for i in range(5)]
    assert runs[0] == MAILBOX_OUTPUT  # doorbells, shared memory and both consoles, in virtual-time order
    assert all(r == runs[0] for r in runs[1:])


@pytest.mark.parametrize("mode, quantum", [("step", "200"), ("event", "100us")])
def test_other_modes_give_each_node_the_same_output(short_tmp: Path, mode: str, quantum: str) -> None:
    merged = run_mailbox(short_tmp, mode=mode, quantum=quantum)
    assert merged == run_mailbox(short_tmp / "again", mode=mode, quantum=quantum)  # deterministic too
    for node in (b"cpu0", b"cpu1"):
        mine = [ln for ln in merged.splitlines() if ln.startswith(b"[" + node + b"]")]
        assert mine == [ln for ln in MAILBOX_OUTPUT.splitlines() if ln.startswith(b"[" + node + b"]")]


def test_quantum_parsing() -> None:
    board, _ = resolve_board(str(BOARD))
    assert quantum_cycles(board, "timeslice", "100us") == 2500  # 25 MHz
    assert quantum_cycles(board, "timeslice", "1ms") == 25_000
    assert quantum_cycles(board, "step", "1") == 1
    with pytest.raises(NotSupported):
        quantum_cycles(board, "step", "100us")
    with pytest.raises(NotSupported):
        quantum_cycles(board, "chaos", "1")


# ------------------------------------------------------------------------- through the daemon

def mailbox_args() -> list[str]:
    return ["--board", str(BOARD)] + [a for n, path in FIRMWARE.items() for a in ("--firmware", f"{n}={path}")]


def serial_logs(cli, tmp_path: Path, board: Path, firmware: dict[str, Path], text: str,  # noqa: ANN001
                runs: int = 2) -> list[bytes]:
    """`virsim run` of a multi-node board `runs` times until `text`: each run's serial log."""
    args = [a for n, path in firmware.items() for a in ("--firmware", f"{n}={path}")]
    logs = []
    for i in range(runs):
        log = tmp_path / f"{board.stem}-{i}.log"
        result = cli.json("run", "--board", str(board), *args, "-e", text, "--serial-log", str(log))
        assert result["status"] == "passed"
        logs.append(log.read_bytes())
    return logs


def test_board_list_and_session_show_name_the_multi_node_backend_alike(cli) -> None:  # noqa: ANN001
    listed = {r["name"]: r for r in cli.json("board", "list")}
    assert listed["mps2-an385"]["backend"] == "qemu" and listed["mps2-an385"]["node_backends"] == {"cpu0": "qemu"}
    assert listed["tri-node-mixed"]["backend"] == "system"
    assert set(listed["tri-node-mixed"]["node_backends"].values()) == {"builtin", "qemu"}
    row, board = listed["dual-core-mailbox"], cli.json("board", "show", str(BOARD))
    sid = cli.json("session", "create", *mailbox_args(), "--paused")["id"]
    shown = cli.json("session", "show", sid)
    assert row["backend"] == board["backend"] == shown["backend"] == "system"
    assert [s["backend"] for s in cli.json("session", "list")] == ["system"]
    assert row["node_backends"] == {n["node"]: n["backend"] for n in shown["nodes"]} == {"cpu0": "builtin",
                                                                                         "cpu1": "builtin"}
    assert " system " in cli("board", "list").stdout.splitlines()[1 + sorted(listed).index("dual-core-mailbox")]


def kill_one_node(client, sid: str, pids: list[int], index: int, name: str) -> None:  # noqa: ANN001
    """Kill node `index` from outside: the session fails naming it and every node process ends."""
    os.kill(pids[index], signal.SIGKILL)
    wait_for(lambda: client.session("show", sid).state == "failed")
    assert f"node {name}" in (client.session("show", sid).error or "")
    wait_for(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids))


def test_multi_node_session(cli, client) -> None:  # noqa: ANN001
    sid = cli.json("session", "create", *mailbox_args(), "--sync", "timeslice", "--quantum", "100us")["id"]
    wait_console(client, sid, b"[cpu0] cpu0: done\n")
    assert client.console_text(sid) == MAILBOX_OUTPUT  # one console: both nodes, in virtual-time order
    shown = cli.json("session", "show", sid)
    assert shown["backend"] == "system" and shown["state"] == "running"
    assert [n["node"] for n in shown["nodes"]] == ["cpu0", "cpu1"]
    assert all(n["state"] == "running" and n["backend"] == "builtin" and n["pid"] for n in shown["nodes"])
    assert shown["sync"]["mode"] == "timeslice" and shown["sync"]["quantum_cycles"] == 2500
    assert shown["sync"]["quanta"] > 0 and shown["sync"]["barrier_wait_s"] >= 0
    assert all(n["barrier_wait_s"] >= 0 for n in shown["nodes"])
    text = cli("session", "show", sid).stdout
    assert "quanta run" in text and "at barriers" in text
    only_cpu1 = cli("console", sid, "--node", "cpu1").stdout.encode()
    assert only_cpu1 == b"".join(ln[len(b"[cpu1] "):] + b"\n" for ln in MAILBOX_OUTPUT.splitlines()
                                 if ln.startswith(b"[cpu1] "))
    assert "no node 'cpu9'" in cli("console", sid, "--node", "cpu9", check=2).stderr
    cli.json("session", "pause", sid)
    paused = cli.json("session", "show", sid)
    assert paused["state"] == "paused" and all(n["state"] == "paused" for n in paused["nodes"])
    # a node that dies fails the whole session, naming it; the other node is stopped too
    cli.json("session", "resume", sid)
    # reset: every node again from its first instruction, together; the log keeps the first run
    assert cli.json("session", "reset", sid)["state"] == "running"
    wait_progress(lambda: client.console_text(sid).count(b"[cpu0] cpu0: done\n") == 2,
                  progress=session_progress(client, sid), what="the mailbox output again")
    assert client.console_text(sid) == MAILBOX_OUTPUT * 2
    fresh = cli.json("session", "show", sid)["nodes"]
    assert {n["pid"] for n in fresh}.isdisjoint(n["pid"] for n in paused["nodes"])  # new node processes
    kill_one_node(client, sid, [n["pid"] for n in fresh], 1, "cpu1")


def test_multi_node_refusals(cli) -> None:  # noqa: ANN001
    err = cli.json("session", "create", "--board", str(BOARD), "--firmware", f"cpu0={FIRMWARE['cpu0']}", check=2)
    assert "node cpu1" in err["error"] and "--firmware cpu1=IMAGE" in err["error"]
    err = cli.json("session", "create", *mailbox_args(), "--firmware", f"cpu7={FIRMWARE['cpu0']}", check=2)
    assert "no node 'cpu7'" in err["error"]
    err = cli.json("session", "create", "--board", str(BOARD), "--firmware", str(FIRMWARE["cpu0"]), check=2)
    assert "NODE=IMAGE" in err["error"]
    err = cli.json("session", "create", *mailbox_args(), "--backend", "qemu", check=5)  # every node on QEMU
    assert err["code"] == "NOT_SUPPORTED" and "qemu.machine_ram" in err["error"]
    err = cli.json("session", "create", *mailbox_args(), "--backend", "cpu1=nosuch", check=2)
    assert err["code"] == "INVALID_INPUT" and "no backend 'nosuch'" in err["error"]
    err = cli.json("session", "create", *mailbox_args(), "--record", check=5)
    assert err["code"] == "NOT_SUPPORTED" and "multi-node" in err["error"]
    err = cli.json("session", "create", *mailbox_args(), "--sync", "step", "--quantum", "1ms", check=5)
    assert "step mode counts instructions" in err["error"]
    assert cli.json("session", "list") == []


def test_run_on_a_multi_node_board_is_byte_identical_five_times(cli, tmp_path: Path) -> None:  # noqa: ANN001
    logs = serial_logs(cli, tmp_path, BOARD, FIRMWARE, "cpu1: got 10", runs=5)
    # the log ends at the deciding byte (docs/ci.md)
    assert logs[0].endswith(b"[cpu1] cpu1: got 10") and all(log == logs[0] for log in logs)


PING_PONG = ROOT / "boards" / "uart-ping-pong.yaml"
PING_PONG_OUTPUT = b"[ping] ping: start\n[pong] pong: ready\n" + b"".join(
    b"[pong] pong: got ping %d\n[ping] ping: got pong %d\n" % (n, n) for n in range(1, 6)) + \
    b"[pong] pong: done\n[ping] ping: done"
# Lines are ordered by their first byte: "ping: got " is printed before ping waits for the answer,
# so each "got pong N" line comes before anything pong prints after answering — "pong: done" too.


def test_uart_ping_pong_over_a_uart_link(cli, tmp_path: Path) -> None:  # noqa: ANN001
    logs = serial_logs(cli, tmp_path, PING_PONG, {n: ROOT / "examples" / "multinode" / f"{n}.elf"
                                                 for n in ("ping", "pong")}, "ping: done")
    assert logs[0] == logs[1] == PING_PONG_OUTPUT  # every byte crossed the link, in virtual-time order


MMIO_BRIDGE = ROOT / "boards" / "mmio-bridge.yaml"
MMIO_BRIDGE_OUTPUT = (b"[cpu0] cpu0: start\n[cpu1] cpu1: ready\n[cpu1] hello from cpu0, through mmio_map\n"
                      + b"".join(b"[cpu0] cpu0: cpu1 gpio0 dataout = %d\n" % (n * 17) for n in (1, 2, 3))
                      + b"[cpu0] cpu0: done")


def test_mmio_map_onto_another_nodes_peripherals(cli, tmp_path: Path) -> None:  # noqa: ANN001
    """cpu0 writes cpu1's UART (cpu1's console prints it) and writes and reads back cpu1's GPIO
    output register, through mmio_map windows: the same bytes every run."""
    logs = serial_logs(cli, tmp_path, MMIO_BRIDGE, {"cpu0": ROOT / "examples" / "multinode" / "remote.elf",
                                                    "cpu1": FIRMWARE["cpu1"]}, "cpu0: done")
    assert logs[0] == logs[1] == MMIO_BRIDGE_OUTPUT
    shown = {(r["kind"], r["builtin"]) for r in cli.json("board", "show", str(MMIO_BRIDGE))["interconnect_support"]}
    assert shown == {("mmio_map", "yes (writes land at the barrier, reads stall to the next)")}


def test_a_forwarded_read_stalls_the_reader_to_the_barrier(short_tmp: Path) -> None:
    """The read instruction ends at the barrier that brought the value: the reading node's clock
    stays on quantum boundaries' grid afterwards, and both nodes reach the same barrier count."""
    board, _ = resolve_board(str(MMIO_BRIDGE))
    images = {"cpu0": inspect(ROOT / "examples" / "multinode" / "remote.elf"), "cpu1": inspect(FIRMWARE["cpu1"])}
    p = plan(board, images, short_tmp / "work", short_tmp / "run", 2500)
    assert p.nodes[0].spec.lockstep["mmio_out"] == [[0x50000000, 0x1000, 1, 0x40004000],
                                                     [0x50001000, 0x1000, 1, 0x40010000]]
    system = System(p)
    try:
        system.start()
        wait_nodes(p, lambda: b"cpu0: done" in logged(p.nodes[0].spec.console_log), "cpu0: done")
        system.pause()
        time.sleep(0.2)
        lock = lockstep.Lockstep(p.segment, 0)
        arrived = [lock.arrived(i) for i in (0, 1)]
        reached = [lock.reached(i) for i in (0, 1)]
        lock.close()
    finally:
        system.stop()
    assert abs(arrived[0] - arrived[1]) <= 1 and all(r % 2500 == 0 for r in reached)


def test_mailbox_through_mmio_map_instead_of_shared_memory(short_tmp: Path) -> None:
    """cpu1's 0x20300000 page forwarded to cpu0's memory there (mmio_map) works like the shared
    region: the same firmware gives the same output."""
    text = BOARD.read_text().replace(
        "  shared_memory:\n    # Carved out of each node's data RAM: the same 4 KiB at the same address on both.\n"
        "    - {id: mailbox, size: 4K, mappings: {cpu0: 0x20300000, cpu1: 0x20300000}}\n",
        "  mmio_map:\n    - {node: cpu1, address: 0x20300000, size: 4K, target: cpu0, target_address: 0x20300000}\n")
    assert "mmio_map" in text
    board_file = short_tmp / "mmio.yaml"
    board_file.write_text(text)
    board, _ = resolve_board(str(board_file))
    p = plan(board, {n: inspect(path) for n, path in FIRMWARE.items()}, short_tmp / "w", short_tmp / "r", 2500)
    assert [m.name for m in p.nodes[0].spec.shared_memory] == ["mmio_map[0]"]  # the target maps it too
    system = System(p)
    try:
        system.start()
        wait_nodes(p, lambda: b"cpu0: done" in logged(p.nodes[0].spec.console_log), "cpu0: done")
    finally:
        system.stop()
    assert merged_console(p) == MAILBOX_OUTPUT
    board.interconnect.mmio_map[0].address = 0x20300800  # the window is mapped in whole pages
    with pytest.raises(NotSupported, match="multiples of 4K"):
        plan(board, {}, short_tmp / "w2", short_tmp / "r2", 2500)


def test_daemon_restart_reattaches_every_node(cli, client, tmp_path: Path) -> None:  # noqa: ANN001
    """A multi-node session outlives its daemon: the nodes (two built-in, one QEMU) keep meeting at
    their barriers, and the new daemon re-attaches them and continues the merged console without
    losing or repeating a line. A node gone meanwhile makes the session lost, the others stopped."""
    from test_supervision import kill_daemon

    hello = ROOT / "examples" / "hello" / "hello.elf"  # prints "tick N" forever
    data = yaml.safe_load(TRI.read_text())
    data["interconnect"] = {}
    board = tmp_path / "three-hellos.yaml"
    board.write_text(yaml.safe_dump(data))
    args = ["--board", str(board)] + [a for n in ("cpu0", "cpu1", "cpu2") for a in ("--firmware", f"{n}={hello}")]
    sid = cli.json("session", "create", *args, "--quantum", "1ms")["id"]
    wait_console(client, sid, b"] tick 3\n")
    pids = [n["pid"] for n in cli.json("session", "show", sid)["nodes"]]
    kill_daemon(client)
    shown = cli.json("session", "show", sid)  # a new daemon
    assert shown["state"] == "running" and [n["pid"] for n in shown["nodes"]] == pids
    before = max(n["virtual_ns"] for n in shown["nodes"])
    c = Client(get_paths()).connect()
    wait_progress(lambda: min(n["virtual_ns"] for n in cli.json("session", "show", sid)["nodes"]) > before,
                  progress=session_progress(c, sid), what="every node to run on")
    wait_console(c, sid, b"] tick 9\n")
    merged = c.console_text(sid)
    for node in (b"cpu0", b"cpu1", b"cpu2"):
        ticks = [ln for ln in merged.splitlines() if ln.startswith(b"[" + node + b"] tick ")]
        assert ticks == [b"[%s] tick %d" % (node, n) for n in range(1, len(ticks) + 1)]  # none lost, none twice
    # one node dies while no daemon watches: the session is lost and the other nodes are stopped
    kill_daemon(c)
    os.kill(pids[1], signal.SIGKILL)
    assert cli.json("session", "show", sid)["state"] == "lost"
    wait_for(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids))
    c.close()


def test_board_show_says_what_each_backend_runs(cli) -> None:  # noqa: ANN001
    shown = cli.json("board", "show", str(BOARD))
    kinds = {(r["kind"], r["builtin"], r["qemu"]) for r in shown["interconnect_support"]}
    assert kinds == {("shared_memory", "yes", "inside qemu.machine_ram (shared as a whole)"),
                     ("irq_route", "yes", "as target (from a built-in GPIO); not as source")}
    pp = {(r["kind"], r["qemu"]) for r in cli.json("board", "show", str(PING_PONG))["interconnect_support"]}
    assert pp == {("uart_link", "yes (a byte per quantum into QEMU's receiver)")}


# ------------------------------------------------------------------ QEMU nodes (the vsync plugin)

TRI = ROOT / "boards" / "tri-node-mixed.yaml"
TRI_FIRMWARE = {n: ROOT / "examples" / "multinode" / f"{n}.elf" for n in ("cpu0", "cpu1", "cpu2")}
# cpu2 (QEMU) prints each message a little before cpu1 does: QEMU's console bytes are stamped with
# the start of the quantum they were printed in, the built-in engine's with their exact cycle.
TRI_OUTPUT = b"[cpu2] cpu2: ready\n[cpu1] cpu1: ready\n[cpu0] cpu0: start\n" + b"".join(
    b"[cpu2] cpu2: got %d (%d)\n[cpu1] cpu1: got %d (%d)\n[cpu0] cpu0: sent %d\n" % (n, n * n, n, n * n, n)
    for n in range(1, 11)) + b"[cpu0] cpu0: done\n"


def run_tri(tmp: Path, mode: str = "timeslice", quantum: str = "100us") -> tuple[bytes, dict[str, int]]:
    board, _ = resolve_board(str(TRI))
    images = {n: inspect(path) for n, path in TRI_FIRMWARE.items()}
    # Both ends, then nothing more is printed.
    merged, stats = run_system(board, images, tmp, {"cpu0": b"cpu0: done\n", "cpu2": b"cpu2: got 10 (100)\n"},
                               mode, quantum)
    return merged, stats[2]


def test_three_nodes_on_two_emulators_are_the_same_on_every_rerun(short_tmp: Path) -> None:
    """Two built-in nodes and one QEMU node: shared memory (QEMU's file-backed RAM), a doorbell
    interrupt raised in QEMU by a built-in node's GPIO, one console in virtual-time order."""
    runs = [run_tri(short_tmp / f"run{i}") for i in range(5)]
    merged = [r[0] for r in runs]
    assert merged[0] == TRI_OUTPUT and all(m == merged[0] for m in merged[1:])
    for _, stats in runs:
        # The skew bound: QEMU meets every barrier less than one instruction (2^5 ns at 25 MHz)
        # past the quantum's end; it ran the firmware (instructions counted) and waited for the others.
        assert 0 <= stats["skew_max_ns"] < 32 and stats["instructions"] > 1000 and stats["wait_ns"] > 0


@pytest.mark.parametrize("mode, quantum", [("step", "1000"), ("event", "100us")])
def test_qemu_node_in_the_other_sync_modes(short_tmp: Path, mode: str, quantum: str) -> None:
    merged, stats = run_tri(short_tmp, mode=mode, quantum=quantum)
    assert merged == run_tri(short_tmp / "again", mode=mode, quantum=quantum)[0]
    for node in (b"cpu0", b"cpu1", b"cpu2"):
        mine = [ln for ln in merged.splitlines() if ln.startswith(b"[" + node + b"]")]
        assert mine == [ln for ln in TRI_OUTPUT.splitlines() if ln.startswith(b"[" + node + b"]")]


def _tri_board(**changes: object) -> BoardConfig:
    data = yaml.safe_load(TRI.read_text())
    for path, value in changes.items():
        where = data
        keys = path.split("/")
        for key in keys[:-1]:
            where = where[int(key)] if isinstance(where, list) else where[key]
        where[keys[-1]] = value
    return BoardConfig.model_validate(data)


def test_two_qemu_nodes_share_their_machine_ram(short_tmp: Path) -> None:
    """Two QEMU nodes in one shared region: one file is both machines' RAM (at the same offset),
    and the built-in node's window maps that file too; both QEMU nodes get cpu0's first message."""
    data = yaml.safe_load(TRI.read_text())
    data["nodes"][1] = dict(data["nodes"][2], id="cpu1")
    data["interconnect"]["shared_memory"][0]["mappings"]["cpu1"] = 0x21000000
    data["interconnect"]["irq_routes"] = [{"source": "cpu0.gpio0.0", "target": t, "irq": 7} for t in ("cpu1", "cpu2")]
    board = BoardConfig.model_validate(data)
    image = {"cpu0": inspect(TRI_FIRMWARE["cpu0"]), "cpu1": inspect(TRI_FIRMWARE["cpu2"]),
             "cpu2": inspect(TRI_FIRMWARE["cpu2"])}
    p = plan(board, image, short_tmp / "work", short_tmp / "run", 2500)
    files = {n.node: {(m.path, m.offset) for m in n.spec.shared_memory} for n in p.nodes}
    assert files["cpu0"] == files["cpu1"] == files["cpu2"] and len(p.files) == 1
    assert list(p.files.values()) == [16 << 20]  # the QEMU machines' whole RAM
    system = System(p)
    try:
        system.start()
        logs = [p.nodes[i].spec.console_log for i in (1, 2)]
        wait_nodes(p, lambda: all(b"cpu2: got 1 (1)" in logged(log) for log in logs), "both QEMU nodes' first message")
    finally:
        system.stop()  # cpu0 waits for an answer no QEMU node can give (no GPIO): stopped here


def run_ping_pong(tmp: Path, on_qemu: tuple[str, ...]) -> bytes:
    data = yaml.safe_load(PING_PONG.read_text())
    for node in data["nodes"]:
        if node["id"] in on_qemu:
            node.update(backend="qemu", qemu={"machine": "mps2-an385"})
    images = {n: inspect(ROOT / "examples" / "multinode" / f"{n}.elf") for n in ("ping", "pong")}
    return run_system(BoardConfig.model_validate(data), images, tmp, {"ping": b"ping: done\n", "pong": b"pong: done\n"},
                      quantum="2500")[0]


@pytest.mark.parametrize("on_qemu", [("pong",), ("ping", "pong")])
def test_uart_link_with_qemu_nodes(short_tmp: Path, on_qemu: tuple[str, ...]) -> None:
    """A UART link into and out of QEMU: QEMU's linked UART writes a file chardev the plugin reads
    at each barrier, and takes the other node's bytes through its receiver, one per quantum."""
    merged = run_ping_pong(short_tmp / "a", on_qemu)
    assert merged == run_ping_pong(short_tmp / "b", on_qemu)
    for node in (b"ping", b"pong"):
        mine = [ln for ln in merged.splitlines() if ln.startswith(b"[" + node + b"]")]
        assert mine == [ln for ln in PING_PONG_OUTPUT.splitlines() if ln.startswith(b"[" + node + b"]")]


def test_a_qemu_node_held_at_a_barrier_still_ends_on_sigterm(short_tmp: Path) -> None:
    """With no STOP from virsim (its daemon gone, say), a QEMU node waiting at a barrier for nodes
    that never come still quits on SIGTERM: the plugin's wait gives up when QEMU is told to."""
    board, _ = resolve_board(str(TRI))
    p = plan(board, {n: inspect(path) for n, path in TRI_FIRMWARE.items()}, short_tmp / "w", short_tmp / "r", 2500)
    system = System(p)
    try:
        system.start()
        wait_nodes(p, lambda: b"cpu2: ready" in logged(p.nodes[2].spec.console_log), "cpu2: ready")
        system.pause()  # every node holds; the QEMU one inside its plugin's barrier wait
        pid = system.instances["cpu2"].pid
        assert pid is not None
        time.sleep(0.2)
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie")
    finally:
        system.stop()


def test_what_qemu_nodes_refuse(short_tmp: Path) -> None:
    images = {n: inspect(path) for n, path in TRI_FIRMWARE.items()}
    cases = [
        # the mailbox outside QEMU's file-backed machine RAM
        (_tri_board(**{"interconnect/shared_memory/0/mappings": {"cpu0": 0x20300000, "cpu2": 0x20300000}}),
         "inside its machine RAM"),
        # no machine_ram: QEMU cannot share memory on this machine
        (_tri_board(**{"nodes/2/qemu": {"machine": "mps2-an385"}}), "no qemu.machine_ram"),
        # a QEMU node as the source of an interrupt route
        (_tri_board(**{"nodes/2/peripherals": [
            {"id": "uart0", "type": "cmsdk-uart", "address": 0x40004000, "irq": 0, "console": True},
            {"id": "gpio0", "type": "cmsdk-gpio", "address": 0x40010000, "irq": 6}],
            "interconnect/irq_routes": [{"source": "cpu2.gpio0.0", "target": "cpu0", "irq": 7}]}),
         "a QEMU node cannot raise"),
    ]
    for board, message in cases:
        with pytest.raises(NotSupported, match=message):
            plan(board, images, short_tmp / "w", short_tmp / "r", 2500)


def tri_args() -> list[str]:
    return ["--board", str(TRI)] + [a for n, path in TRI_FIRMWARE.items() for a in ("--firmware", f"{n}={path}")]


def test_run_and_session_with_a_qemu_node(cli, client, tmp_path: Path) -> None:  # noqa: ANN001
    log = tmp_path / "tri.log"
    result = cli.json("run", *tri_args(), "--expect-text", "cpu2: got 10", "--serial-log", str(log))
    assert result["status"] == "passed" and log.read_bytes() == TRI_OUTPUT[:TRI_OUTPUT.index(b"cpu2: got 10") + 12]

    sid = cli.json("session", "create", *tri_args())["id"]
    wait_console(client, sid, b"[cpu0] cpu0: done\n")
    shown = cli.json("session", "show", sid)
    assert [(n["node"], n["backend"], n["state"]) for n in shown["nodes"]] == [
        ("cpu0", "builtin", "running"), ("cpu1", "builtin", "running"), ("cpu2", "qemu", "running")]
    qemu = shown["nodes"][2]
    assert qemu["instructions"] > 0 and qemu["virtual_ns"] > 0 and 0 <= qemu["skew_max_ns"] < 32
    assert cli("console", sid, "--node", "cpu2").stdout.startswith("cpu2: ready\ncpu2: got 1 (1)\n")
    # pause holds every node, the QEMU one at its next barrier: no node's clock moves
    cli.json("session", "pause", sid)
    first = cli.json("session", "show", sid)
    time.sleep(0.3)
    second = cli.json("session", "show", sid)
    assert first["state"] == "paused" and all(n["state"] == "paused" for n in second["nodes"])
    assert [n["virtual_ns"] for n in first["nodes"]] == [n["virtual_ns"] for n in second["nodes"]]
    cli.json("session", "resume", sid)
    wait_progress(lambda: cli.json("session", "show", sid)["nodes"][2]["virtual_ns"] > second["nodes"][2]["virtual_ns"],
                  progress=session_progress(client, sid), what="the QEMU node to run on")
    # the QEMU node dies: the session fails naming it, the built-in nodes are stopped
    kill_one_node(client, sid, [n["pid"] for n in shown["nodes"]], 2, "cpu2")


def test_debug_one_node_halts_the_system(cli, client) -> None:  # noqa: ANN001
    """`debug … --node`: a breakpoint on cpu1 stops cpu1, and cpu0 waits for it at the next barrier
    (its clock stops within one quantum of cpu1's); continuing lets both run on."""
    sid = cli.json("session", "create", *mailbox_args(), "--quantum", "100us", "--paused")["id"]
    bp = cli.json("debug", "break", sid, "--node", "cpu1", "IRQ7_Handler")
    assert bp["resolved"] and "IRQ7_Handler" in bp["resolved"]
    stop = cli_debug_stop(cli, client, sid, "continue", "--node", "cpu1")["stop"]
    assert stop["reason"] == "breakpoint" and stop["function"] == "IRQ7_Handler"
    first = {n["node"]: n for n in cli.json("session", "show", sid)["nodes"]}
    time.sleep(0.3)
    second = {n["node"]: n for n in cli.json("session", "show", sid)["nodes"]}
    assert first["cpu0"]["virtual_ns"] == second["cpu0"]["virtual_ns"]  # cpu0 holds at its barrier
    assert abs(second["cpu0"]["virtual_ns"] - second["cpu1"]["virtual_ns"]) <= 100_000  # within one quantum
    seq = cli.json("debug", "mem", sid, "--node", "cpu1", "0x20300000", "4")["data"]  # the mailbox's seq
    assert bytes.fromhex(seq) == (1).to_bytes(4, "little")
    assert b"cpu1: got 1" not in client.console_text(sid)  # halted before it printed
    cli.json("debug", "delete", sid, "--all")
    cli.json("debug", "continue", sid, "--node", "cpu1")
    wait_console(client, sid, b"[cpu0] cpu0: done\n")
    assert client.console_text(sid) == MAILBOX_OUTPUT  # the stop changed nothing the firmware sees
    # the debugger moves to another node once no breakpoints are left behind
    assert cli.json("debug", "where", sid, "--node", "cpu0", "--peek")["pc"] is not None
    cli.json("debug", "break", sid, "--node", "cpu0", "main")
    err = cli.json("debug", "where", sid, "--node", "cpu1", "--peek", check=4)
    assert "breakpoints set" in err["error"]
    err = cli.json("debug", "where", sid, "--node", "cpu9", check=3)
    assert "no node 'cpu9'" in err["error"]


def test_debug_refuses_a_qemu_node(cli, client) -> None:  # noqa: ANN001
    sid = cli.json("session", "create", *tri_args())["id"]
    err = cli.json("debug", "break", sid, "--node", "cpu2", "main", check=5)
    assert err["code"] == "NOT_SUPPORTED" and "cpu2" in err["error"]
