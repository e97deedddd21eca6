/* spool_ref.c - the reference run allocator: a sorted array of maximal free runs.
 *
 * This is the plain, obviously-correct implementation that the fast allocator of the
 * performance issue must match bit for bit, and the one the tests check against a byte
 * map. It favours clarity over speed: allocation is a linear first-fit scan of the runs
 * in address order, release is a binary search and a merge.
 *
 *     free runs (sorted by start, never adjacent, never empty)
 *     [ {s0,l0} {s1,l1} ... ]      s(i) + l(i) < s(i+1)
 *
 * Placement: the first run in address order whose length is at least n. Policy 0 takes
 * its low end, policy 1 its high end. A release merges with the neighbours on each side:
 *
 *     |--free--|  released  |--free--|   ->   |-------------free--------------|
 *
 * Invariants (ptl__spool_check): runs sorted, non-adjacent, non-empty, inside [0,total);
 * free == sum of lengths.
 */
#include "internal.h"
#include "spool.h"

#include <string.h>

typedef struct run {
    uint32_t start, len;
} run;

typedef struct ref_spool {
    ptl__spool base; /* ops: ref_ops */
    uint32_t total;
    int policy;
    uint32_t free;
    run *runs;
    uint32_t nruns, cap;
} ref_spool;

#define REF(sp)  ((ref_spool *)(sp))
#define CREF(sp) ((const ref_spool *)(sp))

static const ptl__spool_ops ref_ops;

ptl__spool *ptl__spool_ref_create(uint32_t total, int policy)
{
    ref_spool *sp = ptl__xcalloc(1, sizeof *sp);
    sp->base.ops = &ref_ops;
    sp->total = total;
    sp->policy = policy;
    sp->free = total;
    sp->cap = 16;
    sp->runs = ptl__xcalloc(sp->cap, sizeof *sp->runs);
    if (total) {
        sp->runs[0] = (run){0, total};
        sp->nruns = 1;
    }
    return &sp->base;
}

static void ref_destroy(ptl__spool *base)
{
    ref_spool *sp = REF(base);
    free(sp->runs);
    free(sp);
}

static void remove_run(ref_spool *sp, uint32_t i)
{
    memmove(&sp->runs[i], &sp->runs[i + 1], (sp->nruns - i - 1) * sizeof(run));
    sp->nruns--;
}

static void insert_run(ref_spool *sp, uint32_t i, run r)
{
    if (sp->nruns == sp->cap) {
        sp->cap *= 2;
        sp->runs = ptl__xrealloc(sp->runs, sp->cap * sizeof(run));
    }
    memmove(&sp->runs[i + 1], &sp->runs[i], (sp->nruns - i) * sizeof(run));
    sp->runs[i] = r;
    sp->nruns++;
}

static int64_t ref_alloc(ptl__spool *base, uint32_t n)
{
    ref_spool *sp = REF(base);
    PTL_ASSERT(n >= 1);
    for (uint32_t i = 0; i < sp->nruns; i++) {
        run *r = &sp->runs[i];
        if (r->len < n)
            continue;
        uint32_t start;
        if (sp->policy == 0) {
            start = r->start;
            r->start += n;
        } else {
            start = r->start + r->len - n;
        }
        r->len -= n;
        if (r->len == 0)
            remove_run(sp, i);
        sp->free -= n;
        return start;
    }
    return -1;
}

static uint32_t upper_bound(const ref_spool *sp, uint32_t x);

static int ref_reserve_at(ptl__spool *base, uint32_t start, uint32_t n)
{
    ref_spool *sp = REF(base);
    if (n == 0 || start >= sp->total || n > sp->total - start)
        return -1;
    uint32_t i = upper_bound(sp, start);
    if (i == 0)
        return -1;
    run *r = &sp->runs[i - 1];
    if ((uint64_t)r->start + r->len < (uint64_t)start + n)
        return -1; /* not wholly inside the free run that begins at or before start */
    uint32_t tail_start = start + n, tail_len = r->start + r->len - tail_start;
    r->len = start - r->start;
    if (r->len == 0) {
        remove_run(sp, i - 1);
        i--;
    }
    if (tail_len)
        insert_run(sp, i, (run){tail_start, tail_len});
    sp->free -= n;
    return 0;
}

