"""Loading a pydantic model from YAML (or JSON) text with errors a person can act on.

Boards and scenarios are written by hand, so a mistake is reported as
`file:line: field.path[2]: what is wrong (got value)`: the line comes from the YAML node of the
offending field (or its nearest parent), the path from pydantic's error location. Validators can
raise `FieldProblem` to point below the model they validate.
"""

from __future__ import annotations

from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from virsim import limits
from virsim.errors import InvalidInput, clip

M = TypeVar("M", bound=BaseModel)


class FieldProblem(ValueError):
    """A validator's error about a field below the validated model (loc relative to that model)."""

    def __init__(self, message: str, *loc: Any) -> None:
        super().__init__(message)
        self.loc = loc


def line_of(root: yaml.Node | None, path: tuple[Any, ...]) -> int | None:
    """1-based line of the YAML node at `path`, or of its nearest existing parent."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for key in path:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if getattr(k, "value", None) == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            nxt = node.value[key]
        else:
            nxt = None
        if nxt is None:
            break
        node = nxt
        line = node.start_mark.line + 1
    return line


def dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _value_at(data: Any, loc: tuple[Any, ...]) -> Any:
    for key in loc:
        try:
            data = data[key]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def load_model(text: str, source: str, model: type[M], error: type[InvalidInput], what: str) -> M:
    """Validate YAML/JSON `text` as `model`; raise `error` with file, line, field path and value."""
    try:
        root = limits.yaml_node(text, source, error=error)  # bounded before anything is built from it
        data = yaml.SafeLoader("").construct_document(root) if root is not None else None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise error(f"{source}:{line or '?'}: not valid YAML/JSON: {getattr(err, 'problem', err)}",
                    file=source, problems=[{"path": "", "line": line, "message": str(err)}]) from err
    if not isinstance(data, dict):
        raise error(f"{source}: {what}", file=source, problems=[{"path": "", "message": "expected a mapping"}])
    try:
        return model.model_validate(data)
    except ValidationError as err:
        problems = []
        # A misspelled key (extra field) explains a missing one: report it first.
        for e in sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden"):
            loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            loc += getattr((e.get("ctx") or {}).get("error"), "loc", ())
            value = clip(_value_at(data, loc), 120) if loc else None
            problems.append({"path": dotted(loc), "line": line_of(root, loc), "value": value,
                             "message": e["msg"].removeprefix("Value error, ")})
        first = problems[0]
        where = f"{source}:{first['line']}" if first["line"] else source
        shown = f" (got {first['value']!r})" if first["value"] is not None and not isinstance(
            first["value"], (dict, list)) else ""
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise error(f"{where}: {first['path']}: {first['message']}{shown}{more}",
                    file=source, problems=problems) from err
