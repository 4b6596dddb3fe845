"""The HTTP API (FastAPI): predictions and generations from any loaded adapter, adapters loaded
and unloaded while serving, health and Prometheus metrics.

Every error is JSON, ``{"error": {"status", "type", "message"}}`` (plus ``adapters``, the loaded
ones, on a 404 for an adapter), and leaves the server up. A client that leaves before its
answer has its queued rows dropped.
"""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response, StreamingResponse

from ..errors import AdapterError, AdapterNotFoundError, CorruptFileError, IncompatibleAdapterError
from ..hub.errors import AmbiguousAdapterError, DownloadError
from .batcher import Batcher
from .engine import Engine
from .errors import AdapterNameTakenError, RequestTooLargeError
from .metrics import Metrics

# error class -> HTTP status; the first match wins, any other AdapterError is a 422
STATUS = ((RequestTooLargeError, 413), (IncompatibleAdapterError, 409), (AdapterNameTakenError, 409),
          (AdapterNotFoundError, 404), (AmbiguousAdapterError, 422), (CorruptFileError, 422), (DownloadError, 502))


class PredictItem(BaseModel):
    adapter: str
    text: str | list[str]
    text_pair: str | list[str] | None = None  # for pair tasks (NLI, paraphrase): one per text


class GenerateRequest(BaseModel):
    adapter: str | None = None  # None: the bare backbone
    prompt: str
    max_new_tokens: int | None = None  # default: 64, or the server's max_new_tokens if lower
    temperature: float = Field(0.0, ge=0.0)  # 0: greedy
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stream: bool = True  # server-sent events as the text comes; false: one JSON answer at the end


class LoadRequest(BaseModel):
    source: str = Field(description="an adapter, run or exported folder, or a Hub identifier")
    name: str | None = None  # default: the name the adapter was saved under
    architecture: str | None = None  # narrows a Hub identifier, as `hub pull ... arch=`


def error_response(status: int, message: str, kind: str, **extra) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "type": kind, "message": message, **extra}}, status_code=status)


def status_of(error: AdapterError) -> int:
    return next((status for cls, status in STATUS if isinstance(error, cls)), 422)


class ClientGone(Exception):
    """The client closed the connection before its answer was ready."""


async def _disconnected(request: Request) -> None:
    """Returns once the client has closed the connection (the body has been read by then)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def answer(request: Request, futures: list[asyncio.Future], metrics: Metrics) -> list:
    """The futures' results, or ``ClientGone`` (with the futures cancelled) if the client leaves first."""
    work = asyncio.gather(*futures, return_exceptions=True)
    gone = asyncio.ensure_future(_disconnected(request))
    await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    if not work.done():
        work.cancel()
        metrics.disconnects.inc()
        raise ClientGone()
    gone.cancel()
    results = work.result()
    error = next((r for r in results if isinstance(r, BaseException)), None)
    if error is not None:
        raise error
    return results


