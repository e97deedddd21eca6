/* cache.h - the cache attribute each physical page is mapped with. See cache.c. */
#ifndef PTELAB_CACHE_H
#define PTELAB_CACHE_H

#include <stdint.h>

typedef struct ptl__cache_entry {
    uint32_t pfn_plus1; /* 0: empty slot */
    uint32_t count;     /* live tracked mappings (32 bits: one frame may be mapped ~2^16 times) */
    uint32_t seq;       /* when attr was last set (ptl__cache.clock), for "the most recent" */
    int8_t attr;        /* MEMORY_CACHING_TYPE they use */
    uint8_t tombstone;
} ptl__cache_entry;

/* A mapping of several contiguous frames with one attribute (MmMapIoSpace), kept whole. */
typedef struct ptl__cache_range {
    uint32_t pfn, n;
    uint32_t seq; /* when it was mapped (ptl__cache.clock) */
    int8_t attr;
} ptl__cache_range;

typedef struct ptl__cache {
    ptl__cache_entry *slots;
    uint32_t cap, used, live;
    uint32_t live_io;         /* of live: frames beyond RAM (device memory) */
    ptl__cache_range *ranges; /* in the order they were made: the last covering one wins */
    uint32_t nranges, capranges;
    uint32_t ranges_with[6]; /* of nranges: how many have each attribute */
    uint64_t conflicts;
    uint32_t clock; /* stamps each attribute set, so the most recent mapping's wins */
} ptl__cache;

struct ptl_machine;
void ptl__cache_init(struct ptl_machine *m);
void ptl__cache_free(struct ptl_machine *m);
/* The attribute frame pfn is mapped with now: the tracked one, MmCached for RAM in use
 * that no tracked mapping covers, -1 for none. */
int ptl__cache_current(struct ptl_machine *m, uint32_t pfn);
/* 1 when mapping [pfn, pfn+n) with `attr` conflicts with a current attribute; then *at
 * and *existing say where and what. */
int ptl__cache_conflict(struct ptl_machine *m, uint32_t pfn, uint32_t n, int attr, uint32_t *at,
                        int *existing);
/* Count frames [pfn, pfn+n) mapped with attr, one by one (the table); unref drops them. */
void ptl__cache_ref(struct ptl_machine *m, uint32_t pfn, uint32_t n, int attr);
void ptl__cache_unref(struct ptl_machine *m, uint32_t pfn, uint32_t n);
/* One mapping of the contiguous frames [pfn, pfn+n) as one record; unref_run takes the
 * same (pfn, n) back. */
void ptl__cache_ref_run(struct ptl_machine *m, uint32_t pfn, uint32_t n, int attr);
void ptl__cache_unref_run(struct ptl_machine *m, uint32_t pfn, uint32_t n, int attr);
int ptl__cache_check(struct ptl_machine *m, FILE *why);
const char *ptl__cache_name(int attr);

#endif
