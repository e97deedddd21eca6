/* pool.c - the executive pools: ExAllocatePool(WithTag), ExFreePool(WithTag).
 *
 * Models the pools as a driver sees them on x86 NT (Windows Internals, "System memory
 * pools"; learn.microsoft.com "ExAllocatePoolWithTag", "POOL_TYPE"):
 *   - nonpaged pool: first the initial nonpaged pool the layout placed after the PFN
 *     database (mapped and resident from boot), then expansion: whole pages taken from
 *     the nonpaged-pool-expansion PTEs (the second system PTE pool, P1 = 1 of STOP 0x3F)
 *     with frames allocated on demand;
 *   - paged pool: the layout's paged pool region, committed a page at a time as blocks
 *     land on it and released when a page empties. ptelab keeps paged pool resident
 *     (docs/fidelity.md);
 *   - blocks are multiples of 32 bytes (POOL_BLOCK_SHIFT 5 on x86) with an 8-byte
 *     POOL_HEADER in front holding the size, the type and the tag, as kd's !pool reads it;
 *     CacheAligned types return 32-byte aligned blocks; a block that fits one page with
 *     its header stays inside one page, and a larger request gets whole pages, page
 *     aligned, with no header (ExAllocatePoolWithTag's remarks: a request of PAGE_SIZE or
 *     more is page aligned, a smaller one does not cross a page);
 *   - NonPagedPoolMustSucceed comes from a small must-succeed reserve (4 pages, NT 4.0's
 *     default size); when it cannot be satisfied the machine stops with
 *     MUST_SUCCEED_POOL_EMPTY (0x41: P1 the size, P2 nonpaged pages in use, P3 requests
 *     larger than a page, P4 available pages; learn.microsoft.com "Bug Check 0x41");
 *   - freeing what was never allocated, or freeing twice, is BAD_POOL_CALLER (0xC2: P1 7
 *     for a block already freed, 0x42 for an address no pool ever handed out);
 *   - pool tags are counted per tag for kd's !poolused; the Pool Paged Bytes and Pool
 *     Nonpaged Bytes counters come from here.
 *
 * The block allocator is spool (first fit by address) over 32-byte units of each region:
 * the same engine as the system PTE pool, so its invariants are checked the same way.
 *
 * Invariants (ptl__pools_check): every live block has a record; units reserved equal the
 * records' units; every page with a live block is backed by a valid PTE.
 */
#include "internal.h"

#include <ptelab/wdm.h>
#include <string.h>

#define UNIT               32u
#define HEADER             8u
#define OBJECTS_BYTES      0x10000u /* the first 64 KB of initial nonpaged pool: kernel objects */
#define MUST_SUCCEED_PAGES 4u
#define TAG_NONE           0x656E6F4Eu /* 'None', ExAllocatePool's tag */

enum { REGION_NP = 0, REGION_PAGED = 1, REGION_MUST = 2, REGIONS = 3 };

static int map_page(ptl_machine *m, uint32_t va, uint32_t use)
{
    if (ptl__pte_ensure_table(m, 0, va) != 0)
        return -1;
    uint32_t pfn = ptl__phys_alloc(&m->phys, (ptl__frame_use)use, 0);
    if (pfn == UINT32_MAX)
        return -1;
    ptl__pte_write(m, 0, va, ptl__pte_make(pfn, 1, 0, 1));
    return 0;
}

static void unmap_page(ptl_machine *m, uint32_t va)
{
    uint32_t pte;
    if (ptl__pte_read(m, 0, va, &pte) != 0 || !(pte & PTL_PTE_VALID))
        return;
    ptl__pte_write(m, 0, va, 0);
    ptl__phys_release(&m->phys, pte >> PTL_PAGE_SHIFT);
}

