/* mdl.c - memory descriptor lists, the article's second method and the I/O path.
 *
 * Models IoAllocateMdl, MmBuildMdlForNonPagedPool, MmProbeAndLockPages, MmUnlockPages,
 * MmMapLockedPages(SpecifyCache), MmUnmapLockedPages and IoFreeMdl with the semantics and
 * failures of learn.microsoft.com's pages for each (collected with ReactOS's observable
 * behaviour in docs/research/bugchecks-and-ddis.md, section 3):
 *   - IoAllocateMdl returns NULL when the MDL would exceed 64 KB on x86 (sizeof(MDL) 0x1C +
 *     4 bytes per page: about 64 MB of buffer);
 *   - MmBuildMdlForNonPagedPool fills the PFN array from the PTEs, sets
 *     MDL_SOURCE_IS_NONPAGED_POOL, MappedSystemVa, and MDL_IO_SPACE for I/O-space pages;
 *   - MmProbeAndLockPages touches every page for the access, raises STATUS_ACCESS_VIOLATION
 *     (the driver catches it with PTL_TRY) on a bad user range, locks the frames, charges
 *     the process's locked-page count (what PROCESS_HAS_LOCKED_PAGES checks at exit);
 *   - MmMapLockedPages(KernelMode) stops with NO_MORE_SYSTEM_PTES (0x3F: P1 0, P2 pages,
 *     P3 free, P4 total) when no run fits, unless MDL_MAPPING_CAN_FAIL is set;
 *     MmMapLockedPagesSpecifyCache returns NULL unless BugCheckOnFailure; a user-mode
 *     mapping that fails raises;
 *   - the return value: NT 4.0 SP3 returns the page-aligned address, SP4 and later the
 *     actual address (KB 199311), so the article's PAGE_ALIGN(...) + MmGetMdlByteOffset
 *     formula is right on every profile;
 *   - a user-space mapping exists only in the process that was current; unmapping it
 *     from another process is diagnosed; process exit removes it with the address space
 *     (docs/fidelity.md, "MDL user mappings at exit").
 *
 * Misuse NT punishes with corruption is caught: with Driver Verifier, the 0xC4 subcodes
 * and 0xDA subtypes Microsoft documents; otherwise a ptelab misuse event that names the
 * driver, the call and the mapping, and the machine left as it was.
 *
 * Invariants (ptl__mdls_check): every recorded system mapping is a run of MDL kind whose
 * length is the MDL's span; every live user mapping has its LOCKED_PAGES VAD.
 */
#include "internal.h"

#include <ptelab/wdm.h>
#include <string.h>

#define X86_MDL_BYTES 0x1Cu /* sizeof(MDL) on x86 */

void ptl__mdls_init(ptl_machine *m)
{
    memset(&m->mdls, 0, sizeof m->mdls);
}

static void free_rec(void *ctx, const void *key, void *val)
{
    (void)ctx;
    ptl__mdlrec *r = val;
    if (r->allocated)
        free((void *)(uintptr_t)key);
    free(r->users);
    free(r);
}

void ptl__mdls_free(ptl_machine *m)
{
    ptl__ptrmap_each(&m->mdls.map, free_rec, NULL);
    ptl__ptrmap_free(&m->mdls.map);
}

static const char *driver_name(ptl_machine *m)
{
    ptl_driver *d = ptl__driver_by_id(m, m->kernel.current_driver);
    return d ? d->name : "kernel code";
}

static uint32_t span_pages(const MDL *mdl)
{
    return PTL_PAGES_SPANNED(mdl->ByteOffset, mdl->ByteCount);
}

/* The record of an MDL, made on first sight for MDLs the driver built itself. */
static ptl__mdlrec *rec_of(ptl_machine *m, PMDL mdl)
{
    ptl__mdlrec *r = ptl__ptrmap_get(&m->mdls.map, mdl);
    if (!r) {
        r = ptl__xcalloc(1, sizeof *r);
        r->mdl = mdl;
        r->driver = m->kernel.current_driver;
        r->pages = span_pages(mdl);
        ptl__ptrmap_put(&m->mdls.map, mdl, r);
    }
    return r;
}

static void verifier_irql(ptl_machine *m, int max_irql, uint32_t subcode, uint64_t p2, uint64_t p3,
                          const char *ddi)
{
    if (m->cfg.verifier && m->kernel.irql > max_irql)
        ptl__bugcheck_why(m, 0xC4, subcode, (uint32_t)m->kernel.irql, p2, p3,
                          "%s called at IRQL %d (at most %d allowed)", ddi, m->kernel.irql,
                          max_irql);
}

#define MDL_VA(mdl) ((uint32_t)(uintptr_t)(mdl)->StartVa)
#define HOSTPTR(p)  ((uint64_t)(uintptr_t)(p)&0xFFFFFFFFu)

/* ---- allocate, build, free ------------------------------------------------------------ */

