// SignBART live recognition: the camera's frames go to serve.py's WebSocket as JPEGs; its JSON answers
// (docs/live.md) are drawn here. No library, nothing downloaded.
"use strict";

const params = new URLSearchParams(location.search);
const TARGET_FPS = Number(params.get("fps")) || 15;   // the rate MLR511 was recorded at
const MAX_IN_FLIGHT = 4;          // frames sent but not answered yet; past it a camera frame is skipped
const MAX_WIDTH = 960;            // frames are sent at most this wide (the MLR511 videos' width)
const JPEG_QUALITY = 0.85;
const CAPTION_SIGNS = 12;
const ENROLL_READY_MS = 2000, ENROLL_RECORD_MS = 3000;   // guided enrollment: get ready, then record

const $ = (id) => document.getElementById(id);
const video = $("video"), overlay = $("overlay"), ctx = overlay.getContext("2d");
const grab = document.createElement("canvas"), grabCtx = grab.getContext("2d");

let socket = null, ready = null;
let sent = 0, answered = -1, encoding = false;
const sentAt = new Map();             // frame number -> performance.now() when it was sent
const processedAt = [];               // times of the last second's answered frames
let clipOpen = false, clipIgnore = false;
let enrollQueue = [], enrollWaiting = null;

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function labelName(t) { return t.name || t.label; }

// ------------------------------------------------------------------------------------- camera and socket
async function start() {
  try {
    const stream = await navigator.mediaDevices.getUserMedia(
      {video: {width: {ideal: 960}, height: {ideal: 540}, frameRate: {ideal: TARGET_FPS}}, audio: false});
    video.srcObject = stream;
    await video.play();
  } catch (e) {
    status(`no camera: ${e.name} (the camera needs https or localhost)`, true);
    return;
  }
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/ws`);
  socket.binaryType = "arraybuffer";
  socket.onopen = () => status("connected; starting the tracker…");
  socket.onclose = (e) => status(`disconnected (${e.code}${e.reason ? ": " + e.reason : ""})`, true);
  socket.onmessage = (e) => handle(JSON.parse(e.data));
}

function capture() {
  if (!ready || !socket || socket.readyState !== WebSocket.OPEN || encoding) return;
  if (sent - 1 - answered >= MAX_IN_FLIGHT || video.readyState < 2 || !video.videoWidth) return;
  const scale = Math.min(1, MAX_WIDTH / video.videoWidth);
  grab.width = Math.round(video.videoWidth * scale);
  grab.height = Math.round(video.videoHeight * scale);
  grabCtx.drawImage(video, 0, 0, grab.width, grab.height);
  encoding = true;
  grab.toBlob((blob) => {
    encoding = false;
    if (!blob || socket.readyState !== WebSocket.OPEN) return;
    sentAt.set(sent, performance.now());
    sent += 1;
    socket.send(blob);
  }, "image/jpeg", JPEG_QUALITY);
}

// ------------------------------------------------------------------------------------- answers
function handle(m) {
  switch (m.type) {
    case "ready": onReady(m); break;
    case "landmarks": onLandmarks(m); break;
    case "prediction": onPrediction(m); break;
    case "sign": onSign(m); break;
    case "clip": onClip(m); break;
    case "enrolling": $("enroll-prompt").textContent = `show ${labelName(m)} now`; break;
    case "enrolled": onEnrolled(m); break;
    case "enrollment_reset": $("enrolled-list").innerHTML = ""; status("enrollment forgotten"); break;
    case "error": onError(m); break;
  }
}

function onReady(m) {
  ready = m;
  status(`recognising: window ${m.window} frames, every ${m.stride}`);
  const select = $("enroll-sign");
  select.innerHTML = "";
  for (const t of m.labels) select.add(new Option(t.name ? `${t.label} ${t.name}` : t.label, t.label));
  for (const id of ["clip-button", "enroll-guided", "enroll-one", "enroll-reset"]) {
    $(id).disabled = id.startsWith("enroll") && !m.enrollment;
  }
  if (!m.enrollment) $("enroll-prompt").textContent = "this model has no embedding output: no enrollment";
  setInterval(capture, 1000 / TARGET_FPS);
}

function answer(frame) {
  answered = Math.max(answered, frame);
  for (const k of sentAt.keys()) if (k < frame - 100) sentAt.delete(k);
}

function onLandmarks(m) {
  const now = performance.now();
  answer(m.frame);
  processedAt.push(now);
  while (processedAt.length && processedAt[0] < now - 1000) processedAt.shift();
  $("fps").textContent = processedAt.length;
  if (sentAt.has(m.frame)) $("frame-latency").textContent = Math.round(now - sentAt.get(m.frame));
  $("dropped").textContent = m.dropped;
  draw(m.points);
}

function draw(points) {
  overlay.width = video.clientWidth;
  overlay.height = video.clientHeight;
  ctx.clearRect(0, 0, overlay.width, overlay.height);
  const at = (p) => [p[0] * overlay.width, p[1] * overlay.height];
  ctx.lineWidth = 2;
  ctx.strokeStyle = "#3cf";
  for (const [a, b] of ready.edges) {
    if (!points[a] || !points[b]) continue;
    ctx.beginPath();
    ctx.moveTo(...at(points[a]));
    ctx.lineTo(...at(points[b]));
    ctx.stroke();
  }
  ctx.fillStyle = "#fc4";
  for (const p of points) {
    if (!p) continue;
    const [x, y] = at(p);
    ctx.fillRect(x - 2, y - 2, 4, 4);
  }
}

function onPrediction(m) {
  if (sentAt.has(m.frame)) $("latency").textContent = Math.round(performance.now() - sentAt.get(m.frame));
  const best = m.top[0];
  if (m.hand_frames === 0) {
    $("current-sign").textContent = "–";
    $("current-prob").textContent = "no hand in view";
  } else {
    $("current-sign").textContent = labelName(best);
    $("current-prob").textContent = `${best.label} · ${(100 * best.probability).toFixed(0)} %` +
      (m.enrolled ? " · with your enrollment" : "");
  }
  const list = $("top-list");
  list.innerHTML = "";
  for (const t of m.top) {
    const item = document.createElement("li");
    item.textContent = `${labelName(t)} ${(100 * t.probability).toFixed(1)} %`;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.round(120 * t.probability)}px`;
    item.appendChild(bar);
    list.appendChild(item);
  }
}

