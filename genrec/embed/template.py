"""Item text templates: ``"[{title}. ][Brand: {brand}.]"`` turns an item row into one string.

``{column}`` is replaced by the item's value (lists joined by a separator). A ``[...]`` section
is dropped whole when any column inside it is empty, so missing fields leave no dangling
labels. ``[[``, ``]]``, ``{{`` and ``}}`` stand for literal brackets and braces.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class _Section:
    parts: tuple[tuple[str, str], ...]  # ("text", literal) or ("field", column)
    optional: bool


class Template:
    """A parsed template; ``render(row)`` gives the item text, ``fields`` the columns it reads.

    >>> Template("[{title}. ][Brand: {brand}.]").render({"title": "Lipstick", "brand": None})
    'Lipstick.'
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.sections = _parse(text)
        self.fields = sorted({v for s in self.sections for kind, v in s.parts if kind == "field"})
        if not self.fields:
            raise ValueError(f"template {text!r} names no column; write e.g. '{{title}}'")

    def check_columns(self, columns: Sequence[str], where: str = "the item table") -> None:
        missing = [f for f in self.fields if f not in columns]
        if missing:
            raise ValueError(
                f"template {self.text!r} names column(s) {', '.join(missing)} that {where} lacks; "
                f"it has: {', '.join(columns)}"
            )

    def render(self, row: Mapping[str, object], list_separator: str = ", ") -> str:
        out = []
        for section in self.sections:
            pieces = []
            for kind, value in section.parts:
                if kind == "text":
                    pieces.append(value)
                    continue
                rendered = _value_text(row.get(value), list_separator)
                if not rendered and section.optional:
                    pieces = None
                    break
                pieces.append(rendered)
            if pieces:
                out.append("".join(pieces))
        return _WHITESPACE.sub(" ", "".join(out)).strip()


def _value_text(value: object, list_separator: str) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return list_separator.join(t for t in (_value_text(v, list_separator) for v in value) if t)
    return str(value).strip()


def _parse(text: str) -> list[_Section]:
    sections: list[_Section] = []
    parts: list[tuple[str, str]] = []
    literal: list[str] = []
    optional = False
    i = 0

    def flush_literal() -> None:
        if literal:
            parts.append(("text", "".join(literal)))
            literal.clear()

    def close_section(is_optional: bool) -> None:
        flush_literal()
        if parts:
            sections.append(_Section(tuple(parts), is_optional))
            parts.clear()

    while i < len(text):
        pair = text[i : i + 2]
        if pair in ("[[", "]]", "{{", "}}"):
            literal.append(pair[0])
            i += 2
            continue
        ch = text[i]
        if ch == "[":
            if optional:
                raise ValueError(f"template {text!r}: optional sections cannot nest (position {i})")
            close_section(False)
            optional = True
        elif ch == "]":
            if not optional:
                raise ValueError(
                    f"template {text!r}: ']' at position {i} closes no section (write ']]' for a bracket)"
                )
            close_section(True)
            optional = False
        elif ch == "{":
            end = text.find("}", i)
            name = text[i + 1 : end].strip() if end != -1 else ""
            if end == -1 or not name.isidentifier():
                raise ValueError(f"template {text!r}: '{{' at position {i} must start a {{column}} name")
            flush_literal()
            parts.append(("field", name))
            i = end + 1
            continue
        elif ch == "}":
            raise ValueError(f"template {text!r}: unmatched '}}' at position {i} (write '}}}}' for a brace)")
        else:
            literal.append(ch)
        i += 1
    if optional:
        raise ValueError(f"template {text!r}: a '[' section is never closed")
    close_section(False)
    return sections
