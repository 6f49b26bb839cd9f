"""Browser check of the notebooks as a user sees them: JupyterLab in headless Chromium (run by hand, not in CI).

    .venv/bin/pip install playwright        # the Python package only: the browser is the system Chromium
    apt-get install -y chromium             # (or any Chromium/Chrome; pass its path with --chromium)
    .venv/bin/python tools/browser_check.py [--out scratch/browser] [--chromium /usr/bin/chromium]

It starts JupyterLab from .venv on a free port of 127.0.0.1 with a random token (nothing listens beyond the
loopback interface, autosave is off so the notebooks on disk are not touched), then in Chromium:

1. opens nbs/08_viz.ipynb, runs all cells, and checks the SGO viewer (the last cell): the drawn image is at least
   512 px, the read-out names the tile on screen after a tile change, there is no second (static) figure under the
   viewer; it toggles the GT layer and sets the opacity to 1, taking a screenshot after each step;
2. adds a cell with `%matplotlib widget` (ipympl) and the viewer, hovers over the image and checks that the read-out
   follows the mouse;
3. opens nbs/03_losses.ipynb and checks that "Details that matter for reproducing the paper" renders as a list
   with code spans and typeset formulas (no literal backticks, no `\\,`), that its API docs (`show_doc`) show
   plain source links (no Quarto `{target=…}` text), and that saving it with Ctrl+S leaves the file unchanged
   (nbdev's pre-save hook, as under `make lab`);
4. opens nbs/90_benchmarks.ipynb and checks that the GPU-speed issue's table (drawn from benchmarks/results/) renders
   as a table with a row per issue row and the recorded machines in its header.

Screenshots (PNG) go to --out; every check prints PASS/FAIL and the exit status is the number of failures.
Look at the screenshots: the checks cannot see colours or layout.
"""
import argparse
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
failures = []

def check(name, ok, detail=""):
    print(("PASS " if ok else "FAIL ") + name + (f": {detail}" if detail else ""), flush=True)
    if not ok: failures.append(name)

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

