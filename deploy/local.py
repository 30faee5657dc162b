"""`genofed deploy local`: a whole TLS federation with authenticated sites on this machine.

The same processes a consortium runs, on loopback: `flower-superlink` with TLS and
`--enable-supernode-auth`, its `flower-superexec` for the ServerApp, one `flower-supernode` per
site with its own data folder, state folder and key, runtime dependency installation and
telemetry off, a private `FLWR_HOME`. The keys go the way they go in a real consortium: each
site makes its own in `<state-path>/identity/` (`client.identity.keygen`, what `genofed site
keygen` does), the coordinator takes only the public halves (`deploy.init.add_site_keys`: the
site registry the ServerApp checks receipts against) and registers the SuperNode key with
`flwr supernode register`. The app is submitted with `flwr run`, its final status read back,
and every process we started is stopped by PID (process tree), whatever happens, Ctrl-C
included.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from client.identity import AUTH_PUB, IDENTITY, RECEIPT_PUB, keygen
from client.join import site_environment
from client.launcher import APPROVALS, approve
from deploy.federation import (
    PROJECT_ROOT,
    ProcessGroup,
    RunOutcome,
    flower_env,
    follow,
    free_port,
    program,
    submit,
    wait_for_port,
)
from deploy.init import SITE_KEYS, add_site_keys, init_deployment
from deploy.proxy import nginx_argv
from shared.errors import FederationError

PUBLIC = "127.0.0.2"  # where the loopback sites dial the coordinator (its proxy)


@dataclass
class LocalFederation:
    """A running loopback federation: its deployment description and its processes."""

    doc: dict
    root: Path
    env: dict[str, str]
    group: ProcessGroup

    def site_dir(self, name: str) -> Path:
        return self.root / self.doc["sites"][name]["dir"]

    def identity_dir(self, name: str) -> Path:
        """The site's own key folder: `<state-path>/identity` (on the site's machine)."""
        return Path(self.doc["sites"][name]["node_config"]["state-path"]) / IDENTITY

    def enroll(self, name: str) -> None:
        """Act as the site, then as the coordinator: the site makes its own keys (once: a
        site keeps them), the coordinator takes only their public halves (`add_site_keys`)."""
        folder = self.identity_dir(name)
        if not ((folder / AUTH_PUB).exists() and (folder / RECEIPT_PUB).exists()):
            keygen(folder, name)
        # force: this loopback federation plays every party, and a work folder reused from an
        # earlier run may remember a site's older keys; the new ones are the site's own.
        add_site_keys(self.root, name, folder / AUTH_PUB, folder / RECEIPT_PUB, force=True)
        self.doc = json.loads((self.root / "deployment.json").read_text())

    def register(self, name: str) -> None:
        """Register a site's public key with the SuperLink (the coordinator's decision)."""
        if not self.doc["sites"][name].get("keys"):
            self.enroll(name)
        pub = self.root / SITE_KEYS / name / AUTH_PUB
        cmd = [program("flwr"), "supernode", "register", str(pub), self.doc["connection"]]
        out = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise FederationError(f"registering {name} failed: {(out.stdout + out.stderr)[-300:]}")

    def approve(self, name: str, **approval: object) -> str:
        """Act as the site: approve the code it will run (`client.launcher.approve`)."""
        state = Path(self.doc["sites"][name]["node_config"]["state-path"])
        return approve(state, **approval)  # type: ignore[arg-type]

    def start_site(self, name: str, ca: Path | None = None) -> subprocess.Popen:
        """Start a site's SuperNode from its generated command line (own Runtime API port),
        as `genofed site join` does: its ClientApps run only code the site approved."""
        argv = list(self.doc["sites"][name]["argv"])
        argv[argv.index("--port") + 1] = str(free_port())
        if ca is not None:
            argv[argv.index("--root-certificates") + 1] = str(ca)
        argv[0] = program(argv[0])
        state = Path(self.doc["sites"][name]["node_config"]["state-path"])
        if not (state / APPROVALS).exists():
            approve(state, app=PROJECT_ROOT, note="loopback federation: the app it runs")
        env = site_environment(state, self.group.env)
        return self.group.start(f"supernode-{name}", argv, cwd=self.site_dir(name), env=env)

    def start_coordinator(self) -> subprocess.Popen:
        """Start the SuperExec that launches the ServerApp: at start-up, or after a crash, when
        the next run resumes from the signed ledger. The ledger signer (which alone holds the
        ledger key) starts first, once."""
        if "signer" not in self.group.names:
            argv = self.doc["coordinator"]["signer_argv"]
            signer = self.group.start("signer", [program(argv[0]), *argv[1:]], cwd=self.root)
            socket = Path(self.doc["coordinator"]["run_config"]["ledger-signer"])
            deadline = time.monotonic() + 60
            while not socket.exists():
                if signer.poll() is not None or time.monotonic() > deadline:
                    raise FederationError(f"the ledger signer did not start; see "
                                          f"{self.group.log_dir / 'signer.log'}")
                time.sleep(0.2)
        argv = self.doc["superlink"]["superexec_argv"]
        return self.group.start("superexec", [program(argv[0]), *argv[1:]], cwd=self.root)

    def submit(self, overrides: Mapping[str, object], app_dir: Path = PROJECT_ROOT) -> int:
        """Start a run of the app with the coordinator's run config and these overrides."""
        return submit(self.env, {**self.doc["coordinator"]["run_config"], **overrides}, app_dir)

    def run(self, overrides: Mapping[str, object], timeout: float = 3600.0,
            app_dir: Path = PROJECT_ROOT) -> RunOutcome:
        outcome = follow(self.env, self.submit(overrides, app_dir),
                         self.group.log_dir / "run.log", timeout)
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
    """Write a fresh deployment under `work` and start its SuperLink, its proxy and SuperExec.

    The sites dial the proxy on PUBLIC (another loopback address than the SuperLink's
    127.0.0.1), which passes only the Fleet API through: the Control API is reachable from the
    coordinator's own address only.
    """
    port, inner = free_port(), free_port()
    doc = init_deployment(
        work / "deployment", sites, host=PUBLIC, port=port, force=True, bind=PUBLIC,
        data_path=f"{data_root}/{{site}}", state_path=f"{work / 'site-state'}/{{site}}",
        superlink_port=inner,
    )
    root = Path(doc["root"])
    flwr_home = work / "flwr-home"
    flwr_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(root / doc["coordinator"]["flwr_config"], flwr_home / "config.toml")
    env = flower_env(flwr_home)
    group.env = env
    argv = doc["superlink"]["argv"]
    sl = group.start("superlink", [program(argv[0]), *argv[1:]], cwd=root)
    wait_for_port(inner, sl, 60, group.log_dir / "superlink.log")
    proxy = group.start("proxy", nginx_argv(root / doc["proxy"]["conf"]), cwd=root)
    wait_for_port(port, proxy, 30, group.log_dir / "proxy.log", host=PUBLIC)
    fed = LocalFederation(doc, root, env, group)
    for name in sites:
        # Every site sends its public keys before any run starts: the ServerApp reads the site
        # registry once, at the start of a run. Registering with the SuperLink stays the
        # caller's decision (`register`).
        fed.enroll(name)
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