def create_app(engine: Engine, max_batch: int = 32, batch_window_ms: float = 5.0,
               max_body_bytes: int = 1 << 20) -> FastAPI:
    metrics = Metrics()
    batcher = Batcher(engine, max_batch=max_batch, window_s=batch_window_ms / 1000, metrics=metrics)
    metrics.adapters.set_function(lambda: len(engine.adapters))

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="adapterctl serve", lifespan=lifespan)
    app.state.engine, app.state.batcher, app.state.metrics = engine, batcher, metrics
    app.add_middleware(Observe, metrics=metrics, max_body_bytes=max_body_bytes)

    @app.exception_handler(AdapterError)
    async def adapter_error(request, error: AdapterError):
        extra = {"adapters": list(engine.adapters)} if isinstance(error, AdapterNotFoundError) else {}
        return error_response(status_of(error), str(error), type(error).__name__, **extra)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, error: RequestValidationError):
        problems = error.errors()
        if "json" not in request.headers.get("content-type", "json"):  # e.g. curl -d without -H
            return error_response(415, f"the body is {request.headers['content-type']}; send JSON with "
                                       "Content-Type: application/json", "UnsupportedMediaType")
        if any(p.get("type") == "json_invalid" for p in problems):
            return error_response(400, "the body is not valid JSON; send a JSON object (Content-Type: "
                                       "application/json)", "MalformedJSON")
        where = "; ".join(f"{'.'.join(map(str, p['loc'][1:])) or 'body'}: {p['msg']}" for p in problems[:5])
        return error_response(422, f"the request does not fit the endpoint's schema ({where}); see /docs",
                              "InvalidRequest")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, error: StarletteHTTPException):
        if request.scope.get(Observe.TOO_LARGE):  # a chunked body that outgrew the limit while read
            return too_large(max_body_bytes)
        return error_response(error.status_code, str(error.detail), "HTTPError")

    @app.exception_handler(ClientGone)
    async def client_gone(request, error):
        return Response(status_code=499)  # nginx's "client closed request": nobody reads it

    @app.exception_handler(Exception)
    async def unexpected(request, error: Exception):
        return error_response(500, f"{type(error).__name__}: {error}", "InternalError")

    @app.get("/health")
    async def health():
        return {"status": "ok", "adapters": len(engine.adapters), "backbone": engine.backbone}

    @app.get("/metrics")
    async def prometheus():
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/v1/adapters")
    async def list_adapters():
        return {"backbone": engine.backbone, "adapters": [a.to_json() for a in list(engine.adapters.values())]}

    @app.post("/v1/adapters", status_code=201)
    async def load_adapter(body: LoadRequest):
        want = {"architecture": body.architecture} if body.architecture else {}
        path = await asyncio.to_thread(engine.locate, body.source, **want)
        info = await batcher.call(engine.load, path, body.name, body.source)
        return info.to_json()

    @app.delete("/v1/adapters/{name}")
    async def unload_adapter(name: str):
        await batcher.call(engine.unload, name)
        return {"unloaded": name, "adapters": list(engine.adapters)}

    @app.post("/v1/predict")
    async def predict(body: PredictItem | list[PredictItem], request: Request):
        """``{"adapter": name, "text": "..." or [...]}`` or a list of such objects; the
        predictions come back in the order of the texts."""
        items = body if isinstance(body, list) else [body]
        rows = []
        for item in items:
            texts = [item.text] if isinstance(item.text, str) else item.text
            pairs = [item.text_pair] if isinstance(item.text_pair, str) else item.text_pair
            rows += engine.encode(item.adapter, texts, pairs)
        if len(rows) > engine.max_texts:
            raise RequestTooLargeError(f"{len(rows)} texts in one request; send at most {engine.max_texts} "
                                       "(the server's max_texts) per request")
        return {"predictions": await answer(request, batcher.submit(rows), metrics)}

    @app.post("/v1/generate")
    async def generate(body: GenerateRequest, request: Request):
        """The prompt continued by the adapter: server-sent events ``data: {"text": ...}`` as text
        comes, then ``data: {"done": true, "text", "tokens", "finish_reason"}``; or, with
        ``"stream": false``, that last object alone."""
        loop, events = asyncio.get_running_loop(), asyncio.Queue()
        job = engine.prompt(body.adapter, body.prompt, body.max_new_tokens, body.temperature, body.top_p,
                            emit=lambda event: loop.call_soon_threadsafe(events.put_nowait, event))
        future = batcher.submit_generation(job)

        async def stream():
            done = False
            try:
                while not (event := await events.get()).get("done"):
                    yield f"data: {json.dumps(event)}\n\n"
                done = True
                yield f"data: {json.dumps({'adapter': body.adapter, **event})}\n\n"
            finally:
                if not done:  # the client left: stop its row, or drop it if still queued
                    job.cancelled = True
                    future.cancel()
                    metrics.disconnects.inc()

        if body.stream:
            return StreamingResponse(stream(), media_type="text/event-stream")

        async def last_event():
            while not (event := await events.get()).get("done"):
                pass
            return event

        try:
            [event] = await answer(request, [asyncio.ensure_future(last_event())], metrics)
        except ClientGone:
            job.cancelled = True
            future.cancel()
            raise
        if "error" in event:
            return error_response(500, event["error"]["message"], event["error"]["type"])
        return {"adapter": body.adapter, **event}

    return app


def too_large(limit: int, size: int | None = None) -> JSONResponse:
    return error_response(413, f"the body is {'over ' if size is None else f'{size} bytes, over '}the limit of {limit} "
                               "bytes; send fewer or shorter texts per request", "RequestTooLargeError")


class Observe:
    """ASGI middleware: counts and times every request by route and status, and refuses a
    body over ``max_body_bytes`` (413): by its Content-Length before it is read, or, sent in
    chunks, once it outgrows the limit."""

    TOO_LARGE = "adapterctl.body_too_large"

    def __init__(self, app, metrics: Metrics, max_body_bytes: int):
        self.app, self.metrics, self.max_body_bytes = app, metrics, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [499]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        received = [0]

        async def receive_limited():
            message = await receive()
            received[0] += len(message.get("body", b""))
            if received[0] > self.max_body_bytes:
                scope[self.TOO_LARGE] = True
                return {"type": "http.disconnect"}  # the app stops reading; its error handler says 413
            return message

        length = dict(scope["headers"]).get(b"content-length")
        try:
            if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                await too_large(self.max_body_bytes, int(length))(scope, receive, send_status)
            else:
                await self.app(scope, receive_limited, send_status)
        finally:
            route = scope.get("route")
            path = route.path if route is not None else "unmatched"
            self.metrics.requests.labels(path, scope["method"], str(status[0])).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - start)

