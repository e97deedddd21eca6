/* mmu.c - the processor's memory-management unit, in software.
 *
 * Models an x86 (non-PAE) MMU as NT programs it:
 *   - translation walks the current page directory (CR3), then the page table; a system
 *     address walks the same shared system tables from every context;
 *   - a user-mode access needs U/S set in both PDE and PTE; a write needs R/W in both, from
 *     user mode and, because NT runs with CR0.WP set, from kernel mode too (Intel SDM
 *     vol. 3, 4.6);
 *   - the walk sets Accessed in PDE and PTE, and Dirty in the PTE on a write, as the
 *     hardware does. Those bits are written here directly: they never change what the
 *     entry maps, so neither the TLB nor the mirror cares;
 *   - a physical address that nothing decodes reads as all ones and drops writes (a PCI
 *     master abort).
 *
 * The software TLB is direct mapped on the virtual page number and caches what a walk
 * found. It is the fast path; the walk is its plain reference. Coherence:
 *   - ptl__pte_write invalidates the one VA whose PTE changed (INVLPG);
 *   - a PDE write or a context switch flushes (non-global entries on a switch: user
 *     space and the self-map, which shows the current directory's page tables);
 *   - an entry is cached only after a successful walk, with Dirty known, so a write to a
 *     clean page takes the walk once to set Dirty.
 * Invariant (ptl__mmu_check): every TLB entry equals what a fresh walk of CR3 gives.
 */
#include "internal.h"

#include <string.h>

/* The lowest address the inline register path may serve in the machine's state. */
static uint64_t fast_min_va(const ptl_machine *m)
{
    if (m->stop.stopped || m->nislands)
        return 1ull << 32; /* a STOP re-lands in the slow path; islands are host memory */
    return m->kernel.in_dpc ? m->pte.system_start : 0;
}

void ptl__mmu_fast_sync(ptl_machine *m)
{
    m->fast.min_va = fast_min_va(m);
}

void ptl__mmu_init(ptl_machine *m, uint32_t cr3)
{
    memset(&m->mmu, 0, sizeof m->mmu);
    m->mmu.cr3 = cr3;
    m->fast.tlb = m->mmu.tlb;
    ptl__mmu_fast_sync(m);
}

void ptl__mmu_flush(ptl_machine *m, int include_global)
{
    for (uint32_t i = 0; i < PTL_TLB_ENTRIES; i++)
        if (include_global || !m->mmu.tlb[i].global)
            m->mmu.tlb[i].tag = 0;
    m->mmu.flushes++;
}

void ptl__mmu_set_cr3(ptl_machine *m, uint32_t cr3)
{
    if (m->mmu.cr3 == cr3)
        return;
    m->mmu.cr3 = cr3;
    /* System entries are the same in every directory: keep them, as the Global bit would.
     * The self-map is not: it maps the current directory's own page tables. */
    for (uint32_t i = 0; i < PTL_TLB_ENTRIES; i++)
        if (m->mmu.tlb[i].tag && !m->mmu.tlb[i].global)
            m->mmu.tlb[i].tag = 0;
    m->mmu.flushes++;
    ptl__native_switch(m, cr3);
}

void ptl__mmu_invalidate_range(ptl_machine *m, uint32_t va, uint32_t n)
{
    if (n < PTL_TLB_ENTRIES / 4) {
        for (uint32_t i = 0; i < n; i++)
            ptl__mmu_invalidate(m, va + i * PTL_PAGE_SIZE);
        return;
    }
    /* a long run: one pass over the TLB is cheaper than a probe per page */
    uint32_t first = va >> 12;
    for (uint32_t i = 0; i < PTL_TLB_ENTRIES; i++) {
        ptl__tlbe *e = &m->mmu.tlb[i];
        if (e->tag && e->tag - 1 - first < n) {
            e->tag = 0;
            m->mmu.invalidations++;
        }
    }
}

void ptl__mmu_invalidate(ptl_machine *m, uint32_t va)
{
    ptl__tlbe *e = &m->mmu.tlb[(va >> 12) % PTL_TLB_ENTRIES];
    if (e->tag == (va >> 12) + 1) {
        e->tag = 0;
        m->mmu.invalidations++;
    }
}

static uint32_t *frame_words(ptl_machine *m, uint32_t pfn)
{
    return (uint32_t *)ptl__phys_frame(&m->phys, pfn);
}

