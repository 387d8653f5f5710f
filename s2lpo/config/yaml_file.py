"""A YAML file of ours (a sweep grid, an analysis spec) read as a mapping, or one error that names the file, where
YAML stops parsing (line and column) and what the file should be: never a PyYAML traceback."""

from __future__ import annotations

from pathlib import Path

import yaml


def not_a_mapping(path: Path, what: str, value, shape: str) -> str | None:
    """The error for ``what`` (a key of ``path``, or "the file") when ``value`` is no mapping, else None."""
    if isinstance(value, dict):
        return None
    return (f"{path}: {what} must be a mapping (key: value lines), not {type(value).__name__} {str(value)[:60]!r}; "
            f"{shape}")


def load_mapping(path: Path, error: type[Exception], shape: str) -> dict:
    """``path``'s YAML (an empty file: {}), raising ``error`` when it cannot be read, is not YAML or is no mapping;
    ``shape`` says what the file should hold (the fix)."""
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        if (ctx := getattr(e, "context", None)) and (cm := getattr(e, "context_mark", None)) is not None:
            problem += f" ({ctx} at line {cm.line + 1}, column {cm.column + 1})"
        raise error(f"{path} is not valid YAML{where}: {problem}; fix the file ({shape})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{path} cannot be read: {e}") from None
    if (msg := not_a_mapping(path, "the file", spec, shape)) is not None:
        raise error(msg)
    return spec
