"""The client that talks to X: signed claim requests and account checks.

PRODUCT.md section 2, "Rate limits": claims go to X through one keep-alive pool with a bounded
number of connections, the lean `Http1Pool` built for that one hot call; the rare account
checks use an aiohttp session. Every failure comes back as an `XResponse`, never as an
exception, except cancellation, which always propagates.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from postbackd import __version__
from postbackd.x.conversion import CONVERSION_PATH
from postbackd.x.oauth import OAuth1Signer, encode_pairs, percent_encode
from postbackd.x.response import NoAnswer, RateLimitInfo, ResponseKind, XResponse
from postbackd.x.transport import Http1Pool, no_answer


@dataclass(frozen=True, slots=True)
class AccountCheck:
    """Whether a signed read with an account's token succeeded; `error` is a human reason."""

    ok: bool
    error: str | None


class XClient:
    __slots__ = (
        "_api_root",
        "_claims",
        "_conversion_path",
        "_conversion_url",
        "_session",
        "_signer",
    )

    def __init__(
        self,
        session: aiohttp.ClientSession,
        claims: Http1Pool,
        signer: OAuth1Signer,
        base_url: str,
        api_version: str,
    ) -> None:
        self._session = session
        self._claims = claims
        self._signer = signer
        # Reference, "The call": the API version is the first path segment.
        self._api_root = f"{base_url.rstrip('/')}/{api_version.strip('/')}"
        self._conversion_url = f"{self._api_root}/{CONVERSION_PATH}"
        self._conversion_path = urlsplit(self._conversion_url).path

    @classmethod
    def create(
        cls,
        *,
        base_url: str,
        api_version: str,
        signer: OAuth1Signer,
        max_connections: int,
        timeout_s: float,
        pool_timeout_s: float | None = None,
    ) -> XClient:
        """Build the client, its pool and its session; call it from a coroutine (both need
        the running loop) and `close()` it at shutdown."""
        claims = Http1Pool(
            base_url,
            max_connections=max_connections,
            timeout_s=timeout_s,
            pool_timeout_s=pool_timeout_s,
            user_agent=f"postbackd/{__version__}",
        )
        connector = aiohttp.TCPConnector(limit=max_connections)
        # The timeout covers connecting and X's silence on the socket, not the wait for a
        # free pooled connection: that queue is the engine's own back-pressure, and counting
        # it as X timing out would retry and trip the circuit breaker for no fault of X.
        timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=timeout_s, sock_read=timeout_s
        )
        session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        return cls(session, claims, signer, base_url, api_version)

    async def close(self) -> None:
        await self._claims.close()
        await self._session.close()

    async def check_account(self, account_id: str, token: str, token_secret: str) -> AccountCheck:
        """Reference, "The call": any signed read proves the credentials; 200 = authenticated."""
        url = f"{self._api_root}/accounts/{percent_encode(account_id)}"
        authorization = self._signer.authorization_encoded("GET", url, (), token, token_secret)
        started = time.perf_counter()
        try:
            # `encoded=True` stops yarl from re-quoting the path that was signed.
            async with self._session.get(
                URL(url, encoded=True),
                headers={"Authorization": authorization},
                allow_redirects=False,
            ) as answer:
                body = await answer.read()
        # CancelledError is a BaseException: it is not caught here and always propagates.
        except TimeoutError as exc:  # aiohttp's socket timeouts subclass it
            reason = f"timeout ({exc})" if str(exc) else "timeout"
            response = no_answer(started, NoAnswer.TIMEOUT, reason)
        except aiohttp.ClientError as exc:  # refused, reset, disconnected, bad answer
            reason = f"connection error: {type(exc).__name__}: {exc}"
            response = no_answer(started, NoAnswer.CONNECTION, reason)
        else:
            response = XResponse(
                status=answer.status,
                body=body,
                rate_limit=RateLimitInfo.from_headers(answer.headers),
                duration_s=time.perf_counter() - started,
            )
        if response.kind is ResponseKind.OK:
            return AccountCheck(ok=True, error=None)
        return AccountCheck(ok=False, error=response.describe())

    async def send_conversion(
        self, params: Sequence[tuple[str, str]], token: str, token_secret: str, lane: str = ""
    ) -> XResponse:
        """`POST {base}/{version}/conversion_event?<params>` with an empty body (reference).
        `lane` (the X account) has a fair share of the pool's connections."""
        # One encoding serves both the signature and the wire, so X sees exactly the query
        # that was signed.
        encoded = encode_pairs(params)
        authorization = self._signer.authorization_encoded(
            "POST", self._conversion_url, encoded, token, token_secret
        )
        query = "&".join([f"{k}={v}" for k, v in encoded])
        target = f"{self._conversion_path}?{query}" if query else self._conversion_path
        return await self._claims.post(target, authorization, lane)
