"""The course site (make site, docs/site/build.py) and its browser check (scripts/check_site.py):
what a CPU can check without Sphinx or a browser. The browser check itself runs with
`make site-check`, not here."""

import importlib.util
import re
from pathlib import Path

import nbformat
import pytest

from slicelib.course import NOTEBOOKS, repository_url

ROOT = Path(__file__).resolve().parents[1]


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = load(ROOT / "docs" / "site" / "build.py", "slicelib_site_build")
check_site = load(ROOT / "scripts" / "check_site.py", "slicelib_check_site")


def executed(path: Path, markdown: str = "# A notebook", **papermill) -> Path:
    """A small notebook as papermill writes it: one markdown cell, one executed code cell
    with a PNG output."""
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell("print(1)", execution_count=1)
    code.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="1\n"),
        nbformat.v4.new_output(
            "display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": ""}
        ),
    ]
    nb.cells = [nbformat.v4.new_markdown_cell(markdown), code]
    nb.metadata["papermill"] = {"parameters": {"PRESET": "smoke"}, "exception": None, **papermill}
    nbformat.write(nb, path)
    return path


def course_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "course"
    folder.mkdir()
    for name in NOTEBOOKS:
        executed(folder / f"{name}.ipynb", "# Title\n\n[results](../docs/results.md#results)")
    return folder


def test_toc_lists_every_course_notebook_and_the_guide_and_results():
    assert build.check_toc() == list(NOTEBOOKS)
    pages = build.toc_pages()
    assert pages[0] == "index"
    assert "docs/course" in pages and "docs/results" in pages
    for page in pages:
        if page.startswith("docs/"):
            assert (ROOT / f"{page}.md").is_file(), f"_toc.yml lists {page}, which is missing"


def test_toc_without_a_notebook_is_refused_by_name(tmp_path):
    toc = tmp_path / "_toc.yml"
    text = (ROOT / "docs" / "site" / "_toc.yml").read_text()
    toc.write_text(text.replace("      - file: notebooks/03_position_embeddings\n", ""))
    with pytest.raises(build.SiteError, match="03_position_embeddings"):
        build.check_toc(toc)


def test_build_without_executed_notebooks_says_what_to_run(tmp_path, capsys):
    empty = tmp_path / "course"
    empty.mkdir()
    status = build.main(["--notebooks", str(empty), "--out", str(tmp_path / "site")])
    err = capsys.readouterr().err
    assert status == 1
    assert f"{empty / '01_data.ipynb'} is missing" in err
    assert f"slicelib course --preset smoke --out {empty}" in err
    assert not (tmp_path / "site" / "html").exists()


def test_unexecuted_or_failed_notebooks_are_refused(tmp_path):
    folder = course_dir(tmp_path)
    nb = nbformat.read(folder / "02_imagenet_vs_scratch.ipynb", as_version=4)
    nb.cells[1].execution_count = None  # as in notebooks/*.ipynb: never run
    nbformat.write(nb, folder / "02_imagenet_vs_scratch.ipynb")
    executed(folder / "04_slice_contributions.ipynb", exception=True)
    with pytest.raises(build.SiteError) as error:
        build.executed_notebooks(folder)
    assert "02_imagenet_vs_scratch.ipynb is not executed" in str(error.value)
    assert "04_slice_contributions.ipynb stopped with an error" in str(error.value)


def test_stage_lays_out_the_pages_with_every_relative_link_resolved(tmp_path):
    info = build.stage(course_dir(tmp_path), tmp_path / "src")
    src = tmp_path / "src"
    assert info["presets"] == {name: "smoke" for name in NOTEBOOKS}
    assert (src / "index.md").read_text() == build.rewrite_links(
        (ROOT / "README.md").read_text(), "README.md", set(info["pages"]), repository_url(ROOT)
    )
    for page in info["pages"]:
        assert (src / page).is_file(), page
    texts = {p: (src / p).read_text() for p in info["pages"] if p.endswith(".md")}
    texts |= {
        p: "\n".join(c.source for c in nbformat.read(src / p, as_version=4).cells)
        for p in info["pages"]
        if p.endswith(".ipynb")
    }
    assert "](../docs/results.md#results)" in texts["notebooks/01_data.ipynb"]
    for page, text in texts.items():
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:|#", target):
                continue
            linked = (src / page).parent / target.partition("#")[0]
            assert linked.resolve().is_file(), f"{page} links to {target}, not a page of the site"