PMDL IoAllocateMdl(PVOID VirtualAddress, ULONG Length, BOOLEAN SecondaryBuffer, BOOLEAN ChargeQuota,
                   PVOID Irp)
{
    ptl_machine *m = ptl__ddi_enter("IoAllocateMdl");
    (void)SecondaryBuffer;
    (void)ChargeQuota;
    (void)Irp; /* ptelab has no IRPs: the MDL is never chained to one */
    if (ptl__is_host(m, VirtualAddress)) {
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "IoAllocateMdl(%p): a host pointer, not an address "
                        "of the emulated machine",
                        VirtualAddress);
        return NULL;
    }
    uint32_t va = (uint32_t)(uintptr_t)VirtualAddress;
    uint32_t pages = PTL_PAGES_SPANNED(va, Length);
    if (Length == 0 || Length >= 0x80000000u ||
        X86_MDL_BYTES + (uint64_t)pages * sizeof(PFN_NUMBER) > 0xFFFFu) {
        ptl__perf_event(m, PTL_EV_FAIL, "IoAllocateMdl(%08x, 0x%x) returned NULL: %s", va, Length,
                        Length == 0 ? "zero length"
                                    : "the MDL would exceed 64 KB (about 64 MB of buffer)");
        return NULL;
    }
    if (ptl__verifier_inject(m, PTL_FAULT_MDL, "IoAllocateMdl"))
        return NULL;
    PMDL mdl = ptl__xcalloc(1, sizeof(MDL) + pages * sizeof(PFN_NUMBER));
    mdl->Size = (CSHORT)(X86_MDL_BYTES + pages * sizeof(PFN_NUMBER));
    mdl->MdlFlags = pages <= 23 ? MDL_ALLOCATED_FIXED_SIZE : 0;
    mdl->StartVa = (PVOID)(uintptr_t)(va & ~PTL_PAGE_MASK);
    mdl->ByteOffset = va & PTL_PAGE_MASK;
    mdl->ByteCount = Length;
    ptl__mdlrec *r = rec_of(m, mdl);
    r->allocated = 1;
    r->site = ptl__verifier_site(m);
    m->mdls.allocated++;
    m->mdls.pool_bytes += (uint16_t)mdl->Size;
    return mdl;
}

VOID MmBuildMdlForNonPagedPool(PMDL Mdl)
{
    ptl_machine *m = ptl__ddi_enter("MmBuildMdlForNonPagedPool");
    if (!Mdl)
        ptl__kaccess(m, 0, NULL, 1, 0); /* a NULL dereference, as NT would take it */
    if (Mdl->MdlFlags &
        (MDL_PAGES_LOCKED | MDL_MAPPED_TO_SYSTEM_VA | MDL_SOURCE_IS_NONPAGED_POOL | MDL_PARTIAL))
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "MmBuildMdlForNonPagedPool on an MDL that is already locked, mapped or "
                        "partial (flags 0x%x)",
                        (unsigned)(uint16_t)Mdl->MdlFlags);
    uint32_t va = MDL_VA(Mdl), pages = span_pages(Mdl);
    PPFN_NUMBER pfns = MmGetMdlPfnArray(Mdl);
    int io = 0;
    for (uint32_t i = 0; i < pages; i++) {
        uint64_t pa;
        if (ptl__mmu_translate(m, va + i * PTL_PAGE_SIZE, 0, 0, 0, &pa) != PTL_FAULT_NONE)
            ptl__kfault(m, 0);
        pfns[i] = (PFN_NUMBER)(pa >> PTL_PAGE_SHIFT);
        io = pfns[i] >= m->phys.ram_pages;
    }
    Mdl->Process = NULL;
    Mdl->MappedSystemVa = (PVOID)(uintptr_t)(va + Mdl->ByteOffset);
    Mdl->MdlFlags |= MDL_SOURCE_IS_NONPAGED_POOL | (io ? MDL_IO_SPACE : 0);
    rec_of(m, Mdl)->pages = pages;
}

static void unmap_system(ptl_machine *m, PMDL mdl, ptl__mdlrec *r);

static void free_mdl(ptl_machine *m, PMDL Mdl, ptl__mdlrec *r);

VOID IoFreeMdl(PMDL Mdl)
{
    ptl_machine *m = ptl__ddi_enter("IoFreeMdl");
    ptl__mdlrec *r = ptl__ptrmap_get(&m->mdls.map, Mdl);
    if (!r || !r->allocated) {
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "IoFreeMdl(%p) by %s: not an MDL IoAllocateMdl returned (a double free, "
                        "or never allocated); NT would corrupt nonpaged pool, ptelab ignored it",
                        (void *)Mdl, driver_name(m));
        return;
    }
    free_mdl(m, Mdl, r);
}

int ptl__mdl_free_as_pool(ptl_machine *m, void *p)
{
    ptl__mdlrec *r = ptl__ptrmap_get(&m->mdls.map, p);
    if (!r || !r->allocated)
        return 0;
    free_mdl(m, (PMDL)p, r);
    return 1;
}

