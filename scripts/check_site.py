"""Check the built course site in a real browser (``make site-check``).

    python scripts/check_site.py --site outputs/site/html --out outputs/site-check

Serves the site on 127.0.0.1, opens every page in headless Chromium (Debian's package,
``apt-get install -y chromium``, driven by playwright without downloading a browser of its
own) with a fresh profile, and checks that each page renders:

- a full-page screenshot is written to ``<out>/<page>.png``;
- the page has text, and every image on the site (figures, logos) loads (naturalWidth > 0);
  a notebook page shows as many loaded figures in its outputs as its executed notebook has
  image outputs (read from the staged notebooks in ``<site>/../src/notebooks``);
- every nilearn ``view_img`` viewer (an iframe running brainsprite) draws its canvas, and a
  notebook page has as many as its notebook has (notebook 01 has them);
- no console errors, no uncaught page errors, no failed requests to the site itself.

Requests outside the site are blocked (the check runs offline): blocked images (the Colab and
Binder badges) are listed, any other blocked resource (a script, a stylesheet, a font) fails the
page, since the site must not need the internet to work. ``<out>/report.json`` holds the
findings per page; the exit status is 1 when any page fails.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import nbformat

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SKIP_DIRS = ("_static", "_sources", "_images", "jupyter_execute", "_sphinx_design_static")

# Waits for every <img> of the document (lazy ones made eager) and returns what each shows.
IMAGES_JS = """async () => {
  const imgs = [...document.images];
  imgs.forEach(img => { if (img.loading === 'lazy') img.loading = 'eager'; });
  await Promise.all(imgs.map(img => img.complete ? null :
      new Promise(done => { img.addEventListener('load', done); img.addEventListener('error', done);
                            setTimeout(done, 15000); })));
  return imgs.map(img => ({src: img.currentSrc || img.src, width: img.naturalWidth,
      in_output: !!img.closest('.cell_output, .output')}));
}"""

# In a viewer's frame: the largest canvas, and whether it is drawn (more than 8 colours).
CANVAS_JS = """() => {
  let best = null;
  for (const c of document.querySelectorAll('canvas')) {
    if (!c.width || !c.height) continue;
    const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    const colours = new Set();
    for (let i = 0; i < data.length; i += 4 * 31) {
      colours.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
    }
    const found = {width: c.width, height: c.height, colours: colours.size};
    if (!best || found.colours > best.colours) best = found;
  }
  return best;
}"""


def site_pages(site: str | Path) -> list[str]:
    """Every HTML page of the built site ``site`` (the folder with index.html), as paths
    relative to it (``index.html``, ``notebooks/01_data.html``, ...), index.html first.
    Raises SystemExit naming the folder and the command to run when there is no index.html."""
    site = Path(site)
    if not (site / "index.html").is_file():
        raise SystemExit(f"{site / 'index.html'} not found: build the site first (make site).")
    pages = [
        p.relative_to(site).as_posix()
        for p in site.rglob("*.html")
        if p.relative_to(site).parts[0] not in SKIP_DIRS
    ]
    return sorted(pages, key=lambda p: (p != "index.html", p))


def expected_outputs(src: str | Path | None) -> dict[str, dict[str, int]]:
    """What each notebook page must show, from the staged notebooks ``<src>/notebooks/*.ipynb``:
    ``{"notebooks/<name>.html": {"figures": n, "viewers": m}}`` with ``n`` the image outputs
    (image/png, image/jpeg, image/svg+xml) and ``m`` the nilearn view_img outputs (text/html
    running brainsprite). Empty when ``src`` is None or has no notebooks."""
    expected = {}
    for path in sorted(Path(src).glob("notebooks/*.ipynb")) if src else []:
        nb = nbformat.read(path, as_version=4)
        figures = viewers = 0
        for cell in nb.cells:
            for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
                data = output.get("data", {})
                figures += any(k in data for k in ("image/png", "image/jpeg", "image/svg+xml"))
                viewers += "brainsprite" in str(data.get("text/html", ""))
        expected[f"notebooks/{path.stem}.html"] = {"figures": figures, "viewers": viewers}
    return expected


def serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve the folder ``site`` on 127.0.0.1 (a free port) in a daemon thread; returns the
    server (call .shutdown()) and its base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def _local(url: str, base: str) -> bool:
    return url.startswith(base) or urlsplit(url).scheme in ("data", "blob", "about")


def check_page(context, base: str, page: str, shot: Path, expect: dict, timeout_s: float) -> dict:
    """Open ``base + page`` in a new tab of the playwright ``context``, write a full-page
    screenshot to ``shot`` and return the findings: ``problems`` (list of str, empty when the
    page passes), ``figures`` / ``viewers`` (loaded, expected), ``external`` (blocked URLs),
    ``seconds``."""
    tab = context.new_page()
    problems, external, console = [], [], []

    def on_console(msg):
        if msg.type == "error":
            where = (msg.location or {}).get("url", "")
            if where and not _local(where, base):
                return  # a blocked external resource, listed under "external"
            console.append(f"console error: {msg.text} ({where})")

    def on_request(route):
        url = route.request.url
        if _local(url, base):
            route.continue_()
            return
        external.append((route.request.resource_type, url))
        route.abort("blockedbyclient")

    tab.on("console", on_console)
    tab.on("pageerror", lambda error: console.append(f"page error: {error}"))
    tab.on(
        "requestfailed",
        lambda r: (
            console.append(f"request failed: {r.url} ({r.failure})")
            if _local(r.url, base) and not r.url.startswith("data:")
            else None
        ),
    )
    tab.on(
        "response",
        lambda r: console.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None,
    )
    tab.route("**/*", on_request)
    start = time.perf_counter()
    tab.goto(base + page, wait_until="load", timeout=timeout_s * 1000)
    text = tab.evaluate("() => (document.querySelector('main') || document.body).innerText.length")
    if text < 20:
        problems.append(f"the page has no text ({text} characters)")
    images = tab.evaluate(IMAGES_JS)
    local = [i for i in images if _local(i["src"], base)]
    broken = [i["src"] for i in local if i["width"] == 0]
    problems += [f"image not loaded: {src}" for src in broken]
    problems += [
        f"image linked as a repository page (needs the internet, and a blob page is not an "
        f"image): {i['src']}; the site build should copy it"
        for i in images
        if "/blob/" in i["src"]
    ]
    figures = sum(1 for i in local if i["in_output"] and i["width"] > 0)
    if figures < expect.get("figures", 0):
        problems.append(f"{figures} figures shown, the notebook has {expect['figures']}")
    viewers = _check_viewers(tab, problems, timeout_s)
    if viewers < expect.get("viewers", 0):
        problems.append(f"{viewers} view_img viewers drawn, the notebook has {expect['viewers']}")
    tab.wait_for_timeout(300)  # late console messages
    problems += console
    problems += [f"needs the internet: {kind} {url}" for kind, url in external if kind != "image"]
    shot.parent.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(shot), full_page=True, timeout=timeout_s * 1000)
    tab.close()
    return {
        "problems": problems,
        "figures": [figures, expect.get("figures")],
        "viewers": [viewers, expect.get("viewers")],
        "external": [url for _, url in external],
        "screenshot": str(shot),
        "seconds": round(time.perf_counter() - start, 1),
    }


