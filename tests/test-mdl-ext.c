/* test-mdl-ext.c - the MDL family beyond the article (MmSizeOfMdl, MmCreateMdl,
 * IoBuildPartialMdl, MmPrepareMdlForReuse, MmAllocatePagesForMdl(Ex), MmFreePagesFromMdl),
 * contiguous memory and the reserved mappings of Windows XP with every SYSTEM_PTE_MISUSE
 * subtype they raise. Sources: src/mdl_ext.c, src/reserved.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <ptelab/ptelab.h>
#include <ptelab/wdm.h>

#include "ptltest.h"

#include "ptltest.h"

#include "internal.h"

#define TAG   0x4D526D4Bu /* 'MRmK' as MSVC spells it */
#define TAG2  0x3220724Fu
#define PG    4096u
#define PAGES 10u

typedef struct rig {
    ptl_machine *m;
    ptl_process *app;
    ptl_driver *drv;
    ptl_stop stop;
} rig;

static rig boot_rig(ptl_profile profile)
{
    ptl_config cfg;
    ptl_config_init(&cfg);
    cfg.profile = profile;
    cfg.ram_bytes = 64u << 20;
    rig r;
    memset(&r, 0, sizeof r);
    r.m = ptl_boot(&cfg);
    assert_non_null(r.m);
    r.app = ptl_process_create(r.m, "app.exe");
    r.drv = ptl_driver_load(r.m, "drv.sys", 8192);
    assert_true(r.app && r.drv);
    assert_int_equal(ptl_check(r.m), 0);
    return r;
}

/* Run fn as the driver in p's context; expect `code` (0: no STOP) and sound invariants. */
static void run(rig *r, ptl_process *p, void (*fn)(void *), void *arg, uint32_t code)
{
    assert_int_equal(ptl_call(r->m, p, r->drv, fn, arg, &r->stop), code);
    if (!code)
        assert_int_equal(ptl_check(r->m), 0);
}

#define event_mentions ptltest_event_mentions

static PHYSICAL_ADDRESS pa(uint64_t v)
{
    PHYSICAL_ADDRESS p;
    p.QuadPart = (LONGLONG)v;
    return p;
}

static uint32_t sys_pte(ptl_machine *m, uint32_t va)
{
    uint32_t pte = 0xDEADBEEFu;
    assert_int_equal(ptl__pte_read(m, 0, va, &pte), 0);
    return pte;
}

/* ---- MmSizeOfMdl, MmCreateMdl, IoBuildPartialMdl, MmPrepareMdlForReuse ------------------ */

typedef struct partial_ctx {
    uint32_t buf; /* user buffer of 4 pages in app */
    PMDL src, part;
    SIZE_T size;
    PVOID sysva;
    uint32_t free_before, free_mapped;
} partial_ctx;

static void build_partial(void *arg)
{
    partial_ctx *c = arg;
    c->size = MmSizeOfMdl((PVOID)(uintptr_t)(c->buf + 0x10), 2 * PG);
    c->src = MmCreateMdl(NULL, (PVOID)(uintptr_t)c->buf, 4 * PG);
    assert_non_null(c->src);
    MmProbeAndLockPages(c->src, KernelMode, IoWriteAccess);
    c->part = IoAllocateMdl((PVOID)(uintptr_t)c->buf, 4 * PG, FALSE, FALSE, NULL);
    assert_non_null(c->part);
    /* pages 1 and 2 of the source, from byte 0x100 of page 1 */
    IoBuildPartialMdl(c->src, c->part, (PVOID)(uintptr_t)(c->buf + PG + 0x100), PG + 0x200);
    c->free_before = ptl_free_system_ptes(ptl_current());
    c->sysva = MmMapLockedPagesSpecifyCache(c->part, KernelMode, MmCached, NULL, FALSE,
                                            NormalPagePriority);
    assert_non_null(c->sysva);
    c->free_mapped = ptl_free_system_ptes(ptl_current());
    RtlCopyMemory(c->sysva, "through the partial", 20);
}

static void reuse_partial(void *arg)
{
    partial_ctx *c = arg;
    MmPrepareMdlForReuse(c->part);
    assert_int_equal(c->part->MdlFlags & (MDL_PARTIAL_HAS_BEEN_MAPPED | MDL_MAPPED_TO_SYSTEM_VA),
                     0);
    /* whole-source partial with Length 0: the rest of the buffer */
    IoBuildPartialMdl(c->src, c->part, (PVOID)(uintptr_t)(c->buf + 3 * PG), 0);
    assert_int_equal(c->part->ByteCount, PG);
    MmUnlockPages(c->src);
    IoFreeMdl(c->part);
    IoFreeMdl(c->src);
}

