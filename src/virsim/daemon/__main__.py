"""`python -m virsim.daemon`: run the per-user daemon in the foreground (the CLI starts it detached)."""

import os
import select
import shutil
import sys

if "--lifeline" in sys.argv:
    # A private daemon whose owner already ended (a run cancelled while it started this daemon):
    # exit before the heavy imports, and remove the owner's scratch home as the daemon would.
    _fd = int(sys.argv[sys.argv.index("--lifeline") + 1])
    if select.select([_fd], [], [], 0)[0] and os.read(_fd, 64) == b"":
        if os.environ.get("VIRSIM_HOME"):
            shutil.rmtree(os.environ["VIRSIM_HOME"], ignore_errors=True)
        sys.exit(0)

from virsim.daemon.server import run  # noqa: E402 - after the check above, on purpose

sys.exit(run(sys.argv[1:]))
