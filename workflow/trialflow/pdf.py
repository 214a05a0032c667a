"""The report as a PDF, rendered from the same HTML with WeasyPrint (print stylesheet).

Rendering never touches the network: the report embeds its figures as data URIs, and any other
URL is refused by the fetcher. Collapsed sections (``<details>``) are printed open.
"""

from __future__ import annotations

from pathlib import Path

from trialflow.io import atomic_path

__all__ = ["write_pdf"]


def write_pdf(html: str, path: str | Path) -> None:
    """Write the report's HTML as a PDF (A4, paged by the print stylesheet)."""
    import logging

    from weasyprint import HTML

    # WeasyPrint logs every CSS property it does not support (e.g. position: sticky) as a
    # warning; those belong to the screen layout and are expected.
    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    from weasyprint.urls import URLFetcher

    printable = html.replace("<details>", "<details open>")
    # Only data: URIs (the embedded figures) may be read; anything else is an error.
    offline = URLFetcher(allowed_protocols={"data"}, fail_on_errors=True)
    document = HTML(string=printable, url_fetcher=offline)
    with atomic_path(path) as tmp:
        document.write_pdf(tmp)
