/* plan.c - `ptelab plan`: the command line, the terminal table and the HTML plan page.
 * The simulation, the workload format and the shard files are src/plan.c's; the usage is
 * below and in docs/plan.md. */
#include "plan.h"
#include "cli.h"

#include "../src/plan.h"
#include "../src/report.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EX_USAGE_    64
#define EX_DATA_     65
#define EX_SOFTWARE_ 70

static const char plan_usage[] =
    "usage: ptelab plan [WORKLOAD.lua] [options]\n"
    "       ptelab plan merge [--format table|jsonl] [--report OUT.html] SHARD.jsonl...\n"
    "\n"
    "Simulates a workload on the system PTE pool many times over a sweep of SystemPages\n"
    "values and recommends the smallest whose failure probability is below --target.\n"
    "The workload comes from a Lua file (docs/plan.md) and/or the options below.\n"
    "\n"
    "machine (override the file):\n"
    "  --ram SIZE            RAM, e.g. 512M, 1G (default 64M)\n"
    "  --profile P           nt4sp3, nt4sp4 (default), win2000, winxp\n"
    "  --3gb | --no-3gb      boot with or without /3GB\n"
    "  --userva MB           /USERVA=MB (with --3gb)\n"
    "workload (added to the file's):\n"
    "  --name TEXT           the workload's name\n"
    "  --duration TIME       simulated time per trial, e.g. 60, 10min (default 60 s)\n"
    "  --adapter SIZE[:MAP][xN]   N adapters of SIZE aperture, MAP bytes (default all)\n"
    "                        mapped with MmMapIoSpace at boot\n"
    "  --driver SIZE[xN]     N driver images of SIZE\n"
    "  --threads N[:RATE:LIFE]    N kernel stacks held, RATE more per second living LIFE\n"
    "                        on average\n"
    "  --map API:RATE:SIZE:LIFE   RATE requests per second of SIZE (or MIN-MAX, uniform)\n"
    "                        held LIFE on average (exponential); API as in docs/plan.md,\n"
    "                        e.g. MmMapLockedPages (must succeed), MmMapIoSpace\n"
    "sweep:\n"
    "  --values V,V,...      SystemPages values (numbers, computed, max); default: 12 from\n"
    "                        half the computed value to the maximum, plus computed and max\n"
    "  --steps N             points of the default sweep\n"
    "  --trials N            trials per value (default 1000)\n"
    "  --seed N              base seed (default 1)\n"
    "  --target P            failure probability to stay below (default 1e-3)\n"
    "run and output:\n"
    "  --jobs N              worker threads (default 1); results do not depend on N\n"
    "  --shard I/N           run only shard I of N (0-based); needs --format jsonl\n"
    "  --format table|jsonl  the result as a table (default) or JSON lines (for merge)\n"
    "  --report OUT.html     also write the plan page\n"
    "  --no-progress         no progress bar (it is shown when stderr is a terminal)\n"
    "\n"
    "Exit status: 0 done, 64 usage, 65 data (workload, machine, shard files), 70 output.\n";

static int plan_usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "ptelab plan: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(ptelab plan --help shows the usage)\n");
    return EX_USAGE_;
}

/* "SIZE" or "MIN-MAX" -> a size distribution */
static int parse_size_dist(const char *s, ptl_plan_dist *d)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%s", s);
    char *dash = strchr(buf, '-');
    memset(d, 0, sizeof *d);
    if (dash) {
        *dash = 0;
        d->kind = PTL_DIST_UNIFORM;
        return ptl_plan_parse_size(buf, &d->a) || ptl_plan_parse_size(dash + 1, &d->b) ||
                       d->b < d->a
                   ? -1
                   : 0;
    }
    d->kind = PTL_DIST_CONST;
    return ptl_plan_parse_size(buf, &d->a);
}

/* "X" or "XxN" */
static int split_count(char *s, uint64_t *count)
{
    *count = 1;
    char *x = strrchr(s, 'x');
    if (x && x != s) {
        if (ptl_cli_parse_u64(x + 1, count) || *count == 0 || *count > 10000000)
            return -1;
        *x = 0;
    }
    return 0;
}