static void free_mdl(ptl_machine *m, PMDL Mdl, ptl__mdlrec *r)
{
    if ((Mdl->MdlFlags & MDL_MAPPED_TO_SYSTEM_VA) &&
        !(Mdl->MdlFlags & MDL_SOURCE_IS_NONPAGED_POOL)) {
        if (m->cfg.verifier)
            ptl__bugcheck_why(m, 0xC4, 0xB8, HOSTPTR(Mdl), (uint16_t)Mdl->MdlFlags, 0,
                              "IoFreeMdl of an MDL still mapped at %p", Mdl->MappedSystemVa);
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "IoFreeMdl by %s of an MDL still mapped at %08x: its %u system PTEs "
                        "are leaked for good (MmUnmapLockedPages first)",
                        driver_name(m), (uint32_t)(uintptr_t)Mdl->MappedSystemVa, r->pages);
    }
    if (Mdl->MdlFlags & MDL_PAGES_LOCKED) {
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "IoFreeMdl by %s of an MDL whose %u pages are still locked "
                        "(MmUnlockPages first): they stay locked",
                        driver_name(m), r->pages);
        const char *owner = "system space"; /* the MDL's Process, found, not dereferenced */
        for (const ptl_process *q = m->procs.list; q; q = q->next)
            if (Mdl->Process && (const void *)&q->nt == (const void *)Mdl->Process)
                owner = q->name;
        ptl__verifier_locked_orphan(m, r->driver, r->pages, r->site, owner);
    }
    for (uint32_t i = 0; i < r->nusers; i++)
        if (!r->users[i].orphaned)
            ptl__perf_event(m, PTL_EV_MISUSE,
                            "IoFreeMdl by %s while the MDL is still mapped at %08x in %s",
                            driver_name(m), r->users[i].va, r->users[i].process->name);
    free(r->users);
    ptl__ptrmap_del(&m->mdls.map, Mdl);
    m->mdls.pool_bytes -= (uint16_t)Mdl->Size;
    free(r);
    free(Mdl);
    m->mdls.freed++;
}

/* ---- probe and lock ------------------------------------------------------------------- */

VOID MmProbeAndLockPages(PMDL Mdl, KPROCESSOR_MODE AccessMode, LOCK_OPERATION Operation)
{
    ptl_machine *m = ptl__ddi_enter("MmProbeAndLockPages");
    verifier_irql(m, DISPATCH_LEVEL, 0x70, HOSTPTR(Mdl), (uint32_t)AccessMode,
                  "MmProbeAndLockPages");
    if (Mdl->MdlFlags & (MDL_PAGES_LOCKED | MDL_SOURCE_IS_NONPAGED_POOL | MDL_PARTIAL)) {
        if (m->cfg.verifier)
            ptl__bugcheck_why(m, 0xC4, 0xB0, HOSTPTR(Mdl), (uint16_t)Mdl->MdlFlags,
                              (uint16_t)Mdl->MdlFlags &
                                  (MDL_PAGES_LOCKED | MDL_SOURCE_IS_NONPAGED_POOL | MDL_PARTIAL),
                              "MmProbeAndLockPages on an MDL with flags 0x%x",
                              (unsigned)(uint16_t)Mdl->MdlFlags);
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "MmProbeAndLockPages by %s on an MDL already locked or built for "
                        "nonpaged pool (flags 0x%x); ignored",
                        driver_name(m), (unsigned)(uint16_t)Mdl->MdlFlags);
        return;
    }
    uint32_t va = MDL_VA(Mdl), pages = span_pages(Mdl);
    uint64_t end = (uint64_t)va + Mdl->ByteOffset + Mdl->ByteCount;
    int user_range = va < m->pte.system_start;
    if (AccessMode == UserMode && (end > m->layout.user_hi || !user_range))
        ptl__raise(m, STATUS_ACCESS_VIOLATION, 0, va);
    int write = Operation != IoReadAccess;
    PPFN_NUMBER pfns = MmGetMdlPfnArray(Mdl);
    /* probe every page first: a fault leaves nothing locked */
    for (uint32_t i = 0; i < pages; i++) {
        uint64_t pa;
        uint32_t pva = va + i * PTL_PAGE_SIZE;
        ptl__fault f =
            ptl__mmu_translate(m, pva, write, AccessMode == UserMode, m->kernel.irql < 2, &pa);
        if (f != PTL_FAULT_NONE) {
            if (m->kernel.irql >= DISPATCH_LEVEL) /* no paging up there: the STOP */
                ptl__kfault(m, write);
            if (pva < m->pte.system_start || AccessMode == UserMode)
                ptl__raise(m, STATUS_ACCESS_VIOLATION, (uint32_t)write, pva);
            ptl__kfault(m, write);
        }
        pfns[i] = (PFN_NUMBER)(pa >> PTL_PAGE_SHIFT);
    }
    int io = 0;
    for (uint32_t i = 0; i < pages; i++) {
        if (pfns[i] < m->phys.ram_pages) {
            ptl__pfn *e = &m->phys.pfn[pfns[i]];
            e->LockCount++;
            e->ReferenceCount++;
            ptl__phys_note(&m->phys, pfns[i]);
        } else {
            io = 1;
        }
    }
    if (user_range) {
        Mdl->Process = &m->procs.current->nt;
        m->procs.current->locked_pages += pages;
    } else {
        Mdl->Process = NULL;
    }
    Mdl->MdlFlags |= MDL_PAGES_LOCKED | (write ? MDL_WRITE_OPERATION : 0) | (io ? MDL_IO_SPACE : 0);
    ptl__mdlrec *r = rec_of(m, Mdl);
    r->pages = pages;
    m->mdls.locked++;
}

