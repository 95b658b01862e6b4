"""A plain-HTTP client of the web console, as a browser without JavaScript uses it: a
cookie jar, forms posted with the page's CSRF token, redirects seen as they come."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDictProxy

from conftest import API_TOKEN

_CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')


@dataclass
class Page:
    status: int
    text: str
    headers: CIMultiDictProxy[str]

    @property
    def location(self) -> str:
        return self.headers.get("Location", "")

    def csrf(self) -> str:
        found = _CSRF.search(self.text)
        assert found, "the page has no form with a CSRF token"
        return html.unescape(found.group(1))

    def error(self, field: str) -> str | None:
        """The refusal shown beside `field`, unescaped; None when there is none."""
        found = re.search(rf'id="{re.escape(field)}-error"[^>]*>(.*?)</p>', self.text, re.S)
        return html.unescape(found.group(1)) if found else None

    def value(self, field: str) -> str | None:
        """The value an <input> of the page holds."""
        found = re.search(rf'<input[^>]* id="{re.escape(field)}" [^>]*value="([^"]*)"', self.text)
        return html.unescape(found.group(1)) if found else None


class ConsoleClient:
    def __init__(self, base: str) -> None:
        self.base = base
        # unsafe: keep cookies of an IP address (the daemon listens on 127.0.0.1).
        self.jar = aiohttp.CookieJar(unsafe=True)
        self.session = aiohttp.ClientSession(cookie_jar=self.jar)

    async def close(self) -> None:
        await self.session.close()

    async def get(self, path: str, **kw: object) -> Page:
        async with self.session.get(self.base + path, allow_redirects=False, **kw) as r:
            return Page(r.status, await r.text(), r.headers)

    async def post(
        self, path: str, data: dict[str, str] | list[tuple[str, str]], **kw: object
    ) -> Page:
        async with self.session.post(
            self.base + path,
            data=data,
            allow_redirects=False,
            **kw,
        ) as r:
            return Page(r.status, await r.text(), r.headers)

    async def submit(
        self, form_page: str, action: str, fields: dict[str, str] | list[tuple[str, str]]
    ) -> Page:
        """Open `form_page`, then post `fields` to `action` with that page's CSRF token."""
        token = (await self.get(form_page)).csrf()
        items = list(fields.items()) if isinstance(fields, dict) else list(fields)
        return await self.post(action, [("csrf_token", token), *items])

    async def sign_in(self, token: str = API_TOKEN) -> Page:
        form = await self.get("/console/sign-in")
        return await self.post(
            "/console/sign-in", {"csrf_token": form.csrf(), "token": token, "next": "/console/"}
        )

    def cookie(self, name: str) -> str | None:
        for cookie in self.jar:
            if cookie.key == name:
                return cookie.value
        return None
