/* phys.c - physical memory as the NT memory manager and a bus-master device see it.
 *
 * Models:
 *   - RAM of ram_bytes as 4 KB page frames 0..ram_pages-1, each with a PFN database
 *     entry (MMPFN: PteAddress, PteFrame, ReferenceCount, ShareCount, PageLocation);
 *   - adapter apertures: physical ranges above RAM decoded by a device. They have no PFN
 *     entries, as NT treats I/O space (MmMapIoSpace of such a range never touches the PFN
 *     database; Windows Internals, "Page frame number database").
 *
 * Host backing. The whole 4 GB physical space of a non-PAE x86 is one sparse host object:
 * a memfd (or, where there is none, an anonymous MAP_NORESERVE mapping) of 4 GB, mapped
 * once. Frame N lives at byte N*4096, an aperture at its physical address. The host only
 * commits pages that are written, so a 3.5 GB machine costs a few MB. Native mode (DESIGN.md)
 * will alias these same pages at emulated virtual addresses.
 *
 *     host:  [frame 0][frame 1] ... [frame ram_pages-1] ...hole... [aperture] ... 4 GB
 *
 * Reads of a frame that was never committed return zeros without committing it (the
 * `touched` bitmap), so inspecting memory (kd, ptl_phys_read) costs nothing.
 *
 * The PFN database is lazily committed too: a zero entry means "zeroed, free", and frames
 * are handed out from a high-water mark before the free list is used, so untouched RAM
 * never has its entry written.
 *
 * Invariants (ptl__phys_check):
 *   - every frame below hwm is either on the free list (PageLocation FreePageList, Use
 *     FREE) or in use (Use != FREE); in_use + free_count == hwm;
 *   - use_count[u] is the number of in-use frames with Use == u;
 *   - apertures lie above RAM, below 4 GB, and do not overlap.
 *
 * Change tracking for the incremental check (icheck.c). Once it has run, every writer of a
 * PFN entry notes the frame (ptl__phys_note: here, pte.c's share counts, mdl_ext.c's
 * direct allocations), and ptl__phys_frame, the accessor for callers that may write a
 * frame, marks the frames the check watches (the page tables and directories it caches)
 * as written. Readers use ptl__phys_frame_ro, which marks nothing. Writes that bypass both
 * (the software TLB's cached host pointers) are the check's business (icheck.c).
 */

#include "internal.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PHYS_SPACE_BYTES (4ull << 30)
#define PHYS_SPACE_PAGES (1u << 20)

static const char *const frame_use_names[PTL_USE_MAX] = {
    "free",         "boot",         "page directory", "page table", "nonpaged pool",
    "kernel stack", "driver image", "private",        "noncached",
};

const char *ptl__frame_use_name(int use)
{
    return (use >= 0 && use < PTL_USE_MAX) ? frame_use_names[use] : "?";
}

