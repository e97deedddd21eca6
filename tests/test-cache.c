/* test-cache.c - the cache-attribute tracker against a plain model of what it records.
 *
 * ptl__cache_conflict answers "does mapping [pfn, pfn+n) with this attribute meet a frame
 * already mapped with another?" by cutting the span at the boundaries of the ranges that
 * overlap it, and ptl__cache_current answers for one frame. Their twin here is a model
 * kept by the test alone, with none of cache.c's code: a list of the range records in the
 * order they were made, per-frame counts with the attribute and stamp of the latest
 * reference, and the rule of cache.c's header (a frame's attribute is its per-frame
 * record's when that is newer than the last range covering it, else that range's, else
 * MmCached for RAM in use). Random records over RAM in use (below the high-water mark),
 * never-used RAM and device memory, taken back in any order (a run now and then with
 * another attribute than it was made with, as MmUnmapIoSpace does for the types the PTE
 * bits fold into cached), and random questions: both must give the same verdict, the same
 * first frame and the same attribute there, and ptl__cache_check must hold throughout.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include "internal.h"
#include "ptltest.h"

#define MAX_RUNS 256

typedef struct model_run {
    uint32_t pfn, n, seq;
    int attr;
} model_run;

typedef struct model {
    uint32_t frames; /* per-frame arrays cover [0, frames) */
    uint32_t *count, *seq;
    int *attr;
    model_run runs[MAX_RUNS]; /* in the order they were made */
    uint32_t nruns, clock;
} model;

static void model_ref(model *md, uint32_t pfn, uint32_t n, int attr)
{
    for (uint32_t f = pfn; f < pfn + n; f++) {
        md->count[f]++;
        md->attr[f] = attr; /* the latest reference's attribute is in force */
        md->seq[f] = ++md->clock;
    }
}

static void model_unref(model *md, uint32_t pfn, uint32_t n)
{
    for (uint32_t f = pfn; f < pfn + n; f++)
        md->count[f]--;
}

static void model_ref_run(model *md, uint32_t pfn, uint32_t n, int attr)
{
    md->runs[md->nruns++] = (model_run){pfn, n, ++md->clock, attr};
}

/* the most recent run of that span and attribute goes; with none, the most recent of
 * the span */
static void model_unref_run(model *md, uint32_t pfn, uint32_t n, int attr)
{
    int64_t at = -1;
    for (uint32_t i = 0; i < md->nruns; i++)
        if (md->runs[i].pfn == pfn && md->runs[i].n == n && md->runs[i].attr == attr)
            at = i;
    if (at < 0)
        for (uint32_t i = 0; i < md->nruns; i++)
            if (md->runs[i].pfn == pfn && md->runs[i].n == n)
                at = i;
    assert_true(at >= 0);
    for (uint32_t i = (uint32_t)at; i + 1 < md->nruns; i++)
        md->runs[i] = md->runs[i + 1];
    md->nruns--;
}

static int model_current(const model *md, ptl_machine *m, uint32_t f)
{
    const model_run *last = NULL;
    for (uint32_t i = 0; i < md->nruns; i++)
        if (md->runs[i].pfn <= f && f < md->runs[i].pfn + md->runs[i].n)
            last = &md->runs[i];
    if (f < md->frames && md->count[f] && (!last || md->seq[f] > last->seq))
        return md->attr[f];
    if (last)
        return last->attr;
    if (f < m->phys.ram_pages && f < m->phys.hwm && m->phys.pfn[f].Use != PTL_USE_FREE)
        return 1;
    return -1;
}

static int model_conflict(const model *md, ptl_machine *m, uint32_t pfn, uint32_t n, int attr,
                          uint32_t *at, int *existing)
{
    for (uint32_t f = pfn; f < pfn + n; f++) {
        int cur = model_current(md, m, f);
        if (cur >= 0 && cur != attr) {
            *at = f;
            *existing = cur;
            return 1;
        }
    }
    return 0;
}

/* where records and questions fall: low RAM across the high-water mark, or the top of
 * RAM into the device memory past it */
static uint32_t somewhere(ptl_machine *m, uint32_t spread)
{
    uint32_t base = ptltest_rnd() % 2 ? 0 : m->phys.ram_pages - 512;
    return base + ptltest_rnd() % spread;
}

