"""`virsim tui` against the real daemon and real emulators: Textual's pilot drives the app in this
process (pytest-textual-snapshot's SVGs for the main screens), tmux drives `virsim tui` in a real
terminal, and headless Chromium loads `virsim tui --serve`.

Waits are on what the app shows (bounded by a generous hang guard), never on fixed sleeps."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, OptionList, Static, Tabs

from conftest import CLI, ROOT, need_tool, wait_for
from virsim.client import Client
from virsim.tui.app import VirsimApp
from virsim.tui.dialogs import Confirm, Prompt
from virsim.tui.panes import (CHANGED, ConsolePane, MemoryPane, NodesPane, PeripheralsPane, RegistersPane,
                              SourcePane)
from virsim.tui.peripherals import MAPS, decode
from virsim.tui.session import SessionScreen
from virsim.tui.sessions import CreateDialog, SessionsScreen

HELLO = ROOT / "examples" / "hello" / "hello.elf"
FAULT = ROOT / "examples" / "hello" / "fault.elf"
MAILBOX = ROOT / "boards" / "dual-core-mailbox.yaml"
MULTI = {n: ROOT / "examples" / "multinode" / f"{n}.elf" for n in ("cpu0", "cpu1")}
GUARD = 60.0  # s: the hang guard of every wait below (they end as soon as the screen shows it)
SIZE = (160, 50)


def drive(app: VirsimApp, script: Callable[[Pilot[Any]], Awaitable[None]]) -> None:
    async def main() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await script(pilot)
    asyncio.run(main())


async def until(pilot: Pilot[Any], predicate: Callable[[], Any], what: str, timeout: float = GUARD) -> Any:
    app = pilot.app
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except Exception:  # not composed yet, no such row yet: look again
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            screen = app.screen
            state = (getattr(screen, "info", None) and screen.info.state, getattr(screen, "stop", None),
                     [n.message for n in app._notifications])
            raise AssertionError(f"the TUI never showed {what} within {timeout:.0f}s (state, stop, notices: {state})")
        await pilot.pause(0.05)


def table_rows(screen: Any, selector: str) -> list[list[str]]:
    table = screen.query_one(selector, DataTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def console_text(app: VirsimApp) -> str:
    return app.screen.query_one(ConsolePane).text()


def stop_at_first_tick(client: Client, sid: str) -> None:
    """A paused hello session, stopped at a breakpoint on on_tick (before the TUI opens it)."""
    client.debug("break", sid, location="on_tick")
    client.debug("continue", sid)
    wait_for(lambda: client.session("show", sid).stop, timeout=GUARD, what="the breakpoint")


async def open_session(pilot: Pilot[Any], app: VirsimApp) -> SessionScreen:
    screen = await until(pilot, lambda: isinstance(app.screen, SessionScreen) and app.screen.info and app.screen,
                         "the session screen")
    return screen  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------- sessions screen


def test_sessions_table_follows_the_daemon_live(cli: CLI, client: Client, backend: str) -> None:
    sid = cli("session", "create", "-b", "mps2-an385", "-f", str(HELLO), "--backend", backend, "--deterministic",
              "--name", f"live-{backend}").stdout.strip()
    app = VirsimApp()

    async def script(pilot: Pilot[Any]) -> None:
        screen = app.screen
        assert isinstance(screen, SessionsScreen)
        row = await until(pilot, lambda: [r for r in table_rows(screen, "#sessions") if r[0] == sid], "the session")
        assert row[0][1:5] == [f"live-{backend}", "mps2-an385", backend, "running"]
        # virtual time and speed arrive by `clock` events; a second one shows the clock moving
        first = await until(pilot, lambda: table_rows(screen, "#sessions")[0][6], "virtual time")
        await until(pilot, lambda: table_rows(screen, "#sessions")[0][6] not in ("", first), "virtual time moving")
        assert re.fullmatch(r"[\d.]+ [kMG]?", table_rows(screen, "#sessions")[0][7])
        cli("session", "pause", sid)  # from another client: the state event updates the row
        await until(pilot, lambda: table_rows(screen, "#sessions")[0][4] == "paused", "paused")
        cli("session", "delete", sid)
        await until(pilot, lambda: screen.query_one("#sessions", DataTable).row_count == 0, "the row gone")
    drive(app, script)


def test_filter_confirmations_and_actions(cli: CLI, client: Client) -> None:
    a = client.session_create("mps2-an385", HELLO, backend="builtin", name="alpha").id
    b = client.session_create("mps2-an385", HELLO, backend="builtin", name="beta").id
    app = VirsimApp()

    async def script(pilot: Pilot[Any]) -> None:
        screen = app.screen
        await until(pilot, lambda: len(table_rows(screen, "#sessions")) == 2, "both sessions")
        await pilot.press("slash", *"bet", "enter")
        await until(pilot, lambda: [r[0] for r in table_rows(screen, "#sessions")] == [b], "only beta")
        await pilot.press("p")  # pause the selected (beta)
        await until(pilot, lambda: client.session("show", b).state == "paused", "beta paused")
        assert client.session("show", a).state == "running"
        await pilot.press("slash", "escape")  # escape clears the filter
        await until(pilot, lambda: len(table_rows(screen, "#sessions")) == 2, "the filter cleared")
        await pilot.press("d")  # alpha is first (by name): delete asks first
        await until(pilot, lambda: isinstance(app.screen, Confirm), "the confirmation")
        await pilot.press("n")
        await until(pilot, lambda: app.screen is screen, "back on the table")
        assert client.session("show", a).state == "running"
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, Confirm), "the confirmation")
        await pilot.press("y")
        await until(pilot, lambda: [r[0] for r in table_rows(screen, "#sessions")] == [b], "alpha deleted")
        assert client.session("show", a).state == "deleted"
    drive(app, script)


def test_create_dialog_shows_the_daemons_refusal_inline(client: Client) -> None:
    app = VirsimApp()

    async def script(pilot: Pilot[Any]) -> None:
        screen = app.screen
        await until(pilot, lambda: screen.connected, "the connection")
        await pilot.press("n")
        dialog = await until(pilot, lambda: isinstance(app.screen, CreateDialog) and app.screen, "the dialog")
        dialog.query_one("#board", Input).value = "no-such-board"
        dialog.query_one("#firmware", Input).value = str(HELLO)
        await pilot.click("#go")
        error = await until(pilot, lambda: str(dialog.query_one("#error", Static).render()).strip() not in
                            ("", "creating…") and str(dialog.query_one("#error", Static).render()), "an error")
        assert "no-such-board" in error
        assert app.screen is dialog  # still open, nothing created
        assert client.session_list() == []
        dialog.query_one("#board", Input).value = "mps2-an385"
        dialog.query_one("#firmware", Input).value = str(HELLO.parent / "missing.elf")
        dialog.query_one("#firmware", Input).focus()
        await pilot.press("enter")
        await until(pilot, lambda: "missing.elf" in str(dialog.query_one("#error", Static).render()), "firmware error")
        dialog.query_one("#firmware", Input).value = str(HELLO)
        dialog.query_one("#name", Input).value = "made-in-tui"
        dialog.query_one("#name", Input).focus()
        await pilot.press("enter")
        await until(pilot, lambda: app.screen is screen, "the dialog closed")
        await until(pilot, lambda: any(r[1] == "made-in-tui" for r in table_rows(screen, "#sessions")), "the row")
        assert [s.name for s in client.session_list()] == ["made-in-tui"]
    drive(app, script)


def test_daemon_gone_is_shown_and_reconnect_restarts_it(client: Client) -> None:
    sid = client.session_create("mps2-an385", HELLO, backend="builtin", name="doomed").id
    app = VirsimApp()

    async def script(pilot: Pilot[Any]) -> None:
        screen = app.screen
        await until(pilot, lambda: table_rows(screen, "#sessions"), "the session")
        client.stop_daemon()
        await until(pilot, lambda: app.lost, "the loss noticed")
        banner = str(screen.query_one("#banner", Static).render())
        assert "not live" in banner and screen.query_one("#banner").display
        assert table_rows(screen, "#sessions")[0][4].endswith("?")  # never shown as live
        await pilot.press("ctrl+r")
        await until(pilot, lambda: app.lost is None, "the reconnection")
        await until(pilot, lambda: table_rows(screen, "#sessions") and table_rows(screen, "#sessions")[0][0] == sid
                    and not table_rows(screen, "#sessions")[0][4].endswith("?"), "the table live again")
        assert not screen.query_one("#banner").display
    drive(app, script)


# ----------------------------------------------------------------------------------- session screen


def test_a_session_that_dies_is_announced_not_shown_live(client: Client) -> None:
    sid = client.session_create("mps2-an385", HELLO, backend="builtin", name="mortal").id
    pid = client.session("show", sid).pid
    app = VirsimApp(session=sid)

    async def script(pilot: Pilot[Any]) -> None:
        screen = await open_session(pilot, app)
        assert screen.info.state == "running"
        os.kill(pid, 9)  # the emulator dies under it
        await until(pilot, lambda: screen.info.state == "failed", "the failed state")
        status = str(screen.query_one("#status", Static).render())
        assert "failed" in status and "emulator" in status, status  # the state and why, not a live clock
    drive(app, script)


def test_console_shows_output_and_sends_input(client: Client, backend: str) -> None:
    sid = client.session_create("mps2-an385", HELLO, backend=backend).id
    app = VirsimApp(session=sid)

    async def script(pilot: Pilot[Any]) -> None:
        await open_session(pilot, app)
        await until(pilot, lambda: "Hello from virsim on mps2-an385" in console_text(app), "the greeting")
        await pilot.press("t", *"ping tui", "enter")
        await until(pilot, lambda: "echo: ping tui" in console_text(app), "the echo")
        log = client.console_text(sid).decode()
        assert "echo: ping tui" in log
    drive(app, script)


def test_breakpoint_from_source_pane_is_hit_and_registers_highlight_changes(client: Client, backend: str) -> None:
    sid = client.session_create("mps2-an385", HELLO, backend=backend, paused=True).id
    app = VirsimApp(session=sid)
    line = next(n for n, text in enumerate((HELLO.parent / "hello.c").read_text().splitlines(), 1)
                if 'uart_puts("tick ")' in text)

    async def script(pilot: Pilot[Any]) -> None:
        screen = await open_session(pilot, app)
        source = screen.query_one(SourcePane)
        await until(pilot, lambda: source.file and source.file.file.endswith("hello.c"), "hello.c")
        table = source.query_one(DataTable)
        table.focus()
        table.move_cursor(row=line - 1)
        await pilot.press("b")
        await until(pilot, lambda: screen.breakpoint_at("hello.c", line), "the breakpoint listed")
        assert table_rows(screen, "#bp-table")[0][2].startswith("hello.c:")
        await pilot.press("c")
        await until(pilot, lambda: screen.stop and screen.stop.reason == "breakpoint" and source.stop_line == line,
                    "the stop at the line")
        regs = screen.query_one(RegistersPane)
        await until(pilot, lambda: getattr(regs, "changed", None) is not None and regs.stop_seq == screen.stop.seq,
                    "registers of this stop")
        first_seq = screen.stop.seq
        await pilot.press("c")  # the next tick: n (r0) and pc's neighbours changed since the last stop
        await until(pilot, lambda: screen.stop and screen.stop.seq > first_seq and regs.stop_seq == screen.stop.seq,
                    "the second stop's registers")
        assert regs.changed and "pc" not in regs.changed, regs.changed  # same breakpoint, other values
        assert all(regs.cells[name].style == CHANGED for name in regs.changed)
        assert regs.cells["pc"].style != CHANGED
        assert table_rows(screen, "#bp-table")[0][4] == "2"  # hits
        marks = table_rows(screen, "#source-table")[line - 1][0]
        assert "▶" in marks and "●" in marks
        # the same key on the same line clears it
        table.move_cursor(row=line - 1)
        await pilot.press("b")
        await until(pilot, lambda: not screen.breakpoints, "the breakpoint gone")
        assert client.debug("list", sid).breakpoints == []
    drive(app, script)


def test_breakpoints_pane_adds_disables_and_deletes(client: Client) -> None:
    sid = client.session_create("mps2-an385", HELLO, backend="builtin", paused=True).id
    app = VirsimApp(session=sid)

    async def script(pilot: Pilot[Any]) -> None:
        screen = await open_session(pilot, app)
        screen.query_one("#breakpoints DataTable").focus()
        await pilot.press("a")
        await until(pilot, lambda: isinstance(app.screen, Prompt), "the prompt")
        await pilot.press(*"on_tick", "enter")
        await until(pilot, lambda: table_rows(screen, "#bp-table"), "the breakpoint")
        await pilot.press("a")
        await until(pilot, lambda: isinstance(app.screen, Prompt), "the prompt")
        await pilot.press(*"watch tick_count", "enter")
        await until(pilot, lambda: len(table_rows(screen, "#bp-table")) == 2, "the watchpoint")
        assert table_rows(screen, "#bp-table")[1][1] == "watch write"
        screen.query_one("#breakpoints DataTable").focus()
        await pilot.press("space")  # the first row: on_tick
        await until(pilot, lambda: table_rows(screen, "#bp-table")[0][3] == "no", "disabled")
        assert not client.debug("list", sid).breakpoints[0].enabled
        await pilot.press("c")  # runs past the disabled breakpoint to the watchpoint
        await until(pilot, lambda: screen.stop and screen.stop.reason == "watchpoint", "the watchpoint stop")
        await pilot.press("space")
        await until(pilot, lambda: table_rows(screen, "#bp-table")[0][3] == "yes", "enabled again")
        screen.query_one("#breakpoints DataTable").focus()
        await pilot.press("x")
        await until(pilot, lambda: len(table_rows(screen, "#bp-table")) == 1, "deleted")
        assert [b.kind for b in client.debug("list", sid).breakpoints] == ["watchpoint"]
    drive(app, script)


def test_peripheral_view_takes_registers_from_the_boards_svd_file(client: Client, tmp_path: Path) -> None:
    (tmp_path / "uarts.svd").write_bytes((ROOT / "tests" / "data" / "mps2-uarts.svd").read_bytes())
    board = tmp_path / "an385-svd.yaml"
    board.write_text((ROOT / "boards" / "mps2-an385.yaml").read_text()
                     .replace("\n    peripherals:", "\n    svd: uarts.svd\n    peripherals:", 1))
    sid = client.session_create(str(board), HELLO, backend="builtin", paused=True).id
    stop_at_first_tick(client, sid)
    app = VirsimApp(session=sid)

    async def script(pilot: Pilot[Any]) -> None:
        screen = await open_session(pilot, app)
        pane = screen.query_one(PeripheralsPane)
        await until(pilot, lambda: pane.items and pane.items[0].get("svd") == "UART0", "uart0 described by the SVD")
        await until(pilot, lambda: "0x10" in pane.values, "uart0's registers")
        registers = {r.name: r for r in pane.registers(pane.items[0]) or ()}
        assert decode(registers["CONTROL"], pane.values["0x8"], {}) == "TX_ENABLE RX_ENABLE"
        assert decode(registers["BAUD_DIVIDER"], pane.values["0x10"], {}) == "DIV=0x10"
        assert "0x0" not in pane.values  # RXTXDATA has a readAction: never read
        assert "SVD" in str(pane.border_subtitle)
        timer = [ph["id"] for ph in pane.items].index("timer0")  # not in the SVD: virsim's own map
        pane.query_one(DataTable).move_cursor(row=timer)
        await until(pilot, lambda: pane.selected()["id"] == "timer0" and "0x8" in pane.values and
                    "virsim" in str(pane.border_subtitle), "timer0 from virsim's map")
    drive(app, script)


def test_command_palette_reaches_the_screens_actions(client: Client) -> None:
    sid = client.session_create("mps2-an385", HELLO, backend="builtin", paused=True).id
    app = VirsimApp(session=sid)

    async def script(pilot: Pilot[Any]) -> None:
        screen = await open_session(pilot, app)
        assert screen.query_one("#memory").display
        await pilot.press("ctrl+p")
        await until(pilot, lambda: app.screen.__class__.__name__ == "CommandPalette", "the palette")
        await pilot.press(*"Show/hide memory")
        options = app.screen.query_one(OptionList)
        await until(pilot, lambda: options.option_count and "memory" in str(options.get_option_at_index(0).prompt),
                    "the action found")
        await pilot.press("enter")
        await until(pilot, lambda: app.screen is screen and not screen.query_one("#memory").display,
                    "the memory pane hidden")
        await pilot.press("6")  # the same action by its key
        await until(pilot, lambda: screen.query_one("#memory").display, "the memory pane back")
    drive(app, script)


def test_memory_pane_reads_and_edits(client: Client) -> None:
    sid = client.session_create("mps2-an385", HELLO, backend="builtin", paused=True).id
    app = VirsimApp(session=sid)

    async def script(pilot: Pilot[Any]) -> None:
        screen = await open_session(pilot, app)
        mem = screen.query_one(MemoryPane)
        mem.query_one(Input).focus()
        await pilot.press(*"tick_count", "enter")
        await until(pilot, lambda: "tick_count @ 0x" in str(mem.query_one("#mem-dump", Static).render()), "the dump")
        address = int(str(mem.query_one("#mem-dump", Static).render()).split("@ ")[1].split()[0], 16)
        assert app.focused is mem.query_one("#mem-dump")
        await pilot.press("e")
        prompt = await until(pilot, lambda: isinstance(app.screen, Prompt) and app.screen, "the prompt")
        prompt.query_one(Input).value = f"{address:#x} 0x12345678"
        await pilot.press("enter")
        await until(pilot, lambda: "78 56 34 12" in str(mem.query_one("#mem-dump", Static).render()), "the new word")
        assert client.debug("mem", sid, address=hex(address), size=4).data == "78563412"
    drive(app, script)


def test_peripheral_view_decodes_the_uart_field_by_field(client: Client, backend: str) -> None:
    sid = client.session_create("mps2-an385", HELLO, backend=backend, paused=True).id
    stop_at_first_tick(client, sid)  # uart_init has run by the first tick
    app = VirsimApp(session=sid)

    async def script(pilot: Pilot[Any]) -> None:
        screen = await open_session(pilot, app)
        pane = screen.query_one(PeripheralsPane)
        await until(pilot, lambda: [ph["id"] for ph in pane.items][:1] == ["uart0"], "the board's peripherals")
        assert "nvic" in [ph["id"] for ph in pane.items]
        await until(pilot, lambda: "0x8" in pane.values and "0x10" in pane.values, "uart0's registers")
        assert pane.values["0x8"] & 3 == 3 and pane.values["0x10"] == 16  # CTRL = TXEN | RXEN, BAUDDIV 16
        assert decode(MAPS["cmsdk-uart"][2], pane.values["0x8"], {}) == "TXEN RXEN"
        assert "0x0" not in pane.values  # DATA is never read: it would take a received byte
        table = pane.query_one(DataTable)
        table.move_cursor(row=[ph["id"] for ph in pane.items].index("nvic"))
        await until(pilot, lambda: "0x300" in pane.values, "the NVIC's registers")
    drive(app, script)


@pytest.mark.parametrize("backend", ["qemu", "builtin"], indirect=True)  # the backends with Capability.FAULTS
def test_fault_stop_shows_the_decoded_fault(client: Client, backend: str) -> None:
    sid = client.session_create("mps2-an385", FAULT, backend=backend, paused=True).id
    app = VirsimApp(session=sid)

    async def script(pilot: Pilot[Any]) -> None:
        screen = await open_session(pilot, app)
        await pilot.press("c")
        regs = screen.query_one(RegistersPane)
        text = await until(pilot, lambda: "FAULT" in str(regs.query_one("#fault", Static).render()) and
                           str(regs.query_one("#fault", Static).render()), "the fault")
        assert "HardFault" in text and "DIVBYZERO" in text and "divide (fault.c:16)" in text
        stack = str(screen.query_one("#stack Static").render())
        assert "#0" in stack
    drive(app, script)


def test_multi_node_board_has_a_tab_per_node(client: Client) -> None:
    sid = client.session_create(str(MAILBOX), None, node_firmware={n: str(p) for n, p in MULTI.items()},
                                backend="builtin").id
    app = VirsimApp(session=sid)

    async def script(pilot: Pilot[Any]) -> None:
        screen = await open_session(pilot, app)
        tabs = screen.query_one(Tabs)
        await until(pilot, lambda: tabs.display and tabs.tab_count == 2, "a tab per node")
        nodes = screen.query_one(NodesPane)
        await until(pilot, lambda: getattr(nodes, "shown", None) == ["cpu0", "cpu1"], "both nodes")
        assert "quantum" in str(nodes.border_subtitle)
        await until(pilot, lambda: "[cpu0]" in console_text(app) and "[cpu1]" in console_text(app),
                    "the merged console")
        tabs.action_next_tab()
        await until(pilot, lambda: screen.node == "cpu1", "cpu1 selected")
    drive(app, script)


# ------------------------------------------------------------------------------------ real terminal


def test_virsim_tui_in_a_real_terminal_under_tmux(client: Client, home: Path) -> None:
    """The real driver: keys typed into tmux reach the app, its screen reaches tmux's pane."""
    need_tool("tmux")
    sid = client.session_create("mps2-an385", HELLO, backend="builtin", name="tmuxed").id
    server = f"virsim-test-{os.getpid()}"
    tmux = ["tmux", "-L", server]
    command = f"VIRSIM_HOME={home} {sys.executable} -m virsim tui {sid}"
    subprocess.run([*tmux, "new-session", "-d", "-s", "tui", "-x", "160", "-y", "50", command], check=True,
                   env={k: v for k, v in os.environ.items() if k != "TMUX"})
    try:
        def screen() -> str:
            return subprocess.run([*tmux, "capture-pane", "-p", "-t", "tui"], capture_output=True, text=True).stdout

        wait_for(lambda: "Hello from virsim" in screen() and "source: hello.c" in screen(), timeout=GUARD,
                 what="the session screen in tmux")
        assert "Continue" in screen().splitlines()[-1]  # the footer: run control, the source pane has the keys
        subprocess.run([*tmux, "send-keys", "-t", "tui", "t"], check=True)  # focus the console's input line
        wait_for(lambda: "Raw keys" in screen().splitlines()[-1], timeout=GUARD, what="the console's keys")
        subprocess.run([*tmux, "send-keys", "-t", "tui", "-l", "ping tmux"], check=True)
        wait_for(lambda: "ping tmux  " in screen(), timeout=GUARD, what="the typed text in the input line")
        subprocess.run([*tmux, "send-keys", "-t", "tui", "Enter"], check=True)
        wait_for(lambda: "echo: ping tmux" in screen(), timeout=GUARD, what="the echo in tmux")
        subprocess.run([*tmux, "send-keys", "-t", "tui", "Escape"], check=True)  # leave the input line
        wait_for(lambda: "Continue" in screen().splitlines()[-1], timeout=GUARD, what="run control keys again")
        subprocess.run([*tmux, "send-keys", "-t", "tui", "?"], check=True)  # the key map
        wait_for(lambda: "Continue" in screen() and "Stepi" in screen(), timeout=GUARD, what="the key map")
        subprocess.run([*tmux, "send-keys", "-t", "tui", "C-q"], check=True)
        wait_for(lambda: subprocess.run([*tmux, "has-session", "-t", "tui"], capture_output=True).returncode != 0,
                 timeout=GUARD, what="virsim tui to quit")
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)
    assert client.session("show", sid).state == "running"  # quitting the TUI leaves sessions alone