def test_rewrite_links_points_outside_files_at_the_repository():
    url = "https://github.com/o/r"
    pages = {"index.md", "docs/cli.md"}
    text = (
        "[back](../README.md) [cli](cli.md#command-line) [pins](../constraints.txt) "
        "[res](../benchmarks/results/) [web](https://x.org/a.md) [top](#here)\n"
        "```\n[in code](../README.md)\n```\n"
    )
    out = build.rewrite_links(text, "docs/cli.md", pages, url)
    assert "[back](../index.md)" in out and "[cli](cli.md#command-line)" in out
    assert f"[pins]({url}/blob/main/constraints.txt)" in out
    assert f"[res]({url}/tree/main/benchmarks/results)" in out
    assert "[web](https://x.org/a.md) [top](#here)" in out
    assert "[in code](../README.md)" in out


def test_images_of_the_checkout_are_copied_into_the_site_not_linked_on_the_host(tmp_path):
    text = "![curve](../benchmarks/results/learning_curve/learning_curve.png) ![gone](../x.png)"
    assets = set()
    out = build.rewrite_links(
        text, "docs/results.md", {"docs/results.md"}, "https://h/o/r", ROOT, assets
    )
    assert out == text  # kept relative: stage copies the image to the same place in the site
    assert assets == {"benchmarks/results/learning_curve/learning_curve.png"}
    info = build.stage(course_dir(tmp_path), tmp_path / "src")
    assert "benchmarks/results/learning_curve/learning_curve.png" in info["assets"]
    curve = "benchmarks/results/learning_curve/learning_curve.png"
    assert (tmp_path / "src" / curve).read_bytes() == (ROOT / curve).read_bytes()


def test_check_site_expects_the_figures_and_viewers_of_each_notebook(tmp_path):
    (tmp_path / "notebooks").mkdir()
    path = executed(tmp_path / "notebooks" / "01_data.ipynb")
    nb = nbformat.read(path, as_version=4)
    nb.cells[1].outputs.append(
        nbformat.v4.new_output(
            "display_data", data={"text/html": '<iframe srcdoc="... brainsprite(...)">'}
        )
    )
    nbformat.write(nb, path)
    assert check_site.expected_outputs(tmp_path) == {
        "notebooks/01_data.html": {"figures": 1, "viewers": 1}
    }
    site = tmp_path / "html"
    for page in ("index.html", "docs/results.html", "_static/x.html", "genindex.html"):
        (site / page).parent.mkdir(parents=True, exist_ok=True)
        (site / page).write_text("<html></html>")
    assert check_site.site_pages(site) == ["index.html", "docs/results.html", "genindex.html"]


def test_progress_bars_are_drawn_from_their_saved_state_without_widget_javascript():
    def model(name, **state):
        return {"model_name": name, "state": state}

    state = {
        "bar": model(
            "HBoxModel", children=["IPY_MODEL_left", "IPY_MODEL_progress", "IPY_MODEL_right"]
        ),
        "left": model("HTMLModel", value="compare: 100%"),
        "progress": model("FloatProgressModel", min=0.0, max=2.0, value=2.0),
        "right": model("HTMLModel", value="2/2 [00:53<00:00]"),
        "button": model("ButtonModel", description="go"),
    }
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {build.WIDGET_STATE: {"state": state}}
    code = nbformat.v4.new_code_cell("run()", execution_count=1)
    code.outputs = [
        nbformat.v4.new_output(
            "display_data",
            data={build.WIDGET_VIEW: {"model_id": model_id}, "text/plain": "compare: 0%"},
        )
        for model_id in ("bar", "button")
    ]
    nb.cells = [code]
    assert build.static_widgets(nb) == 1
    bar, button = (output["data"] for output in code.outputs)
    assert "widgets" not in nb.metadata
    assert build.WIDGET_VIEW not in bar and build.WIDGET_VIEW not in button
    assert "compare: 100%" in bar["text/html"] and "2/2 [00:53<00:00]" in bar["text/html"]
    assert '<progress value="2.0" max="2.0">' in bar["text/html"]
    assert button == {"text/plain": "compare: 0%"}  # a widget it cannot draw: its text form
