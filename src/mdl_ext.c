/* mdl_ext.c - the rest of the MDL family, and physically contiguous memory.
 *
 * Models, with the semantics of each routine's learn.microsoft.com page and ReactOS's
 * observable behaviour (ntoskrnl/mm/ARM3/mdlsup.c, contmem.c; io/iomgr/iomdl.c):
 *   - MmSizeOfMdl: sizeof(MDL) + one PFN_NUMBER per page spanned (the WDK's formula, with
 *     this build's sizes, so a driver can size storage for MmInitializeMdl with it);
 *   - MmCreateMdl (obsolete): with a NULL first argument it allocates the MDL, as
 *     IoAllocateMdl does (the same 64 KB limit), then MmInitializeMdl; IoFreeMdl frees it;
 *   - IoBuildPartialMdl: the target describes a subrange of the source; it gets the
 *     source's Process, its MDL_IO_PAGE_READ, MDL_SOURCE_IS_NONPAGED_POOL,
 *     MDL_MAPPED_TO_SYSTEM_VA and MDL_IO_SPACE flags plus MDL_PARTIAL, keeps only its own
 *     MDL_ALLOCATED_FIXED_SIZE / MDL_ALLOCATED_MUST_SUCCEED, MappedSystemVa is the source's
 *     plus the offset, and the PFNs of the subrange are copied. A subrange outside the
 *     source, or a target too small for it, is a misuse event and nothing changes (NT
 *     copies whatever lies there);
 *   - MmAllocatePagesForMdl(Ex): RAM frames in [LowAddress, HighAddress] (then in the
 *     ranges SkipBytes further on, while RAM lasts), not necessarily contiguous, zeroed
 *     unless MM_DONT_ZERO_ALLOCATION, not mapped; the MDL (MDL_PAGES_LOCKED, StartVa 0)
 *     may describe fewer bytes than asked, and NULL means none at all. Each frame is held
 *     with one lock (ReferenceCount and LockCount 1) until MmFreePagesFromMdl;
 *   - MmAllocateContiguousMemory(SpecifyCache): the lowest run of free frames within
 *     [Lowest, Highest] that crosses no BoundaryAddressMultiple (ReactOS's
 *     MiFindContiguousPages scans upward the same way), mapped into system PTEs with the
 *     cache type asked (kind "noncached" for MmNonCached, "other" otherwise). NT first
 *     tries nonpaged pool for cached requests; ptelab always takes fresh frames
 *     (docs/fidelity.md). MmFreeContiguousMemory of an address that is not the start of
 *     such an allocation is a misuse event and nothing is freed.
 *
 * Availability per profile: MmAllocatePagesForMdl, MmFreePagesFromMdl and the SpecifyCache
 * pair appear in Windows 2000; MmAllocatePagesForMdlEx is modelled as present on the XP
 * profile (it was exported from Windows Server 2003 SP1, a release the XP profile stands
 * for). On an earlier profile the driver would not load: ptelab records a "misuse" event
 * saying the routine does not exist there and fails the call.
 *
 * Frames: the PFN database has no use for "MDL pages" or "contiguous"; ptelab marks them
 * nonpaged pool (noncached contiguous memory: noncached). Taking a particular frame is
 * done here on the phys fields directly (take_range), keeping ptl__phys_check's
 * invariants: frames skipped above the high-water mark join the free list.
 */
#include "internal.h"

#include <ptelab/wdm.h>
#include <string.h>

#define X86_MDL_BYTES 0x1Cu /* sizeof(MDL) on x86 */
#define HOSTPTR(p)    ((uint64_t)(uintptr_t)(p)&0xFFFFFFFFu)
#define MDL_PAGES_USE PTL_USE_NONPAGED_POOL

static const char *driver_name(ptl_machine *m)
{
    ptl_driver *d = ptl__driver_by_id(m, m->kernel.current_driver);
    return d ? d->name : "kernel code";
}

static const char *profile_name(ptl_profile p)
{
    switch (p) {
    case PTL_NT4_SP3:
        return "Windows NT 4.0 SP3";
    case PTL_NT4_SP4:
        return "Windows NT 4.0 SP4";
    case PTL_WIN2000:
        return "Windows 2000";
    default:
        return "Windows XP";
    }
}

