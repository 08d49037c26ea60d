"""The built site as a reader's browser shows it: every page of _toc.yml in headless Chromium.

`make test` builds _build/html first. This module serves it on 127.0.0.1 and, for every page
of the table of contents, checks that it loads (HTTP 200, no console errors, nothing fetched
from outside the site), that MathJax typeset every formula of the page's source (no error,
no unknown macro, none left raw, no display wider than its column), that every image loaded,
that every internal link and anchor resolves, that citations point to the page's own
references, and that notebook pages offer the Binder and Colab launch buttons. It also checks
what a reader sees: no formula lost a bracket or an equals sign (a '[' right after
\\begin{aligned} is read as an option and dropped with what follows), figures that are
numbered, captioned, described and sharp (2x) and that keep their proportions at 1280 and
400 pixels wide, citations that read like their list entries, answers marked on the solution
pages, no display equation cut off on the left (at 1280, 1920 and 400 pixels), display
equations that fit a phone's column whole and nothing else wider than it unless in a box that
scrolls sideways (at 400 pixels), and, at 1920 and 400 pixels wide, prose lines of at most
about 90 characters and code and printed output that scroll instead of wrapping. It saves a
full-page screenshot of each page in _build/screenshots/ (look at them after changing the
layout).

It drives Debian's chromium through its chromedriver (`apt-get install chromium
chromium-driver`); Selenium Manager is never asked to download anything. Without them the
tests skip, except when CI=true (as in .ci/run), where they fail.
"""
import functools
import html.parser
import http.server
import json
import os
import re
import sys
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# RNNBOOK_SITE points the tests at another build's html folder (an engineer's private build,
# `jupyter-book build . --path-output DIR` writes DIR/_build/html); screenshots go beside it.
SITE = Path(os.environ.get("RNNBOOK_SITE", ROOT / "_build" / "html")).resolve()
SCREENSHOTS = SITE.parent / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL_HINT = "install them with `apt-get install chromium chromium-driver` (Debian/Ubuntu)"
WIDTH = 1280          # a laptop screen; the layout has both sidebars from 1200 px on
WIDE, PHONE = 1920, 400   # a desktop screen and a phone, for the layout tests
MEASURE = (60, 90)    # characters of prose a line holds (median), at WIDTH and WIDE
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
REPO = CONFIG["repository"]["url"].rstrip("/").removeprefix("https://github.com/")
BRANCH = CONFIG["repository"]["branch"]


