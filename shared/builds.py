"""Genome builds: which one a panel is on (declared) and which one a site's reference is (detected).

A panel states its build in a header line, as PGS Catalog scoring files do
(`#genome_build=GRCh38`). A site's build is read from its reference FASTA's contig lengths (the
.fai): each primary assembly's chromosomes have their own lengths. A mismatch is one clear line
naming both builds, before any variant is misread; a reference that matches no known build (a
partial or simulated one) is left to the REF checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from shared.errors import InputError

ALIASES = {"grch37": "GRCh37", "hg19": "GRCh37", "b37": "GRCh37", "grch38": "GRCh38",
           "hg38": "GRCh38"}

# Primary-assembly chromosome lengths (Genome Reference Consortium).
LENGTHS: dict[str, dict[str, int]] = {
    "GRCh37": {
        "1": 249250621, "2": 243199373, "3": 198022430, "4": 191154276, "5": 180915260,
        "6": 171115067, "7": 159138663, "8": 146364022, "9": 141213431, "10": 135534747,
        "11": 135006516, "12": 133851895, "13": 115169878, "14": 107349540, "15": 102531392,
        "16": 90354753, "17": 81195210, "18": 78077248, "19": 59128983, "20": 63025520,
        "21": 48129895, "22": 51304566, "X": 155270560, "Y": 59373566,
    },
    "GRCh38": {
        "1": 248956422, "2": 242193529, "3": 198295559, "4": 190214555, "5": 181538259,
        "6": 170805979, "7": 159345973, "8": 145138636, "9": 138394717, "10": 133797422,
        "11": 135086622, "12": 133275309, "13": 114364328, "14": 107043718, "15": 101991189,
        "16": 90338345, "17": 83257441, "18": 80373285, "19": 58617616, "20": 64444167,
        "21": 46709983, "22": 50818468, "X": 156040895, "Y": 57227415,
    },
}


def canonical_build(name: str, where: Path | None = None) -> str:
    build = ALIASES.get(name.strip().lower())
    if build is None:
        raise InputError(where, f"genome build {name!r} is not one of GRCh37 (hg19) or GRCh38 "
                                "(hg38)")
    return build


def detect_build(lengths: Mapping[str, int]) -> tuple[str | None, str | None]:
    """(build, the contig that shows it) from contig lengths; (None, None) when none matches."""
    for contig, length in lengths.items():
        bare = contig[3:] if contig.lower().startswith("chr") else contig
        for build, table in LENGTHS.items():
            if table.get(bare) == length:
                return build, contig
    return None, None


def require_build(panel_build: str | None, lengths: Mapping[str, int], reference: Path) -> None:
    """Refuse a reference on another build than the panel's (when both are known)."""
    if panel_build is None:
        return
    build, contig = detect_build(lengths)
    if build is not None and build != panel_build:
        raise InputError(reference, f"the panel is on {panel_build} but this reference FASTA "
                                    f"is {build} ({contig} is {lengths[contig]:,} bp): use a "
                                    f"{panel_build} reference and genotypes, or the panel's "
                                    f"{build} positions")


def reference_build(fasta: Path | str) -> str | None:
    """The build a reference FASTA is on, from the contig lengths its .fai states (None when
    there is no .fai or no contig has a known length)."""
    fai = Path(f"{fasta}.fai")
    if not fai.is_file():
        return None
    lengths = {}
    for line in fai.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) > 1 and fields[1].isdigit():
            lengths[fields[0]] = int(fields[1])
    return detect_build(lengths)[0]
