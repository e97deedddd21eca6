/* plan.c - `ptelab plan`: Monte Carlo capacity planning of the system PTE pool.
 *
 * The workload format and the meaning of the results are described in plan.h and
 * docs/plan.md. This file holds the workload loader (Lua), the sweep (which pool sizes
 * the layout gives for each SystemPages value), the simulation, the threaded runner with
 * shards, and the JSON-lines form of results with its merge.
 *
 * The simulation of one trial: every stream has one pending arrival and its releases in an
 * event queue keyed (time, kind, sequence) where releases sort before arrivals at equal
 * times; an
 * arrival reserves a run from the spool (first fit by address, as the system PTE pool)
 * and schedules its release after a lifetime drawn from the stream's distribution, or
 * keeps it forever. The spool is reused between trials of a worker: at the end of a trial
 * every run still held is released, which leaves the spool as it was created.
 */
#include "plan.h"

#include "internal.h"
#include "layout.h"
#include "spool.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <errno.h>
#include <math.h> /* INFINITY, isfinite: no libm functions (see below) */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* The spool engine: the fast one (identical placement to the reference, spool.h). */
#define PLAN_SPOOL_IMPL PTL_SPOOL_FAST

#define PAGE             4096.0
#define STACK_PTES       4u
#define PLAN_MAX_STREAMS 4096
/* Bounds that keep a trial finite: simulated time must move on at every event, and a
 * double near a year still resolves nanoseconds, far below the gap between arrivals
 * at the highest rate. */
#define PLAN_MAX_SECONDS (366.0 * 86400.0)
#define DEFAULT_STEPS    12
#define SYSTEM_PAGES_MAX 0xFFFFFFFFu

static void seterr(char *err, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t len, const char *fmt, ...)
{
    if (!err || !len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
}

/* ---- workload ------------------------------------------------------------------------ */

static const struct {
    const char *name;
    int api, must;
} api_table[] = {
    {"MmMapIoSpace", PTL_PLAN_IOSPACE, 0},
    {"MmMapLockedPages", PTL_PLAN_MDL, 1},
    {"MmGetSystemAddressForMdl", PTL_PLAN_MDL, 1},
    {"MmMapLockedPagesSpecifyCache", PTL_PLAN_MDL, 0},
    {"MmGetSystemAddressForMdlSafe", PTL_PLAN_MDL, 0},
    {"MmAllocateNonCachedMemory", PTL_PLAN_NONCACHED, 0},
    {"stack", PTL_PLAN_STACK, 0},
    {"image", PTL_PLAN_IMAGE, 0},
    {"other", PTL_PLAN_OTHER, 0},
};

void ptl_plan_workload_init(ptl_plan_workload *w)
{
    memset(w, 0, sizeof *w);
    snprintf(w->name, sizeof w->name, "workload");
    w->ram_bytes = 64ull << 20;
    w->profile = 1; /* PTL_NT4_SP4 */
    w->duration = 60;
}

void ptl_plan_workload_free(ptl_plan_workload *w)
{
    free(w->streams);
    w->streams = NULL;
    w->nstreams = w->cap = 0;
}

ptl_plan_stream *ptl_plan_workload_add(ptl_plan_workload *w, const char *name, const char *api)
{
    int k = -1;
    for (size_t i = 0; i < sizeof api_table / sizeof api_table[0]; i++)
        if (strcasecmp(api, api_table[i].name) == 0)
            k = (int)i;
    if (k < 0 || w->nstreams >= PLAN_MAX_STREAMS)
        return NULL;
    if (w->nstreams == w->cap) {
        int cap = w->cap ? w->cap * 2 : 16;
        ptl_plan_stream *s = realloc(w->streams, (size_t)cap * sizeof *s);
        if (!s)
            return NULL;
        w->streams = s;
        w->cap = cap;
    }
    ptl_plan_stream *s = &w->streams[w->nstreams++];
    memset(s, 0, sizeof *s); /* hashed as bytes: padding included */
    snprintf(s->name, sizeof s->name, "%s", name ? name : api);
    snprintf(s->api_name, sizeof s->api_name, "%s", api_table[k].name);
    s->api = api_table[k].api;
    s->must_succeed = api_table[k].must;
    s->size.kind = PTL_DIST_CONST;
    s->size.a = PAGE;
    s->lifetime.kind = PTL_DIST_FOREVER;
    s->initial_lifetime.kind = PTL_DIST_FOREVER;
    return s;
}

uint32_t ptl_plan_cost(int api, double bytes)
{
    if (api == PTL_PLAN_STACK)
        return STACK_PTES;
    if (!(bytes > 0))
        bytes = 1;
    double q = bytes / PAGE;
    if (q > 1048576.0)
        q = 1048576.0;
    uint32_t n = (uint32_t)q;
    if ((double)n < q)
        n++;
    return api == PTL_PLAN_NONCACHED ? n + 1 : n;
}

int ptl_plan_parse_profile(const char *s)
{
    return ptl_profile_from_name(s);
}

const char *ptl_plan_profile_name(int profile)
{
    return ptl_profile_name((ptl_profile)profile);
}

int ptl_plan_parse_size(const char *s, double *bytes)
{
    return ptl__parse_size_bytes(s, bytes);
}

int ptl_plan_parse_time(const char *s, double *seconds)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || !(v >= 0))
        return -1;
    double mult = 1;
    if (strcmp(end, "ms") == 0)
        mult = 1e-3;
    else if (strcmp(end, "us") == 0)
        mult = 1e-6;
    else if (strcmp(end, "s") == 0 || !*end)
        mult = 1;
    else if (strcmp(end, "min") == 0 || strcmp(end, "m") == 0)
        mult = 60;
    else if (strcmp(end, "h") == 0)
        mult = 3600;
    else
        return -1;
    if (!isfinite(v * mult) || v * mult > PLAN_MAX_SECONDS)
        return -1; /* inf, overflow, or more than a year */
    *seconds = v * mult;
    return 0;
}

uint64_t ptl_plan_workload_hash(const ptl_plan_workload *w)
{
    uint64_t h = 0xcbf29ce484222325ull;
#define HASH(ptr, len)                                          \
    do {                                                        \
        const unsigned char *b_ = (const unsigned char *)(ptr); \
        for (size_t i_ = 0; i_ < (len); i_++)                   \
            h = (h ^ b_[i_]) * 0x100000001b3ull;                \
    } while (0)
    HASH(w->name, strlen(w->name));
    HASH(&w->ram_bytes, sizeof w->ram_bytes);
    HASH(&w->boot_3gb, sizeof w->boot_3gb);
    HASH(&w->userva_mb, sizeof w->userva_mb);
    HASH(&w->duration, sizeof w->duration);
    HASH(&w->profile, sizeof w->profile);
    for (int i = 0; i < w->nstreams; i++)
        HASH(&w->streams[i], sizeof w->streams[i]);
#undef HASH
    return h;
}

/* ---- the Lua loader ------------------------------------------------------------------ */

static const char lua_prelude[] =
    "forever = 'forever'\n"
    "function constant(v) return {dist='const', v} end\n"
    "function uniform(a, b) return {dist='uniform', a, b} end\n"
    "function exponential(mean) return {dist='exp', mean} end\n"
    "function lognormal(median, sigma) return {dist='lognormal', median, sigma} end\n"
    "function choice(values, weights) return {dist='choice', values=values, weights=weights} "
    "end\n";

typedef struct loader {
    lua_State *L;
    ptl_plan_workload *w;
    char *err;
    size_t errlen;
    char where[160];
} loader;

enum { Q_SIZE, Q_TIME, Q_COUNT };

/* A quantity at idx: a number, or a string with a unit. */
static int get_quantity(loader *ld, int idx, int unit, const char *field, double *out)
{
    lua_State *L = ld->L;
    if (lua_type(L, idx) == LUA_TNUMBER) {
        *out = lua_tonumber(L, idx);
        if (*out >= 0 && isfinite(*out))
            return 0;
    } else if (lua_type(L, idx) == LUA_TSTRING && unit != Q_COUNT) {
        const char *s = lua_tostring(L, idx);
        if ((unit == Q_SIZE ? ptl_plan_parse_size(s, out) : ptl_plan_parse_time(s, out)) == 0)
            return 0;
    }
    seterr(ld->err, ld->errlen, "%s: %s: '%s' is not a %s", ld->where, field,
           luaL_tolstring(L, idx, NULL),
           unit == Q_SIZE   ? "size (bytes, \"64K\", \"4M\")"
           : unit == Q_TIME ? "time (seconds, \"50ms\", \"5min\")"
                            : "non-negative number");
    lua_pop(L, 1);
    return -1;
}

