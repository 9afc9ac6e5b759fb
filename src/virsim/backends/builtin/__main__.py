"""`python -m virsim.backends.builtin --spec engine.json --rundir DIR`: one engine process (engine.py)."""

import sys

from virsim.backends.builtin.engine import main

sys.exit(main())
