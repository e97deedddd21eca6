/* test-kd.c - kd, the WinDbg-style inspector: every command's output against golden
 * files, bad input, and a stopped machine.
 *
 * The scenario is fixed and deterministic: a 64 MB NT 4.0 SP4 machine with TrackPtes, an
 * adapter at 0xE0000000, an application with private memory (touched, demand-zero and
 * paged out), a driver that maps 2 adapter pages with MmMapIoSpace, maps a view of
 * \Device\PhysicalMemory into the application and maps a locked user buffer into system
 * space. Each golden test names the Microsoft debugger documentation page
 * (learn.microsoft.com/windows-hardware/drivers/debuggercmds/...) whose output shape it
 * follows.
 *
 * Golden files live in tests/golden/kd/<name>.txt under $PTELAB_SOURCE_DIR (set by
 * tests/CMakeLists.txt); each holds "kd> <command>" and the output. Regenerate them with
 * PTELAB_UPDATE_GOLDEN=1 after a deliberate change, and read the diff.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <ptelab/ptelab.h>
#include <ptelab/wdm.h>

#define ADAPTER   0xE0000000ull
#define ADAPTER_N (1u << 20)

typedef struct scene {
    ptl_machine *m;
    ptl_process *app;
    ptl_driver *drv;
    uint32_t buf, dz, sw;         /* user: touched+locked, demand zero, paged out */
    uint32_t io_va, mdl_va, view; /* system: MmMapIoSpace, MDL mapping; user: the view */
    PMDL mdl;
    HANDLE section;
    PVOID object;
    NTSTATUS st_view;
} scene;

static void setup_driver(void *arg)
{
    scene *s = arg;
    PHYSICAL_ADDRESS pa;
    pa.QuadPart = (LONGLONG)ADAPTER;
    PUCHAR io = MmMapIoSpace(pa, 2 * PAGE_SIZE, MmNonCached);
    s->io_va = (uint32_t)(uintptr_t)io;
    if (!io)
        return;
    for (ULONG i = 0; i < 8; i++)
        WRITE_REGISTER_ULONG((volatile ULONG *)(io + 4 * i), 0x11111111u * i + 0xC0DE0000u);
    const char tag[] = "ptelab adapter";
    for (ULONG i = 0; i < sizeof tag; i++)
        WRITE_REGISTER_UCHAR(io + 0x40 + i, (UCHAR)tag[i]);

    /* a view of the adapter in the application (the article's section method) */
    UNICODE_STRING name;
    OBJECT_ATTRIBUTES oa;
    RtlInitUnicodeString(&name, L"\\Device\\PhysicalMemory");
    InitializeObjectAttributes(&oa, &name, OBJ_CASE_INSENSITIVE, (HANDLE)NULL, (PVOID)NULL);
    if (!NT_SUCCESS(ZwOpenSection(&s->section, SECTION_ALL_ACCESS, &oa)))
        return;
    PHYSICAL_ADDRESS off;
    off.QuadPart = (LONGLONG)ADAPTER;
    SIZE_T size = 0x2000;
    PVOID base = NULL;
    s->st_view = ZwMapViewOfSection(s->section, NtCurrentProcess(), &base, 0L, size, &off, &size,
                                    ViewShare, 0, PAGE_READWRITE | PAGE_NOCACHE);
    s->view = (uint32_t)(uintptr_t)base;

    /* the application's buffer, locked and mapped into system space */
    s->mdl = IoAllocateMdl((PVOID)(uintptr_t)s->buf, 2 * PAGE_SIZE, FALSE, FALSE, NULL);
    if (!s->mdl)
        return;
    MmProbeAndLockPages(s->mdl, UserMode, IoModifyAccess);
    s->mdl_va = (uint32_t)(uintptr_t)MmMapLockedPages(s->mdl, KernelMode);
}

