"""The Colab/Binder badges: every one is written from ``[project.urls] Repository`` in
pyproject.toml (``make badges``), and none disagrees with it."""

import re
import shutil
from pathlib import Path

import pytest

from slicelib.course import BADGE_BRANCH, NOTEBOOKS, repository_url, write_badges
from slicelib.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
# Any Colab or Binder link, whatever repository it names (broader than write_badges' patterns).
LINK = re.compile(r"https://(?:colab\.research\.google\.com/github|mybinder\.org/v2/gh)/[^)\s\"]+")


def _files(root: Path) -> list[Path]:
    notebooks = [root / "notebooks" / f"{n}.{ext}" for n in NOTEBOOKS for ext in ("py", "ipynb")]
    return [root / "README.md", root / "docs" / "course.md", *notebooks]


def _expected(root: Path, name: str) -> tuple[str, str]:
    repo = repository_url(root).removeprefix("https://github.com/")
    return (
        f"https://colab.research.google.com/github/{repo}/blob/{BADGE_BRANCH}/notebooks/{name}.ipynb",
        f"https://mybinder.org/v2/gh/{repo}/{BADGE_BRANCH}?labpath=notebooks%2F{name}.ipynb",
    )


def _check_links(root: Path) -> None:
    repo = repository_url(root).removeprefix("https://github.com/")
    prefixes = (
        f"https://colab.research.google.com/github/{repo}/blob/{BADGE_BRANCH}/",
        f"https://mybinder.org/v2/gh/{repo}/{BADGE_BRANCH}",
    )
    for path in _files(root):
        text = path.read_text()
        assert "must be changed" not in text, f"{path}: still asks the reader to edit the badges"
        for link in LINK.findall(text):
            assert link.startswith(prefixes), (
                f"{path}: {link} disagrees with [project.urls] Repository in pyproject.toml "
                f"({repository_url(root)}): run `make badges`"
            )
    for name in NOTEBOOKS:  # each notebook opens itself; the course page lists all four
        for path in (root / "notebooks" / f"{name}.py", root / "notebooks" / f"{name}.ipynb",
                     root / "docs" / "course.md"):  # fmt: skip
            for link in _expected(root, name):
                assert link in path.read_text(), f"{path}: no badge linking {link}"


def test_every_badge_agrees_with_the_repository_in_pyproject():
    _check_links(ROOT)
    assert write_badges(ROOT, check=True) == [], "badges out of date: run `make badges`"


def test_write_badges_rewrites_every_badge_from_a_new_repository(tmp_path):
    for path in [ROOT / "pyproject.toml", *_files(ROOT)]:
        target = tmp_path / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    pyproject = tmp_path / "pyproject.toml"
    old = repository_url(ROOT)
    pyproject.write_text(pyproject.read_text().replace(old, "https://github.com/someone/course"))
    with pytest.raises(AssertionError, match="disagrees"):
        _check_links(tmp_path)  # the test above fails while the badges are stale

    changed = write_badges(tmp_path)
    _check_links(tmp_path)
    assert set(changed) == {p for p in _files(tmp_path) if LINK.search(p.read_text())}
    assert "someone/course" in (tmp_path / "notebooks" / f"{NOTEBOOKS[0]}.ipynb").read_text()
    assert write_badges(tmp_path) == []  # idempotent


@pytest.mark.parametrize(
    "url", ["", "https://gitlab.com/someone/course", "https://github.com/someone", "slicelib"]
)
def test_repository_url_rejects_what_colab_and_binder_cannot_open(tmp_path, url):
    urls = f'[project.urls]\nRepository = "{url}"\n' if url else ""
    (tmp_path / "pyproject.toml").write_text(f'[project]\nname = "x"\n{urls}')
    with pytest.raises(ConfigError, match=r"pyproject\.toml.*github\.com/<owner>/<name>"):
        repository_url(tmp_path)
