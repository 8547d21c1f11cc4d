"""The README and docs/ link only to files that exist in the repository."""

from __future__ import annotations

import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAGES = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_relative_links_resolve(page):
    text = open(page).read()
    links = [m.group(1) for m in LINK.finditer(text) if "://" not in m.group(1)]
    missing = [link for link in links if not os.path.exists(os.path.join(os.path.dirname(page), link))]
    assert not missing, f"{os.path.relpath(page, ROOT)} links to missing files: {missing}"


def test_docs_pages_exist():
    names = {os.path.basename(p) for p in PAGES}
    assert {"algorithm.md", "environments.md", "benchmarks.md", "architecture.md"} <= names
