/* reserved.c - reserved mappings: MmAllocateMappingAddress, MmFreeMappingAddress,
 * MmMapLockedPagesWithReservedMapping, MmUnmapReservedMapping (Windows XP and later,
 * learn.microsoft.com; present on the PTL_WINXP profile only).
 *
 * A driver reserves a range of system PTEs once and maps MDLs into it later, so the
 * mapping cannot fail for want of PTEs. As on Windows, the range is (pages + 2) system
 * PTEs and the two PTEs before the address returned describe it. Their contents are what
 * ReactOS's kernel-mode test MmReservedMapping observed on Windows Server 2003 x86
 * (rostests/kmtests/ntos_mm/MmReservedMapping.c, the pre-Vista branch):
 *     PTE[-2] = (pages + 2) * 2      the range's size in PTEs, shifted by one bit
 *     PTE[-1] = PoolTag & ~1         the owner's tag, the valid bit clear
 * Both are invalid PTEs, so touching them faults. A PoolTag of 0 gets NULL (same test).
 * Everything the routines check lives in those PTEs and the range's own PTEs; there is no
 * other record (a range is "in use" while one of its PTEs is valid).
 *
 * Misuse stops with SYSTEM_PTE_MISUSE (0xDA) and the subtypes and parameters of
 * Microsoft's "Bug Check 0xDA" page (docs/research/bugchecks-and-ddis.md, 1.3):
 *   0x100 a request for 0 bytes (P2 0, P3 tag, P4 caller address);
 *   0x101 free with a tag that is not the owner's (P2 address, P3 tag, P4 owner's tag);
 *   0x102 free of a range that looks empty (P2 address, P3 tag);
 *   0x103 free while a page is still mapped (P2 the mapped page, P3 tag, P4 range pages);
 *   0x104 map with a tag that is not the owner's; 0x105 map into an invalid range;
 *   0x107 map into a range with a page still mapped (P2 address, P3 that page, P4 last);
 *   0x108 unmap with a tag not the owner's; 0x109 unmap of an empty range;
 *   0x10A unmap of more pages than the range holds (P3 range pages, P4 MDL pages);
 *   0x10B unmap where one of the MDL's pages is not mapped; 0x10C unmap that leaves
 *   pages of the range mapped (P4 the MDL's pages).
 * A range that passes the tag and size checks but is not one MmAllocateMappingAddress
 * made (ptelab checks its system PTE run too) counts as invalid: 0x102, 0x105, 0x109.
 * An MDL larger than the range gets NULL from the map call, as observed on Windows.
 */
#include "internal.h"

#include <ptelab/wdm.h>
#include <string.h>

#define PG PTL_PAGE_SIZE

static const char *driver_name(ptl_machine *m)
{
    ptl_driver *d = ptl__driver_by_id(m, m->kernel.current_driver);
    return d ? d->name : "kernel code";
}

static int exported(ptl_machine *m, const char *name)
{
    if (m->cfg.profile >= PTL_WINXP)
        return 1;
    ptl__perf_event(m, PTL_EV_MISUSE,
                    "%s does not exist on %s (first exported by Windows XP): a driver importing "
                    "it would not load; ptelab failed the call",
                    name, m->cfg.profile == PTL_WIN2000 ? "Windows 2000" : "Windows NT 4.0");
    return 0;
}

/* A system PTE's contents; 0 for a user address or where no page table maps va. */
static uint32_t pte_at(ptl_machine *m, uint32_t va)
{
    uint32_t pte = 0;
    if (va < m->pte.system_start || ptl__pte_read(m, 0, va, &pte) != 0)
        return 0;
    return pte;
}

static uint32_t addr32(PVOID p)
{
    return (uint32_t)((uintptr_t)p & 0xFFFFFFFFu);
}

/* The range whose mappings start at base (page aligned): its page count when the two
 * header PTEs and the system PTE run agree, else 0. */
