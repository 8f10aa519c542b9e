"""`vptune serve`: many tasks on one backbone behind an HTTP JSON API (FastAPI + uvicorn, the `serve` extra).

Thin over `MultiTaskModel` and `Batcher`: a request is decoded and transformed (on the event loop when the image
is small, in a thread when it is large), queued, and answered from a mixed-task batch. This file holds the settings,
the app's wiring and the process; what each route does is `routes.py`, reading an upload `uploads.py`.

    GET  /                          a small page: pick a task, drop an image, see the top-k as bars
    GET  /health                    {"status": "ok", "device": ..., "precision": ..., ...} (never needs the API key)
    GET  /v1/tasks                  names, classes, method, prompt config, image size
    POST /v1/tasks/{name}/predict   an image (multipart field "image", JSON {"image": base64}, or the image file
                                    itself as the body, Content-Type image/* or application/octet-stream) -> top-k;
                                    top_k from the query, the form or the JSON

Errors are JSON {"detail": reason}: unknown task 404; not an image, a corrupt image or one over the pixel limit
400, as is a malformed body, an unknown field or query parameter, or a bad top_k; unsupported content type 415;
an upload over the size limit 413; a full queue 503 with Retry-After (before the upload is read); a missing or
wrong bearer token 401 (on every route but OPEN_PATHS). A client that hangs up mid-upload is one access-log line
with status 499. The server keeps serving after each.
"""
import json
import logging
import math
import os
import socket
import time
from dataclasses import dataclass, field

import torch

from ..devices import AUTO, PRECISIONS
from ..errors import ConfigError
from .multitask import MultiTaskModel
from .predictor import check_top_k
from .runtime import DEVICE_HELP, PRECISION_HELP, log_runtime, resolve_runtime

API_KEY_ENV = "VPTUNE_API_KEY"
access_log = logging.getLogger("vptune.access")
# Open without the key, on purpose: /health (for load balancers, and the page asks it whether a key is needed), /
# (a static page that holds no data: it asks for the key and sends it with each API call) and the API's schema
# (/docs, /openapi.json: routes and fields, no task names, classes or data). Every other route needs the key.
OPEN_PATHS = ("/", "/health", "/docs", "/openapi.json")


def _setting(default, help: str, choices: tuple[str, ...] | None = None, **kwargs):
    return field(default=default, metadata={"help": help, "choices": choices}, **kwargs)


