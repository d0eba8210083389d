"""Tests for the CIMI filter grammar in servicekit/cimi_filter.py."""

from datetime import UTC, datetime

import pytest
import shapely

from servicekit.cimi_filter import (
    MAX_DEPTH,
    And,
    Comparison,
    FilterError,
    GeoComparison,
    Or,
    attributes,
    parse_filter,
    to_text,
)
from servicekit.errors import InvalidInput


def c(attribute, op, value):
    return Comparison(attribute, op, value)


def column_of(text: str) -> int:
    with pytest.raises(FilterError) as caught:
        parse_filter(text)
    return caught.value.position


# --- operators ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("alpha=3", c("alpha", "=", 3)),
        ("alpha!=3", c("alpha", "!=", 3)),
        ("alpha<3", c("alpha", "<", 3)),
        ("alpha<=3", c("alpha", "<=", 3)),
        ("alpha>3", c("alpha", ">", 3)),
        ("alpha>=3", c("alpha", ">=", 3)),
        ("alpha<'m'", c("alpha", "<", "m")),
        ("alpha^='abc'", c("alpha", "^=", "abc")),
        ('alpha^="abc"', c("alpha", "^=", "abc")),
        ("alpha=='some words'", c("alpha", "==", "some words")),
        ("alpha=null", c("alpha", "=", None)),
        ("alpha!=null", c("alpha", "!=", None)),
        ("alpha=true", c("alpha", "=", True)),
        ("alpha=false", c("alpha", "=", False)),
        ("alpha='x'", c("alpha", "=", "x")),
        ("  alpha  =  3  ", c("alpha", "=", 3)),
    ],
)
def test_each_operator_parses_to_a_comparison(text, expected):
    assert parse_filter(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3=alpha", c("alpha", "=", 3)),
        ("3!=alpha", c("alpha", "!=", 3)),
        ("null=alpha", c("alpha", "=", None)),
        ("null!=alpha", c("alpha", "!=", None)),
        ("3<alpha", c("alpha", ">", 3)),
        ("3<=alpha", c("alpha", ">=", 3)),
        ("3>alpha", c("alpha", "<", 3)),
        ("3>=alpha", c("alpha", "<=", 3)),
        ("'abc'^=alpha", c("alpha", "^=", "abc")),
        ('"abc"^=alpha', c("alpha", "^=", "abc")),
        ("'w'==alpha", c("alpha", "==", "w")),
        ("[1 2]=alpha", c("alpha", "=", (1, 2))),
    ],
)
def test_a_value_on_the_left_is_normalised_as_nuvla_accepts_it(text, expected):
    assert parse_filter(text) == expected


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("a=0", 0),
        ("a=42", 42),
        ("a=-7", -7),
        ("a=3.25", 3.25),
        ("a=-0.5", -0.5),
        ("a=1e3", 1000.0),
        ("a=1.5E-7", 1.5e-7),
    ],
)
def test_numbers_are_ints_or_floats(text, value):
    parsed = parse_filter(text)
    assert parsed == c("a", "=", value)
    assert type(parsed.value) is type(value)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("a=[1 2 3]", (1, 2, 3)),
        ("a=[1,2,3]", (1, 2, 3)),
        ("a=[ 'x' , \"y\" 2 ]", ("x", "y", 2)),
        ("a=[2026-01-02 1.5]", (datetime(2026, 1, 2, tzinfo=UTC), 1.5)),
        ("a=[]", ()),
        ("a!=['x']", ("x",)),
    ],
)
def test_lists_hold_strings_numbers_and_dates(text, value):
    assert parse_filter(text).value == value


# --- attributes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "attribute",
    [
        "a",
        "alpha",
        "alpha123",
        "a_b",
        "cloud-vm-instanceid",
        "a1/b2",
        "a1/b2/c3",
        "schema-org:attr1",
        "schema-org:attr1/schema-org:attr2",
        "acl/owner",
        "and",
    ],
)
def test_valid_attributes(attribute):
    assert parse_filter(f"{attribute}=1") == c(attribute, "=", 1)