/* 1 when the profile's release exports the routine; else the misuse event. */
static int exported(ptl_machine *m, const char *name, ptl_profile since)
{
    if (m->cfg.profile >= since)
        return 1;
    ptl__perf_event(m, PTL_EV_MISUSE,
                    "%s does not exist on %s (first exported by %s): a driver importing it "
                    "would not load; ptelab failed the call",
                    name, profile_name(m->cfg.profile), profile_name(since));
    return 0;
}

static uint32_t span_pages(const MDL *mdl)
{
    return PTL_PAGES_SPANNED(mdl->ByteOffset, mdl->ByteCount);
}

/* ---- frames --------------------------------------------------------------------------- */

static int frame_free(const ptl__phys *ph, uint32_t pfn)
{
    return pfn < ph->ram_pages && (pfn >= ph->hwm || ph->pfn[pfn].Use == PTL_USE_FREE);
}

static void init_frame(ptl__phys *ph, uint32_t pfn, ptl__frame_use use, int zero)
{
    if (zero && ((ph->touched[pfn >> 6] >> (pfn & 63)) & 1u)) {
        memset(ph->host + ((size_t)pfn << PTL_PAGE_SHIFT), 0, PTL_PAGE_SIZE);
        ptl__phys_wrote(ph, pfn);
    }
    ptl__pfn *e = &ph->pfn[pfn];
    ptl__pfn_reuse(e); /* a view's mappings and locks of the free frame live on */
    e->PageLocation = ActiveAndValid;
    e->Use = (uint8_t)use;
    ph->in_use++;
    ph->use_count[use]++;
    ptl__phys_note(ph, pfn); /* for the incremental check (phys.c) */
}

/* Take the free frames [first, first + n) for `use` (what ptl__phys_alloc does for one
 * frame of its choosing). Frames between the high-water mark and `first` join the free
 * list; frames below the mark come off it. */
static void take_range(ptl__phys *ph, uint32_t first, uint32_t n, ptl__frame_use use, int zero)
{
    PTL_ASSERT(n > 0 && (uint64_t)first + n <= ph->ram_pages);
    for (uint32_t i = 0; i < n; i++)
        PTL_ASSERT(frame_free(ph, first + i));
    uint32_t old_hwm = ph->hwm;
    if (first < old_hwm) { /* unlink [first, min(end, hwm)) from the free list */
        uint32_t end = first + n < old_hwm ? first + n : old_hwm;
        uint32_t *link = &ph->free_head;
        while (*link) {
            uint32_t f = *link - 1;
            if (f >= first && f < end) {
                *link = ph->pfn[f].Flink;
                ph->free_count--;
            } else {
                link = &ph->pfn[f].Flink;
            }
        }
    }
    if (first + n > old_hwm) {
        for (uint32_t f = old_hwm; f < first; f++) { /* skipped frames: free, listed */
            ptl__pfn *e = &ph->pfn[f];               /* never handed out: only a view's counts */
            ptl__pfn_reuse(e);
            e->PageLocation = FreePageList;
            e->Flink = ph->free_head;
            ph->free_head = f + 1;
            ph->free_count++;
            ptl__phys_note(ph, f);
        }
        ph->hwm = first + n;
    }
    for (uint32_t i = 0; i < n; i++)
        init_frame(ph, first + i, use, zero);
}

/* The lowest run of n free frames in [lo, hi] that crosses no multiple of bound (frames,
 * a power of two, 0 none); UINT32_MAX when there is none. */
static uint32_t find_run(const ptl__phys *ph, uint32_t lo, uint32_t hi, uint32_t n, uint32_t bound)
{
    uint32_t len = 0;
    if (hi >= ph->ram_pages)
        hi = ph->ram_pages - 1;
    for (uint64_t f = lo; f <= hi; f++) {
        if (!frame_free(ph, (uint32_t)f)) {
            len = 0;
            continue;
        }
        if (len == 0 && bound && ((f ^ (f + n - 1)) & ~(uint64_t)(bound - 1)))
            continue;
        if (++len == n)
            return (uint32_t)(f - n + 1);
    }
    return UINT32_MAX;
}

