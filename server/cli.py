"""`genofed coordinator ...`: what the consortium's coordinator runs beside `flwr run`."""

from __future__ import annotations

import argparse
from pathlib import Path


def _status(args: argparse.Namespace) -> int:
    from server.status import format_status, run_status

    status = run_status(Path(args.out_dir), Path(args.key) if args.key else None)
    for line in format_status(status):
        print(line)
    return 0 if status.ledger_ok else 1


def _registry(args: argparse.Namespace) -> int:
    from shared.errors import InputError
    from shared.ledger import load_public_key
    from shared.receipts import SiteRegistry

    keys = {}
    for item in args.sites:
        name, _, path = item.partition("=")
        if not name or not path:
            raise InputError(None, f"{item!r}: give NAME=PATH of a site's receipt.pub")
        keys[name] = load_public_key(Path(path))
    registry = SiteRegistry(keys)
    registry.save(args.out)
    print(f"wrote {args.out}: {len(keys)} sites' public receipt keys "
          f"(sha256 {registry.sha256()[:16]})")
    return 0


def _ancestry(args: argparse.Namespace) -> int:
    from shared.ancestry import ancestry_path, fit_reference_files

    reference = fit_reference_files(
        args.panel, args.genotypes, args.populations, args.fasta, args.sample_col,
        args.population_col, args.components, args.max_spreads)
    out = Path(args.out) if args.out else ancestry_path(args.panel)
    reference.write(out)
    people = ", ".join(f"{p} {n}" for p, n in zip(reference.populations, reference.counts,
                                                   strict=True))
    print(f"wrote {out}: {reference.loadings.shape[1]} components, {people}")
    return 0


def _signer(args: argparse.Namespace) -> int:
    from server.signer import SignerCore, serve
    from shared.ledger import Ledger, load_private_key
    from shared.receipts import SiteRegistry

    core = SignerCore(Ledger(Path(args.ledger), load_private_key(Path(args.key))),
                      SiteRegistry.load(args.registry))
    server = serve(Path(args.socket), core)
    print(f"ledger signer: {args.ledger} (key {core.ledger.key_id}) on {args.socket}",
          flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def register(groups: argparse._SubParsersAction) -> None:
    parser = groups.add_parser("coordinator", help="the aggregation server's run and model")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    status = sub.add_parser(
        "status",
        help="rounds done, ledger verified, per-ancestry AUROC, ε per site, the verified model",
        description="Verify a run's ledger and name the model checkpoint whose weights the "
        "ledger signed last. Exits 1 if the ledger does not verify.",
    )
    status.add_argument("out_dir", metavar="OUT_DIR", help="the run's out-dir")
    status.add_argument("--key", help="ledger public key (default OUT_DIR/keys/ledger.pub)")
    status.set_defaults(func=_status)

    registry = sub.add_parser(
        "registry",
        help="the site registry: each site's name and public receipt key",
        description="Write the site registry the ServerApp checks every reply's receipt "
        "against (run config site-registry). Each site makes its own keys (genofed site "
        "keygen) and sends only receipt.pub; a reply counts only if the site it names signed "
        "it. Give the registry to auditors too (genofed audit verify --sites).",
    )
    registry.add_argument("--out", required=True, type=Path, help="registry file to write")
    registry.add_argument("sites", nargs="+", metavar="NAME=RECEIPT_PUB")
    registry.set_defaults(func=_registry)

    ancestry = sub.add_parser(
        "ancestry-reference",
        help="the panel's public ancestry reference (PCA on public genotypes, e.g. 1000 Genomes)",
        description="Fit the PCA loadings and population centroids sites project their people "
        "onto (genetic ancestry labels where a cohort table declares none, and the agreement "
        "`site check` shows). Ship the file beside panel.tsv to every site. Public genotypes "
        "only: never a site's people.",
    )
    ancestry.add_argument("--panel", required=True, type=Path, help="the variant panel")
    ancestry.add_argument("--genotypes", required=True, type=Path,
                          help="public reference genotypes (VCF/BCF with index, or PLINK)")
    ancestry.add_argument("--populations", required=True, type=Path,
                          help="table of each reference person's population")
    ancestry.add_argument("--fasta", type=Path, help="reference FASTA (harmonizes indels)")
    ancestry.add_argument("--sample-col", default="sample", help="its sample column")
    ancestry.add_argument("--population-col", default="pop", help="its population column")
    ancestry.add_argument("--components", type=int, default=4, help="principal components")
    ancestry.add_argument("--max-spreads", type=float, default=3.0,
                          help="farther than this many spreads from every centroid: unassigned")
    ancestry.add_argument("--out", type=Path, help="default: panel.ancestry.json beside --panel")
    ancestry.set_defaults(func=_ancestry)

    signer = sub.add_parser(
        "signer",
        help="hold the ledger key and sign only rounds the sites' receipts back",
        description="The only process that holds the ledger key. The ServerApp (code submitted "
        "with flwr run) asks it to sign each record over a Unix socket (run config "
        "ledger-signer); it signs a round only if every site's receipt verifies against the "
        "registry and the round follows its run's previous one.",
    )
    signer.add_argument("--key", required=True, help="the ledger's private key")
    signer.add_argument("--ledger", required=True, help="the ledger file (ledger.jsonl)")
    signer.add_argument("--registry", required=True, help="the site registry")
    signer.add_argument("--socket", required=True, help="the Unix socket to listen on")
    signer.set_defaults(func=_signer)