int ptl__pools_init(ptl_machine *m)
{
    ptl__pools *pl = &m->pools;
    memset(pl, 0, sizeof *pl);
    const ptl__layout *l = &m->layout;
    /* initial nonpaged pool: resident from boot; its frames were set aside at boot. Its
     * page tables come first, so that the frames come off the high-water mark one after
     * another and one run of PTEs maps them all (page by page where they do not). */
    uint32_t pages = l->inp_bytes / PTL_PAGE_SIZE;
    for (uint32_t va = l->inp_va; va - l->inp_va < l->inp_bytes; va = (va | 0x3FFFFFu) + 1)
        if (ptl__pte_ensure_table(m, 0, va) != 0)
            return ptl__fail("no RAM for the initial nonpaged pool's page tables");
    uint32_t *pfns = ptl__xcalloc(pages ? pages : 1, sizeof *pfns);
    int contiguous = 1;
    for (uint32_t i = 0; i < pages; i++) {
        if ((pfns[i] = ptl__phys_alloc(&m->phys, PTL_USE_NONPAGED_POOL, 0)) == UINT32_MAX) {
            free(pfns);
            return ptl__fail("no RAM for the initial nonpaged pool");
        }
        contiguous &= pfns[i] == pfns[0] + i;
    }
    if (pages && contiguous)
        ptl__pte_write_run(m, 0, l->inp_va, pages, ptl__pte_make(pfns[0], 1, 0, 1), PTL_PAGE_SIZE);
    for (uint32_t i = 0; i < pages && !contiguous; i++)
        ptl__pte_write(m, 0, l->inp_va + i * PTL_PAGE_SIZE, ptl__pte_make(pfns[i], 1, 0, 1));
    free(pfns);
    uint32_t must = MUST_SUCCEED_PAGES * PTL_PAGE_SIZE;
    if (l->inp_bytes < OBJECTS_BYTES + must + 4 * PTL_PAGE_SIZE)
        return ptl__fail("the initial nonpaged pool is too small for ptelab's kernel objects");
    pl->base[REGION_NP] = l->inp_va + OBJECTS_BYTES;
    pl->bytes[REGION_NP] = l->inp_bytes - OBJECTS_BYTES - must;
    pl->base[REGION_MUST] = l->inp_va + l->inp_bytes - must;
    pl->bytes[REGION_MUST] = must;
    pl->base[REGION_PAGED] = l->paged_va;
    pl->bytes[REGION_PAGED] = l->paged_end - l->paged_va;
    for (int r = 0; r < REGIONS; r++) {
        pl->units[r] = ptl__spool_create(PTL_SPOOL_REF, pl->bytes[r] / UNIT, 0);
        pl->page_use[r] = ptl__xcalloc(pl->bytes[r] / PTL_PAGE_SIZE + 1, sizeof(uint32_t));
    }
    return 0;
}

void ptl__pools_free(ptl_machine *m)
{
    ptl__pools *pl = &m->pools;
    for (int r = 0; r < REGIONS; r++) {
        ptl__spool_destroy(pl->units[r]);
        free(pl->page_use[r]);
    }
    /* records are small structs owned by the map */
    for (size_t i = 0; i < pl->blocks.cap; i++)
        if (pl->blocks.keys[i] && pl->blocks.keys[i] != (const void *)1)
            free(pl->blocks.vals[i]);
    ptl__ptrmap_free(&pl->blocks);
    ptl__ptrmap_free(&pl->freed);
    free(pl->tags);
    memset(pl, 0, sizeof *pl);
}

static ptl__pooltag *tag_entry(ptl__pools *pl, uint32_t tag)
{
    for (uint32_t i = 0; i < pl->ntags; i++)
        if (pl->tags[i].tag == tag)
            return &pl->tags[i];
    pl->tags = ptl__xrealloc(pl->tags, (pl->ntags + 1) * sizeof *pl->tags);
    memset(&pl->tags[pl->ntags], 0, sizeof pl->tags[0]);
    pl->tags[pl->ntags].tag = tag;
    return &pl->tags[pl->ntags++];
}

#define PAGE_UNITS (PTL_PAGE_SIZE / UNIT)

/* Reserve `units` where the pool's placement rules allow (ExAllocatePoolWithTag's
 * remarks): a block of a page or more starts on a page; a smaller one stays inside one
 * page. The first fit is taken when it already obeys; otherwise a run long enough to hold
 * an obeying position is taken and what lies around that position is given back. Returns
 * the unit index, or -1. */
static int64_t place_units(ptl__spool *sp, uint32_t units)
{
    int64_t at = ptl__spool_alloc(sp, units);
    if (at < 0)
        return -1;
    uint64_t first = (uint64_t)at, end = first + units;
    int big = units >= PAGE_UNITS;
    int ok = big ? first % PAGE_UNITS == 0 : first / PAGE_UNITS == (end - 1) / PAGE_UNITS;
    if (ok)
        return at;
    ptl__spool_free(sp, (uint32_t)at, units);
    /* big: any run of units + PAGE_UNITS - 1 holds a page-aligned start; small: any run of
     * 2 * units - 1 holds a start whose block does not cross a page */
    uint32_t span = big ? units + PAGE_UNITS - 1 : 2 * units - 1;
    at = ptl__spool_alloc(sp, span);
    if (at < 0)
        return -1;
    uint64_t s = (uint64_t)at, aligned = (s + PAGE_UNITS - 1) / PAGE_UNITS * PAGE_UNITS;
    uint64_t pos = big || s / PAGE_UNITS != (s + units - 1) / PAGE_UNITS ? aligned : s;
    if (pos > s)
        ptl__spool_free(sp, (uint32_t)s, (uint32_t)(pos - s));
    if (s + span > pos + units)
        ptl__spool_free(sp, (uint32_t)(pos + units), (uint32_t)(s + span - pos - units));
    return (int64_t)pos;
}

