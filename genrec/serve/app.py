"""The HTTP API of ``genrec serve`` (FastAPI): typed request and answer models (the OpenAPI spec
at /openapi.json is generated from them), the routes, and errors as 4xx answers with a message.

- ``POST /recommend``: ``{"history": [item ids, oldest first], "k": 10, "exclude": [...], "allow": [...]}``
- ``POST /recommend/user``: ``{"user_id": "...", "k": 10, ...}``: a user of the run's dataset, their
  whole sequence as the history
- ``GET /health``: the model's identity (training signature, weights sha256), items, device, batching

Bad requests (unknown item or user ids, an empty history, k out of range, malformed JSON, wrong
types, bodies over the size limit) get a 4xx answer ``{"detail": "<what is wrong>"}``, never a 500.
"""

# No "from __future__ import annotations": FastAPI reads the request models defined inside create_app
# from the routes' annotations, which must be the classes themselves.
import json
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from genrec.serve.batching import MicroBatcher
from genrec.serve.service import RecommendService, RequestError

DEFAULT_MAX_BODY = 1 << 20


class Recommended(BaseModel):
    item_id: str
    item_idx: int
    title: str | None
    score: float = Field(description="The run's ranking score (genrec recommend's score column)")


class Recommendations(BaseModel):
    items: list[Recommended] = Field(description="Best first; shorter than k only where fewer items are permitted")
    k: int
    history_length: int


class ModelIdentity(BaseModel):
    kind: str
    signature: str | None = Field(description="The training signature run.json records")
    weights_sha256: str | None
    semantic_ids_sha256: str | None


class Batching(BaseModel):
    enabled: bool
    max_batch: int
    max_wait_ms: float
    batches: int
    requests: int
    largest_batch: int


class Health(BaseModel):
    status: str
    run: str
    model: ModelIdentity
    num_items: int
    num_users: int | None
    device: str
    beam_size: int | None
    max_k: int
    max_list: int
    batching: Batching


class ErrorAnswer(BaseModel):
    detail: str


def create_app(
    service: RecommendService,
    *,
    batching: bool = True,
    max_batch: int = 64,
    max_wait_ms: float = 2.0,
    max_body_bytes: int = DEFAULT_MAX_BODY,
) -> FastAPI:
    """The app answering from ``service``; requests go through a MicroBatcher (one request per
    batch with ``batching`` off)."""
    batcher = MicroBatcher(service.answer, max_batch=max_batch, max_wait=max_wait_ms / 1000, enabled=batching)
    ItemIds = Annotated[list[StrictStr], Field(max_length=service.max_list)]
    K = Annotated[int, Field(ge=1, le=service.max_k, description=f"How many items (1..{service.max_k})")]

    class HistoryRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        history: Annotated[
            list[StrictStr], Field(min_length=1, max_length=service.max_list, description="Item ids, oldest first")
        ]
        k: K = 10
        exclude: ItemIds | None = Field(None, description="Item ids never to recommend")
        allow: ItemIds | None = Field(None, description="Recommend only among these item ids (exact best k)")

    class UserRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        user_id: StrictStr = Field(description="A user id of the run's dataset; their sequence is the history")
        k: K = 10
        exclude: ItemIds | None = Field(None, description="Item ids never to recommend")
        allow: ItemIds | None = Field(None, description="Recommend only among these item ids (exact best k)")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(
        title="genrec serve",
        version="1",
        description="Next-item recommendations from a trained genrec run (constrained beam search).",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.batcher = batcher
    errors = {code: {"model": ErrorAnswer} for code in (400, 404, 413, 415, 422)}

    async def answer(query) -> Recommendations:
        got = await batcher.submit(query)
        items = [Recommended(**r.__dict__) for r in got]
        return Recommendations(items=items, k=query.k, history_length=len(query.history))

    @app.post("/recommend", responses=errors)
    async def recommend(body: HistoryRequest) -> Recommendations:
        """The top k after a history of item ids."""
        return await answer(service.query_for_history(body.history, body.k, body.exclude, body.allow))

    @app.post("/recommend/user", responses=errors)
    async def recommend_user(body: UserRequest) -> Recommendations:
        """The top k for a known user: their whole sequence in the run's dataset is the history."""
        return await answer(service.query_for_user(body.user_id, body.k, body.exclude, body.allow))

    @app.get("/health")
    async def health() -> Health:
        """Alive, and which model answers."""
        return Health(
            **service.health(),
            batching=Batching(
                enabled=batcher.enabled,
                max_batch=batcher.max_batch,
                max_wait_ms=batcher.max_wait * 1000,
                **batcher.stats,
            ),
        )

    app.add_exception_handler(RequestError, _refused)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_middleware(_BodyLimit, limit=max_body_bytes)
    return app


async def _refused(request: Request, err: RequestError) -> JSONResponse:
    """A request the service refuses (unknown items, k out of range): its own status and message."""
    return JSONResponse({"detail": err.message}, status_code=err.status)


async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
    """A body that fails validation: 400 for malformed JSON, 415 for a body not sent as JSON, 422
    for an empty body or wrong fields, each with a message naming the problem."""
    problems = err.errors()
    if any(p.get("type") == "json_invalid" for p in problems):
        where = next(p for p in problems if p.get("type") == "json_invalid")
        context = (where.get("ctx") or {}).get("error", "")
        return JSONResponse({"detail": f"malformed JSON in the request body: {context}".rstrip(": ")}, 400)
    whole = [p for p in problems if tuple(p.get("loc", ())) == ("body",)]
    if any(isinstance(p.get("input"), bytes) for p in whole):  # not parsed: not sent as JSON
        return JSONResponse(
            {"detail": "the request body must be a JSON object sent with Content-Type: application/json"}, 415
        )
    if any(p.get("type") == "missing" for p in whole):
        return JSONResponse({"detail": "the request body is empty: send a JSON object"}, status_code=422)
    return JSONResponse({"detail": "; ".join(_describe(p) for p in problems)}, status_code=422)


def _describe(problem: dict) -> str:
    """'history[2]: Input should be a valid string (got 5)' from one pydantic error."""
    loc = [str(x) for x in problem.get("loc", ()) if x != "body"]
    where = ""
    for part in loc:
        where += f"[{part}]" if part.isdigit() else (f".{part}" if where else part)
    got = problem.get("input")
    shown = None if isinstance(got, dict) else json.dumps(got, default=str)
    if shown is not None and len(shown) > 80:
        shown = shown[:77] + "..."
    text = f"{where or 'body'}: {problem.get('msg', 'invalid')}"
    return text + (f" (got {shown})" if shown is not None and problem.get("type") != "missing" else "")


class _BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413 before the app reads it (the
    declared Content-Length, or the bytes as they arrive); a smaller one is passed on unchanged."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = int(limit)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._too_large(send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await self._too_large(send)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _too_large(self, send) -> None:
        payload = json.dumps(
            {"detail": f"request body too large: this server takes at most {self.limit} bytes"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})