static void test_partial_mdl(void **state)
{
    (void)state;
    rig r = boot_rig(PTL_NT4_SP4);
    partial_ctx c;
    memset(&c, 0, sizeof c);
    c.buf = ptl_user_alloc(r.app, 4 * PG);
    assert_true(c.buf != 0);
    uint32_t free0 = ptl_free_system_ptes(r.m);
    run(&r, r.app, build_partial, &c, 0);
    assert_int_equal(c.size, sizeof(MDL) + 3 * sizeof(PFN_NUMBER));
    PPFN_NUMBER sp = MmGetMdlPfnArray(c.src), pp = MmGetMdlPfnArray(c.part);
    assert_int_equal(c.src->Size, sizeof(MDL) + 4 * sizeof(PFN_NUMBER));
    assert_int_equal(c.part->MdlFlags & MDL_PARTIAL, MDL_PARTIAL);
    assert_int_equal(c.part->MdlFlags & MDL_PARTIAL_HAS_BEEN_MAPPED, MDL_PARTIAL_HAS_BEEN_MAPPED);
    assert_int_equal(c.part->ByteOffset, 0x100);
    assert_int_equal(c.part->ByteCount, PG + 0x200);
    assert_int_equal((uint32_t)(uintptr_t)c.part->StartVa, c.buf + PG);
    assert_ptr_equal(c.part->Process, c.src->Process);
    assert_int_equal(pp[0], sp[1]);
    assert_int_equal(pp[1], sp[2]);
    assert_int_equal(c.free_before - c.free_mapped, 2); /* the partial's span */
    assert_int_equal((uint32_t)(uintptr_t)c.sysva & PTL_PAGE_MASK, 0x100);
    char buf[20];
    assert_int_equal(ptl_user_read(r.app, c.buf + PG + 0x100, buf, 20), STATUS_SUCCESS);
    assert_memory_equal(buf, "through the partial", 20);
    run(&r, r.app, reuse_partial, &c, 0);
    assert_int_equal(ptl_free_system_ptes(r.m), free0);
    ptl_shutdown(r.m);
}

/* ---- MmAllocatePagesForMdl, user mapping, MmFreePagesFromMdl ------------------------------ */

typedef struct pages_ctx {
    PHYSICAL_ADDRESS low, high;
    SIZE_T bytes;
    PMDL mdl;
    PVOID sysva, userva;
    int ex;
    ULONG flags;
} pages_ctx;

static void pages_alloc(void *arg)
{
    pages_ctx *c = arg;
    c->mdl = c->ex ? MmAllocatePagesForMdlEx(c->low, c->high, pa(0), c->bytes, MmCached, c->flags)
                   : MmAllocatePagesForMdl(c->low, c->high, pa(0), c->bytes);
}

static void pages_map(void *arg)
{
    pages_ctx *c = arg;
    c->sysva =
        MmMapLockedPagesSpecifyCache(c->mdl, KernelMode, MmCached, NULL, FALSE, NormalPagePriority);
    assert_non_null(c->sysva);
    for (ULONG i = 0; i < c->mdl->ByteCount / PG; i++)
        WRITE_REGISTER_ULONG((volatile ULONG *)((PUCHAR)c->sysva + i * PG), 0xA5A50000u + i);
    c->userva =
        MmMapLockedPagesSpecifyCache(c->mdl, UserMode, MmCached, NULL, FALSE, NormalPagePriority);
    assert_non_null(c->userva);
}

static void pages_unmap_free(void *arg)
{
    pages_ctx *c = arg;
    MmUnmapLockedPages(c->userva, c->mdl);
    MmUnmapLockedPages(c->sysva, c->mdl);
    MmFreePagesFromMdl(c->mdl);
    assert_int_equal(c->mdl->MdlFlags & MDL_PAGES_LOCKED, 0);
    IoFreeMdl(c->mdl);
}

static void test_pages_for_mdl_user_mapping(void **state)
{
    (void)state;
    rig r = boot_rig(PTL_WIN2000);
    uint32_t free0 = ptl_free_system_ptes(r.m);
    uint32_t inuse0 = r.m->phys.use_count[PTL_USE_NONPAGED_POOL];
    pages_ctx c;
    memset(&c, 0, sizeof c);
    c.low = pa(0x800000); /* above 8 MB, below 16 MB */
    c.high = pa(0xFFFFFF);
    c.bytes = 5 * PG - 100;
    run(&r, NULL, pages_alloc, &c, 0);
    assert_non_null(c.mdl);
    assert_int_equal(c.mdl->ByteCount, 5 * PG);
    assert_int_equal(c.mdl->ByteOffset, 0);
    assert_int_equal(c.mdl->MdlFlags & MDL_PAGES_LOCKED, MDL_PAGES_LOCKED);
    assert_int_equal(r.m->phys.use_count[PTL_USE_NONPAGED_POOL], inuse0 + 5);
    for (int i = 0; i < 5; i++) {
        PFN_NUMBER pfn = MmGetMdlPfnArray(c.mdl)[i];
        assert_true(pfn >= 0x800 && pfn <= 0xFFF);
        uint8_t z[16], zero[16] = {0};
        assert_int_equal(ptl_phys_read(r.m, (uint64_t)pfn * PG, z, sizeof z), 0);
        assert_memory_equal(z, zero, sizeof z); /* zeroed */
    }
    assert_int_equal(ptl_free_system_ptes(r.m), free0); /* not mapped yet */
    run(&r, r.app, pages_map, &c, 0);
    assert_int_equal(free0 - ptl_free_system_ptes(r.m), 5);
    for (uint32_t i = 0; i < 5; i++) {
        uint32_t v = 0;
        assert_int_equal(ptl_user_read(r.app, (uint32_t)(uintptr_t)c.userva + i * PG, &v, sizeof v),
                         STATUS_SUCCESS);
        assert_int_equal(v, 0xA5A50000u + i);
    }
    run(&r, r.app, pages_unmap_free, &c, 0);
    assert_int_equal(ptl_free_system_ptes(r.m), free0);
    assert_int_equal(r.m->phys.use_count[PTL_USE_NONPAGED_POOL], inuse0);
    ptl_shutdown(r.m);
}

