/* script.c - the Lua 5.4 scenario runner (`ptelab run script.lua`).
 *
 * Lua API. A script sees a table `ptl`:
 *   ptl.boot{ram=, profile=, system_pages=, boot_3gb=, userva=, track_ptes=, verifier=,
 *            reg=, seed=, paged_pool_size=, nonpaged_pool_size=, policy="low"|"high",
 *            fail_nth=, fail_ppm=, fail_kinds="syspte,pool,mdl"}
 *       -> machine   (ram: bytes, or a string like "64M"; system_pages: a count or "max")
 *   ptl.version, ptl.hex(n) -> "0x0000003F"
 * and a machine's methods: adapter, bus, process, driver, import, thread, thread_exit,
 * process_exit, driver_unload, swap_out, user_alloc, user_read32, user_write32,
 * phys_read32, phys_write32, call, dpc, free_ptes, total_ptes, largest_free, stats,
 * counters, stopped, kd, check, snapshot, events, event_count, layout, shutdown.
 * m:call(process|nil, driver|nil, fn, ...) and m:dpc(driver|nil, fn, ...) return 0 and fn's
 * results, or the STOP code when the machine stopped (a Lua error in fn goes on as one).
 * Inside the function given to m:call / m:dpc the DDIs of <ptelab/wdm.h> are available
 * under their NT names, as globals and in the table `nt` (with the constants, NT_SUCCESS
 * and nt.try). Addresses, handles and NTSTATUS values are Lua integers (NTSTATUS as the
 * unsigned 32-bit value, so `st == 0xC0000005` reads as in C); MDLs are userdata with the
 * MDL's fields readable (mdl.ByteCount, mdl.MdlFlags, ...).
 *
 * STOPs and exceptions crossing Lua. ptelab unwinds a bug check with longjmp to the
 * innermost harness frame, and a raised exception (MmProbeAndLockPages) with longjmp to
 * the innermost try frame. Lua keeps its own state about the C stack (L->errorJmp, the
 * CallInfo chain, nCcalls): a longjmp that skips a lua_pcall or a Lua-called C function
 * leaves that state pointing at dead frames, and the next Lua error or call corrupts
 * memory. So no ptelab longjmp may ever leave the C function it started in as far as Lua
 * is concerned:
 *   1. m:call runs ptl_call with a C trampoline as the driver function; the trampoline
 *      runs the Lua body with lua_pcall. ptl_call's own harness frame (its setjmp) is
 *      therefore outside the lua_pcall, and must never be the landing point of a longjmp
 *      raised below the lua_pcall.
 *   2. Every DDI and every machine method callable from the body is a Lua C function that
 *      pushes its own harness frame (ptl__enter + setjmp, the same frame ptl_call uses)
 *      around the ptelab call, and only then calls into ptelab. A bug check inside lands
 *      in that wrapper, in the same C function, with no Lua frame in between. The wrapper
 *      pops its frame and converts the STOP into an ordinary Lua error (lua_error with a
 *      "ptl.stop" userdata): Lua unwinds its own frames, the trampoline's lua_pcall
 *      returns, the trampoline returns normally, and ptl_call returns the STOP code, which
 *      m:call returns to the script. Lua's pcall could catch the STOP value on the way,
 *      but the machine stays frozen: every later DDI fails with the same STOP.
 *   3. Exceptions follow NT: inside nt.try(fn, ...) (the PTL_TRY of scripts) each DDI
 *      wrapper also pushes a try frame inside its harness frame; a raise lands there and
 *      becomes a Lua error carrying a "ptl.exception" userdata, which unwinds nested Lua
 *      functions up to nt.try's lua_pcall, and nt.try returns false, status. Outside any
 *      nt.try no try frame is pushed, so the raise is KMODE_EXCEPTION_NOT_HANDLED (0x1E)
 *      with NT's parameters, a STOP as in 2. An exception value rethrown past nt.try by
 *      the script reaches the trampoline and is raised again there (after its lua_pcall
 *      returned), giving the same 0x1E.
 *   4. Lua errors raised while a ptelab frame is pushed would skip ptl__leave: the
 *      wrappers parse and check every argument before pushing the frame, and push results
 *      only after popping it.
 * Tests: tests/test-script.c (a STOP and an exception raised three Lua calls deep, after
 * which the runner still runs m:kd, m:check and writes the report).
 *
 * Outcome. The report and CSV are written for the machine that stopped (the first to),
 * else the last one booted, even after a Lua error; the STOP screen goes to stdout.
 *
 * Invariants: no ptelab frame is pushed while Lua code runs (4. above); every machine a
 * script booted is shut down when the script ends, however it ends.
 */
#include "script.h"

#include "internal.h"

#include <ptelab/wdm.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#define MT_MACHINE   "ptl.machine"
#define MT_PROCESS   "ptl.process"
#define MT_DRIVER    "ptl.driver"
#define MT_THREAD    "ptl.thread"
#define MT_MDL       "ptl.mdl"
#define MT_APC       "ptl.apcstate"
#define MT_STOP      "ptl.stop"
#define MT_EXCEPTION "ptl.exception"

#define MAX_MACHINES 64

typedef struct machine_ud {
    ptl_machine *m; /* NULL once freed */
    int closed;     /* m:shutdown() was called */
    uint64_t ram;   /* its RAM, for the sandbox's budget */
} machine_ud;

typedef struct handle_ud {
    void *h;  /* ptl_process, ptl_driver, ptl_thread, PMDL */
    int dead; /* exited, unloaded, freed */
    ptl_machine *m;
    /* the machine's userdata, anchored in the registry until lua_close: once the machine
     * is shut down, h points into freed memory and the handle must not be used */
    machine_ud *owner;
} handle_ud;

typedef struct apc_ud {
    KAPC_STATE state;
    int attached;
    int ref; /* registry anchor while attached (ptelab may keep the pointer) */
    ptl_machine *m;
} apc_ud;

typedef struct exception_ud {
    uint32_t status;
} exception_ud;

typedef struct runner {
    const char *path;
    ptl_script_opts opts;
    ptl_machine *cur; /* the machine of the innermost m:call / m:dpc, NULL outside */
    int depth;        /* m:call nesting */
    int try_depth;    /* nt.try nesting inside the innermost m:call */
    machine_ud *machines[MAX_MACHINES];
    int nmachines;
    ptl_machine *last;    /* last booted */
    ptl_machine *stopped; /* first that stopped */
} runner;

static const char RUNNER_KEY = 'r';

static runner *get_runner(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &RUNNER_KEY);
    runner *r = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return r;
}

static void note_stop(runner *r, ptl_machine *m)
{
    if (!r->stopped && m && m->stop.stopped)
        r->stopped = m;
}

/* ---- error values: STOP and exception ------------------------------------------------- */

static int stop_tostring(lua_State *L)
{
    ptl_machine **pm = luaL_checkudata(L, 1, MT_STOP);
    ptl_stop s;
    char buf[128];
    if (*pm && ptl_stopped(*pm, &s))
        snprintf(buf, sizeof buf, "STOP 0x%08X (%s): the machine stopped", (unsigned)s.code,
                 s.name);
    else
        snprintf(buf, sizeof buf, "STOP");
    lua_pushstring(L, buf);
    return 1;
}

/* Raise the machine's STOP as a Lua error. Only called with no ptelab frame pushed. */
static int raise_stop(lua_State *L, ptl_machine *m)
{
    note_stop(get_runner(L), m);
    ptl_machine **pm = lua_newuserdatauv(L, sizeof *pm, 0);
    *pm = m;
    luaL_setmetatable(L, MT_STOP);
    return lua_error(L);
}

static int exception_tostring(lua_State *L)
{
    exception_ud *e = luaL_checkudata(L, 1, MT_EXCEPTION);
    char buf[96];
    snprintf(buf, sizeof buf, "exception 0x%08X raised in driver code (catch it with nt.try)",
             (unsigned)e->status);
    lua_pushstring(L, buf);
    return 1;
}

static int exception_index(lua_State *L)
{
    exception_ud *e = luaL_checkudata(L, 1, MT_EXCEPTION);
    const char *k = luaL_checkstring(L, 2);
    if (strcmp(k, "status") == 0)
        lua_pushinteger(L, e->status);
    else
        lua_pushnil(L);
    return 1;
}

static int raise_exception(lua_State *L, uint32_t status)
{
    exception_ud *e = lua_newuserdatauv(L, sizeof *e, 0);
    e->status = status;
    luaL_setmetatable(L, MT_EXCEPTION);
    return lua_error(L);
}

/* Message handler: a traceback for string errors; STOP and exception values pass. */
static int msgh(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg || lua_type(L, 1) != LUA_TSTRING)
        return 1;
    if (strstr(msg, "\nstack traceback:"))
        return 1; /* already has one (an error rethrown from an inner m:call) */
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* ---- protected regions ----------------------------------------------------------------- */

/* Run fn(ctx) under a harness frame of m (and a try frame inside nt.try). DDI form: skipped
 * when the machine is already stopped. After it, a STOP or an exception becomes a Lua
 * error; nothing between the frame push and pop can raise a Lua error. */
static void guarded_ddi(lua_State *L, ptl_machine *m, void (*fn)(void *), void *ctx)
{
    runner *r = get_runner(L);
    volatile int caught = 0;
    volatile uint32_t status = 0;
    const int want_try = r->try_depth > 0;
    /* the verifier's call site: the scenario's line, not the runner's address */
    char where[48] = "";
    lua_Debug ar;
    if (m->cfg.verifier && lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar) &&
        ar.currentline > 0)
        snprintf(where, sizeof where, "%.36s:%d", ar.short_src, ar.currentline);
    m->verifier.where = where[0] ? where : NULL;
    ptl__frame f;
    if (ptl__enter(m, &f) && setjmp(f.jb) == 0) {
        if (want_try) {
            ptl_frame tf;
            ptl_try_push(&tf);
            if (setjmp(tf.jb) == 0) {
                fn(ctx);
                ptl_try_pop(&tf);
            } else {
                caught = 1;
                status = (uint32_t)tf.exception;
            }
        } else {
            fn(ctx);
        }
    }
    ptl__leave(m, &f);
    m->verifier.where = NULL;
    if (m->stop.stopped)
        raise_stop(L, m);
    if (caught)
        raise_exception(L, status);
}

/* Harness form: runs even on a stopped machine (the harness call answers for itself). */
static void guarded_harness(lua_State *L, ptl_machine *m, void (*fn)(void *), void *ctx)
{
    ptl__frame f;
    ptl__enter(m, &f);
    if (setjmp(f.jb) == 0)
        fn(ctx);
    ptl__leave(m, &f);
    note_stop(get_runner(L), m);
}

/* ---- machine and handles ---------------------------------------------------------------- */

static machine_ud *check_mud(lua_State *L, int idx)
{
    machine_ud *u = luaL_checkudata(L, idx, MT_MACHINE);
    if (!u->m || u->closed)
        luaL_error(L, "the machine was shut down");
    return u;
}

static ptl_machine *check_machine(lua_State *L, int idx)
{
    return check_mud(L, idx)->m;
}

static handle_ud *new_handle(lua_State *L, const char *mt, void *h, ptl_machine *m)
{
    runner *r = get_runner(L);
    handle_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->h = h;
    u->dead = 0;
    u->m = m;
    u->owner = NULL;
    for (int i = 0; i < r->nmachines; i++)
        if (r->machines[i]->m == m)
            u->owner = r->machines[i];
    luaL_setmetatable(L, mt);
    return u;
}

