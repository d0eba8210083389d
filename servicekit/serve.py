"""Serving an app under uvicorn: JSON logs, TLS from the settings, a clean exit on SIGTERM."""

from __future__ import annotations

import signal
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI
from opentelemetry import trace

from servicekit.logs import configure_logging
from servicekit.settings import ServiceSettings


class _ServiceConfig(uvicorn.Config):
    """uvicorn's Config with an SSLContext made by us, not from uvicorn's file options."""

    def __init__(self, app: FastAPI, *, ssl_context: ssl.SSLContext | None, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.ssl_context = ssl_context

    def load(self) -> None:
        super().load()
        if self.ssl_context is not None:
            self.ssl = self.ssl_context


def tls_context(settings: ServiceSettings) -> ssl.SSLContext | None:
    """The server's TLS context when a certificate is configured, None for plain HTTP."""
    if not settings.tls_cert and not settings.tls_key:
        return None
    if not (settings.tls_cert and settings.tls_key):
        missing = "tls_key" if settings.tls_cert else "tls_cert"
        raise ValueError(f"TLS needs both tls_cert and tls_key; {missing} is empty")
    # Imported only when serving TLS, so plain HTTP services do not load the security stack.
    from servicekit.security.tls import server_context

    return server_context(
        settings.tls_cert,
        settings.tls_key,
        production=settings.env == "production",
        client_ca=settings.tls_ca or None,
    )


@contextmanager
def _stop_signals_end_cleanly() -> Iterator[None]:
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then raises the signal again against the
    # handlers it found, which would kill the process with the signal (exit code -15) after a
    # perfectly clean shutdown. Handlers that do nothing make that a normal return: exit 0.
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; uvicorn then leaves signals alone too
        return
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(app_factory: Callable[[], FastAPI] | FastAPI, settings: ServiceSettings) -> None:
    """Serve the app on settings.host:settings.port until SIGTERM or SIGINT, then stop gracefully;
    exit with status 3 when the server could not start.

    One process serves one app, so its tracer provider becomes the global one (for spans that
    service code starts with `trace.get_tracer(...)`) and its name goes on every log line.
    """
    app = app_factory if isinstance(app_factory, FastAPI) else app_factory()
    context = tls_context(settings)
    configure_logging(app.title, settings.log_level)
    if (tracing := getattr(app.state, "tracing", None)) is not None:
        trace.set_tracer_provider(tracing.provider)
    config = _ServiceConfig(
        app,
        ssl_context=context,
        host=settings.host,
        port=settings.port,
        log_config=None,  # our JSON handler on the root logger formats uvicorn's lines too
        access_log=False,  # the AccessLogMiddleware logs requests, with ids and routes
        lifespan="on",
    )
    server = uvicorn.Server(config)
    with _stop_signals_end_cleanly():
        server.run()
    if not server.started:
        # Startup failed (port taken, lifespan raised); uvicorn has logged why.
        raise SystemExit(3)