static int add_option_stream(ptl_plan_workload *w, const char *opt, const char *val)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", val);
    uint64_t count;
    if (strcmp(opt, "--adapter") == 0) {
        if (split_count(buf, &count))
            return -1;
        char *colon = strchr(buf, ':');
        if (colon)
            *colon++ = 0;
        double aperture;
        if (ptl_plan_parse_size(buf, &aperture) || aperture <= 0)
            return -1;
        ptl_plan_stream *s = ptl_plan_workload_add(w, "adapter", "MmMapIoSpace");
        if (!s)
            return -1;
        s->aperture = 1;
        s->initial = (uint32_t)count;
        s->size.a = aperture;
        if (colon && parse_size_dist(colon, &s->size))
            return -1;
        return 0;
    }
    if (strcmp(opt, "--driver") == 0) {
        double image;
        if (split_count(buf, &count) || ptl_plan_parse_size(buf, &image) || image <= 0)
            return -1;
        ptl_plan_stream *s = ptl_plan_workload_add(w, "driver", "image");
        if (!s)
            return -1;
        s->initial = (uint32_t)count;
        s->size.a = image;
        return 0;
    }
    if (strcmp(opt, "--threads") == 0) {
        char *f[3] = {buf, NULL, NULL};
        for (int i = 1; i < 3; i++) {
            f[i] = f[i - 1] ? strchr(f[i - 1], ':') : NULL;
            if (f[i])
                *f[i]++ = 0;
        }
        uint64_t n;
        if (ptl_cli_parse_u64(f[0], &n) || n > 10000000 || (f[1] && !f[2]))
            return -1;
        ptl_plan_stream *s = ptl_plan_workload_add(w, "threads", "stack");
        if (!s)
            return -1;
        s->initial = (uint32_t)n;
        if (f[1]) {
            double life;
            char *end;
            s->rate = strtod(f[1], &end);
            if (*end || !(s->rate >= 0 && s->rate <= PTL_PLAN_MAX_RATE) ||
                ptl_plan_parse_time(f[2], &life))
                return -1;
            s->lifetime.kind = PTL_DIST_EXP;
            s->lifetime.a = life;
        }
        return 0;
    }
    /* --map API:RATE:SIZE:LIFE */
    char *f[4] = {buf, NULL, NULL, NULL};
    for (int i = 1; i < 4; i++) {
        f[i] = f[i - 1] ? strchr(f[i - 1], ':') : NULL;
        if (f[i])
            *f[i]++ = 0;
    }
    if (!f[3])
        return -1;
    ptl_plan_stream *s = ptl_plan_workload_add(w, f[0], f[0]);
    if (!s)
        return -1;
    char *end;
    s->rate = strtod(f[1], &end);
    double life;
    if (*end || !(s->rate > 0 && s->rate <= PTL_PLAN_MAX_RATE) || parse_size_dist(f[2], &s->size) ||
        ptl_plan_parse_time(f[3], &life))
        return -1;
    s->lifetime.kind = PTL_DIST_EXP;
    s->lifetime.a = life;
    return 0;
}

/* ---- progress ------------------------------------------------------------------------- */

static void progress_bar(void *ctx, uint64_t done, uint64_t total)
{
    (void)ctx;
    int width = 40;
    int filled = total ? (int)((double)done / (double)total * width) : width;
    char bar[64];
    for (int i = 0; i < width; i++)
        bar[i] = i < filled ? '#' : '.';
    bar[width] = 0;
    fprintf(stderr, "\r[%s] %3d%% %llu/%llu trials", bar,
            total ? (int)(100.0 * (double)done / (double)total) : 100, (unsigned long long)done,
            (unsigned long long)total);
    if (done >= total)
        fprintf(stderr, "\r%*s\r", width + 40, "");
    fflush(stderr);
}

/* ---- the table ------------------------------------------------------------------------- */

static void fmt_prob(char *buf, size_t len, const ptl_plan_point *pt, uint64_t count)
{
    if (!pt->fits)
        snprintf(buf, len, "-");
    else if (count == 0)
        snprintf(buf, len, "0");
    else
        snprintf(buf, len, "%.4f", ptl_plan_prob(pt, count));
}

static void fmt_value(char *buf, size_t len, const ptl_plan_point *pt)
{
    if (pt->system_pages == 0)
        snprintf(buf, len, "0 (computed)");
    else if (pt->system_pages == 0xFFFFFFFFu)
        snprintf(buf, len, "max");
    else
        snprintf(buf, len, "%u", pt->system_pages);
}

