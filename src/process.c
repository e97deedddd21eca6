/* process.c - processes: address spaces, VADs, context, demand paging and swap-out.
 *
 * Models what a driver can observe of NT processes:
 *   - each process has its own page directory; user space runs from 64 KB to
 *     MmUserProbeAddress (0x7FFF0000, or 0xBFFF0000 with /3GB); the first 64 KB and the
 *     last 64 KB below the system range are never mapped (KB Q92764);
 *   - the System process owns the boot page directory; ptl_call(m, NULL, ...) runs in it;
 *   - the current process is the one whose directory is in CR3: the one that last ran,
 *     as on a CPU. ptl__process_switch is the only place it changes;
 *   - private memory is described by VADs and committed as demand-zero software PTEs; the
 *     first touch gives it a zeroed frame;
 *   - swap-out (ptl_process_swap_out) writes valid private pages to the page file and
 *     leaves page-file PTEs; the next touch reads them back. Views of physical memory and
 *     locked-page mappings are not pageable and stay valid: the article's NOTE ("adapter
 *     memory pages are not used for page replacement");
 *   - commit and decommit go a page table at a time, writing each stretch of PTEs in one
 *     run (ptl__pte_write_run) and skipping 4 MB where there is no page table;
 *   - exit tears the address space down and frees everything the process owned; pages
 *     still locked for I/O stop the machine with PROCESS_HAS_LOCKED_PAGES (0x76),
 *     P1 0, P2 the process, P3 the number of locked pages (learn.microsoft.com,
 *     "Bug Check 0x76").
 *
 * Process IDs: the System process has the ID its release gave it (NT 4.0: 2, Windows
 * 2000: 8, XP: 4); others count up in fours from 0x80 (ptelab's choice).
 *
 * Invariants (ptl__process_check): VADs sorted, disjoint, inside user space; every valid
 * user PTE lies in a VAD and is user-accessible; private_pages counts the valid private
 * PTEs and paged_out the PTEs that name page-file slots; the page file's slots in use are
 * the live processes' paged-out pages; the current process is alive.
 */
#include "internal.h"

#include <string.h>

#define ALLOCATION_GRANULARITY 0x10000u

static uint32_t system_pid(ptl_profile profile)
{
    switch (profile) {
    case PTL_NT4_SP3:
    case PTL_NT4_SP4:
        return 2;
    case PTL_WIN2000:
        return 8;
    default:
        return 4;
    }
}

/* EPROCESS blocks live in 256 slots of 0x100 bytes of the initial nonpaged pool (the
 * layout's inp_va). A slot is free again once its process has exited, as NT reuses the
 * pool of a deleted process object: the lowest slot no live process holds, or -1. kd and
 * STOP parameters name processes by this address, so two live ones never share it. */
#define EPROCESS_SLOTS 256u
static int free_eprocess_slot(const ptl_machine *m)
{
    uint8_t taken[EPROCESS_SLOTS] = {0};
    for (const ptl_process *p = m->procs.list; p; p = p->next)
        if (!p->exited)
            taken[(p->eprocess_va - m->layout.inp_va) / 0x100u] = 1;
    for (uint32_t i = 0; i < EPROCESS_SLOTS; i++)
        if (!taken[i])
            return (int)i;
    return -1;
}

static ptl_process *new_process(ptl_machine *m, const char *name, uint32_t pid, uint32_t pd,
                                int slot)
{
    ptl_process *p = ptl__xcalloc(1, sizeof *p);
    p->magic = PTL__PROCESS_MAGIC;
    p->m = m;
    p->pid = pid;
    snprintf(p->name, sizeof p->name, "%s", name);
    p->pd = pd;
    p->nt.Pcb.DirectoryTableBase[0] = pd << PTL_PAGE_SHIFT;
    p->nt.UniqueProcessId = (HANDLE)(uintptr_t)pid;
    memcpy(p->nt.ImageFileName, p->name, sizeof p->nt.ImageFileName);
    p->eprocess_va = m->layout.inp_va + 0x100u * (uint32_t)slot;
    m->procs.count++;
    /* append, keeping creation order for kd */
    ptl_process **pp = &m->procs.list;
    while (*pp)
        pp = &(*pp)->next;
    *pp = p;
    return p;
}

