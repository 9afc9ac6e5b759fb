"""`python -m virsim.daemon`: run the per-user daemon in the foreground (the CLI starts it detached)."""

import sys

from virsim.daemon.server import run

sys.exit(run(sys.argv[1:]))
