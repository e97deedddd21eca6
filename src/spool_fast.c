/* spool_fast.c - the fast run allocator: a bitmap of 64-bit words under a 16-ary tree of
 * maxima.
 *
 * Same answers as spool_ref.c, bit for bit, in O(log n) per operation (plus n/64 word
 * updates for a run of n). The index space [0, total) is a bitmap, bit set = free, index
 * i at bit i%64 of word i/64; bits at and beyond total stay clear.
 *
 * The key to placement. The reference takes the lowest-addressed maximal free run of
 * length >= n. Give every word a value: the longest free run that *starts* in it (a run
 * that merely continues from the word before does not count there; a run that starts in
 * the word may run on for many words). The lowest run that fits then starts in the lowest
 * word whose value is >= n, and inside that word it is the lowest window of n free bits
 * that starts after the continued prefix, or else the run that reaches the word's end.
 *
 * Over the word values sits an implicit 16-ary tree of maxima: level 0 holds one value
 * per word, level k+1 the maximum of each 16 consecutive entries of level k, up to a top
 * level of at most 16 entries. A node is 16 uint32 = one cache line, so a descent from the
 * top touches one line per level (3 levels above the words at 50,000 indices, 5 at
 * 2^25), and finds its child with a 16-wide compare. An update sets a word's value and
 * climbs while the maximum above changes; it rescans a node only when its maximum shrank.
 *
 * An operation changes the starts or lengths of at most three runs, so at most three
 * word values change: those of the words holding the run's start, the request's start and
 * the index just after the request (see touch_words).
 *
 * Next-reserved and previous-reserved searches go through a 64-ary summary of the words
 * ("has a reserved bit"): 3 or 4 steps at 2^25. Whether a range is reserved is a look at
 * its n/64 words; visiting the free runs (each_free) scans the words.
 *
 * Statistics are kept as runs split and merge: each operation knows the lengths of the
 * runs it removes and adds, so free, runs and the histogram change in O(1); largest is
 * the maximum of the top level, kept as it changes. Invariants (ptl__spool_check, O(n)):
 * bits beyond total are reserved; the summaries match the words; every word value equals
 * a recount from the bitmap, every upper entry the maximum of its 16 children, largest
 * the maximum of the top; the counters equal a recount of the bitmap.
 */
#include "internal.h"
#include "spool.h"

#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define FAN        16 /* entries per node: 16 uint32, one cache line */
#define MAX_LEVELS 8  /* 2^26 words need 7 */

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
    uint32_t words;               /* bitmap words: ceil(total / 64) */
    uint64_t *bits;               /* bit set = free; bits >= total stay clear */
    int top;                      /* the top level: at most FAN entries */
    uint32_t *level[MAX_LEVELS];  /* level 0: word values; k+1: maxima of FAN of level k */
    uint32_t entries[MAX_LEVELS]; /* entries of each level, a multiple of FAN */
    uint32_t largest;             /* the maximum of the top level */
    hbits notfull;                /* word has a reserved bit */
    uint32_t free, runs;
    uint32_t hist[PTL_SPOOL_HIST];
} fast_spool;

#define FAST(sp)  ((fast_spool *)(sp))
#define CFAST(sp) ((const fast_spool *)(sp))
#define NONE      UINT32_MAX

static const ptl__spool_ops fast_ops;

/* ---- words -------------------------------------------------------------------------- */

/* The longest run of set bits in x: double the window while one fits, then refine. */
static inline uint32_t word_maxrun(uint64_t x)
{
    if (!x)
        return 0;
    uint64_t w[7]; /* w[k]: bit i set when bits i .. i+2^k-1 of x all are */
    int k = 0;
    w[0] = x;
    while (k < 6) {
        uint64_t next = w[k] & (w[k] >> (1u << k));
        if (!next)
            break;
        w[++k] = next;
    }
    if (k == 6)
        return 64;
    /* runs of 2^k fit, runs of 2^(k+1) do not: add the lower powers one by one */
    uint64_t cur = w[k];
    uint32_t len = 1u << k;
    for (int j = k - 1; j >= 0; j--) {
        uint64_t t = cur & (w[j] >> len);
        if (t) {
            cur = t;
            len += 1u << j;
        }
    }
    return len;
}