int ptl__procs_init(ptl_machine *m)
{
    memset(&m->procs, 0, sizeof m->procs);
    m->procs.next_pid = 0x80;
    ptl_process *sys = new_process(m, "System", system_pid(m->cfg.profile), m->pte.master_pd, 0);
    sys->is_system = 1;
    sys->privileged = 1;
    m->procs.system = sys;
    m->procs.current = sys;
    return 0;
}

void ptl__procs_free(ptl_machine *m)
{
    ptl_process *p = m->procs.list;
    while (p) {
        ptl_process *next = p->next;
        free(p->vads);
        p->magic = 0;
        free(p);
        p = next;
    }
    ptl__pagefile *pf = &m->procs.pagefile;
    for (uint32_t i = 0; i < pf->nslots; i++)
        free(pf->slots[i]);
    free(pf->slots);
    free(pf->free_slots);
    memset(&m->procs, 0, sizeof m->procs);
}

bool ptl__process_ok(const ptl_process *p)
{
    if (!p) {
        ptl__fail("process handle is NULL");
        return false;
    }
    if (p->magic != PTL__PROCESS_MAGIC) {
        ptl__fail("%p is not a ptelab process handle", (const void *)p);
        return false;
    }
    if (p->exited) {
        ptl__fail("process %s (pid 0x%x) has exited", p->name, p->pid);
        return false;
    }
    return ptl__machine_ok(p->m);
}

void ptl__process_switch(ptl_machine *m, ptl_process *p)
{
    PTL_ASSERT(p && !p->exited);
    m->procs.current = p;
    m->procs.kd_implicit = NULL; /* the target ran: kd's implicit process is reset */
    ptl__mmu_set_cr3(m, p->pd);
}

ptl_process *ptl__process_by_eprocess(ptl_machine *m, uint32_t va)
{
    for (ptl_process *p = m->procs.list; p; p = p->next)
        if (p->eprocess_va == va && !p->exited)
            return p;
    return NULL;
}

/* ---- VADs --------------------------------------------------------------------------- */

ptl__vad *ptl__vad_find(ptl_process *p, uint32_t va)
{
    int lo = 0, hi = p->nvads - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        ptl__vad *v = &p->vads[mid];
        if (va < v->start)
            hi = mid - 1;
        else if (va >= v->end)
            lo = mid + 1;
        else
            return v;
    }
    return NULL;
}

static int range_free(ptl_process *p, uint32_t start, uint32_t end)
{
    for (int i = 0; i < p->nvads; i++)
        if (start < p->vads[i].end && p->vads[i].start < end)
            return 0;
    return 1;
}

uint32_t ptl__vad_find_free(ptl_process *p, uint32_t hint, uint32_t bytes)
{
    const ptl__layout *l = &p->m->layout;
    uint64_t size = ((uint64_t)bytes + PTL_PAGE_MASK) & ~(uint64_t)PTL_PAGE_MASK;
    if (size == 0 || size > l->user_hi - l->user_lo)
        return 0;
    if (hint) {
        uint32_t start = hint & ~(ALLOCATION_GRANULARITY - 1u);
        if (start < l->user_lo || (uint64_t)start + size > l->user_hi)
            return 0;
        return range_free(p, start, (uint32_t)(start + size)) &&
                       !ptl__overlaps_island(p->m, start, (uint32_t)(start + size))
                   ? start
                   : 0;
    }
    uint64_t cand = l->user_lo;
    for (int i = 0; i <= p->nvads; i++) {
        uint64_t limit = i < p->nvads ? p->vads[i].start : l->user_hi;
        while (cand + size <= limit &&
               ptl__overlaps_island(p->m, (uint32_t)cand, (uint32_t)(cand + size)))
            cand += ALLOCATION_GRANULARITY; /* step around the host's own low mappings */
        if (cand + size <= limit)
            return (uint32_t)cand;
        if (i < p->nvads) {
            cand = ((uint64_t)p->vads[i].end + ALLOCATION_GRANULARITY - 1) &
                   ~(uint64_t)(ALLOCATION_GRANULARITY - 1);
        }
    }
    return 0;
}

