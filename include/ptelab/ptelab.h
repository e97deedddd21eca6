/* ptelab/ptelab.h - the harness: boot an emulated Windows NT x86 machine and drive it.
 *
 * A ptl_machine is one 32-bit x86 computer running the NT memory manager as device-driver
 * code sees it: physical memory and adapter apertures, page tables with the self-map at
 * 0xC0000000, the system address-space layout computed at boot, the system PTE pool,
 * processes, a software MMU and bug checks.
 *
 * Driver code runs inside ptl_call(), which makes the machine current for the calling
 * host thread, switches to the given process context and runs at PASSIVE_LEVEL; the DDIs
 * of <ptelab/wdm.h> act on that current machine. A bug check (STOP) freezes the machine
 * and unwinds to the innermost ptl_call, which returns the STOP code. A frozen machine
 * still answers counters and kd and can be shut down; every further call returns the
 * same STOP.
 *
 * Three kinds of failure are kept apart:
 *   - an NTSTATUS or NULL where NT returns one (to driver code, and from ptl_user_*);
 *   - a bug check where NT stops (returned by ptl_call and friends, see ptl_stop);
 *   - -1/NULL plus ptl_error() for misuse of the harness itself (bad configuration,
 *     NULL or foreign handles), which never changes the machine.
 *
 * The names and meanings of the "contract" section are fixed by DESIGN.md.
 */
#ifndef PTELAB_PTELAB_H
#define PTELAB_PTELAB_H

#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <ptelab/ntbase.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PTELAB_VERSION_MAJOR 0
#define PTELAB_VERSION_MINOR 1
#define PTELAB_VERSION_PATCH 0
#define PTELAB_VERSION       "0.1.0"

/* ---- the contract of DESIGN.md ------------------------------------------------------ */

typedef struct ptl_machine ptl_machine;
typedef struct ptl_process ptl_process;
typedef struct ptl_driver ptl_driver;
typedef struct ptl_thread ptl_thread;

/* The Windows release whose behaviour the machine follows where releases differ. */
typedef enum ptl_profile { PTL_NT4_SP3, PTL_NT4_SP4, PTL_WIN2000, PTL_WINXP } ptl_profile;

/* Where the system PTE pool places a request within the free runs (see sysptes.c). */
typedef enum ptl_syspte_policy {
    PTL_SYSPTE_FIRST_FIT_LOW = 0, /* lowest-addressed run that fits, its low end */
    PTL_SYSPTE_FIRST_FIT_HIGH = 1 /* lowest-addressed run that fits, its high end */
} ptl_syspte_policy;

typedef struct ptl_config {
    uint64_t ram_bytes;    /* physical RAM; a multiple of 4 KB, at most 4 GB */
    ptl_profile profile;   /* default PTL_NT4_SP4 */
    uint32_t system_pages; /* registry SystemPages: 0 computed, 0xFFFFFFFF maximum */
    int boot_3gb;          /* boot.ini /3GB */
    uint32_t userva_mb;    /* boot.ini /USERVA=MB (with /3GB); 0 none */
    int track_ptes;        /* registry TrackPtes */
    int verifier;          /* Driver Verifier on for every driver */
    /* fields beyond the contract */
    uint32_t paged_pool_size;    /* registry PagedPoolSize in bytes: 0 computed */
    uint32_t nonpaged_pool_size; /* registry NonPagedPoolSize in bytes: 0 computed */
    ptl_syspte_policy syspte_policy;
    uint64_t seed; /* for anything randomised inside a run */
    /* Fault injection, like Driver Verifier's low-resources simulation: fail the Nth
     * allocation (1-based) of the kinds selected, or each with probability
     * fault_inject_ppm / 1e6 (seeded by seed). */
    uint32_t fault_inject_kinds; /* PTL_FAULT_* bits; 0: no injection */
    uint32_t fault_inject_nth;
    uint32_t fault_inject_ppm;
    /* Native mode: emulated addresses are host addresses, so driver code may dereference
     * them (src/native.c). PTL_NATIVE_AUTO uses it when the host allows it. */
    int native;
} ptl_config;

#define PTL_NATIVE_AUTO 0
#define PTL_NATIVE_ON   1
#define PTL_NATIVE_OFF  2
/* 1 when m runs in native mode. */
int ptl_native(const ptl_machine *m);

#define PTL_FAULT_SYSPTES 0x1u /* system PTE reservations (mappings, stacks, images) */
#define PTL_FAULT_POOL    0x2u /* pool allocations */
#define PTL_FAULT_MDL     0x4u /* IoAllocateMdl */
/* "syspte", "pool" and "mdl", separated by commas (or "all"), to PTL_FAULT_* bits: 0 and
 * *kinds, or -1 + ptl_error() naming the word it does not know. */