static uint32_t range_pages(ptl_machine *m, uint32_t base)
{
    if (base < 2 * PG)
        return 0;
    uint32_t size = pte_at(m, base - 2 * PG) >> 1, start, count;
    ptl__pte_kind kind;
    if (size < 3 || pte_at(m, base - 2 * PG) & PTL_PTE_VALID)
        return 0;
    if (!ptl__syspte_run_at(m, base - 2 * PG, NULL, &start, &count, &kind, NULL) ||
        start != base - 2 * PG || count != size || kind != PTL_KIND_OTHER)
        return 0;
    return size - 2;
}

static uint32_t tag_pte(ULONG tag)
{
    return tag & ~1u;
}

PVOID MmAllocateMappingAddress(SIZE_T NumberOfBytes, ULONG PoolTag)
{
    ptl_machine *m = ptl__ddi_enter("MmAllocateMappingAddress");
    if (!exported(m, "MmAllocateMappingAddress"))
        return NULL;
    if (NumberOfBytes == 0)
        ptl__bugcheck_why(m, 0xDA, 0x100, 0, PoolTag, ptl__kernel_ip(m),
                          "MmAllocateMappingAddress(0, '%.4s') by %s: a request for 0 mappings",
                          (const char *)&PoolTag, driver_name(m));
    if (PoolTag == 0 || NumberOfBytes >= 0x80000000u) {
        ptl__perf_event(m, PTL_EV_FAIL, "MmAllocateMappingAddress(0x%zx, 0x%x) returned NULL: %s",
                        (size_t)NumberOfBytes, PoolTag,
                        PoolTag == 0 ? "a pool tag of 0" : "too large");
        return NULL;
    }
    uint32_t pages = (uint32_t)((NumberOfBytes + PTL_PAGE_MASK) >> PTL_PAGE_SHIFT);
    uint32_t va = ptl__syspte_reserve(m, PTL_SYSTEM_PTE_SPACE, pages + 2, PTL_KIND_OTHER,
                                      m->kernel.current_driver);
    if (!va) {
        ptl__perf_event(m, PTL_EV_FAIL,
                        "MmAllocateMappingAddress(0x%zx, '%.4s') returned NULL: no run of %u "
                        "system PTEs",
                        (size_t)NumberOfBytes, (const char *)&PoolTag, pages + 2);
        return NULL;
    }
    ptl__pte_write(m, 0, va, (pages + 2) << 1);
    ptl__pte_write(m, 0, va + PG, tag_pte(PoolTag));
    ptl__perf_event(
        m, PTL_EV_MAP, "MmAllocateMappingAddress(0x%zx, '%.4s') by %s -> %08x (%u PTEs reserved)",
        (size_t)NumberOfBytes, (const char *)&PoolTag, driver_name(m), va + 2 * PG, pages + 2);
    return (PVOID)(uintptr_t)(va + 2 * PG);
}

VOID MmFreeMappingAddress(PVOID BaseAddress, ULONG PoolTag)
{
    ptl_machine *m = ptl__ddi_enter("MmFreeMappingAddress");
    if (!exported(m, "MmFreeMappingAddress"))
        return;
    uint32_t addr = addr32(BaseAddress), base = addr & ~PTL_PAGE_MASK;
    uint32_t owner = base >= 2 * PG ? pte_at(m, base - PG) : 0;
    if (owner != tag_pte(PoolTag))
        ptl__bugcheck_why(m, 0xDA, 0x101, addr, PoolTag, owner,
                          "MmFreeMappingAddress(%08x, '%.4s') by %s: the range's tag is %08x", addr,
                          (const char *)&PoolTag, driver_name(m), owner);
    uint32_t pages = range_pages(m, base);
    if (!pages)
        ptl__bugcheck_why(m, 0xDA, 0x102, addr, PoolTag, 0,
                          "MmFreeMappingAddress(%08x) by %s: not a range MmAllocateMappingAddress "
                          "reserved (it looks empty)",
                          addr, driver_name(m));
    for (uint32_t i = 0; i < pages; i++)
        if (pte_at(m, base + i * PG) & PTL_PTE_VALID)
            ptl__bugcheck_why(m, 0xDA, 0x103, base + i * PG, PoolTag, pages,
                              "MmFreeMappingAddress(%08x) by %s while page %u is still mapped "
                              "(MmUnmapReservedMapping first)",
                              addr, driver_name(m), i);
    PTL_ASSERT(ptl__syspte_release(m, PTL_SYSTEM_PTE_SPACE, base - 2 * PG, pages + 2) ==
               PTL_RELEASE_OK);
    ptl__perf_event(m, PTL_EV_UNMAP, "MmFreeMappingAddress(%08x, '%.4s') by %s (%u PTEs)", addr,
                    (const char *)&PoolTag, driver_name(m), pages + 2);
}

