/* plan.h - capacity planning for the system PTE pool (`ptelab plan`, issue #9).
 *
 * A workload (adapters and their apertures, drivers and their mapping habits, threads,
 * I/O buffers, each with size and lifetime distributions) is simulated many times with
 * seeded randomness over a sweep of SystemPages values. The simulation works at the level
 * of the system PTE pool only: a spool (spool.h) as long as the pool the layout gives for
 * that SystemPages value (with /USERVA's additional PTEs as a second segment behind a
 * reserved junction index, as sysptes.c builds it), and an event queue ordered by
 * simulated time for arrivals and lifetimes. Each request reserves a run, each release
 * frees it; nothing else of the machine is involved, for speed.
 *
 * Workload file (Lua 5.4; the file only describes, the simulation runs in C). It returns a
 * table:
 *
 *   return {
 *     name = "terminal server",              -- shown in the table and the report
 *     ram = "1G", profile = "nt4sp4",        -- nt4sp3 nt4sp4 win2000 winxp
 *     boot_3gb = true, userva = 2900,        -- boot.ini /3GB, /USERVA=MB (optional)
 *     duration = 600,                        -- simulated seconds per trial (default 60)
 *     adapters = { {name=, count=, aperture=SIZE, map=SIZE|DIST, ...}, ... },
 *     drivers  = { {name=, count=, image=SIZE, maps = { STREAM, ... }}, ... },
 *     threads  = { {initial=N, rate=, lifetime=}, ... },   -- or a single table
 *     io       = { STREAM, ... },
 *     streams  = { STREAM, ... },            -- anything else, api= required
 *   }
 *
 * A STREAM is a source of requests of one DDI:
 *   api        "MmMapIoSpace" (can fail), "MmMapLockedPages" and "MmGetSystemAddressForMdl"
 *              (KernelMode: must succeed, a failure is STOP 0x3F), "MmMapLockedPagesSpecifyCache"
 *              and "MmGetSystemAddressForMdlSafe" (can fail), "MmAllocateNonCachedMemory"
 *              (pages + 1 PTEs, can fail), "stack" (4 PTEs, a thread creation that fails),
 *              "image" (one PTE per page, a driver load that fails), "other"
 *   size       bytes: a number, "64K"/"4M"/"1G", or a distribution
 *   initial    instances requested at `start` (their lifetime: initial_lifetime, default
 *              forever)
 *   rate       further requests per simulated second (Poisson; periodic = true: exactly
 *              every 1/rate seconds, the first at `start`), until `until` (default: the end)
 *   lifetime   seconds a mapping is held: a number, "50ms"/"2s"/"5min"/"1h", a
 *              distribution, or forever (a leak)
 *   max_live   at most this many held at once (further arrivals wait: they are not issued)
 *   must_succeed  overrides the api's default
 * Distributions (globals in the file): constant(v), uniform(a, b), exponential(mean),
 * lognormal(median, sigma), choice({v1, v2, ...}, {w1, w2, ...}), forever.
 * Section defaults: adapters map `map` (default: the whole aperture) with MmMapIoSpace,
 * `count` of them at start, forever; a driver loads an image of `image` bytes per instance
 * (`count`), and each of its maps has initial, rate and max_live multiplied by count
 * (default api MmMapLockedPages); io streams default to MmGetSystemAddressForMdl.
 *
 * Outcomes per trial: a request that finds fewer free PTEs than it needs failed for lack of
 * free PTEs; one that finds enough free but no run long enough failed for fragmentation;
 * when the request must succeed, the trial ends in a STOP. Probabilities are per trial: the
 * fraction of trials in which at least one such event happened.
 *
 * Determinism: trial t of sweep point v uses the seed mix(base seed, v, t), so jobs and
 * shards only partition the (v, t) pairs; every result is an integer sum or maximum and
 * does not depend on how the pairs were partitioned.
 */
#ifndef PTELAB_PLAN_H
#define PTELAB_PLAN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define PTL_PLAN_MAX_CHOICE 16

typedef enum ptl_plan_dist_kind {
    PTL_DIST_CONST = 0,
    PTL_DIST_UNIFORM,   /* a, b */
    PTL_DIST_EXP,       /* mean a */
    PTL_DIST_LOGNORMAL, /* median a, sigma b */
    PTL_DIST_CHOICE,    /* v[n] with cumulative weights cw[n] */
    PTL_DIST_FOREVER    /* lifetimes: never released */
} ptl_plan_dist_kind;

typedef struct ptl_plan_dist {
    int kind, n;
    double a, b;
    double v[PTL_PLAN_MAX_CHOICE], cw[PTL_PLAN_MAX_CHOICE];
} ptl_plan_dist;

typedef enum ptl_plan_api {
    PTL_PLAN_IOSPACE = 0, /* MmMapIoSpace: pages */
    PTL_PLAN_MDL,         /* MDL mapped to system space: pages */
    PTL_PLAN_STACK,       /* kernel stack: 4 */
    PTL_PLAN_IMAGE,       /* driver image: pages */
    PTL_PLAN_NONCACHED,   /* MmAllocateNonCachedMemory: pages + 1 */
    PTL_PLAN_OTHER,       /* pages */
    PTL_PLAN_APIS
} ptl_plan_api;

typedef struct ptl_plan_stream {
    char name[64];
    char api_name[40];
    int api;
    int must_succeed;
    int aperture; /* an adapter aperture mapping (the "smaller apertures" what-if) */
    int periodic;
    uint32_t initial, max_live;
    double rate, start, until; /* until 0: the end of the trial */
    ptl_plan_dist size, lifetime, initial_lifetime;
} ptl_plan_stream;

/* Bounds every workload is held to, from a file or options (ptl_plan_setup): requests
 * per second per stream (simulated time must advance at every event), and RAM. */
