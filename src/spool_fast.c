/* spool_fast.c - the fast run allocator: a bitmap of 64-bit words under a segment tree.
 *
 * Same answers as spool_ref.c, bit for bit, in O(log n) per operation (plus n/64 word
 * updates for a run of n). The index space [0, total) is a bitmap, bit set = free, index
 * i at bit i%64 of word i/64. Over the words sits a complete binary tree (leaves = words,
 * padded with all-reserved words up to a power of two); every node keeps, for its span:
 *
 *     max   the longest free run inside it
 *     pre   the free run at its low end      (pre == span: the node is all free)
 *     suf   the free run at its high end
 *
 * and a parent is pulled from its children in O(1):
 *     pre = L.pre == half ? half + R.pre : L.pre        max = max(L.max, R.max, L.suf + R.pre)
 *     suf = R.suf == half ? half + L.suf : R.suf
 *
 * Placement. The reference takes the lowest-addressed maximal free run of length >= n.
 * The lowest window of n free indices starts exactly there (a window that does not start
 * a run could slide one lower), so a descent that prefers the left child finds it:
 *
 *     left.max >= n               -> go left
 *     left.suf + right.pre >= n   -> the window starts at mid - left.suf
 *     otherwise                   -> go right
 *
 * and inside a word the lowest window of n <= 64 ones is found by and-ing shifted copies.
 * The run's end (for policy 1, and for the histogram) is the next reserved index, found by
 * climbing from the word and descending into the first sibling that is not all free.
 *
 * Statistics are kept as runs split and merge: each operation knows the lengths of the
 * runs it removes and adds, so free, runs and the histogram change in O(1); largest is
 * the root's max. Invariants (ptl__spool_check, O(n)): padding bits are reserved; every
 * node equals what its words/children give; the counters equal a recount of the bitmap.
 */
#include "internal.h"
#include "spool.h"

#include <string.h>

typedef struct node {
    uint32_t max, pre, suf;
} node;

/* A 64-ary summary over the words, for "the next word that has a reserved (or a free)
 * bit": level 0 has one bit per word, level k+1 one bit per u64 of level k (set when any
 * bit below is). Three or four levels cover 2^25 indices. */
#define HB_LEVELS 6
typedef struct hbits {
    int levels;
    uint32_t n[HB_LEVELS]; /* u64s at each level */
    uint64_t *l[HB_LEVELS];
} hbits;

typedef struct fast_spool {
    ptl__spool base; /* ops: fast_ops */
    uint32_t total;
    int policy;
    uint32_t leaves; /* words in the bitmap and leaves of the tree: a power of two */
    uint64_t *bits;  /* leaves words; bit set = free; bits >= total stay clear */
    node *tree;      /* internal nodes 1 .. leaves-1; a leaf (word) is computed from bits */
    hbits notfull;   /* word has a reserved bit (padding words included) */
    hbits notempty;  /* word has a free bit */
    uint32_t free, runs;
    uint32_t hist[PTL_SPOOL_HIST];
} fast_spool;

#define FAST(sp)  ((fast_spool *)(sp))
#define CFAST(sp) ((const fast_spool *)(sp))
#define NONE      UINT32_MAX

static const ptl__spool_ops fast_ops;

/* ---- words -------------------------------------------------------------------------- */

static inline uint32_t word_maxrun(uint64_t x)
{
    /* w[k]: bit i set when bits i .. i+2^k-1 of x all are */
    uint64_t w[6];
    w[0] = x;
    for (int k = 1; k < 6; k++)
        w[k] = w[k - 1] & (w[k - 1] >> (1u << (k - 1)));
    uint64_t cur = ~0ull; /* windows of length len */
    uint32_t len = 0;
    for (int k = 5; k >= 0; k--) {
        uint64_t t = cur & (w[k] >> len);
        if (t) {
            cur = t;
            len += 1u << k;
        }
    }
    return len;
}

static inline node leaf_of(uint64_t x)
{
    if (x == ~0ull)
        return (node){64, 64, 64};
    if (x == 0)
        return (node){0, 0, 0};
    return (node){word_maxrun(x), (uint32_t)__builtin_ctzll(~x), (uint32_t)__builtin_clzll(~x)};
}

/* Lowest bit i with bits i .. i+n-1 of x all set; the caller knows there is one. */
static inline uint32_t word_window(uint64_t x, uint32_t n)
{
    uint64_t m = x;
    uint32_t len = 1;
    while (len < n) {
        uint32_t s = len < n - len ? len : n - len;
        m &= m >> s;
        len += s;
    }
    return (uint32_t)__builtin_ctzll(m);
}

