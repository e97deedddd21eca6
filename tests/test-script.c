/* test-script.c - the Lua scenario runner (src/script.c): errors name the script and line;
 * a STOP and an exception raised deep inside nested Lua code inside m:call leave the Lua
 * state usable (the script goes on, the runner still runs kd and writes the report); the
 * four scenarios of scenarios/ finish with their expected outcome.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "script.h"

static char tmpdir[64];

/* Write `text` to <tmpdir>/<name> and return its path (static storage, one at a time). */
static const char *write_script(const char *name, const char *text)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

typedef struct outcome {
    int rc;
    uint32_t stop;
    char *result;
    char *error;
} outcome;

static outcome run(const char *path, const char *report, const char *csv)
{
    outcome o = {0, 0, NULL, NULL};
    ptl_script_opts opts;
    ptl_script_opts_init(&opts);
    opts.report_path = report;
    opts.csv_path = csv;
    opts.result = &o.result;
    opts.stop_code = &o.stop;
    opts.error = &o.error;
    o.rc = ptl_script_run(path, &opts);
    return o;
}

/* run, for a scenario that must not end in a Lua error: the error fails the test */
static outcome run_clean(const char *path, const char *report, const char *csv)
{
    outcome o = run(path, report, csv);
    if (o.error)
        fail_msg("%s: %s", path, o.error);
    return o;
}

