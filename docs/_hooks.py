"""MkDocs hook: publish the benchmark reports in ``benchmarks/`` as pages of the site.

The figures live in ``benchmarks/RESULTS.md`` and ``benchmarks/STABILITY.md`` only. The
pages link to them by their paths in the repository (``../benchmarks/RESULTS.md``), so
that the links work where the Markdown is read as files (GitHub, an editor); on the site,
this hook adds each file as a page and points those links at it (and RESULTS.md's own
link to STABILITY.md), so that ``--strict`` can still check every other link.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
# report in benchmarks/ -> its page on the site
PAGES = {"RESULTS.md": "results.md", "STABILITY.md": "stability.md"}


def on_files(files: Files, config: Any) -> Files:
    for report, page in PAGES.items():
        if (BENCHMARKS / report).is_file():
            files.append(File.generated(config, page, abs_src_path=str(BENCHMARKS / report)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    for report, site_page in PAGES.items():
        # (Also matches a link to one of the report's headings.)
        markdown = markdown.replace(f"](../benchmarks/{report}", f"]({site_page}")
        markdown = markdown.replace(f"]({report}", f"]({site_page}")
    return markdown
