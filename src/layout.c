/* layout.c - the system address space of an x86 NT machine, computed at boot.
 *
 * Models how NT 4.0/2000 size and place the regions of the upper 2 GB from the amount of
 * RAM, the Memory Management registry values and the boot options. Every number and
 * where it comes from is in docs/fidelity.md ("Layout"); the research notes with sources
 * are docs/research/layout-and-sizing.md. In short:
 *
 *   0x00010000  user space ............................ (first 64 KB never mapped)
 *   0x7FFF0000  64 KB no-access ........................ MmUserProbeAddress
 *   0x80000000  kernel, HAL, boot drivers | PFN database | initial nonpaged pool
 *   0xC0000000  page tables (self-map) ................. PTE_BASE, PDE_BASE 0xC0300000
 *   0xC0400000  hyperspace
 *   0xC0C00000  system working set list
 *   0xC1000000  system cache (512 MB)
 *   0xE1000000  paged pool (2 x max nonpaged, 4 MB units, at most 192 MB)
 *   ...         system PTEs: 4 MB aligned, never below 0xEB000000, ending where
 *               nonpaged pool expansion begins ("squeezed in between paged pool and
 *               nonpaged pool", the article)
 *   ...         nonpaged pool expansion (max - initial nonpaged pool)
 *   0xFFBE0000  crash dump area
 *   0xFFC00000  HAL
 *
 * Sizing: system PTEs 7000 below 19 MB of RAM, else 11000, doubled above 32 MB and again
 * above 256 MB, then stretched to fill the 4 MB alignment slack (ReactOS mminit.c and
 * i386/init.c). Nonpaged pool: initial 256 KB + 32 KB per MB above 4 MB, maximum 1 MB +
 * 400 KB per MB above 4 MB, at most 128 MB (KB Q126402). SystemPages: 0 computed,
 * 0xFFFFFFFF as many as fit, any other value that many (TechNet cc786402).
 *
 * /3GB and /USERVA follow ptelab's documented choices (docs/fidelity.md): user space grows
 * to 0xBFFF0000 (or USERVA MB), the boot region moves into the 1 GB system space at
 * 0xC1000000 and shrinks the system cache, and the computed pool sizes lose their top
 * doubling and half their caps (KB 316739: /3GB reduces nonpaged pool, paged pool and
 * system PTEs). Address space that /USERVA gives back becomes additional system PTEs.
 *
 * Invariants (ptl__layout_check): regions are page aligned, ordered, and do not overlap.
 */
#include "internal.h"

#include <string.h>

#define MB                (1024u * 1024u)
#define KB                1024u
#define PDE_ALIGN_DOWN(x) ((x) & ~(PTL_PDE_SPAN - 1u))
#define PDE_ALIGN_UP(x)   (((x) + PTL_PDE_SPAN - 1u) & ~(PTL_PDE_SPAN - 1u))
#define PAGE_UP(x)        (((x) + PTL_PAGE_MASK) & ~PTL_PAGE_MASK)

#define SYSPTE_FLOOR      0xEB000000u /* MmNonPagedSystemStart never goes lower */
#define PAGED_POOL_START  0xE1000000u
#define SYSTEM_CACHE_VA   0xC1000000u
#define NPP_END           0xFFBE0000u
#define CRASH_DUMP_VA     0xFFBE0000u
#define HAL_VA            0xFFC00000u
#define BOOT_IMAGES_BYTES (4u * MB) /* ntoskrnl, HAL, boot drivers: ptelab's choice */
#define MMPFN_BYTES       24u       /* sizeof(MMPFN) on x86 */
#define MIN_RAM_MB        12u       /* NT 4.0 Workstation's minimum on x86 */

static void add_region(ptl__layout *l, const char *name, uint32_t start, uint32_t end)
{
    PTL_ASSERT(l->nregions < PTL_MAX_REGIONS);
    l->regions[l->nregions++] = (ptl_region){name, start, end};
}

