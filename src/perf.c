/* perf.c - the event log: what happened, in order, with the counters at each moment.
 *
 * The article tells a story of decline: mappings pile up, requests start failing, threads
 * cannot be created, the machine stops. ptelab records each step as an event stamped
 * with a simulated clock (one tick per DDI call, so runs are deterministic) and the Free
 * System Page Table Entries counter of that moment, so that a user sees how the machine
 * got there and not only where it ended.
 *
 * Texts live in an arena of 64 KB chunks that never move, each stored at its own length:
 * an event costs its record and its words, and the pointer ptl_event_get hands out stays
 * valid while the machine lives.
 *
 * Invariants (ptl__perf_check): event i has seq i, its type is known and its text is set;
 * ticks never decrease and never run ahead of the clock; the per-type counts add up to
 * the events; there is a counter sample per event of a booted machine, at most.
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
    for (size_t i = 0; i < m->perf.nsnaps; i++) {
        free(m->perf.snaps[i].uses);
        free(m->perf.snaps[i].owners);
    }
    free(m->perf.snaps);
    free(m->perf.samples);
    free(m->perf.ev);
    for (size_t i = 0; i < m->perf.nchunks; i++)
        free(m->perf.chunks[i]);
    free(m->perf.chunks);
    memset(&m->perf, 0, sizeof m->perf);
}

void ptl__perf_tick(ptl_machine *m)
{
    m->perf.tick++;
#ifdef PTELAB_PARANOID
    /* Debug builds of the tests: every operation starts on a machine whose invariants
     * hold, i.e. every previous one left it so. PTELAB_PARANOID_EVERY=N checks every Nth. */
    static _Thread_local long every = -1;
    if (every < 0) {
        const char *e = getenv("PTELAB_PARANOID_EVERY");
        every = e ? atol(e) : 1;
        if (every < 1)
            every = 1;
    }
    if (!m->stop.stopped && m->perf.tick % (uint64_t)every == 0 && ptl_check(m) != 0) {
        fprintf(stderr, "ptelab: paranoid check at tick %llu: %s\n",
                (unsigned long long)m->perf.tick, ptl_error());
        abort();
    }
#endif
}

/* ---- the event formatter -------------------------------------------------------------
 * Events are formatted as they happen, so formatting is on every DDI's path; glibc's
 * vsnprintf costs a few hundred ns a call. This formatter handles the conversions event
 * texts use (%s %.Ns %c %d %i %u %x %X %p %%, flags - and 0, a width, the length modifiers
 * hh h l ll z) and produces exactly vsnprintf's bytes for them; anything else is handed to
 * vsnprintf whole. tests/test-machine.c compares the two on every conversion it knows. */

typedef struct fmt_out {
    char *buf;
    size_t cap, len; /* len counts every byte, also those past cap (vsnprintf's return) */
} fmt_out;

static void out_byte(fmt_out *o, char c)
{
    if (o->len + 1 < o->cap)
        o->buf[o->len] = c;
    o->len++;
}

static void out_padded(fmt_out *o, const char *s, size_t n, unsigned width, int left, char pad)
{
    size_t fill = width > n ? width - n : 0;
    if (!left)
        for (size_t i = 0; i < fill; i++)
            out_byte(o, pad);
    for (size_t i = 0; i < n; i++)
        out_byte(o, s[i]);
    if (left)
        for (size_t i = 0; i < fill; i++)
            out_byte(o, ' ');
}

/* 0 when fmt was formatted into buf; -1 when it uses something this formatter does not
 * handle (nothing useful is in buf then). */