def toc_pages():
    """(docname, source file) of every page of _toc.yml, in reading order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    names = [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]
    pages = []
    for name in names:
        source = next(ROOT / (name + ext) for ext in (".md", ".ipynb")
                      if (ROOT / (name + ext)).exists())
        pages.append((name, source))
    return pages


PAGES = toc_pages()
NOTEBOOK_PAGES = [p for p in PAGES if p[1].suffix == ".ipynb"]


def ids(pages):
    return [name for name, _ in pages]


def unavailable(message):
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI=true: the browser tests must run)")
    pytest.skip(message)


# -- what the source promises --------------------------------------------------------------

FENCE = re.compile(r"^(`{3,}|~{3,}|:{3,})(.*)$")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
DISPLAY = re.compile(r"\$\$.+?\$\$", re.S)
AMS_ENV = re.compile(r"^\\begin\{(equation|align|gather|multline|flalign|alignat|eqnarray)(\*?)\}"
                     r".*?^\\end\{\1\2\}", re.S | re.M)
INLINE = re.compile(r"(?<!\\)\$(?:[^$\n]|\n(?!\s*\n))+?(?<!\\)\$")


def markdown_of(source):
    """The Markdown a page is built from (notebooks: markdown cells not tagged remove-cell)."""
    if source.suffix == ".md":
        return source.read_text(encoding="utf-8")
    nb = nbformat.read(source, as_version=4)
    return "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown"
                       and "remove-cell" not in c.metadata.get("tags", []))


def count_math(text):
    """Number of formulas (display blocks + inline) MathJax should typeset for this Markdown:
    $$...$$ blocks, top-level amsmath environments, {math} directives and inline $...$,
    ignoring code blocks and code spans (the bodies of other directives are Markdown)."""
    kept, fences, blocks = [], [], 0       # fences: (marker, body is dropped), innermost last
    for line in text.splitlines():
        m = FENCE.match(line.strip())
        if m and fences and m.group(1).startswith(fences[-1][0]) and not m.group(2).strip():
            fences.pop()
        elif m:
            info = m.group(2).strip()
            blocks += info.startswith("{math}")
            fences.append((m.group(1), not info.startswith("{") or info.startswith(
                ("{math}", "{code", "{literalinclude", "{bibliography}"))))
        elif not any(drop for _, drop in fences):
            kept.append(line)
    text = CODE_SPAN.sub(" ", "\n".join(kept))
    blocks += len(DISPLAY.findall(text))
    text = DISPLAY.sub(" ", text)
    blocks += len(AMS_ENV.findall(text))
    text = AMS_ENV.sub(" ", text)
    return blocks + len(INLINE.findall(text))


def images_in_outputs(source):
    """Number of figures (image outputs) a notebook page shows."""
    if source.suffix != ".ipynb":
        return 0
    nb = nbformat.read(source, as_version=4)
    return sum(any(k.startswith("image/") for k in out.get("data", {}))
               for c in nb.cells if c.cell_type == "code"
               and not {"remove-cell", "remove-output"} & set(c.metadata.get("tags", []))
               for out in c.outputs)


def test_count_math():
    text = ("Inline $a$ and $\\vh_t$, `$not$`, and\n\n$$\nx \\\\ y\n$$\n\n```python\n"
            "s = '$x$'\n```\n\n\\begin{equation*}\nz \\tag{1.1}\n\\end{equation*}\n"
            "```{math}\nq\n```\n| $p$ | $q$ |\n:::{note}\n$y$ and\n```\n$z$\n```\n:::\n")
    assert count_math(text) == 2 + 1 + 1 + 1 + 2 + 1


# -- the server and the browser ------------------------------------------------------------

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        """A browser that leaves a page drops its pending requests: not an error."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture(scope="module")
def server():
    if not (SITE / "index.html").is_file():
        unavailable(f"{SITE} is not built: run `make book` (or `make test`) first")
    handler = functools.partial(_QuietHandler, directory=str(SITE))
    httpd = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        unavailable(f"the browser tests need Debian's Chromium and its driver (missing: "
                    f"{', '.join(missing)}); {INSTALL_HINT}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--no-sandbox", "--headless=new", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic",
                 "--disable-dev-shm-usage", "--hide-scrollbars", f"--window-size={WIDTH},900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


WAIT_FOR_MATHJAX = """
const done = arguments[arguments.length - 1], t0 = Date.now();
(function poll() {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    MathJax.startup.promise.then(() => done("typeset"), e => done("MathJax failed: " + e));
  } else if (!document.querySelector('script[src*="mathjax"]')) {
    done("no MathJax on this page");
  } else if (Date.now() - t0 > 30000) {
    done("MathJax did not start within 30 s");
  } else { setTimeout(poll, 50); }
})();
"""

WAIT_FOR_IMAGES = """
const done = arguments[arguments.length - 1], t0 = Date.now();
(function poll() {
  const pending = Array.from(document.images).filter(i => !i.complete);
  if (pending.length === 0 || Date.now() - t0 > 20000) done(pending.map(i => i.src));
  else setTimeout(poll, 50);
})();
"""

FACTS = """
const main = document.querySelector("main") || document.body;
const article = document.querySelector("article") || main;
const prose = main.cloneNode(true);
prose.querySelectorAll("pre, code, script, style, mjx-container, .highlight").forEach(e => e.remove());
const short = e => (e.textContent || "").replace(/\\s+/g, " ").trim().slice(0, 100);
return {
  equations: article.querySelectorAll("mjx-container").length,
  display_equations: article.querySelectorAll('mjx-container[display="true"]').length,
  merrors: Array.from(document.querySelectorAll("mjx-merror"),
                      e => e.getAttribute("data-mjx-error") || short(e)),
  // MathJax's own parse trees: an error node, or an unknown macro, which MathJax's
  // "noundefined" package shows as red text instead of an error.
  tex_errors: (window.MathJax && MathJax.startup && MathJax.startup.document)
      ? Array.from(MathJax.startup.document.math).flatMap(item => {
          const found = [];
          item.root.walkTree(node => {
            if (node.isKind("merror")) found.push("error in " + item.math);
            else if (node.isKind("mtext") && node.attributes.get("mathcolor") === "red")
              found.push("unknown macro in " + item.math);
          });
          return found;
        }) : [],
  // A formula that lost part of itself: every '[', ']' and '=' of the TeX must be shown.
  // (A '[' right after \\begin{aligned} is read as the environment's option, and MathJax
  // drops it and everything up to the next ']': the left-hand side of an equation.)
  lost: __LOST__,
  untypeset: Array.from(document.querySelectorAll(".math")).filter(
      e => !e.querySelector("mjx-container")).map(short),
  text: prose.textContent,
  overflowing: Array.from(document.querySelectorAll('mjx-container[display="true"]')).filter(
      e => e.scrollWidth > e.clientWidth + 1).map(
      e => `${e.scrollWidth}px in ${e.clientWidth}px: ` + short(e.querySelector("mjx-assistive-mml") || e)),
  code_overflowing: Array.from(document.querySelectorAll("div.cell div.highlight pre")).filter(
      e => e.scrollWidth > e.clientWidth + 1).map(
      e => `${e.scrollWidth}px in ${e.clientWidth}px: ` + e.textContent.split("\\n").reduce(
          (a, b) => b.length > a.length ? b : a, "").trim().slice(0, 100)),
  images: Array.from(document.images, i => ({
      src: i.currentSrc || i.src, loaded: i.complete && i.naturalWidth > 0,
      in_article: article.contains(i)})),
  links: Array.from(document.querySelectorAll("a[href]"), a => a.href),
  external: performance.getEntriesByType("resource").map(e => e.name).filter(
      n => !n.startsWith(location.origin + "/") && !n.startsWith("data:")),
  ids: Array.from(document.querySelectorAll("[id], a[name]"), e => e.id || e.name),
  citations: Array.from(document.querySelectorAll(".bibtex-citation a"), a => a.getAttribute("href")),
  // what a citation says, and the label of the list entry it links to
  cite_labels: Array.from(document.querySelectorAll(".bibtex-citation a"), a => {
      const entry = document.getElementById((a.getAttribute("href") || "").slice(1));
      const label = entry && entry.querySelector(".label");
      return [a.textContent.trim(),
              label ? label.textContent.replace(/[\\[\\]]/g, "").trim() : null];
  }),
  figures: Array.from(article.querySelectorAll("div.cell_output img"), img => {
      const fig = img.closest("figure");
      const number = fig && fig.querySelector("figcaption .caption-number");
      return {src: img.getAttribute("src"), alt: img.alt || "",
              number: number ? number.textContent.trim() : "",
              caption: fig && fig.querySelector("figcaption")
                  ? fig.querySelector("figcaption").textContent.trim() : "",
              natural: img.naturalWidth, shown: img.getBoundingClientRect().width};
  }),
  solutions: {written: article.querySelectorAll("div.admonition.rnnbook-solution").length,
              code: article.querySelectorAll("div.cell.rnnbook-solution-code").length,
              highlighted: Array.from(article.querySelectorAll("div.cell.rnnbook-solution-code"))
                  .filter(c => c.querySelector(".highlight .hll")).length},
  output_overflowing: Array.from(document.querySelectorAll("div.cell_output pre")).filter(
      e => e.scrollWidth > e.clientWidth + 1).map(
      e => `${e.scrollWidth}px in ${e.clientWidth}px: ` + e.textContent.split("\\n").reduce(
          (a, b) => b.length > a.length ? b : a, "").trim().slice(0, 100)),
  launch: Array.from(document.querySelectorAll(".dropdown-launch-buttons a"),
                     a => ({href: a.href, text: a.textContent.trim()})),
  thebe: document.querySelectorAll('[onclick^="initThebe"]').length,
};
"""

# A formula that lost part of itself: every '[', ']' and '=' of its TeX must be in what MathJax
# shows (its MathML). A '[' right after \begin{aligned} is read as the environment's option,
# and MathJax drops it and everything up to the next ']', typically the left-hand side of an
# equation. Spacing like \\[2pt] and the escaped \[ \] are not counted.
LOST = r"""(window.MathJax && MathJax.startup && MathJax.startup.document && MathJax.startup.toMML)
  ? Array.from(MathJax.startup.document.math).flatMap(item => {
      const tex = item.math.replace(/\\\\\[[^\]]*\]/g, " ").replace(/\\[\[\]]/g, " ");
      const shown = MathJax.startup.toMML(item.root).replace(/<[^>]*>/g, " ");
      const lost = ["[", "]", "="].filter(c => shown.split(c).length < tex.split(c).length);
      return lost.length ? [`${lost.join(" ")} not shown in: ${item.math.trim().slice(0, 90)}`] : [];
    })
  : []"""
FACTS = FACTS.replace("__LOST__", LOST)

# How the page reads at the current window width. measure: how many characters of the
# page's own prose a paragraph line holds (median over paragraphs of 200+ characters,
# measured in their font, formulas and code left out); wrapped: code or printed output
# whose lines the browser wrapped (more rows on screen than lines in the text); clipped:
# display equations (or their numbers) that start left of their column, where no scroll bar
# reaches; images: the natural and the shown aspect ratio (width / height) of every image
# the article shows; wide: display equations, code, printed output, figures and tables that
# reach beyond the article's column without a box of their own (or around them) that
# scrolls sideways, and the page itself scrolling sideways; scrolling: display equations
# wider than their column (they scroll sideways in their box).
LAYOUT = r"""
const art = document.querySelector("article.bd-article") || document.body;
const ctx = document.createElement("canvas").getContext("2d");
const capacity = [];
for (const p of art.querySelectorAll("p")) {
  if (p.closest(".cell_output, figcaption, .citation, .admonition, li")) continue;
  const clone = p.cloneNode(true);
  clone.querySelectorAll("mjx-container, code").forEach(e => e.remove());
  const text = clone.textContent.replace(/\s+/g, " ").trim();
  if (text.length < 200) continue;
  ctx.font = getComputedStyle(p).font;
  capacity.push(p.clientWidth / (ctx.measureText(text).width / text.length));
}
capacity.sort((a, b) => a - b);
const wrapped = [];
for (const pre of art.querySelectorAll("div.cell pre")) {
  const style = getComputedStyle(pre);
  const lh = parseFloat(style.lineHeight) || 1.2 * parseFloat(style.fontSize);
  const lines = pre.textContent.replace(/\n+$/, "").split("\n").length;
  const range = document.createRange();
  range.selectNodeContents(pre);
  const tops = Array.from(range.getClientRects(), r => r.top).sort((a, b) => a - b);
  let rows = tops.length ? 1 : 0;
  for (let i = 1; i < tops.length; i++) if (tops[i] - tops[i - 1] > lh / 2) rows++;
  if (style.whiteSpace !== "pre" || rows > lines)
    wrapped.push(`white-space ${style.whiteSpace}, ${rows} rows for ${lines} lines: `
                 + pre.textContent.trim().split("\n")[0].slice(0, 60));
}
const clipped = [];
for (const c of art.querySelectorAll('mjx-container[display="true"]')) {
  const column = c.parentElement.getBoundingClientRect().left;
  const starts = Array.from(c.querySelectorAll("mjx-math, mjx-labels"),
                            e => e.getBoundingClientRect().left);
  const what = (c.querySelector("mjx-assistive-mml") || c).textContent.slice(0, 60);
  if (Math.min(c.getBoundingClientRect().left, ...starts) < column - 1) clipped.push(what);
  // an equation number drawn over its equation (book.css lets a phone's numbered
  // equation give up the space MathJax reserves for the number on the left)
  const body = c.querySelector("mjx-mtable > mjx-table");
  const number = c.querySelector("mjx-mtable > mjx-labels > mjx-itable");
  if (body && number && body.getBoundingClientRect().right > number.getBoundingClientRect().left + 1
      && body.getBoundingClientRect().width > 0)
    clipped.push("number over the equation: " + what);
}
const images = Array.from(art.querySelectorAll("img")).filter(
    i => i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().height > 0).map(i => {
  const r = i.getBoundingClientRect();
  return {src: i.getAttribute("src"), natural: i.naturalWidth / i.naturalHeight,
          shown: r.width / r.height, width: Math.round(r.width)};
});
const box = art.getBoundingClientRect(), artStyle = getComputedStyle(art);
const column = {left: box.left + parseFloat(artStyle.paddingLeft),       // content box
                right: box.right - parseFloat(artStyle.paddingRight)};
column.width = column.right - column.left;
const inside = r => r.left >= column.left - 1 && r.right <= column.right + 1;
function scrollBox(e) {     // e, or an ancestor inside the column, that scrolls sideways
  for (let a = e; a && a !== art; a = a.parentElement) {
    const overflow = getComputedStyle(a).overflowX;
    if ((overflow === "auto" || overflow === "scroll") && inside(a.getBoundingClientRect()))
      return a;
  }
  return null;
}
const wide = [];
for (const e of art.querySelectorAll('mjx-container[display="true"], div.cell pre, '
                                     + "div.highlight pre, img, figure, table")) {
  const r = e.getBoundingClientRect();
  if (r.width === 0 || inside(r) || scrollBox(e)) continue;
  const what = (e.querySelector("mjx-assistive-mml") || e).textContent.trim().slice(0, 50)
               || e.getAttribute("src") || "";
  wide.push(`${e.tagName.toLowerCase()} ${Math.round(r.left - column.left)}..`
            + `${Math.round(r.right - column.left)} px in a column of `
            + `${Math.round(column.width)} px: ${what}`);
}
const page = document.documentElement;
if (page.scrollWidth > page.clientWidth + 1)
  wide.push(`the page scrolls sideways: ${page.scrollWidth} px in ${page.clientWidth} px`);
const scrolling = Array.from(art.querySelectorAll('mjx-container[display="true"]')).filter(
    e => e.scrollWidth > e.clientWidth + 1).map(e => `${e.scrollWidth}px in ${e.clientWidth}px: `
    + (e.querySelector("mjx-assistive-mml") || e).textContent.slice(0, 60));
return {measure: capacity.length ? Math.round(capacity[Math.floor(capacity.length / 2)]) : null,
        widest: capacity.length ? Math.round(capacity[capacity.length - 1]) : null,
        wrapped: wrapped, clipped: clipped, images: images, wide: wide, scrolling: scrolling};
"""


def _fit_window_to_page(driver):
    """Make the viewport as tall as the document (again if the taller viewport reflowed it)."""
    for _ in range(3):
        height = driver.execute_script(
            "return Math.max(document.documentElement.scrollHeight, document.body.scrollHeight)")
        inner = driver.execute_script("return window.innerHeight")
        if inner >= height:
            return height
        outer = driver.get_window_size()["height"]
        driver.set_window_size(WIDTH, height + (outer - inner))
    return height


class _Anchors(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.found = set()

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key == "id" or (tag == "a" and key == "name"):
                self.found.add(value)


@functools.cache
def _ids_in(path):
    """The anchors (ids) of a built HTML file."""
    parser = _Anchors()
    parser.feed(path.read_text(encoding="utf-8"))
    return frozenset(parser.found)


_LOADED = {}


@pytest.fixture
def page(request, server, browser):
    """Load one page of the book once, and return what the checks need to know about it."""
    name, source = request.param
    if name not in _LOADED:
        _LOADED[name] = _twice(_load, browser, server, name, source)
    return _LOADED[name]


def _twice(load, *args):
    """load(*args), once more if the browser timed out (a long page on a busy machine)."""
    from selenium.common.exceptions import TimeoutException
    try:
        return load(*args)
    except TimeoutException:
        return load(*args)


_LAYOUTS = {}


@pytest.fixture
def layouts(request, server, browser):
    """The page's layout facts at WIDE and PHONE widths (loaded once; screenshots saved)."""
    name, _ = request.param
    if name not in _LAYOUTS:
        _LAYOUTS[name] = {width: _twice(_layout, browser, server, name, width)
                          for width in (WIDE, PHONE)}
    return _LAYOUTS[name]


def _layout(driver, base, name, width):
    """LAYOUT at ``width``; the screenshot shows the first screen only (a whole page 400 px
    wide is taller than Chromium renders in one piece)."""
    driver.set_window_size(width, 900)
    driver.get(urllib.parse.urljoin(base, name + ".html"))
    driver.execute_async_script(WAIT_FOR_MATHJAX)
    driver.execute_async_script(WAIT_FOR_IMAGES)
    facts = driver.execute_script(LAYOUT)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / f"{name.replace('/', '__')}@{width}.png"))
    driver.set_window_size(WIDTH, 900)
    return facts