static scene make_scene(void)
{
    ptl_config cfg;
    ptl_config_init(&cfg);
    cfg.ram_bytes = 64ull << 20;
    cfg.profile = PTL_NT4_SP4;
    cfg.track_ptes = 1;
    scene s;
    memset(&s, 0, sizeof s);
    s.m = ptl_boot(&cfg);
    assert_non_null(s.m);
    assert_int_equal(ptl_adapter_add(s.m, PCIBus, 0, ADAPTER, ADAPTER_N), 0);
    s.app = ptl_process_create(s.m, "app.exe");
    assert_non_null(s.app);
    s.drv = ptl_driver_load(s.m, "mapmem.sys", 16384);
    assert_non_null(s.drv);
    s.buf = ptl_user_alloc(s.app, 2 * 4096);
    s.dz = ptl_user_alloc(s.app, 4096);
    s.sw = ptl_user_alloc(s.app, 4096);
    assert_true(s.buf && s.dz && s.sw);
    const char hello[] = "Hello from app.exe, seen by kd.";
    assert_int_equal(ptl_user_write(s.app, s.buf, hello, sizeof hello), 0);
    uint32_t word = 0x5A5A5A5A;
    assert_int_equal(ptl_user_write(s.app, s.sw, &word, 4), 0);
    ptl_stop stop;
    assert_int_equal(ptl_call(s.m, s.app, s.drv, setup_driver, &s, &stop), 0);
    assert_true(s.io_va != 0);
    assert_int_equal(s.st_view, STATUS_SUCCESS);
    assert_true(s.mdl_va != 0);
    assert_true(ptl_process_swap_out(s.app) >= 1); /* s.sw goes to the page file */
    assert_int_equal(ptl_check(s.m), 0);
    return s;
}

/* ---- golden files --------------------------------------------------------------------- */

/* GCC 12 at -O3 takes the open_memstream buffer's address for a dangling pointer. */
#if defined(__GNUC__) && __GNUC__ >= 12 && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wdangling-pointer"
#endif

static char *run(ptl_machine *m, const char *cmd, int *rc)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    fprintf(f, "kd> %s\n", cmd);
    *rc = ptl_kd(m, cmd, f);
    fclose(f);
    return text;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *text = NULL;
    size_t len = 0, cap = 0;
    int ch;
    while ((ch = fgetc(f)) != EOF) {
        if (len + 1 >= cap) {
            cap = cap ? cap * 2 : 4096;
            text = realloc(text, cap);
            assert_non_null(text);
        }
        text[len++] = (char)ch;
    }
    fclose(f);
    if (!text)
        text = calloc(1, 1);
    else
        text[len] = 0;
    return text;
}

