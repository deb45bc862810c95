"""Start a child process as an interactive terminal would, for the tests that press Ctrl-C on it.

A command started with ``cmd &`` from a non-interactive shell (``make test &``, ``nohup``, a CI wrapper) inherits
SIGINT as *ignored*, and so would every process the tests start: their SIGINT would then do nothing and the Ctrl-C
tests would fail for a reason that has nothing to do with embedlab. A terminal's Ctrl-C reaches a process whose
SIGINT has its default disposition; ``preexec_fn=sigint_as_at_a_terminal`` restores that in the child only.
"""
from __future__ import annotations

import signal


def sigint_as_at_a_terminal() -> None:
    """Run in the child between fork and exec: SIGINT back to its default (Python then installs its own handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