int ptl__mmu_walk(ptl_machine *m, uint32_t dirbase_pfn, uint32_t va, uint64_t *pa,
                  uint32_t *pde_out, uint32_t *pte_out)
{
    if (dirbase_pfn >= m->phys.ram_pages)
        return -1;
    uint32_t pde = ptl__phys_words_ro(&m->phys, dirbase_pfn)[va >> 22];
    if (pde_out)
        *pde_out = pde;
    if (pte_out)
        *pte_out = 0;
    if (!(pde & PTL_PTE_VALID))
        return -1;
    if (pde & PTL_PTE_LARGEPAGE) {
        *pa = (uint64_t)(pde & 0xFFC00000u) | (va & 0x3FFFFFu);
        return 0;
    }
    uint32_t table = pde >> PTL_PAGE_SHIFT;
    if (table >= m->phys.ram_pages)
        return -1;
    uint32_t pte = ptl__phys_words_ro(&m->phys, table)[(va >> 12) & 0x3FF];
    if (pte_out)
        *pte_out = pte;
    if (!(pte & PTL_PTE_VALID))
        return -1;
    *pa = (uint64_t)(pte & PTL_PTE_FRAME_MASK) | (va & PTL_PAGE_MASK);
    return 0;
}

/* Driver code sees the self-map (0xC0000000-0xC03FFFFF) read-only. NT's PDE there is
 * writable and the memory manager writes PTEs through it, but a driver that did so would
 * bypass ptelab's bookkeeping (PFN share counts, the TLB, the mirror): reading PTEs there
 * works, writing them stops the machine, in both MMU modes (native mode maps the page
 * tables read-only for the same reason). docs/fidelity.md. */
static inline uint32_t selfmap_mask(uint32_t va)
{
    return (va >> 22) == PTL_PD_SELFMAP_INDEX ? ~(uint32_t)PTL_PTE_WRITE : ~0u;
}

/* A full walk with checks, A/D updates and TLB fill. */
static ptl__fault walk(ptl_machine *m, uint32_t va, int write, int user, int resolve,
                       ptl__tlbe **out)
{
    for (int attempt = 0;; attempt++) {
        uint32_t *dir = frame_words(m, m->mmu.cr3);
        uint32_t *pde = &dir[va >> 22];
        uint32_t *pte = NULL;
        int present = (*pde & PTL_PTE_VALID) != 0;
        if (present) {
            pte = &frame_words(m, *pde >> PTL_PAGE_SHIFT)[(va >> 12) & 0x3FF];
            present = (*pte & PTL_PTE_VALID) != 0;
        }
        if (!present) {
            if (resolve && attempt == 0 && ptl__process_resolve_fault(m, va, write)) {
                m->mmu.resolved_faults++;
                continue;
            }
            m->mmu.fault = PTL_FAULT_NOT_PRESENT;
            m->mmu.fault_pte = pte ? *pte : *pde;
            return PTL_FAULT_NOT_PRESENT;
        }
        uint32_t both = *pde & *pte & selfmap_mask(va);
        if ((user && !(both & PTL_PTE_OWNER)) || (write && !(both & PTL_PTE_WRITE))) {
            m->mmu.fault = PTL_FAULT_PROTECTION;
            m->mmu.fault_pte = *pte;
            return PTL_FAULT_PROTECTION;
        }
        *pde |= PTL_PTE_ACCESSED;
        *pte |= PTL_PTE_ACCESSED | (write ? PTL_PTE_DIRTY : 0u);
        ptl__tlbe *e = &m->mmu.tlb[(va >> 12) % PTL_TLB_ENTRIES];
        uint32_t pfn = *pte >> PTL_PAGE_SHIFT;
        e->tag = (va >> 12) + 1;
        e->pfn = pfn;
        int decoded = pfn < m->phys.ram_pages ||
                      ptl__phys_aperture_of(&m->phys, (uint64_t)pfn << PTL_PAGE_SHIFT);
        e->host = decoded ? ptl__phys_frame(&m->phys, pfn) : NULL;
        e->writable = (both & PTL_PTE_WRITE) != 0;
        e->user = (both & PTL_PTE_OWNER) != 0;
        e->dirty = (*pte & PTL_PTE_DIRTY) != 0;
        /* The self-map PDE is per process and never Global (ReactOS i386/procsup.c,
         * MiArchCreateProcessAddressSpace, writes it from ValidKernelPteLocal, the
         * template without the Global bit), so a switch must drop what it cached */
        e->global = va >= m->pte.system_start && (va >> 22) != PTL_PD_SELFMAP_INDEX;
        *out = e;
        return PTL_FAULT_NONE;
    }
}

/* Look up va; on a miss or a first write to a clean page, walk. */
static ptl__fault lookup(ptl_machine *m, uint32_t va, int write, int user, int resolve,
                         ptl__tlbe **out)
{
    ptl__tlbe *e = &m->mmu.tlb[(va >> 12) % PTL_TLB_ENTRIES];
    if (e->tag == (va >> 12) + 1 && (!user || e->user) && (!write || (e->writable && e->dirty))) {
        m->mmu.hits++;
        *out = e;
        return PTL_FAULT_NONE;
    }
    m->mmu.misses++;
    ptl__fault f = walk(m, va, write, user, resolve, out);
    if (f != PTL_FAULT_NONE) {
        m->mmu.fault_va = va;
        m->mmu.fault_write = write;
    }
    return f;
}

