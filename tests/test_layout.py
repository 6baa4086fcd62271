"""docs/layout.md names every module of src/gtgm and every benchmark script, and nothing that is gone."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "gtgm"


def _named_on_page() -> set[str]:
    """Each table row's name, qualified by its section: ``gtgm.data.io``, ``gtgm.config``, ``benchmarks/x.py``."""
    names, prefix = set(), None
    for line in (ROOT / "docs" / "layout.md").read_text().splitlines():
        if heading := re.match(r"## `gtgm\.(\w+)`", line):
            prefix = f"gtgm.{heading.group(1)}."
        elif line.startswith("## Top-level modules"):
            prefix = "gtgm."
        elif line.startswith("## `benchmarks/`"):
            prefix = "benchmarks/"
        elif line.startswith("## "):
            prefix = None
        elif prefix and (row := re.match(r"\| `([\w.]+)` \|", line)):
            names.add(prefix + row.group(1))
    return names


def _on_disk() -> set[str]:
    modules = {"gtgm." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts) for p in PACKAGE.rglob("*.py")}
    return modules | {f"benchmarks/{p.name}" for p in (ROOT / "benchmarks").glob("*.py")}


def test_the_layout_page_names_every_module_and_benchmark_and_nothing_else():
    page, disk = _named_on_page(), _on_disk()
    assert not disk - page, f"docs/layout.md does not name: {sorted(disk - page)}"
    assert not page - disk, f"docs/layout.md names what is gone: {sorted(page - disk)}"


def test_the_layout_page_lists_the_packages_in_the_order_of_the_import_layers():
    layers = re.search(r"layers = \[(.*?)\]", (ROOT / "pyproject.toml").read_text(), re.S).group(1)
    packages = [p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()]
    order = [name for name in re.findall(r"\b(\w+)\b", layers) if name in packages]
    sections = re.findall(r"^## `gtgm\.(\w+)`", (ROOT / "docs" / "layout.md").read_text(), re.M)
    assert sections == order


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_relative_link_of_the_readme_and_docs_reaches_a_file_and_heading():
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not checked offline
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and file.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", file.read_text(), re.M)
                if anchor not in {_anchor(h) for h in headings}:
                    broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, broken