def _load(driver, base, name, source):
    url = urllib.parse.urljoin(base, name + ".html")
    with urllib.request.urlopen(url) as response:
        status = response.status
    driver.get_log("browser")                       # drop what earlier pages logged
    driver.set_window_size(WIDTH, 900)
    driver.get(url)
    mathjax = driver.execute_async_script(WAIT_FOR_MATHJAX)
    height = _fit_window_to_page(driver)
    unloaded = driver.execute_async_script(WAIT_FOR_IMAGES)
    facts = driver.execute_script(FACTS)
    facts["layout"] = driver.execute_script(LAYOUT)
    launch_shown = []
    if facts["launch"]:
        from selenium.webdriver.common.by import By
        driver.find_element(By.CSS_SELECTOR, ".dropdown-launch-buttons button").click()
        launch_shown = [a.text.strip() for a in
                        driver.find_elements(By.CSS_SELECTOR, ".dropdown-launch-buttons a")
                        if a.is_displayed()]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / (name.replace("/", "__") + ".png")
    driver.save_screenshot(str(shot))
    logs = driver.get_log("browser")
    markdown = markdown_of(source)
    facts.update(
        name=name, source=source, url=url, status=status, mathjax=mathjax, height=height,
        unloaded=unloaded, launch_shown=launch_shown, screenshot=shot,
        errors=[f"{e['level']} {e['message']}" for e in logs if e["level"] == "SEVERE"],
        source_math=count_math(markdown), source_images=images_in_outputs(source),
        cites="{cite" in markdown)
    print(f"\n{name}: {facts['equations']} equations typeset (source has {facts['source_math']}),"
          f" {len(facts['images'])} images loaded ({facts['source_images']} figures in the source),"
          f" {len(set(facts['links']))} links, screenshot {shot.name} ({height}px)")
    return facts


