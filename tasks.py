"""FlagScale build-system tasks. Run ``inv --list`` to see them.

Each task parses its flags and calls one library function in ``flagscale``; errors become one
line and a non-zero exit (``--verbose`` adds the traceback). Flags that take several values
accept them repeated (``--backend A --backend B``) or in one quoted/comma-separated value
(``--backend "A B"``).
"""

from __future__ import annotations

from invoke import Collection, Context, task

from flagscale.cli import report_errors, split_names

VERBOSE_HELP = "show the full traceback on failure"

namespace = Collection()


# --- workspace: unpatch / patch (flow 1) -------------------------------------------------------


# --- vendor patch sets, history, builds (flows 2 and 3) ----------------------------------------


# --- smoke training and CI (flow 4) -------------------------------------------------------------


# --- bundles and the compatibility matrix (flow 5) ----------------------------------------------

