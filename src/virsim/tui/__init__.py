"""`virsim tui`: the Textual dashboard, a client of the daemon like the CLI.

It talks to the daemon only through virsim.client (requests from worker threads, the event stream
from one pump thread: link.py) and never imports daemon/ or backends/. Textual is imported only
here, so no other command pays for it.

Modules: link.py (the daemon connection and the event pump), messages.py (what the pump posts),
app.py (the App, key map and command palette), sessions.py (the sessions screen and the create
dialog), session.py (the session screen and its panes), panes.py (the panes), dialogs.py
(confirmation and input dialogs), virsim.tcss (styles).
"""
