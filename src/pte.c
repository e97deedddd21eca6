/* pte.c - page directories and page tables of an x86 (non-PAE) NT machine.
 *
 * Models the two-level x86 paging structures as NT lays them out:
 *   - one page directory (PD) per process; its physical address is the process's CR3
 *     (DirectoryTableBase);
 *   - the PD maps itself: PDE 0x300 points at the PD, so the page table that maps VA is
 *     visible at 0xC0000000 + (VA >> 22) * 4096 and the PTE of VA at
 *     0xC0000000 + (VA >> 12) * 4, the PDE at 0xC0300000 + (VA >> 22) * 4
 *     (Windows Internals, "Address translation"; Intel SDM vol. 3 4.3);
 *   - system page tables are shared: every PD carries the same PDEs for system space.
 *
 * Page tables and directories live in emulated RAM frames, so that the self-map, kd's
 * `!pte`, `!vtop` and `dd /p` see exactly what a processor would walk.
 *
 *     PD (one frame)          page table (one frame)        frame
 *     [... PDE(va>>22) ...] -> [... PTE((va>>12)&0x3FF) ...] -> [byte va & 0xFFF]
 *     [0x300: PD itself]  (self-map)
 *
 * NT propagates a new system PDE to other processes lazily, on the first fault in each
 * (MiCheckPdeForPagedPool). ptelab writes it into every live PD at once; the result a
 * driver can observe is the same, and it keeps a simple invariant (docs/fidelity.md).
 *
 * ptl__pte_write (one PTE) and ptl__pte_write_run (a run of them, the same rules in one
 * pass per page table) are the only functions that change a PTE. They keep:
 *   - the PFN database: ShareCount of a RAM frame = number of valid PTEs and PDEs that map
 *     it (for page-table frames NT counts differently; see docs/fidelity.md), PteAddress
 *     and PteFrame of the first mapping;
 *   - the software TLB (mmu.c), invalidating exactly the VA whose PTE changed;
 *   - later, the native host mirror (DESIGN.md, "Native mode");
 *   - what the incremental check (icheck.c) follows: they write tables through
 *     ptl__phys_frame, which marks the frames it watches, note every PFN entry whose
 *     count they change (ptl__phys_note), and read through ptl__phys_frame_ro.
 * A PDE that becomes valid flushes nothing: the TLB holds only what walks found through
 * valid PDEs.
 *
 * Invariants (ptl__pte_check): all PDs have identical system PDEs and a correct self-map;
 * every valid entry that points into RAM points at an in-use frame whose ShareCount equals
 * the number of valid entries pointing at it.
 */
#include "internal.h"

#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>

/* {0, step, 2 step, 3 step} */
static inline __m128i lane_steps(uint32_t step)
{
    return _mm_set_epi32((int)(3 * step), (int)(2 * step), (int)step, 0);
}
#endif

static uint32_t *frame_words(ptl_machine *m, uint32_t pfn)
{
    return (uint32_t *)ptl__phys_frame(&m->phys, pfn);
}

static void map_ref(ptl_machine *m, uint32_t entry, uint32_t pte_va, uint32_t table_pfn)
{
    uint32_t pfn = entry >> PTL_PAGE_SHIFT;
    if (pfn >= m->phys.ram_pages)
        return; /* I/O space has no PFN entry */
    ptl__pfn *e = &m->phys.pfn[pfn];
    /* A free frame can be mapped: MmMapIoSpace and \Device\PhysicalMemory views map any
     * physical page, owned or not (the article's warning). The count still holds. */
    if (e->ShareCount++ == 0) {
        e->PteAddress = pte_va;
        e->PteFrame = table_pfn;
    }
    e->ReferenceCount++;
    ptl__phys_note(&m->phys, pfn);
}

static void map_unref(ptl_machine *m, uint32_t entry)
{
    uint32_t pfn = entry >> PTL_PAGE_SHIFT;
    if (pfn >= m->phys.ram_pages)
        return;
    ptl__pfn *e = &m->phys.pfn[pfn];
    PTL_ASSERT(e->ShareCount > 0 && e->ReferenceCount > 0);
    e->ShareCount--;
    e->ReferenceCount--;
    if (e->ShareCount == 0) {
        e->PteAddress = 0;
        e->PteFrame = 0;
    }
    ptl__phys_note(&m->phys, pfn);
}

