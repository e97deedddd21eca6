/* test-machine.c - the harness: boot, calls into driver code, bug checks and the frozen
 * machine, processes and user memory, threads and their kernel stacks, driver images, and
 * what NT makes of kernel-mode faults (src/kernel.c has the rules). ptl_check must hold
 * after every step.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "internal.h"
#include <ptelab/wdm.h>

static ptl_machine *boot_cfg(uint64_t ram_mb, uint32_t system_pages)
{
    ptl_config cfg;
    ptl_config_init(&cfg);
    cfg.ram_bytes = ram_mb << 20;
    cfg.system_pages = system_pages;
    ptl_machine *m = ptl_boot(&cfg);
    if (!m)
        fprintf(stderr, "boot failed: %s\n", ptl_error());
    assert_non_null(m);
    assert_int_equal(ptl_check(m), 0);
    return m;
}

static void check_ok(ptl_machine *m)
{
    int rc = ptl_check(m);
    if (rc)
        fprintf(stderr, "%s\n", ptl_error());
    assert_int_equal(rc, 0);
}

/* ---- boot, calls ------------------------------------------------------------------------ */

typedef struct who {
    int ran;
    PEPROCESS process;
    KIRQL irql;
    ptl_machine *current;
} who;

static void record(void *arg)
{
    who *w = arg;
    w->ran++;
    w->process = PsGetCurrentProcess();
    w->irql = KeGetCurrentIrql();
    w->current = ptl_current();
}

static void test_boot_shutdown(void **state)
{
    (void)state;
    ptl_machine *m = boot_cfg(64, 0);
    const ptl_config *cfg = ptl_machine_config(m);
    assert_non_null(cfg);
    assert_int_equal(cfg->ram_bytes, 64ull << 20);
    assert_int_equal(cfg->profile, PTL_NT4_SP4);
    ptl_process *sys = ptl_system_process(m);
    assert_non_null(sys);
    assert_string_equal(ptl_process_name(sys), "System");
    assert_int_equal(ptl_process_id(sys), 2); /* NT 4.0's System pid */
    assert_int_equal(ptl_stopped(m, NULL), 0);
    assert_null(ptl_current());
    ptl_shutdown(m);
    ptl_shutdown(NULL); /* harmless */
}

static void test_call_context(void **state)
{
    (void)state;
    ptl_machine *m = boot_cfg(64, 0);
    ptl_process *p = ptl_process_create(m, "app.exe");
    ptl_process *q = ptl_process_create(m, "other.exe");
    assert_non_null(p);
    assert_non_null(q);
    assert_int_not_equal(ptl_process_id(p), ptl_process_id(q));
    ptl_stop stop;
    memset(&stop, 0xAB, sizeof stop);
    who w = {0};
    assert_int_equal(ptl_call(m, p, NULL, record, &w, &stop), 0);
    assert_int_equal(w.ran, 1);
    assert_ptr_equal(w.process, p);
    assert_int_equal(w.irql, PASSIVE_LEVEL);
    assert_ptr_equal(w.current, m);
    assert_int_equal(stop.code, 0); /* cleared when nothing stopped */
    assert_null(ptl_current());     /* only inside the call */
    check_ok(m);

    assert_int_equal(ptl_call(m, q, NULL, record, &w, NULL), 0);
    assert_ptr_equal(w.process, q);
    assert_int_equal(ptl_call(m, NULL, NULL, record, &w, NULL), 0);
    assert_ptr_equal(w.process, ptl_system_process(m));
    assert_int_equal(w.ran, 3);
    /* a DPC runs at DISPATCH_LEVEL in whatever context ran last (here System) */
    assert_int_equal(ptl_call(m, p, NULL, record, &w, NULL), 0);
    assert_int_equal(ptl_call_dpc(m, NULL, record, &w, NULL), 0);
    assert_int_equal(w.irql, DISPATCH_LEVEL);
    assert_ptr_equal(w.process, p);
    check_ok(m);
    ptl_shutdown(m);
}

