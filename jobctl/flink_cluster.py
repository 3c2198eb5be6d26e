"""A real local Flink session cluster (one JobManager + one TaskManager JVM) from PyPI's pyflink.

``pip install 'jobctl[flink]'`` brings ``apache-flink-libraries`` whose ``pyflink/lib`` holds flink-dist and
friends, but no shell scripts: this module writes ``conf/config.yaml`` itself and launches the two JVMs the way
``bin/jobmanager.sh`` / ``bin/taskmanager.sh`` would (memory flags from BashJavaUtils, JDK 17 ``--add-opens``).

Everything is asyncio: JVMs are asyncio subprocesses, readiness is polled over REST with httpx, and the one
synchronous probe (``java -version``) runs in a thread.

    async with FlinkCluster(Path("/tmp/flink"), rest_port=18081, slots=4) as cluster:
        print(cluster.rest_url)

or from a shell (runs until Ctrl-C, then stops both JVMs)::

    python -m jobctl.flink_cluster --workdir /tmp/flink --port 18081 --slots 4
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

__all__ = [
    "FlinkCluster",
    "FlinkSetupError",
    "build_example_jar",
    "find_java",
    "flink_home",
    "free_port",
    "main",
]

MIN_JAVA = 17
LOCALHOST = "127.0.0.1"
EXAMPLE_JOB_DIR = Path(__file__).resolve().parent.parent / "examples" / "flink-job"
EXAMPLE_ENTRY_CLASS = "example.Job"

# What bin/config.sh puts into env.java.opts.all for JDK 17: Flink (Kryo, Pekko, the closure cleaner,
# the web submission's program classloading) reflects into these packages.
JDK17_FLAGS = [
    "--add-exports=java.base/sun.net.util=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports=jdk.compiler/com.sun.tools.javac.api=ALL-UNNAMED",
    "--add-exports=jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-exports=jdk.compiler/com.sun.tools.javac.parser=ALL-UNNAMED",
    "--add-exports=jdk.compiler/com.sun.tools.javac.tree=ALL-UNNAMED",
    "--add-exports=jdk.compiler/com.sun.tools.javac.util=ALL-UNNAMED",
    "--add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.net=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=java.base/java.text=ALL-UNNAMED",
    "--add-opens=java.base/java.time=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED",
]

JM_MAIN = "org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint"
TM_MAIN = "org.apache.flink.runtime.taskexecutor.TaskManagerRunner"
BASH_JAVA_UTILS = "org.apache.flink.runtime.util.bash.BashJavaUtils"
EXEC_RESULT = "BASH_JAVA_UTILS_EXEC_RESULT:"

# Flink's own conf/log4j.properties, trimmed: one file per JVM, rolled over on every start.
LOG4J_PROPERTIES = """\
monitorInterval = 30
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = MainAppender
logger.pekko.name = org.apache.pekko
logger.pekko.level = INFO
logger.kafka.name = org.apache.kafka
logger.kafka.level = INFO
logger.hadoop.name = org.apache.hadoop
logger.hadoop.level = WARN
logger.zookeeper.name = org.apache.zookeeper
logger.zookeeper.level = INFO
logger.shaded_zookeeper.name = org.apache.flink.shaded.zookeeper3
logger.shaded_zookeeper.level = INFO
logger.netty.name = org.jboss.netty.channel.DefaultChannelPipeline
logger.netty.level = OFF
appender.main.name = MainAppender
appender.main.type = RollingFile
appender.main.append = true
appender.main.fileName = ${sys:log.file}
appender.main.filePattern = ${sys:log.file}.%i
appender.main.layout.type = PatternLayout
appender.main.layout.pattern = %d{yyyy-MM-dd HH:mm:ss,SSS} %-5p %-60c %x - %m%n
appender.main.policies.type = Policies
appender.main.policies.size.type = SizeBasedTriggeringPolicy
appender.main.policies.size.size = 100MB
appender.main.policies.startup.type = OnStartupTriggeringPolicy
appender.main.strategy.type = DefaultRolloverStrategy
appender.main.strategy.max = 5
"""


class FlinkSetupError(RuntimeError):
    """Flink cannot run here; the message says what is missing and what to do about it."""


def flink_home() -> Path:
    """The Flink distribution directory: ``$FLINK_HOME`` if set, else the installed ``pyflink`` package."""
    env_home = os.environ.get("FLINK_HOME")
    candidates: list[Path] = [Path(env_home)] if env_home else []
    if not candidates:
        spec = importlib.util.find_spec("pyflink")
        if spec is not None and spec.submodule_search_locations:
            candidates = [Path(p) for p in spec.submodule_search_locations]
    for home in candidates:
        if list((home / "lib").glob("flink-dist*.jar")):
            return home
    where = f"FLINK_HOME={env_home} has no lib/flink-dist*.jar" if env_home else "pyflink is not installed"
    raise FlinkSetupError(
        f"Flink distribution not found ({where}): pip install 'jobctl[flink]' "
        "(brings apache-flink-libraries==2.3.0), or point FLINK_HOME at an unpacked Flink 2.x"
    )


def _java_major(version_output: str) -> int | None:
    m = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major  # "1.8.0_392" is Java 8


def find_java() -> Path:
    """``$JAVA_HOME/bin/java`` or ``java`` on PATH, checked to be Java >= 17."""
    import subprocess  # the only blocking call here; async callers run find_java in a thread

    hint = "apt-get install -y openjdk-17-jdk-headless, or set JAVA_HOME to a JDK >= 17"
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        java = Path(java_home) / "bin" / "java"
        if not java.is_file():
            raise FlinkSetupError(f"Java {MIN_JAVA} not found: JAVA_HOME={java_home} has no bin/java; {hint}")
    else:
        which = shutil.which("java")
        if which is None:
            raise FlinkSetupError(f"Java {MIN_JAVA} not found on PATH: {hint}")
        java = Path(which)
    try:
        out = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise FlinkSetupError(f"Java {MIN_JAVA} not usable: {java} -version failed ({e}); {hint}") from e
    major = _java_major(out.stderr + out.stdout)
    if major is None or major < MIN_JAVA:
        raise FlinkSetupError(
            f"Java {MIN_JAVA} not found: {java} is {major or 'of unknown version'} "
            f"({(out.stderr or out.stdout).strip().splitlines()[:1]}); {hint}"
        )
    return java


def _jdk_tool(java: Path, tool: str) -> Path:
    """javac / jar next to the (symlink-resolved) java binary; a JRE-only install has no compiler."""
    for bindir in (java.parent, java.resolve().parent):
        if (bindir / tool).is_file():
            return bindir / tool
    which = shutil.which(tool)
    if which:
        return Path(which)
    raise FlinkSetupError(
        f"{tool} not found next to {java}: the example job is compiled from source and needs a full JDK "
        f"(apt-get install -y openjdk-{MIN_JAVA}-jdk-headless, or set JAVA_HOME to a JDK)"
    )


def free_port() -> int:
    """An ephemeral TCP port that is free right now on 127.0.0.1 (the usual small race applies)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((LOCALHOST, port)) == 0


