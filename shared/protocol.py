"""Everything that crosses the wire between the coordinator and a site, field by field.

This is the one list of what a site releases. Each field a site sends has a privacy status:

- ``dp``: a differentially private release, or a function of DP releases only
  (post-processing), paid for from the site's persisted budget (`shared.privacy`);
- ``public``: known without the site's data (its chosen name, the software version, the
  site's own settings, such as the noise it adds);
- ``constant``: a value from a fixed vocabulary that depends on no person (a refusal category).

Nothing per-person, exact or data-dependent is sent outside this list: no training loss, no
exact counts, no timings, no error text (an error travels as a category; its detail stays in
the site's log). `check_reply` refuses a reply with any other field, and the site calls it on
every reply before it leaves (`client/app.py`); the coordinator reads replies only through
`read_reply`, which validates every value.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata
from typing import Any, Literal

import numpy as np

Status = Literal["dp", "public", "constant"]

# --- instructions: coordinator -> site (config records; all public by construction) ----------
SERVER_ROUND = "server-round"
PANEL_SHA256 = "panel-sha256"
# "Score the weights you received before you train on them": the previous round's aggregate,
# evaluated on the next round's message instead of a round-trip of its own.
EVALUATE_RECEIVED = "evaluate-received"
# The coordinator's small-cell floor: a site withholds groups under max(its own floor, this).
MIN_GROUP_SIZE = "min-group-size"
# The logit around which evaluation histograms are binned (shared.metrics.bin_edges).
SCORE_CENTER = "score-center"


@dataclass(frozen=True)
class Field:
    name: str
    kind: type
    status: Status
    doc: str


# --- what a site sends ------------------------------------------------------------------------
# Flower's own reply slots, besides the metrics below.
FIT_WEIGHTS = Field("parameters", list, "dp", "the model weights after local DP-SGD (Opacus)")
FIT_EXAMPLES = Field("num_examples", int, "dp",
                     "the site's training-set size as released with Gaussian noise (FedAvg's "
                     "weight); 0 when the site declined")
EVALUATE_LOSS = Field("loss", float, "constant", "always 0.0: the exact loss is not released")
EVALUATE_EXAMPLES = Field("num_examples", int, "constant",
                          "always 0: the noisy counts are inside `scores`")

SITE = Field("site", str, "public", "the site's chosen name (its SuperNode's `site-id`)")
VERSION = Field("version", str, "public", "the genofed version the site runs")
DECLINED = Field("declined", int, "dp",
                 "1 if the site refused this message (see `reason`), else 0: a function of "
                 "its budget, i.e. of earlier DP releases and its settings")
REASON = Field("reason", str, "constant", "why a site refused: one of REFUSALS")
EPSILON = Field("epsilon", float, "dp",
                "the site's cumulative epsilon over every release on its data (accountant)")
DELTA = Field("delta", float, "public", "the delta at which `epsilon` is stated")
NOISE_MULTIPLIER = Field("noise_multiplier", float, "dp",
                         "this run's DP-SGD noise multiplier (calibrated from the plan, which "
                         "is derived from the noisy counts)")
SCORES = Field("scores", str, "dp",
               "per-ancestry score histograms with Gaussian noise, groups under the floor "
               "withheld (format: shared.metrics, GroupedScores.to_json)")
CODE = Field("code", str, "public",
             "the code the site ran: `fab:<sha256>` of the app bundle it approved, or "
             "`installed:<sha256>` of its own installed packages (client.identity)")
RECEIPT = Field("receipt", str, "dp",
                "the site's signed receipt of this reply (shared.receipts): run, round, name, "
                "hashes of the weights received and sent, epsilon, delta, code")
EVALUATION_RECEIPT = Field("evaluation_receipt", str, "dp",
                           "the receipt of an evaluation that rode on a training reply")

FIT_METRICS: dict[str, Field] = {f.name: f for f in (
    SITE, VERSION, DECLINED, REASON, EPSILON, DELTA, NOISE_MULTIPLIER, CODE, RECEIPT,
    # When the training message asked for it, the received weights' evaluation rides along:
    SCORES, EVALUATION_RECEIPT,
)}
EVALUATE_METRICS: dict[str, Field] = {f.name: f for f in (
    SITE, VERSION, DECLINED, REASON, EPSILON, DELTA, SCORES, CODE, RECEIPT,
)}

# Why a site refused or failed. Nothing else about a failure leaves the site.
REFUSALS = (
    "unapproved-code",  # the app bundle is not one the site approved (client.launcher)
    "budget-exhausted",  # the release would take the site past its epsilon
    "panel-mismatch",  # the coordinator's panel is not the one in the site's data folder
    "data-error",  # the site's data could not be read (detail in the site's log)
    "config-error",  # the run or site configuration was refused
    "ledger-error",  # the privacy ledger is missing, locked out or unreadable
    "internal-error",  # anything else
)


def weights_sha256(arrays: Sequence[np.ndarray]) -> str:
    """Hash of model weights as exchanged (dtype, shape and bytes of every array): what a
    receipt and the ledger name the weights by."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


class ProtocolError(ValueError):
    """A message that does not follow this module: refused whole."""


def site_version() -> str:
    try:
        return metadata.version("genofed")
    except metadata.PackageNotFoundError:
        return "unknown"


