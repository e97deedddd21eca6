/* phys.h - physical memory: RAM frames, the PFN database, adapter apertures, host backing.
 * See phys.c for the model and its invariants. */
#ifndef PTELAB_PHYS_H
#define PTELAB_PHYS_H

#include <stdint.h>
#include <stddef.h>

/* Page locations of the PFN database (MMLISTS), at NT's values. */
enum {
    ZeroedPageList = 0,
    FreePageList = 1,
    StandbyPageList = 2,
    ModifiedPageList = 3,
    ModifiedNoWritePageList = 4,
    BadPageList = 5,
    ActiveAndValid = 6,
    TransitionPage = 7
};

/* What ptelab knows a frame is used for; NT does not store this, kd prints it. */
typedef enum ptl__frame_use {
    PTL_USE_FREE = 0,
    PTL_USE_BOOT, /* kernel, HAL, boot drivers, PFN database: never freed */
    PTL_USE_PAGE_DIRECTORY,
    PTL_USE_PAGE_TABLE,
    PTL_USE_NONPAGED_POOL,
    PTL_USE_KERNEL_STACK,
    PTL_USE_DRIVER_IMAGE,
    PTL_USE_PRIVATE,   /* a process's private page */
    PTL_USE_NONCACHED, /* MmAllocateNonCachedMemory */
    PTL_USE_MAX
} ptl__frame_use;

/* One PFN database entry (MMPFN on x86, reduced to what the model uses). A zero-filled
 * entry is a zeroed free frame, so the database can live in lazily committed memory. */
typedef struct ptl__pfn {
    uint32_t PteAddress; /* VA (through the self-map) of the PTE that maps the frame */
    uint32_t PteFrame;   /* PFN of the page table holding that PTE */
    uint32_t Flink;      /* free list link (PFN + 1, 0 ends the list) */
    uint32_t OwnerPid;   /* ptelab: process owning a private frame, 0 system */
    /* 32 bits, unlike NT's 16-bit ReferenceCount: ptelab also counts mappings NT keeps no
     * count for (MmMapIoSpace of RAM), and a wrapped count would lose a frame */
    uint32_t ReferenceCount; /* mappings + locks: always ShareCount + LockCount */
    uint32_t ShareCount;     /* valid PTEs mapping the frame */
    uint32_t LockCount;      /* ptelab: MmProbeAndLockPages locks held */
    uint8_t PageLocation;    /* MMLISTS value */
    uint8_t Use;             /* ptl__frame_use */
    uint8_t CacheAttribute;  /* attribute of current mappings + 1; 0 none (cache.c) */
    uint8_t Modified;
    /* a private page: the MM protection of the software PTE it replaced (NT's
     * OriginalPte.u.Soft.Protection), for the page-file PTE when it is swapped out */
    uint8_t OriginalProtection;
    /* its owner freed it while a lock held it: the last MmUnlockPages frees it (NT puts
     * a page on the free list only when its reference count reaches zero) */
    uint8_t FreeWhenUnlocked;
} ptl__pfn;

typedef struct ptl__aperture {
    int bus; /* INTERFACE_TYPE */
    uint32_t bus_number;
    uint64_t bus_address;
    uint64_t phys; /* translated physical address */
    uint64_t bytes;
} ptl__aperture;

typedef struct ptl__phys {
    /* constant after boot */
    uint32_t ram_pages; /* RAM is frames [0, ram_pages) */
    uint8_t *host;      /* host view of the whole 4 GB physical space */
    size_t host_bytes;
    int memfd;     /* backing of host, -1 when anonymous */
    ptl__pfn *pfn; /* PFN database, ram_pages entries, lazily committed */
    size_t pfn_bytes;
    uint64_t *touched; /* one bit per frame of the 4 GB space: host page committed */
    /* written on allocate/free */
    uint32_t hwm;        /* frames >= hwm have never been handed out */
    uint32_t free_head;  /* released frames, linked through Flink (PFN + 1) */
    uint32_t free_count; /* frames on the free list */
    uint32_t in_use;     /* frames handed out and not freed */
    uint32_t use_count[PTL_USE_MAX];
    uint32_t touched_count;
    uint64_t copy_writes; /* device-side writes (ptl__phys_copy): kd's e*, ptl_phys_write */
    /* apertures */
    ptl__aperture *apertures;
    int napertures;
    /* What changed since the incremental check (icheck.c) last looked; all NULL until it
     * first runs. `watch` marks the frames it caches (page directories and tables):
     * handing out a writable host pointer to one (ptl__phys_frame) puts it on the written
     * list. Every change to a PFN entry (allocate, release, ShareCount) puts the frame on
     * the noted list. Both lists hold each frame once (the bitmaps) and cover RAM only. */
    uint64_t *watch, *written, *noted;
    uint32_t *written_list, *noted_list;
    uint32_t nwritten, written_cap, nnoted, noted_cap;
} ptl__phys;

