/* pool.h - the executive pools (ExAllocatePool and friends). See pool.c. */
#ifndef PTELAB_POOL_H
#define PTELAB_POOL_H

#include <stdint.h>
#include "ptrmap.h"
#include "spool.h"

typedef struct ptl__poolblock {
    uint32_t block; /* first byte of the block (its header, or alignment padding) */
    uint32_t data;  /* what the caller got */
    uint32_t units; /* 32-byte units in its region; 0 for expansion pages */
    uint32_t pages; /* expansion pages; 0 for region blocks */
    int region;     /* 0 nonpaged, 1 paged, 2 must-succeed, -1 expansion */
    uint32_t bytes; /* asked for */
    uint32_t tag;
    int paged;
    uint32_t driver;
    uint32_t site; /* the verifier's call site of its allocation (0: none) */
} ptl__poolblock;

typedef struct ptl__pooltag {
    uint32_t tag;
    uint64_t nonpaged_allocs, nonpaged_frees, nonpaged_bytes;
    uint64_t paged_allocs, paged_frees, paged_bytes;
} ptl__pooltag;

typedef struct ptl__pools {
    uint32_t base[3], bytes[3];
    ptl__spool *units[3];
    uint32_t *page_use[3]; /* live blocks touching each page */
    ptl__ptrmap blocks;    /* data VA -> ptl__poolblock */
    ptl__ptrmap freed;     /* data VAs freed and not reused: tells a double free */
    ptl__pooltag *tags;
    uint32_t ntags;
    uint64_t nonpaged_bytes, paged_bytes, big_requests, failed;
} ptl__pools;

struct ptl_machine;
int ptl__pools_init(struct ptl_machine *m);
void ptl__pools_free(struct ptl_machine *m);
int ptl__pools_check(struct ptl_machine *m, FILE *why);

#endif
