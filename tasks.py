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


@task(
    help={
        "out": "path of the private key to write; the public key goes to <out>.pub",
        "force": "replace an existing key pair (bundles signed with the old key stop verifying)",
        "verbose": VERBOSE_HELP,
    }
)
def keygen(c: Context, out: str, force: bool = False, verbose: bool = False) -> None:
    """Make an Ed25519 key pair for signing release bundles (K private 0600, K.pub public)."""
    from flagscale.bundle import keygen_command

    report_errors(verbose, lambda: keygen_command(out, force=force))


@task(
    iterable=["device"],
    help={
        "device": "device type(s) to include (V_M); repeat or separate with spaces/commas",
        "all": "include every device type in hardware/patch_history.yaml",
        "version": "release version; the bundle is written as flagscale-patches-<version>.tar.gz",
        "sign_key": "private signing key from inv keygen (default: $FLAGSCALE_SIGNING_KEY)",
        "out": "folder to write the bundle into (default: build/bundles)",
        "ref": "FlagScale commit whose history is bundled (default: HEAD)",
        "verbose": VERBOSE_HELP,
    },
)
def bundle(
    c: Context,
    version: str,
    device: list[str] | None = None,
    all: bool = False,  # noqa: A002 - the flag is --all
    sign_key: str | None = None,
    out: str | None = None,
    ref: str = "HEAD",
    verbose: bool = False,
) -> None:
    """Cut a signed, deterministic bundle of committed vendor patch sets for a release."""
    from flagscale.bundle import bundle_command

    report_errors(
        verbose,
        lambda: bundle_command(
            split_names(device),
            version=version,
            all_devices=all,
            sign_key=sign_key,
            out_dir=out,
            ref=ref,
        ),
    )


@task(
    help={
        "path": "the bundle (.tar.gz) to verify",
        "trust": "the release manager's public key (K.pub) to verify the signature with",
        "verbose": VERBOSE_HELP,
    }
)
def verify_bundle(c: Context, path: str, trust: str | None = None, verbose: bool = False) -> None:
    """Check a bundle's signature and every file hash before anything is extracted."""
    from flagscale.bundle import verify_command

    report_errors(verbose, lambda: verify_command(path, trust))


@task(
    iterable=["key_path"],
    help={
        "json": "also write the matrix as JSON (schemas/matrix.schema.json) to this path",
        "html": "also write a self-contained HTML page to this path",
        "results": "folder holding the smoke runner's result.json files (searched recursively)",
        "key_path": "decryption key(s) for encrypted patch sets; repeat for several vendors",
        "strict": "exit 1 when any patch set is not clean (drifting, conflicting, unknown)",
        "verbose": VERBOSE_HELP,
    },
)
def matrix(
    c: Context,
    json: str | None = None,
    html: str | None = None,
    results: str | None = None,
    key_path: list[str] | None = None,
    strict: bool = False,
    verbose: bool = False,
) -> None:
    """Show which patch sets apply on their base and on the current pins, with smoke results."""
    from flagscale.matrix import matrix_command

    report_errors(
        verbose,
        lambda: matrix_command(
            json_path=json,
            html_path=html,
            results_dir=results,
            key_paths=split_names(key_path),
            strict=strict,
        ),
    )


namespace.add_task(keygen)
namespace.add_task(bundle)
namespace.add_task(verify_bundle)
namespace.add_task(matrix)
