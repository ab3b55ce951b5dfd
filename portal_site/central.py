"""Talking to central over HTTPS: sign-in, token refresh, jobs, algorithm files."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx


class CentralError(Exception):
    """Central refused or could not be reached; the message says which and why."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int


def ssl_context(ca_file: str) -> ssl.SSLContext:
    """Trust the system's CAs, plus central's own CA file when one is given."""
    context = ssl.create_default_context()
    if ca_file:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as error:
            raise CentralError(f"the CA file {ca_file} cannot be used: {error}") from None
    return context


def websocket_url(central_url: str) -> str:
    base = central_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base.removeprefix("https://") + "/ws/site"
    if base.startswith("http://"):
        return "ws://" + base.removeprefix("http://") + "/ws/site"
    raise CentralError(f"the central URL must start with https:// (got {central_url!r})")


class CentralClient:
    """An HTTPS client for central's JSON API."""

    def __init__(self, *, url: str, ca_file: str = "") -> None:
        if not url.startswith(("https://", "http://")):
            raise CentralError(f"the central URL must start with https:// (got {url!r})")
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.url, verify=ssl_context(ca_file), timeout=20)

    async def close(self) -> None:
        await self._http.aclose()

    async def sign_in(self, username: str, password: str) -> TokenPair:
        body = await self._call(
            "POST", "/api/auth/token", data={"username": username, "password": password}
        )
        return TokenPair(body["access_token"], body["refresh_token"], int(body["expires_in"]))

    async def refresh(self, refresh_token: str) -> TokenPair:
        body = await self._call("POST", "/api/auth/refresh", json={"refresh_token": refresh_token})
        return TokenPair(body["access_token"], body["refresh_token"], int(body["expires_in"]))

    async def revoke(self, refresh_token: str) -> None:
        await self._call("POST", "/api/auth/revoke", json={"refresh_token": refresh_token})

    async def get_json(self, path: str, access: str) -> Any:
        return await self._call("GET", path, access=access)

    async def get_text(self, path: str, access: str) -> str:
        response = await self._send("GET", path, access=access)
        return response.text

    async def _call(self, method: str, path: str, *, access: str = "", **kwargs: Any) -> Any:
        response = await self._send(method, path, access=access, **kwargs)
        return response.json() if response.content else None

    async def _send(
        self, method: str, path: str, *, access: str = "", **kwargs: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {access}"} if access else {}
        try:
            response = await self._http.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as error:
            raise CentralError(
                f"central at {self.url} cannot be reached: {_reason(error)}"
            ) from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text[:200]
            raise CentralError(f"central says: {detail}", status=response.status_code)
        return response


def _reason(error: Exception) -> str:
    text = str(error) or type(error).__name__
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "its TLS certificate is not trusted (give the CA file of central in Settings)"
    return text