def _classpath(home: Path) -> str:
    # As bin/config.sh's constructFlinkClassPath: every lib jar, flink-dist last.
    jars = sorted(str(p) for p in (home / "lib").glob("*.jar"))
    dist = [j for j in jars if Path(j).name.startswith("flink-dist")]
    return os.pathsep.join([j for j in jars if j not in dist] + dist)


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"a.b.c": 1}`` -> ``{"a": {"b": {"c": 1}}}`` (Flink 2.x config.yaml). A key that would be both a
    leaf and a prefix of another key stays flat at the top level, which Flink's YAML reader also accepts."""
    nested: dict[str, Any] = {}
    flat_left: dict[str, Any] = {}
    leaves = set(flat)
    for key in sorted(flat):
        parts = key.split(".")
        if any(".".join(parts[:i]) in leaves for i in range(1, len(parts))):
            flat_left[key] = flat[key]
            continue
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = flat[key]
    nested.update(flat_left)
    return nested


def _tail(path: Path, lines: int = 40) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no {path.name})"


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Linux: the JVM gets SIGTERM if the Python process that started it dies (no orphaned clusters)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class FlinkCluster:
    """A Flink 2.x session cluster on 127.0.0.1, with all its state, config and logs under ``workdir``.

    ``extra_config`` takes flat Flink keys (``{"jobmanager.rpc.port": 6123}``) and overrides the defaults.
    Every port but the REST port is ephemeral by default, so several clusters can run side by side. The
    JobManager RPC port must be known to the TaskManager, so a free one is picked on each start unless given.
    """

    def __init__(
        self,
        workdir: Path,
        rest_port: int = 8081,
        slots: int = 4,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.rest_port = rest_port
        self.slots = slots
        self.extra_config = dict(extra_config or {})
        self.rest_url = f"http://{LOCALHOST}:{rest_port}"
        self.conf_dir = self.workdir / "conf"
        self.log_dir = self.workdir / "log"
        self.tmp_dir = self.workdir / "tmp"
        self.checkpoint_dir = self.workdir / "checkpoints"
        self.savepoint_dir = self.workdir / "savepoints"
        self.upload_dir = self.workdir / "web-upload"
        self.jm_log = self.log_dir / "jobmanager.log"
        self.tm_log = self.log_dir / "taskmanager.log"
        self.startup_seconds: float | None = None
        self._procs: dict[str, asyncio.subprocess.Process] = {}

    # -- public ---------------------------------------------------------------------------------------

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs.values() if p.returncode is None]

    @property
    def running(self) -> bool:
        return bool(self._procs) and all(p.returncode is None for p in self._procs.values())

    def config(self) -> dict[str, Any]:
        """The flat Flink configuration this cluster is started with (defaults + extra_config)."""
        conf: dict[str, Any] = {
            # Localhost only, every port but REST (and JM RPC, see class doc) ephemeral.
            "jobmanager.rpc.address": LOCALHOST,
            "jobmanager.bind-host": LOCALHOST,
            "taskmanager.host": LOCALHOST,
            "taskmanager.bind-host": LOCALHOST,
            "rest.address": LOCALHOST,
            "rest.bind-address": LOCALHOST,
            "rest.port": self.rest_port,
            "blob.server.port": "0",
            "taskmanager.rpc.port": "0",
            "taskmanager.data.port": 0,
            "metrics.internal.query-service.port": "0",
            # Memory: fits a 2-core / few-GB box; streaming jobs on the heap state backend barely need
            # managed memory, so most of the TaskManager's share goes to task heap instead.
            "jobmanager.memory.process.size": "1024m",
            "taskmanager.memory.process.size": "1536m",
            "taskmanager.memory.managed.fraction": 0.1,
            "taskmanager.numberOfTaskSlots": self.slots,
            "parallelism.default": 1,
            # State and files, all under workdir.
            "execution.checkpointing.dir": self.checkpoint_dir.as_uri(),
            "execution.checkpointing.savepoint-dir": self.savepoint_dir.as_uri(),
            "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
            "io.tmp.dirs": str(self.tmp_dir),
            "web.tmpdir": str(self.tmp_dir),
            # REST job submission (/jars/upload, /jars/{id}/run); uploaded jars survive a restart.
            "web.submit.enable": True,
            "web.cancel.enable": True,
            "web.upload.dir": str(self.upload_dir),
            # Job metrics (numRestarts) are fetched lazily by REST calls; refresh them at most every second.
            "metrics.fetcher.update-interval": 1000,
            "high-availability.type": "NONE",
        }
        conf.update(self.extra_config)
        return conf

    async def start(self, timeout: float = 120) -> None:
        """Write the config, launch both JVMs and wait until ``/overview`` shows all slots registered."""
        if self._procs:
            if self.running:
                return
            await self.stop()
        began = time.monotonic()
        home = flink_home()
        java = await asyncio.to_thread(find_java)
        if _port_in_use(self.rest_port):
            raise FlinkSetupError(
                f"port {self.rest_port} on {LOCALHOST} is already in use (another Flink cluster?): "
                "pick another rest_port"
            )
        for d in (self.conf_dir, self.log_dir, self.tmp_dir, self.checkpoint_dir, self.savepoint_dir, self.upload_dir):
            d.mkdir(parents=True, exist_ok=True)
        conf = self.config()
        conf.setdefault("jobmanager.rpc.port", free_port())
        (self.conf_dir / "config.yaml").write_text(
            "# Written by jobctl.flink_cluster on every start; edits are overwritten.\n"
            + yaml.safe_dump(_nest(conf), sort_keys=True, default_flow_style=False)
        )
        (self.conf_dir / "log4j.properties").write_text(LOG4J_PROPERTIES)

        classpath = _classpath(home)
        try:
            for role, main_class, log in (
                ("jobmanager", JM_MAIN, self.jm_log),
                ("taskmanager", TM_MAIN, self.tm_log),
            ):
                jvm_args, dynamic = await self._resource_params(java, home, role)
                log4j = (self.conf_dir / "log4j.properties").as_uri()
                cmd = [
                    str(java),
                    *jvm_args,
                    *JDK17_FLAGS,
                    f"-Dlog.file={log}",
                    f"-Dlog4j.configuration={log4j}",
                    f"-Dlog4j.configurationFile={log4j}",
                    "-classpath",
                    classpath,
                    main_class,
                    "--configDir",
                    str(self.conf_dir),
                    *dynamic,
                ]
                out = (self.log_dir / f"{role}.out").open("ab")
                try:
                    self._procs[role] = await asyncio.create_subprocess_exec(
                        *cmd,
                        stdin=asyncio.subprocess.DEVNULL,
                        stdout=out,
                        stderr=asyncio.subprocess.STDOUT,
                        cwd=self.workdir,
                        start_new_session=True,  # Ctrl-C on our terminal goes to us; we stop the JVMs cleanly
                        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                    )
                finally:
                    out.close()
            await self._wait_ready(began + timeout)
        except BaseException as e:
            await self.stop()
            if isinstance(e, FlinkSetupError):
                raise
            if isinstance(e, TimeoutError | OSError):
                raise FlinkSetupError(f"Flink cluster did not start: {e!r}\n{self._log_tails()}") from e
            raise
        self.startup_seconds = time.monotonic() - began

    async def stop(self) -> None:
        """SIGTERM both JVMs (TaskManager first), SIGKILL whatever is left after ~15 s. Idempotent."""
        procs, self._procs = list(self._procs.items())[::-1], {}
        for _, proc in procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)

        async def reap(proc: asyncio.subprocess.Process) -> None:
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()

        await asyncio.gather(*(reap(p) for _, p in procs))

    async def __aenter__(self) -> FlinkCluster:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- internals ------------------------------------------------------------------------------------

    async def _resource_params(self, java: Path, home: Path, role: str) -> tuple[list[str], list[str]]:
        """BashJavaUtils derives -Xmx etc. and the matching ``-D`` dynamic properties from config.yaml."""
        command = "GET_JM_RESOURCE_PARAMS" if role == "jobmanager" else "GET_TM_RESOURCE_PARAMS"
        proc = await asyncio.create_subprocess_exec(
            str(java),
            "-classpath",
            os.pathsep.join([_classpath(home), str(home / "bin" / "bash-java-utils.jar")]),
            BASH_JAVA_UTILS,
            command,
            "--configDir",
            str(self.conf_dir),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
        )
        stdout, _ = await proc.communicate()
        text = stdout.decode(errors="replace")
        results = [line[len(EXEC_RESULT) :] for line in text.splitlines() if line.startswith(EXEC_RESULT)]
        if proc.returncode != 0 or len(results) < 2:
            raise FlinkSetupError(
                f"could not compute {role} memory settings (BashJavaUtils {command} exited {proc.returncode}); "
                f"check the memory keys in {self.conf_dir / 'config.yaml'}:\n{text[-3000:]}"
            )
        return results[-2].split(), results[-1].split()

    async def _wait_ready(self, deadline: float) -> None:
        last = "no answer yet"
        async with httpx.AsyncClient(base_url=self.rest_url, timeout=5) as client:
            while True:
                for role, proc in self._procs.items():
                    if proc.returncode is not None:
                        raise FlinkSetupError(
                            f"Flink {role} exited with code {proc.returncode} during start-up\n{self._log_tails()}"
                        )
                try:
                    r = await client.get("/overview")
                    if r.status_code == 200:
                        overview = r.json()
                        if overview.get("slots-total") == self.slots:
                            return
                        last = f"/overview: {overview}"
                    else:
                        last = f"/overview: HTTP {r.status_code}"
                except httpx.HTTPError as e:
                    last = repr(e)
                if time.monotonic() >= deadline:
                    raise FlinkSetupError(
                        f"Flink cluster at {self.rest_url} not ready (waiting for {self.slots} slots; "
                        f"last: {last})\n{self._log_tails()}"
                    )
                await asyncio.sleep(0.5)

    def _log_tails(self) -> str:
        parts = [f"--- tail of {self.jm_log} ---\n{_tail(self.jm_log)}"]
        for out in ("jobmanager.out", "taskmanager.out"):
            text = _tail(self.log_dir / out, 15)
            if text.strip() and not text.startswith("(no "):
                parts.append(f"--- tail of {self.log_dir / out} ---\n{text}")
        return "\n".join(parts)


