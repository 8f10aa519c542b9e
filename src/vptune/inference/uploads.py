"""From an HTTP request to an image file's bytes: the body read under its size limit, then the image taken from a
multipart form (field "image"), a JSON body ({"image": base64}) or the body itself. Every malformed request is an
HTTPException with a one-line reason. Imported by the server only (FastAPI is the `serve` extra)."""
import base64
import binascii
import json

from fastapi import HTTPException, Request
from starlette.requests import ClientDisconnect

CLIENT_CLOSED = 499  # nginx's status for a request whose client hung up before it was answered
RAW_IMAGE_TYPES = ("application/octet-stream", "image/")  # the body is the image file itself (curl --data-binary)
FIELDS = ("image", "top_k")  # what a form or JSON body may hold; anything else is a typo that would be ignored
JSON_SHAPE = "JSON body must be {\"image\": \"<base64 of the image file>\"} with optional \"top_k\""


def content_type(request: Request) -> str:
    """The request's content type, lower case without parameters; 415 for one no image can come in."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("multipart/form-data", "application/json") and not kind.startswith(RAW_IMAGE_TYPES):
        raise HTTPException(415, f"content type {kind or 'none'!r} is not supported: send the image as "
                                 f"multipart/form-data (field 'image'), as application/json {{\"image\": BASE64}}, "
                                 f"or as the body itself (image/png, image/jpeg, ...)")
    return kind


async def read_body(request: Request, limit_mb: float) -> bytes:
    """The whole body, 413 as soon as it passes `limit_mb` (declared or streamed)."""
    too_big, limit = f"upload over the limit of {limit_mb:g} MB (--max-upload-mb)", int(limit_mb * 1024 * 1024)
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


async def image_bytes(request: Request, body: bytes, kind: str) -> tuple[bytes, int | None]:
    """(the image file's bytes, the top_k the body asks for or None)."""
    if kind == "application/json":
        return json_image(body)
    if kind != "multipart/form-data":  # a raw image body
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


def json_image(body: bytes) -> tuple[bytes, int | None]:
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