/* The RAM-based default number of system PTEs (before alignment slack). */
static uint32_t default_system_ptes(uint32_t ram_pages, int boot_3gb)
{
    uint32_t n;
    if (ram_pages < (19u * MB) / PTL_PAGE_SIZE)
        return 7000;
    n = 11000;
    if (ram_pages > (32u * MB) / PTL_PAGE_SIZE)
        n *= 2;
    if (ram_pages > (256u * MB) / PTL_PAGE_SIZE && !boot_3gb)
        n *= 2;
    return n;
}

int ptl__layout_compute(ptl__layout *l, const ptl_config *cfg)
{
    memset(l, 0, sizeof *l);
    if (cfg->ram_bytes == 0)
        return ptl__fail("cannot boot without RAM (ram_bytes is 0)");
    if (cfg->ram_bytes & PTL_PAGE_MASK)
        return ptl__fail("ram_bytes 0x%llx is not a multiple of the 4 KB page",
                         (unsigned long long)cfg->ram_bytes);
    if (cfg->ram_bytes > (4ull << 30))
        return ptl__fail("%llu MB of RAM is more than a non-PAE x86 can address (4096 MB)",
                         (unsigned long long)(cfg->ram_bytes >> 20));
    if (cfg->ram_bytes < (uint64_t)MIN_RAM_MB * MB)
        return ptl__fail("%llu KB of RAM is below the %u MB NT 4.0 needs to boot on x86",
                         (unsigned long long)(cfg->ram_bytes >> 10), MIN_RAM_MB);
    if (cfg->profile < PTL_NT4_SP3 || cfg->profile > PTL_WINXP)
        return ptl__fail("unknown profile %d", (int)cfg->profile);
    if (cfg->userva_mb && !cfg->boot_3gb)
        return ptl__fail("/USERVA=%u only has a meaning together with /3GB", cfg->userva_mb);
    if (cfg->userva_mb && (cfg->userva_mb < 2048 || cfg->userva_mb > 3072))
        return ptl__fail("/USERVA=%u is outside 2048..3072 MB", cfg->userva_mb);

    uint32_t ram_pages = (uint32_t)(cfg->ram_bytes >> PTL_PAGE_SHIFT);
    uint32_t ram_mb = (uint32_t)(cfg->ram_bytes >> 20);
    int g3 = cfg->boot_3gb != 0;
    uint32_t npp_cap = g3 ? 64u * MB : 128u * MB;
    uint32_t paged_cap = g3 ? 96u * MB : 192u * MB;

    /* Nonpaged pool (KB Q126402). */
    uint32_t extra_mb = ram_mb > 4 ? ram_mb - 4 : 0;
    uint32_t inp = cfg->nonpaged_pool_size ? (uint32_t)PAGE_UP(cfg->nonpaged_pool_size)
                                           : 256u * KB + extra_mb * 32u * KB;
    if (cfg->nonpaged_pool_size && (uint64_t)cfg->nonpaged_pool_size > cfg->ram_bytes / 8 * 7)
        return ptl__fail("NonPagedPoolSize %u is more than 7/8 of RAM", cfg->nonpaged_pool_size);
    if (inp > npp_cap)
        inp = npp_cap;
    uint64_t maxnp = 1ull * MB + (uint64_t)extra_mb * 400u * KB;
    if (maxnp < (uint64_t)inp + 16 * PTL_PAGE_SIZE)
        maxnp = (uint64_t)inp + 16 * PTL_PAGE_SIZE;
    if (maxnp > npp_cap)
        maxnp = npp_cap;
    if (maxnp < (uint64_t)inp + 16 * PTL_PAGE_SIZE) /* initial at the cap: keep 16 pages */
        inp = (uint32_t)maxnp - 16 * PTL_PAGE_SIZE;
    l->max_npp_bytes = (uint32_t)maxnp;

    /* User space and the system range. */
    l->user_lo = 0x10000u;
    if (!g3) {
        l->system_start = 0x80000000u;
        l->user_hi = 0x7FFF0000u;
    } else {
        l->system_start = 0xC0000000u;
        l->user_hi = cfg->userva_mb ? cfg->userva_mb * MB - 0x10000u : 0xBFFF0000u;
    }

    /* The boot region: images, PFN database, initial nonpaged pool. */
    l->boot_va = g3 ? SYSTEM_CACHE_VA : 0x80000000u;
    l->boot_bytes = BOOT_IMAGES_BYTES;
    l->pfn_va = l->boot_va + l->boot_bytes;
    l->pfn_bytes = PAGE_UP(ram_pages * MMPFN_BYTES);
    l->inp_va = l->pfn_va + l->pfn_bytes;
    l->inp_bytes = inp;
    uint32_t boot_end = PDE_ALIGN_UP(l->inp_va + l->inp_bytes);
    /* Frames the boot region takes: the images' resident part (1 MB, ptelab's choice) and
     * the PFN database; the initial nonpaged pool's frames are the pool's (pool.c). */
    l->boot_frames = (1u * MB + l->pfn_bytes) / PTL_PAGE_SIZE;
    if (l->boot_frames + l->inp_bytes / PTL_PAGE_SIZE + 64 > ram_pages)
        return ptl__fail("%u MB of RAM cannot hold the kernel, the PFN database and %u KB of "
                         "initial nonpaged pool",
                         ram_mb, inp / KB);

    l->cache_va = g3 ? boot_end : SYSTEM_CACHE_VA;
    l->cache_end = PAGED_POOL_START;
    if (l->cache_va >= l->cache_end)
        return ptl__fail("the boot region (%u MB) leaves no room for the system cache under "
                         "/3GB",
                         (boot_end - l->boot_va) / MB);

    /* Nonpaged pool expansion sits right below MmNonPagedPoolEnd; its PTE pool skips the
     * first page and keeps a guard page at the end (ReactOS pool.c). */
    l->npp_end = NPP_END;
    l->nppx_region_va = NPP_END - PAGE_UP(l->max_npp_bytes - l->inp_bytes);
    uint32_t nppx_pages = (NPP_END - l->nppx_region_va) / PTL_PAGE_SIZE;
    l->nppx_va = l->nppx_region_va + PTL_PAGE_SIZE;
    l->nppx_count = nppx_pages > 2 ? nppx_pages - 2 : 0;

    /* System PTEs, squeezed between paged pool and nonpaged pool expansion. */
    l->computed_system_ptes = default_system_ptes(ram_pages, g3);
    uint32_t want = cfg->system_pages;
    uint32_t top = l->nppx_region_va;
    uint32_t max_count = (top - SYSPTE_FLOOR) / PTL_PAGE_SIZE - 1;
    if (want == 0)
        want = l->computed_system_ptes;
    else if (want == 0xFFFFFFFFu)
        want = max_count;
    else if (want > max_count)
        return ptl__fail("SystemPages %u leaves the pools no room: at most %u system PTEs fit "
                         "between 0x%08X and 0x%08X with this RAM",
                         want, max_count, SYSPTE_FLOOR, top);
    uint64_t start = (uint64_t)top - ((uint64_t)want + 1) * PTL_PAGE_SIZE;
    l->syspte_va = PDE_ALIGN_DOWN((uint32_t)start);
    if (l->syspte_va < SYSPTE_FLOOR)
        l->syspte_va = SYSPTE_FLOOR;
    l->syspte_count = (top - l->syspte_va) / PTL_PAGE_SIZE - 1;

    /* Paged pool: twice the maximum nonpaged pool in 4 MB units, capped, and never into
     * the system PTEs. PagedPoolSize overrides (0xFFFFFFFF: as much as fits). */
    uint64_t paged = cfg->paged_pool_size == 0xFFFFFFFFu ? (uint64_t)paged_cap
                     : cfg->paged_pool_size              ? (uint64_t)cfg->paged_pool_size
                                                         : 2ull * l->max_npp_bytes;
    paged = PDE_ALIGN_UP((uint32_t)(paged > paged_cap ? paged_cap : paged));
    l->paged_va = PAGED_POOL_START;
    l->paged_end = l->paged_va + (uint32_t)paged;
    if (l->paged_end > l->syspte_va) {
        if (cfg->paged_pool_size && cfg->paged_pool_size != 0xFFFFFFFFu && cfg->system_pages)
            return ptl__fail("PagedPoolSize %u and SystemPages %u do not both fit",
                             cfg->paged_pool_size, cfg->system_pages);
        l->paged_end = l->syspte_va;
    }

    /* /USERVA: the VA between user space and 0xC0000000 becomes additional system PTEs. */
    if (cfg->userva_mb && cfg->userva_mb < 3072) {
        /* the extra region starts at the next 4 MB boundary: it has its own shared page
         * tables, so it cannot share one with user space */
        l->extra_va = PDE_ALIGN_UP(cfg->userva_mb * MB);
        l->extra_count = (l->system_start - l->extra_va) / PTL_PAGE_SIZE;
    }

    add_region(l, "User space", l->user_lo, l->user_hi);
    if (l->extra_count)
        add_region(l, "Additional system PTEs (/USERVA)", l->extra_va, l->system_start);
    if (!g3) {
        add_region(l, "Kernel, HAL, boot drivers", l->boot_va, l->pfn_va);
        add_region(l, "PFN database", l->pfn_va, l->inp_va);
        add_region(l, "Initial nonpaged pool", l->inp_va, l->inp_va + l->inp_bytes);
    }
    add_region(l, "Process page tables", PTL_PTE_BASE, PTL_PTE_BASE + 4 * MB);
    add_region(l, "Hyperspace", 0xC0400000u, 0xC0800000u);
    add_region(l, "System working set list", 0xC0C00000u, SYSTEM_CACHE_VA);
    if (g3) {
        add_region(l, "Kernel, HAL, boot drivers", l->boot_va, l->pfn_va);
        add_region(l, "PFN database", l->pfn_va, l->inp_va);
        add_region(l, "Initial nonpaged pool", l->inp_va, l->inp_va + l->inp_bytes);
    }
    add_region(l, "System cache", l->cache_va, l->cache_end);
    add_region(l, "Paged pool", l->paged_va, l->paged_end);
    add_region(l, "System PTEs", l->syspte_va, l->nppx_region_va);
    add_region(l, "Nonpaged pool expansion", l->nppx_region_va, NPP_END);
    add_region(l, "Crash dump area", CRASH_DUMP_VA, HAL_VA);
    add_region(l, "HAL", HAL_VA, 0);
    return 0;
}

