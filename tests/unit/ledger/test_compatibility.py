"""The pure compatibility analysis: shapes, folding, unwrap detection, the draft's round trip."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ledger.comparison import compare_operations, load_rules, parse_rules
from ledger.compatibility import Answer, DifferenceSeen, analyse, fold, shape
from tests.unit.reports.report_factories import T0, operation

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=12,
)


def test_shape_folds_list_indices_and_collects_types() -> None:
    assert shape({"items": [{"sku": "a"}, {"sku": 1}], "odd key": None}) == {
        "items": {"array"},
        "items[]": {"object"},
        "items[].sku": {"string", "number"},
        '["odd key"]': {"null"},
    }


def test_fold_turns_recorded_indices_into_brackets() -> None:
    assert fold("items[3].sku") == "items[].sku"
    assert fold("$.a[0][12]") == "a[][]"
    assert fold('["x[1]"]') == '["x[1]"]'


@given(json_values)
def test_an_answer_compared_with_itself_shows_no_difference(value: object) -> None:
    pairs = [(Answer("c", "op", "v1", value), Answer("c", "op", "v2", value))]
    # The packaged V1 rules unwrap "data": compare under rules without pool translation.
    rules = parse_rules('version = "plain"\n', "plain.toml")
    result = analyse(pairs, [], rules)
    assert result.paths == ()
    assert result.breaking == ()


def test_a_wrapper_around_every_v1_answer_is_proposed_as_unwrap() -> None:
    rules = parse_rules('version = "plain"\n', "plain.toml")
    pairs = [
        (
            Answer(f"c{i}", "op", "v1", {"payload": {"a": i, "b": "x"}, "status": "ok"}),
            Answer(f"c{i}", "op", "v2", {"a": i, "b": "x"}),
        )
        for i in range(4)
    ]
    result = analyse(pairs, [], rules)
    assert result.unwraps == {"v1": "payload"}
    draft = parse_rules(result.draft, "draft.toml")
    assert draft.normalizer("v1").unwrap == ("payload",)
    # Under the draft the wrapper is translated: nothing is left to report.
    assert analyse(pairs, [], draft).paths == ()


def test_the_drafted_rename_removes_the_difference_it_was_drafted_for() -> None:
    pairs = [
        (
            Answer(f"c{i}", "op", "v1", {"user_name": "u", "n": i}),
            Answer(f"c{i}", "op", "v2", {"username": "u", "n": i}),
        )
        for i in range(3)
    ]
    result = analyse(pairs, [], load_rules())
    assert result.renames == {"v1": {"user_name": "username"}}
    assert analyse(pairs, [], parse_rules(result.draft, "draft.toml")).paths == ()


def test_a_path_v2_drops_on_some_pairs_is_breaking_pair_by_pair() -> None:
    rules = load_rules()
    pairs, seen = [], []
    for i in range(10):
        v2_result = {"name": "x"} if i >= 4 else {}
        v1 = operation(f"c{i}", "v1", T0, result={"name": "x"})
        v2 = operation(f"c{i}", "v2", T0, result=v2_result)
        pairs.append(
            (Answer(f"c{i}", "op", "v1", v1.result), Answer(f"c{i}", "op", "v2", v2_result))
        )
        compared = compare_operations(v1, v2, rules, at=T0)
        seen.append(
            DifferenceSeen(f"c{i}", "op", compared.category,
                           tuple((d.path, d.kind) for d in compared.differences))
        )  # fmt: skip
    result = analyse(pairs, seen, rules, breaking_share=0.3)
    assert result.paths == ()  # some V2 answers have it: not a path only V1 has
    assert [(b.path, b.change, b.share) for b in result.breaking] == [("name", "removed", 0.4)]
    assert analyse(pairs, seen, rules, breaking_share=0.5).breaking == ()
