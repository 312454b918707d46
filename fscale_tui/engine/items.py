"""The one input boundary: batch items and Python API requests, decoded by one typed schema.

A batch line (``scale --batch``, ``generate --batch``) and an item given to ``scale_batch`` /
``generate_batch`` are decoded by the same msgspec structs (:class:`ScaleItem`,
:class:`GenerateItem`): strict types, bounded numbers, nothing coerced. ``"k": 2.5`` is not 2,
``"k": true`` is not 1, an object ``id`` is not its Python repr, ``1e999`` and a 5,000-digit
number are out of range, a lone surrogate (``"\\ud800"``) is not text. Anything wrong with an
item becomes one :class:`ItemError` for that item — naming the field, saying what it must be
and what it got, and carrying the item's ``id`` when it could be read — and the batch goes on.
Fields the schema does not know are ignored (data sets carry their own columns).

Lines are decoded one at a time as the batch consumes them (:class:`BatchItems`), straight from
the bytes of the line: memory follows the longest line in flight, not the size of the file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from .base.calls import GenerateRequest, ScaleRequest
from .base.errors import BigNumber as _Big, UsageError, describe
from .base.jsonl import count_items, iter_file_lines
from .requests import MAX_K, scale_request, split_labels, validated

#: Bounds on the numbers an item may carry (an item asking for 10**30 tokens is a bad line,
#: not a request the providers should see).
MAX_TOKENS = 1_000_000
MAX_STEPS = 1_000
MAX_LABELS = 100
MAX_SEED = 2**63 - 1

Count = Annotated[int, msgspec.Meta(ge=1, le=MAX_K)]
Names = str | list[Annotated[str, msgspec.Meta(min_length=1)]]

_SURROGATE = re.compile("[\ud800-\udfff]")
_LONE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class ItemError(UsageError):
    """One bad item: the message names the field; ``item_id`` is the item's own id, if any."""

    def __init__(self, message: str, item_id: str | None = None) -> None:
        super().__init__(message)
        self.item_id = item_id


class _Item(msgspec.Struct):
    """Fields every item has. Strings must be text: a lone surrogate is refused here (the
    JSON decoder refuses its escape; this catches one handed over from Python)."""

    question: str
    context: str | None = None
    id: str | int | None = None

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            value = getattr(self, name)
            values = value if isinstance(value, list) else [value]
            for i, v in enumerate(values):
                if isinstance(v, str) and not v.isascii() and (lone := _SURROGATE.search(v)):
                    where = f"{name}[{i}]" if isinstance(value, list) else name
                    raise ValueError(f"{where}: contains a lone surrogate "
                                     f"(\\u{ord(lone[0]):04x}), which is not text")


class ScaleItem(_Item, kw_only=True):
    answers: Names | None = None
    models: Names | None = None
    panel: str | None = None
    k: Count | Literal["auto"] | None = None
    #: The right answer, when the data set has one: never sent to a model; the batch's
    #: summary line gives the accuracy on the labelled items.
    label: str | int | None = None


class GenerateItem(_Item, kw_only=True):
    gold: str | None = None
    k: Count | None = None
    strategy: str | None = None
    judges: Count | None = None
    panel: str | None = None
    models: Names | None = None
    judge_models: Names | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=MAX_TOKENS)] | None = None
    max_steps: Annotated[int, msgspec.Meta(ge=1, le=MAX_STEPS)] | None = None
    width: Count | None = None
    seed: Annotated[int, msgspec.Meta(ge=0, le=MAX_SEED)] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0.0, le=2.0)] | None = None
    verifier: str | None = None


class GenerateApiItem(GenerateItem, kw_only=True):
    """``generate_batch`` items may also carry candidates written elsewhere (not batch lines:
    a data set's ``candidates`` column must not silently switch generation off)."""

    early_stop: bool | None = None
    candidates: list[str] | None = None
    candidate_models: list[str] | None = None


