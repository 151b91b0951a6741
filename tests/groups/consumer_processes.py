"""Start group_consumer.py subprocesses and read what they wrote."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).with_name("group_consumer.py")
Key = tuple[int, int]


@dataclass
class ConsumerProcess:
    process: subprocess.Popen[bytes]
    output: Path

    @classmethod
    def start(cls, output: Path, *arguments: str) -> ConsumerProcess:
        output.touch()
        process = subprocess.Popen(
            [sys.executable, str(SCRIPT), *arguments[:3], str(output), *arguments[3:]],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return cls(process, output)

    def lines(self) -> list[str]:
        return self.output.read_text().splitlines()

    def processed(self) -> list[Key]:
        return [_key(line) for line in self.lines() if line.startswith("P ")]

    def assigned(self) -> list[int] | None:
        found = [line for line in self.lines() if line.startswith("ASSIGNED")]
        if not found:
            return None
        parts = found[-1].split(" ", 1)
        return [int(p) for p in parts[1].split(",")] if len(parts) > 1 and parts[1] else []

    def uncommitted_window(self) -> set[Key]:
        """Records processed after the last successful commit."""
        window: set[Key] = set()
        for line in self.lines():
            if line.startswith("P "):
                window.add(_key(line))
            elif line == "COMMITTED":
                window = set()
        return window

    def failed_windows(self) -> set[Key]:
        """Records whose commit failed (they may legitimately be processed again)."""
        failed: set[Key] = set()
        pending: set[Key] = set()
        for line in self.lines():
            if line.startswith("P "):
                pending.add(_key(line))
            elif line == "COMMITTED":
                pending = set()
            elif line == "FAILED":
                failed |= pending
                pending = set()
        return failed

    def committed_unprocessed(self) -> set[Key]:
        return {_key(line) for line in self.lines() if line.startswith("W ")}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def _key(line: str) -> Key:
    _, partition, offset = line.split()
    return int(partition), int(offset)


def wait_until(condition: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting until {message}")
