"""A frozen snapshot of the project's own text that the ``summarise``, ``qa`` and ``code-edit``
categories are built from.

Read from the live source tree, those prompts would change with every edit to the code or
the README, so runs from different commits would not measure the same prompts, and a
resumed run could mix two versions of one prompt. The snapshot (``own_texts.json``, beside
this module) keeps them fixed; ``python -m adaspec.bench.own_texts`` remakes it from the
current tree, which changes the benchmark and calls for a fresh full run.
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path
from typing import Sequence

from adaspec.atomic import atomic_write_text
from adaspec.errors import AdaspecError

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # adaspec/
SNAPSHOT_FILE = Path(__file__).with_name("own_texts.json")
MODULE_CHARS = 3000  # the head of a module a summarise prompt shows
SECTION_CHARS = 2500  # the part of the README a qa prompt shows, from its heading on
FUNCTION_LINES = (8, 40)  # code-edit takes top-level functions of this many lines (end - start)


def own_modules(package_dir: Path) -> list[Path]:
    """The package's Python modules, ``__init__`` files left out.

    Args:
        package_dir: the ``adaspec`` folder.

    Returns:
        The module paths, sorted.
    """
    return sorted(p for p in package_dir.rglob("*.py") if p.name != "__init__.py")


def snapshot_own_texts(package_dir: Path, readme: Path, headings: Sequence[str]) -> dict:
    """Collects the texts the own-text categories are built from.

    Args:
        package_dir: the ``adaspec`` folder to read modules from.
        readme: the README to cut sections from.
        headings: the README headings whose sections the qa questions are answered from.

    Returns:
        ``{"modules": [[stem, head]], "readme_sections": {heading: section},
        "functions": [[module stem, function name, source]]}``, each list in a stable order.
    """
    modules, functions = [], []
    for path in own_modules(package_dir):
        source = path.read_text()
        modules.append([path.stem, source[:MODULE_CHARS]])
        for node in ast.parse(source).body:
            if isinstance(node, ast.FunctionDef) and FUNCTION_LINES[0] <= (node.end_lineno or 0) - node.lineno <= FUNCTION_LINES[1]:
                functions.append([path.stem, node.name, ast.get_source_segment(source, node)])
    text = readme.read_text()
    sections = {}
    for heading in headings:
        start = text.find(heading)
        sections[heading] = text[start:start + SECTION_CHARS] if start >= 0 else text[:SECTION_CHARS]
    return {"modules": modules, "readme_sections": sections, "functions": functions}


def load_own_texts(path: Path = SNAPSHOT_FILE) -> dict:
    """Reads the snapshot.

    Args:
        path: the snapshot file (default: the one shipped with the package).

    Returns:
        What ``snapshot_own_texts`` returned when the snapshot was made.

    Raises:
        AdaspecError: if the file is missing or not a snapshot.
    """
    try:
        texts = json.loads(path.read_text())
        if not {"modules", "readme_sections", "functions"} <= set(texts):
            raise ValueError("keys missing")
        return texts
    except (OSError, ValueError) as error:
        raise AdaspecError(f"{path} is not a prompt snapshot ({error}); remake it with python -m adaspec.bench.own_texts") from None


def write_snapshot(texts: dict, path: Path) -> None:
    """Writes a snapshot atomically.

    Args:
        texts: ``snapshot_own_texts``'s output.
        path: the file to write.
    """
    atomic_write_text(path, json.dumps(texts, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    from adaspec.bench.prompts import README_QUESTIONS

    parser = argparse.ArgumentParser(description="Remake the own-text prompt snapshot from a source tree.")
    parser.add_argument("--package-dir", type=Path, default=PACKAGE_DIR)
    parser.add_argument("--readme", type=Path, default=PACKAGE_DIR.parent / "README.md")
    parser.add_argument("--out", type=Path, default=SNAPSHOT_FILE)
    args = parser.parse_args()
    try:
        texts = snapshot_own_texts(args.package_dir, args.readme, [heading for _, heading in README_QUESTIONS])
        write_snapshot(texts, args.out)
    except (OSError, SyntaxError) as error:
        raise SystemExit(f"own_texts: error: {error}") from None
    print(f"wrote {args.out}")
