/* kernel.h - IRQL, threads and their stacks, driver images, calls into driver code,
 * exceptions, and kernel-mode memory access. See kernel.c. */
#ifndef PTELAB_KERNEL_H
#define PTELAB_KERNEL_H

#include <stdint.h>
#include <stddef.h>

#define PTL_KERNEL_STACK_PAGES 3u /* KERNEL_STACK_SIZE 12 KB on x86 */
#define PTL_DEAD_STACKS_MAX    5u /* MmMaximumDeadKernelStacks as ReactOS sets it */

struct ptl_driver {
    uint32_t magic;
    struct ptl_machine *m;
    uint32_t id; /* index + 1, the owner tag in system PTE runs */
    char name[32];
    uint32_t base_va; /* first PTE of the image run */
    uint32_t image_pages;
    int unloaded;
    uint32_t locked_mapping_ptes; /* TrackPtes: PTEs of its MDL mappings */
    int is_dll;                   /* an import DLL, shared by its importers */
    uint32_t importers;           /* for a DLL: drivers that import it and are loaded */
    uint32_t imports[8];          /* ids of the DLLs this driver imports */
    uint32_t nimports;
    struct ptl_driver *next;
};

struct ptl_thread {
    uint32_t magic;
    struct ptl_machine *m;
    struct ptl_process *process;
    uint32_t tid;
    uint32_t stack_run_va; /* the run: guard page, then the stack pages */
    int terminated;        /* its process exited: the stack is gone already */
    int exited;            /* ptl_thread_exit ran: kept on exited_threads until shutdown */
    struct ptl_thread *next;
};

#define PTL__DRIVER_MAGIC 0x56495244u /* "DRIV" */
#define PTL__THREAD_MAGIC 0x44524854u /* "THRD" */

typedef struct ptl__kernel {
    int irql;
    uint32_t current_driver; /* id of the driver whose code runs, 0 none */
    int in_dpc;
    struct ptl_driver *drivers; /* load order */
    uint32_t ndrivers;
    struct ptl_driver **by_id; /* by_id[id - 1]: ids are load order, never reused */
    uint32_t by_id_cap;
    struct ptl_thread *threads;        /* live */
    struct ptl_thread *exited_threads; /* the harness's exited handles, freed at shutdown */
    uint32_t next_tid;
    uint32_t live_threads;
    uint32_t dead_stacks[PTL_DEAD_STACKS_MAX]; /* cached stack runs (VA), reused first */
    uint32_t ndead;
    int32_t exception_code; /* the exception being dispatched (GetExceptionCode) */
    uint64_t threads_failed;
    uint32_t attach_depth;
} ptl__kernel;

struct ptl_machine;
void ptl__kernel_init(struct ptl_machine *m);
void ptl__kernel_free(struct ptl_machine *m);
void ptl__kernel_process_exit(struct ptl_machine *m, struct ptl_process *p);
struct ptl_driver *ptl__driver_by_id(struct ptl_machine *m, uint32_t id);
/* The running driver's notional instruction address, for bug-check parameters. */
uint32_t ptl__kernel_ip(struct ptl_machine *m);
/* Raise an exception into the innermost PTL_TRY of the current call; unhandled in kernel
 * mode it is KMODE_EXCEPTION_NOT_HANDLED. */
void ptl__raise(struct ptl_machine *m, int32_t status, uint32_t info0, uint32_t info1)
    __attribute__((noreturn));
/* Kernel-mode access at the current IRQL: faults become what NT makes of them (a
 * resolved page, an exception, or a STOP). Returns only on success. */
void ptl__kaccess(struct ptl_machine *m, uint32_t va, void *buf, size_t n, int write);
/* Turn the MMU's last fault (m->mmu.fault_*) into what NT makes of a kernel-mode fault. */
void ptl__kfault(struct ptl_machine *m, int write) __attribute__((noreturn));
void ptl__kfill(struct ptl_machine *m, uint32_t va, int value, size_t n);
int ptl__kernel_check(struct ptl_machine *m, FILE *why);

#endif
