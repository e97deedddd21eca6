/* sysptes.c - the system PTE pool: contiguous runs of system virtual address space.
 *
 * The article's central resource. NT reserves a region of system VA at boot, sized from
 * RAM and the SystemPages registry value, and hands out contiguous runs of its PTEs to
 * kernel stacks, driver images, MmMapIoSpace, MDL mappings and MmAllocateNonCachedMemory
 * (MiReserveSystemPtes / MiReleaseSystemPtes). NT 4.0 keeps a second pool type for
 * nonpaged pool expansion; P1 of STOP 0x3F names which one ran out (learn.microsoft.com,
 * "Bug Check 0x3F NO_MORE_SYSTEM_PTES"). Both are modelled here, each over its own region
 * of the layout (layout.c).
 *
 * Fragmentation is real: a request needs one free run at least as long as itself, so it
 * can fail while the free count is larger (counted in failed_fragmented).
 *
 * The page tables of both regions are created at boot, as NT does before it builds the
 * free list, so a reservation never needs RAM. A free PTE is zero here; NT threads its
 * free list through the free PTEs themselves (docs/fidelity.md).
 *
 * The allocator engine (placement, statistics) is spool: first fit by address, low or high
 * end by policy. NT's exact placement is documented in docs/fidelity.md.
 *
 * Invariants (ptl__sysptes_check): the engine is consistent; every reserved run has its
 * length recorded at its first PTE and a kind on every PTE; free PTEs are invalid and of
 * kind FREE; the sum of run lengths is total - free. Reserve and release tell the
 * incremental check (icheck.c) which range of the run map and the allocator they changed.
 */
#include "internal.h"

#include <string.h>

static const char *const kind_names[PTL_KIND_MAX] = {
    "free",        "I/O space", "thread stack", "driver image",
    "MDL mapping", "noncached", "pool",         "other",
};

const char *ptl__pte_kind_name(int kind)
{
    return (kind >= 0 && kind < PTL_KIND_MAX) ? kind_names[kind] : "?";
}

static uint32_t idx_to_va(const ptl__syspool *p, uint32_t i)
{
    if (i < p->seg0_count || !p->seg1_va)
        return p->seg0_va + i * PTL_PAGE_SIZE;
    PTL_ASSERT(i > p->seg0_count);
    return p->seg1_va + (i - p->seg0_count - 1) * PTL_PAGE_SIZE;
}

/* Index of the PTE that maps va, or -1 when va is outside the pool's segments. */
static int64_t va_to_idx(const ptl__syspool *p, uint32_t va)
{
    if (va >= p->seg0_va && (va - p->seg0_va) / PTL_PAGE_SIZE < p->seg0_count)
        return (va - p->seg0_va) / PTL_PAGE_SIZE;
    if (p->seg1_va && va >= p->seg1_va &&
        (va - p->seg1_va) / PTL_PAGE_SIZE < p->total - p->seg0_count - 1)
        return p->seg0_count + 1 + (va - p->seg1_va) / PTL_PAGE_SIZE;
    return -1;
}

static int ensure_tables(ptl_machine *m, uint32_t va, uint32_t count)
{
    for (uint64_t a = va; a < (uint64_t)va + (uint64_t)count * PTL_PAGE_SIZE;
         a += PTL_PDE_SPAN - (a & (PTL_PDE_SPAN - 1))) {
        if (ptl__pte_ensure_table(m, 0, (uint32_t)a) != 0)
            return ptl__fail("no RAM for the page tables of the system PTE pool");
    }
    return 0;
}

static int pool_init(ptl_machine *m, ptl__syspool *p, uint32_t va0, uint32_t n0, uint32_t va1,
                     uint32_t n1)
{
    p->seg0_va = va0;
    p->seg0_count = n0;
    p->seg1_va = n1 ? va1 : 0;
    p->total = n1 ? n0 + 1 + n1 : n0;
    PTL_ASSERT(p->total < (1u << 24)); /* ptl__pteinfo.run_len */
    p->alloc = ptl__spool_create(PTL_SPOOL_FAST, p->total, (int)m->cfg.syspte_policy);
    p->info = ptl__xcalloc(p->total ? p->total : 1, sizeof *p->info);
    if (ensure_tables(m, va0, n0) != 0 || (n1 && ensure_tables(m, va1, n1) != 0))
        return -1;
    if (n1) {
        /* Hold the junction index for good: the allocator must never join the segments. */
        PTL_ASSERT(ptl__spool_reserve_at(p->alloc, n0, 1) == 0);
        p->info[n0] = (ptl__pteinfo){.run_len = 1, .kind = PTL_KIND_OTHER, .driver = 0};
    }
    return 0;
}

