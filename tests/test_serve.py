"""The HTTP API's contract on a tiny trained dual encoder: every endpoint, results equal to the library's
(brute force for search), bad input answered with the right 4xx and a clear message, batching that gives each
request its own answer, and a queue that refuses work when full."""

import asyncio
import io
import socket
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
from conftest import tone_speech

from polyvox.audio import SAMPLE_RATE, load_audio
from polyvox.config import ServeConfig
from polyvox.index import TextIndex, embed_items, embed_speech, model_fingerprint, read_texts
from polyvox.models.dual_encoder import DualEncoder

pytest.importorskip("fastapi", reason="polyvox[serve] is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from polyvox.serve import create_app  # noqa: E402
from polyvox.serve.app import uvicorn_server  # noqa: E402
from polyvox.serve.batcher import Batcher, Busy  # noqa: E402
from polyvox.serve.engine import SearchEngine  # noqa: E402


@pytest.fixture(scope="module")
def engine(tiny_search) -> SearchEngine:
    return SearchEngine(tiny_search.model, tiny_search.index)


@pytest.fixture(scope="module")
def client(tiny_search, engine):
    cfg = ServeConfig(max_upload_mb=0.5, max_audio_s=5.0, max_k=20, max_text_chars=50, max_wait_ms=50)
    with TestClient(create_app(tiny_search.model, tiny_search.index, config=cfg, engine=engine)) as c:
        yield c


def clip_bytes(wav: np.ndarray, fmt: str, sr: int = SAMPLE_RATE, **kw) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wav, sr, format=fmt, **kw)
    return buf.getvalue()


def post(client, path: str, audio: bytes | None = None, name: str = "q.flac", **fields):
    files = {"audio": (name, audio, "application/octet-stream")} if audio is not None else None
    return client.post(path, data={k: str(v) for k, v in fields.items()}, files=files)


def test_api_docs_work_offline(client) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and "cdn" not in page.text  # the assets are served by polyvox itself
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert f"/static-offline-docs/{asset}" in page.text
        assert client.get(f"/static-offline-docs/{asset}").status_code == 200
    assert "cdn" not in client.get("/redoc").text


def test_health_and_openapi(client, tiny_search) -> None:
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["generate"] is False
    assert h["index"] == {"size": 24, "kind": "flat", "languages": {"fr_fr": 8, "de_de": 8, "pl_pl": 8}}
    assert h["model"]["fingerprint"] == model_fingerprint(tiny_search.model) and h["model"]["speech"] is True
    assert {"code": "fr_fr", "name": "French"} in h["languages"] and len(h["languages"]) > 100
    assert h["limits"]["max_k"] == 20 and h["limits"]["formats"] == ["wav", "flac", "ogg", "mp3"]
    schema = client.get("/openapi.json").json()
    assert {"/search", "/embed", "/health"} <= set(schema["paths"]) and "/generate" not in schema["paths"]
    assert "413" in schema["paths"]["/search"]["post"]["responses"]
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert client.post("/generate").status_code == 404  # no speech LLM given


