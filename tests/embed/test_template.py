"""Item text templates: fields, optional sections, escapes, and errors that point at the fault."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from genrec.embed.config import DEFAULT_TEMPLATE
from genrec.embed.template import Template


def test_default_template_drops_sections_of_missing_fields():
    t = Template(DEFAULT_TEMPLATE)
    full = {"title": "Red Lipstick", "brand": "Glow", "categories": ["Beauty", "Lips"]}
    assert t.render(full) == "Red Lipstick. Brand: Glow. Categories: Beauty, Lips."
    assert t.render({**full, "brand": None}) == "Red Lipstick. Categories: Beauty, Lips."
    assert t.render({**full, "brand": "  "}) == "Red Lipstick. Categories: Beauty, Lips."
    assert t.render({**full, "categories": []}) == "Red Lipstick. Brand: Glow."
    assert t.render({**full, "title": None}) == "Brand: Glow. Categories: Beauty, Lips."
    assert t.render({"title": None, "brand": None, "categories": None}) == ""
    assert t.fields == ["brand", "categories", "title"]


def test_list_separator_escapes_and_required_fields():
    t = Template("{title} [[{brand}]] {{x}} [by {brand}]")
    assert t.render({"title": "A", "brand": "B"}) == "A [B] {x} by B"
    assert t.render({"title": "A", "brand": None}) == "A [] {x}"
    assert Template("{categories}").render({"categories": ["a", None, "b"]}, " > ") == "a > b"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no fields", "names no column"),
        ("[{title}", "never closed"),
        ("{title}]", "closes no section"),
        ("[[{title}] [x]", "closes no section"),
        ("[a [{title}]]", "cannot nest"),
        ("{title", "must start a {column}"),
        ("{1x}", "must start a {column}"),
        ("{title}}", "unmatched"),
    ],
)
def test_malformed_templates_are_rejected(text, message):
    with pytest.raises(ValueError, match=message):
        Template(text)


def test_unknown_columns_are_named():
    with pytest.raises(ValueError, match=r"names column\(s\) price .* it has: title, brand"):
        Template("{title} {price}").check_columns(["title", "brand"])


words = st.text(
    alphabet=st.characters(blacklist_characters="[]{}", blacklist_categories=("Cs",)), max_size=12
)


@given(title=st.one_of(st.none(), words), brand=st.one_of(st.none(), words))
def test_rendering_matches_a_plain_reference(title, brand):
    rendered = Template("[T: {title}; ][B: {brand}]").render({"title": title, "brand": brand})
    parts = []
    if title and title.strip():
        parts.append(f"T: {title.strip()}; ")
    if brand and brand.strip():
        parts.append(f"B: {brand.strip()}")
    assert rendered == " ".join("".join(parts).split())
