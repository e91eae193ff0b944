"""The one configuration loader: a YAML file validated by a pydantic model.

Every error names the file, the line, the field and what to do about it, because the person
reading it is an installer on a doorstep, not the author of the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(Exception):
    """A configuration file that cannot be used; the message says where and what to do."""


def _locate(node: yaml.Node | None, loc: tuple[int | str, ...]) -> tuple[str, int | None]:
    """The field path as the user wrote it, and the 1-based line of its YAML node (or of its
    nearest existing parent). Union tags that pydantic inserts into `loc` are left out."""
    line = node.start_mark.line + 1 if node is not None else None
    parts: list[str] = []
    for i, key in enumerate(loc):
        child = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if getattr(k, "value", None) == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            child = node.value[key]
        if child is None:
            if i < len(loc) - 1 and isinstance(key, str):
                continue  # a discriminator tag such as `modbus`, not a key of the file
            parts.append(str(key))
            node = None
            continue
        parts.append(str(key))
        node = child
        line = node.start_mark.line + 1
    return ".".join(parts) or "(top level)", line


def _hint(error_type: str) -> str:
    if error_type == "missing":
        return "add this field"
    if error_type == "extra_forbidden":
        return "remove it or check its spelling"
    if error_type.endswith("_parsing") or error_type.endswith("_type"):
        return "give a value of the expected type"
    return "correct the value"


def parse_config(text: str, model: type[M], source: str) -> M:
    """Validate YAML `text` (from `source`, a file name for messages) against `model`."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML ({problem}); fix the syntax there") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}:1: the file must hold a mapping of settings, not {type(data).__name__}"
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field, line = _locate(node, tuple(err["loc"]))
            where = f"{source}:{line}" if line else source
            lines.append(f"{where}: {field}: {err['msg']} — {_hint(err['type'])}")
        raise ConfigError("\n".join(lines)) from None


def load_config(path: Path, model: type[M]) -> M:
    """Read and validate the YAML file at `path`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; check the path given with --config") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc})") from None
    return parse_config(text, model, str(path))