async def build_example_jar(dest_dir: Path, source_dir: Path | None = None) -> Path:
    """Compile ``examples/flink-job`` against pyflink's lib/ and jar it into ``dest_dir``.

    The jar name carries a hash of the sources and the Flink/Java setup, so an unchanged job is not rebuilt;
    the jar is written to a temp name and renamed, so concurrent builds into one directory are safe.
    """
    src_root = Path(source_dir or EXAMPLE_JOB_DIR) / "src"
    sources = sorted(src_root.rglob("*.java"))
    if not sources:
        raise FlinkSetupError(f"no Java sources under {src_root}: the example job ships with the jobctl repo")
    home = flink_home()
    java = await asyncio.to_thread(find_java)
    javac, jar = _jdk_tool(java, "javac"), _jdk_tool(java, "jar")

    digest = hashlib.sha256()
    for src in sources:
        digest.update(str(src.relative_to(src_root)).encode() + b"\0" + src.read_bytes() + b"\0")
    digest.update(" ".join(sorted(p.name for p in (home / "lib").glob("*.jar"))).encode())
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / f"jobctl-example-job-{digest.hexdigest()[:12]}.jar"
    if target.is_file():
        return target

    with tempfile.TemporaryDirectory(prefix="jobctl-example-build-", dir=dest_dir) as tmp:
        classes = Path(tmp) / "classes"
        classes.mkdir()
        for cmd in (
            [
                str(javac),
                "--release",
                "11",
                "-nowarn",
                "-cp",
                str(home / "lib" / "*"),
                "-d",
                str(classes),
                *map(str, sources),
            ],
            [str(jar), "cfe", str(Path(tmp) / "job.jar"), EXAMPLE_ENTRY_CLASS, "-C", str(classes), "."],
        ):
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
            )
            out, _ = await proc.communicate()
            if proc.returncode != 0:
                raise FlinkSetupError(
                    f"building the example job failed: {Path(cmd[0]).name} exited {proc.returncode}\n"
                    + out.decode(errors="replace")[-4000:]
                )
        os.replace(Path(tmp) / "job.jar", target)
    return target