static void machine_line(const ptl_plan *p, char *buf, size_t len)
{
    char boot[48] = "";
    if (p->boot_3gb && p->userva_mb)
        snprintf(boot, sizeof boot, ", /3GB /USERVA=%u", p->userva_mb);
    else if (p->boot_3gb)
        snprintf(boot, sizeof boot, ", /3GB");
    snprintf(buf, len, "%llu MB RAM, %s%s; computed system PTEs %u, at most %u (SystemPages max)",
             (unsigned long long)(p->ram_bytes >> 20), ptl_plan_profile_name(p->profile), boot,
             p->computed_system_ptes, p->max_system_pages);
}

static void print_point_row(FILE *out, const ptl_plan_point *pt, const char *mark)
{
    char v[32], a[16], b[16], c[16], d[16];
    fmt_value(v, sizeof v, pt);
    fmt_prob(a, sizeof a, pt, pt->fail_nofree);
    fmt_prob(b, sizeof b, pt, pt->fail_frag);
    fmt_prob(c, sizeof c, pt, pt->stop);
    fmt_prob(d, sizeof d, pt, pt->fail_any);
    if (!pt->fits) {
        fprintf(out, "%s %-14s %8s  %s\n", mark, v, "-", "does not fit the address space");
        return;
    }
    double mean = pt->trials ? (double)pt->peak_sum / (double)pt->trials : 0;
    fprintf(out, "%s %-14s %8u %9llu %9.0f %10s %8s %8s %8s\n", mark, v, pt->seg0 + pt->seg1,
            (unsigned long long)pt->peak_max, mean, a, b, c, d);
}

static void print_table(const ptl_plan *p, FILE *out)
{
    char m[256];
    machine_line(p, m, sizeof m);
    fprintf(out, "ptelab plan: %s\n", p->name);
    fprintf(out, "machine: %s\n", m);
    fprintf(out, "%llu trials of %g s per value, seed %llu, target P(fail) < %g\n\n",
            (unsigned long long)p->trials, p->duration, (unsigned long long)p->seed, p->target);
    fprintf(out, "  %-14s %8s %9s %9s %10s %8s %8s %8s\n", "SystemPages", "PTEs", "peak max",
            "peak mean", "P(no free)", "P(frag)", "P(STOP)", "P(fail)");
    int rec = ptl_plan_recommend(p);
    const ptl_plan_point *largest = NULL;
    for (int i = 0; i < p->npoints; i++) {
        const ptl_plan_point *pt = &p->points[i];
        if (pt->what_if)
            continue;
        print_point_row(out, pt, i == rec ? ">" : " ");
        if (pt->fits)
            largest = pt;
    }
    fprintf(out, "\n");
    if (rec >= 0) {
        const ptl_plan_point *pt = &p->points[rec];
        char v[32];
        fmt_value(v, sizeof v, pt);
        fprintf(out,
                "recommendation: SystemPages = %s (%u system PTEs): P(fail) %.4g < %g in %llu "
                "trials\n",
                v, pt->seg0 + pt->seg1, ptl_plan_prob(pt, pt->fail_any), p->target,
                (unsigned long long)pt->trials);
        if (pt->fail_any == 0 && 3.0 / (double)pt->trials > p->target)
            fprintf(out,
                    "note: no trial failed, but %llu trials only bound P(fail) below %.2g (95%%); "
                    "use --trials %.0f or more to show it is below %g\n",
                    (unsigned long long)pt->trials,
                    pt->trials >= 3 ? 3.0 / (double)pt->trials : 1.0, /* the rule of three */
                    3.0 / p->target, p->target);
        if (pt->system_pages == 0)
            fprintf(out, "the computed default is enough: leave SystemPages at 0\n");
        return;
    }
    fprintf(out, "no SystemPages value fits: ");
    if (largest)
        fprintf(out,
                "even the largest pool (%u PTEs) fails with P(fail) %.4g >= %g; the peak "
                "use reached %llu PTEs\n",
                largest->seg0 + largest->seg1, ptl_plan_prob(largest, largest->fail_any), p->target,
                (unsigned long long)largest->peak_max);
    else
        fprintf(out, "none of the values given fits the address space\n");
    fprintf(out, "what would (each at SystemPages max):\n");
    int any = 0;
    for (int i = 0; i < p->npoints; i++) {
        const ptl_plan_point *pt = &p->points[i];
        if (!pt->what_if)
            continue;
        any = 1;
        double pf = ptl_plan_prob(pt, pt->fail_any);
        fprintf(out, "  %-44s %8u PTEs  P(fail) %-8.4g %s\n", ptl_plan_point_label(pt) + 9,
                pt->seg0 + pt->seg1, pf,
                !pt->fits        ? "(does not boot)"
                : pf < p->target ? "fits"
                                 : "not enough alone");
    }
    if (!any)
        fprintf(out, "  (no what-if applies: fewer drivers, threads or buffers)\n");
}

