"""The pure helpers of core/ that every app uses: filters, form helpers, converters."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from django.core.exceptions import ValidationError

from core.api.rows import iso_datetime, strings
from core.filters import StrictBooleanFilter, parse_uuid
from core.forms import error_lines, local_input

SOME_UUID = uuid.UUID("6f1c2a4e-5b7d-4e8f-9a0b-1c2d3e4f5a6b")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (str(SOME_UUID), SOME_UUID),
        (f"  {SOME_UUID}\n", SOME_UUID),
        (SOME_UUID.hex, SOME_UUID),
        ("web-1", None),
        ("", None),
        (str(SOME_UUID)[:-1], None),
    ],
)
def test_parse_uuid(text, expected):
    assert parse_uuid(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        (None, None),
        ("true", True),
        ("True", True),
        ("1", True),
        ("false", False),
        ("0", False),
    ],
)
def test_strict_boolean_reads_true_false_or_nothing(text, expected):
    assert StrictBooleanFilter().field.clean(text) is expected


@pytest.mark.parametrize("text", ["yes", "no", "2", "maybe"])
def test_strict_boolean_refuses_anything_else(text):
    with pytest.raises(ValidationError):
        StrictBooleanFilter().field.clean(text)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", ""),
        ("not a time", "not a time"),
        ("2026-12-07T10:30", "2026-12-07T10:30"),
        ("2026-12-07T10:30:59+02:00", "2026-12-07T08:30"),
        (datetime(2026, 12, 7, 10, 30, tzinfo=UTC), "2026-12-07T10:30"),
        (datetime(2026, 12, 7, 10, 30), "2026-12-07T10:30"),
    ],
)
def test_local_input(value, expected):
    assert local_input(value) == expected


def test_error_lines_name_the_field_of_each_message():
    error = ValidationError({"since": ["Bad.", "Worse."], "vm": ["Unknown."]})
    assert error_lines(error) == ["since: Bad.", "since: Worse.", "vm: Unknown."]


@pytest.mark.parametrize(
    ("value", "zone", "expected"),
    [
        (datetime(2026, 12, 7, 10, 30, tzinfo=UTC), UTC, "2026-12-07T10:30:00Z"),
        (datetime(2026, 12, 7, 10, 30, 0, 5, tzinfo=UTC), UTC, "2026-12-07T10:30:00.000005Z"),
        (
            datetime(2026, 12, 7, 10, 30, tzinfo=UTC),
            timezone(timedelta(hours=1)),
            "2026-12-07T11:30:00+01:00",
        ),
    ],
)
def test_iso_datetime_renders_as_drf(value, zone, expected):
    assert iso_datetime(value, zone) == expected


def test_strings_keep_nulls():
    assert strings(["a", 1, None]) == ["a", "1", None]