static uint64_t region_end(const ptl_region *r)
{
    return r->end ? r->end : (1ull << 32);
}

int ptl__layout_check(const ptl__layout *l, FILE *why)
{
    for (int i = 0; i < l->nregions; i++) {
        const ptl_region *r = &l->regions[i];
        if ((r->start & PTL_PAGE_MASK) || (region_end(r) & PTL_PAGE_MASK) ||
            region_end(r) < r->start) {
            fprintf(why, "layout: region %s [%08x,%08x) is malformed\n", r->name, r->start, r->end);
            return -1;
        }
        if (i > 0 && l->regions[i - 1].end > r->start) {
            fprintf(why, "layout: regions %s and %s overlap or are out of order\n",
                    l->regions[i - 1].name, r->name);
            return -1;
        }
    }
    if ((uint64_t)l->syspte_va + ((uint64_t)l->syspte_count + 1) * PTL_PAGE_SIZE >
        l->nppx_region_va) {
        fprintf(why, "layout: %u system PTEs do not fit below 0x%08x\n", l->syspte_count,
                l->nppx_region_va);
        return -1;
    }
    return 0;
}

const char *ptl__layout_region_of(const ptl__layout *l, uint32_t va)
{
    for (int i = 0; i < l->nregions; i++)
        if (va >= l->regions[i].start && va < region_end(&l->regions[i]))
            return l->regions[i].name;
    return NULL;
}