/* ---- MDL records (shared with mdl.c through m->mdls) ------------------------------------ */

static ptl__mdlrec *record_allocated(ptl_machine *m, PMDL mdl, uint32_t pages)
{
    ptl__mdlrec *r = ptl__xcalloc(1, sizeof *r);
    r->mdl = mdl;
    r->driver = m->kernel.current_driver;
    r->allocated = 1;
    r->pages = pages;
    ptl__ptrmap_put(&m->mdls.map, mdl, r);
    m->mdls.allocated++;
    m->mdls.pool_bytes += (uint16_t)mdl->Size;
    return r;
}

/* ---- MmSizeOfMdl, MmCreateMdl, IoBuildPartialMdl --------------------------------------- */

SIZE_T MmSizeOfMdl(PVOID Base, SIZE_T Length)
{
    (void)ptl__ddi_enter("MmSizeOfMdl");
    return sizeof(MDL) + (SIZE_T)PTL_PAGES_SPANNED((uintptr_t)Base, Length) * sizeof(PFN_NUMBER);
}

PMDL MmCreateMdl(PMDL MemoryDescriptorList, PVOID Base, SIZE_T Length)
{
    ptl_machine *m = ptl__ddi_enter("MmCreateMdl");
    if (MemoryDescriptorList) {
        MmInitializeMdl(MemoryDescriptorList, Base, Length);
        return MemoryDescriptorList;
    }
    if (ptl__is_host(m, Base)) {
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "MmCreateMdl(%p): a host pointer, not an address of the emulated machine",
                        Base);
        return NULL;
    }
    uint32_t pages = PTL_PAGES_SPANNED((uintptr_t)Base, Length);
    if (Length == 0 || Length >= 0x80000000u ||
        X86_MDL_BYTES + (uint64_t)pages * sizeof(PFN_NUMBER) > 0xFFFFu) {
        ptl__perf_event(m, PTL_EV_FAIL, "MmCreateMdl(NULL, %08x, 0x%zx) returned NULL: %s",
                        (uint32_t)(uintptr_t)Base, (size_t)Length,
                        Length == 0 ? "zero length" : "the MDL would exceed 64 KB");
        return NULL;
    }
    if (ptl__verifier_inject(m, PTL_FAULT_MDL, "MmCreateMdl"))
        return NULL;
    PMDL mdl = ptl__xcalloc(1, sizeof(MDL) + pages * sizeof(PFN_NUMBER));
    MmInitializeMdl(mdl, Base, Length);
    record_allocated(m, mdl, pages);
    return mdl;
}

/* PFN entries the storage of an MDL has room for. */
static uint32_t mdl_capacity(ptl_machine *m, PMDL mdl)
{
    ptl__mdlrec *r = ptl__ptrmap_get(&m->mdls.map, mdl);
    if (r && r->allocated)
        return r->pages;
    if ((uint16_t)mdl->Size < sizeof(MDL))
        return 0;
    return (uint32_t)(((uint16_t)mdl->Size - sizeof(MDL)) / sizeof(PFN_NUMBER));
}

#define PARTIAL_INHERITED \
    (MDL_IO_PAGE_READ | MDL_SOURCE_IS_NONPAGED_POOL | MDL_MAPPED_TO_SYSTEM_VA | MDL_IO_SPACE)