PVOID MmMapLockedPagesWithReservedMapping(PVOID MappingAddress, ULONG PoolTag, PMDL Mdl,
                                          MEMORY_CACHING_TYPE CacheType)
{
    ptl_machine *m = ptl__ddi_enter("MmMapLockedPagesWithReservedMapping");
    if (!exported(m, "MmMapLockedPagesWithReservedMapping"))
        return NULL;
    uint32_t addr = addr32(MappingAddress), base = addr & ~PTL_PAGE_MASK;
    uint32_t owner = base >= 2 * PG ? pte_at(m, base - PG) : 0;
    if (owner != tag_pte(PoolTag))
        ptl__bugcheck_why(m, 0xDA, 0x104, addr, PoolTag, owner,
                          "MmMapLockedPagesWithReservedMapping(%08x, '%.4s') by %s: the range's "
                          "tag is %08x",
                          addr, (const char *)&PoolTag, driver_name(m), owner);
    uint32_t pages = range_pages(m, base);
    if (!pages)
        ptl__bugcheck_why(m, 0xDA, 0x105, addr, PoolTag, 0,
                          "MmMapLockedPagesWithReservedMapping(%08x) by %s: not a reserved range",
                          addr, driver_name(m));
    for (uint32_t i = 0; i < pages; i++)
        if (pte_at(m, base + i * PG) & PTL_PTE_VALID)
            ptl__bugcheck_why(m, 0xDA, 0x107, addr, base + i * PG, base + (pages - 1) * PG,
                              "MmMapLockedPagesWithReservedMapping(%08x) by %s: page %u of the "
                              "range is still mapped (MmUnmapReservedMapping first)",
                              addr, driver_name(m), i);
    if ((unsigned)CacheType >= MmMaximumCacheType) {
        ptl__perf_event(m, PTL_EV_FAIL,
                        "MmMapLockedPagesWithReservedMapping returned NULL: cache type %d",
                        (int)CacheType);
        return NULL;
    }
    uint32_t need = PTL_PAGES_SPANNED(Mdl->ByteOffset, Mdl->ByteCount);
    if (need > pages) {
        ptl__perf_event(m, PTL_EV_FAIL,
                        "MmMapLockedPagesWithReservedMapping(%08x) returned NULL: the MDL spans "
                        "%u pages, the range holds %u",
                        addr, need, pages);
        return NULL;
    }
    if (!(Mdl->MdlFlags & (MDL_PAGES_LOCKED | MDL_SOURCE_IS_NONPAGED_POOL | MDL_PARTIAL)))
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "MmMapLockedPagesWithReservedMapping by %s of an MDL whose pages were "
                        "never locked or built: its PFN array is whatever the MDL holds",
                        driver_name(m));
    if (Mdl->MdlFlags & MDL_MAPPED_TO_SYSTEM_VA)
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "MmMapLockedPagesWithReservedMapping by %s of an MDL already mapped at "
                        "%08x",
                        driver_name(m), addr32(Mdl->MappedSystemVa));
    PPFN_NUMBER pfns = MmGetMdlPfnArray(Mdl);
    int cache = (int)CacheType;
    for (uint32_t i = 0; i < need; i++) {
        uint32_t at;
        int existing;
        if (ptl__cache_conflict(m, pfns[i], 1, cache, &at, &existing))
            ptl__perf_event(m, PTL_EV_HAZARD,
                            "MmMapLockedPagesWithReservedMapping maps physical page %x %s while "
                            "it is mapped %s",
                            at, ptl__cache_name(cache), ptl__cache_name(existing));
    }
    for (uint32_t i = 0; i < need; i++) {
        ptl__pte_write(m, 0, base + i * PG, ptl__pte_make(pfns[i], 1, 0, cache));
        ptl__cache_ref(m, pfns[i], 1, cache);
    }
    PVOID result = (PVOID)(uintptr_t)(addr + Mdl->ByteOffset);
    Mdl->MappedSystemVa = result;
    Mdl->MdlFlags |= (CSHORT)(MDL_MAPPED_TO_SYSTEM_VA |
                              ((Mdl->MdlFlags & MDL_PARTIAL) ? MDL_PARTIAL_HAS_BEEN_MAPPED : 0));
    ptl__perf_event(m, PTL_EV_MAP, "MDL of %u pages mapped into the reserved range %08x by %s",
                    need, base, driver_name(m));
    return result;
}

