/* test-native.c - native mode: driver code dereferences emulated addresses as it would on
 * NT. A frame-buffer-style driver runs unchanged: it maps an aperture, fills it through raw
 * pointers, and reads it back through a second mapping and through the device, with its
 * probes wrapped in __try. A raw touch of an unmapped address gives NT's STOP.
 *
 * Native mode needs the host's low 4 GB: in sanitizer and valgrind builds it is not there,
 * and these tests say so and skip (the software MMU is tested everywhere else).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include <ptelab/ptelab.h>
#include <ptelab/wdm.h>

#define FB_BUS   0xE0000000ull
#define FB_BYTES (4u << 20)

static ptl_machine *boot_native(void)
{
    ptl_config cfg;
    ptl_config_init(&cfg);
    cfg.native = PTL_NATIVE_AUTO;
    ptl_machine *m = ptl_boot(&cfg);
    assert_non_null(m);
    return m;
}

#define REQUIRE_NATIVE(m)                                                         \
    do {                                                                          \
        if (!ptl_native(m)) {                                                     \
            printf("native mode is not available on this host build: skipped\n"); \
            ptl_shutdown(m);                                                      \
            skip();                                                               \
        }                                                                         \
    } while (0)

typedef struct fb_ctx {
    uint32_t user_buf;
    ULONG mismatches;
    ULONG second_view_word;
    NTSTATUS probe_bad, probe_good;
    ULONG selfmap_pte, walked_pte;
} fb_ctx;

/* The frame-buffer driver, as a period driver would write it. */
static void framebuffer_driver(void *arg)
{
    fb_ctx *c = arg;
    PHYSICAL_ADDRESS bus, phys;
    ULONG space = 0;
    bus.QuadPart = FB_BUS;
    if (!HalTranslateBusAddress(PCIBus, 0, bus, &space, &phys))
        return;
    PULONG fb = (PULONG)MmMapIoSpace(phys, FB_BYTES, MmWriteCombined);
    if (!fb)
        return;
    /* fill the whole aperture with a pattern through the raw pointer */
    for (ULONG i = 0; i < FB_BYTES / sizeof(ULONG); i++)
        fb[i] = i * 2654435761u;
    memcpy((PUCHAR)fb + 100, "frame buffer", 13); /* host memcpy into a mapped aperture */
    /* a second mapping of the last page sees the same bytes */
    PHYSICAL_ADDRESS last = phys;
    last.QuadPart += FB_BYTES - PAGE_SIZE;
    volatile ULONG *second = MmMapIoSpace(last, PAGE_SIZE, MmWriteCombined);
    c->second_view_word = second[1];
    for (ULONG i = 0; i < PAGE_SIZE / sizeof(ULONG); i++)
        if (second[i] != fb[(FB_BYTES - PAGE_SIZE) / sizeof(ULONG) + i])
            c->mismatches++;
    /* the PTE of the mapping, read through the self-map like any NT-era driver might */
    c->selfmap_pte = *(volatile ULONG *)(0xC0000000u + ((ULONG)fb >> 12) * 4);
    /* user buffers are probed before use */
    __try {
        ProbeForWrite((PVOID)0x80000000, 4, 4);
        c->probe_bad = STATUS_SUCCESS;
    } __except (EXCEPTION_EXECUTE_HANDLER) {
        c->probe_bad = GetExceptionCode();
    }
    __try {
        ProbeForWrite((PVOID)(uintptr_t)c->user_buf, 64, 4);
        ((PULONG)(uintptr_t)c->user_buf)[3] = 0x600DCAFE; /* a raw write into user memory */
        c->probe_good = STATUS_SUCCESS;
    } __except (EXCEPTION_EXECUTE_HANDLER) {
        c->probe_good = GetExceptionCode();
    }
    MmUnmapIoSpace((PVOID)second, PAGE_SIZE);
    MmUnmapIoSpace(fb, FB_BYTES);
}

