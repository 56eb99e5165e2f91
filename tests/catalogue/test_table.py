"""The checks on a table of new items: every problem named by file, row and column, before any work."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from genrec.catalogue import NewItemsError
from genrec.catalogue.table import check_new_items, read_items
from tests.catalogue.conftest import new_items_table

COLUMNS = {"item_id": "id", "brand": "attribute", "categories": "attribute", "title": "title"}
GOOD = [
    {"item_id": "N1", "title": "a lipstick", "brand": "Glow", "categories": ["Beauty"]},
    {"item_id": "N2", "title": "a cream", "brand": None, "categories": None},
]


def check(rows, existing=("I000",)):
    return check_new_items(new_items_table(rows), "new.parquet", COLUMNS, set(existing))


def test_good_rows_give_their_ids_in_order():
    assert check(GOOD) == ["N1", "N2"]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [*GOOD, {**GOOD[0], "title": "again"}],
            r"row 3 \(item_id 'N1'\), column 'item_id': the id repeats row 1",
        ),
        (
            [{**GOOD[0], "item_id": "I000"}],
            r"row 1 \(item_id 'I000'\), column 'item_id': the run already has",
        ),
        (
            [GOOD[0], {**GOOD[1], "title": None}],
            r"row 2 \(item_id 'N2'\), column 'title': the text is missing",
        ),
        ([{**GOOD[0], "title": "  "}], r"row 1 \(item_id 'N1'\), column 'title': the text is missing"),
        ([{**GOOD[0], "item_id": None}], r"row 1, column 'item_id': the id is empty"),
        (
            [{**GOOD[0], "item_id": " N1"}],
            r"row 1 \(item_id ' N1'\), column 'item_id': the id has leading or trailing spaces",
        ),
        ([], r"no rows; nothing to add"),
    ],
)
def test_row_problems_name_file_row_and_column(rows, message):
    with pytest.raises(NewItemsError, match=r"^new\.parquet: .*" + message):
        check(rows)


def test_several_problems_are_reported_together():
    rows = [{**GOOD[0], "item_id": "I000"}, {**GOOD[1], "title": ""}]
    with pytest.raises(NewItemsError, match=r"row 1 .*already has.*; row 2 .*text is missing"):
        check(rows)


def test_missing_and_mistyped_columns_are_named_with_what_is_expected():
    table = pa.table({"id": ["N1"], "name": ["x"]})
    with pytest.raises(
        NewItemsError, match=r"missing column\(s\) item_id, brand, categories, title;.*has: id, name"
    ):
        check_new_items(table, "new.parquet", COLUMNS, set())
    table = new_items_table(GOOD).set_column(1, "title", pa.array([1, 2]))
    with pytest.raises(NewItemsError, match=r"column 'title' holds int64, expected strings"):
        check_new_items(table, "new.parquet", COLUMNS, set())
    table = new_items_table(GOOD).set_column(3, "categories", pa.array([[1], [2]]))
    with pytest.raises(
        NewItemsError, match=r"column 'categories' holds list<item: int64>, expected strings or lists"
    ):
        check_new_items(table, "new.parquet", COLUMNS, set())


def test_all_null_and_plain_string_attributes_are_accepted():
    table = pa.table(
        {"item_id": ["N1"], "title": ["t"], "brand": pa.nulls(1), "categories": pa.array(["Beauty"])}
    )
    assert check_new_items(table, "new.parquet", COLUMNS, set()) == ["N1"]


def test_unreadable_files_are_clear_errors(tmp_path):
    with pytest.raises(NewItemsError, match=r"nope\.parquet: no such file"):
        read_items(tmp_path / "nope.parquet")
    (tmp_path / "bad.parquet").write_text("item_id,title\nN1,x\n")
    with pytest.raises(NewItemsError, match=r"bad\.parquet: not a readable parquet file"):
        read_items(tmp_path / "bad.parquet")
    pq.write_table(new_items_table(GOOD), tmp_path / "good.parquet")
    table, where, root = read_items(tmp_path / "good.parquet")
    assert table.num_rows == 2 and where.endswith("good.parquet") and root == tmp_path