def test_tui_without_a_terminal_says_to_use_serve(cli: CLI) -> None:
    err = cli.json("tui", check=2)
    assert err["code"] == "INVALID_INPUT" and "--serve" in err["error"]


# ------------------------------------------------------------------------------------ in a browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_shows_the_console_in_headless_chromium(client: Client, home: Path, tmp_path: Path) -> None:
    """`virsim tui --serve`, loaded by headless Chromium: the page connects and the terminal stream
    Chromium receives (read through the DevTools protocol) carries the firmware's console text."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        need_tool("chromium")
    import aiohttp

    sid = client.session_create("mps2-an385", HELLO, backend="builtin", name="served").id
    port, devtools = free_port(), free_port()
    env = {**os.environ, "VIRSIM_HOME": str(home)}
    serve = subprocess.Popen([sys.executable, "-m", "virsim", "tui", "--serve", "--port", str(port), sid], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    chrome = subprocess.Popen([str(browser), "--headless=new", "--no-sandbox", "--disable-gpu",
                               f"--remote-debugging-port={devtools}", f"--user-data-dir={tmp_path / 'profile'}",
                               "--window-size=1600,1000", "about:blank"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def listening(p: int) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", p)) == 0

    async def browse() -> tuple[str, bytes]:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{devtools}/json/list") as r:
                page = next(t for t in await r.json() if t["type"] == "page")
            async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                ids = iter(range(1, 1_000_000))

                async def call(method: str, **params: Any) -> None:
                    await ws.send_json({"id": next(ids), "method": method, "params": params})
                await call("Network.enable")
                await call("Page.navigate", url=f"http://127.0.0.1:{port}/")
                received = b""
                deadline = time.monotonic() + GUARD

                def shown() -> str:
                    text = received.decode("utf-8", "replace").replace("\xa0", " ")
                    return re.sub(r"\x1b\[[0-9;?$]*[a-zA-Z]", "", text)
                while not ("Hello from virsim" in shown() and sid in shown() and "source: hello.c" in shown()):
                    if time.monotonic() > deadline:
                        raise AssertionError(f"Chromium never received the session screen; got {shown()[-3000:]}")
                    msg = await ws.receive_json(timeout=GUARD)
                    if msg.get("method") == "Network.webSocketFrameReceived":
                        frame = msg["params"]["response"]
                        data = frame["payloadData"]
                        received += base64.b64decode(data) if frame["opcode"] == 2 else data.encode()
                shot_id = next(ids)
                await ws.send_json({"id": shot_id, "method": "Page.captureScreenshot", "params": {}})
                while True:
                    msg = await ws.receive_json(timeout=GUARD)
                    if msg.get("id") == shot_id:
                        return received.decode("utf-8", "replace"), base64.b64decode(msg["result"]["data"])

    try:
        wait_for(lambda: listening(port) and listening(devtools), timeout=GUARD, what="the server and Chromium")
        stream, png = asyncio.run(browse())
        assert "tick 1" in stream  # console lines after the greeting
        assert png.startswith(b"\x89PNG") and len(png) > 20_000  # a drawn page, not a blank one
        (tmp_path / "served.png").write_bytes(png)
    finally:
        for proc in (chrome, serve):
            try:
                os.killpg(proc.pid, 15)
            except ProcessLookupError:
                pass
            proc.wait(15)


# ------------------------------------------------------------------------------------ SVG snapshots
# The main screens with deterministic firmware output (built-in engine, stopped at a breakpoint).
# What differs from run to run by design is masked first: session ids and uptimes.
# Update after a deliberate change: pytest tests/test_tui.py -k snapshot --snapshot-update


def _mask_ids(app: VirsimApp, sid: str) -> None:
    screen = app.screen
    if isinstance(screen, SessionsScreen):
        table = screen.query_one("#sessions", DataTable)
        table.update_cell(sid, "ID", "########")
        table.update_cell(sid, "UPTIME", "0:00")
    else:
        screen.title = str(screen.title).replace(sid, "########")


def test_snapshot_sessions_screen(client: Client, snap_compare: Any) -> None:
    sid = client.session_create("mps2-an385", HELLO, backend="builtin", paused=True, deterministic=True,
                                name="snapshot").id
    app = VirsimApp()

    async def ready(pilot: Pilot[Any]) -> None:
        screen = app.screen
        await until(pilot, lambda: table_rows(screen, "#sessions"), "the session")
        screen._tick_uptime = lambda: None  # type: ignore[method-assign]
        _mask_ids(app, sid)
        await pilot.pause()
    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


def test_snapshot_session_screen_at_a_breakpoint(client: Client, snap_compare: Any) -> None:
    sid = client.session_create("mps2-an385", HELLO, backend="builtin", paused=True, deterministic=True,
                                name="snapshot").id
    stop_at_first_tick(client, sid)
    app = VirsimApp(session=sid)

    async def ready(pilot: Pilot[Any]) -> None:
        screen = await open_session(pilot, app)
        regs = screen.query_one(RegistersPane)
        await until(pilot, lambda: regs.stop_seq == screen.stop.seq and screen.query_one(SourcePane).stop_line and
                    table_rows(screen, "#bp-table") and "Hello from virsim" in console_text(app), "the panes")
        await until(pilot, lambda: "0x10" in screen.query_one(PeripheralsPane).values, "uart0's registers")
        await app.workers.wait_for_complete()
        _mask_ids(app, sid)
        await pilot.pause()
    assert snap_compare(app, terminal_size=SIZE, run_before=ready)