static int fast_format(char *buf, size_t cap, const char *fmt, va_list ap, size_t *len)
{
    fmt_out o = {buf, cap, 0};
    for (const char *p = fmt; *p; p++) {
        if (*p != '%') {
            out_byte(&o, *p);
            continue;
        }
        p++;
        int left = 0, zero = 0;
        for (;; p++) {
            if (*p == '-')
                left = 1;
            else if (*p == '0')
                zero = 1;
            else
                break;
        }
        unsigned width = 0;
        while (*p >= '0' && *p <= '9')
            width = width * 10 + (unsigned)(*p++ - '0');
        int prec = -1;
        if (*p == '.') {
            p++;
            prec = 0;
            while (*p >= '0' && *p <= '9')
                prec = prec * 10 + (*p++ - '0');
        }
        int lng = 0; /* 0 int, 1 long, 2 long long, 3 size_t, -1 short, -2 char */
        if (*p == 'h') {
            lng = p[1] == 'h' ? -2 : -1;
            p -= lng;
        } else if (*p == 'l') {
            lng = p[1] == 'l' ? 2 : 1;
            p += lng;
        } else if (*p == 'z') {
            lng = 3;
            p++;
        }
        char tmp[24];
        size_t n = 0;
        switch (*p) {
        case '%':
            out_byte(&o, '%');
            continue;
        case 'c':
            tmp[0] = (char)va_arg(ap, int);
            out_padded(&o, tmp, 1, width, left, ' ');
            continue;
        case 's': {
            const char *str = va_arg(ap, const char *);
            if (!str)
                return -1; /* glibc prints "(null)", or not: leave it to glibc */
            size_t sl = 0;
            while ((prec < 0 || sl < (size_t)prec) && str[sl]) /* a tag need not end */
                sl++;
            out_padded(&o, str, sl, width, left, ' ');
            continue;
        }
        case 'd':
        case 'i': {
            if (prec >= 0)
                return -1;
            long long v = lng == 2   ? va_arg(ap, long long)
                          : lng == 1 ? va_arg(ap, long)
                          : lng == 3 ? (long long)va_arg(ap, size_t)
                                     : va_arg(ap, int);
            if (lng < 0)
                v = lng == -1 ? (short)v : (signed char)v;
            unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
            do
                tmp[sizeof tmp - 1 - n++] = (char)('0' + u % 10);
            while (u /= 10);
            if (v < 0) {
                if (zero && !left) { /* the sign goes before the zeros */
                    out_byte(&o, '-');
                    width = width ? width - 1 : 0;
                } else {
                    tmp[sizeof tmp - 1 - n++] = '-';
                }
            }
            out_padded(&o, tmp + sizeof tmp - n, n, width, left, zero && !left ? '0' : ' ');
            continue;
        }
        case 'u':
        case 'x':
        case 'X':
        case 'p': {
            if (prec >= 0)
                return -1;
            unsigned long long u;
            int base = *p == 'u' ? 10 : 16;
            const char *digits = *p == 'X' ? "0123456789ABCDEF" : "0123456789abcdef";
            if (*p == 'p') {
                if (lng || zero)
                    return -1;
                u = (unsigned long long)(uintptr_t)va_arg(ap, void *);
                if (!u)
                    return -1; /* "(nil)": glibc's business */
            } else {
                u = lng == 2   ? va_arg(ap, unsigned long long)
                    : lng == 1 ? va_arg(ap, unsigned long)
                    : lng == 3 ? va_arg(ap, size_t)
                               : va_arg(ap, unsigned int);
                if (lng < 0)
                    u = lng == -1 ? (unsigned short)u : (unsigned char)u;
            }
            do
                tmp[sizeof tmp - 1 - n++] = digits[u % (unsigned)base];
            while (u /= (unsigned)base);
            if (*p == 'p') {
                tmp[sizeof tmp - 1 - n++] = 'x';
                tmp[sizeof tmp - 1 - n++] = '0';
            }
            out_padded(&o, tmp + sizeof tmp - n, n, width, left, zero && !left ? '0' : ' ');
            continue;
        }
        default:
            return -1;
        }
    }
    if (cap)
        buf[o.len < cap ? o.len : cap - 1] = '\0';
    *len = o.len;
    return 0;
}

int ptl__format(char *buf, size_t cap, const char *fmt, ...)
{
    va_list ap, again;
    va_start(ap, fmt);
    va_copy(again, ap);
    size_t len = 0;
    int r = fast_format(buf, cap, fmt, ap, &len) == 0 ? (int)len : vsnprintf(buf, cap, fmt, again);
    va_end(again);
    va_end(ap);
    return r;
}

#define CHUNK_BYTES 65536u

static const char *arena_copy(ptl__perf *pf, const char *text)
{
    size_t len = strlen(text) + 1;
    if (!pf->nchunks || pf->chunk_used + len > CHUNK_BYTES) {
        pf->chunks = ptl__xrealloc(pf->chunks, (pf->nchunks + 1) * sizeof *pf->chunks);
        pf->chunks[pf->nchunks++] = ptl__xrealloc(NULL, CHUNK_BYTES);
        pf->chunk_used = 0;
    }
    char *at = pf->chunks[pf->nchunks - 1] + pf->chunk_used;
    memcpy(at, text, len);
    pf->chunk_used += len;
    return at;
}