@pytest.mark.parametrize(
    "attribute", ["a-", "_a", "_", "a1/", "a/1", "a:", "schema-org:a:b", "schema-org:a/", "a//b"]
)
def test_invalid_attributes_are_refused_at_their_column(attribute):
    assert column_of(f"x=1 and {attribute}=1") == 9


def test_attributes_lists_every_attribute_used():
    parsed = parse_filter("a=1 and (b/c=2 or ns:d='x') or e intersects 'POINT(0 0)' or a=3")
    assert attributes(parsed) == {"a", "b/c", "ns:d", "e"}


# --- strings and escapes --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("a=''", ""),
        ('a=""', ""),
        (r"a='it\'s'", "it's"),
        (r'a="say \"hi\""', 'say "hi"'),
        (r"a='back\\slash'", "back\\slash"),
        (r"a='\x'", "x"),
        ("a='double \" inside single'", 'double " inside single'),
        ('a="single \' inside double"', "single ' inside double"),
        ("a='and or ( ) = null'", "and or ( ) = null"),
        ("a='exo:123-456'", "exo:123-456"),
        ("a='user/1'", "user/1"),
        ("a='ünïcødé'", "ünïcødé"),
    ],
)
def test_quoted_strings_and_backslash_escapes(text, value):
    assert parse_filter(text).value == value


# --- dates ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("2012-01", datetime(2012, 1, 1, tzinfo=UTC)),
        ("2012-01-02", datetime(2012, 1, 2, tzinfo=UTC)),
        ("2012-01-02T13:14:25Z", datetime(2012, 1, 2, 13, 14, 25, tzinfo=UTC)),
        ("2012-01-02T13:14:25.6Z", datetime(2012, 1, 2, 13, 14, 25, 600000, tzinfo=UTC)),
        ("2022-03-29T14:21:37.659Z", datetime(2022, 3, 29, 14, 21, 37, 659000, tzinfo=UTC)),
        ("2012-01-02T13:14:25-01:15", datetime(2012, 1, 2, 14, 29, 25, tzinfo=UTC)),
        ("2012-01-02T13:14:25.6+02:30", datetime(2012, 1, 2, 10, 44, 25, 600000, tzinfo=UTC)),
    ],
)
def test_unquoted_dates_become_aware_utc_datetimes(text, moment):
    value = parse_filter(f"created>={text}").value
    assert value == moment
    assert value.tzinfo is UTC


@pytest.mark.parametrize(
    "date",
    [
        "2012-13-01",
        "2012-01-99",
        "2012-01-02T13:14:25",
        "2012-01-02T13:14:25.6Q",
        "2012-01-02T25:14:25Z",
        "2012-01-02T13:14:25.6+02-30",
        "2012-01-02T13:14:25+24:00",
        "\uff12\uff10\uff11\uff12-01-02",  # full-width digits
        "12-1-2",
    ],
)
def test_invalid_dates_are_refused_at_their_column(date):
    assert column_of(f"created>{date}") == 9


def test_a_quoted_date_stays_a_string():
    assert parse_filter("a='2026-01-02'").value == "2026-01-02"


# --- geo ------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["intersects", "disjoint", "within", "contains"])
def test_each_geo_operator_takes_quoted_wkt(op):
    parsed = parse_filter(f"location {op} 'POLYGON((0 0, 1 0, 1 1, 0 0))'")
    assert parsed == GeoComparison(
        "location", op, shapely.from_wkt("POLYGON((0 0, 1 0, 1 1, 0 0))")
    )


def test_geo_wkt_may_be_double_quoted():
    assert parse_filter('geometry within "POINT(1 2)"').geometry == shapely.Point(1, 2)


