"""Scenario files: an ordered list of steps that drive and check a firmware run.

    name: boot and echo
    timeout: 5s                     # default for every step (virtual time unless the run says wall)
    steps:
      - wait-serial: "Hello"        # text, or {regex: "tick [0-9]+"}
      - write-serial: "hi\\n"        # C escapes are decoded
      - wait-serial: "echo: hi"
        timeout: 2s                 # this step's own timeout
      - delay: 10ms                 # let the firmware run this long
      - expect-not: "PANIC"         # fails the run if it appears from here on
      - read-memory: {at: tick_count, size: 4}
      - expect-memory: {at: tick_count, equals: 3}    # or bytes: "03000000"
      - break-at: on_tick           # run to here (the target then stays halted)
      - expect-register: {r0: 3}
      - snapshot: before-crash      # needs the backend's snapshot capability
      - restore: before-crash

Files are validated with pydantic; errors name the file, line, step and field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from virsim import limits
from virsim.errors import ScenarioError
from virsim.yamlmodel import load_model

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|m)?\s*$")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """`10ms`, `2s`, `1.5` (seconds) -> seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m and float(m.group(1)) > 0:
            return float(m.group(1)) * _UNITS[m.group(2)]
    raise ValueError("expected a positive duration like 500ms, 2s or 1m")


Duration = Annotated[float, BeforeValidator(parse_duration)]


class Pattern(BaseModel):
    model_config = ConfigDict(extra="forbid")
    regex: str

    @model_validator(mode="after")
    def _compiles(self) -> Pattern:
        try:
            re.compile(self.regex)
        except re.error as err:
            raise ValueError(f"not a valid regular expression: {err}") from err
        return self


class MemoryAt(BaseModel):
    model_config = ConfigDict(extra="forbid")
    at: str | int = Field(description="symbol or address")
    size: int | None = Field(None, ge=1, le=4096)
    equals: int | None = Field(None, ge=0, description="expected little-endian value (size defaults to 4)")
    bytes: str | None = Field(None, pattern=r"^([0-9a-fA-F]{2})+$", description="expected bytes as hex")

    @model_validator(mode="after")
    def _fits(self) -> MemoryAt:
        if self.equals is not None and self.equals >= 1 << (8 * (self.size or 4)):
            raise ValueError(f"equals {self.equals} does not fit in {self.size or 4} bytes")
        return self


ACTIONS = ("wait-serial", "write-serial", "delay", "expect-not", "read-memory", "expect-memory", "break-at",
           "expect-register", "snapshot", "restore")


class Step(BaseModel):
    """One step: exactly one action key, plus an optional timeout and name."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    wait_serial: str | Pattern | None = Field(None, alias="wait-serial")
    write_serial: str | None = Field(None, alias="write-serial")
    delay: Duration | None = None
    expect_not: str | Pattern | None = Field(None, alias="expect-not")
    read_memory: MemoryAt | None = Field(None, alias="read-memory")
    expect_memory: MemoryAt | None = Field(None, alias="expect-memory")
    break_at: str | None = Field(None, alias="break-at")
    expect_register: dict[str, int] | None = Field(None, alias="expect-register")
    snapshot: str | None = None
    restore: str | None = None
    timeout: Duration | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _one_action(self) -> Step:
        given = [a for a in ACTIONS if getattr(self, a.replace("-", "_")) is not None]
        if len(given) != 1:
            raise ValueError(f"a step needs exactly one of {', '.join(ACTIONS)}; got "
                             f"{', '.join(given) if given else 'none'}")
        if self.expect_memory is not None and self.expect_memory.equals is None and self.expect_memory.bytes is None:
            raise ValueError("expect-memory needs 'equals' or 'bytes'")
        return self

    @property
    def action(self) -> str:
        return next(a for a in ACTIONS if getattr(self, a.replace("-", "_")) is not None)

    @property
    def argument(self) -> Any:
        return getattr(self, self.action.replace("-", "_"))

    def describe(self) -> str:
        arg = self.argument
        if isinstance(arg, Pattern):
            shown = f"/{arg.regex}/"
        elif isinstance(arg, MemoryAt):
            shown = str(arg.at)
        elif isinstance(arg, dict):
            shown = ", ".join(f"{k}={v}" for k, v in arg.items())
        else:
            shown = repr(arg) if isinstance(arg, str) else f"{arg:g}s" if isinstance(arg, float) else str(arg)
        return self.name or f"{self.action} {shown}"


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    timeout: Duration = 10.0
    steps: list[Step] = Field(min_length=1)


def load_scenario(path: Path) -> Scenario:
    text = limits.read_text(path, "scenario file", error=ScenarioError)
    return load_model(text, str(path), Scenario, ScenarioError, "a scenario must be a mapping with 'steps'")