/* ---- the plan page ---------------------------------------------------------------------- */

/* the chart's scale without libm (the library provides the logarithm) */
static double log10_(double x)
{
    return ptl_plan_log(x) / 2.302585092994046;
}

static double pow10_(int d)
{
    double v = 1;
    for (; d > 0; d--)
        v *= 10;
    for (; d < 0; d++)
        v /= 10;
    return v;
}

static int write_html(const ptl_plan *p, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    char m[256];
    machine_line(p, m, sizeof m);
    int rec = ptl_plan_recommend(p);
    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>ptelab plan: ",
          f);
    ptl__html_escape(f, p->name);
    fputs("</title>\n<style>body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}"
          "table{border-collapse:collapse}td,th{padding:2px 10px;text-align:right;border-bottom:"
          "1px solid #ddd}th{background:#f4f4f4}tr.rec{background:#e6f4e6;font-weight:bold}"
          "td.l{text-align:left}.note{color:#555}</style></head><body>\n<h1>ptelab plan: ",
          f);
    ptl__html_escape(f, p->name);
    fputs("</h1>\n<p>", f);
    ptl__html_escape(f, m);
    fprintf(f,
            "<br>%llu trials of %g s simulated per SystemPages value, seed %llu, target "
            "P(fail) &lt; %g</p>\n",
            (unsigned long long)p->trials, p->duration, (unsigned long long)p->seed, p->target);

    /* the chart: failure probabilities (log scale) against the pool size */
    const int W = 760, H = 380, L = 70, R = 20, T = 36, B = 50;
    double xmin = 1e18, xmax = 0;
    for (int i = 0; i < p->npoints; i++) {
        const ptl_plan_point *pt = &p->points[i];
        if (pt->what_if || !pt->fits)
            continue;
        double x = pt->seg0 + pt->seg1;
        xmin = x < xmin ? x : xmin;
        xmax = x > xmax ? x : xmax;
    }
    if (xmax <= xmin)
        xmax = xmin + 1, xmin = xmin > 1 ? xmin - 1 : 0;
    double floor_p = 1.0 / (double)(p->trials ? p->trials : 1);
    if (p->target / 10 < floor_p)
        floor_p = p->target / 10;
    double lf = log10_(floor_p);
    int dec = (int)lf;
    if ((double)dec > lf)
        dec--;
    if (dec > -1)
        dec = -1;
    double ymin = dec - 0.5; /* log10; zero probabilities sit on the bottom axis, below */
