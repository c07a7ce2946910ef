"""Build the course site (``make site``): a static website of the README, docs/ and the EXECUTED
course notebooks, with Sphinx + myst-nb + sphinx-book-theme (Jupyter Book 1's stack).

    python docs/site/build.py --notebooks outputs/course --out outputs/site

The notebooks are taken as executed by ``slicelib course --preset <p> --out <dir>`` (``make
demo`` writes ``outputs/course/*.ipynb``) and rendered from their saved outputs: the site build
never runs them. The pages are laid out in ``<out>/src`` as in the checkout (README.md becomes
``index.md``); a relative link to a file of the checkout that is not a page of the site becomes
a link to that file in the repository of ``[project.urls] Repository`` (pyproject.toml). The
HTML lands in ``<out>/html`` (open ``<out>/html/index.html``); Sphinx's warnings in
``<out>/warnings.txt``.
"""

from __future__ import annotations

import argparse
import html
import os
import posixpath
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import yaml

from slicelib.course import BADGE_BRANCH, NOTEBOOKS, repository_url

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TOC = HERE / "_toc.yml"


class SiteError(RuntimeError):
    """The site cannot be built from what is there (missing or unexecuted notebooks, a table of
    contents that disagrees with slicelib.course.NOTEBOOKS); the message says what to do."""


