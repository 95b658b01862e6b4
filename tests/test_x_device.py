from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from postbackd.x.device import DeviceHasher, usable_device_id

IDFA = "6d92078a-8246-4ba4-ae5b-76104861e7dc"
ADID = "38400000-8CF0-11BD-B23E-10B96E40000D"


def test_ios_uses_idfa_upper_cased() -> None:
    ids = {"idfa": IDFA, "adid": ADID, "android_id": "9774d56d682e549c"}
    assert usable_device_id("ios", ids) == IDFA.upper()


def test_android_uses_adid_lower_cased() -> None:
    ids = {"idfa": IDFA, "adid": ADID, "android_id": "9774d56d682e549c"}
    assert usable_device_id("android", ids) == ADID.lower()


def test_surrounding_whitespace_is_dropped() -> None:
    assert usable_device_id("ios", {"idfa": f"  {IDFA}\n"}) == IDFA.upper()


@pytest.mark.parametrize(
    ("platform", "ids"),
    [
        ("ios", {}),
        ("ios", {"adid": ADID}),  # the other platform's id does not count
        ("android", {"idfa": IDFA}),
        ("android", {"android_id": "9774d56d682e549c"}),  # not an advertising id
        ("ios", {"idfa": ""}),
        ("ios", {"idfa": "   "}),
        ("ios", {"idfa": None}),
        ("ios", {"idfa": 12345}),
        ("ios", {"idfa": "00000000-0000-0000-0000-000000000000"}),
        ("android", {"adid": "00000000-0000-0000-0000-000000000000"}),
        ("android", {"adid": "00000000000000000000000000000000"}),
        ("android", {"adid": "{0000-0000}"}),
        ("ios", {"idfa": "0"}),
        ("ios", {"idfa": "----"}),
    ],
)
def test_unusable_ids(platform: str, ids: dict[str, object]) -> None:
    assert usable_device_id(platform, ids) is None


def test_unknown_platform_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="platform"):
        usable_device_id("windows", {"idfa": IDFA})


def test_hash_matches_independent_hmac_sha256() -> None:
    key = b"\x00partner-secret\xff" * 2
    expected = base64.b64encode(hmac.new(key, IDFA.upper().encode(), hashlib.sha256).digest())
    hasher = DeviceHasher(base64.b64encode(key).decode())
    assert hasher.hash(IDFA.upper()) == expected.decode()
    # Repeated use of the cached keyed HMAC does not carry state between ids.
    assert hasher.hash(ADID.lower()) != hasher.hash(IDFA.upper())
    assert hasher.hash(IDFA.upper()) == expected.decode()


def test_hash_pinned_vector() -> None:
    # RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
    hasher = DeviceHasher(base64.b64encode(b"Jefe").decode())
    digest = bytes.fromhex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    assert hasher.hash("what do ya want for nothing?") == base64.b64encode(digest).decode()


@pytest.mark.parametrize("bad", ["", "   ", "not base64!", "abc", "é===", "===="])
def test_bad_key_is_refused_without_quoting_it(bad: str) -> None:
    with pytest.raises(ValueError, match="HMAC key") as info:
        DeviceHasher(bad)
    if bad.strip():
        assert bad.strip() not in str(info.value)


def test_repr_hides_the_key() -> None:
    key = base64.b64encode(b"super-secret-key").decode()
    assert key not in repr(DeviceHasher(key))