int ptl__sysptes_init(ptl_machine *m)
{
    memset(&m->sysptes, 0, sizeof m->sysptes);
    const ptl__layout *l = &m->layout;
    int rc;
    if (l->extra_count)
        rc = pool_init(m, &m->sysptes.pool[PTL_SYSTEM_PTE_SPACE], l->extra_va, l->extra_count,
                       l->syspte_va, l->syspte_count);
    else
        rc = pool_init(m, &m->sysptes.pool[PTL_SYSTEM_PTE_SPACE], l->syspte_va, l->syspte_count, 0,
                       0);
    if (rc != 0)
        return -1;
    return pool_init(m, &m->sysptes.pool[PTL_NONPAGED_POOL_EXPANSION], l->nppx_va, l->nppx_count, 0,
                     0);
}

void ptl__sysptes_free(ptl_machine *m)
{
    for (int t = 0; t < PTL_SYSPTE_TYPES; t++) {
        ptl__spool_destroy(m->sysptes.pool[t].alloc);
        free(m->sysptes.pool[t].info);
    }
    memset(&m->sysptes, 0, sizeof m->sysptes);
}

uint32_t ptl__syspte_reserve(ptl_machine *m, int type, uint32_t n, ptl__pte_kind kind,
                             uint32_t driver)
{
    PTL_ASSERT(type >= 0 && type < PTL_SYSPTE_TYPES && kind > PTL_KIND_FREE);
    ptl__syspool *p = &m->sysptes.pool[type];
    if (n == 0 || n > p->total) {
        p->failed_total++;
        return 0;
    }
    if (ptl__verifier_inject(m, PTL_FAULT_SYSPTES, "system PTEs")) {
        p->failed_total++;
        return 0;
    }
    int64_t start = ptl__spool_alloc(p->alloc, n);
    if (start < 0) {
        if (ptl__spool_free_count(p->alloc) >= n)
            p->failed_fragmented++;
        else
            p->failed_total++;
        return 0;
    }
    p->reserves++;
    ptl__pteinfo *info = &p->info[start];
    info[0] = (ptl__pteinfo){.run_len = 0, .kind = (uint8_t)kind, .driver = driver};
    for (uint32_t have = 1; have < n; have *= 2) /* copies of copies: memcpy's wide stores */
        memcpy(&info[have], info, (have < n - have ? have : n - have) * sizeof *info);
    info->run_len = n;
    uint32_t site = type < 2 ? ptl__verifier_site(m) : 0;
    if (site || (type < 2 && m->verifier.syspte_site[type])) {
        /* where the run was asked for, for the verifier's leak reports */
        uint32_t **sites = &m->verifier.syspte_site[type];
        if (!*sites)
            *sites = ptl__xcalloc(p->total ? p->total : 1, sizeof **sites);
        (*sites)[start] = site;
    }
    ptl__icheck_sysptes_changed(m, type, (uint32_t)start, n);
    uint32_t used = p->total - ptl__spool_free_count(p->alloc);
    if (used > p->peak_used)
        p->peak_used = used;
    return idx_to_va(p, (uint32_t)start);
}

int ptl__syspte_pool_of(ptl_machine *m, uint32_t va)
{
    for (int t = 0; t < PTL_SYSPTE_TYPES; t++) {
        if (va_to_idx(&m->sysptes.pool[t], va) >= 0)
            return t;
    }
    return -1;
}

int ptl__syspte_release(ptl_machine *m, int type, uint32_t va, uint32_t n)
{
    ptl__syspool *p = &m->sysptes.pool[type];
    int64_t at = va_to_idx(p, va);
    if (at < 0 || (va & PTL_PAGE_MASK))
        return PTL_RELEASE_NOT_IN_POOL;
    uint32_t start = (uint32_t)at;
    if (p->info[start].kind == PTL_KIND_FREE)
        return PTL_RELEASE_NOT_RESERVED;
    if (p->info[start].run_len == 0)
        return PTL_RELEASE_WRONG_START;
    if (p->info[start].run_len != n)
        return PTL_RELEASE_WRONG_SIZE;
    PTL_ASSERT(ptl__spool_is_reserved(p->alloc, start, n));
    ptl__pte_write_run(m, 0, va, n, 0, 0);
    memset(&p->info[start], 0, n * sizeof *p->info); /* PTL_KIND_FREE, no run, no driver */
    ptl__spool_free(p->alloc, start, n);
    ptl__icheck_sysptes_changed(m, type, start, n);
    p->releases++;
    return PTL_RELEASE_OK;
}

