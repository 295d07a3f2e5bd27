"""A real `mlflow server` (launch/mlflow_ui.sh) that a test can start, stop and start again."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from helpers import PROJECT_ROOT


class MlflowServer:
    def __init__(self, store: Path, port: int, log: Path, artifacts: Path | None = None) -> None:
        """artifacts: where the server keeps logged files (else launch/mlflow_ui.sh's default,
        mlartifacts/ in the project)."""
        self.store, self.port, self.log, self.artifacts = store, port, log, artifacts
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> None:
        env = {**os.environ, **({"ARTIFACTS": str(self.artifacts)} if self.artifacts else {})}
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                ["bash", "launch/mlflow_ui.sh", str(self.store), str(self.port)],
                cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env=env,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self.healthy():
            assert self.process.poll() is None, f"mlflow server exited:\n{self._log_tail()}"
            assert time.monotonic() < deadline, f"mlflow server not up:\n{self._log_tail()}"
            time.sleep(0.5)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        self.process = None

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def __enter__(self) -> MlflowServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
