/* test-registry.c - the Memory Management values from .reg files as regedit exports them:
 * version 5.00 (UTF-16LE with a byte-order mark, CRLF, continued hex values) and REGEDIT4.
 * The article: raise the system PTEs with ...\Memory Management\SystemPages.
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

static char *data_path(const char *name)
{
    static char buf[4096];
    const char *dir = getenv("PTELAB_SOURCE_DIR");
    snprintf(buf, sizeof buf, "%s/tests/data/%s", dir ? dir : ".", name);
    return buf;
}

static void test_regedit5_export_sets_system_pages(void **state)
{
    (void)state;
    ptl_config cfg;
    ptl_config_init(&cfg);
    assert_int_equal(ptl_registry_import(&cfg, data_path("memory-management-v5.reg")), 0);
    assert_int_equal(cfg.system_pages, 40000); /* dword:00009c40 */
    assert_int_equal(cfg.track_ptes, 1);
    assert_int_equal(cfg.paged_pool_size, 0);
    /* the subkey's SystemPages (PrefetchParameters) was not taken */
    ptl_machine *m = ptl_boot(&cfg);
    assert_non_null(m);
    /* 40000 asked, stretched to the 4 MB boundary below nonpaged pool expansion */
    assert_true(ptl_total_system_ptes(m) >= 40000 && ptl_total_system_ptes(m) < 40000 + 1024);
    ptl_shutdown(m);
}

static void test_regedit4_export(void **state)
{
    (void)state;
    ptl_config cfg;
    ptl_config_init(&cfg);
    assert_int_equal(ptl_registry_import(&cfg, data_path("memory-management-regedit4.reg")), 0);
    assert_int_equal(cfg.system_pages, 50000);        /* not the parent key's 5 */
    assert_int_equal(cfg.paged_pool_size, 32u << 20); /* dword:02000000 */
    ptl_machine *m = ptl_boot(&cfg);
    assert_non_null(m);
    assert_true(ptl_total_system_ptes(m) >= 50000);
    ptl_shutdown(m);
}

static void expect_error(const char *text, const char *needle)
{
    ptl_config cfg, before;
    ptl_config_init(&cfg);
    cfg.system_pages = 1234;
    before = cfg;
    assert_int_equal(ptl_registry_import_text(&cfg, text, strlen(text), "bad.reg"), -1);
    if (!strstr(ptl_error(), needle)) {
        fprintf(stderr, "error '%s' lacks '%s'\n", ptl_error(), needle);
        fail();
    }
    assert_memory_equal(&cfg, &before, sizeof cfg); /* unchanged */
}

static void test_errors_name_the_line(void **state)
{
    (void)state;
    expect_error("", "empty");
    expect_error("REGEDIT5\n", "bad.reg:1: not a .reg file");
    expect_error("REGEDIT4\n\n[HKEY_LOCAL_MACHINE\\SYSTEM\n", "bad.reg:3: a key line must end");
    expect_error("REGEDIT4\n[HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Control\\Session "
                 "Manager\\Memory Management]\n\"SystemPages\"=dword:xyz\n",
                 "bad.reg:3: \"SystemPages\"=dword: needs 1 to 8 hex digits");
    expect_error("REGEDIT4\n[HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Control\\Session "
                 "Manager\\Memory Management]\n\"SystemPages\"=\"40000\"\n",
                 "bad.reg:3: \"SystemPages\" must be a dword");
    expect_error("REGEDIT4\n[HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Control\\Session "
                 "Manager\\Memory Management]\n\"SystemPages\"=dword:1\nSystemPages=2\n",
                 "bad.reg:4: expected a [key]");
    expect_error("REGEDIT4\n[HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Control\\Session "
                 "Manager\\Memory Management]\n\"SystemPages\"=dword:123456789\n",
                 "1 to 8 hex digits");
    ptl_config cfg;
    ptl_config_init(&cfg);
    assert_int_equal(ptl_registry_import(&cfg, "/nonexistent/x.reg"), -1);
    assert_non_null(strstr(ptl_error(), "cannot open"));
}

static void test_case_and_control_set(void **state)
{
    (void)state;
    const char text[] = "REGEDIT4\r\n[hkey_local_machine\\system\\ControlSet001\\control\\session "
                        "manager\\memory management]\r\n\"systempages\"=dword:FFFFFFFF\r\n";
    ptl_config cfg;
    ptl_config_init(&cfg);
    assert_int_equal(ptl_registry_import_text(&cfg, text, sizeof text - 1, "x.reg"), 0);
    assert_int_equal(cfg.system_pages, 0xFFFFFFFFu);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_regedit5_export_sets_system_pages),
        cmocka_unit_test(test_regedit4_export),
        cmocka_unit_test(test_errors_name_the_line),
        cmocka_unit_test(test_case_and_control_set),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
