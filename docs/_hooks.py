"""MkDocs hook: publish ``benchmarks/RESULTS.md`` as the site's ``results.md`` page.

The benchmark figures live in ``benchmarks/RESULTS.md`` only. The pages link to it by its
path in the repository, ``../benchmarks/RESULTS.md``, so that the link works where the
Markdown is read as files (GitHub, an editor); on the site, this hook adds the file as a
page and points those links at it, so that ``--strict`` can still check every other link.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "RESULTS.md"
REPO_LINK = "](../benchmarks/RESULTS.md"  # also matches a link to one of its headings
SITE_LINK = "](results.md"


def on_files(files: Files, config: Any) -> Files:
    files.append(File.generated(config, "results.md", abs_src_path=str(RESULTS)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    return markdown.replace(REPO_LINK, SITE_LINK)
