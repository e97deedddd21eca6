/* spool.c - the public face of the run allocators: create picks an implementation, every
 * other call goes through the table of operations the spool carries (spool.h).
 *
 *     ptl__spool_create(PTL_SPOOL_REF, ...)   spool_ref.c   sorted array of runs
 *     ptl__spool_create(PTL_SPOOL_FAST, ...)  spool_fast.c  bitmap + segment tree
 *
 * Both place every request at the same index; tests/test-spool-fast.c checks it.
 */
#include "internal.h"
#include "spool.h"

ptl__spool *ptl__spool_create(ptl__spool_impl impl, uint32_t total, int policy)
{
    PTL_ASSERT(impl == PTL_SPOOL_REF || impl == PTL_SPOOL_FAST);
    return impl == PTL_SPOOL_FAST ? ptl__spool_fast_create(total, policy)
                                  : ptl__spool_ref_create(total, policy);
}

void ptl__spool_destroy(ptl__spool *sp)
{
    if (sp)
        sp->ops->destroy(sp);
}

int64_t ptl__spool_alloc(ptl__spool *sp, uint32_t n)
{
    PTL_ASSERT(n >= 1);
    return sp->ops->alloc(sp, n);
}

int ptl__spool_reserve_at(ptl__spool *sp, uint32_t start, uint32_t n)
{
    return sp->ops->reserve_at(sp, start, n);
}

void ptl__spool_free(ptl__spool *sp, uint32_t start, uint32_t n)
{
    sp->ops->release(sp, start, n);
}

int ptl__spool_is_reserved(const ptl__spool *sp, uint32_t start, uint32_t n)
{
    return sp->ops->is_reserved(sp, start, n);
}

uint32_t ptl__spool_free_count(const ptl__spool *sp)
{
    return sp->ops->free_count(sp);
}

uint32_t ptl__spool_largest(const ptl__spool *sp)
{
    return sp->ops->largest(sp);
}

void ptl__spool_stats_get(const ptl__spool *sp, ptl__spool_stats *out)
{
    sp->ops->stats_get(sp, out);
}

void ptl__spool_each_free(const ptl__spool *sp, int (*fn)(void *, uint32_t, uint32_t), void *ctx)
{
    sp->ops->each_free(sp, fn, ctx);
}

int ptl__spool_check(const ptl__spool *sp, FILE *why)
{
    return sp->ops->check(sp, why);
}

int ptl__spool_hist_bucket(uint32_t len)
{
    int b = 31 - __builtin_clz(len);
    return b >= PTL_SPOOL_HIST ? PTL_SPOOL_HIST - 1 : b;
}
