"""FlagScale build-system tasks. Run ``inv --list`` to see them.

Each task parses its flags and calls one library function in ``flagscale``; errors become one
line and a non-zero exit (``--verbose`` adds the traceback). Flags that take several values
accept them repeated (``--backend A --backend B``) or in one quoted/comma-separated value
(``--backend "A B"``).
"""

from __future__ import annotations

from pathlib import Path

from invoke import Collection, Context
from invoke.exceptions import Exit

from flagscale.core.cli import (
    accept_space_separated_values,
    key_files,
    refuse_flags,
    remember_tasks_folder,
    report_errors,
    split_names,
    task,
)

VERBOSE_HELP = "show the full traceback on failure"

namespace = Collection()
remember_tasks_folder(Path(__file__).parent)  # `inv -r <clone>` from elsewhere: say `cd <clone>`


# --- workspace: unpatch / patch (flow 1) -------------------------------------------------------


@task(
    iterable=["backend", "task", "key_path"],
    help={
        "backend": "backend(s) to lay (default: every non-optional one); repeat or separate "
        "with spaces/commas",
        "mode": "how whole files are laid: symlink (edits go straight into backends/) or copy;"
        " default: the mode the checkout was laid in, else symlink",
        "force": "discard edits not in backends/, after saving them as a patch file",
        "device_type": "user: build build/<Vendor_Model>/ from its patch sets (= inv build)",
        "task": "user, with --device-type: task(s) whose patch sets to use",
        "commit": "user, with --device-type: the history's FlagScale commit (default: newest)",
        "key_path": "user, with --device-type: key file for encrypted patch sets",
        "verbose": VERBOSE_HELP,
    },
)
def unpatch(
    c: Context,
    backend: list[str] | None = None,
    mode: str | None = None,
    force: bool = False,
    device_type: str | None = None,
    task: list[str] | None = None,
    commit: str | None = None,
    key_path: list[str] | None = None,
    verbose: bool = False,
) -> None:
    """Bring third_party/<backend> to its pin with FlagScale's base layer laid over it."""
    from flagscale.overlay.unpatch import unpatch as lay

    if device_type is not None:
        from flagscale.builds.command import unpatch_device_command

        if mode is not None:
            raise Exit(
                "error: --mode does not apply with --device-type: build trees are always copies"
            )

        report_errors(
            verbose,
            lambda: unpatch_device_command(
                device_type,
                task=split_names(task),
                backends=split_names(backend),
                commit=commit,
                key_paths=key_files(key_path),
                force=force,
            ),
        )
        return
    refuse_flags(
        "only with --device-type (building build/<Vendor_Model>/); inv unpatch alone lays the"
        " base layer at the checked-out pin",
        task=task,
        commit=commit,
        key_path=key_path,
    )
    report_errors(verbose, lambda: lay(None, split_names(backend), mode=mode, force=force))


namespace.add_task(unpatch)


@task(
    iterable=["backend", "task", "models"],
    help={
        "backend": "backend(s) to harvest (default: every non-optional one); repeat or "
        "separate with spaces/commas",
        "force": "on a file changed both in backends/ and third_party/, keep third_party/'s "
        "after saving backends/'s as a patch file",
        "device_type": "vendor: write patch sets to hardware/<Vendor_Model>/ and commit them",
        "task": "vendor: task(s) the sets serve: train, inference, post_train",
        "commit": "vendor: the FlagScale commit the adaptation is based on",
        "key_path": "vendor: encrypt the patches with this key file (made 0600 if absent)",
        "backend_version": "vendor: version of the adapted backend (asked if missing)",
        "models": "vendor: models adapted (asked if missing)",
        "message": "vendor: commit message (asked if missing)",
        "contact": "vendor: who users ask, e.g. for the key (asked if missing)",
        "verbose": VERBOSE_HELP,
    },
)
def patch(
    c: Context,
    backend: list[str] | None = None,
    force: bool = False,
    device_type: str | None = None,
    task: list[str] | None = None,
    commit: str | None = None,
    key_path: str | None = None,
    backend_version: str | None = None,
    models: list[str] | None = None,
    message: str | None = None,
    contact: str | None = None,
    verbose: bool = False,
) -> None:
    """Write third_party/ edits back into backends/ (vendors: --device-type → hardware/)."""
    from flagscale.overlay.patch import patch as harvest
    from flagscale.vendor.make_sets import patch_command

    vendor = {
        "tasks": split_names(task),
        "commit": commit,
        "key_path": key_path,
        "backend_version": backend_version,
        "models": split_names(models),
        "message": message,
        "contact": contact,
    }
    if device_type is not None or any(v not in (None, []) for v in vendor.values()):
        refuse_flags(
            "with --device-type: making patch sets overwrites nothing (uncommitted edits in"
            " hardware/<V_M>/ are refused, never discarded)",
            force=force,
        )
        report_errors(
            verbose,
            lambda: patch_command(device_type, backends=split_names(backend), **vendor),
        )
        return
    report_errors(verbose, lambda: harvest(None, split_names(backend), force=force))


