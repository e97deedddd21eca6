/* perf.c - the event log: what happened, in order, with the counters at each moment.
 *
 * The article tells a story of decline: mappings pile up, requests start failing, threads
 * cannot be created, the machine stops. ptelab records each step as an event stamped
 * with a simulated clock (one tick per DDI call, so runs are deterministic) and the Free
 * System Page Table Entries counter of that moment, so that a user sees how the machine
 * got there and not only where it ended.
 *
 * Invariant: events are in strictly increasing seq order, ticks never decrease.
 */
#include "internal.h"

#include <stdarg.h>
#include <string.h>

static const char *const type_names[PTL_EV_TYPES] = {
    "boot", "process", "driver", "thread", "map",  "unmap",
    "fail", "hazard",  "misuse", "stop",   "note",
};

const char *ptl__event_type_name(int type)
{
    return (type >= 0 && type < PTL_EV_TYPES) ? type_names[type] : "?";
}

void ptl__perf_init(ptl_machine *m)
{
    memset(&m->perf, 0, sizeof m->perf);
}

void ptl__perf_free(ptl_machine *m)
{
    free(m->perf.ev);
    memset(&m->perf, 0, sizeof m->perf);
}

void ptl__perf_tick(ptl_machine *m)
{
    m->perf.tick++;
}

void ptl__perf_event(ptl_machine *m, ptl__event_type type, const char *fmt, ...)
{
    ptl__perf *pf = &m->perf;
    if (pf->n == pf->cap) {
        pf->cap = pf->cap ? pf->cap * 2 : 256;
        pf->ev = ptl__xrealloc(pf->ev, pf->cap * sizeof *pf->ev);
    }
    ptl__event *e = &pf->ev[pf->n];
    e->seq = pf->n;
    e->tick = pf->tick;
    e->type = (uint8_t)type;
    e->free_ptes = m->sysptes.pool[PTL_SYSTEM_PTE_SPACE].alloc
                       ? ptl__spool_free_count(m->sysptes.pool[PTL_SYSTEM_PTE_SPACE].alloc)
                       : 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->text, sizeof e->text, fmt, ap);
    va_end(ap);
    pf->n++;
    pf->count[type]++;
    if (pf->echo)
        fprintf(stderr, "[%6llu] %-7s %s\n", (unsigned long long)e->tick, type_names[type],
                e->text);
}

size_t ptl_event_count(const ptl_machine *m)
{
    return ptl__machine_ok(m) ? m->perf.n : 0;
}

int ptl_event_get(const ptl_machine *m, size_t i, ptl_event *out)
{
    if (!ptl__machine_ok(m) || !out || i >= m->perf.n)
        return -1;
    const ptl__event *e = &m->perf.ev[i];
    out->seq = e->seq;
    out->tick = e->tick;
    out->type = type_names[e->type];
    out->free_ptes = e->free_ptes;
    out->text = e->text;
    return 0;
}

uint64_t ptl_event_count_type(const ptl_machine *m, const char *type)
{
    if (!ptl__machine_ok(m) || !type)
        return 0;
    for (int t = 0; t < PTL_EV_TYPES; t++)
        if (strcmp(type_names[t], type) == 0)
            return m->perf.count[t];
    return 0;
}