#define PX(x)  (L + ((x)-xmin) / (xmax - xmin) * (W - L - R))
#define PY(pr) (T + (H - T - B) * (1.0 - ((pr) > 0 ? (log10_(pr) - ymin) / (0 - ymin) : 0.0)))
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
            "viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"failure probability against "
            "system PTEs\">\n<rect width=\"%d\" height=\"%d\" fill=\"#fff\"/>\n",
            W, H, W, H, W, H);
    for (int d = dec; d <= 0; d++) {
        double y = PY(pow10_(d));
        fprintf(f,
                "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>"
                "<text x=\"%d\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\">1e%d</text>\n",
                L, W - R, y, y, L - 6, y + 4, d);
    }
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"end\">0</text>\n", L - 6,
            H - B + 14);
    for (int k = 0; k <= 5; k++) {
        double x = xmin + (xmax - xmin) * k / 5.0;
        fprintf(f,
                "<text x=\"%.1f\" y=\"%d\" font-size=\"11\" text-anchor=\"middle\">%.0f</text>\n",
                PX(x), H - B + 30, x);
    }
    fprintf(f,
            "<text x=\"%d\" y=\"%d\" font-size=\"12\" text-anchor=\"middle\">system PTEs "
            "(pool size for the SystemPages value)</text>\n",
            (L + W - R) / 2, H - 6);
    fprintf(f,
            "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"#333\"/>"
            "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"#333\"/>\n",
            L, W - R, H - B, H - B, L, L, T, H - B);
    double ty = PY(p->target);
    fprintf(f,
            "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#c00\" "
            "stroke-dasharray=\"6 4\"/><text x=\"%d\" y=\"%.1f\" font-size=\"11\" "
            "fill=\"#c00\" text-anchor=\"end\">target %g</text>\n",
            L, W - R, ty, ty, W - R, ty - 4, p->target);
    if (rec >= 0) {
        double rx = PX((double)(p->points[rec].seg0 + p->points[rec].seg1));
        fprintf(f,
                "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%d\" y2=\"%d\" stroke=\"#2a2\" "
                "stroke-dasharray=\"3 3\"/><text x=\"%.1f\" y=\"%d\" font-size=\"11\" "
                "fill=\"#2a2\">recommended</text>\n",
                rx, rx, T, H - B, rx + 4, T + 12);
    }
    static const char *const names[] = {"P(fail)", "P(no free)", "P(frag)", "P(STOP)"};
    static const char *const colors[] = {"#000", "#1f6fd0", "#e08a00", "#c00"};
    for (int s = 0; s < 4; s++) {
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"%d\" points=\"", colors[s],
                s == 0 ? 3 : 1);
        for (int i = 0; i < p->npoints; i++) {
            const ptl_plan_point *pt = &p->points[i];
            if (pt->what_if || !pt->fits)
                continue;
            uint64_t c = s == 0   ? pt->fail_any
                         : s == 1 ? pt->fail_nofree
                         : s == 2 ? pt->fail_frag
                                  : pt->stop;
            fprintf(f, "%.1f,%.1f ", PX((double)(pt->seg0 + pt->seg1)), PY(ptl_plan_prob(pt, c)));
        }
        fputs("\"/>\n", f);
        fprintf(f,
                "<rect x=\"%d\" y=\"%d\" width=\"14\" height=\"3\" fill=\"%s\"/><text x=\"%d\" "
                "y=\"%d\" font-size=\"11\">%s</text>\n",
                L + 10 + s * 110, 10, colors[s], L + 28 + s * 110, 14, names[s]);
    }
    fputs("</svg>\n", f);
#undef PX
#undef PY

    fputs("<h2>Results</h2>\n<table><tr><th>SystemPages</th><th>system PTEs</th><th>peak max</th>"
          "<th>peak mean</th><th>P(no free)</th><th>P(frag)</th><th>P(STOP)</th><th>P(fail)</th>"
          "<th class=\"l\"></th></tr>\n",
          f);
    for (int i = 0; i < p->npoints; i++) {
        const ptl_plan_point *pt = &p->points[i];
        char v[32], a[16], b[16], c[16], d[16];
        fmt_value(v, sizeof v, pt);
        fmt_prob(a, sizeof a, pt, pt->fail_nofree);
        fmt_prob(b, sizeof b, pt, pt->fail_frag);
        fmt_prob(c, sizeof c, pt, pt->stop);
        fmt_prob(d, sizeof d, pt, pt->fail_any);
        fprintf(f,
                "<tr%s><td>%s</td><td>%u</td><td>%llu</td><td>%.0f</td><td>%s</td><td>%s</td>"
                "<td>%s</td><td>%s</td><td class=\"l\">",
                i == rec ? " class=\"rec\"" : "", v, pt->seg0 + pt->seg1,
                (unsigned long long)pt->peak_max,
                pt->trials ? (double)pt->peak_sum / (double)pt->trials : 0.0, a, b, c, d);
        ptl__html_escape(f, pt->fits ? ptl_plan_point_label(pt) : "does not fit the address space");
        fputs(i == rec ? " (recommended)" : "", f);
        fputs("</td></tr>\n", f);
    }
    fputs("</table>\n<h2>Recommendation</h2>\n<p>", f);
    if (rec >= 0) {
        char v[32];
        fmt_value(v, sizeof v, &p->points[rec]);
        fprintf(f, "SystemPages = <b>%s</b> (%u system PTEs): P(fail) %.4g &lt; %g.", v,
                p->points[rec].seg0 + p->points[rec].seg1,
                ptl_plan_prob(&p->points[rec], p->points[rec].fail_any), p->target);
    } else {
        fputs("No SystemPages value meets the target within the address space. The what-if rows "
              "above (each at SystemPages max) show what would: booting without /3GB, mapping "
              "smaller parts of the apertures (the article: map only what you need), or fewer "
              "concurrent mappings.",
              f);
    }
    fputs("</p>\n<p class=\"note\">P(no free): trials in which a request found fewer free PTEs "
          "than it needed; P(frag): enough free PTEs but no run long enough; P(STOP): a request "
          "that must succeed (MmMapLockedPages(KernelMode), MmGetSystemAddressForMdl) failed; "
          "P(fail): any of them. Generated by ptelab plan; see docs/plan.md.</p>\n</body></html>\n",
          f);
    int bad = ferror(f);
    return fclose(f) != 0 || bad ? -1 : 0;
}

