/* sysptes.h - the system PTE pool. See sysptes.c. */
#ifndef PTELAB_SYSPTES_H
#define PTELAB_SYSPTES_H

#include <stdint.h>
#include "spool.h"

/* MMSYSTEM_PTE_POOL_TYPE: the type of pool a run is taken from (P1 of STOP 0x3F). */
enum { PTL_SYSTEM_PTE_SPACE = 0, PTL_NONPAGED_POOL_EXPANSION = 1, PTL_SYSPTE_TYPES = 2 };

/* What a run of system PTEs is used for: the fragmentation map's colours. */
typedef enum ptl__pte_kind {
    PTL_KIND_FREE = 0,
    PTL_KIND_IOSPACE,   /* MmMapIoSpace */
    PTL_KIND_STACK,     /* a kernel thread stack (+ guard page) */
    PTL_KIND_IMAGE,     /* a driver image or import DLL */
    PTL_KIND_MDL,       /* MmMapLockedPages / MmGetSystemAddressForMdl */
    PTL_KIND_NONCACHED, /* MmAllocateNonCachedMemory */
    PTL_KIND_POOL,      /* nonpaged pool expansion */
    PTL_KIND_OTHER,
    PTL_KIND_MAX
} ptl__pte_kind;

typedef struct ptl__pteinfo { /* 8 bytes: a run's info is written with one store a PTE */
    uint32_t run_len : 24;    /* at the first PTE of a run: its length; 0 elsewhere */
    uint32_t kind : 8;        /* ptl__pte_kind, on every PTE of the run */
    uint32_t driver;          /* driver id + 1 that owns the run, 0 the system */
} ptl__pteinfo;
_Static_assert(sizeof(ptl__pteinfo) == 8, "ptl__pteinfo is one 8-byte store");
/* x86 system space holds at most 2^19 PTEs: every run length fits in run_len. */

/* A pool covers one or two VA segments (the second for /USERVA's additional system
 * PTEs). Index i < seg0_count maps seg0_va + i pages; index seg0_count is a permanently
 * reserved junction PTE, so no run can straddle the two; later indices map seg1_va on. */
typedef struct ptl__syspool {
    uint32_t seg0_va, seg0_count; /* the whole pool when there is one segment */
    uint32_t seg1_va;             /* 0: one segment */
    uint32_t total;               /* indices, junction included */
    ptl__spool *alloc;
    ptl__pteinfo *info;
    uint32_t peak_used;
    uint64_t reserves, releases, failed_total, failed_fragmented;
} ptl__syspool;

typedef struct ptl__sysptes {
    ptl__syspool pool[PTL_SYSPTE_TYPES];
} ptl__sysptes;

/* Outcomes of a release. */
enum {
    PTL_RELEASE_OK = 0,
    PTL_RELEASE_NOT_IN_POOL = 1,  /* the VA is not in this pool at all */
    PTL_RELEASE_NOT_RESERVED = 2, /* part of the range is free: a double or wrong free */
    PTL_RELEASE_WRONG_START = 3,  /* the VA is inside a run, not at its start */
    PTL_RELEASE_WRONG_SIZE = 4    /* the count differs from what was reserved */
};

struct ptl_machine;
int ptl__sysptes_init(struct ptl_machine *m);
void ptl__sysptes_free(struct ptl_machine *m);
/* Reserve n contiguous PTEs; returns the VA they map, or 0 when no run fits (counted as a
 * failure, fragmented when enough were free). The PTEs are zero (invalid). */
uint32_t ptl__syspte_reserve(struct ptl_machine *m, int type, uint32_t n, ptl__pte_kind kind,
                             uint32_t driver);
/* Release the run that starts at va; invalidates any PTE still valid. */
int ptl__syspte_release(struct ptl_machine *m, int type, uint32_t va, uint32_t n);
/* The run containing va, if va is a reserved PTE of the pool: 1 and fields, else 0. */
int ptl__syspte_run_at(struct ptl_machine *m, uint32_t va, int *type, uint32_t *start_va,
                       uint32_t *count, ptl__pte_kind *kind, uint32_t *driver);
int ptl__syspte_pool_of(struct ptl_machine *m, uint32_t va); /* type, or -1 */
void ptl__sysptes_stats(const struct ptl_machine *m, int type, ptl__spool_stats *st);
int ptl__sysptes_check(struct ptl_machine *m, FILE *why);
const char *ptl__pte_kind_name(int kind);

#endif
