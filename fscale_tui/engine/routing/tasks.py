"""Labelled task files: what ``profile``, ``calibrate`` and the routing benchmark read.

JSONL, one task per line::

    {"id": "q1", "question": "Is 17 prime?", "context": null,
     "answers": ["YES", "NO"], "label": "YES", "category": "math"}

``id`` (unique in the file), ``question``, ``answers`` (two or more labels) and ``label`` (one
of the answers) are required; ``context`` and ``category`` are optional. A task is asked with
exactly the messages ``scale`` sends (``vote.build_messages``), so profiles, calibration and
``-k auto`` see the same prompt, and replay files keyed by prompt hash match all three.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from ..base.errors import UsageError
from ..base.prompts import build_messages


@dataclass(frozen=True)
class Task:
    id: str
    question: str
    answers: tuple[str, ...]
    label: str
    context: str | None = None
    category: str | None = None

    @property
    def text(self) -> str:
        """What the router embeds: the question, then the context if any."""
        return self.question if not self.context else f"{self.question}\n\n{self.context}"

    @cached_property
    def key(self) -> str:
        """Stable key of the prompt (independent of the id): profiles are stored under it.
        Computed once per task (a profile asks for it for every model and trial)."""
        return prompt_key(self.question, self.answers, self.context)

    def messages(self) -> list[dict[str, str]]:
        return build_messages(self.question, self.answers, self.context)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "question": self.question, "answers": list(self.answers),
                             "label": self.label}
        if self.context:
            d["context"] = self.context
        if self.category:
            d["category"] = self.category
        return d


def prompt_key(question: str, answers: tuple[str, ...], context: str | None) -> str:
    raw = json.dumps([question, list(answers), context or ""], ensure_ascii=False)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:20]


def parse_task(obj: Any) -> Task:
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    for field in ("id", "question", "answers", "label"):
        if obj.get(field) in (None, "", []):
            raise ValueError(f"missing {field!r}")
    answers = obj["answers"]
    if isinstance(answers, str):
        answers = [a.strip() for a in answers.split(",") if a.strip()]
    if not isinstance(answers, list) or len(answers) < 2:
        raise ValueError("'answers' needs at least two labels")
    answers = tuple(str(a).strip() for a in answers)
    label = str(obj["label"]).strip()
    if label not in answers:
        raise ValueError(f"label {label!r} is not one of the answers")
    if not isinstance(obj["question"], str):
        raise ValueError("'question' must be a string")
    context = obj.get("context")
    return Task(id=str(obj["id"]), question=obj["question"], answers=answers, label=label,
                context=str(context) if context else None,
                category=str(obj["category"]) if obj.get("category") else None)


def load_tasks(path: str | Path) -> list[Task]:
    """Read a task file; a bad line or a repeated id is a usage error naming the line."""
    from ..base.jsonl import read_jsonl

    what = f"task file {str(path)!r}"
    tasks: list[Task] = []
    seen: set[str] = set()
    for lineno, obj in read_jsonl(path, "task file"):
        try:
            task = parse_task(obj)
        except ValueError as exc:
            raise UsageError(f"task file {str(path)}:{lineno}: {exc}") from None
        if task.id in seen:
            raise UsageError(f"task file {str(path)}:{lineno}: id {task.id!r} appears twice")
        seen.add(task.id)
        tasks.append(task)
    if not tasks:
        raise UsageError(f"{what} has no tasks")
    return tasks


def write_tasks(path: Path, tasks: list[Task]) -> None:
    from ..base import storage

    storage.atomic_write_text(path, "".join(json.dumps(t.to_dict(), ensure_ascii=False) + "\n"
                                            for t in tasks))