static void pages_free_only(void *arg)
{
    pages_ctx *c = arg;
    MmFreePagesFromMdl(c->mdl);
    IoFreeMdl(c->mdl);
}

static void test_pages_for_mdl_ex_and_limits(void **state)
{
    (void)state;
    rig r = boot_rig(PTL_WINXP);
    pages_ctx c;
    memset(&c, 0, sizeof c);
    /* more than RAM in the range: fewer bytes than asked, never NULL while some are free */
    c.low = pa(0);
    c.high = pa(0xFFFFFF); /* 16 MB, some of them boot memory */
    c.bytes = 32u << 20;
    run(&r, NULL, pages_alloc, &c, 0);
    assert_non_null(c.mdl);
    assert_true(c.mdl->ByteCount > 0 && c.mdl->ByteCount < (16u << 20));
    run(&r, NULL, pages_free_only, &c, 0);
    /* the Ex form, with MM_DONT_ZERO_ALLOCATION */
    uint32_t inuse0 = r.m->phys.in_use;
    c.ex = 1;
    c.low = pa(0);
    c.high = pa(~0ull >> 1);
    c.bytes = 2 * PG;
    c.flags = MM_DONT_ZERO_ALLOCATION;
    run(&r, NULL, pages_alloc, &c, 0);
    assert_non_null(c.mdl);
    assert_int_equal(c.mdl->ByteCount, 2 * PG);
    assert_int_equal(r.m->phys.in_use, inuse0 + 2);
    run(&r, NULL, pages_free_only, &c, 0);
    c.flags = 0x80; /* not a flag the routine takes */
    run(&r, NULL, pages_alloc, &c, 0);
    assert_null(c.mdl);
    ptl_shutdown(r.m);
}

/* ---- contiguous memory -------------------------------------------------------------------- */

typedef struct contig_ctx {
    SIZE_T bytes;
    uint64_t low, high, boundary;
    int specify;
    MEMORY_CACHING_TYPE cache;
    PVOID va;
    uint64_t phys[8];
} contig_ctx;

static void contig_alloc(void *arg)
{
    contig_ctx *c = arg;
    c->va = c->specify ? MmAllocateContiguousMemorySpecifyCache(c->bytes, pa(c->low), pa(c->high),
                                                                pa(c->boundary), c->cache)
                       : MmAllocateContiguousMemory(c->bytes, pa(c->high));
    if (!c->va)
        return;
    for (uint32_t i = 0; i < (c->bytes + PG - 1) / PG && i < 8; i++)
        c->phys[i] = (uint64_t)MmGetPhysicalAddress((PUCHAR)c->va + i * PG).QuadPart;
    RtlFillMemory(c->va, c->bytes, 0x5A);
}

static void contig_free(void *arg)
{
    contig_ctx *c = arg;
    MmFreeContiguousMemory(c->va);
}

static void test_contiguous_memory(void **state)
{
    (void)state;
    rig r = boot_rig(PTL_NT4_SP4); /* MmAllocateContiguousMemory dates from NT 3.x */
    uint32_t free0 = ptl_free_system_ptes(r.m), inuse0 = r.m->phys.in_use;
    contig_ctx c;
    memset(&c, 0, sizeof c);
    /* break the free frames up first, so the run must be found */
    pages_ctx p;
    memset(&p, 0, sizeof p);
    run(&r, NULL, pages_alloc, &p, 0); /* NT 4.0: MmAllocatePagesForMdl does not exist */
    assert_null(p.mdl);
    assert_true(event_mentions(r.m, "misuse",
                               "MmAllocatePagesForMdl does not exist on Windows "
                               "NT 4.0 SP4"));
    c.bytes = 6 * PG;
    c.high = 0xFFFFFF;
    run(&r, NULL, contig_alloc, &c, 0);
    assert_non_null(c.va);
    assert_int_equal(free0 - ptl_free_system_ptes(r.m), 6);
    assert_int_equal(r.m->phys.in_use, inuse0 + 6);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(c.phys[i], c.phys[0] + (uint64_t)i * PG);
        assert_true(c.phys[i] + PG - 1 <= 0xFFFFFF);
        uint8_t b;
        assert_int_equal(ptl_phys_read(r.m, c.phys[i] + 77, &b, 1), 0);
        assert_int_equal(b, 0x5A);
    }
    assert_int_equal(c.phys[0] & PTL_PAGE_MASK, 0);
    /* freeing inside the allocation: a misuse, nothing freed */
    contig_ctx inner = c;
    inner.va = (PUCHAR)c.va + PG;
    run(&r, NULL, contig_free, &inner, 0);
    assert_true(event_mentions(r.m, "misuse", "not an address MmAllocateContiguousMemory"));
    assert_int_equal(free0 - ptl_free_system_ptes(r.m), 6);
    run(&r, NULL, contig_free, &c, 0);
    assert_int_equal(ptl_free_system_ptes(r.m), free0);
    assert_int_equal(r.m->phys.in_use, inuse0);
    /* the SpecifyCache form does not exist on NT 4.0 */
    c.specify = 1;
    c.high = ~0ull >> 1;
    run(&r, NULL, contig_alloc, &c, 0);
    assert_null(c.va);
    assert_true(event_mentions(r.m, "misuse", "MmAllocateContiguousMemorySpecifyCache does not"));
    /* nothing below the first page frame ever fits */
    c.specify = 0;
    c.high = 0xFFF;
    c.bytes = 2 * PG;
    run(&r, NULL, contig_alloc, &c, 0);
    assert_null(c.va);
    ptl_shutdown(r.m);
}

