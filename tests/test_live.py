"""serve.py's WebSocket protocol (docs/live.md) with Starlette's test client, on the frames of a real MLR511 video
(user01/G09/R01.mp4, "Go", 32 frames; its signer is one of the live_model's two training signers): the events and
the `clip` answer name the video's sign, the clip is classified exactly as predict_video's whole-clip path
classifies the same frames, enrollment over the protocol, frames dropped oldest-first and counted, and one clear
answer each for a bad frame, a bad message, an oversize message, a refused Origin and a client past the limit
while another client keeps being served. Plus the page and /health, and the pure helpers (JPEG header, queue)."""
import anyio
import numpy as np
import pytest

from live_stream import (
    FrameError,
    FrameQueue,
    Item,
    LiveSettings,
    ProtocolError,
    decode_frame,
    jpeg_size,
    parse_control,
)

VIDEO = "mlr511-videos/user01/G09/R01.mp4"
SIGN, NAME = "G09", "Go"
ORIGIN = "http://127.0.0.1:8000"
TIMEOUT = 60  # seconds any one answer may take (the first frame starts the tracker)


def encode(image, quality: int = 90) -> bytes:
    import cv2
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return data.tobytes()


@pytest.fixture(scope="module")
def frames(shared_data) -> list[bytes]:
    """The video's frames as the page sends them: one JPEG each."""
    from extraction import read_frames
    return [encode(image) for image in read_frames(shared_data / VIDEO)]


def client_class():
    """Starlette's TestClient (its note that it will move from httpx to httpx2 is not ours to act on)."""
    import warnings
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
        from fastapi.testclient import TestClient
    return TestClient


@pytest.fixture(scope="module")
def client(live_model):
    TestClient = client_class()
    from serve import ServerSettings, create_app, default_origins
    settings = LiveSettings(window=24, stride=4, threshold=0.5)
    server = ServerSettings(max_clients=2, max_message_kb=256, allowed_origins=default_origins("127.0.0.1", 8000))
    with TestClient(create_app(live_model, settings, server)) as test_client:
        yield test_client


def receive(ws, timeout: float = TIMEOUT) -> dict:
    """The next message, or a test failure after `timeout` seconds (the test client's own receive waits forever)."""
    async def get():
        with anyio.fail_after(timeout):
            return await ws._send_rx.receive()
    message = ws.portal.call(get)
    ws._raise_on_close(message)
    import json
    return json.loads(message["text"])


def until(ws, kind: str, log: list | None = None) -> dict:
    """Messages up to the first of type `kind` (every one also appended to `log`)."""
    while True:
        message = receive(ws)
        if log is not None:
            log.append(message)
        if message["type"] == kind:
            return message


def connect(client, origin: str = ORIGIN):
    return client.websocket_connect("/ws", headers={"origin": origin})


def stream(ws, frames: list[bytes], log: list) -> None:
    """Send each frame once the previous one was answered (as the page does, with its small in-flight limit)."""
    for frame in frames:
        ws.send_bytes(frame)
        until(ws, "landmarks", log)