/* Bit i set when bits i .. i+n-1 of x all are (1 <= n <= 64). */
static inline uint64_t word_windows(uint64_t x, uint32_t n)
{
    uint64_t m = x;
    uint32_t len = 1;
    while (len < n && m) {
        uint32_t s = len < n - len ? len : n - len;
        m &= m >> s;
        len += s;
    }
    return m;
}

/* The first of FAN entries that is >= n; the caller knows there is one. */
static inline uint32_t first_ge(const uint32_t *a, uint32_t n)
{
#if defined(__SSE2__)
    /* entries and n are below 2^31: a signed compare is exact */
    __m128i lim = _mm_set1_epi32((int)(n - 1));
    const __m128i *v = (const __m128i *)a;
    __m128i lo = _mm_packs_epi32(_mm_cmpgt_epi32(_mm_loadu_si128(v), lim),
                                 _mm_cmpgt_epi32(_mm_loadu_si128(v + 1), lim));
    __m128i hi = _mm_packs_epi32(_mm_cmpgt_epi32(_mm_loadu_si128(v + 2), lim),
                                 _mm_cmpgt_epi32(_mm_loadu_si128(v + 3), lim));
    uint32_t mask = (uint32_t)_mm_movemask_epi8(_mm_packs_epi16(lo, hi));
    PTL_ASSERT(mask != 0);
    return (uint32_t)__builtin_ctz(mask);
#else
    for (uint32_t j = 0; j < FAN; j++)
        if (a[j] >= n)
            return j;
    PTL_ASSERT(!"no entry fits");
    return 0;
#endif
}

#if defined(__SSE2__)
static inline __m128i max4(__m128i a, __m128i b) /* SSE2 has no unsigned max: signed is exact */
{
    __m128i gt = _mm_cmpgt_epi32(a, b);
    return _mm_or_si128(_mm_and_si128(gt, a), _mm_andnot_si128(gt, b));
}
#endif

/* The maximum of FAN entries. */
static inline uint32_t max_of(const uint32_t *a)
{
#if defined(__SSE2__)
    const __m128i *v = (const __m128i *)a;
    __m128i m = max4(max4(_mm_loadu_si128(v), _mm_loadu_si128(v + 1)),
                     max4(_mm_loadu_si128(v + 2), _mm_loadu_si128(v + 3)));
    m = max4(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(1, 0, 3, 2)));
    m = max4(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(2, 3, 0, 1)));
    return (uint32_t)_mm_cvtsi128_si32(m);
#else
    uint32_t m = a[0];
    for (int j = 1; j < FAN; j++)
        m = a[j] > m ? a[j] : m;
    return m;
#endif
}

/* The maximum of FAN entries with entry lane read as v: set_value's new maximum, computed
 * before it stores v. Loading a node right after a 4-byte store into it cannot forward the
 * store to the 16-byte loads, and that stall was a third of set_value's time. */
static inline uint32_t max_with(const uint32_t *a, uint32_t lane, uint32_t v)
{
#if defined(__SSE2__)
    const __m128i *p = (const __m128i *)a;
    __m128i vs = _mm_set1_epi32((int)v), at = _mm_set1_epi32((int)lane);
    __m128i m = _mm_setzero_si128();
    for (int q = 0; q < 4; q++) {
        __m128i ids = _mm_add_epi32(_mm_set_epi32(3, 2, 1, 0), _mm_set1_epi32(4 * q));
        __m128i here = _mm_cmpeq_epi32(ids, at);
        __m128i x =
            _mm_or_si128(_mm_and_si128(here, vs), _mm_andnot_si128(here, _mm_loadu_si128(p + q)));
        m = max4(m, x);
    }
    m = max4(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(1, 0, 3, 2)));
    m = max4(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(2, 3, 0, 1)));
    return (uint32_t)_mm_cvtsi128_si32(m);