/* ---- output ------------------------------------------------------------------------------ */

static int emit(const ptl_plan *p, int jsonl, const char *report)
{
    if (jsonl)
        ptl_plan_write_jsonl(p, stdout);
    else
        print_table(p, stdout);
    if (fflush(stdout) != 0 || ferror(stdout)) { /* a shard redirected to a full disk */
        fprintf(stderr, "ptelab plan: cannot write the result: %s\n", strerror(errno));
        return EX_SOFTWARE_;
    }
    if (report) {
        if (write_html(p, report) != 0) {
            fprintf(stderr, "ptelab plan: cannot write %s: %s\n", report, strerror(errno));
            return EX_SOFTWARE_;
        }
        fprintf(stderr, "ptelab plan: plan page written to %s\n", report);
    }
    return 0;
}

static int parse_format(const char *val, int *jsonl)
{
    if (strcmp(val, "jsonl") == 0)
        *jsonl = 1;
    else if (strcmp(val, "table") == 0)
        *jsonl = 0;
    else
        return -1;
    return 0;
}

static int cli_merge(int argc, char **argv)
{
    int jsonl = 0;
    const char *report = NULL;
    const char **files = calloc((size_t)argc, sizeof *files);
    int nfiles = 0;
    for (int i = 3; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(plan_usage, stdout);
            free(files);
            return 0;
        }
        if (strcmp(a, "--format") == 0 || strcmp(a, "--report") == 0) {
            if (i + 1 >= argc) {
                free(files);
                return plan_usage_error("%s needs a value", a);
            }
            const char *val = argv[++i];
            if (strcmp(a, "--report") == 0)
                report = val;
            else if (parse_format(val, &jsonl)) {
                free(files);
                return plan_usage_error("--format '%s' is not table or jsonl", val);
            }
            continue;
        }
        if (a[0] == '-' && a[1]) {
            free(files);
            return plan_usage_error("unknown merge option '%s'", a);
        }
        files[nfiles++] = a;
    }
    if (nfiles == 0) {
        free(files);
        return plan_usage_error("%s", "merge needs the shard files");
    }
    ptl_plan p;
    char err[512];
    if (ptl_plan_merge(&p, files, nfiles, err, sizeof err) != 0) {
        fprintf(stderr, "ptelab plan merge: %s\n", err);
        free(files);
        return EX_DATA_;
    }
    free(files);
    int rc = emit(&p, jsonl, report);
    ptl_plan_free(&p);
    return rc;
}

int ptl_cli_plan(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[2], "merge") == 0)
        return cli_merge(argc, argv);
    const char *file = NULL, *report = NULL;
    int jsonl = 0, progress = isatty(2), jobs = 1, shard_i = 0, shard_n = 1;
    int set_3gb = -1;
    const char *name = NULL;
    double duration = -1;
    uint64_t ram = 0, userva = 0;
    int profile = -1;
    ptl_plan_opts o = {.seed = 1, .trials = 1000, .target = 1e-3};
    uint32_t values[256];
    int nvalues = -1;
    ptl_plan_workload extra; /* streams from options, added after the file's */
    ptl_plan_workload_init(&extra);
    int rc = EX_USAGE_;