#: What each field must be, for the one error line.
_MUST = {
    "question": "must be a non-empty string",
    "context": "must be a string",
    "id": "must be a string or a whole number",
    "answers": 'must be a list of labels (["YES", "NO"]) or one comma-separated string ("YES,NO")',
    "models": "must be a list of model aliases or one comma-separated string",
    "judge_models": "must be a list of model aliases or one comma-separated string",
    "panel": "must be a panel name (a string)",
    "k": f"must be a whole number from 1 to {MAX_K}",
    "judges": f"must be a whole number from 1 to {MAX_K}",
    "width": f"must be a whole number from 1 to {MAX_K}",
    "max_tokens": f"must be a whole number from 1 to {MAX_TOKENS:,}",
    "max_steps": f"must be a whole number from 1 to {MAX_STEPS:,}",
    "seed": "must be a whole number from 0 to 2**63-1",
    "temperature": "must be a number from 0 to 2",
    "gold": "must be a string",
    "strategy": "must be a strategy name (a string)",
    "verifier": "must be a string",
    "early_stop": "must be true or false",
    "candidates": "must be a list of strings",
    "candidate_models": "must be a list of model aliases",
}


def _loose(line: bytes | str) -> Any:
    """The line as plain JSON values, for error messages only (never raises)."""
    try:
        return json.loads(line, parse_int=lambda s: _Big(s) if len(s) > 30 else int(s))
    except (ValueError, RecursionError, TypeError):
        return None


def _item_id(obj: Any) -> str | None:
    """The item's own id, when it has a usable one (a string or a whole number)."""
    if isinstance(obj, dict):
        value = obj.get("id")
        if isinstance(value, str) and not _SURROGATE.search(value):
            return value
        if isinstance(value, int) and not isinstance(value, (bool, _Big)):
            return str(value)
    return None


def _field_message(detail: str, obj: Any, k_auto: bool) -> str:
    """A msgspec validation message as one line for people: the field, what it must be, and
    what it was."""
    found = re.search(r" - at `\$(.*)`$", detail)
    path = found[1] if found else ""
    detail = detail[:found.start()] if found else detail
    missing = re.fullmatch(r"Object missing required field `(\w+)`", detail)
    if missing:
        return f"no {missing[1]}" if missing[1] == "question" else f"{missing[1]} is missing"
    if detail == "Expected `object`, got `array`" and not path or \
            re.fullmatch(r"Expected `object`, got `\w+`", detail) and not path:
        return f"not a JSON object (got {describe(obj) if obj is not None else 'something else'})"
    if not path:
        return detail  # a message of ours, raised in __post_init__ ("question: ...")
    parts = re.findall(r"\.(\w+)|\[(\d+)\]", path)
    field = parts[0][0] if parts and parts[0][0] else path.lstrip(".")
    must = _MUST.get(field, "has the wrong type")
    if field == "k" and k_auto:
        must += ' or "auto"'
    value: Any = obj
    for name, index in parts:
        try:
            value = value[name] if name else value[int(index)]
        except (KeyError, IndexError, TypeError, ValueError):
            value = None
            break
    where = field + "".join(f"[{index}]" for _, index in parts[1:] if index)
    if where != field:  # an element of a list
        must = "must be a non-empty string" if field in ("answers", "models", "judge_models",
                                                        "candidates", "candidate_models") else must
    if isinstance(obj, dict):
        got = describe(value)
    else:  # the line could not be read again as plain JSON (e.g. nested too deeply)
        kind = re.search(r"got `(\w+)`", detail)
        got = _KINDS.get(kind[1], kind[1]) if kind else "a value out of range"
    return f"{where} {must}, not {got}"


_KINDS = {"array": "a list", "object": "an object", "float": "a number", "int": "a whole number",
          "bool": "true or false", "str": "a string", "null": "null"}


def _decode_failure(exc: Exception, line: bytes | str, k_auto: bool) -> ItemError:
    """The one error line for a line that does not decode."""
    obj = _loose(line)
    item_id = _item_id(obj)
    if isinstance(exc, RecursionError):
        return ItemError("nested too deeply (the JSON is not a batch item)", item_id)
    if isinstance(exc, msgspec.ValidationError):
        return ItemError(_field_message(str(exc), obj, k_auto), item_id)
    # A DecodeError: not UTF-8, not JSON, or text that is not Unicode (a lone surrogate).
    if isinstance(line, bytes):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as bad:
            return ItemError(f"not valid UTF-8 (byte 0x{line[bad.start]:02x} at column "
                             f"{bad.start + 1})")
    text = line.decode("utf-8") if isinstance(line, bytes) else line
    if _LONE_ESCAPE.search(text) and isinstance(obj, dict):
        for name, value in obj.items():
            if isinstance(value, str) and (lone := _SURROGATE.search(value)):
                return ItemError(f"{name}: contains a lone surrogate (\\u"
                                 f"{ord(lone[0]):04x}), which is not text",
                                 item_id)
        return ItemError("contains a lone surrogate (an unpaired \\ud800-\\udfff escape), "
                         "which is not text", item_id)
    message = str(exc).removeprefix("JSON is malformed: ")
    return ItemError(f"invalid JSON: {message}", item_id)


