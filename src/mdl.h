/* mdl.h - memory descriptor lists: allocate, build, probe and lock, map, unmap, free.
 * See mdl.c. */
#ifndef PTELAB_MDL_H
#define PTELAB_MDL_H

#include <stdint.h>
#include "ptrmap.h"

/* One user-space mapping of an MDL (MmMapLockedPages(UserMode)): a LOCKED_PAGES VAD in
 * the process that was current. NT lets one MDL be mapped into several processes, or
 * twice into one. */
typedef struct ptl__usermap {
    struct ptl_process *process;
    uint32_t va;  /* page aligned */
    int orphaned; /* the process exited with the mapping in place */
} ptl__usermap;

/* What ptelab remembers about an MDL a driver uses. */
typedef struct ptl__mdlrec {
    void *mdl;           /* the driver's PMDL */
    uint32_t driver;     /* who allocated or first used it */
    uint32_t site;       /* the verifier's call site of its allocation (0: none) */
    int allocated;       /* by IoAllocateMdl: IoFreeMdl may free it */
    uint32_t pages;      /* span of the described buffer */
    ptl__usermap *users; /* its user-space mappings, live and orphaned */
    uint32_t nusers;
    /* its system mapping's run, for ptelab's records (MappedSystemVa holds the address) */
    uint32_t system_run_va;
    int system_cache;
} ptl__mdlrec;

typedef struct ptl__mdls {
    ptl__ptrmap map; /* PMDL -> ptl__mdlrec */
    uint64_t allocated, freed, locked, mapped_kernel, mapped_user, failed_maps;
    uint64_t pool_bytes; /* nonpaged pool the live MDLs would take (their x86 size) */
} ptl__mdls;

struct ptl_machine;
struct ptl_process;
void ptl__mdls_init(struct ptl_machine *m);
void ptl__mdls_free(struct ptl_machine *m);
void ptl__mdl_process_exit(struct ptl_machine *m, struct ptl_process *p);
/* ExFreePool of an MDL: the documented way to free the MDL MmAllocatePagesForMdl returns
 * (after MmFreePagesFromMdl). Frees it as IoFreeMdl does and returns 1, or returns 0 when
 * p is no MDL ptelab handed out (then it is a pool address). */
int ptl__mdl_free_as_pool(struct ptl_machine *m, void *p);
/* Remove a user mapping of locked pages (a LOCKED_PAGES VAD) with its PTEs and the cache
 * attribute references they hold. */
struct ptl__vad;
void ptl__mdl_vad_teardown(struct ptl_machine *m, struct ptl_process *p, struct ptl__vad *v);
int ptl__mdls_check(struct ptl_machine *m, FILE *why);

#endif
