"""Delta debugging: the smallest subset of changes that still makes a test fail.

Zeller and Hildebrandt's ``ddmin`` ("Simplifying and Isolating Failure-Inducing Input", 2002):
split the failing configuration into n parts; if one part fails alone, continue with it; else
if the configuration without one part still fails, continue without it; else split finer. It
ends with a *1-minimal* configuration — removing any single change makes the failure go away —
so a failure that needs two changes together is found as the pair. A test says ``fail``,
``pass`` or ``unresolved`` (the subset could not be tested: it does not apply, does not build,
or fails differently); only ``fail`` narrows the search.

Before it, an optimistic bisection: halve the configuration and keep the half that fails, or
else the other half *without testing it* (the common case: one culprit). Each level costs one
test, so one culprit among 100 changes is found with at most 7 tests and one check that it
fails alone. When the assumption was wrong (the failure needs changes from both halves), that
check passes and the classic ddmin starts from the smallest configuration known to fail, its
tests remembered. Either way the result is known to fail and 1-minimal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["FAIL", "PASS", "UNRESOLVED", "NotFailing", "ddmin", "split"]

PASS = "pass"
FAIL = "fail"
UNRESOLVED = "unresolved"

T = TypeVar("T")
Config = tuple[int, ...]


class NotFailing(Exception):
    """All the items together, not known to fail beforehand, do not fail."""


def split(config: Sequence[int], parts: int) -> list[Config]:
    """``config`` cut into ``parts`` contiguous pieces, the first ones one longer if needed."""
    size, extra = divmod(len(config), parts)
    pieces, start = [], 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        pieces.append(tuple(config[start:end]))
        start = end
    return [p for p in pieces if p]


def ddmin(
    items: Sequence[T],
    test: Callable[[list[T]], str],
    *,
    optimistic: bool = True,
    known_to_fail: bool = True,
) -> list[T]:
    """A 1-minimal failing subset of ``items`` (kept in their order).

    The caller has seen none of ``items`` pass, and (``known_to_fail``) all of them fail: those
    are not tested again. Otherwise all of them are tested only when the search has to rely on
    it, and NotFailing is raised when they pass. ``test`` gets a subset and answers PASS, FAIL
    or UNRESOLVED; each subset is tested once.
    """
    full: Config = tuple(range(len(items)))
    seen: dict[Config, str] = {(): PASS}
    if known_to_fail:
        seen[full] = FAIL

    def outcome(config: Config) -> str:
        if config not in seen:
            seen[config] = test([items[i] for i in config])
        return seen[config]

    config = _halving(full, outcome) if optimistic else full
    if config == full and outcome(full) != FAIL:
        raise NotFailing(f"the {len(items)} items together do not fail")
    return [items[i] for i in _ddmin(config, outcome)]


def _halving(config: Config, outcome: Callable[[Config], str]) -> Config:
    """Halve to one item on the single-culprit assumption; the smallest config known to fail."""
    known, current = config, config
    while len(current) > 1:
        first, second = split(current, 2)
        if outcome(first) == FAIL:
            known = current = first
        else:
            current = second  # assumed to fail; checked once we are down to one item
    if current != known and outcome(current) == FAIL:
        known = current
    return known


def _ddmin(config: Config, outcome: Callable[[Config], str]) -> Config:
    granularity = 2
    while len(config) >= 2:
        parts = split(config, granularity)
        reduced = next((part for part in parts if outcome(part) == FAIL), None)
        if reduced is not None:
            config, granularity = reduced, 2
            continue
        complements = [tuple(i for i in config if i not in part) for part in parts]
        smaller = next((c for c in complements if outcome(c) == FAIL), None)
        if smaller is not None:
            config, granularity = smaller, max(granularity - 1, 2)
            continue
        if granularity >= len(config):
            break
        granularity = min(len(config), granularity * 2)
    return config
