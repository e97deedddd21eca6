/* test-report.c - the HTML report (src/report.c): one self-contained file, stable ids for
 * the charts, one <rect> per run of equal colour in the fragmentation maps, text escaped,
 * the STOP shown when there is one, I/O failures reported.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <cmocka.h>

#include <ptelab/ptelab.h>
#include <ptelab/wdm.h>

#include "internal.h"

#define ADAPTER  0xE0000000ull
#define ODD_NAME "bad<&>\"name\".sys"

/* ---- helpers -------------------------------------------------------------------------- */

static char *write_and_read(ptl_machine *m, const char *title, size_t *len_out)
{
    char path[] = "/tmp/ptelab-test-report-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(ptl_report_write(m, path, title), 0);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    assert_true(len > 0);
    char *text = malloc((size_t)len + 1);
    assert_non_null(text);
    assert_int_equal(fread(text, 1, (size_t)len, f), (size_t)len);
    text[len] = '\0';
    fclose(f);
    unlink(path);
    if (len_out)
        *len_out = (size_t)len;
    return text;
}

static size_t count(const char *hay, const char *needle, const char *end)
{
    size_t n = 0, k = strlen(needle);
    for (const char *p = strstr(hay, needle); p && (!end || p < end); p = strstr(p + k, needle))
        n++;
    return n;
}

static int contains_ci(const char *hay, const char *needle)
{
    size_t k = strlen(needle);
    for (const char *p = hay; *p; p++)
        if (strncasecmp(p, needle, k) == 0)
            return 1;
    return 0;
}

/* The text of the element <svg id="ID" ...>...</svg>: [*start, *end). */
static void svg_span(const char *html, const char *id, const char **start, const char **end)
{
    char pat[64];
    snprintf(pat, sizeof pat, "<svg id=\"%s\"", id);
    *start = strstr(html, pat);
    assert_non_null(*start);
    *end = strstr(*start, "</svg>");
    assert_non_null(*end);
}

/* ---- the scenario ---------------------------------------------------------------------- */

typedef struct scen {
    PVOID va[64];
    int n;
} scen;

static void map_some(void *arg)
{
    scen *s = arg;
    PHYSICAL_ADDRESS pa;
    pa.QuadPart = ADAPTER;
    for (int i = 0; i < 40; i++)
        s->va[s->n++] = MmMapIoSpace(pa, (1 + i % 3) * PAGE_SIZE, MmNonCached);
    /* holes: every third mapping goes back */
    for (int i = 0; i < 40; i += 3)
        MmUnmapIoSpace(s->va[i], (1 + i % 3) * PAGE_SIZE);
}

static void crash(void *arg)
{
    (void)arg;
    KeBugCheckEx(0xE2, 0x11, 0x22, 0x33, 0x44);
}

