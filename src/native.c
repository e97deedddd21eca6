/* native.c - native mode: an emulated virtual address is also a host address.
 *
 * Real driver code dereferences what MmMapIoSpace returns. On Linux x86-64 ptelab reserves
 * the host's low 4 GB and mirrors every valid PTE of system space, and of the current
 * process's user space, into it: the host page at VA maps the machine's physical frame
 * (the sparse memfd of phys.c, at frame * 4096) with the PTE's write permission. Two
 * mappings of one frame therefore share bytes for real, and the page tables appear
 * read-only at the self-map (0xC0000000), so code that reads a PTE there works.
 *
 *     host VA 0x00010000 .. 0xFFFFFFFF   reserved PROT_NONE, then per page:
 *        valid PTE  -> mmap(MAP_SHARED | MAP_FIXED, memfd, pfn * 4096), R or RW
 *        otherwise  -> PROT_NONE
 *     0xC0000000 + i * 4096  -> page table i of the current directory, read-only
 *
 * The software MMU stays the source of truth: every PTE write goes through
 * ptl__pte_write, which calls ptl__native_pte; a context switch (ptl__process_switch ->
 * ptl__mmu_set_cr3) swaps the user half here. A raw access to an address with no valid
 * mapping raises SIGSEGV; the handler turns it into what NT does, through the same
 * ptl__kfault the software MMU uses: a demand-zero or paged-out user page is brought in
 * and the access retried; otherwise the STOP for a system address or at DISPATCH_LEVEL,
 * and at PASSIVE_LEVEL the exception a driver's __try can catch for a user address. The
 * handler runs ptelab code inside a synchronous fault taken in driver code, never inside
 * ptelab's own allocator, which is what makes that safe enough here.
 *
 * Native mode needs the whole low 4 GB, so one machine per host process has it (a host
 * resource, hence the one process-wide owner below). It is off under sanitizers and
 * valgrind (their own mappings live there) and without a memfd; ptl_config.native chooses
 * auto (default), on (boot says so when it cannot) or off.
 *
 * Not modelled natively: Accessed/Dirty bits of native accesses, and the DPC "user address
 * in an arbitrary context" hazard event for accesses that succeed (docs/fidelity.md).
 *
 * Invariant (ptl__native_check): the shadow (what the host maps) equals what the page
 * tables of the current context say, page by page.
 */
#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#define LOW_START  0x10000u
#define SPACE_END  (1ull << 32)
#define VA_PAGES   (1u << 20)
#define NOT_MAPPED 0u
/* A valid PTE whose frame no device decodes: reads give all ones (a PCI master abort, as
 * READ_REGISTER_* and the software MMU give), so such pages map a read-only file of 0xFF.
 * A write there faults; NT would drop it (docs/fidelity.md). */
#define ALL_ONES   UINT32_MAX
#define ONES_PAGES 256u /* one mmap covers up to this many consecutive undecoded pages */

static pthread_mutex_t owner_lock = PTHREAD_MUTEX_INITIALIZER;
static ptl_machine *owner;        /* the one machine that holds the host's low 4 GB */
static struct sigaction old_segv; /* the handler ours replaced, for faults not ours */

static int decoded(ptl_machine *m, uint32_t pfn)
{
    return pfn < m->phys.ram_pages ||
           ptl__phys_aperture_of(&m->phys, (uint64_t)pfn << PTL_PAGE_SHIFT) != NULL;
}

/* What the k-th page of a run that starts with `want` maps: the next frame, or the same
 * nothing / all-ones. */
static inline uint32_t want_at(uint32_t want, uint32_t k)
{
    return want == NOT_MAPPED || want == ALL_ONES ? want : want + k;
}

/* What the host page for one PTE maps (frame + 1, NOT_MAPPED or ALL_ONES), and whether
 * writable, with pde the PDE above it. */
static uint32_t want_of(ptl_machine *m, uint32_t pde, uint32_t pte, int *writable)
{
    *writable = 0;
    if (!(pte & PTL_PTE_VALID))
        return NOT_MAPPED;
    if (!decoded(m, pte >> PTL_PAGE_SHIFT))
        return ALL_ONES;
    *writable = (pde & pte & PTL_PTE_WRITE) != 0;
    return (pte >> PTL_PAGE_SHIFT) + 1;
}

static void *map_ones(ptl_machine *m, void *at, uint32_t count)
{
    return mmap(at, (size_t)count << PTL_PAGE_SHIFT, PROT_READ, MAP_SHARED | MAP_FIXED,
                m->native.ones_fd, 0);
}

