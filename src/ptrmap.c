/* ptrmap.c - pointer-keyed open-addressing hash map (linear probing, tombstones, grows at
 * 50% load). Invariant: count entries are live; used counts live + tombstones. */
#include "internal.h"
#include "ptrmap.h"

#include <string.h>

#define DELETED ((const void *)1)

static size_t slot_of(const void *key, size_t cap)
{
    uint64_t h = (uint64_t)(uintptr_t)key * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 17) & (cap - 1);
}

void *ptl__ptrmap_get(const ptl__ptrmap *pm, const void *key)
{
    if (!pm->cap || !key || key == DELETED)
        return NULL;
    for (size_t i = slot_of(key, pm->cap);; i = (i + 1) & (pm->cap - 1)) {
        if (pm->keys[i] == key)
            return pm->vals[i];
        if (!pm->keys[i])
            return NULL;
    }
}

static void grow(ptl__ptrmap *pm)
{
    ptl__ptrmap old = *pm;
    pm->cap = old.cap ? old.cap * 2 : 64;
    pm->keys = ptl__xcalloc(pm->cap, sizeof *pm->keys);
    pm->vals = ptl__xcalloc(pm->cap, sizeof *pm->vals);
    pm->used = pm->count = 0;
    for (size_t i = 0; i < old.cap; i++)
        if (old.keys[i] && old.keys[i] != DELETED)
            ptl__ptrmap_put(pm, old.keys[i], old.vals[i]);
    free(old.keys);
    free(old.vals);
}

void ptl__ptrmap_put(ptl__ptrmap *pm, const void *key, void *val)
{
    PTL_ASSERT(key && key != DELETED);
    if ((pm->used + 1) * 2 > pm->cap)
        grow(pm);
    size_t grave = SIZE_MAX;
    for (size_t i = slot_of(key, pm->cap);; i = (i + 1) & (pm->cap - 1)) {
        if (pm->keys[i] == key) {
            pm->vals[i] = val;
            return;
        }
        if (pm->keys[i] == DELETED && grave == SIZE_MAX)
            grave = i;
        if (!pm->keys[i]) {
            if (grave != SIZE_MAX)
                i = grave;
            else
                pm->used++;
            pm->keys[i] = key;
            pm->vals[i] = val;
            pm->count++;
            return;
        }
    }
}

void *ptl__ptrmap_del(ptl__ptrmap *pm, const void *key)
{
    if (!pm->cap || !key || key == DELETED)
        return NULL;
    for (size_t i = slot_of(key, pm->cap);; i = (i + 1) & (pm->cap - 1)) {
        if (pm->keys[i] == key) {
            void *v = pm->vals[i];
            pm->keys[i] = DELETED;
            pm->vals[i] = NULL;
            pm->count--;
            return v;
        }
        if (!pm->keys[i])
            return NULL;
    }
}

void ptl__ptrmap_each(const ptl__ptrmap *pm, void (*fn)(void *, const void *, void *), void *ctx)
{
    for (size_t i = 0; i < pm->cap; i++)
        if (pm->keys[i] && pm->keys[i] != DELETED)
            fn(ctx, pm->keys[i], pm->vals[i]);
}

void ptl__ptrmap_free(ptl__ptrmap *pm)
{
    free(pm->keys);
    free(pm->vals);
    memset(pm, 0, sizeof *pm);
}
