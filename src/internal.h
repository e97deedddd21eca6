/* internal.h - what every ptelab module shares: the assertion and error helpers, the
 * protected-frame mechanism behind bug checks, and the machine that aggregates the
 * per-module states.
 *
 * Naming: public names are ptl_<module>_<verb>; names shared between modules are
 * ptl__<module>_<verb>; names private to a file are static. Emulated NT structures keep
 * NT's field names (PteAddress, MdlFlags) so that kd output reads like WinDbg.
 *
 * Failure classes (never mixed):
 *   PTL_ASSERT     a bug in ptelab itself: prints and aborts, in every build;
 *   ptl__bugcheck  the emulated NT stops: freezes the machine and unwinds (stop.c);
 *   return codes   NTSTATUS/NULL to driver code where NT returns them, -1/NULL plus
 *                  ptl__fail() to harness callers for misuse of the harness.
 *
 * Thread-local state, the only mutable state outside a machine: the current machine
 * (inside ptl_call) and the last harness error message (like errno).
 */
#ifndef PTELAB_INTERNAL_H
#define PTELAB_INTERNAL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <ptelab/ptelab.h>

#define PTL_PAGE_SIZE     4096u
#define PTL_PAGE_SHIFT    12
#define PTL_PAGE_MASK     (PTL_PAGE_SIZE - 1u)
#define PTL_PTES_PER_PAGE 1024u
#define PTL_PDE_SPAN      (4u << 20) /* VA mapped by one page table */

#define PTL_PAGES_SPANNED(va, n) \
    ((uint32_t)((((uint64_t)(va)&PTL_PAGE_MASK) + (uint64_t)(n) + PTL_PAGE_MASK) >> PTL_PAGE_SHIFT))

void ptl__assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));
#define PTL_ASSERT(x) ((x) ? (void)0 : ptl__assert_fail(#x, __FILE__, __LINE__))

/* On a loop that scans memory for a value: libFuzzer's coverage hooks on its compares cost
 * more than the scan and tell the fuzzer nothing (fuzz_ddi's commits scan gigabytes). */
#if defined(__clang__)
#define PTL_NO_COVERAGE __attribute__((no_sanitize("coverage")))
#else
#define PTL_NO_COVERAGE
#endif

/* Record a harness error message for ptl_error(); returns -1 for convenience. */
int ptl__fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void ptl__set_current(ptl_machine *m);

void *ptl__xcalloc(size_t n, size_t size); /* aborts on host out-of-memory */
/* The same, 2 MB aligned and offered to transparent huge pages from 2 MB up (machine.c). */
void *ptl__xcalloc_huge(size_t n, size_t size);
void *ptl__xrealloc(void *p, size_t size);
char *ptl__xstrdup(const char *s);

/* ---- protected frames: the landing points of bug checks and raised exceptions -------- */

typedef ptl_frame ptl__frame; /* see ptelab.h */

/* Modules: each has a state struct embedded in the machine and a private header. */
#include "phys.h"
#include "hal.h"
#include "pte.h"
#include "layout.h"
#include "sysptes.h"
#include "mmu.h"
#include "process.h"
#include "kernel.h"
#include "stop.h"
#include "perf.h"
#include "iospace.h"
#include "cache.h"
#include "object.h"
#include "mdl.h"
#include "verifier.h"
#include "pool.h"
#include "native.h"
#include "icheck.h"
#include "report.h"

#define PTL_MAX_ISLANDS 32

struct ptl_machine {
    ptl__fastpath fast; /* first: the inline register accessors read it (ptelab/fastpath.h) */
    uint32_t magic;     /* PTL__MACHINE_MAGIC while alive: catches foreign handles */
    ptl_config cfg;
    ptl__phys phys;
    ptl__hal hal;
    ptl__pte pte;
    ptl__layout layout;
    ptl__sysptes sysptes;
    ptl__mmu mmu;
    ptl__procs procs;
    ptl__kernel kernel;
    ptl__stopstate stop;
    ptl__perf perf;
    ptl__iospace iospace;
    ptl__cache cache;
    ptl__objects objects;
    ptl__mdls mdls;
    ptl__verifier verifier;
    ptl__pools pools;
    ptl__native native;
    ptl__icheck *icheck; /* what the last ptl_check saw (icheck.c); NULL before the first */
    FILE *check_sink;    /* where a check's first pass writes its reasons: nowhere */
    ptl__frame *frames;  /* innermost protected frame, NULL outside any */
    struct {
        uint32_t lo, hi;        /* inclusive */
    } islands[PTL_MAX_ISLANDS]; /* host mappings below 4 GB (valgrind), see machine.c */
    int nislands;
    int call_depth;
};

#define PTL__MACHINE_MAGIC 0x4D4C5450u /* "PTLM" */

/* A pointer is host memory (not an emulated address): at or above 4 GB, or inside one of
 * the host's own mappings below 4 GB. */
bool ptl__is_host(const ptl_machine *m, const volatile void *p);
bool ptl__overlaps_island(const ptl_machine *m, uint32_t start, uint32_t end);

/* Every DDI starts here (ddi.c): the machine ptl_call made current (a DDI outside driver
 * code is a harness misuse: message and abort), a STOP re-landed on a machine that already
 * stopped, one tick of the simulated clock, and where the driver called from (its return
 * address: the verifier's call site). A macro, so that the address is the DDI's own return
 * address into the driver. */
ptl_machine *ptl__ddi_enter_at(const char *name, const void *caller);
#define ptl__ddi_enter(name) ptl__ddi_enter_at((name), __builtin_return_address(0))
/* The same without the tick: what HAL macros and the thread DDIs that keep their own
 * clock rules use. */
ptl_machine *ptl__driver_context(const char *name);
/* "64K", "1.5M", "3.5G", "4096", "64KB": bytes (0 allowed), or -1 (machine.c; the size
 * parser behind ptl_parse_size and the planner's workload sizes). */
int ptl__parse_size_bytes(const char *s, double *bytes);

/* A machine handle is usable: not NULL and alive. Sets ptl_error otherwise. */
bool ptl__machine_ok(const ptl_machine *m);

/* Push a harness frame; use as
 *     ptl__frame f;
 *     if (ptl__enter(m, &f) && setjmp(f.jb) == 0) { ... }
 *     ptl__leave(m, &f);
 * ptl__enter always pushes; it returns false when the machine is already stopped, so the
 * body is skipped. ptl__leave always pops. */
bool ptl__enter(ptl_machine *m, ptl__frame *f);
void ptl__leave(ptl_machine *m, ptl__frame *f);

#endif /* PTELAB_INTERNAL_H */
