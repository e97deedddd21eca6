/* iospace.c - MmMapIoSpace and MmUnmapIoSpace: adapter memory in system space.
 *
 * Models the article's second method's first step. MmMapIoSpace reserves exactly the
 * span's pages of system PTEs (ADDRESS_AND_SIZE_TO_SPAN_PAGES; ReactOS iosup.c), writes
 * valid kernel PTEs for the physical pages with the cache bits of the requested
 * MEMORY_CACHING_TYPE, and returns the VA plus the byte offset of the physical address. It
 * returns NULL when no run is long enough (learn.microsoft.com, "MmMapIoSpace"). The
 * mapping is valid in every process context (system space), DPCs and ISRs included.
 *
 * MmUnmapIoSpace releases the run. NT trusts the caller; misuse corrupts the pool. ptelab
 * detects it instead:
 *   - unmapping an address MmMapIoSpace never returned is SYSTEM_PTE_MISUSE 0xDA subtype
 *     0x400 (P2 the base, P3 the pages) on Windows XP and whenever the verifier is on;
 *   - a size that differs from the mapping's is 0xDA subtype 0x305 under the verifier;
 *   - otherwise (NT 4.0, 2000 without the verifier, where NT would corrupt silently) ptelab
 *     records a misuse event with the driver and the mapping, and changes nothing.
 * docs/fidelity.md records this choice.
 *
 * The run's record is the pool's own (kind I/O space, owner driver): there is no second
 * table to keep in step.
 *
 * Invariants: none of its own state. An I/O-space mapping is exactly a system PTE run of
 * kind I/O space (ptl__sysptes_check) whose cache attribute the cache tracker holds until
 * the unmap (ptl__cache_check).
 */
#include "internal.h"

uint32_t ptl__iospace_map(ptl_machine *m, uint64_t pa, uint32_t bytes, int cache)
{
    ptl__iospace *io = &m->iospace;
    if (bytes == 0 || pa + bytes > (4ull << 30) || pa + bytes < pa) {
        io->failed++;
        ptl__perf_event(m, PTL_EV_FAIL, "MmMapIoSpace(%llx, 0x%x) refused: %s",
                        (unsigned long long)pa, bytes,
                        bytes == 0 ? "zero length" : "beyond the 4 GB a non-PAE x86 addresses");
        return 0;
    }
    uint32_t pages = PTL_PAGES_SPANNED(pa, bytes);
    uint32_t va = ptl__syspte_reserve(m, PTL_SYSTEM_PTE_SPACE, pages, PTL_KIND_IOSPACE,
                                      m->kernel.current_driver);
    if (!va) {
        io->failed++;
        ptl__spool_stats st;
        ptl__sysptes_stats(m, PTL_SYSTEM_PTE_SPACE, &st);
        ptl__perf_event(m, PTL_EV_FAIL,
                        "MmMapIoSpace of %u pages returned NULL: %u free system PTEs, largest "
                        "run %u%s",
                        pages, st.free, st.largest, st.free >= pages ? " (fragmented)" : "");
        return 0;
    }
    uint32_t first_pfn = (uint32_t)(pa >> PTL_PAGE_SHIFT), at;
    int existing;
    if (ptl__cache_conflict(m, first_pfn, pages, cache, &at, &existing))
        ptl__perf_event(m, PTL_EV_HAZARD,
                        "MmMapIoSpace maps physical page %llx %s while it is mapped %s: two "
                        "attributes at once corrupt the processor's TLB and caches",
                        (unsigned long long)at << PTL_PAGE_SHIFT, ptl__cache_name(cache),
                        ptl__cache_name(existing));
    if (first_pfn < m->phys.ram_pages)
        ptl__perf_event(m, PTL_EV_HAZARD,
                        "MmMapIoSpace of RAM at %llx (frame in use as %s): the driver maps "
                        "memory it does not own",
                        (unsigned long long)pa,
                        ptl__frame_use_name(first_pfn < m->phys.hwm ? m->phys.pfn[first_pfn].Use
                                                                    : PTL_USE_FREE));
    ptl__cache_ref_run(m, first_pfn, pages, cache);
    ptl__pte_write_run(m, 0, va, pages, ptl__pte_make(first_pfn, 1, 0, cache), PTL_PAGE_SIZE);
    io->maps++;
    io->live_mappings++;
    io->live_pages += pages;
    ptl__perf_event(m, PTL_EV_MAP, "MmMapIoSpace %llx+0x%x -> %08x (%u PTEs)",
                    (unsigned long long)pa, bytes, va + (uint32_t)(pa & PTL_PAGE_MASK), pages);
    return va + (uint32_t)(pa & PTL_PAGE_MASK);
}