async def main(argv: list[str] | None = None) -> int:
    """``python -m jobctl.flink_cluster``: run a session cluster until Ctrl-C / SIGTERM, then stop it."""
    parser = argparse.ArgumentParser(prog="python -m jobctl.flink_cluster", description=main.__doc__)
    parser.add_argument("--workdir", type=Path, required=True, help="config, logs, checkpoints, savepoints")
    parser.add_argument("--port", type=int, default=8081, help="REST port on 127.0.0.1 (default 8081)")
    parser.add_argument("--slots", type=int, default=4, help="task slots of the one TaskManager (default 4)")
    parser.add_argument("--timeout", type=float, default=120, help="start-up timeout in seconds")
    parser.add_argument(
        "-D",
        dest="conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Flink config, e.g. -D jobmanager.rpc.port=6123 (repeatable)",
    )
    args = parser.parse_args(argv)
    extra = {}
    for item in args.conf:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"-D expects KEY=VALUE, got {item!r}")
        extra[key.strip()] = yaml.safe_load(value)

    cluster = FlinkCluster(args.workdir, rest_port=args.port, slots=args.slots, extra_config=extra)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await cluster.start(timeout=args.timeout)
    except FlinkSetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(
        f"Flink session cluster up in {cluster.startup_seconds:.1f}s: {cluster.rest_url} "
        f"({args.slots} slots, pids {cluster.pids}, logs in {cluster.log_dir}). Ctrl-C to stop.",
        flush=True,
    )
    try:
        waits = [asyncio.ensure_future(stop.wait())]
        waits += [asyncio.ensure_future(p.wait()) for p in cluster._procs.values()]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        died = not stop.is_set()
        if died:
            print(f"error: a Flink JVM exited on its own\n{cluster._log_tails()}", file=sys.stderr)
    finally:
        print("stopping Flink ...", flush=True)
        await cluster.stop()
    return 1 if died else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
