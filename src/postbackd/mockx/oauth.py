"""OAuth 1.0a HMAC-SHA1 verification, as X does it for every Ads API call.

Deliberately independent of postbackd's own signer: the signature base string is rebuilt
with oauthlib's RFC 5849 primitives, so a mistake in the daemon's signer shows up as a 401
here instead of being repeated on both sides.
"""

from __future__ import annotations

import functools
import hmac
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from oauthlib.oauth1.rfc5849 import signature

from postbackd.mockx.config import MockAccount


class OAuthRejected(Exception):
    """The call is not authenticated; the message says why and holds no secret."""


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """What one OAuth token may do, built once per token and looked up once per request.

    It is also the "client" of oauthlib's `sign_hmac_sha1_with_client`: the two secrets of
    the HMAC key (RFC 5849 3.4.2), the partner's and the token's."""

    account_ids: tuple[str, ...]
    client_secret: str = field(repr=False)
    resource_owner_secret: str = field(repr=False)


def token_grants(consumer_secret: str, accounts: Iterable[MockAccount]) -> dict[str, TokenGrant]:
    ids: dict[str, list[str]] = {}
    secrets: dict[str, str] = {}
    for account in accounts:
        ids.setdefault(account.token, []).append(account.id)
        secrets[account.token] = account.secret
    return {token: TokenGrant(tuple(ids[token]), consumer_secret, secrets[token]) for token in ids}


# The base string URI depends only on scheme, host and path: a handful of distinct values.
@functools.lru_cache(maxsize=1024)
def _base_string_uri(url: str) -> str:
    return signature.base_string_uri(url)


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
        self,
        method: str,
        url: str,
        query_params: list[tuple[str, str]],
        authorization: str | None,
    ) -> str:
        """The token of a correctly signed call; `url` is scheme://host/path, no query."""
        if not authorization:
            raise OAuthRejected("missing OAuth Authorization header")
        try:
            header_params = signature.collect_parameters(
                headers={"Authorization": authorization}, exclude_oauth_signature=False
            )
        except ValueError:
            raise OAuthRejected("malformed OAuth Authorization header") from None
        oauth = dict(header_params)
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
        params = query_params + [p for p in header_params if p[0] != "oauth_signature"]
        base = signature.signature_base_string(
            method,  # type: ignore[arg-type]  # any method: X answers GET and POST
            _base_string_uri(url),
            signature.normalize_parameters(params),  # type: ignore[arg-type]  # takes pairs
        )
        expected = str(signature.sign_hmac_sha1_with_client(base, grant))
        if not hmac.compare_digest(expected, oauth.get("oauth_signature", "")):
            raise OAuthRejected("invalid signature")
        return token
