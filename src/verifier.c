/* verifier.c - what Driver Verifier adds for the DDIs ptelab models: leaks at unload and
 * low-resources simulation. The per-DDI checks (IRQL rules 0xC4 0x70-0x7B, MDL misuse
 * 0x83/0x85/0xB0-0xB8, 0xDA subtypes) sit in the DDIs themselves (mdl.c, iospace.c,
 * ddi.c), each behind cfg.verifier.
 *
 * Leaks at unload. A driver that unloads while it still holds system PTE runs
 * (MmMapIoSpace, MDL mappings, MmAllocateNonCachedMemory), MDLs it allocated, pool blocks
 * (Verifier's Pool Tracking) or views of \Device\PhysicalMemory has each reported (an
 * event naming the resource); pages it left locked show through the MDLs that hold them, or,
 * when it freed such an MDL, as locked pages nothing can unlock any more. With the
 * verifier on, the unload then stops with DRIVER_VERIFIER_DETECTED_VIOLATION (0xC4) subcode 0x62,
 * the code Windows uses for a driver that unloads without freeing what it allocated: P2 the
 * driver's name (a UNICODE_STRING in its image), P3 0, P4 the number of leaked resources
 * (learn.microsoft.com, "Bug Check 0xC4", subcode 0x62; docs/fidelity.md). Without the
 * verifier the leaks stay: the runs show as "leaked" in the fragmentation map.
 *
 * Call sites. With the verifier on, every tracked allocation (system PTE run, MDL, pool
 * block, view) records where it was made: the DDI, the driver's return address into it
 * (ptl__ddi_enter's __builtin_return_address, named with dladdr when the host exports the
 * symbol) and the clock. A leak report ends with it, as Verifier's !verifier output
 * names the allocating caller.
 *
 * Fault injection. Like Verifier's low-resources simulation: with cfg.fault_inject_kinds
 * set, the Nth counted allocation fails (fault_inject_nth, 1-based), or each fails with
 * probability fault_inject_ppm per million from a generator seeded with cfg.seed, so that
 * a driver's failure paths run. Each injection is an event.
 *
 * Invariants: the records here are append-only (sites, locked orphans); the resources they
 * describe are checked by their own modules.
 */
#include "internal.h"

#include <ptelab/wdm.h>

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ptl__verifier_init(ptl_machine *m)
{
    memset(&m->verifier, 0, sizeof m->verifier);
    m->verifier.rng = m->cfg.seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
    if (!m->verifier.rng)
        m->verifier.rng = 1;
}

static uint64_t next_random(ptl__verifier *v)
{
    v->rng ^= v->rng << 13;
    v->rng ^= v->rng >> 7;
    v->rng ^= v->rng << 17;
    return v->rng;
}

int ptl__verifier_inject(ptl_machine *m, uint32_t kind, const char *what)
{
    const ptl_config *c = &m->cfg;
    if (!(c->fault_inject_kinds & kind))
        return 0;
    ptl__verifier *v = &m->verifier;
    v->attempts++;
    int fail = (c->fault_inject_nth && v->attempts == c->fault_inject_nth) ||
               (c->fault_inject_ppm && next_random(v) % 1000000u < c->fault_inject_ppm);
    if (fail) {
        v->injected++;
        ptl__perf_event(m, PTL_EV_NOTE, "fault injection: allocation %llu (%s) fails",
                        (unsigned long long)v->attempts, what);
    }
    return fail;
}

uint32_t ptl__verifier_site(ptl_machine *m)
{
    ptl__verifier *v = &m->verifier;
    if (!m->cfg.verifier || !v->ddi || v->nsites == UINT32_MAX - 1)
        return 0;
    if (v->nsites == v->capsites) {
        v->capsites = v->capsites ? 2 * v->capsites : 64;
        v->sites = ptl__xrealloc(v->sites, (size_t)v->capsites * sizeof *v->sites);
    }
    ptl__site *site = &v->sites[v->nsites++];
    *site = (ptl__site){v->ddi, v->caller, m->perf.tick, ""};
    if (v->where)
        snprintf(site->where, sizeof site->where, "%s", v->where);
    return v->nsites;
}

void ptl__verifier_site_text(const ptl_machine *m, uint32_t site, char *buf, size_t n)
{
    if (!n)
        return;
    buf[0] = '\0';
    if (!site || site > m->verifier.nsites)
        return;
    const ptl__site *s = &m->verifier.sites[site - 1];
    Dl_info info;
    if (s->where[0]) /* a scenario's call: its line says more than the runner's address */
        snprintf(buf, n, " (%s called at %s, at tick %llu)", s->ddi, s->where,
                 (unsigned long long)s->tick);
    else if (dladdr(s->caller, &info) && info.dli_sname && info.dli_saddr)
        snprintf(buf, n, " (%s called from %p, %s+0x%tx, at tick %llu)", s->ddi, s->caller,
                 info.dli_sname, (const char *)s->caller - (const char *)info.dli_saddr,
                 (unsigned long long)s->tick);
    else
        snprintf(buf, n, " (%s called from %p, at tick %llu)", s->ddi, s->caller,
                 (unsigned long long)s->tick);
}

