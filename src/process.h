/* process.h - processes, their address spaces and VADs, attach/detach, swap-out. See
 * process.c. */
#ifndef PTELAB_PROCESS_H
#define PTELAB_PROCESS_H

#include <stdint.h>

/* What a VAD (virtual address descriptor) describes. */
typedef enum ptl__vad_kind {
    PTL_VAD_PRIVATE = 0,  /* ZwAllocateVirtualMemory: demand-zero, pageable */
    PTL_VAD_PHYSICAL,     /* a view of \Device\PhysicalMemory: never paged */
    PTL_VAD_LOCKED_PAGES, /* MmMapLockedPages(UserMode): never paged */
    PTL_VAD_KINDS
} ptl__vad_kind;

typedef struct ptl__vad {
    uint32_t start, end; /* [start, end), page aligned */
    uint8_t kind;        /* ptl__vad_kind */
    uint8_t protect;     /* MM_ protection of committed pages */
    uint8_t cache;       /* MEMORY_CACHING_TYPE for PHYSICAL / LOCKED_PAGES */
    uint32_t owner;      /* object that made it (view id, MDL id), 0 none */
} ptl__vad;

struct ptl_process {
    EPROCESS nt; /* first: a PEPROCESS and this record are the same pointer */
    uint32_t magic;
    struct ptl_machine *m;
    uint32_t pid;
    char name[16];        /* EPROCESS.ImageFileName: 15 characters and a NUL */
    uint32_t pd;          /* PFN of the page directory (DirectoryTableBase >> 12) */
    uint32_t eprocess_va; /* the emulated EPROCESS address kd shows */
    int is_system;
    int exited;
    int privileged;     /* may open \Device\PhysicalMemory from user mode */
    uint32_t paged_out; /* pages of it in the page file */
    ptl__vad *vads;     /* sorted by start, non-overlapping */
    int nvads, vad_cap;
    uint32_t private_pages; /* valid private pages */
    uint32_t locked_pages;  /* pages locked by MmProbeAndLockPages and not unlocked */
    uint32_t threads;       /* live threads */
    uint32_t icheck_slot;   /* the incremental check's record of it + 1 (icheck.c) */
    struct ptl_process *next;
};

#define PTL__PROCESS_MAGIC 0x434F5250u /* "PROC" */

/* The page file: swapped-out page contents, by slot. */
typedef struct ptl__pagefile {
    uint8_t **slots;
    uint32_t nslots, used;
    uint32_t *free_slots;
    uint32_t nfree;
} ptl__pagefile;

typedef struct ptl__procs {
    struct ptl_process *list; /* System first */
    struct ptl_process *system;
    struct ptl_process *current; /* whose directory CR3 holds: the one that last ran */
    /* kd's implicit process (.process): whose user space kd reads, until the machine
     * switches context again; NULL: the current one. The debugger's view, not CR3. */
    struct ptl_process *kd_implicit;
    uint32_t next_pid;
    uint32_t count;
    ptl__pagefile pagefile;
} ptl__procs;

struct ptl_machine;
int ptl__procs_init(struct ptl_machine *m);
void ptl__procs_free(struct ptl_machine *m);
/* The one function that changes the current address space (DESIGN.md, native mode). */
void ptl__process_switch(struct ptl_machine *m, struct ptl_process *p);
bool ptl__process_ok(const struct ptl_process *p); /* handle check, sets ptl_error */
struct ptl_process *ptl__process_by_eprocess(struct ptl_machine *m, uint32_t va);
/* Page fault resolution for the current process: demand-zero and page-file PTEs. */
int ptl__process_resolve_fault(struct ptl_machine *m, uint32_t va, int write);
/* VADs */
ptl__vad *ptl__vad_find(struct ptl_process *p, uint32_t va);
/* Lowest free user range of `bytes` at 64 KB granularity (hint 0) or exactly at hint;
 * 0 when none. */
uint32_t ptl__vad_find_free(struct ptl_process *p, uint32_t hint, uint32_t bytes);
ptl__vad *ptl__vad_insert(struct ptl_process *p, uint32_t start, uint32_t end, int kind,
                          int protect, int cache, uint32_t owner);
void ptl__vad_remove(struct ptl_process *p, ptl__vad *v);
/* Commit [start,end) of a private VAD as demand-zero; -1 without RAM for page tables. */
int ptl__process_commit(struct ptl_process *p, uint32_t start, uint32_t end, int protect);
/* Tear down every PTE of [start, end) in p: private frames freed, page-file slots freed. */
void ptl__process_decommit(struct ptl_process *p, uint32_t start, uint32_t end);
/* The VADs lie in user space, in order, without overlap (ptl__process_check and its
 * incremental twin). */
int ptl__process_vads_check(struct ptl_machine *m, const struct ptl_process *p, FILE *why);
int ptl__process_check(struct ptl_machine *m, FILE *why);
/* The page file's slots in use are the live processes' paged-out pages (both checks). */
int ptl__process_pagefile_check(struct ptl_machine *m, FILE *why);
/* Convert a Win32 PAGE_ protection into an MM_ code; -1 when invalid. */
int ptl__protect_from_win32(uint32_t page_protect);

#endif
