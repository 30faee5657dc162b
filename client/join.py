"""`genofed site join`: start the site's SuperNode so that it runs only approved code.

The SuperNode (Flower's `--isolation subprocess`, its default) starts `flower-superexec`, which
starts `flwr-clientapp` for each message, both found on PATH. This puts a private folder first on
the SuperNode's PATH holding a `flwr-clientapp` that is `client.launcher` (Flower's own ClientApp
process, guarded by the site's approvals), and the approvals' location in the environment.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from client.identity import AUTH_KEY, IDENTITY
from client.launcher import APPROVALS, APPROVALS_ENV, read_approvals
from shared.errors import InputError
from shared.fsio import atomic_write

FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}


def launcher_bin(state: Path) -> Path:
    """The private folder whose `flwr-clientapp` is the guarded launcher (made here)."""
    folder = Path(state) / "bin"
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    script = folder / "flwr-clientapp"
    with atomic_write(script, perms=0o700) as fh:
        fh.write(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m client.launcher "$@"\n')
    return folder


def site_environment(state: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The SuperNode's environment: the guarded launcher first on PATH, the approvals named."""
    state = Path(state).resolve()
    approvals = state / APPROVALS
    doc = read_approvals(approvals)
    if not doc["installed"] and not doc["fabs"]:
        raise InputError(approvals, "no approved code: run `genofed site approve --installed` "
                                    "or `genofed site approve --fab FILE` first")
    env = dict(os.environ if base is None else base)
    env.update(FLOWER_ENV)
    env[APPROVALS_ENV] = str(approvals)
    python_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([str(launcher_bin(state)), python_bin, env.get("PATH", "")])
    return env


def supernode_argv(name: str, data: Path, state: Path, superlink: str,
                   root_certificates: str, port: int) -> list[str]:
    key = Path(state).resolve() / IDENTITY / AUTH_KEY
    if not key.exists():
        raise InputError(key, "no SuperNode key: run `genofed site keygen` first")
    node_config = (f'site-id="{name}" data-path="{Path(data).resolve()}" '
                   f'state-path="{Path(state).resolve()}"')
    return ["flower-supernode", "--superlink", superlink, "--root-certificates",
            root_certificates, "--auth-supernode-private-key", str(key), "--node-config",
            node_config, "--port", str(port)]


def join(*, name: str, data: Path, state: Path, superlink: str, root_certificates: str,
         port: int) -> int:
    env = site_environment(state)
    argv = supernode_argv(name, data, state, superlink, root_certificates, port)
    return subprocess.call(argv, env=env)