static void test_contiguous_specify_cache(void **state)
{
    (void)state;
    rig r = boot_rig(PTL_WIN2000);
    uint32_t free0 = ptl_free_system_ptes(r.m);
    contig_ctx c;
    memset(&c, 0, sizeof c);
    c.specify = 1;
    c.bytes = 3 * PG;
    c.low = 0x1000000; /* 16 MB */
    c.high = 0x1FFFFFF;
    c.boundary = 0x10000; /* 64 KB */
    c.cache = MmNonCached;
    run(&r, NULL, contig_alloc, &c, 0);
    assert_non_null(c.va);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(c.phys[i], c.phys[0] + (uint64_t)i * PG);
        assert_true(c.phys[i] >= 0x1000000 && c.phys[i] <= 0x1FFFFFF);
    }
    assert_int_equal(c.phys[0] >> 16, (c.phys[2] + PG - 1) >> 16); /* no 64 KB crossing */
    uint32_t pte = sys_pte(r.m, (uint32_t)(uintptr_t)c.va);
    assert_true(pte & PTL_PTE_CACHEDISABLE);
    assert_int_equal(free0 - ptl_free_system_ptes(r.m), 3);
    run(&r, NULL, contig_free, &c, 0);
    assert_int_equal(ptl_free_system_ptes(r.m), free0);
    /* a boundary smaller than the request cannot be met */
    c.boundary = 0x2000;
    run(&r, NULL, contig_alloc, &c, 0);
    assert_null(c.va);
    ptl_shutdown(r.m);
}

/* ---- reserved mappings -------------------------------------------------------------------- */

typedef struct res_ctx {
    SIZE_T bytes;
    ULONG tag, tag_free, tag_map, tag_unmap;
    PVOID range;
    PMDL mdl, mdl2;
    uint32_t mdl_pages, mdl2_pages;
    uint32_t offset; /* added to the mapping address */
    PVOID mapped;
    int step;
} res_ctx;

static PMDL mdl_pages(uint32_t n)
{
    return MmAllocatePagesForMdl(pa(0), pa(~0ull >> 1), pa(0), (SIZE_T)n * PG);
}

static void res_alloc(void *arg)
{
    res_ctx *c = arg;
    c->range = MmAllocateMappingAddress(c->bytes, c->tag);
    if (c->mdl_pages)
        c->mdl = mdl_pages(c->mdl_pages);
    if (c->mdl2_pages)
        c->mdl2 = mdl_pages(c->mdl2_pages);
}

static void res_map(void *arg)
{
    res_ctx *c = arg;
    c->mapped = MmMapLockedPagesWithReservedMapping((PUCHAR)c->range + c->offset, c->tag_map,
                                                    c->mdl, MmCached);
    if (c->mapped)
        for (uint32_t i = 0; i < c->mdl->ByteCount / PG; i++)
            RtlFillMemory((PUCHAR)c->range + i * PG, 16, 0x30 + (int)i);
}

static void res_unmap(void *arg)
{
    res_ctx *c = arg;
    MmUnmapReservedMapping(c->mapped ? c->mapped : c->range, c->tag_unmap,
                           c->mdl2 ? c->mdl2 : c->mdl);
}

static void res_free(void *arg)
{
    res_ctx *c = arg;
    MmFreeMappingAddress(c->range, c->tag_free);
}

static void res_release_mdls(void *arg)
{
    res_ctx *c = arg;
    if (c->mdl) {
        MmFreePagesFromMdl(c->mdl);
        IoFreeMdl(c->mdl);
    }
    if (c->mdl2) {
        MmFreePagesFromMdl(c->mdl2);
        IoFreeMdl(c->mdl2);
    }
}

static void res_alloc_mdl_only(void *arg)
{
    res_ctx *c = arg;
    c->mdl = mdl_pages(c->mdl_pages);
}

static res_ctx res_init(SIZE_T bytes, uint32_t mdl_pages)
{
    res_ctx c;
    memset(&c, 0, sizeof c);
    c.bytes = bytes;
    c.tag = c.tag_free = c.tag_map = c.tag_unmap = TAG;
    c.mdl_pages = mdl_pages;
    return c;
}