function onSign(m) {
  const caption = $("caption");
  const word = document.createElement("span");
  word.textContent = labelName(m);
  caption.appendChild(word);
  while (caption.children.length > CAPTION_SIGNS) caption.removeChild(caption.firstChild);
}

function onClip(m) {
  if (clipIgnore) { clipIgnore = false; return; }
  $("clip-result").textContent = m.warning ? m.warning :
    `${m.frames} frames: ` + m.top.map((t) => `${labelName(t)} ${(100 * t.probability).toFixed(0)} %`).join(", ");
}

function onError(m) {
  if (m.frame !== undefined) answer(m.frame);
  if (clipIgnore && m.message.startsWith("end:")) { clipIgnore = false; return; }
  status(m.message, true);
  if (enrollWaiting) enrollNext(false);
}

// ------------------------------------------------------------------------------------- whole clip
$("clip-button").onclick = () => {
  clipOpen = !clipOpen;
  if (clipOpen) clipIgnore = true;   // the first end only starts a new clip
  socket.send(JSON.stringify({type: "end"}));
  $("clip-button").textContent = clipOpen ? "stop clip" : "start clip";
  if (clipOpen) $("clip-result").textContent = "recording…";
};

// ------------------------------------------------------------------------------------- enrollment
function setEnrollButtons(busy) {
  for (const id of ["enroll-guided", "enroll-one", "enroll-reset"]) $(id).disabled = busy;
}

function recordSign(label) {
  const sign = ready.labels.find((t) => t.label === label);
  enrollWaiting = label;
  let left = Math.round(ENROLL_READY_MS / 1000);
  const tick = () => {
    if (left > 0) {
      $("enroll-prompt").textContent = `get ready: ${labelName(sign)} in ${left}`;
      left -= 1;
      setTimeout(tick, 1000);
      return;
    }
    socket.send(JSON.stringify({type: "enroll", sign: label}));
    setTimeout(() => socket.send(JSON.stringify({type: "end"})), ENROLL_RECORD_MS);
  };
  tick();
}

function enrollNext(done) {
  enrollWaiting = null;
  if (!done) enrollQueue = [];
  if (enrollQueue.length) {
    recordSign(enrollQueue.shift());
  } else {
    setEnrollButtons(false);
    if (done) $("enroll-prompt").textContent = "enrolled: recognition now uses your examples";
  }
}

function onEnrolled(m) {
  const list = $("enrolled-list");
  list.innerHTML = "";
  for (const s of m.signs) {
    const item = document.createElement("li");
    item.textContent = `${labelName(s)} (${s.clips} clip${s.clips > 1 ? "s" : ""})`;
    list.appendChild(item);
  }
  if (m.warnings.length) status(m.warnings.join("; "), true);
  enrollNext(true);
}

$("enroll-guided").onclick = () => {
  setEnrollButtons(true);
  enrollQueue = ready.labels.map((t) => t.label);
  enrollNext(true);
};
$("enroll-one").onclick = () => {
  setEnrollButtons(true);
  enrollQueue = [$("enroll-sign").value];
  enrollNext(true);
};
$("enroll-reset").onclick = () => socket.send(JSON.stringify({type: "reset_enrollment"}));
$("mirror-view").onchange = (e) => $("stage").classList.toggle("mirrored", e.target.checked);
$("stage").classList.toggle("mirrored", $("mirror-view").checked);

start();
