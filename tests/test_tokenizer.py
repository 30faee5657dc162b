"""Tokenizer contract: every site must map the same bases to the same ids."""

from __future__ import annotations

import numpy as np
import pytest

from shared.tokenizer import (
    ALLELE_N_ID,
    ALLELE_PAD_ID,
    ALLELE_VOCAB_SIZE,
    SPECIAL_TOKENS,
    DNATokenizer,
    allele_id,
    reverse_complement,
)

IUPAC_AMBIGUOUS = "RYSWKMBDHV"


def random_dna(rng: np.random.Generator, length: int, alphabet: str = "ACGT") -> str:
    return "".join(rng.choice(list(alphabet), size=length))


@pytest.mark.parametrize("k", [1, 2, 3, 4, 6])
def test_vocab_size_is_kmers_plus_n_plus_specials(k: int) -> None:
    tok = DNATokenizer(k=k)
    assert tok.vocab_size == 4**k + 1 + len(SPECIAL_TOKENS)
    vocab = tok.vocab()
    assert len(vocab) == len(set(vocab)) == tok.vocab_size
    assert [tok.token_to_id(t) for t in vocab] == list(range(tok.vocab_size))
    assert [tok.id_to_token(i) for i in range(tok.vocab_size)] == vocab


def test_special_ids_are_fixed() -> None:
    for k in (1, 3):
        tok = DNATokenizer(k=k)
        assert (tok.pad_id, tok.cls_id, tok.mask_id, tok.unk_id) == (0, 1, 2, 3)
        assert tok.vocab()[:4] == list(SPECIAL_TOKENS)


def test_k1_ids() -> None:
    tok = DNATokenizer()
    assert tok.encode("ACGTN") == [4, 5, 6, 7, 8]
    assert tok.n_id == 8
    assert tok.encode("ACGT", add_cls=True) == [tok.cls_id, 4, 5, 6, 7]


@pytest.mark.parametrize(("k", "stride"), [(1, 1), (3, 1), (3, 3), (4, 2), (5, 1)])
def test_round_trip_random_sequences(k: int, stride: int) -> None:
    rng = np.random.default_rng(k * 10 + stride)
    tok = DNATokenizer(k=k, stride=stride)
    for windows in (1, 2, 7, 40):
        seq = random_dna(rng, k + (windows - 1) * stride)
        ids = tok.encode(seq)
        assert len(ids) == windows == tok.num_tokens(len(seq))
        assert tok.decode(ids) == seq
        assert tok.decode([tok.cls_id, *ids, tok.pad_id, tok.pad_id]) == seq


def test_kmer_overlap_stride1_and_nonoverlap_stride3() -> None:
    seq = "ACGTAC"
    overlap = DNATokenizer(k=3, stride=1)
    assert [overlap.id_to_token(i) for i in overlap.encode(seq)] == ["ACG", "CGT", "GTA", "TAC"]
    chunks = DNATokenizer(k=3, stride=3)
    assert [chunks.id_to_token(i) for i in chunks.encode(seq)] == ["ACG", "TAC"]


def test_stride_drops_incomplete_trailing_window() -> None:
    tok = DNATokenizer(k=3, stride=3)
    assert tok.decode(tok.encode("ACGTACGT")) == "ACGTAC"
    assert tok.num_tokens(8) == 2
    assert tok.encode("AC") == [] and tok.num_tokens(2) == 0


def test_lowercase_is_soft_masked_reference() -> None:
    for k, stride in ((1, 1), (3, 1), (3, 3)):
        tok = DNATokenizer(k=k, stride=stride)
        assert tok.encode("acgTTgca") == tok.encode("ACGTTGCA")


@pytest.mark.parametrize("code", list(IUPAC_AMBIGUOUS + IUPAC_AMBIGUOUS.lower() + "Nn"))
def test_iupac_codes_become_n(code: str) -> None:
    tok = DNATokenizer()
    assert tok.encode(f"A{code}C") == [4, tok.n_id, 5]
    assert tok.decode(tok.encode(f"A{code}C")) == "ANC"


def test_any_kmer_with_n_is_the_single_n_token() -> None:
    tok = DNATokenizer(k=3)
    assert tok.id_to_token(tok.n_id) == "NNN"
    ids = tok.encode("ACGRTAC")  # R -> N hits the three windows covering position 3
    assert ids[0] == tok.token_to_id("ACG")
    assert ids[1:4] == [tok.n_id] * 3
    assert ids[4] == tok.token_to_id("TAC")
    # Bases next to N are still recovered from the N-free windows that cover them.
    assert tok.decode(ids) == "ACGNTAC"
    assert tok.token_to_id("nAy") == tok.token_to_id("NNN") == tok.n_id


def test_n_isolated_bases_decode_as_n() -> None:
    tok = DNATokenizer(k=3)
    assert tok.decode(tok.encode("NAN")) == "NNN"
    assert tok.decode(tok.encode("NNNNN")) == "NNNNN"