static void test_call_refused(void **state)
{
    (void)state;
    ptl_machine *m = boot_cfg(64, 0);
    ptl_machine *other = boot_cfg(16, 0);
    ptl_process *foreign = ptl_process_create(other, "foreign.exe");
    assert_non_null(foreign);
    who w = {0};
    ptl_stop stop;

    assert_int_equal(ptl_call(NULL, NULL, NULL, record, &w, &stop), PTL_CALL_REFUSED);
    assert_non_null(strstr(ptl_error(), "NULL"));
    assert_int_equal(ptl_call(m, NULL, NULL, NULL, &w, &stop), PTL_CALL_REFUSED);
    assert_non_null(strstr(ptl_error(), "function"));
    assert_int_equal(ptl_call_dpc(NULL, NULL, record, &w, &stop), PTL_CALL_REFUSED);
    assert_int_equal(ptl_call_dpc(m, NULL, NULL, &w, &stop), PTL_CALL_REFUSED);
    assert_non_null(strstr(ptl_error(), "function"));
    assert_int_equal(ptl_call(m, foreign, NULL, record, &w, &stop), PTL_CALL_REFUSED);
    assert_non_null(strstr(ptl_error(), "another machine"));
    ptl_driver *d = ptl_driver_load(other, "x.sys", 4096);
    assert_non_null(d);
    assert_int_equal(ptl_call(m, NULL, d, record, &w, &stop), PTL_CALL_REFUSED);
    assert_true(ptl_error()[0] != '\0');
    assert_int_equal(w.ran, 0); /* nothing ran */
    assert_int_equal(ptl_stopped(m, NULL), 0);
    /* a refusal changes nothing */
    assert_int_equal(ptl_call(m, NULL, NULL, record, &w, &stop), 0);
    assert_int_equal(w.ran, 1);
    check_ok(m);
    check_ok(other);
    ptl_shutdown(other);
    ptl_shutdown(m);
}

/* ---- bug checks -------------------------------------------------------------------------- */

static void crash(void *arg)
{
    int *after = arg;
    KeBugCheckEx(0xE2, 1, 2, 3, 4);
    (*after)++; /* never reached */
}

static void count(void *arg)
{
    (*(int *)arg)++;
}

static void test_bugcheck_freezes(void **state)
{
    (void)state;
    ptl_machine *m = boot_cfg(64, 0);
    ptl_process *p = ptl_process_create(m, "app.exe");
    assert_non_null(p);
    uint32_t free0 = ptl_free_system_ptes(m);
    int after = 0;
    ptl_stop stop;
    assert_int_equal(ptl_call(m, p, NULL, crash, &after, &stop), 0xE2);
    assert_int_equal(after, 0);
    assert_int_equal(stop.code, 0xE2);
    assert_int_equal(stop.param[0], 1);
    assert_int_equal(stop.param[1], 2);
    assert_int_equal(stop.param[2], 3);
    assert_int_equal(stop.param[3], 4);
    assert_string_equal(stop.name, "MANUALLY_INITIATED_CRASH");
    assert_string_equal(ptl_bugcheck_name(0xE2), "MANUALLY_INITIATED_CRASH");
    assert_null(ptl_current());

    ptl_stop again;
    assert_int_equal(ptl_stopped(m, &again), 1);
    assert_memory_equal(&again, &stop, sizeof stop);

    /* frozen: the next call returns the same STOP without running anything */
    int ran = 0;
    memset(&again, 0, sizeof again);
    assert_int_equal(ptl_call(m, p, NULL, count, &ran, &again), 0xE2);
    assert_int_equal(ran, 0);
    assert_memory_equal(&again, &stop, sizeof stop);
    assert_int_equal(ptl_call_dpc(m, NULL, count, &ran, &again), 0xE2);
    assert_int_equal(ran, 0);
    assert_null(ptl_thread_create(m, p));
    assert_non_null(strstr(ptl_error(), "stopped"));
    assert_null(ptl_driver_load(m, "late.sys", 4096));
    assert_null(ptl_process_create(m, "late.exe"));
    assert_int_equal(ptl_free_system_ptes(m), free0);

    /* kd still answers */
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    assert_non_null(out);
    assert_int_equal(ptl_kd(m, "!vm", out), 0);
    fclose(out);
    assert_non_null(strstr(text, "Free System PTEs"));
    free(text);

    /* the STOP screen, exactly */
    text = NULL;
    len = 0;
    out = open_memstream(&text, &len);
    assert_non_null(out);
    ptl_stop_print(&stop, out);
    fclose(out);
    assert_string_equal(text, "*** STOP: 0x000000E2 (0x00000001,0x00000002,0x00000003,0x00000004)\n"
                              "MANUALLY_INITIATED_CRASH\n");
    free(text);

    char buf[256];
    out = fmemopen(buf, sizeof buf, "w");
    assert_non_null(out);
    ptl_stop sp = {.code = 0x3F, .param = {0, 8, 0, 0x5600}};
    ptl_stop_print(&sp, out);
    fclose(out);
    assert_string_equal(buf, "*** STOP: 0x0000003F (0x00000000,0x00000008,0x00000000,0x00005600)\n"
                             "NO_MORE_SYSTEM_PTES\n");
    check_ok(m);
    ptl_shutdown(m); /* frees the stopped machine (ASan/valgrind would complain otherwise) */
}

/* ---- processes and user memory ----------------------------------------------------------- */