VOID MmUnlockPages(PMDL Mdl)
{
    ptl_machine *m = ptl__ddi_enter("MmUnlockPages");
    verifier_irql(m, DISPATCH_LEVEL, 0x78, HOSTPTR(Mdl), 0, "MmUnlockPages");
    if (!(Mdl->MdlFlags & MDL_PAGES_LOCKED)) {
        uint32_t sub = (Mdl->MdlFlags & MDL_SOURCE_IS_NONPAGED_POOL) ? 0x7D : 0x7C;
        if (m->cfg.verifier)
            ptl__bugcheck_why(m, 0xC4, sub, HOSTPTR(Mdl), (uint16_t)Mdl->MdlFlags, 0,
                              "MmUnlockPages on an MDL whose pages are not locked");
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "MmUnlockPages by %s on an MDL whose pages were never locked; ignored",
                        driver_name(m));
        return;
    }
    ptl__mdlrec *r = rec_of(m, Mdl);
    if (Mdl->MdlFlags & MDL_MAPPED_TO_SYSTEM_VA)
        unmap_system(m, Mdl, r);
    /* the pages locked, as recorded then: a driver that changed ByteCount or ByteOffset
     * since would have ptelab read past the MDL's PFN array */
    uint32_t pages = r->pages;
    if (span_pages(Mdl) != pages)
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "MmUnlockPages by %s: the MDL now spans %u pages, %u were locked; "
                        "unlocked those",
                        driver_name(m), span_pages(Mdl), pages);
    PPFN_NUMBER pfns = MmGetMdlPfnArray(Mdl);
    for (uint32_t i = 0; i < pages; i++) {
        if (pfns[i] >= m->phys.ram_pages)
            continue;
        ptl__pfn *e = &m->phys.pfn[pfns[i]];
        if (e->LockCount == 0) { /* the PFN array was rewritten since the lock */
            ptl__perf_event(m, PTL_EV_MISUSE,
                            "MmUnlockPages by %s: frame %x of the MDL is not locked (its PFN "
                            "array changed after MmProbeAndLockPages); NT trusts the MDL, "
                            "ptelab left the frame alone",
                            driver_name(m), (uint32_t)pfns[i]);
            continue;
        }
        e->LockCount--;
        e->ReferenceCount--;
        ptl__phys_note(&m->phys, pfns[i]);
        /* a page its owner freed while it was locked goes now (NT: the last dereference) */
        ptl__phys_unlocked(&m->phys, pfns[i]);
    }
    ptl_process *p = (ptl_process *)(void *)Mdl->Process;
    if (p) {
        if (p->locked_pages < pages)
            ptl__bugcheck_why(m, 0x76, 1, HOSTPTR(Mdl), p->locked_pages, 0,
                              "MmUnlockPages of %u pages; %s has only %u locked", pages, p->name,
                              p->locked_pages);
        p->locked_pages -= pages;
    }
    Mdl->MdlFlags &= (CSHORT) ~(MDL_PAGES_LOCKED | MDL_WRITE_OPERATION | MDL_IO_SPACE);
}

/* ---- map and unmap -------------------------------------------------------------------- */

static int tracked_excess(ptl_machine *m, ptl_driver *d, uint32_t total)
{
    /* TrackPtes: a driver holding more than a quarter of the pool in locked-page mappings
     * is blamed (ptelab's threshold; Microsoft documents the switch, not the rule). */
    return m->cfg.track_ptes && d && d->locked_mapping_ptes > total / 4;
}

/* The attribute an MDL mapping gets, and whether XP refuses it. On Windows XP the
 * requested type "is used only if the pages have no cache type yet"
 * (learn.microsoft.com, MmMapLockedPagesSpecifyCache): pages that have one keep it, and
 * RAM that is cached cannot be mapped noncached (MEMORY_MANAGEMENT 0x1A subtype 0x1000
 * when the caller asked for a bug check on failure). NT 4.0 and 2000 map what is asked
 * and ptelab records the hazard. Returns the attribute, or -1 when XP refuses. */
static int mdl_cache(ptl_machine *m, const PFN_NUMBER *pfns, uint32_t pages, int requested,
                     uint32_t *bad_pfn, int *existing)
{
    for (uint32_t i = 0; i < pages; i++) {
        int cur = ptl__cache_current(m, pfns[i]);
        if (cur < 0 || cur == requested)
            continue;
        *bad_pfn = pfns[i];
        *existing = cur;
        m->cache.conflicts++;
        if (m->cfg.profile < PTL_WINXP) {
            ptl__perf_event(m, PTL_EV_HAZARD,
                            "MDL page %x mapped %s while it is mapped %s: two attributes at "
                            "once (XP would not allow it)",
                            pfns[i], ptl__cache_name(requested), ptl__cache_name(cur));
            return requested;
        }
        if (pfns[i] < m->phys.ram_pages && cur == MmCached)
            return -1;
        return cur; /* XP: the pages' own type wins */
    }
    return requested;
}