namespace.add_task(patch)


@task(
    help={
        "backend": "the release backend to import (declared with source.kind: release)",
        "verbose": VERBOSE_HELP,
    },
)
def import_release(c: Context, backend: str, verbose: bool = False) -> None:
    """Import a release backend's source archive into git; print the commit to record as pin."""
    from flagscale.upstream.release_import import import_declared

    print(report_errors(verbose, lambda: import_declared(backend)))


namespace.add_task(import_release)


@task(
    iterable=["release", "key_path"],
    help={
        "path": "the FlagScale checkout to import from (only read, never changed)",
        "release": "declare BACKEND as a source release from this archive, BACKEND=ARCHIVE"
        " (default: a submodule at FlagScale's pin); repeat per backend",
        "key_path": "FlagScale's RSA key folder or private_key.pem of a vendor's encrypted sets;"
        " repeat per vendor (sets without their key are kept encrypted, as they are)",
        "new_keys": "folder (outside the repository) for the new key of each vendor whose"
        " decrypted sets are encrypted again: <folder>/<Vendor>.key",
        "json": "where to write the JSON report (default build/import-flagscale.json)",
        "verbose": VERBOSE_HELP,
    },
)
def import_flagscale(
    c: Context,
    path: str,
    release: list[str] | None = None,
    key_path: list[str] | None = None,
    new_keys: str | None = None,
    json: str | None = None,
    verbose: bool = False,
) -> None:
    """Bring a FlagScale checkout's base patches, vendor sets and history in, each set proved."""
    from flagscale.migrate.importer import import_command

    report_errors(
        verbose,
        lambda: import_command(
            path,
            releases=split_names(release),
            key_paths=split_names(key_path),
            new_keys=new_keys,
            json_path=json,
        ),
    )


namespace.add_task(import_flagscale)


# --- vendor patch sets, history, builds (flows 2 and 3) ----------------------------------------


@task(
    iterable=["device", "key_path"],
    help={
        "device": "device type(s) to build (Vendor_Model); several make build/hetero.json",
        "task": "task whose patch sets to use (train, inference, post_train)",
        "commit": "use the patch sets of this FlagScale commit in the history (default: newest)",
        "key_path": "key file for encrypted patch sets; repeat for several vendors",
        "three_way": "merge hunks that do not apply; conflicts go to build/<V_M>.conflicts/",
        "jobs": "device types built at once (default: one per CPU, at most one per device)",
        "force": "replace a build changed by hand (the changes are saved as a patch first)",
        "work_tree": "vendors, before the history records them: build the patch sets in your"
        " work tree's hardware/<V_M>/ (committed or not)",
        "bundle": "build from this release bundle, verified first (needs --trust)",
        "trust": "the release manager's public key (K.pub) that must have signed --bundle",
        "verbose": VERBOSE_HELP,
    },
)
def build(
    c: Context,
    device: list[str] | None = None,
    task: str | None = None,
    commit: str | None = None,
    key_path: list[str] | None = None,
    three_way: bool = False,
    jobs: int = 0,
    force: bool = False,
    work_tree: bool = False,
    bundle: str | None = None,
    trust: str | None = None,
    verbose: bool = False,
) -> None:
    """Build isolated trees build/<Vendor_Model>/ from the vendor patch sets in the history."""
    if work_tree:
        refuse_flags(
            "with --work-tree: the sets in your work tree are built",
            commit=commit,
            bundle=bundle,
            trust=trust,
        )
    keys = report_errors(verbose, lambda: key_files(key_path))
    options = dict(
        task=task,
        commit=commit,
        key_paths=keys,
        three_way=three_way,
        jobs=jobs,
        force=force,
    )
    if bundle or trust:
        from flagscale.release.bundle_build import build_from_bundle

        report_errors(
            verbose, lambda: build_from_bundle(split_names(device), bundle, trust, **options)
        )
        return
    from flagscale.builds.command import build_command

    report_errors(
        verbose, lambda: build_command(split_names(device), work_tree=work_tree, **options)
    )


namespace.add_task(build)


