"""Builds adaspec/bench/repeats.json: the benchmark's workload where text repeats, from text no one
in this project wrote - functions and module documentation of the Python standard library
(CPython, Python Software Foundation License) - frozen with its provenance.

    .venv/bin/python scripts/build_repeats.py

Categories (the instructions are this project's; the code and documentation are CPython's):
    stdlib-edit   a function and an edit to make (type hints, a rename, a docstring, a described
                  bug, a loop to a comprehension); stdlib-edit-predicted: the same with the
                  original function as the client's prediction (OpenAI's Predicted Outputs)
    revise        explain a function, then revise that answer (the second turn copies the first)
    agent         one template over 24 functions, as an agent's repeated tool calls
    quote         answers that must quote a passage of the given documentation
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import platform
import textwrap
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "adaspec" / "bench" / "repeats.json"

# (function, instruction, bug to introduce as (old, new) or None)
EDITS = [
    ("textwrap.indent", "Add type hints to this function's parameters and return value. Return the whole function.", None),
    ("shlex.quote", "Rename the parameter `s` to `text` everywhere in this function. Return the whole function.", None),
    ("string.capwords", "Add type hints to this function's parameters and return value. Return the whole function.", None),
    ("html.escape", "Replace this function's docstring with a one-line docstring. Return the whole function.", None),
    ("statistics.median", "Fix this bug: for an odd number of items the function must return the middle item, but it "
                          "returns the mean of two items. Return the whole function.", ("if n % 2 == 1:", "if n % 2 == 0:")),
    ("fnmatch.filter", "Rewrite the loops in this function as list comprehensions where possible. Return the whole function.", None),
    ("colorsys.rgb_to_hsv", "Add type hints to this function's parameters and return value. Return the whole function.", None),
    ("base64.b64encode", "Rename the variable `encoded` to `result` everywhere in this function. Return the whole function.", None),
    ("textwrap.shorten", "Replace this function's docstring with a one-line docstring. Return the whole function.", None),
    ("collections.Counter.most_common", "Add type hints to this method's parameters and return value. Return the whole method.", None),
    ("zipfile.is_zipfile", "Fix this bug: the function must return whether the file is a zip file, but it always "
                           "returns False. Return the whole function.", ("    return result", "    return False")),
    ("mimetypes.guess_type", "Rename the parameter `strict` to `strict_only` everywhere in this function. Return the whole function.", None),
]
REVISE = ["textwrap.indent", "shlex.quote", "string.capwords", "html.escape", "statistics.median", "fnmatch.filter",
          "colorsys.rgb_to_hls", "base64.b64encode"]
AGENT = ["textwrap.indent", "textwrap.shorten", "textwrap.fill", "shlex.quote", "shlex.join", "string.capwords",
         "html.escape", "html.unescape", "statistics.median", "statistics.median_low", "statistics.mean",
         "statistics.pstdev", "calendar.isleap", "calendar.leapdays", "calendar.weekday", "fnmatch.filter",
         "colorsys.rgb_to_hsv", "colorsys.hls_to_rgb", "colorsys.rgb_to_hls", "base64.b64encode", "glob.has_magic",
         "zipfile.is_zipfile", "mimetypes.guess_type", "shutil.disk_usage"]
QUOTE = ["textwrap", "shlex", "fnmatch", "colorsys", "difflib", "heapq", "bisect", "string"]

AGENT_TEMPLATE = ("You are a code-indexing agent. For the function below, reply with only a JSON object with the keys "
                  "\"name\", \"parameters\" (a list of parameter names), \"returns\" (one short phrase) and "
                  "\"summary\" (one sentence).\n\n```python\n{source}\n```")
REVISE_FIRST = "Explain what this function does in three sentences.\n\n```python\n{source}\n```"
REVISE_SECOND = "Now rewrite your explanation as a bulleted list with one bullet per sentence, keeping your wording."
QUOTE_TEMPLATE = ("Quote the first two sentences of this documentation word for word, inside quotation marks, then say "
                  "in one sentence what the module is for.\n\n{doc}")


def function_source(qualified: str) -> str:
    """The source of a standard-library function, dedented."""
    module_name, _, rest = qualified.partition(".")
    obj = importlib.import_module(module_name)
    for part in rest.split("."):
        obj = getattr(obj, part)
    return textwrap.dedent(inspect.getsource(obj)).rstrip() + "\n"


def module_doc(name: str, words: int = 220) -> str:
    """A module's documentation, cut to about ``words`` words at a paragraph end."""
    doc = inspect.cleandoc(importlib.import_module(name).__doc__ or "")
    kept, count = [], 0
    for paragraph in doc.split("\n\n"):
        kept.append(paragraph)
        count += len(paragraph.split())
        if count >= words:
            break
    return "\n\n".join(kept)


def main() -> None:
    edits = []
    for qualified, instruction, bug in EDITS:
        original = function_source(qualified)
        shown = original
        if bug is not None:
            assert bug[0] in original, (qualified, bug)
            shown = original.replace(bug[0], bug[1], 1)
        edits.append({"id": qualified, "instruction": instruction, "code": shown, "prediction": original})
    data = {
        "provenance": {
            "what": "functions and module documentation of the Python standard library, with instructions written "
                    "for this project",
            "source": f"CPython {platform.python_version()} standard library (Python Software Foundation License)",
            "built_by": "scripts/build_repeats.py",
        },
        "edit": edits,
        "revise": [{"id": q, "turns": [REVISE_FIRST.format(source=function_source(q)), REVISE_SECOND]} for q in REVISE],
        "agent": [{"id": q, "prompt": AGENT_TEMPLATE.format(source=function_source(q))} for q in AGENT],
        "quote": [{"id": m, "prompt": QUOTE_TEMPLATE.format(doc=module_doc(m))} for m in QUOTE],
    }
    text = json.dumps(data, indent=1, ensure_ascii=False)
    data["provenance"]["sha256_of_items"] = hashlib.sha256(
        json.dumps({k: data[k] for k in ("edit", "revise", "agent", "quote")}, ensure_ascii=False).encode()).hexdigest()
    text = json.dumps(data, indent=1, ensure_ascii=False)
    OUT.write_text(text + "\n")
    print(f"wrote {OUT}: {len(edits)} edits, {len(data['revise'])} revisions, {len(data['agent'])} agent calls, "
          f"{len(data['quote'])} quotes")


if __name__ == "__main__":
    main()