static void test_user_memory(void **state)
{
    (void)state;
    ptl_machine *m = boot_cfg(64, 0);
    ptl_process *p = ptl_process_create(m, "app.exe");
    ptl_process *q = ptl_process_create(m, "spy.exe");
    assert_non_null(p);
    assert_non_null(q);
    uint32_t va = ptl_user_alloc(p, 3 * 4096);
    assert_int_equal(va, 0x10000u);
    /* 64 KB allocation granularity: the next allocation starts at 0x20000 */
    uint32_t va2 = ptl_user_alloc(p, 4096);
    assert_int_equal(va2, 0x20000u);
    check_ok(m);

    uint8_t out[3 * 4096], in[3 * 4096];
    for (size_t i = 0; i < sizeof out; i++)
        out[i] = (uint8_t)(i * 7 + 3);
    /* across page boundaries */
    assert_int_equal(ptl_user_write(p, va + 100, out, sizeof out - 200), 0);
    memset(in, 0, sizeof in);
    assert_int_equal(ptl_user_read(p, va + 100, in, sizeof out - 200), 0);
    assert_memory_equal(in, out, sizeof out - 200);
    /* committed memory is zero where nothing was written */
    uint8_t z[100];
    memset(z, 0xFF, sizeof z);
    assert_int_equal(ptl_user_read(p, va, z, sizeof z), 0);
    for (size_t i = 0; i < sizeof z; i++)
        assert_int_equal(z[i], 0);
    check_ok(m);

    /* another process does not see it */
    uint32_t word;
    assert_int_equal(ptl_user_read(q, va + 100, &word, 4), STATUS_ACCESS_VIOLATION);
    assert_int_equal(ptl_user_write(q, va + 100, &word, 4), STATUS_ACCESS_VIOLATION);
    /* and p's data is intact after q ran */
    assert_int_equal(ptl_user_read(p, va + 100, in, 16), 0);
    assert_memory_equal(in, out, 16);
    /* the first 64 KB never maps; nor does anything beyond the allocation */
    assert_int_equal(ptl_user_read(p, 0, &word, 4), STATUS_ACCESS_VIOLATION);
    assert_int_equal(ptl_user_write(p, 0, &word, 4), STATUS_ACCESS_VIOLATION);
    assert_int_equal(ptl_user_read(p, 0x1000, &word, 4), STATUS_ACCESS_VIOLATION);
    assert_int_equal(ptl_user_read(p, 0xFFFC, &word, 4), STATUS_ACCESS_VIOLATION);
    assert_int_equal(ptl_user_read(p, va + 3 * 4096, &word, 4), STATUS_ACCESS_VIOLATION);
    /* a read that runs off the end of the allocation fails as a whole */
    assert_int_equal(ptl_user_read(p, va + 3 * 4096 - 2, &word, 4), STATUS_ACCESS_VIOLATION);
    /* system addresses from user mode */
    assert_int_equal(ptl_user_read(p, 0x80000000u, &word, 4), STATUS_ACCESS_VIOLATION);
    assert_int_equal(ptl_user_read(p, 0x80400000u, &word, 4), STATUS_ACCESS_VIOLATION);
    assert_int_equal(ptl_user_read(p, 0xC0300000u, &word, 4), STATUS_ACCESS_VIOLATION);
    assert_int_equal(ptl_user_read(p, 0xFFFFFFFCu, &word, 4), STATUS_ACCESS_VIOLATION);
    ptl_driver *d = ptl_driver_load(m, "drv.sys", 4096);
    assert_non_null(d);
    assert_int_equal(ptl_user_read(p, ptl_driver_base(d), &word, 4), STATUS_ACCESS_VIOLATION);
    /* bad handles */
    assert_int_equal(ptl_user_read(NULL, va, &word, 4), STATUS_INVALID_HANDLE);
    check_ok(m);

    /* exit: the handle is dead, the other process goes on */
    assert_int_equal(ptl_process_exit(q, NULL), 0);
    assert_int_equal(ptl_user_read(q, va, &word, 4), STATUS_INVALID_HANDLE);
    check_ok(m);
    ptl_shutdown(m);
}

/* Swap-out writes each page's own protection into its page-file PTE: the one it was
 * committed with, not the reservation's. Reserve read-only and commit read-write, and the
 * reverse; after a swap-out and a fault back in, writes succeed or fail as before. */
typedef struct prot_case {
    ULONG reserve, commit;
    uint32_t va;
} prot_case;

static void reserve_then_commit(void *arg)
{
    prot_case *c = arg;
    PVOID base = NULL;
    SIZE_T size = 0x10000, one = 4096;
    if (ZwAllocateVirtualMemory(NtCurrentProcess(), &base, 0, &size, MEM_RESERVE, c->reserve) ==
            0 &&
        ZwAllocateVirtualMemory(NtCurrentProcess(), &base, 0, &one, MEM_COMMIT, c->commit) == 0)
        c->va = (uint32_t)(uintptr_t)base;
}