/* Whether the handle's object is gone: exited, unloaded, freed, or its machine shut down. */
static int handle_dead(const handle_ud *u)
{
    return u->dead || !u->owner || !u->owner->m || u->owner->closed || u->owner->m != u->m;
}

static handle_ud *check_handle(lua_State *L, int idx, const char *mt, ptl_machine *m,
                               const char *what)
{
    handle_ud *u = luaL_checkudata(L, idx, mt);
    if (handle_dead(u))
        luaL_error(L,
                   "%s is no longer valid (exited, unloaded, freed, or its machine shut "
                   "down)",
                   what);
    if (m && u->m != m)
        luaL_error(L, "%s belongs to another machine", what);
    return u;
}

static ptl_process *opt_process(lua_State *L, int idx, ptl_machine *m)
{
    if (lua_isnoneornil(L, idx))
        return NULL;
    return check_handle(L, idx, MT_PROCESS, m, "the process")->h;
}

static ptl_driver *opt_driver(lua_State *L, int idx, ptl_machine *m)
{
    if (lua_isnoneornil(L, idx))
        return NULL;
    return check_handle(L, idx, MT_DRIVER, m, "the driver")->h;
}

static uint32_t check_u32(lua_State *L, int idx)
{
    lua_Integer v = luaL_checkinteger(L, idx);
    luaL_argcheck(L, v >= 0 && v <= 0xFFFFFFFFll, idx, "not a 32-bit value");
    return (uint32_t)v;
}

static uint32_t opt_u32(lua_State *L, int idx, uint32_t def)
{
    return lua_isnoneornil(L, idx) ? def : check_u32(L, idx);
}

static int opt_flag(lua_State *L, int idx, int def)
{
    if (lua_isnoneornil(L, idx))
        return def;
    if (lua_isboolean(L, idx))
        return lua_toboolean(L, idx);
    return luaL_checkinteger(L, idx) != 0;
}

static uint64_t check_u64(lua_State *L, int idx)
{
    lua_Integer v = luaL_checkinteger(L, idx);
    luaL_argcheck(L, v >= 0, idx, "negative");
    return (uint64_t)v;
}

/* An emulated address as driver code holds it: below 4 GB (host pointers are above). */
static PVOID check_va(lua_State *L, int idx)
{
    return (PVOID)(uintptr_t)check_u32(L, idx);
}

static void push_va(lua_State *L, PVOID va)
{
    if (va)
        lua_pushinteger(L, (lua_Integer)((uintptr_t)va & 0xFFFFFFFFu));
    else
        lua_pushnil(L);
}

static INTERFACE_TYPE check_bus(lua_State *L, int idx)
{
    static const struct {
        const char *name;
        INTERFACE_TYPE t;
    } names[] = {{"Internal", Internal},  {"Isa", Isa},    {"ISA", Isa},
                 {"Eisa", Eisa},          {"EISA", Eisa},  {"MicroChannel", MicroChannel},
                 {"PCIBus", PCIBus},      {"PCI", PCIBus}, {"PCMCIABus", PCMCIABus},
                 {"PNPISABus", PNPISABus}};
    if (lua_type(L, idx) == LUA_TSTRING) {
        const char *s = lua_tostring(L, idx);
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            if (strcmp(s, names[i].name) == 0)
                return names[i].t;
        luaL_argerror(L, idx, "unknown bus (PCIBus, Isa, Eisa, Internal, ...)");
    }
    return (INTERFACE_TYPE)luaL_checkinteger(L, idx);
}

static runner *in_call(lua_State *L, const char *ddi)
{
    runner *r = get_runner(L);
    if (!r->cur)
        luaL_error(L, "%s called outside driver code (use it inside m:call or m:dpc)", ddi);
    return r;
}

/* ---- ptl.boot ------------------------------------------------------------------------------ */

/* Field k of the boot table at index 1, or 0 when absent (value left on the stack). */
static int field(lua_State *L, const char *k)
{
    lua_getfield(L, 1, k);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    return 1;
}

static const char *const boot_fields[] = {
    "ram",      "profile",         "system_pages",       "boot_3gb",
    "userva",   "track_ptes",      "verifier",           "reg",
    "seed",     "paged_pool_size", "nonpaged_pool_size", "policy",
    "fail_nth", "fail_ppm",        "fail_kinds",         NULL};

static int l_boot(lua_State *L)
{
    runner *r = get_runner(L);
    if (lua_isnoneornil(L, 1))
        lua_newtable(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    /* unknown keys are typos: refuse them */
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        lua_pop(L, 1);
        const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        int ok = 0;
        for (int i = 0; k && boot_fields[i]; i++)
            ok |= strcmp(k, boot_fields[i]) == 0;
        if (!ok)
            return luaL_error(L, "ptl.boot: unknown field '%s'", k ? k : "?");
    }
    ptl_config cfg;
    ptl_config_init(&cfg);
    cfg.seed = r->opts.seed;
    cfg.verifier = r->opts.verifier;
    cfg.fault_inject_nth = r->opts.fault_nth;
    cfg.fault_inject_ppm = r->opts.fault_ppm;
    cfg.fault_inject_kinds = r->opts.fault_kinds;
    if (r->opts.reg_path && ptl_registry_import(&cfg, r->opts.reg_path) != 0)
        return luaL_error(L, "ptl.boot: %s", ptl_error());
    if (field(L, "reg")) {
        const char *reg = luaL_checkstring(L, -1);
        if (r->opts.sandbox) /* a host file: the sandbox reads none */
            return luaL_error(L,
                              "ptl.boot: reg = '%s' reads a host file, which the sandbox "
                              "does not allow (give it to ptelab run --reg instead)",
                              reg);
        if (ptl_registry_import(&cfg, reg) != 0)
            return luaL_error(L, "ptl.boot: %s", ptl_error());
        lua_pop(L, 1);
    }
    if (field(L, "ram")) {
        if (lua_type(L, -1) == LUA_TSTRING) {
            cfg.ram_bytes = ptl_parse_size(lua_tostring(L, -1));
            if (!cfg.ram_bytes)
                return luaL_error(L, "ptl.boot: ram '%s' is not a size like 64M or 1G",
                                  lua_tostring(L, -1));
        } else {
            cfg.ram_bytes = check_u64(L, -1);
        }
        lua_pop(L, 1);
    }
    if (field(L, "profile")) {
        int p = ptl_profile_from_name(luaL_checkstring(L, -1));
        if (p < 0)
            return luaL_error(L, "ptl.boot: profile '%s' is not nt4sp3, nt4sp4, win2000 or winxp",
                              lua_tostring(L, -1));
        cfg.profile = (ptl_profile)p;
        lua_pop(L, 1);
    }
    if (field(L, "system_pages")) {
        if (lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "max") == 0)
            cfg.system_pages = 0xFFFFFFFFu;
        else
            cfg.system_pages = check_u32(L, -1);
        lua_pop(L, 1);
    }
    if (field(L, "boot_3gb")) {
        cfg.boot_3gb = opt_flag(L, -1, 0);
        lua_pop(L, 1);
    }
    if (field(L, "userva")) {
        cfg.userva_mb = check_u32(L, -1);
        lua_pop(L, 1);
    }
    if (field(L, "track_ptes")) {
        cfg.track_ptes = opt_flag(L, -1, 0);
        lua_pop(L, 1);
    }
    if (field(L, "verifier")) {
        cfg.verifier = opt_flag(L, -1, 0);
        lua_pop(L, 1);
    }
    if (field(L, "seed")) {
        cfg.seed = check_u64(L, -1);
        lua_pop(L, 1);
    }
    if (field(L, "paged_pool_size")) {
        cfg.paged_pool_size = check_u32(L, -1);
        lua_pop(L, 1);
    }
    if (field(L, "nonpaged_pool_size")) {
        cfg.nonpaged_pool_size = check_u32(L, -1);
        lua_pop(L, 1);
    }
    if (field(L, "fail_nth")) {
        cfg.fault_inject_nth = check_u32(L, -1);
        lua_pop(L, 1);
    }
    if (field(L, "fail_ppm")) {
        cfg.fault_inject_ppm = check_u32(L, -1);
        if (cfg.fault_inject_ppm > 1000000)
            return luaL_error(L, "ptl.boot: fail_ppm %I is more than a million",
                              (lua_Integer)cfg.fault_inject_ppm);
        lua_pop(L, 1);
    }
    if (field(L, "fail_kinds")) {
        if (ptl_fault_kinds_parse(luaL_checkstring(L, -1), &cfg.fault_inject_kinds) != 0)
            return luaL_error(L, "ptl.boot: %s", ptl_error());
        lua_pop(L, 1);
    }
    if ((cfg.fault_inject_nth || cfg.fault_inject_ppm) && !cfg.fault_inject_kinds)
        cfg.fault_inject_kinds = PTL_FAULT_SYSPTES | PTL_FAULT_POOL | PTL_FAULT_MDL;
    if (field(L, "policy")) {
        const char *p = luaL_checkstring(L, -1);
        if (strcmp(p, "low") == 0)
            cfg.syspte_policy = PTL_SYSPTE_FIRST_FIT_LOW;
        else if (strcmp(p, "high") == 0)
            cfg.syspte_policy = PTL_SYSPTE_FIRST_FIT_HIGH;
        else
            return luaL_error(L, "ptl.boot: policy '%s' is not low or high", p);
        lua_pop(L, 1);
    }
    if (r->opts.profile >= 0)
        cfg.profile = (ptl_profile)r->opts.profile;
    if (r->nmachines >= MAX_MACHINES)
        return luaL_error(L, "ptl.boot: more than %d machines in one scenario", MAX_MACHINES);
    if (r->opts.sandbox && r->opts.max_machine_ram) {
        /* a machine may come to hold as much host memory as its RAM (every page a driver
         * writes), so an untrusted scenario's machines share one budget */
        uint64_t up = 0;
        for (int i = 0; i < r->nmachines; i++)
            up += r->machines[i]->m ? r->machines[i]->ram : 0;
        uint64_t budget = r->opts.max_machine_ram;
        if (up > budget || cfg.ram_bytes > budget - up)
            return luaL_error(L,
                              "ptl.boot: the sandbox allows %I MB of emulated RAM at once; "
                              "%I MB is up and this machine asks for %I MB",
                              (lua_Integer)(budget >> 20), (lua_Integer)(up >> 20),
                              (lua_Integer)(cfg.ram_bytes >> 20));
    }
    machine_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->m = NULL;
    u->closed = 0;
    u->ram = cfg.ram_bytes;
    luaL_setmetatable(L, MT_MACHINE);
    u->m = ptl_boot(&cfg);
    if (!u->m)
        return luaL_error(L, "ptl.boot: the machine does not boot: %s", ptl_error());
    if (r->opts.verbose)
        ptl_events_echo(u->m, 1);
    /* anchored until lua_close: the runner reports on it after the script ends */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &r->machines);
    lua_pushvalue(L, -2);
    lua_rawseti(L, -2, r->nmachines + 1);
    lua_pop(L, 1);
    r->machines[r->nmachines++] = u;
    r->last = u->m;
    return 1;
}

static void output_failed(runner *r)
{
    if (r->opts.output_failed)
        *r->opts.output_failed = 1;
}

static void free_machine(runner *r, machine_ud *u)
{
    if (u->m && u->m != r->last && u->m != r->stopped) {
        ptl_shutdown(u->m);
        u->m = NULL;
    }
}

static int machine_gc(lua_State *L)
{
    machine_ud *u = luaL_checkudata(L, 1, MT_MACHINE);
    if (u->m)
        ptl_shutdown(u->m);
    u->m = NULL;
    return 0;
}

