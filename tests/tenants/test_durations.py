import pytest

from cdnctl.tenants.durations import format_duration, parse_duration
from cdnctl.tenants.problems import InputError


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(0, 0), (30, 30), ("30s", 30), ("5m", 300), ("1h", 3600), ("7d", 604800), (" 2m ", 120)],
)
def test_accepted_forms(value, seconds):
    assert parse_duration(value, maximum=10**9) == seconds


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (-1, "must not be negative"),
        ("-5s", "not a duration"),
        ("5 m", "not a duration"),
        ("5w", "not a duration"),
        ("1.5h", "not a duration"),
        (True, "not a boolean"),
        (None, "integer or a string"),
        (3.5, "integer or a string"),
        ("400d", "longer than the maximum of 365d"),
        (10**12, "longer than the maximum"),
    ],
)
def test_rejected_forms_say_why(value, reason):
    with pytest.raises(InputError) as caught:
        parse_duration(value, maximum=365 * 86400)
    assert reason in caught.value.reason
    assert caught.value.fix


def test_minimum_is_enforced():
    with pytest.raises(InputError, match="at least 1s"):
        parse_duration(0, minimum=1, maximum=75)


@pytest.mark.parametrize(("seconds", "text"), [(86400, "1d"), (90, "90s"), (120, "2m"), (0, "0s")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text