void ptl__verifier_locked_orphan(ptl_machine *m, uint32_t driver, uint32_t pages, uint32_t site,
                                 const char *process)
{
    ptl__verifier *v = &m->verifier;
    if (v->norphans == v->caporphans) {
        v->caporphans = v->caporphans ? 2 * v->caporphans : 8;
        v->orphans = ptl__xrealloc(v->orphans, (size_t)v->caporphans * sizeof *v->orphans);
    }
    struct ptl__locked_orphan *o = &v->orphans[v->norphans++];
    o->driver = driver;
    o->pages = pages;
    o->site = site;
    snprintf(o->process, sizeof o->process, "%s", process ? process : "?");
}

void ptl__verifier_free(ptl_machine *m)
{
    free(m->verifier.orphans);
    free(m->verifier.sites);
    for (int t = 0; t < 2; t++)
        free(m->verifier.syspte_site[t]);
    memset(&m->verifier, 0, sizeof m->verifier);
}

typedef struct leak_ctx {
    ptl_machine *m;
    uint32_t id;
    const char *name;
    uint32_t leaks;
} leak_ctx;

static void mdl_leak(void *ctx, const void *key, void *val)
{
    leak_ctx *x = ctx;
    const ptl__mdlrec *r = val;
    if (r->driver != x->id || !r->allocated)
        return;
    const MDL *mdl = key;
    x->leaks++;
    char site[256];
    ptl__verifier_site_text(x->m, r->site, site, sizeof site);
    ptl__perf_event(x->m, PTL_EV_MISUSE,
                    "leak at unload of %s: an MDL (%p, flags 0x%x) it allocated was never freed%s",
                    x->name, key, (unsigned)(uint16_t)mdl->MdlFlags, site);
}

static void pool_leak(void *ctx, const void *key, void *val)
{
    leak_ctx *x = ctx;
    const ptl__poolblock *b = val;
    (void)key;
    if (b->driver != x->id)
        return;
    x->leaks++;
    char site[256];
    ptl__verifier_site_text(x->m, b->site, site, sizeof site);
    ptl__perf_event(x->m, PTL_EV_MISUSE,
                    "leak at unload of %s: %s pool block at %08x (%u bytes, tag '%.4s') never "
                    "freed%s",
                    x->name, b->paged ? "a paged" : "a nonpaged", b->data, b->bytes,
                    (const char *)&b->tag, site);
}

uint32_t ptl__verifier_unload(ptl_machine *m, ptl_driver *d)
{
    leak_ctx x = {m, d->id, d->name, 0};
    const ptl__syspool *p = &m->sysptes.pool[PTL_SYSTEM_PTE_SPACE];
    for (uint32_t i = 0; i < p->total; i++) {
        const ptl__pteinfo *e = &p->info[i];
        if (!e->run_len || e->driver != d->id || e->kind == PTL_KIND_IMAGE)
            continue;
        x.leaks++;
        uint32_t va;
        ptl__syspte_run_at(m,
                           p->seg1_va && i > p->seg0_count
                               ? p->seg1_va + (i - p->seg0_count - 1) * PTL_PAGE_SIZE
                               : p->seg0_va + i * PTL_PAGE_SIZE,
                           NULL, &va, NULL, NULL, NULL);
        char site[256];
        ptl__verifier_site_text(m,
                                m->verifier.syspte_site[PTL_SYSTEM_PTE_SPACE]
                                    ? m->verifier.syspte_site[PTL_SYSTEM_PTE_SPACE][i]
                                    : 0,
                                site, sizeof site);
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "leak at unload of %s: %u system PTEs at %08x (%s) still mapped%s", d->name,
                        e->run_len, va, ptl__pte_kind_name(e->kind), site);
    }
    ptl__ptrmap_each(&m->mdls.map, mdl_leak, &x);
    ptl__ptrmap_each(&m->pools.blocks, pool_leak, &x);
    for (uint32_t k = 0; k < m->objects.nviews; k++) {
        const ptl__view *v = &m->objects.views[k];
        if (v->driver != d->id)
            continue;
        x.leaks++;
        char site[256];
        ptl__verifier_site_text(m, v->site, site, sizeof site);
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "leak at unload of %s: a view of physical %llx at %08x in %s%s", d->name,
                        (unsigned long long)v->pa, v->va, v->process->name, site);
    }
    for (uint32_t k = 0; k < m->verifier.norphans; k++) {
        const struct ptl__locked_orphan *o = &m->verifier.orphans[k];
        if (o->driver != d->id)
            continue;
        x.leaks++;
        char site[256];
        ptl__verifier_site_text(m, o->site, site, sizeof site);
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "leak at unload of %s: %u pages of %s still locked, their MDL freed "
                        "before MmUnlockPages%s",
                        d->name, o->pages, o->process, site);
    }
    if (x.leaks && m->cfg.verifier)
        ptl__bugcheck_why(m, 0xC4, 0x62, d->base_va + 0x100, 0, x.leaks,
                          "%s unloaded holding %u resources it allocated", d->name, x.leaks);
    return x.leaks;
}
