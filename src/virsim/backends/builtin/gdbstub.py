"""The GDB remote serial protocol server of the built-in engine.

Speaks what gdb-multiarch (and virsim's own debugger, which drives gdb) needs for a Cortex-M target:
qSupported, no-ack mode, the target description (M-profile core registers plus msp/psp/primask/
basepri/faultmask/control), g/G/p/P, m/M/X, Z0-Z4/z0-z4, c/s/C/S, vCont, `?`, Ctrl-C, D, k and
the monitor commands an IDE sends to an OpenOCD-like server (cortex-debug: `monitor halt`,
`monitor reset halt`; `_monitor()`), plus `monitor info`. One client at a time on a Unix socket
(optionally TCP); like QEMU, the CPU halts when a debugger connects. The engine's loop calls `on_readable()` and `report_stop()`; the
stub calls back into the engine (`Target`) to halt, resume and step.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Protocol

from unicorn import UcError
from unicorn.arm_const import UC_ARM_REG_CONTROL, UC_ARM_REG_PC

from virsim.backends.builtin.armv7m import CONTROL_FPCA, CONTROL_SFPA

from virsim.backends.builtin.machine import REGISTERS, Machine

_CORE = 17  # r0..pc, xpsr: the org.gnu.gdb.arm.m-profile feature


def _reg_xml(names: list[tuple[str, int]], start: int) -> str:
    out = []
    for i, (name, _) in enumerate(names):
        typ = ' type="data_ptr"' if name in ("sp", "msp", "psp") else (' type="code_ptr"' if name == "pc" else "")
        out.append(f'<reg name="{name}" bitsize="32" regnum="{start + i}"{typ} group="general"/>')
    return "".join(out)


TARGET_XML = ('<?xml version="1.0"?><!DOCTYPE target SYSTEM "gdb-target.dtd"><target version="1.0">'
              "<architecture>arm</architecture>"
              f'<feature name="org.gnu.gdb.arm.m-profile">{_reg_xml(REGISTERS[:_CORE], 0)}</feature>'
              f'<feature name="org.gnu.gdb.arm.m-system">{_reg_xml(REGISTERS[_CORE:], _CORE)}</feature>'
              "</target>")


class Target(Protocol):
    machine: Machine

    def halt(self, reason: str) -> None: ...

    def resume(self, step: bool = False) -> None: ...

    def is_running(self) -> bool: ...

    def monitor(self, command: str) -> str | None: ...

    def reset(self) -> None: ...

    def debugger_attached(self, attached: bool) -> None: ...

    def state_written(self) -> None: ...

    def reverse(self, step: bool) -> StopInfo: ...


@dataclass
class StopInfo:
    signal: int = 5
    extra: str = ""

    def packet(self) -> str:
        return f"T{self.signal:02x}thread:01;{self.extra}"


def _checksum(body: bytes) -> bytes:
    return b"%02x" % (sum(body) & 0xFF)


def _escape(data: bytes) -> bytes:
    out = bytearray()
    for b in data:
        if b in b"#$}*":
            out += bytes((0x7D, b ^ 0x20))
        else:
            out.append(b)
    return bytes(out)


def _unescape(data: bytes) -> bytes:
    out = bytearray()
    it = iter(data)
    for b in it:
        out.append(next(it) ^ 0x20 if b == 0x7D else b)
    return bytes(out)


class GdbStub:
    def __init__(self, target: Target, listener: socket.socket) -> None:
        self.target = target
        self.listener = listener
        listener.setblocking(False)
        self.conn: socket.socket | None = None
        self.buf = b""
        self.ack = True
        self.waiting = False  # gdb resumed the target and waits for a stop reply
        self.last_stop = StopInfo(5)
        # The engine stops after a watched access (Unicorn cannot abort it), where a Cortex-M stops
        # before it, as QEMU does: gdb (ARM watchpoints are "non-steppable") then removes the
        # watchpoint and steps over what it takes for the accessing instruction. That step has
        # already run: it is answered without running, so gdb ends where it would on QEMU.
        self.step_done = False

    @property
    def uc(self):  # noqa: ANN201 - unicorn's Uc
        return self.target.machine.uc

    def fds(self) -> list[int]:
        fds = [self.listener.fileno()]
        if self.conn is not None:
            fds.append(self.conn.fileno())
        return fds

    # -------------------------------------------------------------------------------- I/O
    def on_readable(self, fd: int) -> None:
        if fd == self.listener.fileno():
            self._accept()
            return
        assert self.conn is not None
        try:
            data = self.conn.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop()
            return
        self.buf += data
        self._process()

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return
        if self.conn is not None:
            conn.close()  # one debugger at a time, as QEMU's stub
            return
        conn.setblocking(True)
        self.conn, self.buf, self.ack, self.waiting = conn, b"", True, False
        self.target.halt("debugger attached")
        self.target.debugger_attached(True)
        self.last_stop = StopInfo(5)

    def _drop(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None
        self.waiting = False
        self.target.debugger_attached(False)
        if not self.target.is_running():
            self.target.resume()  # a debugger that leaves does not leave the target stopped

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self.listener.close()

    def _send(self, body: str | bytes) -> None:
        if self.conn is None:
            return
        raw = body.encode("latin-1") if isinstance(body, str) else body
        raw = _escape(raw)
        try:
            self.conn.sendall(b"$" + raw + b"#" + _checksum(raw))
        except OSError:
            self._drop()

    def _process(self) -> None:
        while self.buf:
            head = self.buf[0]
            if head in b"+-":
                self.buf = self.buf[1:]
                continue
            if head == 0x03:
                self.buf = self.buf[1:]
                if self.target.is_running():
                    self.target.halt("interrupted by the debugger")
                    self.report_stop(StopInfo(2))
                continue
            if head != ord("$"):
                self.buf = self.buf[1:]
                continue
            end = self.buf.find(b"#")
            if end < 0 or len(self.buf) < end + 3:
                return
            body = self.buf[1:end]
            self.buf = self.buf[end + 3:]
            if self.ack and self.conn is not None:
                self.conn.sendall(b"+")
            reply = self.handle(_unescape(body))
            if reply is not None:
                self._send(reply)

    def report_stop(self, info: StopInfo) -> None:
        """The target stopped (breakpoint, step done, halt): tell a gdb that waits for it."""
        self.last_stop = info
        self.step_done = info.extra.startswith(("watch:", "rwatch:", "awatch:"))
        if self.waiting:
            self.waiting = False
            self._send(info.packet())

    # -------------------------------------------------------------------------------- packets
    def handle(self, packet: bytes) -> str | bytes | None:
        text = packet.decode("latin-1")
        cmd = text[:1]
        if self.step_done and cmd not in "mpgZz?qH":  # anything but reads and watchpoint removal
            self.step_done = False
            if (cmd == "s" and len(text) == 1) or text.startswith("vCont;s"):
                self.last_stop = StopInfo(5)
                return self.last_stop.packet()
        try:
            if text.startswith("qSupported"):
                return ("PacketSize=4000;qXfer:features:read+;QStartNoAckMode+;vContSupported+;"
                        "swbreak+;hwbreak+;ReverseStep+;ReverseContinue+")
            if text == "QStartNoAckMode":
                self._send("OK")
                self.ack = False
                return None
            if text.startswith("qXfer:features:read:target.xml:"):
                off, length = (int(x, 16) for x in text.rsplit(":", 1)[1].split(","))
                chunk = TARGET_XML[off:off + length]
                return ("l" if off + length >= len(TARGET_XML) else "m") + chunk
            if text == "?":
                return self.last_stop.packet()
            if text in ("qAttached",):
                return "1"
            if text == "qC":
                return "QC1"
            if text == "qfThreadInfo":
                return "m1"
            if text == "qsThreadInfo":
                return "l"
            if text.startswith(("Hg", "Hc", "T")):
                return "OK"
            if text.startswith("qSymbol"):
                return "OK"
            if text.startswith("qRcmd,"):
                out = self._monitor(bytes.fromhex(text[6:]).decode(errors="replace"))
                if out:
                    self._send("O" + out.encode().hex())
                return "OK"
            if text == "vCont?":
                return "vCont;c;C;s;S"
            if text.startswith("vCont;"):
                action = text[6:].split(";")[0].split(":")[0]
                return self._resume(step=action[:1] in "sS")
            if text in ("bs", "bc"):
                info = self.target.reverse(step=text == "bs")
                self.last_stop = info
                return info.packet()
            if cmd in "cC":
                return self._resume(step=False, addr=text[1:] if cmd == "c" else text.partition(";")[2])
            if cmd in "sS":
                return self._resume(step=True, addr=text[1:] if cmd == "s" else text.partition(";")[2])
            if cmd == "g":
                return "".join(self._reg_hex(r) for _, r in REGISTERS)
            if cmd == "G":
                data = bytes.fromhex(text[1:])
                for i, (_, reg) in enumerate(REGISTERS[: len(data) // 4]):
                    self._write_reg(reg, int.from_bytes(data[4 * i:4 * i + 4], "little"))
                self.target.state_written()
                return "OK"
            if cmd == "p":
                n = int(text[1:], 16)
                return self._reg_hex(REGISTERS[n][1]) if n < len(REGISTERS) else "E00"
            if cmd == "P":
                n, _, val = text[1:].partition("=")
                idx = int(n, 16)
                if idx >= len(REGISTERS):
                    return "E00"
                self._write_reg(REGISTERS[idx][1], int.from_bytes(bytes.fromhex(val), "little"))
                self.target.state_written()
                return "OK"
            if cmd == "m":
                addr, length = (int(x, 16) for x in text[1:].split(","))
                return self._read_mem(addr, length)
            if cmd in "MX":
                head, _, data = packet[1:].partition(b":")
                addr, length = (int(x, 16) for x in head.decode().split(","))
                raw = bytes.fromhex(data.decode()) if cmd == "M" else data
                if length == 0:
                    return "OK"
                return self._write_mem(addr, raw[:length])
            if cmd in "Zz":
                kind, addr, length = text[1:].split(",")[:3]
                return self._point(cmd == "Z", int(kind), int(addr, 16), int(length, 16))
            if cmd == "D":
                self._send("OK")
                self._drop()
                return None
            if cmd == "k":
                self._drop()
                return None
        except (ValueError, IndexError):
            return "E01"
        return ""  # not supported

    def _monitor(self, command: str) -> str:
        """Run control the way gdb sees it: gdb sends `monitor` only to a target it holds stopped
        (all-stop), and expects it still stopped afterwards. So `halt` confirms the halt, `reset`
        resets and keeps the CPU halted at its reset vector whatever the mode (`reset run` too: it
        runs at the next continue), and `resume`/`go` are refused: a CPU running behind gdb's back
        would answer its next register read with a moving target. The reply text ends up in gdb's
        console; the packet reply is OK either way (qRcmd's E NN means a malformed request)."""
        words = command.split()
        verb, mode = (words + ["", ""])[:2]
        m = self.target.machine
        if verb == "halt":
            if self.target.is_running():  # only a client that does not wait for stops gets here
                self.target.halt("monitor halt")
            return f"target halted, pc {m.pc():#010x}\n"
        if verb == "reset" and mode in ("", "halt", "init", "run"):
            self.target.reset()
            if self.target.is_running():
                self.target.halt("monitor reset")
            note = "; it runs when the debugger continues" if mode == "run" else ""
            return (f"system reset: halted at the reset vector, pc {m.pc():#010x}{note}\n"
                    "(gdb keeps the registers it read before: maintenance flush register-cache)\n")
        if verb in ("resume", "go"):
            return "not resumed: the CPU runs when the debugger continues it (gdb: continue)\n"
        return self.target.monitor(command) or \
            "monitor commands: halt, reset [halt|init|run], resume (refused: use continue), info\n"

    def _resume(self, step: bool, addr: str = "") -> None:
        if addr:
            self.uc.reg_write(UC_ARM_REG_PC, int(addr, 16) | 1)
        self.waiting = True
        self.target.resume(step=step)
        return None

    def _reg_hex(self, reg: int) -> str:
        value = self.uc.reg_read(reg) & 0xFFFFFFFF
        if reg == UC_ARM_REG_CONTROL:
            value &= ~CONTROL_SFPA  # Unicorn's v8-M bit beside FPCA (armv7m.CONTROL_SFPA): not an M4's
        return value.to_bytes(4, "little").hex()

    def _write_reg(self, reg: int, value: int) -> None:
        if reg == UC_ARM_REG_PC:
            value |= 1  # Thumb: the M-profile executes nothing else
        if reg == UC_ARM_REG_CONTROL and self.target.machine.exc.fpu is not None and value & CONTROL_FPCA:
            value |= CONTROL_SFPA  # kept with FPCA, as the engine keeps them
        self.uc.reg_write(reg, value)

    def _read_mem(self, addr: int, length: int) -> str:
        out = bytearray()
        while length > 0:
            try:
                out += self.uc.mem_read(addr, length)
                break
            except UcError:
                # Read what is readable, up to the first unmapped byte, like a real probe.
                chunk = min(length, 0x1000 - (addr & 0xFFF))
                try:
                    out += self.uc.mem_read(addr, chunk)
                except UcError:
                    break
                addr, length = addr + chunk, length - chunk
        return out.hex() if out else "E14"

    def _write_mem(self, addr: int, data: bytes) -> str:
        try:
            self.uc.mem_write(addr, data)
        except UcError:
            return "E14"
        self.uc.ctl_remove_cache(addr, addr + len(data))  # code may have changed
        self.target.state_written()
        return "OK"

    def _point(self, insert: bool, kind: int, addr: int, length: int) -> str:
        m = self.target.machine
        if kind in (0, 1):
            if insert:
                m.add_breakpoint(addr)
            else:
                m.remove_breakpoint(addr)
            return "OK"
        if kind in (2, 3, 4):
            name = {2: "watch", 3: "rwatch", 4: "awatch"}[kind]
            if insert:
                m.add_watchpoint(name, addr, length)
            else:
                m.remove_watchpoint(name, addr, length)
            return "OK"
        return ""
