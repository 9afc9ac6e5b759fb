"""Renode nodes of multi-node boards: every Renode node of a board in one Renode emulation, in
lockstep with built-in and QEMU nodes through virsim's barrier (VirsimRenode.cs `Lockstep`) — the
same merged console, byte for byte, as when every node runs on the built-in engine. Skipped with
the reason where Renode is not installed."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest
import yaml

from conftest import ROOT, CLI, session_progress, wait_console, wait_for, wait_progress
from test_supervision import kill_daemon
from test_sync import FIRMWARE, MAILBOX_OUTPUT, TRI, TRI_OUTPUT, mailbox_args, tri_args
from virsim.client import Client
from virsim.paths import get_paths

pytestmark = pytest.mark.usefixtures("renode")

PING_PONG = ROOT / "boards" / "uart-ping-pong.yaml"
PING_PONG_FIRMWARE = {n: ROOT / "examples" / "multinode" / f"{n}.elf" for n in ("ping", "pong")}


def run_log(cli: CLI, tmp_path: Path, args: list[str], backend: str, text: str, name: str) -> bytes:
    log = tmp_path / f"{name}.log"
    result = cli.json("run", *args, "--backend", backend, "-e", text, "--serial-log", str(log))
    assert result["status"] == "passed", result
    return log.read_bytes()


def upto(output: bytes, text: bytes) -> bytes:
    """What a run's serial log holds: the console up to the deciding byte."""
    return output[:output.index(text) + len(text)]


@pytest.mark.parametrize("backend", ["renode", "cpu1=renode", "cpu0=renode"])
def test_mailbox_on_renode_nodes_is_the_built_in_engines_output(cli: CLI, tmp_path: Path, backend: str) -> None:
    # Both nodes in one Renode emulation (IRQs through the barrier, the mailbox a shared file), or one
    # Renode node beside a built-in one: the same bytes as two built-in nodes (tests/test_sync.py).
    log = run_log(cli, tmp_path, mailbox_args(), backend, "cpu0: done", backend)
    assert log == upto(MAILBOX_OUTPUT, b"[cpu0] cpu0: done")
    if backend == "renode":  # and again: deterministic
        assert run_log(cli, tmp_path, mailbox_args(), backend, "cpu0: done", "again") == log


def test_uart_link_through_a_renode_hub_and_through_the_barrier(cli: CLI, tmp_path: Path) -> None:
    args = ["--board", str(PING_PONG)] + [a for n, p in PING_PONG_FIRMWARE.items() for a in ("--firmware", f"{n}={p}")]
    logs = {b: run_log(cli, tmp_path, args, b, "pong 5", b.replace("=", "-"))
            for b in ("builtin", "renode", "pong=renode")}  # a hub between two Renode nodes; the barrier to a built-in one
    assert logs["builtin"].endswith(b"pong 5")
    assert logs["renode"] == logs["builtin"] and logs["pong=renode"] == logs["builtin"]


def test_three_emulators_in_one_lockstep(cli: CLI, tmp_path: Path) -> None:
    # cpu0 on the built-in engine, cpu1 on Renode, cpu2 on QEMU: the board's own output.
    log = run_log(cli, tmp_path, tri_args(), "cpu1=renode", "cpu0: done", "tri")
    assert log == upto(TRI_OUTPUT, b"[cpu0] cpu0: done")


