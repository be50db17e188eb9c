"""Live sign recognition in the browser: a web page that streams the camera to this server, which runs the same
recognition as predict_video.py (MediaPipe Holistic, the card's preprocessing, the .tflite, the sliding window and
its sign events) on each connection's frames and answers over a WebSocket. The protocol is docs/live.md.

  GET /          the page (web/index.html, app.js, style.css): camera, skeleton, top signs, caption, enrollment
  GET /health    JSON: the model, its labels, the runtime, the preprocessing and recognition settings, the limits
  WS  /ws        binary messages = one JPEG frame each; text messages {"type": "end" | "enroll" |
                 "reset_enrollment"}; the server answers with JSON text messages (live_stream.py)

Every connection gets its own tracker, interpreter and worker thread (the CPU work stays off the event loop).
Safety: it listens on 127.0.0.1 unless --host says otherwise; at most --max_clients connections (one more is
told so and closed); a message over --max_message_kb is refused; the WebSocket's Origin must be one of
--allowed_origins (default: this server's own localhost origins); a client never names a file.

    python serve.py --model outputs/arabic_asl/loso/checkpoints/arabic_asl_LOSO_user01/final_model_fp32.tflite
    # open http://127.0.0.1:8000 and allow the camera
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=signbart -keyout key.pem -out cert.pem
    python serve.py --model M.tflite --host 0.0.0.0 --port 8443 --ssl_certfile cert.pem --ssl_keyfile key.pem \\
        --allowed_origins https://192.168.1.20:8443     # a phone on the local network: https://192.168.1.20:8443
"""

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import threading
from dataclasses import asdict, dataclass, field

import extraction
from live_stream import (
    MAX_FRAME_PIXELS,
    LiveSettings,
    LiveStream,
    ProtocolError,
    error,
    parse_control,
)
from preprocessing import MAX_FRAMES
from recipes import (
    LIVE_HOST,
    LIVE_MAX_CLIENTS,
    LIVE_MAX_CLIP_FRAMES,
    LIVE_MAX_MESSAGE_KB,
    LIVE_PORT,
    LIVE_QUEUE_FRAMES,
    LIVE_WINDOW,
    SIGN_THRESHOLD,
    TOP_K,
    WINDOW_STRIDE,
)
from runs import require_file
from util import (
    NATIVE_NOISE,
    REPO_DIR,
    HelpFormatter,
    UserError,
    bounded,
    cli,
    is_noise,
    verbose,
)

WEB_DIR = REPO_DIR / "web"
PAGES = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript; charset=utf-8"),
         "/style.css": ("style.css", "text/css; charset=utf-8")}   # every file the server ever sends
OUTBOX_LANDMARKS_LIMIT = 64   # answers waiting for a slow reader: past this, `landmarks` are not queued
CLOSE_POLICY, CLOSE_BUSY = 1008, 1013   # WebSocket close codes: policy violation, try again later
LOG = logging.getLogger("signbart.live")


@dataclass
class ServerSettings:
    """What serve.py's flags set beside the streams' LiveSettings."""
    max_clients: int = LIVE_MAX_CLIENTS
    max_message_kb: int = LIVE_MAX_MESSAGE_KB
    allowed_origins: list = field(default_factory=list)   # "*": any

    @property
    def max_message_bytes(self) -> int:
        return self.max_message_kb * 1024


def default_origins(host: str, port: int) -> list[str]:
    """The origins of this server's own page on this machine (and on --host when it names one address)."""
    hosts = ["127.0.0.1", "localhost", "[::1]"] + ([host] if host not in ("0.0.0.0", "::", "127.0.0.1") else [])
    return [f"{scheme}://{h}:{port}" for h in hosts for scheme in ("http", "https")]