ptl__vad *ptl__vad_insert(ptl_process *p, uint32_t start, uint32_t end, int kind, int protect,
                          int cache, uint32_t owner)
{
    PTL_ASSERT(start < end && !(start & PTL_PAGE_MASK) && !(end & PTL_PAGE_MASK));
    PTL_ASSERT(range_free(p, start, end));
    if (p->nvads == p->vad_cap) {
        p->vad_cap = p->vad_cap ? p->vad_cap * 2 : 8;
        p->vads = ptl__xrealloc(p->vads, (size_t)p->vad_cap * sizeof *p->vads);
    }
    int i = 0;
    while (i < p->nvads && p->vads[i].start < start)
        i++;
    memmove(&p->vads[i + 1], &p->vads[i], (size_t)(p->nvads - i) * sizeof *p->vads);
    p->vads[i] = (ptl__vad){start, end, (uint8_t)kind, (uint8_t)protect, (uint8_t)cache, owner};
    p->nvads++;
    return &p->vads[i];
}

void ptl__vad_remove(ptl_process *p, ptl__vad *v)
{
    int i = (int)(v - p->vads);
    PTL_ASSERT(i >= 0 && i < p->nvads);
    memmove(&p->vads[i], &p->vads[i + 1], (size_t)(p->nvads - i - 1) * sizeof *p->vads);
    p->nvads--;
}

/* ---- commit, paging ---------------------------------------------------------------- */

static int protect_writable(int prot)
{
    int access = prot & 7;
    return access == MM_READWRITE || access == MM_WRITECOPY || access == MM_EXECUTE_READWRITE ||
           access == MM_EXECUTE_WRITECOPY;
}

int ptl__protect_from_win32(uint32_t page_protect)
{
    uint32_t base = page_protect & 0xFFu;
    int prot;
    switch (base) {
    case 0x01:
        prot = MM_NOACCESS;
        break; /* PAGE_NOACCESS */
    case 0x02:
        prot = MM_READONLY;
        break; /* PAGE_READONLY */
    case 0x04:
        prot = MM_READWRITE;
        break; /* PAGE_READWRITE */
    case 0x08:
        prot = MM_WRITECOPY;
        break; /* PAGE_WRITECOPY */
    case 0x10:
        prot = MM_EXECUTE;
        break; /* PAGE_EXECUTE */
    case 0x20:
        prot = MM_EXECUTE_READ;
        break; /* PAGE_EXECUTE_READ */
    case 0x40:
        prot = MM_EXECUTE_READWRITE;
        break;
    case 0x80:
        prot = MM_EXECUTE_WRITECOPY;
        break;
    default:
        return -1;
    }
    if (page_protect & 0x200u) /* PAGE_NOCACHE */
        prot |= MM_NOCACHE;
    if (page_protect & ~0x3FFu)
        return -1;
    return prot;
}

/* The first index from i (below n) whose entry has a bit of mask set, or n. Four entries
 * at a time: commit and decommit scan whole gigabyte regions with it. */
PTL_NO_COVERAGE static uint32_t zero_run_end(const uint32_t *w, uint32_t i, uint32_t n,
                                             uint32_t mask)
{
    while (i + 4 <= n && ((w[i] | w[i + 1] | w[i + 2] | w[i + 3]) & mask) == 0)
        i += 4;
    while (i < n && (w[i] & mask) == 0)
        i++;
    return i;
}