static void outcome_free(outcome *o)
{
    free(o->result);
    free(o->error);
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static void assert_has(const char *haystack, const char *needle)
{
    if (!haystack || !strstr(haystack, needle))
        fail_msg("'%s' not found in:\n%s", needle, haystack ? haystack : "(null)");
}

static void test_lua_error_names_script_and_line(void **state)
{
    (void)state;
    const char *path = write_script("broken.lua", "local m = ptl.boot{}\n"
                                                  "local function f(t) return t.x end\n"
                                                  "m:call(nil, nil, function()\n"
                                                  "  f(nil)\n"
                                                  "end)\n");
    outcome o = run(path, NULL, NULL);
    assert_int_equal(o.rc, PTL_SCRIPT_LUA_ERROR);
    assert_has(o.error, "broken.lua:2:");
    assert_has(o.error, "stack traceback:");
    assert_has(o.error, "broken.lua:4:"); /* the traceback goes through the call body */
    outcome_free(&o);

    path = write_script("syntax.lua", "local m = ptl.boot{}\nlocal x = = 1\n");
    o = run(path, NULL, NULL);
    assert_int_equal(o.rc, PTL_SCRIPT_LUA_ERROR);
    assert_has(o.error, "syntax.lua:2:");
    outcome_free(&o);

    /* misuse of the API is a Lua error too, with the line */
    path =
        write_script("outside.lua", "local m = ptl.boot{}\n\nMmMapIoSpace(0xE0000000, 4096, 0)\n");
    o = run(path, NULL, NULL);
    assert_int_equal(o.rc, PTL_SCRIPT_LUA_ERROR);
    assert_has(o.error, "outside.lua:3:");
    assert_has(o.error, "outside driver code");
    outcome_free(&o);

    path = write_script("typo.lua", "local m = ptl.boot{rma = 64}\n");
    o = run(path, NULL, NULL);
    assert_int_equal(o.rc, PTL_SCRIPT_LUA_ERROR);
    assert_has(o.error, "unknown field 'rma'");
    outcome_free(&o);
}

static void test_missing_inputs(void **state)
{
    (void)state;
    char missing[128];
    snprintf(missing, sizeof missing, "%s/no-such-script.lua", tmpdir);
    outcome o = run(missing, NULL, NULL);
    assert_int_equal(o.rc, PTL_SCRIPT_NO_INPUT);
    outcome_free(&o);

    const char *reg = write_script("bad.reg", "this is not a registry file\n");
    char regpath[256];
    snprintf(regpath, sizeof regpath, "%s", reg);
    const char *path = write_script("fine.lua", "ptl.boot{}\n");
    ptl_script_opts opts;
    ptl_script_opts_init(&opts);
    opts.reg_path = regpath;
    assert_int_equal(ptl_script_run(path, &opts), PTL_SCRIPT_NO_INPUT);
}

/* A STOP raised three Lua calls deep inside m:call, through nt.try and a Lua pcall: the
 * call returns the code, the script goes on using the Lua state and the frozen machine,
 * and the runner writes the report and the timeline. */
/* Handles of a machine that was shut down name freed memory: using one is a Lua error,
 * reading its fields gives nil, never the host's freed bytes. */
static void test_handles_die_with_their_machine(void **state)
{
    (void)state;
    const char *path =
        write_script("shutdown.lua",
                     "local m1 = ptl.boot{}\n"
                     "local m2 = ptl.boot{}\n"
                     "local p = m1:process('a.exe')\n"
                     "local d = m1:driver('a.sys', 8192)\n"
                     "local mdl\n"
                     "m1:call(p, d, function()\n"
                     "  local st, base = ZwAllocateVirtualMemory(8192)\n"
                     "  mdl = IoAllocateMdl(base, 8192)\n"
                     "end)\n"
                     "assert(mdl.ByteCount == 8192 and p.name == 'a.exe' and d.name == 'a.sys')\n"
                     "m1:shutdown()\n"
                     "local junk = {} for i = 1, 1000 do junk[i] = string.rep('x', 60) end\n"
                     "assert(mdl.ByteCount == nil and p.name == nil and p.id == nil)\n"
                     "assert(d.name == nil and d.base == nil and d.ptes == nil)\n"
                     "local ok, err = pcall(nt.MmGetMdlByteCount, mdl)\n"
                     "assert(not ok and err:find('no longer valid'), err)\n"
                     "return {ok = true}\n");
    outcome o = run_clean(path, NULL, NULL);
    assert_int_equal(o.rc, 0);
    assert_has(o.result, "ok=true\n");
    outcome_free(&o);
}

static void test_stop_inside_call_keeps_state_usable(void **state)
{
    (void)state;
    const char *path = write_script(
        "stop.lua",
        "local m = ptl.boot{}\n"
        "m:adapter('PCIBus', 0, 0xE0000000, 1 << 20)\n"
        "local p = m:process('app.exe')\n"
        "local d = m:driver('crash.sys', 8192)\n"
        "local function level3() KeBugCheckEx(0xE2, 1, 2, 3, 4) end\n"
        "local function level2() local ok, st = nt.try(level3); error('not reached') end\n"
        "local function level1() local ok, e = pcall(level2); assert(not ok); error(e) end\n"
        "local code, extra = m:call(p, d, function()\n"
        "  local va = MmMapIoSpace(0xE0000000, 4096, MmNonCached)\n"
        "  level1()\n"
        "end)\n"
        "assert(code == 0xE2, 'call returned ' .. tostring(code))\n"
        "assert(extra == nil)\n"
        "local s = m:stopped()\n"
        "assert(s.code == 0xE2 and s.name == 'MANUALLY_INITIATED_CRASH')\n"
        "assert(s.params[1] == 1 and s.params[4] == 4)\n"
        "-- the Lua state is fine: tables, closures, errors caught by pcall\n"
        "local t = {} for i = 1, 1000 do t[i] = tostring(i) end\n"
        "assert(#t == 1000 and not pcall(error, 'x'))\n"
        "collectgarbage()\n"
        "-- the frozen machine answers, and every later call returns the same STOP\n"
        "local vm = m:kd('!vm')\n"
        "assert(vm:find('Free System PTEs'), vm)\n"
        "assert(m:check())\n"
        "assert(m:call(p, d, function() return MmMapIoSpace(0xE0000000, 4096, 0) end) == 0xE2)\n"
        "local ev = m:events('stop')\n"
        "assert(#ev == 1 and ev[1].text:find('0x000000E2'))\n"
        "m:snapshot('after the STOP')\n"
        "return {code = code, kd = #vm > 0}\n");
    char report[256], csv[256];
    snprintf(report, sizeof report, "%s/stop.html", tmpdir);
    snprintf(csv, sizeof csv, "%s/stop.csv", tmpdir);
    outcome o = run_clean(path, report, csv);
    assert_int_equal(o.rc, PTL_SCRIPT_STOP);
    assert_int_equal(o.stop, 0xE2);
    assert_has(o.result, "code=226\n");
    assert_has(o.result, "kd=true\n");
    assert_true(file_size(report) > 0);
    assert_true(file_size(csv) > 0);
    outcome_free(&o);
}

/* A STOP inside a DPC, and inside a nested m:call, land the same way. */
static void test_stop_in_dpc_and_nested_call(void **state)
{
    (void)state;
    const char *path = write_script(
        "dpc.lua", "local m = ptl.boot{}\n"
                   "local p = m:process('app.exe')\n"
                   "local d = m:driver('dpc.sys', 8192)\n"
                   "local buf = m:user_alloc(p, 4096)\n"
                   "m:user_write32(p, buf, 7)\n"
                   "local other = m:process('other.exe')\n"
                   "assert(m:user_read32(other, 0x10000) == nil)\n"
                   "local outer, inner\n"
                   "outer = m:call(p, d, function()\n"
                   "  assert(m:dpc(d, function() return READ_REGISTER_ULONG(buf) end) == 0)\n"
                   "  inner = m:dpc(d, function() return READ_REGISTER_ULONG(0x00400000) end)\n"
                   "  return MmMapIoSpace(0xE0000000, 4096, 0)\n"
                   "end)\n"
                   "return {outer = outer, inner = inner}\n");
    outcome o = run_clean(path, NULL, NULL);
    assert_int_equal(o.rc, PTL_SCRIPT_STOP);
    assert_int_equal(o.stop, 0xD1); /* an invalid user address at DISPATCH_LEVEL */
    assert_has(o.result, "inner=209\n");
    assert_has(o.result, "outer=209\n"); /* the outer body's next DDI met the same STOP */
    outcome_free(&o);
}

/* nt.try catches STATUS_ACCESS_VIOLATION from MmProbeAndLockPages of an unmapped user
 * address raised two Lua calls deep; without nt.try it is KMODE_EXCEPTION_NOT_HANDLED. */
static void test_try_catches_exception(void **state)
{
    (void)state;
    const char *path = write_script(
        "try.lua",
        "local m = ptl.boot{}\n"
        "local p = m:process('app.exe')\n"
        "local d = m:driver('probe.sys', 8192)\n"
        "local function lock(mdl) MmProbeAndLockPages(mdl, UserMode, IoReadAccess) end\n"
        "local function probe(va) local mdl = IoAllocateMdl(va, 4096); lock(mdl); return mdl end\n"
        "local buf = m:user_alloc(p, 8192)\n"
        "local code, ok, st, ok2, st2, mdl2 = m:call(p, d, function()\n"
        "  local ok, st = nt.try(probe, 0x00400000) -- nothing mapped there\n"
        "  local ok2, st2, mdl2 = nt.try(probe, buf) -- a committed buffer locks\n"
        "  MmUnlockPages(mdl2)\n"
        "  IoFreeMdl(mdl2)\n"
        "  return ok, st, ok2, st2, mdl2 ~= nil\n"
        "end)\n"
        "assert(code == 0, code)\n"
        "assert(ok == false and st == STATUS_ACCESS_VIOLATION and st == 0xC0000005)\n"
        "assert(ok2 == true and st2 == 0 and mdl2 == true)\n"
        "assert(m:check() and m:stopped() == nil)\n"
        "-- rethrown past nt.try by the script: unhandled, a STOP\n"
        "local rethrown = m:call(p, d, function()\n"
        "  local ok, e = pcall(nt.try, function() error('plain Lua error') end)\n"
        "  assert(not ok and tostring(e):find('plain Lua error'))\n"
        "  nt.try(function() end)\n"
        "  local ok3, st3 = nt.try(function() ExRaiseStatus(0xC0000017) end)\n"
        "  assert(ok3 == false and st3 == STATUS_NO_MEMORY)\n"
        "  probe(0x00400000) -- no nt.try around it\n"
        "end)\n"
        "local s = m:stopped()\n"
        "return {code = code, caught = ptl.hex(st), unhandled = ptl.hex(rethrown),\n"
        "        p1 = ptl.hex(s.params[1]), p4 = ptl.hex(s.params[4])}\n");
    outcome o = run_clean(path, NULL, NULL);
    assert_int_equal(o.rc, PTL_SCRIPT_STOP);
    assert_int_equal(o.stop, 0x1E);
    assert_has(o.result, "code=0\n");
    assert_has(o.result, "caught=0xC0000005\n");
    assert_has(o.result, "unhandled=0x0000001E\n");
    assert_has(o.result, "p1=0xC0000005\n");
    assert_has(o.result, "p4=0x00400000\n");
    outcome_free(&o);
}

/* An exception value rethrown out of nt.try reaches the end of the call body: 0x1E. */
static void test_exception_rethrown_past_try(void **state)
{
    (void)state;
    const char *path =
        write_script("rethrow.lua", "local m = ptl.boot{}\n"
                                    "local code = m:call(nil, nil, function()\n"
                                    "  local e\n"
                                    "  nt.try(function()\n"
                                    "    local ok, err = pcall(ExRaiseStatus, 0xC000009A)\n"
                                    "    e = err\n"
                                    "  end)\n"
                                    "  assert(tostring(e):find('0xC000009A'), tostring(e))\n"
                                    "  error(e)\n"
                                    "end)\n"
                                    "return code\n");
    outcome o = run_clean(path, NULL, NULL);
    assert_int_equal(o.rc, PTL_SCRIPT_STOP);
    assert_int_equal(o.stop, 0x1E);
    assert_string_equal(o.result, "30");
    outcome_free(&o);
}

/* ---- the scenarios -------------------------------------------------------------------- */

static outcome run_scenario(const char *name)
{
    const char *src = getenv("PTELAB_SOURCE_DIR");
    char path[512];
    snprintf(path, sizeof path, "%s/scenarios/%s", src ? src : ".", name);
    char report[256];
    snprintf(report, sizeof report, "%s/%s.html", tmpdir, name);
    outcome o = run_clean(path, report, NULL);
    assert_true(file_size(report) > 0);
    return o;
}

/* The sandbox the fuzzer and untrusted scenarios (ptelab run --sandbox) run in: no io, os
 * or package, no host file named from the script; a bounded number of instructions; a
 * bounded Lua heap; and a budget for the RAM of the machines a scenario holds at once,
 * since each may come to hold host memory as large as its RAM. */
static outcome run_sandboxed(const char *text, uint64_t max_machine_ram)
{
    outcome o = {0, 0, NULL, NULL};
    ptl_script_opts opts;
    ptl_script_opts_init(&opts);
    opts.sandbox = 1;
    opts.max_instructions = 1000000;
    opts.max_memory = 4u << 20;
    opts.max_machine_ram = max_machine_ram;
    opts.result = &o.result;
    opts.error = &o.error;
    o.rc = ptl_script_run_text("sandboxed.lua", text, strlen(text), &opts);
    return o;
}

/* Run text sandboxed; expect rc, and each of result_has / error_has (NULL: not checked). */
static void expect_sandboxed(const char *text, int rc, const char *result_has,
                             const char *error_has)
{
    outcome o = run_sandboxed(text, 0);
    assert_int_equal(o.rc, rc);
    if (result_has)
        assert_has(o.result, result_has);
    if (error_has)
        assert_has(o.error, error_has);
    outcome_free(&o);
}

/* ptl.boot's fault-injection fields, and the runner's defaults that they override. */
static void test_boot_fault_fields(void **state)
{
    (void)state;
    static const char text[] =
        "local m = ptl.boot{ram = '64M', fail_nth = 1, fail_kinds = 'mdl'}\n"
        "m:adapter('PCIBus', 0, 0xE0000000, 1024 * 1024)\n"
        "local d = assert(m:driver('s.sys', 8192))\n"
        "local code, va, mdl = m:call(nil, d, function()\n"
        "  local va = MmMapIoSpace(0xE0000000, 4096, MmNonCached)\n"
        "  return va, IoAllocateMdl(va, 4096)\n"
        "end)\n"
        "return (va and 'map' or 'nomap') .. ',' .. (mdl and 'mdl' or 'nomdl')";
    expect_sandboxed(text, PTL_SCRIPT_OK, "map,nomdl", NULL);
    expect_sandboxed("ptl.boot{fail_kinds = 'disk'}", PTL_SCRIPT_LUA_ERROR, NULL,
                     "'disk' is not syspte, pool, mdl or all");
    expect_sandboxed("ptl.boot{fail_ppm = 2000000}", PTL_SCRIPT_LUA_ERROR, NULL,
                     "more than a million");
}

/* With the verifier on, a scenario's leak report names the scenario line that made the
 * allocation. */
static void test_verifier_names_scenario_line(void **state)
{
    (void)state;
    static const char text[] =
        "local m = ptl.boot{ram = '64M', verifier = true}\n"
        "m:adapter('PCIBus', 0, 0xE0000000, 1024 * 1024)\n"
        "local d = assert(m:driver('leaky.sys', 8192))\n"
        "m:call(nil, d, function() return MmMapIoSpace(0xE0000000, 4096, MmNonCached) end)\n"
        "pcall(m.driver_unload, m, d)\n"
        "for _, e in ipairs(m:events('misuse')) do\n"
        "  if e.text:find('leak at unload') then return e.text end\n"
        "end\n";
    /* the unload stops with 0xC4 0x62; the script's result is still there */
    expect_sandboxed(text, PTL_SCRIPT_STOP, "MmMapIoSpace called at sandboxed.lua:4", NULL);
}

static void test_sandbox_bounds(void **state)
{
    (void)state;
    outcome o = run_sandboxed("return io == nil and os == nil and require == nil", 0);
    assert_int_equal(o.rc, PTL_SCRIPT_OK);
    assert_has(o.result, "true");
    outcome_free(&o);
    o = run_sandboxed("while true do end", 0);
    assert_int_equal(o.rc, PTL_SCRIPT_LUA_ERROR);
    assert_has(o.error, "instruction limit");
    outcome_free(&o);
    o = run_sandboxed("local t = {} for i = 1, 1e6 do t[i] = ('x'):rep(64) .. i end", 0);
    assert_int_equal(o.rc, PTL_SCRIPT_LUA_ERROR);
    assert_has(o.error, "memory");
    outcome_free(&o);
    /* two machines of 512 MB fit a 1 GB budget; a third does not, and says why */
    const char *three = "local a = ptl.boot{ram = 512 * 1024 * 1024}\n"
                        "local b = ptl.boot{ram = 512 * 1024 * 1024}\n"
                        "local c = ptl.boot{ram = 16 * 1024 * 1024}\n"
                        "return 'all three'";
    o = run_sandboxed(three, 1ull << 30);
    assert_int_equal(o.rc, PTL_SCRIPT_LUA_ERROR);
    assert_has(o.error, "sandbox allows 1024 MB of emulated RAM at once; 1024 MB is up");
    assert_has(o.error, "sandboxed.lua:3");
    outcome_free(&o);
    /* a machine freed gives its RAM back (the last booted is held for the report) */
    const char *freed = "local a = ptl.boot{ram = 512 * 1024 * 1024}\n"
                        "local b = ptl.boot{ram = 512 * 1024 * 1024}\n"
                        "a:shutdown()\n"
                        "local c = ptl.boot{ram = 512 * 1024 * 1024}\n"
                        "return 'fits'";
    o = run_sandboxed(freed, 1ull << 30);
    assert_int_equal(o.rc, PTL_SCRIPT_OK);
    assert_has(o.result, "fits");
    outcome_free(&o);
    o = run_sandboxed(three, 0); /* no budget: no limit */
    assert_int_equal(o.rc, PTL_SCRIPT_OK);
    outcome_free(&o);
    /* a .reg file named from the script is a host file: refused, unread */
    o = run_sandboxed("return ptl.boot{reg = '/etc/hostname'}", 0);
    assert_int_equal(o.rc, PTL_SCRIPT_LUA_ERROR);
    assert_has(o.error, "reads a host file, which the sandbox does not allow");
    outcome_free(&o);
}

static void test_scenario_terminal_server(void **state)
{
    (void)state;
    outcome o = run_scenario("terminal-server.lua");
    assert_int_equal(o.rc, PTL_SCRIPT_OK);
    assert_has(o.result, "outcome=thread creation failed\n");
    assert_has(o.result, "threads_computed=");
    assert_has(o.result, "threads_max=");
    outcome_free(&o);
}

static void test_scenario_framebuffer(void **state)
{
    (void)state;
    outcome o = run_scenario("framebuffer-64mb.lua");
    assert_int_equal(o.rc, PTL_SCRIPT_OK);
    assert_has(o.result, "greedy_ptes=16384\n");
    assert_has(o.result, "mdl_64mb=NULL\n");
    assert_has(o.result, "mdl_max_bytes=67076096\n"); /* (0xFFFF - 0x1C) / 4 pages */
    assert_has(o.result, "careful_ptes=768\n");
    outcome_free(&o);
}

static void test_scenario_3gb(void **state)
{
    (void)state;
    outcome o = run_scenario("3gb-vs-default.lua");
    assert_int_equal(o.rc, PTL_SCRIPT_OK);
    assert_has(o.result, "default_ptes=");
    assert_has(o.result, "gb3_ptes=");
    outcome_free(&o);
}

static void test_scenario_forgot_unmap(void **state)
{
    (void)state;
    outcome o = run_scenario("forgot-unmap-locked-pages.lua");
    assert_int_equal(o.rc, PTL_SCRIPT_STOP);
    assert_int_equal(o.stop, 0x3F);
    assert_has(o.result, "without_trackptes=0x0000003F\n");
    assert_has(o.result, "with_trackptes=0x000000D8\n");
    outcome_free(&o);
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ptelab-script-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lua_error_names_script_and_line),
        cmocka_unit_test(test_missing_inputs),
        cmocka_unit_test(test_handles_die_with_their_machine),
        cmocka_unit_test(test_stop_inside_call_keeps_state_usable),
        cmocka_unit_test(test_stop_in_dpc_and_nested_call),
        cmocka_unit_test(test_try_catches_exception),
        cmocka_unit_test(test_exception_rethrown_past_try),
        cmocka_unit_test(test_sandbox_bounds),
        cmocka_unit_test(test_boot_fault_fields),
        cmocka_unit_test(test_verifier_names_scenario_line),
        cmocka_unit_test(test_scenario_terminal_server),
        cmocka_unit_test(test_scenario_framebuffer),
        cmocka_unit_test(test_scenario_3gb),
        cmocka_unit_test(test_scenario_forgot_unmap),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
