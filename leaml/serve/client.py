"""A small client for the VQA service: media + question [+ options] -> the service's JSON answer.

Needs only httpx. ``VQAClient`` is synchronous, ``AsyncVQAClient`` the same for asyncio; both send
JSON with base64 media by default or a multipart upload (``multipart=True``, a third smaller on the
wire), and raise :class:`VQAClientError` with the service's stable error code on a refusal::

    with VQAClient("http://127.0.0.1:8000", api_key=os.environ["LEAML_API_KEY"]) as c:
        r = c.ask("polyp.jpg", "Is there a polyp?", options=["yes", "no"])
        print(r["answer"], r["scores"])
"""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Sequence

import httpx

Media = bytes | str | Path


class VQAClientError(RuntimeError):
    """A refusal or failure: HTTP ``status``, the service's ``code`` and ``message``, ``request_id``."""

    def __init__(self, status: int, code: str, message: str, request_id: str | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.request_id = status, code, message, request_id


def _media_bytes(media: Media) -> bytes:
    return media if isinstance(media, bytes) else Path(media).read_bytes()


def vqa_request_kwargs(media: Media, question: str, options: Sequence[str] | None = None,
                       multipart: bool = False) -> dict[str, Any]:
    """httpx ``request`` keyword arguments of one ``POST /v1/vqa``."""
    data = _media_bytes(media)
    if multipart:
        form: dict[str, Any] = {"question": question}
        if options:
            form["options"] = list(options)
        return {"files": {"file": ("media", data, "application/octet-stream")}, "data": form}
    body: dict[str, Any] = {"media": base64.b64encode(data).decode("ascii"), "question": question}
    if options is not None:
        body["options"] = list(options)
    return {"json": body}


def _result(resp: httpx.Response) -> dict:
    if resp.status_code < 400:
        return resp.json()
    try:
        err = resp.json()["error"]
        code, message, rid = err["code"], err["message"], err.get("request_id")
    except (ValueError, KeyError, TypeError):
        code, message, rid = f"http_{resp.status_code}", resp.text[:200], resp.headers.get("x-request-id")
    raise VQAClientError(resp.status_code, code, message, rid)


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class VQAClient:
    """Synchronous client; ``transport`` lets tests call an ASGI app in-process."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60.0,
                 transport: httpx.BaseTransport | None = None):
        self._http = httpx.Client(base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport)

    def ask(self, media: Media, question: str, options: Sequence[str] | None = None, multipart: bool = False) -> dict:
        """``POST /v1/vqa``: the answer, per-option scores (with options), model id, version, timing."""
        return _result(self._http.post("/v1/vqa", **vqa_request_kwargs(media, question, options, multipart)))

    def models(self) -> list[dict]:
        return _result(self._http.get("/v1/models"))["data"]

    def ready(self) -> bool:
        return self._http.get("/readyz").status_code == 200

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "VQAClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncVQAClient:
    """asyncio client with the same methods as :class:`VQAClient`."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60.0,
                 transport: httpx.AsyncBaseTransport | None = None, max_connections: int = 100):
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._http = httpx.AsyncClient(base_url=base_url, headers=_headers(api_key), timeout=timeout,
                                       transport=transport, limits=limits)

    async def ask(self, media: Media, question: str, options: Sequence[str] | None = None,
                  multipart: bool = False) -> dict:
        return _result(await self._http.post("/v1/vqa", **vqa_request_kwargs(media, question, options, multipart)))

    async def models(self) -> list[dict]:
        return _result(await self._http.get("/v1/models"))["data"]

    async def ready(self) -> bool:
        return (await self._http.get("/readyz")).status_code == 200

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncVQAClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()
