"""The auditor's package: what a hospital's auditor runs, holding only the coordinator's public key.

`cli` is the `genofed audit` command group (verify, report, keygen); `report` turns the verified
ledger records into the report's data and writes its CSV and JSON; `plots` draws its SVG plots;
`page` renders the self-contained HTML page from ``templates/report.html.j2``.

`register` is re-exported so `shared.cli` can add the group by importing this package. Only the
CLI is imported here: the report's modules (and Jinja2) load when `genofed audit report` runs.
"""

from shared.audit.cli import register

__all__ = ["register"]