def test_search_equals_brute_force(client, tiny_search) -> None:
    items = read_texts(tiny_search.manifest)
    dual = DualEncoder.load(tiny_search.model).eval()
    docs = embed_items(dual, items)
    clip = tiny_search.manifest.parent / "audio" / "de_de" / "002.flac"
    r = post(client, "/search", clip.read_bytes(), "002.flac", lang="de_de", k=6)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"] == {"modality": "speech", "lang": "de_de", "lang_probability": None, "duration_s": pytest.approx(len(load_audio(clip)) / 16000, abs=1e-3)}
    q = embed_speech(dual, [load_audio(clip)], "de_de")[0]
    best = np.argsort(-(docs @ q))[:6]
    assert [h["id"] for h in body["hits"]] == [items[i].id for i in best]
    assert [h["rank"] for h in body["hits"]] == [1, 2, 3, 4, 5, 6]
    assert np.allclose([h["score"] for h in body["hits"]], (docs @ q)[best], atol=1e-4)
    assert all(h["lang"] == items[i].lang and h["text"] == items[i].text for h, i in zip(body["hits"], best))

    # margin re-ranking gives the index's margins, with the cosine beside them
    r = post(client, "/search", clip.read_bytes(), lang="de_de", k=4, margin=3).json()
    expected = TextIndex.load(tiny_search.index).search_margin(q[None], 4, 3)[0]
    assert [h["id"] for h in r["hits"]] == [h.id for h in expected]
    assert np.allclose([h["score"] for h in r["hits"]], [h.score for h in expected], atol=1e-4)
    assert np.allclose([h["cosine"] for h in r["hits"]], [h.cosine for h in expected], atol=1e-4)

    # only hits in the asked languages: the brute-force ranking over those
    r = post(client, "/search", clip.read_bytes(), lang="de_de", k=4, result_langs="pl_pl, fr_fr").json()
    mask = np.array([it.lang in {"pl_pl", "fr_fr"} for it in items])
    best = np.argsort(-np.where(mask, docs @ q, -np.inf))[:4]
    assert [h["id"] for h in r["hits"]] == [items[i].id for i in best]
    r = post(client, "/search", clip.read_bytes(), lang="de_de", k=4, margin=3, result_langs="pl_pl").json()
    assert len(r["hits"]) == 4 and {h["lang"] for h in r["hits"]} == {"pl_pl"}
    r = post(client, "/search", clip.read_bytes(), lang="de_de", result_langs="pl_pl,zz")
    assert r.status_code == 422 and "unknown language code 'zz'" in r.json()["detail"]
    r = post(client, "/search", clip.read_bytes(), lang="de_de", result_langs=",,,")
    assert r.status_code == 422 and "names no language" in r.json()["detail"]
    # a float WAV of another scale (finite samples of 1e18) is brought to full scale, not a 500
    loud = io.BytesIO()
    sf.write(loud, 1e18 * np.sin(np.arange(16000) / 10), 16000, format="WAV", subtype="DOUBLE")
    for route in ("/search", "/embed"):
        r = post(client, route, loud.getvalue(), lang="de_de")
        assert r.status_code == 200, (route, r.text)

    # text -> text: an indexed text in its language finds itself with cosine 1
    r = post(client, "/search", lang=items[5].lang, text=items[5].text, k=2).json()
    assert r["query"]["modality"] == "text" and r["hits"][0]["id"] == items[5].id
    assert r["hits"][0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_a_clip_without_a_language_is_searched_in_the_detected_one(client, engine, tiny_search) -> None:
    from polyvox.models.asr import Transcriber

    clip = tiny_search.manifest.parent / "audio" / "fr_fr" / "003.flac"
    r = post(client, "/search", clip.read_bytes(), k=5)
    assert r.status_code == 200, r.text
    q = r.json()["query"]
    lang, p = Transcriber(engine.dual.unit_tokenizer.spec.encoder).detect_language([load_audio(clip)])[0]
    assert q["lang"] == lang and q["lang_probability"] == pytest.approx(p, abs=1e-4)
    given = post(client, "/search", clip.read_bytes(), lang=lang, k=5).json()
    assert [h["id"] for h in r.json()["hits"]] == [h["id"] for h in given["hits"]]
    assert post(client, "/embed", clip.read_bytes()).json()["query"]["lang"] == lang
    r = post(client, "/search", text="red cat")
    assert r.status_code == 422 and "a text query needs its language" in r.json()["detail"]


def test_embed_equals_the_library(client, tiny_search) -> None:
    dual = DualEncoder.load(tiny_search.model).eval()
    wav = tone_speech("red cat sun", 3)
    r = post(client, "/embed", clip_bytes(wav, "WAV"), "x.wav", lang="fr_fr").json()
    expected = embed_speech(dual, [load_audio_from(clip_bytes(wav, "WAV"))], "fr_fr")[0]
    assert r["dim"] == len(expected) and r["query"]["modality"] == "speech"
    assert np.allclose(r["vector"], expected, atol=1e-5) and np.linalg.norm(r["vector"]) == pytest.approx(1, abs=1e-4)
    r = post(client, "/embed", lang="pl_pl", text="blue dog").json()
    assert np.allclose(r["vector"], dual.encode_text(["blue dog"], "pl_pl")[0].detach().numpy(), atol=1e-5)


def load_audio_from(data: bytes) -> np.ndarray:
    from polyvox.audio import decode_audio

    return decode_audio(data)


def test_every_accepted_format_and_a_resampled_stereo_clip(client) -> None:
    wav = tone_speech("green tree", 1)
    ref = post(client, "/embed", clip_bytes(wav, "WAV"), "a.wav", lang="fr_fr").json()["vector"]
    for fmt, kw in (("FLAC", {}), ("OGG", {"subtype": "VORBIS"}), ("OGG", {"subtype": "OPUS"}), ("MP3", {})):
        r = post(client, "/search", clip_bytes(wav, fmt, **kw), f"a.{fmt.lower()}", lang="fr_fr", k=3)
        assert r.status_code == 200 and len(r.json()["hits"]) == 3, (fmt, r.text)
    flac = post(client, "/embed", clip_bytes(wav, "FLAC"), "a.flac", lang="fr_fr").json()["vector"]
    assert np.allclose(flac, ref, atol=1e-3)  # 16-bit FLAC of the same clip: the same vector
    import soxr

    stereo = np.stack([soxr.resample(wav, SAMPLE_RATE, 44100)] * 2, axis=1)
    r = post(client, "/search", clip_bytes(stereo, "WAV", 44100), "s.wav", lang="fr_fr", k=3)
    assert r.status_code == 200 and r.json()["query"]["duration_s"] == pytest.approx(len(wav) / SAMPLE_RATE, abs=0.01)


def test_bad_input_gets_a_clear_4xx(client) -> None:
    rng = np.random.default_rng(0)
    good = clip_bytes(tone_speech("red cat", 0), "FLAC")
    cases = [  # (audio bytes or None, file name, fields, status, words in the message)
        (b"", "empty.wav", {"lang": "fr_fr"}, 400, "empty"),
        (rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(), "noise.wav", {"lang": "fr_fr"}, 415, "cannot decode"),
        (b"\x89PNG\r\n\x1a\n" + bytes(200), "pic.png", {"lang": "fr_fr"}, 415, "cannot decode"),
        (good[: len(good) // 3], "cut.flac", {"lang": "fr_fr"}, None, None),  # a truncated file: 200 or 4xx, never 500
        (clip_bytes(tone_speech("red", 0), "AIFF"), "a.aiff", {"lang": "fr_fr"}, 415, "AIFF audio is not accepted"),
        (clip_bytes(np.zeros(SAMPLE_RATE * 6, np.float32), "FLAC"), "long.flac", {"lang": "fr_fr"}, 413, "limit is 5 s"),
        (clip_bytes(np.zeros(SAMPLE_RATE * 20, np.float32) + 0.1, "WAV"), "big.wav", {"lang": "fr_fr"}, 413, "0.5 MB"),
        (clip_bytes(np.zeros(100, np.float32), "WAV"), "short.wav", {"lang": "fr_fr"}, 400, "the shortest is 0.1 s"),
        (good, "q.flac", {"lang": "xx_yy"}, 422, "unknown language code 'xx_yy'"),
        (good, "q.flac", {"lang": "fr_fr", "text": "red"}, 422, "exactly one of"),
        (None, "", {"lang": "fr_fr"}, 422, "exactly one of"),
        (None, "", {"lang": "fr_fr", "text": "  "}, 422, "`text` is empty"),
        (None, "", {"lang": "fr_fr", "text": "x" * 51}, 413, "the limit is 50"),
        (good, "q.flac", {"lang": "fr_fr", "k": 0}, 422, "k must be between 1 and 20"),
        (good, "q.flac", {"lang": "fr_fr", "k": 21}, 422, "k must be between 1 and 20"),
        (good, "q.flac", {"lang": "fr_fr", "k": "ten"}, 422, "int"),
        (good, "q.flac", {"lang": "fr_fr", "margin": -1}, 422, "margin must be between"),
    ]
    for audio, name, fields, status, words in cases:
        for path in ("/search", "/embed"):
            if path == "/embed" and any(f in fields for f in ("k", "margin")):
                continue
            r = post(client, path, audio, name, **fields)
            assert r.status_code < 500, (path, name, fields, r.text)
            if status is None:
                continue
            assert r.status_code == status, (path, name, fields, r.text)
            assert words in str(r.json()["detail"]), (path, name, r.text)
    # a body with no declared length is refused before it is read
    r = client.post("/search", content=iter([b"lang=fr_fr&text=red"]), headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 411 and "Content-Length" in r.json()["detail"]


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(client, tiny_search) -> None:
    clips = [clip_bytes(tone_speech(t, i), "FLAC") for i, t in enumerate(["red cat", "blue dog moon", "sun", "tree fish bird"])]
    alone = [post(client, "/search", c, lang="fr_fr", k=5).json()["hits"] for c in clips]
    before = client.get("/health").json()["batches"]["search"]
    results: dict[int, list] = {}

    def ask(i: int) -> None:
        results[i] = post(client, "/search", clips[i % 4], lang="fr_fr", k=5).json()["hits"]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = client.get("/health").json()["batches"]["search"]
    assert after["requests"] - before["requests"] == 12
    assert after["batches"] - before["batches"] < 12  # some requests shared a model call (50 ms batching window)
    for i in range(12):
        assert [h["id"] for h in results[i]] == [h["id"] for h in alone[i % 4]]
        assert np.allclose([h["score"] for h in results[i]], [h["score"] for h in alone[i % 4]], atol=1e-4)


def test_batcher_bounds_its_queue_times_out_and_isolates_a_failing_request() -> None:
    gate = threading.Event()

    def slow(xs):
        gate.wait(5)
        if "bad" in xs:
            raise ValueError("bad input")
        return [x * 2 for x in xs]

    async def scenario():
        b = Batcher(slow, "test", max_batch=4, max_wait_s=0.05, max_queue=2)
        first = asyncio.ensure_future(b.submit(1, 5))  # taken by the worker, which then blocks on the gate
        await asyncio.sleep(0.2)
        waiting = [asyncio.ensure_future(b.submit(x, 5)) for x in (2, "bad")]  # fill the queue
        await asyncio.sleep(0.05)
        with pytest.raises(Busy, match="2 test requests waiting"):
            await b.submit(3, 5)
        gate.set()
        assert await first == 2
        results = await asyncio.gather(*waiting, return_exceptions=True)
        assert results[0] == 4 and isinstance(results[1], ValueError)  # the bad one fails alone
        gate.clear()
        t0 = time.perf_counter()
        with pytest.raises(Busy, match="no answer within 0.2 s"):
            await b.submit(5, 0.2)
        assert time.perf_counter() - t0 < 1
        gate.set()
        b.close()

    asyncio.run(scenario())


def test_generate_answers_as_the_library_does(tiny_search, engine, tmp_path) -> None:
    from polyvox.config import SpeechLLMConfig
    from polyvox.models.speech_llm import SpeechLLM, build_speech_llm, make_instruction

    folder = build_speech_llm(SpeechLLMConfig(encoder="tiny-whisper", llm="tiny-gemma3", adapter_hidden=64)).save(tmp_path / "llm")
    cfg = ServeConfig(max_new_tokens=4)
    with TestClient(create_app(tiny_search.model, tiny_search.index, folder, cfg)) as client:
        assert client.get("/health").json()["generate"] is True
        assert "/generate" in client.get("/openapi.json").json()["paths"]
        wav = tone_speech("red cat", 2)
        r = post(client, "/generate", clip_bytes(wav, "WAV"), "a.wav", prompt="translate", lang="fr_fr", target="de_de")
        assert r.status_code == 200, r.text
        instruction = make_instruction("translate", "fr_fr", "de_de")
        expected = SpeechLLM.load(folder).generate([load_audio_from(clip_bytes(wav, "WAV"))], instruction, max_new_tokens=4)
        assert r.json()["text"] == expected[0] and r.json()["prompt"] == instruction
        r = post(client, "/generate", clip_bytes(wav, "WAV"), "a.wav", prompt="What colour is it?")
        assert r.status_code == 200 and r.json()["prompt"] == "What colour is it?"
        assert post(client, "/generate", clip_bytes(wav, "WAV"), prompt="intent").status_code == 422  # no labels
        assert post(client, "/generate", b"junk" * 50, "j.wav").status_code == 415
        assert post(client, "/generate", prompt="transcribe").status_code == 422  # no audio


def test_over_the_wire_size_and_upload_time_limits(tiny_search, engine) -> None:
    import socket

    import httpx

    assert ServeConfig().host == "127.0.0.1"  # local unless asked otherwise
    cfg = ServeConfig(timeout_s=1.0, max_upload_mb=0.01)
    app = create_app(tiny_search.model, tiny_search.index, config=cfg, engine=engine)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn_server(app, replace(cfg, port=port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)

    def raw(head: bytes, body: bytes = b"") -> tuple[int, str, float]:
        t0 = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(head + body)
            answer = b""
            while chunk := c.recv(65536):
                answer += chunk
        status = int(answer.split(b" ", 2)[1])
        return status, answer.split(b"\r\n\r\n", 1)[1].decode(), time.perf_counter() - t0

    try:
        form = b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        # a declared size over the limit is refused before a byte of the body is sent
        status, detail, _ = raw(form + b"Content-Length: 20000\r\n\r\n")
        assert status == 413 and "0.01 MB limit" in detail
        # an upload that stalls gets 408 once the timeout has passed
        status, detail, seconds = raw(form + b"Content-Length: 500\r\n\r\n", b"lang=fr_fr&text=red")
        assert status == 408 and "did not finish within 1 s" in detail and 0.9 < seconds < 5
        # and a whole request is answered
        r = httpx.post(f"http://127.0.0.1:{port}/search", data={"lang": "fr_fr", "text": "red cat", "k": "2"})
        assert r.status_code == 200 and len(r.json()["hits"]) == 2
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_idle_connections_are_closed_and_do_not_lock_clients_out(tiny_search, engine) -> None:
    """More idle sockets than the connection cap, half of them stuck mid request line: the server closes each
    after its header timeout, and /health and /search answer."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = ServeConfig(port=port, max_connections=8, header_timeout_s=1.0)
    server = uvicorn_server(create_app(tiny_search.model, tiny_search.index, config=cfg, engine=engine), cfg)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        t0 = time.perf_counter()
        idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(12)]
        for s in idle[::2]:
            s.sendall(b"GET /heal")  # half a request line, never finished
        for s in idle:  # closed by the server: end of stream, no answer
            assert s.recv(1024) == b""
            s.close()
        assert time.perf_counter() - t0 < 5
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            assert c.get("/health").status_code == 200
            r = c.post("/search", data={"lang": "fr_fr", "text": "bonjour", "k": "2"})
            assert r.status_code == 200 and len(r.json()["hits"]) == 2
    finally:
        server.should_exit = True
        thread.join(timeout=10)