/* Reserve `units` in region r and commit the pages they touch. Returns the block VA or 0. */
static uint32_t region_alloc(ptl_machine *m, int r, uint32_t units)
{
    ptl__pools *pl = &m->pools;
    int64_t at = place_units(pl->units[r], units);
    if (at < 0)
        return 0;
    uint32_t va = pl->base[r] + (uint32_t)at * UNIT;
    uint32_t first = (va - pl->base[r]) / PTL_PAGE_SIZE;
    uint32_t last = (va + units * UNIT - 1 - pl->base[r]) / PTL_PAGE_SIZE;
    for (uint32_t pg = first; pg <= last; pg++) {
        if (pl->page_use[r][pg]++ == 0 && r == REGION_PAGED &&
            map_page(m, pl->base[r] + pg * PTL_PAGE_SIZE, PTL_USE_NONPAGED_POOL) != 0) {
            /* no RAM: undo what this allocation did */
            for (uint32_t k = first; k <= pg; k++)
                if (--pl->page_use[r][k] == 0)
                    unmap_page(m, pl->base[r] + k * PTL_PAGE_SIZE);
            ptl__spool_free(pl->units[r], (uint32_t)at, units);
            return 0;
        }
    }
    return va;
}

static void region_free(ptl_machine *m, int r, uint32_t va, uint32_t units)
{
    ptl__pools *pl = &m->pools;
    uint32_t first = (va - pl->base[r]) / PTL_PAGE_SIZE;
    uint32_t last = (va + units * UNIT - 1 - pl->base[r]) / PTL_PAGE_SIZE;
    for (uint32_t pg = first; pg <= last; pg++)
        if (--pl->page_use[r][pg] == 0 && r == REGION_PAGED)
            unmap_page(m, pl->base[r] + pg * PTL_PAGE_SIZE);
    ptl__spool_free(pl->units[r], (va - pl->base[r]) / UNIT, units);
}

/* Nonpaged pool expansion: whole pages from the expansion PTEs. */
static uint32_t expansion_alloc(ptl_machine *m, uint32_t pages)
{
    uint32_t va = ptl__syspte_reserve(m, PTL_NONPAGED_POOL_EXPANSION, pages, PTL_KIND_POOL,
                                      m->kernel.current_driver);
    if (!va)
        return 0;
    for (uint32_t i = 0; i < pages; i++) {
        uint32_t pfn = ptl__phys_alloc(&m->phys, PTL_USE_NONPAGED_POOL, 0);
        if (pfn == UINT32_MAX) {
            for (uint32_t k = 0; k < i; k++)
                unmap_page(m, va + k * PTL_PAGE_SIZE);
            ptl__syspte_release(m, PTL_NONPAGED_POOL_EXPANSION, va, pages);
            return 0;
        }
        ptl__pte_write(m, 0, va + i * PTL_PAGE_SIZE, ptl__pte_make(pfn, 1, 0, 1));
    }
    return va;
}

static void write_header(ptl_machine *m, uint32_t block, uint32_t units, int type, uint32_t tag)
{
    /* x86 POOL_HEADER: PreviousSize:9 PoolIndex:7 | BlockSize:9 PoolType:7 | PoolTag */
    uint16_t w0 = 0, w1 = (uint16_t)((units & 0x1FF) | ((uint32_t)(type + 1) << 9));
    uint8_t h[HEADER];
    memcpy(h, &w0, 2);
    memcpy(h + 2, &w1, 2);
    memcpy(h + 4, &tag, 4);
    PTL_ASSERT(ptl__mmu_copy(m, block, h, HEADER, 1, 0, 0) == PTL_FAULT_NONE);
}

