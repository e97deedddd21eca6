/* cache.c - which cache attribute every physical page is currently mapped with.
 *
 * The article: "it is strictly illegal to map a physical address concurrently with two
 * different attributes (cached vs noncached vs writecombined). Doing this causes
 * processor TLB corruption and unpredictable results. On Windows XP, ZwMapViewOfSection
 * returns STATUS_CONFLICTING_ADDRESSES..." (also learn.microsoft.com "ZwMapViewOfSection",
 * and OSR's "Change to Allow Page Mapping in XP": NT 4.0 and 2000 did not check).
 *
 * Every mapping that names an attribute (MmMapIoSpace, views of \Device\PhysicalMemory,
 * MDL mappings, MmAllocateNonCachedMemory) counts a reference on each of its frames here,
 * RAM and I/O space alike. RAM the system uses and no such mapping covers is implicitly
 * cached (NT maps its own RAM cached). The callers decide what a conflict means per
 * profile: a failure on XP, a recorded hazard on NT 4.0 and 2000.
 *
 * Structure: an open-addressing hash table keyed by PFN (linear probing, tombstones),
 * because I/O-space frames have no PFN entry to hold the attribute, for mappings counted a
 * frame at a time (MDL mappings, noncached memory: ptl__cache_ref); and a list of runs for
 * mappings of contiguous frames (MmMapIoSpace, views: ptl__cache_ref_run), so that mapping
 * an aperture costs one record rather than one per page. A frame's attribute: its table entry when
 * it has one, else the most recent range covering it, else MmCached for RAM in use. While two
 * attributes are in force at once (NT 4.0 lets it happen, the caller records the hazard), the most
 * recent mapping's wins; when it goes, a range reverts to the attribute of the one still there.
 * Invariant (ptl__cache_check): live == number of slots with count > 0; ranges_with[a] ==
 * number of ranges with attribute a; every such slot and every range holds a valid
 * attribute; no run is empty or runs past 4 GB.
 */
#include "internal.h"

#include <string.h>

static const char *const names[] = {"noncached",           "cached",
                                    "write-combined",      "hardware-coherent cached",
                                    "noncached unordered", "USWC cached"};

const char *ptl__cache_name(int attr)
{
    return (attr >= 0 && attr < 6) ? names[attr] : "none";
}

void ptl__cache_init(ptl_machine *m)
{
    memset(&m->cache, 0, sizeof m->cache);
}

void ptl__cache_free(ptl_machine *m)
{
    free(m->cache.slots);
    free(m->cache.ranges);
    memset(&m->cache, 0, sizeof m->cache);
}

static uint32_t hash(uint32_t pfn)
{
    return pfn * 2654435761u;
}

static ptl__cache_entry *lookup(ptl__cache *c, uint32_t pfn, int insert)
{
    if (insert && (c->used + 1) * 4 >= c->cap * 3) { /* grow and rehash at 75% */
        ptl__cache old = *c;
        c->cap = c->cap ? c->cap * 2 : 1024;
        c->slots = ptl__xcalloc(c->cap, sizeof *c->slots);
        c->used = 0;
        for (uint32_t i = 0; i < old.cap; i++) {
            if (old.slots[i].pfn_plus1 && old.slots[i].count) {
                ptl__cache_entry *e = lookup(c, old.slots[i].pfn_plus1 - 1, 1);
                *e = old.slots[i];
            }
        }
        free(old.slots);
    }
    if (!c->cap)
        return NULL;
    ptl__cache_entry *grave = NULL;
    for (uint32_t i = hash(pfn) & (c->cap - 1);; i = (i + 1) & (c->cap - 1)) {
        ptl__cache_entry *e = &c->slots[i];
        if (e->pfn_plus1 == pfn + 1)
            return e;
        if (e->pfn_plus1 == 0) {
            if (!insert)
                return NULL;
            if (grave)
                e = grave;
            else
                c->used++;
            memset(e, 0, sizeof *e);
            e->pfn_plus1 = pfn + 1;
            return e;
        }
        if (e->tombstone && !grave)
            grave = e;
    }
}

static const ptl__cache_range *range_of(const ptl__cache *c, uint32_t pfn)
{
    for (uint32_t i = c->nranges; i-- > 0;)
        if (pfn - c->ranges[i].pfn < c->ranges[i].n)
            return &c->ranges[i];
    return NULL;
}