# ----------------------------------------------------------------------------------------------- the app
def create_app(model_path, settings: LiveSettings, server: ServerSettings):
    """The FastAPI app: the page, /health and /ws (module docstring). The model is loaded once here to check it
    and describe it; every connection loads its own interpreter."""
    from fastapi import FastAPI, WebSocket
    from fastapi.responses import JSONResponse, Response
    from starlette.websockets import WebSocketDisconnect, WebSocketState

    from video_recognition import Recognizer
    model = Recognizer(model_path, settings.config_path, settings.num_threads)
    health = describe(model, settings, server)
    ready = {"labels": health["labels"], "edges": extraction.skeleton_edges(model.layout),
             "enrollment": health["enrollment"], **health["recognition"]}
    app = FastAPI(title="SignBART live recognition", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.clients = 0

    def page(name: str, media_type: str):
        body = (WEB_DIR / name).read_bytes()
        return lambda: Response(body, media_type=media_type, headers={"Cache-Control": "no-store"})

    for route, (name, media_type) in PAGES.items():
        app.add_api_route(route, page(name, media_type), methods=["GET"], include_in_schema=False)

    @app.get("/health")
    def get_health():
        return JSONResponse(health | {"clients": app.state.clients})

    async def refuse(websocket: WebSocket, message: str, code: int) -> None:
        await websocket.accept()
        await websocket.send_json(error(message, fatal=True))
        await websocket.close(code, reason=message[:120])

    @app.websocket("/ws")
    async def ws(websocket: WebSocket):
        origin = websocket.headers.get("origin")
        if origin is not None and "*" not in server.allowed_origins and origin not in server.allowed_origins:
            LOG.warning(f"refused a connection from origin {origin}")
            await refuse(websocket, f"origin {origin[:80]} is not allowed (serve.py --allowed_origins)",
                         CLOSE_POLICY)
            return
        if app.state.clients >= server.max_clients:
            await refuse(websocket, f"the server is busy: it serves {server.max_clients} client(s) at once "
                                    "(serve.py --max_clients); try again later", CLOSE_BUSY)
            return
        app.state.clients += 1
        try:
            await websocket.accept()
            await serve_connection(websocket, model_path, settings, server, ready)
        except WebSocketDisconnect:
            pass
        finally:
            app.state.clients -= 1
            if websocket.client_state == WebSocketState.CONNECTED:
                await websocket.close()

    return app


async def serve_connection(websocket, model_path, settings: LiveSettings, server: ServerSettings,
                           ready: dict) -> None:
    """One accepted connection: its messages into a LiveStream, the stream's answers out, until it closes."""
    loop = asyncio.get_running_loop()
    outbox: asyncio.Queue = asyncio.Queue()

    def post(message: dict) -> None:  # the event loop's side of send()
        if message["type"] == "landmarks" and outbox.qsize() > OUTBOX_LANDMARKS_LIMIT:
            return  # a client that does not read loses drawings, not answers
        if message["type"] == "ready":
            message = message | ready
        outbox.put_nowait(message)

    def send(message: dict) -> None:  # the worker thread's
        with contextlib.suppress(RuntimeError):  # the event loop has closed (the server stops)
            loop.call_soon_threadsafe(post, message)

    async def sender():
        while True:
            message = await outbox.get()
            await websocket.send_json(message)
            if message.get("fatal"):
                await websocket.close(CLOSE_POLICY)
                return

    stream = LiveStream(model_path, settings, send)
    sending = asyncio.create_task(sender())
    try:
        while not sending.done():
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            data, text = message.get("bytes"), message.get("text")
            size = len(data) if data is not None else len((text or "").encode("utf-8"))
            if size > server.max_message_bytes:
                too_big = (f"{size} bytes, more than the {server.max_message_kb} KiB a message may have "
                           "(serve.py --max_message_kb); skipped")
                if data is None:
                    post(error(f"a text message of {too_big}"))
                else:  # the frame keeps its number, so that the client's count of frames stays right
                    post(error(f"frame {stream.received}: {too_big}", frame=stream.received))
                    stream.received += 1
                continue
            if data is not None:
                stream.frame(data)
                continue
            try:
                stream.control(parse_control(text or ""))
            except ProtocolError as e:
                post(error(str(e)))
    finally:
        stream.close()
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
        await asyncio.to_thread(stream.thread.join, 10)


def describe(model, settings: LiveSettings, server: ServerSettings) -> dict:
    """/health: the model, its labels, the runtime, the preprocessing (the model card's), the settings."""
    from importlib import metadata
    cfg = model.cfg
    return {
        "status": "ok", "model": str(model.model_path), "mode": model.card.get("mode", ""),
        "labels": [{"label": label, "name": model.names.get(label, "")} for label in model.labels],
        "runtime": {"interpreter": "ai-edge-litert", "version": metadata.version("ai-edge-litert"),
                    "num_threads": settings.num_threads, "tracker": "MediaPipe Holistic",
                    "mediapipe": metadata.version("mediapipe")},
        "preprocessing": {"layout": cfg["layout"], "keypoints": len(cfg["joint_idx"]),
                          "groups": list(cfg["groups"]), "frames": MAX_FRAMES,
                          "rest_hand_cutoff": cfg.get("rest_hand_cutoff"),
                          "dominant_hand_ratio": cfg.get("dominant_hand_ratio"),
                          "spec": "docs/preprocessing_spec.md"},
        "recognition": {"window": settings.window, "stride": settings.stride, "threshold": settings.threshold,
                        "top_k": settings.top_k, "min_confidence": settings.min_confidence,
                        "mirror": settings.mirror},
        "limits": {"max_clients": server.max_clients, "queue_frames": settings.queue_frames,
                   "max_message_bytes": server.max_message_bytes, "max_clip_frames": settings.max_clip_frames,
                   "max_frame_pixels": MAX_FRAME_PIXELS},
        "enrollment": bool(model.card.get("personalization")) and model.model.has_embedding,
    }


def drop_native_noise() -> None:
    """For the server's whole life, pass the lines written to file descriptor 2 through a filter that drops
    util.NATIVE_NOISE: MediaPipe loads its hand models when a hand first appears, and their native start-up
    lines would otherwise reach the console at any time, from any connection's thread."""
    if verbose():
        return
    read, write = os.pipe()
    console = os.dup(2)
    os.dup2(write, 2)
    os.close(write)

    def pump():
        with os.fdopen(read, "rb") as pipe, os.fdopen(console, "wb", buffering=0) as out:
            for line in pipe:
                if not is_noise(line.decode(errors="replace"), NATIVE_NOISE):
                    out.write(line)

    threading.Thread(target=pump, name="stderr filter", daemon=True).start()


# ----------------------------------------------------------------------------------------------- CLI
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    positive = bounded(int, lambda v: v >= 1, ">= 1")
    ap.add_argument("--model", required=True, help="the .tflite model (its card beside it gives config + labels)")
    ap.add_argument("--config_path", default="", help="YAML config (default: the model card)")
    ap.add_argument("--host", default=LIVE_HOST, help="address to listen on; 0.0.0.0 = every interface")
    ap.add_argument("--port", type=bounded(int, lambda v: 0 < v < 65536, "a port (1-65535)"), default=LIVE_PORT,
                    help="TCP port")
    ap.add_argument("--ssl_certfile", default="", help="certificate (PEM) for https (phones need it for the camera)")
    ap.add_argument("--ssl_keyfile", default="", help="its private key (PEM)")
    ap.add_argument("--allowed_origins", default="",
                    help="comma list of page origins allowed to open /ws, e.g. https://192.168.1.20:8443; '*' "
                         "allows any (unsafe) (default: this server's own localhost origins)")
    ap.add_argument("--max_clients", type=positive, default=LIVE_MAX_CLIENTS, help="connections served at once")
    ap.add_argument("--max_message_kb", type=positive, default=LIVE_MAX_MESSAGE_KB,
                    help="largest message (a JPEG frame) accepted, in KiB")
    ap.add_argument("--queue_frames", type=positive, default=LIVE_QUEUE_FRAMES,
                    help="frames waiting per connection; when full the oldest is dropped")
    ap.add_argument("--max_clip_frames", type=positive, default=LIVE_MAX_CLIP_FRAMES,
                    help="frames kept for a clip (until `end`): the last ones")
    ap.add_argument("--window", type=positive, default=LIVE_WINDOW, help="sliding-window length in frames")
    ap.add_argument("--stride", type=positive, default=WINDOW_STRIDE, help="frames between sliding windows")
    ap.add_argument("--threshold", type=bounded(float, lambda v: 0 <= v <= 1, "in [0, 1]"), default=SIGN_THRESHOLD,
                    help="probability at which a window emits its sign")
    ap.add_argument("--top_k", type=positive, default=TOP_K, help="classes listed per window and clip")
    ap.add_argument("--min_confidence", type=float, default=extraction.DEFAULT_MIN_CONFIDENCE,
                    help="MediaPipe detection/tracking confidence")
    ap.add_argument("--mirror", action="store_true", help="flip frames horizontally before MediaPipe")
    ap.add_argument("--num_threads", type=positive, default=1, help="interpreter threads per connection")
    args = ap.parse_args(argv)
    extraction.check_min_confidence(args.min_confidence)
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        raise UserError("https needs both --ssl_certfile and --ssl_keyfile")
    for path, what in ((args.ssl_certfile, "--ssl_certfile"), (args.ssl_keyfile, "--ssl_keyfile")):
        if path:
            require_file(path, what)
    return args


def settings_from(args) -> tuple[LiveSettings, ServerSettings]:
    live = LiveSettings(**{k: getattr(args, k) for k in asdict(LiveSettings()) if hasattr(args, k)})
    origins = [o.strip().rstrip("/") for o in args.allowed_origins.split(",") if o.strip()]
    return live, ServerSettings(args.max_clients, args.max_message_kb,
                                origins or default_origins(args.host, args.port))


@cli
def main(argv=None) -> int:
    args = parse_args(argv)
    live, server = settings_from(args)
    drop_native_noise()
    app = create_app(args.model, live, server)
    import uvicorn
    scheme = "https" if args.ssl_certfile else "http"
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    print(f"serving {args.model} on {scheme}://{shown}:{args.port} (listening on {args.host}; at most "
          f"{server.max_clients} clients; origins {', '.join(server.allowed_origins)})", flush=True)
    # the WebSocket layer closes (1009) a message over twice the cap; up to it, the app answers with an `error`
    uvicorn.run(app, host=args.host, port=args.port, ws="wsproto", ws_max_size=2 * server.max_message_bytes,
                ssl_certfile=args.ssl_certfile or None, ssl_keyfile=args.ssl_keyfile or None,
                log_level="warning", timeout_graceful_shutdown=3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
