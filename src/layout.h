/* layout.h - the system address-space layout computed at boot. See layout.c. */
#ifndef PTELAB_LAYOUT_H
#define PTELAB_LAYOUT_H

#include <stdint.h>
#include <ptelab/ptelab.h>

#define PTL_MAX_REGIONS 20

typedef struct ptl__layout {
    uint32_t user_lo;                 /* lowest user address (64 KB) */
    uint32_t user_hi;                 /* MmUserProbeAddress: one past the highest user address */
    uint32_t system_start;            /* MmSystemRangeStart */
    uint32_t boot_va, boot_bytes;     /* kernel, HAL, boot drivers */
    uint32_t pfn_va, pfn_bytes;       /* PFN database */
    uint32_t inp_va, inp_bytes;       /* initial nonpaged pool */
    uint32_t cache_va, cache_end;     /* system cache */
    uint32_t paged_va, paged_end;     /* paged pool */
    uint32_t syspte_va, syspte_count; /* system PTE pool (SystemPteSpace) */
    uint32_t extra_va, extra_count;   /* /USERVA: additional system PTEs, 0 none */
    uint32_t nppx_region_va;          /* nonpaged pool expansion region start */
    uint32_t nppx_va, nppx_count;     /* its PTE pool (NonPagedPoolExpansion) */
    uint32_t npp_end;                 /* MmNonPagedPoolEnd */
    uint32_t max_npp_bytes;           /* MmMaximumNonPagedPoolInBytes */
    uint32_t computed_system_ptes;    /* the RAM-based default, before SystemPages */
    uint32_t boot_frames;             /* RAM frames the boot region takes */
    ptl_region regions[PTL_MAX_REGIONS];
    int nregions;
} ptl__layout;

/* Compute the layout for cfg; 0, or -1 with the reason in ptl_error(). */
int ptl__layout_compute(ptl__layout *l, const ptl_config *cfg);
int ptl__layout_check(const ptl__layout *l, FILE *why);
/* The name of the region holding va, or NULL. */
const char *ptl__layout_region_of(const ptl__layout *l, uint32_t va);

#endif
