"""`python -m virsim.tui [SESSION] [--scrollback N]`: the app alone, as textual-serve starts it."""

from __future__ import annotations

import argparse

from virsim.tui.app import DEFAULT_SCROLLBACK, run

parser = argparse.ArgumentParser(prog="virsim.tui")
parser.add_argument("session", nargs="?")
parser.add_argument("--scrollback", type=int, default=DEFAULT_SCROLLBACK)
args = parser.parse_args()
run(args.session, scrollback=args.scrollback)
