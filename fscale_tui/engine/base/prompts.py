"""The prompt a classification vote sends, shared by scale, -k auto, profiling, calibration,
replay matching and the call-log export (so prompt hashes agree everywhere)."""

from __future__ import annotations


def build_messages(question: str, answers: tuple[str, ...], context: str | None) -> list[dict[str, str]]:
    """Context goes in the system message, the question in the user message."""
    labels = ", ".join(answers)
    system = ("You are one member of a panel of independent classifiers. Answer the user's question "
              f"with exactly one of these labels: {labels}. Think briefly if you need to, then end "
              "your reply with a final line of the form 'Answer: <label>'.")
    if context:
        system += "\n\nContext:\n" + context
    return [{"role": "system", "content": system},
            {"role": "user", "content": f"{question}\n\nAnswer with one of: {labels}."}]