static void swap_keeps(ULONG reserve, ULONG commit)
{
    ptl_machine *m = boot_cfg(64, 0);
    ptl_process *p = ptl_process_create(m, "app.exe");
    assert_non_null(p);
    prot_case c = {reserve, commit, 0};
    ptl_stop stop;
    assert_int_equal(ptl_call(m, p, NULL, reserve_then_commit, &c, &stop), 0);
    assert_true(c.va != 0);
    uint32_t x = 0x11223344, y = 0;
    NTSTATUS want_write = commit == PAGE_READWRITE ? 0 : (NTSTATUS)0xC0000005;
    assert_int_equal(ptl_user_read(p, c.va, &y, 4), 0); /* bring it in */
    assert_int_equal(ptl_user_write(p, c.va, &x, 4), want_write);
    assert_int_equal(ptl_process_swap_out(p), 1);
    assert_int_equal(p->paged_out, 1);
    assert_int_equal(ptl_user_read(p, c.va, &y, 4), 0);
    assert_int_equal(p->paged_out, 0);
    assert_int_equal(ptl_user_write(p, c.va, &x, 4), want_write);
    check_ok(m);
    ptl_shutdown(m);
}

static void test_swap_keeps_page_protection(void **state)
{
    (void)state;
    swap_keeps(PAGE_READONLY, PAGE_READWRITE);
    swap_keeps(PAGE_READWRITE, PAGE_READONLY);
}

/* EPROCESS addresses: a slot is reused once its process has exited, never while it runs
 * (kd's .process and STOP parameters name processes by it), and a 257th live process is
 * refused. */
static void test_eprocess_slots(void **state)
{
    (void)state;
    ptl_machine *m = boot_cfg(64, 0);
    ptl_stop stop;
    for (int i = 0; i < 300; i++) {
        ptl_process *t = ptl_process_create(m, "tmp.exe");
        assert_non_null(t);
        assert_int_equal(ptl_process_exit(t, &stop), 0);
    }
    ptl_process *live[256];
    int n = 0;
    live[n++] = m->procs.system;
    while (n < 256) {
        live[n] = ptl_process_create(m, "app.exe");
        assert_non_null(live[n]);
        for (int k = 0; k < n; k++)
            assert_int_not_equal(live[k]->eprocess_va, live[n]->eprocess_va);
        n++;
    }
    assert_null(ptl_process_create(m, "one-too-many.exe"));
    assert_int_equal(ptl_process_exit(live[100], &stop), 0);
    ptl_process *again = ptl_process_create(m, "again.exe");
    assert_non_null(again);
    assert_int_equal(again->eprocess_va, live[100]->eprocess_va); /* the freed slot */
    check_ok(m);
    ptl_shutdown(m);
}

static void test_swap_out(void **state)
{
    (void)state;
    ptl_machine *m = boot_cfg(64, 0);
    ptl_process *p = ptl_process_create(m, "app.exe");
    assert_non_null(p);
    uint32_t va = ptl_user_alloc(p, 8 * 4096);
    assert_true(va != 0);
    uint8_t data[5][4096];
    for (int pg = 0; pg < 5; pg++) {
        for (int i = 0; i < 4096; i++)
            data[pg][i] = (uint8_t)(pg * 31 + i);
        /* touch pages 0, 1, 2, 4, 6 only */
        uint32_t at = va + (uint32_t)(pg < 3 ? pg : (pg == 3 ? 4 : 6)) * 4096u;
        assert_int_equal(ptl_user_write(p, at, data[pg], 4096), 0);
    }
    check_ok(m);
    uint32_t private0 = m->phys.use_count[PTL_USE_PRIVATE];
    assert_int_equal(p->private_pages, 5);
    assert_int_equal(ptl_process_swap_out(p), 5);
    check_ok(m);
    assert_int_equal(p->private_pages, 0);
    assert_int_equal(m->phys.use_count[PTL_USE_PRIVATE], private0 - 5);
    assert_int_equal(ptl_process_swap_out(p), 0); /* nothing resident any more */
    check_ok(m);
    uint8_t back[4096];
    for (int pg = 0; pg < 5; pg++) {
        uint32_t at = va + (uint32_t)(pg < 3 ? pg : (pg == 3 ? 4 : 6)) * 4096u;
        assert_int_equal(ptl_user_read(p, at, back, 4096), 0);
        assert_memory_equal(back, data[pg], 4096);
        check_ok(m);
    }
    /* untouched pages still read as zero */
    assert_int_equal(ptl_user_read(p, va + 3 * 4096, back, 4096), 0);
    for (int i = 0; i < 4096; i++)
        assert_int_equal(back[i], 0);
    /* 6 resident pages now (5 read back + the zero page just read) */
    assert_int_equal(p->private_pages, 6);
    assert_int_equal(ptl_process_swap_out(p), 6);
    check_ok(m);
    assert_int_equal(ptl_user_read(p, va + 6 * 4096, back, 4096), 0);
    assert_memory_equal(back, data[4], 4096);
    check_ok(m);
    assert_int_equal(ptl_process_exit(p, NULL), 0);
    check_ok(m);
    ptl_shutdown(m);
}