def start_lab(port, token, tmp: Path) -> subprocess.Popen:
    jupyter = Path(sys.executable).parent / "jupyter"
    if not jupyter.exists(): sys.exit(f"{jupyter}: not found; run `make install` (it installs JupyterLab) first")
    settings = tmp / "settings" / "@jupyterlab" / "docmanager-extension"
    settings.mkdir(parents=True)
    (settings / "plugin.jupyterlab-settings").write_text(json.dumps({"autosave": False}))
    notes = tmp / "settings" / "@jupyterlab" / "apputils-extension"; notes.mkdir(parents=True)   # no news toast
    (notes / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}   # the Makefile's Agg would hide inline figures
    env.update(JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), OMP_NUM_THREADS="1")
    cmd = [str(jupyter), "lab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT}",
           "--ContentsManager.pre_save_hook=nbdev.clean.clean_jupyter",      # as `make lab`: notebooks saved clean
           f"--LabApp.user_settings_dir={tmp / 'settings'}", f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
           "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if os.geteuid() == 0: cmd.append("--allow-root")   # containers
    log = open(tmp / "lab.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/api/status?token={token}"
    for _ in range(240):
        if proc.poll() is not None: sys.exit(f"JupyterLab exited ({proc.returncode}); see {tmp / 'lab.log'}")
        try:
            urllib.request.urlopen(url, timeout=2); return proc
        except OSError: time.sleep(0.5)
    proc.terminate(); sys.exit(f"JupyterLab did not answer on 127.0.0.1:{port} within 120 s; see {tmp / 'lab.log'}")

def open_notebook(page, base, token, path):
    print(f"  opening {path}", flush=True)
    page.goto(f"{base}/lab/tree/{path}?token={token}&reset")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    page.wait_for_function("() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]"
                           ".some(e => /\\|\\s*Idle/.test(e.textContent))", timeout=180_000)   # "Python 3 | Idle"
    wait_idle(page, timeout=240)

def wait_idle(page, timeout=600):
    "Wait until the kernel is idle and no cell is queued or running (`[*]`)."
    t0 = time.time()
    time.sleep(1.0)
    while time.time() - t0 < timeout:
        busy = page.evaluate("""() => {
            const p = [...document.querySelectorAll('.jp-InputPrompt')].some(e => e.textContent.includes('*'));
            const k = document.querySelector('.jp-Notebook-ExecutionIndicator[data-status]');
            return p || (k !== null && k.getAttribute('data-status') !== 'idle');
        }""")
        if not busy: return
        time.sleep(1.0)
    raise TimeoutError(f"the notebook was still running after {timeout} s")

def wait_done(page, timeout=480):
    "After Run All: wait until no cell is queued or running, then return the prompts (`[3]:`, `[ ]:` if not run)."
    t0, quiet = time.time(), 0
    while time.time() - t0 < timeout:
        prompts = page.evaluate(
            "() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(e => e.textContent.trim())")
        if prompts and all(re.search(r"\[\d+\]", p) for p in prompts): return prompts
        quiet = 0 if any("*" in p for p in prompts) else quiet + 1
        if quiet >= 10: return prompts          # 20 s with nothing running: stopped (an error) or done
        time.sleep(2.0)
    raise TimeoutError(f"the notebook had not finished after {timeout} s: prompts {prompts}")

def menu(page, top, item):
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{top}$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{item}$")).first.click()

def viewer_parts(cell):
    return dict(readout=cell.locator(".widget-label").last, tile=cell.locator(".widget-dropdown select"),
                gt=cell.locator(".widget-checkbox", has_text="GT").locator("input"),
                slider=cell.locator(".widget-hslider").first)

def main():
    import faulthandler
    import signal
    faulthandler.register(signal.SIGUSR1)   # `kill -USR1 PID` prints where a stuck check waits
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "scratch" / "browser"), help="folder for the screenshots")
    ap.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser")
                    or shutil.which("google-chrome"), help="the Chromium/Chrome executable")
    args = ap.parse_args()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sys.exit("playwright is not installed: run `.venv/bin/pip install playwright` (the system Chromium is used)")
    if not args.chromium or not Path(args.chromium).exists():
        sys.exit(f"no Chromium found ({args.chromium!r}): `apt-get install -y chromium`, or pass --chromium PATH")
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    port, token = free_port(), secrets.token_hex(16)
    tmp = Path(tempfile.mkdtemp(prefix="ssrs-browser-"))
    lab = start_lab(port, token, tmp)
    base = f"http://127.0.0.1:{port}"
    print(f"JupyterLab on {base} (log: {tmp / 'lab.log'}); screenshots in {out}", flush=True)
    shot = lambda loc, name: (loc.screenshot(path=str(out / name)), print(f"  screenshot {out / name}", flush=True))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            try: run_checks(page, base, token, out, shot)
            except Exception:
                page.screenshot(path=str(out / "error.png")); print(f"  screenshot {out / 'error.png'}"); raise
            browser.close()
    finally:
        lab.terminate()
        try: lab.wait(timeout=20)
        except subprocess.TimeoutExpired: lab.kill()
        shutil.copy(tmp / "lab.log", out / "lab.log"); shutil.rmtree(tmp, ignore_errors=True)
    print(f"{len(failures)} failure(s)" + (f": {failures}" if failures else ""))
    return len(failures)

