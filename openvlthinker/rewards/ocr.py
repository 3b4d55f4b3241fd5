"""OCR accuracy: 1 − word error rate, clipped to [0, 1].

Text is compared case-insensitively on whitespace-separated words. The word-level edit
distance uses the bit-parallel algorithm of Myers (1999) in Hyyrö's global-distance form, with
Python integers as bit vectors: one pass over the predicted words, a dozen big-integer
operations each, so thousands of words grade in milliseconds. Two bounds keep huge inputs
fast: a prediction at least twice as long as the reference already has WER ≥ 1, so it scores 0
without any work (exact); a reference longer than `MAX_WORDS` words, far beyond real OCR
targets, is graded on equal-length prefixes of both texts (an approximation).
"""

from __future__ import annotations

from openvlthinker.data.records import TaskRecord

# Far above any real OCR reference; bounds the bit-vector width and so the running time.
MAX_WORDS = 4000


def word_edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance between two word sequences (insert, delete, substitute all cost 1)."""
    m = len(ref)
    if m == 0:
        return len(hyp)
    # peq[w] has bit i set where ref[i] == w.
    peq: dict[str, int] = {}
    for i, word in enumerate(ref):
        peq[word] = peq.get(word, 0) | (1 << i)
    mask = (1 << m) - 1
    top = 1 << (m - 1)
    pv, mv, dist = mask, 0, m
    for word in hyp:
        eq = peq.get(word, 0)
        xv = eq | mv
        xh = ((((eq & pv) + pv) & mask) ^ pv) | eq
        ph = (mv | ~(xh | pv)) & mask
        mh = pv & xh
        if ph & top:
            dist += 1
        elif mh & top:
            dist -= 1
        # Shifting in a 1 encodes the first row D[0][j] = j (global, not substring, distance).
        ph = ((ph << 1) | 1) & mask
        mh = (mh << 1) & mask
        pv = (mh | ~(xv | ph)) & mask
        mv = ph & xv
    return dist


def ocr_accuracy(pred: str, record: TaskRecord) -> float:
    """1 − WER of `pred` against the reference text, clipped to [0, 1]."""
    if not isinstance(pred, str):
        return 0.0
    ref = record.answer.casefold().split()
    hyp = pred.casefold().split()
    if not ref:
        return 1.0 if not hyp else 0.0
    if len(ref) > MAX_WORDS:
        # Approximate an over-long reference by equal-length prefixes of both texts.
        ref, hyp = ref[:MAX_WORDS], hyp[:MAX_WORDS]
    elif len(hyp) >= 2 * len(ref):
        return 0.0  # at least len(hyp) - len(ref) >= len(ref) insertions: WER >= 1
    wer = word_edit_distance(ref, hyp) / len(ref)
    return min(1.0, max(0.0, 1.0 - wer))