int ptl__perf_check(ptl_machine *m, int all, FILE *why)
{
    ptl__perf *pf = &m->perf;
    uint64_t sum = 0;
    for (int t = 0; t < PTL_EV_TYPES; t++)
        sum += pf->count[t];
    if (sum != pf->n || pf->nsamples > pf->n) {
        fprintf(why, "perf: %zu events, the per-type counts add up to %llu, %zu samples\n", pf->n,
                (unsigned long long)sum, pf->nsamples);
        return -1;
    }
    for (size_t i = all ? 0 : pf->checked; i < pf->n; i++) {
        const ptl__event *e = &pf->ev[i];
        if (e->seq != i || e->type >= PTL_EV_TYPES || !e->text || e->tick > pf->tick ||
            (i > 0 && e->tick < pf->ev[i - 1].tick)) {
            fprintf(why, "perf: event %zu (seq %llu, tick %llu) is out of order or broken\n", i,
                    (unsigned long long)e->seq, (unsigned long long)e->tick);
            return -1;
        }
    }
    pf->checked = pf->n;
    return 0;
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
    char text[PTL_EVENT_TEXT_MAX];
    va_list ap, again;
    va_start(ap, fmt);
    va_copy(again, ap);
    size_t len;
    if (fast_format(text, sizeof text, fmt, ap, &len) != 0)
        vsnprintf(text, sizeof text, fmt, again);
    va_end(again);
    va_end(ap);
    e->text = arena_copy(pf, text);
    pf->n++;
    pf->count[type]++;
    if (m->magic == PTL__MACHINE_MAGIC) { /* sample the counters at every event */
        if (pf->nsamples == pf->samples_cap) {
            pf->samples_cap = pf->samples_cap ? pf->samples_cap * 2 : 256;
            pf->samples = ptl__xrealloc(pf->samples, pf->samples_cap * sizeof *pf->samples);
        }
        ptl_counters c;
        ptl_counters_get(m, &c);
        ptl__sample *smp = &pf->samples[pf->nsamples++];
        smp->tick = pf->tick;
        smp->v[0] = c.free_system_ptes;
        smp->v[1] = c.pool_paged_bytes;
        smp->v[2] = c.pool_nonpaged_bytes;
        smp->v[3] = c.available_bytes;
        smp->v[4] = c.committed_bytes;
    }
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
    if (!ptl__machine_ok(m))
        return -1;
    if (!out || i >= m->perf.n)
        return ptl__fail("ptl_event_get: %s",
                         !out ? "no place for the event" : "no event at that index");
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
    if (!ptl__machine_ok(m))
        return 0;
    if (!type) {
        ptl__fail("ptl_event_count_type: no type name");
        return 0;
    }
    for (int t = 0; t < PTL_EV_TYPES; t++)
        if (strcmp(type_names[t], type) == 0)
            return m->perf.count[t];
    return 0;
}

/* The counters. What ptelab models of each (docs/fidelity.md, "Counters"):
 *   Free System Page Table Entries: free PTEs of the system PTE pool;
 *   Pool Nonpaged Bytes: nonpaged pool blocks allocated (pool.c), plus live MDLs at their
 *     x86 size (ptelab keeps MDLs in host memory);
 *   Pool Paged Bytes: paged pool blocks allocated;
 *   Available Bytes: free RAM frames;
 *   Committed Bytes: RAM in use beyond the boot region, plus page-file pages in use. */
void ptl_counters_get(const ptl_machine *m, ptl_counters *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!ptl__machine_ok(m))
        return;
    out->free_system_ptes = ptl__spool_free_count(m->sysptes.pool[PTL_SYSTEM_PTE_SPACE].alloc);
    out->pool_nonpaged_bytes = m->pools.nonpaged_bytes + m->mdls.pool_bytes;
    out->pool_paged_bytes = m->pools.paged_bytes;
    out->available_bytes = (uint64_t)ptl__phys_available(&m->phys) * PTL_PAGE_SIZE;
    out->committed_bytes =
        ((uint64_t)(m->phys.in_use - m->phys.use_count[PTL_USE_BOOT]) + m->procs.pagefile.used) *
        PTL_PAGE_SIZE;
}