/* ---- threads -------------------------------------------------------------------------------- */

static void test_threads(void **state)
{
    (void)state;
    ptl_machine *m = boot_cfg(64, 0);
    ptl_process *p = ptl_process_create(m, "app.exe");
    assert_non_null(p);
    uint32_t free0 = ptl_free_system_ptes(m);
    ptl_thread *t[8];
    for (int i = 0; i < 8; i++) {
        t[i] = ptl_thread_create(m, p);
        assert_non_null(t[i]);
        /* a guard page and 3 stack pages */
        assert_int_equal(ptl_free_system_ptes(m), free0 - 4u * (uint32_t)(i + 1));
        check_ok(m);
    }
    assert_int_equal(p->threads, 8);
    /* the stack: guard PTE invalid, the three above valid kernel pages */
    uint32_t run = t[0]->stack_run_va, pte;
    assert_int_equal(ptl__pte_read(m, 0, run, &pte), 0);
    assert_int_equal(pte & PTL_PTE_VALID, 0);
    for (uint32_t k = 1; k < 4; k++) {
        assert_int_equal(ptl__pte_read(m, 0, run + k * 4096u, &pte), 0);
        assert_true(pte & PTL_PTE_VALID);
        assert_false(pte & PTL_PTE_OWNER);
        assert_int_equal(m->phys.pfn[pte >> 12].Use, PTL_USE_KERNEL_STACK);
    }
    uint32_t stacks0 = m->phys.use_count[PTL_USE_KERNEL_STACK];
    assert_int_equal(stacks0, 8 * 3);

    /* exits: the first 5 stacks go to the dead-stack cache, still mapped */
    for (int i = 0; i < 8; i++) {
        ptl_thread_exit(t[i]);
        uint32_t released = i < 5 ? 0 : 4u * (uint32_t)(i - 4);
        assert_int_equal(ptl_free_system_ptes(m), free0 - 32u + released);
        check_ok(m);
    }
    assert_int_equal(m->kernel.ndead, 5);
    assert_int_equal(m->phys.use_count[PTL_USE_KERNEL_STACK], 5 * 3);
    assert_int_equal(p->threads, 0);
    /* free0 - 32 + 12 = free0 - 20 */
    assert_int_equal(ptl_free_system_ptes(m), free0 - 20);

    /* new threads take cached stacks first: no PTEs until the cache is empty */
    for (int i = 0; i < 5; i++) {
        t[i] = ptl_thread_create(m, NULL);
        assert_non_null(t[i]);
        assert_int_equal(ptl_free_system_ptes(m), free0 - 20);
        check_ok(m);
    }
    assert_int_equal(m->kernel.ndead, 0);
    t[5] = ptl_thread_create(m, p);
    assert_non_null(t[5]);
    assert_int_equal(ptl_free_system_ptes(m), free0 - 24);
    check_ok(m);

    /* process exit ends its threads; the record is freed by ptl_thread_exit */
    assert_int_equal(ptl_process_exit(p, NULL), 0);
    check_ok(m);
    assert_int_equal(m->kernel.ndead, 1);
    assert_int_equal(ptl_free_system_ptes(m), free0 - 24); /* t[5]'s stack is cached */
    for (int i = 0; i < 6; i++)
        ptl_thread_exit(t[i]);
    /* 5 System threads exit: 4 fill the cache to 5, the fifth is released */
    assert_int_equal(m->kernel.ndead, 5);
    assert_int_equal(ptl_free_system_ptes(m), free0 - 20);
    check_ok(m);
    ptl_thread_exit(NULL); /* harmless, sets an error */
    assert_true(ptl_error()[0] != '\0');
    ptl_shutdown(m);
}

/* SystemPages 1000 on 64 MB: the pool runs from 0xFE000000 to the expansion at 0xFE590000,
 * (0xFE590000 - 0xFE000000) / 4096 - 1 = 0x590 - 1 = 1423 PTEs = 355 stacks of 4 + 3. */
static void test_threads_exhaust(void **state)
{
    (void)state;
    ptl_machine *m = boot_cfg(64, 1000);
    assert_int_equal(ptl_total_system_ptes(m), 1423);
    uint32_t n = 0;
    for (;;) {
        ptl_thread *t = ptl_thread_create(m, NULL);
        if (!t)
            break;
        n++;
        assert_true(n <= 355);
    }
    printf("%u threads before the system PTEs ran out: %s\n", n, ptl_error());
    assert_int_equal(n, 355);
    assert_non_null(strstr(ptl_error(), "STATUS_INSUFFICIENT_RESOURCES"));
    assert_int_equal(ptl_free_system_ptes(m), 3);
    assert_int_equal(m->kernel.threads_failed, 1);
    ptl_syspte_stats st;
    ptl_syspte_stats_get(m, &st);
    assert_int_equal(st.peak_used, 1420);
    assert_true(st.failed_total >= 1);
    /* no STOP: a thread creation fails, the machine runs on */
    assert_int_equal(ptl_stopped(m, NULL), 0);
    check_ok(m);
    ptl_shutdown(m);
}