/* The attribute of frame pfn when `r` is the most recent range covering it (or NULL). */
static int current_under(ptl_machine *m, uint32_t pfn, const ptl__cache_range *r)
{
    /* the most recent mapping's attribute, whether it is tracked per frame (MDL mappings,
     * noncached memory) or as a range (MmMapIoSpace, views); with no live per-frame
     * record (live counts them) the table has nothing to say */
    ptl__cache_entry *e = m->cache.live ? lookup(&m->cache, pfn, 0) : NULL;
    if (e && e->count && (!r || e->seq > r->seq))
        return e->attr;
    if (r)
        return r->attr;
    if (pfn < m->phys.ram_pages && pfn < m->phys.hwm && m->phys.pfn[pfn].Use != PTL_USE_FREE)
        return 1; /* MmCached: the system's own mapping of its RAM */
    return -1;
}

int ptl__cache_current(ptl_machine *m, uint32_t pfn)
{
    return current_under(m, pfn, range_of(&m->cache, pfn));
}

/* Frames [f, next), over which `best` is the last range covering each (or none): the first
 * whose attribute is set and is not attr, through *at and *existing. */
static int conflict_in(ptl_machine *m, uint64_t f, uint64_t next, const ptl__cache_range *best,
                       int attr, uint32_t *at, int *existing)
{
    for (; f < next; f++) {
        int cur = current_under(m, (uint32_t)f, best);
        if (cur >= 0 && cur != attr) {
            if (at)
                *at = (uint32_t)f;
            if (existing)
                *existing = cur;
            m->cache.conflicts++;
            return 1;
        }
    }
    return 0;
}

#define SMALL_SPAN 16 /* frames: up to this many, a search per frame beats cutting segments */

int ptl__cache_conflict(ptl_machine *m, uint32_t pfn, uint32_t n, int attr, uint32_t *at,
                        int *existing)
{
    /* The common case at a glance: device memory that no frame-at-a-time mapping touches
     * and no range of another attribute overlaps cannot conflict. */
    const ptl__cache *c = &m->cache;
    int quick = pfn >= m->phys.ram_pages && c->live_io == 0;
    if (quick && attr >= 0 && attr < 6 && c->ranges_with[attr] == c->nranges)
        return 0; /* every range has this attribute (many mappings of one kind: no scan) */
    for (uint32_t i = 0; quick && i < c->nranges; i++) {
        const ptl__cache_range *r = &c->ranges[i];
        if (r->attr != attr && r->pfn < pfn + n && pfn < r->pfn + r->n)
            quick = 0;
    }
    if (quick)
        return 0;
    /* A few frames: ask about each, as ptl__cache_current does; its search from the newest
     * range stops at once when a recent mapping covers the frame (a driver mapping the
     * same page again and again). */
    if (n <= SMALL_SPAN) {
        for (uint32_t i = 0; i < n; i++)
            if (conflict_in(m, pfn + i, (uint64_t)pfn + i + 1, range_of(c, pfn + i), attr, at,
                            existing))
                return 1;
        return 0;
    }
    /* Many frames: without searching every range for every frame (a large view of RAM
     * against many ranges was quadratic), the ranges that overlap [pfn, pfn+n) cut it
     * into segments over which the same ranges cover every frame, so the one in force
     * (the last made) is found once per segment. */
    uint64_t end = (uint64_t)pfn + n;
    uint32_t k = 0, *over = ptl__xcalloc(c->nranges ? c->nranges : 1, sizeof *over);
    for (uint32_t i = 0; i < c->nranges; i++)
        if (c->ranges[i].pfn < end && pfn < (uint64_t)c->ranges[i].pfn + c->ranges[i].n)
            over[k++] = i;
    int found = 0;
    for (uint64_t f = pfn; f < end && !found;) {
        const ptl__cache_range *best = NULL;
        uint64_t next = end; /* where the covering set next changes */
        for (uint32_t j = 0; j < k; j++) {
            const ptl__cache_range *r = &c->ranges[over[j]];
            uint64_t r_end = (uint64_t)r->pfn + r->n;
            if (r->pfn <= f && f < r_end) {
                best = r; /* over[] ascends, so the last covering one is the most recent */
                next = r_end < next ? r_end : next;
            } else if (r->pfn > f && r->pfn < next) {
                next = r->pfn;
            }
        }
        found = conflict_in(m, f, next, best, attr, at, existing);
        f = next;
    }
    free(over);
    return found;
}