def check_reply(metrics: Mapping[str, Any], spec: Mapping[str, Field]) -> None:
    """Refuse a reply carrying a field outside `spec` or a value of the wrong kind."""
    for key, value in metrics.items():
        if key not in spec:
            # The name is the sender's choice: quoted short, as it lands in a signed record.
            raise ProtocolError(f"field {ascii(str(key)[:40])} is not in the protocol")
        if not _is_kind(value, spec[key].kind):
            raise ProtocolError(f"field {key!r} must be {spec[key].kind.__name__}")
    if "reason" in metrics and metrics["reason"] not in REFUSALS:
        raise ProtocolError("reason must be one of the protocol's refusal categories")


def _is_kind(value: Any, kind: type) -> bool:
    if kind is float:
        return type(value) in (int, float) and math.isfinite(value)
    if kind is int:
        return type(value) is int
    return isinstance(value, kind)


@dataclass(frozen=True)
class SiteReply:
    """A site's reply as the coordinator reads it: every value validated."""

    site: str
    declined: bool
    reason: str | None
    epsilon: float | None
    delta: float | None
    scores: str | None
    code: str | None = None
    receipt: str | None = None
    evaluation_receipt: str | None = None


MAX_SITE_NAME = 100
MAX_EPSILON = 1e6


def read_reply(metrics: Mapping[str, Any], spec: Mapping[str, Field], fallback: str) -> SiteReply:
    """Validate a site's metrics (type, finiteness, range) or raise ProtocolError."""
    check_reply(metrics, spec)
    site = str(metrics.get("site", fallback))
    if not 0 < len(site) <= MAX_SITE_NAME or not site.isprintable():
        raise ProtocolError("site name must be 1..100 printable characters")
    declined = metrics.get("declined", 0)
    if declined not in (0, 1):
        raise ProtocolError("declined must be 0 or 1")
    epsilon, delta = metrics.get("epsilon"), metrics.get("delta")
    if epsilon is not None and not 0 <= float(epsilon) <= MAX_EPSILON:
        raise ProtocolError("epsilon out of range")
    if delta is not None and not 0 < float(delta) < 1:
        raise ProtocolError("delta must be in (0, 1)")
    return SiteReply(site, bool(declined), metrics.get("reason"),
                     None if epsilon is None else float(epsilon),
                     None if delta is None else float(delta), metrics.get("scores"),
                     metrics.get("code"), metrics.get("receipt"),
                     metrics.get("evaluation_receipt"))


# --- the round record: what the coordinator keeps and signs about each round ------------------


@dataclass
class RoundRecord:
    """One round as the coordinator saw it: an entry of the run folder's results.json, and the
    round fields of its signed ledger record (`ledger_body`). Built by the coordinator's
    strategy; read back by status, resumption, the demo and the benchmarks through `from_body`.
    (The auditor's report reads ledgers it does not trust with its own defensive parser.)"""

    round: int
    sites: list[str] = field(default_factory=list)
    declined: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    failures: int = 0
    privacy: dict[str, dict[str, float]] = field(default_factory=dict)
    metrics: dict | None = None
    weights_sha256: str | None = None
    # Sites whose evaluation of this round's model was taken.
    evaluated_by: list[str] = field(default_factory=list)
    # What each counted site signed (shared.receipts), and the code it says it ran.
    receipts: dict[str, dict] = field(default_factory=dict)
    evaluation_receipts: dict[str, dict] = field(default_factory=dict)
    code: dict[str, str] = field(default_factory=dict)
    # Failures Flower reported without a reply, by the category the site's launcher gave.
    failure_reasons: dict[str, int] = field(default_factory=dict)
    run_id: str = ""

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> RoundRecord:
        """The round fields of a ledger round body or a results.json entry (others ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in body.items() if k in names})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def ledger_body(self, *, ledger_id: str, run_id: str, config_sha256: str, panel_sha256: str,
                    time: str) -> dict[str, Any]:
        """The body of this round's ledger record (`shared.ledger` signs and chains it)."""
        return {
            "kind": "round", "ledger_id": ledger_id, "run_id": run_id,
            "receipts": self.receipts, "evaluation_receipts": self.evaluation_receipts,
            "code": self.code, "failure_reasons": self.failure_reasons,
            "round": self.round, "sites": sorted(self.sites), "declined": self.declined,
            "rejected": self.rejected, "weights_sha256": self.weights_sha256,
            "config_sha256": config_sha256, "panel_sha256": panel_sha256,
            "privacy": self.privacy, "metrics": self.metrics, "time": time,
        }

    def groups(self) -> dict[str, dict[str, Any]]:
        """Per-ancestry metrics of the round's evaluation ({} when it had none)."""
        return dict((self.metrics or {}).get("by_group") or {})

    def group_auroc(self, group: str) -> float | None:
        """The pooled AUROC of one group; None when suppressed, undefined or not evaluated."""
        m = self.groups().get(group) or {}
        return None if m.get("suppressed") else m.get("auroc")

    def epsilons(self) -> dict[str, float]:
        """Each site's cumulative epsilon as reported with this round."""
        return {site: float(p["epsilon"]) for site, p in self.privacy.items()}


def read_rounds(bodies: Sequence[Mapping[str, Any]]) -> list[RoundRecord]:
    """Round records from results.json's `rounds` or from a ledger's round bodies."""
    return [RoundRecord.from_body(b) for b in bodies]


def latest_privacy(rounds: Sequence[RoundRecord]) -> dict[str, dict[str, float]]:
    """Each site's privacy as of the last round that reported it."""
    spent: dict[str, dict[str, float]] = {}
    for r in rounds:
        spent.update(r.privacy)
    return dict(sorted(spent.items()))