@pytest.mark.parametrize(
    "text",
    [
        "geometry intersects 'any string is ok'",
        "geometry intersects 'POINT(1)'",
        "geometry intersects ''",
        "geometry intersects 3",
        "geometry intersects null",
        "geometry intersects 2012-01-02",
        "geometry intersects ['POINT(1 2)']",
    ],
)
def test_geo_operators_refuse_what_is_not_wkt_at_its_column(text):
    assert column_of(text) == 21


def test_geo_operators_need_the_attribute_on_the_left():
    assert column_of("'POINT(1 2)' intersects geometry") == 14


# --- logic, precedence and nesting ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a=1 and b=2", And((c("a", "=", 1), c("b", "=", 2)))),
        ("a=1 or b=2", Or((c("a", "=", 1), c("b", "=", 2)))),
        (
            "a=1 and b=2 or c=3 and d=4",
            Or(
                (
                    And((c("a", "=", 1), c("b", "=", 2))),
                    And((c("c", "=", 3), c("d", "=", 4))),
                )
            ),
        ),
        (
            "a=1 or b=2 and c=3",
            Or((c("a", "=", 1), And((c("b", "=", 2), c("c", "=", 3))))),
        ),
        (
            "a=1 and (b=2 or c=3) and d=4",
            And((c("a", "=", 1), Or((c("b", "=", 2), c("c", "=", 3))), c("d", "=", 4))),
        ),
        (
            "(a=1 or b=2) and c=3",
            And((Or((c("a", "=", 1), c("b", "=", 2))), c("c", "=", 3))),
        ),
        ("(a=1)", c("a", "=", 1)),
        ("((((a=1))))", c("a", "=", 1)),
        ("(3=alpha)", c("alpha", "=", 3)),
        ("a=1or b=2", Or((c("a", "=", 1), c("b", "=", 2)))),
        ("a='x'and(b=2)", And((c("a", "=", "x"), c("b", "=", 2)))),
    ],
)
def test_and_binds_tighter_than_or(text, expected):
    assert parse_filter(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a=1 and (b=2 and c=3)", And((c("a", "=", 1), c("b", "=", 2), c("c", "=", 3)))),
        ("(a=1 or b=2) or c=3", Or((c("a", "=", 1), c("b", "=", 2), c("c", "=", 3)))),
        ("a=1 or (b=2 or (c=3))", Or((c("a", "=", 1), c("b", "=", 2), c("c", "=", 3)))),
    ],
)
def test_chains_of_the_same_connective_are_flattened(text, expected):
    assert parse_filter(text) == expected


@pytest.mark.parametrize("glue", [" and ", " or "])
def test_a_thousand_terms_parse_into_one_flat_node(glue):
    parsed = parse_filter(glue.join(f"(a='{n}')" for n in range(1000)))
    assert len(parsed.terms) == 1000
    assert parsed.terms[999] == c("a", "=", "999")


def test_a_thousand_terms_round_trip_through_text():
    parsed = parse_filter(" or ".join(f"a={n} and b={n}" for n in range(1000)))
    assert parse_filter(to_text(parsed)) == parsed


def test_nesting_up_to_the_limit_parses():
    text = "(" * MAX_DEPTH + "a=1" + ")" * MAX_DEPTH
    assert parse_filter(text) == c("a", "=", 1)


def test_nesting_beyond_the_limit_is_refused_at_the_extra_parenthesis():
    text = "(" * (MAX_DEPTH + 1) + "a=1" + ")" * (MAX_DEPTH + 1)
    assert column_of(text) == MAX_DEPTH + 1


def test_very_deep_nesting_is_refused_not_crashing():
    text = "(" * 100_000 + "a=1" + ")" * 100_000
    assert column_of(text) == MAX_DEPTH + 1


