/* ptrmap.h - a small open-addressing map from a pointer to a value pointer. Used where
 * ptelab must recognise objects a driver hands back (MDLs) without trusting them. */
#ifndef PTELAB_PTRMAP_H
#define PTELAB_PTRMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct ptl__ptrmap {
    const void **keys; /* NULL empty, (void *)1 deleted */
    void **vals;
    size_t cap, used, count;
} ptl__ptrmap;

void *ptl__ptrmap_get(const ptl__ptrmap *pm, const void *key);
void ptl__ptrmap_put(ptl__ptrmap *pm, const void *key, void *val);
void *ptl__ptrmap_del(ptl__ptrmap *pm, const void *key); /* returns the value or NULL */
/* Visit every entry; fn may not change the map. */
void ptl__ptrmap_each(const ptl__ptrmap *pm, void (*fn)(void *ctx, const void *key, void *val),
                      void *ctx);
void ptl__ptrmap_free(ptl__ptrmap *pm);

#endif