_decoders: dict[type, Any] = {}

#: An item schema (:class:`ScaleItem`, :class:`GenerateItem`, ...): what decoding returns.
I = TypeVar("I", bound=_Item)


def decode_item(line: bytes | str, schema: type[I]) -> I:
    """One JSONL line as ``schema``; :class:`ItemError` (with the item's id when it could be
    read) if it is not one."""
    decoder: msgspec.json.Decoder[I] | None = _decoders.get(schema)
    if decoder is None:
        decoder = _decoders[schema] = msgspec.json.Decoder(schema)
    if isinstance(line, bytes) and line.startswith(b"\xef\xbb\xbf"):
        line = line[3:]
    try:
        return decoder.decode(line)
    except (msgspec.DecodeError, RecursionError) as exc:  # ValidationError is a DecodeError
        raise _decode_failure(exc, line, schema is ScaleItem) from None


def convert_item(obj: Any, schema: type[I]) -> I:
    """A Python value (an API caller's dict) as ``schema``, with the same rules as a line."""
    try:
        return msgspec.convert(obj, schema)
    except (msgspec.ValidationError, RecursionError) as exc:
        if isinstance(exc, RecursionError):
            raise ItemError("nested too deeply", _item_id(obj)) from None
        raise ItemError(_field_message(str(exc), obj, schema is ScaleItem),
                        _item_id(obj)) from None


def _names(value: str | list[str] | None, field: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return split_labels(value)
    return tuple(value) or None


def _labels(value: str | list[str]) -> tuple[str, ...]:
    """``answers`` as labels, each checked on its own (so the message names the bad one)."""
    if isinstance(value, str):
        split = split_labels(value) or ()
        if len(split) < 2:
            raise ValueError(f'answers must name at least two labels, not {describe(value)}')
        return split
    labels = []
    for i, label in enumerate(value):
        if not label.strip():
            raise ValueError(f"answers[{i}] is empty")
        if "," in label:
            raise ValueError(f"answers[{i}] {describe(label)} contains a comma: give each "
                             "label as its own string")
        labels.append(label.strip())
    if len(labels) < 2:
        raise ValueError(f"answers must name at least two labels, not {len(labels)}")
    if len(labels) > MAX_LABELS:
        raise ValueError(f"answers names {len(labels)} labels (at most {MAX_LABELS})")
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):
        if label.casefold() in seen:
            raise ValueError(f"answers[{i}] {describe(label)} repeats answers[{seen[label.casefold()]}]")
        seen[label.casefold()] = i
    return tuple(labels)


def _id_text(value: str | int | None) -> str | None:
    return None if value is None else str(value)


def scale_from_item(item: ScaleItem, defaults: dict[str, Any]) -> ScaleRequest:
    """The ``ScaleRequest`` of a decoded item; ``defaults`` are the command's flags (``answers``,
    ``models``, ``panel``, ``k``, ``tie_break``, ``alpha``, ``budget``). The item's own choice of models
    or panel replaces the flags' (never both)."""
    item_id = _id_text(item.id)
    try:
        answers = item.answers if item.answers is not None else defaults.get("answers")
        if not answers:
            raise ValueError("no answers (give them in the item or with --answers)")
        labels = _labels(answers if isinstance(answers, str) else list(answers))
        models = _names(item.models, "models")
        panel = item.panel
        if models is None and panel is None:
            models, panel = defaults.get("models"), defaults.get("panel")
        k = item.k if item.k is not None else defaults.get("k")
        # The command's --budget is spent by -k auto's planner: items of another k ignore it.
        budget = defaults.get("budget") if k == "auto" else None
        return scale_request(item.question, labels, context=item.context, models=models,
                             panel=panel, k=k, tie_break=defaults.get("tie_break"),
                             item_id=item_id, alpha=defaults.get("alpha"), budget=budget)
    except (ValueError, UsageError) as exc:
        raise ItemError(str(exc), item_id) from None


