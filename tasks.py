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


@task(
    iterable=["backend"],
    help={
        "backend": "backend(s) to lay (default: every non-optional one); repeat or separate "
        "with spaces/commas",
        "mode": "how whole files are laid: symlink (edits go straight into backends/) or copy",
        "force": "discard edits not in backends/, after saving them as a patch file",
        "verbose": VERBOSE_HELP,
    },
)
def unpatch(
    c: Context,
    backend: list[str] | None = None,
    mode: str = "symlink",
    force: bool = False,
    verbose: bool = False,
) -> None:
    """Bring third_party/<backend> to its pin with FlagScale's base layer laid over it."""
    from flagscale.overlay import unpatch as lay

    report_errors(verbose, lambda: lay(None, split_names(backend), mode=mode, force=force))


namespace.add_task(unpatch)


@task(
    iterable=["backend"],
    help={
        "backend": "backend(s) to harvest (default: every non-optional one); repeat or "
        "separate with spaces/commas",
        "force": "on a file changed both in backends/ and third_party/, keep third_party/'s "
        "after saving backends/'s as a patch file",
        "verbose": VERBOSE_HELP,
    },
)
def patch(
    c: Context, backend: list[str] | None = None, force: bool = False, verbose: bool = False
) -> None:
    """Write the edits made in third_party/<backend> back into backends/<backend>."""
    from flagscale.harvest import patch as harvest

    report_errors(verbose, lambda: harvest(None, split_names(backend), force=force))


namespace.add_task(patch)


# --- vendor patch sets, history, builds (flows 2 and 3) ----------------------------------------


# --- smoke training and CI (flow 4) -------------------------------------------------------------


# --- bundles and the compatibility matrix (flow 5) ----------------------------------------------