int ptl_fault_kinds_parse(const char *list, uint32_t *kinds);

typedef struct ptl_stop {
    uint32_t code;
    uint64_t param[4];
    char name[64];
} ptl_stop;

void ptl_config_init(ptl_config *cfg);
ptl_machine *ptl_boot(const ptl_config *cfg); /* NULL + ptl_error() */
const char *ptl_error(void);
void ptl_shutdown(ptl_machine *m);

int ptl_adapter_add(ptl_machine *m, INTERFACE_TYPE bus, ULONG bus_number, uint64_t bus_address,
                    uint64_t bytes); /* 0 or -1 */
/* 0, or -1 + ptl_error() with nothing copied: a page of the range is neither RAM nor
 * adapter memory, or (writes) is a page directory or page table, which kd's e* refuses too. */
int ptl_phys_read(ptl_machine *m, uint64_t pa, void *buf, size_t n);
int ptl_phys_write(ptl_machine *m, uint64_t pa, const void *buf, size_t n);

ptl_process *ptl_process_create(ptl_machine *m, const char *image_name);
uint32_t ptl_process_exit(ptl_process *p, ptl_stop *stop); /* 0 or STOP code */
ptl_driver *ptl_driver_load(ptl_machine *m, const char *name, uint32_t image_bytes);
uint32_t ptl_driver_unload(ptl_driver *d, ptl_stop *stop);     /* 0 or STOP code */
ptl_thread *ptl_thread_create(ptl_machine *m, ptl_process *p); /* NULL + ptl_error() */
void ptl_thread_exit(ptl_thread *t);

uint32_t ptl_call(ptl_machine *m, ptl_process *p, ptl_driver *d, void (*fn)(void *), void *arg,
                  ptl_stop *stop); /* PASSIVE_LEVEL; p NULL: the System process */
uint32_t ptl_call_dpc(ptl_machine *m, ptl_driver *d, void (*fn)(void *), void *arg,
                      ptl_stop *stop); /* DISPATCH_LEVEL, in whatever context is current */

NTSTATUS ptl_user_read(ptl_process *p, uint32_t va, void *buf, size_t n);
NTSTATUS ptl_user_write(ptl_process *p, uint32_t va, const void *buf, size_t n);

uint32_t ptl_free_system_ptes(const ptl_machine *m);
uint32_t ptl_total_system_ptes(const ptl_machine *m);
uint32_t ptl_largest_free_system_ptes(const ptl_machine *m);

int ptl_kd(ptl_machine *m, const char *command, FILE *out); /* 0 ok */
int ptl_check(ptl_machine *m);                              /* 0: invariants hold */

/* ---- beyond the contract ------------------------------------------------------------ */

/* A landing point for bug checks (harness frames) and for raised exceptions (a driver's
 * PTL_TRY in <ptelab/wdm.h>). Frames form a stack per machine; an implementation detail
 * that must be public because PTL_TRY expands in the caller's code. */
typedef struct ptl_frame {
    jmp_buf jb;
    struct ptl_frame *prev;
    int is_try;        /* PTL_TRY (catches exceptions) or a harness frame (catches STOPs) */
    int32_t exception; /* NTSTATUS raised into a try frame */
    int saved_irql;
    struct ptl_machine *machine;
} ptl_frame;

/* ptl_call/ptl_call_dpc's answer when the harness refuses the call itself (a NULL or
 * foreign handle, no function): nothing ran; ptl_error() says why. No bug-check code has
 * this value. */
#define PTL_CALL_REFUSED 0xFFFFFFFFu

/* Driver-side exception helpers behind PTL_TRY/PTL_EXCEPT of <ptelab/wdm.h>. */
ptl_frame *ptl_try_push(ptl_frame *f);
void ptl_try_pop(ptl_frame *f);
int ptl_try_filter(ptl_frame *f, int filter);
int32_t ptl_exception_code(void);
void ptl_raise_status(int32_t status) __attribute__((noreturn));

/* The STOP that froze the machine: 1 and *stop filled, or 0 while it runs. */
int ptl_stopped(const ptl_machine *m, ptl_stop *stop);
/* The name of a bug-check code ("NO_MORE_SYSTEM_PTES"), or "UNKNOWN_BUGCHECK". */
const char *ptl_bugcheck_name(uint32_t code);
/* Print the STOP as the NT 4.0 blue screen did: "*** STOP: 0x0000003F (...)" and name. */
void ptl_stop_print(const ptl_stop *stop, FILE *out);