# -- the checks, page by page --------------------------------------------------------------

@pytest.mark.parametrize("page", PAGES, ids=ids(PAGES), indirect=True)
def test_page_loads_without_console_errors(page):
    assert page["status"] == 200, page["url"]
    assert not page["errors"], "console errors:\n" + "\n".join(page["errors"])


@pytest.mark.parametrize("page", PAGES, ids=ids(PAGES), indirect=True)
def test_page_fetches_nothing_from_outside_the_site(page):
    """The site reads offline: MathJax and every other script, style, font and image are
    served with it (Thebe's script is fetched from its CDN only when a reader clicks Live Code)."""
    assert not page["external"], f"fetched from outside the site: {page['external']}"


@pytest.mark.parametrize("page", PAGES, ids=ids(PAGES), indirect=True)
def test_mathjax_typeset_every_formula(page):
    if page["source_math"]:
        assert page["mathjax"] == "typeset", page["mathjax"]
    assert not page["merrors"], f"MathJax errors: {page['merrors']}"
    assert not page["tex_errors"], "TeX MathJax could not read:\n" + "\n".join(page["tex_errors"])
    assert not page["untypeset"], f"math left untypeset: {page['untypeset'][:5]}"
    raw = [m.group(0) for m in re.finditer(r"\$\$|\\begin\{?|\\\(|\\\[", page["text"])]
    assert not raw, f"raw TeX in the page text: {raw[:5]}"
    assert page["equations"] >= page["source_math"], (
        f"{page['equations']} typeset formulas, but {page['source']} has {page['source_math']}")


