"""Numbers as users write and read them: exponent numbers YAML leaves as text, counts in words, signed
percentages that never read -0.0%, and the report lines built with them."""

import pytest

from torchzebra._numbers import counted, percent, signed_percent, yaml_numbers
from torchzebra.reports.summary import budget_markdown


def test_exponent_text_becomes_a_number_and_other_text_stays():
    assert yaml_numbers({"a": "1.0e9", "b": ["1e-3", "-2E+2", ".5e1"], "c": "resnet18", "d": "1e", "e": 3}) == {
        "a": 1e9, "b": [1e-3, -200.0, 5.0], "c": "resnet18", "d": "1e", "e": 3}


@pytest.mark.parametrize("value, words", [(1, "1 point"), (1.0, "1 point"), (0, "0 points"), (0.5, "0.5 points"),
                                          (2, "2 points")])
def test_counted_says_point_or_points(value, words):
    assert counted(value, "point") == words


@pytest.mark.parametrize("fraction, text", [(0.123, "+12.3%"), (-0.04, "-4.0%"), (-0.0004, "+0.0%"), (0.0, "+0.0%"),
                                            (-0.0, "+0.0%")])
def test_signed_percent_never_reads_minus_zero(fraction, text):
    assert signed_percent(fraction) == text


def test_a_budget_table_says_point_or_points():
    assert "within 1 point of top-1" in budget_markdown([], 1.0)
    assert "within 0.5 points of top-1" in budget_markdown([], 0.5)


@pytest.mark.parametrize("fraction, text", [(0.1234, "12.3%"), (-1e-9, "0.0%"), (0.0, "0.0%"), (-0.051, "-5.1%")])
def test_percent_never_reads_minus_zero(fraction, text):
    assert percent(fraction) == text
