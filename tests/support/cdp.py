"""Headless Chromium driven over the DevTools protocol (a small client over websocket-client).

    with Browser(workdir) as browser:
        page = browser.new_page()
        page.navigate("http://127.0.0.1:8000/dashboard")
        page.wait_for("document.title === 'berth dashboard'")
        page.screenshot(path)
        assert page.errors() == []

The browser runs with a fresh profile in `workdir`, no sandbox (tests may run as root), no
GPU and none of the background traffic Chromium does on its own (updates, sync, field trials),
listening for DevTools on a loopback port it picks and writes to DevToolsActivePort.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import queue
import threading
import time
from pathlib import Path

import websocket

from harness.procs import Proc, find_binary, wait_until

FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--no-default-browser-check", "--disable-default-apps", "--disable-extensions",
         "--metrics-recording-only", "--mute-audio", "--remote-debugging-address=127.0.0.1",
         "--remote-debugging-port=0", "--window-size=1280,1800")


class CdpError(RuntimeError):
    pass


class Browser:
    def __init__(self, workdir: Path):
        binary = find_binary("chromium") or find_binary("chromium-browser")
        if binary is None:
            raise RuntimeError("chromium is not installed: run `make bootstrap`")
        self.profile = workdir / "profile"
        self.profile.mkdir(parents=True, exist_ok=True)
        self.proc = Proc([binary, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                         workdir / "chromium.log")
        active = self.profile / "DevToolsActivePort"
        wait_until(lambda: active.exists() and len(active.read_text().splitlines()) >= 2,
                   timeout=30, what="chromium's DevTools port")
        port, path = active.read_text().splitlines()[:2]
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}{path}", timeout=30,
                                              suppress_origin=True)
        self._ids = itertools.count(1)
        self._replies: dict[int, queue.Queue] = {}
        self._lock = threading.Lock()
        self.events: list[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                message = json.loads(self.ws.recv())
            except (websocket.WebSocketException, OSError, ValueError):
                return
            if "id" in message:
                with self._lock:
                    box = self._replies.pop(message["id"], None)
                if box is not None:
                    box.put(message)
            else:
                self.events.append(message)

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:
        command_id = next(self._ids)
        box: queue.Queue = queue.Queue(maxsize=1)
        with self._lock:
            self._replies[command_id] = box
        message = {"id": command_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        try:
            reply = box.get(timeout=timeout)
        except queue.Empty:
            raise CdpError(f"{method}: no answer after {timeout}s") from None
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def new_page(self) -> Page:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target,
                                                      "flatten": True})["sessionId"]
        page = Page(self, session)
        for domain in ("Page", "Runtime", "Log", "Network"):
            page.call(f"{domain}.enable")
        return page

    def close(self) -> None:
        with contextlib.suppress(CdpError, websocket.WebSocketException, OSError):
            self.call("Browser.close", timeout=5)  # then the process exits by itself
        self.ws.close()
        self.proc.stop()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Page:
    def __init__(self, browser: Browser, session: str):
        self.browser = browser
        self.session = session

    def call(self, method: str, params: dict | None = None, timeout: float = 30.0) -> dict:
        return self.browser.call(method, params, self.session, timeout)

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", {"url": url})
        self.wait_for("document.readyState === 'complete'")

    def evaluate(self, expression: str):
        """The value of a JavaScript expression (promises are awaited)."""
        result = self.call("Runtime.evaluate", {"expression": expression,
                                                "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise CdpError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0) -> None:
        """Wait until `expression` is truthy in the page (a DOM node counts as true)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.evaluate(f"Boolean({expression})"):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"not true after {timeout}s: {expression}")
            time.sleep(0.1)

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png",
                                                    "captureBeyondViewport": True})["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads seen by this page so far."""
        found = []
        for event in self.browser.events:
            if event.get("sessionId") != self.session:
                continue
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                found.append("console: " + " ".join(
                    str(a.get("value", a.get("description", ""))) for a in params["args"]))
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                found.append("exception: " + details.get("exception", {}).get(
                    "description", details.get("text", "")))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(f"log: {params['entry']['text']} {params['entry'].get('url', '')}")
        return found
