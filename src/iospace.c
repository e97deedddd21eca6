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
    uint32_t first_pfn = (uint32_t)(pa >> PTL_PAGE_SHIFT);
    for (uint32_t i = 0; i < pages; i++)
        ptl__pte_write(m, 0, va + i * PTL_PAGE_SIZE, ptl__pte_make(first_pfn + i, 1, 0, cache));
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
    PTL_ASSERT(ptl__syspte_release(m, PTL_SYSTEM_PTE_SPACE, base, count) == PTL_RELEASE_OK);
    io->unmaps++;
    io->live_mappings--;
    io->live_pages -= count;
    ptl__perf_event(m, PTL_EV_UNMAP, "MmUnmapIoSpace %08x (%u PTEs)", va, count);
}