#else
    uint32_t m = 0;
    for (uint32_t j = 0; j < FAN; j++) {
        uint32_t x = j == lane ? v : a[j];
        m = x > m ? x : m;
    }
    return m;
#endif
}

/* ---- summaries ---------------------------------------------------------------------- */

static void hb_init(hbits *h, uint32_t bits)
{
    h->levels = 0;
    do {
        uint32_t n = (bits + 63) / 64;
        PTL_ASSERT(h->levels < HB_LEVELS);
        h->n[h->levels] = n;
        h->l[h->levels] = ptl__xcalloc_huge(n, sizeof(uint64_t));
        h->levels++;
        bits = n;
    } while (bits > 1);
}

static void hb_free(hbits *h)
{
    for (int k = 0; k < h->levels; k++)
        free(h->l[k]);
}

/* Bit pos of level k becomes val; the levels above follow while a u64 turns zero or
 * nonzero. */
static inline void hb_set_one(hbits *h, int k, uint32_t pos, int val)
{
    for (; k < h->levels; k++) {
        uint64_t *wd = &h->l[k][pos >> 6], old = *wd, bit = 1ull << (pos & 63);
        uint64_t now = val ? old | bit : old & ~bit;
        *wd = now;
        if ((old != 0) == (now != 0))
            return;
        val = now != 0;
        pos >>= 6;
    }
}