static void mirror_page(ptl_machine *m, uint32_t va, uint32_t pfn_plus1, int writable)
{
    if (va < LOW_START)
        return; /* the first 64 KB stays the host's NULL guard, as it is NT's */
    uint32_t page = va >> PTL_PAGE_SHIFT;
    ptl__native *n = &m->native;
    if (n->shadow[page] == pfn_plus1 && n->writable[page] == (uint8_t)writable)
        return;
    void *at = (void *)(uintptr_t)(va & ~PTL_PAGE_MASK), *r;
    if (pfn_plus1 == ALL_ONES) {
        r = map_ones(m, at, 1);
        writable = 0;
    } else if (pfn_plus1) {
        uint32_t pfn = pfn_plus1 - 1;
        ptl__phys_frame(&m->phys, pfn); /* the frame's bytes now exist on the host */
        r = mmap(at, PTL_PAGE_SIZE, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED | MAP_FIXED,
                 m->phys.memfd, (off_t)pfn << PTL_PAGE_SHIFT);
    } else {
        r = mmap(at, PTL_PAGE_SIZE, PROT_NONE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
    }
    if (r == MAP_FAILED) {
        fprintf(stderr, "ptelab: native mode: cannot map %08x: %s\n", va, strerror(errno));
        abort();
    }
    n->shadow[page] = pfn_plus1;
    n->writable[page] = (uint8_t)writable;
    n->mirror_ops++;
}

/* mirror_page for count pages from va at once: frames pfn_plus1, pfn_plus1 + 1, ... (or none
 * when pfn_plus1 is 0), one mmap for the lot unless the mirror already shows it. */
static void mirror_run(ptl_machine *m, uint32_t va, uint32_t count, uint32_t pfn_plus1,
                       int writable)
{
    if (count == 1 || va < LOW_START) {
        for (uint32_t i = 0; i < count; i++)
            mirror_page(m, va + i * PTL_PAGE_SIZE, want_at(pfn_plus1, i), writable);
        return;
    }
    if (pfn_plus1 == ALL_ONES && count > ONES_PAGES) { /* longer than the file of ones */
        for (uint32_t done = 0; done < count; done += ONES_PAGES)
            mirror_run(m, va + done * PTL_PAGE_SIZE,
                       count - done < ONES_PAGES ? count - done : ONES_PAGES, ALL_ONES, 0);
        return;
    }
    if (pfn_plus1 == ALL_ONES)
        writable = 0;
    ptl__native *n = &m->native;
    uint32_t page = va >> PTL_PAGE_SHIFT, same = 1;
    for (uint32_t i = 0; i < count && same; i++)
        same = n->shadow[page + i] == want_at(pfn_plus1, i) &&
               n->writable[page + i] == (uint8_t)writable;
    if (same)
        return;
    void *at = (void *)(uintptr_t)va, *r;
    size_t bytes = (size_t)count << PTL_PAGE_SHIFT;
    if (pfn_plus1 == ALL_ONES) {
        r = map_ones(m, at, count);
    } else if (pfn_plus1) {
        for (uint32_t i = 0; i < count; i++)
            ptl__phys_frame(&m->phys, pfn_plus1 - 1 + i); /* the frames' bytes now exist */
        r = mmap(at, bytes, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED | MAP_FIXED,
                 m->phys.memfd, (off_t)(pfn_plus1 - 1) << PTL_PAGE_SHIFT);
    } else {
        r = mmap(at, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1,
                 0);
    }
    if (r == MAP_FAILED) {
        fprintf(stderr, "ptelab: native mode: cannot map %08x+%u pages: %s\n", va, count,
                strerror(errno));
        abort();
    }
    for (uint32_t i = 0; i < count; i++) {
        n->shadow[page + i] = want_at(pfn_plus1, i);
        n->writable[page + i] = (uint8_t)writable;
    }
    n->mirror_ops++;
}

static uint32_t *words(ptl_machine *m, uint32_t pfn)
{
    return (uint32_t *)ptl__phys_frame(&m->phys, pfn);
}

/* What the host page at va must map in the current context: frame + 1 or 0. dir: the
 * current page directory's words. */
static uint32_t expected_in(ptl_machine *m, const uint32_t *dir, uint32_t va, int *writable)
{
    *writable = 0;
    if (va < LOW_START)
        return NOT_MAPPED;
    if (va >= PTL_PTE_BASE && va < PTL_PTE_BASE + (4u << 20)) { /* the self-map */
        uint32_t pde = dir[(va - PTL_PTE_BASE) >> PTL_PAGE_SHIFT];
        return (pde & PTL_PTE_VALID) ? (pde >> PTL_PAGE_SHIFT) + 1 : NOT_MAPPED;
    }
    uint32_t pde = dir[va >> 22];
    if (!(pde & PTL_PTE_VALID))
        return NOT_MAPPED;
    uint32_t pte = words(m, pde >> PTL_PAGE_SHIFT)[(va >> 12) & 0x3FF];
    return want_of(m, pde, pte, writable);
}

/* Pages to mirror, gathered into runs of consecutive frames with one permission so that
 * each run costs one mmap. */
typedef struct mirror_batch {
    uint32_t va, want, len;
    int w;
} mirror_batch;

static void batch_flush(ptl_machine *m, mirror_batch *b)
{
    if (b->len)
        mirror_run(m, b->va, b->len, b->want, b->w);
    b->len = 0;
}

static void batch_add(ptl_machine *m, mirror_batch *b, uint32_t va, uint32_t want, int w)
{
    if (b->len && va == b->va + b->len * PTL_PAGE_SIZE && w == b->w &&
        want == want_at(b->want, b->len)) {
        b->len++;
        return;
    }
    batch_flush(m, b);
    *b = (mirror_batch){va, want, 1, w};
}

/* Mirror [start, end) from the page tables, where the host view there is still all
 * PROT_NONE (a fresh reservation, or a user half just dropped): 4 MB regions whose PDE is
 * invalid stay as they are. */
static void sync_range(ptl_machine *m, uint32_t start, uint64_t end)
{
    const uint32_t *dir = words(m, m->mmu.cr3);
    mirror_batch b = {0};
    for (uint64_t va = start; va < end; va += PTL_PAGE_SIZE) {
        int selfmap = va >= PTL_PTE_BASE && va < PTL_PTE_BASE + (4u << 20);
        if (!selfmap && !(dir[va >> 22] & PTL_PTE_VALID) && (va & 0x3FFFFF) == 0) {
            va += (4u << 20) - PTL_PAGE_SIZE; /* the whole region: nothing to map */
            continue;
        }
        int w;
        uint32_t want = expected_in(m, dir, (uint32_t)va, &w);
        if (want || m->native.shadow[va >> PTL_PAGE_SHIFT])
            batch_add(m, &b, (uint32_t)va, want, w);
    }
    batch_flush(m, &b);
}

static void on_segv(int sig, siginfo_t *si, void *ucv)
{
    uintptr_t a = (uintptr_t)si->si_addr;
    ptl_machine *m = ptl_current();
    if (m && m == owner && m->native.on && a < SPACE_END && m->frames) {
        ucontext_t *uc = ucv;
        int write = (uc->uc_mcontext.gregs[REG_ERR] & 2) != 0;
        uint32_t va = (uint32_t)a;
        m->native.faults++;
        if (m->kernel.irql < 2 && va < m->pte.system_start &&
            ptl__process_resolve_fault(m, va, write))
            return; /* the page is in and mirrored: the instruction runs again */
        uint32_t pte = 0;
        int present = ptl__pte_read(m, m->mmu.cr3, va, &pte) == 0 && (pte & PTL_PTE_VALID);
        m->mmu.fault_va = va;
        m->mmu.fault_write = write;
        m->mmu.fault = present ? PTL_FAULT_PROTECTION : PTL_FAULT_NOT_PRESENT;
        m->mmu.fault_pte = pte;
        ptl__kfault(m, write); /* a STOP or an exception: unwinds out of the handler */
    }
    /* not ptelab's: hand it to whoever handled SIGSEGV before us (a test framework, a
     * debugger), or let the host crash as it would have */
    if ((old_segv.sa_flags & SA_SIGINFO) && old_segv.sa_sigaction) {
        old_segv.sa_sigaction(sig, si, ucv);
        return;
    }
    if (old_segv.sa_handler != SIG_DFL && old_segv.sa_handler != SIG_IGN && old_segv.sa_handler) {
        old_segv.sa_handler(sig);
        return;
    }
    signal(SIGSEGV, SIG_DFL); /* the instruction faults again, with the default action */
}

/* ONES_PAGES pages of 0xFF in a memfd, for mapping read-only wherever nothing decodes. */
static int make_ones_file(void)
{
    int fd = memfd_create("ptelab-all-ones", MFD_CLOEXEC);
    if (fd < 0)
        return -1;
    static uint8_t ones[PTL_PAGE_SIZE];
    memset(ones, 0xFF, sizeof ones);
    for (uint32_t i = 0; i < ONES_PAGES; i++)
        if (write(fd, ones, sizeof ones) != (ssize_t)sizeof ones) {
            close(fd);
            return -1;
        }
    return fd;
}

int ptl__native_start(ptl_machine *m, const char **why)
{
#ifdef PTELAB_SANITIZED
    *why = "a sanitizer build keeps its shadow memory in the low 4 GB";
    return -1;
#endif
    if (m->nislands) {
        *why = "the host has its own mappings below 4 GB (valgrind?)";
        return -1;
    }
    if (m->phys.memfd < 0) {
        *why = "physical memory is not a memfd";
        return -1;
    }
    pthread_mutex_lock(&owner_lock);
    if (owner) {
        pthread_mutex_unlock(&owner_lock);
        *why = "another machine of this process is native";
        return -1;
    }
    void *r = mmap((void *)(uintptr_t)LOW_START, (size_t)(SPACE_END - LOW_START), PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
    if (r == MAP_FAILED || r != (void *)(uintptr_t)LOW_START) {
        if (r != MAP_FAILED)
            munmap(r, (size_t)(SPACE_END - LOW_START));
        pthread_mutex_unlock(&owner_lock);
        *why = "the host's low 4 GB cannot be reserved";
        return -1;
    }
    owner = m;
    /* (Re)install the handler: someone may have replaced it since the last machine (test
     * frameworks install their own around each test). */
    struct sigaction cur;
    sigaction(SIGSEGV, NULL, &cur);
    if (!((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == on_segv)) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_segv;
        sa.sa_flags = SA_SIGINFO | SA_NODEFER; /* a longjmp out leaves the mask alone */
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, &old_segv);
    }
    pthread_mutex_unlock(&owner_lock);
    m->native.ones_fd = make_ones_file();
    if (m->native.ones_fd < 0) {
        munmap((void *)(uintptr_t)LOW_START, (size_t)(SPACE_END - LOW_START));
        pthread_mutex_lock(&owner_lock);
        owner = NULL;
        pthread_mutex_unlock(&owner_lock);
        *why = "no memfd for the all-ones pages";
        return -1;
    }
    m->native.shadow = ptl__xcalloc(VA_PAGES, sizeof *m->native.shadow);
    m->native.writable = ptl__xcalloc(VA_PAGES, 1);
    m->native.on = 1;
    sync_range(m, LOW_START, SPACE_END); /* what boot mapped before now */
    return 0;
}

void ptl__native_stop(ptl_machine *m)
{
    if (!m->native.on)
        return;
    munmap((void *)(uintptr_t)LOW_START, (size_t)(SPACE_END - LOW_START));
    free(m->native.shadow);
    free(m->native.writable);
    close(m->native.ones_fd);
    m->native.on = 0;
    pthread_mutex_lock(&owner_lock);
    if (owner == m)
        owner = NULL;
    pthread_mutex_unlock(&owner_lock);
}

void ptl__native_pte(ptl_machine *m, uint32_t pd, uint32_t va, uint32_t pte)
{
    if (!m->native.on)
        return;
    if (va < m->pte.system_start && pd != m->mmu.cr3)
        return; /* another process's user space: mirrored when it runs */
    int w;
    uint32_t want = want_of(m, ptl__pde_read(m, m->mmu.cr3, va), pte, &w);
    mirror_page(m, va, want, w);
}

void ptl__native_pte_run(ptl_machine *m, uint32_t pd, uint32_t va, uint32_t n, uint32_t first,
                         uint32_t step)
{
    if (!m->native.on)
        return;
    if (va < m->pte.system_start && pd != m->mmu.cr3)
        return; /* another process's user space: mirrored when it runs */
    /* split the run where the host view stops being one contiguous piece: a page table
     * boundary (another PDE's write bit), a frame nothing decodes, a step that is neither
     * 0 nor the next frame */
    uint32_t seg_va = va, seg_want = 0, seg_len = 0;
    int seg_w = 0;
    uint32_t value = first;
    for (uint32_t i = 0; i < n; i++, value += step) {
        uint32_t at = va + i * PTL_PAGE_SIZE;
        int w;
        uint32_t want = want_of(m, ptl__pde_read(m, m->mmu.cr3, at), value, &w);
        int extends = seg_len && w == seg_w && want == want_at(seg_want, seg_len);
        if (!extends) {
            if (seg_len)
                mirror_run(m, seg_va, seg_len, seg_want, seg_w);
            seg_va = at;
            seg_want = want;
            seg_w = w;
            seg_len = 0;
        }
        seg_len++;
    }
    if (seg_len)
        mirror_run(m, seg_va, seg_len, seg_want, seg_w);
}

void ptl__native_pde(ptl_machine *m, uint32_t pd, uint32_t index, uint32_t pde)
{
    if (!m->native.on || pd != m->mmu.cr3)
        return;
    mirror_page(m, PTL_PTE_BASE + index * PTL_PAGE_SIZE,
                (pde & PTL_PTE_VALID) ? (pde >> PTL_PAGE_SHIFT) + 1 : NOT_MAPPED, 0);
}

void ptl__native_resync(ptl_machine *m)
{
    if (m->native.on)
        sync_range(m, LOW_START, SPACE_END);
}

void ptl__native_switch(ptl_machine *m, uint32_t new_pd)
{
    (void)new_pd; /* m->mmu.cr3 already holds it */
    if (!m->native.on)
        return;
    uint32_t user_end = m->pte.system_start;
    /* the user half: drop everything in one call, then map what the new process has */
    if (mmap((void *)(uintptr_t)LOW_START, user_end - LOW_START, PROT_NONE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0) == MAP_FAILED) {
        fprintf(stderr, "ptelab: native mode: cannot swap the user half: %s\n", strerror(errno));
        abort();
    }
    memset(m->native.shadow + (LOW_START >> 12), 0,
           ((user_end - LOW_START) >> 12) * sizeof *m->native.shadow);
    memset(m->native.writable + (LOW_START >> 12), 0, (user_end - LOW_START) >> 12);
    const uint32_t *dir = words(m, m->mmu.cr3);
    for (uint32_t i = 0; i < (user_end >> 22); i++) {
        mirror_page(m, PTL_PTE_BASE + i * PTL_PAGE_SIZE,
                    (dir[i] & PTL_PTE_VALID) ? (dir[i] >> PTL_PAGE_SHIFT) + 1 : NOT_MAPPED, 0);
        if (dir[i] & PTL_PTE_VALID)
            sync_range(m, i << 22, (uint64_t)(i + 1) << 22);
    }
    /* the directory itself at 0xC0300000 */
    mirror_page(m, PTL_PDE_BASE, m->mmu.cr3 + 1, 0);
}

static int check_page(ptl_machine *m, uint32_t va, uint32_t want, int w, FILE *why)
{
    uint32_t page = va >> PTL_PAGE_SHIFT;
    if (m->native.shadow[page] == want && (!want || m->native.writable[page] == w))
        return 0;
    fprintf(why, "native: host page %08x maps frame+1 %x (w%d), the page tables say %x (w%d)\n", va,
            m->native.shadow[page], m->native.writable[page], want, w);
    return -1;
}

int ptl__native_check(ptl_machine *m, FILE *why)
{
    if (!m->native.on)
        return 0;
    const uint32_t *dir = words(m, m->mmu.cr3);
    for (uint32_t region = 0; region < 1024; region++) { /* 4 MB each, one PDE */
        uint32_t base = region << 22, pde = dir[region];
        uint32_t first = base < LOW_START ? LOW_START : base;
        if (base == PTL_PTE_BASE) { /* the self-map: page i shows page table i */
            for (uint32_t i = 0; i < 1024; i++)
                if (check_page(m, base + i * PTL_PAGE_SIZE,
                               (dir[i] & PTL_PTE_VALID) ? (dir[i] >> PTL_PAGE_SHIFT) + 1
                                                        : NOT_MAPPED,
                               0, why))
                    return -1;
            continue;
        }
        if (!(pde & PTL_PTE_VALID)) { /* no page table: the host maps nothing here */
            static const uint32_t none[1024];
            uint32_t pages = ((base + (4u << 20)) - first) >> PTL_PAGE_SHIFT;
            if (memcmp(&m->native.shadow[first >> PTL_PAGE_SHIFT], none, pages * 4) == 0)
                continue; /* the common case, at memcmp's speed */
            for (uint32_t va = first; va - base < (4u << 20); va += PTL_PAGE_SIZE)
                if (m->native.shadow[va >> PTL_PAGE_SHIFT] && check_page(m, va, 0, 0, why))
                    return -1;
            continue;
        }
        const uint32_t *ptes = words(m, pde >> PTL_PAGE_SHIFT);
        for (uint32_t va = first; va - base < (4u << 20); va += PTL_PAGE_SIZE) {
            int w;
            uint32_t want = want_of(m, pde, ptes[(va >> 12) & 0x3FF], &w);
            if (check_page(m, va, want, w, why))
                return -1;
        }
    }
    return 0;
}