# --- invalid filters ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "column"),
    [
        ("", 1),
        ("   ", 4),
        ("()", 2),
        ("alpha=beta", 7),
        ("alpha&&4", 6),
        ("alpha>true", 7),
        ("alpha>null", 7),
        ("alpha<[1 2]", 7),
        ("alpha^=3", 8),
        ("alpha^=null", 8),
        ("alpha==2012-01-02", 8),
        ("alpha=", 7),
        ("alpha", 6),
        ("=3", 1),
        ("3=4", 3),
        ("null=1", 6),
        ("a=1 and", 8),
        ("a=1 or", 7),
        ("and a=1", 5),
        ("a=1 and or b=2", 12),
        ("a=1 b=2", 5),
        ("(a=1", 1),
        ("a=1 and (b=2 or (c=3)", 9),
        ("a=1)", 4),
        ("a=1 and b=2) or c=3", 12),
        ("a=1 and ()", 10),
        ("a=1 AND b=2", 5),
        ("a=1 Or b=2", 5),
        ("a=TRUE", 3),
        ("a<>1", 3),
        ("a=>1", 3),
        ("a===1", 4),
        ("a~=1", 2),
        ("a!1", 2),
        ("a='open", 3),
        ('a="open\\"', 3),
        ("a=[1 2", 7),
        ("a=[1,]", 6),
        ("a=[,1]", 4),
        ("a=[true]", 4),
        ("a=[null]", 4),
        ("a=[[1]]", 4),
        ("a=3x", 4),
        ("a=1 andb=2", 5),
        ("a=.5", 3),
        ("a=1e400", 3),
        ("property['beta']='4'", 9),
        ("a=1 and b intersects", 21),
        ("a intersect 'POINT(1 2)'", 3),
    ],
)
def test_invalid_filters_are_refused_at_their_column(text, column):
    assert column_of(text) == column


def test_the_error_says_what_and_where():
    with pytest.raises(FilterError) as caught:
        parse_filter("a=1 and (b=2 or c=3))")
    assert caught.value.message == "Invalid CIMI filter. unexpected ')' at column 21"
    assert caught.value.detail == {"position": 21}


def test_a_filter_error_is_a_400_invalid_input():
    with pytest.raises(InvalidInput) as caught:
        parse_filter("a=")
    assert caught.value.status == 400


# --- canonical text -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "a=1",
        "a!=-3",
        "a<2.5",
        "a>=1e-05",
        "a='x'",
        r"a='it\'s \"q\" \\'",
        "a^='pre'",
        "a=='full text'",
        "a=null",
        "a!=null",
        "a=true and b=false",
        "a=[1 'x' 2026-01-02 0.5]",
        "a=[]",
        "created<2012-01-02T13:14:25.6+02:30",
        "created>2022-03-29T14:21:37.659Z",
        "3<a",
        "ns:key/sub=1 or a/b/c='y'",
        "a=1 and (b=2 or c=3) and d=4",
        "(a=1 or b=2) and (c=3 or d=4) or e=5",
        "location intersects 'POLYGON((0 0, 1 0, 1 1, 0 0))'",
        "geometry within 'POINT(1.123456789012345 -2)' and a=1",
        "a=1 and (b=2 and (c=3 or (d=4 and e=5)))",
    ],
)
def test_to_text_round_trips_to_an_equal_tree(text):
    parsed = parse_filter(text)
    assert parse_filter(to_text(parsed)) == parsed


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("  a = 'x'  ", 'a="x"'),
        ("3 < a", "a>3"),
        ("a=1 and (b=2 or c=3)", "a=1 and (b=2 or c=3)"),
        ("(a=1 and b=2) or c=3", "a=1 and b=2 or c=3"),
        ("a=[1,2]", "a=[1 2]"),
        ("d=2026-01-02", "d=2026-01-02T00:00:00Z"),
        ("g contains 'POINT(1 2)'", 'g contains "POINT (1 2)"'),
    ],
)
def test_to_text_prints_the_canonical_form(text, canonical):
    assert to_text(parse_filter(text)) == canonical
