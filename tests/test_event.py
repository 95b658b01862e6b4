from __future__ import annotations

from typing import Any

import orjson
import pytest

from postbackd.errors import BadRequest, Invalid, TooLarge
from postbackd.event import Event, Malformed, parse_event, split_body

RECEIVED_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def event_item(**overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "action": "event",
        "kochava_app_id": "kodemo-game5f1c2a3b4d5e6f70",
        "kochava_device_id": "KA123",
        "device_ids": {"idfa": "ab12cd34-0000-4000-8000-00000000abcd"},
        "origination_ip": "203.0.113.7",
        "device_ua": "Game/1.0 CFNetwork",
        "device_ver": "iPhone15,2-iOS-17.2",
        "app_version": "1.4.0",
        "usertime": 1_767_225_000,
        "data": {"event_name": "purchase", "event_data": {"sum": 9.99, "currency": "USD"}},
    }
    item.update(overrides)
    return item


def parse(item: object) -> Event:
    return parse_event(item, received_at_ms=RECEIVED_MS)


def refusal(item: object) -> Invalid:
    with pytest.raises(Invalid) as caught:
        parse(item)
    return caught.value


# parse_event: a good item


def test_full_item_is_parsed() -> None:
    event = parse(event_item(event_id="evt-1", unknown_field={"kept": False}))
    assert event == Event(
        event_id="evt-1",
        app_id="kodemo-game5f1c2a3b4d5e6f70",
        device_id="KA123",
        device_ids={"idfa": "ab12cd34-0000-4000-8000-00000000abcd"},
        event_name="purchase",
        event_data={"sum": 9.99, "currency": "USD"},
        origination_ip="203.0.113.7",
        device_ua="Game/1.0 CFNetwork",
        device_ver="iPhone15,2-iOS-17.2",
        app_version="1.4.0",
        conversion_time_ms=1_767_225_000_000,
        received_at_ms=RECEIVED_MS,
    )


def test_minimal_item_takes_defaults() -> None:
    event = parse({"kochava_app_id": "koapp", "data": {"event_name": "open"}})
    assert event.device_id is None
    assert event.device_ids == {}
    assert event.event_data == {}
    assert event.origination_ip is None
    assert (event.device_ua, event.device_ver, event.app_version) == (None, None, None)
    assert event.conversion_time_ms == RECEIVED_MS