static int get_dist(loader *ld, int idx, int unit, int allow_forever, const char *field,
                    ptl_plan_dist *d)
{
    lua_State *L = ld->L;
    idx = lua_absindex(L, idx);
    memset(d, 0, sizeof *d);
    if (lua_type(L, idx) == LUA_TSTRING && strcmp(lua_tostring(L, idx), "forever") == 0) {
        if (!allow_forever) {
            seterr(ld->err, ld->errlen, "%s: %s cannot be forever", ld->where, field);
            return -1;
        }
        d->kind = PTL_DIST_FOREVER;
        return 0;
    }
    if (lua_type(L, idx) != LUA_TTABLE) {
        d->kind = PTL_DIST_CONST;
        return get_quantity(ld, idx, unit, field, &d->a);
    }
    lua_getfield(L, idx, "dist");
    const char *kind = lua_tostring(L, -1);
    char kbuf[16] = "";
    if (kind)
        snprintf(kbuf, sizeof kbuf, "%s", kind);
    lua_pop(L, 1);
    int rc = 0;
    if (strcmp(kbuf, "const") == 0 || strcmp(kbuf, "exp") == 0) {
        d->kind = kbuf[0] == 'c' ? PTL_DIST_CONST : PTL_DIST_EXP;
        lua_geti(L, idx, 1);
        rc = get_quantity(ld, -1, unit, field, &d->a);
        lua_pop(L, 1);
    } else if (strcmp(kbuf, "uniform") == 0 || strcmp(kbuf, "lognormal") == 0) {
        d->kind = kbuf[0] == 'u' ? PTL_DIST_UNIFORM : PTL_DIST_LOGNORMAL;
        lua_geti(L, idx, 1);
        rc = get_quantity(ld, -1, unit, field, &d->a);
        lua_pop(L, 1);
        lua_geti(L, idx, 2);
        if (rc == 0)
            rc = get_quantity(ld, -1, d->kind == PTL_DIST_UNIFORM ? unit : Q_COUNT, field, &d->b);
        lua_pop(L, 1);
        if (rc == 0 && d->kind == PTL_DIST_UNIFORM && d->b < d->a) {
            seterr(ld->err, ld->errlen, "%s: %s: uniform(a, b) needs a <= b", ld->where, field);
            rc = -1;
        }
    } else if (strcmp(kbuf, "choice") == 0) {
        d->kind = PTL_DIST_CHOICE;
        lua_getfield(L, idx, "values");
        lua_getfield(L, idx, "weights");
        int nv = lua_type(L, -2) == LUA_TTABLE ? (int)luaL_len(L, -2) : 0;
        if (nv < 1 || nv > PTL_PLAN_MAX_CHOICE) {
            seterr(ld->err, ld->errlen, "%s: %s: choice needs 1 to %d values", ld->where, field,
                   PTL_PLAN_MAX_CHOICE);
            rc = -1;
        }
        double sum = 0;
        for (int i = 0; rc == 0 && i < nv; i++) {
            lua_geti(L, -2, i + 1);
            rc = get_quantity(ld, -1, unit, field, &d->v[i]);
            lua_pop(L, 1);
            double wt = 1;
            if (rc == 0 && lua_type(L, -1) == LUA_TTABLE) {
                lua_geti(L, -1, i + 1);
                rc = get_quantity(ld, -1, Q_COUNT, field, &wt);
                lua_pop(L, 1);
            }
            sum += wt;
            d->cw[i] = sum;
        }
        d->n = nv;
        if (rc == 0 && !(sum > 0)) {
            seterr(ld->err, ld->errlen, "%s: %s: choice weights sum to 0", ld->where, field);
            rc = -1;
        }
        for (int i = 0; rc == 0 && i < nv; i++)
            d->cw[i] /= sum;
        lua_pop(L, 2);
    } else {
        seterr(ld->err, ld->errlen,
               "%s: %s: not a distribution (use constant, uniform, exponential, lognormal, "
               "choice%s)",
               ld->where, field, allow_forever ? " or forever" : "");
        rc = -1;
    }
    return rc;
}

/* Optional field: 1 present and parsed, 0 absent, -1 error. */
static int opt_number(loader *ld, int t, const char *key, int unit, double *out)
{
    lua_getfield(ld->L, t, key);
    int rc = 0;
    if (!lua_isnil(ld->L, -1))
        rc = get_quantity(ld, -1, unit, key, out) == 0 ? 1 : -1;
    lua_pop(ld->L, 1);
    return rc;
}

static int opt_dist(loader *ld, int t, const char *key, int unit, int forever, ptl_plan_dist *d)
{
    lua_getfield(ld->L, t, key);
    int rc = 0;
    if (!lua_isnil(ld->L, -1))
        rc = get_dist(ld, -1, unit, forever, key, d) == 0 ? 1 : -1;
    lua_pop(ld->L, 1);
    return rc;
}

static int opt_bool(loader *ld, int t, const char *key, int *out)
{
    lua_getfield(ld->L, t, key);
    int rc = 0;
    if (lua_type(ld->L, -1) == LUA_TBOOLEAN) {
        *out = lua_toboolean(ld->L, -1);
        rc = 1;
    } else if (!lua_isnil(ld->L, -1)) { /* "false" and 0 would be true in Lua */
        seterr(ld->err, ld->errlen, "%s: %s: '%s' is not true or false", ld->where, key,
               luaL_tolstring(ld->L, -1, NULL));
        lua_pop(ld->L, 1);
        rc = -1;
    }
    lua_pop(ld->L, 1);
    return rc;
}

static void opt_string(loader *ld, int t, const char *key, char *out, size_t len)
{
    lua_getfield(ld->L, t, key);
    if (lua_type(ld->L, -1) == LUA_TSTRING)
        snprintf(out, len, "%s", lua_tostring(ld->L, -1));
    lua_pop(ld->L, 1);
}

