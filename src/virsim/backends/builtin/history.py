"""Execution history of a built-in engine node: checkpoints and the input log, for reverse debugging.

The machine is deterministic, so any earlier point can be reached again by restoring an earlier
checkpoint and re-executing forward with the same inputs. History keeps:

- checkpoints: `Machine.save_state()` (memory compressed) taken when a debugger attaches and then
  every INTERVAL instructions while it stays attached (~3% of run time at 50 M instructions);
- the input log: every input from outside (UART bytes, IRQ lines, GPIO pins) with the cycle at
  which it reached the machine, so re-execution feeds it at the same cycle.

`reverse_step()` goes back one instruction; `reverse_continue()` goes back to the latest
breakpoint or watchpoint hit before the current point (re-executing each checkpoint interval with
hits collected instead of stopping). Writes by the debugger (memory, registers) take a fresh
checkpoint, so history after them includes them; going back before a write undoes it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from virsim.backends.builtin.machine import Machine

INTERVAL = 50_000_000
MAX_CHECKPOINTS = 64


@dataclass
class Checkpoint:
    instructions: int
    cycles: int
    state: dict[str, Any]
    memory: bytes  # zlib
    inputs: int  # length of the input log when taken


class History:
    def __init__(self, machine: Machine) -> None:
        self.m = machine
        self.checkpoints: list[Checkpoint] = []
        self.inputs: list[tuple[int, str, tuple[Any, ...]]] = []
        self.active = False
        # The furthest instruction count execution has reached: output produced below it was
        # already written once (re-execution after going back must not write it again).
        self.horizon = machine.instructions

    # ------------------------------------------------------------------ recording
    def start(self) -> None:
        """A debugger attached: history begins here."""
        self.active = True
        self.checkpoints.clear()
        self.inputs.clear()
        self.horizon = self.m.instructions
        self.checkpoint()

    def stop(self) -> None:
        self.active = False
        self.checkpoints.clear()
        self.inputs.clear()
        self.horizon = self.m.instructions

    def advanced(self) -> None:
        self.horizon = max(self.horizon, self.m.instructions)

    def seen(self) -> bool:
        """Is the machine (now, even mid-slice) inside history that already ran once?"""
        return self.m.current_instructions() < self.horizon

    def checkpoint(self) -> None:
        state, memory = self.m.save_state()
        cp = Checkpoint(self.m.instructions, self.m.cycles, state, zlib.compress(memory, 1), len(self.inputs))
        # Keep the log consistent: a checkpoint at the same instruction replaces the older one.
        while self.checkpoints and self.checkpoints[-1].instructions >= cp.instructions:
            self.checkpoints.pop()
        self.checkpoints.append(cp)
        if len(self.checkpoints) > MAX_CHECKPOINTS:
            del self.checkpoints[1:3]  # thin out the oldest, keep the beginning of history

    def maybe_checkpoint(self) -> None:
        if self.active and self.m.instructions - self.checkpoints[-1].instructions >= INTERVAL:
            self.checkpoint()

    def record(self, kind: str, *args: Any) -> None:
        """An input from outside, applied now (call apply() too)."""
        if self.active:
            self.inputs.append((self.m.cycles, kind, args))

    def apply(self, kind: str, args: tuple[Any, ...]) -> None:
        m = self.m
        if kind == "uart":
            dev = m.device(args[0])
            dev.feed(args[1])  # type: ignore[attr-defined]
        elif kind == "irq":
            m.set_irq(args[0], args[1])
        elif kind == "gpio":
            m.device(args[0]).set_input(args[1], args[2])  # type: ignore[attr-defined]
        elif kind == "reset":
            m.reset()

    # ------------------------------------------------------------------ going back
    def _restore(self, cp: Checkpoint) -> None:
        self.m.load_state(cp.state, zlib.decompress(cp.memory))

    def _replay_to(self, cp: Checkpoint, target: int, collect: list[tuple[int, int]] | None) -> None:
        """From checkpoint `cp`, re-execute to exactly `target` instructions, re-applying logged
        inputs at their cycles; breakpoint/watchpoint hits are appended to `collect`, not stopped at."""
        m = self.m
        self._restore(cp)
        pending = [e for e in self.inputs[cp.inputs:] if e[0] >= cp.cycles]
        m.collect_hits = collect if collect is not None else []
        m.probes.suspended = True  # this code ran once already: coverage and trace saw it then
        try:
            while True:
                while pending and pending[0][0] <= m.cycles:
                    _, kind, args = pending.pop(0)
                    self.apply(kind, args)
                if m.instructions >= target:
                    break
                budget = target - m.instructions
                if pending:
                    budget = min(budget, pending[0][0] - m.cycles)
                stop = m.run(max(budget, 1), idle_to_end=True)
                if stop.reason == "lockup":
                    break
        finally:
            m.collect_hits = None
            m.probes.suspended = False

    def _base_for(self, target: int) -> Checkpoint | None:
        for cp in reversed(self.checkpoints):
            if cp.instructions <= target:
                return cp
        return None

    def reverse_step(self) -> str:
        """Back one instruction. Returns 'ok' or 'begin' (no history before this point)."""
        target = self.m.instructions - 1
        cp = self._base_for(target)
        if cp is None or target < 0:
            return "begin"
        self._replay_to(cp, target, None)
        self._trim_after(target)
        return "ok"

    def reverse_continue(self) -> tuple[str, dict[str, Any]]:
        """Back to the latest breakpoint/watchpoint hit before now: ('breakpoint'|'watchpoint', info)
        or ('begin', {}) at the start of history."""
        now = self.m.instructions
        for i in range(len(self.checkpoints) - 1, -1, -1):
            cp = self.checkpoints[i]
            if cp.instructions >= now:
                continue
            hits: list[tuple[int, int]] = []
            self._replay_to(cp, now, hits)
            earlier = [h for h in hits if h[0] < now]
            if earlier:
                count, address = earlier[-1]
                self._replay_to(cp, count, None)
                self._trim_after(count)
                kind = "watchpoint" if address < 0 else "breakpoint"
                return kind, {"address": abs(address)}
        first = self.checkpoints[0]
        self._restore(first)
        self._trim_after(first.instructions)
        return "begin", {}

    def _trim_after(self, instructions: int) -> None:
        # Checkpoints beyond the new present stay valid (deterministic re-execution reaches them
        # again), but drop them anyway: forward execution re-creates them, and inputs arriving
        # from now on would make them a different future.
        self.checkpoints = [cp for cp in self.checkpoints if cp.instructions <= instructions]
        if not self.checkpoints:
            self.checkpoint()
        self.inputs = [e for e in self.inputs if e[0] <= self.m.cycles]