static uint32_t map_system(ptl_machine *m, PMDL mdl, int cache, int bugcheck, int can_fail)
{
    ptl__mdlrec *r = rec_of(m, mdl);
    uint32_t pages = span_pages(mdl);
    PPFN_NUMBER pfns = MmGetMdlPfnArray(mdl);
    if (mdl->MdlFlags & (MDL_MAPPED_TO_SYSTEM_VA | MDL_SOURCE_IS_NONPAGED_POOL)) {
        if (m->cfg.verifier)
            ptl__bugcheck_why(m, 0xC4, 0xB2, HOSTPTR(mdl), (uint16_t)mdl->MdlFlags,
                              (uint16_t)mdl->MdlFlags &
                                  (MDL_MAPPED_TO_SYSTEM_VA | MDL_SOURCE_IS_NONPAGED_POOL),
                              "MmMapLockedPages of an MDL already mapped to system space");
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "MmMapLockedPages(KernelMode) by %s of an MDL already mapped to system "
                        "space (%08x); returned that mapping",
                        driver_name(m), (uint32_t)(uintptr_t)mdl->MappedSystemVa);
        return (uint32_t)(uintptr_t)mdl->MappedSystemVa;
    }
    uint32_t at = 0;
    int existing = -1, requested = cache;
    cache = mdl_cache(m, pfns, pages, requested, &at, &existing);
    if (cache < 0) {
        if (bugcheck && !can_fail)
            ptl__bugcheck_why(m, 0x1A, 0x1000, HOSTPTR(mdl), at, 0, "mapping cached RAM page %x %s",
                              at, ptl__cache_name(requested));
        ptl__perf_event(m, PTL_EV_FAIL,
                        "MmMapLockedPagesSpecifyCache: RAM page %x is cached; mapping it %s is "
                        "refused (NULL)",
                        at, ptl__cache_name(requested));
        return 0;
    }
    ptl_driver *d = ptl__driver_by_id(m, m->kernel.current_driver);
    uint32_t va =
        ptl__syspte_reserve(m, PTL_SYSTEM_PTE_SPACE, pages, PTL_KIND_MDL, m->kernel.current_driver);
    if (!va) {
        m->mdls.failed_maps++;
        uint32_t free_ptes = ptl_free_system_ptes(m), total = ptl_total_system_ptes(m);
        ptl__perf_event(m, PTL_EV_FAIL,
                        "mapping an MDL of %u pages into system space failed: %u free system "
                        "PTEs, largest run %u",
                        pages, free_ptes, ptl_largest_free_system_ptes(m));
        if (can_fail || !bugcheck)
            return 0;
        if (tracked_excess(m, d, total))
            ptl__bugcheck_why(m, 0xD8, d->base_va + 0x100, d->locked_mapping_ptes, free_ptes, total,
                              "%s holds %u system PTEs in locked-page mappings", d->name,
                              d->locked_mapping_ptes);
        ptl__bugcheck_why(m, 0x3F, 0, pages, free_ptes, total,
                          "%s needed %u contiguous system PTEs to map an MDL and cannot fail",
                          driver_name(m), pages);
    }
    for (uint32_t i = 0; i < pages; i++)
        ptl__pte_write(m, 0, va + i * PTL_PAGE_SIZE, ptl__pte_make(pfns[i], 1, 0, cache));
    for (uint32_t i = 0; i < pages; i++)
        ptl__cache_ref(m, pfns[i], 1, cache);
    mdl->MappedSystemVa = (PVOID)(uintptr_t)(va + mdl->ByteOffset);
    mdl->MdlFlags |=
        MDL_MAPPED_TO_SYSTEM_VA | ((mdl->MdlFlags & MDL_PARTIAL) ? MDL_PARTIAL_HAS_BEEN_MAPPED : 0);
    r->system_run_va = va;
    r->system_cache = cache;
    if (d)
        d->locked_mapping_ptes += pages;
    m->mdls.mapped_kernel++;
    ptl__perf_event(m, PTL_EV_MAP, "MDL of %u pages mapped at %08x by %s", pages, va,
                    driver_name(m));
    return va;
}

static void unmap_system(ptl_machine *m, PMDL mdl, ptl__mdlrec *r)
{
    uint32_t va = (uint32_t)(uintptr_t)mdl->MappedSystemVa & ~PTL_PAGE_MASK;
    uint32_t start, count, mapper = 0;
    ptl__pte_kind kind;
    if (!ptl__syspte_run_at(m, va, NULL, &start, &count, &kind, &mapper) || start != va ||
        kind != PTL_KIND_MDL || r->system_run_va != va) {
        /* not a mapping MmMapLockedPages made for this MDL: a reserved mapping (which
         * MmUnmapReservedMapping releases) or a partial MDL sharing its parent's */
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "%s: the MDL's system address %08x is not its own MmMapLockedPages "
                        "mapping (a reserved mapping, or a partial MDL's parent's); left alone",
                        driver_name(m), va);
        mdl->MdlFlags &= (CSHORT) ~(MDL_MAPPED_TO_SYSTEM_VA | MDL_PARTIAL_HAS_BEEN_MAPPED);
        return;
    }
    for (uint32_t i = 0; i < count; i++) {
        uint32_t pte;
        ptl__pte_read(m, 0, va + i * PTL_PAGE_SIZE, &pte);
        ptl__cache_unref(m, pte >> PTL_PAGE_SHIFT, 1);
    }
    PTL_ASSERT(ptl__syspte_release(m, PTL_SYSTEM_PTE_SPACE, va, count) == PTL_RELEASE_OK);
    /* TrackPtes charges the driver that mapped, which need not be the MDL's allocator (an
     * IRP's buffer is mapped by the driver below the one that built the MDL) */
    ptl_driver *d = ptl__driver_by_id(m, mapper);
    if (d && d->locked_mapping_ptes >= count)
        d->locked_mapping_ptes -= count;
    mdl->MdlFlags &= (CSHORT) ~(MDL_MAPPED_TO_SYSTEM_VA | MDL_PARTIAL_HAS_BEEN_MAPPED);
    mdl->MappedSystemVa = (PVOID)(uintptr_t)(MDL_VA(mdl) + mdl->ByteOffset);
    r->system_run_va = 0;
    ptl__perf_event(m, PTL_EV_UNMAP, "MDL mapping at %08x released (%u PTEs)", va, count);
}