static int m_shutdown(lua_State *L)
{
    runner *r = get_runner(L);
    machine_ud *u = check_mud(L, 1);
    if (r->cur == u->m)
        return luaL_error(L, "m:shutdown() inside m:call on the same machine");
    note_stop(r, u->m);
    u->closed = 1;
    free_machine(r, u); /* the one the report is about stays until the end */
    return 0;
}

/* ---- harness methods ---------------------------------------------------------------------- */

typedef struct hctx {
    ptl_machine *m;
    void *a, *b;
    uint64_t x, y, z, w;
    const char *s;
    uint64_t ret;
    void *pret;
    ptl_stop stop;
} hctx;

static void h_adapter(void *c_)
{
    hctx *c = c_;
    c->ret =
        (uint64_t)(int64_t)ptl_adapter_add(c->m, (INTERFACE_TYPE)c->x, (ULONG)c->y, c->z, c->w);
}

static int m_adapter(lua_State *L)
{
    hctx c = {0};
    c.m = check_machine(L, 1);
    c.x = (uint64_t)check_bus(L, 2);
    c.y = check_u32(L, 3);
    c.z = check_u64(L, 4);
    c.w = check_u64(L, 5);
    guarded_harness(L, c.m, h_adapter, &c);
    if ((int64_t)c.ret != 0)
        return luaL_error(L, "m:adapter: %s", ptl_error());
    return 0;
}

static void h_bus(void *c_)
{
    hctx *c = c_;
    c->ret =
        (uint64_t)(int64_t)ptl_bus_add(c->m, (INTERFACE_TYPE)c->x, (ULONG)c->y, c->z, (int)c->w);
}

static int m_bus(lua_State *L)
{
    hctx c = {0};
    c.m = check_machine(L, 1);
    c.x = (uint64_t)check_bus(L, 2);
    c.y = check_u32(L, 3);
    c.z = check_u64(L, 4);
    c.w = (uint64_t)opt_flag(L, 5, 0);
    guarded_harness(L, c.m, h_bus, &c);
    if ((int64_t)c.ret != 0)
        return luaL_error(L, "m:bus: %s", ptl_error());
    return 0;
}

static void h_process(void *c_)
{
    hctx *c = c_;
    c->pret = ptl_process_create(c->m, c->s);
}

static int m_process(lua_State *L)
{
    hctx c = {0};
    c.m = check_machine(L, 1);
    c.s = luaL_optstring(L, 2, "app.exe");
    guarded_harness(L, c.m, h_process, &c);
    if (!c.pret) {
        lua_pushnil(L);
        lua_pushstring(L, ptl_error());
        return 2;
    }
    new_handle(L, MT_PROCESS, c.pret, c.m);
    return 1;
}

static void h_driver(void *c_)
{
    hctx *c = c_;
    c->pret = ptl_driver_load(c->m, c->s, (uint32_t)c->x);
}

static int m_driver(lua_State *L)
{
    hctx c = {0};
    c.m = check_machine(L, 1);
    c.s = luaL_checkstring(L, 2);
    c.x = opt_u32(L, 3, 8192);
    guarded_harness(L, c.m, h_driver, &c);
    if (!c.pret) {
        lua_pushnil(L);
        lua_pushstring(L, ptl_error());
        return 2;
    }
    new_handle(L, MT_DRIVER, c.pret, c.m);
    return 1;
}

static void h_import(void *c_)
{
    hctx *c = c_;
    c->ret = (uint64_t)(int64_t)ptl_driver_import(c->a, c->s, (uint32_t)c->x);
}

