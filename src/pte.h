/* pte.h - x86 non-PAE PDE/PTE formats, page tables, the self-map. See pte.c. */
#ifndef PTELAB_PTE_H
#define PTELAB_PTE_H

#include <stdint.h>

/* Hardware bits of a valid PDE/PTE (Intel SDM vol. 3, 4.3) and NT's software bits. */
#define PTL_PTE_VALID        0x001u
#define PTL_PTE_WRITE        0x002u
#define PTL_PTE_OWNER        0x004u /* U/S: user-accessible */
#define PTL_PTE_WRITETHROUGH 0x008u
#define PTL_PTE_CACHEDISABLE 0x010u
#define PTL_PTE_ACCESSED     0x020u
#define PTL_PTE_DIRTY        0x040u
#define PTL_PTE_LARGEPAGE    0x080u
#define PTL_PTE_GLOBAL       0x100u
#define PTL_PTE_COPYONWRITE  0x200u /* software bit in a valid PTE */
#define PTL_PTE_PROTOTYPE    0x400u /* invalid PTE: prototype format */
#define PTL_PTE_TRANSITION   0x800u /* invalid PTE: transition format */
#define PTL_PTE_FRAME_MASK   0xFFFFF000u

/* NT's software (invalid) PTE on x86 non-PAE (MMPTE_SOFTWARE):
 *   bit 0 Valid=0 | bits 1-4 PageFileLow | bits 5-9 Protection | bit 10 Prototype |
 *   bit 11 Transition | bits 12-31 PageFileHigh (page-file offset in pages). */
#define PTL_SWPTE_PROT_SHIFT  5
#define PTL_SWPTE_PROT_MASK   (0x1Fu << PTL_SWPTE_PROT_SHIFT)
#define PTL_SWPTE_PFLOW_SHIFT 1
#define PTL_SWPTE_PFLOW_MASK  (0xFu << PTL_SWPTE_PFLOW_SHIFT)
#define PTL_SWPTE_PROT(p)     (((uint32_t)(p) << PTL_SWPTE_PROT_SHIFT) & PTL_SWPTE_PROT_MASK)
#define PTL_SWPTE_GET_PROT(x) (((x)&PTL_SWPTE_PROT_MASK) >> PTL_SWPTE_PROT_SHIFT)
/* An invalid PTE that names a page-file slot (PageFileHigh != 0, neither prototype nor
 * transition): the page is in the page file. */
static inline int ptl__pte_in_pagefile(uint32_t pte)
{
    return !(pte & (PTL_PTE_VALID | PTL_PTE_PROTOTYPE | PTL_PTE_TRANSITION)) &&
           (pte & PTL_PTE_FRAME_MASK) != 0;
}

/* NT's MM_ protection codes, stored in software PTEs. */
enum {
    MM_ZERO_ACCESS = 0,
    MM_READONLY = 1,
    MM_EXECUTE = 2,
    MM_EXECUTE_READ = 3,
    MM_READWRITE = 4,
    MM_WRITECOPY = 5,
    MM_EXECUTE_READWRITE = 6,
    MM_EXECUTE_WRITECOPY = 7,
    MM_NOCACHE = 8,
    MM_DECOMMIT = 0x10,
    MM_NOACCESS = MM_DECOMMIT | MM_NOCACHE
};

#define PTL_PTE_BASE   0xC0000000u
#define PTL_PDE_BASE   0xC0300000u
#define PTL_PTE_VA(va) (PTL_PTE_BASE + (((uint32_t)(va) >> 12) << 2))
#define PTL_PDE_VA(va) (PTL_PDE_BASE + (((uint32_t)(va) >> 22) << 2))
/* The VA a PTE at self-map address pte_va maps (inverse of PTL_PTE_VA). */
#define PTL_VA_OF_PTE(pte_va) ((((uint32_t)(pte_va)-PTL_PTE_BASE) >> 2) << 12)
#define PTL_PD_SELFMAP_INDEX  0x300u

typedef struct ptl__pte {
    uint32_t master_pd; /* PFN of the System process's page directory */
    uint32_t *pds;      /* every live page directory, master first */
    int npds;
    uint32_t system_start; /* first system VA: PDEs at and above it are shared */
    uint64_t writes;       /* PTE/PDE writes, for perf */
} ptl__pte;

struct ptl_machine;
int ptl__pte_init(struct ptl_machine *m, uint32_t system_start);
void ptl__pte_free(struct ptl_machine *m);
/* A new page directory with the system PDEs and the self-map; UINT32_MAX without RAM. */
uint32_t ptl__pte_new_pd(struct ptl_machine *m, uint32_t owner_pid);
/* Free a process's page directory and its user page tables (all user PTEs must be
 * invalid or already torn down by the caller). */
void ptl__pte_free_pd(struct ptl_machine *m, uint32_t pd);
uint32_t ptl__pde_read(struct ptl_machine *m, uint32_t pd, uint32_t va);
/* 0 and *pte, or -1 when no page table maps va. System VAs ignore pd. */
int ptl__pte_read(struct ptl_machine *m, uint32_t pd, uint32_t va, uint32_t *pte);
/* Make sure a page table covers va; -1 when RAM is exhausted. */
int ptl__pte_ensure_table(struct ptl_machine *m, uint32_t pd, uint32_t va);
/* The one function that writes a PTE: keeps PFN share counts, the TLB and (native mode)
 * the host mirror in step. The page table must exist. */
void ptl__pte_write(struct ptl_machine *m, uint32_t pd, uint32_t va, uint32_t pte);
/* Write n consecutive PTEs from va: first, first + step, first + 2 * step, ... (step
 * PTL_PAGE_SIZE for contiguous frames, 0 to clear). Where a PDE is invalid the run may
 * only clear. Same bookkeeping as n ptl__pte_write calls, in one pass per page table. */
void ptl__pte_write_run(struct ptl_machine *m, uint32_t pd, uint32_t va, uint32_t n, uint32_t first,
                        uint32_t step);
/* Build a valid PTE value. */
uint32_t ptl__pte_make(uint32_t pfn, int writable, int user, int cache_type);
/* The MEMORY_CACHING_TYPE a PTE's CD/WT bits say (ptl__pte_make's inverse for 0, 1, 2). */
int ptl__pte_cache_type(uint32_t pte);
int ptl__pte_check(struct ptl_machine *m, FILE *why);
/* Letters as kd prints them: "--LDA--KWEV"-style flag string. buf >= 16. */
void ptl__pte_flags(uint32_t pte, int is_pde, char *buf);

#endif
