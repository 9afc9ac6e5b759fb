"""Peripheral models of the built-in engine, keyed by the BoardConfig `peripherals[].type`.

Each model is a register file at `address` with the board's IRQ line(s). Models follow the
registers and reset values of the parts QEMU emulates, so one ELF behaves the same on both:
CMSDK APB UART, timer and dual timer (ARM MPS2), PL011 UART (Luminary variant IDs on lm3s boards) and the
CMSDK AHB GPIO. A model that counts time answers `next_event()` (the cycle its next
interrupt is due) and `advance(now)`; the machine ends execution slices at those cycles, so timers
fire at exact instruction counts. UART bytes from outside arrive through `feed()` and enter the
receive register one character time (from BAUDDIV, or IBRD) apart, in virtual time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from virsim.board import Peripheral
    from virsim.backends.builtin.machine import Machine


class Device:
    """A memory-mapped peripheral model."""

    kind: ClassVar[str]
    description: ClassVar[str]

    def __init__(self, machine: Machine, spec: Peripheral) -> None:
        self.m = machine
        self.spec = spec
        self.id = spec.id
        self.base = spec.address
        self.size = spec.size

    def irq_line(self, number: int | None) -> Callable[[bool], None]:
        if number is None:
            return lambda level: None
        return lambda level: self.m.set_irq(number, level)

    def read(self, off: int, size: int) -> int:
        return 0

    def write(self, off: int, size: int, value: int) -> None:
        pass

    def next_event(self) -> int | None:
        return None

    def advance(self, now: int) -> None:
        pass

    def reset(self) -> None:
        pass

    def state(self) -> dict[str, Any]:
        return {}

    # ---- snapshot contract: every field that changes while the firmware runs, JSON-able
    saved: ClassVar[tuple[str, ...]] = ()

    def save(self) -> dict[str, Any]:
        out = {}
        for name in self.saved:
            value = getattr(self, name)
            out[name] = list(value) if isinstance(value, deque) else value
        return out

    def load(self, state: dict[str, Any]) -> None:
        for name in self.saved:
            current = getattr(self, name)
            value = state[name]
            setattr(self, name, deque(value) if isinstance(current, deque) else value)


class Uart(Device):
    """What both UART models share: output sinks and a receive queue paced in virtual time."""

    def __init__(self, machine: Machine, spec: Peripheral) -> None:
        super().__init__(machine, spec)
        self.sinks: list[Callable[[bytes], None]] = []
        self.rx_queue: deque[int] = deque()
        self.rx_ready_at = 0
        self.tx_count = 0
        self.rx_count = 0

    def transmit(self, byte: int) -> None:
        self.tx_count += 1
        data = bytes((byte & 0xFF,))
        for sink in self.sinks:
            sink(data)

    def feed(self, data: bytes) -> None:
        """Bytes from outside (console or a channel); they enter the receiver one at a time."""
        if not self.rx_queue:
            self.rx_ready_at = max(self.rx_ready_at, self.m.now())
        self.rx_queue.extend(data)
        self.m.reschedule()

    def char_cycles(self) -> int:
        return 160

    def can_receive(self) -> bool:
        raise NotImplementedError

    def receive(self, byte: int) -> None:
        raise NotImplementedError

    def next_event(self) -> int | None:
        if self.rx_queue and self.can_receive():
            return max(self.rx_ready_at, self.m.now())
        return None

    def advance(self, now: int) -> None:
        while self.rx_queue and self.can_receive() and self.rx_ready_at <= now:
            self.rx_count += 1
            self.receive(self.rx_queue.popleft())
            self.rx_ready_at = now + self.char_cycles()

    def state(self) -> dict[str, Any]:
        return {"tx_bytes": self.tx_count, "rx_bytes": self.rx_count, "rx_queued": len(self.rx_queue)}


class CmsdkUart(Uart):
    """ARM CMSDK APB UART (MPS2): DATA, STATE, CTRL, INTSTATUS/INTCLEAR, BAUDDIV.
    `irq` is the RX interrupt; options.tx_irq (default irq+1) the TX one."""

    kind = "cmsdk-uart"
    description = "ARM CMSDK APB UART (mps2): TX/RX with interrupts"
    saved = ("data", "state_", "ctrl", "intstatus", "bauddiv", "rx_queue", "rx_ready_at", "tx_count", "rx_count")
    _IDS = (0x04, 0x00, 0x00, 0x00, 0x21, 0xB8, 0x1B, 0x00, 0x0D, 0xF0, 0x05, 0xB1)

    def __init__(self, machine: Machine, spec: Peripheral) -> None:
        super().__init__(machine, spec)
        self.rx_irq = self.irq_line(spec.irq)
        tx = spec.options.get("tx_irq", spec.irq + 1 if spec.irq is not None else None)
        self.tx_irq = self.irq_line(tx)
        self.reset()

    def reset(self) -> None:
        self.data = 0
        self.state_ = 0
        self.ctrl = 0
        self.intstatus = 0
        self.bauddiv = 0

    def _update(self) -> None:
        self.rx_irq(bool(self.intstatus & 2))
        self.tx_irq(bool(self.intstatus & 1))

    def char_cycles(self) -> int:
        return max(16, self.bauddiv) * 10

    def can_receive(self) -> bool:
        return bool(self.ctrl & 2) and not self.state_ & 2

    def receive(self, byte: int) -> None:
        self.data = byte
        self.state_ |= 2
        if self.ctrl & 8:
            self.intstatus |= 2
            self._update()

    def read(self, off: int, size: int) -> int:
        if off == 0x00:
            value = self.data
            if self.state_ & 2:
                self.state_ &= ~2
                self.m.reschedule()  # the next queued byte may come in
            return value
        if off == 0x04:
            return self.state_
        if off == 0x08:
            return self.ctrl
        if off == 0x0C:
            return self.intstatus
        if off == 0x10:
            return self.bauddiv
        if 0xFD0 <= off < 0x1000:
            return self._IDS[(off - 0xFD0) // 4]
        return 0

    def write(self, off: int, size: int, value: int) -> None:
        if off == 0x00:
            if self.ctrl & 1:
                self.transmit(value)
                if self.ctrl & 4:
                    self.intstatus |= 1
                    self._update()
        elif off == 0x04:
            self.state_ &= ~(value & 0xC)  # overrun flags: write one to clear
        elif off == 0x08:
            self.ctrl = value & 0x7F  # enabling TXINTEN raises nothing: only a byte sent does (QEMU, the TRM)
            self._update()
            self.m.reschedule()
        elif off == 0x0C:
            self.intstatus &= ~(value & 0xF)
            self._update()
        elif off == 0x10:
            self.bauddiv = value & 0xFFFFF


class Pl011(Uart):
    """ARM PrimeCell PL011 UART: DR, FR, IBRD/FBRD, LCR_H, CR, IMSC/RIS/MIS/ICR, 16-byte RX FIFO."""

    kind = "pl011"
    description = "ARM PL011 UART: TX/RX FIFO with interrupts"
    saved = ("fifo", "int_level", "int_enabled", "lcr", "cr", "ibrd", "fbrd", "ifls", "rx_queue", "rx_ready_at",
             "tx_count", "rx_count")
    _IDS_ARM = (0x11, 0x10, 0x14, 0x00, 0x0D, 0xF0, 0x05, 0xB1)
    _IDS_LUMINARY = (0x11, 0x00, 0x18, 0x01, 0x0D, 0xF0, 0x05, 0xB1)

    def __init__(self, machine: Machine, spec: Peripheral) -> None:
        super().__init__(machine, spec)
        self.irq = self.irq_line(spec.irq)
        luminary = spec.options.get("variant", "luminary" if machine.board_id.startswith("lm3s") else "arm")
        self.ids = self._IDS_LUMINARY if luminary == "luminary" else self._IDS_ARM
        self.reset()

    def reset(self) -> None:
        self.fifo: deque[int] = deque()
        self.int_level = 0
        self.int_enabled = 0
        self.lcr = 0
        self.cr = 0x300
        self.ibrd = 0
        self.fbrd = 0
        self.ifls = 0x12

    def _update(self) -> None:
        self.irq(bool(self.int_level & self.int_enabled))

    def _depth(self) -> int:
        return 16 if self.lcr & 0x10 else 1

    def char_cycles(self) -> int:
        return max(16, self.ibrd * 16) * 10

    def can_receive(self) -> bool:
        return len(self.fifo) < self._depth()

    def receive(self, byte: int) -> None:
        self.fifo.append(byte)
        self.int_level |= 0x10  # RXRIS: QEMU raises it for every received byte (trigger level 1)
        self._update()

    def read(self, off: int, size: int) -> int:
        if off == 0x00:
            value = self.fifo.popleft() if self.fifo else 0
            if not self.fifo:
                self.int_level &= ~0x10
                self._update()
            self.m.reschedule()
            return value
        if off == 0x18:
            flags = 0x80  # TXFE: transmission is immediate
            if not self.fifo:
                flags |= 0x10
            if len(self.fifo) >= self._depth():
                flags |= 0x40
            return flags
        regs = {0x24: self.ibrd, 0x28: self.fbrd, 0x2C: self.lcr, 0x30: self.cr, 0x34: self.ifls,
                0x38: self.int_enabled, 0x3C: self.int_level, 0x40: self.int_level & self.int_enabled}
        if off in regs:
            return regs[off]
        if 0xFE0 <= off < 0x1000:
            return self.ids[(off - 0xFE0) // 4]
        return 0

    def write(self, off: int, size: int, value: int) -> None:
        if off == 0x00:
            self.transmit(value)
            self.int_level |= 0x20  # TXRIS
            self._update()
        elif off == 0x24:
            self.ibrd = value & 0xFFFF
        elif off == 0x28:
            self.fbrd = value & 0x3F
        elif off == 0x2C:
            if (value ^ self.lcr) & 0x10:
                self.fifo.clear()
            self.lcr = value & 0xFF
            self.m.reschedule()
        elif off == 0x30:
            self.cr = value & 0xFFFF
        elif off == 0x34:
            self.ifls = value & 0x3F
        elif off == 0x38:
            self.int_enabled = value & 0x7FF
            self._update()
        elif off == 0x44:
            self.int_level &= ~(value & 0x7FF)
            self._update()


class CmsdkTimer(Device):
    """ARM CMSDK APB timer: CTRL, VALUE, RELOAD, INTSTATUS/INTCLEAR; counts the bus clock
    (options.clock_hz, default the processor clock) down to zero, then reloads."""

    kind = "cmsdk-timer"
    description = "ARM CMSDK APB timer: 32-bit down-counter with interrupt"
    saved = ("ctrl", "reload", "value", "next_zero", "intstatus")

    def __init__(self, machine: Machine, spec: Peripheral) -> None:
        super().__init__(machine, spec)
        self.irq = self.irq_line(spec.irq)
        self.div = max(1, machine.frequency // int(spec.options.get("clock_hz", machine.frequency)))
        self.reset()

    def reset(self) -> None:
        self.ctrl = 0
        self.reload = 0
        self.value = 0  # when stopped
        self.next_zero: int | None = None
        self.intstatus = 0

    def _update(self) -> None:
        self.irq(bool(self.intstatus and self.ctrl & 8))

    def _current(self, now: int) -> int:
        if self.next_zero is None:
            return self.value
        return max(0, -(-(self.next_zero - now) // self.div))

    def _start(self, now: int, value: int) -> None:
        if value:
            self.next_zero = now + value * self.div
        elif self.reload:
            self.next_zero = now + (self.reload + 1) * self.div
        else:
            self.next_zero = None
        self.m.reschedule()

    def next_event(self) -> int | None:
        return self.next_zero if self.ctrl & 1 else None

    def advance(self, now: int) -> None:
        while self.ctrl & 1 and self.next_zero is not None and self.next_zero <= now:
            if self.ctrl & 8:  # INTSTATUS rises only with the interrupt enabled (QEMU)
                self.intstatus = 1
            self._update()
            if not self.reload:
                self.next_zero, self.value = None, 0
                break
            self.next_zero += (self.reload + 1) * self.div

    def read(self, off: int, size: int) -> int:
        now = self.m.now()
        regs = {0x00: self.ctrl, 0x08: self.reload, 0x0C: self.intstatus}
        if off == 0x04:
            return self._current(now) if self.ctrl & 1 else self.value
        if 0xFD0 <= off < 0x1000:
            return (0x04, 0, 0, 0, 0x22, 0xB8, 0x1B, 0, 0x0D, 0xF0, 0x05, 0xB1)[(off - 0xFD0) // 4]
        return regs.get(off, 0)

    def write(self, off: int, size: int, value: int) -> None:
        now = self.m.now()
        if off == 0x00:
            was = self.ctrl & 1
            current = self._current(now) if was else self.value
            self.ctrl = value & 0xF
            if self.ctrl & 1 and not was:
                self._start(now, current)
            elif not self.ctrl & 1 and was:
                self.value, self.next_zero = current, None
            self._update()
        elif off == 0x04:
            self.value = value
            if self.ctrl & 1:
                self._start(now, value)
        elif off == 0x08:
            self.reload = value
            if self.ctrl & 1:
                self._start(now, value)  # a RELOAD write loads the counter too (QEMU)
            else:
                self.value = value
        elif off == 0x0C:
            if value & 1:
                self.intstatus = 0
                self._update()

    def state(self) -> dict[str, Any]:
        return {"ctrl": self.ctrl, "reload": self.reload, "value": self.read(0x04, 4)}


class CmsdkDualTimer(Device):
    """ARM CMSDK APB dual timer (two SP804-style down-counters, QEMU's cmsdk-apb-dualtimer): per
    timer at +0x00/+0x20 LOAD, VALUE, CONTROL (bit 0 one-shot, 1 32-bit, 3:2 prescale /1 /16 /256,
    5 interrupt enable, 6 periodic, 7 enable), INTCLR, RIS, MIS, BGLOAD; one combined interrupt line.
    It counts the bus clock (options.clock_hz, default the processor clock). On reaching zero it
    raises its interrupt and then reloads LOAD (periodic), wraps to all ones (free-running) or stops
    (one-shot)."""

    kind = "cmsdk-dualtimer"
    description = "ARM CMSDK APB dual timer: two 32/16-bit down-counters, one interrupt"
    saved = ("loads", "ctrl", "ris", "value", "counting")
    _ID = (0x04, 0, 0, 0, 0x23, 0xB8, 0x1B, 0, 0x0D, 0xF0, 0x05, 0xB1)  # PID4-7, PID0-3, CID0-3

    def __init__(self, machine: Machine, spec: Peripheral) -> None:
        super().__init__(machine, spec)
        self.irq = self.irq_line(spec.irq)
        self.div = max(1, machine.frequency // int(spec.options.get("clock_hz", machine.frequency)))
        self.reset()

    def reset(self) -> None:
        self.loads = [0, 0]
        self.ctrl = [0x20, 0x20]
        self.ris = [0, 0]
        self.value = [0xFFFFFFFF, 0xFFFFFFFF]  # while stopped
        self.counting: list[list[int] | None] = [None, None]  # while running: [cycle, count then]

    def _mask(self, t: int) -> int:
        return 0xFFFFFFFF if self.ctrl[t] & 2 else 0xFFFF

    def _tick(self, t: int) -> int:
        return self.div * (1, 16, 256, 256)[(self.ctrl[t] >> 2) & 3]

    def _current(self, t: int, now: int) -> int:
        base = self.counting[t]
        if base is None:
            return self.value[t]  # as written: QEMU does not mask it to the counter's size
        return max(0, base[1] - (now - base[0]) // self._tick(t))

    def _zero_at(self, t: int) -> int | None:
        base = self.counting[t]
        return None if base is None else base[0] + base[1] * self._tick(t)

    def _update(self) -> None:
        self.irq(any(self.ris[t] and self.ctrl[t] & 0x20 for t in (0, 1)))

    def next_event(self) -> int | None:
        events = [z for z in (self._zero_at(0), self._zero_at(1)) if z is not None]
        return min(events) if events else None

    def advance(self, now: int) -> None:
        for t in (0, 1):
            while (zero := self._zero_at(t)) is not None and zero <= now:
                self.ris[t] = 1
                if self.ctrl[t] & 1:  # one-shot: stops at zero
                    self.counting[t], self.value[t] = None, 0
                elif self.ctrl[t] & 0x40:  # periodic: LOAD again one tick later
                    self.counting[t] = [zero + self._tick(t), self.loads[t] & self._mask(t)]
                else:  # free-running: wraps to all ones
                    self.counting[t] = [zero + self._tick(t), self._mask(t)]
        self._update()

    def read(self, off: int, size: int) -> int:
        if 0xFD0 <= off < 0x1000:
            return self._ID[(off - 0xFD0) // 4]
        if off >= 0x40:
            return 0
        t, reg = off // 0x20, off % 0x20
        now = self.m.now()
        if reg in (0x00, 0x18):
            return self.loads[t]
        if reg == 0x04:
            return self._current(t, now)
        if reg == 0x08:
            return self.ctrl[t]
        if reg == 0x10:
            return self.ris[t]
        if reg == 0x14:
            return self.ris[t] if self.ctrl[t] & 0x20 else 0
        return 0

    def write(self, off: int, size: int, value: int) -> None:
        if off >= 0x40:
            return
        t, reg = off // 0x20, off % 0x20
        now = self.m.now()
        value &= 0xFFFFFFFF
        if reg == 0x00:  # LOAD: the counter restarts from it at once
            self.loads[t] = value
            if self.counting[t] is not None:
                self.counting[t] = [now, value]
            else:
                self.value[t] = value
        elif reg == 0x18:  # BGLOAD: the next reload only
            self.loads[t] = value
        elif reg == 0x08:
            running = self.counting[t] is not None
            current = self._current(t, now)
            self.ctrl[t] = value & 0xEF
            if self.ctrl[t] & 0x80 and not running:
                self.counting[t] = [now, current]
            elif not self.ctrl[t] & 0x80 and running:
                self.counting[t], self.value[t] = None, current
            elif running:
                self.counting[t] = [now, current]  # a new prescale or size counts from here
        elif reg == 0x0C:
            self.ris[t] = 0
        self.m.reschedule()
        self._update()

    def state(self) -> dict[str, Any]:
        now = self.m.now()
        return {"timers": [{"load": self.loads[t], "value": self._current(t, now), "ctrl": self.ctrl[t]} for t in (0, 1)]}


class CmsdkGpio(Device):
    """ARM CMSDK AHB GPIO (16 pins): DATA/DATAOUT, OUTEN, interrupt enable/type/polarity/status.
    Input pins are driven from outside (`set_input`); output changes go to `watchers`."""

    kind = "cmsdk-gpio"
    description = "ARM CMSDK AHB GPIO: 16 pins, edge/level interrupts (combined line)"
    saved = ("inputs", "dataout", "outen", "altfunc", "inten", "inttype", "intpol", "intstatus")

    def __init__(self, machine: Machine, spec: Peripheral) -> None:
        super().__init__(machine, spec)
        self.irq = self.irq_line(spec.irq)
        self.watchers: list[Callable[[str, int], None]] = []
        self.reset()

    def reset(self) -> None:
        self.inputs = 0
        self.dataout = 0
        self.outen = 0
        self.altfunc = 0
        self.inten = 0
        self.inttype = 0  # 1 = edge
        self.intpol = 0  # 1 = rising edge / high level
        self.intstatus = 0

    def pins(self) -> int:
        return ((self.inputs & ~self.outen) | (self.dataout & self.outen)) & 0xFFFF

    def _levels(self) -> None:
        level_mask = self.inten & ~self.inttype
        active = ~(self.pins() ^ self.intpol) & level_mask  # pin equals its polarity
        self.intstatus = (self.intstatus & self.inttype) | (active & 0xFFFF)
        self.irq(bool(self.intstatus & self.inten))

    def _edges(self, before: int, after: int) -> None:
        rising, falling = after & ~before, before & ~after
        edges = ((rising & self.intpol) | (falling & ~self.intpol)) & self.inten & self.inttype
        self.intstatus |= edges & 0xFFFF

    def _changed(self, before: int) -> None:
        after = self.pins()
        self._edges(before, after)
        self._levels()
        if (before ^ after) & self.outen:
            for watcher in self.watchers:
                watcher(self.id, after)

    def set_input(self, pin: int, level: bool) -> None:
        before = self.pins()
        self.inputs = (self.inputs | (1 << pin)) if level else (self.inputs & ~(1 << pin))
        self._changed(before)

    def read(self, off: int, size: int) -> int:
        regs = {0x00: self.pins(), 0x04: self.dataout, 0x10: self.outen, 0x14: self.outen, 0x18: self.altfunc,
                0x1C: self.altfunc, 0x20: self.inten, 0x24: self.inten, 0x28: self.inttype, 0x2C: self.inttype,
                0x30: self.intpol, 0x34: self.intpol, 0x38: self.intstatus}
        return regs.get(off, 0)

    def write(self, off: int, size: int, value: int) -> None:
        before = self.pins()
        value &= 0xFFFF
        if off in (0x00, 0x04):
            self.dataout = value
        elif off == 0x10:
            self.outen |= value
        elif off == 0x14:
            self.outen &= ~value
        elif off == 0x18:
            self.altfunc |= value
        elif off == 0x1C:
            self.altfunc &= ~value
        elif off == 0x20:
            self.inten |= value
        elif off == 0x24:
            self.inten &= ~value
        elif off == 0x28:
            self.inttype |= value
        elif off == 0x2C:
            self.inttype &= ~value
        elif off == 0x30:
            self.intpol |= value
        elif off == 0x34:
            self.intpol &= ~value
        elif off == 0x38:
            self.intstatus &= ~value
        self._changed(before)

    def state(self) -> dict[str, Any]:
        return {"pins": self.pins(), "outen": self.outen}


MODELS: dict[str, type[Device]] = {cls.kind: cls for cls in (CmsdkUart, Pl011, CmsdkTimer, CmsdkDualTimer,
                                                                CmsdkGpio)}
# Types the core itself provides (inside the System Control Space), accepted in board files.
CORE_TYPES = {"armv7m-systick": "SysTick, part of the ARMv7-M System Control Space",
              "armv7m-nvic": "NVIC, part of the ARMv7-M System Control Space"}