VOID IoBuildPartialMdl(PMDL SourceMdl, PMDL TargetMdl, PVOID VirtualAddress, ULONG Length)
{
    ptl_machine *m = ptl__ddi_enter("IoBuildPartialMdl");
    if (!SourceMdl || !TargetMdl)
        ptl__kaccess(m, 0, NULL, 1, 0); /* a NULL dereference, as NT would take it */
    uint64_t src_start = (uint64_t)(uintptr_t)MmGetMdlVirtualAddress(SourceMdl);
    uint64_t va = (uint64_t)(uintptr_t)VirtualAddress;
    uint64_t offset = va - src_start;
    if (va < src_start || offset > SourceMdl->ByteCount) {
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "IoBuildPartialMdl by %s: %08llx lies outside the source MDL's buffer "
                        "%08llx+0x%x; nothing done",
                        driver_name(m), (unsigned long long)va, (unsigned long long)src_start,
                        SourceMdl->ByteCount);
        return;
    }
    if (Length == 0)
        Length = SourceMdl->ByteCount - (ULONG)offset;
    uint32_t pages = PTL_PAGES_SPANNED(va, Length);
    if (offset + Length > SourceMdl->ByteCount || Length == 0) {
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "IoBuildPartialMdl by %s: %08llx+0x%x is not a subrange of the source "
                        "MDL's buffer %08llx+0x%x; nothing done",
                        driver_name(m), (unsigned long long)va, Length,
                        (unsigned long long)src_start, SourceMdl->ByteCount);
        return;
    }
    if (pages > mdl_capacity(m, TargetMdl)) {
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "IoBuildPartialMdl by %s: the target MDL has room for %u PFNs, the "
                        "subrange spans %u; NT would write past it; nothing done",
                        driver_name(m), mdl_capacity(m, TargetMdl), pages);
        return;
    }
    if (TargetMdl->MdlFlags & MDL_MAPPED_TO_SYSTEM_VA &&
        !(TargetMdl->MdlFlags & (MDL_SOURCE_IS_NONPAGED_POOL | MDL_PARTIAL)))
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "IoBuildPartialMdl by %s into an MDL that is still mapped at %08x: that "
                        "mapping is lost",
                        driver_name(m), (uint32_t)(uintptr_t)TargetMdl->MappedSystemVa);
    if (TargetMdl->MdlFlags & MDL_PARTIAL_HAS_BEEN_MAPPED)
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "IoBuildPartialMdl by %s into a partial MDL still mapped at %08x "
                        "(MmPrepareMdlForReuse first): that mapping is lost",
                        driver_name(m), (uint32_t)(uintptr_t)TargetMdl->MappedSystemVa);
    uint32_t first_page =
        (uint32_t)(((va & ~(uint64_t)PTL_PAGE_MASK) - (uint64_t)(uintptr_t)SourceMdl->StartVa) >>
                   PTL_PAGE_SHIFT);
    TargetMdl->StartVa = (PVOID)(uintptr_t)(va & ~(uint64_t)PTL_PAGE_MASK);
    TargetMdl->ByteOffset = (ULONG)(va & PTL_PAGE_MASK);
    TargetMdl->ByteCount = Length;
    TargetMdl->Process = SourceMdl->Process;
    TargetMdl->MdlFlags &= (CSHORT)(MDL_ALLOCATED_FIXED_SIZE | MDL_ALLOCATED_MUST_SUCCEED);
    TargetMdl->MdlFlags |= (CSHORT)((SourceMdl->MdlFlags & PARTIAL_INHERITED) | MDL_PARTIAL);
    TargetMdl->MappedSystemVa = (PVOID)((uintptr_t)SourceMdl->MappedSystemVa + (uintptr_t)offset);
    memmove(MmGetMdlPfnArray(TargetMdl), MmGetMdlPfnArray(SourceMdl) + first_page,
            pages * sizeof(PFN_NUMBER));
}

/* ---- MmAllocatePagesForMdl(Ex), MmFreePagesFromMdl ------------------------------------- */

