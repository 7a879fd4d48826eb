"""What the matrix's cells cannot say: git's error lines and what to do about a set that is not
clean. Shared by the terminal table, the HTML page and ``inv matrix --strict``."""

from __future__ import annotations

from typing import Any

__all__ = ["NOT_CLEAN_ADVICE", "not_clean_hint", "row_notes"]


def row_notes(row: dict[str, Any]) -> list[str]:
    """What the table's cells cannot say: git's error lines and what to do about them."""
    on_base, on_current = row["on_base"].get("detail", ""), row["on_current"].get("detail", "")
    notes = []
    if on_base and on_base == on_current:
        notes.append(f"on its base and on current pins: {on_base}")
    else:
        notes += [f"on its base: {on_base}"] if on_base else []
        notes += [f"on current pins: {on_current}"] if on_current else []
    advice = NOT_CLEAN_ADVICE.get(row["verdict"])
    if advice and row["verdict"] != "unknown":  # unknown: the detail says what is missing
        notes.append(f"to do: {advice.split(': ', 1)[1]}")
    return notes


NOT_CLEAN_ADVICE = {
    "drifting": "drifting: regenerate them with `inv patch --device-type` on the current pins",
    "conflicting": "conflicting: they do not apply even on their base; ask the vendor for new sets",
    "unknown": "unknown: see the reason in the table (encrypted: pass --key-path)",
}


def not_clean_hint(verdicts: set[str]) -> str:
    return "; ".join(text for verdict, text in NOT_CLEAN_ADVICE.items() if verdict in verdicts)
