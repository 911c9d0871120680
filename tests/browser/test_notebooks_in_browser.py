"""Every notebook, run in JupyterLab in a real (headless Chromium) browser, as a user would.

For each notebook, in reading order (04, 05 and 06 reuse the run that 03 trained): open it, Run > Run All
Cells from the menu bar, wait for the kernel to finish, then check that every code cell ran and no cell
has an error output, that no table shows an absolute path, and screenshot every figure, widget and table
output (``outputs/browser/<notebook>/cellNN_outK_<kind>.png``) to be looked at. Notebook 02's player is
also played: pressing play must advance the frame slider and redraw the picture.

Run with ``make browser-test`` (installs Debian's chromium and the ``browser`` extra when missing);
skipped by ``make test``. Takes ~6-8 minutes on a 2-core CPU (the notebooks' own running time).
"""
from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
ORDER = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
NOTEBOOK_TIMEOUT_S = 900  # a notebook's defaults run in ~1-2 min on a 2-core CPU; 03 + 05 train runs

# The notebook panel's state, from the JupyterLab application (exposed by --LabApp.expose_app_in_browser).
STATE_JS = """() => {
  const app = window.jupyterapp;
  const panel = app && app.shell.currentWidget;
  if (!panel || !panel.sessionContext || !panel.context || !panel.context.isReady) return null;
  const session = panel.sessionContext.session;
  const kernel = session && session.kernel;
  const cells = panel.context.model.toJSON().cells.filter(c => c.cell_type === 'code').map(c => ({
    count: c.execution_count,
    errors: (c.outputs || []).filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue),
  }));
  const prompts = [...panel.node.querySelectorAll('.jp-InputArea-prompt')].map(p => p.textContent);
  const stderr = [...panel.node.querySelectorAll(
      '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')].map(o => o.textContent);
  return {ready: panel.sessionContext.isReady, kernel: kernel ? kernel.status : 'none',
          running: prompts.some(p => p.includes('*')), cells, stderr};
}"""

# Which outputs are figures (or tables) to screenshot, per output element.
KIND_JS = """(output) => {
  const has = (selector) => output.matches(selector) || output.querySelector(selector);
  if (has('.js-plotly-plot')) return 'plotly';
  if (has('.jupyter-widgets, .widget-image')) return 'widget';
  if (has('img[src]')) return 'image';
  if (has('table')) return 'table';
  return '';
}"""


def state(page) -> dict:
    return page.evaluate(STATE_JS)


def open_notebook(page, lab, name: str) -> None:
    page.goto(lab.url(f"{name}.ipynb"))
    page.wait_for_function(
        "() => { const a = window.jupyterapp, p = a && a.shell.currentWidget;"
        " return !!(p && p.sessionContext && p.sessionContext.isReady && p.sessionContext.session"
        " && p.sessionContext.session.kernel && p.sessionContext.session.kernel.status === 'idle'); }",
        timeout=180_000)
    page.locator(".jp-Notebook .jp-Cell").first.wait_for()


def run_all(page) -> None:
    """The menu bar's Run > Run All Cells, as a user would."""
    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
    page.locator('.lm-Menu-item[data-command="runmenu:run-all"]').click()


def wait_until_done(page, timeout: float = NOTEBOOK_TIMEOUT_S) -> dict:
    """Until the kernel is idle, no prompt says [*], and every code cell ran (or one failed), for 3 s."""
    deadline, since = time.monotonic() + timeout, None
    while True:
        s = state(page)
        done = (s and s["ready"] and s["kernel"] == "idle" and not s["running"]
                and (all(c["count"] is not None for c in s["cells"]) or any(c["errors"] for c in s["cells"])))
        if s and s["kernel"] in ("dead", "unknown"):
            pytest.fail(f"the kernel is {s['kernel']}")
        if done:
            since = since or time.monotonic()
            if time.monotonic() - since > 3:
                return s
        else:
            since = None
        if time.monotonic() > deadline:
            pytest.fail(f"the notebook did not finish in {timeout:.0f} s: {s}")
        time.sleep(1)