def toc_pages(toc: str | os.PathLike = TOC) -> list[str]:
    """Every page of the table of contents ``toc`` (Jupyter Book 1 ``_toc.yml``), in order, as
    paths without suffix in the site's layout (``index``, ``docs/results``, ``notebooks/01_data``).
    """
    spec = yaml.safe_load(Path(toc).read_text())
    pages = [spec["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                pages.append(entry["file"])
            walk(entry.get("sections"))

    for part in spec.get("parts", []):
        walk(part.get("chapters"))
    walk(spec.get("chapters"))
    return pages


def toc_notebooks(toc: str | os.PathLike = TOC) -> list[str]:
    """The notebook names (``01_data``, ...) that the table of contents lists, in order."""
    return [p.split("/", 1)[1] for p in toc_pages(toc) if p.startswith("notebooks/")]


def check_toc(toc: str | os.PathLike = TOC) -> list[str]:
    """Check that ``toc`` lists exactly the course notebooks of slicelib.course.NOTEBOOKS and
    return them; raises SiteError naming the file and each missing or unknown notebook."""
    listed = toc_notebooks(toc)
    missing = [n for n in NOTEBOOKS if n not in listed]
    unknown = [n for n in listed if n not in NOTEBOOKS]
    if missing or unknown:
        raise SiteError(
            f"{toc}: the table of contents must list every course notebook of "
            f"slicelib.course.NOTEBOOKS as notebooks/<name>; missing: {missing or 'none'}, "
            f"not a course notebook: {unknown or 'none'}. Edit {toc}."
        )
    return listed


def run_first(course_dir: Path) -> str:
    """The commands that write the executed notebooks into ``course_dir``."""
    return (
        f"Run first: slicelib course --preset cpu --out {course_dir} (what make demo runs, about "
        f"14 min), or for a quick look: slicelib course --preset smoke --out {course_dir} (a few "
        "minutes)"
    )


def executed_notebooks(course_dir: str | os.PathLike, names=NOTEBOOKS) -> dict[str, dict]:
    """Read the executed notebooks ``<course_dir>/<name>.ipynb`` and check that they ran.

    Returns:
        ``{name: {"path", "preset", "end_time", "notebook"}}`` (``preset`` and ``end_time`` from
        papermill's metadata, None when absent; ``notebook`` the nbformat node).
    Raises SiteError listing every notebook that is missing, was never executed (a code cell
    without an execution count, as in notebooks/*.ipynb) or stopped with an error, and saying
    which command to run first.
    """
    course_dir = Path(course_dir)
    found, problems = {}, []
    for name in names:
        path = course_dir / f"{name}.ipynb"
        if not path.is_file():
            problems.append(f"{path} is missing")
            continue
        nb = nbformat.read(path, as_version=4)
        unrun = [
            i
            for i, cell in enumerate(nb.cells)
            if cell.cell_type == "code" and cell.source.strip() and cell.execution_count is None
        ]
        papermill = nb.metadata.get("papermill", {})
        if papermill.get("exception"):
            problems.append(f"{path} stopped with an error (papermill exception)")
        elif unrun:
            problems.append(f"{path} is not executed (code cell {unrun[0]} has no outputs run)")
        found[name] = {
            "path": path,
            "preset": papermill.get("parameters", {}).get("PRESET"),
            "end_time": papermill.get("end_time"),
            "notebook": nb,
        }
    if problems:
        raise SiteError(
            "The course site is built from the executed notebooks, and "
            + "; ".join(problems)
            + f". {run_first(course_dir)}."
        )
    return found


_LINK = re.compile(r"(\]\()([^)\s]+)(\))")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _site_path(repo_path: str) -> str | None:
    """The site path of a checkout file that is a page (README.md -> index.md), else None."""
    if repo_path == "README.md":
        return "index.md"
    if re.fullmatch(r"docs/[^/]+\.md", repo_path) or re.fullmatch(
        r"notebooks/[^/]+\.ipynb", repo_path
    ):
        return repo_path
    return None


#: Files a page shows (Markdown images): copied into the site, never linked on the repository
#: host (a GitHub "blob" URL is an HTML page, not an image, and needs the internet).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".svg")


def rewrite_links(
    text: str, source: str, pages: set[str], repo_url: str, repo: Path = REPO,
    assets: set[str] | None = None,
) -> str:  # fmt: skip
    """Rewrite the relative Markdown links of ``text`` (the file ``source``, a path relative to
    the checkout) for the site: a link to a page of the site (``pages``: site paths with suffix,
    e.g. ``docs/cli.md``) points at that page; an image of the checkout (:data:`IMAGE_SUFFIXES`)
    is copied into the site at its checkout path (collected in ``assets``, which :func:`stage`
    copies) and linked there; a link to another file or folder of the checkout ``repo`` points
    at it in ``repo_url`` (branch BADGE_BRANCH). Absolute URLs, anchors, links inside fenced
    code and links to paths that do not exist stay as they are (Sphinx warns)."""
    out, fenced = [], False
    site_dir = posixpath.dirname(_site_path(source) or source)
    assets = set() if assets is None else assets
    for line in text.splitlines(keepends=True):
        if _FENCE.match(line):
            fenced = not fenced
        if not fenced:
            line = _LINK.sub(
                lambda m: _rewrite(m, source, site_dir, pages, repo_url, repo, assets), line
            )
        out.append(line)
    return "".join(out)


def _rewrite(match, source, site_dir, pages, repo_url, repo, assets):
    target = match.group(2)
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith(("#", "/")):
        return match.group(0)
    path, hash_, anchor = target.partition("#")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(source), path))
    page = _site_path(resolved)
    if page in pages:
        new = posixpath.relpath(page, site_dir or ".") + hash_ + anchor
    elif (
        not resolved.startswith("..")
        and resolved.lower().endswith(IMAGE_SUFFIXES)
        and (repo / resolved).is_file()
    ):
        assets.add(resolved)
        new = posixpath.relpath(resolved, site_dir or ".")
    elif not resolved.startswith("..") and (repo / resolved).exists():
        kind = "tree" if (repo / resolved).is_dir() else "blob"
        new = f"{repo_url}/{kind}/{BADGE_BRANCH}/{resolved}" + hash_ + anchor
    else:
        return match.group(0)
    return match.group(1) + new + match.group(3)


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def static_widgets(nb) -> int:
    """Replace, in place, every ipywidgets output of the notebook ``nb`` (the tqdm progress bars)
    by static HTML drawn from the widget state that the executed notebook saved (its final
    values: "compare: 100%", the bar, "2/2 [00:12<00:00]"), and drop that state, so that the
    page needs no widget JavaScript from a CDN. Boxes, HTML, labels and progress bars are drawn;
    an output with any other widget keeps its text/plain form. Returns how many were drawn."""
    state = nb.metadata.pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    drawn = 0
    for cell in nb.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            data = output.get("data", {})
            if WIDGET_VIEW not in data:
                continue
            view = data.pop(WIDGET_VIEW)
            markup = _widget_html(state, view.get("model_id"))
            if markup is not None:
                data["text/html"] = f'<div class="static-widget">{markup}</div>'
                drawn += 1
    return drawn


def _widget_html(state: dict, model_id: str | None) -> str | None:
    model = state.get(model_id or "")
    if model is None:
        return None
    name, values = model.get("model_name"), model.get("state", {})
    if name in ("HBoxModel", "VBoxModel", "BoxModel"):
        children = [_widget_html(state, c.removeprefix("IPY_MODEL_")) for c in values["children"]]
        if any(c is None for c in children):
            return None
        direction = "column" if name == "VBoxModel" else "row"
        return (
            f'<div style="display:flex;flex-direction:{direction};align-items:center;gap:.5em">'
            + "".join(children)
            + "</div>"
        )
    if name in ("HTMLModel", "HTMLMathModel"):
        return f"<span>{values.get('value', '')}</span>"
    if name == "LabelModel":
        return f"<span>{html.escape(str(values.get('value', '')))}</span>"
    if name in ("FloatProgressModel", "IntProgressModel"):
        low, high, value = values.get("min", 0), values.get("max", 100), values.get("value", 0)
        return f'<progress value="{value - low}" max="{high - low}"></progress>'
    return None


