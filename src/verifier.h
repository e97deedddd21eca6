/* verifier.h - Driver Verifier's leak checks at unload, and fault injection. See verifier.c. */
#ifndef PTELAB_VERIFIER_H
#define PTELAB_VERIFIER_H

#include <stddef.h>
#include <stdint.h>

/* Where a resource was allocated: the DDI, the driver's return address into it, the
 * clock. */
typedef struct ptl__site {
    const char *ddi;
    const void *caller;
    uint64_t tick;
    char where[48]; /* a scenario's file:line, when a Lua scenario made the call */
} ptl__site;

typedef struct ptl__verifier {
    uint64_t attempts; /* allocations counted for fault injection */
    uint64_t injected; /* failures injected */
    uint64_t rng;
    /* the DDI running now and its caller (ptl__ddi_enter_at) */
    const char *ddi;
    const void *caller;
    const char *where; /* set by the Lua runner around its DDI calls; NULL otherwise */
    /* With the verifier on, the call site of every tracked allocation: sites[i - 1] for a
     * resource whose site is i (0: none). Append-only, like the event log. */
    ptl__site *sites;
    uint32_t nsites, capsites;
    uint32_t *syspte_site[2]; /* per system PTE pool, at the first index of a run */
    /* Pages left locked behind an MDL freed while they were locked: nothing can unlock
     * them any more, so they are the driver's leak at unload. */
    struct ptl__locked_orphan {
        uint32_t driver, pages, site;
        char process[16];
    } * orphans;
    uint32_t norphans, caporphans;
} ptl__verifier;

struct ptl_machine;
struct ptl_driver;
void ptl__verifier_init(struct ptl_machine *m);
/* 1 when this allocation of `kind` (PTL_FAULT_*) must fail. */
int ptl__verifier_inject(struct ptl_machine *m, uint32_t kind, const char *what);
/* At unload: report every resource the driver still holds; with the verifier on, stop
 * with 0xC4 subcode 0x62. Returns the number of leaks. */
uint32_t ptl__verifier_unload(struct ptl_machine *m, struct ptl_driver *d);
/* With the verifier on: the call site of the allocation being made now, as a site number
 * for the resource's record; 0 otherwise. */
uint32_t ptl__verifier_site(struct ptl_machine *m);
/* Writes " (DDI called from ADDR [symbol+off], tick T)" for a site, "" for 0. */
void ptl__verifier_site_text(const struct ptl_machine *m, uint32_t site, char *buf, size_t n);
void ptl__verifier_free(struct ptl_machine *m);
/* IoFreeMdl of an MDL whose pages are still locked: remember them for the unload check. */
void ptl__verifier_locked_orphan(struct ptl_machine *m, uint32_t driver, uint32_t pages,
                                 uint32_t site, const char *process);

#endif
