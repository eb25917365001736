"""The HTTP API and web page: `create_app` builds a FastAPI app around a `SearchEngine`; `serve` runs it.

    GET  /            the search page
    GET  /health      index, model, languages and limits
    POST /search      speech -> text or text -> text search (multipart form: lang, k, margin, audio | text)
    POST /embed       one embedding (multipart form: lang, audio | text)
    POST /generate    a speech LLM's answer to a prompt about a clip (only with a speech-LLM checkpoint)
    GET  /docs, /openapi.json

Bad input gets a 4xx with a JSON ``{"detail": "…"}``: 400 (empty or unusable audio), 408 (an upload slower than
the timeout), 411 (no Content-Length), 413 (upload or audio too large), 415 (not audio in an accepted format),
422 (bad fields); a full queue or no answer within the timeout gets 503 with Retry-After.
"""


import asyncio
import logging
import socket
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

from polyvox.audio import SAMPLE_RATE, AudioError, AudioFormatError, AudioTooLongError, decode_audio
from polyvox.config import ServeConfig

try:
    from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi_offline import FastAPIOffline
    from pydantic import BaseModel
except ImportError as e:  # pragma: no cover - depends on the install
    raise ImportError("polyvox serve needs FastAPI: pip install 'polyvox[serve]'") from e

from polyvox import __version__
from polyvox.data.languages import FLEURS, check_lang
from polyvox.models.speech_llm import ask, preset_names
from polyvox.serve.batcher import Batcher, Busy
from polyvox.serve.engine import GenerateQuery, SearchEngine, SearchRequest, SpeechQuery, TextQuery

log = logging.getLogger(__name__)
PAGE = Path(__file__).parent / "static" / "index.html"


# -- response schemas (they make the OpenAPI document) --------------------------------------------------------


class HitOut(BaseModel):
    rank: int
    id: str
    text: str
    lang: str
    score: float
    """Cosine similarity, or the ratio margin when `margin` > 0."""
    cosine: float | None = None
    """With `margin` > 0, the cosine (the score is then the margin)."""


class QueryOut(BaseModel):
    modality: str
    lang: str
    lang_probability: float | None = None
    """Set when the language was detected from the speech (no `lang` sent): Whisper's probability of it."""
    duration_s: float | None = None


class SearchOut(BaseModel):
    query: QueryOut
    hits: list[HitOut]
    took_ms: float


class EmbedOut(BaseModel):
    query: QueryOut
    dim: int
    vector: list[float]
    """L2-normalised: the inner product of two vectors is their cosine."""


class GenerateOut(BaseModel):
    text: str
    prompt: str | list[str]
    """The instruction the model was asked (or its xP3 prefix and postfix)."""
    duration_s: float
    took_ms: float


class Error(BaseModel):
    detail: str


ERRORS = {code: {"model": Error} for code in (400, 408, 411, 413, 415, 422, 503)}


class Limits:
    """ASGI middleware for what FastAPI does not bound. A POST must say its size (Content-Length) and stay within
    `max_bytes`, else 411/413 before its body is read (uvicorn then reads no more than that). A request with no
    response after `timeout_s` is cancelled: 408 if its upload had not finished, else 503."""

    def __init__(self, app, max_bytes: int, timeout_s: float):
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["method"] in ("POST", "PUT", "PATCH"):
            length = dict(scope["headers"]).get(b"content-length")
            if length is None:
                return await self.refuse(411, "send the request with a Content-Length header", scope, receive, send)
            if not length.isdigit() or int(length) > self.max_bytes:
                return await self.refuse(413, f"the request is larger than the {self.max_bytes / 2**20:.3g} MB limit",
                                         scope, receive, send)
        state = {"body": False, "started": False}

        async def receive_():
            message = await receive()
            state["body"] |= message["type"] == "http.request" and not message.get("more_body", False)
            return message

        async def send_(message):
            state["started"] |= message["type"] == "http.response.start"
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, receive_, send_), self.timeout_s)
        except asyncio.TimeoutError:
            if state["started"]:
                raise
            if not state["body"]:
                return await self.refuse(408, f"the upload did not finish within {self.timeout_s:g} s", scope, receive, send)
            await self.refuse(503, f"no answer within {self.timeout_s:g} s; the server is overloaded, retry later",
                              scope, receive, send, {"Retry-After": "1"})

    @staticmethod
    async def refuse(code: int, detail: str, scope, receive, send, headers: dict | None = None) -> None:
        await JSONResponse({"detail": detail}, status_code=code, headers={"Connection": "close", **(headers or {})})(
            scope, receive, send)


