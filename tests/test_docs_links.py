"""Every relative link in README.md, docs/*.md and results/README.md points at a file of this repository, and every
#anchor at a heading of its page (GitHub's heading slugs). No page points outside the repository."""
import re
from pathlib import Path

import pytest

from util import REPO_DIR

PAGES = sorted([REPO_DIR / "README.md", REPO_DIR / "results" / "README.md", *(REPO_DIR / "docs").glob("*.md")])
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def prose(path):
    """The page without its fenced code blocks and inline code spans."""
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def slugs(path):
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen, out = {}, set()
    for line in re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M).splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-")
        out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return out


def links():
    for page in PAGES:
        for target in LINK.findall(prose(page)):
            if not re.match(r"[a-z]+:", target):
                yield page, target


@pytest.mark.parametrize("page,target", list(links()),
                         ids=lambda v: v.relative_to(REPO_DIR).as_posix() if isinstance(v, Path) else v)
def test_relative_link_resolves(page, target):
    path, _, anchor = target.partition("#")
    dest = (page.parent / path).resolve() if path else page
    assert dest.is_relative_to(REPO_DIR.resolve()), f"{page.name}: {target} points outside the repository"
    assert dest.exists(), f"{page.relative_to(REPO_DIR)}: {target} does not exist"
    if anchor and dest.suffix == ".md":
        assert anchor in slugs(dest), f"{page.relative_to(REPO_DIR)}: no heading #{anchor} in {dest.name}"


def test_pages_refer_to_nothing_outside_the_repository():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for bad in ("../shared", "STACK.md", "SPEC §"):
            assert bad not in text, f"{page.relative_to(REPO_DIR)} mentions {bad}"
