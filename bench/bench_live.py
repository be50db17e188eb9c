"""The live server under load: 1, 2, ... clients at once, each streaming a video at its own speed.

Starts serve.py (a process of its own, on 127.0.0.1 and a free port) with --model, then for each client count runs
that many clients at once; each sends the video's frames as JPEGs (quality 90) at the video's frame rate (15 fps for
MLR511; --fps to change), looping it for --seconds, on a fixed schedule (frame i at start + i / fps, whatever the
answers do), and records every answer with its arrival time.

Figures per stream (one row per client):
  sent / processed / dropped   frames sent, answered with `landmarks`, and dropped by the server (oldest first)
  fps                          processed frames per second over the streaming time (the sustained rate)
  latency ms (median, p90)     from sending a window's last frame to receiving that window's `prediction`
                               (client clock: queueing + MediaPipe + the model + the network; the server's own
                               arrival -> answer figure is `server_latency`)
  track ms                     MediaPipe per frame (median; the server's `track_ms`)
  server CPU %                 the server process's CPU time (all threads) / wall time over the run, 100 = 1 core

    python bench/bench_live.py --model M.tflite --video data/mlr511-videos-20/user01/G09/R01.mp4
    python bench/bench_live.py --model M.tflite --video V.mp4 --clients 1 --seconds 5 --no_write   # quick look

Results: common.py (--output_dir).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import common

from runs import comma_list, require_file
from util import HelpFormatter, UserError, bounded, cli

BENCH = "live"
COLUMNS = {"clients": "clients", "client": "client", "sent": "sent", "processed": "processed", "dropped": "dropped",
           "fps": "fps", "latency_median_ms": "latency ms", "latency_p90_ms": "p90 ms",
           "server_latency_p90_ms": "server p90 ms", "track_median_ms": "track ms", "server_cpu_pct": "server CPU %"}
START_S = 120     # the server's start-up
DRAIN_S = 10      # after the last frame: time for the answers still due


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def video_jpegs(path: str) -> tuple[list[bytes], float]:
    import cv2

    from extraction import read_video
    frames, fps = read_video(path)
    jpegs = [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes() for f in frames]
    if not jpegs:
        raise UserError(f"{path}: no frames could be read")
    return jpegs, fps or 15.0


# ----------------------------------------------------------------------------------------------- one client
class Client:
    """One WebSocket stream: sends on a schedule, a thread receives and timestamps every answer."""

    def __init__(self, url: str, origin: str):
        import websocket
        self.ws = websocket.create_connection(url, origin=origin, timeout=START_S)
        self.sent_at: dict[int, float] = {}
        self.answers: list[tuple[float, dict]] = []
        self.ready = threading.Event()
        self.refused = ""
        self.receiver = threading.Thread(target=self._receive, daemon=True)
        self.receiver.start()

    def _receive(self) -> None:
        import websocket
        try:
            while True:
                message = json.loads(self.ws.recv())
                self.answers.append((time.perf_counter(), message))
                if message["type"] in ("ready", "error") and not self.ready.is_set():
                    self.refused = message.get("message", "") if message["type"] == "error" else ""
                    self.ready.set()
        except (websocket.WebSocketException, OSError, ValueError):
            return

    def stream(self, jpegs: list[bytes], fps: float, seconds: float, start: float) -> None:
        count = max(1, round(seconds * fps))
        for i in range(count):
            delay = start + i / fps - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            self.sent_at[i] = time.perf_counter()
            self.ws.send_binary(jpegs[i % len(jpegs)])

    def figures(self) -> dict:
        landmarks = [(t, m) for t, m in self.answers if m["type"] == "landmarks"]
        predictions = [(t, m) for t, m in self.answers if m["type"] == "prediction"]
        latency = [1e3 * (t - self.sent_at[m["frame"]]) for t, m in predictions if m["frame"] in self.sent_at]
        span = (landmarks[-1][0] - self.sent_at[0]) if landmarks else 0.0
        return {"sent": len(self.sent_at), "processed": len(landmarks),
                "dropped": landmarks[-1][1]["dropped"] if landmarks else None,
                "errors": sum(m["type"] == "error" for _, m in self.answers),
                "fps": len(landmarks) / span if span > 0 else None, "windows": len(predictions),
                "signs": [m["label"] for _, m in self.answers if m["type"] == "sign"],
                "latency_median_ms": statistics.median(latency) if latency else None,
                "latency_p90_ms": percentile(latency, 0.9),
                "server_latency_p90_ms": percentile([m["latency_ms"] for _, m in predictions], 0.9),
                "track_median_ms": statistics.median([m["track_ms"] for _, m in landmarks]) if landmarks else None}

    def close(self) -> None:
        self.ws.close()
        self.receiver.join(5)


def run_clients(n: int, url: str, origin: str, jpegs, fps: float, seconds: float, pid: int) -> list[dict]:
    clients = [Client(url, origin) for _ in range(n)]
    try:
        for client in clients:
            if not client.ready.wait(START_S):
                raise UserError(f"{url}: no `ready` within {START_S} s")
            if client.refused:
                raise UserError(f"{url}: {client.refused}")
        cpu0, wall0 = cpu_seconds(pid), time.perf_counter()
        start = wall0 + 0.2
        senders = [threading.Thread(target=c.stream, args=(jpegs, fps, seconds, start)) for c in clients]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        deadline = time.perf_counter() + DRAIN_S
        while time.perf_counter() < deadline and any(answered(c) < len(c.sent_at) for c in clients):
            time.sleep(0.05)
        cpu = 100 * (cpu_seconds(pid) - cpu0) / (time.perf_counter() - wall0)
    finally:
        for client in clients:
            client.close()
    return [{"clients": n, "client": i + 1, **c.figures(), "server_cpu_pct": cpu} for i, c in enumerate(clients)]


def answered(client: Client) -> int:
    """Frames accounted for: answered (landmarks or error) or dropped."""
    landmarks = [m for _, m in client.answers if m["type"] == "landmarks"]
    errors = sum(m["type"] == "error" and "frame" in m for _, m in client.answers)
    return len(landmarks) + errors + (landmarks[-1]["dropped"] if landmarks else 0)


# ----------------------------------------------------------------------------------------------- the server
def start_server(args, port: int, log) -> subprocess.Popen:
    cmd = [sys.executable, str(common.REPO_DIR / "serve.py"), "--model", args.model, "--port", str(port),
           "--max_clients", str(max(args.clients))] + (args.serve_args.split() if args.serve_args else [])
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UserError(f"serve.py exited with {proc.returncode} (its output: {log.name})")
        try:
            health(port)
            return proc
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise UserError(f"serve.py did not answer within {START_S} s (its output: {log.name})")


def health(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
        return json.load(answer)


def wait_until_idle(port: int) -> None:
    """Until the server has let the previous run's connections go (their workers finish their frame first)."""
    deadline = time.monotonic() + START_S
    while health(port)["clients"] and time.monotonic() < deadline:
        time.sleep(0.2)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--model", required=True, help="the .tflite model served (its card beside it)")
    ap.add_argument("--video", default=str(common.DEFAULT_VIDEOS / "user01" / "G09" / "R01.mp4"),
                    help="the video every client streams (looped)")
    ap.add_argument("--clients", default="1,2", help="comma list: clients at once, one run each")
    ap.add_argument("--seconds", type=bounded(float, lambda v: v > 0, "> 0"), default=20.0,
                    help="streaming time per run")
    ap.add_argument("--fps", type=bounded(float, lambda v: v >= 0, ">= 0"), default=0.0,
                    help="frames per second each client sends (0: the video's own rate)")
    ap.add_argument("--serve_args", default="", help="more serve.py flags, e.g. '--window 30 --stride 5'")
    common.add_output_args(ap)
    args = ap.parse_args(argv)
    require_file(args.model, "--model")
    require_file(args.video, "--video")
    try:
        args.clients = [int(c) for c in comma_list(args.clients)]
    except ValueError:
        raise UserError(f"--clients: a comma list of numbers, got {args.clients!r}") from None
    if not args.clients or min(args.clients) < 1:
        raise UserError("--clients: at least one number, each >= 1")
    return args


@cli
def main(argv=None) -> dict:
    args = parse_args(argv)
    machine = common.machine_info()
    jpegs, video_fps = video_jpegs(args.video)
    fps = args.fps or video_fps
    port = free_port()
    rows = []
    with open(Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_live_{port}.log", "w") as log:
        proc = start_server(args, port, log)
        try:
            for n in args.clients:
                wait_until_idle(port)
                rows += run_clients(n, f"ws://127.0.0.1:{port}/ws", f"http://127.0.0.1:{port}", jpegs, fps,
                                    args.seconds, proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)
    settings = {"model": args.model, "video": args.video, "frames": len(jpegs), "fps": fps,
                "seconds": args.seconds, "clients": args.clients, "serve_args": args.serve_args}
    return common.report(args, BENCH, machine, settings, rows, COLUMNS)


if __name__ == "__main__":
    main()