@pytest.mark.parametrize("page", PAGES, ids=ids(PAGES), indirect=True)
def test_no_display_equation_overflows(page):
    assert not page["overflowing"], "display equations wider than the column:\n" + \
        "\n".join(page["overflowing"])


@pytest.mark.parametrize("page", PAGES, ids=ids(PAGES), indirect=True)
def test_no_code_cell_scrolls_sideways(page):
    """Notebook code lines are at most 80 characters: all of a line shows at WIDTH."""
    assert not page["code_overflowing"], "code cells wider than the column (longest line):\n" + \
        "\n".join(page["code_overflowing"])


@pytest.mark.parametrize("page", PAGES, ids=ids(PAGES), indirect=True)
def test_every_image_loaded(page):
    broken = [i["src"] for i in page["images"] if not i["loaded"]]
    assert not broken and not page["unloaded"], f"images not loaded: {broken or page['unloaded']}"
    in_article = sum(i["in_article"] for i in page["images"])
    assert in_article >= page["source_images"], (
        f"{in_article} images in the article, {page['source_images']} figures in the notebook")


@pytest.mark.parametrize("page", PAGES, ids=ids(PAGES), indirect=True)
def test_internal_links_resolve(page):
    here = urllib.parse.urlsplit(page["url"])
    bad = []
    for href in sorted(set(page["links"])):
        url = urllib.parse.urlsplit(href)
        if url.scheme not in ("http", "https") or url.netloc != here.netloc:
            continue
        path = urllib.parse.unquote(url.path).lstrip("/")
        target = SITE / path
        if path == "" or target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            bad.append(f"{href}: no file {target.relative_to(SITE)}")
            continue
        fragment = urllib.parse.unquote(url.fragment)
        if not fragment or target.suffix != ".html":
            continue
        anchors = set(page["ids"]) if url.path == here.path else _ids_in(target)
        if fragment not in anchors:
            bad.append(f"{href}: no anchor #{fragment} in {target.relative_to(SITE)}")
    assert not bad, "broken internal links:\n" + "\n".join(bad)