def test_generated_event_ids_are_unique_hex() -> None:
    ids = {parse(event_item()).event_id for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_null_and_empty_optional_fields_count_as_absent() -> None:
    event = parse(
        event_item(
            action=None,
            kochava_device_id="",
            origination_ip="",
            device_ua=None,
            device_ids={"idfa": "", "adid": None, "android_id": "a1b2"},
            data={"event_name": "open", "event_data": None},
        )
    )
    assert event.device_id is None
    assert event.origination_ip is None
    assert event.device_ua is None
    assert event.device_ids == {"android_id": "a1b2"}
    assert event.event_data == {}


def test_device_ids_are_kept_as_sent() -> None:
    event = parse(event_item(device_ids={"IDFA": "AbCd", "adid": "X-Y", "custom": "z"}))
    assert event.device_ids == {"IDFA": "AbCd", "adid": "X-Y", "custom": "z"}


@pytest.mark.parametrize("address", ["10.0.0.1", "2001:db8::1", "::ffff:192.0.2.1"])
def test_ip_addresses_are_accepted(address: str) -> None:
    assert parse(event_item(origination_ip=address)).origination_ip == address


# parse_event: usertime


@pytest.mark.parametrize(
    ("usertime", "expected_ms"),
    [
        (1_767_225_000, 1_767_225_000_000),
        (1_767_225_000.123, 1_767_225_000_123),
        (1_767_225_000.5, 1_767_225_000_500),
        ("1767225000", 1_767_225_000_000),
        ("1767225000.25", 1_767_225_000_250),
        (946_684_800, 946_684_800_000),  # 2000-01-01 exactly
        (RECEIVED_MS // 1000 + 86_400, RECEIVED_MS + 86_400_000),  # one day ahead exactly
    ],
)
def test_usertime_forms_become_milliseconds(usertime: object, expected_ms: int) -> None:
    assert parse(event_item(usertime=usertime)).conversion_time_ms == expected_ms


@pytest.mark.parametrize(
    ("usertime", "reason"),
    [
        (True, "not boolean"),
        (False, "not boolean"),
        ([1_767_225_000], "not array"),
        ({"s": 1}, "not object"),
        ("yesterday", "numeric string"),
        ("", "numeric string"),
        ("nan", "finite"),
        ("inf", "finite"),
        ("1e400", "finite"),
        (0, "before 2000-01-01"),
        (-5, "before 2000-01-01"),
        (946_684_799, "before 2000-01-01"),
        (RECEIVED_MS // 1000 + 86_401, "more than 1 day after"),
        (RECEIVED_MS, "not milliseconds"),  # milliseconds sent by mistake
    ],
)
def test_bad_usertime_is_refused_with_reason(usertime: object, reason: str) -> None:
    error = refusal(event_item(usertime=usertime))
    assert error.field == "usertime"
    assert reason in error.message


# parse_event: refusals, each naming its field


@pytest.mark.parametrize(
    ("overrides", "field", "reason"),
    [
        ({"action": "install"}, "action", '"event"'),
        ({"action": 1}, "action", '"event"'),
        ({"kochava_app_id": None}, "kochava_app_id", "required"),
        ({"kochava_app_id": ""}, "kochava_app_id", "empty"),
        ({"kochava_app_id": 42}, "kochava_app_id", "not number"),
        ({"kochava_app_id": "k" * 129}, "kochava_app_id", "longer than 128"),
        ({"data": None}, "data", "required"),
        ({"data": "purchase"}, "data", "not string"),
        ({"data": {}}, "data.event_name", "required"),
        ({"data": {"event_name": 7}}, "data.event_name", "not number"),
        ({"data": {"event_name": ""}}, "data.event_name", "empty"),
        ({"data": {"event_name": "e" * 257}}, "data.event_name", "longer than 256"),
        ({"data": {"event_name": "a", "event_data": [1]}}, "data.event_data", "not array"),
        ({"device_ids": ["idfa"]}, "device_ids", "not array"),
        ({"device_ids": "abc"}, "device_ids", "not string"),
        ({"device_ids": {"idfa": 123}}, "device_ids.idfa", "not number"),
        ({"device_ids": {"adid": {"v": 1}}}, "device_ids.adid", "not object"),
        ({"device_ids": {"adid": "a" * 129}}, "device_ids.adid", "longer than 128"),
        ({"origination_ip": "300.1.1.1"}, "origination_ip", "IPv4 or IPv6"),
        ({"origination_ip": "localhost"}, "origination_ip", "IPv4 or IPv6"),
        ({"origination_ip": 2130706433}, "origination_ip", "not number"),
        ({"event_id": ""}, "event_id", "empty"),
        ({"event_id": 17}, "event_id", "not number"),
        ({"event_id": "e" * 129}, "event_id", "longer than 128"),
        ({"event_id": "caf\u00e9"}, "event_id", "printable ASCII"),
        ({"event_id": "a\nb"}, "event_id", "printable ASCII"),
        ({"kochava_device_id": True}, "kochava_device_id", "not boolean"),
        ({"device_ua": ["Mozilla"]}, "device_ua", "not array"),
        ({"device_ver": 17}, "device_ver", "not number"),
        ({"app_version": 1.4}, "app_version", "not number"),
    ],
)
def test_refusals_name_the_field_and_reason(
    overrides: dict[str, Any], field: str, reason: str
) -> None:
    error = refusal(event_item(**overrides))
    assert error.field == field
    assert field in error.message  # the message alone says which field
    assert reason in error.message
    assert error.status == 422


@pytest.mark.parametrize(("item", "kind"), [([1], "array"), ("e", "string"), (None, "null")])
def test_item_must_be_an_object(item: object, kind: str) -> None:
    assert refusal(item).message == f"an event must be a JSON object, not {kind}"


def test_malformed_line_is_refused_with_its_reason() -> None:
    assert refusal(Malformed("line 3: malformed JSON")).message == "line 3: malformed JSON"


# Event storage


def test_event_round_trips_through_json() -> None:
    event = parse(event_item(data={"event_name": "lvl", "event_data": {"level": 3, "a": [1]}}))
    stored = event.to_json()
    assert isinstance(stored, bytes)
    assert Event.from_json(stored) == event


def test_stored_form_drops_unknown_fields() -> None:
    stored = orjson.loads(parse(event_item(partner_blob="x" * 50)).to_json())
    assert "partner_blob" not in stored
    assert "partner_blob" not in str(stored)


# split_body


def test_single_object_is_one_item() -> None:
    assert split_body(b'{"a": 1}', "application/json", max_items=10) == [{"a": 1}]


def test_array_items_are_returned_in_order() -> None:
    assert split_body(b'[{"a": 1}, 2, {"b": 3}]', "application/json", max_items=10) == [
        {"a": 1},
        2,
        {"b": 3},
    ]


def test_array_of_mixed_good_and_bad_items() -> None:
    body = orjson.dumps([event_item(), event_item(usertime=True), "x", event_item()])
    outcomes: list[str | None] = []
    for item in split_body(body, "application/json", max_items=10):
        try:
            parse(item)
        except Invalid as error:
            outcomes.append(error.field or error.message)
        else:
            outcomes.append(None)
    assert outcomes == [None, "usertime", "an event must be a JSON object, not string", None]


def test_ndjson_bad_line_in_the_middle_costs_only_itself() -> None:
    body = b'{"n": 1}\n\n{"n": 2\r\n  \n{"n": 3}\r\n'
    items = split_body(body, "application/x-ndjson; charset=utf-8", max_items=10)
    assert items[0] == {"n": 1}
    assert items[2] == {"n": 3}
    bad = items[1]
    assert isinstance(bad, Malformed)
    assert bad.reason.startswith("line 3: malformed JSON: ")
    assert len(items) == 3  # blank lines take no index


def test_ndjson_line_with_bad_bytes_gives_its_body_offset() -> None:
    body = b'{"n": 1}\n{"n": "\xff"}\n{"n": 3}'
    items = split_body(body, "application/x-ndjson", max_items=10)
    assert items[0] == {"n": 1}
    assert items[1] == Malformed("line 2: not valid UTF-8 at byte offset 16")
    assert items[2] == {"n": 3}


def test_ndjson_is_detected_without_its_content_type() -> None:
    body = b'{"n": 1}\n{"n": 2\n{"n": 3}\n'
    items = split_body(body, "application/json", max_items=10)
    assert items[0] == {"n": 1}
    assert isinstance(items[1], Malformed)
    assert items[2] == {"n": 3}


def test_single_ndjson_line_is_one_item() -> None:
    assert split_body(b'{"n": 1}\n', "application/x-ndjson", max_items=1) == [{"n": 1}]


@pytest.mark.parametrize(
    "body",
    [b'{"a": 1', b'[{"a": 1}, {"b"', b'{\n  "a": 1,\n  "b": [\n', b'[\n  {"a": 1},\n  {"b": 2}\n'],
)
def test_truncated_json_is_a_bad_request_with_position(body: bytes) -> None:
    with pytest.raises(BadRequest) as caught:
        split_body(body, "application/json", max_items=10)
    assert caught.value.message.startswith("the body is not valid JSON: ")
    assert "line " in caught.value.message
    assert caught.value.status == 400


def test_non_utf8_body_is_a_bad_request_with_offset() -> None:
    with pytest.raises(BadRequest, match=r"not valid UTF-8 at byte offset 7$"):
        split_body(b'{"a": "\xc3\x28"}', "application/json", max_items=10)


@pytest.mark.parametrize("body", [b"", b"  \n\r\n\t"])
def test_empty_body_is_a_bad_request(body: bytes) -> None:
    for content_type in ("application/json", "application/x-ndjson"):
        with pytest.raises(BadRequest, match="empty"):
            split_body(body, content_type, max_items=10)


@pytest.mark.parametrize(
    ("body", "kind"), [(b'"e"', "string"), (b"3", "number"), (b"null", "null")]
)
def test_scalar_body_is_a_bad_request(body: bytes, kind: str) -> None:
    with pytest.raises(BadRequest, match=f"not {kind}$"):
        split_body(body, "application/json", max_items=10)


def test_byte_order_mark_is_ignored() -> None:
    assert split_body(b'\xef\xbb\xbf{"a": 1}', "application/json", max_items=1) == [{"a": 1}]


def test_item_limit_of_an_array() -> None:
    assert len(split_body(b"[1, 2, 3]", "application/json", max_items=3)) == 3
    with pytest.raises(TooLarge) as caught:
        split_body(b"[1, 2, 3, 4]", "application/json", max_items=3)
    assert caught.value.code == "too_many_items"
    assert caught.value.status == 413
    assert "3" in caught.value.message


def test_item_limit_of_ndjson_counts_lines_not_blanks() -> None:
    assert len(split_body(b"1\n\n2\n\n3\n\n", "application/x-ndjson", max_items=3)) == 3
    with pytest.raises(TooLarge, match="more than 3 events") as caught:
        split_body(b"1\n2\n{\n4", "application/x-ndjson", max_items=3)
    assert caught.value.code == "too_many_items"


def test_the_ipv4_fast_path_agrees_with_ipaddress() -> None:
    import ipaddress
    import random

    from postbackd.event import _DOTTED_QUAD

    rng = random.Random(7)
    pieces = ["0", "1", "00", "01", "9", "10", "99", "100", "199", "255", "256", "999", "",
              "a", "-1", "+1", " 1", "1 ", "١", "0x1"]  # fmt: skip
    for _ in range(20_000):
        address = ".".join(rng.choice(pieces) for _ in range(rng.choice([3, 4, 4, 4, 5])))
        try:
            ipaddress.IPv4Address(address)
            valid = True
        except ValueError:
            valid = False
        # The fast path may only say yes to what ipaddress accepts (a no falls back to it).
        assert not _DOTTED_QUAD.fullmatch(address) or valid, address
        if valid:
            assert _DOTTED_QUAD.fullmatch(address), address
