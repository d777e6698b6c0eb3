"""Compiled (numba) kernels of the suffix-array n-gram index: bit-packed suffix pointers, and the searches that
answer exact counts, longest matches and maximal spans.

A segment is a token array `tok` (u16, or u32 for vocabularies over 65,535 ids; each document is preceded by the
separator, the dtype's largest value, which no query holds, so no match crosses a document boundary) and its suffix
array stored in `w` bits per entry (`w` = bits of the token count: 21 bits at 1.5M tokens, 27 at 125M), packed
little-endian into a byte array with 8 bytes of padding. Every function runs without the GIL, so segments are
searched in parallel threads.

Longest matches use the OLMoTrace/infini-gram observation that the longest match starting at query position i+1 is at
least one shorter than the one at i: each position starts from the previous length (one binary search) and extends
token by token inside the current suffix range (two binary searches per token), so a whole query costs O(m log N)
pointer reads rather than O(m^2 log N).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_OPTS = {"cache": True, "nogil": True}


@njit(**_OPTS)
def _ptr(sa, i, w, mask):
    bit = np.int64(i) * w
    byte = bit >> 3
    v = np.uint64(0)
    for k in range(8):
        v |= np.uint64(sa[byte + k]) << np.uint64(8 * k)
    return np.int64((v >> np.uint64(bit & 7)) & mask)


@njit(**_OPTS)
def pack(values, w, out):
    """Write `values` (non-negative, < 2**w) into `out` (zeroed uint8, len >= ceil(len*w/8) + 8), w bits each."""
    for i in range(len(values)):
        bit = np.int64(i) * w
        byte = bit >> 3
        v = np.uint64(values[i]) << np.uint64(bit & 7)
        k = 0
        while v:
            out[byte + k] |= np.uint8(v & np.uint64(0xFF))
            v >>= np.uint64(8)
            k += 1


@njit(**_OPTS)
def unpack(sa, w, n):
    mask = (np.uint64(1) << np.uint64(w)) - np.uint64(1)
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        out[i] = _ptr(sa, i, w, mask)
    return out


@njit(**_OPTS)
def _tok_at(tok, p):
    return np.int64(tok[p]) if p < len(tok) else np.int64(-1)


@njit(**_OPTS)
def _cmp(tok, p, q, a, k):
    """Sign of comparing the corpus suffix at p with q[a:a+k] on their first k tokens (0: equal)."""
    for j in range(k):
        t = _tok_at(tok, p + j)
        c = np.int64(q[a + j])
        if t != c:
            return -1 if t < c else 1
    return 0


@njit(**_OPTS)
def _bound(tok, sa, w, mask, q, a, k, lo, hi, upper):
    """First index in [lo, hi) whose suffix's first k tokens are >= q[a:a+k] (> for `upper`)."""
    while lo < hi:
        mid = (lo + hi) >> 1
        c = _cmp(tok, _ptr(sa, mid, w, mask), q, a, k)
        if c < 0 or (upper and c == 0):
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(**_OPTS)
def _narrow(tok, sa, w, mask, off, c, lo, hi, upper):
    """In [lo, hi), where suffixes share their first `off` tokens (so token `off` is sorted), the first index whose
    token at `off` is >= c (> c for `upper`)."""
    while lo < hi:
        mid = (lo + hi) >> 1
        t = _tok_at(tok, _ptr(sa, mid, w, mask) + off)
        if t < c or (upper and t == c):
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(**_OPTS)
def find_range(tok, sa, w, q, a, k):
    """[lo, hi) of the suffixes starting with q[a:a+k]; hi - lo is its exact count."""
    mask = (np.uint64(1) << np.uint64(w)) - np.uint64(1)
    n = len(tok)
    lo = _bound(tok, sa, w, mask, q, a, k, 0, n, False)
    hi = _bound(tok, sa, w, mask, q, a, k, lo, n, True)
    return lo, hi


@njit(**_OPTS)
def longest_matches(tok, sa, w, q):
    """Per query position i: the length L of the longest prefix of q[i:] found in the segment, and the suffix range
    [lo, hi) of q[i:i+L] (its count is hi - lo; L = 0 gives the empty range)."""
    mask = (np.uint64(1) << np.uint64(w)) - np.uint64(1)
    n, m = len(tok), len(q)
    length = np.zeros(m, dtype=np.int64)
    los = np.zeros(m, dtype=np.int64)
    his = np.zeros(m, dtype=np.int64)
    prev = 0
    for i in range(m):
        k = prev - 1 if prev > 1 else 0
        if k > 0:
            lo = _bound(tok, sa, w, mask, q, i, k, 0, n, False)
            hi = _bound(tok, sa, w, mask, q, i, k, lo, n, True)
        else:
            lo, hi = 0, n
        while i + k < m:
            c = np.int64(q[i + k])
            nlo = _narrow(tok, sa, w, mask, k, c, lo, hi, False)
            nhi = _narrow(tok, sa, w, mask, k, c, nlo, hi, True)
            if nlo >= nhi:
                break
            lo, hi, k = nlo, nhi, k + 1
        if k == 0:
            lo, hi = 0, 0
        length[i], los[i], his[i] = k, lo, hi
        prev = k
    return length, los, his


@njit(**_OPTS)
def window_ranges(tok, sa, w, q, n, want):
    """[lo, hi) of every query window q[i:i+n] where want[i] (else the empty range)."""
    mask = (np.uint64(1) << np.uint64(w)) - np.uint64(1)
    size = len(tok)
    m = len(want)
    los = np.zeros(m, dtype=np.int64)
    his = np.zeros(m, dtype=np.int64)
    for i in range(m):
        if want[i]:
            lo = _bound(tok, sa, w, mask, q, i, n, 0, size, False)
            los[i] = lo
            his[i] = _bound(tok, sa, w, mask, q, i, n, lo, size, True)
    return los, his


@njit(**_OPTS)
def positions(sa, w, lo, hi, limit):
    """Corpus positions of suffixes lo .. min(hi, lo + limit)."""
    mask = (np.uint64(1) << np.uint64(w)) - np.uint64(1)
    m = min(hi, lo + limit) - lo
    out = np.empty(max(m, 0), dtype=np.int64)
    for j in range(len(out)):
        out[j] = _ptr(sa, lo + j, w, mask)
    return out


@njit(**_OPTS)
def distinct_docs(sa, w, los, his, starts, cap):
    """Per range: how many distinct documents (by `starts`, sorted document start positions) hold its suffixes;
    ranges of more than `cap` suffixes are not enumerated and give -1."""
    mask = (np.uint64(1) << np.uint64(w)) - np.uint64(1)
    out = np.zeros(len(los), dtype=np.int64)
    for r in range(len(los)):
        size = his[r] - los[r]
        if size > cap:
            out[r] = -1
            continue
        docs = np.empty(size, dtype=np.int64)
        for j in range(size):
            docs[j] = np.searchsorted(starts, _ptr(sa, los[r] + j, w, mask), side="right") - 1
        docs.sort()
        d = 0
        for j in range(size):
            if j == 0 or docs[j] != docs[j - 1]:
                d += 1
        out[r] = d
    return out
