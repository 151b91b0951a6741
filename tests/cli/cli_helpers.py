"""Helpers shared by the CLI tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from click.testing import Result

# `run(*args, input=...)`, the `run` fixture: one `odradek ...` invocation.
Run = Callable[..., Result]


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def one_line_error(result: Result) -> str:
    """The single `Error: ...` line a failed command printed; asserts exit code 1."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: "), result.stderr
    return lines[-1]