/* ---- drivers -------------------------------------------------------------------------------- */

static void test_drivers(void **state)
{
    (void)state;
    ptl_machine *m = boot_cfg(64, 0);
    uint32_t free0 = ptl_free_system_ptes(m);
    static const struct {
        uint32_t bytes, pages;
    } sizes[] = {{1, 1}, {4096, 1}, {4097, 2}, {10000, 3}, {65536, 16}, {100000, 25}};
    ptl_driver *d[6];
    uint32_t used = 0;
    for (int i = 0; i < 6; i++) {
        char name[16];
        snprintf(name, sizeof name, "d%d.sys", i);
        d[i] = ptl_driver_load(m, name, sizes[i].bytes);
        assert_non_null(d[i]);
        used += sizes[i].pages;
        assert_int_equal(ptl_free_system_ptes(m), free0 - used);
        assert_string_equal(ptl_driver_name(d[i]), name);
        uint32_t base = ptl_driver_base(d[i]);
        assert_true(base >= 0xF8C00000u && base < 0xFE590000u);
        assert_int_equal(base & 0xFFFu, 0);
        check_ok(m);
    }
    /* the id lookup and the load-order index agree with the list; ptl_check sees a
     * misplaced entry */
    for (uint32_t i = 0; i < 6; i++) {
        assert_ptr_equal(ptl__driver_by_id(m, i + 1), d[i]);
        assert_ptr_equal(ptl_driver_at(m, i), d[i]);
    }
    assert_null(ptl__driver_by_id(m, 0));
    assert_null(ptl__driver_by_id(m, 7));
    assert_null(ptl_driver_at(m, 6));
    m->kernel.by_id[1] = d[2];
    assert_int_not_equal(ptl_check(m), 0);
    assert_non_null(strstr(ptl_error(), "not at its id's place"));
    m->kernel.by_id[1] = d[1];
    check_ok(m);
    /* images are valid kernel pages */
    uint32_t pte;
    assert_int_equal(ptl__pte_read(m, 0, ptl_driver_base(d[5]) + 24 * 4096u, &pte), 0);
    assert_true(pte & PTL_PTE_VALID);
    assert_int_equal(m->phys.pfn[pte >> 12].Use, PTL_USE_DRIVER_IMAGE);
    for (int i = 5; i >= 0; i--) {
        assert_int_equal(ptl_driver_unload(d[i], NULL), 0);
        used -= sizes[i].pages;
        assert_int_equal(ptl_free_system_ptes(m), free0 - used);
        check_ok(m);
    }
    assert_int_equal(ptl_free_system_ptes(m), free0);
    assert_int_equal(m->phys.use_count[PTL_USE_DRIVER_IMAGE], 0);
    /* a second unload and a call with an unloaded driver are refused */
    assert_int_equal(ptl_driver_unload(d[0], NULL), 0);
    assert_non_null(strstr(ptl_error(), "already unloaded"));
    int ran = 0;
    assert_int_equal(ptl_call(m, NULL, d[0], count, &ran, NULL), PTL_CALL_REFUSED);
    assert_int_equal(ran, 0);
    /* bad loads */
    assert_null(ptl_driver_load(m, "zero.sys", 0));
    assert_true(ptl_error()[0] != '\0');
    assert_null(ptl_driver_load(m, "", 4096));
    assert_null(ptl_driver_load(NULL, "x.sys", 4096));
    /* more than the pool has: refused with the numbers, no STOP */
    assert_null(ptl_driver_load(m, "huge.sys", (free0 + 1) * 4096u));
    assert_non_null(strstr(ptl_error(), "STATUS_INSUFFICIENT_RESOURCES"));
    assert_int_equal(ptl_stopped(m, NULL), 0);
    check_ok(m);
    ptl_shutdown(m);
}

/* ---- harness misuse (a review's sweep of the API) -------------------------------------- */

static void shutdown_inside(void *arg)
{
    ptl_shutdown(arg); /* refused: this call's frames live in the machine */
}