/* Index of the first run whose start is > x. */
static uint32_t upper_bound(const ref_spool *sp, uint32_t x)
{
    uint32_t lo = 0, hi = sp->nruns;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (sp->runs[mid].start > x)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static int ref_is_reserved(const ptl__spool *base, uint32_t start, uint32_t n)
{
    const ref_spool *sp = CREF(base);
    if (n == 0 || start >= sp->total || n > sp->total - start)
        return 0;
    uint32_t i = upper_bound(sp, start);
    /* the run before start must end at or before start */
    if (i > 0 && sp->runs[i - 1].start + sp->runs[i - 1].len > start)
        return 0;
    /* the next run must begin at or after start + n */
    if (i < sp->nruns && sp->runs[i].start < start + n)
        return 0;
    return 1;
}

static void ref_release(ptl__spool *base, uint32_t start, uint32_t n)
{
    ref_spool *sp = REF(base);
    PTL_ASSERT(ref_is_reserved(base, start, n));
    uint32_t i = upper_bound(sp, start);
    int merge_left = i > 0 && sp->runs[i - 1].start + sp->runs[i - 1].len == start;
    int merge_right = i < sp->nruns && sp->runs[i].start == start + n;
    if (merge_left && merge_right) {
        sp->runs[i - 1].len += n + sp->runs[i].len;
        remove_run(sp, i);
    } else if (merge_left) {
        sp->runs[i - 1].len += n;
    } else if (merge_right) {
        sp->runs[i].start = start;
        sp->runs[i].len += n;
    } else {
        insert_run(sp, i, (run){start, n});
    }
    sp->free += n;
}

static uint32_t ref_free_count(const ptl__spool *base)
{
    return CREF(base)->free;
}

static uint32_t ref_largest(const ptl__spool *base)
{
    const ref_spool *sp = CREF(base);
    uint32_t best = 0;
    for (uint32_t i = 0; i < sp->nruns; i++)
        if (sp->runs[i].len > best)
            best = sp->runs[i].len;
    return best;
}

static void ref_stats_get(const ptl__spool *base, ptl__spool_stats *out)
{
    const ref_spool *sp = CREF(base);
    memset(out, 0, sizeof *out);
    out->total = sp->total;
    out->free = sp->free;
    out->runs = sp->nruns;
    for (uint32_t i = 0; i < sp->nruns; i++) {
        if (sp->runs[i].len > out->largest)
            out->largest = sp->runs[i].len;
        out->hist[ptl__spool_hist_bucket(sp->runs[i].len)]++;
    }
}

static void ref_each_free(const ptl__spool *base, int (*fn)(void *, uint32_t, uint32_t), void *ctx)
{
    const ref_spool *sp = CREF(base);
    for (uint32_t i = 0; i < sp->nruns; i++)
        if (fn(ctx, sp->runs[i].start, sp->runs[i].len))
            return;
}

static int ref_check(const ptl__spool *base, FILE *why)
{
    const ref_spool *sp = CREF(base);
    uint64_t sum = 0;
    for (uint32_t i = 0; i < sp->nruns; i++) {
        const run *r = &sp->runs[i];
        if (r->len == 0 || r->start >= sp->total || r->len > sp->total - r->start) {
            fprintf(why, "spool: run %u {%u,%u} is empty or outside [0,%u)\n", i, r->start, r->len,
                    sp->total);
            return -1;
        }
        if (i > 0 && sp->runs[i - 1].start + sp->runs[i - 1].len >= r->start) {
            fprintf(why, "spool: runs %u and %u overlap, touch or are out of order\n", i - 1, i);
            return -1;
        }
        sum += r->len;
    }
    if (sum != sp->free) {
        fprintf(why, "spool: runs hold %llu free, counter says %u\n", (unsigned long long)sum,
                sp->free);
        return -1;
    }
    return 0;
}

static const ptl__spool_ops ref_ops = {
    ref_destroy,    ref_alloc,   ref_reserve_at, ref_release,   ref_is_reserved,
    ref_free_count, ref_largest, ref_stats_get,  ref_each_free, ref_check,
};