def test_a_session_of_renode_nodes(cli: CLI, client: Client) -> None:
    sid = cli.json("session", "create", *mailbox_args(), "--backend", "renode")["id"]
    wait_console(client, sid, b"[cpu0] cpu0: done\n")
    assert client.console_text(sid) == MAILBOX_OUTPUT
    shown = cli.json("session", "show", sid)
    nodes = shown["nodes"]
    assert [(n["node"], n["backend"], n["state"]) for n in nodes] == [("cpu0", "renode", "running"),
                                                                     ("cpu1", "renode", "running")]
    assert nodes[0]["pid"] == nodes[1]["pid"]  # one Renode emulation
    assert all(n["virtual_ns"] > 0 and n["instructions"] > 0 for n in nodes)
    assert cli("console", sid, "--node", "cpu1").stdout.startswith("cpu1: ready\ncpu1: got 1 (1)\n")
    # pause holds the emulation at its next barrier: no node's clock moves
    cli.json("session", "pause", sid)
    first = cli.json("session", "show", sid)
    time.sleep(0.3)
    second = cli.json("session", "show", sid)
    assert second["state"] == "paused" and all(n["state"] == "paused" for n in second["nodes"])
    assert [n["virtual_ns"] for n in first["nodes"]] == [n["virtual_ns"] for n in second["nodes"]]
    cli.json("session", "resume", sid)
    wait_progress(lambda: cli.json("session", "show", sid)["nodes"][0]["virtual_ns"] > second["nodes"][0]["virtual_ns"],
                  progress=session_progress(client, sid), what="the Renode nodes to run on")
    # Renode dies: the session fails naming a node, and no process of it is left
    jail = psutil.Process(nodes[0]["pid"])
    pids = [jail.pid] + [c.pid for c in jail.children(recursive=True)]
    renode = next(p for p in jail.children(recursive=True) if "mono" in p.name() or "Renode" in " ".join(p.cmdline()))
    os.kill(renode.pid, signal.SIGKILL)
    wait_for(lambda: client.session("show", sid).state == "failed")
    assert "node cpu0" in (client.session("show", sid).error or "")
    wait_for(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids))


def test_daemon_restart_reattaches_the_renode_emulation(cli: CLI, client: Client, tmp_path: Path) -> None:
    """Two Renode nodes and a QEMU node print "tick N" for ever; the daemon is killed and a new one
    re-attaches the emulation and the QEMU node and continues the merged console, nothing lost or
    written twice (the extension kept writing the Renode nodes' logs meanwhile)."""
    hello = ROOT / "examples" / "hello" / "hello.elf"
    data = yaml.safe_load(TRI.read_text())
    data["interconnect"] = {}
    board = tmp_path / "three-hellos.yaml"
    board.write_text(yaml.safe_dump(data))
    args = ["--board", str(board)] + [a for n in ("cpu0", "cpu1", "cpu2") for a in ("--firmware", f"{n}={hello}")]
    sid = cli.json("session", "create", *args, "--quantum", "1ms", "--backend", "cpu0=renode,cpu1=renode")["id"]
    wait_console(client, sid, b"] tick 2\n")
    pids = [n["pid"] for n in cli.json("session", "show", sid)["nodes"]]
    kill_daemon(client)
    shown = cli.json("session", "show", sid)  # a new daemon
    assert shown["state"] == "running" and [n["pid"] for n in shown["nodes"]] == pids
    c = Client(get_paths()).connect()
    wait_console(c, sid, b"] tick 6\n")
    merged = c.console_text(sid)
    for node in (b"cpu0", b"cpu1", b"cpu2"):
        ticks = [ln for ln in merged.splitlines() if ln.startswith(b"[" + node + b"] tick ")]
        assert ticks == [b"[%s] tick %d" % (node, n) for n in range(1, len(ticks) + 1)]  # none lost, none twice
    cli("session", "delete", sid)
    wait_for(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids))
    c.close()


def test_what_renode_nodes_refuse(cli: CLI) -> None:
    mmio = ROOT / "boards" / "mmio-bridge.yaml"
    args = ["--board", str(mmio), "--firmware", f"cpu0={ROOT / 'examples' / 'multinode' / 'remote.elf'}",
            "--firmware", f"cpu1={FIRMWARE['cpu1']}"]
    err = cli.json("session", "create", *args, "--backend", "cpu1=renode", check=5)
    assert err["code"] == "NOT_SUPPORTED" and "renode node (cpu1)" in err["error"] and "mmio_map" in err["error"]
    err = cli.json("session", "create", *mailbox_args(), "--backend", "cpu1=renode", "--quantum", "100us",
                   "--sync", "step", check=5)
    assert "step mode counts instructions" in err["error"]
    err = cli.json("session", "create", *mailbox_args(), "--backend", "cpu9=renode", check=2)
    assert err["code"] == "INVALID_INPUT" and "no node 'cpu9'" in err["error"]
    sid = cli.json("session", "create", *mailbox_args(), "--backend", "renode", "--paused")["id"]
    err = cli.json("debug", "break", sid, "--node", "cpu1", "IRQ7_Handler", check=5)
    assert err["code"] == "NOT_SUPPORTED" and "renode" in err["error"]