static uint32_t map_user(ptl_machine *m, PMDL mdl, int cache, PVOID requested)
{
    ptl__mdlrec *r = rec_of(m, mdl);
    ptl_process *p = m->procs.current;
    uint32_t pages = span_pages(mdl);
    PPFN_NUMBER pfns = MmGetMdlPfnArray(mdl);
    uint32_t hint = (uint32_t)((uintptr_t)requested & 0xFFFFFFFFu);
    if ((uintptr_t)requested > 0xFFFFFFFFu || (hint & PTL_PAGE_MASK))
        ptl__raise(m, STATUS_INVALID_ADDRESS, 0, hint);
    uint32_t va = ptl__vad_find_free(p, hint, pages * PTL_PAGE_SIZE);
    if (!va) {
        m->mdls.failed_maps++;
        ptl__raise(m, hint ? STATUS_CONFLICTING_ADDRESSES : STATUS_INSUFFICIENT_RESOURCES, 0, 0);
    }
    uint32_t at = 0;
    int existing = -1;
    cache = mdl_cache(m, pfns, pages, cache, &at, &existing);
    if (cache < 0)
        ptl__raise(m, STATUS_CONFLICTING_ADDRESSES, 0, 0);
    ptl__vad_insert(p, va, va + pages * PTL_PAGE_SIZE, PTL_VAD_LOCKED_PAGES, MM_READWRITE, cache,
                    0);
    for (uint32_t i = 0; i < pages; i++) {
        if (ptl__pte_ensure_table(m, p->pd, va + i * PTL_PAGE_SIZE) != 0) {
            ptl__process_decommit(p, va, va + i * PTL_PAGE_SIZE);
            ptl__vad_remove(p, ptl__vad_find(p, va));
            ptl__raise(m, STATUS_NO_MEMORY, 0, 0);
        }
        ptl__pte_write(m, p->pd, va + i * PTL_PAGE_SIZE, ptl__pte_make(pfns[i], 1, 1, cache));
    }
    for (uint32_t i = 0; i < pages; i++)
        ptl__cache_ref(m, pfns[i], 1, cache);
    r->users = ptl__xrealloc(r->users, (r->nusers + 1) * sizeof *r->users);
    r->users[r->nusers++] = (ptl__usermap){p, va, 0};
    m->mdls.mapped_user++;
    ptl__perf_event(m, PTL_EV_MAP, "MDL of %u pages mapped at %08x in %s by %s", pages, va, p->name,
                    driver_name(m));
    return va;
}

void ptl__mdl_vad_teardown(ptl_machine *m, ptl_process *p, ptl__vad *v)
{
    PTL_ASSERT(v && v->kind == PTL_VAD_LOCKED_PAGES);
    uint32_t pages = (v->end - v->start) / PTL_PAGE_SIZE;
    for (uint32_t i = 0; i < pages; i++) {
        uint32_t pte;
        if (ptl__pte_read(m, p->pd, v->start + i * PTL_PAGE_SIZE, &pte) == 0 &&
            (pte & PTL_PTE_VALID))
            ptl__cache_unref(m, pte >> PTL_PAGE_SHIFT, 1);
    }
    ptl__process_decommit(p, v->start, v->end);
    ptl__vad_remove(p, v);
}

static void unmap_user_record(ptl_machine *m, const ptl__usermap *u)
{
    ptl__mdl_vad_teardown(m, u->process, ptl__vad_find(u->process, u->va));
}

static void forget_user(ptl__mdlrec *r, uint32_t i)
{
    r->users[i] = r->users[--r->nusers];
}

/* The record of the user mapping at va that an unmap in process cur means: the live one
 * in cur, else one whose process exited, else a live one elsewhere; -1 when none. */
static int64_t find_user(const ptl__mdlrec *r, const ptl_process *cur, uint32_t va)
{
    int64_t orphan = -1, elsewhere = -1;
    for (uint32_t i = 0; i < r->nusers; i++) {
        const ptl__usermap *u = &r->users[i];
        if (u->va != va)
            continue;
        if (!u->orphaned && u->process == cur)
            return i;
        if (u->orphaned && orphan < 0)
            orphan = i;
        else if (!u->orphaned && elsewhere < 0)
            elsewhere = i;
    }
    return orphan >= 0 ? orphan : elsewhere;
}

