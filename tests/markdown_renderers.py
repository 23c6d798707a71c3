"""Card markdown rendered the way EHR clients do (used by tests/cards and the browser tests).

* `react_markdown`: react-markdown 10 + remark-gfm 4 + rehype-raw 7 - the CDS Hooks sandbox's stack -
  run by Node from ``tests/cards/render_js`` (versions pinned in its package.json and
  package-lock.json; ``npm ci`` there first, as ``.ci/run`` does);
* `markdown_it`: markdown-it (Python) with linkify on, fuzzy bare domains included, and raw HTML on.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

RENDER_JS = Path(__file__).resolve().parent / "cards" / "render_js"


def react_markdown(sources: list[str]) -> list[str]:
    node = shutil.which("node")
    if node is None or not (RENDER_JS / "node_modules" / "react-markdown").is_dir():
        if os.environ.get("CI"):
            pytest.fail("Node and tests/cards/render_js/node_modules are required in CI (.ci/run runs npm ci)")
        pytest.skip("node or the render_js packages are missing: run `npm ci` in tests/cards/render_js")
    done = subprocess.run(
        [node, "render.mjs"], input=json.dumps(sources), capture_output=True, text=True, cwd=RENDER_JS, check=True
    )
    html: list[str] = json.loads(done.stdout)
    return html


def markdown_it(sources: list[str]) -> list[str]:
    md = MarkdownIt("gfm-like", {"linkify": True, "html": True})  # fuzzy links on: bare domains too
    return [md.render(s) for s in sources]
