"""The command line's conventions, in one place: how flags are spelled, how their values are read,
and how library errors become what a user sees (one line and an exit code).

* Every task is made with ``task`` (a ``FlagScaleTask``): one spelling per idea in the docs, the
  other accepted as an alias (``--device`` / ``--device-type``, ``--3way`` / ``--three-way``), and
  short flags given on purpose (``SHORT_FLAGS``): one meaning in every task, never ``-h``.
* Names (backends, tasks, device types) may come several after one flag, repeated, or separated
  by spaces or commas (``split_names``); paths never are split (``paths``, ``key_files``).
* A flag that does not apply to what was asked is refused (``refuse_flags``), never ignored.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import invoke
from invoke.collection import Collection
from invoke.exceptions import Exit
from invoke.tasks import Task

from flagscale.core.errors import FlagScaleError, NotInWorkspaceError, os_error

__all__ = [
    "ALIASES",
    "SHORT_FLAGS",
    "FlagScaleTask",
    "accept_space_separated_values",
    "flag_names",
    "key_files",
    "paths",
    "refuse_flags",
    "remember_tasks_folder",
    "report_errors",
    "split_names",
    "task",
]

T = TypeVar("T")

INTERRUPTED = 130


def report_errors(verbose: bool, action: Callable[[], T]) -> T:
    """Run ``action``; a FlagScaleError becomes ``error: <one line>`` and exit status 1.

    An OSError that reaches here (permissions, a read-only or full disk, a missing folder) is
    the same: one line naming the path and the cause, exit 1. Anything else is an internal
    error, exit 2. With ``verbose`` the traceback is printed as well. Ctrl-C exits 130 without a
    traceback.
    """
    try:
        return action()
    except FlagScaleError as exc:
        if verbose:
            traceback.print_exc()
        raise Exit(f"error: {_with_tasks_folder(exc)}", code=1) from None
    except KeyboardInterrupt:
        raise Exit("interrupted", code=INTERRUPTED) from None
    except OSError as exc:  # the environment, not the tool: a path and its cause, exit 1
        if verbose:
            traceback.print_exc()
        raise Exit(f"error: {os_error(exc)}", code=1) from None
    except Exception as exc:  # an unexpected failure still gets one line unless --verbose
        if verbose:
            traceback.print_exc()
            raise
        print(
            f"error: internal error: {type(exc).__name__}: {exc} (rerun with --verbose)",
            file=sys.stderr,
        )
        raise Exit(code=2) from None


# --- spelling: one name per idea, aliases, deliberate short flags ------------------------------

# The other names an argument answers to; the first name is the one the docs use. A device type
# is ``--device`` in build/smoke/bundle and ``--device-type`` in patch/unpatch/record-history
# (FlagScale's own spelling); either is accepted everywhere.
ALIASES: Mapping[str, tuple[str, ...]] = {
    "device": ("device", "device-type"),
    "device_type": ("device-type", "device"),
    "three_way": ("3way", "three-way"),  # git's spelling first
    "continue_": ("continue",),  # a Python keyword as a parameter (inv refresh --continue)
}

# Short flags, given on purpose: each means one thing in every task (``-m`` is the commit
# message, as in git). ``-h`` is always --help. Flags not listed have no short form.
SHORT_FLAGS: Mapping[str, str] = {
    "backend": "b",
    "commit": "c",
    "device": "d",
    "device_type": "d",
    "force": "f",
    "jobs": "j",
    "key_path": "k",
    "message": "m",
    "task": "t",
    "verbose": "v",
}


class FlagScaleTask(Task):
    """An invoke task spelled by ``ALIASES`` and ``SHORT_FLAGS`` instead of invoke's guesses.

    invoke gives each flag the first letter of its name not yet taken, so ``-m`` was --models in
    one task and --mode in another, and ``matrix -h`` was --html. Here nothing is guessed.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["auto_shortflags"] = False
        super().__init__(*args, **kwargs)

    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        opts = super().arg_opts(name, default, taken_names)
        opts["names"] = [n for n in flag_names(name) if len(n) > 1 or n not in taken_names]
        if name != opts["names"][0].replace("-", "_"):
            opts["attr_name"] = name  # the function's parameter, whatever the first name
        return opts


def flag_names(parameter: str) -> list[str]:
    """Every name a task parameter answers to: its spelling(s), then its short flag if any."""
    names = list(ALIASES.get(parameter, (parameter.replace("_", "-"),)))
    short = SHORT_FLAGS.get(parameter)
    return names + [short] if short else names


def task(*args: Any, **kwargs: Any) -> Any:
    """``invoke.task`` making a ``FlagScaleTask``: use it for every task in tasks.py."""
    kwargs.setdefault("klass", FlagScaleTask)
    return invoke.task(*args, **kwargs)


# --- values: names may be split, paths never --------------------------------------------------


def split_names(values: list[str] | None) -> list[str]:
    """Names given as repeated flags or space/comma-separated lists, flattened, order kept."""
    names: list[str] = []
    for value in values or []:
        names.extend(part for part in value.replace(",", " ").split() if part)
    return list(dict.fromkeys(names))