static PMDL pages_for_mdl(ptl_machine *m, const char *name, PHYSICAL_ADDRESS low,
                          PHYSICAL_ADDRESS high, PHYSICAL_ADDRESS skip, SIZE_T total, int zero)
{
    ptl__phys *ph = &m->phys;
    uint64_t want64 = ((uint64_t)total + PTL_PAGE_MASK) >> PTL_PAGE_SHIFT;
    uint32_t max_pages = (0xFFFFu - X86_MDL_BYTES) / 4u; /* what one MDL can describe */
    if (total == 0 || low.QuadPart < 0 || high.QuadPart < low.QuadPart || skip.QuadPart < 0 ||
        (skip.QuadPart & PTL_PAGE_MASK)) {
        ptl__perf_event(m, PTL_EV_FAIL, "%s(%llx, %llx, %llx, 0x%zx) returned NULL: bad arguments",
                        name, (unsigned long long)low.QuadPart, (unsigned long long)high.QuadPart,
                        (unsigned long long)skip.QuadPart, (size_t)total);
        return NULL;
    }
    uint32_t want = want64 > max_pages ? max_pages : (uint32_t)want64;
    PFN_NUMBER *pfns = ptl__xcalloc(want, sizeof *pfns);
    uint32_t got = 0;
    uint64_t lo = ((uint64_t)low.QuadPart + PTL_PAGE_MASK) >> PTL_PAGE_SHIFT;
    uint64_t hi = (uint64_t)high.QuadPart >> PTL_PAGE_SHIFT;
    uint64_t step = (uint64_t)skip.QuadPart >> PTL_PAGE_SHIFT;
    uint64_t seen = 0; /* frames below this were in an earlier window: free ones are taken */
    while (got < want && lo < ph->ram_pages) {
        uint32_t top = hi >= ph->ram_pages ? ph->ram_pages - 1 : (uint32_t)hi;
        /* Released frames in range first, then never-used ones upward. Each window after
         * the first adds only (its top moved by SkipBytes) frames above the last one's, so
         * the free list is walked only when that new part holds a released frame (below
         * the high-water mark, released frames are exactly those in use as free): with a
         * one-page skip across all of RAM, walking it every time was quadratic. */
        int listed = 0;
        for (uint64_t f = lo > seen ? lo : seen; f <= top && f < ph->hwm && !listed; f++)
            listed = ph->pfn[f].Use == PTL_USE_FREE;
        seen = (uint64_t)top + 1;
        for (uint32_t *link = &ph->free_head; listed && *link && got < want;) {
            uint32_t f = *link - 1;
            if (f >= lo && f <= top) {
                *link = ph->pfn[f].Flink;
                ph->free_count--;
                init_frame(ph, f, MDL_PAGES_USE, zero);
                pfns[got++] = f;
            } else {
                link = &ph->pfn[f].Flink;
            }
        }
        while (got < want) {
            uint64_t f = lo > ph->hwm ? lo : ph->hwm;
            if (f > top || f >= ph->ram_pages)
                break;
            take_range(ph, (uint32_t)f, 1, MDL_PAGES_USE, zero);
            pfns[got++] = (uint32_t)f;
        }
        if (step == 0)
            break;
        lo += step;
        hi += step;
    }
    if (got == 0) {
        free(pfns);
        ptl__perf_event(m, PTL_EV_FAIL, "%s(0x%zx) returned NULL: no free RAM in range", name,
                        (size_t)total);
        return NULL;
    }
    for (uint32_t i = 0; i < got; i++) {
        ptl__pfn *e = &ph->pfn[pfns[i]];
        e->LockCount++; /* the MDL's lock, beside any a view of the free frame took */
        e->ReferenceCount++;
    }
    PMDL mdl = ptl__xcalloc(1, sizeof(MDL) + got * sizeof(PFN_NUMBER));
    mdl->Size = (CSHORT)(X86_MDL_BYTES + got * 4u);
    mdl->MdlFlags = MDL_PAGES_LOCKED;
    mdl->ByteCount = got * PTL_PAGE_SIZE;
    memcpy(MmGetMdlPfnArray(mdl), pfns, got * sizeof(PFN_NUMBER));
    free(pfns);
    record_allocated(m, mdl, got);
    ptl__perf_event(m, PTL_EV_NOTE, "%s by %s: %u pages of RAM (0x%zx bytes asked)", name,
                    driver_name(m), got, (size_t)total);
    return mdl;
}

PMDL MmAllocatePagesForMdl(PHYSICAL_ADDRESS LowAddress, PHYSICAL_ADDRESS HighAddress,
                           PHYSICAL_ADDRESS SkipBytes, SIZE_T TotalBytes)
{
    ptl_machine *m = ptl__ddi_enter("MmAllocatePagesForMdl");
    if (!exported(m, "MmAllocatePagesForMdl", PTL_WIN2000))
        return NULL;
    return pages_for_mdl(m, "MmAllocatePagesForMdl", LowAddress, HighAddress, SkipBytes, TotalBytes,
                         1);
}