/* ptl_check (0: invariants hold) re-checks only what changed since its last call, and
 * walks everything on the first, in native mode and after a failure. ptl_check_full
 * always walks everything: the plain reference, slower, with the same verdict. */
int ptl_check_full(ptl_machine *m);

/* The machine the calling host thread is running driver code on (inside ptl_call), else
 * NULL. The only global state in ptelab, and thread-local. */
ptl_machine *ptl_current(void);

/* "nt4sp3", "nt4sp4", "win2000", "winxp" -> the profile, or -1; and back. */
int ptl_profile_from_name(const char *name);
const char *ptl_profile_name(ptl_profile profile);
/* A size as users write it: "64M", "3.5G", "512K", "1048576" -> bytes; 0 when it is not
 * one. */
uint64_t ptl_parse_size(const char *text);
ptl_process *ptl_system_process(ptl_machine *m);
const ptl_config *ptl_machine_config(const ptl_machine *m);

/* A bus with a translation offset: HalTranslateBusAddress of an address on this bus
 * yields bus address + offset. Apertures added later on this bus sit at the translated
 * physical address. 0 or -1. */
int ptl_bus_add(ptl_machine *m, INTERFACE_TYPE bus, ULONG bus_number, uint64_t translation,
                int io_space);

/* Pages the process's ordinary (pageable) memory out to the page file; adapter and
 * locked mappings stay valid, as the article's NOTE says. Returns pages written out. */
uint32_t ptl_process_swap_out(ptl_process *p);
uint32_t ptl_process_id(const ptl_process *p);
/* The process as driver code sees it (what PsGetCurrentProcess returns in it). */
PEPROCESS ptl_process_eprocess(ptl_process *p);
const char *ptl_process_name(const ptl_process *p);
/* The physical address of the process's page directory (CR3, DirectoryTableBase). */
uint32_t ptl_process_dirbase(const ptl_process *p);
/* Lowest emulated address of a user buffer committed in p (MEM_COMMIT, PAGE_READWRITE),
 * as an application's VirtualAlloc would get; 0 when the address space or RAM is full. */
uint32_t ptl_user_alloc(ptl_process *p, uint32_t bytes);

/* Load an import DLL of driver d (VIDEOPRT.SYS, SCSIPORT.SYS...): the first importer
 * loads it into system PTEs, later ones share it, the last unload frees it. 0 or -1. */
int ptl_driver_import(ptl_driver *d, const char *dll, uint32_t image_bytes);
const char *ptl_driver_name(const ptl_driver *d);
uint32_t ptl_driver_base(const ptl_driver *d);

/* The event log: what happened, in order (perf.c). type is one of "boot", "process",
 * "driver", "thread", "map", "unmap", "fail", "hazard", "misuse", "stop", "note". */
typedef struct ptl_event {
    uint64_t seq;
    uint64_t tick; /* simulated clock: one tick per DDI or harness call */
    const char *type;
    uint32_t free_ptes; /* Free System Page Table Entries at that moment */
    const char *text;   /* valid until the machine is shut down */
} ptl_event;
size_t ptl_event_count(const ptl_machine *m);
int ptl_event_get(const ptl_machine *m, size_t i, ptl_event *out); /* 0 or -1 */
uint64_t ptl_event_count_type(const ptl_machine *m, const char *type);

/* An application opening a section by name with NtOpenSection (PreviousMode UserMode):
 * \Device\PhysicalMemory is refused with STATUS_ACCESS_DENIED unless the process is
 * privileged (an administrator's, before Windows Server 2003 SP1). */
NTSTATUS ptl_user_open_section(ptl_process *p, const char *name, uint32_t access, uint32_t *handle);
void ptl_process_set_privileged(ptl_process *p, int privileged);

/* Performance Monitor's Memory counters, as ptelab models them (docs/fidelity.md). */
typedef struct ptl_counters {
    uint64_t free_system_ptes;    /* \Memory\Free System Page Table Entries */
    uint64_t pool_paged_bytes;    /* \Memory\Pool Paged Bytes */
    uint64_t pool_nonpaged_bytes; /* \Memory\Pool Nonpaged Bytes */
    uint64_t available_bytes;     /* \Memory\Available Bytes */
    uint64_t committed_bytes;     /* \Memory\Committed Bytes */
} ptl_counters;
#define PTL_COUNTERS 5
void ptl_counters_get(const ptl_machine *m, ptl_counters *out);
/* The timeline: the counters sampled at every event, on the simulated clock (one tick per
 * DDI or harness call, read as one millisecond). */