# ----------------------------------------------------------------------------------------------- recognition
def test_stream_events_and_clip_name_the_sign(client, frames, live_model):
    from video_recognition import Recognizer, Tracker, classify_clip
    log = []
    with connect(client) as ws:
        ready = until(ws, "ready")
        assert {"label": SIGN, "name": NAME} in ready["labels"] and ready["window"] == 24
        assert ready["edges"] and ready["enrollment"] is True
        stream(ws, frames, log)
        ws.send_json({"type": "end"})
        clip = until(ws, "clip", log)
    landmarks = [m for m in log if m["type"] == "landmarks"]
    predictions = [m for m in log if m["type"] == "prediction"]
    signs = [m for m in log if m["type"] == "sign"]
    assert [m["frame"] for m in landmarks] == list(range(32)) and landmarks[-1]["dropped"] == 0
    assert len(landmarks[0]["points"]) == 65 and (landmarks[0]["width"], landmarks[0]["height"]) == (960, 540)
    assert [(p["start"], p["end"], p["frame"]) for p in predictions] == [(0, 24, 23), (4, 28, 27), (8, 32, 31)]
    for p in predictions:
        assert [t["probability"] for t in p["top"]] == sorted((t["probability"] for t in p["top"]), reverse=True)
        assert len(p["top"]) == 3 and p["hand_frames"] > 0 and p["latency_ms"] >= p["invoke_ms"] > 0
    assert predictions[-1]["top"][0]["label"] == SIGN
    assert signs and {(s["label"], s["name"]) for s in signs} == {(SIGN, NAME)}
    assert clip["frames"] == 32 and clip["warning"] == "" and clip["top"][0] == clip["top"][0] | {
        "label": SIGN, "name": NAME}
    # the clip is what predict_video's whole-clip path gives for these very frames
    recognizer = Recognizer(live_model)
    with Tracker(recognizer.layout, 0.5, False) as tracker:
        rows = [tracker.track(decode_frame(f)).row for f in frames]
    prediction, warning = classify_clip(recognizer, rows)
    expected = recognizer.top_k(prediction, 3)
    assert warning == "" and [t["label"] for t in clip["top"]] == [t["label"] for t in expected]
    np.testing.assert_allclose([t["probability"] for t in clip["top"]], [t["probability"] for t in expected],
                               atol=1e-4)


def test_enrollment_over_the_protocol(client, frames):
    log = []
    with connect(client) as ws:
        until(ws, "ready")
        ws.send_json({"type": "enroll", "sign": "Nope"})
        assert "unknown sign 'Nope'" in until(ws, "error")["message"]
        ws.send_json({"type": "enroll", "sign": NAME})           # a name or a label
        assert until(ws, "enrolling") | {"type": 0} == {"type": 0, "label": SIGN, "name": NAME}
        stream(ws, frames, log)
        ws.send_json({"type": "end"})
        enrolled = until(ws, "enrolled", log)
        assert enrolled["label"] == SIGN and enrolled["frames"] == 32 and enrolled["warnings"] == []
        assert enrolled["signs"] == [{"label": SIGN, "name": NAME, "clips": 1}]
        assert not [m for m in log if m["type"] == "clip"]       # the recording was enrolled, not classified
        stream(ws, frames, log)                                  # recognition now blends the enrollment in
        ws.send_json({"type": "end"})
        clip = until(ws, "clip", log)
        assert clip["enrolled"] and clip["top"][0]["label"] == SIGN
        assert [m["enrolled"] for m in log if m["type"] == "prediction"][-1] is True
        ws.send_json({"type": "end"})
        assert "no frame since the last end" in until(ws, "error")["message"]
        ws.send_json({"type": "reset_enrollment"})
        until(ws, "enrollment_reset")


def test_a_client_that_falls_behind_loses_its_oldest_frames_and_is_told(client, frames):
    log = []
    with connect(client) as ws:
        until(ws, "ready")
        for frame in frames[:24]:          # all at once: the worker tracks ~1 frame while 6 wait
            ws.send_bytes(frame)
        ws.send_json({"type": "end"})
        clip = until(ws, "clip", log)
    landmarks = [m for m in log if m["type"] == "landmarks"]
    dropped = landmarks[-1]["dropped"]
    assert dropped > 0 and len(landmarks) + dropped == 24 and clip["frames"] == len(landmarks)
    assert landmarks[-1]["frame"] == 23        # the newest frames are the ones kept
    assert [m["frame"] for m in landmarks] == sorted(m["frame"] for m in landmarks)


