"""What a rendered page's tables show a reader: their headers, and the cells of a column that
names metrics (issue 44: tables for people, not ids)."""

from __future__ import annotations

import hashlib
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

from langbench import paths
from langbench.report import tables

ID = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)+")
# Ollama's option names stay as the parameter file sets them (num_ctx 1024): a reader types them
OPTIONS = set(tables.LEVELS) - {"load_point"}


class _Tables(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables: list[dict] = []
        self._cell: list[str] | None = None
        self._row: list[tuple[str, str]] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append({"headers": [], "rows": []})
        elif tag == "tr" and self.tables:
            self._row = []
        elif tag in ("th", "td") and self._row is not None:
            self._cell = []

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag in ("th", "td") and self._cell is not None and self._row is not None:
            self._row.append((tag, " ".join("".join(self._cell).split())))
            self._cell = None
        elif tag == "tr" and self._row is not None and self.tables:
            t = self.tables[-1]
            if self._row and all(kind == "th" for kind, _ in self._row) and not t["headers"]:
                t["headers"] = [text for _, text in self._row]
            elif self._row:
                t["rows"].append([text for _, text in self._row])
            self._row = None


def read_tables(html: str) -> list[dict]:
    """Each table's header texts and its rows' cell texts."""
    parser = _Tables()
    parser.feed(html)
    return parser.tables


def ids_shown(page: Path) -> list[str]:
    """Every header of a table on `page` that is a snake_case id (itl_p99_ms, agg_tps), and every
    cell of a `metric` column that is one: what a reader should never have to decode."""
    found = []
    for t in read_tables(page.read_text()):
        found += [h for h in t["headers"] if ID.fullmatch(h) and h not in OPTIONS]
        if "metric" in t["headers"]:
            i = t["headers"].index("metric")
            found += [r[i] for r in t["rows"] if i < len(r) and ID.fullmatch(r[i])]
    return found


# --- the README's picture of the report's first screen -------------------------------------------

FIRST_SCREEN = paths.ROOT / "docs" / "first-screen.png"
FIRST_SCREEN_RUN = "results/tr112-gpu-h200x2"
FIRST_SCREEN_TEST = "tests/test_gpu.py::test_the_kept_two_gpu_run_renders_its_report_here"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=1366,768"]


def first_screen_source(run_dir: Path) -> str:
    """What the README's screenshot stands on: the kept run's data and the code that draws the
    index's first screen (a digest). The browser test takes the screenshot again when it changes."""
    h = hashlib.sha256()
    lib = paths.ROOT / "lib" / "langbench" / "report"
    for p in [*(run_dir / n for n in ("manifest.json", "plan.json", "records.jsonl", "processes.jsonl")),
              *(lib / n for n in ("index.py", "tables.py", "sections/tr112.py"))]:
        h.update(p.read_bytes())
    return h.hexdigest()


def png_text(path: Path) -> tuple[dict[str, str], tuple[int, int]]:
    """A PNG's text chunks and its size."""
    from PIL import Image
    with Image.open(path) as img:
        return dict(img.text), img.size


def take_first_screen(chromium: str, index: Path, tmp: Path) -> Path | None:
    """The first screen (1366 × 768) of a rendered kept run's index.html, saved as
    docs/first-screen.png with where it came from, where the one there is not current.
    Returns the path written, or None where the picture was current."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo
    source = first_screen_source(paths.ROOT / FIRST_SCREEN_RUN)
    if FIRST_SCREEN.exists() and png_text(FIRST_SCREEN)[0].get("source") == source:
        return None
    shot = tmp / "first-screen.png"
    subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile-shot'}", f"--screenshot={shot}",
                    index.as_uri()], capture_output=True, text=True, timeout=120)
    info = PngInfo()
    for key, value in (("made-by", FIRST_SCREEN_TEST), ("run", FIRST_SCREEN_RUN), ("source", source)):
        info.add_text(key, value)
    with Image.open(shot) as img:
        img.save(FIRST_SCREEN, pnginfo=info, optimize=True)
    return FIRST_SCREEN
