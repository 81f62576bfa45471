"""Bad input becomes bounded, database-safe data, without raising."""

from __future__ import annotations

import json

from jobtrack.payload import REDACTED, clean_text, describe_error, jsonable, safe_repr, to_json


class ReprRaises:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


def encoded_size(value: object) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8"))


def test_nul_and_lone_surrogates_are_replaced() -> None:
    out = to_json({"a\x00b": "x\x00y", "s": "bad\ud800"}, 1000)
    text = json.dumps(out, ensure_ascii=False)
    assert "\x00" not in text and "\\u0000" not in text
    text.encode("utf-8")  # would raise on a lone surrogate
    assert out["a\ufffdb"] == "x\ufffdy"


def test_three_megabyte_argument_is_bounded() -> None:
    big = "x" * (3 * 1024 * 1024)
    out = to_json({"args": [big, list(range(100_000))], "kwargs": {}}, 64 * 1024)
    assert encoded_size(out) <= 64 * 1024
    assert "truncated" in json.dumps(out)


def test_deep_nesting_stops() -> None:
    deep: list[object] = []
    node = deep
    for _ in range(10_000):
        child: list[object] = []
        node.append(child)
        node = child
    out = to_json(deep, 10_000)
    assert encoded_size(out) <= 10_000


def test_unprintable_values_become_text() -> None:
    out = jsonable(
        {"obj": ReprRaises(), "set": {1}, "nan": float("nan"), "big": 2**70, "bytes": b"\xff\xfe"},
        10_000,
    )
    assert "ReprRaises" in out["obj"]
    assert out["set"] == [1]
    assert out["nan"] == "nan"
    assert out["big"] == str(2**70)
    assert out["bytes"].startswith("base64:")
    assert "ReprRaises" in safe_repr(ReprRaises())


def test_secret_looking_keys_are_redacted() -> None:
    keys = ("password", "token", "secret", "api_key", "authorization")
    out = jsonable({"user": "ann", "DB_Password": "p", "nested": {"auth_token": "t"}}, 10_000, keys)
    assert out == {"user": "ann", "DB_Password": REDACTED, "nested": {"auth_token": REDACTED}}


def test_clean_text_keeps_the_end_of_a_traceback() -> None:
    text = "frame\n" * 10_000 + "ValueError: the real error"
    out = clean_text(text, 500, keep="end")
    assert len(out) <= 500 and out.endswith("ValueError: the real error")


def test_describe_error_names_module_and_survives_bad_str() -> None:
    class BadStr(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    kind, message = describe_error(BadStr())
    assert kind is not None and kind.endswith("BadStr")
    assert message is not None
    assert describe_error(ValueError("x")) == ("ValueError", "x")


def test_a_huge_argument_leaves_room_for_the_rest() -> None:
    out = to_json(
        {"args": ["\x00" + "y" * 3_000_000], "kwargs": {"password": "p", "n": 1}},
        64 * 1024,
        ("password",),
    )
    assert out["kwargs"] == {"password": REDACTED, "n": 1}
    assert out["args"][0].startswith("\ufffdyyy") and out["args"][0].endswith("[truncated]")
    assert encoded_size(out) <= 64 * 1024


def test_escape_heavy_text_still_fits() -> None:
    # Control characters become \u00XX (6 bytes each) in JSON: the bound must hold.
    for size in (100, 1000, 7000, 20_000):
        out = to_json({"k": "\x01" * size, "q": '"' * size}, 8 * 1024)
        assert encoded_size(out) <= 8 * 1024, size


def test_a_wrapper_met_outside_the_task_is_described_by_what_it_carries() -> None:
    """Celery's stand-in for an unpicklable exception, described where the original is
    not at hand (say a result read back): the class it names and its arguments."""
    from celery.utils.serialization import UnpickleableExceptionWrapper

    wrapper = UnpickleableExceptionWrapper("shop.errors", "LockHeld", ("no lock",), "repr")
    assert describe_error(wrapper) == ("shop.errors.LockHeld", "no lock")
    two = UnpickleableExceptionWrapper("builtins", "ValueError", ("a", 2), "repr")
    assert describe_error(two) == ("ValueError", "('a', 2)")
    try:
        raise KeyError("unrelated")
    except KeyError:  # another exception being handled is not taken for the original
        assert describe_error(wrapper) == ("shop.errors.LockHeld", "no lock")