int ptl__process_commit(ptl_process *p, uint32_t start, uint32_t end, int protect)
{
    ptl_machine *m = p->m;
    /* a page table at a time: its PTEs that are still zero become demand-zero, each
     * stretch of them in one run (the same writes as one ptl__pte_write a page) */
    for (uint64_t va = start; va < end;) {
        uint64_t table_end = (va | (PTL_PDE_SPAN - 1)) + 1;
        uint32_t stop = (uint32_t)(table_end < end ? table_end : end);
        if (ptl__pte_ensure_table(m, p->pd, (uint32_t)va) != 0)
            return -1;
        uint32_t pde = ptl__pde_read(m, p->pd, (uint32_t)va);
        const uint32_t *ptes = ptl__phys_words_ro(&m->phys, pde >> PTL_PAGE_SHIFT);
        uint32_t base = (uint32_t)va & ~(PTL_PDE_SPAN - 1), last = (stop - 1 - base) >> 12;
        for (uint32_t i = ((uint32_t)va - base) >> 12; i <= last;) {
            uint32_t j = zero_run_end(ptes, i, last + 1, ~0u);
            if (j > i)
                ptl__pte_write_run(m, p->pd, base + (i << 12), j - i, PTL_SWPTE_PROT(protect), 0);
            i = j + 1;
        }
        va = stop;
    }
    return 0;
}

static void slot_free(ptl__pagefile *pf, uint32_t slot)
{
    PTL_ASSERT(slot >= 1 && slot <= pf->nslots && pf->slots[slot - 1]);
    free(pf->slots[slot - 1]);
    pf->slots[slot - 1] = NULL;
    pf->free_slots = ptl__xrealloc(pf->free_slots, (pf->nfree + 1) * sizeof *pf->free_slots);
    pf->free_slots[pf->nfree++] = slot;
    pf->used--;
}

static uint32_t slot_alloc(ptl__pagefile *pf)
{
    uint32_t slot;
    if (pf->nfree) {
        slot = pf->free_slots[--pf->nfree];
    } else {
        if (pf->nslots >= 0xFFFFFu)
            return 0; /* the page file is full */
        pf->slots = ptl__xrealloc(pf->slots, (pf->nslots + 1) * sizeof *pf->slots);
        pf->slots[pf->nslots++] = NULL;
        slot = pf->nslots;
    }
    pf->slots[slot - 1] = ptl__xcalloc(1, PTL_PAGE_SIZE);
    pf->used++;
    return slot;
}

/* Whether decommitting clears this nonzero PTE with no per-page bookkeeping: no page-file
 * slot to free and no private frame to release. */
static int clears_plainly(const ptl_machine *m, const ptl_process *p, uint32_t pte, int owns_frames)
{
    if (pte & PTL_PTE_VALID) {
        uint32_t pfn = pte >> PTL_PAGE_SHIFT;
        return !owns_frames || pfn >= m->phys.ram_pages ||
               m->phys.pfn[pfn].Use != PTL_USE_PRIVATE || m->phys.pfn[pfn].OwnerPid != p->pid;
    }
    return (pte & (PTL_PTE_TRANSITION | PTL_PTE_PROTOTYPE)) || !(pte >> PTL_PAGE_SHIFT);
}

/* The end of the stretch from i (below n) of nonzero PTEs that clear plainly and are all
 * valid or all invalid, like w[i]: demand-zero ones four at a time. A stretch of invalid
 * PTEs then flushes no TLB entry, and a valid one flushes exactly its own, as the same
 * PTEs written one by one would. */
PTL_NO_COVERAGE static uint32_t plain_run_end(const ptl_machine *m, const ptl_process *p,
                                              const uint32_t *w, uint32_t i, uint32_t n,
                                              int owns_frames)
{
    const uint32_t valid = w[i] & PTL_PTE_VALID;
    for (;;) {
        while (!valid && i + 4 <= n && w[i] && w[i + 1] && w[i + 2] && w[i + 3] &&
               ((w[i] | w[i + 1] | w[i + 2] | w[i + 3]) & (PTL_PTE_VALID | ~PTL_PAGE_MASK)) == 0)
            i += 4;
        if (i < n && w[i] && (w[i] & PTL_PTE_VALID) == valid &&
            clears_plainly(m, p, w[i], owns_frames))
            i++;
        else
            return i;
    }
}