static void test_reserved_lifecycle(void **state)
{
    (void)state;
    rig r = boot_rig(PTL_WINXP);
    uint32_t free0 = ptl_free_system_ptes(r.m);
    res_ctx c = res_init(PAGES * PG, 3);
    run(&r, NULL, res_alloc, &c, 0);
    assert_non_null(c.range);
    uint32_t base = (uint32_t)(uintptr_t)c.range;
    assert_int_equal(base & PTL_PAGE_MASK, 0);
    assert_int_equal(free0 - ptl_free_system_ptes(r.m), PAGES + 2);
    /* what Windows Server 2003 x86 keeps before the range */
    assert_int_equal(sys_pte(r.m, base - 2 * PG), (PAGES + 2) * 2);
    assert_int_equal(sys_pte(r.m, base - PG), TAG & ~1u);
    for (uint32_t i = 0; i < PAGES; i++)
        assert_int_equal(sys_pte(r.m, base + i * PG), 0);
    /* map, use, unmap */
    run(&r, NULL, res_map, &c, 0);
    assert_ptr_equal(c.mapped, c.range);
    assert_int_equal(c.mdl->MdlFlags & MDL_MAPPED_TO_SYSTEM_VA, MDL_MAPPED_TO_SYSTEM_VA);
    assert_int_equal(free0 - ptl_free_system_ptes(r.m), PAGES + 2); /* no new PTEs */
    for (uint32_t i = 0; i < 3; i++) {
        uint32_t pte = sys_pte(r.m, base + i * PG);
        assert_true(pte & PTL_PTE_VALID);
        assert_int_equal(pte >> 12, MmGetMdlPfnArray(c.mdl)[i]);
        uint8_t b;
        assert_int_equal(ptl_phys_read(r.m, (uint64_t)MmGetMdlPfnArray(c.mdl)[i] * PG + 15, &b, 1),
                         0);
        assert_int_equal(b, 0x30 + i);
    }
    assert_int_equal(sys_pte(r.m, base + 3 * PG), 0);
    run(&r, NULL, res_unmap, &c, 0);
    assert_int_equal(c.mdl->MdlFlags & MDL_MAPPED_TO_SYSTEM_VA, 0);
    for (uint32_t i = 0; i < PAGES; i++)
        assert_int_equal(sys_pte(r.m, base + i * PG), 0);
    assert_int_equal(sys_pte(r.m, base - PG), TAG & ~1u);
    /* an unaligned mapping address keeps its offset (Windows before 8) */
    c.offset = 4;
    run(&r, NULL, res_map, &c, 0);
    assert_ptr_equal(c.mapped, (PUCHAR)c.range + 4);
    run(&r, NULL, res_unmap, &c, 0);
    c.offset = 0;
    /* an MDL larger than the range: NULL, nothing mapped */
    res_ctx big = c;
    big.mdl = NULL;
    big.mdl_pages = PAGES + 1;
    run(&r, NULL, res_alloc_mdl_only, &big, 0);
    assert_non_null(big.mdl);
    run(&r, NULL, res_map, &big, 0);
    assert_null(big.mapped);
    for (uint32_t i = 0; i < PAGES; i++)
        assert_int_equal(sys_pte(r.m, base + i * PG), 0);
    /* free the range: every PTE back, the header PTEs with them */
    run(&r, NULL, res_free, &c, 0);
    assert_int_equal(ptl_free_system_ptes(r.m), free0);
    run(&r, NULL, res_release_mdls, &c, 0);
    big.mdl2 = NULL;
    run(&r, NULL, res_release_mdls, &big, 0);
    assert_int_equal(ptl_free_system_ptes(r.m), free0);
    ptl_shutdown(r.m);
}

static void test_reserved_too_small_and_tags(void **state)
{
    (void)state;
    rig r = boot_rig(PTL_WINXP);
    uint32_t free0 = ptl_free_system_ptes(r.m);
    res_ctx c = res_init(2 * PG, 3);
    run(&r, NULL, res_alloc, &c, 0);
    run(&r, NULL, res_map, &c, 0);
    assert_null(c.mapped);
    assert_true(event_mentions(r.m, "fail", "the range holds 2"));
    for (uint32_t i = 0; i < 2; i++)
        assert_int_equal(sys_pte(r.m, (uint32_t)(uintptr_t)c.range + i * PG), 0);
    run(&r, NULL, res_free, &c, 0);
    run(&r, NULL, res_release_mdls, &c, 0);
    assert_int_equal(ptl_free_system_ptes(r.m), free0);
    /* pool tag 0: NULL; tag 1 works (its PTE reads 0) */
    res_ctx z = res_init(PG, 0);
    z.tag = 0;
    run(&r, NULL, res_alloc, &z, 0);
    assert_null(z.range);
    z.tag = z.tag_map = z.tag_unmap = z.tag_free = 1;
    z.mdl_pages = 1;
    run(&r, NULL, res_alloc, &z, 0);
    assert_non_null(z.range);
    assert_int_equal(sys_pte(r.m, (uint32_t)(uintptr_t)z.range - PG), 0);
    assert_int_equal(sys_pte(r.m, (uint32_t)(uintptr_t)z.range - 2 * PG), 3 * 2);
    run(&r, NULL, res_map, &z, 0);
    assert_non_null(z.mapped);
    run(&r, NULL, res_unmap, &z, 0);
    run(&r, NULL, res_free, &z, 0);
    run(&r, NULL, res_release_mdls, &z, 0);
    assert_int_equal(ptl_free_system_ptes(r.m), free0);
    ptl_shutdown(r.m);
}

/* ---- availability ------------------------------------------------------------------------- */

static void try_xp_only(void *arg)
{
    PVOID *out = arg;
    out[0] = MmAllocateMappingAddress(PG, TAG);
    out[1] = MmAllocatePagesForMdlEx(pa(0), pa(~0ull >> 1), pa(0), PG, MmCached, 0);
    MmFreeMappingAddress((PVOID)(uintptr_t)0xC0000000u, TAG); /* does nothing: not there */
}

static void test_profile_availability(void **state)
{
    (void)state;
    static const ptl_profile before_xp[] = {PTL_NT4_SP3, PTL_NT4_SP4, PTL_WIN2000};
    for (size_t i = 0; i < 3; i++) {
        rig r = boot_rig(before_xp[i]);
        PVOID out[2] = {(PVOID)1, (PVOID)1};
        run(&r, NULL, try_xp_only, out, 0);
        assert_null(out[0]);
        assert_null(out[1]);
        assert_true(event_mentions(r.m, "misuse", "MmAllocateMappingAddress does not exist on"));
        assert_true(event_mentions(r.m, "misuse", "MmAllocatePagesForMdlEx does not exist on"));
        assert_true(event_mentions(r.m, "misuse", "MmFreeMappingAddress does not exist on"));
        ptl_shutdown(r.m);
    }
    rig r = boot_rig(PTL_WIN2000);
    pages_ctx p;
    memset(&p, 0, sizeof p);
    p.high = pa(~0ull >> 1);
    p.bytes = PG;
    run(&r, NULL, pages_alloc, &p, 0); /* Windows 2000 has MmAllocatePagesForMdl */
    assert_non_null(p.mdl);
    run(&r, NULL, pages_free_only, &p, 0);
    ptl_shutdown(r.m);
}