PMDL MmAllocatePagesForMdlEx(PHYSICAL_ADDRESS LowAddress, PHYSICAL_ADDRESS HighAddress,
                             PHYSICAL_ADDRESS SkipBytes, SIZE_T TotalBytes,
                             MEMORY_CACHING_TYPE CacheType, ULONG Flags)
{
    ptl_machine *m = ptl__ddi_enter("MmAllocatePagesForMdlEx");
    if (!exported(m, "MmAllocatePagesForMdlEx", PTL_WINXP))
        return NULL;
    if ((unsigned)CacheType >= MmMaximumCacheType ||
        (Flags & ~(ULONG)(MM_DONT_ZERO_ALLOCATION | MM_ALLOCATE_FROM_LOCAL_NODE_ONLY))) {
        ptl__perf_event(m, PTL_EV_FAIL,
                        "MmAllocatePagesForMdlEx returned NULL: cache type %d or flags 0x%x "
                        "invalid",
                        (int)CacheType, Flags);
        return NULL;
    }
    return pages_for_mdl(m, "MmAllocatePagesForMdlEx", LowAddress, HighAddress, SkipBytes,
                         TotalBytes, !(Flags & MM_DONT_ZERO_ALLOCATION));
}

VOID MmFreePagesFromMdl(PMDL Mdl)
{
    ptl_machine *m = ptl__ddi_enter("MmFreePagesFromMdl");
    if (!exported(m, "MmFreePagesFromMdl", PTL_WIN2000))
        return;
    ptl__phys *ph = &m->phys;
    uint32_t pages = span_pages(Mdl);
    PPFN_NUMBER pfns = MmGetMdlPfnArray(Mdl);
    const char *why = NULL;
    if (!(Mdl->MdlFlags & MDL_PAGES_LOCKED) ||
        (Mdl->MdlFlags & (MDL_SOURCE_IS_NONPAGED_POOL | MDL_PARTIAL | MDL_IO_SPACE)) ||
        ((uintptr_t)Mdl->StartVa & PTL_PAGE_MASK))
        why = "it is not an MDL MmAllocatePagesForMdl returned (or its pages were freed)";
    else if (Mdl->MdlFlags & MDL_MAPPED_TO_SYSTEM_VA)
        why = "it is still mapped to system space (MmUnmapLockedPages first)";
    for (uint32_t i = 0; !why && i < pages; i++) {
        const ptl__pfn *e = pfns[i] < ph->hwm ? &ph->pfn[pfns[i]] : NULL;
        if (!e || e->Use != MDL_PAGES_USE || e->LockCount == 0)
            why = "its pages are not pages MmAllocatePagesForMdl allocated";
        else if (e->ShareCount)
            why = "its pages are still mapped (in user space?): unmap them first";
    }
    if (why) {
        ptl__perf_event(m, PTL_EV_MISUSE, "MmFreePagesFromMdl(%p) by %s: %s; nothing freed",
                        (void *)Mdl, driver_name(m), why);
        return;
    }
    for (uint32_t i = 0; i < pages; i++) {
        ptl__pfn *e = &ph->pfn[pfns[i]];
        e->LockCount--; /* the MDL's lock; another's keeps the frame until it unlocks */
        e->ReferenceCount--;
        ptl__phys_release(ph, pfns[i]);
    }
    Mdl->MdlFlags &= (CSHORT)~MDL_PAGES_LOCKED;
    ptl__perf_event(m, PTL_EV_NOTE, "MmFreePagesFromMdl by %s: %u pages of RAM freed",
                    driver_name(m), pages);
}

/* ---- contiguous memory ------------------------------------------------------------------ */

