"""Every bound of the bounded JSON decoder (`cds.fhir.safejson`), and its agreement with json.loads."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cds.fhir.safejson import GC_PAUSE_BYTES, PARSER_MAX_DEPTH, JsonRejected, depth_message, loads_bounded


def _nested(depth: int, open_: bytes = b"[", close: bytes = b"]") -> bytes:
    return open_ * depth + close * depth


@pytest.mark.parametrize(
    "value",
    [
        {"resourceType": "Patient", "id": "p", "birthDate": "1980-01-01", "active": True, "x": None},
        [1, -2, 3.5, 1e300, -0.0, 12345678901234567, "é😀", {"a": []}],
        "a string",
        12,
        None,
    ],
)
def test_accepted_documents_equal_json_loads(value: Any) -> None:
    raw = json.dumps(value).encode()
    assert loads_bounded(raw) == json.loads(raw)
    assert loads_bounded(raw.decode()) == json.loads(raw)


def test_surrogate_pairs_and_a_utf8_bom_are_fine() -> None:
    assert loads_bounded(b'\xef\xbb\xbf{"x": "\\ud83d\\ude00"}') == {"x": "😀"}
    assert loads_bounded('\ufeff{"x": 1}') == {"x": 1}


@pytest.mark.parametrize("depth", [9, 65, 500, PARSER_MAX_DEPTH - 1, PARSER_MAX_DEPTH, PARSER_MAX_DEPTH + 1, 10_000])
def test_depth_error_is_reported_as_such_at_any_depth(depth: int) -> None:
    # regression: 10,000 levels used to say "not valid JSON" (the recursion limit tripped first)
    for raw in (_nested(depth), _nested(depth, b'{"a":', b"}")[:-depth] + b"1" + b"}" * depth):
        with pytest.raises(JsonRejected) as caught:
            loads_bounded(raw, max_depth=8)
        assert str(caught.value) == depth_message(8)


def test_depth_limit_is_exact() -> None:
    assert loads_bounded(_nested(8), max_depth=8) == json.loads(_nested(8))
    with pytest.raises(JsonRejected, match="deeper than 8"):
        loads_bounded(_nested(9), max_depth=8)
    wide = b"[" + b",".join([_nested(7)] * 1000) + b"]"
    assert len(loads_bounded(wide, max_depth=8)) == 1000


def test_150000_levels_with_a_syntax_error_after_the_limit_still_name_the_depth() -> None:
    with pytest.raises(JsonRejected, match="nested deeper than 64"):
        loads_bounded(b"[" * 150_000 + b"}")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"[NaN]", "not valid JSON"),
        (b"[Infinity]", "not valid JSON"),
        (b"[-Infinity]", "not valid JSON"),
        (b"[1e999]", "out of range"),
        (b"[-1e400]", "out of range"),
        (b"[" + b"9" * 5000 + b"]", "out of range"),
        (b'["\\ud800"]', "surrogates"),
        (b'{"\\udfff": 1}', "surrogates"),
        (b'["\xed\xa0\x80"]', "surrogates"),
        (b'["\xff\xfe"]', "UTF-8"),
        (b'{"a": 1', "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1,]", "not valid JSON"),
    ],
)
def test_refusals_name_the_bound_and_quote_nothing(raw: bytes, reason: str) -> None:
    with pytest.raises(JsonRejected) as caught:
        loads_bounded(raw)
    message = str(caught.value)
    assert reason in message
    assert "ud800" not in message
    assert "9999" not in message


def test_a_lone_surrogate_in_text_input_is_refused() -> None:
    with pytest.raises(JsonRejected):
        loads_bounded('["\ud800"]')


def test_max_depth_must_stay_below_the_parser_limit() -> None:
    with pytest.raises(ValueError, match="below"):
        loads_bounded(b"[]", max_depth=PARSER_MAX_DEPTH)


def test_a_large_document_is_decoded_with_the_collector_paused_then_resumed() -> None:
    import gc

    big = json.dumps({"entry": [{"resource": {"id": str(i), "x": [i, {"y": "z"}]}} for i in range(20_000)]}).encode()
    assert len(big) > GC_PAUSE_BYTES
    assert gc.isenabled()
    assert len(loads_bounded(big)["entry"]) == 20_000
    assert gc.isenabled(), "the collector runs again after the decode"
    with pytest.raises(JsonRejected):
        loads_bounded(big[:-1])
    assert gc.isenabled(), "and after a refusal"
    gc.disable()
    try:
        loads_bounded(big)
        assert not gc.isenabled(), "a collector disabled by someone else stays disabled"
    finally:
        gc.enable()


json_trees = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**31), 2**31) | st.text(max_size=3),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=2), children, max_size=3),
    max_leaves=40,
)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


@settings(max_examples=300, deadline=None, database=None)
@given(json_trees, st.integers(1, 10))
def test_the_depth_bound_is_exact_on_any_tree(tree: Any, max_depth: int) -> None:
    # the fast level walk (gc-tracked containers) must agree with a plain recursive depth
    raw = json.dumps(tree).encode()
    if _depth(tree) <= max_depth:
        assert loads_bounded(raw, max_depth=max_depth) == json.loads(raw)
    else:
        with pytest.raises(JsonRejected, match=f"deeper than {max_depth} levels"):
            loads_bounded(raw, max_depth=max_depth)


@pytest.mark.parametrize("leaf", [b"{}", b'{"a": 1}', b"[]", b"[1]", b'{"a": "x", "b": null}'])
@pytest.mark.parametrize("depth", [7, 8, 9])
def test_leaf_containers_count_as_a_level(leaf: bytes, depth: int) -> None:
    raw = b"[" * (depth - 1) + leaf + b"]" * (depth - 1)
    if depth <= 8:
        assert loads_bounded(raw, max_depth=8) == json.loads(raw)
    else:
        with pytest.raises(JsonRejected, match="deeper than 8"):
            loads_bounded(raw, max_depth=8)