static void test_framebuffer_driver(void **state)
{
    (void)state;
    ptl_machine *m = boot_native();
    REQUIRE_NATIVE(m);
    assert_int_equal(ptl_adapter_add(m, PCIBus, 0, FB_BUS, FB_BYTES), 0);
    ptl_process *p = ptl_process_create(m, "display.exe");
    ptl_driver *d = ptl_driver_load(m, "fb.sys", 32768);
    uint32_t free0 = ptl_free_system_ptes(m);
    fb_ctx c;
    memset(&c, 0, sizeof c);
    c.user_buf = ptl_user_alloc(p, 4096);
    ptl_stop stop;
    assert_int_equal(ptl_call(m, p, d, framebuffer_driver, &c, &stop), 0);
    assert_int_equal(c.mismatches, 0);
    assert_int_equal(c.second_view_word, ((FB_BYTES - PAGE_SIZE) / 4 + 1) * 2654435761u);
    assert_int_equal(c.probe_bad, STATUS_ACCESS_VIOLATION);
    assert_int_equal(c.probe_good, STATUS_SUCCESS);
    assert_true(c.selfmap_pte & 1); /* valid */
    assert_int_equal(c.selfmap_pte & 0xFFFFF000u, (uint32_t)FB_BUS);
    /* the device sees what the driver wrote through raw pointers */
    uint32_t w;
    char text[13];
    assert_int_equal(ptl_phys_read(m, FB_BUS + 4 * 12345, &w, 4), 0);
    assert_int_equal(w, 12345u * 2654435761u);
    assert_int_equal(ptl_phys_read(m, FB_BUS + 100, text, 13), 0);
    assert_string_equal(text, "frame buffer");
    /* and the application sees the raw write into its buffer */
    assert_int_equal(ptl_user_read(p, c.user_buf + 12, &w, 4), STATUS_SUCCESS);
    assert_int_equal(w, 0x600DCAFE);
    assert_int_equal(ptl_free_system_ptes(m), free0);
    assert_int_equal(ptl_check(m), 0);
    ptl_shutdown(m);
}

static void touch_after_unmap(void *arg)
{
    int *how = arg;
    PHYSICAL_ADDRESS pa;
    pa.QuadPart = FB_BUS;
    volatile ULONG *p = MmMapIoSpace(pa, PAGE_SIZE, MmNonCached);
    MmUnmapIoSpace((PVOID)p, PAGE_SIZE);
    if (*how == 0)
        (void)*p; /* a read of a system address that is no longer mapped */
    else
        *(volatile ULONG *)(uintptr_t)0x00400000 = 1; /* a user address nothing maps */
}

static void test_raw_touch_of_unmapped_address(void **state)
{
    (void)state;
    for (int how = 0; how < 2; how++) {
        ptl_machine *m = boot_native();
        REQUIRE_NATIVE(m);
        assert_int_equal(ptl_adapter_add(m, PCIBus, 0, FB_BUS, FB_BYTES), 0);
        ptl_driver *d = ptl_driver_load(m, "fb.sys", 8192);
        ptl_stop stop;
        uint32_t code = ptl_call(m, NULL, d, touch_after_unmap, &how, &stop);
        if (how == 0) {
            assert_int_equal(code, 0x50);       /* PAGE_FAULT_IN_NONPAGED_AREA */
            assert_int_equal(stop.param[1], 0); /* a read */
            assert_int_equal(stop.param[2], ptl_driver_base(d) + 0x1000);
        } else {
            assert_int_equal(code, 0x1E); /* the user-address exception, not caught */
            assert_int_equal(stop.param[0], 0xC0000005);
            assert_int_equal(stop.param[3], 0x00400000);
        }
        ptl_shutdown(m);
    }
}

static void dpc_raw(void *arg)
{
    ULONG v = *(volatile ULONG *)arg;
    (void)v;
}

static void test_dpc_raw_touch_in_wrong_context(void **state)
{
    (void)state;
    ptl_machine *m = boot_native();
    REQUIRE_NATIVE(m);
    ptl_process *a = ptl_process_create(m, "a.exe"), *b = ptl_process_create(m, "b.exe");
    ptl_driver *d = ptl_driver_load(m, "isr.sys", 8192);
    uint32_t va = ptl_user_alloc(a, 4096), v = 7;
    assert_int_equal(ptl_user_write(a, va, &v, 4), STATUS_SUCCESS);
    ptl_stop stop;
    /* a ran last: its page is mapped natively, the DPC reads it */
    assert_int_equal(ptl_call_dpc(m, d, dpc_raw, (void *)(uintptr_t)va, &stop), 0);
    /* b runs: the user half is b's now, and the same read is a STOP */
    assert_int_equal(ptl_user_read(b, 0x10000, &v, 4), STATUS_ACCESS_VIOLATION);
    assert_int_equal(ptl_call_dpc(m, d, dpc_raw, (void *)(uintptr_t)va, &stop), 0xD1);
    assert_int_equal(stop.param[0], va);
    assert_int_equal(stop.param[1], DISPATCH_LEVEL);
    ptl_shutdown(m);
}