/* ---- the tree ----------------------------------------------------------------------- */

/* The parent of l and r, each spanning half indices. */
static inline node combine(node l, node r, uint32_t half)
{
    node p;
    uint32_t m = l.max > r.max ? l.max : r.max;
    uint32_t mid = l.suf + r.pre;
    p.max = mid > m ? mid : m;
    p.pre = l.pre == half ? half + r.pre : l.pre;
    p.suf = r.suf == half ? half + l.suf : r.suf;
    return p;
}

static inline node get(const fast_spool *sp, uint32_t i)
{
    return i >= sp->leaves ? leaf_of(sp->bits[i - sp->leaves]) : sp->tree[i];
}

static inline int node_eq(node a, node b)
{
    return a.max == b.max && a.pre == b.pre && a.suf == b.suf;
}

/* ---- summaries ---------------------------------------------------------------------- */

static void hb_init(hbits *h, uint32_t bits)
{
    h->levels = 0;
    do {
        uint32_t n = (bits + 63) / 64;
        PTL_ASSERT(h->levels < HB_LEVELS);
        h->n[h->levels] = n;
        h->l[h->levels] = ptl__xcalloc(n, sizeof(uint64_t));
        h->levels++;
        bits = n;
    } while (bits > 1);
}

static void hb_free(hbits *h)
{
    for (int k = 0; k < h->levels; k++)
        free(h->l[k]);
}

static inline void hb_set(hbits *h, uint32_t pos, int val)
{
    for (int k = 0; k < h->levels; k++) {
        uint64_t *wd = &h->l[k][pos >> 6], old = *wd, bit = 1ull << (pos & 63);
        uint64_t now = val ? old | bit : old & ~bit;
        *wd = now;
        if ((old != 0) == (now != 0))
            return;
        val = now != 0;
        pos >>= 6;
    }
}

/* First set bit of level 0 at or after pos, or NONE. */
static inline uint32_t hb_next(const hbits *h, uint32_t pos)
{
    int k = 0;
    uint32_t q = pos;
    for (;;) {
        uint32_t wi = q >> 6;
        if (wi >= h->n[k])
            return NONE;
        uint64_t m = h->l[k][wi] & (~0ull << (q & 63));
        if (m) {
            q = wi * 64 + (uint32_t)__builtin_ctzll(m);
            break;
        }
        q = wi + 1;
        if (++k >= h->levels)
            return NONE;
    }
    while (k > 0) {
        k--;
        q = q * 64 + (uint32_t)__builtin_ctzll(h->l[k][q]);
    }
    return q;
}

/* Last set bit of level 0 at or before pos (pos may be -1), or -1. */
static inline int64_t hb_prev(const hbits *h, int64_t pos)
{
    int k = 0;
    int64_t q = pos;
    for (;;) {
        if (q < 0)
            return -1;
        uint32_t wi = (uint32_t)(q >> 6);
        uint64_t keep = (q & 63) == 63 ? ~0ull : (2ull << (q & 63)) - 1;
        uint64_t m = h->l[k][wi] & keep;
        if (m) {
            q = (int64_t)wi * 64 + 63 - __builtin_clzll(m);
            break;
        }
        q = (int64_t)wi - 1;
        if (++k >= h->levels)
            return -1;
    }
    while (k > 0) {
        k--;
        q = q * 64 + 63 - __builtin_clzll(h->l[k][q]);
    }
    return q;
}

/* Set (freeing) or clear the bits of [start, start+n), n >= 1, and repair the tree. */
static void paint(fast_spool *sp, uint32_t start, uint32_t n, int freeing)
{
    uint32_t last = start + n - 1;
    uint32_t w0 = start >> 6, w1 = last >> 6;
    for (uint32_t w = w0; w <= w1; w++) {
        uint64_t mask = ~0ull;
        if (w == w0)
            mask &= ~0ull << (start & 63);
        if (w == w1)
            mask &= ~0ull >> (63 - (last & 63));
        uint64_t old = sp->bits[w], x = freeing ? old | mask : old & ~mask;
        sp->bits[w] = x;
        if ((old == ~0ull) != (x == ~0ull))
            hb_set(&sp->notfull, w, x != ~0ull);
        if ((old == 0) != (x == 0))
            hb_set(&sp->notempty, w, x != 0);
    }
    if (sp->leaves == 1)
        return;
    uint32_t lo = (sp->leaves + w0) >> 1, hi = (sp->leaves + w1) >> 1, half = 64;
    while (lo != hi) { /* a range of nodes: level by level */
        for (uint32_t i = lo; i <= hi; i++)
            sp->tree[i] = combine(get(sp, 2 * i), get(sp, 2 * i + 1), half);
        lo >>= 1;
        hi >>= 1;
        half *= 2;
    }
    /* one path: carry the new node up in registers, stop where nothing changes */
    uint32_t i = lo;
    node cur = combine(get(sp, 2 * i), get(sp, 2 * i + 1), half);
    for (;;) {
        if (node_eq(sp->tree[i], cur))
            return;
        sp->tree[i] = cur;
        if (i == 1)
            return;
        node sib = sp->tree[i ^ 1];
        half *= 2;
        cur = (i & 1) ? combine(sib, cur, half) : combine(cur, sib, half);
        i >>= 1;
    }
}

