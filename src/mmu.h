/* mmu.h - address translation, protection checks and the software TLB. See mmu.c. */
#ifndef PTELAB_MMU_H
#define PTELAB_MMU_H

#include <stdint.h>
#include <stddef.h>

#include <ptelab/fastpath.h> /* ptl__tlbe, PTL__TLB_ENTRIES: the inline register path reads them */

#define PTL_TLB_ENTRIES PTL__TLB_ENTRIES

/* Why an access failed. */
typedef enum ptl__fault {
    PTL_FAULT_NONE = 0,
    PTL_FAULT_NOT_PRESENT, /* PDE or PTE invalid (after any resolution) */
    PTL_FAULT_PROTECTION,  /* U/S or R/W denied */
    PTL_FAULT_NO_DEVICE    /* translated to a physical address nothing decodes */
} ptl__fault;

typedef struct ptl__mmu {
    uint32_t cr3; /* PFN of the current page directory */
    ptl__tlbe tlb[PTL_TLB_ENTRIES];
    /* the last fault */
    uint32_t fault_va;
    int fault_write;
    ptl__fault fault;
    uint32_t fault_pte; /* the PTE (or PDE) found invalid */
    /* counters */
    uint64_t hits, misses, flushes, invalidations, resolved_faults;
} ptl__mmu;

struct ptl_machine;
void ptl__mmu_init(struct ptl_machine *m, uint32_t cr3);
/* Recompute which addresses the inline register path may serve (ptelab/fastpath.h): call
 * whenever the stop state or the DPC state changes. */
void ptl__mmu_fast_sync(struct ptl_machine *m);
void ptl__mmu_set_cr3(struct ptl_machine *m, uint32_t cr3);   /* flushes non-global entries */
void ptl__mmu_invalidate(struct ptl_machine *m, uint32_t va); /* INVLPG */
/* INVLPG of n pages from va (a long run: one pass over the TLB). */
void ptl__mmu_invalidate_range(struct ptl_machine *m, uint32_t va, uint32_t n);
void ptl__mmu_flush(struct ptl_machine *m, int include_global);
/* Translate va for an access; resolve_faults lets the memory manager bring in demand-zero
 * or paged-out pages (PASSIVE/APC level only). Returns PTL_FAULT_NONE and *pa. */
ptl__fault ptl__mmu_translate(struct ptl_machine *m, uint32_t va, int write, int user,
                              int resolve_faults, uint64_t *pa);
/* Copy between the emulated address space and host memory, page by page. 0 or a fault
 * (details in m->mmu.fault_*). */
ptl__fault ptl__mmu_copy(struct ptl_machine *m, uint32_t va, void *buf, size_t n, int write,
                         int user, int resolve_faults);
/* Fill n bytes with a value through the MMU. */
ptl__fault ptl__mmu_fill(struct ptl_machine *m, uint32_t va, int value, size_t n, int user,
                         int resolve_faults);
/* Walk the page tables of the page directory at dirbase_pfn (kd's !vtop): 0 and *pa, -1. */
int ptl__mmu_walk(struct ptl_machine *m, uint32_t dirbase_pfn, uint32_t va, uint64_t *pa,
                  uint32_t *pde, uint32_t *pte);
int ptl__mmu_check(struct ptl_machine *m, FILE *why);

#endif
