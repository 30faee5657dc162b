"""Running the genofed Flower app through real Flower processes, and failing loudly.

`flwr run` exits 0 even when the run failed, and `flwr run . local` leaves a detached SuperLink
that another checkout may later reuse. So we start our own SuperLink on free loopback ports with
a project-private `FLWR_HOME`, submit the app with `flwr run`, follow its logs, read the run's
final status back with `flwr ls`, and stop every process we started, by process group, whatever
happens (including Ctrl-C).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil
import tomli_w

from shared.errors import FederationError
from shared.fsio import atomic_write, write_json

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONNECTION = "genofed"


def flower_env(flwr_home: Path) -> dict[str, str]:
    """Environment for every Flower process: private home, no telemetry, no runtime installs."""
    env = os.environ.copy()
    env.update({
        "FLWR_HOME": str(flwr_home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_DEDUP_LOGS": "0",
        "PYTHONUNBUFFERED": "1",
    })
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def program(name: str) -> str:
    """A Flower program (`flwr`, `flower-superlink`, ...) from this interpreter's environment,
    never one that happens to come first on PATH (another checkout's, another version)."""
    return str(Path(sys.executable).parent / name)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """All live descendants of `pid`, children first found first.

    Flower's SuperLink starts its SuperExec in a new session, which starts the ServerApp or the
    simulation, which starts Ray: a process group does not hold them all, their parentage does.
    """
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:  # gone already, or not ours to see
        return []


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal a process, its process group and every descendant."""
    targets = [pid, *descendants(pid)]
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    for p in targets:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, sig)


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float, log: Path,
                  host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise FederationError(f"{proc.args[0]} exited with code {proc.returncode}; see {log}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), 0.5):
            return
        time.sleep(0.2)
    raise FederationError(f"{proc.args[0]} did not listen on port {port} in {timeout:.0f} s")


class ProcessGroup:
    """Processes started in their own sessions, stopped together by PID (group) on exit."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen] = []
        self.names: set[str] = set()

    def start(self, name: str, cmd: list[str], cwd: Path | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            cmd, env=env or self.env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
            start_new_session=True,
        )
        log.close()
        self.procs.append(proc)
        self.names.add(name)
        self._write_pids(name, proc.pid)
        return proc

    def _write_pids(self, name: str, pid: int) -> None:
        """`pids.json` beside the logs: what to stop by hand if this supervisor itself dies."""
        path = self.log_dir / "pids.json"
        pids = json.loads(path.read_text()) if path.exists() else {}
        pids[name] = pid
        write_json(path, pids)

    def stop(self, proc: subprocess.Popen, grace: float = 10.0) -> None:
        """SIGTERM (Flower shuts its children down on it), then SIGKILL whatever is left of the
        process, its group and all its descendants, found before the leader exits."""
        tree = descendants(proc.pid)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(grace)
        kill_tree(proc.pid)
        for pid in tree:
            kill_tree(pid)
        proc.wait()

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)
        self.procs.clear()

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def run_config_arg(overrides: Mapping[str, object]) -> str:
    return " ".join(f"{k}={toml_value(v)}" for k, v in overrides.items())


@dataclass
class RunOutcome:
    run_id: int
    status: str
    sub_status: str
    details: str

    @property
    def ok(self) -> bool:
        return self.status == "finished" and self.sub_status == "completed"


def connection_toml(address: str, root_certificates: Path | None = None) -> str:
    """The `[superlink.genofed]` connection of a `$FLWR_HOME/config.toml`, made the default.

    TLS with this CA when given (flwr requires an absolute path), plaintext otherwise (the
    loopback simulation).
    """
    connection: dict[str, object] = {"address": address}
    if root_certificates:
        connection["root-certificates"] = str(Path(root_certificates).resolve())
    else:
        connection["insecure"] = True
    return tomli_w.dumps({"superlink": {"default": CONNECTION, CONNECTION: connection}})