/* Write one PDE of one PD (the self-map VA of the page table it maps is the "PTE" VA). */
static void pde_write(ptl_machine *m, uint32_t pd, uint32_t index, uint32_t value)
{
    uint32_t *dir = frame_words(m, pd);
    uint32_t old = dir[index];
    uint32_t pt_va = PTL_PTE_BASE + index * PTL_PAGE_SIZE;
    if (old & PTL_PTE_VALID)
        map_unref(m, old);
    dir[index] = value;
    if (value & PTL_PTE_VALID)
        map_ref(m, value, PTL_PTE_VA(pt_va), pd);
    m->pte.writes++;
    /* The TLB caches only what a walk found through a valid PDE: making one valid (a new
     * page table, a new directory's copies of the system PDEs) leaves it correct. x86 does
     * the same: translations and paging-structure entries are cached only when present
     * (Intel SDM vol. 3, 4.10.2.3 and 4.10.3.1), so NT needs no flush there either. */
    if (old & PTL_PTE_VALID)
        ptl__mmu_flush(m, 1);
    ptl__native_pde(m, pd, index, value);
}

int ptl__pte_init(ptl_machine *m, uint32_t system_start)
{
    ptl__pte *pt = &m->pte;
    memset(pt, 0, sizeof *pt);
    pt->system_start = system_start;
    uint32_t pd = ptl__phys_alloc(&m->phys, PTL_USE_PAGE_DIRECTORY, 0);
    if (pd == UINT32_MAX)
        return ptl__fail("no RAM for the system page directory");
    pt->master_pd = pd;
    pt->pds = ptl__xcalloc(1, sizeof *pt->pds);
    pt->pds[0] = pd;
    pt->npds = 1;
    pde_write(m, pd, PTL_PD_SELFMAP_INDEX, (pd << PTL_PAGE_SHIFT) | PTL_PTE_VALID | PTL_PTE_WRITE);
    return 0;
}

void ptl__pte_free(ptl_machine *m)
{
    free(m->pte.pds);
    memset(&m->pte, 0, sizeof m->pte);
}

uint32_t ptl__pte_new_pd(ptl_machine *m, uint32_t owner_pid)
{
    ptl__pte *pt = &m->pte;
    uint32_t pd = ptl__phys_alloc(&m->phys, PTL_USE_PAGE_DIRECTORY, owner_pid);
    if (pd == UINT32_MAX)
        return UINT32_MAX;
    const uint32_t *master = ptl__phys_words_ro(&m->phys, pt->master_pd);
    for (uint32_t i = pt->system_start >> 22; i < PTL_PTES_PER_PAGE; i++) {
        if (i == PTL_PD_SELFMAP_INDEX)
            pde_write(m, pd, i, (pd << PTL_PAGE_SHIFT) | PTL_PTE_VALID | PTL_PTE_WRITE);
        else if (master[i] & PTL_PTE_VALID)
            pde_write(m, pd, i, master[i]);
    }
    pt->pds = ptl__xrealloc(pt->pds, (size_t)(pt->npds + 1) * sizeof *pt->pds);
    pt->pds[pt->npds++] = pd;
    return pd;
}

void ptl__pte_free_pd(ptl_machine *m, uint32_t pd)
{
    ptl__pte *pt = &m->pte;
    PTL_ASSERT(pd != pt->master_pd);
    uint32_t *dir = frame_words(m, pd);
    for (uint32_t i = 0; i < PTL_PTES_PER_PAGE; i++) {
        uint32_t pde = dir[i];
        if (!(pde & PTL_PTE_VALID))
            continue;
        uint32_t table = pde >> PTL_PAGE_SHIFT;
        if (i < (pt->system_start >> 22)) {
            const uint32_t *ptes = ptl__phys_words_ro(&m->phys, table);
            for (uint32_t j = 0; j < PTL_PTES_PER_PAGE; j++)
                PTL_ASSERT(!(ptes[j] & PTL_PTE_VALID));
            pde_write(m, pd, i, 0);
            ptl__phys_release(&m->phys, table);
        } else {
            pde_write(m, pd, i, 0);
        }
    }
    for (int k = 0; k < pt->npds; k++) {
        if (pt->pds[k] == pd) {
            pt->pds[k] = pt->pds[--pt->npds];
            break;
        }
    }
    ptl__phys_release(&m->phys, pd);
}