static void check_map_irql(ptl_machine *m, PMDL mdl, KPROCESSOR_MODE mode, int old_api)
{
    if (mode == KernelMode)
        verifier_irql(m, DISPATCH_LEVEL, old_api ? 0x74 : 0x76, HOSTPTR(mdl), (uint32_t)mode,
                      "MmMapLockedPages");
    else
        verifier_irql(m, APC_LEVEL, old_api ? 0x75 : 0x77, HOSTPTR(mdl), (uint32_t)mode,
                      "MmMapLockedPages(UserMode)");
    if (!(mdl->MdlFlags & (MDL_PAGES_LOCKED | MDL_SOURCE_IS_NONPAGED_POOL | MDL_PARTIAL))) {
        if (m->cfg.verifier)
            ptl__bugcheck_why(m, 0xC4, 0x85, HOSTPTR(mdl), span_pages(mdl),
                              MmGetMdlPfnArray(mdl)[0],
                              "MmMapLockedPages of an MDL whose pages are not locked");
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "MmMapLockedPages by %s of an MDL whose pages were never locked or "
                        "built: its PFN array is whatever the MDL holds",
                        driver_name(m));
    }
}

static PVOID map_common(ptl_machine *m, PMDL mdl, KPROCESSOR_MODE mode, int cache, PVOID requested,
                        int bugcheck, int old_api)
{
    check_map_irql(m, mdl, mode, old_api);
    uint32_t va;
    if (mode == KernelMode) {
        va = map_system(m, mdl, cache, bugcheck, (mdl->MdlFlags & MDL_MAPPING_CAN_FAIL) != 0);
        if (!va)
            return NULL;
        va &= ~PTL_PAGE_MASK;
    } else {
        va = map_user(m, mdl, cache, requested);
    }
    /* KB 199311: NT 4.0 up to SP3 returned the page-aligned base */
    if (m->cfg.profile == PTL_NT4_SP3 && old_api)
        return (PVOID)(uintptr_t)va;
    return (PVOID)(uintptr_t)(va + mdl->ByteOffset);
}

PVOID MmMapLockedPages(PMDL MemoryDescriptorList, KPROCESSOR_MODE AccessMode)
{
    ptl_machine *m = ptl__ddi_enter("MmMapLockedPages");
    return map_common(m, MemoryDescriptorList, AccessMode, MmCached, NULL, 1, 1);
}

PVOID MmMapLockedPagesSpecifyCache(PMDL MemoryDescriptorList, KPROCESSOR_MODE AccessMode,
                                   MEMORY_CACHING_TYPE CacheType, PVOID RequestedAddress,
                                   ULONG BugCheckOnFailure, ULONG Priority)
{
    ptl_machine *m = ptl__ddi_enter("MmMapLockedPagesSpecifyCache");
    (void)Priority;
    if ((unsigned)CacheType >= MmMaximumCacheType)
        return NULL;
    return map_common(m, MemoryDescriptorList, AccessMode, (int)CacheType, RequestedAddress,
                      BugCheckOnFailure != 0, 0);
}