static void test_conflict_matches_the_model(void **state)
{
    (void)state;
    ptltest_seed_rng("cache model");
    ptl_config cfg;
    ptl_config_init(&cfg);
    cfg.ram_bytes = 16u << 20;
    ptl_machine *m = ptl_boot(&cfg);
    assert_non_null(m);
    /* the model starts from nothing: so must the tracker */
    assert_int_equal(m->cache.nranges, 0);
    assert_int_equal(m->cache.live, 0);
    assert_true(m->phys.hwm > 64 && m->phys.hwm < 1024); /* low RAM: in use, then free */
    model md = {0};
    md.frames = m->phys.ram_pages + 4096;
    md.count = calloc(md.frames, sizeof *md.count);
    md.seq = calloc(md.frames, sizeof *md.seq);
    md.attr = calloc(md.frames, sizeof *md.attr);
    assert_true(md.count && md.seq && md.attr);
    uint32_t conflicts = 0, questions = 0, in_use_answers = 0, folded_unmaps = 0;
    typedef struct frame_ref {
        uint32_t pfn, n;
    } frame_ref;
    frame_ref refs[MAX_RUNS];
    uint32_t nrefs = 0;
    for (int step = 0; step < 30000; step++) {
        uint32_t what = ptltest_rnd() % 10;
        if (what < 1 && md.nruns < MAX_RUNS) { /* a range */
            uint32_t pfn = somewhere(m, 1024), n = 1 + ptltest_rnd() % 300;
            int attr = (int)(ptltest_rnd() % 6);
            ptl__cache_ref_run(m, pfn, n, attr);
            model_ref_run(&md, pfn, n, attr);
        } else if (what < 2 && nrefs < MAX_RUNS) { /* frames one at a time */
            uint32_t pfn = somewhere(m, 1024), n = 1 + ptltest_rnd() % 40;
            int attr = (int)(ptltest_rnd() % 6);
            ptl__cache_ref(m, pfn, n, attr);
            model_ref(&md, pfn, n, attr);
            refs[nrefs++] = (frame_ref){pfn, n};
        } else if (what < 3 && md.nruns) { /* a range taken back */
            const model_run *r = &md.runs[ptltest_rnd() % md.nruns];
            uint32_t pfn = r->pfn, n = r->n;
            int attr = r->attr;
            if (ptltest_rnd() % 4 == 0) { /* the attribute as the PTE bits tell it */
                attr = (int)(ptltest_rnd() % 6);
                folded_unmaps++;
            }
            ptl__cache_unref_run(m, pfn, n, attr);
            model_unref_run(&md, pfn, n, attr);
        } else if (what < 4 && nrefs) { /* per-frame references taken back */
            uint32_t k = ptltest_rnd() % nrefs;
            ptl__cache_unref(m, refs[k].pfn, refs[k].n);
            model_unref(&md, refs[k].pfn, refs[k].n);
            refs[k] = refs[--nrefs];
        } else { /* questions */
            uint32_t pfn = somewhere(m, 1100), n = 1 + ptltest_rnd() % 400;
            int attr = (int)(ptltest_rnd() % 6);
            uint32_t at = 0, at_model = 0;
            int ex = -2, ex_model = -2;
            int got = ptl__cache_conflict(m, pfn, n, attr, &at, &ex);
            int want = model_conflict(&md, m, pfn, n, attr, &at_model, &ex_model);
            if (got != want || (got && (at != at_model || ex != ex_model)))
                fail_msg("step %d: [%#x, +%u) as %d: the tracker says %d at %#x (%d), the model "
                         "%d at %#x (%d)",
                         step, pfn, n, attr, got, at, ex, want, at_model, ex_model);
            uint32_t f = pfn + ptltest_rnd() % n;
            int cur = ptl__cache_current(m, f), cur_model = model_current(&md, m, f);
            if (cur != cur_model)
                fail_msg("step %d: frame %#x is %d, the model says %d", step, f, cur, cur_model);
            conflicts += (uint32_t)got;
            questions++;
            in_use_answers += f < m->phys.hwm && cur_model == 1 && md.count[f] == 0;
        }
        if (step % 1000 == 0)
            assert_int_equal(ptl__cache_check(m, stderr), 0);
    }
    /* every kind of answer and path was exercised */
    printf("%u conflicts in %u questions; %u frames answered as RAM in use; %u unmaps with "
           "another attribute\n",
           conflicts, questions, in_use_answers, folded_unmaps);
    assert_true(conflicts > 100 && questions - conflicts > 100);
    assert_true(in_use_answers > 100 && folded_unmaps > 100);
    free(md.count);
    free(md.seq);
    free(md.attr);
    ptl_shutdown(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conflict_matches_the_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