@pytest.mark.parametrize("bad", ["X", "-", "*", "1", " ", "U", "é", "."])
def test_invalid_characters_are_unk(bad: str) -> None:
    tok = DNATokenizer()
    assert tok.encode(f"A{bad}C") == [4, tok.unk_id, 5]
    tok3 = DNATokenizer(k=3)
    ids = tok3.encode(f"AC{bad}GTN")  # windows: AC?, C?G, ?GT, GTN
    assert ids[:3] == [tok3.unk_id] * 3
    assert ids[3] == tok3.n_id, "N-kmer without an invalid char stays N"


def test_unk_takes_precedence_over_n() -> None:
    tok = DNATokenizer(k=2)
    assert tok.encode("N?") == [tok.unk_id]


def test_non_ascii_counts_as_one_position() -> None:
    tok = DNATokenizer()
    assert len(tok.encode("AéC")) == 3


def test_token_to_id_unknown_strings() -> None:
    tok = DNATokenizer(k=3)
    assert tok.token_to_id("AC") == tok.unk_id
    assert tok.token_to_id("ACGT") == tok.unk_id
    assert tok.token_to_id("[MASK]") == tok.mask_id
    assert tok.token_to_id("acg") == tok.token_to_id("ACG")


def test_id_to_token_out_of_range() -> None:
    tok = DNATokenizer(k=2)
    for bad in (-1, tok.vocab_size):
        with pytest.raises(ValueError):
            tok.id_to_token(bad)
    with pytest.raises(ValueError):
        tok.decode([tok.vocab_size])


def test_decode_mask_keeps_slot() -> None:
    tok = DNATokenizer()
    ids = tok.encode("ACGT")
    ids[1] = tok.mask_id
    assert tok.decode(ids) == "ANGT"
    tok3 = DNATokenizer(k=3)
    ids3 = tok3.encode("ACGTA")  # ACG CGT GTA
    ids3[1] = tok3.mask_id
    assert tok3.decode(ids3) == "ACGTA", "masked base recovered from overlapping neighbours"


def test_decode_rejects_inconsistent_overlaps() -> None:
    tok = DNATokenizer(k=3)
    with pytest.raises(ValueError, match="disagree"):
        tok.decode([tok.token_to_id("ACG"), tok.token_to_id("TTT")])


def test_encode_batch_pads_and_checks_length() -> None:
    tok = DNATokenizer(k=3)
    batch = tok.encode_batch(["ACGTA", "ACG"], add_cls=True)
    assert batch.dtype == np.int64 and batch.shape == (2, 4)
    assert batch[1].tolist() == [tok.cls_id, tok.token_to_id("ACG"), tok.pad_id, tok.pad_id]
    assert tok.encode_batch(["ACG"], length=5).shape == (1, 5)
    with pytest.raises(ValueError, match="more than length"):
        tok.encode_batch(["ACGTACGT"], length=2)


@pytest.mark.parametrize(("k", "stride"), [(0, 1), (9, 1), (3, 0), (3, 4), (True, 1), (2.0, 1)])
def test_invalid_configuration(k: object, stride: object) -> None:
    with pytest.raises(ValueError):
        DNATokenizer(k=k, stride=stride)  # type: ignore[arg-type]


def test_reverse_complement_basic_and_case() -> None:
    assert reverse_complement("ACGT") == "ACGT"
    assert reverse_complement("AACG") == "CGTT"
    assert reverse_complement("aaCg") == "cGtt"
    assert reverse_complement("") == ""


@pytest.mark.parametrize(
    ("code", "partner"),
    [("R", "Y"), ("K", "M"), ("S", "S"), ("W", "W"), ("B", "V"), ("D", "H"), ("N", "N")],
)
def test_reverse_complement_iupac_pairs(code: str, partner: str) -> None:
    assert reverse_complement(code) == partner
    assert reverse_complement(partner) == code
    assert reverse_complement(code.lower()) == partner.lower()


def test_reverse_complement_is_an_involution() -> None:
    rng = np.random.default_rng(7)
    alphabet = "ACGTN" + IUPAC_AMBIGUOUS + "acgtn" + IUPAC_AMBIGUOUS.lower()
    for _ in range(50):
        seq = random_dna(rng, int(rng.integers(0, 60)), alphabet)
        assert reverse_complement(reverse_complement(seq)) == seq


def test_reverse_complement_rejects_unknown_characters() -> None:
    with pytest.raises(ValueError, match="no complement"):
        reverse_complement("AC-GT")


def test_reverse_complement_commutes_with_k1_tokenization() -> None:
    tok = DNATokenizer()
    seq = "ACGTTNRa"
    assert tok.decode(tok.encode(reverse_complement(seq))) == reverse_complement(
        tok.decode(tok.encode(seq))
    )


def test_allele_ids() -> None:
    assert [allele_id(a) for a in "ACGT"] == [1, 2, 3, 4]
    assert [allele_id(a) for a in "acgt"] == [1, 2, 3, 4]
    for other in ("N", "R", "AT", "", "*", ".", "<DEL>"):
        assert allele_id(other) == ALLELE_N_ID
    ids = {allele_id(a) for a in ("A", "C", "G", "T", "N")}
    assert ALLELE_PAD_ID not in ids
    assert max(ids) < ALLELE_VOCAB_SIZE