size_t ptl_timeline_count(const ptl_machine *m)
{
    return ptl__machine_ok(m) ? m->perf.nsamples : 0;
}

int ptl_timeline_get(const ptl_machine *m, size_t i, uint64_t *tick, ptl_counters *out)
{
    if (!ptl__machine_ok(m))
        return -1;
    if (i >= m->perf.nsamples)
        return ptl__fail("ptl_timeline_get: no sample at that index");
    const ptl__sample *s = &m->perf.samples[i];
    if (tick)
        *tick = s->tick;
    if (out) {
        out->free_system_ptes = s->v[0];
        out->pool_paged_bytes = s->v[1];
        out->pool_nonpaged_bytes = s->v[2];
        out->available_bytes = s->v[3];
        out->committed_bytes = s->v[4];
    }
    return 0;
}

void ptl_events_echo(ptl_machine *m, int on)
{
    if (ptl__machine_ok(m))
        m->perf.echo = on != 0;
}

/* typeperf's PDH-CSV: a header row whose first field names the format and the time zone,
 * then one quoted row per sample with a local timestamp "MM/DD/YYYY HH:MM:SS.mmm". The
 * simulated clock starts at 01/01/2000 00:00:00.000 and a tick is a millisecond. */
int ptl_perf_csv(const ptl_machine *m, FILE *out)
{
    static const char *const names[PTL_COUNTERS] = {
        "Free System Page Table Entries",
        "Pool Paged Bytes",
        "Pool Nonpaged Bytes",
        "Available Bytes",
        "Committed Bytes",
    };
    if (!ptl__machine_ok(m))
        return -1;
    if (!out)
        return ptl__fail("ptl_perf_csv: no output file");
    fprintf(out, "\"(PDH-CSV 4.0) (Coordinated Universal Time)(0)\"");
    for (int i = 0; i < PTL_COUNTERS; i++)
        fprintf(out, ",\"\\\\PTELAB\\Memory\\%s\"", names[i]);
    fprintf(out, "\r\n");
    for (size_t k = 0; k < m->perf.nsamples; k++) {
        const ptl__sample *s = &m->perf.samples[k];
        uint64_t ms = s->tick % 1000, sec = s->tick / 1000;
        uint64_t days = sec / 86400, rem = sec % 86400;
        /* days since 2000-01-01 to a calendar date */
        int y = 2000, mo = 1;
        static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
        for (;;) {
            int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            uint64_t ylen = 365u + (unsigned)leap;
            if (days < ylen)
                break;
            days -= ylen;
            y++;
        }
        for (int i = 0; i < 12; i++) {
            int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            uint64_t len = (uint64_t)mdays[i] + (i == 1 && leap);
            if (days < len)
                break;
            days -= len;
            mo++;
        }
        fprintf(out, "\"%02d/%02d/%04d %02u:%02u:%02u.%03u\"", mo, (int)days + 1, y,
                (unsigned)(rem / 3600), (unsigned)(rem / 60 % 60), (unsigned)(rem % 60),
                (unsigned)ms);
        for (int i = 0; i < PTL_COUNTERS; i++)
            fprintf(out, ",\"%llu\"", (unsigned long long)s->v[i]);
        fprintf(out, "\r\n");
    }
    return ferror(out) ? -1 : 0;
}

void ptl_report_snapshot(ptl_machine *m, const char *label)
{
    if (!ptl__machine_ok(m))
        return;
    ptl__perf *pf = &m->perf;
    ptl__snapshot *s;
    if (pf->nsnaps == PTL_SNAPSHOTS_MAX) { /* bounded: the newest replaces the last */
        s = &pf->snaps[pf->nsnaps - 1];
        free(s->uses);
        free(s->owners);
        pf->snaps_replaced++;
    } else {
        pf->snaps = ptl__xrealloc(pf->snaps, (pf->nsnaps + 1) * sizeof *pf->snaps);
        s = &pf->snaps[pf->nsnaps++];
    }
    memset(s, 0, sizeof *s);
    snprintf(s->label, sizeof s->label, "%s", label ? label : "");
    s->tick = pf->tick;
    s->n = ptl_syspte_snapshot(m, NULL, NULL, 0);
    s->uses = ptl__xcalloc(s->n ? s->n : 1, 1);
    s->owners = ptl__xcalloc(s->n ? s->n : 1, sizeof *s->owners);
    ptl_syspte_snapshot(m, s->uses, s->owners, s->n);
}