static PVOID pool_alloc(ptl_machine *m, POOL_TYPE type, SIZE_T bytes, uint32_t tag)
{
    ptl__pools *pl = &m->pools;
    int base_type = (int)type & 7;
    if (base_type == DontUseThisType || base_type >= MaxPoolType || (int)type < 0 ||
        (int)type > 7) {
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "ExAllocatePool: pool type %d is not one ptelab "
                        "models",
                        (int)type);
        return NULL;
    }
    int paged = base_type == PagedPool || base_type == PagedPoolCacheAligned;
    int must = base_type == NonPagedPoolMustSucceed || base_type == NonPagedPoolCacheAlignedMustS;
    int aligned = base_type >= NonPagedPoolCacheAligned;
    if (m->cfg.verifier) {
        if (bytes == 0)
            ptl__bugcheck_why(m, 0xC4, 0x00, (uint32_t)m->kernel.irql, (uint32_t)type, 0,
                              "a pool allocation of zero bytes");
        if (paged && m->kernel.irql > APC_LEVEL)
            ptl__bugcheck_why(m, 0xC4, 0x01, (uint32_t)m->kernel.irql, (uint32_t)type,
                              (uint32_t)bytes, "paged pool at IRQL %d", m->kernel.irql);
        if (!paged && m->kernel.irql > DISPATCH_LEVEL)
            ptl__bugcheck_why(m, 0xC4, 0x02, (uint32_t)m->kernel.irql, (uint32_t)type,
                              (uint32_t)bytes, "nonpaged pool at IRQL %d", m->kernel.irql);
    }
    if (bytes > 0x7FFFFFFFu) {
        if (must)
            goto must_fail;
        return NULL;
    }
    uint32_t want = (uint32_t)bytes ? (uint32_t)bytes : 1;
    /* the data starts after the header; a request of a page or more gets whole pages,
     * page aligned, with no header (NT keeps those in its big-page table) */
    uint32_t lead = aligned ? UNIT : HEADER;
    int big = lead + want > PTL_PAGE_SIZE; /* does not fit one page with its header */
    if (big)
        lead = 0;
    uint32_t units =
        big ? (want + PTL_PAGE_MASK) / PTL_PAGE_SIZE * PAGE_UNITS : (lead + want + UNIT - 1) / UNIT;
    if (want >= PTL_PAGE_SIZE)
        pl->big_requests++;
    int injected = !must && ptl__verifier_inject(m, PTL_FAULT_POOL, "pool");
    uint32_t block = 0, pages = 0;
    int region = must ? REGION_MUST : paged ? REGION_PAGED : REGION_NP;
    if (!injected) {
        block = region_alloc(m, region, units);
        if (!block && region == REGION_NP) { /* expansion: whole pages */
            pages = (lead + want + PTL_PAGE_MASK) / PTL_PAGE_SIZE;
            block = expansion_alloc(m, pages);
            region = block ? -1 : region;
        }
    }
    if (!block) {
        if (must)
            goto must_fail;
        pl->failed++;
        ptl__perf_event(m, PTL_EV_FAIL, "ExAllocatePoolWithTag(%s, 0x%x, '%.4s') returned NULL",
                        paged ? "PagedPool" : "NonPagedPool", want, (const char *)&tag);
        return NULL;
    }
    ptl__poolblock *b = ptl__xcalloc(1, sizeof *b);
    b->block = block;
    b->data = block + lead;
    b->units = region < 0 ? 0 : units;
    b->pages = pages;
    b->region = region;
    b->bytes = want;
    b->tag = tag;
    b->paged = paged;
    b->driver = m->kernel.current_driver;
    b->site = ptl__verifier_site(m);
    ptl__ptrmap_put(&pl->blocks, (const void *)(uintptr_t)b->data, b);
    ptl__ptrmap_del(&pl->freed, (const void *)(uintptr_t)b->data);
    if (!big)
        write_header(m, b->data - HEADER, units, (int)type, tag);
    ptl__pooltag *t = tag_entry(pl, tag);
    uint64_t charged = region < 0 ? (uint64_t)pages * PTL_PAGE_SIZE : (uint64_t)units * UNIT;
    if (paged) {
        t->paged_allocs++;
        t->paged_bytes += charged;
        pl->paged_bytes += charged;
    } else {
        t->nonpaged_allocs++;
        t->nonpaged_bytes += charged;
        pl->nonpaged_bytes += charged;
    }
    return (PVOID)(uintptr_t)b->data;

must_fail:
    ptl__bugcheck_why(m, 0x41, (uint32_t)bytes, (uint32_t)(pl->nonpaged_bytes / PTL_PAGE_SIZE),
                      (uint32_t)pl->big_requests, ptl__phys_available(&m->phys),
                      "NonPagedPoolMustSucceed request of %u bytes: the must-succeed pool is "
                      "empty",
                      (uint32_t)bytes);
}

