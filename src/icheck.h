/* icheck.h - the incremental twin of ptl_check's expensive walks. See icheck.c. */
#ifndef PTELAB_ICHECK_H
#define PTELAB_ICHECK_H

#include <stdint.h>
#include <stdio.h>

typedef struct ptl__icheck ptl__icheck; /* what the last check saw: icheck.c */

struct ptl_machine;
/* The invariants of ptl__phys_check, ptl__pte_check and ptl__sysptes_check, established
 * from what changed since the last check: 0, or -1 with the reason on why. */
int ptl__icheck_memory(struct ptl_machine *m, FILE *why);
/* Those of ptl__process_check; ends the check that ptl__icheck_memory began. */
int ptl__icheck_processes(struct ptl_machine *m, FILE *why);
/* 1 when a PDE or a page table that maps part of [va, va + bytes) in directory pd changed
 * in the check under way (or the check does not follow them), else 0. For the checks that
 * run after ptl__icheck_processes in the same ptl_check. */
int ptl__icheck_range_changed(struct ptl_machine *m, uint32_t pd, uint32_t va, uint32_t bytes);
/* Forget everything: the next check starts from nothing (after a failed check, and at
 * shutdown). */
void ptl__icheck_reset(struct ptl_machine *m);
/* What the last check counted, for the tests to hold against a walk of their own. */
typedef struct ptl__icheck_totals {
    uint32_t pds, tables;   /* directories and page tables copied */
    uint64_t mapped;        /* valid walked PDEs and PTEs that map RAM */
    uint64_t in_runs[2];    /* PTEs in runs (the junction included), per system PTE pool */
    uint64_t private_valid; /* valid private pages over all processes */
} ptl__icheck_totals;
/* 0 and *out, or -1 before the first check (or after a failed one). */
int ptl__icheck_totals_get(const struct ptl_machine *m, ptl__icheck_totals *out);
/* sysptes.c changed the run map and the allocator of pool `type` over [start, start+n). */
void ptl__icheck_sysptes_changed(struct ptl_machine *m, int type, uint32_t start, uint32_t n);

#endif