def run_checks(page, base, token, out, shot):
    "The checks, in one browser page."
    # 1. 08_viz with the default (inline) backend
    open_notebook(page, base, token, "nbs/08_viz.ipynb")
    t0 = time.time()
    for _ in range(3):   # on a loaded machine the first Run All can come before the kernel is connected
        menu(page, "Run", "Run All Cells"); prompts = wait_done(page)
        if any(re.search(r"\[\d+\]", p) for p in prompts): break
        print("  nothing ran: Run All again", flush=True)
    print(f"  08_viz ran in {time.time() - t0:.0f} s; prompts {prompts}", flush=True)
    check("08_viz: every code cell ran", all(re.search(r"\[\d+\]", p) for p in prompts))
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    tracebacks = [t for t in errors.all_text_contents() if "Error" in t]
    check("08_viz runs without errors", not tracebacks, tracebacks[0][-300:] if tracebacks else "")
    cell = page.locator(".jp-CodeCell").last
    cell.scroll_into_view_if_needed()
    page.wait_for_selector(".jp-CodeCell:last-child .widget-dropdown", timeout=60_000)
    v = viewer_parts(cell)
    img = cell.locator(".jp-OutputArea-output img")
    page.wait_for_timeout(1000)
    check("one figure in the viewer cell (no stale static copy)", img.count() == 1, f"{img.count()} images")
    box = img.first.bounding_box()
    check("viewer image >= 512 px", box is not None and max(box["width"], box["height"]) >= 512, str(box))
    shot(cell, "08_viz_viewer_1_default.png")
    page.screenshot(path=str(out / "08_viz_page.png"), full_page=False)
    first = v["readout"].text_content()
    tiles = v["tile"].locator("option").all_text_contents()
    check("distinct demo tiles", len(tiles) == len(set(tiles)) >= 2, str(tiles))
    # the read-out follows a tile change
    src0 = img.first.get_attribute("src")
    v["tile"].select_option(tiles[1])
    try: page.wait_for_function("([el, t]) => el.textContent.startsWith(t)",
                                arg=[v["readout"].element_handle(), tiles[1].replace("\xa0", " ")], timeout=20_000)
    except Exception: pass
    after = v["readout"].text_content()
    check("read-out refreshed after a tile change", after.startswith(tiles[1].replace("\xa0", " ")),  # nbsp in options
          f"{first!r} -> {after!r}")
    check("image redrawn after a tile change", img.first.get_attribute("src") != src0)
    shot(cell, "08_viz_viewer_2_tile2.png")
    # a layer toggle: GT on
    src1 = img.first.get_attribute("src")
    v["gt"].check(); page.wait_for_timeout(1500)
    check("GT toggle redraws the image", img.first.get_attribute("src") != src1)
    shot(cell, "08_viz_viewer_3_gt_on.png")
    # the opacity: keyboard on the slider handle (End = maximum)
    src2 = img.first.get_attribute("src")
    handle = v["slider"].locator(".noUi-handle, .slider-handle, [role=slider]").first
    handle.click(); handle.press("End"); page.wait_for_timeout(1500)
    readout = v["slider"].locator(".widget-readout").text_content().strip()
    check("opacity set to 1", readout in ("1.00", "1.0", "1"), readout)
    check("opacity redraws the image", img.first.get_attribute("src") != src2)
    shot(cell, "08_viz_viewer_4_opacity1.png")
    # y/x boxes drive the read-out
    ybox = cell.locator(".widget-inline-hbox", has_text="y").locator("input").first
    ybox.fill("100"); ybox.press("Enter"); page.wait_for_timeout(1000)
    check("typed y reaches the read-out", "y=100" in v["readout"].text_content(), v["readout"].text_content())
    shot(cell, "08_viz_viewer_6_typed_y100.png")   # look: a white + with a black rim marks (y=100, x)
    # Fig. 3 panel (the fig3_panel cell's output)
    f3 = page.locator(".jp-CodeCell", has_text="fig3_panel([(samples[0][0]").locator(".jp-OutputArea-output img")
    if f3.count():
        f3.first.scroll_into_view_if_needed(); shot(f3.first, "08_viz_fig3.png")
        w = f3.first.evaluate("e => e.naturalWidth")
        check("Fig. 3 panel >= 100 dpi (about 960 px wide for 4 panels)", w >= 900, f"{w} px")

    # 2. the interactive (ipympl) viewer: a new cell at the end
    cell.click(position={"x": 5, "y": 5}); page.keyboard.press("Escape"); page.keyboard.press("b")
    page.keyboard.press("Enter")
    page.keyboard.type("%matplotlib widget\nSGOViewer(list(tiles), tiles.__getitem__).show();")
    page.keyboard.press("Shift+Enter"); wait_idle(page)
    cell2 = page.locator(".jp-CodeCell").nth(-2)   # Shift+Enter added an empty cell below
    try:
        canvas = cell2.locator("canvas.jupyter-widgets, .jupyter-matplotlib-canvas-div canvas").last
        canvas.wait_for(timeout=60_000); cell2.scroll_into_view_if_needed(); page.wait_for_timeout(2000)
        cb = canvas.bounding_box()
        check("ipympl viewer canvas >= 512 px", cb is not None and max(cb["width"], cb["height"]) >= 512, str(cb))
        readout = cell2.locator(".widget-label").last
        r0 = readout.text_content()
        page.mouse.move(cb["x"] + cb["width"] * 0.3, cb["y"] + cb["height"] * 0.6); page.wait_for_timeout(1500)
        r1 = readout.text_content()
        check("hover moves the read-out (ipympl)", r1 != r0 and "y=0, x=0" not in r1, f"{r0!r} -> {r1!r}")
        shot(cell2, "08_viz_viewer_5_ipympl_hover.png")   # look: the + under the pointer's position
        page.mouse.move(cb["x"] + cb["width"] + 300, cb["y"] - 40); page.wait_for_timeout(1500)
        r2 = readout.text_content()
        check("leaving the image clears the read-out (ipympl)", "pointer outside the image" in r2, repr(r2))
        shot(cell2, "08_viz_viewer_7_ipympl_left.png")
    except Exception as e:   # report, keep going
        check("ipympl viewer shown", False, repr(e)[:300]); shot(cell2, "08_viz_viewer_5_ipympl_error.png")

    # 3. 03_losses: the "Details that matter" list
    open_notebook(page, base, token, "nbs/03_losses.ipynb")
    md = page.locator(".jp-MarkdownCell", has_text="Details that matter for reproducing the paper").first
    md.scroll_into_view_if_needed(); page.wait_for_timeout(3000)   # MathJax typesets lazily
    items = md.locator(".jp-RenderedMarkdown li")
    check("03_losses details: a list of 5 items", items.count() == 5, f"{items.count()} <li>")
    text = md.locator(".jp-RenderedMarkdown").text_content()
    check("03_losses details: no literal backticks", "`" not in text)
    check("03_losses details: code spans", md.locator(".jp-RenderedMarkdown li code").count() >= 5)
    check("03_losses details: formulas typeset", md.locator("mjx-container").count() >= 4,
          f"{md.locator('mjx-container').count()} formulas")
    check("03_losses details: no raw \\,", "\\," not in text)
    shot(md, "03_losses_details.png")
    # API docs (show_doc): plain source links, no Quarto attribute text
    outs = " ".join(page.locator(".jp-OutputArea-output").all_text_contents())
    check("03_losses API docs: no raw {target=...} text", "{target=" not in outs and "float:right" not in outs)
    links = page.locator(".jp-OutputArea-output a", has_text=re.compile("^source$"))
    check("03_losses API docs: a source link per show_doc", links.count() >= 4, f"{links.count()} links")
    if links.count():
        doc = page.locator(".jp-CodeCell", has_text="show_doc(object_loss)").first
        doc.scroll_into_view_if_needed(); shot(doc, "03_losses_show_doc.png")
    # saving in JupyterLab (Ctrl+S, after it added its metadata on opening) leaves the file as nbdev_clean wrote it
    nb_file = ROOT / "nbs" / "03_losses.ipynb"
    before = nb_file.read_bytes()
    page.locator(".jp-Notebook").first.click(position={"x": 5, "y": 5}); page.keyboard.press("Control+s")
    page.wait_for_timeout(3000)
    after = nb_file.read_bytes()
    check("03_losses saved from JupyterLab: the file is unchanged (nbdev's pre-save hook)", after == before,
          f"{len(before)} -> {len(after)} bytes")
    if after != before: nb_file.write_bytes(before)   # put the committed notebook back

    # 4. 90_benchmarks: the GPU-speed issue's table, drawn from benchmarks/results/ (its stored output, as opened)
    open_notebook(page, base, token, "nbs/90_benchmarks.ipynb")
    cell = page.locator(".jp-CodeCell", has_text="recorded = sorted(").first
    cell.scroll_into_view_if_needed(); page.wait_for_timeout(1500)
    table = cell.locator(".jp-RenderedMarkdown table")
    check("90_benchmarks GPU table: rendered as a table", table.count() == 1, f"{table.count()} tables")
    if table.count():
        rows = table.locator("tbody tr").count()
        check("90_benchmarks GPU table: one row per issue row", rows >= 16, f"{rows} rows")
        head = table.locator("thead").text_content()
        check("90_benchmarks GPU table: the machines in the header", "CPU" in head, head[:200])
    outs = " ".join(cell.locator(".jp-OutputArea-output").all_text_contents())
    check("90_benchmarks: names the GPU runs recorded", re.search(r"GPU runs recorded: (\[.+\]|none)", outs) is not None,
          outs[:120])
    shot(cell, "90_benchmarks_gpu_table.png")

if __name__ == "__main__":
    sys.exit(main())