void ptl__process_decommit(ptl_process *p, uint32_t start, uint32_t end)
{
    ptl_machine *m = p->m;
    const ptl__vad *vad = ptl__vad_find(p, start);
    /* only private memory owns its frames; views and locked mappings borrow theirs */
    int owns_frames = vad && vad->kind == PTL_VAD_PRIVATE;
    /* A page table at a time: where there is no table there is nothing to decommit.
     * Each stretch of PTEs that needs no bookkeeping (demand-zero, borrowed frames) is
     * cleared in one run; a private frame or a page-file slot is released page by page. */
    for (uint64_t va = start; va < end;) {
        uint64_t table_end = (va | (PTL_PDE_SPAN - 1)) + 1;
        uint32_t stop = (uint32_t)(table_end < end ? table_end : end);
        uint32_t pde = ptl__pde_read(m, p->pd, (uint32_t)va);
        if (!(pde & PTL_PTE_VALID)) {
            va = stop;
            continue;
        }
        const uint32_t *ptes = ptl__phys_words_ro(&m->phys, pde >> PTL_PAGE_SHIFT);
        uint32_t base = (uint32_t)va & ~(PTL_PDE_SPAN - 1), n = ((stop - 1 - base) >> 12) + 1;
        for (uint32_t i = ((uint32_t)va - base) >> 12; i < n;) {
            uint32_t j = zero_run_end(ptes, i, n, ~0u); /* nothing to clear: no write */
            if (j > i) {
                i = j;
                continue;
            }
            uint32_t a = base + (i << 12);
            j = plain_run_end(m, p, ptes, i, n, owns_frames);
            if (j > i) {
                ptl__pte_write_run(m, p->pd, a, j - i, 0, 0);
                i = j;
                continue;
            }
            uint32_t pte = ptes[i];
            if (pte & PTL_PTE_VALID) { /* a private frame of this process */
                uint32_t pfn = pte >> PTL_PAGE_SHIFT;
                ptl__pte_write(m, p->pd, a, 0);
                p->private_pages--;
                if (m->phys.pfn[pfn].ShareCount)
                    ptl__perf_event(m, PTL_EV_HAZARD,
                                    "%s's page %x is freed while a view of physical memory "
                                    "still maps it: the viewer now sees a free page",
                                    p->name, pfn);
                ptl__phys_release(&m->phys, pfn); /* when unlocked, if it is locked */
            } else if (pte) {                     /* in the page file */
                slot_free(&m->procs.pagefile, pte >> PTL_PAGE_SHIFT);
                p->paged_out--;
                ptl__pte_write(m, p->pd, a, 0);
            }
            i++;
        }
        va = stop;
    }
}

int ptl__process_resolve_fault(ptl_machine *m, uint32_t va, int write)
{
    (void)write; /* protection is checked by the MMU after the page is in */
    ptl_process *p = m->procs.current;
    if (va >= m->layout.user_hi || va < m->layout.user_lo)
        return 0; /* system space: nothing pageable is modelled yet */
    ptl__vad *v = ptl__vad_find(p, va);
    if (!v || v->kind != PTL_VAD_PRIVATE)
        return 0;
    uint32_t pte;
    if (ptl__pte_read(m, p->pd, va, &pte) != 0 || pte == 0 || (pte & PTL_PTE_VALID))
        return 0;
    if (pte & (PTL_PTE_TRANSITION | PTL_PTE_PROTOTYPE))
        return 0;
    int prot = (int)PTL_SWPTE_GET_PROT(pte);
    if ((prot & 7) == MM_ZERO_ACCESS || (prot & MM_DECOMMIT))
        return 0;
    uint32_t pfn = ptl__phys_alloc(&m->phys, PTL_USE_PRIVATE, p->pid);
    if (pfn == UINT32_MAX)
        return 0; /* no RAM: NT would trim working sets; ptelab fails the access */
    uint32_t slot = pte >> PTL_PAGE_SHIFT;
    if (slot) { /* in the page file: read it back */
        memcpy(ptl__phys_frame(&m->phys, pfn), m->procs.pagefile.slots[slot - 1], PTL_PAGE_SIZE);
        slot_free(&m->procs.pagefile, slot);
    }
    m->phys.pfn[pfn].OriginalProtection = (uint8_t)prot;
    ptl__pte_write(m, p->pd, va,
                   ptl__pte_make(pfn, protect_writable(prot), 1, (prot & MM_NOCACHE) ? 0 : 1));
    p->private_pages++;
    if (slot)
        p->paged_out--;
    return 1;
}

