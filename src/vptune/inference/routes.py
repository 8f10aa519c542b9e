"""The server's routes and what they share: the model, the batcher, the API key, the image decoding. `create_app`
(server.py) wires these methods to their paths. Imported by the server only (FastAPI is the `serve` extra)."""
# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time.
import asyncio
import gc
import io
import os
import secrets
from typing import Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import torch
from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ..data import DataError, decode_image
from ..data.datasets import one_thread, open_image
from ..errors import ConfigError
from .batcher import Batcher, Overloaded
from .multitask import MultiTaskModel
from .masks import mask_png_base64
from .predictor import check_top_k
from .uploads import content_type, image_bytes, read_body

PAGE = Path(__file__).with_name("page.html")
INLINE_DECODE_PIXELS = 512 * 512  # uploads up to this size are decoded on the event loop, larger ones in a thread
# Large decodes at once: each holds up to --max-pixels x 3 bytes and its resized copies, so this bounds their memory
# (requests beyond it wait their turn, holding only their upload's bytes).
DECODE_THREADS = min(4, os.cpu_count() or 1)


class Routes:
    """What each route does, over one MultiTaskModel and one Batcher (settings: `server.ServeSettings`). With an
    `api_key`, every path but `open_paths` needs it."""

    def __init__(self, model: MultiTaskModel, settings, api_key: str | None, open_paths: Sequence[str]) -> None:
        self.model, self.settings = model, settings
        self.api_key, self.open_paths = api_key, tuple(open_paths)
        self.transform = model.transform()
        wait = settings.max_wait_ms / 1000 if settings.max_wait_ms is not None else None
        self.batcher = Batcher(self.run_batch, max_batch=settings.max_batch, max_wait=wait,
                               max_pending=settings.max_pending)
        self.decoding = asyncio.Semaphore(DECODE_THREADS)

    # ---------------------------------------------------------------------------------------- life cycle
    @asynccontextmanager
    async def lifespan(self, app):
        await self.batcher.start()
        await self.warm_up()
        # What is alive now (torch, timm, the model, FastAPI) lives as long as the server: kept out of the cyclic
        # collector's view, a full collection does not walk it. One that did was measured at 236 ms under load,
        # a pause every request in flight waited for.
        gc.collect()
        gc.freeze()
        yield
        await self.batcher.stop()  # every accepted request is answered before the process ends
        gc.unfreeze()

    async def warm_up(self) -> None:
        """Before the first request: the per-task prompt caches are built, the batch thread's torch threads
        started, and a full batch's time (which the automatic wait is taken from) measured; a batch of one image
        would set the wait too short and split the first requests' batches."""
        blank = torch.zeros(3, *self.model.data_config["input_size"][1:])
        names = list(self.model.tasks)
        count = max(self.settings.max_batch, len(names))  # every task at least once
        size = tuple(blank.shape[-2:])
        await self.batcher.warm_up([(names[i % len(names)], blank, 1, size) for i in range(count)])

    def run_batch(self, items: list[tuple[str, torch.Tensor, int, tuple[int, int]]]) -> list[list[dict] | dict]:
        """Items (task, image as the model takes it, top-k, the upload's own size (H, W): a mask's size)."""
        names, images, ks, sizes = zip(*items)
        return self.model.predict(torch.stack(images), names, ks, sizes)

    # ------------------------------------------------------------------------------------ every request
    def authorise(self, request: Request) -> None:
        if self.api_key is None or request.url.path in self.open_paths:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.encode(), self.api_key.encode()):
            raise HTTPException(401, "missing or wrong API key: send the header 'Authorization: Bearer KEY'",
                                headers={"WWW-Authenticate": "Bearer"})

    async def one_line_validation_error(self, request: Request, err: RequestValidationError) -> JSONResponse:
        # FastAPI's own answer is a 422 with a list of pydantic records; every other error here is 400 and a line
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"][1:]) or str(first["loc"][0])
        return JSONResponse({"detail": f"{where}: {first['msg']}, got {first.get('input')!r}"}, status_code=400)

    # ---------------------------------------------------------------------------------------- the routes
    def page(self) -> str:
        return PAGE.read_text()

    def health(self) -> dict:
        batcher = self.batcher
        return {"status": "ok", "tasks": len(self.model.tasks), "auth": self.api_key is not None,
                "device": str(self.model.device), "precision": self.model.precision,
                "pending": batcher.pending, "max_wait_ms": round(1000 * batcher.wait, 2),
                "quiet_ms": round(1000 * batcher.quiet, 2)}

    def tasks(self) -> dict:
        return {"tasks": [self.model.describe(name) for name in self.model.tasks]}

    async def predict(self, name: str, request: Request, top_k: int | None = None):
        if name not in self.model.tasks:
            raise HTTPException(404, f"no task {name!r}; this server has: {', '.join(self.model.tasks)}")
        unknown = sorted(set(request.query_params) - {"top_k"})
        if unknown:
            raise HTTPException(400, f"unknown query parameter(s) {unknown}; this route takes top_k")
        kind = content_type(request)
        try:
            with self.batcher.slot():  # taken first: a request the queue cannot take is not even read
                body = await read_body(request, self.settings.max_upload_mb)
                data, requested_k = await image_bytes(request, body, kind)
                k = top_k if top_k is not None else requested_k if requested_k is not None else self.settings.top_k
                if self.model.kind(name) == "segmentation" and (top_k, requested_k) != (None, None):
                    raise HTTPException(400, f"top_k lists a classifier's classes; task {name!r} is a segmentation "
                                             f"task (it answers with a mask): leave out top_k")
                try:
                    check_top_k(k, name="top_k")
                    image, size = await self.prepare_off_the_loop_if_large(data)
                except (DataError, ConfigError) as err:
                    raise HTTPException(400, str(err)) from None
                answer, batch_size = await self.batcher.submit((name, image, k, size), in_slot=True)
        except Overloaded as err:
            raise HTTPException(503, f"server busy ({err}); retry shortly", headers={"Retry-After": "1"}) from None
        if isinstance(answer, dict):  # a segmentation task: the mask as a palette PNG, at the upload's size
            mask = answer["mask"]
            body = {"task": name, "mask": {"png_base64": mask_png_base64(mask), "height": int(mask.shape[0]),
                                           "width": int(mask.shape[1])}, "classes": answer["classes"]}
        else:
            body = {"task": name, "top": answer}
        return JSONResponse(body, headers={"X-Batch-Size": str(batch_size)})

    # --------------------------------------------------------------------------------------- decoding
    def prepare(self, data: bytes) -> tuple[torch.Tensor, tuple[int, int]]:
        """The upload decoded and transformed for the model, and its own size (H, W)."""
        with one_thread():  # a few hundred microseconds of work: OpenMP threads would only add waiting
            image = decode_image(io.BytesIO(data), "upload", self.settings.max_pixels)
            return self.transform(image), tuple(image.shape[-2:])

    async def prepare_off_the_loop_if_large(self, data: bytes) -> tuple[torch.Tensor, tuple[int, int]]:
        # A small image decodes and resizes in ~0.2 ms: less than the CPU a thread-pool hop costs under load
        # (~0.6 ms of GIL hand-offs per request, measured), so it runs right here. A large one could stall every
        # connection for tens of ms, so it goes to the pool. An unreadable header fails fast either way.
        if _pixels(data) <= INLINE_DECODE_PIXELS:
            return self.prepare(data)
        async with self.decoding:
            return await run_in_threadpool(self.prepare, data)


def _pixels(data: bytes) -> int:
    """Width x height from the image header (no decoding); 0 if there is no readable header."""
    try:
        with open_image(io.BytesIO(data)) as image:
            return image.width * image.height
    except Exception:  # not an image: decode_image gives the reason, at once
        return 0