VOID MmUnmapReservedMapping(PVOID BaseAddress, ULONG PoolTag, PMDL Mdl)
{
    ptl_machine *m = ptl__ddi_enter("MmUnmapReservedMapping");
    if (!exported(m, "MmUnmapReservedMapping"))
        return;
    uint32_t addr = addr32(BaseAddress), base = addr & ~PTL_PAGE_MASK;
    uint32_t owner = base >= 2 * PG ? pte_at(m, base - PG) : 0;
    if (owner != tag_pte(PoolTag))
        ptl__bugcheck_why(m, 0xDA, 0x108, addr, PoolTag, owner,
                          "MmUnmapReservedMapping(%08x, '%.4s') by %s: the range's tag is %08x",
                          addr, (const char *)&PoolTag, driver_name(m), owner);
    uint32_t pages = range_pages(m, base);
    if (!pages)
        ptl__bugcheck_why(m, 0xDA, 0x109, addr, PoolTag, 0,
                          "MmUnmapReservedMapping(%08x) by %s: not a reserved range (it looks "
                          "empty)",
                          addr, driver_name(m));
    uint32_t n = PTL_PAGES_SPANNED(Mdl->ByteOffset, Mdl->ByteCount);
    if (n > pages)
        ptl__bugcheck_why(m, 0xDA, 0x10A, addr, pages, n,
                          "MmUnmapReservedMapping(%08x) by %s: the MDL spans %u pages, the range "
                          "holds %u",
                          addr, driver_name(m), n, pages);
    for (uint32_t i = 0; i < n; i++)
        if (!(pte_at(m, base + i * PG) & PTL_PTE_VALID))
            ptl__bugcheck_why(m, 0xDA, 0x10B, addr, PoolTag, n,
                              "MmUnmapReservedMapping(%08x) by %s: page %u of the MDL's %u is "
                              "not mapped",
                              addr, driver_name(m), i, n);
    for (uint32_t i = n; i < pages; i++)
        if (pte_at(m, base + i * PG) & PTL_PTE_VALID)
            ptl__bugcheck_why(m, 0xDA, 0x10C, addr, PoolTag, n,
                              "MmUnmapReservedMapping(%08x) by %s unmaps %u pages, but page %u "
                              "of the range is mapped too",
                              addr, driver_name(m), n, i);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t pte = pte_at(m, base + i * PG);
        ptl__pte_write(m, 0, base + i * PG, 0);
        ptl__cache_unref(m, pte >> PTL_PAGE_SHIFT, 1);
    }
    Mdl->MdlFlags &= (CSHORT) ~(MDL_MAPPED_TO_SYSTEM_VA | MDL_PARTIAL_HAS_BEEN_MAPPED);
    ptl__perf_event(m, PTL_EV_UNMAP, "reserved range %08x: %u pages unmapped by %s", base, n,
                    driver_name(m));
}