int ptl__phys_init(ptl__phys *ph, uint64_t ram_bytes)
{
    memset(ph, 0, sizeof *ph);
    ph->memfd = -1;
    ph->ram_pages = (uint32_t)(ram_bytes >> PTL_PAGE_SHIFT);
    ph->host_bytes = (size_t)PHYS_SPACE_BYTES;
#ifdef MFD_CLOEXEC
    ph->memfd = memfd_create("ptelab-phys", MFD_CLOEXEC);
    if (ph->memfd >= 0 && ftruncate(ph->memfd, (off_t)PHYS_SPACE_BYTES) != 0) {
        close(ph->memfd);
        ph->memfd = -1;
    }
#endif
    void *host;
    if (ph->memfd >= 0)
        host = mmap(NULL, ph->host_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
                    ph->memfd, 0);
    else
        host = mmap(NULL, ph->host_bytes, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (host == MAP_FAILED) {
        if (ph->memfd >= 0)
            close(ph->memfd);
        return ptl__fail("cannot reserve 4 GB of host address space for physical memory: %s",
                         strerror(errno));
    }
    ph->host = host;
    ph->pfn_bytes = ((size_t)ph->ram_pages * sizeof(ptl__pfn) + 4095) & ~(size_t)4095;
    void *pfn = mmap(NULL, ph->pfn_bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (pfn == MAP_FAILED) {
        munmap(ph->host, ph->host_bytes);
        if (ph->memfd >= 0)
            close(ph->memfd);
        return ptl__fail("cannot reserve host memory for the PFN database: %s", strerror(errno));
    }
    ph->pfn = pfn;
    ph->touched = ptl__xcalloc(PHYS_SPACE_PAGES / 64, sizeof(uint64_t));
    return 0;
}

void ptl__phys_free(ptl__phys *ph)
{
    if (ph->host)
        munmap(ph->host, ph->host_bytes);
    if (ph->pfn)
        munmap(ph->pfn, ph->pfn_bytes);
    if (ph->memfd >= 0)
        close(ph->memfd);
    free(ph->touched);
    free(ph->apertures);
    ptl__phys_track(ph, 0);
    memset(ph, 0, sizeof *ph);
    ph->memfd = -1;
}

static bool is_touched(const ptl__phys *ph, uint32_t pfn)
{
    return (ph->touched[pfn >> 6] >> (pfn & 63)) & 1u;
}

static int bit_test_set(uint64_t *map, uint32_t i)
{
    uint64_t b = 1ull << (i & 63);
    if (map[i >> 6] & b)
        return 1;
    map[i >> 6] |= b;
    return 0;
}

/* Append pfn to a list that holds each frame once (the bitmap says whether it is on). */
static void list_add(uint64_t *map, uint32_t **list, uint32_t *n, uint32_t *cap, uint32_t pfn)
{
    if (bit_test_set(map, pfn))
        return;
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 64;
        *list = ptl__xrealloc(*list, (size_t)*cap * sizeof **list);
    }
    (*list)[(*n)++] = pfn;
}

void ptl__phys_wrote(ptl__phys *ph, uint32_t pfn)
{
    if (ph->watch && pfn < ph->ram_pages && ((ph->watch[pfn >> 6] >> (pfn & 63)) & 1u))
        list_add(ph->written, &ph->written_list, &ph->nwritten, &ph->written_cap, pfn);
}

void ptl__phys_note(ptl__phys *ph, uint32_t pfn)
{
    if (ph->noted && pfn < ph->ram_pages)
        list_add(ph->noted, &ph->noted_list, &ph->nnoted, &ph->noted_cap, pfn);
}

void ptl__phys_track(ptl__phys *ph, int on)
{
    free(ph->watch);
    free(ph->written);
    free(ph->noted);
    free(ph->written_list);
    free(ph->noted_list);
    ph->watch = ph->written = ph->noted = NULL;
    ph->written_list = ph->noted_list = NULL;
    ph->nwritten = ph->written_cap = ph->nnoted = ph->noted_cap = 0;
    if (on) {
        size_t words = ((size_t)ph->ram_pages + 63) / 64;
        ph->watch = ptl__xcalloc(words, sizeof(uint64_t));
        ph->written = ptl__xcalloc(words, sizeof(uint64_t));
        ph->noted = ptl__xcalloc(words, sizeof(uint64_t));
    }
}

void ptl__phys_watch(ptl__phys *ph, uint32_t pfn, int on)
{
    PTL_ASSERT(ph->watch && pfn < ph->ram_pages);
    if (on)
        ph->watch[pfn >> 6] |= 1ull << (pfn & 63);
    else
        ph->watch[pfn >> 6] &= ~(1ull << (pfn & 63));
}

void ptl__phys_written_truncate(ptl__phys *ph, uint32_t n)
{
    for (uint32_t i = n; i < ph->nwritten; i++)
        ph->written[ph->written_list[i] >> 6] &= ~(1ull << (ph->written_list[i] & 63));
    if (n < ph->nwritten)
        ph->nwritten = n;
}

void ptl__phys_noted_clear(ptl__phys *ph)
{
    for (uint32_t i = 0; i < ph->nnoted; i++)
        ph->noted[ph->noted_list[i] >> 6] &= ~(1ull << (ph->noted_list[i] & 63));
    ph->nnoted = 0;
}

const uint8_t *ptl__phys_frame_ro(ptl__phys *ph, uint32_t pfn)
{
    PTL_ASSERT(pfn < PHYS_SPACE_PAGES);
    if (!is_touched(ph, pfn)) {
        ph->touched[pfn >> 6] |= 1ull << (pfn & 63);
        ph->touched_count++;
    }
    return ph->host + ((size_t)pfn << PTL_PAGE_SHIFT);
}

uint8_t *ptl__phys_frame(ptl__phys *ph, uint32_t pfn)
{
    ptl__phys_wrote(ph, pfn);
    return (uint8_t *)(uintptr_t)ptl__phys_frame_ro(ph, pfn);
}

uint32_t ptl__phys_alloc(ptl__phys *ph, ptl__frame_use use, uint32_t owner_pid)
{
    PTL_ASSERT(use != PTL_USE_FREE && use < PTL_USE_MAX);
    uint32_t pfn;
    if (ph->free_head) {
        pfn = ph->free_head - 1;
        ph->free_head = ph->pfn[pfn].Flink;
        ph->free_count--;
    } else if (ph->hwm < ph->ram_pages) {
        pfn = ph->hwm++;
    } else {
        return UINT32_MAX;
    }
    /* A frame may hold old data: a released one, and a never-used one that a driver wrote
     * through MmMapIoSpace or a view of RAM it does not own, or kd's ed /p. NT zeroes
     * before handing out for these uses (MiRemoveZeroPage), and so do we; a frame the host
     * never touched is zero already. */
    if (is_touched(ph, pfn)) {
        memset(ph->host + ((size_t)pfn << PTL_PAGE_SHIFT), 0, PTL_PAGE_SIZE);
        ptl__phys_wrote(ph, pfn);
    }
    ptl__pfn *e = &ph->pfn[pfn];
    ptl__pfn_reuse(e); /* a view's mappings and locks of the free frame live on */
    e->PageLocation = ActiveAndValid;
    e->Use = (uint8_t)use;
    e->OwnerPid = owner_pid;
    ph->in_use++;
    ph->use_count[use]++;
    ptl__phys_note(ph, pfn);
    return pfn;
}

void ptl__pfn_reuse(ptl__pfn *e)
{
    uint32_t share = e->ShareCount, locks = e->LockCount, refs = e->ReferenceCount;
    uint32_t pte = e->PteAddress, frame = e->PteFrame;
    memset(e, 0, sizeof *e);
    e->ShareCount = share;
    e->LockCount = locks;
    e->ReferenceCount = refs;
    e->PteAddress = pte;
    e->PteFrame = frame;
}

void ptl__phys_release(ptl__phys *ph, uint32_t pfn)
{
    PTL_ASSERT(pfn < ph->hwm);
    ptl__pfn *e = &ph->pfn[pfn];
    PTL_ASSERT(e->Use != PTL_USE_FREE && e->Use != PTL_USE_BOOT);
    if (e->LockCount) {
        /* An MDL still has it locked (a driver image page, a page table locked through
         * the self-map, a process's page locked by another): the owner is done with it,
         * but it stays referenced until the last MmUnlockPages, as in NT. */
        e->FreeWhenUnlocked = 1;
        ptl__phys_note(ph, pfn);
        return;
    }
    ph->use_count[e->Use]--;
    ph->in_use--;
    /* Still mapped by someone who borrowed it (a view of \Device\PhysicalMemory): NT frees
     * it all the same, and the borrower now maps a free page (the article's warning). */
    ptl__pfn_reuse(e);
    e->PageLocation = FreePageList;
    e->Flink = ph->free_head;
    ph->free_head = pfn + 1;
    ph->free_count++;
    ptl__phys_note(ph, pfn);
}

void ptl__phys_unlocked(ptl__phys *ph, uint32_t pfn)
{
    ptl__pfn *e = &ph->pfn[pfn];
    if (e->LockCount == 0 && e->FreeWhenUnlocked) {
        e->FreeWhenUnlocked = 0;
        ptl__phys_release(ph, pfn);
    }
}

uint32_t ptl__phys_available(const ptl__phys *ph)
{
    return ph->ram_pages - ph->in_use;
}

int ptl__phys_is_ram(const ptl__phys *ph, uint64_t pa)
{
    return (pa >> PTL_PAGE_SHIFT) < ph->ram_pages;
}

const ptl__aperture *ptl__phys_aperture_of(const ptl__phys *ph, uint64_t pa)
{
    for (int i = 0; i < ph->napertures; i++) {
        const ptl__aperture *a = &ph->apertures[i];
        if (pa >= a->phys && pa - a->phys < a->bytes)
            return a;
    }
    return NULL;
}

int ptl__phys_add_aperture(ptl__phys *ph, const ptl__aperture *ap)
{
    uint64_t ram_end = (uint64_t)ph->ram_pages << PTL_PAGE_SHIFT;
    if (ap->bytes == 0)
        return ptl__fail("adapter aperture of 0 bytes");
    if ((ap->phys | ap->bytes) & PTL_PAGE_MASK)
        return ptl__fail("adapter aperture 0x%llx+0x%llx is not page aligned",
                         (unsigned long long)ap->phys, (unsigned long long)ap->bytes);
    if (ap->phys < ram_end)
        return ptl__fail("adapter aperture at 0x%llx overlaps RAM (which ends at 0x%llx)",
                         (unsigned long long)ap->phys, (unsigned long long)ram_end);
    if (ap->phys >= PHYS_SPACE_BYTES || ap->bytes > PHYS_SPACE_BYTES - ap->phys)
        return ptl__fail("adapter aperture 0x%llx+0x%llx lies beyond 4 GB, which a non-PAE "
                         "x86 cannot address",
                         (unsigned long long)ap->phys, (unsigned long long)ap->bytes);
    for (int i = 0; i < ph->napertures; i++) {
        const ptl__aperture *o = &ph->apertures[i];
        if (ap->phys < o->phys + o->bytes && o->phys < ap->phys + ap->bytes)
            return ptl__fail("adapter aperture 0x%llx+0x%llx overlaps the one at 0x%llx",
                             (unsigned long long)ap->phys, (unsigned long long)ap->bytes,
                             (unsigned long long)o->phys);
    }
    ph->apertures = ptl__xrealloc(ph->apertures, (size_t)(ph->napertures + 1) * sizeof *ap);
    ph->apertures[ph->napertures++] = *ap;
    return 0;
}

int ptl__phys_copy(ptl__phys *ph, uint64_t pa, void *buf, size_t n, int write)
{
    /* all or nothing: every page of the range is RAM or an aperture before a byte moves */
    if (n > PHYS_SPACE_BYTES || pa > PHYS_SPACE_BYTES - n)
        return -1;
    for (uint64_t at = pa & ~(uint64_t)PTL_PAGE_MASK; at < pa + n; at += PTL_PAGE_SIZE)
        if (at >= PHYS_SPACE_BYTES || (!ptl__phys_is_ram(ph, at) && !ptl__phys_aperture_of(ph, at)))
            return -1;
    uint8_t *p = buf;
    while (n > 0) {
        if (pa >= PHYS_SPACE_BYTES || (!ptl__phys_is_ram(ph, pa) && !ptl__phys_aperture_of(ph, pa)))
            return -1;
        uint32_t pfn = (uint32_t)(pa >> PTL_PAGE_SHIFT);
        size_t off = (size_t)(pa & PTL_PAGE_MASK);
        size_t chunk = PTL_PAGE_SIZE - off;
        if (chunk > n)
            chunk = n;
        if (write) {
            memcpy(ptl__phys_frame(ph, pfn) + off, p, chunk);
            ph->copy_writes++;
        } else if (is_touched(ph, pfn))
            memcpy(p, ph->host + ((size_t)pfn << PTL_PAGE_SHIFT) + off, chunk);
        else
            memset(p, 0, chunk);
        p += chunk;
        pa += chunk;
        n -= chunk;
    }
    return 0;
}

const char *ptl__pfn_bad(const ptl__pfn *e)
{
    if ((uint64_t)e->ShareCount + e->LockCount != e->ReferenceCount)
        return "ReferenceCount is not ShareCount + LockCount";
    if (e->FreeWhenUnlocked && (e->LockCount == 0 || e->Use == PTL_USE_FREE))
        return "marked to be freed when unlocked, but it is not locked or already free";
    return NULL;
}

int ptl__phys_check(const ptl__phys *ph, FILE *why)
{
    uint32_t used = 0, counts[PTL_USE_MAX] = {0}, onfree = 0;
    for (uint32_t pfn = 0; pfn < ph->hwm; pfn++) {
        const ptl__pfn *e = &ph->pfn[pfn];
        const char *bad = ptl__pfn_bad(e);
        if (bad) {
            fprintf(why, "phys: frame 0x%x: %s\n", pfn, bad);
            return -1;
        }
        if (e->Use == PTL_USE_FREE) {
            if (e->PageLocation != FreePageList) {
                fprintf(why, "phys: free frame 0x%x has PageLocation %u\n", pfn, e->PageLocation);
                return -1;
            }
            continue;
        }
        if (e->Use >= PTL_USE_MAX) {
            fprintf(why, "phys: frame 0x%x has bad use %u\n", pfn, e->Use);
            return -1;
        }
        used++;
        counts[e->Use]++;
    }
    for (uint32_t f = ph->free_head; f; f = ph->pfn[f - 1].Flink) {
        if (f - 1 >= ph->hwm || ph->pfn[f - 1].Use != PTL_USE_FREE || ++onfree > ph->hwm) {
            fprintf(why, "phys: free list corrupt at frame 0x%x\n", f - 1);
            return -1;
        }
    }
    if (used != ph->in_use || onfree != ph->free_count || used + onfree != ph->hwm) {
        fprintf(why, "phys: in_use %u/%u, free %u/%u, hwm %u disagree\n", used, ph->in_use, onfree,
                ph->free_count, ph->hwm);
        return -1;
    }
    for (int u = 0; u < PTL_USE_MAX; u++) {
        if (counts[u] != ph->use_count[u]) {
            fprintf(why, "phys: %u frames in use as %s, counter says %u\n", counts[u],
                    frame_use_names[u], ph->use_count[u]);
            return -1;
        }
    }
    return 0;
}