void ptl__iospace_unmap(ptl_machine *m, uint32_t va, uint32_t bytes)
{
    ptl__iospace *io = &m->iospace;
    uint32_t base = va & ~PTL_PAGE_MASK;
    uint32_t pages = bytes ? PTL_PAGES_SPANNED(va, bytes) : 0;
    uint32_t start, count, driver;
    ptl__pte_kind kind;
    int known = ptl__syspte_run_at(m, base, NULL, &start, &count, &kind, &driver) &&
                kind == PTL_KIND_IOSPACE && start == base;
    int strict = m->cfg.verifier || m->cfg.profile >= PTL_WINXP;
    if (!known) {
        if (strict)
            ptl__bugcheck_why(m, 0xDA, 0x400, base, pages, 0,
                              "MmUnmapIoSpace(%08x, 0x%x): MmMapIoSpace never returned this "
                              "address",
                              va, bytes);
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "MmUnmapIoSpace(%08x, 0x%x): not an I/O-space mapping (already "
                        "unmapped, or never mapped); NT 4.0 would corrupt the system PTE pool, "
                        "ptelab changed nothing",
                        va, bytes);
        return;
    }
    if (pages != count) {
        if (m->cfg.verifier)
            ptl__bugcheck_why(m, 0xDA, 0x305, base, pages, count,
                              "MmUnmapIoSpace(%08x, 0x%x) frees %u pages of a %u-page mapping", va,
                              bytes, pages, count);
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "MmUnmapIoSpace(%08x, 0x%x) names %u pages but the mapping has %u; "
                        "ptelab left the mapping in place",
                        va, bytes, pages, count);
        return;
    }
    uint32_t pte;
    PTL_ASSERT(ptl__pte_read(m, 0, base, &pte) == 0 && (pte & PTL_PTE_VALID));
    ptl__cache_unref_run(m, pte >> PTL_PAGE_SHIFT, count, ptl__pte_cache_type(pte));
    PTL_ASSERT(ptl__syspte_release(m, PTL_SYSTEM_PTE_SPACE, base, count) == PTL_RELEASE_OK);
    io->unmaps++;
    io->live_mappings--;
    io->live_pages -= count;
    ptl__perf_event(m, PTL_EV_UNMAP, "MmUnmapIoSpace %08x (%u PTEs)", va, count);
}

/* ---- MmAllocateNonCachedMemory -------------------------------------------------------
 *
 * Whole pages of RAM mapped noncached in system space (learn.microsoft.com,
 * "MmAllocateNonCachedMemory"). NT's PTE cost is not documented; ptelab follows ReactOS
 * (ncache.c): pages + 1 system PTEs, the first holding the allocation's size (ReactOS keeps
 * its MDL pointer there), the VA returned starting at the second. MmFreeNonCachedMemory
 * reads the size back and must be given the same size. */

#define NONCACHED_TAG 0x4E430000u /* "NC" in the high half of the size PTE's word */

