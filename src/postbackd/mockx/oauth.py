"""OAuth 1.0a HMAC-SHA1 verification, as X does it for every Ads API call.

Deliberately independent of postbackd's own signer: the signature base string is rebuilt here
from the request as received, with this module's own parameter normalisation (RFC 5849
3.4.1.3) and oauthlib's base string URI, and the tests hold every step against oauthlib's
RFC 5849 functions. A mistake in the daemon's signer shows up as a 401 here instead of being
repeated on both sides.

Every claim request is verified, so what repeats is done once: the keyed HMAC of each token,
the base string prefix of each (method, URL), the encoding of each repeated query field
(`query.parse_query`).
"""

from __future__ import annotations

import binascii
import functools
import hmac
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote

from oauthlib.oauth1.rfc5849 import signature

from postbackd.mockx.config import MockAccount
from postbackd.mockx.query import escape


class OAuthRejected(Exception):
    """The call is not authenticated; the message says why and holds no secret."""


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """What one OAuth token may do, built once per token and looked up once per request."""

    account_ids: tuple[str, ...]
    # RFC 5849 3.4.2: HMAC-SHA1 keyed with the escaped consumer secret and token secret;
    # copies of this keyed MAC skip the key schedule.
    keyed_mac: hmac.HMAC = field(repr=False)


def token_grants(consumer_secret: str, accounts: Iterable[MockAccount]) -> dict[str, TokenGrant]:
    ids: dict[str, list[str]] = {}
    secrets: dict[str, str] = {}
    for account in accounts:
        ids.setdefault(account.token, []).append(account.id)
        secrets[account.token] = account.secret
    grants = {}
    for token, account_ids in ids.items():
        key = f"{escape(consumer_secret)}&{escape(secrets[token])}"
        grants[token] = TokenGrant(tuple(account_ids), hmac.new(key.encode(), digestmod="sha1"))
    return grants


# RFC 5849 3.4.1.1: METHOD & escaped base string URI & (the normalized parameters follow).
# Scheme, host and path take a handful of values, so this is computed a handful of times.
@functools.lru_cache(maxsize=1024)
def base_string_prefix(method: str, url: str) -> str:
    """`url` is scheme://host/path without a query."""
    return f"{escape(method.upper())}&{escape(signature.base_string_uri(url))}&"


def base_string(prefix: str, params: Sequence[tuple[str, str]]) -> str:
    """The signature base string from encoded (name, value) pairs (RFC 5849 3.4.1.3.2)."""
    normalized = "&".join([f"{k}={v}" for k, v in sorted(params)])
    # Section 3.6 again on the whole: the pairs hold only unreserved characters, %XX, '='
    # and '&', so escaping those three is the full encoding.
    return prefix + normalized.replace("%", "%25").replace("=", "%3D").replace("&", "%26")


@functools.lru_cache(maxsize=4096)
def _header_item(item: str) -> tuple[str, str, str, str]:
    """(name, value, encoded name, encoded value) of one `name="value"` item; a nonce and
    a signature are new each time, the other items repeat from call to call."""
    name, sep, value = item.strip().partition("=")
    if not sep or not name:
        raise OAuthRejected("malformed OAuth Authorization header")
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if name == "oauth_signature":
        # Kept as sent: it is not part of the base string, and `verify` compares it encoded.
        return name, value, name, value
    # As oauthlib: only the values of oauth_* parameters are percent-decoded.
    if "%" in value and name.startswith("oauth_"):
        value = unquote(value)
    return name, value, escape(name), escape(value)


def header_params(authorization: str) -> list[tuple[str, str, str, str]]:
    """The parameters of an `Authorization: OAuth ...` header (RFC 5849 3.5.1) as
    (name, value, encoded name, encoded value), realm left out; a repeated name keeps its
    last value (as oauthlib)."""
    if authorization[:6].lower() != "oauth ":
        raise OAuthRejected("malformed OAuth Authorization header")
    items = {}
    for raw in authorization[6:].split(","):
        item = _header_item(raw)
        items[item[0]] = item
    items.pop("realm", None)
    return list(items.values())


def _same_signature(expected: bytes, sent: str) -> bool:
    """`sent` is the header's percent-encoded value: compared encoded the RFC 5849 way (base64
    needs only '+', '/' and '=' escaped), else decoded, for a client that encodes otherwise."""
    encoded = expected.replace(b"+", b"%2B").replace(b"/", b"%2F").replace(b"=", b"%3D")
    sent_bytes = sent.encode()
    return hmac.compare_digest(encoded, sent_bytes) or hmac.compare_digest(
        expected, unquote(sent).encode()
    )


class OAuthVerifier:
    def __init__(
        self,
        consumer_key: str,
        consumer_secret: str,
        accounts: Iterable[MockAccount],
        *,
        timestamp_skew_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._consumer_key = consumer_key
        self.grants = token_grants(consumer_secret, accounts)
        self._skew_s = timestamp_skew_s
        self._clock = clock

    def verify(
        self, prefix: str, query: Sequence[tuple[str, str]], authorization: str | None
    ) -> str:
        """The token of a correctly signed call. `prefix` is `base_string_prefix(method, url)`,
        `query` the call's query pairs encoded for the base string (`query.parse_query`)."""
        if not authorization:
            raise OAuthRejected("missing OAuth Authorization header")
        header = header_params(authorization)
        oauth = {name: value for name, value, _, _ in header}
        if oauth.get("oauth_signature_method") != "HMAC-SHA1":
            raise OAuthRejected("the signature method must be HMAC-SHA1")
        if oauth.get("oauth_version", "1.0") != "1.0":
            raise OAuthRejected("oauth_version must be 1.0")
        if not self._consumer_key or oauth.get("oauth_consumer_key") != self._consumer_key:
            raise OAuthRejected("unknown consumer key")
        token = oauth.get("oauth_token", "")
        grant = self.grants.get(token)
        if grant is None:
            raise OAuthRejected("unknown access token")
        if not oauth.get("oauth_nonce"):
            raise OAuthRejected("missing oauth_nonce")
        try:
            skew_s = abs(self._clock() - int(oauth.get("oauth_timestamp", "")))
        except ValueError:
            raise OAuthRejected("oauth_timestamp must be epoch seconds") from None
        if skew_s > self._skew_s:
            raise OAuthRejected("oauth_timestamp is too far from the server clock")
        # RFC 5849 3.4.1.3: query and header parameters, oauth_signature left out.
        params = [*query, *[(n, v) for name, _, n, v in header if name != "oauth_signature"]]
        mac = grant.keyed_mac.copy()
        mac.update(base_string(prefix, params).encode())
        expected = binascii.b2a_base64(mac.digest(), newline=False)
        if not _same_signature(expected, oauth.get("oauth_signature", "")):
            raise OAuthRejected("invalid signature")
        return token