/* ---- SYSTEM_PTE_MISUSE 0x100-0x10C -------------------------------------------------------- */

static void misuse_zero(void *arg)
{
    (void)arg;
    (void)MmAllocateMappingAddress(0, TAG);
}

static void test_0xda_0x100(void **state)
{
    (void)state;
    rig r = boot_rig(PTL_WINXP);
    run(&r, NULL, misuse_zero, NULL, 0xDA);
    assert_string_equal(r.stop.name, "SYSTEM_PTE_MISUSE");
    assert_int_equal(r.stop.param[0], 0x100);
    assert_int_equal(r.stop.param[1], 0);
    assert_int_equal(r.stop.param[2], TAG);
    assert_int_equal(r.stop.param[3], ptl_driver_base(r.drv) + 0x1000);
    assert_string_equal(ptl__bugcheck_param_doc(0xDA, 0x100, 2), "the caller's pool tag");
    ptl_shutdown(r.m);
}

/* Set up a range (and MDLs) on a fresh XP machine, map when asked, then run `last`. */
typedef struct case_def {
    SIZE_T range_pages;
    uint32_t mdl_pages, mdl2_pages;
    int map_first;
    void (*last)(void *);
    ULONG tag_last;
    int free_first;
} case_def;

static rig setup_case(const case_def *d, res_ctx *c)
{
    rig r = boot_rig(PTL_WINXP);
    *c = res_init(d->range_pages * PG, d->mdl_pages);
    c->mdl2_pages = d->mdl2_pages;
    run(&r, NULL, res_alloc, c, 0);
    assert_non_null(c->range);
    if (d->map_first) {
        run(&r, NULL, res_map, c, 0);
        assert_non_null(c->mapped);
    }
    if (d->free_first) {
        run(&r, NULL, res_free, c, 0);
        c->mapped = NULL;
    }
    c->tag_free = c->tag_map = c->tag_unmap = d->tag_last;
    run(&r, NULL, d->last, c, 0xDA);
    assert_int_equal(r.stop.param[0] >> 8, 1); /* a 0x1xx subtype */
    return r;
}

static void test_0xda_0x101_free_not_owner(void **state)
{
    (void)state;
    res_ctx c;
    case_def d = {4, 0, 0, 0, res_free, TAG2, 0};
    rig r = setup_case(&d, &c);
    assert_int_equal(r.stop.param[0], 0x101);
    assert_int_equal(r.stop.param[1], (uint32_t)(uintptr_t)c.range);
    assert_int_equal(r.stop.param[2], TAG2);
    assert_int_equal(r.stop.param[3], TAG & ~1u);
    ptl_shutdown(r.m);
}

static void test_0xda_0x102_free_empty(void **state)
{
    (void)state;
    res_ctx c;
    /* freed already; tag 1 reads as the zero PTE left behind, so only the size check fails */
    case_def d = {4, 0, 0, 0, res_free, 1, 1};
    rig r = setup_case(&d, &c);
    assert_int_equal(r.stop.param[0], 0x102);
    assert_int_equal(r.stop.param[1], (uint32_t)(uintptr_t)c.range);
    assert_int_equal(r.stop.param[2], 1);
    ptl_shutdown(r.m);
}

static void test_0xda_0x103_free_in_use(void **state)
{
    (void)state;
    res_ctx c;
    case_def d = {4, 2, 0, 1, res_free, TAG, 0};
    rig r = setup_case(&d, &c);
    assert_int_equal(r.stop.param[0], 0x103);
    assert_int_equal(r.stop.param[1], (uint32_t)(uintptr_t)c.range); /* first valid mapping */
    assert_int_equal(r.stop.param[2], TAG);
    assert_int_equal(r.stop.param[3], 4);
    ptl_shutdown(r.m);
}

static void test_0xda_0x104_map_not_owner(void **state)
{
    (void)state;
    res_ctx c;
    case_def d = {4, 1, 0, 0, res_map, TAG2, 0};
    rig r = setup_case(&d, &c);
    assert_int_equal(r.stop.param[0], 0x104);
    assert_int_equal(r.stop.param[1], (uint32_t)(uintptr_t)c.range);
    assert_int_equal(r.stop.param[2], TAG2);
    assert_int_equal(r.stop.param[3], TAG & ~1u);
    ptl_shutdown(r.m);
}

static void test_0xda_0x105_map_invalid(void **state)
{
    (void)state;
    res_ctx c;
    case_def d = {4, 1, 0, 0, res_map, 1, 1};
    rig r = setup_case(&d, &c);
    assert_int_equal(r.stop.param[0], 0x105);
    assert_int_equal(r.stop.param[1], (uint32_t)(uintptr_t)c.range);
    assert_int_equal(r.stop.param[2], 1);
    ptl_shutdown(r.m);
}

