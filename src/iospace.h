/* iospace.h - MmMapIoSpace / MmUnmapIoSpace, MmAllocateNonCachedMemory. See iospace.c. */
#ifndef PTELAB_IOSPACE_H
#define PTELAB_IOSPACE_H

#include <stdint.h>

typedef struct ptl__iospace {
    uint64_t maps, unmaps, failed;
    uint32_t live_mappings;
    uint32_t live_pages;
} ptl__iospace;

struct ptl_machine;
/* MmMapIoSpace: the VA (with the byte offset) or 0. */
uint32_t ptl__iospace_map(struct ptl_machine *m, uint64_t pa, uint32_t bytes, int cache);
void ptl__iospace_unmap(struct ptl_machine *m, uint32_t va, uint32_t bytes);
/* MmAllocateNonCachedMemory / MmFreeNonCachedMemory. */
uint32_t ptl__noncached_alloc(struct ptl_machine *m, uint32_t bytes);
void ptl__noncached_free(struct ptl_machine *m, uint32_t base, uint32_t bytes);

#endif