static inline void hb_set(hbits *h, uint32_t pos, int val)
{
    hb_set_one(h, 0, pos, val);
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

/* Set (freeing) or clear the bits of [start, start+n), n >= 1, with the summaries. */
static void paint_word(fast_spool *sp, uint32_t w, uint64_t mask, int freeing)
{
    uint64_t old = sp->bits[w], x = freeing ? old | mask : old & ~mask;
    sp->bits[w] = x;
    if ((old == ~0ull) != (x == ~0ull))
        hb_set(&sp->notfull, w, x != ~0ull);
}

/* The bits of word w that [first, last] (bit indices, inclusive) covers. */
static inline uint64_t span_mask(uint32_t w, uint32_t first, uint32_t last)
{
    uint64_t mask = ~0ull;
    if (w == first >> 6)
        mask &= ~0ull << (first & 63);
    if (w == last >> 6)
        mask &= ~0ull >> (63 - (last & 63));
    return mask;
}

/* Set the level-0 summary bits of words [lo, hi] to val (1: has a reserved bit); where a
 * u64 of level 0 turns zero or nonzero, its bit in the levels above follows. */
static void hb_set_range(hbits *h, uint32_t lo, uint32_t hi, int val)
{
    for (uint32_t j = lo >> 6; j <= hi >> 6; j++) {
        uint64_t mask = span_mask(j, lo, hi);
        uint64_t old = h->l[0][j], now = val ? old | mask : old & ~mask;
        h->l[0][j] = now;
        if ((old != 0) != (now != 0) && h->levels > 1)
            hb_set_one(h, 1, j, now != 0);
    }
}

/* Set (freeing) or clear the bits of [start, start+n), n >= 1, with the summaries. The
 * words strictly inside the run become all free or all reserved at once. */
static void paint(fast_spool *sp, uint32_t start, uint32_t n, int freeing)
{
    uint32_t last = start + n - 1;
    uint32_t w0 = start >> 6, w1 = last >> 6;
    paint_word(sp, w0, span_mask(w0, start, last), freeing);
    if (w0 == w1)
        return;
    paint_word(sp, w1, span_mask(w1, start, last), freeing);
    if (w1 - w0 < 2)
        return;
    const uint64_t fill = freeing ? ~0ull : 0;
    int changed = 0;
    for (uint32_t w = w0 + 1; w < w1; w++) {
        changed |= sp->bits[w] != fill;
        sp->bits[w] = fill;
    }
    if (changed) /* whole words: all free has no reserved bit, all reserved has one */
        hb_set_range(&sp->notfull, w0 + 1, w1 - 1, !freeing);
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

/* First free index >= x, or total when none: a scan of the words (each_free only). */
static inline uint32_t next_free(const fast_spool *sp, uint32_t x)
{
    for (uint64_t i = x; i < sp->total;) {
        uint64_t word = sp->bits[i >> 6] & (~0ull << (i & 63));
        if (word)
            return (uint32_t)((i & ~63ull) + (uint64_t)__builtin_ctzll(word));
        i = (i | 63) + 1;
    }
    return sp->total;
}

static inline int bit_free(const fast_spool *sp, uint32_t i)
{
    return (sp->bits[i >> 6] >> (i & 63)) & 1;
}

/* ---- word values and the tree of maxima ---------------------------------------------- */

/* The bits of word w that belong to runs starting in it: the prefix that continues a run
 * from the word before is cleared. */
static inline uint64_t starting_bits(const fast_spool *sp, uint32_t w)
{
    uint64_t x = sp->bits[w];
    if (w > 0 && (sp->bits[w - 1] >> 63) && x) {
        if (x == ~0ull)
            return 0;
        x &= ~0ull << __builtin_ctzll(~x);
    }
    return x;
}

/* The first bit of the run that reaches bit 63 of x (x has bit 63 set). */
static inline uint32_t suffix_start(uint64_t x)
{
    return x == ~0ull ? 0 : 64 - (uint32_t)__builtin_clzll(~x);
}

/* A free run the operation just made, whose end need not be searched for again. */
typedef struct known_run {
    uint32_t start, end;
} known_run;

/* Word w's value: the longest free run that starts in it. k[0..1]: runs whose ends are
 * known (start == end: none). */
static uint32_t word_value(const fast_spool *sp, uint32_t w, const known_run *k)
{
    uint64_t x = starting_bits(sp, w);
    if (!x)
        return 0;
    uint32_t best = 0;
    if (x >> 63) { /* the last run may go on into the next words */
        uint32_t s = suffix_start(x), at = w * 64 + s;
        uint32_t end = at == k[0].start && k[0].end > at   ? k[0].end
                       : at == k[1].start && k[1].end > at ? k[1].end
                                                           : next_reserved(sp, (w + 1) * 64);
        best = end - at;
        x = s ? x & ((1ull << s) - 1) : 0;
    }
    if (x) {
        uint32_t in = word_maxrun(x);
        best = in > best ? in : best;
    }
    return best;
}

/* Set entry idx of level 0 to v and carry the change up while a maximum changes. */
static void set_value(fast_spool *sp, uint32_t idx, uint32_t v)
{
    for (int k = 0;; k++) {
        uint32_t *a = sp->level[k];
        uint32_t old = a[idx];
        if (old == v)
            return;
        uint32_t above = k < sp->top ? sp->level[k + 1][idx / FAN] : sp->largest;
        if (v < above && old < above) {
            a[idx] = v;
            return; /* neither was the maximum: it stands */
        }
        uint32_t now =
            v >= above ? v : max_with(a + (idx & ~(uint32_t)(FAN - 1)), idx & (FAN - 1), v);
        a[idx] = v;
        if (k == sp->top) {
            sp->largest = now;
            return;
        }
        v = now;
        idx /= FAN;
    }
}

/* Recompute the values of the words an operation may have changed: those holding the
 * start of the (old or merged) run a, the request's start, and the index after it. k: the
 * free runs the operation left, their ends known. */
static void touch_words(fast_spool *sp, uint32_t a, uint32_t start, uint32_t after,
                        const known_run *k)
{
    uint32_t w0 = a >> 6, w1 = start >> 6, w2 = after < sp->total ? after >> 6 : NONE;
    set_value(sp, w0, word_value(sp, w0, k));
    if (w1 != w0)
        set_value(sp, w1, word_value(sp, w1, k));
    if (w2 != NONE && w2 != w0 && w2 != w1)
        set_value(sp, w2, word_value(sp, w2, k));
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
    sp->words = (uint32_t)(((uint64_t)total + 63) / 64);
    uint32_t words = sp->words ? sp->words : 1;
    sp->bits = ptl__xcalloc_huge(words, sizeof *sp->bits);
    for (uint32_t w = 0; w < sp->words; w++) {
        uint32_t left = total - w * 64;
        sp->bits[w] = left >= 64 ? ~0ull : (1ull << left) - 1;
    }
    hb_init(&sp->notfull, words);
    for (uint32_t w = 0; w < words; w++)
        if (sp->bits[w] != ~0ull)
            hb_set(&sp->notfull, w, 1);
    /* levels: round each up to whole nodes; the top has one node */
    uint32_t n = words;
    for (int k = 0;; k++) {
        PTL_ASSERT(k < MAX_LEVELS);
        sp->entries[k] = (n + FAN - 1) / FAN * FAN;
        sp->level[k] = ptl__xcalloc_huge(sp->entries[k], sizeof(uint32_t));
        sp->top = k;
        if (sp->entries[k] == FAN)
            break;
        n = sp->entries[k] / FAN;
    }
    if (total) { /* one run: it starts in word 0 */
        sp->level[0][0] = total;
        for (int k = 1; k <= sp->top; k++)
            sp->level[k][0] = total;
    }
    sp->largest = total;
    sp->free = total;
    run_add(sp, total);
    return &sp->base;
}

static void fast_destroy(ptl__spool *base)
{
    fast_spool *sp = FAST(base);
    free(sp->bits);
    for (int k = 0; k <= sp->top; k++)
        free(sp->level[k]);
    hb_free(&sp->notfull);
    free(sp);
}

static int64_t fast_alloc(ptl__spool *base, uint32_t n)
{
    fast_spool *sp = FAST(base);
    if (sp->largest < n)
        return -1;
    uint32_t idx = 0; /* descend: the first entry >= n at every level */
    for (int k = sp->top; k >= 0; k--) {
        if (k == 0) /* the 16 words below this node: fetch them with the node itself */
            for (uint32_t line = 0; line < FAN; line += 8)
                __builtin_prefetch(&sp->bits[idx * FAN + line]);
        idx = idx * FAN + first_ge(sp->level[k] + idx * FAN, n);
    }
    /* idx: the lowest word where a run of >= n starts; now the run itself */
    uint64_t x = starting_bits(sp, idx);
    uint64_t fits = n <= 64 ? word_windows(x, n) : 0;
    PTL_ASSERT(fits || (x >> 63)); /* else the value lied */
    uint32_t at = idx * 64 + (fits ? (uint32_t)__builtin_ctzll(fits) : suffix_start(x));
    /* at: the low end of the lowest run that fits; end: that run's end */
    uint32_t end = next_reserved(sp, at + n);
    uint32_t start = sp->policy == 0 ? at : end - n;
    run_remove(sp, end - at);
    run_add(sp, end - at - n);
    sp->free -= n;
    paint(sp, start, n, 0);
    known_run k[2] = {{start + n, end}, {at, start}}; /* the remainder: high or low side */
    touch_words(sp, at, start, start + n, k);
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
    known_run k[2] = {{a, start}, {start + n, end}};
    touch_words(sp, a, start, start + n, k);
    return 0;
}

static int fast_is_reserved(const ptl__spool *base, uint32_t start, uint32_t n)
{
    const fast_spool *sp = CFAST(base);
    if (n == 0 || start >= sp->total || n > sp->total - start)
        return 0;
    uint32_t last = start + n - 1, w0 = start >> 6, w1 = last >> 6; /* O(n/64) words */
    for (uint32_t w = w0; w <= w1; w++) {
        uint64_t mask = span_mask(w, start, last);
        if (sp->bits[w] & mask)
            return 0;
    }
    return 1;
}

static void fast_release(ptl__spool *base, uint32_t start, uint32_t n)
{
    fast_spool *sp = FAST(base);
    /* A release at a random index misses the cache on its bitmap word, its word value and
     * the node above; their addresses are known now, so start all three misses at once
     * instead of one after the other (a mispredicted branch between them would cancel
     * the processor's own run-ahead). */
    uint32_t w = start >> 6;
    __builtin_prefetch(&sp->bits[w]);
    __builtin_prefetch(&sp->level[0][w]);
    if (sp->top > 0)
        __builtin_prefetch(&sp->level[1][w / FAN]);
    __builtin_prefetch(&sp->notfull.l[0][w >> 6]);
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
    known_run k[2] = {{a, end}, {a, a}};
    touch_words(sp, a, start, start + n, k);
}

static uint32_t fast_free_count(const ptl__spool *base)
{
    return CFAST(base)->free;
}

static uint32_t fast_largest(const ptl__spool *base)
{
    return CFAST(base)->largest;
}

static void fast_stats_get(const ptl__spool *base, ptl__spool_stats *out)
{
    const fast_spool *sp = CFAST(base);
    out->total = sp->total;
    out->free = sp->free;
    out->largest = sp->largest;
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

/* The check's own scan, independent of the summaries: first index >= x whose bit is v. */
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
    for (uint32_t w = 0; w < sp->words; w++) {
        uint64_t may = sp->total - w * 64 >= 64 ? ~0ull : (1ull << (sp->total - w * 64)) - 1;
        if (sp->bits[w] & ~may) {
            fprintf(why, "spool: word %u has free bits beyond the end %u\n", w, sp->total);
            return -1;
        }
        int nf = sp->bits[w] != ~0ull;
        if (((sp->notfull.l[0][w >> 6] >> (w & 63)) & 1) != (uint64_t)nf) {
            fprintf(why, "spool: the summaries disagree with word %u\n", w);
            return -1;
        }
    }
    const hbits *hs[1] = {&sp->notfull};
    for (int h = 0; h < 1; h++) {
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
    /* word values from a plain scan of the runs: each run's length at its start word */
    uint32_t *want = ptl__xcalloc(sp->entries[0], sizeof *want);
    ptl__spool_stats st;
    memset(&st, 0, sizeof st);
    for (uint32_t s = scan_bits(sp, 0, 1); s < sp->total;) {
        uint32_t e = scan_bits(sp, s, 0);
        st.runs++;
        st.free += e - s;
        if (e - s > st.largest)
            st.largest = e - s;
        st.hist[ptl__spool_hist_bucket(e - s)]++;
        if (e - s > want[s >> 6])
            want[s >> 6] = e - s;
        s = scan_bits(sp, e, 1);
    }
    int bad = 0;
    for (uint32_t w = 0; w < sp->entries[0] && !bad; w++) {
        if (sp->level[0][w] != want[w]) {
            fprintf(why, "spool: word %u says its longest starting run is %u, the bitmap %u\n", w,
                    sp->level[0][w], want[w]);
            bad = 1;
        }
    }
    free(want);
    if (bad)
        return -1;
    for (int k = 1; k <= sp->top; k++) {
        for (uint32_t j = 0; j < sp->entries[k]; j++) {
            uint32_t m = j < sp->entries[k - 1] / FAN ? max_of(sp->level[k - 1] + j * FAN) : 0;
            if (sp->level[k][j] != m) {
                fprintf(why, "spool: level %d entry %u is %u, its children give %u\n", k, j,
                        sp->level[k][j], m);
                return -1;
            }
        }
    }
    if (sp->largest != max_of(sp->level[sp->top])) {
        fprintf(why, "spool: largest %u is not the top's maximum %u\n", sp->largest,
                max_of(sp->level[sp->top]));
        return -1;
    }
    if (st.free != sp->free || st.runs != sp->runs || st.largest != sp->largest ||
        memcmp(st.hist, sp->hist, sizeof st.hist) != 0) {
        fprintf(why,
                "spool: counters say %u free in %u runs (largest %u), the bitmap holds %u free "
                "in %u runs (largest %u)%s\n",
                sp->free, sp->runs, sp->largest, st.free, st.runs, st.largest,
                memcmp(st.hist, sp->hist, sizeof st.hist) ? "; histograms differ" : "");
        return -1;
    }
    return 0;
}

static const ptl__spool_ops fast_ops = {
    fast_destroy,    fast_alloc,   fast_reserve_at, fast_release,   fast_is_reserved,
    fast_free_count, fast_largest, fast_stats_get,  fast_each_free, fast_check,
};