# ----------------------------------------------------------------------------------------------- bad input
def test_bad_input_gets_one_clear_answer_and_the_others_are_served(client, frames):
    with connect(client) as good, connect(client) as bad:
        until(good, "ready")
        until(bad, "ready")
        bad.send_bytes(b"not a jpeg")
        assert receive(bad) == {"type": "error", "frame": 0, "message": "frame 0: not a JPEG image (10 bytes; "
                                "each binary message is one JPEG frame); skipped"}
        bad.send_text("hello")
        assert receive(bad)["message"] == "a text message must be a JSON object, got 'hello'"
        bad.send_json({"type": "dance"})
        assert receive(bad)["message"].startswith("unknown message type 'dance'; the client sends JPEG frames")
        bad.send_bytes(b"\xff\xd8\xff" + bytes(300 * 1024))
        assert receive(bad) == {"type": "error", "frame": 1, "message": "frame 1: 307203 bytes, more than the "
                                "256 KiB a message may have (serve.py --max_message_kb); skipped"}
        for refused, code, text in ((connect(client, "https://evil.example"), 1008,
                                     "origin https://evil.example is not allowed"),
                                    (connect(client), 1013, "the server is busy: it serves 2 client(s) at once")):
            with refused as ws:
                message = receive(ws)
                assert message["type"] == "error" and message["fatal"] and message["message"].startswith(text)
                with pytest.raises(Exception) as closed:
                    receive(ws)
                assert getattr(closed.value, "code", None) == code
        good.send_bytes(frames[0])
        assert until(good, "landmarks")["frame"] == 0      # the good client was served throughout
        bad.send_bytes(frames[1])
        assert until(bad, "landmarks")["frame"] == 2       # and the bad one still is
    assert client.get("/health").json()["clients"] == 0


def test_page_and_health(client, live_model):
    page = client.get("/")
    assert page.status_code == 200 and 'id="current-sign"' in page.text and "/app.js" in page.text
    assert "new WebSocket" in client.get("/app.js").text and client.get("/style.css").status_code == 200
    for path in ("/web/index.html", "/../serve.py", "/app.js/../serve.py", "/%2e%2e/serve.py"):
        assert client.get(path).status_code == 404
    health = client.get("/health").json()
    assert health["model"] == str(live_model) and {"label": SIGN, "name": NAME} in health["labels"]
    assert health["runtime"]["interpreter"] == "ai-edge-litert" and health["preprocessing"]["keypoints"] == 65
    assert health["recognition"]["window"] == 24 and health["limits"]["max_clients"] == 2
    assert health["limits"]["max_message_bytes"] == 256 * 1024


# ----------------------------------------------------------------------------------------------- helpers
def test_jpeg_header_is_read_before_decoding(frames):
    assert jpeg_size(frames[0]) == (960, 540) and decode_frame(frames[0]).shape == (540, 960, 3)
    header = bytearray(frames[0][:2000])
    sof = header.index(b"\xff\xc0")
    header[sof + 5:sof + 9] = (20000).to_bytes(2, "big") * 2            # a 20000x20000 bomb
    with pytest.raises(FrameError, match="a 20000x20000 JPEG; frames may have at most 2073600 pixels"):
        decode_frame(bytes(header))
    with pytest.raises(FrameError, match="a corrupt JPEG"):
        decode_frame(frames[0][:600])
    assert jpeg_size(b"\x89PNG\r\n") is None and jpeg_size(b"\xff\xd8\xff") is None


def test_queue_drops_the_oldest_frame_and_keeps_controls():
    queue = FrameQueue(2)
    for item in (Item("frame", 0), Item("control", message={"type": "end"}), Item("frame", 1), Item("frame", 2)):
        assert queue.put(item)
    assert queue.dropped == 1
    assert [(i.kind, i.seq) for i in (queue.get(), queue.get(), queue.get())] == [
        ("control", -1), ("frame", 1), ("frame", 2)]
    queue.close()
    assert queue.get() is None


@pytest.mark.parametrize("text, error", [
    ("[1]", "unknown message type 'list'"), ('{"type": "enroll"}', "enroll needs a `sign`"),
    ("{", "must be a JSON object")])
def test_parse_control_refuses(text, error):
    with pytest.raises(ProtocolError, match=error):
        parse_control(text)
