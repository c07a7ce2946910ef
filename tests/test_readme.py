"""The README is a front page; the details live in docs/ and every link resolves (issue 19, item 6)."""

import ast
import inspect
import re
from pathlib import Path

import numpy as np

from slicelib import SliceModel

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"

# The `##` / `###` headings of the 433-line README before it became a front page (commit
# b611764). Each section moved, text intact, to README.md or a docs/ page linked from it.
OLD_HEADINGS = [
    "Two commands",
    "The model in five lines",
    "How the code is organised",
    "Offline ImageNet weights",
    "Command line",
    "Brain age on real IXI heads",
    "What it gives on the synthetic cohort",
    "Data",
    "Notebooks (the course)",
    "Benchmarks",
    "How it maps onto the paper's code",
    "Citation and licence",
]

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def prose(path: Path) -> str:
    """The Markdown of `path` without its fenced code blocks (links there are not links)."""
    return FENCE.sub("", path.read_text())


def headings(path: Path) -> list[str]:
    """The text of every Markdown heading (any level) in `path`, outside code blocks."""
    return [m.group(1).strip() for m in re.finditer(r"^#{1,6} (.+)$", prose(path), re.M)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def relative_links(path: Path) -> list[str]:
    """Every link target in `path` that is not a URL (http, https, mailto) or a bare anchor."""
    return [
        t
        for t in LINK.findall(prose(path))
        if not re.match(r"[a-z]+:", t) and not t.startswith("#")
    ]


def linked_docs() -> set[Path]:
    """The docs/*.md pages README.md links to."""
    out = set()
    for target in relative_links(README):
        p = (ROOT / target.split("#")[0]).resolve()
        if p.parent == DOCS.resolve() and p.suffix == ".md":
            out.add(p)
    return out


def section(text: str, heading: str) -> str:
    """The body of the `## heading` section of Markdown `text` (up to the next `## `)."""
    m = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, f"README.md has no '## {heading}' section"
    return m.group(1)


def test_readme_is_a_short_front_page():
    n = len(README.read_text().splitlines())
    assert n <= 150, f"README.md has {n} lines; move details into a docs/ page (at most 150)"
    text = README.read_text()
    for cmd in ("make demo", "make test"):
        assert re.search(rf"^{cmd}\b", text, re.M), f"README.md must show `{cmd}` as a command"


def test_every_old_section_is_reachable_from_the_readme():
    pages = [README, *sorted(linked_docs())]
    found = {h for page in pages for h in headings(page)}
    missing = [h for h in OLD_HEADINGS if h not in found]
    assert not missing, (
        f"old README sections {missing} are neither in README.md nor in a docs/ page it links "
        f"to ({[p.name for p in pages[1:]]}); move them there with their text"
    )


def test_every_docs_page_is_linked_from_the_readme():
    pages = sorted(DOCS.glob("*.md"))
    assert pages, "docs/ holds no pages"
    orphans = [p.name for p in pages if p.resolve() not in linked_docs()]
    assert not orphans, f"docs pages {orphans} are not linked from README.md: add them"


def test_relative_links_resolve():
    broken = []
    for page in [README, *sorted(DOCS.glob("*.md"))]:
        for target in relative_links(page):
            file, _, anchor = target.partition("#")
            dest = (page.parent / file).resolve()
            if not dest.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif not dest.is_relative_to(ROOT):
                broken.append(f"{page.relative_to(ROOT)}: {target} (outside the repository)")
            elif anchor and dest.suffix == ".md":
                if anchor not in {slug(h) for h in headings(dest)}:
                    broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "broken relative links:\n" + "\n".join(broken)


def test_headline_table_is_the_one_in_docs_results():
    body = section(README.read_text(), "Brain age on real IXI heads")
    rows = [line for line in body.splitlines() if line.startswith("|")]
    assert len(rows) >= 3, "the README's headline section holds no results table"
    results = (DOCS / "results.md").read_text().splitlines()
    differ = [row for row in rows if row not in results]
    assert not differ, (
        f"these rows of the README's headline table are not in docs/results.md: {differ}; "
        "change the numbers in both places"
    )
    words = " ".join(body.split())
    # the headline is the cross-validation over every labelled head, compared paired
    caveats = ("5-fold cross-validation", "138", "Paired differences", "flattered by the choice")
    for caveat in caveats:  # the last: the best of many arms scored on the same heads
        assert caveat in words, f"the headline table's caveat lacks {caveat!r}"


def test_model_snippet_is_five_lines_that_fit_slicemodel():
    body = section(README.read_text(), "The model in five lines")
    code = re.search(r"```python\n(.*?)```", body, re.S)
    assert code, "the model section holds no ```python block"
    lines = [line for line in code.group(1).splitlines() if line.strip()]
    assert len(lines) <= 5, f"the model snippet has {len(lines)} lines, not five"
    calls = [
        node
        for node in ast.walk(ast.parse(code.group(1)))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "SliceModel"
    ]
    assert len(calls) == 1, "the snippet must build one SliceModel"
    call = calls[0]
    args = [ast.literal_eval(a) for a in call.args]
    kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    # raises TypeError when the snippet names an argument SliceModel no longer takes
    inspect.signature(SliceModel).bind(*args, **kwargs)


def test_cross_validated_table_is_computed_from_the_shipped_results():
    """Every number of the README's 5-fold table is the stored summary's, not typed by hand:
    each arm's MAE [CI] in one row, its paired differences (row minus reference) beside it."""
    import pandas as pd

    folder = ROOT / "benchmarks" / "results" / "ixi_cv_all"
    summary = pd.read_csv(folder / "summary.csv").set_index("arm")
    paired = pd.read_csv(folder / "paired.csv").set_index(["arm_a", "arm_b"])["diff"]

    def diff(a, b):  # mean |error| of a minus b
        return paired.get((a, b), None) if (a, b) in paired.index else -paired[(b, a)]

    body = section(README.read_text(), "Brain age on real IXI heads")
    table = [r for r in body.splitlines() if r.startswith("|")]
    assert (folder / "table.md").read_text().splitlines() == table  # benchmarks/cv_table.py
    rows = table[2:]

    def numbers(cell):  # "6.50 [5.61, 7.44]" -> (6.50, 5.61, 7.44)
        return [float(x) for x in re.findall(r"-?\d+\.\d+", cell)]

    for arm, r in summary.iterrows():  # the CSV keeps 4 digits: allow its rounding
        want = (r["mae"], r["mae_lo"], r["mae_hi"])
        hits = [
            row for row in rows
            if np.allclose(numbers(row.split(" | ")[1]), want, atol=0.0051)
        ]  # fmt: skip
        assert len(hits) == 1, f"README: no single 5-fold row with {arm}'s MAE {want}"
        cells = hits[0].split(" | ")
        for cell, ref in zip(cells[3:], ("finetune_imagenet", "ridge_roi", "ridge_voxels")):
            if arm != ref:  # the CSV keeps 4 digits: allow its rounding in the 2nd decimal
                shown = float(cell.split(" [")[0])
                assert abs(shown - diff(arm, ref)) <= 0.0051, f"{arm} vs {ref}: {cell}"
    a = diff("ridge_frozen_random", "ridge_frozen_imagenet")
    b = diff("ridge_frozen_random", "finetune_imagenet")
    words = " ".join(body.split())
    assert f"beat random ones by {a:.1f}-{b:.1f} years" in words
    best = "ensemble_finetune_copies_scancopies"
    ens = summary.loc[best, "mae"]
    assert (
        f"(`benchmarks/cv_table.py --ensemble`; no weight fitted, so still out of fold): {ens:.2f} years"
        in words
    )
    voxel, regional = -diff(best, "ridge_voxels"), -diff(best, "ridge_roi")
    assert f"ahead of the voxel ridge by {voxel:.2f}" in words
    assert f"of the regional ridge by {regional:.2f}" in words
    assert f"the best of {len(summary)} arms" in words
    gain = -diff("ridge_frozen_imagenet_scancopies", "ridge_frozen_imagenet")
    assert f"gain {gain:.2f} years of CV error" in words
    scratch = diff("finetune_scratch", "finetune_imagenet")
    assert f"the model is {scratch:.1f} years worse than from ImageNet" in words
    behind, ahead = diff("sfcn", "finetune_imagenet"), -diff("sfcn", "finetune_scratch")
    assert f"{behind:.2f} years behind the fine-tuned slice model" in words
    assert f"but {ahead:.2f} years ahead of the slice model from scratch" in words