struct ptl_machine;
int ptl__phys_init(ptl__phys *ph, uint64_t ram_bytes);
void ptl__phys_free(ptl__phys *ph);
/* Hand out a zeroed RAM frame for `use`; returns the PFN or UINT32_MAX when RAM is gone. */
uint32_t ptl__phys_alloc(ptl__phys *ph, ptl__frame_use use, uint32_t owner_pid);
/* Clear a PFN entry for its next life (a new owner, or the free list), keeping what others
 * hold on the frame: the mappings and locks that views of physical memory took. */
void ptl__pfn_reuse(ptl__pfn *e);
/* The last lock on the frame went (MmUnlockPages, MmFreePagesFromMdl): free it now if its
 * owner freed it while it was locked. */
void ptl__phys_unlocked(ptl__phys *ph, uint32_t pfn);
/* What is wrong with one entry on its own (the counts' sum, the deferred free), or NULL:
 * one rule for the full check and the incremental one. */
const char *ptl__pfn_bad(const ptl__pfn *e);
void ptl__phys_release(ptl__phys *ph, uint32_t pfn);
uint32_t ptl__phys_available(const ptl__phys *ph);
/* Host bytes of frame pfn, committing them (any frame of the 4 GB space), for a caller
 * that may write them: a frame the incremental check watches goes on its written list. */
uint8_t *ptl__phys_frame(ptl__phys *ph, uint32_t pfn);
/* The same bytes for a caller that only reads them: nothing is marked written. */
const uint8_t *ptl__phys_frame_ro(ptl__phys *ph, uint32_t pfn);
/* A frame read as 1024 page-table entries, for looking only (nothing is marked written). */
static inline const uint32_t *ptl__phys_words_ro(ptl__phys *ph, uint32_t pfn)
{
    return (const uint32_t *)(const void *)ptl__phys_frame_ro(ph, pfn);
}
/* Record that frame pfn's PFN entry changed (Use, PageLocation, ShareCount, the free
 * list): what every writer of a PFN entry calls, for the incremental check. */
void ptl__phys_note(ptl__phys *ph, uint32_t pfn);
/* A watched frame was written without ptl__phys_frame (zeroed in place). */
void ptl__phys_wrote(ptl__phys *ph, uint32_t pfn);
/* Start (on) or stop (off, forgetting everything) tracking changes for the check. */
void ptl__phys_track(ptl__phys *ph, int on);
void ptl__phys_watch(ptl__phys *ph, uint32_t pfn, int on);
/* Drop the written list's entries from the nth on (marks made by a reader that used the
 * writable accessor); 0 empties it. */
void ptl__phys_written_truncate(ptl__phys *ph, uint32_t n);
/* Empty the noted list. */
void ptl__phys_noted_clear(ptl__phys *ph);
int ptl__phys_is_ram(const ptl__phys *ph, uint64_t pa);
const ptl__aperture *ptl__phys_aperture_of(const ptl__phys *ph, uint64_t pa);
int ptl__phys_add_aperture(ptl__phys *ph, const ptl__aperture *ap);
/* Device-side access; -1 when a byte is neither RAM nor aperture. */
int ptl__phys_copy(ptl__phys *ph, uint64_t pa, void *buf, size_t n, int write);
int ptl__phys_check(const ptl__phys *ph, FILE *why);
const char *ptl__frame_use_name(int use);

#endif