uint32_t ptl__noncached_alloc(ptl_machine *m, uint32_t bytes)
{
    uint32_t pages = (bytes + PTL_PAGE_MASK) / PTL_PAGE_SIZE;
    if (bytes == 0 || pages >= 0x8000u)
        return 0;
    uint32_t va = ptl__syspte_reserve(m, PTL_SYSTEM_PTE_SPACE, pages + 1, PTL_KIND_NONCACHED,
                                      m->kernel.current_driver);
    if (!va) {
        m->iospace.failed++;
        ptl__perf_event(m, PTL_EV_FAIL,
                        "MmAllocateNonCachedMemory(0x%x) returned NULL: no run of %u system "
                        "PTEs",
                        bytes, pages + 1);
        return 0;
    }
    for (uint32_t i = 0; i < pages; i++) {
        uint32_t pfn = ptl__phys_alloc(&m->phys, PTL_USE_NONCACHED, 0);
        if (pfn == UINT32_MAX) {
            for (uint32_t k = 0; k < i; k++) {
                uint32_t pte;
                ptl__pte_read(m, 0, va + (k + 1) * PTL_PAGE_SIZE, &pte);
                ptl__pte_write(m, 0, va + (k + 1) * PTL_PAGE_SIZE, 0);
                ptl__cache_unref(m, pte >> PTL_PAGE_SHIFT, 1);
                ptl__phys_release(&m->phys, pte >> PTL_PAGE_SHIFT);
            }
            ptl__syspte_release(m, PTL_SYSTEM_PTE_SPACE, va, pages + 1);
            ptl__perf_event(m, PTL_EV_FAIL, "MmAllocateNonCachedMemory(0x%x): no RAM", bytes);
            return 0;
        }
        ptl__cache_ref(m, pfn, 1, 0);
        ptl__pte_write(m, 0, va + (i + 1) * PTL_PAGE_SIZE, ptl__pte_make(pfn, 1, 0, 0));
    }
    /* the size, kept in the (invalid) PTE before the buffer */
    ptl__pte_write(m, 0, va, NONCACHED_TAG | (pages << 1));
    ptl__perf_event(m, PTL_EV_MAP, "MmAllocateNonCachedMemory(0x%x) -> %08x (%u PTEs)", bytes,
                    va + PTL_PAGE_SIZE, pages + 1);
    return va + PTL_PAGE_SIZE;
}

void ptl__noncached_free(ptl_machine *m, uint32_t base, uint32_t bytes)
{
    uint32_t pages = (bytes + PTL_PAGE_MASK) / PTL_PAGE_SIZE, start, count, marker = 0;
    ptl__pte_kind kind;
    if ((base & PTL_PAGE_MASK) ||
        !ptl__syspte_run_at(m, base - PTL_PAGE_SIZE, NULL, &start, &count, &kind, NULL) ||
        kind != PTL_KIND_NONCACHED || start != base - PTL_PAGE_SIZE) {
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "MmFreeNonCachedMemory(%08x): not an address MmAllocateNonCachedMemory "
                        "returned; nothing freed",
                        base);
        return;
    }
    ptl__pte_read(m, 0, start, &marker);
    if (pages + 1 != count || marker != (NONCACHED_TAG | ((count - 1) << 1))) {
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "MmFreeNonCachedMemory(%08x, 0x%x): the allocation has %u pages, the "
                        "size given names %u; nothing freed",
                        base, bytes, count - 1, pages);
        return;
    }
    for (uint32_t i = 1; i < count; i++) {
        uint32_t pte;
        ptl__pte_read(m, 0, start + i * PTL_PAGE_SIZE, &pte);
        ptl__pte_write(m, 0, start + i * PTL_PAGE_SIZE, 0);
        ptl__cache_unref(m, pte >> PTL_PAGE_SHIFT, 1);
        ptl__phys_release(&m->phys, pte >> PTL_PAGE_SHIFT);
    }
    PTL_ASSERT(ptl__syspte_release(m, PTL_SYSTEM_PTE_SPACE, start, count) == PTL_RELEASE_OK);
    ptl__perf_event(m, PTL_EV_UNMAP, "MmFreeNonCachedMemory %08x (%u PTEs)", base, count);
}