def write_connection(flwr_home: Path, address: str, root_certificates: Path | None = None) -> None:
    """`connection_toml` as `$FLWR_HOME/config.toml`."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    with atomic_write(flwr_home / "config.toml") as fh:
        fh.write(connection_toml(address, root_certificates))


def submit(
    env: dict[str, str], overrides: Mapping[str, object], app_dir: Path = PROJECT_ROOT,
    federation: Mapping[str, object] | None = None,
) -> int:
    """`flwr run` the app; its run id."""
    flwr = program("flwr")
    cmd = [flwr, "run", str(app_dir), CONNECTION, "--format", "json"]
    if overrides:
        cmd += ["--run-config", run_config_arg(overrides)]
    if federation:
        cmd += ["--federation-config", run_config_arg(federation)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    try:
        return int(json.loads(out.stdout)["run-id"])
    except (ValueError, KeyError, TypeError) as err:
        raise FederationError(
            f"flwr run did not start the app: {(out.stdout + out.stderr).strip()[-500:]}"
        ) from err


STATUS_POLL_S = 20.0
STATUS_FALLBACK_S = 5.0


def follow(env: dict[str, str], run_id: int, log_path: Path, timeout: float) -> RunOutcome:
    """Stream a run's logs into `log_path` until Flower says it finished; its final status.

    The SuperLink ends `flwr log --stream` when the run finishes, so the stream's exit is the
    signal; the status is read only then and every `STATUS_POLL_S` meanwhile (for a stream that
    died early). Each `flwr ls` is a fresh Python process costing ~1 CPU-second: polling it every
    second took about half of one of this machine's two cores away from the sites.
    """
    flwr = program("flwr")
    deadline = time.monotonic() + timeout
    with open(log_path, "ab") as log:
        streamer = subprocess.Popen([flwr, "log", str(run_id), CONNECTION, "--stream"], env=env,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while True:
                wait = max(0.0, min(STATUS_POLL_S, deadline - time.monotonic()))
                with contextlib.suppress(subprocess.TimeoutExpired):
                    streamer.wait(timeout=wait)
                outcome = run_status(env, run_id)
                if outcome.status == "finished":
                    return outcome
                if time.monotonic() >= deadline:
                    raise FederationError(f"run {run_id} still {outcome.status} after {timeout} s")
                if streamer.poll() is not None:  # stream gone early: status every few seconds
                    time.sleep(min(STATUS_FALLBACK_S, max(0.0, deadline - time.monotonic())))
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(streamer.pid, signal.SIGTERM)
            streamer.wait()


def submit_and_follow(
    env: dict[str, str], overrides: Mapping[str, object], log_path: Path,
    timeout: float = 3600.0, app_dir: Path = PROJECT_ROOT,
    federation: Mapping[str, object] | None = None,
) -> RunOutcome:
    """`flwr run` the app, stream its logs into `log_path`, then read its final status."""
    return follow(env, submit(env, overrides, app_dir, federation), log_path, timeout)


def stop_run(env: dict[str, str], run_id: int) -> None:
    """`flwr stop` a run, e.g. one whose ServerApp died: SuperNodes then drop its messages at
    once instead of waiting for the SuperLink to miss the dead ServerApp's heartbeats."""
    flwr = program("flwr")
    out = subprocess.run([flwr, "stop", str(run_id), CONNECTION], env=env, capture_output=True,
                         text=True, timeout=60)
    if out.returncode != 0:
        raise FederationError(f"flwr stop {run_id} failed: {(out.stdout + out.stderr)[-300:]}")


def run_status(env: dict[str, str], run_id: int) -> RunOutcome:
    flwr = program("flwr")
    out = subprocess.run([flwr, "ls", CONNECTION, "--run-id", str(run_id), "--format", "json"],
                         env=env, capture_output=True, text=True, timeout=60)
    try:
        runs = json.loads(out.stdout)["runs"]
        run = next(r for r in runs if int(r["run-id"]) == run_id)
    except (ValueError, KeyError, StopIteration) as err:
        raise FederationError(f"cannot read run {run_id}'s status: {out.stdout[-300:]}") from err
    status = str(run.get("status", ""))
    main, _, sub = status.partition(":")
    return RunOutcome(run_id, main, sub, str(run.get("details", "")))


@contextlib.contextmanager
def simulation_superlink(flwr_home: Path, log_dir: Path) -> Iterator[dict[str, str]]:
    """A private SuperLink in simulation mode; yields the env for `flwr` commands against it."""
    env = flower_env(flwr_home)
    port = free_port()
    write_connection(flwr_home, f"127.0.0.1:{port}")
    with ProcessGroup(env, log_dir) as group:
        proc = group.start("superlink", [
            "flower-superlink", "--insecure", "--simulation", "--isolation", "subprocess",
            "--host", "127.0.0.1", "--port", str(port),
            "--disable-runtime-dependency-installation",
        ], cwd=PROJECT_ROOT)
        wait_for_port(port, proc, 60, log_dir / "superlink.log")
        yield env


def run_simulation(
    overrides: Mapping[str, object], num_sites: int, work_dir: Path, timeout: float = 3600.0,
    cpus_per_site: int = 1,
) -> RunOutcome:
    """Run the app once in Flower's simulation engine; raise FederationError unless completed.

    One CPU per simulated site lets two sites train at once on a 2-core machine.
    """
    log_dir = work_dir / "logs"
    federation = {"num-supernodes": num_sites,
                  "client-resources-num-cpus": cpus_per_site}
    with simulation_superlink(work_dir / "flwr-home", log_dir) as env:
        outcome = submit_and_follow(env, overrides, log_dir / "run.log", timeout,
                                    federation=federation)
    if not outcome.ok:
        raise FederationError(
            f"federated run {outcome.run_id} ended {outcome.status}:{outcome.sub_status}"
            f"{' (' + outcome.details + ')' if outcome.details else ''}; logs in {log_dir}"
        )
    return outcome