static void test_0xda_0x107_map_twice(void **state)
{
    (void)state;
    res_ctx c;
    case_def d = {4, 1, 0, 1, res_map, TAG, 0};
    rig r = setup_case(&d, &c);
    uint32_t base = (uint32_t)(uintptr_t)c.range;
    assert_int_equal(r.stop.param[0], 0x107);
    assert_int_equal(r.stop.param[1], base);
    assert_int_equal(r.stop.param[2], base); /* page 0 is still mapped */
    assert_int_equal(r.stop.param[3], base + 3 * PG);
    ptl_shutdown(r.m);
}

static void test_0xda_0x108_unmap_not_owner(void **state)
{
    (void)state;
    res_ctx c;
    case_def d = {4, 1, 0, 1, res_unmap, TAG2, 0};
    rig r = setup_case(&d, &c);
    assert_int_equal(r.stop.param[0], 0x108);
    assert_int_equal(r.stop.param[1], (uint32_t)(uintptr_t)c.range);
    assert_int_equal(r.stop.param[2], TAG2);
    assert_int_equal(r.stop.param[3], TAG & ~1u);
    ptl_shutdown(r.m);
}

static void test_0xda_0x109_unmap_empty(void **state)
{
    (void)state;
    res_ctx c;
    case_def d = {4, 1, 0, 0, res_unmap, 1, 1};
    rig r = setup_case(&d, &c);
    assert_int_equal(r.stop.param[0], 0x109);
    assert_int_equal(r.stop.param[1], (uint32_t)(uintptr_t)c.range);
    assert_int_equal(r.stop.param[2], 1);
    ptl_shutdown(r.m);
}

static void test_0xda_0x10a_unmap_too_many(void **state)
{
    (void)state;
    res_ctx c;
    case_def d = {2, 1, 3, 1, res_unmap, TAG, 0};
    rig r = setup_case(&d, &c);
    assert_int_equal(r.stop.param[0], 0x10A);
    assert_int_equal(r.stop.param[1], (uint32_t)(uintptr_t)c.range);
    assert_int_equal(r.stop.param[2], 2);
    assert_int_equal(r.stop.param[3], 3);
    ptl_shutdown(r.m);
}

static void test_0xda_0x10b_unmap_part_not_mapped(void **state)
{
    (void)state;
    res_ctx c;
    case_def d = {3, 1, 2, 1, res_unmap, TAG, 0};
    rig r = setup_case(&d, &c);
    assert_int_equal(r.stop.param[0], 0x10B);
    assert_int_equal(r.stop.param[1], (uint32_t)(uintptr_t)c.range);
    assert_int_equal(r.stop.param[2], TAG);
    assert_int_equal(r.stop.param[3], 2);
    ptl_shutdown(r.m);
}

static void test_0xda_0x10c_unmap_not_whole(void **state)
{
    (void)state;
    res_ctx c;
    case_def d = {3, 2, 1, 1, res_unmap, TAG, 0};
    rig r = setup_case(&d, &c);
    assert_int_equal(r.stop.param[0], 0x10C);
    assert_int_equal(r.stop.param[1], (uint32_t)(uintptr_t)c.range);
    assert_int_equal(r.stop.param[2], TAG);
    assert_int_equal(r.stop.param[3], 1);
    ptl_shutdown(r.m);
}

/* ---- one MDL mapped into two processes --------------------------------------------------
 * NT lets a driver map one locked MDL into several processes' user space: each mapping is
 * a VAD of the process that was current, and MmUnmapLockedPages in that process removes
 * that one. Everything torn down leaves no cache attribute behind (on XP a leaked one
 * would refuse the next cached view of the page). */
typedef struct two_case {
    PMDL mdl;
    PVOID io;
    NTSTATUS view;
} two_case;

static two_case two;

static void two_setup(void *arg)
{
    (void)arg;
    PHYSICAL_ADDRESS pa;
    pa.QuadPart = 0xE0000000ll;
    two.io = MmMapIoSpace(pa, PAGE_SIZE, MmNonCached);
    two.mdl = IoAllocateMdl(two.io, PAGE_SIZE, FALSE, FALSE, NULL);
    MmBuildMdlForNonPagedPool(two.mdl);
    WRITE_REGISTER_ULONG((volatile ULONG *)two.io, 0x600DF00Du);
}

static void two_map(void *arg)
{
    *(PVOID *)arg = MmMapLockedPagesSpecifyCache(two.mdl, UserMode, MmNonCached, NULL, FALSE,
                                                 NormalPagePriority);
}

static void two_unmap(void *arg)
{
    MmUnmapLockedPages(*(PVOID *)arg, two.mdl);
}

static void two_teardown(void *arg)
{
    (void)arg;
    IoFreeMdl(two.mdl);
    MmUnmapIoSpace(two.io, PAGE_SIZE);
}

static void two_view(void *arg)
{
    (void)arg;
    PVOID base = NULL;
    SIZE_T size = PAGE_SIZE;
    two.view = ptltest_map_physical(0xE0000000ull, &size, PAGE_READWRITE, &base);
    if (two.view == 0)
        ZwUnmapViewOfSection(NtCurrentProcess(), base);
}

