"""A real browser for the dashboard test: Debian's ``chromium`` (installed by the test session when missing and
this is root with apt-get, like the SLURM packages), driven over the DevTools protocol on a pipe
(``--remote-debugging-pipe``: JSON messages ended by NUL on file descriptors 3 and 4), so a test can load a
page, wait for its scripts, click and read what a user would see. No driver or extra package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time


def ensure_chromium() -> str:
    """The browser's path; installs Debian's package when missing (root with apt-get), else raises OSError."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise OSError("chromium is not installed and this is not root with apt-get (apt-get install chromium)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if out.returncode != 0:
            raise OSError(f"apt-get install chromium failed: {out.stderr[-800:]}")
    return shutil.which("chromium") or "chromium"


class Chromium:
    def __init__(self, binary: str):
        to_chrome, self._w = os.pipe()
        self._r, from_chrome = os.pipe()
        self._profile = tempfile.mkdtemp(prefix="s2lpo-chromium-")

        def fds() -> None:  # in the child: commands arrive on fd 3, answers leave on fd 4
            os.dup2(to_chrome, 3)
            os.dup2(from_chrome, 4)

        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--remote-debugging-pipe", f"--user-data-dir={self._profile}", "about:blank"],
            preexec_fn=fds, pass_fds=(3, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome)
        os.close(from_chrome)
        self._buf, self._id, self.session = b"", 0, None

    def call(self, method: str, **params) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" not in self._buf:
                chunk = os.read(self._r, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed its DevTools pipe")
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def open(self, url: str) -> None:
        target = self.call("Target.createTarget", url=url)["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def js(self, expression: str):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return r["result"].get("value")

    def text(self) -> str:
        return self.js("document.body ? document.body.innerText : ''") or ""

    def wait_for(self, needle: str, timeout: float = 60.0) -> str:
        """The page's visible text once it shows ``needle`` (the app renders after its scripts load)."""
        deadline, text = time.time() + timeout, ""
        while time.time() < deadline:
            text = self.text()
            if needle in text:
                return text
            time.sleep(0.3)
        raise TimeoutError(f"{needle!r} not on the page after {timeout:.0f}s; it shows:\n{text[:1500]}")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for fd in (self._r, self._w):
            os.close(fd)
        shutil.rmtree(self._profile, ignore_errors=True)