static void golden(ptl_machine *m, const char *name, const char *fmt, ...)
{
    char cmd[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc;
    char *got = run(m, cmd, &rc);
    if (rc != 0)
        fail_msg("'%s' failed: %s", cmd, got);
    const char *src = getenv("PTELAB_SOURCE_DIR");
    if (!src)
        fail_msg("PTELAB_SOURCE_DIR is not set (tests/CMakeLists.txt sets it)");
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/golden/kd/%s.txt", src, name);
    const char *update = getenv("PTELAB_UPDATE_GOLDEN");
    if (update && strcmp(update, "1") == 0) {
        FILE *f = fopen(path, "wb");
        if (!f)
            fail_msg("cannot write %s", path);
        fputs(got, f);
        fclose(f);
    }
    char *want = slurp(path);
    if (!want)
        fail_msg("no golden file %s (run with PTELAB_UPDATE_GOLDEN=1)", path);
    if (strcmp(got, want) != 0) {
        printf("--- %s (golden)\n%s--- got\n%s", path, want, got);
        fail_msg("'%s' differs from %s", cmd, path);
    }
    free(want);
    free(got);
}

/* ---- the commands, one golden file each ------------------------------------------------- */

/* Shape: debuggercmds/-vm ("!vm 1": the "*** Virtual Memory Usage ***" page/Kb lines). */
static void test_vm(void **state)
{
    (void)state;
    scene s = make_scene();
    golden(s.m, "vm", "!vm");
    golden(s.m, "vm_1", "!vm 1");
    ptl_shutdown(s.m);
}

/* Shape: debuggercmds/-sysptes ("System PTE Information", "Total System Ptes", "free ptes:
 * ... number free:", "free blocks: ... total free: ... largest free block:"). */
static void test_sysptes(void **state)
{
    (void)state;
    scene s = make_scene();
    golden(s.m, "sysptes", "!sysptes");
    golden(s.m, "sysptes_1", "!sysptes 1");
    golden(s.m, "sysptes_4", "!sysptes 4");
    golden(s.m, "sysptes_8", "!sysptes 8");
    ptl_shutdown(s.m);
}

/* Shape: debuggercmds/-pte (x86: "VA", "PDE at ... PTE at", "contains", "pfn ... ---DA--KWEV",
 * and for invalid PTEs "not valid" with the decoded software PTE). */
static void test_pte(void **state)
{
    (void)state;
    scene s = make_scene();
    golden(s.m, "pte_selfmap", "!pte c0000000");
    golden(s.m, "pte_iospace", "!pte %x", s.io_va);
    golden(s.m, "pte_mdl", "!pte %x", s.mdl_va);
    golden(s.m, "pte_no_pde", "!pte 20000000");
    int rc;
    /* user addresses go through the application's context */
    char *out = run(s.m, "!process 0 0 app.exe", &rc);
    assert_int_equal(rc, 0);
    unsigned ep = 0;
    const char *p = strstr(out, "\nPROCESS ");
    assert_non_null(p);
    assert_int_equal(sscanf(p + 1, "PROCESS %x", &ep), 1);
    free(out);
    golden(s.m, "dot_process", ".process %x", ep);
    golden(s.m, "pte_user", "!pte %x", s.buf);
    golden(s.m, "pte_demandzero", "!pte %x", s.dz);
    golden(s.m, "pte_pagefile", "!pte %x", s.sw);
    golden(s.m, "pte_view", "!pte %x", s.view);
    /* .process is the debugger's view only: switching it to the System process changes
     * how kd reads user addresses, not the machine's current process */
    char *before = run(s.m, "!process", &rc);
    out = run(s.m, "!process 0 0 System", &rc);
    unsigned sys_ep = 0;
    const char *sys = strstr(out, "\nPROCESS ");
    assert_non_null(sys);
    assert_int_equal(sscanf(sys + 1, "PROCESS %x", &sys_ep), 1);
    free(out);
    char cmd[64];
    snprintf(cmd, sizeof cmd, ".process %x", sys_ep);
    out = run(s.m, cmd, &rc);
    if (rc)
        fail_msg("%s", out);
    free(out);
    char *after = run(s.m, "!process", &rc);
    assert_string_equal(before, after);
    snprintf(cmd, sizeof cmd, "dd %x L1", s.buf);
    out = run(s.m, cmd, &rc); /* app's buffer: nothing there in System's user space */
    assert_non_null(strstr(out, "????????"));
    free(out);
    free(before);
    free(after);
    assert_int_equal(ptl_check(s.m), 0);
    ptl_shutdown(s.m);
}

/* Shape: debuggercmds/-vtop ("Pdi 0 Pti 12f", "0012f980 09de9000 pfn(09de9)") and
 * debuggercmds/-pfn ("PFN ... at address", "flink ... blink / share count ... pteaddress",
 * "reference count", "restore pte ... containing page ... Active"). */
static void test_vtop_pfn(void **state)
{
    (void)state;
    scene s = make_scene();
    uint32_t dirbase = ptl_process_dirbase(s.app);
    golden(s.m, "vtop_user", "!vtop %x %x", dirbase, s.buf + 0x10);
    golden(s.m, "vtop_pfn_form", "!vtop %x %x", dirbase >> 12, s.view);
    golden(s.m, "vtop_current", "!vtop 0 %x", s.io_va);
    golden(s.m, "vtop_invalid", "!vtop %x %x", dirbase, s.dz);
    golden(s.m, "pfn_dirbase", "!pfn %x", dirbase >> 12);
    golden(s.m, "pfn_free", "!pfn 3fff");
    golden(s.m, "pfn_iospace", "!pfn e0000");
    ptl_shutdown(s.m);
}

/* Shape: debuggercmds/d--da--db--dc--dd--dd--df--dp--dq--du--dw--dw--dyb--dyd--display-memory-
 * (address column, 16 bytes a line, db's hyphen and ASCII column, ???????? for invalid
 * memory) and e--ea--eb--ed--ef--ep--eq--eu--ew--eza--ezu--enter-values-. */
static void test_memory(void **state)
{
    (void)state;
    scene s = make_scene();
    golden(s.m, "dd_iospace", "dd %x L8", s.io_va);
    golden(s.m, "db_iospace", "db %x L30", s.io_va + 0x33);
    golden(s.m, "dw_physical", "dw /p e0000000 L10");
    golden(s.m, "dq_mdl", "dq %x L4", s.mdl_va);
    golden(s.m, "db_mdl", "db %x", s.mdl_va);
    golden(s.m, "db_unmapped", "db 20000000 L20");
    golden(s.m, "dd_straddle", "dd %x L8", s.io_va + 0x2000 - 0x10);
    golden(s.m, "ed_iospace", "ed %x 0n4660 -1", s.io_va + 8);
    golden(s.m, "eb_physical", "eb /p e0000010 4b 44 21");
    golden(s.m, "dd_after_edit", "dd /p e0000000 L8");
    uint32_t v = 0;
    assert_int_equal(ptl_phys_read(s.m, ADAPTER + 8, &v, 4), 0);
    assert_int_equal(v, 4660);
    assert_int_equal(ptl_phys_read(s.m, ADAPTER + 12, &v, 4), 0);
    assert_int_equal(v, 0xFFFFFFFFu);
    assert_int_equal(ptl_check(s.m), 0);
    ptl_shutdown(s.m);
}

/* Shape: debuggercmds/-process ("**** NT ACTIVE PROCESS DUMP ****", "PROCESS ... SessionId:
 * ... Cid: ... Peb: ... ParentCid:", "DirBase: ... ObjectTable: ... HandleCount:", "Image:"),
 * debuggercmds/-process--set-process-context- ("Implicit process is now ...") and
 * debuggercmds/lm--list-loaded-modules- ("start    end        module name"). */
static void test_processes_modules(void **state)
{
    (void)state;
    scene s = make_scene();
    golden(s.m, "process_all", "!process 0 0");
    golden(s.m, "process_current", "!process");
    golden(s.m, "process_vads", "!process 0 1 app.exe");
    golden(s.m, "dot_process_show", ".process");
    assert_int_equal(ptl_driver_import(s.drv, "VIDEOPRT.SYS", 65536), 0);
    golden(s.m, "lm", "lm");
    ptl_shutdown(s.m);
}

/* Shape: debuggercmds/---evaluate-expression- ("Evaluate expression: 4096 = 00001000"),
 * plus .help. */
static void test_evaluate_help(void **state)
{
    (void)state;
    scene s = make_scene();
    golden(s.m, "eval", "? 0n10 + (8010`1000 - 1) * 2");
    golden(s.m, "eval_32", "? (1000 + 0n16) * 2");
    golden(s.m, "eval_negative", "? 1-2");
    golden(s.m, "eval_big", "?0x1`00000000/4");
    golden(s.m, "bugcheck_running", ".bugcheck");
    golden(s.m, "help", ".help");
    ptl_shutdown(s.m);
}

/* ---- a stopped machine ---------------------------------------------------------------------- */

static void crash(void *arg)
{
    (void)arg;
    KeBugCheckEx(0x3F, 0, 8, 0, 0x5600);
}

/* Shape: debuggercmds/-analyze ("Bugcheck Analysis", "NO_MORE_SYSTEM_PTES (3f)", "Arguments:",
 * "Arg1: ..."), debuggercmds/-bugcheck--display-bug-check-data- ("Bugcheck code 0000003F",
 * "Arguments 00000000 00000008 00000000 00005600"). */
static void test_stopped(void **state)
{
    (void)state;
    scene s = make_scene();
    ptl_driver *bad = ptl_driver_load(s.m, "crashy.sys", 8192);
    assert_non_null(bad);
    ptl_stop stop;
    assert_int_equal(ptl_call(s.m, s.app, bad, crash, NULL, &stop), 0x3F);
    golden(s.m, "bugcheck", ".bugcheck");
    golden(s.m, "analyze", "!analyze");
    golden(s.m, "analyze_v", "!analyze -v");
    golden(s.m, "vm_stopped", "!vm 1");
    golden(s.m, "pte_stopped", "!pte %x", s.io_va);
    assert_int_equal(ptl_check(s.m), 0);
    ptl_shutdown(s.m);
}

/* ---- bad input ---------------------------------------------------------------------------- */

static void expect_one_error(ptl_machine *m, const char *cmd)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    int rc = ptl_kd(m, cmd, f);
    fclose(f);
    if (rc == 0)
        fail_msg("'%.60s' was accepted", cmd);
    if (strncmp(text, "kd: ", 4) != 0 || len == 0 || text[len - 1] != '\n' ||
        memchr(text, '\n', len - 1) != NULL)
        fail_msg("'%.60s' did not give one 'kd: ' line: [%s]", cmd, text);
    const char *err = ptl_error();
    assert_non_null(err);
    assert_true(strncmp(err, "kd: ", 4) == 0);
    free(text);
}