static void test_mdl_mapped_into_two_processes(void **state)
{
    (void)state;
    ptl_config cfg;
    ptl_config_init(&cfg);
    cfg.profile = PTL_WINXP;
    ptl_machine *m = ptl_boot(&cfg);
    assert_non_null(m);
    assert_int_equal(ptl_adapter_add(m, PCIBus, 0, 0xE0000000ull, 1u << 20), 0);
    ptl_process *a = ptl_process_create(m, "a.exe"), *b = ptl_process_create(m, "b.exe");
    assert_true(a && b);
    ptl_stop stop;
    PVOID ua = NULL, ub = NULL;
    assert_int_equal(ptl_call(m, NULL, NULL, two_setup, NULL, &stop), 0);
    assert_int_equal(ptl_call(m, a, NULL, two_map, &ua, &stop), 0);
    assert_int_equal(ptl_call(m, b, NULL, two_map, &ub, &stop), 0);
    assert_true(ua && ub);
    ULONG x = 0;
    assert_int_equal(ptl_user_read(a, (uint32_t)(uintptr_t)ua, &x, 4), 0);
    assert_int_equal(x, 0x600DF00Du);
    assert_int_equal(ptl_call(m, a, NULL, two_unmap, &ua, &stop), 0); /* A's, not B's */
    assert_int_equal(ptl_user_read(a, (uint32_t)(uintptr_t)ua, &x, 4), (NTSTATUS)0xC0000005);
    x = 0;
    assert_int_equal(ptl_user_read(b, (uint32_t)(uintptr_t)ub, &x, 4), 0);
    assert_int_equal(x, 0x600DF00Du);
    assert_int_equal(ptl_check(m), 0);
    assert_int_equal(ptl_call(m, b, NULL, two_unmap, &ub, &stop), 0);
    assert_int_equal(ptl_user_read(b, (uint32_t)(uintptr_t)ub, &x, 4), (NTSTATUS)0xC0000005);
    assert_int_equal(ptl_process_exit(a, &stop), 0);
    assert_int_equal(ptl_process_exit(b, &stop), 0);
    assert_int_equal(ptl_call(m, NULL, NULL, two_teardown, NULL, &stop), 0);
    assert_int_equal(ptl_call(m, NULL, NULL, two_view, NULL, &stop), 0);
    assert_int_equal(two.view, 0); /* no cached/noncached conflict is left */
    assert_int_equal(ptl_check(m), 0);
    ptl_shutdown(m);
}

/* ---- an MDL changed between lock and unlock ----------------------------------------------
 * A driver that grows ByteCount, or rewrites the PFN array, after MmProbeAndLockPages must
 * not make ptelab read past the array or trip over an unlocked frame: the unlock covers
 * what was locked, and a misuse event says what changed. */
typedef struct tamper_case {
    PVOID buf;
    PMDL mdl;
    int how;
} tamper_case;

static void tamper(void *arg)
{
    tamper_case *c = arg;
    c->buf = ExAllocatePoolWithTag(NonPagedPool, 2 * PAGE_SIZE, 'pmaT');
    c->mdl = IoAllocateMdl(c->buf, 2 * PAGE_SIZE, FALSE, FALSE, NULL);
    MmProbeAndLockPages(c->mdl, KernelMode, IoReadAccess);
    if (c->how == 0)
        c->mdl->ByteCount = 64 * PAGE_SIZE; /* past the two PFNs the MDL holds */
    else
        MmGetMdlPfnArray(c->mdl)[0] = 0x10; /* a frame it never locked */
    MmUnlockPages(c->mdl);
    c->mdl->ByteCount = 2 * PAGE_SIZE;
    IoFreeMdl(c->mdl);
    ExFreePool(c->buf);
}

static void test_mdl_changed_after_lock(void **state)
{
    (void)state;
    for (int how = 0; how < 2; how++) {
        ptl_config cfg;
        ptl_config_init(&cfg);
        ptl_machine *m = ptl_boot(&cfg);
        assert_non_null(m);
        tamper_case c = {.how = how};
        ptl_stop stop;
        assert_int_equal(ptl_call(m, NULL, NULL, tamper, &c, &stop), 0);
        assert_true(event_mentions(m, "misuse", how == 0 ? "now spans" : "is not locked"));
        assert_int_equal(ptl_check(m), 0);
        ptl_shutdown(m);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_partial_mdl),
        cmocka_unit_test(test_pages_for_mdl_user_mapping),
        cmocka_unit_test(test_pages_for_mdl_ex_and_limits),
        cmocka_unit_test(test_contiguous_memory),
        cmocka_unit_test(test_contiguous_specify_cache),
        cmocka_unit_test(test_reserved_lifecycle),
        cmocka_unit_test(test_reserved_too_small_and_tags),
        cmocka_unit_test(test_profile_availability),
        cmocka_unit_test(test_0xda_0x100),
        cmocka_unit_test(test_0xda_0x101_free_not_owner),
        cmocka_unit_test(test_0xda_0x102_free_empty),
        cmocka_unit_test(test_0xda_0x103_free_in_use),
        cmocka_unit_test(test_0xda_0x104_map_not_owner),
        cmocka_unit_test(test_0xda_0x105_map_invalid),
        cmocka_unit_test(test_0xda_0x107_map_twice),
        cmocka_unit_test(test_0xda_0x108_unmap_not_owner),
        cmocka_unit_test(test_0xda_0x109_unmap_empty),
        cmocka_unit_test(test_0xda_0x10a_unmap_too_many),
        cmocka_unit_test(test_0xda_0x10b_unmap_part_not_mapped),
        cmocka_unit_test(test_0xda_0x10c_unmap_not_whole),
        cmocka_unit_test(test_mdl_mapped_into_two_processes),
        cmocka_unit_test(test_mdl_changed_after_lock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