def generate_from_item(item: GenerateItem, defaults: dict[str, Any]) -> GenerateRequest:
    """The ``GenerateRequest`` of a decoded item; ``defaults`` are the command's options."""
    item_id = _id_text(item.id)
    opts = {k: v for k, v in defaults.items() if v is not None}
    for name in item.__struct_fields__:
        value = getattr(item, name)
        if name in ("question", "id") or value is None:
            continue
        if name in ("models", "judge_models"):
            value = _names(value, name)
        elif name in ("candidates", "candidate_models"):
            value = tuple(value)
        opts[name] = value
    if item.panel is not None and item.models is None:
        opts.pop("models", None)  # the item's panel replaces the command's --models
    if item.models is not None and item.panel is None:
        opts.pop("panel", None)
    try:
        request = validated(GenerateRequest(question=item.question, item_id=item_id, **opts))
    except (ValueError, TypeError, UsageError) as exc:
        raise ItemError(str(exc), item_id) from None
    return request


class BatchItems:
    """The items of a JSONL batch file ('-' = stdin), decoded one line at a time while the
    batch consumes them. Iterating yields a request, or an :class:`ItemError` naming the
    line, for every non-blank line; ``total`` is the number of items when the input is a
    file (None for stdin: it is read once, as it comes). ``labels`` maps an item's place in
    the file to its ``label`` (filled as the items are read) for the batch's accuracy."""

    def __init__(self, path: str, decode: Callable[[bytes], _Item],
                 to_request: Callable[[Any], Any]) -> None:
        self.path = path
        self._decode = decode
        self._to_request = to_request
        self.labels: dict[int, str] = {}
        self._lines = iter_file_lines(path, "batch file")
        first = next(self._lines, None)  # a missing file fails here, before anything runs
        if first is None:
            raise UsageError(f"batch file {path!r} has no items")
        self._first: tuple[int, bytes] | None = first
        self.total = None if str(path) == "-" else count_items(path)

    def __iter__(self) -> Iterator[Any]:
        position = 0
        while True:
            numbered: tuple[int, bytes] | None
            if self._first is not None:
                numbered, self._first = self._first, None
            else:
                numbered = next(self._lines, None)
                if numbered is None:
                    return
            lineno, line = numbered
            try:
                item = self._decode(line)
                label = getattr(item, "label", None)
                if label is not None:
                    self.labels[position] = str(label)
                yield self._to_request(item)
            except ItemError as exc:
                yield ItemError(f"line {lineno}: {exc}", exc.item_id)
            position += 1


def scale_items(path: str, defaults: dict[str, Any]) -> BatchItems:
    """``scale --batch``: each line a :class:`ScaleItem`, built with the command's flags."""
    return BatchItems(path, lambda line: decode_item(line, ScaleItem),
                      lambda item: scale_from_item(item, defaults))


def generate_items(path: str, defaults: dict[str, Any]) -> BatchItems:
    """``generate --batch``: each line a :class:`GenerateItem`, with the command's options."""
    return BatchItems(path, lambda line: decode_item(line, GenerateItem),
                      lambda item: generate_from_item(item, defaults))


def scale_api_request(obj: Any, defaults: dict[str, Any]) -> ScaleRequest:
    """``scale_batch``'s item ``obj`` (a dict) as a ScaleRequest, or :class:`ItemError`."""
    return scale_from_item(convert_item(obj, ScaleItem), defaults)


def generate_api_request(obj: Any, defaults: dict[str, Any]) -> GenerateRequest:
    """``generate_batch``'s item ``obj`` as a GenerateRequest, or :class:`ItemError`."""
    return generate_from_item(convert_item(obj, GenerateApiItem), defaults)


__all__ = ["BatchItems", "GenerateApiItem", "GenerateItem", "ItemError", "ScaleItem",
           "convert_item", "decode_item", "generate_api_request", "generate_from_item",
           "describe", "generate_items", "scale_api_request", "scale_from_item", "scale_items"]