def paths(values: list[str] | str | None) -> list[str]:
    """Paths given as repeated flags: each value is one path, never split (spaces, commas)."""
    if values is None:
        return []
    given = [values] if isinstance(values, str) else values
    return list(dict.fromkeys(value for value in given if value))


def key_files(values: list[str] | None, flag: str = "--key-path") -> list[str]:
    """Key files to read (never to create): each must exist, else one line naming it.

    A key path that is not there is refused even when no patch set turns out to need it: it
    is a typo that would bite the day a set is encrypted.
    """
    given = paths(values)
    for value in given:
        if not Path(value).expanduser().exists():
            raise FlagScaleError(
                f"{flag} {value}: no such file",
                hint="check the path; a key file is never created here",
            )
    return given


def refuse_flags(reason: str, **flags: object) -> None:
    """Refuse, in one line, the flags among ``flags`` (parameter name → value) that were given.

    ``reason`` completes the sentence ``--x does not apply <reason>`` (or ``applies only ...``
    when it starts with ``only``).
    """
    given = [
        "--" + name.replace("_", "-")
        for name, value in flags.items()
        if value not in (None, False, "", [], ())
    ]
    if not given:
        return
    verb = "applies" if reason.startswith("only") else "does not apply"
    if len(given) > 1:
        verb = "apply" if verb == "applies" else "do not apply"
    raise Exit(f"error: {', '.join(given)} {verb} {reason}", code=1)


# --- where the tasks are: `inv -r <clone>` run from another folder ----------------------------

_tasks_folder: list[Path] = []


def remember_tasks_folder(folder: Path) -> None:
    """Note where the running ``tasks.py`` is: a command run outside any workspace
    (``inv -r ~/FlagScale ...`` from another folder) then says which folder to ``cd`` into."""
    _tasks_folder[:] = [folder.resolve()]


def _with_tasks_folder(exc: FlagScaleError) -> str:
    """A "not inside a workspace" error run through ``inv -r <clone>``: name the clone to cd to."""
    if isinstance(exc, NotInWorkspaceError) and _tasks_folder:
        return f"{exc.message} (cd {_tasks_folder[0]} first; paths you pass may point anywhere)"
    return str(exc)


# --- several values after one flag (seed 000's spelling) --------------------------------------


def multi_value_flags(namespace: Collection) -> dict[str, set[str]]:
    """Task name (and alias) → the spellings of its flags that take several values."""
    flags: dict[str, set[str]] = {}
    for name in namespace.task_names:
        spellings = {
            ("-" if len(spelling) == 1 else "--") + spelling
            for parameter in namespace[name].iterable
            for spelling in flag_names(parameter)
        }
        for alias in (name, *namespace.task_names[name]):
            flags[alias] = spellings
            flags[alias.replace("-", "_")] = spellings
    return flags


def spread_values(argv: Sequence[str], multi: Mapping[str, Iterable[str]]) -> list[str]:
    """Seed 000's spelling ``--backend Megatron-LM FlagScale`` as repeated flags.

    ``multi`` maps each task name to its flags that take several values. Words after such a
    flag, up to the next flag or task name, become one flag each:
    ``--backend A B`` → ``--backend A --backend B``. Each word stays whole (a path is one word).
    """
    spread: list[str] = []
    current: set[str] = set()
    flag: str | None = None
    for word in argv:
        if word in multi:
            current, flag = set(multi[word]), None
            spread.append(word)
        elif word.startswith("-"):
            flag = word if word in current else None
            spread.append(word)
        elif flag and spread[-1] != flag:
            spread.extend([flag, word])
        else:
            spread.append(word)
    return spread


def help_request(argv: Sequence[str], tasks: Iterable[str]) -> str | None:
    """The task whose help ``--help`` / ``-h`` asks for: ``record-history --help`` is
    ``--help record-history`` (else invoke reads ``--help`` as the device type it expects)."""
    names = set(tasks)
    current = None
    for word in argv:
        if word in names:
            current = word
        elif word in ("--help", "-h") and current is not None:
            return current.replace("_", "-")
    return None


def accept_space_separated_values(namespace: Collection) -> None:
    """Let ``inv`` take several values after one flag, as FlagScale's tools always did.

    invoke reads task arguments after it has imported tasks.py; this rewrites the words it has
    not parsed yet. Without a running invoke program (imported from a test) it does nothing.
    """
    from invoke.program import Program

    frame = sys._getframe(1)
    while frame is not None:
        program = frame.f_locals.get("self")
        if isinstance(program, Program) and getattr(program, "core", None) is not None:
            unparsed = program.core.unparsed
            multi = multi_value_flags(namespace)
            wanted = help_request(unparsed, multi)
            if wanted is not None:  # as `inv --help <task>`: invoke would take it for a value
                program.core[0].args["help"].value = wanted
                unparsed[:] = []
                return
            unparsed[:] = spread_values(list(unparsed), multi)
            return
        frame = frame.f_back
