"""serve.py as a process over https with a self-signed certificate for 127.0.0.1 (what a phone on the local network
needs for its camera), and the page end to end in headless Chromium: Debian's chromium and chromium-driver driven
by Selenium 4 with the system browser and driver (Selenium Manager is never asked; nothing is downloaded). The fake
camera plays a real MLR511 video (user01/G09/R01.mp4, written as a YUV4MPEG2 file), the page streams it to the
server, and it must show the video's sign, "Go", in #current-sign. The screenshot is kept as
<pytest's tmp folder>/live-browser0/live.png (its path is printed; pytest -s shows it).

Locally the browser test skips when Chromium or its driver is missing; under CI=true it fails instead."""
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import REPO, spawn, stop

VIDEO = "mlr511-videos/user01/G09/R01.mp4"
NAME = "Go"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                  "--ignore-certificate-errors", "--window-size=1280,900")
START_S, SIGN_S = 90, 90    # the server's start-up; the page showing the sign (both generous: a loaded machine)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def trusting(cert: Path) -> ssl.SSLContext:
    """A TLS context that trusts this certificate (and verifies it: host name included)."""
    return ssl.create_default_context(cafile=str(cert))


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for IP 127.0.0.1 and its key: the openssl CLI, else the cryptography package, else skip."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    if shutil.which("openssl"):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                        "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
                        "-out", str(cert)], check=True, capture_output=True)
        return cert, key
    try:
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID
    except ImportError:
        pytest.skip("neither the openssl CLI nor the cryptography package is here to make a certificate")
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now)
                   .not_valid_after(now + datetime.timedelta(days=2))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False).sign(private, hashes.SHA256()))
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return cert, key


@pytest.fixture(scope="module")
def https_server(live_model, tmp_path_factory):
    """serve.py on https://127.0.0.1:<free port>, started as a user starts it (its default allow-list of origins)."""
    folder = tmp_path_factory.mktemp("live-https")
    cert, key = self_signed(folder)
    port = free_port()
    with open(folder / "server.log", "w+") as log:
        proc = spawn([sys.executable, "serve.py", "--model", str(live_model), "--port", str(port), "--ssl_certfile",
                      str(cert), "--ssl_keyfile", str(key), "--window", "24", "--stride", "4", "--threshold",
                      "0.5"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True)
        url = f"https://127.0.0.1:{port}"
        try:
            health = wait_for(url, cert, proc, log)
            yield SimpleNamespace(url=url, cert=cert, health=health, proc=proc, log=folder / "server.log")
        finally:
            stop(proc)


def wait_for(url: str, cert: Path, proc, log) -> dict:
    """/health of a starting server (a failure with its output when it exits or takes longer than START_S)."""
    import httpx
    deadline = time.monotonic() + START_S
    while True:
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail(f"serve.py exited with {proc.returncode}: {log.read()[-2000:]}")
        try:
            return httpx.get(f"{url}/health", verify=trusting(cert), timeout=5).json()
        except httpx.TransportError:
            if time.monotonic() > deadline:
                pytest.fail(f"serve.py did not answer on {url} within {START_S} s")
            time.sleep(0.5)


def test_https_with_a_self_signed_certificate(https_server):
    """The certificate is verified (no verify=False): the page and /health come over TLS."""
    import httpx
    assert https_server.health["status"] == "ok" and https_server.health["labels"][8] == {"label": "G09",
                                                                                          "name": NAME}
    page = httpx.get(https_server.url + "/", verify=trusting(https_server.cert), timeout=10)
    assert page.status_code == 200 and 'id="current-sign"' in page.text
    with pytest.raises(httpx.TransportError):        # plain http on the https port is not served
        httpx.get(https_server.url.replace("https", "http") + "/health", timeout=5)


def write_y4m(video: Path, path: Path) -> Path:
    """A video -> YUV4MPEG2 (I420 frames, the header written here), what Chromium's fake camera plays (in a loop)."""
    import cv2

    from extraction import read_video
    frames, fps = read_video(video)
    with open(path, "wb") as out:
        for i, image in enumerate(frames):
            if i == 0:
                height, width = image.shape[:2]
                out.write(f"YUV4MPEG2 W{width} H{height} F{round(fps or 15)}:1 Ip A1:1 C420jpeg\n".encode())
            out.write(b"FRAME\n" + cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420).tobytes())
    return path


def browser_available() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        reason = f"{' and '.join(missing)} not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: the browser test must run, but {reason}")
        pytest.skip(reason)


def test_the_page_shows_the_sign_of_the_camera_video(https_server, shared_data, tmp_path_factory):
    browser_available()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    folder = tmp_path_factory.mktemp("live-browser")
    clip = write_y4m(shared_data / VIDEO, folder / "CLIP.y4m")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS + (f"--user-data-dir={folder / 'profile'}", f"--use-file-for-fake-video-capture={clip}"):
        options.add_argument(flag)
    os.environ["SE_OFFLINE"] = "true"   # were Selenium Manager ever asked, it may not download
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.get(https_server.url + "/")
        deadline, shown = time.monotonic() + SIGN_S, ""
        while time.monotonic() < deadline and shown != NAME:
            time.sleep(0.25)
            shown = driver.find_element("id", "current-sign").text
        screenshot = folder / "live.png"
        driver.save_screenshot(str(screenshot))
        print(f"screenshot: {screenshot}")
        status = driver.find_element("id", "status").text
        fps = driver.find_element("id", "fps").text
        assert shown == NAME, f"#current-sign shows {shown!r} after {SIGN_S} s (status: {status!r})"
        assert "error" not in driver.find_element("id", "status").get_attribute("class")
        assert driver.find_element("id", "top-list").text and fps not in ("", "–")
    finally:
        driver.quit()
