"""Fixtures of the real-browser test: a JupyterLab server on a temporary copy of the notebooks, and a
headless Chromium (Debian's ``chromium`` package, driven by the ``playwright`` Python package; no
browser download).

The test runs only when asked: ``make browser-test`` (or ``CAGELIB_BROWSER_TEST=1 pytest tests/browser``).
Under ``make test`` it is skipped with that reason. When asked for, a missing Chromium or Playwright is
an error, not a skip, so CI (``.ci/run``) cannot pass without having run it.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO_ROOT / "notebooks"
CHROMIUM = os.environ.get("CAGELIB_CHROMIUM", "/usr/bin/chromium")
# Screenshots: outputs/browser/<notebook>/<cell>_<output>_<kind>.png (git-ignored, rewritten each run)
SCREENSHOTS = Path(os.environ.get("CAGELIB_BROWSER_SCREENSHOTS", REPO_ROOT / "outputs" / "browser"))
# Without the background-networking flags Chromium's own connections (updates, sync, ...) are refused
# many at a time on a closed network, which slows every page down.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--enable-unsafe-swiftshader"]  # software WebGL for plotly's 3-D scene
REQUESTED = os.environ.get("CAGELIB_BROWSER_TEST", "") not in ("", "0")


def pytest_collection_modifyitems(config, items):
    if REQUESTED:
        return
    skip = pytest.mark.skip(reason="real-browser notebook test: run `make browser-test` "
                                   "(or CAGELIB_BROWSER_TEST=1; needs /usr/bin/chromium and playwright)")
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(skip)


def _requirements() -> None:
    """Fail (not skip) when the test was asked for and cannot run."""
    missing = []
    if not Path(CHROMIUM).is_file():
        missing.append(f"{CHROMIUM} (apt-get install -y chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append('the playwright package (pip install -e ".[browser]")')
    if missing:
        pytest.fail("browser test asked for but missing: " + ", ".join(missing) + "; `make browser-test` installs both")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settings(folder: Path) -> None:
    """JupyterLab user settings for the test: every cell in the DOM (no windowing, so each output can be
    found and screenshotted), no news or update pop-ups."""
    def write(plugin: str, values: dict) -> None:
        path = folder / plugin
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))

    write("@jupyterlab/notebook-extension/tracker.jupyterlab-settings", {"windowingMode": "none"})
    write("@jupyterlab/apputils-extension/notification.jupyterlab-settings",
          {"fetchNews": "false", "checkForUpdates": False})


class Lab:
    """A running JupyterLab: ``url(path)`` opens a notebook; ``shutdown_kernels()`` frees their memory."""

    def __init__(self, port: int, token: str, root: Path, outputs: Path, log: Path):
        self.port, self.token, self.root, self.outputs, self.log = port, token, root, outputs, log

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/lab/tree/{path}?reset&token={self.token}"

    def api(self, path: str, method: str = "GET"):
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        for session in self.api("sessions"):
            self.api(f"sessions/{session['id']}", method="DELETE")


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """JupyterLab (this environment's ``jupyter lab``) serving a copy of notebooks/, its runs in a
    temporary outputs folder, one torch thread per kernel."""
    _requirements()
    base = tmp_path_factory.mktemp("lab")
    root, outputs = base / "notebooks", base / "outputs"
    shutil.copytree(NOTEBOOKS, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    outputs.mkdir()
    _settings(base / "settings")
    token = os.urandom(12).hex()
    port = _free_port()
    env = {**os.environ, "CAGELIB_OUTPUTS": str(outputs), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "JUPYTERLAB_SETTINGS_DIR": str(base / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"),
           "JUPYTER_RUNTIME_DIR": str(base / "runtime"), "JUPYTER_CONFIG_DIR": str(base / "config"),
           "MPLBACKEND": "module://matplotlib_inline.backend_inline", "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    log = base / "jupyter.log"
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
               f"--port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True"]
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Lab(port, token, root, outputs, log)
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"jupyter lab exited ({process.returncode}):\n{log.read_text()[-3000:]}")
            try:
                server.api("status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"jupyter lab did not answer in 120 s:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="session")
def browser(lab):
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="cagelib-chromium-")
    with sync_playwright() as p:
        # A persistent context is how Playwright takes a fresh --user-data-dir of our own.
        context = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1200}, device_scale_factor=1)
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