static int check_count(loader *ld, double v, const char *key, uint32_t *out)
{
    if (v > 1e7 || (double)(uint32_t)v != v) {
        seterr(ld->err, ld->errlen, "%s: %s %g is not a whole count up to 10000000", ld->where, key,
               v);
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

/* The common stream fields of the table at t, with `mult` instances (a driver's count). */
static int stream_fields(loader *ld, int t, ptl_plan_stream *s, double mult)
{
    double v;
    int rc;
    if ((rc = opt_dist(ld, t, "size", Q_SIZE, 0, &s->size)) < 0)
        return -1;
    if ((rc = opt_dist(ld, t, "lifetime", Q_TIME, 1, &s->lifetime)) < 0)
        return -1;
    if ((rc = opt_dist(ld, t, "initial_lifetime", Q_TIME, 1, &s->initial_lifetime)) < 0)
        return -1;
    if ((rc = opt_number(ld, t, "initial", Q_COUNT, &v)) < 0)
        return -1;
    if (rc && check_count(ld, v * mult, "initial", &s->initial) < 0)
        return -1;
    if ((rc = opt_number(ld, t, "max_live", Q_COUNT, &v)) < 0)
        return -1;
    if (rc && check_count(ld, v * mult, "max_live", &s->max_live) < 0)
        return -1;
    if ((rc = opt_number(ld, t, "rate", Q_COUNT, &v)) < 0)
        return -1;
    if (rc)
        s->rate = v * mult;
    if (opt_number(ld, t, "start", Q_TIME, &s->start) < 0 ||
        opt_number(ld, t, "until", Q_TIME, &s->until) < 0 ||
        opt_bool(ld, t, "periodic", &s->periodic) < 0 ||
        opt_bool(ld, t, "must_succeed", &s->must_succeed) < 0)
        return -1;
    return 0;
}

static ptl_plan_stream *add_stream(loader *ld, int t, const char *name, const char *def_api)
{
    char api[40];
    snprintf(api, sizeof api, "%s", def_api ? def_api : "");
    opt_string(ld, t, "api", api, sizeof api);
    if (!api[0]) {
        seterr(ld->err, ld->errlen, "%s: api missing", ld->where);
        return NULL;
    }
    ptl_plan_stream *s = ptl_plan_workload_add(ld->w, name, api);
    if (!s && ld->w->nstreams >= PLAN_MAX_STREAMS)
        seterr(ld->err, ld->errlen, "%s: more than %d streams", ld->where, PLAN_MAX_STREAMS);
    else if (!s)
        seterr(ld->err, ld->errlen,
               "%s: unknown api '%s' (MmMapIoSpace, MmMapLockedPages, MmGetSystemAddressForMdl, "
               "MmMapLockedPagesSpecifyCache, MmGetSystemAddressForMdlSafe, "
               "MmAllocateNonCachedMemory, stack, image, other)",
               ld->where, api);
    return s;
}

/* Iterate the list in field `key` (a single table counts as a list of one). */
#define STREAM_KEYS                                                                                \
    "api", "name", "size", "lifetime", "initial_lifetime", "initial", "max_live", "rate", "start", \
        "until", "periodic", "must_succeed"

/* Every string key of the table at t is one of `known` (NULL-terminated): a misspelt field
 * would otherwise be ignored and the plan made for another workload. */
static int check_keys(loader *ld, int t, const char *const *known)
{
    lua_State *L = ld->L;
    lua_pushnil(L);
    while (lua_next(L, t) != 0) {
        lua_pop(L, 1); /* the value */
        if (lua_type(L, -1) != LUA_TSTRING)
            continue; /* a list's indices */
        const char *k = lua_tostring(L, -1);
        int ok = 0;
        for (int i = 0; known[i] && !ok; i++)
            ok = strcmp(k, known[i]) == 0;
        if (!ok) {
            seterr(ld->err, ld->errlen, "%s: unknown field '%s'", ld->where, k);
            lua_pop(L, 1);
            return -1;
        }
    }
    return 0;
}

static int each_entry(loader *ld, const char *key, int (*fn)(loader *, int, int))
{
    lua_State *L = ld->L;
    lua_getfield(L, 1, key);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    if (lua_type(L, -1) != LUA_TTABLE) {
        seterr(ld->err, ld->errlen, "%s: a table expected", key);
        lua_pop(L, 1);
        return -1;
    }
    int list = lua_absindex(L, -1);
    lua_geti(L, list, 1);
    int single = lua_isnil(L, -1);
    lua_pop(L, 1);
    int n = single ? 1 : (int)luaL_len(L, list);
    int rc = 0;
    for (int i = 1; rc == 0 && i <= n; i++) {
        if (single)
            lua_pushvalue(L, list);
        else
            lua_geti(L, list, i);
        snprintf(ld->where, sizeof ld->where, "%s[%d]", key, i);
        if (lua_type(L, -1) != LUA_TTABLE) {
            seterr(ld->err, ld->errlen, "%s: a table expected", ld->where);
            rc = -1;
        } else {
            rc = fn(ld, lua_absindex(L, -1), i);
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return rc;
}

static int load_adapter(loader *ld, int t, int i)
{
    static const char *const keys[] = {STREAM_KEYS, "count", "aperture", "map", NULL};
    if (check_keys(ld, t, keys) < 0)
        return -1;
    char name[64];
    snprintf(name, sizeof name, "adapter %d", i);
    opt_string(ld, t, "name", name, sizeof name);
    double count = 1, aperture = 0;
    if (opt_number(ld, t, "count", Q_COUNT, &count) < 0)
        return -1;
    if (opt_number(ld, t, "aperture", Q_SIZE, &aperture) <= 0) {
        if (!ld->err[0])
            seterr(ld->err, ld->errlen, "%s: aperture (its size) missing", ld->where);
        return -1;
    }
    ptl_plan_stream *s = add_stream(ld, t, name, "MmMapIoSpace");
    if (!s)
        return -1;
    s->aperture = 1;
    s->size.kind = PTL_DIST_CONST;
    s->size.a = aperture;
    if (opt_dist(ld, t, "map", Q_SIZE, 0, &s->size) < 0)
        return -1;
    lua_getfield(ld->L, t, "rate");
    int has_rate = !lua_isnil(ld->L, -1);
    lua_pop(ld->L, 1);
    if (!has_rate && check_count(ld, count, "count", &s->initial) < 0)
        return -1;
    return stream_fields(ld, t, s, count);
}

static int load_driver(loader *ld, int t, int i)
{
    static const char *const keys[] = {"name", "count", "image", "maps", NULL};
    static const char *const map_keys[] = {STREAM_KEYS, NULL};
    if (check_keys(ld, t, keys) < 0)
        return -1;
    lua_State *L = ld->L;
    char name[64], where[96];
    snprintf(name, sizeof name, "driver %d", i);
    opt_string(ld, t, "name", name, sizeof name);
    double count = 1;
    ptl_plan_dist image;
    if (opt_number(ld, t, "count", Q_COUNT, &count) < 0)
        return -1;
    int has_image = opt_dist(ld, t, "image", Q_SIZE, 0, &image);
    if (has_image < 0)
        return -1;
    if (has_image) {
        ptl_plan_stream *s = ptl_plan_workload_add(ld->w, name, "image");
        if (!s) {
            seterr(ld->err, ld->errlen, "%s: too many streams", ld->where);
            return -1;
        }
        s->size = image;
        if (check_count(ld, count, "count", &s->initial) < 0)
            return -1;
    }
    snprintf(where, sizeof where, "%.80s", ld->where);
    lua_getfield(L, t, "maps");
    if (lua_type(L, -1) == LUA_TTABLE) {
        int maps = lua_absindex(L, -1);
        int n = (int)luaL_len(L, maps);
        for (int k = 1; k <= n; k++) {
            lua_geti(L, maps, k);
            snprintf(ld->where, sizeof ld->where, "%s.maps[%d]", where, k);
            int m = lua_absindex(L, -1);
            char mname[64];
            snprintf(mname, sizeof mname, "%s", name);
            opt_string(ld, m, "name", mname, sizeof mname);
            ptl_plan_stream *s = lua_type(L, m) == LUA_TTABLE && check_keys(ld, m, map_keys) == 0
                                     ? add_stream(ld, m, mname, "MmMapLockedPages")
                                     : NULL;
            if (!s || stream_fields(ld, m, s, count) < 0) {
                if (!ld->err[0])
                    seterr(ld->err, ld->errlen, "%s: a table expected", ld->where);
                lua_pop(L, 2);
                return -1;
            }
            lua_pop(L, 1);
        }
    } else if (!lua_isnil(L, -1)) {
        seterr(ld->err, ld->errlen, "%s: maps must be a list of tables", where);
        lua_pop(L, 1);
        return -1;
    }
    lua_pop(L, 1);
    return 0;
}

static int load_threads(loader *ld, int t, int i)
{
    static const char *const keys[] = {STREAM_KEYS, "count", NULL};
    if (check_keys(ld, t, keys) < 0)
        return -1;
    char name[64];
    snprintf(name, sizeof name, "threads %d", i);
    opt_string(ld, t, "name", name, sizeof name);
    ptl_plan_stream *s = add_stream(ld, t, name, "stack");
    if (!s || stream_fields(ld, t, s, 1) < 0)
        return -1;
    double count;
    int rc = opt_number(ld, t, "count", Q_COUNT, &count);
    if (rc < 0 || (rc && check_count(ld, count, "count", &s->initial) < 0))
        return -1;
    return 0;
}

static int load_io(loader *ld, int t, int i)
{
    static const char *const keys[] = {STREAM_KEYS, NULL};
    if (check_keys(ld, t, keys) < 0)
        return -1;
    char name[64];
    snprintf(name, sizeof name, "io %d", i);
    opt_string(ld, t, "name", name, sizeof name);
    ptl_plan_stream *s = add_stream(ld, t, name, "MmGetSystemAddressForMdl");
    return s && stream_fields(ld, t, s, 1) == 0 ? 0 : -1;
}

static int load_stream(loader *ld, int t, int i)
{
    static const char *const keys[] = {STREAM_KEYS, "aperture", NULL};
    if (check_keys(ld, t, keys) < 0)
        return -1;
    char name[64];
    snprintf(name, sizeof name, "stream %d", i);
    opt_string(ld, t, "name", name, sizeof name);
    ptl_plan_stream *s = add_stream(ld, t, name, NULL);
    if (!s || stream_fields(ld, t, s, 1) < 0)
        return -1;
    lua_getfield(ld->L, t, "aperture");
    s->aperture = lua_toboolean(ld->L, -1);
    lua_pop(ld->L, 1);
    return 0;
}

static int load_top(loader *ld)
{
    lua_State *L = ld->L;
    ptl_plan_workload *w = ld->w;
    double v;
    int rc;
    snprintf(ld->where, sizeof ld->where, "workload");
    static const char *const keys[] = {"name",     "ram",     "duration", "userva",
                                       "boot_3gb", "profile", "adapters", "drivers",
                                       "threads",  "io",      "streams",  NULL};
    if (check_keys(ld, 1, keys) < 0)
        return -1;
    opt_string(ld, 1, "name", w->name, sizeof w->name);
    if ((rc = opt_number(ld, 1, "ram", Q_SIZE, &v)) < 0)
        return -1;
    if (rc && !(v >= 1 && v <= PTL_PLAN_MAX_RAM)) {
        seterr(ld->err, ld->errlen, "workload: ram %g is not a size up to 4 GB", v);
        return -1;
    }
    if (rc)
        w->ram_bytes = (uint64_t)v;
    if ((rc = opt_number(ld, 1, "duration", Q_TIME, &v)) < 0)
        return -1;
    if (rc)
        w->duration = v;
    if ((rc = opt_number(ld, 1, "userva", Q_COUNT, &v)) < 0)
        return -1;
    if (rc && (v > 4096 || v != (double)(uint32_t)v)) {
        seterr(ld->err, ld->errlen, "workload: userva %g is not a whole number of MB", v);
        return -1;
    }
    if (rc)
        w->userva_mb = (uint32_t)v;
    if (opt_bool(ld, 1, "boot_3gb", &w->boot_3gb) < 0)
        return -1;
    lua_getfield(L, 1, "profile");
    if (!lua_isnil(L, -1)) {
        const char *p = lua_tostring(L, -1);
        w->profile = p ? ptl_plan_parse_profile(p) : -1;
        if (w->profile < 0) {
            seterr(ld->err, ld->errlen, "profile '%s' is not nt4sp3, nt4sp4, win2000 or winxp",
                   p ? p : "?");
            lua_pop(L, 1);
            return -1;
        }
    }
    lua_pop(L, 1);
    if (each_entry(ld, "adapters", load_adapter) < 0 ||
        each_entry(ld, "drivers", load_driver) < 0 || each_entry(ld, "threads", load_threads) < 0 ||
        each_entry(ld, "io", load_io) < 0 || each_entry(ld, "streams", load_stream) < 0)
        return -1;
    return 0;
}

static int load_top_protected(lua_State *L)
{
    loader *ld = lua_touserdata(L, 2);
    lua_settop(L, 1);
    lua_pushinteger(L, load_top(ld));
    return 1;
}

int ptl_plan_workload_load(ptl_plan_workload *w, const char *path, char *err, size_t errlen)
{
    char buf[512] = "";
    lua_State *L = luaL_newstate();
    if (!L) {
        seterr(err, errlen, "%s: cannot create a Lua state", path);
        return -1;
    }
    luaL_openlibs(L);
    int rc = -1;
    if (luaL_dostring(L, lua_prelude) != LUA_OK) {
        seterr(err, errlen, "%s: %s", path, lua_tostring(L, -1));
    } else if (luaL_loadfilex(L, path, "t") != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK) {
        seterr(err, errlen, "%s", lua_tostring(L, -1));
    } else if (lua_type(L, -1) != LUA_TTABLE) {
        seterr(err, errlen, "%s: the file must return a table (the workload)", path);
    } else {
        lua_settop(L, 1);
        loader ld = {L, w, buf, sizeof buf, ""};
        lua_getfield(L, 1, "name");
        if (lua_type(L, -1) != LUA_TSTRING) {
            const char *base = strrchr(path, '/');
            snprintf(w->name, sizeof w->name, "%s", base ? base + 1 : path);
        }
        lua_settop(L, 1);
        /* the reading itself runs protected: a Lua error in it is a data error, not a panic */
        lua_pushcfunction(L, load_top_protected);
        lua_insert(L, 1);
        lua_pushlightuserdata(L, &ld);
        if (lua_pcall(L, 2, 1, 0) != LUA_OK)
            seterr(err, errlen, "%s: %s", path, lua_tostring(L, -1));
        else if (lua_tointeger(L, -1) != 0)
            seterr(err, errlen, "%s: %s", path, buf);
        else
            rc = 0;
    }
    lua_close(L);
    return rc;
}

/* ---- the sweep ----------------------------------------------------------------------- */

static int layout_for(const ptl_plan *p, uint32_t system_pages, int g3, uint32_t userva,
                      ptl__layout *l)
{
    ptl_config cfg;
    ptl_config_init(&cfg);
    cfg.ram_bytes = p->ram_bytes;
    cfg.profile = (ptl_profile)p->profile;
    cfg.boot_3gb = g3;
    cfg.userva_mb = userva;
    cfg.system_pages = system_pages;
    return ptl__layout_compute(l, &cfg);
}

static void point_pool(ptl_plan *p, ptl_plan_point *pt)
{
    ptl__layout l;
    pt->fits = layout_for(p, pt->system_pages, pt->boot_3gb, pt->userva_mb, &l) == 0;
    if (!pt->fits) {
        pt->seg0 = pt->seg1 = 0;
    } else if (l.extra_count) {
        pt->seg0 = l.extra_count;
        pt->seg1 = l.syspte_count;
    } else {
        pt->seg0 = l.syspte_count;
        pt->seg1 = 0;
    }
}

static uint32_t pool_ptes(const ptl_plan_point *pt)
{
    return pt->seg0 + pt->seg1;
}

static int cmp_points(const void *a, const void *b)
{
    const ptl_plan_point *x = a, *y = b;
    if (pool_ptes(x) != pool_ptes(y))
        return pool_ptes(x) < pool_ptes(y) ? -1 : 1;
    /* the same pool: computed first, then max, then the smaller value */
    uint64_t kx = x->system_pages == 0                  ? 0
                  : x->system_pages == SYSTEM_PAGES_MAX ? 1
                                                        : 2ull + x->system_pages;
    uint64_t ky = y->system_pages == 0                  ? 0
                  : y->system_pages == SYSTEM_PAGES_MAX ? 1
                                                        : 2ull + y->system_pages;
    return kx < ky ? -1 : kx > ky;
}

/* What keeps every trial finite and every number meaningful, whichever way the workload
 * was given (a file or options): 0, or -1 with the reason in err. */
static int workload_check(const ptl_plan_workload *w, char *err, size_t errlen)
{
    if (!(w->duration > 0 && w->duration <= PLAN_MAX_SECONDS)) {
        seterr(err, errlen, "duration %g s is not a time above 0 and up to a year", w->duration);
        return -1;
    }
    if (w->ram_bytes > (uint64_t)PTL_PLAN_MAX_RAM) {
        seterr(err, errlen, "RAM of %llu bytes is more than the 4 GB x86 addresses",
               (unsigned long long)w->ram_bytes);
        return -1;
    }
    for (int i = 0; i < w->nstreams; i++) {
        const ptl_plan_stream *st = &w->streams[i];
        if (!(st->rate >= 0 && st->rate <= PTL_PLAN_MAX_RATE)) {
            seterr(err, errlen, "%s: rate %g is not a number of requests per second up to %g",
                   st->name, st->rate, PTL_PLAN_MAX_RATE);
            return -1;
        }
        if (!(st->start >= 0 && st->start <= PLAN_MAX_SECONDS) ||
            !(st->until >= 0 && st->until <= PLAN_MAX_SECONDS)) {
            seterr(err, errlen, "%s: start and until must be times up to a year", st->name);
            return -1;
        }
    }
    return 0;
}

int ptl_plan_setup(ptl_plan *p, const ptl_plan_workload *w, const ptl_plan_opts *o, char *err,
                   size_t errlen)
{
    memset(p, 0, sizeof *p);
    if (workload_check(w, err, errlen) != 0)
        return -1;
    snprintf(p->name, sizeof p->name, "%s", w->name);
    p->hash = ptl_plan_workload_hash(w);
    p->ram_bytes = w->ram_bytes;
    p->profile = w->profile;
    p->boot_3gb = w->boot_3gb;
    p->userva_mb = w->userva_mb;
    p->duration = w->duration;
    p->seed = o->seed;
    p->trials = o->trials ? o->trials : 1000;
    p->target = o->target > 0 ? o->target : 1e-3;
    p->shard_i = 0;
    p->shard_n = 1;
    ptl__layout l;
    if (layout_for(p, 0, p->boot_3gb, p->userva_mb, &l) != 0) {
        seterr(err, errlen, "the machine does not boot: %s", ptl_error());
        return -1;
    }
    p->computed_system_ptes = l.computed_system_ptes;
    if (layout_for(p, SYSTEM_PAGES_MAX, p->boot_3gb, p->userva_mb, &l) != 0) {
        seterr(err, errlen, "the machine does not boot: %s", ptl_error());
        return -1;
    }
    p->max_system_pages = l.syspte_count;

    int cap = (o->values ? o->nvalues : (o->steps > 0 ? o->steps : DEFAULT_STEPS)) + 8;
    p->points = ptl__xcalloc((size_t)cap, sizeof *p->points);
    int n = 0;
#define ADD(v)                                              \
    do {                                                    \
        ptl_plan_point *pt_ = &p->points[n++];              \
        pt_->system_pages = (v);                            \
        pt_->boot_3gb = p->boot_3gb;                        \
        pt_->userva_mb = p->userva_mb;                      \
        pt_->aperture_scale = pt_->concurrency_scale = 1.0; \
        point_pool(p, pt_);                                 \
    } while (0)
    if (o->values) {
        for (int i = 0; i < o->nvalues; i++)
            ADD(o->values[i]);
    } else {
        int steps = o->steps > 0 ? o->steps : DEFAULT_STEPS;
        uint32_t lo = (p->computed_system_ptes < p->max_system_pages ? p->computed_system_ptes
                                                                     : p->max_system_pages) /
                      2;
        lo = lo / 1024 * 1024;
        if (lo < 1024)
            lo = 1024;
        uint32_t hi = p->max_system_pages;
        ADD(0);
        ADD(SYSTEM_PAGES_MAX);
        for (int i = 0; i < steps; i++) {
            uint32_t v = lo + (uint32_t)((uint64_t)(hi - lo) * (uint64_t)i / (uint64_t)steps);
            v = v / 1024 * 1024;
            if (v >= 1024)
                ADD(v);
        }
    }
    qsort(p->points, (size_t)n, sizeof *p->points, cmp_points);
    /* one point per pool size: the sweep says what each distinct pool does */
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (m > 0 && p->points[i].fits && p->points[m - 1].fits &&
            pool_ptes(&p->points[i]) == pool_ptes(&p->points[m - 1]) && !o->values)
            continue;
        p->points[m++] = p->points[i];
    }
    n = m;
    /* what-ifs, at SystemPages max */
    int has_aperture = 0, has_rate = 0;
    for (int i = 0; i < w->nstreams; i++) {
        has_aperture |= w->streams[i].aperture;
        has_rate |= w->streams[i].rate > 0 && w->streams[i].api != PTL_PLAN_STACK &&
                    w->streams[i].api != PTL_PLAN_IMAGE;
    }
    if (p->boot_3gb) {
        ptl_plan_point *pt = &p->points[n++];
        pt->what_if = PTL_WHATIF_NO3GB;
        pt->system_pages = SYSTEM_PAGES_MAX;
        pt->aperture_scale = pt->concurrency_scale = 1.0;
        point_pool(p, pt);
    }
    if (has_aperture) {
        ADD(SYSTEM_PAGES_MAX);
        p->points[n - 1].what_if = PTL_WHATIF_APERTURES;
        p->points[n - 1].aperture_scale = 0.5;
    }
    if (has_rate) {
        ADD(SYSTEM_PAGES_MAX);
        p->points[n - 1].what_if = PTL_WHATIF_MAPPINGS;
        p->points[n - 1].concurrency_scale = 0.5;
    }
#undef ADD
    p->npoints = n;
    return 0;
}

void ptl_plan_free(ptl_plan *p)
{
    free(p->points);
    p->points = NULL;
    p->npoints = 0;
}

const char *ptl_plan_point_label(const ptl_plan_point *pt)
{
    switch (pt->what_if) {
    case PTL_WHATIF_NO3GB:
        return "what if: no /3GB";
    case PTL_WHATIF_APERTURES:
        return "what if: apertures mapped half as large";
    case PTL_WHATIF_MAPPINGS:
        return "what if: half as many concurrent mappings";
    default:
        break;
    }
    if (pt->system_pages == 0)
        return "computed";
    if (pt->system_pages == SYSTEM_PAGES_MAX)
        return "max";
    return "";
}

double ptl_plan_prob(const ptl_plan_point *pt, uint64_t count)
{
    return pt->trials ? (double)count / (double)pt->trials : 0.0;
}

int ptl_plan_recommend(const ptl_plan *p)
{
    int best = -1;
    for (int i = 0; i < p->npoints; i++) {
        const ptl_plan_point *pt = &p->points[i];
        if (pt->what_if || !pt->fits || !pt->trials)
            continue;
        if (ptl_plan_prob(pt, pt->fail_any) < p->target) {
            if (best < 0)
                best = i;
        } else {
            best = -1;
        }
    }
    return best;
}

/* ---- arithmetic without libm --------------------------------------------------------
 * The few transcendental functions the simulation needs are computed here from + - * /
 * only: the library does not link libm, and a shard run on another host (another libm)
 * must draw exactly the same numbers. */

static inline uint64_t dbl_bits(double x)
{
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static inline double bits_dbl(uint64_t u)
{
    double x;
    memcpy(&x, &u, sizeof x);
    return x;
}

double ptl_plan_log(double x)
{
    if (!(x > 0))
        return -INFINITY;
    if (x == INFINITY)
        return INFINITY;
    int e = 0;
    while (x < 0x1.0p-1000) /* subnormal and tiny: scale up first */
        x *= 0x1.0p+100, e -= 100;
    uint64_t u = dbl_bits(x);
    e += (int)((u >> 52) & 0x7FF) - 1023;
    double m = bits_dbl((u & 0x000FFFFFFFFFFFFFull) | 0x3FF0000000000000ull); /* [1, 2) */
    if (m > 1.4142135623730951) {
        m *= 0.5;
        e++;
    }
    /* log(m) = 2 atanh(f), f = (m-1)/(m+1), |f| < 0.172: 12 odd terms reach 1e-19 */
    double f = (m - 1.0) / (m + 1.0), f2 = f * f;
    double p = 1.0 / 23;
    p = p * f2 + 1.0 / 21;
    p = p * f2 + 1.0 / 19;
    p = p * f2 + 1.0 / 17;
    p = p * f2 + 1.0 / 15;
    p = p * f2 + 1.0 / 13;
    p = p * f2 + 1.0 / 11;
    p = p * f2 + 1.0 / 9;
    p = p * f2 + 1.0 / 7;
    p = p * f2 + 1.0 / 5;
    p = p * f2 + 1.0 / 3;
    p = p * f2 + 1.0;
    double sum = f * p;
    return 2.0 * sum + e * 0.6931471805599453;
}

/* The same logarithm, fast: a table of log(c) for 256 centres c of [1, 2) (built once with
 * ptl_plan_log, so it is the same everywhere) and five terms of log(1 + r), |r| < 2^-8. */
static double log_tab[257], inv_tab[257];
static pthread_once_t log_once = PTHREAD_ONCE_INIT;

static void exp_tab_init(void);

static void log_tab_init(void)
{
    exp_tab_init();
    for (int j = 0; j <= 256; j++) {
        double c = 1.0 + (j + 0.5) / 256.0;
        if (j == 256)
            c = 2.0;
        log_tab[j] = ptl_plan_log(c);
        inv_tab[j] = 1.0 / c;
    }
}

/* log(x) for x in (0, 1]: what exponential variates need (x = 1 - U) */
static inline double fast_log(double x)
{
    if (!(x >= 0x1.0p-1000))
        return ptl_plan_log(x);
    uint64_t u = dbl_bits(x);
    int e = (int)((u >> 52) & 0x7FF) - 1023;
    double m = bits_dbl((u & 0x000FFFFFFFFFFFFFull) | 0x3FF0000000000000ull);
    int j = (int)((u >> 44) & 0xFF);
    double r = m * inv_tab[j] - 1.0; /* |r| < 1/512 */
    double p = r * (1.0 + r * (-0.5 + r * (1.0 / 3 + r * (-0.25 + r * 0.2))));
    return e * 0.6931471805599453 + log_tab[j] + p;
}

/* exp(x) by its Taylor series after reduction by ln 2 (|r| <= 0.35, 14 terms): slow and
 * exact to the last bit or two; it builds the table of plan_exp. */
static double exp_series(double x)
{
    double kd = x / 0.6931471805599453;
    int k = (int)(kd < 0 ? kd - 0.5 : kd + 0.5);
    double r = x - k * 0.6931471805599453, sum = 1;
    static const double inv[15] = {0,       1,       1 / 2.,  1 / 3.,  1 / 4.,
                                   1 / 5.,  1 / 6.,  1 / 7.,  1 / 8.,  1 / 9.,
                                   1 / 10., 1 / 11., 1 / 12., 1 / 13., 1 / 14.};
    for (int i = 14; i >= 1; i--) /* Horner form */
        sum = 1.0 + sum * r * inv[i];
    return sum * bits_dbl((uint64_t)(k + 1023) << 52);
}

/* 2^(j/64), j = 0..63, built once with exp_series (so it is the same everywhere). */
static double exp2_tab[64];

static void exp_tab_init(void)
{
    for (int j = 0; j < 64; j++)
        exp2_tab[j] = exp_series(j * (0.6931471805599453 / 64));
}

/* exp(x) = 2^(k/64) * exp(r), |r| <= ln 2 / 128: a table and seven terms. The lognormal
 * variates of every trial need it (exp_tab_init runs with log_tab_init). */
static double plan_exp(double x)
{
    if (x > 700)
        return INFINITY;
    if (x < -700)
        return 0;
    const double ln2_64_hi = 0.6931471805599453 / 64; /* ln 2 / 64, and what it leaves */
    const double ln2_64_lo = 2.3190468138462996e-17 / 64;
    double kd = x / ln2_64_hi;
    int k = (int)(kd < 0 ? kd - 0.5 : kd + 0.5);
    double r = (x - k * ln2_64_hi) - k * ln2_64_lo;
    double p =
        1 + r * (1 + r * (1 / 2. + r * (1 / 6. + r * (1 / 24. + r * (1 / 120. + r / 720.)))));
    int j = k & 63, e = (k - j) / 64; /* k = 64 e + j, 0 <= j < 64 */
    return p * exp2_tab[j] * bits_dbl((uint64_t)(e + 1023) << 52);
}

static double plan_sqrt(double x)
{
    if (!(x > 0))
        return 0;
    double y = bits_dbl((dbl_bits(x) >> 1) + 0x1FF8000000000000ull); /* within a few % */
    for (int i = 0; i < 3; i++) /* 6% -> 2e-3 -> 2e-6 -> 2e-12 */
        y = 0.5 * (y + x / y);
    return y;
}

/* ---- randomness ---------------------------------------------------------------------- */

static inline uint64_t mix64(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t ptl_plan_trial_seed(uint64_t base, uint32_t point, uint64_t trial)
{
    return mix64(mix64(mix64(base) ^ (uint64_t)point) ^ trial);
}

typedef struct rng {
    uint64_t s[4];
} rng;

static void rng_seed(rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++) {
        seed += 0x9E3779B97F4A7C15ull;
        r->s[i] = mix64(seed);
    }
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static inline uint64_t rng_next(rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

static inline double rng_unit(rng *r) /* [0, 1) */
{
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

static double draw(rng *r, const ptl_plan_dist *d)
{
    switch (d->kind) {
    case PTL_DIST_CONST:
        return d->a;
    case PTL_DIST_UNIFORM:
        return d->a + (d->b - d->a) * rng_unit(r);
    case PTL_DIST_EXP:
        return -d->a * fast_log(1.0 - rng_unit(r));
    case PTL_DIST_LOGNORMAL: { /* Marsaglia's polar method for the normal deviate */
        double u, v, q;
        do {
            u = 2.0 * rng_unit(r) - 1.0;
            v = 2.0 * rng_unit(r) - 1.0;
            q = u * u + v * v;
        } while (q >= 1.0 || q == 0.0);
        double z = u * plan_sqrt(-2.0 * fast_log(q) / q);
        return d->a * plan_exp(d->b * z);
    }
    case PTL_DIST_CHOICE: {
        double u = rng_unit(r);
        for (int i = 0; i < d->n - 1; i++)
            if (u < d->cw[i])
                return d->v[i];
        return d->v[d->n - 1];
    }
    default:
        return INFINITY;
    }
}

/* ---- one trial ----------------------------------------------------------------------- */

#define EV_ARRIVAL (1ull << 63)
#define EV_BURST   0xFFFFFFFFu /* n of an arrival event: the initial instances */

typedef struct ev {
    double t;
    uint64_t key; /* EV_ARRIVAL | sequence: releases sort first at the same time */
    uint32_t start, n, stream, pad;
} ev;

typedef struct run {
    uint32_t start, n;
} run;

/* The events of one stream: its pending arrival and the releases of its live runs. */
typedef struct squeue {
    ev *h; /* releases: a 4-ary heap */
    uint32_t n, cap;
    ev arr;
    int has_arr;
} squeue;

/* The event queue is two-level: a heap per stream, and a heap of streams ordered by their
 * next event. An event only changes its own stream, so each step is one operation on a
 * stream's heap (small for the busy streams of short mappings) and one sift of the root of
 * the streams' heap; the order is the same total order (time, kind, sequence) a single
 * heap would give. */
typedef struct sim {
    ptl__spool *sp;
    uint32_t seg0, seg1;
    squeue *q;
    ev *head; /* head[s]: stream s's next event */
    int *top; /* streams with events, a binary heap on head[] */
    int ntop;
    run *held; /* forever runs */
    size_t nheld, capheld;
    uint32_t *live;
    uint64_t *k; /* periodic arrival counters */
    int cap_streams;
} sim;

static inline int ev_less(const ev *a, const ev *b)
{
    return a->t < b->t || (a->t == b->t && a->key < b->key);
}

static void q_push(squeue *q, const ev *e)
{
    if (q->n == q->cap) {
        q->cap = q->cap ? q->cap * 2 : 16;
        q->h = realloc(q->h, q->cap * sizeof *q->h);
        PTL_ASSERT(q->h);
    }
    uint32_t i = q->n++;
    ev *h = q->h;
    while (i > 0) {
        uint32_t parent = (i - 1) / 4;
        if (!ev_less(e, &h[parent]))
            break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = *e;
}

static void q_pop(squeue *q)
{
    ev *h = q->h;
    ev last = h[--q->n];
    uint32_t n = q->n, i = 0;
    for (;;) {
        uint32_t c = 4 * i + 1;
        if (c >= n)
            break;
        uint32_t best = c, end = c + 4 < n ? c + 4 : n;
        for (uint32_t k = c + 1; k < end; k++)
            if (ev_less(&h[k], &h[best]))
                best = k;
        if (!ev_less(&h[best], &last))
            break;
        h[i] = h[best];
        i = best;
    }
    if (n)
        h[i] = last;
}

static inline int q_head(const squeue *q, ev *out)
{
    if (q->has_arr && (q->n == 0 || ev_less(&q->arr, &q->h[0]))) {
        *out = q->arr;
        return 1;
    }
    if (q->n) {
        *out = q->h[0];
        return 1;
    }
    return 0;
}

static void top_sift_down(sim *s, int i)
{
    int *t = s->top, n = s->ntop, x = t[i];
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && ev_less(&s->head[t[c + 1]], &s->head[t[c]]))
            c++;
        if (!ev_less(&s->head[t[c]], &s->head[x]))
            break;
        t[i] = t[c];
        i = c;
    }
    t[i] = x;
}

static void top_sift_up(sim *s, int i)
{
    int *t = s->top, x = t[i];
    while (i > 0) {
        int parent = (i - 1) / 2;
        if (!ev_less(&s->head[x], &s->head[t[parent]]))
            break;
        t[i] = t[parent];
        i = parent;
    }
    t[i] = x;
}

static void sim_init(sim *s)
{
    memset(s, 0, sizeof *s);
}

static void sim_free(sim *s)
{
    ptl__spool_destroy(s->sp);
    for (int i = 0; i < s->cap_streams; i++)
        free(s->q[i].h);
    free(s->q);
    free(s->head);
    free(s->top);
    free(s->held);
    free(s->live);
    free(s->k);
    memset(s, 0, sizeof *s);
}

/* A spool as sysptes.c builds it: with a second segment, the junction is held for good. */
static void sim_pool(sim *s, uint32_t seg0, uint32_t seg1)
{
    if (s->sp && s->seg0 == seg0 && s->seg1 == seg1)
        return;
    ptl__spool_destroy(s->sp);
    uint32_t total = seg1 ? seg0 + 1 + seg1 : seg0;
    s->sp = ptl__spool_create(PLAN_SPOOL_IMPL, total ? total : 1, 0);
    if (seg1)
        PTL_ASSERT(ptl__spool_reserve_at(s->sp, seg0, 1) == 0);
    else if (!total)
        PTL_ASSERT(ptl__spool_reserve_at(s->sp, 0, 1) == 0);
    s->seg0 = seg0;
    s->seg1 = seg1;
}

static void sim_streams(sim *s, int n)
{
    if (s->cap_streams >= n)
        return;
    s->q = realloc(s->q, (size_t)n * sizeof *s->q);
    s->head = realloc(s->head, (size_t)n * sizeof *s->head);
    s->top = realloc(s->top, (size_t)n * sizeof *s->top);
    s->live = realloc(s->live, (size_t)n * sizeof *s->live);
    s->k = realloc(s->k, (size_t)n * sizeof *s->k);
    PTL_ASSERT(s->q && s->head && s->top && s->live && s->k);
    memset(s->q + s->cap_streams, 0, (size_t)(n - s->cap_streams) * sizeof *s->q);
    s->cap_streams = n;
}

static void sim_trial(sim *s, const ptl_plan_workload *w, const ptl_plan_point *pt, uint64_t seed,
                      ptl_plan_trial_result *r)
{
    memset(r, 0, sizeof *r);
    sim_pool(s, pt->seg0, pt->seg1);
    sim_streams(s, w->nstreams);
    pthread_once(&log_once, log_tab_init);
    rng rg;
    rng_seed(&rg, seed);
    const double end = w->duration;
    const uint32_t capacity = pt->seg0 + pt->seg1;
    uint32_t used = 0, peak = 0;
    uint64_t seq = 0, ops = 0, requests = 0, failed = 0;
    s->nheld = 0;
    s->ntop = 0;
    for (int i = 0; i < w->nstreams; i++) {
        const ptl_plan_stream *st = &w->streams[i];
        squeue *q = &s->q[i];
        s->live[i] = 0;
        s->k[i] = 0;
        q->n = 0;
        q->has_arr = 0;
        if (st->start >= end)
            continue;
        if (st->initial) {
            q->arr = (ev){st->start, EV_ARRIVAL | seq++, 0, EV_BURST, (uint32_t)i, 0};
            q->has_arr = 1;
        } else if (st->rate > 0) {
            double rate = st->rate * (st->api == PTL_PLAN_STACK || st->api == PTL_PLAN_IMAGE
                                          ? 1.0
                                          : pt->concurrency_scale);
            double t = st->periodic ? st->start : st->start - fast_log(1.0 - rng_unit(&rg)) / rate;
            double until = st->until > 0 && st->until < end ? st->until : end;
            if (t < until) {
                q->arr = (ev){t, EV_ARRIVAL | seq++, 0, 0, (uint32_t)i, 0};
                q->has_arr = 1;
            }
        }
        if (q->has_arr) {
            s->head[i] = q->arr;
            s->top[s->ntop++] = i;
            top_sift_up(s, s->ntop - 1);
        }
    }
    int stopped = 0;
    while (s->ntop && !stopped) {
        const uint32_t si = (uint32_t)s->top[0];
        const ev e = s->head[si];
        if (e.t >= end)
            break;
        squeue *q = &s->q[si];
        const ptl_plan_stream *st = &w->streams[si];
        if (!(e.key & EV_ARRIVAL)) {
            q_pop(q);
            ptl__spool_free(s->sp, e.start, e.n);
            used -= e.n;
            s->live[si]--;
            ops++;
        } else {
            q->has_arr = 0;
            int burst = e.n == EV_BURST;
            uint32_t count = burst ? st->initial : 1;
            const ptl_plan_dist *life = burst ? &st->initial_lifetime : &st->lifetime;
            int mapping = st->api != PTL_PLAN_STACK && st->api != PTL_PLAN_IMAGE;
            uint32_t max_live = st->max_live;
            if (max_live && mapping && pt->concurrency_scale != 1.0) {
                max_live = (uint32_t)(max_live * pt->concurrency_scale);
                if (max_live < 1)
                    max_live = 1;
            }
            for (uint32_t c = 0; c < count && !stopped; c++) {
                if (max_live && s->live[si] >= max_live)
                    break;
                double bytes = draw(&rg, &st->size);
                if (st->aperture)
                    bytes *= pt->aperture_scale;
                uint32_t n = ptl_plan_cost(st->api, bytes);
                requests++;
                ops++;
                int64_t at = n <= capacity ? ptl__spool_alloc(s->sp, n) : -1;
                if (at < 0) {
                    failed++;
                    if (capacity - used >= n)
                        r->frag = 1;
                    else
                        r->nofree = 1;
                    if (st->must_succeed)
                        stopped = 1;
                    continue;
                }
                used += n;
                if (used > peak)
                    peak = used;
                s->live[si]++;
                double lt = draw(&rg, life);
                if (isfinite(lt) && e.t + lt < end) {
                    ev rel = {e.t + lt, seq++, (uint32_t)at, n, si, 0};
                    q_push(q, &rel);
                } else {
                    if (s->nheld == s->capheld) {
                        s->capheld = s->capheld ? s->capheld * 2 : 256;
                        s->held = realloc(s->held, s->capheld * sizeof *s->held);
                        PTL_ASSERT(s->held);
                    }
                    s->held[s->nheld++] = (run){(uint32_t)at, n};
                }
            }
            /* the next arrival: after a burst, the first of the rate */
            if (!stopped && st->rate > 0) {
                double rate = st->rate * (mapping ? pt->concurrency_scale : 1.0);
                double until = st->until > 0 && st->until < end ? st->until : end;
                double t;
                if (burst)
                    t = st->periodic ? st->start : st->start - fast_log(1.0 - rng_unit(&rg)) / rate;
                else
                    t = st->periodic ? st->start + (double)(++s->k[si]) / rate
                                     : e.t - fast_log(1.0 - rng_unit(&rg)) / rate;
                if (t < until) {
                    q->arr = (ev){t, EV_ARRIVAL | seq++, 0, 0, si, 0};
                    q->has_arr = 1;
                }
            }
        }
        if (q_head(q, &s->head[si])) {
            top_sift_down(s, 0);
        } else {
            s->top[0] = s->top[--s->ntop];
            if (s->ntop)
                top_sift_down(s, 0);
        }
    }
    r->stop = stopped;
    r->peak = peak;
    r->requests = requests;
    r->failed_requests = failed;
    r->ops = ops;
    /* give back everything still held: the spool is as created for the next trial */
    for (int i = 0; i < w->nstreams; i++) {
        squeue *q = &s->q[i];
        for (uint32_t j = 0; j < q->n; j++)
            ptl__spool_free(s->sp, q->h[j].start, q->h[j].n);
        q->n = 0;
        q->has_arr = 0;
    }
    for (size_t i = 0; i < s->nheld; i++)
        ptl__spool_free(s->sp, s->held[i].start, s->held[i].n);
    s->nheld = 0;
}

void ptl_plan_trial(const ptl_plan_workload *w, const ptl_plan_point *pt, uint64_t seed,
                    ptl_plan_trial_result *r)
{
    sim s;
    sim_init(&s);
    sim_trial(&s, w, pt, seed, r);
    sim_free(&s);
}

/* ---- the runner ---------------------------------------------------------------------- */

typedef struct runner {
    ptl_plan *p;
    const ptl_plan_workload *w;
    uint64_t total_items; /* (point, trial) pairs in this shard */
    int shard_i, shard_n;
    atomic_uint_fast64_t next; /* next chunk */
    atomic_uint_fast64_t done; /* trials finished */
} runner;

typedef struct worker {
    runner *rn;
    pthread_t th;
    ptl_plan_point *acc; /* per point sums */
    double cpu;
} worker;

#define CHUNK 8

static double thread_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void *worker_main(void *arg)
{
    worker *wk = arg;
    runner *rn = wk->rn;
    const ptl_plan *p = rn->p;
    double c0 = thread_cpu();
    sim s;
    sim_init(&s);
    for (;;) {
        uint64_t c = atomic_fetch_add(&rn->next, 1);
        uint64_t lo = c * CHUNK;
        if (lo >= rn->total_items)
            break;
        uint64_t hi = lo + CHUNK < rn->total_items ? lo + CHUNK : rn->total_items;
        for (uint64_t j = lo; j < hi; j++) {
            /* the j-th pair of this shard: global pair index k = j * n + i */
            uint64_t k = j * (uint64_t)rn->shard_n + (uint64_t)rn->shard_i;
            uint32_t pi = (uint32_t)(k / p->trials);
            uint64_t trial = k % p->trials;
            const ptl_plan_point *pt = &p->points[pi];
            ptl_plan_point *a = &wk->acc[pi];
            a->trials++;
            if (pt->fits) {
                ptl_plan_trial_result r;
                sim_trial(&s, rn->w, pt, ptl_plan_trial_seed(p->seed, pi, trial), &r);
                a->fail_nofree += (uint64_t)r.nofree;
                a->fail_frag += (uint64_t)r.frag;
                a->stop += (uint64_t)r.stop;
                a->fail_any += (uint64_t)(r.nofree | r.frag | r.stop);
                if (r.peak > a->peak_max)
                    a->peak_max = r.peak;
                a->peak_sum += r.peak;
                a->requests += r.requests;
                a->failed_requests += r.failed_requests;
                a->ops += r.ops;
            }
        }
        atomic_fetch_add(&rn->done, hi - lo);
    }
    sim_free(&s);
    wk->cpu = thread_cpu() - c0;
    return NULL;
}

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int ptl_plan_run(ptl_plan *p, const ptl_plan_workload *w, int jobs, int shard_i, int shard_n,
                 void (*progress)(void *, uint64_t, uint64_t), void *ctx, ptl_plan_perf *perf)
{
    if (jobs < 1)
        jobs = 1;
    if (shard_n < 1)
        shard_n = 1;
    PTL_ASSERT(shard_i >= 0 && shard_i < shard_n);
    p->shard_i = shard_i;
    p->shard_n = shard_n;
    uint64_t pairs = (uint64_t)p->npoints * p->trials;
    runner rn = {.p = p, .w = w, .shard_i = shard_i, .shard_n = shard_n};
    rn.total_items = pairs > (uint64_t)shard_i
                         ? (pairs - (uint64_t)shard_i + (uint64_t)shard_n - 1) / (uint64_t)shard_n
                         : 0;
    atomic_init(&rn.next, 0);
    atomic_init(&rn.done, 0);
    worker *wk = ptl__xcalloc((size_t)jobs, sizeof *wk);
    double t0 = wall_now();
    int started = 0;
    for (int j = 0; j < jobs; j++) {
        wk[j].rn = &rn;
        wk[j].acc = ptl__xcalloc((size_t)p->npoints, sizeof *wk[j].acc);
        if (pthread_create(&wk[j].th, NULL, worker_main, &wk[j]) != 0)
            break;
        started++;
    }
    if (started == 0) /* no threads: run here */
        worker_main(&wk[0]);
    if (progress) {
        while (atomic_load(&rn.done) < rn.total_items) {
            progress(ctx, atomic_load(&rn.done), rn.total_items);
            struct timespec ts = {0, 100 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        progress(ctx, rn.total_items, rn.total_items);
    }
    for (int j = 0; j < started; j++)
        pthread_join(wk[j].th, NULL);
    uint64_t ops = 0;
    double cpu = 0;
    for (int i = 0; i < p->npoints; i++) {
        ptl_plan_point *pt = &p->points[i];
        pt->trials = pt->fail_nofree = pt->fail_frag = pt->stop = pt->fail_any = 0;
        pt->peak_max = pt->peak_sum = pt->requests = pt->failed_requests = pt->ops = 0;
    }
    for (int j = 0; j < jobs && wk[j].acc; j++) { /* a failed thread leaves the rest unmade */
        for (int i = 0; i < p->npoints; i++) {
            ptl_plan_point *pt = &p->points[i];
            const ptl_plan_point *a = &wk[j].acc[i];
            pt->trials += a->trials;
            pt->fail_nofree += a->fail_nofree;
            pt->fail_frag += a->fail_frag;
            pt->stop += a->stop;
            pt->fail_any += a->fail_any;
            pt->peak_max = a->peak_max > pt->peak_max ? a->peak_max : pt->peak_max;
            pt->peak_sum += a->peak_sum;
            pt->requests += a->requests;
            pt->failed_requests += a->failed_requests;
            pt->ops += a->ops;
            ops += a->ops;
        }
        cpu += wk[j].cpu;
        free(wk[j].acc);
    }
    free(wk);
    if (perf) {
        perf->ops = ops;
        perf->cpu_seconds = cpu;
        perf->wall_seconds = wall_now() - t0;
    }
    return 0;
}

/* ---- JSON lines and the merge -------------------------------------------------------- */

static void json_str(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c < 0x20)
            fprintf(out, "\\u%04x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

int ptl_plan_write_jsonl(const ptl_plan *p, FILE *out)
{
    fprintf(out, "{\"ptelab_plan\":1,\"name\":");
    json_str(out, p->name);
    fprintf(out,
            ",\"hash\":\"%016llx\",\"ram\":%llu,\"profile\":\"%s\",\"boot_3gb\":%d,\"userva\":%u,"
            "\"duration\":%.17g,\"seed\":%llu,\"trials\":%llu,\"target\":%.17g,"
            "\"computed\":%u,\"max\":%u,\"points\":%d,\"shard\":\"%d/%d\"}\n",
            (unsigned long long)p->hash, (unsigned long long)p->ram_bytes,
            ptl_plan_profile_name(p->profile), p->boot_3gb, p->userva_mb, p->duration,
            (unsigned long long)p->seed, (unsigned long long)p->trials, p->target,
            p->computed_system_ptes, p->max_system_pages, p->npoints, p->shard_i, p->shard_n);
    for (int i = 0; i < p->npoints; i++) {
        const ptl_plan_point *pt = &p->points[i];
        fprintf(out,
                "{\"point\":%d,\"what_if\":%d,\"system_pages\":%u,\"boot_3gb\":%d,\"userva\":%u,"
                "\"aperture_scale\":%.17g,\"concurrency_scale\":%.17g,\"seg0\":%u,\"seg1\":%u,"
                "\"fits\":%d,\"trials\":%llu,\"fail_nofree\":%llu,\"fail_frag\":%llu,"
                "\"stop\":%llu,\"fail_any\":%llu,\"peak_max\":%llu,\"peak_sum\":%llu,"
                "\"requests\":%llu,\"failed_requests\":%llu,\"ops\":%llu}\n",
                i, pt->what_if, pt->system_pages, pt->boot_3gb, pt->userva_mb, pt->aperture_scale,
                pt->concurrency_scale, pt->seg0, pt->seg1, pt->fits, (unsigned long long)pt->trials,
                (unsigned long long)pt->fail_nofree, (unsigned long long)pt->fail_frag,
                (unsigned long long)pt->stop, (unsigned long long)pt->fail_any,
                (unsigned long long)pt->peak_max, (unsigned long long)pt->peak_sum,
                (unsigned long long)pt->requests, (unsigned long long)pt->failed_requests,
                (unsigned long long)pt->ops);
    }
    return ferror(out) ? -1 : 0;
}

/* The raw text of "key": value in a flat JSON object line (strings keep their quotes). */
static const char *json_raw(const char *line, const char *key, size_t *len)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *at = strstr(line, pat);
    if (!at)
        return NULL;
    at += strlen(pat);
    const char *e = at;
    if (*e == '"') {
        for (e++; *e && *e != '"'; e++)
            if (*e == '\\' && e[1])
                e++;
        if (*e == '"')
            e++;
    } else {
        while (*e && *e != ',' && *e != '}')
            e++;
    }
    *len = (size_t)(e - at);
    return at;
}

static int json_u64(const char *line, const char *key, uint64_t *out)
{
    size_t n;
    const char *v = json_raw(line, key, &n);
    if (!v)
        return -1;
    char *end;
    *out = strtoull(v, &end, 10);
    return end == v + n ? 0 : -1;
}

static int json_dbl(const char *line, const char *key, double *out)
{
    size_t n;
    const char *v = json_raw(line, key, &n);
    if (!v)
        return -1;
    char *end;
    *out = strtod(v, &end);
    return end == v + n ? 0 : -1;
}

static int json_string(const char *line, const char *key, char *out, size_t len)
{
    size_t n;
    const char *v = json_raw(line, key, &n);
    if (!v || n < 2 || v[0] != '"')
        return -1;
    size_t o = 0;
    for (size_t i = 1; i + 1 < n && o + 1 < len; i++) {
        char c = v[i];
        if (c == '\\' && i + 2 < n) {
            c = v[++i];
            if (c == 'u' && i + 4 < n) {
                char hex[5] = {v[i + 1], v[i + 2], v[i + 3], v[i + 4], 0};
                c = (char)strtol(hex, NULL, 16);
                i += 4;
            }
        }
        out[o++] = c;
    }
    out[o] = 0;
    return 0;
}

/* The header without its shard field: what every shard of one run has in common. */
static void header_key(const char *line, char *out, size_t len)
{
    snprintf(out, len, "%s", line);
    char *s = strstr(out, ",\"shard\":");
    if (s)
        *s = 0;
}

static int parse_header(ptl_plan *p, const char *line)
{
    uint64_t v;
    char prof[16];
    memset(p, 0, sizeof *p);
    if (json_u64(line, "ptelab_plan", &v) || v != 1 ||
        json_string(line, "name", p->name, sizeof p->name))
        return -1;
    char hash[32];
    if (json_string(line, "hash", hash, sizeof hash))
        return -1;
    p->hash = strtoull(hash, NULL, 16);
    if (json_u64(line, "ram", &p->ram_bytes) || json_string(line, "profile", prof, sizeof prof))
        return -1;
    p->profile = ptl_plan_parse_profile(prof);
    if (json_u64(line, "boot_3gb", &v))
        return -1;
    p->boot_3gb = (int)v;
    if (json_u64(line, "userva", &v))
        return -1;
    p->userva_mb = (uint32_t)v;
    if (json_dbl(line, "duration", &p->duration) || json_u64(line, "seed", &p->seed) ||
        json_u64(line, "trials", &p->trials) || json_dbl(line, "target", &p->target))
        return -1;
    if (json_u64(line, "computed", &v))
        return -1;
    p->computed_system_ptes = (uint32_t)v;
    if (json_u64(line, "max", &v))
        return -1;
    p->max_system_pages = (uint32_t)v;
    if (json_u64(line, "points", &v) || v == 0 || v > 100000)
        return -1;
    p->npoints = (int)v;
    char shard[32];
    if (json_string(line, "shard", shard, sizeof shard) ||
        strspn(shard, "0123456789/") != strlen(shard) || strlen(shard) > 15 ||
        sscanf(shard, "%d/%d", &p->shard_i, &p->shard_n) != 2 || p->shard_n < 1 ||
        p->shard_n > 1000000 || p->shard_i < 0 || p->shard_i >= p->shard_n)
        return -1; /* what the command writes: I/N, N at most 10^6 */
    return 0;
}

static int parse_point(ptl_plan_point *pt, const char *line)
{
    uint64_t v[20];
    static const char *const keys[] = {
        "what_if",  "system_pages", "boot_3gb",    "userva",          "seg0", "seg1",
        "fits",     "trials",       "fail_nofree", "fail_frag",       "stop", "fail_any",
        "peak_max", "peak_sum",     "requests",    "failed_requests", "ops"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (json_u64(line, keys[i], &v[i]))
            return -1;
    memset(pt, 0, sizeof *pt);
    pt->what_if = (int)v[0];
    pt->system_pages = (uint32_t)v[1];
    pt->boot_3gb = (int)v[2];
    pt->userva_mb = (uint32_t)v[3];
    pt->seg0 = (uint32_t)v[4];
    pt->seg1 = (uint32_t)v[5];
    pt->fits = (int)v[6];
    pt->trials = v[7];
    pt->fail_nofree = v[8];
    pt->fail_frag = v[9];
    pt->stop = v[10];
    pt->fail_any = v[11];
    pt->peak_max = v[12];
    pt->peak_sum = v[13];
    pt->requests = v[14];
    pt->failed_requests = v[15];
    pt->ops = v[16];
    if (json_dbl(line, "aperture_scale", &pt->aperture_scale) ||
        json_dbl(line, "concurrency_scale", &pt->concurrency_scale))
        return -1;
    return 0;
}

static char *read_line(FILE *f)
{
    size_t cap = 0;
    char *line = NULL;
    ssize_t n = getline(&line, &cap, f);
    if (n <= 0) {
        free(line);
        return NULL;
    }
    if (line[n - 1] == '\n')
        line[n - 1] = 0;
    return line;
}

int ptl_plan_merge(ptl_plan *out, const char *const *paths, int n, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    char *key0 = NULL;
    unsigned char *seen = NULL;
    int rc = -1, shard_n = 0;
    for (int f = 0; f < n; f++) {
        FILE *fp = fopen(paths[f], "r");
        if (!fp) {
            seterr(err, errlen, "%s: cannot open: %s", paths[f], strerror(errno));
            goto done;
        }
        char *line = read_line(fp);
        ptl_plan h;
        if (!line || parse_header(&h, line) != 0) {
            seterr(err, errlen, "%s: not a `ptelab plan --format jsonl` file (bad header)",
                   paths[f]);
            free(line);
            fclose(fp);
            goto done;
        }
        size_t klen = strlen(line) + 1;
        char *key = malloc(klen);
        PTL_ASSERT(key);
        header_key(line, key, klen);
        free(line);
        if (f == 0) {
            *out = h;
            out->points = ptl__xcalloc((size_t)h.npoints, sizeof *out->points);
            key0 = key;
            shard_n = h.shard_n;
            seen = ptl__xcalloc((size_t)shard_n, 1);
        } else {
            int same = strcmp(key, key0) == 0 && h.shard_n == shard_n;
            free(key);
            if (!same) {
                seterr(err, errlen,
                       "%s: a shard of a different run (workload, options, seed or shard count "
                       "differ from %s)",
                       paths[f], paths[0]);
                fclose(fp);
                goto done;
            }
        }
        if (seen[h.shard_i]) {
            seterr(err, errlen, "%s: shard %d/%d given twice", paths[f], h.shard_i, shard_n);
            fclose(fp);
            goto done;
        }
        seen[h.shard_i] = 1;
        for (int i = 0; i < out->npoints; i++) {
            char *pl = read_line(fp);
            ptl_plan_point pt;
            uint64_t idx;
            if (!pl || parse_point(&pt, pl) != 0 || json_u64(pl, "point", &idx) ||
                idx != (uint64_t)i) {
                seterr(err, errlen, "%s: point line %d is missing or malformed", paths[f], i);
                free(pl);
                fclose(fp);
                goto done;
            }
            free(pl);
            ptl_plan_point *o = &out->points[i];
            if (f == 0) {
                *o = pt;
                continue;
            }
            if (o->system_pages != pt.system_pages || o->seg0 != pt.seg0 || o->seg1 != pt.seg1 ||
                o->what_if != pt.what_if) {
                seterr(err, errlen, "%s: point %d differs from %s", paths[f], i, paths[0]);
                fclose(fp);
                goto done;
            }
            o->trials += pt.trials;
            o->fail_nofree += pt.fail_nofree;
            o->fail_frag += pt.fail_frag;
            o->stop += pt.stop;
            o->fail_any += pt.fail_any;
            o->peak_max = pt.peak_max > o->peak_max ? pt.peak_max : o->peak_max;
            o->peak_sum += pt.peak_sum;
            o->requests += pt.requests;
            o->failed_requests += pt.failed_requests;
            o->ops += pt.ops;
        }
        fclose(fp);
    }
    if (n < 1) {
        seterr(err, errlen, "no shard files given");
        goto done;
    }
    for (int i = 0; i < shard_n; i++)
        if (!seen[i]) {
            seterr(err, errlen, "shard %d/%d is missing", i, shard_n);
            goto done;
        }
    out->shard_i = 0;
    out->shard_n = 1;
    rc = 0;
done:
    free(key0);
    free(seen);
    if (rc != 0)
        ptl_plan_free(out);
    return rc;
}