def stage(
    course_dir: str | os.PathLike,
    src: str | os.PathLike,
    repo: str | os.PathLike = REPO,
    toc: str | os.PathLike = TOC,
) -> dict:
    """Lay the site's pages out in ``src`` (emptied first): README.md as index.md, the docs/
    pages of the table of contents, and the executed notebooks of ``course_dir`` as
    ``notebooks/<name>.ipynb``, their relative links rewritten by :func:`rewrite_links` and
    their progress bars drawn as static HTML by :func:`static_widgets`.

    Returns ``{"pages": [site paths], "assets": [images copied], "presets": {name: preset},
    "end_times": {name: str}}``.
    Raises SiteError (see :func:`check_toc`, :func:`executed_notebooks`) or, for a docs page of
    the table of contents that the checkout lacks, naming it.
    """
    repo, src = Path(repo), Path(src)
    names = check_toc(toc)
    notebooks = executed_notebooks(course_dir, names)
    url = repository_url(repo)
    pages = toc_pages(toc)
    site_files = {p + (".ipynb" if p.startswith("notebooks/") else ".md") for p in pages}
    if src.exists():
        shutil.rmtree(src)
    assets: set[str] = set()
    for page in pages:
        if page.startswith("notebooks/"):
            continue
        origin = "README.md" if page == "index" else page + ".md"
        if not (repo / origin).is_file():
            raise SiteError(f"{toc} lists {page}, but {repo / origin} does not exist; fix {toc}.")
        target = src / (page + ".md")
        target.parent.mkdir(parents=True, exist_ok=True)
        text = (repo / origin).read_text(encoding="utf-8")
        target.write_text(rewrite_links(text, origin, site_files, url, repo, assets), "utf-8")
    for name, info in notebooks.items():
        nb = info["notebook"]
        static_widgets(nb)
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                cell.source = rewrite_links(
                    cell.source, f"notebooks/{name}.ipynb", site_files, url, repo, assets
                )
        (src / "notebooks").mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, src / "notebooks" / f"{name}.ipynb")
    for asset in sorted(assets):  # the images the pages show, at their checkout paths
        (src / asset).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(repo / asset, src / asset)
    return {
        "pages": sorted(site_files),
        "assets": sorted(assets),
        "presets": {n: i["preset"] for n, i in notebooks.items()},
        "end_times": {n: i["end_time"] for n, i in notebooks.items()},
    }


def build(
    course_dir: str | os.PathLike,
    out: str | os.PathLike,
    repo: str | os.PathLike = REPO,
    strict: bool = False,
) -> Path:
    """Stage the pages (:func:`stage`) in ``<out>/src`` and run Sphinx on them; returns the HTML
    folder ``<out>/html`` (its ``index.html`` is the README). Sphinx's warnings go to
    ``<out>/warnings.txt``; with ``strict`` any warning fails the build (SiteError). Raises
    SiteError when the notebooks are missing or unexecuted, or when Sphinx fails."""
    out = Path(out).resolve()
    info = stage(course_dir, out / "src", repo)
    presets = sorted({p or "unknown" for p in info["presets"].values()})
    dates = sorted(t[:10] for t in info["end_times"].values() if t)
    env = dict(os.environ, SLICELIB_SITE_REPOSITORY=repository_url(repo))
    env["SLICELIB_SITE_EXECUTED"] = (
        f"Notebooks executed with slicelib course --preset {', '.join(presets)}"
        + (f" on {dates[-1]}" if dates else "")
    )
    html, warnings = out / "html", out / "warnings.txt"
    if html.exists():
        shutil.rmtree(html)
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-E", "-q", "-c", str(HERE)]
    command += ["-d", str(out / "doctrees"), "-w", str(warnings)]
    command += ["-W", "--keep-going"] if strict else []
    command += [str(out / "src"), str(html)]
    result = subprocess.run(command, env=env)
    if result.returncode:
        raise SiteError(
            f"sphinx-build failed (exit {result.returncode}); its messages are in {warnings}. "
            "Is the site extra installed? pip install -c constraints.txt -e '.[site]'"
        )
    return html


def main(argv=None) -> int:
    """Command line of ``make site``; returns the exit status (1 with the reason on stderr)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notebooks", default="outputs/course", help="executed notebooks")
    parser.add_argument("--out", default="outputs/site", help="site folder (src, html)")
    parser.add_argument("--strict", action="store_true", help="fail on any Sphinx warning")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        html = build(args.notebooks, args.out, strict=args.strict)
    except SiteError as error:
        print(f"make site: {error}", file=sys.stderr)
        return 1
    warnings = Path(args.out).resolve() / "warnings.txt"
    n = sum(1 for line in warnings.read_text().splitlines() if "WARNING" in line)
    print(f"Site built in {time.perf_counter() - start:.0f} s: {html / 'index.html'}")
    print(f"{n} Sphinx warning(s)" + (f", listed in {warnings}" if n else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