static PVOID contiguous_alloc(ptl_machine *m, const char *name, SIZE_T bytes, uint64_t lowest,
                              uint64_t highest, uint64_t boundary, int cache)
{
    ptl__phys *ph = &m->phys;
    uint64_t pages64 = ((uint64_t)bytes + PTL_PAGE_MASK) >> PTL_PAGE_SHIFT;
    if (bytes == 0 || pages64 > ph->ram_pages || (unsigned)cache >= MmMaximumCacheType ||
        (boundary &&
         ((boundary & (boundary - 1)) || boundary < bytes || (boundary & PTL_PAGE_MASK)))) {
        ptl__perf_event(m, PTL_EV_FAIL, "%s(0x%zx) returned NULL: bad arguments", name,
                        (size_t)bytes);
        return NULL;
    }
    uint32_t n = (uint32_t)pages64;
    uint64_t lo = (lowest + PTL_PAGE_MASK) >> PTL_PAGE_SHIFT;
    uint64_t hi = highest >> PTL_PAGE_SHIFT;
    uint32_t first = UINT32_MAX;
    if (lo <= hi && lo < ph->ram_pages)
        first = find_run(ph, (uint32_t)lo, hi > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)hi, n,
                         (uint32_t)(boundary >> PTL_PAGE_SHIFT));
    if (first == UINT32_MAX) {
        ptl__perf_event(m, PTL_EV_FAIL,
                        "%s(0x%zx, highest %llx) returned NULL: no run of %u free contiguous "
                        "frames",
                        name, (size_t)bytes, (unsigned long long)highest, n);
        return NULL;
    }
    uint32_t va = ptl__syspte_reserve(m, PTL_SYSTEM_PTE_SPACE, n,
                                      cache == MmNonCached ? PTL_KIND_NONCACHED : PTL_KIND_OTHER,
                                      m->kernel.current_driver);
    if (!va) {
        ptl__perf_event(m, PTL_EV_FAIL, "%s(0x%zx) returned NULL: no run of %u system PTEs", name,
                        (size_t)bytes, n);
        return NULL;
    }
    take_range(ph, first, n, cache == MmNonCached ? PTL_USE_NONCACHED : PTL_USE_NONPAGED_POOL, 1);
    for (uint32_t i = 0; i < n; i++) {
        ptl__cache_ref(m, first + i, 1, cache);
        ptl__pte_write(m, 0, va + i * PTL_PAGE_SIZE, ptl__pte_make(first + i, 1, 0, cache));
    }
    ptl__perf_event(m, PTL_EV_MAP, "%s(0x%zx) by %s -> %08x, frames %x-%x %s (%u PTEs)", name,
                    (size_t)bytes, driver_name(m), va, first, first + n - 1, ptl__cache_name(cache),
                    n);
    return (PVOID)(uintptr_t)va;
}

PVOID MmAllocateContiguousMemory(SIZE_T NumberOfBytes, PHYSICAL_ADDRESS HighestAcceptableAddress)
{
    ptl_machine *m = ptl__ddi_enter("MmAllocateContiguousMemory");
    if (HighestAcceptableAddress.QuadPart < 0)
        HighestAcceptableAddress.QuadPart = INT64_MAX;
    return contiguous_alloc(m, "MmAllocateContiguousMemory", NumberOfBytes, 0,
                            (uint64_t)HighestAcceptableAddress.QuadPart, 0, MmCached);
}

PVOID MmAllocateContiguousMemorySpecifyCache(SIZE_T NumberOfBytes,
                                             PHYSICAL_ADDRESS LowestAcceptableAddress,
                                             PHYSICAL_ADDRESS HighestAcceptableAddress,
                                             PHYSICAL_ADDRESS BoundaryAddressMultiple,
                                             MEMORY_CACHING_TYPE CacheType)
{
    ptl_machine *m = ptl__ddi_enter("MmAllocateContiguousMemorySpecifyCache");
    if (!exported(m, "MmAllocateContiguousMemorySpecifyCache", PTL_WIN2000))
        return NULL;
    if (HighestAcceptableAddress.QuadPart < 0)
        HighestAcceptableAddress.QuadPart = INT64_MAX;
    if (LowestAcceptableAddress.QuadPart < 0 || BoundaryAddressMultiple.QuadPart < 0) {
        ptl__perf_event(m, PTL_EV_FAIL,
                        "MmAllocateContiguousMemorySpecifyCache returned NULL: bad arguments");
        return NULL;
    }
    return contiguous_alloc(m, "MmAllocateContiguousMemorySpecifyCache", NumberOfBytes,
                            (uint64_t)LowestAcceptableAddress.QuadPart,
                            (uint64_t)HighestAcceptableAddress.QuadPart,
                            (uint64_t)BoundaryAddressMultiple.QuadPart, (int)CacheType);
}

