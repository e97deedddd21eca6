/* perf.h - the event log and the simulated clock. See perf.c. */
#ifndef PTELAB_PERF_H
#define PTELAB_PERF_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum ptl__event_type {
    PTL_EV_BOOT = 0,
    PTL_EV_PROCESS,
    PTL_EV_DRIVER,
    PTL_EV_THREAD,
    PTL_EV_MAP,    /* a mapping made */
    PTL_EV_UNMAP,  /* a mapping removed */
    PTL_EV_FAIL,   /* a request NT refused (NULL, NTSTATUS) */
    PTL_EV_HAZARD, /* something NT allows that corrupts or is illegal (cache conflict...) */
    PTL_EV_MISUSE, /* a driver error ptelab diagnosed without a STOP */
    PTL_EV_STOP,
    PTL_EV_NOTE,
    PTL_EV_TYPES
} ptl__event_type;

typedef struct ptl__event {
    uint64_t seq;
    uint64_t tick;      /* simulated clock: one tick per DDI call */
    uint32_t free_ptes; /* Free System Page Table Entries at that moment */
    uint8_t type;
    const char *text; /* in the text arena: stays put while the machine lives */
} ptl__event;

#define PTL_EVENT_TEXT_MAX 160 /* longest event text, the NUL included */

typedef struct ptl__sample {
    uint64_t tick;
    uint64_t v[5]; /* ptl_counters, in order */
} ptl__sample;

typedef struct ptl__snapshot {
    char label[96];
    uint64_t tick;
    uint32_t n;
    uint8_t *uses;    /* ptl_pte_use per system PTE */
    uint32_t *owners; /* driver index + 1 */
} ptl__snapshot;

/* Fragmentation maps kept per machine: each costs 5 bytes per system PTE, and a scenario
 * may take one in a loop. Past the limit the newest replaces the last kept. */
#define PTL_SNAPSHOTS_MAX 256

typedef struct ptl__perf {
    ptl__snapshot *snaps;
    size_t nsnaps;
    uint64_t snaps_replaced; /* taken past PTL_SNAPSHOTS_MAX */
    ptl__sample *samples;
    size_t nsamples, samples_cap;
    ptl__event *ev;
    size_t n, cap;
    size_t checked; /* events ptl__perf_check has looked at (it checks only newer ones) */
    char **chunks;  /* the text arena: chunks that never move, each text stored once */
    size_t nchunks, chunk_used;
    uint64_t tick;
    uint64_t count[PTL_EV_TYPES];
    int echo; /* print events to stderr as they happen */
} ptl__perf;

struct ptl_machine;
void ptl__perf_init(struct ptl_machine *m);
void ptl__perf_free(struct ptl_machine *m);
void ptl__perf_tick(struct ptl_machine *m); /* one DDI call */
/* The log's invariants (see perf.c) over the events added since the last check, or over
 * all of them when all is set; the per-type counts always. */
int ptl__perf_check(struct ptl_machine *m, int all, FILE *why);
void ptl__perf_event(struct ptl_machine *m, ptl__event_type type, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
const char *ptl__event_type_name(int type);
/* snprintf with the event formatter (perf.c): the same bytes and return value; for the
 * tests that hold it against vsnprintf. */
int ptl__format(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