int ptl__syspte_run_at(ptl_machine *m, uint32_t va, int *type, uint32_t *start_va, uint32_t *count,
                       ptl__pte_kind *kind, uint32_t *driver)
{
    int t = ptl__syspte_pool_of(m, va);
    if (t < 0)
        return 0;
    const ptl__syspool *p = &m->sysptes.pool[t];
    uint32_t i = (uint32_t)va_to_idx(p, va);
    if (p->info[i].kind == PTL_KIND_FREE)
        return 0;
    while (p->info[i].run_len == 0) /* walk back to the run's first PTE */
        i--;
    if (type)
        *type = t;
    if (start_va)
        *start_va = idx_to_va(p, i);
    if (count)
        *count = p->info[i].run_len;
    if (kind)
        *kind = (ptl__pte_kind)p->info[i].kind;
    if (driver)
        *driver = p->info[i].driver;
    return 1;
}

void ptl__sysptes_stats(const ptl_machine *m, int type, ptl__spool_stats *st)
{
    ptl__spool_stats_get(m->sysptes.pool[type].alloc, st);
}

int ptl__sysptes_check(ptl_machine *m, FILE *why)
{
    for (int t = 0; t < PTL_SYSPTE_TYPES; t++) {
        ptl__syspool *p = &m->sysptes.pool[t];
        if (ptl__spool_check(p->alloc, why) != 0)
            return -1;
        uint64_t in_runs = 0;
        for (uint32_t i = 0; i < p->total;) {
            const ptl__pteinfo *e = &p->info[i];
            if (p->seg1_va && i == p->seg0_count) { /* the junction */
                i++;
                in_runs++;
                continue;
            }
            uint32_t va = idx_to_va(p, i), pte = 0;
            if (e->kind == PTL_KIND_FREE) {
                if (ptl__pte_read(m, 0, va, &pte) != 0 || pte != 0 || e->run_len) {
                    fprintf(why, "sysptes: free PTE for %08x is %08x (run_len %u)\n", va, pte,
                            e->run_len);
                    return -1;
                }
                if (ptl__spool_is_reserved(p->alloc, i, 1)) {
                    fprintf(why,
                            "sysptes: PTE for %08x is free in the map, reserved in the "
                            "allocator\n",
                            va);
                    return -1;
                }
                i++;
                continue;
            }
            uint32_t n = e->run_len;
            if (n == 0 || n > p->total - i || !ptl__spool_is_reserved(p->alloc, i, n)) {
                fprintf(why, "sysptes: run at %08x has bad length %u\n", va, n);
                return -1;
            }
            for (uint32_t k = 1; k < n; k++) {
                if (p->info[i + k].run_len != 0 || p->info[i + k].kind != e->kind) {
                    fprintf(why, "sysptes: run at %08x is broken at PTE %u\n", va, k);
                    return -1;
                }
            }
            in_runs += n;
            i += n;
        }
        if (in_runs != p->total - ptl__spool_free_count(p->alloc)) {
            fprintf(why, "sysptes: runs hold %llu PTEs, allocator says %u in use\n",
                    (unsigned long long)in_runs, p->total - ptl__spool_free_count(p->alloc));
            return -1;
        }
    }
    return 0;
}

static const char *const use_names[PTL_PTE_USES] = {
    "free",      "I/O space",      "thread stack", "driver image", "MDL mapping",
    "noncached", "pool expansion", "other",        "leaked",
};

const char *ptl_pte_use_name(int use)
{
    return (use >= 0 && use < PTL_PTE_USES) ? use_names[use] : "?";
}

uint32_t ptl_syspte_snapshot(const ptl_machine *m, uint8_t *uses, uint32_t *owners, uint32_t n)
{
    if (!ptl__machine_ok(m))
        return 0;
    const ptl__syspool *p = &m->sysptes.pool[PTL_SYSTEM_PTE_SPACE];
    /* the kinds are the same enumeration in the same order; leaked is derived */
    for (uint32_t i = 0; i < n && i < p->total; i++) {
        const ptl__pteinfo *e = &p->info[i];
        uint8_t use = e->kind;
        if (use != PTL_KIND_FREE && e->driver) {
            const ptl_driver *d = ptl__driver_by_id((ptl_machine *)m, e->driver);
            if (d && d->unloaded)
                use = PTL_PTE_LEAKED;
        }
        if (uses)
            uses[i] = use;
        if (owners)
            owners[i] = e->driver;
    }
    return p->total;
}

uint32_t ptl_driver_ptes(const ptl_driver *d)
{
    if (!d || d->magic != PTL__DRIVER_MAGIC)
        return 0;
    const ptl__syspool *p = &d->m->sysptes.pool[PTL_SYSTEM_PTE_SPACE];
    uint32_t n = 0;
    for (uint32_t i = 0; i < p->total; i++)
        n += p->info[i].kind != PTL_KIND_FREE && p->info[i].driver == d->id;
    return n;
}

_Static_assert((int)PTL_KIND_OTHER == (int)PTL_PTE_OTHER && (int)PTL_KIND_MDL == (int)PTL_PTE_MDL,
               "ptl__pte_kind and ptl_pte_use must share their values");