@task(
    iterable=["task", "backend"],
    help={
        "device_type": "device type (Vendor_Model) whose patch sets to record",
        "task": "task(s) to record (default: those the sets' metadata lists)",
        "backend": "backends of the sets, e.g. FlagScale Megatron-LM (the key FlagScale+...)",
        "commit": "the commit holding the sets (default: the last commit of the current "
        "branch's first-parent history that changed them)",
        "verbose": VERBOSE_HELP,
    },
)
def record_history(
    c: Context,
    device_type: str,
    task: list[str] | None = None,
    backend: list[str] | None = None,
    commit: str | None = None,
    verbose: bool = False,
) -> None:
    """Record a device type's committed patch sets in hardware/patch_history.yaml."""
    from flagscale.vendor.history_record import record_command

    report_errors(
        verbose,
        lambda: record_command(
            device_type, tasks=split_names(task), backends=split_names(backend), commit=commit
        ),
    )


@task(
    help={
        "repair": "fix what can be fixed (unquoted or short ids, commits rewritten by squash "
        "merges or rebases, duplicates, order) and write the file",
        "drop_stale": "with --repair: also remove entries whose patch sets no commit of the "
        "current branch holds",
        "verbose": VERBOSE_HELP,
    }
)
def check_history(
    c: Context, repair: bool = False, drop_stale: bool = False, verbose: bool = False
) -> None:
    """Check hardware/patch_history.yaml against the repository (--repair to fix it)."""
    from flagscale.vendor.history_check import check_command

    report_errors(verbose, lambda: check_command(repair=repair, drop_stale=drop_stale))


namespace.add_task(record_history)
namespace.add_task(check_history)


# --- smoke training and CI (flow 4) -------------------------------------------------------------


@task(
    help={
        "device": "device type whose build tree to train on (Vendor_Model): build/<V_M>/",
        "config": "smoke case file (default ci/smoke/gpt_tiny_tp2.yaml)",
        "build_dir": "build tree to use instead of build/<V_M>/",
        "record_golden": "write the losses as hardware/<V_M>/smoke/<case>.golden.json",
        "timeout": "seconds before the job is stopped (default: the case's timeout)",
        "log_dir": "log folder (default logs/smoke/<V_M>/<case>/)",
        "verbose": VERBOSE_HELP,
    },
)
def smoke(
    c: Context,
    device: str | None = None,
    config: str = "ci/smoke/gpt_tiny_tp2.yaml",
    build_dir: str | None = None,
    record_golden: bool = False,
    timeout: int = 0,
    log_dir: str | None = None,
    verbose: bool = False,
) -> None:
    """Run a smoke training job on a build tree and compare its losses with the golden ones."""
    from flagscale.runner.extra import smoke_command  # checks the smoke extra first

    report_errors(
        verbose,
        lambda: smoke_command(
            device,
            config,
            build_dir=build_dir,
            record_golden=record_golden,
            timeout=timeout or None,
            log_dir=log_dir,
        ),
    )


namespace.add_task(smoke)


# --- trust: patch coverage and culprit bisection (flow 7) ---------------------------------------


@task(
    iterable=["key_path"],
    help={
        "device": "device type whose build tree to measure (Vendor_Model): build/<V_M>/",
        "case": "smoke case: a name in ci/smoke/ or a file (default: every case in ci/smoke/)",
        "build_dir": "build tree to measure instead of build/<V_M>/",
        "key_path": "key file for encrypted patch sets (to read their hunks)",
        "out": "report folder (default logs/coverage/<V_M>/)",
        "timeout": "seconds before a job is stopped (default: the case's timeout)",
        "verbose": VERBOSE_HELP,
    },
)
def coverage(
    c: Context,
    device: str | None = None,
    case: str | None = None,
    build_dir: str | None = None,
    key_path: list[str] | None = None,
    out: str | None = None,
    timeout: int = 0,
    verbose: bool = False,
) -> None:
    """Run the smoke jobs under coverage; show which hunks of the patches ran (JSON, HTML)."""
    from flagscale.trust.patch_coverage import coverage_command

    report_errors(
        verbose,
        lambda: coverage_command(
            device,
            case=case,
            build_dir=build_dir,
            key_paths=key_files(key_path),
            out=out,
            timeout=timeout or None,
        ),
    )


namespace.add_task(coverage)