static void test_malformed(void **state)
{
    (void)state;
    scene s = make_scene();
    uint32_t free0 = ptl_free_system_ptes(s.m);
    size_t events0 = ptl_event_count(s.m);
    uint8_t before[64], after[64];
    assert_int_equal(ptl_phys_read(s.m, ADAPTER, before, sizeof before), 0);
    static const char *const bad[] = {
        "",
        "   ",
        "frobnicate",
        "!pte",
        "!pte zz",
        "!pte 1 2",
        "!pte 1`00000000",
        "!pte 0x",
        "!pte 0n12a",
        "!vtop",
        "!vtop 1234 0",
        "!vtop 0",
        "!pfn",
        "!pfn 100000",
        "!pfn 5000",
        "!pfn -",
        "!sysptes q",
        "!sysptes 1 2",
        "!vm zz",
        "db",
        "db 0 L",
        "db 0 L0",
        "db 0 Lzz",
        "db 0 L100000000",
        "db 0 Lffffffffffffffff",
        "db ffffff00 L200",
        "db 0 20",
        "db /x 0",
        "db 0 L10 extra",
        "dd /p ffffffffffff",
        "dd /p 100000000",
        "dq 1`00000000",
        "eb",
        "eb 0",
        "eb %IO% 100",
        "ew %IO% 10000",
        "ed %IO% 1`00000000",
        "eb 20000000 1",
        "eb /p f0000000 1",
        "eb c0000000 1",
        "ed c0300000 0",
        "eb /p %PD% 0",
        ".process zz",
        ".process 1234",
        ".process /i 0",
        ".process 1 2",
        "!process 1234",
        "!process 0 0 x y",
        "lm x",
        "!analyze",
        "!analyze -x",
        ".bugcheck 1",
        "?",
        "? (1+",
        "? 1/0",
        "? 1%0",
        "? 1 2",
        "? )",
        "? 0n",
        "? fffffffffffffffff",
        "? 0n99999999999999999999",
        "? *",
    };
    char pd[16], io[16], cmd[128];
    snprintf(pd, sizeof pd, "%x", ptl_process_dirbase(s.app));
    snprintf(io, sizeof io, "%x", s.io_va);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *b = bad[i];
        const char *mark = strstr(b, "%IO%") ? strstr(b, "%IO%") : strstr(b, "%PD%");
        if (mark) {
            const char *val = mark[1] == 'I' ? io : pd;
            snprintf(cmd, sizeof cmd, "%.*s%s%s", (int)(mark - b), b, val, mark + 4);
            b = cmd;
        }
        expect_one_error(s.m, b);
    }
    /* very long lines */
    size_t n = 200000;
    char *big = malloc(n + 16);
    assert_non_null(big);
    memset(big, 'a', n);
    big[n] = 0;
    expect_one_error(s.m, big); /* an unknown command 200000 characters long */
    memcpy(big, "!pte ", 5);
    expect_one_error(s.m, big); /* a number too large */
    memcpy(big, "? ", 2);
    memset(big + 2, '(', n - 2);
    expect_one_error(s.m, big); /* nested too deeply */
    memset(big + 2, '-', n - 2);
    expect_one_error(s.m, big);
    memcpy(big, "db 0 L", 6);
    memset(big + 6, '1', n - 6);
    expect_one_error(s.m, big);
    for (size_t i = 0; i < n; i += 2) {
        big[i] = '1';
        big[i + 1] = ' ';
    }
    memcpy(big, "eb 0 ", 5);
    expect_one_error(s.m, big); /* too many values */
    memcpy(big, "dd 0 ", 5);
    expect_one_error(s.m, big); /* too many arguments */
    free(big);

    /* nothing changed */
    assert_int_equal(ptl_check(s.m), 0);
    assert_int_equal(ptl_free_system_ptes(s.m), free0);
    assert_int_equal(ptl_event_count(s.m), events0);
    assert_int_equal(ptl_phys_read(s.m, ADAPTER, after, sizeof after), 0);
    assert_memory_equal(before, after, sizeof before);
    /* NULL arguments are harness misuse */
    assert_int_not_equal(ptl_kd(s.m, NULL, stdout), 0);
    assert_int_not_equal(ptl_kd(NULL, "!vm", stdout), 0);
    ptl_shutdown(s.m);
}