static void pool_free(ptl_machine *m, PVOID p, uint32_t tag, int check_tag)
{
    ptl__pools *pl = &m->pools;
    uint32_t va = (uint32_t)(uintptr_t)p;
    ptl__poolblock *b = ptl__ptrmap_get(&pl->blocks, (const void *)(uintptr_t)va);
    if (!b) {
        int twice = ptl__ptrmap_get(&pl->freed, (const void *)(uintptr_t)va) != NULL;
        ptl__bugcheck_why(m, 0xC2, twice ? 0x07 : 0x42, 0, 0, va,
                          twice ? "ExFreePool(%08x): the block was freed already"
                                : "ExFreePool(%08x): no pool handed out that address",
                          va);
    }
    if (check_tag && (b->tag & ~0x80000000u) != (tag & ~0x80000000u))
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "ExFreePoolWithTag(%08x, '%.4s') of a block tagged "
                        "'%.4s'",
                        va, (const char *)&tag, (const char *)&b->tag);
    ptl__pooltag *t = tag_entry(pl, b->tag);
    uint64_t charged =
        b->region < 0 ? (uint64_t)b->pages * PTL_PAGE_SIZE : (uint64_t)b->units * UNIT;
    if (b->paged) {
        t->paged_frees++;
        t->paged_bytes -= charged;
        pl->paged_bytes -= charged;
    } else {
        t->nonpaged_frees++;
        t->nonpaged_bytes -= charged;
        pl->nonpaged_bytes -= charged;
    }
    if (b->region < 0) {
        for (uint32_t i = 0; i < b->pages; i++)
            unmap_page(m, b->block + i * PTL_PAGE_SIZE);
        PTL_ASSERT(ptl__syspte_release(m, PTL_NONPAGED_POOL_EXPANSION, b->block, b->pages) ==
                   PTL_RELEASE_OK);
    } else {
        region_free(m, b->region, b->block, b->units);
    }
    ptl__ptrmap_del(&pl->blocks, (const void *)(uintptr_t)va);
    ptl__ptrmap_put(&pl->freed, (const void *)(uintptr_t)va, (void *)1);
    free(b);
}

PVOID ExAllocatePool(POOL_TYPE PoolType, SIZE_T NumberOfBytes)
{
    return pool_alloc(ptl__ddi_enter("ExAllocatePool"), PoolType, NumberOfBytes, TAG_NONE);
}

PVOID ExAllocatePoolWithTag(POOL_TYPE PoolType, SIZE_T NumberOfBytes, ULONG Tag)
{
    return pool_alloc(ptl__ddi_enter("ExAllocatePoolWithTag"), PoolType, NumberOfBytes, Tag);
}

/* An MDL is pool in NT, and MmAllocatePagesForMdl's documentation frees its MDL with
 * ExFreePool; ptelab's MDLs are host memory, so that case is recognised first. */
VOID ExFreePool(PVOID P)
{
    ptl_machine *m = ptl__ddi_enter("ExFreePool");
    if (!ptl__mdl_free_as_pool(m, P))
        pool_free(m, P, 0, 0);
}

VOID ExFreePoolWithTag(PVOID P, ULONG Tag)
{
    ptl_machine *m = ptl__ddi_enter("ExFreePoolWithTag");
    if (!ptl__mdl_free_as_pool(m, P))
        pool_free(m, P, Tag, 1);
}

typedef struct check_ctx {
    ptl_machine *m;
    FILE *why;
    uint64_t units[REGIONS];
    int rc;
} check_ctx;

static void check_block(void *ctx, const void *key, void *val)
{
    check_ctx *c = ctx;
    const ptl__poolblock *b = val;
    if (c->rc)
        return;
    if ((uintptr_t)key != b->data) {
        fprintf(c->why, "pool: block record keyed %p holds %08x\n", key, b->data);
        c->rc = -1;
        return;
    }
    if (b->region >= 0)
        c->units[b->region] += b->units;
    uint32_t pte;
    if (ptl__pte_read(c->m, 0, b->data, &pte) != 0 || !(pte & PTL_PTE_VALID)) {
        fprintf(c->why, "pool: block at %08x is not backed\n", b->data);
        c->rc = -1;
    }
}

int ptl__pools_check(ptl_machine *m, FILE *why)
{
    ptl__pools *pl = &m->pools;
    check_ctx c = {m, why, {0, 0, 0}, 0};
    ptl__ptrmap_each(&pl->blocks, check_block, &c);
    if (c.rc)
        return -1;
    for (int r = 0; r < REGIONS; r++) {
        if (ptl__spool_check(pl->units[r], why) != 0)
            return -1;
        uint32_t total = pl->bytes[r] / UNIT;
        if (total - ptl__spool_free_count(pl->units[r]) != c.units[r]) {
            fprintf(why, "pool: region %d has %u units reserved, blocks hold %llu\n", r,
                    total - ptl__spool_free_count(pl->units[r]), (unsigned long long)c.units[r]);
            return -1;
        }
    }
    return 0;
}