#define FAIL(...)                           \
    do {                                    \
        rc = plan_usage_error(__VA_ARGS__); \
        goto out;                           \
    } while (0)
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(plan_usage, stdout);
            rc = 0;
            goto out;
        }
        if (strcmp(a, "--3gb") == 0) {
            set_3gb = 1;
            continue;
        }
        if (strcmp(a, "--no-3gb") == 0) {
            set_3gb = 0;
            continue;
        }
        if (strcmp(a, "--no-progress") == 0) {
            progress = 0;
            continue;
        }
        static const char *const valued[] = {
            "--ram",    "--profile", "--userva", "--name",   "--duration", "--adapter",
            "--driver", "--threads", "--map",    "--values", "--steps",    "--trials",
            "--seed",   "--target",  "--jobs",   "--shard",  "--format",   "--report"};
        int known = 0;
        for (size_t k = 0; k < sizeof valued / sizeof valued[0]; k++)
            known |= strcmp(a, valued[k]) == 0;
        if (a[0] == '-' && a[1] == '-' && !known)
            FAIL("unknown option '%s'", a);
        if (known) {
            if (i + 1 >= argc)
                FAIL("%s needs a value", a);
            const char *val = argv[++i];
            uint64_t u;
            if (strcmp(a, "--ram") == 0) {
                double b;
                if (ptl_plan_parse_size(val, &b) || !(b > 0 && b <= PTL_PLAN_MAX_RAM))
                    FAIL("--ram '%s' is not a size like 512M or 1G, up to 4G", val);
                ram = (uint64_t)b;
            } else if (strcmp(a, "--profile") == 0) {
                if ((profile = ptl_plan_parse_profile(val)) < 0)
                    FAIL("--profile '%s' is not nt4sp3, nt4sp4, win2000 or winxp", val);
            } else if (strcmp(a, "--userva") == 0) {
                if (ptl_cli_parse_u64(val, &userva) || userva == 0)
                    FAIL("--userva '%s' is not a number of MB", val);
            } else if (strcmp(a, "--name") == 0) {
                name = val;
            } else if (strcmp(a, "--duration") == 0) {
                if (ptl_plan_parse_time(val, &duration) || duration <= 0)
                    FAIL("--duration '%s' is not a time like 60, 500ms, 10min", val);
            } else if (strcmp(a, "--adapter") == 0 || strcmp(a, "--driver") == 0 ||
                       strcmp(a, "--threads") == 0 || strcmp(a, "--map") == 0) {
                if (add_option_stream(&extra, a, val))
                    FAIL("cannot read '%s' (see ptelab plan --help)", val);
            } else if (strcmp(a, "--values") == 0) {
                char *buf = strdup(val); /* all of it: a cut list would change a value */
                if (!buf)
                    FAIL("%s", "--values: out of memory");
                nvalues = 0;
                int bad = 0;
                for (char *tok = strtok(buf, ","); tok && !bad; tok = strtok(NULL, ",")) {
                    if (nvalues >= 256) {
                        bad = 1;
                        break;
                    }
                    if (strcmp(tok, "computed") == 0)
                        values[nvalues++] = 0;
                    else if (strcmp(tok, "max") == 0)
                        values[nvalues++] = 0xFFFFFFFFu;
                    else if (ptl_cli_parse_u64(tok, &u) == 0 && u < 0xFFFFFFFFu)
                        values[nvalues++] = (uint32_t)u;
                    else
                        bad = 2;
                }
                free(buf);
                if (bad == 1)
                    FAIL("%s", "--values takes at most 256 values");
                if (bad == 2)
                    FAIL("--values '%s': each is a number, computed or max", val);
                if (nvalues == 0)
                    FAIL("%s", "--values is empty");
            } else if (strcmp(a, "--steps") == 0) {
                if (ptl_cli_parse_u64(val, &u) || u < 1 || u > 200)
                    FAIL("--steps '%s' is not 1..200", val);
                o.steps = (int)u;
            } else if (strcmp(a, "--trials") == 0) {
                if (ptl_cli_parse_u64(val, &u) || u < 1 || u > 1000000000ull)
                    FAIL("--trials '%s' is not a positive number", val);
                o.trials = u;
            } else if (strcmp(a, "--seed") == 0) {
                if (ptl_cli_parse_u64(val, &o.seed))
                    FAIL("--seed '%s' is not a number", val);
            } else if (strcmp(a, "--target") == 0) {
                char *end;
                o.target = strtod(val, &end);
                if (*end || end == val || !(o.target > 0 && o.target < 1))
                    FAIL("--target '%s' is not a probability in (0, 1)", val);
            } else if (strcmp(a, "--jobs") == 0) {
                if (ptl_cli_parse_u64(val, &u) || u < 1 || u > 1024)
                    FAIL("--jobs '%s' is not 1..1024", val);
                jobs = (int)u;
            } else if (strcmp(a, "--shard") == 0) {
                char part[32];
                const char *slash = strchr(val, '/');
                uint64_t si, sn;
                int ok = slash && (size_t)(slash - val) < sizeof part;
                if (ok) {
                    memcpy(part, val, (size_t)(slash - val));
                    part[slash - val] = 0;
                    ok = ptl_cli_parse_u64(part, &si) == 0 &&
                         ptl_cli_parse_u64(slash + 1, &sn) == 0 && sn >= 1 && sn <= 1000000 &&
                         si < sn;
                }
                if (!ok)
                    FAIL("--shard '%s' is not I/N with 0 <= I < N <= 1000000", val);
                shard_i = (int)si;
                shard_n = (int)sn;
            } else if (strcmp(a, "--format") == 0) {
                if (parse_format(val, &jsonl))
                    FAIL("--format '%s' is not table or jsonl", val);
            } else if (strcmp(a, "--report") == 0) {
                report = val;
            }
            continue;
        }
        if (a[0] == '-' && a[1])
            FAIL("unknown option '%s'", a);
        if (file)
            FAIL("more than one workload file ('%s')", a);
        file = a;
    }
    if (shard_n > 1 && !jsonl)
        FAIL("%s", "--shard needs --format jsonl (merge the shards with ptelab plan merge)");
    if (!file && extra.nstreams == 0)
        FAIL("%s", "no workload: give a WORKLOAD.lua or --adapter/--driver/--threads/--map");

    ptl_plan_workload w;
    ptl_plan_workload_init(&w);
    char err[512];
    if (file && ptl_plan_workload_load(&w, file, err, sizeof err) != 0) {
        fprintf(stderr, "ptelab plan: %s\n", err);
        ptl_plan_workload_free(&w);
        rc = EX_DATA_;
        goto out;
    }
    if (!file)
        snprintf(w.name, sizeof w.name, "workload from options");
    for (int i = 0; i < extra.nstreams; i++) {
        ptl_plan_stream *s =
            ptl_plan_workload_add(&w, extra.streams[i].name, extra.streams[i].api_name);
        if (!s) {
            fprintf(stderr, "ptelab plan: the file's streams and the options' are more than "
                            "ptelab plan takes\n");
            ptl_plan_workload_free(&w);
            rc = EX_DATA_;
            goto out;
        }
        *s = extra.streams[i];
    }
    if (name)
        snprintf(w.name, sizeof w.name, "%s", name);
    if (ram)
        w.ram_bytes = ram;
    if (profile >= 0)
        w.profile = profile;
    if (set_3gb >= 0)
        w.boot_3gb = set_3gb;
    if (set_3gb == 0)
        w.userva_mb = 0;
    if (userva)
        w.userva_mb = (uint32_t)userva;
    if (duration > 0)
        w.duration = duration;

    if (nvalues > 0) {
        o.values = values;
        o.nvalues = nvalues;
    }
    ptl_plan p;
    if (ptl_plan_setup(&p, &w, &o, err, sizeof err) != 0) {
        fprintf(stderr, "ptelab plan: %s\n", err);
        ptl_plan_workload_free(&w);
        rc = EX_DATA_;
        goto out;
    }
    ptl_plan_perf perf;
    ptl_plan_run(&p, &w, jobs, shard_i, shard_n, progress ? progress_bar : NULL, NULL, &perf);
    rc = emit(&p, jsonl, report);
    double per_core = perf.cpu_seconds > 0 ? (double)perf.ops / perf.cpu_seconds : 0;
    fprintf(stderr,
            "throughput: %.2f M simulated DDI operations/s per core (%llu reserves and releases "
            "in %.2f s of CPU; %.2f s wall with %d job%s)\n",
            per_core / 1e6, (unsigned long long)perf.ops, perf.cpu_seconds, perf.wall_seconds, jobs,
            jobs == 1 ? "" : "s");
    ptl_plan_free(&p);
    ptl_plan_workload_free(&w);
out:
    ptl_plan_workload_free(&extra);
    return rc;
#undef FAIL
}