static void test_harness_misuse_is_refused(void **state)
{
    (void)state;
    ptl_machine *m = boot_cfg(64, 0), *other = boot_cfg(64, 0);
    ptl_process *theirs = ptl_process_create(other, "theirs.exe");
    assert_non_null(theirs);
    /* a second exit of a thread is refused, not a use after free */
    ptl_thread *t = ptl_thread_create(m, NULL);
    assert_non_null(t);
    ptl_thread_exit(t);
    ptl_thread_exit(t);
    assert_non_null(strstr(ptl_error(), "exited already"));
    check_ok(m);
    /* a thread for another machine's process: NULL, with the reason */
    assert_null(ptl_thread_create(m, theirs));
    assert_non_null(strstr(ptl_error(), "not a live process of this machine"));
    /* shutting a machine down from inside its own call is refused */
    assert_int_equal(ptl_call(m, NULL, NULL, shutdown_inside, m, NULL), 0);
    check_ok(m);
    /* the event log's and the HAL's invariants are part of both checks */
    m->perf.count[0]++;
    assert_int_not_equal(ptl_check(m), 0);
    assert_non_null(strstr(ptl_error(), "perf:"));
    assert_int_not_equal(ptl_check_full(m), 0);
    m->perf.count[0]--;
    check_ok(m);
    assert_int_equal(ptl_adapter_add(m, PCIBus, 0, 0xE0000000ull, 1u << 20), 0);
    assert_true(m->hal.nbuses >= 1);
    ptl__bus dup = m->hal.buses[0];
    assert_int_equal(ptl__hal_add_bus(&m->hal, dup.type, dup.number + 1, 0, 0), 0);
    m->hal.buses[m->hal.nbuses - 1].number = dup.number; /* the same bus twice */
    assert_int_not_equal(ptl_check(m), 0);
    assert_non_null(strstr(ptl_error(), "registered twice"));
    assert_int_not_equal(ptl_check_full(m), 0);
    m->hal.nbuses--;
    check_ok(m);
    /* the event log's readers say why they return nothing */
    ptl_event ev;
    assert_int_equal(ptl_event_get(m, (size_t)-1, &ev), -1);
    assert_non_null(strstr(ptl_error(), "no event"));
    assert_int_equal(ptl_perf_csv(m, NULL), -1);
    assert_non_null(strstr(ptl_error(), "no output"));
    /* configuration values out of their enums */
    ptl_config bad;
    ptl_config_init(&bad);
    bad.syspte_policy = (ptl_syspte_policy)7;
    assert_null(ptl_boot(&bad));
    assert_non_null(strstr(ptl_error(), "syspte_policy"));
    ptl_config_init(&bad);
    bad.native = -1;
    assert_null(ptl_boot(&bad));
    assert_non_null(strstr(ptl_error(), "native"));
    /* a physical write that runs past RAM changes nothing */
    uint64_t ram_end = (uint64_t)m->phys.ram_pages << 12;
    uint32_t before = 0x11111111u, after = 0, ones = 0xFFFFFFFFu;
    uint32_t pair[2] = {0xAAAAAAAAu, 0xBBBBBBBBu};
    assert_int_equal(ptl_phys_write(m, ram_end - 4, &before, 4), 0);
    assert_int_equal(ptl_phys_write(m, ram_end - 4, pair, 8), -1);
    assert_int_equal(ptl_phys_read(m, ram_end - 4, &after, 4), 0);
    assert_int_equal(after, before);
    assert_int_equal(ptl_phys_write(m, ram_end - 4, &ones, SIZE_MAX), -1);
    /* an empty text with no data is an empty registry file, not a NULL copy */
    ptl_config cfg;
    ptl_config_init(&cfg);
    (void)ptl_registry_import_text(&cfg, NULL, 0, "empty");
    /* a caller-filled stop whose name has no NUL prints within the name */
    ptl_stop stop;
    memset(&stop, 'A', sizeof stop);
    stop.code = 0x50;
    FILE *out = tmpfile();
    assert_non_null(out);
    ptl_stop_print(&stop, out);
    fclose(out);
    ptl_shutdown(other);
    ptl_shutdown(m);
}

/* ---- kernel-mode faults ------------------------------------------------------------------- */

typedef struct fault_ctx {
    uint32_t va;
    int catch_it;
    int handled;
    NTSTATUS code;
    int after;
} fault_ctx;

static void touch_user(void *arg)
{
    fault_ctx *c = arg;
    if (c->catch_it) {
        PTL_TRY
        {
            (void)READ_REGISTER_ULONG((volatile ULONG *)(uintptr_t)c->va);
            c->after = 1; /* not reached */
        }
        PTL_EXCEPT(EXCEPTION_EXECUTE_HANDLER)
        {
            c->handled = 1;
            c->code = GetExceptionCode();
        }
    } else {
        (void)READ_REGISTER_ULONG((volatile ULONG *)(uintptr_t)c->va);
        c->after = 1;
    }
}