VOID MmUnmapLockedPages(PVOID BaseAddress, PMDL Mdl)
{
    ptl_machine *m = ptl__ddi_enter("MmUnmapLockedPages");
    uint32_t va = (uint32_t)((uintptr_t)BaseAddress & 0xFFFFFFFFu);
    ptl__mdlrec *r = rec_of(m, Mdl);
    int strict = m->cfg.verifier || m->cfg.profile >= PTL_WINXP;
    if ((uintptr_t)BaseAddress <= 0xFFFFFFFFu && va >= m->pte.system_start) {
        verifier_irql(m, DISPATCH_LEVEL, 0x79, va, HOSTPTR(Mdl), "MmUnmapLockedPages");
        uint32_t mapped = (uint32_t)(uintptr_t)Mdl->MappedSystemVa & ~PTL_PAGE_MASK;
        if (!(Mdl->MdlFlags & MDL_MAPPED_TO_SYSTEM_VA) ||
            (Mdl->MdlFlags & MDL_SOURCE_IS_NONPAGED_POOL)) {
            uint32_t start, count;
            ptl__pte_kind kind;
            /* the address is an MDL mapping, but another MDL's: freeing it would free a
             * mapping twice over (SYSTEM_PTE_MISUSE 0x01, a duplicate) */
            if (strict &&
                ptl__syspte_run_at(m, va & ~PTL_PAGE_MASK, NULL, &start, &count, &kind, NULL) &&
                kind == PTL_KIND_MDL)
                ptl__bugcheck_why(m, 0xDA, 0x01, HOSTPTR(r), HOSTPTR(Mdl), start,
                                  "MmUnmapLockedPages(%08x) with an MDL that is not mapped; "
                                  "the address belongs to another MDL's mapping",
                                  va);
            if (strict)
                ptl__bugcheck_why(m, 0xDA, 0x06, HOSTPTR(Mdl), va, span_pages(Mdl),
                                  "MmUnmapLockedPages of an MDL that is not mapped");
            ptl__perf_event(m, PTL_EV_MISUSE,
                            "MmUnmapLockedPages(%08x) by %s: the MDL is not mapped to system "
                            "space (unmapped twice?); nothing done",
                            va, driver_name(m));
            return;
        }
        if ((va & ~PTL_PAGE_MASK) != mapped) {
            if (strict)
                ptl__bugcheck_why(m, 0xDA, 0x03, HOSTPTR(r), mapped, va,
                                  "MmUnmapLockedPages(%08x) but the MDL is mapped at %08x", va,
                                  mapped);
            ptl__perf_event(m, PTL_EV_MISUSE,
                            "MmUnmapLockedPages(%08x) by %s, but the MDL is mapped at %08x; "
                            "nothing done",
                            va, driver_name(m), mapped);
            return;
        }
        uint32_t start, count;
        ptl__pte_kind kind;
        if (ptl__syspte_run_at(m, mapped, NULL, &start, &count, &kind, NULL) &&
            count != span_pages(Mdl)) {
            /* the MDL's span changed since it was mapped: the wrong number of mappings */
            if (strict)
                ptl__bugcheck_why(m, 0xDA, 0x02, HOSTPTR(r), count, span_pages(Mdl),
                                  "MmUnmapLockedPages: the mapping has %u pages, the MDL now "
                                  "describes %u",
                                  count, span_pages(Mdl));
            ptl__perf_event(m, PTL_EV_MISUSE,
                            "MmUnmapLockedPages(%08x) by %s: the MDL now spans %u pages, its "
                            "mapping %u; released the mapping as made",
                            va, driver_name(m), span_pages(Mdl), count);
        }
        unmap_system(m, Mdl, r);
        return;
    }
    verifier_irql(m, APC_LEVEL, 0x7A, va, HOSTPTR(Mdl), "MmUnmapLockedPages(user)");
    ptl_process *cur = m->procs.current;
    int64_t i = find_user(r, cur, va & ~PTL_PAGE_MASK);
    if (i < 0) {
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "MmUnmapLockedPages(%08x) by %s: the MDL has no user mapping there "
                        "(unmapped twice, or never mapped); nothing done",
                        va, driver_name(m));
        return;
    }
    ptl__usermap *u = &r->users[i];
    if (u->orphaned) {
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "MmUnmapLockedPages(%08x) by %s after %s exited: NT removed the "
                        "mapping with the address space; nothing left to unmap",
                        va, driver_name(m), u->process->name);
        forget_user(r, (uint32_t)i);
        return;
    }
    if (u->process != cur) {
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "MmUnmapLockedPages(%08x) by %s in the context of %s, but the mapping "
                        "lives in %s: unmap \"only while running in the context of the process "
                        "in which you mapped\"; nothing done",
                        va, driver_name(m), cur->name, u->process->name);
        return;
    }
    unmap_user_record(m, u);
    forget_user(r, (uint32_t)i);
    ptl__perf_event(m, PTL_EV_UNMAP, "MDL user mapping at %08x removed from %s", va, cur->name);
}

/* ---- process exit, check ------------------------------------------------------------ */

typedef struct exit_ctx {
    ptl_machine *m;
    ptl_process *p;
} exit_ctx;

static void orphan_one(void *ctx, const void *key, void *val)
{
    exit_ctx *x = ctx;
    ptl__mdlrec *r = val;
    (void)key;
    for (uint32_t i = 0; i < r->nusers; i++) {
        ptl__usermap *u = &r->users[i];
        if (u->process != x->p || u->orphaned)
            continue;
        ptl__perf_event(x->m, PTL_EV_MISUSE,
                        "process %s exits with an MDL still mapped at %08x: the mapping goes "
                        "with the address space; the driver never called MmUnmapLockedPages",
                        x->p->name, u->va);
        unmap_user_record(x->m, u);
        u->orphaned = 1;
    }
}

void ptl__mdl_process_exit(ptl_machine *m, ptl_process *p)
{
    exit_ctx x = {m, p};
    ptl__ptrmap_each(&m->mdls.map, orphan_one, &x);
}

typedef struct check_ctx {
    ptl_machine *m;
    FILE *why;
    int rc;
} check_ctx;

static void check_one(void *ctx, const void *key, void *val)
{
    check_ctx *c = ctx;
    const ptl__mdlrec *r = val;
    if (c->rc)
        return;
    /* the MDL itself may be the driver's storage and gone: read only the record */
    if (r->system_run_va) {
        uint32_t start, count;
        ptl__pte_kind kind;
        if (!ptl__syspte_run_at(c->m, r->system_run_va, NULL, &start, &count, &kind, NULL) ||
            kind != PTL_KIND_MDL || start != r->system_run_va) {
            fprintf(c->why, "mdl: %p's system mapping at %08x is not an MDL run\n", key,
                    r->system_run_va);
            c->rc = -1;
            return;
        }
    }
    for (uint32_t i = 0; i < r->nusers && !c->rc; i++) {
        const ptl__usermap *u = &r->users[i];
        if (u->orphaned)
            continue;
        ptl__vad *v = ptl__vad_find(u->process, u->va);
        if (!v || v->kind != PTL_VAD_LOCKED_PAGES) {
            fprintf(c->why, "mdl: %p's user mapping at %08x in %s has no VAD\n", key, u->va,
                    u->process->name);
            c->rc = -1;
        }
    }
}

int ptl__mdls_check(ptl_machine *m, FILE *why)
{
    check_ctx c = {m, why, 0};
    ptl__ptrmap_each(&m->mdls.map, check_one, &c);
    return c.rc;
}