@dataclass
class ServeSettings:
    """What `vptune serve` takes besides the tasks (each is a flag of the same name, with the field's help)."""
    host: str = _setting("127.0.0.1", "address to bind (127.0.0.1: this machine only; 0.0.0.0: every interface)")
    port: int = _setting(8000, "TCP port")
    max_batch: int = _setting(32, "most images in one forward pass")
    max_wait_ms: float | None = _setting(None, "how long the first request of a batch waits for others (ms; default: "
                                               "from the recent batch run times, see the README)")
    max_pending: int = _setting(256, "queued requests before answering 503")
    max_upload_mb: float = _setting(10.0, "request body limit (413 above it)")
    max_pixels: int = _setting(16_000_000, "decoded image limit for an upload (400 above it; a 12-megapixel "
                                           "photo fits; training's limit is 40 million)")
    top_k: int = _setting(5, "classes returned when a request does not say")
    api_key: str | None = _setting(None, "require 'Authorization: Bearer KEY' on every route but "
                                         f"{', '.join(OPEN_PATHS)} (default: $VPTUNE_API_KEY)", repr=False)
    # No --compile: a batch's size and task mix change from one request to the next, and each new shape would
    # recompile (seconds) while requests wait.
    device: str = _setting(AUTO, DEVICE_HELP)
    precision: str = _setting(AUTO, PRECISION_HELP, choices=PRECISIONS)

    def runtime(self) -> tuple[str, str]:
        """(device, precision) with `auto` resolved on this machine; a ConfigError if either cannot run here."""
        return resolve_runtime(self.device, self.precision)

    def validate(self) -> None:
        for name in ("max_batch", "max_pending", "max_pixels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.max_wait_ms is not None and not 0 <= self.max_wait_ms < math.inf:
            raise ConfigError(f"--max-wait-ms must be a number >= 0, got {self.max_wait_ms}")
        if not 0 < self.max_upload_mb < math.inf:  # 0 would answer every upload with 413
            raise ConfigError(f"--max-upload-mb must be a number > 0, got {self.max_upload_mb}")
        if not 0 <= self.port < 65536:
            raise ConfigError(f"--port must be 0..65535, got {self.port}")
        check_top_k(self.top_k)
        self.runtime()
        for given, origin in ((self.api_key, "--api-key"), (os.environ.get(API_KEY_ENV), f"${API_KEY_ENV}")):
            if given is not None and not given.strip():  # an unset $KEY typed as --api-key "$KEY"
                raise ConfigError(f"{origin} is empty, which would serve without authentication; give the key, or "
                                  f"leave {origin} out to serve without one on purpose")


def parse_task_flags(values: list[str]) -> dict[str, str]:
    """["name=dir", ...] -> {name: dir}, refusing malformed or repeated names."""
    tasks: dict[str, str] = {}
    for value in values:
        name, sep, directory = value.partition("=")
        if not sep or not name or not directory:
            raise ConfigError(f"--task {value!r}: write NAME=DIR, e.g. --task digits=runs/digits")
        if name in tasks:
            raise ConfigError(f"--task {name!r} is given twice")
        tasks[name] = directory
    return tasks


def require_serve_extra() -> None:
    """A one-line error naming the fix when FastAPI, uvicorn or python-multipart is not installed."""
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        raise ConfigError(f"vptune serve needs the serve extra ({err.name} is not installed): "
                          f"pip install 'vptune[serve]'") from err


def create_app(model: MultiTaskModel, settings: ServeSettings):
    """The FastAPI application serving `model`'s tasks: each route a method of `routes.Routes`, wired here."""
    require_serve_extra()
    from fastapi import Depends, FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse

    from .routes import Routes

    settings.validate()
    _check_runtime(model, settings)
    routes = Routes(model, settings, api_key=settings.api_key or os.environ.get(API_KEY_ENV) or None,
                    open_paths=OPEN_PATHS)
    app = FastAPI(title="vptune", lifespan=routes.lifespan, docs_url="/docs", redoc_url=None,
                  openapi_url="/openapi.json", swagger_ui_oauth2_redirect_url=None,
                  dependencies=[Depends(routes.authorise)])
    app.state.batcher = routes.batcher
    app.add_middleware(AccessLog)
    app.exception_handler(RequestValidationError)(routes.one_line_validation_error)
    app.get("/", response_class=HTMLResponse, include_in_schema=False)(routes.page)
    app.get("/health")(routes.health)
    app.get("/v1/tasks")(routes.tasks)
    app.post("/v1/tasks/{name}/predict")(routes.predict)
    return app


def _check_runtime(model: MultiTaskModel, settings: ServeSettings) -> None:
    """The settings' device and precision, where they name one (not auto), are the model's: what /health reports
    is then what was asked for."""
    device, precision = settings.runtime()
    wanted = torch.device(device)
    if settings.device != AUTO and (wanted.type, wanted.index or 0) != (model.device.type, model.device.index or 0):
        raise ConfigError(f"the settings ask for device {settings.device!r} but the model is on {model.device}; "
                          f"build the MultiTaskModel with device={settings.device!r}")
    if settings.precision != AUTO and precision != model.precision:
        raise ConfigError(f"the settings ask for precision {precision} but the model runs in {model.precision}; "
                          f"build the MultiTaskModel with precision={precision!r}")


class AccessLog:
    """One JSON line per request on the "vptune.access" logger (time, client, method, path, status, ms, batch).

    Plain ASGI rather than @app.middleware("http"): Starlette's BaseHTTPMiddleware runs each request in an extra
    task with its own streams, measured at 0.37 ms of the server's 1.39 ms CPU per request under load."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not access_log.isEnabledFor(logging.INFO):
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        response = {"status": 500, "batch": None}  # stays 500 if the app raises before answering

        async def send_and_note(message) -> None:
            if message["type"] == "http.response.start":
                response["status"] = message["status"]
                headers = dict(message.get("headers", ()))
                response["batch"] = int(headers[b"x-batch-size"]) if b"x-batch-size" in headers else None
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            client = scope.get("client")
            access_log.info(json.dumps({
                "time": round(time.time(), 3), "client": client[0] if client else None, "method": scope["method"],
                "path": scope["path"], "status": response["status"],
                "ms": round(1000 * (time.perf_counter() - started), 2), "batch": response["batch"]}))


def serve(tasks: dict[str, str], settings: ServeSettings, *, allow_download: bool = False) -> None:
    """Load the tasks onto one backbone and serve them until interrupted (SIGINT / SIGTERM finish the requests
    in flight first)."""
    settings.validate()
    require_serve_extra()
    import uvicorn

    if not tasks:
        raise ConfigError("no task to serve: give at least one --task NAME=DIR")
    listening = _listen(settings.host, settings.port)  # before loading the tasks: a taken port fails at once
    device, precision = settings.runtime()
    model = MultiTaskModel(tasks=tasks, allow_download=allow_download, device=device, precision=precision)
    log_runtime("serve", model.device, model.precision)
    app = create_app(model, settings)
    logging.getLogger("vptune.access").setLevel(logging.INFO)
    host, port = listening.getsockname()[:2]
    print(f"vptune: serving {len(tasks)} task(s) ({', '.join(tasks)}) on http://{_url_host(host)}:{port}",
          flush=True)  # the port bound, which --port 0 leaves to the system
    config = uvicorn.Config(app, access_log=False, log_level="warning", timeout_graceful_shutdown=30)
    uvicorn.Server(config).run(sockets=[listening])


def _listen(host: str, port: int) -> socket.socket:
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server((host, port), family=family)
    except OSError as err:
        raise ConfigError(f"cannot listen on {_url_host(host)}:{port}: {err.strerror or err}; choose another "
                          f"--port (--port 0 takes a free one) or --host") from None


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


__all__ = ["ServeSettings", "create_app", "serve", "parse_task_flags"]