/* ---- public ------------------------------------------------------------------------ */

ptl_process *ptl_process_create(ptl_machine *m, const char *image_name)
{
    if (!ptl__machine_ok(m))
        return NULL;
    if (m->stop.stopped) {
        ptl__fail("the machine is stopped (0x%08X); it runs nothing more", m->stop.info.code);
        return NULL;
    }
    if (!image_name || !image_name[0]) {
        ptl__fail("a process needs an image name");
        return NULL;
    }
    int slot = free_eprocess_slot(m);
    if (slot < 0) {
        ptl__fail("%u processes are running, as many as ptelab's EPROCESS area holds",
                  EPROCESS_SLOTS);
        return NULL;
    }
    uint32_t pid = m->procs.next_pid;
    uint32_t pd = ptl__pte_new_pd(m, pid);
    if (pd == UINT32_MAX) {
        ptl__fail("no RAM for the page directory of %s", image_name);
        return NULL;
    }
    m->procs.next_pid += 4;
    ptl_process *p = new_process(m, image_name, pid, pd, slot);
    ptl__perf_event(m, PTL_EV_PROCESS, "process %s created (pid 0x%x)", p->name, pid);
    return p;
}

static void teardown(ptl_process *p)
{
    ptl_machine *m = p->m;
    ptl__kernel_process_exit(m, p);
    ptl__objects_process_exit(m, p);
    ptl__mdl_process_exit(m, p);
    while (p->nvads > 0) {
        ptl__vad *v = &p->vads[p->nvads - 1];
        if (v->kind == PTL_VAD_LOCKED_PAGES) { /* an MDL mapping whose MDL was freed first */
            ptl__mdl_vad_teardown(m, p, v);
            continue;
        }
        ptl__process_decommit(p, v->start, v->end);
        ptl__vad_remove(p, v);
    }
    if (m->procs.current == p)
        ptl__process_switch(m, m->procs.system);
    ptl__pte_free_pd(m, p->pd);
    p->exited = 1;
}

uint32_t ptl_process_exit(ptl_process *p, ptl_stop *stop)
{
    if (!ptl__process_ok(p))
        return 0;
    ptl_machine *m = p->m;
    if (p->is_system) {
        ptl__fail("the System process does not exit");
        return 0;
    }
    ptl__frame f;
    if (ptl__enter(m, &f) && setjmp(f.jb) == 0) {
        if (p->locked_pages)
            ptl__bugcheck(m, 0x76, 0, p->eprocess_va, p->locked_pages, 0);
        ptl__perf_event(m, PTL_EV_PROCESS, "process %s (pid 0x%x) exits", p->name, p->pid);
        teardown(p);
    }
    ptl__leave(m, &f);
    return ptl__stop_result(m, stop);
}