@pytest.mark.parametrize("page", PAGES, ids=ids(PAGES), indirect=True)
def test_citations_point_to_this_pages_references(page):
    """A page that cites ends with its own bibliography, and its citations link there."""
    if not page["cites"]:
        pytest.skip("this page cites nothing")
    assert page["citations"], "the source cites, the page shows no citation"
    elsewhere = [h for h in page["citations"] if not h.startswith("#")]
    assert not elsewhere, f"citations that leave the page: {elsewhere[:5]}"


@pytest.mark.parametrize("page", NOTEBOOK_PAGES, ids=ids(NOTEBOOK_PAGES), indirect=True)
def test_notebook_page_has_launch_buttons(page):
    path = page["source"].relative_to(ROOT).as_posix()
    hrefs = {link["text"]: link["href"] for link in page["launch"]}
    assert hrefs.get("Binder") == (
        f"https://mybinder.org/v2/gh/{REPO}/{BRANCH}?urlpath=lab/tree/{path}"), hrefs
    assert hrefs.get("Colab") == (
        f"https://colab.research.google.com/github/{REPO}/blob/{BRANCH}/{path}"), hrefs
    assert {"Binder", "Colab"} <= set(page["launch_shown"]), \
        f"launch menu shows {page['launch_shown']}"
    assert page["thebe"] == 1, "no Live Code (Thebe) button"


