"""`genofed deploy local`: a whole TLS federation with authenticated sites on this machine.

The same processes a consortium runs, on loopback: `flower-superlink` with TLS and
`--enable-supernode-auth`, its `flower-superexec` for the ServerApp, every site's key registered
with `flwr supernode register`, one `flower-supernode` per site with its own key, data folder and
state folder, runtime dependency installation and telemetry off, a private `FLWR_HOME`. The app
is submitted with `flwr run`, its final status read back, and every process we started is
stopped by PID (process tree), whatever happens, Ctrl-C included.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from deploy.federation import (
    ProcessGroup,
    RunOutcome,
    flower_env,
    follow,
    free_port,
    program,
    submit,
    wait_for_port,
)
from deploy.init import init_deployment
from shared.errors import FederationError


@dataclass
class LocalFederation:
    """A running loopback federation: its deployment description and its processes."""

    doc: dict
    root: Path
    env: dict[str, str]
    group: ProcessGroup

    def site_dir(self, name: str) -> Path:
        return self.root / self.doc["sites"][name]["dir"]

    def register(self, name: str) -> None:
        """Register a site's public key with the SuperLink (the coordinator's decision)."""
        cmd = [program("flwr"), "supernode", "register", str(self.site_dir(name) / "auth.pub"),
               self.doc["connection"]]
        out = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise FederationError(f"registering {name} failed: {(out.stdout + out.stderr)[-300:]}")

    def start_site(self, name: str, ca: Path | None = None) -> subprocess.Popen:
        """Start a site's SuperNode from its generated command line (own Runtime API port)."""
        argv = list(self.doc["sites"][name]["argv"])
        argv[argv.index("--port") + 1] = str(free_port())
        if ca is not None:
            argv[argv.index("--root-certificates") + 1] = str(ca)
        argv[0] = program(argv[0])
        return self.group.start(f"supernode-{name}", argv, cwd=self.site_dir(name))

    def start_coordinator(self) -> subprocess.Popen:
        """Start the SuperExec that launches the ServerApp: at start-up, or after a crash, when
        the next run resumes from the signed ledger."""
        argv = self.doc["superlink"]["superexec_argv"]
        return self.group.start("superexec", [program(argv[0]), *argv[1:]], cwd=self.root)

    def submit(self, overrides: Mapping[str, object]) -> int:
        """Start a run of the app with the coordinator's run config and these overrides."""
        return submit(self.env, {**self.doc["coordinator"]["run_config"], **overrides})

    def run(self, overrides: Mapping[str, object], timeout: float = 3600.0) -> RunOutcome:
        outcome = follow(self.env, self.submit(overrides), self.group.log_dir / "run.log",
                         timeout)
        if not outcome.ok:
            raise FederationError(
                f"federated run {outcome.run_id} ended {outcome.status}:{outcome.sub_status}"
                f"{' (' + outcome.details + ')' if outcome.details else ''}; "
                f"logs in {self.group.log_dir}"
            )
        return outcome


def start_local(
    work: Path, sites: list[str], data_root: Path, group: ProcessGroup
) -> LocalFederation:
    """Write a fresh deployment under `work` and start its SuperLink and SuperExec."""
    port = free_port()
    doc = init_deployment(
        work / "deployment", sites, host="localhost", port=port, force=True, bind="127.0.0.1",
        data_path=f"{data_root}/{{site}}", state_path=f"{work / 'site-state'}/{{site}}",
    )
    root = Path(doc["root"])
    flwr_home = work / "flwr-home"
    flwr_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(root / doc["coordinator"]["flwr_config"], flwr_home / "config.toml")
    env = flower_env(flwr_home)
    group.env = env
    argv = doc["superlink"]["argv"]
    sl = group.start("superlink", [program(argv[0]), *argv[1:]], cwd=root)
    wait_for_port(port, sl, 60, group.log_dir / "superlink.log")
    fed = LocalFederation(doc, root, env, group)
    fed.start_coordinator()
    return fed


def run_local(
    work: Path, data_root: Path, sites: list[str], overrides: Mapping[str, object],
    timeout: float = 3600.0,
) -> RunOutcome:
    """Stand the federation up, register and start every site, run the app, tear down."""
    work = work.resolve()
    with ProcessGroup(flower_env(work / "flwr-home"), work / "logs") as group:
        fed = start_local(work, sites, data_root.resolve(), group)
        for name in sites:
            fed.register(name)
            fed.start_site(name)
        return fed.run(overrides, timeout)