uint32_t ptl__pde_read(ptl_machine *m, uint32_t pd, uint32_t va)
{
    if (va >= m->pte.system_start)
        pd = m->pte.master_pd;
    return ptl__phys_words_ro(&m->phys, pd)[va >> 22];
}

int ptl__pte_read(ptl_machine *m, uint32_t pd, uint32_t va, uint32_t *pte)
{
    uint32_t pde = ptl__pde_read(m, pd, va);
    if (!(pde & PTL_PTE_VALID))
        return -1;
    *pte = ptl__phys_words_ro(&m->phys, pde >> PTL_PAGE_SHIFT)[(va >> 12) & 0x3FF];
    return 0;
}

int ptl__pte_ensure_table(ptl_machine *m, uint32_t pd, uint32_t va)
{
    ptl__pte *pt = &m->pte;
    int system = va >= pt->system_start;
    uint32_t owner = pd;
    if (system)
        pd = pt->master_pd;
    uint32_t index = va >> 22;
    PTL_ASSERT(index != PTL_PD_SELFMAP_INDEX);
    if (ptl__phys_words_ro(&m->phys, pd)[index] & PTL_PTE_VALID)
        return 0;
    uint32_t table =
        ptl__phys_alloc(&m->phys, PTL_USE_PAGE_TABLE, system ? 0 : m->phys.pfn[owner].OwnerPid);
    if (table == UINT32_MAX)
        return -1;
    uint32_t pde =
        (table << PTL_PAGE_SHIFT) | PTL_PTE_VALID | PTL_PTE_WRITE | (system ? 0u : PTL_PTE_OWNER);
    if (system) {
        for (int k = 0; k < pt->npds; k++)
            pde_write(m, pt->pds[k], index, pde);
    } else {
        pde_write(m, pd, index, pde);
    }
    return 0;
}

void ptl__pte_write(ptl_machine *m, uint32_t pd, uint32_t va, uint32_t value)
{
    ptl__pte *pt = &m->pte;
    PTL_ASSERT((va >> 22) != PTL_PD_SELFMAP_INDEX);
    uint32_t pde = ptl__pde_read(m, pd, va);
    PTL_ASSERT(pde & PTL_PTE_VALID);
    uint32_t table = pde >> PTL_PAGE_SHIFT;
    uint32_t *slot = &frame_words(m, table)[(va >> 12) & 0x3FF];
    uint32_t old = *slot;
    if (old & PTL_PTE_VALID)
        map_unref(m, old);
    *slot = value;
    if (value & PTL_PTE_VALID)
        map_ref(m, value, PTL_PTE_VA(va), table);
    pt->writes++;
    if ((old | value) & PTL_PTE_VALID) {
        ptl__mmu_invalidate(m, va);
        ptl__native_pte(m, pd, va, value);
    }
}

static inline int maps_ram(uint32_t entry, uint32_t ram)
{
    return (entry & PTL_PTE_VALID) && (entry >> PTL_PAGE_SHIFT) < ram;
}

/* slot[i] = value + i * step for i < k, where the new values need no PFN reference; an
 * old entry that maps RAM has its reference dropped first. One pass, four at a time. */