ptl__fault ptl__mmu_translate(ptl_machine *m, uint32_t va, int write, int user, int resolve,
                              uint64_t *pa)
{
    ptl__tlbe *e;
    ptl__fault f = lookup(m, va, write, user, resolve, &e);
    if (f == PTL_FAULT_NONE)
        *pa = ((uint64_t)e->pfn << PTL_PAGE_SHIFT) | (va & PTL_PAGE_MASK);
    return f;
}

ptl__fault ptl__mmu_copy(ptl_machine *m, uint32_t va, void *buf, size_t n, int write, int user,
                         int resolve)
{
    uint8_t *p = buf;
    uint64_t a = va;
    while (n > 0) {
        if (a > 0xFFFFFFFFull) { /* ran off the top of the address space */
            m->mmu.fault = PTL_FAULT_NOT_PRESENT;
            m->mmu.fault_va = 0;
            m->mmu.fault_write = write;
            return PTL_FAULT_NOT_PRESENT;
        }
        ptl__tlbe *e;
        ptl__fault f = lookup(m, (uint32_t)a, write, user, resolve, &e);
        if (f != PTL_FAULT_NONE)
            return f;
        size_t off = (size_t)(a & PTL_PAGE_MASK), chunk = PTL_PAGE_SIZE - off;
        if (chunk > n)
            chunk = n;
        if (e->host) {
            if (write)
                memcpy(e->host + off, p, chunk);
            else
                memcpy(p, e->host + off, chunk);
        } else if (!write) {
            memset(p, 0xFF, chunk); /* master abort: nothing claimed the cycle */
        }
        p += chunk;
        a += chunk;
        n -= chunk;
    }
    return PTL_FAULT_NONE;
}

ptl__fault ptl__mmu_fill(ptl_machine *m, uint32_t va, int value, size_t n, int user, int resolve)
{
    uint64_t a = va;
    while (n > 0) {
        ptl__tlbe *e;
        ptl__fault f = a > 0xFFFFFFFFull ? PTL_FAULT_NOT_PRESENT
                                         : lookup(m, (uint32_t)a, 1, user, resolve, &e);
        if (f != PTL_FAULT_NONE)
            return f;
        size_t off = (size_t)(a & PTL_PAGE_MASK), chunk = PTL_PAGE_SIZE - off;
        if (chunk > n)
            chunk = n;
        if (e->host)
            memset(e->host + off, value, chunk);
        a += chunk;
        n -= chunk;
    }
    return PTL_FAULT_NONE;
}

int ptl__mmu_check(ptl_machine *m, FILE *why)
{
    if (m->fast.tlb != m->mmu.tlb || m->fast.min_va != fast_min_va(m)) {
        fprintf(why,
                "mmu: the inline register path is stale (TLB %p, serves from %llx; the "
                "machine says %p, %llx)\n",
                (const void *)m->fast.tlb, (unsigned long long)m->fast.min_va, (void *)m->mmu.tlb,
                (unsigned long long)fast_min_va(m));
        return -1;
    }
    for (uint32_t i = 0; i < PTL_TLB_ENTRIES; i++) {
        const ptl__tlbe *e = &m->mmu.tlb[i];
        if (!e->tag)
            continue;
        uint32_t va = (e->tag - 1) << 12, pde, pte;
        uint64_t pa;
        if (ptl__mmu_walk(m, m->mmu.cr3, va, &pa, &pde, &pte) != 0) {
            fprintf(why, "mmu: TLB holds %08x but its PTE %08x is invalid\n", va, pte);
            return -1;
        }
        uint32_t both = pde & pte & selfmap_mask(va);
        int decoded = e->pfn < m->phys.ram_pages ||
                      ptl__phys_aperture_of(&m->phys, (uint64_t)e->pfn << PTL_PAGE_SHIFT);
        if ((e->host != NULL) != decoded) {
            fprintf(why, "mmu: TLB entry for %08x says frame %x %s decoded; it %s\n", va, e->pfn,
                    e->host ? "is" : "is not", decoded ? "is" : "is not");
            return -1;
        }
        if ((pa >> PTL_PAGE_SHIFT) != e->pfn || e->writable != ((both & PTL_PTE_WRITE) != 0) ||
            e->user != ((both & PTL_PTE_OWNER) != 0) || (e->dirty && !(pte & PTL_PTE_DIRTY))) {
            fprintf(why, "mmu: TLB entry for %08x (pfn %x w%d u%d) disagrees with PTE %08x\n", va,
                    e->pfn, e->writable, e->user, pte);
            return -1;
        }
    }
    return 0;
}