void ptl__cache_ref_run(ptl_machine *m, uint32_t pfn, uint32_t n, int attr)
{
    ptl__cache *c = &m->cache;
    PTL_ASSERT(n >= 1 && attr >= 0 && attr < 6); /* the DDIs refuse other cache types */
    if (c->nranges == c->capranges) {
        c->capranges = c->capranges ? 2 * c->capranges : 16;
        c->ranges = ptl__xrealloc(c->ranges, c->capranges * sizeof *c->ranges);
    }
    c->ranges[c->nranges++] = (ptl__cache_range){pfn, n, ++c->clock, (int8_t)attr};
    c->ranges_with[attr]++;
}

void ptl__cache_unref_run(ptl_machine *m, uint32_t pfn, uint32_t n, int attr)
{
    /* The most recent run of exactly this span and attribute: two mappings of the same
     * span with different attributes are both recorded, and unmapping one must leave the
     * other's in force. A caller that only knows the attribute from the PTE bits (which
     * fold MmHardwareCoherentCached and the like into cached) may not find an exact match:
     * then the most recent run of the span goes. */
    ptl__cache *c = &m->cache;
    uint32_t i = c->nranges;
    while (i-- > 0 &&
           !(c->ranges[i].pfn == pfn && c->ranges[i].n == n && c->ranges[i].attr == attr))
        ;
    if (i >= c->nranges) {
        i = c->nranges;
        while (i-- > 0 && !(c->ranges[i].pfn == pfn && c->ranges[i].n == n))
            ;
    }
    PTL_ASSERT(i < c->nranges);
    c->ranges_with[c->ranges[i].attr]--;
    memmove(&c->ranges[i], &c->ranges[i + 1], (c->nranges - i - 1) * sizeof *c->ranges);
    c->nranges--;
}

void ptl__cache_ref(ptl_machine *m, uint32_t pfn, uint32_t n, int attr)
{
    ptl__cache *c = &m->cache;
    for (uint32_t i = 0; i < n; i++) {
        ptl__cache_entry *e = lookup(c, pfn + i, 1);
        if (e->count == 0) {
            e->attr = (int8_t)attr;
            e->tombstone = 0;
            c->live++;
            c->live_io += pfn + i >= m->phys.ram_pages;
        }
        /* on NT 4.0 a second attribute can be in force at once; the latest wins here,
         * the hazard was recorded by the caller */
        e->attr = (int8_t)attr;
        e->seq = ++c->clock;
        PTL_ASSERT(e->count < UINT32_MAX);
        e->count++;
    }
}

void ptl__cache_unref(ptl_machine *m, uint32_t pfn, uint32_t n)
{
    ptl__cache *c = &m->cache;
    for (uint32_t i = 0; i < n; i++) {
        ptl__cache_entry *e = lookup(c, pfn + i, 0);
        PTL_ASSERT(e && e->count > 0);
        if (--e->count == 0) {
            e->tombstone = 1;
            c->live--;
            c->live_io -= pfn + i >= m->phys.ram_pages;
        }
    }
}

int ptl__cache_check(ptl_machine *m, FILE *why)
{
    uint32_t live = 0, live_io = 0;
    for (uint32_t i = 0; i < m->cache.cap; i++) {
        const ptl__cache_entry *e = &m->cache.slots[i];
        if (!e->pfn_plus1 || !e->count)
            continue;
        live++;
        live_io += e->pfn_plus1 - 1 >= m->phys.ram_pages;
        if (e->attr < 0 || e->attr > 5) {
            fprintf(why, "cache: frame 0x%x has attribute %d\n", e->pfn_plus1 - 1, e->attr);
            return -1;
        }
    }
    if (live != m->cache.live || live_io != m->cache.live_io) {
        fprintf(why, "cache: %u frames tracked (%u device), counters say %u (%u)\n", live, live_io,
                m->cache.live, m->cache.live_io);
        return -1;
    }
    uint32_t with[6] = {0};
    for (uint32_t i = 0; i < m->cache.nranges; i++) {
        const ptl__cache_range *r = &m->cache.ranges[i];
        if (r->n < 1 || r->attr < 0 || r->attr > 5 || (uint64_t)r->pfn + r->n > (1ull << 20)) {
            fprintf(why, "cache: range %u (frames 0x%x+%u, attribute %d) is malformed\n", i, r->pfn,
                    r->n, r->attr);
            return -1;
        }
        with[r->attr]++;
    }
    for (int a = 0; a < 6; a++)
        if (with[a] != m->cache.ranges_with[a]) {
            fprintf(why, "cache: %u ranges are %s, the counter says %u\n", with[a],
                    ptl__cache_name(a), m->cache.ranges_with[a]);
            return -1;
        }
    return 0;
}