#define PTL_PLAN_MAX_RATE 1e7
#define PTL_PLAN_MAX_RAM  4294967296.0 /* bytes: 4 GB, all x86 addresses */

typedef struct ptl_plan_workload {
    char name[128];
    uint64_t ram_bytes; /* default 64 MB */
    int profile;        /* ptl_profile */
    int boot_3gb;
    uint32_t userva_mb;
    double duration; /* simulated seconds per trial */
    ptl_plan_stream *streams;
    int nstreams, cap;
} ptl_plan_workload;

void ptl_plan_workload_init(ptl_plan_workload *w);
void ptl_plan_workload_free(ptl_plan_workload *w);
/* A new zeroed stream with the api's defaults (see above); NULL on an unknown api. */
ptl_plan_stream *ptl_plan_workload_add(ptl_plan_workload *w, const char *name, const char *api);
/* Load a workload file: 0, or -1 with "file: reason" in err. */
int ptl_plan_workload_load(ptl_plan_workload *w, const char *path, char *err, size_t errlen);
uint64_t ptl_plan_workload_hash(const ptl_plan_workload *w);
/* "64K" -> bytes; "50ms" -> seconds. 0 or -1. */
int ptl_plan_parse_size(const char *s, double *bytes);
int ptl_plan_parse_time(const char *s, double *seconds);
int ptl_plan_parse_profile(const char *s);      /* -1 unknown */
const char *ptl_plan_profile_name(int profile); /* "nt4sp4" */
/* The natural logarithm, from + - * / only: identical on every host (plan.c). */
double ptl_plan_log(double x);
/* PTEs one request of `bytes` costs with this api. */
uint32_t ptl_plan_cost(int api, double bytes);

/* What-if points: evaluated at SystemPages max, shown when no sweep value is good enough. */
enum { PTL_WHATIF_NONE = 0, PTL_WHATIF_NO3GB, PTL_WHATIF_APERTURES, PTL_WHATIF_MAPPINGS };

typedef struct ptl_plan_point {
    int what_if;
    uint32_t system_pages; /* the registry value: 0 computed, 0xFFFFFFFF max */
    int boot_3gb;
    uint32_t userva_mb;
    double aperture_scale, concurrency_scale;
    uint32_t seg0, seg1; /* the pool: seg0 PTEs, and with seg1 a junction and seg1 more */
    int fits;            /* the layout accepts this SystemPages value */
    /* results: trials run, trials with each outcome, sums and maxima */
    uint64_t trials, fail_nofree, fail_frag, stop, fail_any;
    uint64_t peak_max, peak_sum, requests, failed_requests, ops;
} ptl_plan_point;

typedef struct ptl_plan {
    char name[128];
    uint64_t hash; /* of the workload */
    uint64_t ram_bytes;
    int profile, boot_3gb;
    uint32_t userva_mb;
    double duration;
    uint64_t seed, trials; /* trials per point */
    double target;
    uint32_t computed_system_ptes, max_system_pages;
    int shard_i, shard_n;
    ptl_plan_point *points;
    int npoints;
} ptl_plan;

typedef struct ptl_plan_opts {
    uint64_t seed;
    uint64_t trials;
    double target;
    const uint32_t *values; /* SystemPages values to sweep; NULL: the default sweep */
    int nvalues;
    int steps; /* points of the default sweep (besides computed and max); 0: 12 */
} ptl_plan_opts;

/* Build the sweep for w: 0, or -1 with the reason in err (the machine does not boot). */
int ptl_plan_setup(ptl_plan *p, const ptl_plan_workload *w, const ptl_plan_opts *o, char *err,
                   size_t errlen);
void ptl_plan_free(ptl_plan *p);

typedef struct ptl_plan_perf {
    uint64_t ops;       /* simulated DDI operations (reserve attempts and releases) */
    double cpu_seconds; /* summed over the worker threads */
    double wall_seconds;
} ptl_plan_perf;

/* Run shard i of n (0 of 1: everything) with `jobs` threads. progress (may be NULL) is
 * called from the calling thread about ten times a second with done/total trials. 0. */
int ptl_plan_run(ptl_plan *p, const ptl_plan_workload *w, int jobs, int shard_i, int shard_n,
                 void (*progress)(void *, uint64_t, uint64_t), void *ctx, ptl_plan_perf *perf);

typedef struct ptl_plan_trial_result {
    int nofree, frag, stop;
    uint32_t peak;
    uint64_t requests, failed_requests, ops;
} ptl_plan_trial_result;
/* One trial of w on a pool of seg0 (+ junction + seg1) PTEs, as point pt scales it. */
void ptl_plan_trial(const ptl_plan_workload *w, const ptl_plan_point *pt, uint64_t seed,
                    ptl_plan_trial_result *r);
uint64_t ptl_plan_trial_seed(uint64_t base, uint32_t point, uint64_t trial);

/* The index of the recommended sweep point: the smallest pool whose failure probability,
 * and that of every larger sweep point, is below target; -1 when there is none. */
int ptl_plan_recommend(const ptl_plan *p);
double ptl_plan_prob(const ptl_plan_point *pt, uint64_t count);
/* The label of a point: "computed", "max", a what-if's description, or "". */
const char *ptl_plan_point_label(const ptl_plan_point *pt);

/* JSON lines: a header line, then one line per point. 0 or -1. */
int ptl_plan_write_jsonl(const ptl_plan *p, FILE *out);
/* Merge shard files written by ptl_plan_write_jsonl: 0, or -1 with the reason in err
 * (mismatched runs, a missing or repeated shard). The result is shard 0 of 1. */
int ptl_plan_merge(ptl_plan *out, const char *const *paths, int n, char *err, size_t errlen);

#endif