static void demand_zero_raw(void *arg)
{
    volatile ULONG *p = arg;
    p[0] = 0x1234; /* the first touch of committed memory: a page fault NT resolves */
    p[1024] = p[0] + 1;
}

static void test_demand_zero_and_swap_in_natively(void **state)
{
    (void)state;
    ptl_machine *m = boot_native();
    REQUIRE_NATIVE(m);
    ptl_process *p = ptl_process_create(m, "app.exe");
    uint32_t va = ptl_user_alloc(p, 8192), w = 0;
    ptl_stop stop;
    assert_int_equal(ptl_call(m, p, NULL, demand_zero_raw, (void *)(uintptr_t)va, &stop), 0);
    assert_int_equal(ptl_user_read(p, va + 4096, &w, 4), STATUS_SUCCESS);
    assert_int_equal(w, 0x1235);
    assert_int_equal(ptl_process_swap_out(p), 2);
    assert_int_equal(ptl_call(m, p, NULL, demand_zero_raw, (void *)(uintptr_t)va, &stop), 0);
    assert_int_equal(ptl_check(m), 0);
    ptl_shutdown(m);
}

/* A raw read of a mapped address that no device decodes gives all ones, as
 * READ_REGISTER_ULONG and the software MMU do (a PCI master abort), across more pages than
 * one mapping of the all-ones file covers. */
typedef struct ones_ctx {
    ULONG raw_first, raw_last, reg;
    int mapped;
} ones_ctx;

#define ONES_BYTES (300u * PAGE_SIZE)

static void read_nothing(void *arg)
{
    ones_ctx *c = arg;
    PHYSICAL_ADDRESS pa;
    pa.QuadPart = 0xF0000000ll; /* no adapter there */
    volatile ULONG *va = MmMapIoSpace(pa, ONES_BYTES, MmNonCached);
    if (!va)
        return;
    c->mapped = 1;
    c->raw_first = va[0];
    c->raw_last = va[ONES_BYTES / 4 - 1];
    c->reg = READ_REGISTER_ULONG(va + 1);
    MmUnmapIoSpace((PVOID)va, ONES_BYTES);
}

static void test_raw_read_of_nothing_is_all_ones(void **state)
{
    (void)state;
    for (int profile = PTL_NT4_SP3; profile <= PTL_WINXP; profile++) {
        ptl_config cfg;
        ptl_config_init(&cfg);
        cfg.profile = profile;
        ptl_machine *m = ptl_boot(&cfg);
        assert_non_null(m);
        REQUIRE_NATIVE(m);
        ones_ctx c = {0};
        ptl_stop stop;
        assert_int_equal(ptl_call(m, NULL, NULL, read_nothing, &c, &stop), 0);
        assert_true(c.mapped);
        assert_int_equal(c.raw_first, 0xFFFFFFFFu);
        assert_int_equal(c.raw_last, 0xFFFFFFFFu);
        assert_int_equal(c.reg, 0xFFFFFFFFu);
        assert_int_equal(ptl_check_full(m), 0);
        ptl_shutdown(m);
    }
}

static void test_only_one_native_machine(void **state)
{
    (void)state;
    ptl_machine *a = boot_native();
    REQUIRE_NATIVE(a);
    ptl_machine *b = boot_native();
    assert_false(ptl_native(b)); /* the low 4 GB is taken: b runs the software MMU */
    ptl_config cfg;
    ptl_config_init(&cfg);
    cfg.native = PTL_NATIVE_OFF;
    ptl_machine *c = ptl_boot(&cfg);
    assert_false(ptl_native(c));
    ptl_shutdown(b);
    ptl_shutdown(c);
    ptl_shutdown(a);
    b = boot_native(); /* freed: the next machine gets it */
    assert_true(ptl_native(b));
    ptl_shutdown(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_framebuffer_driver),
        cmocka_unit_test(test_raw_touch_of_unmapped_address),
        cmocka_unit_test(test_dpc_raw_touch_in_wrong_context),
        cmocka_unit_test(test_demand_zero_and_swap_in_natively),
        cmocka_unit_test(test_raw_read_of_nothing_is_all_ones),
        cmocka_unit_test(test_only_one_native_machine),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