def create_app(model: str | Path | None, index: str | Path, speech_llm: str | Path | None = None,
               config: ServeConfig | None = None, engine: SearchEngine | None = None) -> FastAPI:
    """The app for a dual encoder `model` (None: the one the index records), the `index` built with it and
    optionally a speech LLM.

    Models load here, before the first request; pass `engine` to share loaded ones.
    """
    cfg = config or ServeConfig()
    engine = engine or SearchEngine(model, index, speech_llm, cfg.max_new_tokens)
    lock = threading.Lock()  # one model call at a time: the batchers would only fight over the cores
    opts = {"max_batch": cfg.max_batch, "max_wait_s": cfg.max_wait_ms / 1000, "max_queue": cfg.max_queue, "lock": lock}
    batchers = {"search": Batcher(engine.search, "search", **opts), "embed": Batcher(engine.embed, "embed", **opts)}
    if engine.llm is not None:
        batchers["generate"] = Batcher(engine.generate, "generate", **opts)

    index_languages = engine.index.languages()  # the index does not change while it is served

    @asynccontextmanager
    async def lifespan(app):
        yield
        for b in batchers.values():
            b.close()

    # FastAPI with /docs and /redoc served from bundled assets, so they work offline
    app = FastAPIOffline(title="polyvox", version=_version(), lifespan=lifespan,
                         description="Cross-lingual speech and text search with an LLM dual encoder, and a speech LLM.")

    @app.exception_handler(Busy)
    async def busy(request: Request, e: Busy):
        return JSONResponse({"detail": str(e)}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(AudioError)
    async def bad_audio(request: Request, e: AudioError):
        code = 415 if isinstance(e, AudioFormatError) else 413 if isinstance(e, AudioTooLongError) else 400
        return JSONResponse({"detail": str(e)}, status_code=code)

    def lang_of(lang: str) -> str:
        try:
            return check_lang(lang)
        except ValueError as e:
            raise HTTPException(422, str(e)) from None

    async def read_query(lang: str | None, audio: UploadFile | None, text: str | None) -> SpeechQuery | TextQuery:
        lang = lang_of(lang) if lang else None
        if (audio is None) == (text is None):
            raise HTTPException(422, "send exactly one of `audio` (a file) or `text`")
        if text is not None:
            if lang is None:
                raise HTTPException(422, "a text query needs its language (`lang`)")
            if not text.strip():
                raise HTTPException(422, "`text` is empty")
            if len(text) > cfg.max_text_chars:
                raise HTTPException(413, f"`text` has {len(text)} characters; the limit is {cfg.max_text_chars}")
            return TextQuery(text, lang)
        if not engine.hears:
            raise HTTPException(400, "this model has no unit tokenizer, so it cannot search with audio")
        return SpeechQuery(await read_audio(audio), lang)

    async def read_audio(audio: UploadFile):
        name = audio.filename or "upload"
        data = await audio.read()
        wav = await run_in_threadpool(decode_audio, data, name, cfg.formats, cfg.max_audio_s)  # off the event loop
        if len(wav) < cfg.min_audio_s * SAMPLE_RATE:
            raise AudioError(f"{name}: the audio is {len(wav) / SAMPLE_RATE:.3f} s long; the shortest is {cfg.min_audio_s:g} s")
        return wav

    def query_out(q: SpeechQuery | TextQuery) -> QueryOut:
        speech = isinstance(q, SpeechQuery)
        return QueryOut(modality="speech" if speech else "text", lang=q.lang,
                        lang_probability=q.lang_probability if speech else None,
                        duration_s=round(len(q.wav) / SAMPLE_RATE, 3) if speech else None)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(PAGE, media_type="text/html")

    @app.get("/health")
    async def health() -> dict:
        """Readiness, what is served, and the limits a client must keep to."""
        return {
            "status": "ok",
            "index": {"size": len(engine.index), "kind": engine.index.kind, "languages": index_languages},
            "model": {"fingerprint": engine.fingerprint, "dim": engine.dual.embed_dim, "speech": engine.hears},
            "languages": [{"code": c, "name": n} for c, n in FLEURS.items()],
            "generate": engine.llm is not None,
            "limits": {"max_upload_bytes": cfg.max_upload_bytes, "max_audio_s": cfg.max_audio_s,
                       "min_audio_s": cfg.min_audio_s, "max_k": cfg.max_k, "max_text_chars": cfg.max_text_chars,
                       "formats": [f.lower() for f in cfg.formats]},
            "batches": {name: {"batches": b.batches, "requests": b.items, "waiting": b.queue.qsize()}
                        for name, b in batchers.items()},
        }

    @app.post("/search", responses=ERRORS)
    async def search(lang: Annotated[str | None, Form(description="FLEURS code of the query's language, e.g. "
                                                          "fr_fr; left out, a clip's language is detected")] = None,
                     k: Annotated[int, Form(description="number of hits")] = 10,
                     margin: Annotated[int, Form(description="> 0: re-rank by ratio margin over this many neighbours")] = 0,
                     audio: Annotated[UploadFile | None, File(description="a clip (WAV, FLAC, OGG, MP3)")] = None,
                     text: Annotated[str | None, Form(description="a text query")] = None,
                     result_langs: Annotated[str | None, Form(description="only hits in these languages: FLEURS "
                                                                          "codes, comma-separated")] = None,
                     ) -> SearchOut:
        """The `k` indexed texts nearest to a spoken or written query, best first."""
        t0 = time.perf_counter()
        if not 1 <= k <= cfg.max_k:
            raise HTTPException(422, f"k must be between 1 and {cfg.max_k}, got {k}")
        if not 0 <= margin <= cfg.max_k:
            raise HTTPException(422, f"margin must be between 0 and {cfg.max_k}, got {margin}")
        only = frozenset(lang_of(c.strip()) for c in (result_langs or "").split(",") if c.strip()) or None
        if result_langs is not None and only is None:
            raise HTTPException(422, f"result_langs {result_langs!r} names no language (FLEURS codes, comma-separated)")
        q = await read_query(lang, audio, text)
        q, hits = await batchers["search"].submit(SearchRequest(q, k, margin, only), cfg.timeout_s)
        return SearchOut(query=query_out(q), took_ms=round(1000 * (time.perf_counter() - t0), 2),
                         hits=[HitOut(rank=r, **asdict(h)) for r, h in enumerate(hits, 1)])

    @app.post("/embed", responses=ERRORS)
    async def embed(lang: Annotated[str | None, Form(description="FLEURS code of the input's language; "
                                                         "left out, a clip's language is detected")] = None,
                    audio: Annotated[UploadFile | None, File(description="a clip")] = None,
                    text: Annotated[str | None, Form(description="a text")] = None) -> EmbedOut:
        """The dual encoder's embedding of a clip or a text."""
        q = await read_query(lang, audio, text)
        q, vec = await batchers["embed"].submit(q, cfg.timeout_s)
        return EmbedOut(query=query_out(q), dim=len(vec), vector=vec.tolist())

    if engine.llm is not None:
        @app.post("/generate", responses=ERRORS)
        async def generate(audio: Annotated[UploadFile, File(description="a clip (WAV, FLAC, OGG, MP3)")],
                           prompt: Annotated[str, Form(description=f"a preset ({', '.join(preset_names())}) or any text")]
                           = "transcribe",
                           lang: Annotated[str | None, Form(description="FLEURS code of the speech (for presets)")] = None,
                           target: Annotated[str, Form(description="target language of `translate`")] = "en_us",
                           labels: Annotated[str, Form(description="comma-separated labels for `intent`")] = "",
                           ) -> GenerateOut:
            """The speech LLM's answer to a prompt about the clip (greedy decoding)."""
            t0 = time.perf_counter()
            if lang is not None:
                lang = lang_of(lang)
            try:
                instruction = ask(prompt, lang, lang_of(target), [x.strip() for x in labels.split(",") if x.strip()],
                                  engine.llm.cfg.prompt_style)
            except ValueError as e:
                raise HTTPException(422, str(e)) from None
            wav = await read_audio(audio)
            answer = await batchers["generate"].submit(GenerateQuery(wav, instruction), cfg.timeout_s)
            return GenerateOut(text=answer, prompt=list(instruction) if isinstance(instruction, tuple) else instruction,
                               duration_s=round(len(wav) / SAMPLE_RATE, 3), took_ms=round(1000 * (time.perf_counter() - t0), 2))

    app.add_middleware(Limits, max_bytes=cfg.max_upload_bytes, timeout_s=cfg.timeout_s)
    return app


def uvicorn_server(app, cfg: ServeConfig):
    """The uvicorn server of `app`: at most `cfg.max_connections` connections and tasks, and a connection that has
    not sent a complete request head within `cfg.header_timeout_s` is closed, so idle or slowly-trickling sockets
    cannot hold the cap (uvicorn's own timeout starts only once a request's headers are in)."""
    import uvicorn
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeadTimeoutH11(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self.head_timer = self.loop.call_later(cfg.header_timeout_s, self.head_timeout)

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not None:  # a request head arrived: uvicorn's keep-alive timeout takes over
                self.head_timer.cancel()

        def head_timeout(self) -> None:
            if self.cycle is None and not self.transport.is_closing():
                log.info("closing a connection that sent no request head in %g s", cfg.header_timeout_s)
                self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            self.head_timer.cancel()
            super().connection_lost(exc)

    return uvicorn.Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, http=HeadTimeoutH11,
                                         limit_concurrency=cfg.max_connections, timeout_keep_alive=5,
                                         log_level="info"))


def serve(model: str | Path | None, index: str | Path, speech_llm: str | Path | None = None,
          config: ServeConfig | None = None) -> None:
    """Load the models and serve until interrupted."""
    cfg = config or ServeConfig()
    sock = socket.socket(socket.AF_INET6 if ":" in cfg.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:  # bound before the models load: a taken port fails at once, and "serving on" is true when printed
        sock.bind((cfg.host, cfg.port))
    except OSError as e:
        sock.close()
        raise OSError(f"cannot serve on {cfg.host}:{cfg.port}: {e.strerror or e}") from None
    server = uvicorn_server(create_app(model, index, speech_llm, cfg), cfg)
    print(f"polyvox serving on http://{cfg.host}:{cfg.port} (API docs at /docs)", flush=True)
    server.run(sockets=[sock])


def _version() -> str:
    return __version__