/* Random command lines from kd's own vocabulary: whatever they do, the host survives and
 * the machine's invariants hold. */
static void test_noise(void **state)
{
    (void)state;
    scene s = make_scene();
    static const char *const words[] = {
        "!pte",     "!vtop",     "!pfn",     "!sysptes", "!vm",      "db",       "dw",
        "dd",       "dq",        "eb",       "ed",       ".process", "!process", "lm",
        "!analyze", ".bugcheck", "?",        "/p",       "L",        "L10",      "0",
        "1",        "-1",        "0n",       "0x",       "`",        "(",        ")",
        "+",        "*",         "/",        "%",        "ffffffff", "c0000000", "c0300000",
        "e0000000", "80000000",  "7fff0000", "10000",    "3fff",     "e0000",    "L?100",
        "1`0000",   "zz",        "-v",       "0n4096",
    };
    const size_t nw = sizeof words / sizeof words[0];
    uint64_t seed = 0x9E3779B97F4A7C15ull;
    FILE *sink = fopen("/dev/null", "w");
    assert_non_null(sink);
    for (int iter = 0; iter < 3000; iter++) {
        char line[256] = "";
        int nwords = 1 + (int)(seed % 5);
        for (int k = 0; k < nwords; k++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            const char *w = words[(seed >> 33) % nw];
            /* keep edits off the paging structures' neighbours: reads only, mostly */
            if (k == 0 && (strcmp(w, "eb") == 0 || strcmp(w, "ed") == 0) && (seed >> 40) % 4)
                w = "db";
            strncat(line, w, sizeof line - strlen(line) - 2);
            strncat(line, (seed >> 20) & 1 ? " " : "", sizeof line - strlen(line) - 1);
        }
        ptl_kd(s.m, line, sink);
    }
    fclose(sink);
    assert_int_equal(ptl_check(s.m), 0);
    ptl_shutdown(s.m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vm),
        cmocka_unit_test(test_sysptes),
        cmocka_unit_test(test_pte),
        cmocka_unit_test(test_vtop_pfn),
        cmocka_unit_test(test_memory),
        cmocka_unit_test(test_processes_modules),
        cmocka_unit_test(test_evaluate_help),
        cmocka_unit_test(test_stopped),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_noise),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