def _check_viewers(tab, problems: list, timeout_s: float) -> int:
    """Count the nilearn view_img viewers (iframes whose document runs brainsprite) of ``tab``
    that drew their canvas; a viewer that did not draw within ``timeout_s`` is a problem."""
    drawn = 0
    for frame in tab.frames[1:]:
        try:
            frame.wait_for_load_state("load", timeout=timeout_s * 1000)
            if not frame.evaluate(
                "() => document.documentElement.outerHTML.includes('brainsprite')"
            ):
                continue
            frame.wait_for_function(
                f"() => {{ const c = ({CANVAS_JS})(); return c && c.colours > 8; }}",
                timeout=timeout_s * 1000,
            )
            drawn += 1
        except Exception as error:  # a frame that never drew: name it and go on
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            problems.append(
                f"a view_img viewer did not draw its canvas in {timeout_s:.0f} s: {first}"
            )
    return drawn


def main(argv=None) -> int:
    """Command line of ``make site-check``; returns the exit status (1 when any page fails)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", default="outputs/site/html", help="the built site (index.html)")
    parser.add_argument("--out", default="outputs/site-check", help="screenshots and report")
    parser.add_argument(
        "--src",
        default=None,
        help="the staged pages with the notebooks (default: <site>/../src)",
    )
    parser.add_argument("--page", action="append", help="check only this page (repeatable)")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--width", type=int, default=1280, help="window width, pixels")
    parser.add_argument("--timeout", type=float, default=60, help="seconds per page and step")
    args = parser.parse_args(argv)
    site = Path(args.site).resolve()
    pages = site_pages(site)
    if args.page:
        unknown = [p for p in args.page if p not in pages]
        if unknown:
            raise SystemExit(f"--page {unknown}: not pages of {site}; its pages: {pages}")
        pages = args.page
    src = Path(args.src) if args.src else site.parent / "src"
    expect = expected_outputs(src if src.is_dir() else None)
    if not Path(args.chromium).is_file():
        raise SystemExit(
            f"Chromium not found at {args.chromium}: install Debian's package "
            "(apt-get install -y chromium) or pass --chromium PATH."
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:
        raise SystemExit(
            f"{error}: install the site extra (pip install -c constraints.txt -e '.[site]')."
        ) from error
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    server, base = serve(site)
    report, start = {}, time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="site-check-profile-") as profile:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                profile,
                executable_path=args.chromium,
                headless=True,
                args=CHROMIUM_FLAGS,
                viewport={"width": args.width, "height": 900},
            )
            for page in pages:
                shot = out / (page.removesuffix(".html").replace("/", "__") + ".png")
                try:
                    found = check_page(
                        context, base, page, shot, expect.get(page, {}), args.timeout
                    )
                except Exception as error:  # a page that failed to open: report it, go on
                    found = {"problems": [f"could not be checked: {error}"], "screenshot": None}
                report[page] = found
                status = "ok  " if not found["problems"] else "FAIL"
                extra = (
                    f"figures {found['figures'][0]}, viewers {found['viewers'][0]}, "
                    f"{len(found['external'])} external blocked, {found['seconds']} s"
                    if "figures" in found
                    else ""
                )
                print(f"{status} {page}: {extra}", flush=True)
                for problem in found["problems"]:
                    print(f"       {problem}", flush=True)
            context.close()
    server.shutdown()
    (out / "report.json").write_text(json.dumps(report, indent=1))
    failed = [p for p, f in report.items() if f["problems"]]
    missing = [p for p in expect if p not in report and not args.page]
    for page in missing:
        print(f"FAIL {page}: the notebook has no page on the site")
    print(
        f"{len(pages) - len(failed)}/{len(pages)} pages render; screenshots and report.json in "
        f"{out} ({time.perf_counter() - start:.0f} s)"
    )
    return 1 if failed or missing else 0


if __name__ == "__main__":
    sys.exit(main())