/* ---- searches ----------------------------------------------------------------------- */

/* First reserved index >= x, or total when none (x <= total). */
static inline uint32_t next_reserved(const fast_spool *sp, uint32_t x)
{
    if (x >= sp->total)
        return sp->total;
    uint32_t w = x >> 6;
    uint64_t word = ~sp->bits[w] & (~0ull << (x & 63));
    if (word)
        return w * 64 + (uint32_t)__builtin_ctzll(word); /* padding bits are reserved */
    uint32_t w2 = hb_next(&sp->notfull, w + 1);
    if (w2 == NONE)
        return sp->total;
    uint32_t r = w2 * 64 + (uint32_t)__builtin_ctzll(~sp->bits[w2]);
    return r < sp->total ? r : sp->total;
}

/* Last reserved index <= x, or -1 when none (x < total). */
static inline int64_t prev_reserved(const fast_spool *sp, uint32_t x)
{
    uint32_t w = x >> 6;
    uint64_t keep = (x & 63) == 63 ? ~0ull : (2ull << (x & 63)) - 1;
    uint64_t word = ~sp->bits[w] & keep;
    if (word)
        return (int64_t)w * 64 + 63 - __builtin_clzll(word);
    int64_t w2 = hb_prev(&sp->notfull, (int64_t)w - 1);
    if (w2 < 0)
        return -1;
    return w2 * 64 + 63 - __builtin_clzll(~sp->bits[w2]);
}

/* First free index >= x, or total when none. */
static inline uint32_t next_free(const fast_spool *sp, uint32_t x)
{
    if (x >= sp->total)
        return sp->total;
    uint32_t w = x >> 6;
    uint64_t word = sp->bits[w] & (~0ull << (x & 63));
    if (word)
        return w * 64 + (uint32_t)__builtin_ctzll(word);
    uint32_t w2 = hb_next(&sp->notempty, w + 1);
    if (w2 == NONE)
        return sp->total;
    return w2 * 64 + (uint32_t)__builtin_ctzll(sp->bits[w2]);
}

static inline int bit_free(const fast_spool *sp, uint32_t i)
{
    return (sp->bits[i >> 6] >> (i & 63)) & 1;
}

/* ---- statistics --------------------------------------------------------------------- */

static inline int bucket(uint32_t len) /* ptl__spool_hist_bucket, inlined */
{
    int b = 31 - __builtin_clz(len);
    return b >= PTL_SPOOL_HIST ? PTL_SPOOL_HIST - 1 : b;
}

static inline void run_add(fast_spool *sp, uint32_t len)
{
    if (len) {
        sp->runs++;
        sp->hist[bucket(len)]++;
    }
}

static inline void run_remove(fast_spool *sp, uint32_t len)
{
    if (len) {
        sp->runs--;
        sp->hist[bucket(len)]--;
    }
}

/* ---- operations --------------------------------------------------------------------- */

