"""The built documentation, opened in headless Chromium, reads as a finished site.

The site comes from `UNDERLAY_DOCS_SITE` (`make check` builds it first), else it is built here.
Chromium and chromedriver are the distribution's packages; without them the module is skipped,
except under CI or `UNDERLAY_REQUIRE_SERVICES`, where that is a failure.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "build" / "docs-screenshots"

# reST roles must never reach a reader verbatim, not even inside a code span.
LITERAL_ROLES = re.compile(
    r":(?:py:)?(?:class|func|meth|attr|exc|mod|data|obj|ref|doc|term):`"
    r"|:(?:class|func|meth|attr|exc|mod|obj):(?=\s|$)"
)
# Markers of the source syntaxes (a reST literal-block colon pair, snippet and directive
# markers of either stack) must not show in prose; the contributing page quotes some as code.
LITERAL_MARKUP = re.compile(
    r"\bExample::"
    r"|--8<--"
    r"|^:::\s"
    r"|\{(?:literalinclude|eval-rst|toctree|autoclass|autofunction)\}",
    re.MULTILINE,
)

PUBLIC_MODULES = (
    "underlay",
    "underlay.cache",
    "underlay.cli",
    "underlay.events",
    "underlay.exceptions",
    "underlay.migrations",
    "underlay.models",
    "underlay.otel",
    "underlay.repository",
    "underlay.sync",
    "underlay.testing",
    "underlay.typing",
)

CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
)


def _required() -> bool:
    return bool(os.environ.get("CI") or os.environ.get("UNDERLAY_REQUIRE_SERVICES"))


def _missing(reason: str) -> None:
    if _required():
        pytest.fail(f"{reason} (required under CI)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def site() -> Iterator[Path]:
    """The built site: the one `make` built, else a fresh build in a temporary directory."""
    given = os.environ.get("UNDERLAY_DOCS_SITE")
    if given:
        path = Path(given).resolve()
        assert (path / "index.html").is_file(), f"no built site at {path}: run `make docs`"
        yield path
        return
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(
            [sys.executable, "-m", "sphinx", "-b", "html", "-W", "-n", "-q", "docs", out],
            cwd=ROOT,
            check=True,
        )
        yield Path(out)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """A headless Chromium with a fresh profile, driven through chromedriver."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed: pip install -e '.[dev]'")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        _missing("Chromium is not installed (apt-get install chromium chromium-driver)")
    with tempfile.TemporaryDirectory() as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in (*CHROME_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
        try:
            yield driver
        finally:
            driver.quit()


@dataclass
class Page:
    """What the browser saw on one page of the site."""

    path: Path
    text: str
    prose: str
    ids: set[str]
    links: list[str]
    overflowing_code: list[str]


def _pages(site: Path) -> list[Path]:
    skip = {"genindex.html", "search.html", "py-modindex.html"}
    return sorted(
        p for p in site.rglob("*.html") if p.name not in skip and "_sources" not in p.parts
    )


_COLLECT = """
const article = document.querySelector('article') || document.body;
const overflowing = Array.from(article.querySelectorAll('pre'))
  .filter(pre => pre.scrollWidth > pre.clientWidth + 1)
  .map(pre => pre.innerText.split('\\n').reduce((a, b) => a.length >= b.length ? a : b, ''));
const prose = article.cloneNode(true);
prose.querySelectorAll('pre, code').forEach(e => e.remove());
document.body.appendChild(prose);
const proseText = prose.innerText;
prose.remove();
return {
  text: article.innerText,
  prose: proseText,
  ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id),
  links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
  overflowing: overflowing,
};
"""


@pytest.fixture(scope="module")
def rendered(site: Path, browser: object) -> dict[Path, Page]:
    """Every page of the site as the browser renders it."""
    pages: dict[Path, Page] = {}
    for path in _pages(site):
        browser.get(path.as_uri())  # type: ignore[attr-defined]
        seen = browser.execute_script(_COLLECT)  # type: ignore[attr-defined]
        pages[path.resolve()] = Page(
            path=path,
            text=seen["text"],
            prose=seen["prose"],
            ids=set(seen["ids"]),
            links=list(seen["links"]),
            overflowing_code=list(seen["overflowing"]),
        )
    return pages


def test_the_site_has_the_learning_path(site: Path) -> None:
    """The index, the getting-started page, the guides, the reference and the changelog exist."""
    for page in ("index", "getting-started", "performance", "changelog"):
        assert (site / f"{page}.html").is_file(), page
    assert len(list((site / "guides").glob("*.html"))) >= 8
    assert len(list((site / "reference").glob("*.html"))) >= 8


def test_no_literal_markup(rendered: dict[Path, Page]) -> None:
    """No page shows a reST role, a `Example::` line or a directive of the old stack verbatim."""
    found = {
        page.path.name: sorted(
            {*LITERAL_ROLES.findall(page.text), *LITERAL_MARKUP.findall(page.prose)}
        )
        for page in rendered.values()
        if LITERAL_ROLES.search(page.text) or LITERAL_MARKUP.search(page.prose)
    }
    assert found == {}


def test_internal_links_resolve(site: Path, rendered: dict[Path, Page]) -> None:
    """Every link inside the site names an existing page, and its anchor exists on that page."""
    broken: list[str] = []
    for page in rendered.values():
        for link in page.links:
            parsed = urlparse(link)
            if parsed.scheme != "file":
                continue
            url, fragment = urldefrag(link)
            target = Path(unquote(urlparse(url).path)).resolve()
            if not target.is_file():
                broken.append(f"{page.path.name} -> {link}")
                continue
            if fragment and target in rendered and fragment not in rendered[target].ids:
                broken.append(f"{page.path.name} -> {link} (no anchor)")
    assert broken == []


def test_every_public_name_has_a_reference_entry(site: Path, rendered: dict[Path, Page]) -> None:
    """Each name in the `__all__` of a public module is documented on a reference page."""
    documented: set[str] = set()
    for path, page in rendered.items():
        if path.parent.name == "reference":
            documented |= page.ids
    missing = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            if name.startswith("__"):
                continue
            # A re-exported name may be documented at any of its public homes.
            candidates = {f"{home}.{name}" for home in PUBLIC_MODULES}
            if not candidates & documented:
                missing.append(f"{module_name}.{name}")
    assert missing == []


def test_code_fits_the_text_column(rendered: dict[Path, Page]) -> None:
    """No code block on a guide or on getting started scrolls sideways (lines of 100 columns)."""
    overflowing = {
        page.path.name: page.overflowing_code
        for page in rendered.values()
        if page.overflowing_code and page.path.parent.name != "reference"
    }
    assert overflowing == {}


def test_quoted_programs_are_the_ones_the_suite_runs() -> None:
    """Every program a page quotes is one the test suite executes, so no quoted snippet rots."""
    run_by_suite = {
        (ROOT / "examples" / "quickstart.py").resolve(),
        (ROOT / "examples" / "fastapi_app.py").resolve(),
        *(p.resolve() for p in (ROOT / "docs" / "examples").glob("*.py")),
    }
    blog = (ROOT / "examples" / "blog").resolve()
    unrun = []
    include = re.compile(r"^```\{literalinclude\}\s+(\S+)", re.MULTILINE)
    for source in (ROOT / "docs").rglob("*.md"):
        for quoted in include.findall(source.read_text()):
            path = (source.parent / quoted).resolve()
            assert path.is_file(), f"{source.name} quotes a missing file {quoted}"
            if path.suffix != ".py":
                continue
            if path not in run_by_suite and blog not in path.parents:
                unrun.append(f"{source.name}: {quoted}")
    assert unrun == []


def test_screenshots(site: Path, browser: object) -> None:
    """Screenshots of the index, a guide and a reference page are written under build/."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shots = {
        "index": site / "index.html",
        "guide": site / "guides" / "repository.html",
        "reference": site / "reference" / "repository.html",
    }
    for name, page in shots.items():
        browser.get(page.as_uri())  # type: ignore[attr-defined]
        out = SCREENSHOTS / f"{name}.png"
        assert browser.save_screenshot(str(out)), name  # type: ignore[attr-defined]
        assert out.stat().st_size > 10_000, f"{name}.png is suspiciously small"