/* The allocation starting at va: its PTE count, or 0 when va is not the start of one. */
static uint32_t contiguous_at(ptl_machine *m, PVOID base)
{
    if ((uintptr_t)base > 0xFFFFFFFFu || ((uintptr_t)base & PTL_PAGE_MASK))
        return 0;
    uint32_t va = (uint32_t)(uintptr_t)base, start, count, pte, first = 0;
    ptl__pte_kind kind;
    if (!ptl__syspte_run_at(m, va, NULL, &start, &count, &kind, NULL) || start != va ||
        (kind != PTL_KIND_NONCACHED && kind != PTL_KIND_OTHER))
        return 0;
    for (uint32_t i = 0; i < count; i++) {
        if (ptl__pte_read(m, 0, va + i * PTL_PAGE_SIZE, &pte) != 0 || !(pte & PTL_PTE_VALID))
            return 0;
        uint32_t pfn = pte >> PTL_PAGE_SHIFT;
        if (i == 0)
            first = pfn;
        if (pfn != first + i || pfn >= m->phys.hwm ||
            (m->phys.pfn[pfn].Use != PTL_USE_NONCACHED &&
             m->phys.pfn[pfn].Use != PTL_USE_NONPAGED_POOL) ||
            m->phys.pfn[pfn].ShareCount != 1 || m->phys.pfn[pfn].LockCount)
            return 0;
    }
    return count;
}

static void contiguous_free(ptl_machine *m, const char *name, PVOID base)
{
    uint32_t count = contiguous_at(m, base);
    if (!count) {
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "%s(%p) by %s: not an address MmAllocateContiguousMemory returned (freed "
                        "twice, or inside an allocation); nothing freed",
                        name, base, driver_name(m));
        return;
    }
    uint32_t va = (uint32_t)(uintptr_t)base;
    for (uint32_t i = 0; i < count; i++) {
        uint32_t pte;
        ptl__pte_read(m, 0, va + i * PTL_PAGE_SIZE, &pte);
        ptl__pte_write(m, 0, va + i * PTL_PAGE_SIZE, 0);
        ptl__cache_unref(m, pte >> PTL_PAGE_SHIFT, 1);
        ptl__phys_release(&m->phys, pte >> PTL_PAGE_SHIFT);
    }
    PTL_ASSERT(ptl__syspte_release(m, PTL_SYSTEM_PTE_SPACE, va, count) == PTL_RELEASE_OK);
    ptl__perf_event(m, PTL_EV_UNMAP, "%s %08x by %s (%u PTEs)", name, va, driver_name(m), count);
}

VOID MmFreeContiguousMemory(PVOID BaseAddress)
{
    ptl_machine *m = ptl__ddi_enter("MmFreeContiguousMemory");
    contiguous_free(m, "MmFreeContiguousMemory", BaseAddress);
}

VOID MmFreeContiguousMemorySpecifyCache(PVOID BaseAddress, SIZE_T NumberOfBytes,
                                        MEMORY_CACHING_TYPE CacheType)
{
    ptl_machine *m = ptl__ddi_enter("MmFreeContiguousMemorySpecifyCache");
    (void)CacheType;
    if (!exported(m, "MmFreeContiguousMemorySpecifyCache", PTL_WIN2000))
        return;
    uint32_t count = contiguous_at(m, BaseAddress);
    if (count && PTL_PAGES_SPANNED(0, NumberOfBytes) != count)
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "MmFreeContiguousMemorySpecifyCache(%p, 0x%zx) by %s: the allocation has "
                        "%u pages; freed it whole",
                        BaseAddress, (size_t)NumberOfBytes, driver_name(m), count);
    contiguous_free(m, "MmFreeContiguousMemorySpecifyCache", BaseAddress);
}