static void test_user_fault_passive(void **state)
{
    (void)state;
    ptl_machine *m = boot_cfg(64, 0);
    ptl_process *p = ptl_process_create(m, "app.exe");
    ptl_driver *d = ptl_driver_load(m, "bad.sys", 8192);
    assert_non_null(p);
    assert_non_null(d);
    ptl_stop stop;

    /* caught: GetExceptionCode is STATUS_ACCESS_VIOLATION and the call completes */
    fault_ctx c = {.va = 0x00400000u, .catch_it = 1};
    assert_int_equal(ptl_call(m, p, d, touch_user, &c, &stop), 0);
    assert_int_equal(c.handled, 1);
    assert_int_equal((uint32_t)c.code, 0xC0000005u);
    assert_int_equal(c.after, 0);
    assert_int_equal(ptl_stopped(m, NULL), 0);
    check_ok(m);

    /* a mapped user address is fine from driver code at PASSIVE_LEVEL in that process */
    uint32_t va = ptl_user_alloc(p, 4096);
    uint32_t word = 0x55AA55AAu;
    assert_int_equal(ptl_user_write(p, va, &word, 4), 0);
    fault_ctx ok = {.va = va};
    assert_int_equal(ptl_call(m, p, d, touch_user, &ok, &stop), 0);
    assert_int_equal(ok.after, 1);
    check_ok(m);

    /* not caught: KMODE_EXCEPTION_NOT_HANDLED, P1 the code, P2 the driver's notional
     * instruction address, P3 0 (read), P4 the address */
    fault_ctx u = {.va = 0x00400000u};
    assert_int_equal(ptl_call(m, p, d, touch_user, &u, &stop), 0x1E);
    assert_int_equal(u.after, 0);
    assert_string_equal(stop.name, "KMODE_EXCEPTION_NOT_HANDLED");
    assert_int_equal(stop.param[0], 0xC0000005u);
    assert_int_equal(stop.param[1], ptl_driver_base(d) + 0x1000u);
    assert_int_equal(stop.param[2], 0);
    assert_int_equal(stop.param[3], 0x00400000u);
    check_ok(m);
    ptl_shutdown(m);
}

static void test_user_fault_dpc(void **state)
{
    (void)state;
    /* with a driver: DRIVER_IRQL_NOT_LESS_OR_EQUAL, P1 the address, P2 IRQL 2, P3 read */
    ptl_machine *m = boot_cfg(64, 0);
    ptl_process *p = ptl_process_create(m, "app.exe");
    ptl_driver *d = ptl_driver_load(m, "dpc.sys", 4096);
    assert_non_null(p);
    assert_non_null(d);
    ptl_stop stop;
    int ran = 0;
    assert_int_equal(ptl_call(m, p, NULL, count, &ran, NULL), 0); /* p is now current */
    fault_ctx c = {.va = 0x00400000u, .catch_it = 1};
    /* a PTL_TRY cannot catch it: a bug check is not an exception */
    assert_int_equal(ptl_call_dpc(m, d, touch_user, &c, &stop), 0xD1);
    assert_int_equal(c.handled, 0);
    assert_string_equal(stop.name, "DRIVER_IRQL_NOT_LESS_OR_EQUAL");
    assert_int_equal(stop.param[0], 0x00400000u);
    assert_int_equal(stop.param[1], 2);
    assert_int_equal(stop.param[2], 0);
    assert_int_equal(stop.param[3], ptl_driver_base(d) + 0x1000u);
    check_ok(m);
    ptl_shutdown(m);

    /* even a committed, paged-out page is fatal at DISPATCH_LEVEL */
    m = boot_cfg(64, 0);
    p = ptl_process_create(m, "app.exe");
    d = ptl_driver_load(m, "dpc.sys", 4096);
    uint32_t va = ptl_user_alloc(p, 4096);
    uint32_t word = 1;
    assert_int_equal(ptl_user_write(p, va, &word, 4), 0);
    assert_int_equal(ptl_process_swap_out(p), 1);
    fault_ctx s = {.va = va};
    assert_int_equal(ptl_call_dpc(m, d, touch_user, &s, &stop), 0xD1);
    assert_int_equal(stop.param[0], va);
    assert_int_equal(s.after, 0);
    check_ok(m);
    ptl_shutdown(m);

    /* without a driver: IRQL_NOT_LESS_OR_EQUAL */
    m = boot_cfg(64, 0);
    fault_ctx k = {.va = 0x00400000u};
    assert_int_equal(ptl_call_dpc(m, NULL, touch_user, &k, &stop), 0x0A);
    assert_int_equal(stop.param[0], 0x00400000u);
    assert_int_equal(stop.param[1], 2);
    check_ok(m);
    ptl_shutdown(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_boot_shutdown),
        cmocka_unit_test(test_call_context),
        cmocka_unit_test(test_call_refused),
        cmocka_unit_test(test_bugcheck_freezes),
        cmocka_unit_test(test_user_memory),
        cmocka_unit_test(test_swap_out),
        cmocka_unit_test(test_swap_keeps_page_protection),
        cmocka_unit_test(test_eprocess_slots),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_threads_exhaust),
        cmocka_unit_test(test_drivers),
        cmocka_unit_test(test_harness_misuse_is_refused),
        cmocka_unit_test(test_user_fault_passive),
        cmocka_unit_test(test_user_fault_dpc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