ptl__spool *ptl__spool_fast_create(uint32_t total, int policy)
{
    fast_spool *sp = ptl__xcalloc(1, sizeof *sp);
    sp->base.ops = &fast_ops;
    sp->total = total;
    sp->policy = policy;
    uint32_t words = (uint32_t)(((uint64_t)total + 63) / 64);
    sp->leaves = 1;
    while (sp->leaves < words)
        sp->leaves *= 2;
    sp->bits = ptl__xcalloc(sp->leaves, sizeof *sp->bits);
    sp->tree = ptl__xcalloc(sp->leaves > 1 ? sp->leaves : 2, sizeof *sp->tree);
    hb_init(&sp->notfull, sp->leaves);
    hb_init(&sp->notempty, sp->leaves);
    for (uint32_t w = 0; w < sp->leaves; w++) {
        uint32_t left = w < words ? total - w * 64 : 0;
        sp->bits[w] = left >= 64 ? ~0ull : (1ull << left) - 1;
        if (sp->bits[w] != ~0ull)
            hb_set(&sp->notfull, w, 1);
        if (sp->bits[w] != 0)
            hb_set(&sp->notempty, w, 1);
    }
    uint32_t half = 64;
    for (uint32_t lo = sp->leaves / 2; lo >= 1; lo /= 2, half *= 2)
        for (uint32_t i = lo; i < 2 * lo; i++)
            sp->tree[i] = combine(get(sp, 2 * i), get(sp, 2 * i + 1), half);
    sp->free = total;
    run_add(sp, total);
    return &sp->base;
}

static void fast_destroy(ptl__spool *base)
{
    fast_spool *sp = FAST(base);
    free(sp->bits);
    free(sp->tree);
    hb_free(&sp->notfull);
    hb_free(&sp->notempty);
    free(sp);
}

static int64_t fast_alloc(ptl__spool *base, uint32_t n)
{
    fast_spool *sp = FAST(base);
    if (get(sp, 1).max < n)
        return -1;
    uint32_t i = 1, at;
    uint64_t lo = 0, half = (uint64_t)sp->leaves * 32; /* span of i's children */
    for (;;) {
        if (i >= sp->leaves) {
            at = (uint32_t)lo + word_window(sp->bits[i - sp->leaves], n);
            break;
        }
        node l = get(sp, 2 * i), r = get(sp, 2 * i + 1);
        if (l.max >= n) {
            i = 2 * i;
        } else if ((uint64_t)l.suf + r.pre >= n) {
            at = (uint32_t)(lo + half - l.suf);
            break;
        } else {
            i = 2 * i + 1;
            lo += half;
        }
        half /= 2;
    }
    /* at: the low end of the lowest run that fits; end: that run's end */
    uint32_t end = next_reserved(sp, at + n);
    uint32_t start = sp->policy == 0 ? at : end - n;
    run_remove(sp, end - at);
    run_add(sp, end - at - n);
    sp->free -= n;
    paint(sp, start, n, 0);
    return start;
}

static int fast_reserve_at(ptl__spool *base, uint32_t start, uint32_t n)
{
    fast_spool *sp = FAST(base);
    if (n == 0 || start >= sp->total || n > sp->total - start)
        return -1;
    if (next_reserved(sp, start) < start + n)
        return -1;
    uint32_t a = start == 0 ? 0 : (uint32_t)(prev_reserved(sp, start - 1) + 1);
    uint32_t end = next_reserved(sp, start + n);
    run_remove(sp, end - a);
    run_add(sp, start - a);
    run_add(sp, end - start - n);
    sp->free -= n;
    paint(sp, start, n, 0);
    return 0;
}

static int fast_is_reserved(const ptl__spool *base, uint32_t start, uint32_t n)
{
    const fast_spool *sp = CFAST(base);
    if (n == 0 || start >= sp->total || n > sp->total - start)
        return 0;
    return next_free(sp, start) >= start + n;
}

static void fast_release(ptl__spool *base, uint32_t start, uint32_t n)
{
    fast_spool *sp = FAST(base);
    PTL_ASSERT(fast_is_reserved(base, start, n));
    uint32_t a = start, end = start + n;
    if (start > 0 && bit_free(sp, start - 1))
        a = (uint32_t)(prev_reserved(sp, start - 1) + 1);
    if (end < sp->total && bit_free(sp, end))
        end = next_reserved(sp, end);
    run_remove(sp, start - a);
    run_remove(sp, end - start - n);
    run_add(sp, end - a);
    sp->free += n;
    paint(sp, start, n, 1);
}

static uint32_t fast_free_count(const ptl__spool *base)
{
    return CFAST(base)->free;
}

static uint32_t fast_largest(const ptl__spool *base)
{
    return get(CFAST(base), 1).max;
}

static void fast_stats_get(const ptl__spool *base, ptl__spool_stats *out)
{
    const fast_spool *sp = CFAST(base);
    out->total = sp->total;
    out->free = sp->free;
    out->largest = get(sp, 1).max;
    out->runs = sp->runs;
    memcpy(out->hist, sp->hist, sizeof out->hist);
}