@pytest.mark.parametrize("page", PAGES, ids=ids(PAGES), indirect=True)
def test_no_formula_lost_a_part(page):
    """Every bracket and equals sign of a formula's TeX is on the page."""
    assert not page["lost"], "formulas that lost part of themselves:\n" + "\n".join(page["lost"])


@pytest.mark.parametrize("page", PAGES, ids=ids(PAGES), indirect=True)
def test_printed_output_fits_without_scrolling(page):
    """Printed lines are at most 80 characters: at WIDTH all of a line shows."""
    assert not page["output_overflowing"], "printed output wider than the column:\n" + \
        "\n".join(page["output_overflowing"])


@pytest.mark.parametrize("page", PAGES, ids=ids(PAGES), indirect=True)
def test_figures_are_numbered_captioned_described_and_sharp(page):
    """Every figure of a notebook: a numbered caption, alt text that says what it shows, and
    at least twice as many pixels as it takes on the screen (crisp when zoomed)."""
    bad = []
    for f in page["figures"]:
        if not (f["number"] and len(f["caption"]) > len(f["number"]) + 20):
            bad.append(f"{f['src']}: no numbered caption")
        if len(f["alt"]) < 40:
            bad.append(f"{f['src']}: alt text {f['alt']!r}")
        if f["natural"] < 1.9 * f["shown"]:
            bad.append(f"{f['src']}: {f['natural']} pixels shown on {f['shown']:.0f}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("page", PAGES, ids=ids(PAGES), indirect=True)
def test_citations_read_like_their_list_entries(page):
    """One style: a citation shows the author-year label of the entry it links to."""
    if not page["cites"]:
        pytest.skip("this page cites nothing")
    bad = [f"{text!r} links to {label!r}" for text, label in page["cite_labels"]
           if text != label or not re.fullmatch(r".+, \d{4}[a-z]?", text or "")]
    assert not bad, "\n".join(bad)


SOLUTION_PAGES = [p for p in NOTEBOOK_PAGES if p[0].startswith("solutions/")]


@pytest.mark.parametrize("page", SOLUTION_PAGES, ids=ids(SOLUTION_PAGES), indirect=True)
def test_solution_pages_mark_every_answer(page):
    """Each written answer (a Markdown cell tagged solution) is a box titled Solution, and
    each code cell holding a solution region is marked, with the region's lines highlighted."""
    nb = nbformat.read(page["source"], as_version=4)
    written = sum("solution" in c.metadata.get("tags", []) for c in nb.cells
                  if c.cell_type == "markdown")
    code = sum("# BEGIN SOLUTION" in c.source for c in nb.cells if c.cell_type == "code")
    assert page["solutions"] == {"written": written, "code": code, "highlighted": code}


@pytest.mark.parametrize("page,layouts", [(p, p) for p in PAGES], ids=ids(PAGES),
                         indirect=True)
def test_prose_measure(page, layouts):
    """Prose lines hold about 60-90 characters at 1280 and 1920 pixels (not the 145 that a
    full-width column holds at 1920)."""
    for width, layout in ((WIDTH, page["layout"]), (WIDE, layouts[WIDE])):
        if layout["measure"] is None:
            continue
        assert MEASURE[0] <= layout["measure"] <= MEASURE[1], (width, layout)
        assert layout["widest"] <= MEASURE[1] + 5, (width, layout)


@pytest.mark.parametrize("layouts", PAGES, ids=ids(PAGES), indirect=True)
def test_code_and_output_never_wrap(layouts):
    """On a phone and on a wide screen, code and printed output keep their lines (they scroll
    sideways inside their box): a wrapped line breaks a number or a word, and re-wrapped
    source puts a comment between the lines of a loop."""
    for width, layout in layouts.items():
        assert not layout["wrapped"], f"at {width} px:\n" + "\n".join(layout["wrapped"])


@pytest.mark.parametrize("page,layouts", [(p, p) for p in PAGES], ids=ids(PAGES),
                         indirect=True)
def test_no_equation_is_cut_on_the_left(page, layouts):
    """A display equation wider than its column (on a phone) starts at the column's left edge
    and scrolls sideways; neither it nor its number reaches out to the left of the column,
    where no scroll bar reaches, and no number is drawn over its equation. Checked at 1280,
    1920 and 400 pixels. (test_no_display_equation_overflows asks for no scrolling at 1280
    px, test_display_equations_fit_a_phone at 400 px.)"""
    for width, layout in ((WIDTH, page["layout"]), *layouts.items()):
        assert not layout["clipped"], f"at {width} px:\n" + "\n".join(layout["clipped"])


@pytest.mark.parametrize("page,layouts", [(p, p) for p in PAGES], ids=ids(PAGES),
                         indirect=True)
def test_images_keep_their_proportions(page, layouts):
    """Every image the article shows has the aspect ratio of its pixels (within 2 %) at 1280
    and at 400 pixels wide. myst-nb writes a figure's size into the <img> as an inline style;
    when the column is narrower than the figure, max-width shrinks its width and only
    `height: auto !important` (book/_static/book.css) keeps its height from staying put."""
    bad = [f"at {width} px: {im['src']} shown {im['width']} px wide with aspect ratio "
           f"{im['shown']:.3f}, its pixels {im['natural']:.3f}"
           for width, layout in ((WIDTH, page["layout"]), (PHONE, layouts[PHONE]))
           for im in layout["images"] if abs(im["shown"] / im["natural"] - 1) > 0.02]
    assert not bad, "squashed or stretched images:\n" + "\n".join(bad)


@pytest.mark.parametrize("layouts", PAGES, ids=ids(PAGES), indirect=True)
def test_nothing_is_clipped_on_a_phone(layouts):
    """At 400 pixels no display equation, code, printed output, figure or table reaches
    beyond the article's column, where it would be cut off or push the page sideways, unless
    it sits in a box that scrolls sideways (code and printed output do); the page itself
    never scrolls sideways."""
    assert not layouts[PHONE]["wide"], f"at {PHONE} px, wider than the column:\n" + \
        "\n".join(layouts[PHONE]["wide"])


@pytest.mark.parametrize("layouts", PAGES, ids=ids(PAGES), indirect=True)
def test_display_equations_fit_a_phone(layouts):
    """At 400 pixels every display equation fits its column, number included, without
    scrolling: one too long for a phone is split over lines (an aligned environment), so
    that it is read whole. (A scrolling equation is not clipped, but hides its end.)"""
    assert not layouts[PHONE]["scrolling"], \
        f"at {PHONE} px, display equations wider than the column:\n" + \
        "\n".join(layouts[PHONE]["scrolling"])


# -- the site as a whole -------------------------------------------------------------------

def test_root_opens_the_introduction(server, browser):
    browser.get(server)
    browser.execute_async_script(
        "const done = arguments[arguments.length - 1], t0 = Date.now();"
        "(function poll() { if (location.pathname.endsWith('intro.html') || Date.now() - t0 > 10000)"
        " done(); else setTimeout(poll, 50); })();")
    assert browser.current_url == urllib.parse.urljoin(server, PAGES[0][0] + ".html")


def test_search_finds_pages(server, browser):
    browser.get_log("browser")
    browser.get(urllib.parse.urljoin(server, "search.html?q=backpropagation"))
    results = browser.execute_async_script(
        "const done = arguments[arguments.length - 1], t0 = Date.now();"
        "(function poll() {"
        "  const found = document.querySelectorAll('#search-results ul.search li a');"
        "  if (found.length || Date.now() - t0 > 20000) done(Array.from(found, a => a.href));"
        "  else setTimeout(poll, 100); })();")
    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    pages = {urllib.parse.urlsplit(r).path.lstrip("/") for r in results}
    assert "book/01_bptt.html" in pages, results


def test_screenshots_saved():
    """Run after the page tests; the pictures are for people (see the module docstring)."""
    shots = {p.stem for p in SCREENSHOTS.glob("*.png")} if SCREENSHOTS.is_dir() else set()
    if not _LOADED:
        pytest.skip("no page was loaded in this run")
    assert {name.replace("/", "__") for name in _LOADED} <= shots
    (SCREENSHOTS / "pages.json").write_text(json.dumps(
        {name: {"equations": f["equations"], "source_formulas": f["source_math"],
                "display_equations": f["display_equations"], "images": len(f["images"]),
                "figures_in_source": f["source_images"], "links": len(set(f["links"])),
                "height_px": f["height"]} for name, f in _LOADED.items()}, indent=1))