uint32_t ptl_process_swap_out(ptl_process *p)
{
    if (!ptl__process_ok(p) || p->m->stop.stopped)
        return 0;
    ptl_machine *m = p->m;
    uint32_t written = 0;
    for (int i = 0; i < p->nvads; i++) {
        ptl__vad *v = &p->vads[i];
        if (v->kind != PTL_VAD_PRIVATE)
            continue; /* adapter views and locked mappings are never paged */
        /* a page table at a time: an absent table is skipped whole, an invalid PTE costs a
         * word's look */
        for (uint64_t va = v->start; va < v->end;) {
            uint64_t table_end = (va | (PTL_PDE_SPAN - 1)) + 1;
            uint32_t stop = (uint32_t)(table_end < v->end ? table_end : v->end);
            uint32_t pde = ptl__pde_read(m, p->pd, (uint32_t)va);
            const uint32_t *ptes =
                pde & PTL_PTE_VALID ? ptl__phys_words_ro(&m->phys, pde >> PTL_PAGE_SHIFT) : NULL;
            for (uint32_t a = (uint32_t)va; ptes && a < stop; a += PTL_PAGE_SIZE) {
                uint32_t pte = ptes[(a >> 12) & 0x3FF];
                if (!(pte & PTL_PTE_VALID))
                    continue;
                uint32_t pfn = pte >> PTL_PAGE_SHIFT;
                if (pfn >= m->phys.ram_pages || m->phys.pfn[pfn].LockCount ||
                    m->phys.pfn[pfn].ShareCount > 1)
                    continue; /* locked for I/O or mapped elsewhere too: stays resident */
                uint32_t slot = slot_alloc(&m->procs.pagefile);
                if (!slot)
                    return written;
                memcpy(m->procs.pagefile.slots[slot - 1], ptl__phys_frame_ro(&m->phys, pfn),
                       PTL_PAGE_SIZE);
                /* the page's own protection, from its commit, not the reservation's */
                ptl__pte_write(m, p->pd, a,
                               PTL_SWPTE_PROT(m->phys.pfn[pfn].OriginalProtection) |
                                   (slot << PTL_PAGE_SHIFT));
                ptl__phys_release(&m->phys, pfn);
                p->private_pages--;
                p->paged_out++;
                written++;
            }
            va = stop;
        }
    }
    ptl__perf_event(m, PTL_EV_PROCESS, "process %s swapped out: %u pages to the page file", p->name,
                    written);
    return written;
}

uint32_t ptl_user_alloc(ptl_process *p, uint32_t bytes)
{
    if (!ptl__process_ok(p) || p->m->stop.stopped)
        return 0;
    uint32_t start = ptl__vad_find_free(p, 0, bytes);
    if (!start)
        return 0;
    uint32_t end = start + ((bytes + PTL_PAGE_MASK) & ~PTL_PAGE_MASK);
    ptl__vad_insert(p, start, end, PTL_VAD_PRIVATE, MM_READWRITE, 1, 0);
    if (ptl__process_commit(p, start, end, MM_READWRITE) != 0) {
        ptl__process_decommit(p, start, end);
        ptl__vad_remove(p, ptl__vad_find(p, start));
        return 0;
    }
    return start;
}

static NTSTATUS user_access(ptl_process *p, uint32_t va, void *buf, size_t n, int write)
{
    if (!ptl__process_ok(p))
        return (NTSTATUS)0xC0000008; /* STATUS_INVALID_HANDLE */
    ptl_machine *m = p->m;
    if (m->stop.stopped)
        return (NTSTATUS)0xC0000005;
    if (n == 0)
        return 0;
    if (!buf)
        return (NTSTATUS)0xC000000D; /* STATUS_INVALID_PARAMETER */
    ptl__process_switch(m, p);       /* a user-mode access means p is running */
    ptl__fault f = ptl__mmu_copy(m, va, buf, n, write, 1, 1);
    return f == PTL_FAULT_NONE ? 0 : (NTSTATUS)0xC0000005; /* STATUS_ACCESS_VIOLATION */
}

NTSTATUS ptl_user_read(ptl_process *p, uint32_t va, void *buf, size_t n)
{
    return user_access(p, va, buf, n, 0);
}

NTSTATUS ptl_user_write(ptl_process *p, uint32_t va, const void *buf, size_t n)
{
    return user_access(p, va, (void *)(uintptr_t)buf, n, 1);
}

uint32_t ptl_process_id(const ptl_process *p)
{
    return p && p->magic == PTL__PROCESS_MAGIC ? p->pid : 0;
}

const char *ptl_process_name(const ptl_process *p)
{
    return p && p->magic == PTL__PROCESS_MAGIC ? p->name : NULL;
}

PEPROCESS ptl_process_eprocess(ptl_process *p)
{
    return p && p->magic == PTL__PROCESS_MAGIC ? &p->nt : NULL;
}