static ptl_machine *scenario(int with_stop, ptl_driver **drv_out)
{
    ptl_config cfg;
    ptl_config_init(&cfg);
    cfg.ram_bytes = 32ull << 20;
    ptl_machine *m = ptl_boot(&cfg);
    assert_non_null(m);
    assert_int_equal(ptl_adapter_add(m, PCIBus, 0, ADAPTER, 1u << 20), 0);
    ptl_process *p = ptl_process_create(m, "app.exe");
    assert_non_null(p);
    ptl_driver *d = ptl_driver_load(m, ODD_NAME, 12288);
    assert_non_null(d);
    ptl_report_snapshot(m, "after <boot>");
    ptl_thread *t = ptl_thread_create(m, p);
    assert_non_null(t);
    scen s;
    memset(&s, 0, sizeof s);
    ptl_stop stop;
    assert_int_equal(ptl_call(m, p, d, map_some, &s, &stop), 0);
    ptl_report_snapshot(m, "mapped & holed");
    if (with_stop)
        assert_int_equal(ptl_call(m, p, d, crash, NULL, &stop), 0xE2);
    if (drv_out)
        *drv_out = d;
    return m;
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_self_contained(void **state)
{
    (void)state;
    ptl_machine *m = scenario(1, NULL);
    size_t len;
    char *html = write_and_read(m, "report <test> & more", &len);
    /* one file that needs nothing else */
    assert_memory_equal(html, "<!DOCTYPE html>", 15);
    assert_non_null(strstr(html, "</html>"));
    assert_false(contains_ci(html, "http://"));
    assert_false(contains_ci(html, "https://"));
    assert_false(contains_ci(html, "<script"));
    assert_false(contains_ci(html, "<link"));
    assert_false(contains_ci(html, "<img"));
    assert_false(contains_ci(html, "url("));
    assert_non_null(strstr(html, "@media print"));
    /* the chart ids the browser test relies on */
    assert_non_null(strstr(html, "<svg id=\"timeline\""));
    assert_non_null(strstr(html, "<svg id=\"layout\""));
    assert_non_null(strstr(html, "<svg id=\"fragmap-0\""));
    assert_non_null(strstr(html, "<svg id=\"fragmap-1\""));
    assert_null(strstr(html, "<svg id=\"fragmap-2\""));
    /* the timeline: a line, a legend, the STOP marked */
    const char *a, *b;
    svg_span(html, "timeline", &a, &b);
    assert_int_equal(count(a, "<polyline class=\"free\"", b), 1);
    assert_int_equal(count(a, "class=\"legend\"", b), 1);
    assert_int_equal(count(a, "<g class=\"stop\"><title>", b), 1);
    /* the layout: every region drawn */
    const ptl_region *r;
    int nr = ptl_layout_regions(m, &r);
    svg_span(html, "layout", &a, &b);
    assert_true(count(a, "class=\"rg\"", b) >= (size_t)nr);
    free(html);
    ptl_shutdown(m);
}

static void test_one_rect_per_run(void **state)
{
    (void)state;
    ptl_machine *m = scenario(0, NULL);
    char *html = write_and_read(m, "runs", NULL);
    assert_int_equal(m->perf.nsnaps, 2);
    for (size_t k = 0; k < m->perf.nsnaps; k++) {
        const ptl__snapshot *s = &m->perf.snaps[k];
        size_t runs = s->n ? 1 : 0;
        for (uint32_t i = 1; i < s->n; i++)
            runs += s->uses[i] != s->uses[i - 1];
        size_t rows = (s->n + 1023) / 1024 + 1;
        char id[32];
        snprintf(id, sizeof id, "fragmap-%zu", k);
        const char *a, *b;
        svg_span(html, id, &a, &b);
        size_t rects = count(a, "<rect class=\"u", b);
        /* at least one rect per colour change, and runs are merged (a row break at most
         * splits one) */
        assert_true(rects >= runs);
        assert_true(rects <= runs + rows);
        if (k == 1)
            assert_true(runs >= 10); /* the holes show */
    }
    free(html);
    ptl_shutdown(m);
}

/* With /USERVA the pool has two segments with a junction index between them; the map
 * labels each run with its own addresses: a driver image loaded into the second segment
 * shows at the address it was loaded at. */
static void map_all_of_the_extra_segment(void *arg)
{
    (void)arg;
    PHYSICAL_ADDRESS pa;
    pa.QuadPart = 0xC0000000ll;
    MmMapIoSpace(pa, 69632u * PAGE_SIZE, MmNonCached);
}

static void test_userva_segments_are_placed(void **state)
{
    (void)state;
    ptl_config cfg;
    ptl_config_init(&cfg);
    cfg.ram_bytes = 512ull << 20;
    cfg.boot_3gb = 1;
    cfg.userva_mb = 2800;
    ptl_machine *m = ptl_boot(&cfg);
    assert_non_null(m);
    assert_int_equal(ptl_adapter_add(m, PCIBus, 0, 0xC0000000ull, 0x20000000ull), 0);
    ptl_stop stop;
    assert_int_equal(ptl_call(m, NULL, NULL, map_all_of_the_extra_segment, NULL, &stop), 0);
    ptl_driver *d = ptl_driver_load(m, "x.sys", 65536);
    assert_non_null(d);
    ptl_report_snapshot(m, "after load");
    char *html = write_and_read(m, "userva", NULL);
    char want[64];
    snprintf(want, sizeof want, "%08X-%08X: 16 PTEs, driver image, x.sys", ptl_driver_base(d),
             ptl_driver_base(d) + 0xFFFFu);
    if (!strstr(html, want))
        fail_msg("'%s' is not in the report", want);
    free(html);
    ptl_shutdown(m);
}

static void test_escaping(void **state)
{
    (void)state;
    ptl_driver *d;
    ptl_machine *m = scenario(0, &d);
    char *html = write_and_read(m, "A <b> & \"C\"", NULL);
    assert_string_equal(ptl_driver_name(d), ODD_NAME);
    assert_null(strstr(html, ODD_NAME));
    assert_null(strstr(html, "<b> &"));
    assert_non_null(strstr(html, "bad&lt;&amp;&gt;&quot;name&quot;.sys"));
    assert_non_null(strstr(html, "<title>A &lt;b&gt; &amp; &quot;C&quot;</title>"));
    assert_non_null(strstr(html, "after &lt;boot&gt;"));
    assert_non_null(strstr(html, "mapped &amp; holed"));
    /* the driver is in the table, with the PTEs it holds */
    const char *row = strstr(html, "<table id=\"drivers\">");
    assert_non_null(row);
    assert_non_null(strstr(row, "bad&lt;&amp;&gt;&quot;name&quot;.sys"));
    free(html);
    ptl_shutdown(m);
}

static void test_stop_shown_when_there_is_one(void **state)
{
    (void)state;
    ptl_machine *m = scenario(1, NULL);
    char *html = write_and_read(m, "stopped", NULL);
    const char *screen = strstr(html, "id=\"stop-screen\"");
    assert_non_null(screen);
    assert_non_null(
        strstr(screen, "*** STOP: 0x000000E2 (0x00000011,0x00000022,0x00000033,0x00000044)"));
    assert_non_null(strstr(screen, "MANUALLY_INITIATED_CRASH"));
    free(html);
    ptl_shutdown(m);

    m = scenario(0, NULL);
    html = write_and_read(m, "running", NULL);
    assert_null(strstr(html, "id=\"stop-screen\""));
    assert_non_null(strstr(html, "The machine did not stop."));
    free(html);
    ptl_shutdown(m);
}

static void test_event_log_is_the_last_200(void **state)
{
    (void)state;
    ptl_machine *m = scenario(0, NULL);
    char *html = write_and_read(m, "events", NULL);
    const char *t = strstr(html, "<table id=\"events\">");
    assert_non_null(t);
    size_t rows = count(t, "<tr class=\"ev-", NULL);
    size_t ne = ptl_event_count(m);
    assert_int_equal(rows, ne < 200 ? ne : 200);
    ptl_event last;
    assert_int_equal(ptl_event_get(m, ne - 1, &last), 0);
    free(html);
    ptl_shutdown(m);
}

/* Each snapshot costs five bytes a system PTE and a scenario may take them in a loop: a
 * machine keeps at most PTL_SNAPSHOTS_MAX, the newest replacing the last, and the report
 * says how many were replaced. */
static void test_snapshots_are_bounded(void **state)
{
    (void)state;
    ptl_config cfg;
    ptl_config_init(&cfg);
    ptl_machine *m = ptl_boot(&cfg);
    assert_non_null(m);
    char label[32];
    for (int i = 0; i < PTL_SNAPSHOTS_MAX + 44; i++) {
        snprintf(label, sizeof label, "snap %d", i);
        ptl_report_snapshot(m, label);
    }
    assert_int_equal(m->perf.nsnaps, PTL_SNAPSHOTS_MAX);
    assert_int_equal(m->perf.snaps_replaced, 44);
    assert_string_equal(m->perf.snaps[PTL_SNAPSHOTS_MAX - 2].label, "snap 254");
    assert_string_equal(m->perf.snaps[PTL_SNAPSHOTS_MAX - 1].label, "snap 299");
    char *html = write_and_read(m, "snapshots", NULL);
    assert_non_null(strstr(html, "44 more snapshots were taken than the 256 kept"));
    assert_non_null(strstr(html, "snap 299"));
    assert_null(strstr(html, "snap 298"));
    free(html);
    ptl_shutdown(m);
}

static void test_failures(void **state)
{
    (void)state;
    ptl_machine *m = scenario(0, NULL);
    assert_int_equal(ptl_report_write(m, "/nonexistent-dir/x/report.html", "t"), -1);
    assert_non_null(strstr(ptl_error(), "/nonexistent-dir/x/report.html"));
    assert_int_equal(ptl_report_write(m, NULL, "t"), -1);
    assert_int_equal(ptl_report_write(NULL, "/tmp/never.html", "t"), -1);
#ifdef __linux__
    if (access("/dev/full", W_OK) == 0) {
        assert_int_equal(ptl_report_write(m, "/dev/full", "t"), -1);
        assert_non_null(strstr(ptl_error(), "/dev/full"));
    }
#endif
    ptl_shutdown(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_self_contained),
        cmocka_unit_test(test_one_rect_per_run),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_userva_segments_are_placed),
        cmocka_unit_test(test_stop_shown_when_there_is_one),
        cmocka_unit_test(test_event_log_is_the_last_200),
        cmocka_unit_test(test_snapshots_are_bounded),
        cmocka_unit_test(test_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