static void fast_each_free(const ptl__spool *base, int (*fn)(void *, uint32_t, uint32_t), void *ctx)
{
    const fast_spool *sp = CFAST(base);
    for (uint32_t s = next_free(sp, 0); s < sp->total;) {
        uint32_t e = next_reserved(sp, s);
        if (fn(ctx, s, e - s))
            return;
        s = next_free(sp, e);
    }
}

/* The check's own scan, independent of the tree: first index >= x whose bit is v. */
static uint32_t scan_bits(const fast_spool *sp, uint32_t x, int v)
{
    for (uint64_t i = x; i < sp->total;) {
        uint64_t word = sp->bits[i >> 6];
        if (!v)
            word = ~word;
        word &= ~0ull << (i & 63);
        if (word) {
            uint64_t r = (i & ~63ull) + (uint64_t)__builtin_ctzll(word);
            return r < sp->total ? (uint32_t)r : sp->total;
        }
        i = (i | 63) + 1;
    }
    return sp->total;
}

static int fast_check(const ptl__spool *base, FILE *why)
{
    const fast_spool *sp = CFAST(base);
    uint32_t words = (uint32_t)(((uint64_t)sp->total + 63) / 64);
    for (uint32_t w = 0; w < sp->leaves; w++) {
        uint64_t may =
            w < words ? (sp->total - w * 64 >= 64 ? ~0ull : (1ull << (sp->total - w * 64)) - 1) : 0;
        if (sp->bits[w] & ~may) {
            fprintf(why, "spool: word %u has free bits beyond the end %u\n", w, sp->total);
            return -1;
        }
        int nf = sp->bits[w] != ~0ull, ne = sp->bits[w] != 0;
        if (((sp->notfull.l[0][w >> 6] >> (w & 63)) & 1) != (uint64_t)nf ||
            ((sp->notempty.l[0][w >> 6] >> (w & 63)) & 1) != (uint64_t)ne) {
            fprintf(why, "spool: the summaries disagree with word %u\n", w);
            return -1;
        }
    }
    const hbits *hs[2] = {&sp->notfull, &sp->notempty};
    for (int h = 0; h < 2; h++) {
        for (int k = 0; k + 1 < hs[h]->levels; k++) {
            for (uint32_t j = 0; j < hs[h]->n[k]; j++) {
                uint64_t up = (hs[h]->l[k + 1][j >> 6] >> (j & 63)) & 1;
                if (up != (hs[h]->l[k][j] != 0)) {
                    fprintf(why, "spool: summary level %d bit %u is wrong\n", k + 1, j);
                    return -1;
                }
            }
        }
    }
    /* bottom up: every internal node against its children (words, or nodes checked) */
    uint32_t half = 64;
    for (uint32_t lo = sp->leaves / 2; lo >= 1; lo /= 2, half *= 2) {
        for (uint32_t i = lo; i < 2 * lo; i++) {
            node want = combine(get(sp, 2 * i), get(sp, 2 * i + 1), half);
            if (!node_eq(want, sp->tree[i])) {
                fprintf(why, "spool: node %u is {%u,%u,%u}, its children give {%u,%u,%u}\n", i,
                        sp->tree[i].max, sp->tree[i].pre, sp->tree[i].suf, want.max, want.pre,
                        want.suf);
                return -1;
            }
        }
    }
    ptl__spool_stats st;
    memset(&st, 0, sizeof st);
    for (uint32_t s = scan_bits(sp, 0, 1); s < sp->total;) {
        uint32_t e = scan_bits(sp, s, 0);
        st.runs++;
        st.free += e - s;
        if (e - s > st.largest)
            st.largest = e - s;
        st.hist[ptl__spool_hist_bucket(e - s)]++;
        s = scan_bits(sp, e, 1);
    }
    if (st.free != sp->free || st.runs != sp->runs || st.largest != get(sp, 1).max ||
        memcmp(st.hist, sp->hist, sizeof st.hist) != 0) {
        fprintf(why,
                "spool: counters say %u free in %u runs (largest %u), the bitmap holds %u free "
                "in %u runs (largest %u)%s\n",
                sp->free, sp->runs, get(sp, 1).max, st.free, st.runs, st.largest,
                memcmp(st.hist, sp->hist, sizeof st.hist) ? "; histograms differ" : "");
        return -1;
    }
    return 0;
}

static const ptl__spool_ops fast_ops = {
    fast_destroy,    fast_alloc,   fast_reserve_at, fast_release,   fast_is_reserved,
    fast_free_count, fast_largest, fast_stats_get,  fast_each_free, fast_check,
};
