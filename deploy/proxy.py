"""The SuperLink's public face: nginx passing only the Fleet API through.

Flower 1.42 serves the Fleet (`/v1/fleet/`), Control (`/v1/control/`) and Runtime
(`/v1/runtime/`) APIs on one `--host/--port`, and the open-source Control API has no login:
whoever reaches it can `flwr run` an app whose ClientApp runs at every site and whose ServerApp
runs beside the ledger. So the SuperLink listens on loopback only, and the address the sites
reach is nginx (a well-kept TLS reverse proxy, Debian's package or the official image), which
terminates TLS with the SuperLink's certificate, forwards `/v1/fleet/` to the SuperLink over TLS
(verifying it against the consortium CA) and answers everything else 403. The coordinator's
own `flwr` commands use the loopback address.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from shared.fsio import atomic_write

NGINX_IMAGE = "nginx:1.27-alpine"


def nginx_conf(*, listen: str, superlink: str, cert: str, key: str, ca: str,
               prefix: str) -> str:
    """A complete nginx.conf (no includes), runnable as any user: `nginx -p PREFIX -c FILE`.

    `listen` is the public HOST:PORT, `superlink` the SuperLink's loopback HOST:PORT; `prefix`
    a folder nginx may write its pid, logs and buffers to.
    """
    return f"""# genofed: only the Fleet API of the SuperLink is exposed (deploy/proxy.py).
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    client_max_body_size 512m;   # model updates and app bundles
    underscores_in_headers on;   # Flower's SuperNode authentication headers pass unchanged
    server_tokens off;
    server {{
        listen {listen} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        location /v1/fleet/ {{
            proxy_pass https://{superlink};
            proxy_http_version 1.1;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {ca};
            proxy_ssl_name localhost;
            proxy_ssl_server_name on;
            proxy_set_header Host $host;
            # Streamed both ways: no temporary files (a root-started nginx's workers could
            # not write them into a private folder), and no update waits on a buffer.
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_read_timeout 900s;
            proxy_send_timeout 900s;
        }}
        location / {{
            return 403;
        }}
    }}
}}
"""


def nginx_program() -> str | None:
    """The nginx binary on PATH or in Debian's sbin, or None."""
    return shutil.which("nginx") or next(
        (str(p) for p in (Path("/usr/sbin/nginx"),) if p.exists()), None)


def write_nginx_conf(folder: Path, **kwargs: str) -> Path:
    """`folder/nginx.conf` with its runtime folders made (buffers, logs, pid)."""
    folder = Path(folder)
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    conf = folder / "nginx.conf"
    with atomic_write(conf) as fh:
        fh.write(nginx_conf(prefix=str(folder.resolve()), **kwargs))
    return conf


def nginx_argv(conf: Path) -> list[str]:
    """Run nginx in the foreground on `conf` (so a process group can stop it)."""
    program = nginx_program()
    if program is None:
        raise FileNotFoundError("nginx is not installed (Debian: apt-get install nginx)")
    return [program, "-p", str(conf.parent.resolve()), "-c", str(conf.resolve()),
            "-g", "daemon off;"]