@task(
    iterable=["key_path"],
    help={
        "device": "device type whose smoke job broke (Vendor_Model)",
        "case": "smoke case: a name in ci/smoke/ or a file (default: every case in ci/smoke/)",
        "good": "history commit whose smoke job passes (default: the previous entry that passes)",
        "bad": "history commit whose smoke job fails (default: the newest entry)",
        "task": "task of the history line (train, inference, post_train)",
        "key_path": "key file for encrypted patch sets; repeat for several vendors",
        "no_coverage": "do not run the failing entry under coverage (no unreached hunk skipped)",
        "verbose": VERBOSE_HELP,
    },
)
def bisect(
    c: Context,
    device: str | None = None,
    case: str | None = None,
    good: str | None = None,
    bad: str | None = None,
    task: str | None = None,
    key_path: list[str] | None = None,
    no_coverage: bool = False,
    verbose: bool = False,
) -> None:
    """Find the hunk(s) of a device's patch change that break its smoke job (delta debugging)."""
    from flagscale.trust.bisect import bisect_command

    report_errors(
        verbose,
        lambda: bisect_command(
            device,
            case=case,
            good=good,
            bad=bad,
            task=task,
            key_paths=key_files(key_path),
            no_coverage=no_coverage,
        ),
    )


namespace.add_task(bisect)


@task(help={"verbose": VERBOSE_HELP})
def ci_matrix(c: Context, verbose: bool = False) -> None:
    """Print the CI device matrix (device types and runner labels) as JSON."""
    from flagscale.ci.devices import matrix_command

    report_errors(verbose, matrix_command)


namespace.add_task(ci_matrix)


# --- pin moves (flow 6) -------------------------------------------------------------------------


@task(
    iterable=["key_path"],
    help={
        "backend": "the backend whose pin moves (declared in backends/backends.yaml)",
        "to": "the new pin: a published version (release backends) or a commit or ref"
        " (submodule backends)",
        "continue": "go on with the refresh in progress, after settling its conflicts",
        "abort": "give the refresh in progress up: everything goes back as it was",
        "checkout": "folder for the conflict checkout (default build/refresh)",
        "key_path": "key file(s) for encrypted patch sets; repeat for several vendors",
        "smoke": "build and train every refreshed device type with golden losses (default;"
        " --no-smoke skips it)",
        "record_golden": "take the refreshed build's losses as the new golden values",
        "json": "also write the report as JSON (schemas/refresh-report.schema.json) here",
        "verbose": VERBOSE_HELP,
    },
)
def refresh(
    c: Context,
    backend: str | None = None,
    to: str | None = None,
    continue_: bool = False,
    abort: bool = False,
    checkout: str | None = None,
    key_path: list[str] | None = None,
    smoke: bool = True,
    record_golden: bool = False,
    json: str | None = None,
    verbose: bool = False,
) -> None:
    """Move a backend's pin; carry the base layer and every vendor patch set along."""
    from flagscale.refresh.flow import refresh_command

    report_errors(
        verbose,
        lambda: refresh_command(
            backend,
            to,
            resume=continue_,
            abort=abort,
            checkout=checkout,
            key_paths=key_files(key_path),
            smoke=smoke,
            record_golden=record_golden,
            json_path=json,
        ),
    )


@task(
    iterable=["key_path"],
    help={
        "device": "the device type (Vendor_Model) whose sets to follow",
        "good": "a pin where the sets apply (and train): a version or a commit",
        "bad": "a pin where they do not",
        "backend": "the upstream backend (default: the device type's only one)",
        "smoke": "also build and run the smoke jobs at each step (slower)",
        "pre": "release backends: count pre-releases (rc, dev builds) among the versions",
        "key_path": "key file(s) for encrypted patch sets",
        "json": "also write the result as JSON (schemas/refresh-bisect.schema.json) here",
        "verbose": VERBOSE_HELP,
    },
)
def bisect_upstream(
    c: Context,
    device: str,
    good: str,
    bad: str,
    backend: str | None = None,
    smoke: bool = False,
    pre: bool = False,
    key_path: list[str] | None = None,
    json: str | None = None,
    verbose: bool = False,
) -> None:
    """Name the first upstream step (commit or version) where a device type's sets break."""
    from flagscale.refresh.bisect import bisect_command

    report_errors(
        verbose,
        lambda: bisect_command(
            device,
            good,
            bad,
            backend=backend,
            smoke=smoke,
            pre=pre,
            key_paths=key_files(key_path),
            json_path=json,
        ),
    )


namespace.add_task(refresh)
namespace.add_task(bisect_upstream)


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
    from flagscale.release.bundle import keygen_command

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
    from flagscale.release.bundle import bundle_command

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
    from flagscale.release.bundle import verify_command

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
    from flagscale.release.matrix import matrix_command

    report_errors(
        verbose,
        lambda: matrix_command(
            json_path=json,
            html_path=html,
            results_dir=results,
            key_paths=key_files(key_path),
            strict=strict,
        ),
    )


namespace.add_task(keygen)
namespace.add_task(bundle)
namespace.add_task(verify_bundle)
namespace.add_task(matrix)

# Seed 000's spelling: `--backend Megatron-LM FlagScale`, `--task train post_train`.
accept_space_separated_values(namespace)
