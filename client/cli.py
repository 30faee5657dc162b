"""`genofed site ...`: what a hospital's data steward runs beside its data."""

from __future__ import annotations

import argparse
from pathlib import Path

from shared.errors import InputError

_FILES = ("vcf", "cohort", "panel", "reference")


def _site_files(args: argparse.Namespace) -> dict[str, Path]:
    """The four files to check: the data folder's, overridden by any explicit flag."""
    explicit = {name: getattr(args, name) for name in _FILES}
    files: dict[str, Path] = {}
    if args.data is not None:
        from client.data import SitePaths

        paths = SitePaths.in_folder(args.data)
        files = {name: getattr(paths, name) for name in _FILES}
    files.update({name: Path(value) for name, value in explicit.items() if value is not None})
    missing = [name for name in _FILES if name not in files]
    if missing:
        flags = ", ".join(f"--{name}" for name in missing)
        raise InputError(None, f"give --data DIR or all of --vcf, --cohort, --panel and "
                               f"--reference (missing: {flags})")
    return files


def _check(args: argparse.Namespace) -> int:
    from shared.fsio import write_json
    from shared.sitecheck import check_site, format_report

    report = check_site(**_site_files(args))
    for line in format_report(report):
        print(line)
    if args.json:
        write_json(args.json, report.to_dict())
        print(f"wrote the summary and findings to {args.json}")
    return 0 if report.ok else 1


def _predict(args: argparse.Namespace) -> int:
    from client.predict import predict_site

    n = predict_site(checkpoint=Path(args.model), data=Path(args.data), out=Path(args.out))
    print(f"wrote {n} risk scores to {args.out}")
    return 0


def register(groups: argparse._SubParsersAction) -> None:
    parser = groups.add_parser("site", help="a hospital's node: check data, score patients")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    check = sub.add_parser(
        "check",
        help="validate a site's data before joining a federation",
        description="Check a site's VCF/BCF (+ index), cohort table, panel and reference FASTA. "
        "Prints a summary and one line per problem; exits 0 when there is no error (warnings "
        "do not fail), 1 when there is one. Writes nothing except --json.",
    )
    check.add_argument("--data", help="site data folder (genotypes.vcf.gz or genotypes.bcf, "
                       "reference.fa, cohort.tsv, panel.tsv)")
    check.add_argument("--vcf", help="genotypes VCF/BCF (overrides the folder's)")
    check.add_argument("--cohort", help="cohort table (overrides the folder's)")
    check.add_argument("--panel", help="variant panel TSV (overrides the folder's)")
    check.add_argument("--reference", help="reference FASTA with .fai (overrides the folder's)")
    check.add_argument("--json", metavar="FILE", help="also write the summary and findings as "
                       "JSON")
    check.set_defaults(func=_check)

    predict = sub.add_parser("predict", help="score the site's people with a model checkpoint")
    predict.add_argument("--model", required=True, metavar="CHECKPOINT",
                         help="global model checkpoint from the coordinator")
    predict.add_argument("--data", required=True, help="site data folder")
    predict.add_argument("--out", required=True, metavar="FILE",
                         help="where to write sample_id, risk_probability (TSV)")
    predict.set_defaults(func=_predict)
