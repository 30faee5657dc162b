"""DNA tokenization of the reference context around each variant.

Every party (site training, coordinator evaluation, the demo) must turn the same bases into the
same ids, or a model trained at one hospital is scored on different tokens at another. This
module is therefore deliberately deterministic and dependency-free beyond numpy.

Handling rules (the contract other modules and tests rely on):

* The vocabulary is ``SPECIAL_TOKENS`` (ids 0..3, ``[PAD]`` = 0 so zero-filled batches are
  padding) followed by the ``4**k`` k-mers over ``ACGT`` in lexicographic order, followed by one
  ``N``-token. ``vocab_size == 4 + 4**k + 1``; for ``k == 1`` that is ``A C G T N`` at 4..8.
* Lowercase bases are upper-cased: reference FASTA soft-masks repeats in lowercase, and a
  repeat is still the same base.
* IUPAC ambiguity codes ``R Y S W K M B D H V`` (and ``N``) become ``N``: the reference does
  not know the base, and spending embeddings on 11 flavours of "unknown" only fragments the
  rare-token statistics.
* Any k-mer containing an ``N`` (after the mapping above) is the single ``N``-token. With
  k > 1 there would otherwise be ``5**k - 4**k`` sparse N-kmers, almost all unseen in training.
* Any other character (digits, ``-``, ``*``, non-ASCII, ...) is invalid and its window is
  ``[UNK]``. ``[UNK]`` is reserved for malformed input so it stays visible in audits; it takes
  precedence over ``N`` within a window.
* With ``stride > 1`` trailing bases that do not fill a whole window are dropped, like any
  strided convolution; ``stride <= k`` is enforced so no interior base is silently skipped.

``decode`` returns a string over ``ACGTN``: every base covered by at least one N-free k-mer is
recovered, all others (under ``N``/``[UNK]``/``[MASK]`` tokens only) become ``N``. So
``decode(encode(s)) == s`` for upper-case ``ACGT`` input of length ``k + j*stride``, for k = 1,
and for overlapping (stride 1) and non-overlapping (stride k) k-mers.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import product

import numpy as np

SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[CLS]", "[MASK]", "[UNK]")
PAD_ID, CLS_ID, MASK_ID, UNK_ID = 0, 1, 2, 3
BASES = "ACGT"
MAX_K = 8  # 4**8 = 65,536 k-mers; larger vocabularies cannot be trained on a hospital cohort.

# Per-character codes used by the vectorised encoder: 0..3 = ACGT, 4 = N, 5 = invalid.
_CODE_N, _CODE_INVALID = 4, 5
_IUPAC_AMBIGUOUS = "RYSWKMBDHVN"
_CHAR_CODE = np.full(256, _CODE_INVALID, dtype=np.int64)
for _i, _b in enumerate(BASES):
    _CHAR_CODE[ord(_b)] = _CHAR_CODE[ord(_b.lower())] = _i
for _b in _IUPAC_AMBIGUOUS:
    _CHAR_CODE[ord(_b)] = _CHAR_CODE[ord(_b.lower())] = _CODE_N

_COMPLEMENT_UPPER = {
    "A": "T", "T": "A", "C": "G", "G": "C",
    "R": "Y", "Y": "R", "K": "M", "M": "K",
    "S": "S", "W": "W", "B": "V", "V": "B",
    "D": "H", "H": "D", "N": "N",
}  # fmt: skip
_COMPLEMENT = str.maketrans(
    {**_COMPLEMENT_UPPER, **{a.lower(): b.lower() for a, b in _COMPLEMENT_UPPER.items()}}
)

# Allele vocabulary for REF/ALT embeddings: 0 is padding, never returned by `allele_id`.
# A person's genotype at a variant, as the model's genotype token: copies of the ALT allele,
# or missing (no call, or the variant absent from the site's VCF).
GT_HOM_REF, GT_HET, GT_HOM_ALT, GT_MISSING = 0, 1, 2, 3
N_GENOTYPE_TOKENS = 4

ALLELE_PAD_ID = 0
ALLELE_IDS: dict[str, int] = {"A": 1, "C": 2, "G": 3, "T": 4}
ALLELE_N_ID = 5
ALLELE_VOCAB_SIZE = 6


def reverse_complement(seq: str) -> str:
    """Reverse complement, IUPAC-aware and case-preserving.

    Case is kept because soft-masking marks repeats on both strands. Characters with no
    complement raise instead of passing through, since a silently unchanged ``-`` or digit on
    the minus strand would produce a plausible-looking but wrong sequence.
    """
    out = seq.translate(_COMPLEMENT)
    bad = set(out) - set(_COMPLEMENT_UPPER) - {c.lower() for c in _COMPLEMENT_UPPER}
    if bad:
        raise ValueError(f"reverse_complement: no complement for {sorted(bad)!r}")
    return out[::-1]


def allele_id(allele: str) -> int:
    """Id in ``1..5`` (A=1, C=2, G=3, T=4, anything else=5) for a REF or ALT allele.

    Id 0 (``ALLELE_PAD_ID``) is left free so padded variant slots embed as zero; the vocabulary
    size is ``ALLELE_VOCAB_SIZE == 6``. Multi-base alleles (indels), ``*``, ``.`` and IUPAC codes
    all share id 5: the model works on SNVs, and an unusual allele should still embed as
    "unknown base" rather than crash a site mid-round.
    """
    return ALLELE_IDS.get(allele.upper(), ALLELE_N_ID)


def _char_codes(seq: str) -> np.ndarray:
    """Per-character codes; non-ASCII characters become one invalid code each."""
    raw = np.frombuffer(seq.encode("ascii", errors="replace"), dtype=np.uint8)
    return _CHAR_CODE[raw]


class DNATokenizer:
    """Single-nucleotide (``k=1``) or k-mer tokenizer with a fixed, reproducible vocabulary."""

    def __init__(self, k: int = 1, stride: int = 1) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise ValueError(f"k must be an int in 1..{MAX_K}, got {k!r}")
        if isinstance(stride, bool) or not isinstance(stride, int) or not 1 <= stride <= k:
            raise ValueError(f"stride must be an int in 1..k={k}, got {stride!r}")
        self.k = k
        self.stride = stride
        self.pad_id, self.cls_id, self.mask_id, self.unk_id = PAD_ID, CLS_ID, MASK_ID, UNK_ID
        self._first_kmer_id = len(SPECIAL_TOKENS)
        self.n_id = self._first_kmer_id + 4**k
        self.vocab_size = self.n_id + 1
        self._weights = 4 ** np.arange(k - 1, -1, -1, dtype=np.int64)

    def __repr__(self) -> str:
        return f"DNATokenizer(k={self.k}, stride={self.stride})"

    @property
    def n_token(self) -> str:
        """Name of the N-token: ``"N" * k``."""
        return "N" * self.k

    def num_tokens(self, length: int, add_cls: bool = False) -> int:
        """Token count for a sequence of ``length`` bases, for sizing positional embeddings."""
        windows = 0 if length < self.k else (length - self.k) // self.stride + 1
        return windows + int(add_cls)

    def encode(self, seq: str, add_cls: bool = False) -> list[int]:
        """Token ids for ``seq`` (see the module docstring for the character rules)."""
        ids = self._encode_codes(_char_codes(seq))
        return ([self.cls_id] if add_cls else []) + ids.tolist()

    def encode_batch(
        self, seqs: Sequence[str], add_cls: bool = False, length: int | None = None
    ) -> np.ndarray:
        """``int64 [len(seqs), length]`` ids, right-padded with ``[PAD]``.

        Models consume rectangular batches; truncating silently would hide a context-size
        mismatch between sites, so a sequence longer than ``length`` tokens raises.
        """
        rows = [self.encode(s, add_cls=add_cls) for s in seqs]
        width = max((len(r) for r in rows), default=0) if length is None else length
        out = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        for i, row in enumerate(rows):
            if len(row) > width:
                raise ValueError(f"sequence {i} has {len(row)} tokens, more than length={width}")
            out[i, : len(row)] = row
        return out

    def _encode_codes(self, codes: np.ndarray) -> np.ndarray:
        if codes.size < self.k:
            return np.empty(0, dtype=np.int64)
        windows = np.lib.stride_tricks.sliding_window_view(codes, self.k)[:: self.stride]
        ids = self._first_kmer_id + np.minimum(windows, 3) @ self._weights
        ids = np.where((windows == _CODE_N).any(axis=1), self.n_id, ids)
        return np.where((windows == _CODE_INVALID).any(axis=1), self.unk_id, ids)

    def token_to_id(self, token: str) -> int:
        """Id of a special token or of a k-length string (read with the ``encode`` rules).

        Anything else is ``[UNK]``, mirroring how ``encode`` treats malformed input.
        """
        if token in SPECIAL_TOKENS:
            return SPECIAL_TOKENS.index(token)
        if len(token) != self.k:
            return self.unk_id
        return int(self._encode_codes(_char_codes(token))[0])

    def id_to_token(self, token_id: int) -> str:
        """Canonical name of ``token_id``: a special token, an ``ACGT`` k-mer or ``N * k``."""
        if isinstance(token_id, bool) or not 0 <= int(token_id) < self.vocab_size:
            raise ValueError(f"token id {token_id!r} outside vocabulary of size {self.vocab_size}")
        token_id = int(token_id)
        if token_id < self._first_kmer_id:
            return SPECIAL_TOKENS[token_id]
        if token_id == self.n_id:
            return self.n_token
        return self._kmer(token_id - self._first_kmer_id)

    def _kmer(self, index: int) -> str:
        return "".join(BASES[(index // int(w)) % 4] for w in self._weights)

    def vocab(self) -> list[str]:
        """All token names in id order (for logging and embedding-table audits)."""
        kmers = ["".join(p) for p in product(BASES, repeat=self.k)]
        return [*SPECIAL_TOKENS, *kmers, self.n_token]

    def decode(self, ids: Sequence[int]) -> str:
        """Bases spanned by ``ids``; ``[PAD]``/``[CLS]`` are skipped, ``[MASK]`` keeps its slot.

        Overlapping k-mers must agree on shared bases; disagreement raises ``ValueError`` because
        such ids are not the tokenization of any sequence.
        """
        slots = [int(i) for i in ids if int(i) not in (self.pad_id, self.cls_id)]
        for i in slots:
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"token id {i} outside vocabulary of size {self.vocab_size}")
        if not slots:
            return ""
        out = ["N"] * ((len(slots) - 1) * self.stride + self.k)
        known = [False] * len(out)
        for j, token_id in enumerate(slots):
            if token_id < self._first_kmer_id or token_id == self.n_id:
                continue  # [MASK], [UNK] and the N-token say nothing about individual bases
            start = j * self.stride
            for offset, base in enumerate(self._kmer(token_id - self._first_kmer_id)):
                pos = start + offset
                if known[pos] and out[pos] != base:
                    raise ValueError(f"overlapping k-mers disagree at base {pos}")
                out[pos], known[pos] = base, True
        return "".join(out)
