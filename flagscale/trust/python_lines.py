"""What a line of a Python file is, for telling "ran" from "only imported" from "never reached".

Coverage data says which lines ran. To judge a changed line, this module reads the file's AST
and its compiled code:

- each line belongs to the innermost statement whose own lines hold it (a compound statement
  owns its header, ``if x:`` or ``def f(a,\\n b):`` with its decorators, not its body); a
  statement is *code* when the compiled module has instructions on one of its lines;
- a line that is no code (comment, blank, docstring, ``else:``) is judged by its neighbours: the
  next code statement in the same block, else the previous one, else the enclosing statement;
- a statement *ran* when coverage saw one of its lines;
- a function's header (``def`` line, decorators, signature, defaults) runs when the module is
  imported; it counts as executed only when the function's body ran, otherwise as *defined*.

``LineStatus``: ``executed``, ``defined`` (a definition ran, its body did not) or ``missed``.
"""

from __future__ import annotations

import ast
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from types import CodeType

__all__ = ["DEFINED", "EXECUTED", "MISSED", "STATUS_ORDER", "PythonLines", "SourceError"]

EXECUTED = "executed"
DEFINED = "defined"
MISSED = "missed"
STATUS_ORDER = {MISSED: 0, DEFINED: 1, EXECUTED: 2}  # how far a line got
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_BLOCKS = ("body", "orelse", "finalbody", "handlers", "cases")


class SourceError(ValueError):
    """The file does not parse as Python."""


@dataclass(eq=False)
class _Statement:
    node: ast.AST
    first: int  # first own line (decorators included)
    last: int  # last own line (a compound statement: the end of its header)
    end: int  # last line of the whole statement, body included
    parent: _Statement | None
    children: list[_Statement] = field(default_factory=list)
    code: bool = False

    @property
    def is_function(self) -> bool:
        return isinstance(self.node, _FUNCTIONS)

    def own_lines(self) -> range:
        return range(self.first, self.last + 1)


class PythonLines:
    """One Python source, ready to judge its lines against the lines coverage saw run."""

    def __init__(self, source: bytes | str, name: str = "<file>") -> None:
        try:
            tree = ast.parse(source, filename=name)
            code = compile(tree, name, "exec", dont_inherit=True)
        except (SyntaxError, ValueError) as exc:
            raise SourceError(f"{name}: does not parse as Python ({exc})") from None
        self.executable = set(_code_lines(code))
        self.line_count = (
            source.count(b"\n") if isinstance(source, bytes) else source.count("\n")
        ) + 1
        self.module = _Statement(tree, 0, 0, self.line_count, None)
        self._owner: dict[int, _Statement] = {}
        self._collect(tree, self.module)

    # --- building the statement map ---------------------------------------------------------

    def _collect(self, node: ast.AST, parent: _Statement) -> None:
        for block in _BLOCKS:
            for child in getattr(node, block, None) or ():
                if not isinstance(child, ast.stmt | ast.ExceptHandler | ast.match_case):
                    continue
                statement = self._statement(child, parent)
                parent.children.append(statement)
                for line in statement.own_lines():
                    self._owner[line] = statement  # inner statements come later and win
                self._collect(child, statement)

    def _statement(self, node: ast.AST, parent: _Statement) -> _Statement:
        first = getattr(node, "lineno", None) or getattr(node.pattern, "lineno", 1)  # type: ignore[attr-defined]
        decorators = getattr(node, "decorator_list", None) or []
        if decorators:
            first = min(first, *(d.lineno for d in decorators))
        end = getattr(node, "end_lineno", None) or first
        inner = [
            c for block in _BLOCKS for c in getattr(node, block, None) or () if hasattr(c, "lineno")
        ]
        last = end
        if inner:
            last = max(first, min(c.lineno for c in inner) - 1)
            if isinstance(node, ast.match_case):
                last = max(first, node.body[0].lineno - 1)
        statement = _Statement(node, first, last, end, parent)
        statement.code = any(line in self.executable for line in statement.own_lines())
        return statement

    # --- judging lines ------------------------------------------------------------------------

    def anchor(self, line: int) -> _Statement | None:
        """The code statement that stands for ``line`` (None: nothing in the file is code)."""
        owner = self._owner.get(line)
        if owner is not None and owner.code:
            return owner
        block = self._enclosing(line, owner)
        while block is not None:
            code = [c for c in block.children if c.code]
            after = [c for c in code if c.first > line]
            if after:
                return after[0]
            before = [c for c in code if c.last < line]
            if before:
                return before[-1]
            if block.code:
                return block
            block = block.parent
        return None

    def _enclosing(self, line: int, owner: _Statement | None) -> _Statement:
        """The innermost statement whose whole extent holds ``line`` (or the module)."""
        if owner is not None:
            return owner if owner.children else (owner.parent or self.module)
        found = self.module
        descended = True
        while descended:
            descended = False
            for child in found.children:
                if child.first <= line <= child.end:
                    found, descended = child, True
                    break
        return found

    def status(self, line: int, ran: Collection[int]) -> str:
        """``executed``, ``defined`` or ``missed`` for ``line`` given the lines that ran."""
        return self.judge(line, ran)[0]

    def judge(self, line: int, ran: Collection[int]) -> tuple[str, list[int]]:
        """The status of ``line`` and the lines that ran which show it (for their ranks)."""
        statement = self.anchor(line)
        if statement is None:
            return MISSED, []
        header = [number for number in statement.own_lines() if number in ran]
        if statement.is_function:
            body = [number for number in ran if statement.last < number <= statement.end]
            if body:
                return EXECUTED, body
            return (DEFINED, header) if header else (MISSED, [])
        return (EXECUTED, header) if header else (MISSED, [])


def _code_lines(code: CodeType) -> Iterator[int]:
    for _start, _end, line in code.co_lines():
        if line is not None:
            yield line
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield from _code_lines(const)