static void plain_write(ptl_machine *m, uint32_t *slot, uint32_t k, uint32_t value, uint32_t step)
{
    const uint32_t ram = m->phys.ram_pages;
    uint32_t i = 0;
#if defined(__SSE2__)
    /* frame numbers are below 2^20, so a signed compare is exact */
    __m128i want = _mm_add_epi32(_mm_set1_epi32((int)value), lane_steps(step)),
            inc = _mm_set1_epi32((int)(4 * step)), one = _mm_set1_epi32(1),
            lim = _mm_set1_epi32((int)ram);
    __m128i inc2 = _mm_add_epi32(inc, inc);
    for (; i + 8 <= k; i += 8, want = _mm_add_epi32(want, inc2)) { /* eight at a time */
        __m128i a = _mm_loadu_si128((const __m128i *)(slot + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(slot + i + 4));
        __m128i ram_a = _mm_and_si128(_mm_cmpeq_epi32(_mm_and_si128(a, one), one),
                                      _mm_cmplt_epi32(_mm_srli_epi32(a, PTL_PAGE_SHIFT), lim));
        __m128i ram_b = _mm_and_si128(_mm_cmpeq_epi32(_mm_and_si128(b, one), one),
                                      _mm_cmplt_epi32(_mm_srli_epi32(b, PTL_PAGE_SHIFT), lim));
        if (_mm_movemask_epi8(_mm_or_si128(ram_a, ram_b)))
            for (uint32_t j = i; j < i + 8; j++)
                if (maps_ram(slot[j], ram))
                    map_unref(m, slot[j]);
        _mm_storeu_si128((__m128i *)(slot + i), want);
        _mm_storeu_si128((__m128i *)(slot + i + 4), _mm_add_epi32(want, inc));
    }
#endif
    for (; i < k; i++) {
        if (maps_ram(slot[i], ram))
            map_unref(m, slot[i]);
        slot[i] = value + i * step;
    }
}

void ptl__pte_write_run(ptl_machine *m, uint32_t pd, uint32_t va, uint32_t n, uint32_t first,
                        uint32_t step)
{
    ptl__pte *pt = &m->pte;
    uint32_t value = first;
    /* As ptl__pte_write: the TLB and the host mirror hear of the run only when an entry
     * in it was or becomes valid (clearing demand-zero PTEs leaves cached translations of
     * other address spaces alone). */
    uint32_t any = first & PTL_PTE_VALID;
    for (uint32_t done = 0; done < n;) {
        uint32_t at = va + done * PTL_PAGE_SIZE;
        PTL_ASSERT((at >> 22) != PTL_PD_SELFMAP_INDEX);
        uint32_t in_table = 1024 - ((at >> 12) & 0x3FF),
                 k = n - done < in_table ? n - done : in_table;
        uint32_t pde = ptl__pde_read(m, pd, at);
        if (!(pde & PTL_PTE_VALID)) { /* no page table: nothing to clear, nowhere to write */
            PTL_ASSERT(!(value & PTL_PTE_VALID) && step == 0);
            done += k;
            continue;
        }
        uint32_t table = pde >> PTL_PAGE_SHIFT, pte_va = PTL_PTE_VA(at);
        uint32_t *slot = &frame_words(m, table)[(at >> 12) & 0x3FF];
        const uint32_t ram = m->phys.ram_pages;
        for (uint32_t i = 0; i < k && !any; i++)
            any = slot[i] & PTL_PTE_VALID;
        /* Device memory (and clearing) needs no PFN reference for the new values, so the
         * common runs take a tight loop; only an old RAM mapping costs a call. */
        int plain =
            !(value & PTL_PTE_VALID) ? step == 0 : step == PTL_PAGE_SIZE && (value >> 12) >= ram;
        if (plain) {
            /* scan, then write: both loops are branch-free in the common case */
            plain_write(m, slot, k, value, step);
            value += k * step;
        } else {
            for (uint32_t i = 0; i < k; i++, value += step, pte_va += 4) {
                /* No shortcut when old == value: dropping and retaking the reference
                 * can move PteAddress (the frame's first mapping) to this PTE, exactly
                 * as ptl__pte_write does. */
                uint32_t old = slot[i];
                if (old & PTL_PTE_VALID)
                    map_unref(m, old);
                slot[i] = value;
                if (value & PTL_PTE_VALID)
                    map_ref(m, value, pte_va, table);
            }
        }
        pt->writes += k; /* as k ptl__pte_write calls count */
        done += k;
    }
    if (any) { /* what the TLB and the host mirror hold of the run */
        ptl__mmu_invalidate_range(m, va, n);
        ptl__native_pte_run(m, pd, va, n, first, step);
    }
}

uint32_t ptl__pte_make(uint32_t pfn, int writable, int user, int cache_type)
{
    uint32_t v = (pfn << PTL_PAGE_SHIFT) | PTL_PTE_VALID | PTL_PTE_ACCESSED;
    if (writable)
        v |= PTL_PTE_WRITE;
    if (user)
        v |= PTL_PTE_OWNER;
    /* MEMORY_CACHING_TYPE: MmNonCached 0, MmCached 1, MmWriteCombined 2. Without PAT
     * (NT4/2000 on x86), noncached is CD+WT and write-combined is left to the MTRRs with
     * a write-through PTE; see docs/fidelity.md. */
    if (cache_type == 0)
        v |= PTL_PTE_CACHEDISABLE | PTL_PTE_WRITETHROUGH;
    else if (cache_type == 2)
        v |= PTL_PTE_WRITETHROUGH;
    return v;
}

int ptl__pte_cache_type(uint32_t pte)
{
    if (pte & PTL_PTE_CACHEDISABLE)
        return 0;                                /* MmNonCached */
    return (pte & PTL_PTE_WRITETHROUGH) ? 2 : 1; /* MmWriteCombined, MmCached */
}

void ptl__pte_flags(uint32_t pte, int is_pde, char *buf)
{
    /* WinDbg's !pte order: C G L D A N T U/K W/R E V. */
    buf[0] = (!is_pde && (pte & PTL_PTE_COPYONWRITE)) ? 'C' : '-';
    buf[1] = (pte & PTL_PTE_GLOBAL) ? 'G' : '-';
    buf[2] = (pte & PTL_PTE_LARGEPAGE) ? 'L' : '-';
    buf[3] = (pte & PTL_PTE_DIRTY) ? 'D' : '-';
    buf[4] = (pte & PTL_PTE_ACCESSED) ? 'A' : '-';
    buf[5] = (pte & PTL_PTE_CACHEDISABLE) ? 'N' : '-';
    buf[6] = (pte & PTL_PTE_WRITETHROUGH) ? 'T' : '-';
    buf[7] = (pte & PTL_PTE_OWNER) ? 'U' : 'K';
    buf[8] = (pte & PTL_PTE_WRITE) ? 'W' : 'R';
    buf[9] = 'E'; /* non-PAE x86 has no NX bit: everything valid is executable */
    buf[10] = 'V';
    buf[11] = '\0';
}

int ptl__pte_check(ptl_machine *m, FILE *why)
{
    ptl__pte *pt = &m->pte;
    uint32_t first_sys = pt->system_start >> 22;
    uint32_t nram = m->phys.ram_pages;
    uint32_t *tally = ptl__xcalloc(nram ? nram : 1, sizeof *tally);
    int rc = 0;
    const uint32_t *master = ptl__phys_words_ro(&m->phys, pt->master_pd);
#define FAIL(...)                  \
    do {                           \
        fprintf(why, __VA_ARGS__); \
        rc = -1;                   \
        goto out;                  \
    } while (0)
    for (int k = 0; k < pt->npds; k++) {
        uint32_t pd = pt->pds[k];
        const uint32_t *dir = ptl__phys_words_ro(&m->phys, pd);
        if ((dir[PTL_PD_SELFMAP_INDEX] >> PTL_PAGE_SHIFT) != pd ||
            !(dir[PTL_PD_SELFMAP_INDEX] & PTL_PTE_VALID))
            FAIL("pte: page directory 0x%x does not map itself at PDE 0x300\n", pd);
        for (uint32_t i = 0; i < PTL_PTES_PER_PAGE; i++) {
            uint32_t pde = dir[i];
            /* the processor sets Accessed in whichever copy it walks: ignore it */
            uint32_t hw = PTL_PTE_ACCESSED | PTL_PTE_DIRTY;
            if (i >= first_sys && i != PTL_PD_SELFMAP_INDEX && (pde & ~hw) != (master[i] & ~hw))
                FAIL("pte: PD 0x%x system PDE 0x%x is %08x, master has %08x\n", pd, i, pde,
                     master[i]);
            if (!(pde & PTL_PTE_VALID))
                continue;
            uint32_t target = pde >> PTL_PAGE_SHIFT;
            if (target >= nram || m->phys.pfn[target].Use == PTL_USE_FREE)
                FAIL("pte: PD 0x%x PDE 0x%x points at frame 0x%x that is not in use\n", pd, i,
                     target);
            tally[target]++;
            if (i == PTL_PD_SELFMAP_INDEX || (i >= first_sys && k != 0))
                continue; /* walk each shared system table once (through the master) */
            const uint32_t *ptes = ptl__phys_words_ro(&m->phys, target);
            for (uint32_t j = 0; j < PTL_PTES_PER_PAGE; j++) {
                if (!(ptes[j] & PTL_PTE_VALID))
                    continue;
                uint32_t f = ptes[j] >> PTL_PAGE_SHIFT;
                if (f >= nram)
                    continue; /* I/O space */
                tally[f]++;   /* a free frame may be mapped (a view of RAM nobody owns) */
            }
        }
    }
    for (uint32_t f = 0; f < nram; f++) { /* never-used frames too: a view may map them */
        if (tally[f] != m->phys.pfn[f].ShareCount)
            FAIL("pte: frame 0x%x is mapped %u times but its ShareCount is %u\n", f, tally[f],
                 m->phys.pfn[f].ShareCount);
    }
#undef FAIL
out:
    free(tally);
    return rc;
}
