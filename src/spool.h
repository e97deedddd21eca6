/* spool.h - allocators of contiguous runs over an index space [0, total): the engine of
 * the system PTE pool. Two implementations with identical placement, bit for bit:
 *   spool_ref.c   the plain reference: a sorted array of free runs, linear first fit;
 *   spool_fast.c  a bitmap of 64-bit words under a segment tree: O(log n) with the same
 *                 answers (the performance issue).
 * spool.c dispatches through the table of operations each spool carries.
 * Tests drive both with the same trace and compare every result. */
#ifndef PTELAB_SPOOL_H
#define PTELAB_SPOOL_H

#include <stdint.h>
#include <stdio.h>

#define PTL_SPOOL_HIST 16 /* bucket k: free runs of length in [2^k, 2^(k+1)) */

typedef enum ptl__spool_impl { PTL_SPOOL_REF = 0, PTL_SPOOL_FAST = 1 } ptl__spool_impl;

typedef struct ptl__spool ptl__spool;

typedef struct ptl__spool_stats {
    uint32_t total, free, largest, runs;
    uint32_t hist[PTL_SPOOL_HIST];
} ptl__spool_stats;

/* policy: 0 take the low end of the lowest run that fits, 1 its high end. */
ptl__spool *ptl__spool_create(ptl__spool_impl impl, uint32_t total, int policy);
void ptl__spool_destroy(ptl__spool *sp);
/* First index of a newly reserved run of n (n >= 1), or -1 when no free run is long enough. */
int64_t ptl__spool_alloc(ptl__spool *sp, uint32_t n);
/* Reserve exactly [start, start+n), which must be free: 0, or -1 when it is not. */
int ptl__spool_reserve_at(ptl__spool *sp, uint32_t start, uint32_t n);
/* Release [start, start+n); the whole range must be reserved (caller checks). */
void ptl__spool_free(ptl__spool *sp, uint32_t start, uint32_t n);
/* 1 when every index of [start, start+n) is reserved. */
int ptl__spool_is_reserved(const ptl__spool *sp, uint32_t start, uint32_t n);
uint32_t ptl__spool_free_count(const ptl__spool *sp);
uint32_t ptl__spool_largest(const ptl__spool *sp);
void ptl__spool_stats_get(const ptl__spool *sp, ptl__spool_stats *out);
/* Visit free runs in address order; stop when fn returns nonzero. */
void ptl__spool_each_free(const ptl__spool *sp, int (*fn)(void *, uint32_t, uint32_t), void *ctx);
int ptl__spool_check(const ptl__spool *sp, FILE *why);
int ptl__spool_hist_bucket(uint32_t len);

/* ---- the implementations' side (spool.c dispatches) ------------------------------------
 * Every implementation's state begins with a struct ptl__spool whose ops point at its
 * table; the public functions above call through it. Arguments are already checked where
 * the public contract says so. */
typedef struct ptl__spool_ops {
    void (*destroy)(ptl__spool *sp);
    int64_t (*alloc)(ptl__spool *sp, uint32_t n);
    int (*reserve_at)(ptl__spool *sp, uint32_t start, uint32_t n);
    void (*release)(ptl__spool *sp, uint32_t start, uint32_t n);
    int (*is_reserved)(const ptl__spool *sp, uint32_t start, uint32_t n);
    uint32_t (*free_count)(const ptl__spool *sp);
    uint32_t (*largest)(const ptl__spool *sp);
    void (*stats_get)(const ptl__spool *sp, ptl__spool_stats *out);
    void (*each_free)(const ptl__spool *sp, int (*fn)(void *, uint32_t, uint32_t), void *ctx);
    int (*check)(const ptl__spool *sp, FILE *why);
} ptl__spool_ops;

struct ptl__spool {
    const ptl__spool_ops *ops;
};

ptl__spool *ptl__spool_ref_create(uint32_t total, int policy);
ptl__spool *ptl__spool_fast_create(uint32_t total, int policy);

#endif
