"""Real servers for gateway tests: any ASGI app under uvicorn in a thread, TLS optional."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from servicekit.infra.ports import free_port


class _Config(uvicorn.Config):
    def __init__(self, app: Any, *, ssl_context: ssl.SSLContext | None, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.ssl_context = ssl_context

    def load(self) -> None:
        super().load()
        if self.ssl_context is not None:
            self.ssl = self.ssl_context


class ThreadedServer:
    """uvicorn serving `app` on 127.0.0.1:`port` from a thread; start() waits until it listens."""

    def __init__(
        self, app: Any, *, port: int | None = None, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.port = port or free_port()
        self.scheme = "https" if ssl_context else "http"
        config = _Config(
            app,
            ssl_context=ssl_context,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            access_log=False,
            lifespan="on",
            ws="none",
            proxy_headers=False,  # as the gateway runs: it is the edge
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)


@contextmanager
def serving(
    app: Any, *, port: int | None = None, ssl_context: ssl.SSLContext | None = None
) -> Iterator[ThreadedServer]:
    server = ThreadedServer(app, port=port, ssl_context=ssl_context)
    server.start()
    try:
        yield server
    finally:
        server.stop()