size_t ptl_timeline_count(const ptl_machine *m);
int ptl_timeline_get(const ptl_machine *m, size_t i, uint64_t *tick, ptl_counters *out);
/* Write the timeline as typeperf's PDH-CSV ("(PDH-CSV 4.0)" header, quoted fields,
 * \\PTELAB\Memory\... counter paths). 0 or -1. */
int ptl_perf_csv(const ptl_machine *m, FILE *out);
/* Echo events to stderr as they happen (ptelab run -v). */
void ptl_events_echo(ptl_machine *m, int on);

/* What each system PTE is used for: the fragmentation map's colours. */
typedef enum ptl_pte_use {
    PTL_PTE_FREE = 0,
    PTL_PTE_IOSPACE,   /* MmMapIoSpace */
    PTL_PTE_STACK,     /* a kernel thread stack and its guard page */
    PTL_PTE_IMAGE,     /* a driver image or import DLL */
    PTL_PTE_MDL,       /* an MDL mapped to system space */
    PTL_PTE_NONCACHED, /* MmAllocateNonCachedMemory */
    PTL_PTE_POOL,      /* nonpaged pool expansion */
    PTL_PTE_OTHER,
    PTL_PTE_LEAKED, /* owned by a driver that has been unloaded */
    PTL_PTE_USES
} ptl_pte_use;
const char *ptl_pte_use_name(int use);
/* Fill uses[i] (and owners[i], the owning driver's index + 1 in load order, 0 the system,
 * when owners is not NULL) for the first n system PTEs in address order; returns how many
 * PTEs the pool has. */
uint32_t ptl_syspte_snapshot(const ptl_machine *m, uint8_t *uses, uint32_t *owners, uint32_t n);
/* Drivers in load order (import DLLs included); NULL past the end. */
ptl_driver *ptl_driver_at(const ptl_machine *m, uint32_t index);
int ptl_driver_loaded(const ptl_driver *d);
/* System PTEs the driver holds now, of every use. */
uint32_t ptl_driver_ptes(const ptl_driver *d);

/* The report (report.c): fragmentation maps are taken at chosen moments with
 * ptl_report_snapshot (at most 256 are kept per machine; past that, each replaces the
 * last); ptl_report_write writes one self-contained HTML file with the Free System PTEs
 * timeline, the maps, the layout to scale, mappings by driver and the STOP. */
void ptl_report_snapshot(ptl_machine *m, const char *label);
int ptl_report_write(ptl_machine *m, const char *path, const char *title); /* 0 or -1 */

/* Import the Memory Management values (SystemPages, PagedPoolSize, NonPagedPoolSize,
 * TrackPtes) from a .reg file as regedit exports it (REGEDIT4, or version 5.00 in
 * UTF-16LE). 0, or -1 with "file:line: reason" in ptl_error() and *cfg unchanged. */
int ptl_registry_import(ptl_config *cfg, const char *path);
int ptl_registry_import_text(ptl_config *cfg, const char *data, size_t len, const char *name);

/* System PTE pool statistics. */
#define PTL_SYSPTE_HIST_BUCKETS 16 /* bucket k: free runs of [2^k, 2^(k+1)) PTEs */
typedef struct ptl_syspte_stats {
    uint32_t base_va;           /* first VA of the pool */
    uint32_t total;             /* PTEs in the pool */
    uint32_t free;              /* free PTEs */
    uint32_t largest_free;      /* longest free run */
    uint32_t free_runs;         /* number of maximal free runs */
    uint32_t peak_used;         /* most PTEs ever in use at once */
    uint64_t failed_total;      /* requests refused: not enough free PTEs */
    uint64_t failed_fragmented; /* requests refused with enough free but no run long enough */
    uint32_t hist[PTL_SYSPTE_HIST_BUCKETS];
} ptl_syspte_stats;
void ptl_syspte_stats_get(const ptl_machine *m, ptl_syspte_stats *out);

/* The boot-time layout: one region per line of `ptelab layout`. */
typedef struct ptl_region {
    const char *name; /* "System PTEs", "Paged pool", ... */
    uint32_t start;   /* first byte */
    uint32_t end;     /* one past the last byte (0 means 4 GB) */
} ptl_region;
int ptl_layout_regions(const ptl_machine *m, const ptl_region **regions); /* count */
void ptl_layout_print(const ptl_machine *m, FILE *out);

#ifdef __cplusplus
}
#endif

#endif /* PTELAB_PTELAB_H */