uint32_t ptl_process_dirbase(const ptl_process *p)
{
    return p && p->magic == PTL__PROCESS_MAGIC ? p->pd << PTL_PAGE_SHIFT : 0;
}

ptl_process *ptl_system_process(ptl_machine *m)
{
    return ptl__machine_ok(m) ? m->procs.system : NULL;
}

int ptl__process_vads_check(ptl_machine *m, const ptl_process *p, FILE *why)
{
    for (int i = 0; i < p->nvads; i++) {
        const ptl__vad *v = &p->vads[i];
        if (v->start < m->layout.user_lo || v->end > m->layout.user_hi || v->start >= v->end ||
            (i > 0 && p->vads[i - 1].end > v->start)) {
            fprintf(why, "process %s: VAD %d [%08x,%08x) is out of place\n", p->name, i, v->start,
                    v->end);
            return -1;
        }
    }
    return 0;
}

int ptl__process_check(ptl_machine *m, FILE *why)
{
    if (!m->procs.current || m->procs.current->exited || m->procs.current->pd != m->mmu.cr3) {
        fprintf(why, "process: the current process is gone or is not in CR3\n");
        return -1;
    }
    for (ptl_process *p = m->procs.list; p; p = p->next) {
        if (p->exited || p->is_system)
            continue;
        if (ptl__process_vads_check(m, p, why) != 0)
            return -1;
        uint32_t private_valid = 0, in_pagefile = 0;
        for (uint32_t pdi = 0; pdi < (m->pte.system_start >> 22); pdi++) {
            uint32_t pde = (ptl__phys_words_ro(&m->phys, p->pd))[pdi];
            if (!(pde & PTL_PTE_VALID))
                continue;
            const uint32_t *ptes = ptl__phys_words_ro(&m->phys, pde >> PTL_PAGE_SHIFT);
            for (uint32_t j = 0; j < PTL_PTES_PER_PAGE; j++) {
                if (!ptes[j])
                    continue;
                uint32_t va = (pdi << 22) | (j << 12);
                const ptl__vad *v = ptl__vad_find(p, va);
                if (!v) {
                    fprintf(why, "process %s: PTE %08x for %08x lies in no VAD\n", p->name, ptes[j],
                            va);
                    return -1;
                }
                if ((ptes[j] & PTL_PTE_VALID) && !(ptes[j] & PTL_PTE_OWNER)) {
                    fprintf(why, "process %s: user PTE for %08x is kernel-only\n", p->name, va);
                    return -1;
                }
                uint32_t f = ptes[j] >> PTL_PAGE_SHIFT;
                if ((ptes[j] & PTL_PTE_VALID) && v->kind == PTL_VAD_PRIVATE &&
                    f < m->phys.ram_pages && m->phys.pfn[f].Use == PTL_USE_PRIVATE)
                    private_valid++;
                in_pagefile += ptl__pte_in_pagefile(ptes[j]);
            }
        }
        if (private_valid != p->private_pages) {
            fprintf(why, "process %s: %u valid private pages, counter says %u\n", p->name,
                    private_valid, p->private_pages);
            return -1;
        }
        if (in_pagefile != p->paged_out) {
            fprintf(why, "process %s: %u PTEs name page-file slots, counter says %u\n", p->name,
                    in_pagefile, p->paged_out);
            return -1;
        }
    }
    return ptl__process_pagefile_check(m, why);
}

int ptl__process_pagefile_check(ptl_machine *m, FILE *why)
{
    /* every slot in use belongs to one paged-out page of a live process */
    uint64_t paged = 0;
    for (const ptl_process *p = m->procs.list; p; p = p->next)
        if (!p->exited)
            paged += p->paged_out;
    const ptl__pagefile *pf = &m->procs.pagefile;
    if (paged != pf->used || pf->used + pf->nfree != pf->nslots) {
        fprintf(why,
                "process: %llu pages paged out, the page file has %u slots in use "
                "(%u slots, %u free)\n",
                (unsigned long long)paged, pf->used, pf->nslots, pf->nfree);
        return -1;
    }
    return 0;
}
