"""A small async client for InfluxDB's v1 HTTP API (``/write``, ``/query``, ``/ping``).

The v1 API with an explicit ``precision`` is served by InfluxDB 1.x, 2.x (compat) and 3.x.
Errors are classified for the writer: :class:`RetryableError` (connection trouble, timeouts,
5xx, 429: try again later), :class:`RejectedError` (400: the data itself is bad) and
:class:`InfluxError` for the rest (auth, missing database: a configuration problem).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson


class InfluxError(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RetryableError(InfluxError):
    """Try the same request again later."""


class RejectedError(InfluxError):
    """InfluxDB refused (some of) the points: retrying the same body will not help."""


class DatabaseNotFound(InfluxError):
    pass


def quote_ident(name: str) -> str:
    """An InfluxQL identifier in double quotes."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_string(value: str) -> str:
    """An InfluxQL string literal in single quotes."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class InfluxClient:
    def __init__(
        self,
        url: str,
        database: str,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 15.0,
        connections: int = 32,
    ) -> None:
        self.url = url.rstrip("/")
        self.database = database
        self._auth = aiohttp.BasicAuth(username, password or "") if username else None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._connections = connections

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                auth=self._auth,
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=self._connections, enable_cleanup_closed=True),
                json_serialize=lambda o: orjson.dumps(o).decode(),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def ping(self) -> bool:
        try:
            async with self.session.get(f"{self.url}/ping", timeout=aiohttp.ClientTimeout(total=3)) as r:
                return r.status == 204
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def write(self, body: bytes, *, precision: str = "ms", retention_policy: str | None = None) -> None:
        params = {"db": self.database, "precision": precision}
        if retention_policy:
            params["rp"] = retention_policy
        try:
            async with self.session.post(f"{self.url}/write", params=params, data=body) as r:
                if r.status == 204:
                    return
                text = (await r.text())[:2000]
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise RetryableError(f"{type(exc).__name__}: {exc}") from exc
        raise _classify(r.status, text)

    async def query(
        self, q: str, *, database: str | None = None, epoch: str = "ms", method: str = "GET"
    ) -> list[dict[str, Any]]:
        """Run InfluxQL; returns the list of statement results, raising on any statement error."""
        params = {"q": q, "epoch": epoch}
        db = database if database is not None else self.database
        if db:
            params["db"] = db
        try:
            async with self.session.request(method, f"{self.url}/query", params=params) as r:
                raw = await r.read()
                status = r.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise RetryableError(f"{type(exc).__name__}: {exc}") from exc
        if status != 200:
            raise _classify(status, raw.decode("utf-8", "replace")[:2000])
        data = orjson.loads(raw)
        results: list[dict[str, Any]] = data.get("results", [])
        for result in results:
            if "error" in result:
                error = str(result["error"])
                if error.startswith("database not found"):
                    raise DatabaseNotFound(error, status)
                raise InfluxError(error, status)
        return results

    async def forward(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        data: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request as it is (for the query proxy): status, headers and the whole body.

        Sent with this client's own credentials; connection trouble raises :class:`RetryableError`.
        """
        try:
            async with self.session.request(
                method, f"{self.url}{path}", params=params, data=data, headers=headers
            ) as r:
                body = await r.read()
                return r.status, dict(r.headers), body
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise RetryableError(f"{type(exc).__name__}: {exc}") from exc

    async def execute(self, q: str, *, database: str | None = None) -> list[dict[str, Any]]:
        """Statements that change the database go by POST (InfluxDB 1.x refuses them on GET)."""
        return await self.query(q, database=database, method="POST")


def _error_text(text: str) -> str:
    try:
        return str(orjson.loads(text).get("error", text))
    except (orjson.JSONDecodeError, AttributeError):
        return text


def _classify(status: int, text: str) -> InfluxError:
    message = _error_text(text)
    if status == 429 or status >= 500:
        return RetryableError(f"HTTP {status}: {message}", status)
    if status == 400:
        return RejectedError(message, status)
    if status == 404 and "database not found" in message:
        return DatabaseNotFound(message, status)
    if status == 413:
        return RejectedError(f"request too large: {message}", status)
    return InfluxError(f"HTTP {status}: {message}", status)


def series_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Flatten a statement result into dict rows, with the series' tags merged in."""
    rows: list[dict[str, Any]] = []
    for series in result.get("series", []):
        columns = series["columns"]
        tags = series.get("tags", {})
        name = series.get("name")
        for values in series.get("values", []):
            row = dict(zip(columns, values, strict=True))
            row.update(tags)
            if name is not None:
                row.setdefault("_measurement", name)
            rows.append(row)
    return rows
