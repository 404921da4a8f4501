"""``report.html``: one self-contained page a person opens in a browser.

The page holds the run's Markdown report as HTML tables (Python-Markdown with its
``tables`` extension), every PNG plot of the folder inlined as a ``data:`` URI (so the file
can be mailed or archived alone), the resolved config and the versions that produced it.
"""

from __future__ import annotations

import base64
import html
import os
from typing import Any, Mapping

__all__ = ["write_html_report"]

_STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead { background: #f3f3f3; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #666; font-size: 0.85em; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.85em; }
"""


# After loading, the page records how many of its images failed to decode (a headless browser
# reads it back: tests/report/test_report_html.py).
_CHECK = ("<script>window.addEventListener('load', function () { var bad = 0; "
          "document.querySelectorAll('img').forEach(function (i) { if (!i.complete || i.naturalWidth === 0) bad++; }); "
          "document.body.setAttribute('data-images', document.images.length); "
          "document.body.setAttribute('data-broken-images', bad); });</script>\n")


def write_html_report(out_dir: str, title: str, markdown_text: str, config: Mapping[str, Any] | None = None,
                      version: Mapping[str, Any] | None = None) -> str:
    """Write ``out_dir/report.html`` (see the module docstring) and return its path.

    ``version``: ``{"ensemblekit": ..., "commit": ...}`` for the footer."""
    import markdown
    import torch
    import yaml

    from ..serialization import atomic_write_text

    body = markdown.markdown(markdown_text, extensions=["tables"])
    figures = []
    for name in sorted(f for f in os.listdir(out_dir) if f.lower().endswith(".png")):
        with open(os.path.join(out_dir, name), "rb") as fh:
            data = base64.b64encode(fh.read()).decode("ascii")
        figures.append(f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{html.escape(name)}</figcaption></figure>")
    version = dict(version or {"ensemblekit": "?", "commit": "?"})
    cfg = f"<h2>Configuration</h2><pre>{html.escape(yaml.safe_dump(dict(config), sort_keys=False))}</pre>" if config else ""
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style></head><body>\n{body}\n<h2>Plots</h2>\n{''.join(figures) or '<p>none</p>'}\n{cfg}\n"
            f"<p><small>ensemblekit {html.escape(str(version['ensemblekit']))} (commit {html.escape(str(version['commit']))}), "
            f"torch {html.escape(torch.__version__)}</small></p>\n{_CHECK}</body></html>\n")
    path = os.path.join(out_dir, "report.html")
    atomic_write_text(path, page)
    return path
