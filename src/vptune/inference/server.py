"""`vptune serve`: many tasks on one backbone behind an HTTP JSON API (FastAPI + uvicorn, the `serve` extra).

Thin over `MultiTaskModel` and `Batcher`: a request is decoded and transformed (on the event loop when the image
is small, in a thread when it is large), queued, and answered from a mixed-task batch.

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
# No `from __future__ import annotations`: FastAPI reads the route functions' annotations at run time, and
# Request is imported inside create_app (FastAPI is an optional extra).
import asyncio
import base64
import binascii
import gc
import io
import json
import logging
import math
import os
import secrets
import socket
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data import DataError, decode_image
from ..data.datasets import one_thread, open_image
from ..devices import AUTO, PRECISIONS
from ..errors import ConfigError
from .batcher import Batcher, Overloaded
from .multitask import MultiTaskModel
from .predictor import check_top_k
from .runtime import DEVICE_HELP, PRECISION_HELP, log_runtime, resolve_runtime

API_KEY_ENV = "VPTUNE_API_KEY"
PAGE = Path(__file__).with_name("page.html")
access_log = logging.getLogger("vptune.access")
INLINE_DECODE_PIXELS = 512 * 512  # uploads up to this size are decoded on the event loop, larger ones in a thread
# Large decodes at once: each holds up to --max-pixels x 3 bytes and its resized copies, so this bounds their memory
# (requests beyond it wait their turn, holding only their upload's bytes).
DECODE_THREADS = min(4, os.cpu_count() or 1)
# Open without the key, on purpose: /health (for load balancers, and the page asks it whether a key is needed), /
# (a static page that holds no data: it asks for the key and sends it with each API call) and the API's schema
# (/docs, /openapi.json: routes and fields, no task names, classes or data). Every other route needs the key.
OPEN_PATHS = ("/", "/health", "/docs", "/openapi.json")
CLIENT_CLOSED = 499  # nginx's status for a request whose client hung up before it was answered
RAW_IMAGE_TYPES = ("application/octet-stream", "image/")  # the body is the image file itself (curl --data-binary)
FIELDS = ("image", "top_k")  # what a form or JSON body may hold; anything else is a typo that would be ignored
JSON_SHAPE = "JSON body must be {\"image\": \"<base64 of the image file>\"} with optional \"top_k\""


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
    """The FastAPI application serving `model`'s tasks."""
    require_serve_extra()
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from starlette.requests import ClientDisconnect
    from fastapi.responses import HTMLResponse, JSONResponse
    from fastapi.concurrency import run_in_threadpool

    settings.validate()
    _check_runtime(model, settings)
    api_key = settings.api_key or os.environ.get(API_KEY_ENV) or None
    transform = model.transform()
    limit = int(settings.max_upload_mb * 1024 * 1024)

    def run_batch(items: list[tuple[str, torch.Tensor, int]]) -> list[list[dict]]:
        names, images, ks = zip(*items)
        return model.predict(torch.stack(images), names, ks)

    def prepare(data: bytes) -> torch.Tensor:
        with one_thread():  # a few hundred microseconds of work: OpenMP threads would only add waiting
            return transform(decode_image(io.BytesIO(data), "upload", settings.max_pixels))

    async def prepare_off_the_loop_if_large(data: bytes) -> torch.Tensor:
        # A small image decodes and resizes in ~0.2 ms: less than the CPU a thread-pool hop costs under load
        # (~0.6 ms of GIL hand-offs per request, measured), so it runs right here. A large one could stall every
        # connection for tens of ms, so it goes to the pool. An unreadable header fails fast either way.
        if _pixels(data) <= INLINE_DECODE_PIXELS:
            return prepare(data)
        async with decoding:
            return await run_in_threadpool(prepare, data)

    decoding = asyncio.Semaphore(DECODE_THREADS)

    wait = settings.max_wait_ms / 1000 if settings.max_wait_ms is not None else None
    batcher = Batcher(run_batch, max_batch=settings.max_batch, max_wait=wait,
                      max_pending=settings.max_pending)

    async def warm_up() -> None:
        # Before the first request: the per-task prompt caches are built, the batch thread's torch threads
        # started, and a full batch's time (which the automatic wait is taken from) measured; a batch of one
        # image would set the wait too short and split the first requests' batches.
        blank = torch.zeros(3, *model.data_config["input_size"][1:])
        names = list(model.tasks)
        count = max(settings.max_batch, len(names))  # every task at least once
        await batcher.warm_up([(names[i % len(names)], blank, 1) for i in range(count)])

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        await warm_up()
        # What is alive now (torch, timm, the model, FastAPI) lives as long as the server: kept out of the cyclic
        # collector's view, a full collection does not walk it. One that did was measured at 236 ms under load,
        # a pause every request in flight waited for.
        gc.collect()
        gc.freeze()
        yield
        await batcher.stop()  # every accepted request is answered before the process ends
        gc.unfreeze()

    def authorised(request: Request) -> None:
        if api_key is None or request.url.path in OPEN_PATHS:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.encode(), api_key.encode()):
            raise HTTPException(401, "missing or wrong API key: send the header 'Authorization: Bearer KEY'",
                                headers={"WWW-Authenticate": "Bearer"})

    app = FastAPI(title="vptune", lifespan=lifespan, docs_url="/docs", redoc_url=None, openapi_url="/openapi.json",
                  swagger_ui_oauth2_redirect_url=None, dependencies=[Depends(authorised)])
    app.state.batcher = batcher
    app.add_middleware(AccessLog)

    @app.exception_handler(RequestValidationError)
    async def one_line_validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        # FastAPI's own answer is a 422 with a list of pydantic records; every other error here is 400 and a line
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"][1:]) or str(first["loc"][0])
        return JSONResponse({"detail": f"{where}: {first['msg']}, got {first.get('input')!r}"}, status_code=400)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return PAGE.read_text()

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "tasks": len(model.tasks), "auth": api_key is not None,
                "device": str(model.device), "precision": model.precision,
                "pending": batcher.pending, "max_wait_ms": round(1000 * batcher.wait, 2),
                "quiet_ms": round(1000 * batcher.quiet, 2)}

    @app.get("/v1/tasks")
    def tasks() -> dict:
        return {"tasks": [describe_task(model, name) for name in model.tasks]}

    @app.post("/v1/tasks/{name}/predict")
    async def predict(name: str, request: Request, top_k: int | None = None):
        if name not in model.tasks:
            raise HTTPException(404, f"no task {name!r}; this server has: {', '.join(model.tasks)}")
        unknown = sorted(set(request.query_params) - {"top_k"})
        if unknown:
            raise HTTPException(400, f"unknown query parameter(s) {unknown}; this route takes top_k")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in ("multipart/form-data", "application/json") and not content_type.startswith(
                RAW_IMAGE_TYPES):
            raise HTTPException(415, f"content type {content_type or 'none'!r} is not supported: send the image as "
                                     f"multipart/form-data (field 'image'), as application/json {{\"image\": BASE64}}, "
                                     f"or as the body itself (image/png, image/jpeg, ...)")
        try:
            with batcher.slot():  # taken first: a request the queue cannot take is not even read
                body = await _read_body(request, limit)
                data, requested_k = await _image_bytes(request, body, content_type)
                k = top_k if top_k is not None else requested_k if requested_k is not None else settings.top_k
                try:
                    check_top_k(k, name="top_k")
                    image = await prepare_off_the_loop_if_large(data)
                except (DataError, ConfigError) as err:
                    raise HTTPException(400, str(err)) from None
                top, batch_size = await batcher.submit((name, image, k), in_slot=True)
        except Overloaded as err:
            raise HTTPException(503, f"server busy ({err}); retry shortly", headers={"Retry-After": "1"}) from None
        return JSONResponse({"task": name, "top": top}, headers={"X-Batch-Size": str(batch_size)})

    async def _read_body(request: Request, limit: int) -> bytes:
        too_big = f"upload over the limit of {settings.max_upload_mb:g} MB (--max-upload-mb)"
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise HTTPException(413, too_big)
        body = bytearray()
        try:
            async for chunk in request.stream():  # chunked uploads have no length to check up front
                body += chunk
                if len(body) > limit:
                    raise HTTPException(413, too_big)
        except ClientDisconnect:  # no one to answer: one access-log line, no traceback
            raise HTTPException(CLIENT_CLOSED, "the client closed the connection during the upload") from None
        return bytes(body)

    async def _image_bytes(request: Request, body: bytes, content_type: str) -> tuple[bytes, int | None]:
        if content_type == "application/json":
            return _json_image(body)
        if content_type != "multipart/form-data":  # a raw image body
            return body, None

        async def replay() -> dict:  # the body was already read (with its size limit); let the form parser see it
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form()
        except Exception as err:  # malformed multipart
            raise HTTPException(400, f"cannot parse the multipart body: {err}") from None
        uploads = form.getlist("image")
        if not uploads or any(isinstance(upload, str) for upload in uploads):
            raise HTTPException(400, "multipart body has no file field 'image'"
                                     + (f" (its fields: {', '.join(form.keys())})" if form else ""))
        _check_fields(form.keys(), "form")
        if len(uploads) > 1:
            raise HTTPException(400, f"send one image per request; this body has {len(uploads)} 'image' fields")
        top_k = form.get("top_k")
        return await uploads[0].read(), None if top_k is None else _form_integer(top_k)

    def _json_image(body: bytes) -> tuple[bytes, int | None]:
        try:
            payload = json.loads(body)
        except ValueError:
            raise HTTPException(400, f"the body is not valid JSON; {JSON_SHAPE}") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("image"), str):
            raise HTTPException(400, JSON_SHAPE)
        _check_fields(payload.keys(), "JSON")
        encoded = payload["image"]
        encoded = encoded.split(",", 1)[1] if encoded.startswith("data:") else encoded  # a data: URL
        try:
            return base64.b64decode(encoded, validate=True), payload.get("top_k")
        except (ValueError, binascii.Error) as err:
            raise HTTPException(400, f"image is not valid base64 ({err}); {JSON_SHAPE}") from None

    def _check_fields(names, body: str) -> None:
        unknown = sorted(set(names) - set(FIELDS))
        if unknown:
            raise HTTPException(400, f"unknown {body} field(s) {unknown}; the body takes {' and '.join(FIELDS)}")

    def _form_integer(value) -> int | object:
        try:
            return int(value) if isinstance(value, str) else value
        except ValueError:
            return value  # check_top_k names it (as it does a file sent as top_k)

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


def _pixels(data: bytes) -> int:
    """Width x height from the image header (no decoding); 0 if there is no readable header."""
    try:
        with open_image(io.BytesIO(data)) as image:
            return image.width * image.height
    except Exception:  # not an image: decode_image gives the reason, at once
        return 0


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


def describe_task(model: MultiTaskModel, name: str) -> dict:
    task = model.tasks[name]
    return {"name": name, "classes": model.class_names(name), "num_classes": task.head.out_features,
            "method": task.method.to_dict() if getattr(task, "method", None) else None,
            "prompt": task.prompt_config.to_dict(), "image_size": list(task.adapter.img_size)}


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


__all__ = ["ServeSettings", "create_app", "serve", "parse_task_flags", "describe_task"]
