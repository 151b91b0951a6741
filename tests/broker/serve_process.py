"""Start `odradek serve` as a real process and find its address."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path


class ServeProcess:
    def __init__(self, data_dir: Path, *overrides: str, config_file: Path | None = None) -> None:
        arguments = [sys.executable, "-m", "odradek.cli", "serve", "--port", "0"]
        arguments += ["--data-dir", str(data_dir)]
        if config_file is not None:
            arguments += ["--config", str(config_file)]
        for override in overrides:
            arguments += ["--override", override]
        self.process = subprocess.Popen(
            arguments,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.output: list[str] = []
        self.bootstrap = self._wait_for_address()

    def _wait_for_address(self, timeout: float = 20) -> str:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.output.append(line)
            match = re.search(r"bootstrap\.servers=(\S+)", line)
            if match:
                return match.group(1)
        self.process.kill()
        raise RuntimeError("broker did not start:\n" + "".join(self.output))

    def _collect(self) -> None:
        if self.process.stdout is not None:
            self.output.extend(self.process.stdout.readlines())
            self.process.stdout.close()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self._collect()

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=30)
        self._collect()
        return code