def screenshot_outputs(page, folder: Path) -> list[Path]:
    """Each figure / widget / table output, scrolled into view and screenshotted on its own."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    saved = []
    cells = page.locator(".jp-Notebook .jp-CodeCell")
    for i in range(cells.count()):
        outputs = cells.nth(i).locator(".jp-OutputArea-output")
        for k in range(outputs.count()):
            output = outputs.nth(k)
            kind = output.evaluate(KIND_JS)
            if not kind:
                continue
            output.scroll_into_view_if_needed()
            if kind == "plotly":
                page.wait_for_function("(o) => o.querySelector('.main-svg')", arg=output.element_handle())
                page.wait_for_timeout(1500)  # WebGL (software) draws the 3-D scene after the SVG
            if kind in ("image", "widget"):
                page.wait_for_function("(o) => [...o.querySelectorAll('img[src]')].every(i => i.complete && i.naturalWidth > 0)",
                                       arg=output.element_handle(), timeout=30_000)
            path = folder / f"cell{i:02d}_out{k}_{kind}.png"
            output.screenshot(path=str(path))
            saved.append(path)
    return saved


def check_player(page, folder: Path) -> None:
    """Notebook 02's skeleton player: it renders, and play advances the frame and redraws the picture."""
    widget = page.locator(".jp-OutputArea-output .widget-vbox").first
    widget.scroll_into_view_if_needed()
    image = widget.locator(".widget-image").first
    frame = widget.locator(".widget-slider", has=page.locator(".widget-label", has_text=re.compile(r"^frame$")))
    readout = frame.locator(".widget-readout")
    assert image.evaluate("i => i.complete && i.naturalWidth > 100 && i.naturalHeight > 100"), "the player shows no picture"
    before_value, before_src = int(readout.inner_text()), image.get_attribute("src")
    before_png = image.screenshot(path=str(folder / "player_before_play.png"))
    widget.locator(".widget-play button:has(.fa-play)").click()
    page.wait_for_timeout(1500)
    widget.locator(".widget-play button:has(.fa-pause)").click()
    # the kernel draws the frames it was sent; wait until the picture catches up with the slider
    page.wait_for_function("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'",
                           timeout=60_000)
    page.wait_for_timeout(1000)
    after_value, after_src = int(readout.inner_text()), image.get_attribute("src")
    after_png = image.screenshot(path=str(folder / "player_after_play.png"))
    assert after_value > before_value, f"play did not advance the frame slider ({before_value} -> {after_value})"
    assert after_src != before_src and after_png != before_png, "play advanced the slider but the picture stayed"


@pytest.mark.parametrize("name", ORDER)
def test_notebook_runs_in_jupyterlab(name, lab, browser, screenshots):
    page = browser.new_page()
    messages = []
    page.on("pageerror", lambda error: messages.append(str(error)))
    try:
        started = time.monotonic()
        open_notebook(page, lab, name)
        run_all(page)
        s = wait_until_done(page)
        seconds = time.monotonic() - started
        errors = [f"code cell {i}: {e}" for i, c in enumerate(s["cells"]) for e in c["errors"]]
        assert not errors, f"{name}: error outputs:\n" + "\n".join(errors)
        tracebacks = [t for t in s["stderr"] if "Traceback" in t]
        assert not tracebacks, f"{name}: traceback on stderr:\n" + "\n".join(t[-2000:] for t in tracebacks)
        not_run = [i for i, c in enumerate(s["cells"]) if c["count"] is None]
        assert not not_run, f"{name}: code cells {not_run} did not run"

        folder = screenshots / name
        saved = screenshot_outputs(page, folder)
        assert any(p.stem.endswith(("image", "plotly", "widget")) for p in saved), f"{name}: no figure was shown"
        cells = page.locator(".jp-RenderedMarkdown table td").all_inner_texts()
        absolute = [c for c in cells if c.strip().startswith("/") or str(lab.outputs) in c]
        assert not absolute, f"{name}: absolute paths in a table: {absolute}"
        if name.startswith("02_"):
            check_player(page, folder)
        print(f"{name}: ran in {seconds:.0f} s, {len(saved)} screenshots in {folder}")
        assert not messages, f"{name}: JavaScript errors in the page: {messages}"
    finally:
        page.close()
        lab.shutdown_kernels()