static int m_import(lua_State *L)
{
    hctx c = {0};
    c.m = check_machine(L, 1);
    c.a = check_handle(L, 2, MT_DRIVER, c.m, "the driver")->h;
    c.s = luaL_checkstring(L, 3);
    c.x = check_u32(L, 4);
    guarded_harness(L, c.m, h_import, &c);
    if ((int64_t)c.ret != 0) {
        lua_pushnil(L);
        lua_pushstring(L, ptl_error());
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static void h_thread(void *c_)
{
    hctx *c = c_;
    c->pret = ptl_thread_create(c->m, c->a);
}

static int m_thread(lua_State *L)
{
    hctx c = {0};
    c.m = check_machine(L, 1);
    c.a = opt_process(L, 2, c.m);
    guarded_harness(L, c.m, h_thread, &c);
    if (!c.pret) {
        lua_pushnil(L);
        lua_pushstring(L, ptl_error());
        return 2;
    }
    new_handle(L, MT_THREAD, c.pret, c.m);
    return 1;
}

static void h_thread_exit(void *c_)
{
    hctx *c = c_;
    ptl_thread_exit(c->a);
}

static int m_thread_exit(lua_State *L)
{
    hctx c = {0};
    c.m = check_machine(L, 1);
    handle_ud *t = check_handle(L, 2, MT_THREAD, c.m, "the thread");
    c.a = t->h;
    t->dead = 1;
    guarded_harness(L, c.m, h_thread_exit, &c);
    return 0;
}

static void h_process_exit(void *c_)
{
    hctx *c = c_;
    c->ret = ptl_process_exit(c->a, &c->stop);
}

static int m_process_exit(lua_State *L)
{
    hctx c = {0};
    c.m = check_machine(L, 1);
    handle_ud *p = check_handle(L, 2, MT_PROCESS, c.m, "the process");
    c.a = p->h;
    p->dead = 1;
    guarded_harness(L, c.m, h_process_exit, &c);
    lua_pushinteger(L, (lua_Integer)c.ret);
    return 1;
}

static void h_driver_unload(void *c_)
{
    hctx *c = c_;
    c->ret = ptl_driver_unload(c->a, &c->stop);
}

static int m_driver_unload(lua_State *L)
{
    hctx c = {0};
    c.m = check_machine(L, 1);
    handle_ud *d = check_handle(L, 2, MT_DRIVER, c.m, "the driver");
    c.a = d->h;
    d->dead = 1;
    guarded_harness(L, c.m, h_driver_unload, &c);
    lua_pushinteger(L, (lua_Integer)c.ret);
    return 1;
}

static void h_swap_out(void *c_)
{
    hctx *c = c_;
    c->ret = ptl_process_swap_out(c->a);
}

static int m_swap_out(lua_State *L)
{
    hctx c = {0};
    c.m = check_machine(L, 1);
    c.a = check_handle(L, 2, MT_PROCESS, c.m, "the process")->h;
    guarded_harness(L, c.m, h_swap_out, &c);
    lua_pushinteger(L, (lua_Integer)c.ret);
    return 1;
}

static void h_user_alloc(void *c_)
{
    hctx *c = c_;
    c->ret = ptl_user_alloc(c->a, (uint32_t)c->x);
}

static int m_user_alloc(lua_State *L)
{
    hctx c = {0};
    c.m = check_machine(L, 1);
    c.a = check_handle(L, 2, MT_PROCESS, c.m, "the process")->h;
    c.x = check_u32(L, 3);
    guarded_harness(L, c.m, h_user_alloc, &c);
    if (c.ret)
        lua_pushinteger(L, (lua_Integer)c.ret);
    else
        lua_pushnil(L);
    return 1;
}

static void h_user_rw(void *c_)
{
    hctx *c = c_;
    uint32_t v = (uint32_t)c->y;
    if (c->w)
        c->ret = (uint32_t)ptl_user_write(c->a, (uint32_t)c->x, &v, 4);
    else
        c->ret = (uint32_t)ptl_user_read(c->a, (uint32_t)c->x, &v, 4);
    c->y = v;
}

static int m_user_read32(lua_State *L)
{
    hctx c = {0};
    c.m = check_machine(L, 1);
    c.a = check_handle(L, 2, MT_PROCESS, c.m, "the process")->h;
    c.x = check_u32(L, 3);
    guarded_harness(L, c.m, h_user_rw, &c);
    if (c.ret != 0) {
        lua_pushnil(L);
        lua_pushinteger(L, (lua_Integer)c.ret);
        return 2;
    }
    lua_pushinteger(L, (lua_Integer)c.y);
    return 1;
}

static int m_user_write32(lua_State *L)
{
    hctx c = {0};
    c.m = check_machine(L, 1);
    c.a = check_handle(L, 2, MT_PROCESS, c.m, "the process")->h;
    c.x = check_u32(L, 3);
    c.y = check_u32(L, 4);
    c.w = 1;
    guarded_harness(L, c.m, h_user_rw, &c);
    lua_pushinteger(L, (lua_Integer)c.ret);
    return 1;
}

static int m_phys_read32(lua_State *L)
{
    ptl_machine *m = check_machine(L, 1);
    uint32_t v = 0;
    if (ptl_phys_read(m, check_u64(L, 2), &v, 4) != 0)
        return luaL_error(L, "m:phys_read32: %s", ptl_error());
    lua_pushinteger(L, v);
    return 1;
}

static int m_phys_write32(lua_State *L)
{
    ptl_machine *m = check_machine(L, 1);
    uint32_t v = check_u32(L, 3);
    if (ptl_phys_write(m, check_u64(L, 2), &v, 4) != 0)
        return luaL_error(L, "m:phys_write32: %s", ptl_error());
    return 0;
}

static int m_set_privileged(lua_State *L)
{
    ptl_machine *m = check_machine(L, 1);
    ptl_process_set_privileged(check_handle(L, 2, MT_PROCESS, m, "the process")->h,
                               opt_flag(L, 3, 1));
    return 0;
}

/* ---- m:call and m:dpc -------------------------------------------------------------------- */

typedef struct call_ctx {
    lua_State *L;
    runner *r;
    ptl_machine *m;
    int nargs;
    int status; /* of the lua_pcall */
    int ran;
} call_ctx;

/* The driver function ptl_call runs: the Lua body under lua_pcall (message handler at
 * the slot below the function). Nothing below the lua_pcall longjmps out of it (see the
 * top of this file). */
static void trampoline(void *arg)
{
    call_ctx *c = arg;
    lua_State *L = c->L;
    c->ran = 1;
    c->status = lua_pcall(L, c->nargs, LUA_MULTRET, lua_gettop(L) - c->nargs - 1);
    if (c->status != LUA_OK && !c->m->stop.stopped) {
        exception_ud *e = luaL_testudata(L, -1, MT_EXCEPTION);
        if (e) {
            /* an exception the script rethrew past nt.try: unhandled, as NT has it. The
             * lua_pcall has returned, so this longjmp crosses only this C frame. */
            c->status = LUA_OK;
            ptl_raise_status((int32_t)e->status);
        }
    }
}

static int do_call(lua_State *L, int dpc)
{
    runner *r = get_runner(L);
    ptl_machine *m = check_machine(L, 1);
    if (!dpc && lua_type(L, 3) == LUA_TFUNCTION) { /* m:call(p, fn): no driver */
        lua_pushnil(L);
        lua_insert(L, 3);
    }
    ptl_process *p = dpc ? NULL : opt_process(L, 2, m);
    ptl_driver *d = opt_driver(L, dpc ? 2 : 3, m);
    int fidx = dpc ? 3 : 4;
    luaL_checktype(L, fidx, LUA_TFUNCTION);
    int top = lua_gettop(L);
    /* stack: ... msgh fn args */
    lua_pushcfunction(L, msgh);
    lua_insert(L, fidx);
    int base = fidx; /* the message handler's slot */
    call_ctx c = {L, r, m, top - fidx, LUA_OK, 0};
    ptl_machine *prev_cur = r->cur;
    int prev_try = r->try_depth;
    r->cur = m;
    r->try_depth = 0;
    r->depth++;
    ptl_stop stop;
    uint32_t code =
        dpc ? ptl_call_dpc(m, d, trampoline, &c, &stop) : ptl_call(m, p, d, trampoline, &c, &stop);
    r->depth--;
    r->cur = prev_cur;
    r->try_depth = prev_try;
    if (code == PTL_CALL_REFUSED)
        return luaL_error(L, "m:%s: %s", dpc ? "dpc" : "call", ptl_error());
    if (code != 0) {
        note_stop(r, m);
        lua_settop(L, base - 1);
        lua_pushinteger(L, code);
        return 1;
    }
    if (c.ran && c.status != LUA_OK)
        return lua_error(L); /* a Lua error in the body: on to the script */
    if (!c.ran) {
        lua_settop(L, base - 1);
        lua_pushinteger(L, 0);
        return 1;
    }
    /* results sit above the message handler's slot: replace it with the code 0 */
    lua_pushinteger(L, 0);
    lua_replace(L, base);
    return lua_gettop(L) - base + 1;
}

static int m_call(lua_State *L)
{
    return do_call(L, 0);
}

static int m_dpc(lua_State *L)
{
    return do_call(L, 1);
}

/* ---- queries ------------------------------------------------------------------------------- */

static int m_free_ptes(lua_State *L)
{
    lua_pushinteger(L, ptl_free_system_ptes(check_machine(L, 1)));
    return 1;
}

static int m_total_ptes(lua_State *L)
{
    lua_pushinteger(L, ptl_total_system_ptes(check_machine(L, 1)));
    return 1;
}

static int m_largest_free(lua_State *L)
{
    lua_pushinteger(L, ptl_largest_free_system_ptes(check_machine(L, 1)));
    return 1;
}

#define SET_INT(L, k, v)                        \
    do {                                        \
        lua_pushinteger((L), (lua_Integer)(v)); \
        lua_setfield((L), -2, (k));             \
    } while (0)

static int m_stats(lua_State *L)
{
    ptl_syspte_stats s;
    ptl_syspte_stats_get(check_machine(L, 1), &s);
    lua_createtable(L, 0, 10);
    SET_INT(L, "base_va", s.base_va);
    SET_INT(L, "total", s.total);
    SET_INT(L, "free", s.free);
    SET_INT(L, "largest_free", s.largest_free);
    SET_INT(L, "free_runs", s.free_runs);
    SET_INT(L, "peak_used", s.peak_used);
    SET_INT(L, "failed_total", s.failed_total);
    SET_INT(L, "failed_fragmented", s.failed_fragmented);
    lua_createtable(L, PTL_SYSPTE_HIST_BUCKETS, 0);
    for (int i = 0; i < PTL_SYSPTE_HIST_BUCKETS; i++) {
        lua_pushinteger(L, s.hist[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "hist");
    return 1;
}

static int m_counters(lua_State *L)
{
    ptl_counters c;
    ptl_counters_get(check_machine(L, 1), &c);
    lua_createtable(L, 0, 5);
    SET_INT(L, "free_system_ptes", c.free_system_ptes);
    SET_INT(L, "pool_paged_bytes", c.pool_paged_bytes);
    SET_INT(L, "pool_nonpaged_bytes", c.pool_nonpaged_bytes);
    SET_INT(L, "available_bytes", c.available_bytes);
    SET_INT(L, "committed_bytes", c.committed_bytes);
    return 1;
}

static int m_stopped(lua_State *L)
{
    machine_ud *u = luaL_checkudata(L, 1, MT_MACHINE);
    ptl_stop s;
    if (!u->m || !ptl_stopped(u->m, &s)) {
        lua_pushnil(L);
        return 1;
    }
    note_stop(get_runner(L), u->m);
    lua_createtable(L, 0, 4);
    SET_INT(L, "code", s.code);
    lua_pushstring(L, s.name);
    lua_setfield(L, -2, "name");
    lua_createtable(L, 4, 0);
    for (int i = 0; i < 4; i++) {
        lua_pushinteger(L, (lua_Integer)s.param[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "params");
    lua_pushstring(L, u->m->stop.detail);
    lua_setfield(L, -2, "detail");
    return 1;
}

static int m_kd(lua_State *L)
{
    ptl_machine *m = check_machine(L, 1);
    const char *cmd = luaL_checkstring(L, 2);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return luaL_error(L, "m:kd: out of memory");
    int rc = ptl_kd(m, cmd, f);
    fclose(f);
    lua_pushlstring(L, buf ? buf : "", len);
    free(buf);
    lua_pushboolean(L, rc == 0);
    return 2;
}

static int m_layout(lua_State *L)
{
    ptl_machine *m = check_machine(L, 1);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return luaL_error(L, "m:layout: out of memory");
    ptl_layout_print(m, f);
    fclose(f);
    lua_pushlstring(L, buf ? buf : "", len);
    free(buf);
    return 1;
}

static int m_check(lua_State *L)
{
    lua_pushboolean(L, ptl_check(check_machine(L, 1)) == 0);
    return 1;
}

static int m_snapshot(lua_State *L)
{
    ptl_machine *m = check_machine(L, 1);
    ptl_report_snapshot(m, luaL_optstring(L, 2, "snapshot"));
    return 0;
}

static int m_events(lua_State *L)
{
    ptl_machine *m = check_machine(L, 1);
    const char *type = luaL_optstring(L, 2, NULL);
    size_t n = ptl_event_count(m);
    lua_createtable(L, (int)(n < 100000 ? n : 100000), 0);
    lua_Integer k = 0;
    for (size_t i = 0; i < n; i++) {
        ptl_event e;
        if (ptl_event_get(m, i, &e) != 0 || (type && strcmp(e.type, type) != 0))
            continue;
        lua_createtable(L, 0, 4);
        lua_pushstring(L, e.type);
        lua_setfield(L, -2, "type");
        lua_pushstring(L, e.text ? e.text : "");
        lua_setfield(L, -2, "text");
        SET_INT(L, "tick", e.tick);
        SET_INT(L, "free", e.free_ptes);
        lua_rawseti(L, -2, ++k);
    }
    return 1;
}

static int m_event_count(lua_State *L)
{
    ptl_machine *m = check_machine(L, 1);
    if (lua_isnoneornil(L, 2))
        lua_pushinteger(L, (lua_Integer)ptl_event_count(m));
    else
        lua_pushinteger(L, (lua_Integer)ptl_event_count_type(m, luaL_checkstring(L, 2)));
    return 1;
}

static int m_tostring(lua_State *L)
{
    machine_ud *u = luaL_checkudata(L, 1, MT_MACHINE);
    if (!u->m)
        lua_pushstring(L, "machine (shut down)");
    else
        lua_pushfstring(L, "machine (%d system PTEs, %d free)", (int)ptl_total_system_ptes(u->m),
                        (int)ptl_free_system_ptes(u->m));
    return 1;
}

static const luaL_Reg machine_methods[] = {{"adapter", m_adapter},
                                           {"bus", m_bus},
                                           {"process", m_process},
                                           {"driver", m_driver},
                                           {"import", m_import},
                                           {"thread", m_thread},
                                           {"thread_exit", m_thread_exit},
                                           {"process_exit", m_process_exit},
                                           {"driver_unload", m_driver_unload},
                                           {"swap_out", m_swap_out},
                                           {"user_alloc", m_user_alloc},
                                           {"user_read32", m_user_read32},
                                           {"user_write32", m_user_write32},
                                           {"phys_read32", m_phys_read32},
                                           {"phys_write32", m_phys_write32},
                                           {"set_privileged", m_set_privileged},
                                           {"call", m_call},
                                           {"dpc", m_dpc},
                                           {"free_ptes", m_free_ptes},
                                           {"total_ptes", m_total_ptes},
                                           {"largest_free", m_largest_free},
                                           {"stats", m_stats},
                                           {"counters", m_counters},
                                           {"stopped", m_stopped},
                                           {"kd", m_kd},
                                           {"layout", m_layout},
                                           {"check", m_check},
                                           {"snapshot", m_snapshot},
                                           {"events", m_events},
                                           {"event_count", m_event_count},
                                           {"shutdown", m_shutdown},
                                           {NULL, NULL}};

/* handles: tostring and a few fields */
static int process_index(lua_State *L)
{
    handle_ud *u = luaL_checkudata(L, 1, MT_PROCESS);
    const char *k = luaL_checkstring(L, 2);
    if (handle_dead(u))
        lua_pushnil(L);
    else if (strcmp(k, "name") == 0)
        lua_pushstring(L, ptl_process_name(u->h));
    else if (strcmp(k, "id") == 0)
        lua_pushinteger(L, ptl_process_id(u->h));
    else if (strcmp(k, "dirbase") == 0)
        lua_pushinteger(L, ptl_process_dirbase(u->h));
    else
        lua_pushnil(L);
    return 1;
}

static int driver_index(lua_State *L)
{
    handle_ud *u = luaL_checkudata(L, 1, MT_DRIVER);
    const char *k = luaL_checkstring(L, 2);
    if (!u->owner || !u->owner->m || u->owner->closed || u->owner->m != u->m)
        lua_pushnil(L); /* an unloaded driver still has its name and base: a shut-down one not */
    else if (strcmp(k, "name") == 0)
        lua_pushstring(L, ptl_driver_name(u->h));
    else if (strcmp(k, "base") == 0)
        lua_pushinteger(L, ptl_driver_base(u->h));
    else if (strcmp(k, "ptes") == 0 && !u->dead)
        lua_pushinteger(L, ptl_driver_ptes(u->h));
    else
        lua_pushnil(L);
    return 1;
}

/* ---- the DDIs ------------------------------------------------------------------------------ */

typedef struct dctx {
    uint64_t a[6];
    void *p[2];
    uint64_t ret, ret2, ret3;
    void *pret;
    int32_t st;
} dctx;

#define DDI_MACHINE(L, name) (in_call((L), (name))->cur)

static PMDL check_mdl(lua_State *L, int idx, ptl_machine *m)
{
    return check_handle(L, idx, MT_MDL, m, "the MDL")->h;
}

static int cache_arg(lua_State *L, int idx, int def)
{
    if (lua_isnoneornil(L, idx))
        return def;
    if (lua_isboolean(L, idx))
        return lua_toboolean(L, idx) ? MmCached : MmNonCached; /* NT 4.0's CacheEnable */
    return (int)luaL_checkinteger(L, idx);
}

static void d_map_io(void *c_)
{
    dctx *c = c_;
    PHYSICAL_ADDRESS pa;
    pa.QuadPart = (LONGLONG)c->a[0];
    c->pret = MmMapIoSpace(pa, (SIZE_T)c->a[1], (MEMORY_CACHING_TYPE)c->a[2]);
}

static int n_MmMapIoSpace(lua_State *L)
{
    ptl_machine *m = DDI_MACHINE(L, "MmMapIoSpace");
    dctx c = {0};
    c.a[0] = check_u64(L, 1);
    c.a[1] = check_u32(L, 2);
    c.a[2] = (uint64_t)cache_arg(L, 3, MmNonCached);
    guarded_ddi(L, m, d_map_io, &c);
    push_va(L, c.pret);
    return 1;
}

static void d_unmap_io(void *c_)
{
    dctx *c = c_;
    MmUnmapIoSpace(c->p[0], (SIZE_T)c->a[0]);
}

static int n_MmUnmapIoSpace(lua_State *L)
{
    ptl_machine *m = DDI_MACHINE(L, "MmUnmapIoSpace");
    dctx c = {0};
    c.p[0] = check_va(L, 1);
    c.a[0] = check_u32(L, 2);
    guarded_ddi(L, m, d_unmap_io, &c);
    return 0;
}

static void d_alloc_noncached(void *c_)
{
    dctx *c = c_;
    c->pret = MmAllocateNonCachedMemory((SIZE_T)c->a[0]);
}

static int n_MmAllocateNonCachedMemory(lua_State *L)
{
    ptl_machine *m = DDI_MACHINE(L, "MmAllocateNonCachedMemory");
    dctx c = {0};
    c.a[0] = check_u32(L, 1);
    guarded_ddi(L, m, d_alloc_noncached, &c);
    push_va(L, c.pret);
    return 1;
}

static void d_free_noncached(void *c_)
{
    dctx *c = c_;
    MmFreeNonCachedMemory(c->p[0], (SIZE_T)c->a[0]);
}

static int n_MmFreeNonCachedMemory(lua_State *L)
{
    ptl_machine *m = DDI_MACHINE(L, "MmFreeNonCachedMemory");
    dctx c = {0};
    c.p[0] = check_va(L, 1);
    c.a[0] = check_u32(L, 2);
    guarded_ddi(L, m, d_free_noncached, &c);
    return 0;
}

static void d_phys_of(void *c_)
{
    dctx *c = c_;
    c->ret = (uint64_t)MmGetPhysicalAddress(c->p[0]).QuadPart;
}

static int n_MmGetPhysicalAddress(lua_State *L)
{
    ptl_machine *m = DDI_MACHINE(L, "MmGetPhysicalAddress");
    dctx c = {0};
    c.p[0] = check_va(L, 1);
    guarded_ddi(L, m, d_phys_of, &c);
    lua_pushinteger(L, (lua_Integer)c.ret);
    return 1;
}

static void d_valid(void *c_)
{
    dctx *c = c_;
    c->ret = MmIsAddressValid(c->p[0]);
}

static int n_MmIsAddressValid(lua_State *L)
{
    ptl_machine *m = DDI_MACHINE(L, "MmIsAddressValid");
    dctx c = {0};
    c.p[0] = check_va(L, 1);
    guarded_ddi(L, m, d_valid, &c);
    lua_pushboolean(L, c.ret != 0);
    return 1;
}

/* MDLs */

static void d_alloc_mdl(void *c_)
{
    dctx *c = c_;
    c->pret = IoAllocateMdl(c->p[0], (ULONG)c->a[0], (BOOLEAN)c->a[1], (BOOLEAN)c->a[2], NULL);
}

static int n_IoAllocateMdl(lua_State *L)
{
    ptl_machine *m = DDI_MACHINE(L, "IoAllocateMdl");
    dctx c = {0};
    c.p[0] = check_va(L, 1);
    c.a[0] = check_u32(L, 2);
    c.a[1] = (uint64_t)opt_flag(L, 3, 0);
    c.a[2] = (uint64_t)opt_flag(L, 4, 0);
    /* the userdata first, so that pushing it cannot fail after the MDL exists */
    handle_ud *u = new_handle(L, MT_MDL, NULL, m);
    u->dead = 1;
    guarded_ddi(L, m, d_alloc_mdl, &c);
    if (!c.pret) {
        lua_pushnil(L);
        return 1;
    }
    u->h = c.pret;
    u->dead = 0;
    return 1;
}

static void d_free_mdl(void *c_)
{
    dctx *c = c_;
    IoFreeMdl(c->p[0]);
}

static int n_IoFreeMdl(lua_State *L)
{
    ptl_machine *m = DDI_MACHINE(L, "IoFreeMdl");
    handle_ud *u = luaL_checkudata(L, 1, MT_MDL);
    if (u->m != m || !u->owner || u->owner->m != m || u->owner->closed)
        return luaL_error(L, "the MDL belongs to another machine");
    /* A second IoFreeMdl passes the stale pointer: ptelab diagnoses it by looking it up,
     * never dereferencing it. If the host has since given that memory to another MDL, the
     * lookup would find and free the live one, which a Lua handle may still use: refuse. */
    if (u->dead && u->h && ptl__ptrmap_get(&m->mdls.map, u->h))
        return luaL_error(L, "IoFreeMdl of an MDL freed already, whose memory now holds another "
                             "MDL: the second free would free that one");
    dctx c = {0};
    c.p[0] = u->h;
    u->dead = 1;
    guarded_ddi(L, m, d_free_mdl, &c);
    return 0;
}

static void d_build_np(void *c_)
{
    dctx *c = c_;
    MmBuildMdlForNonPagedPool(c->p[0]);
}

static int n_MmBuildMdlForNonPagedPool(lua_State *L)
{
    ptl_machine *m = DDI_MACHINE(L, "MmBuildMdlForNonPagedPool");
    dctx c = {0};
    c.p[0] = check_mdl(L, 1, m);
    guarded_ddi(L, m, d_build_np, &c);
    return 0;
}

static void d_probe(void *c_)
{
    dctx *c = c_;
    MmProbeAndLockPages(c->p[0], (KPROCESSOR_MODE)c->a[0], (LOCK_OPERATION)c->a[1]);
}

static int n_MmProbeAndLockPages(lua_State *L)
{
    ptl_machine *m = DDI_MACHINE(L, "MmProbeAndLockPages");
    dctx c = {0};
    c.p[0] = check_mdl(L, 1, m);
    c.a[0] = (uint64_t)luaL_optinteger(L, 2, KernelMode);
    c.a[1] = (uint64_t)luaL_optinteger(L, 3, IoReadAccess);
    guarded_ddi(L, m, d_probe, &c);
    return 0;
}

static void d_unlock(void *c_)
{
    dctx *c = c_;
    MmUnlockPages(c->p[0]);
}

static int n_MmUnlockPages(lua_State *L)
{
    ptl_machine *m = DDI_MACHINE(L, "MmUnlockPages");
    dctx c = {0};
    c.p[0] = check_mdl(L, 1, m);
    guarded_ddi(L, m, d_unlock, &c);
    return 0;
}

static void d_map_locked(void *c_)
{
    dctx *c = c_;
    c->pret = MmMapLockedPages(c->p[0], (KPROCESSOR_MODE)c->a[0]);
}

static int n_MmMapLockedPages(lua_State *L)
{
    ptl_machine *m = DDI_MACHINE(L, "MmMapLockedPages");
    dctx c = {0};
    c.p[0] = check_mdl(L, 1, m);
    c.a[0] = (uint64_t)luaL_optinteger(L, 2, KernelMode);
    guarded_ddi(L, m, d_map_locked, &c);
    push_va(L, c.pret);
    return 1;
}

static void d_map_locked_cache(void *c_)
{
    dctx *c = c_;
    c->pret = MmMapLockedPagesSpecifyCache(c->p[0], (KPROCESSOR_MODE)c->a[0],
                                           (MEMORY_CACHING_TYPE)c->a[1], c->p[1], (ULONG)c->a[2],
                                           (ULONG)c->a[3]);
}

static int n_MmMapLockedPagesSpecifyCache(lua_State *L)
{
    ptl_machine *m = DDI_MACHINE(L, "MmMapLockedPagesSpecifyCache");
    dctx c = {0};
    c.p[0] = check_mdl(L, 1, m);
    c.a[0] = (uint64_t)luaL_optinteger(L, 2, KernelMode);
    c.a[1] = (uint64_t)cache_arg(L, 3, MmCached);
    c.p[1] = lua_isnoneornil(L, 4) ? NULL : check_va(L, 4);
    c.a[2] = (uint64_t)opt_flag(L, 5, 0);
    c.a[3] = opt_u32(L, 6, NormalPagePriority);
    guarded_ddi(L, m, d_map_locked_cache, &c);
    push_va(L, c.pret);
    return 1;
}

static void d_sysaddr_safe(void *c_)
{
    dctx *c = c_;
    PMDL mdl = c->p[0];
    c->pret = MmGetSystemAddressForMdlSafe(mdl, (ULONG)c->a[0]);
}

static int n_MmGetSystemAddressForMdlSafe(lua_State *L)
{
    ptl_machine *m = DDI_MACHINE(L, "MmGetSystemAddressForMdlSafe");
    dctx c = {0};
    c.p[0] = check_mdl(L, 1, m);
    c.a[0] = opt_u32(L, 2, NormalPagePriority);
    guarded_ddi(L, m, d_sysaddr_safe, &c);
    push_va(L, c.pret);
    return 1;
}

static void d_sysaddr(void *c_)
{
    dctx *c = c_;
    PMDL mdl = c->p[0];
    c->pret = MmGetSystemAddressForMdl(mdl);
}

static int n_MmGetSystemAddressForMdl(lua_State *L)
{
    ptl_machine *m = DDI_MACHINE(L, "MmGetSystemAddressForMdl");
    dctx c = {0};
    c.p[0] = check_mdl(L, 1, m);
    guarded_ddi(L, m, d_sysaddr, &c);
    push_va(L, c.pret);
    return 1;
}

static void d_unmap_locked(void *c_)
{
    dctx *c = c_;
    MmUnmapLockedPages(c->p[0], c->p[1]);
}

static int n_MmUnmapLockedPages(lua_State *L)
{
    ptl_machine *m = DDI_MACHINE(L, "MmUnmapLockedPages");
    dctx c = {0};
    c.p[0] = check_va(L, 1);
    c.p[1] = check_mdl(L, 2, m);
    guarded_ddi(L, m, d_unmap_locked, &c);
    return 0;
}

static int mdl_index(lua_State *L)
{
    handle_ud *u = luaL_checkudata(L, 1, MT_MDL);
    const char *k = luaL_checkstring(L, 2);
    if (handle_dead(u) || !u->h) {
        lua_pushnil(L);
        return 1;
    }
    PMDL mdl = u->h;
    if (strcmp(k, "ByteCount") == 0)
        lua_pushinteger(L, mdl->ByteCount);
    else if (strcmp(k, "ByteOffset") == 0)
        lua_pushinteger(L, mdl->ByteOffset);
    else if (strcmp(k, "MdlFlags") == 0)
        lua_pushinteger(L, (uint16_t)mdl->MdlFlags);
    else if (strcmp(k, "Size") == 0)
        lua_pushinteger(L, (uint16_t)mdl->Size);
    else if (strcmp(k, "StartVa") == 0)
        push_va(L, mdl->StartVa);
    else if (strcmp(k, "MappedSystemVa") == 0)
        push_va(L, mdl->MappedSystemVa);
    else
        lua_pushnil(L);
    return 1;
}

static int n_MmGetMdlByteOffset(lua_State *L)
{
    handle_ud *u = check_handle(L, 1, MT_MDL, NULL, "the MDL");
    lua_pushinteger(L, MmGetMdlByteOffset((PMDL)u->h));
    return 1;
}

static int n_MmGetMdlByteCount(lua_State *L)
{
    handle_ud *u = check_handle(L, 1, MT_MDL, NULL, "the MDL");
    lua_pushinteger(L, MmGetMdlByteCount((PMDL)u->h));
    return 1;
}

static int n_MmGetMdlVirtualAddress(lua_State *L)
{
    handle_ud *u = check_handle(L, 1, MT_MDL, NULL, "the MDL");
    push_va(L, MmGetMdlVirtualAddress((PMDL)u->h));
    return 1;
}

static int n_PAGE_ALIGN(lua_State *L)
{
    lua_pushinteger(L, check_u32(L, 1) & ~(uint32_t)(PAGE_SIZE - 1));
    return 1;
}

/* HAL */

static void d_translate(void *c_)
{
    dctx *c = c_;
    PHYSICAL_ADDRESS bus, out;
    ULONG space = (ULONG)c->a[3];
    bus.QuadPart = (LONGLONG)c->a[2];
    out.QuadPart = 0;
    c->ret = HalTranslateBusAddress((INTERFACE_TYPE)c->a[0], (ULONG)c->a[1], bus, &space, &out);
    c->ret2 = (uint64_t)out.QuadPart;
    c->ret3 = space;
}

static int n_HalTranslateBusAddress(lua_State *L)
{
    ptl_machine *m = DDI_MACHINE(L, "HalTranslateBusAddress");
    dctx c = {0};
    c.a[0] = (uint64_t)check_bus(L, 1);
    c.a[1] = check_u32(L, 2);
    c.a[2] = check_u64(L, 3);
    c.a[3] = opt_u32(L, 4, 0);
    guarded_ddi(L, m, d_translate, &c);
    lua_pushboolean(L, c.ret != 0);
    lua_pushinteger(L, (lua_Integer)c.ret2);
    lua_pushinteger(L, (lua_Integer)c.ret3);
    return 3;
}

/* sections and handles */

typedef struct section_ctx {
    wchar_t name[128];
    uint32_t access, attributes;
    HANDLE h;
    int32_t st;
} section_ctx;

static void d_open_section(void *c_)
{
    section_ctx *c = c_;
    UNICODE_STRING name;
    OBJECT_ATTRIBUTES oa;
    RtlInitUnicodeString(&name, c->name);
    InitializeObjectAttributes(&oa, &name, c->attributes, NULL, NULL);
    c->st = ZwOpenSection(&c->h, c->access, &oa);
}

static int n_ZwOpenSection(lua_State *L)
{
    ptl_machine *m = DDI_MACHINE(L, "ZwOpenSection");
    section_ctx c;
    memset(&c, 0, sizeof c);
    size_t len;
    const char *name = luaL_optlstring(L, 1, "\\Device\\PhysicalMemory", &len);
    luaL_argcheck(L, len < 127, 1, "name too long");
    for (size_t i = 0; i <= len; i++)
        c.name[i] = (wchar_t)(unsigned char)name[i];
    c.access = opt_u32(L, 2, SECTION_ALL_ACCESS);
    c.attributes = opt_u32(L, 3, OBJ_CASE_INSENSITIVE);
    guarded_ddi(L, m, d_open_section, &c);
    lua_pushinteger(L, (uint32_t)c.st);
    if (NT_SUCCESS(c.st))
        lua_pushinteger(L, (lua_Integer)(uintptr_t)c.h);
    else
        lua_pushnil(L);
    return 2;
}

static void d_map_view(void *c_)
{
    dctx *c = c_;
    LARGE_INTEGER off;
    off.QuadPart = (LONGLONG)c->a[0];
    SIZE_T size = (SIZE_T)c->a[1];
    PVOID base = c->p[1];
    c->st = ZwMapViewOfSection(c->p[0], NtCurrentProcess(), &base, 0, size, &off, &size,
                               (SECTION_INHERIT)c->a[3], 0, (ULONG)c->a[2]);
    c->pret = base;
    c->ret = (uint64_t)off.QuadPart;
    c->ret2 = size;
}

static int n_ZwMapViewOfSection(lua_State *L)
{
    ptl_machine *m = DDI_MACHINE(L, "ZwMapViewOfSection");
    dctx c = {0};
    c.p[0] = (HANDLE)(uintptr_t)check_u32(L, 1);
    c.a[0] = check_u64(L, 2);
    c.a[1] = check_u32(L, 3);
    c.a[2] = opt_u32(L, 4, PAGE_READWRITE | PAGE_NOCACHE);
    c.p[1] = lua_isnoneornil(L, 5) ? NULL : check_va(L, 5);
    c.a[3] = opt_u32(L, 6, ViewShare);
    guarded_ddi(L, m, d_map_view, &c);
    lua_pushinteger(L, (uint32_t)c.st);
    if (!NT_SUCCESS(c.st)) {
        lua_pushnil(L);
        return 2;
    }
    push_va(L, c.pret);
    lua_pushinteger(L, (lua_Integer)c.ret);
    lua_pushinteger(L, (lua_Integer)c.ret2);
    return 4;
}

static void d_unmap_view(void *c_)
{
    dctx *c = c_;
    c->st = ZwUnmapViewOfSection(NtCurrentProcess(), c->p[0]);
}

static int n_ZwUnmapViewOfSection(lua_State *L)
{
    ptl_machine *m = DDI_MACHINE(L, "ZwUnmapViewOfSection");
    dctx c = {0};
    c.p[0] = check_va(L, 1);
    guarded_ddi(L, m, d_unmap_view, &c);
    lua_pushinteger(L, (uint32_t)c.st);
    return 1;
}

static void d_close(void *c_)
{
    dctx *c = c_;
    c->st = ZwClose(c->p[0]);
}

static int n_ZwClose(lua_State *L)
{
    ptl_machine *m = DDI_MACHINE(L, "ZwClose");
    dctx c = {0};
    c.p[0] = (HANDLE)(uintptr_t)check_u32(L, 1);
    guarded_ddi(L, m, d_close, &c);
    lua_pushinteger(L, (uint32_t)c.st);
    return 1;
}

static void d_obref(void *c_)
{
    dctx *c = c_;
    c->st = ObReferenceObjectByHandle(c->p[0], (ACCESS_MASK)c->a[0], NULL, (KPROCESSOR_MODE)c->a[1],
                                      &c->pret, NULL);
}

static int n_ObReferenceObjectByHandle(lua_State *L)
{
    ptl_machine *m = DDI_MACHINE(L, "ObReferenceObjectByHandle");
    dctx c = {0};
    c.p[0] = (HANDLE)(uintptr_t)check_u32(L, 1);
    c.a[0] = opt_u32(L, 2, SECTION_ALL_ACCESS);
    c.a[1] = (uint64_t)luaL_optinteger(L, 3, KernelMode);
    guarded_ddi(L, m, d_obref, &c);
    lua_pushinteger(L, (uint32_t)c.st);
    if (NT_SUCCESS(c.st))
        lua_pushlightuserdata(L, c.pret);
    else
        lua_pushnil(L);
    return 2;
}

static void d_obderef(void *c_)
{
    dctx *c = c_;
    ObDereferenceObject(c->p[0]);
}

static int n_ObDereferenceObject(lua_State *L)
{
    ptl_machine *m = DDI_MACHINE(L, "ObDereferenceObject");
    luaL_checktype(L, 1, LUA_TLIGHTUSERDATA);
    dctx c = {0};
    c.p[0] = lua_touserdata(L, 1); /* compared by ptelab, never dereferenced */
    guarded_ddi(L, m, d_obderef, &c);
    return 0;
}

static void d_zwalloc(void *c_)
{
    dctx *c = c_;
    PVOID base = c->p[0];
    SIZE_T size = (SIZE_T)c->a[0];
    c->st = ZwAllocateVirtualMemory(NtCurrentProcess(), &base, 0, &size, (ULONG)c->a[1],
                                    (ULONG)c->a[2]);
    c->pret = base;
    c->ret = size;
}

static int n_ZwAllocateVirtualMemory(lua_State *L)
{
    ptl_machine *m = DDI_MACHINE(L, "ZwAllocateVirtualMemory");
    dctx c = {0};
    c.a[0] = check_u32(L, 1);
    c.a[1] = opt_u32(L, 2, MEM_COMMIT | MEM_RESERVE);
    c.a[2] = opt_u32(L, 3, PAGE_READWRITE);
    c.p[0] = lua_isnoneornil(L, 4) ? NULL : check_va(L, 4);
    guarded_ddi(L, m, d_zwalloc, &c);
    lua_pushinteger(L, (uint32_t)c.st);
    push_va(L, c.pret);
    lua_pushinteger(L, (lua_Integer)c.ret);
    return 3;
}

static void d_zwfree(void *c_)
{
    dctx *c = c_;
    PVOID base = c->p[0];
    SIZE_T size = (SIZE_T)c->a[0];
    c->st = ZwFreeVirtualMemory(NtCurrentProcess(), &base, &size, (ULONG)c->a[1]);
}

static int n_ZwFreeVirtualMemory(lua_State *L)
{
    ptl_machine *m = DDI_MACHINE(L, "ZwFreeVirtualMemory");
    dctx c = {0};
    c.p[0] = check_va(L, 1);
    c.a[0] = opt_u32(L, 2, 0);
    c.a[1] = opt_u32(L, 3, MEM_RELEASE);
    guarded_ddi(L, m, d_zwfree, &c);
    lua_pushinteger(L, (uint32_t)c.st);
    return 1;
}

/* registers and memory */

static void d_reg(void *c_)
{
    dctx *c = c_;
    volatile void *va = c->p[0];
    switch (c->a[1]) {
    case 1:
        if (c->a[2])
            WRITE_REGISTER_UCHAR((volatile UCHAR *)va, (UCHAR)c->a[0]);
        else
            c->ret = READ_REGISTER_UCHAR((volatile UCHAR *)va);
        break;
    case 2:
        if (c->a[2])
            WRITE_REGISTER_USHORT((volatile USHORT *)va, (USHORT)c->a[0]);
        else
            c->ret = READ_REGISTER_USHORT((volatile USHORT *)va);
        break;
    default:
        if (c->a[2])
            WRITE_REGISTER_ULONG((volatile ULONG *)va, (ULONG)c->a[0]);
        else
            c->ret = READ_REGISTER_ULONG((volatile ULONG *)va);
        break;
    }
}

static int reg_access(lua_State *L, const char *name, int width, int write)
{
    ptl_machine *m = DDI_MACHINE(L, name);
    dctx c = {0};
    c.p[0] = check_va(L, 1);
    c.a[0] = write ? check_u32(L, 2) : 0;
    c.a[1] = (uint64_t)width;
    c.a[2] = (uint64_t)write;
    guarded_ddi(L, m, d_reg, &c);
    if (write)
        return 0;
    lua_pushinteger(L, (lua_Integer)c.ret);
    return 1;
}

static int n_READ_REGISTER_ULONG(lua_State *L)
{
    return reg_access(L, "READ_REGISTER_ULONG", 4, 0);
}
static int n_READ_REGISTER_USHORT(lua_State *L)
{
    return reg_access(L, "READ_REGISTER_USHORT", 2, 0);
}
static int n_READ_REGISTER_UCHAR(lua_State *L)
{
    return reg_access(L, "READ_REGISTER_UCHAR", 1, 0);
}
static int n_WRITE_REGISTER_ULONG(lua_State *L)
{
    return reg_access(L, "WRITE_REGISTER_ULONG", 4, 1);
}
static int n_WRITE_REGISTER_USHORT(lua_State *L)
{
    return reg_access(L, "WRITE_REGISTER_USHORT", 2, 1);
}
static int n_WRITE_REGISTER_UCHAR(lua_State *L)
{
    return reg_access(L, "WRITE_REGISTER_UCHAR", 1, 1);
}

/* processes, IRQL, bug checks, exceptions */

static void d_bugcheck(void *c_)
{
    dctx *c = c_;
    KeBugCheckEx((ULONG)c->a[0], (ULONG_PTR)c->a[1], (ULONG_PTR)c->a[2], (ULONG_PTR)c->a[3],
                 (ULONG_PTR)c->a[4]);
}

static int n_KeBugCheckEx(lua_State *L)
{
    ptl_machine *m = DDI_MACHINE(L, "KeBugCheckEx");
    dctx c = {0};
    c.a[0] = check_u32(L, 1);
    for (int i = 0; i < 4; i++)
        c.a[1 + i] = opt_u32(L, 2 + i, 0);
    guarded_ddi(L, m, d_bugcheck, &c);
    return 0; /* not reached: the STOP is a Lua error */
}

static void d_raise(void *c_)
{
    dctx *c = c_;
    ExRaiseStatus((NTSTATUS)(uint32_t)c->a[0]);
}

static int n_ExRaiseStatus(lua_State *L)
{
    ptl_machine *m = DDI_MACHINE(L, "ExRaiseStatus");
    dctx c = {0};
    c.a[0] = check_u32(L, 1);
    guarded_ddi(L, m, d_raise, &c);
    return 0;
}

static void d_attach(void *c_)
{
    dctx *c = c_;
    KeStackAttachProcess(c->p[0], c->p[1]);
}

static int n_KeStackAttachProcess(lua_State *L)
{
    ptl_machine *m = DDI_MACHINE(L, "KeStackAttachProcess");
    ptl_process *p = check_handle(L, 1, MT_PROCESS, m, "the process")->h;
    apc_ud *a = lua_newuserdatauv(L, sizeof *a, 0);
    memset(a, 0, sizeof *a);
    a->m = m;
    luaL_setmetatable(L, MT_APC);
    lua_pushvalue(L, -1);
    a->ref = luaL_ref(L, LUA_REGISTRYINDEX); /* ptelab may hold &a->state until detach */
    dctx c = {0};
    c.p[0] = p;
    c.p[1] = &a->state;
    a->attached = 1;
    guarded_ddi(L, m, d_attach, &c);
    return 1;
}

static void d_detach(void *c_)
{
    dctx *c = c_;
    KeUnstackDetachProcess(c->p[0]);
}

static int n_KeUnstackDetachProcess(lua_State *L)
{
    ptl_machine *m = DDI_MACHINE(L, "KeUnstackDetachProcess");
    apc_ud *a = luaL_checkudata(L, 1, MT_APC);
    if (a->m != m)
        return luaL_error(L, "the APC state belongs to another machine");
    dctx c = {0};
    c.p[0] = &a->state;
    if (a->attached) {
        a->attached = 0;
        luaL_unref(L, LUA_REGISTRYINDEX, a->ref);
    }
    guarded_ddi(L, m, d_detach, &c);
    return 0;
}

static void d_irql(void *c_)
{
    dctx *c = c_;
    KIRQL old = 0;
    switch (c->a[0]) {
    case 0:
        c->ret = KeGetCurrentIrql();
        break;
    case 1:
        KeRaiseIrql((KIRQL)c->a[1], &old);
        c->ret = old;
        break;
    default:
        KeLowerIrql((KIRQL)c->a[1]);
        break;
    }
}

static int irql_op(lua_State *L, const char *name, int op)
{
    ptl_machine *m = DDI_MACHINE(L, name);
    dctx c = {0};
    c.a[0] = (uint64_t)op;
    c.a[1] = op ? check_u32(L, 1) : 0;
    guarded_ddi(L, m, d_irql, &c);
    if (op == 2)
        return 0;
    lua_pushinteger(L, (lua_Integer)c.ret);
    return 1;
}

static int n_KeGetCurrentIrql(lua_State *L)
{
    return irql_op(L, "KeGetCurrentIrql", 0);
}
static int n_KeRaiseIrql(lua_State *L)
{
    return irql_op(L, "KeRaiseIrql", 1);
}
static int n_KeLowerIrql(lua_State *L)
{
    return irql_op(L, "KeLowerIrql", 2);
}

static int n_NT_SUCCESS(lua_State *L)
{
    lua_pushboolean(L, (int32_t)check_u32(L, 1) >= 0);
    return 1;
}

/* nt.try(fn, ...): PTL_TRY/PTL_EXCEPT(EXCEPTION_EXECUTE_HANDLER) for scripts. Returns
 * true, 0, fn's results; or false, the exception code. STOPs and Lua errors go on. */
static int n_try(lua_State *L)
{
    runner *r = in_call(L, "nt.try");
    luaL_checktype(L, 1, LUA_TFUNCTION);
    int n = lua_gettop(L);
    lua_pushcfunction(L, msgh);
    lua_insert(L, 1);
    r->try_depth++;
    int st = lua_pcall(L, n - 1, LUA_MULTRET, 1);
    r->try_depth--;
    if (st != LUA_OK) {
        exception_ud *e = luaL_testudata(L, -1, MT_EXCEPTION);
        if (!e)
            return lua_error(L);
        lua_pushboolean(L, 0);
        lua_pushinteger(L, e->status);
        return 2;
    }
    lua_pushboolean(L, 1);
    lua_replace(L, 1);
    lua_pushinteger(L, 0);
    lua_insert(L, 2);
    return lua_gettop(L);
}

static const luaL_Reg nt_functions[] = {
    {"MmMapIoSpace", n_MmMapIoSpace},
    {"MmUnmapIoSpace", n_MmUnmapIoSpace},
    {"MmAllocateNonCachedMemory", n_MmAllocateNonCachedMemory},
    {"MmFreeNonCachedMemory", n_MmFreeNonCachedMemory},
    {"MmGetPhysicalAddress", n_MmGetPhysicalAddress},
    {"MmIsAddressValid", n_MmIsAddressValid},
    {"IoAllocateMdl", n_IoAllocateMdl},
    {"IoFreeMdl", n_IoFreeMdl},
    {"MmBuildMdlForNonPagedPool", n_MmBuildMdlForNonPagedPool},
    {"MmProbeAndLockPages", n_MmProbeAndLockPages},
    {"MmUnlockPages", n_MmUnlockPages},
    {"MmMapLockedPages", n_MmMapLockedPages},
    {"MmMapLockedPagesSpecifyCache", n_MmMapLockedPagesSpecifyCache},
    {"MmGetSystemAddressForMdlSafe", n_MmGetSystemAddressForMdlSafe},
    {"MmGetSystemAddressForMdl", n_MmGetSystemAddressForMdl},
    {"MmUnmapLockedPages", n_MmUnmapLockedPages},
    {"MmGetMdlByteOffset", n_MmGetMdlByteOffset},
    {"MmGetMdlByteCount", n_MmGetMdlByteCount},
    {"MmGetMdlVirtualAddress", n_MmGetMdlVirtualAddress},
    {"PAGE_ALIGN", n_PAGE_ALIGN},
    {"HalTranslateBusAddress", n_HalTranslateBusAddress},
    {"ZwOpenSection", n_ZwOpenSection},
    {"ZwMapViewOfSection", n_ZwMapViewOfSection},
    {"ZwUnmapViewOfSection", n_ZwUnmapViewOfSection},
    {"ZwClose", n_ZwClose},
    {"ObReferenceObjectByHandle", n_ObReferenceObjectByHandle},
    {"ObDereferenceObject", n_ObDereferenceObject},
    {"ZwAllocateVirtualMemory", n_ZwAllocateVirtualMemory},
    {"ZwFreeVirtualMemory", n_ZwFreeVirtualMemory},
    {"READ_REGISTER_ULONG", n_READ_REGISTER_ULONG},
    {"READ_REGISTER_USHORT", n_READ_REGISTER_USHORT},
    {"READ_REGISTER_UCHAR", n_READ_REGISTER_UCHAR},
    {"WRITE_REGISTER_ULONG", n_WRITE_REGISTER_ULONG},
    {"WRITE_REGISTER_USHORT", n_WRITE_REGISTER_USHORT},
    {"WRITE_REGISTER_UCHAR", n_WRITE_REGISTER_UCHAR},
    {"KeBugCheckEx", n_KeBugCheckEx},
    {"ExRaiseStatus", n_ExRaiseStatus},
    {"KeStackAttachProcess", n_KeStackAttachProcess},
    {"KeUnstackDetachProcess", n_KeUnstackDetachProcess},
    {"KeGetCurrentIrql", n_KeGetCurrentIrql},
    {"KeRaiseIrql", n_KeRaiseIrql},
    {"KeLowerIrql", n_KeLowerIrql},
    {"NT_SUCCESS", n_NT_SUCCESS},
    {NULL, NULL}};

static const struct {
    const char *name;
    lua_Integer value;
} nt_constants[] = {
#define C_(x)                \
    {                        \
#x, (lua_Integer)(x) \
    }
#define S_(x)                          \
    {                                  \
#x, (lua_Integer)(uint32_t)(x) \
    }
    C_(MmNonCached),
    C_(MmCached),
    C_(MmWriteCombined),
    C_(MmHardwareCoherentCached),
    C_(MmNonCachedUnordered),
    C_(MmUSWCCached),
    C_(MmFrameBufferCached),
    C_(KernelMode),
    C_(UserMode),
    C_(IoReadAccess),
    C_(IoWriteAccess),
    C_(IoModifyAccess),
    C_(PAGE_SIZE),
    C_(PAGE_SHIFT),
    C_(PAGE_NOACCESS),
    C_(PAGE_READONLY),
    C_(PAGE_READWRITE),
    C_(PAGE_WRITECOPY),
    C_(PAGE_NOCACHE),
    C_(PAGE_WRITECOMBINE),
    C_(MEM_COMMIT),
    C_(MEM_RESERVE),
    C_(MEM_RELEASE),
    C_(MEM_DECOMMIT),
    C_(LowPagePriority),
    C_(NormalPagePriority),
    C_(HighPagePriority),
    C_(ViewShare),
    C_(ViewUnmap),
    C_(SECTION_ALL_ACCESS),
    C_(SECTION_MAP_READ),
    C_(SECTION_MAP_WRITE),
    C_(OBJ_CASE_INSENSITIVE),
    C_(OBJ_KERNEL_HANDLE),
    C_(PASSIVE_LEVEL),
    C_(APC_LEVEL),
    C_(DISPATCH_LEVEL),
    C_(HIGH_LEVEL),
    C_(Internal),
    C_(Isa),
    C_(Eisa),
    C_(PCIBus),
    C_(MDL_MAPPED_TO_SYSTEM_VA),
    C_(MDL_PAGES_LOCKED),
    C_(MDL_SOURCE_IS_NONPAGED_POOL),
    C_(MDL_IO_SPACE),
    C_(MDL_MAPPING_CAN_FAIL),
    S_(STATUS_SUCCESS),
    S_(STATUS_UNSUCCESSFUL),
    S_(STATUS_ACCESS_VIOLATION),
    S_(STATUS_INVALID_HANDLE),
    S_(STATUS_INVALID_PARAMETER),
    S_(STATUS_NO_MEMORY),
    S_(STATUS_CONFLICTING_ADDRESSES),
    S_(STATUS_NOT_MAPPED_VIEW),
    S_(STATUS_ACCESS_DENIED),
    S_(STATUS_INSUFFICIENT_RESOURCES),
    S_(STATUS_INVALID_ADDRESS),
    S_(STATUS_INVALID_VIEW_SIZE),
    S_(STATUS_SECTION_PROTECTION),
    S_(STATUS_INVALID_PAGE_PROTECTION),
    S_(STATUS_PROCESS_IS_TERMINATING),
    S_(STATUS_OBJECT_NAME_NOT_FOUND),
#undef C_
#undef S_
};

/* ---- the ptl table ------------------------------------------------------------------------ */

static int l_hex(lua_State *L)
{
    lua_Integer v = luaL_checkinteger(L, 1);
    char buf[32];
    snprintf(buf, sizeof buf, "0x%08llX", (unsigned long long)(uint64_t)v);
    lua_pushstring(L, buf);
    return 1;
}

static int l_bugcheck_name(lua_State *L)
{
    lua_pushstring(L, ptl_bugcheck_name(check_u32(L, 1)));
    return 1;
}

static void new_metatable(lua_State *L, const char *name, const luaL_Reg *methods,
                          lua_CFunction index, lua_CFunction tostring, lua_CFunction gc)
{
    luaL_newmetatable(L, name);
    if (methods) {
        lua_newtable(L);
        luaL_setfuncs(L, methods, 0);
        lua_setfield(L, -2, "__index");
    } else if (index) {
        lua_pushcfunction(L, index);
        lua_setfield(L, -2, "__index");
    }
    if (tostring) {
        lua_pushcfunction(L, tostring);
        lua_setfield(L, -2, "__tostring");
    }
    if (gc) {
        lua_pushcfunction(L, gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pushstring(L, name);
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
}

static void open_ptl(lua_State *L, runner *r)
{
    lua_pushlightuserdata(L, r);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &RUNNER_KEY);
    lua_newtable(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &r->machines);

    new_metatable(L, MT_MACHINE, machine_methods, NULL, m_tostring, machine_gc);
    new_metatable(L, MT_PROCESS, NULL, process_index, NULL, NULL);
    new_metatable(L, MT_DRIVER, NULL, driver_index, NULL, NULL);
    new_metatable(L, MT_THREAD, NULL, NULL, NULL, NULL);
    new_metatable(L, MT_MDL, NULL, mdl_index, NULL, NULL);
    new_metatable(L, MT_APC, NULL, NULL, NULL, NULL);
    new_metatable(L, MT_STOP, NULL, NULL, stop_tostring, NULL);
    new_metatable(L, MT_EXCEPTION, NULL, exception_index, exception_tostring, NULL);

    /* ptl */
    lua_newtable(L);
    lua_pushcfunction(L, l_boot);
    lua_setfield(L, -2, "boot");
    lua_pushcfunction(L, l_hex);
    lua_setfield(L, -2, "hex");
    lua_pushcfunction(L, l_bugcheck_name);
    lua_setfield(L, -2, "bugcheck_name");
    lua_pushstring(L, PTELAB_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushstring(L, r->path);
    lua_setfield(L, -2, "script");
    lua_setglobal(L, "ptl");

    /* nt, and the same names as globals */
    lua_newtable(L);
    luaL_setfuncs(L, nt_functions, 0);
    lua_pushcfunction(L, n_try);
    lua_setfield(L, -2, "try");
    for (size_t i = 0; i < sizeof nt_constants / sizeof nt_constants[0]; i++) {
        lua_pushinteger(L, nt_constants[i].value);
        lua_setfield(L, -2, nt_constants[i].name);
    }
    /* every DDI and constant also as a global, as C driver code names them */
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        if (lua_type(L, -2) == LUA_TSTRING && strcmp(lua_tostring(L, -2), "try") != 0)
            lua_setglobal(L, lua_tostring(L, -2));
        else
            lua_pop(L, 1);
    }
    lua_setglobal(L, "nt");
}

/* ---- the runner ------------------------------------------------------------------------ */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The script's first return value as text (see script.h). */
static char *render_result(lua_State *L, int idx)
{
    if (lua_isnoneornil(L, idx))
        return NULL;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    if (lua_type(L, idx) != LUA_TTABLE) {
        fprintf(f, "%s", luaL_tolstring(L, idx, NULL));
        lua_pop(L, 1);
    } else {
        size_t n = 0, cap = 16;
        char **lines = malloc(cap * sizeof *lines);
        lua_pushnil(L);
        while (lines && lua_next(L, idx)) { /* key value */
            lua_pushvalue(L, -2);
            const char *k = luaL_tolstring(L, -1, NULL); /* key value key kstr */
            if (lua_type(L, -3) == LUA_TTABLE)
                lua_pushliteral(L, "(table)");
            else
                luaL_tolstring(L, -3, NULL);
            const char *v = lua_tostring(L, -1); /* key value key kstr vstr */
            size_t kl = strlen(k), vl = strlen(v);
            if (n == cap) {
                char **bigger = realloc(lines, (cap *= 2) * sizeof *lines);
                if (!bigger) {
                    lua_pop(L, 5);
                    break;
                }
                lines = bigger;
            }
            char *line = malloc(kl + vl + 2);
            if (line) {
                memcpy(line, k, kl);
                line[kl] = '=';
                memcpy(line + kl + 1, v, vl + 1);
                lines[n++] = line;
            }
            lua_pop(L, 4);
        }
        if (lines) {
            qsort(lines, n, sizeof *lines, cmp_str);
            for (size_t i = 0; i < n; i++) {
                fprintf(f, "%s\n", lines[i]);
                free(lines[i]);
            }
            free(lines);
        }
    }
    fclose(f);
    return buf;
}

/* ---- the sandbox: a bounded heap and a bounded number of instructions ---------------- */

typedef struct sandbox_heap {
    size_t used, limit;
} sandbox_heap;

static void *sandbox_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    sandbox_heap *h = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        h->used -= old;
        return NULL;
    }
    if (h->limit && nsize > old && h->used + (nsize - old) > h->limit)
        return NULL; /* Lua raises "not enough memory" */
    void *q = realloc(ptr, nsize);
    if (q)
        h->used = h->used - old + nsize;
    return q;
}

static void instruction_limit(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    luaL_error(L, "the sandbox's instruction limit was reached");
}

static void open_sandbox_libs(lua_State *L)
{
    static const luaL_Reg libs[] = {
        {LUA_GNAME, luaopen_base},       {LUA_STRLIBNAME, luaopen_string},
        {LUA_TABLIBNAME, luaopen_table}, {LUA_MATHLIBNAME, luaopen_math},
        {LUA_UTF8LIBNAME, luaopen_utf8}, {NULL, NULL},
    };
    for (const luaL_Reg *lib = libs; lib->func; lib++) {
        luaL_requiref(L, lib->name, lib->func, 1);
        lua_pop(L, 1);
    }
    static const char *const unsafe[] = {"dofile",  "loadfile",       "load",
                                         "require", "collectgarbage", NULL};
    for (int i = 0; unsafe[i]; i++) {
        lua_pushnil(L);
        lua_setglobal(L, unsafe[i]);
    }
}

void ptl_script_opts_init(ptl_script_opts *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->profile = -1;
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static int script_run(const char *path, const char *text, size_t len,
                      const ptl_script_opts *opts_in)
{
    runner *r = calloc(1, sizeof *r);
    if (!r) {
        fprintf(stderr, "ptelab: out of memory\n");
        return PTL_SCRIPT_LUA_ERROR;
    }
    if (opts_in)
        r->opts = *opts_in;
    else
        ptl_script_opts_init(&r->opts);
    r->path = path;
    if (r->opts.result)
        *r->opts.result = NULL;
    if (r->opts.stop_code)
        *r->opts.stop_code = 0;
    if (r->opts.error)
        *r->opts.error = NULL;
    if (r->opts.reg_path) {
        ptl_config probe;
        ptl_config_init(&probe);
        if (ptl_registry_import(&probe, r->opts.reg_path) != 0) {
            fprintf(stderr, "ptelab: %s\n", ptl_error());
            free(r);
            return PTL_SCRIPT_NO_INPUT;
        }
    }
    sandbox_heap heap = {0, r->opts.max_memory};
    lua_State *L = r->opts.sandbox ? lua_newstate(sandbox_alloc, &heap) : luaL_newstate();
    if (!L) {
        fprintf(stderr, "ptelab: cannot create the Lua state\n");
        free(r);
        return PTL_SCRIPT_LUA_ERROR;
    }
    if (r->opts.sandbox) {
        open_sandbox_libs(L);
        if (r->opts.max_instructions)
            lua_sethook(L, instruction_limit, LUA_MASKCOUNT,
                        (int)(r->opts.max_instructions > 0x7FFFFFFF ? 0x7FFFFFFF
                                                                    : r->opts.max_instructions));
    } else {
        luaL_openlibs(L);
    }
    open_ptl(L, r);

    int rc = PTL_SCRIPT_OK;
    lua_pushcfunction(L, msgh);
    int st;
    if (text) { /* chunk name "@path", as luaL_loadfilex gives a file's */
        char *chunk = ptl__xcalloc(1, strlen(path) + 2);
        chunk[0] = '@';
        memcpy(chunk + 1, path, strlen(path));
        st = luaL_loadbufferx(L, text, len, chunk, "t");
        free(chunk);
    } else {
        st = luaL_loadfilex(L, path, "t");
    }
    if (st == LUA_ERRFILE) {
        fprintf(stderr, "ptelab: %s\n", lua_tostring(L, -1));
        lua_close(L);
        free(r);
        return PTL_SCRIPT_NO_INPUT;
    }
    if (st == LUA_OK) {
        lua_pushstring(L, path);
        st = lua_pcall(L, 1, 1, 1);
    }
    if (st != LUA_OK) {
        if (luaL_testudata(L, -1, MT_STOP)) {
            /* a STOP value that reached the top (the script rethrew it): an ordinary end */
        } else {
            const char *msg = luaL_tolstring(L, -1, NULL);
            if (r->opts.error) /* the caller takes it */
                *r->opts.error = strdup(msg);
            else
                fprintf(stderr, "ptelab: %s\n", msg);
            rc = PTL_SCRIPT_LUA_ERROR;
        }
    } else if (r->opts.result) {
        *r->opts.result = render_result(L, lua_gettop(L));
    }

    /* the STOP, the report and the timeline, of the machine the scenario is about */
    for (int i = 0; i < r->nmachines && !r->stopped; i++)
        if (r->machines[i]->m)
            note_stop(r, r->machines[i]->m);
    ptl_machine *subject = r->stopped ? r->stopped : r->last;
    if (subject) {
        ptl_stop stop;
        if (ptl_stopped(subject, &stop)) {
            printf("\n");
            ptl_stop_print(&stop, stdout);
            if (subject->stop.detail[0])
                printf("(%s)\n", subject->stop.detail);
            fflush(stdout);
            if (r->opts.stop_code)
                *r->opts.stop_code = stop.code;
            if (rc == PTL_SCRIPT_OK)
                rc = PTL_SCRIPT_STOP;
        }
        if (r->opts.report_path &&
            ptl_report_write(subject, r->opts.report_path, base_name(path)) != 0) {
            fprintf(stderr, "ptelab: cannot write the report %s: %s\n", r->opts.report_path,
                    ptl_error());
            output_failed(r);
        }
        if (r->opts.csv_path) {
            FILE *f = fopen(r->opts.csv_path, "w");
            int bad = !f || ptl_perf_csv(subject, f) != 0;
            const char *why = !f ? strerror(errno) : bad ? ptl_error() : NULL;
            if (f && fclose(f) != 0 && !bad) { /* the data reach the file only now */
                bad = 1;
                why = strerror(errno);
            }
            if (bad) {
                fprintf(stderr, "ptelab: cannot write the timeline %s: %s\n", r->opts.csv_path,
                        why);
                output_failed(r);
            }
        }
    } else if (r->opts.report_path || r->opts.csv_path) {
        fprintf(stderr, "ptelab: the scenario booted no machine: no report or timeline to "
                        "write\n");
        output_failed(r);
    }
    lua_close(L); /* shuts every machine down */
    free(r);
    return rc;
}

int ptl_script_run(const char *path, const ptl_script_opts *opts)
{
    return script_run(path, NULL, 0, opts);
}

int ptl_script_run_text(const char *name, const char *text, size_t len, const ptl_script_opts *opts)
{
    return script_run(name, text, len, opts);
}
