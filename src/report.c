/* report.c - one self-contained HTML file that tells how a machine used its system PTEs.
 *
 * The article's advice ends with "monitor currently available Free System Page Table
 * Entries using Performance Monitor". The report is that chart, and the things perfmon
 * could not show: where in the pool each PTE went (the fragmentation maps taken with
 * ptl_report_snapshot), the address space to scale, which driver holds what, the STOP
 * and the events that led to it.
 *
 * The file needs nothing but itself: inline CSS, inline SVG, no script, no network. Every
 * string that came from a driver, a process or a label is escaped. The SVG charts carry
 * stable ids (timeline, fragmap-0.., layout) that tests/browser/check-report.sh checks.
 *
 * Size: the timeline keeps at most four points per horizontal pixel (first, min, max,
 * last), and a fragmentation map draws each run of equal colour within a 4 MB row (one
 * page table's worth of PTEs) as a single <rect>.
 *
 * Invariant: writing a report reads the machine and changes nothing in it (a snapshot
 * only adds a fragmentation map, at most PTL_SNAPSHOTS_MAX of them).
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- small helpers ------------------------------------------------------------------- */

/* HTML-escape s onto f: the report's and the plan page's one escaper. */
void ptl__html_escape(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '&':
            fputs("&amp;", f);
            break;
        case '<':
            fputs("&lt;", f);
            break;
        case '>':
            fputs("&gt;", f);
            break;
        case '"':
            fputs("&quot;", f);
            break;
        case '\'':
            fputs("&#39;", f);
            break;
        default:
            /* control characters other than tab and newline have no place in HTML */
            if ((unsigned char)*s < 0x20 && *s != '\t' && *s != '\n')
                fputc(' ', f);
            else
                fputc(*s, f);
        }
    }
}

/* 22927 -> "22,927" */
static const char *num(char buf[32], uint64_t v)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    int o = 0;
    for (int i = 0; i < n; i++) {
        if (i && (n - i) % 3 == 0)
            buf[o++] = ',';
        buf[o++] = tmp[i];
    }
    buf[o] = '\0';
    return buf;
}

/* a byte count as NT's tools print it: "4 MB", "128 KB", "89.6 MB" */
static const char *bytes_str(char buf[32], uint64_t b)
{
    if (b >= (1ull << 30) && b % (1ull << 30) == 0)
        snprintf(buf, 32, "%llu GB", (unsigned long long)(b >> 30));
    else if (b >= (1ull << 30))
        snprintf(buf, 32, "%.2f GB", (double)b / (double)(1ull << 30));
    else if (b >= (1u << 20) && b % (1u << 20) == 0)
        snprintf(buf, 32, "%llu MB", (unsigned long long)(b >> 20));
    else if (b >= (1u << 20))
        snprintf(buf, 32, "%.1f MB", (double)b / (double)(1u << 20));
    else
        snprintf(buf, 32, "%llu KB", (unsigned long long)(b >> 10));
    return buf;
}

static const char *profile_name(ptl_profile p)
{
    switch (p) {
    case PTL_NT4_SP3:
        return "Windows NT 4.0 SP3";
    case PTL_NT4_SP4:
        return "Windows NT 4.0 SP4";
    case PTL_WIN2000:
        return "Windows 2000";
    case PTL_WINXP:
        return "Windows XP";
    }
    return "?";
}

/* A "nice" step (1, 2, 2.5, 5 x 10^k) giving at most `most` intervals over span. */
static double nice_step(double span, int most)
{
    if (span <= 0)
        return 1;
    double raw = span / most, p = 1;
    while (p * 10 <= raw)
        p *= 10;
    while (p > raw)
        p /= 10;
    static const double mult[] = {1, 2, 2.5, 5, 10};
    for (size_t i = 0; i < sizeof mult / sizeof mult[0]; i++)
        if (p * mult[i] >= raw)
            return p * mult[i] < 1 ? 1 : p * mult[i];
    return p * 10;
}

/* Colours of the PTE uses, in ptl_pte_use order. */
static const char *const use_colour[PTL_PTE_USES] = {
    "#e3e8ee", /* free */
    "#e4572e", /* I/O space */
    "#3b82c4", /* thread stack */
    "#7048b6", /* driver image */
    "#22a38a", /* MDL mapping */
    "#f0a202", /* noncached */
    "#8c6d46", /* pool expansion */
    "#9aa5b1", /* other */
    "#1d1d1f", /* leaked */
};

static const char *driver_name_by_id(const ptl_machine *m, uint32_t id)
{
    if (id == 0)
        return "system";
    ptl_driver *d = ptl_driver_at(m, id - 1);
    return d ? ptl_driver_name(d) : "?";
}

/* ---- the page: head and style --------------------------------------------------------- */

static const char css[] =
    ":root{--ink:#1c2430;--mute:#5b6775;--line:#d5dbe2;--bg:#f6f8fa;--card:#fff;"
    "--accent:#1f5fa8;--bad:#b3261e}\n"
    "*{box-sizing:border-box}\n"
    "html{-webkit-print-color-adjust:exact;print-color-adjust:exact}\n"
    "body{margin:0;background:var(--bg);color:var(--ink);"
    "font:14px/1.45 'Segoe UI',Tahoma,'DejaVu Sans',Arial,sans-serif}\n"
    "header.top{background:#0b2545;color:#fff;padding:14px 0 12px}\n"
    ".wrap{max-width:1200px;margin:0 auto;padding:0 20px}\n"
    "header.top h1{margin:0;font-size:22px;font-weight:600}\n"
    "header.top p{margin:2px 0 0;color:#c9d6e8;font-size:13px}\n"
    "nav.toc{background:#13315c;font-size:13px}\n"
    "nav.toc a{color:#e0e9f5;text-decoration:none;display:inline-block;padding:6px 12px 6px 0}\n"
    "nav.toc a:hover{text-decoration:underline}\n"
    ".cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:10px;"
    "margin:14px 0 4px}\n"
    ".card{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:8px "
    "12px}\n"
    ".card b{display:block;font-size:20px;font-weight:600}\n"
    ".card span{color:var(--mute);font-size:12px}\n"
    ".card.bad{border-color:var(--bad);background:#fff4f3}.card.bad b{color:var(--bad)}\n"
    ".card.stop b{font-size:18px;white-space:nowrap}\n"
    "section{background:var(--card);border:1px solid var(--line);border-radius:6px;"
    "padding:12px 16px 14px;margin:14px 0}\n"
    "section h2{font-size:17px;margin:0 0 4px;font-weight:600}\n"
    "section p.note{margin:2px 0 8px;color:var(--mute);font-size:13px}\n"
    "svg{display:block;width:100%;height:auto;font-family:'Segoe UI',Tahoma,'DejaVu Sans',"
    "Arial,sans-serif}\n"
    "svg text{fill:var(--ink)}\n"
    "svg .mono,code,pre,td.mono{font-family:'Lucida Console',Consolas,'DejaVu Sans Mono',"
    "monospace}\n"
    "#timeline .grid line{stroke:#d9dee5;stroke-width:1}\n"
    "#timeline .axis{stroke:#56606b;stroke-width:1}\n"
    "#timeline .total{stroke:#8a96a3;stroke-dasharray:6 4}\n"
    "#timeline polyline.free{fill:none;stroke:#c81d25;stroke-width:1.8;"
    "stroke-linejoin:round}\n"
    "#timeline polygon.area{fill:#c81d25;opacity:.07}\n"
    "#timeline .fail path{fill:#f0a202;stroke:#7a4d00;stroke-width:.8}\n"
    "#timeline .stop line{stroke:#0000aa;stroke-width:1.5;stroke-dasharray:4 3}\n"
    "#timeline .stop rect{fill:#0000aa}\n"
    "#timeline .stop text{fill:#fff;font-weight:600}\n"
    ".lbl{font-size:11px;fill:var(--mute)}\n"
    ".perfbar{display:flex;flex-wrap:wrap;gap:4px 22px;font-size:12px;border-top:1px solid "
    "var(--line);margin-top:6px;padding-top:6px}\n"
    ".perfbar span{color:var(--mute)}\n"
    "table{border-collapse:collapse;width:100%;font-size:13px}\n"
    "th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #e6eaef;vertical-align:top}\n"
    "th{background:#eef2f6;font-weight:600;white-space:nowrap}\n"
    "td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}\n"
    "ul.legend{list-style:none;margin:4px 0 8px;padding:0;display:flex;flex-wrap:wrap;"
    "gap:4px 16px;font-size:12px}\n"
    "ul.legend li{display:flex;align-items:center;gap:5px}\n"
    "ul.legend svg{width:14px;height:14px;display:inline}\n"
    "figure.fragmap{margin:10px 0 14px}\n"
    "figure.fragmap figcaption{font-size:13px;margin-bottom:4px}\n"
    "figure.fragmap figcaption b{font-size:14px}\n"
    "figure.fragmap figcaption span{color:var(--mute)}\n"
    ".u0{fill:#e3e8ee}.u1{fill:#e4572e}.u2{fill:#3b82c4}.u3{fill:#7048b6}.u4{fill:#22a38a}"
    ".u5{fill:#f0a202}.u6{fill:#8c6d46}.u7{fill:#9aa5b1}.u8{fill:#1d1d1f}\n"
    ".layoutgrid{display:grid;grid-template-columns:minmax(0,1.25fr) minmax(0,1fr);gap:18px;"
    "align-items:start}\n"
    "#layout .rg{stroke:#fff;stroke-width:.6}\n"
    "#layout .frame{fill:none;stroke:#56606b;stroke-width:1}\n"
    "#layout .zoom{fill:#e9eef4;stroke:#b8c2cd;stroke-width:.8}\n"
    "#layout .lead{fill:none;stroke:#8a96a3;stroke-width:.8}\n"
    "#layout .big{font-size:12px;font-weight:600}\n"
    "tr.hl td{background:#fff3e0}\n"
    "pre.bsod{background:#0000aa;color:#fff;padding:14px 18px;margin:6px 0 10px;font-size:14px;"
    "line-height:1.5;white-space:pre-wrap;border-radius:3px}\n"
    ".badge{display:inline-block;min-width:54px;text-align:center;border-radius:3px;"
    "padding:0 5px;font-size:11px;font-weight:600;color:#fff;background:#6b7785}\n"
    ".t-fail{background:#d97706}.t-stop{background:#0000aa}.t-map{background:#22a38a}"
    ".t-unmap{background:#5b8def}.t-hazard{background:#b3261e}.t-misuse{background:#9c27b0}"
    ".t-boot,.t-note{background:#56606b}.t-driver{background:#7048b6}"
    ".t-thread{background:#3b82c4}.t-process{background:#0e7490}\n"
    "tr.ev-fail td,tr.ev-stop td,tr.ev-hazard td,tr.ev-misuse td{background:#fff6ec}\n"
    ".events{max-height:560px;overflow:auto;border:1px solid #e6eaef}\n"
    ".events th{position:sticky;top:0}\n"
    "footer{color:var(--mute);font-size:12px;margin:8px 0 24px}\n"
    "@media (max-width:900px){.layoutgrid{grid-template-columns:1fr}}\n"
    "@media print{body{background:#fff;font-size:11px}nav.toc{display:none}"
    "header.top{background:#fff;color:#000;border-bottom:2px solid #000}"
    "header.top p{color:#333}.wrap{max-width:none;padding:0}"
    "section{border:none;padding:0;margin:10px 0;break-inside:auto}"
    "section h2{break-after:avoid}figure.fragmap,svg,.card,pre.bsod{break-inside:avoid}"
    ".events{max-height:none;overflow:visible;border:none}.events th{position:static}"
    "a{color:inherit;text-decoration:none}}\n";

static void legend_swatch(FILE *f, const char *colour, const char *label)
{
    fprintf(f,
            "<li><svg viewBox=\"0 0 14 14\" aria-hidden=\"true\"><rect width=\"14\" height=\"14\" "
            "rx=\"2\" fill=\"%s\" stroke=\"#8a96a3\" stroke-width=\".5\"/></svg>",
            colour);
    ptl__html_escape(f, label);
    fputs("</li>", f);
}

/* ---- (a) the timeline ---------------------------------------------------------------- */

#define TL_W  1160.0
#define TL_H  356.0
#define TL_X0 72.0
#define TL_X1 (TL_W - 18.0)
#define TL_Y0 14.0
#define TL_Y1 292.0

typedef struct tl_scale {
    uint64_t t0, t1;
    double ymax;
} tl_scale;

static double tl_x(const tl_scale *s, uint64_t t)
{
    return TL_X0 + (TL_X1 - TL_X0) * (double)(t - s->t0) / (double)(s->t1 - s->t0);
}

static double tl_y(const tl_scale *s, double v)
{
    if (v > s->ymax)
        v = s->ymax;
    return TL_Y1 - (TL_Y1 - TL_Y0) * v / s->ymax;
}

static void write_timeline(FILE *f, ptl_machine *m)
{
    char b1[32], b2[32], b3[32], b4[32], b5[32];
    size_t ns = ptl_timeline_count(m);
    uint32_t total = ptl_total_system_ptes(m);
    tl_scale s = {0, 1, total ? total : 1};
    uint64_t first = 0, last = 0, vmin = UINT64_MAX, vmax = 0;
    double sum = 0;
    for (size_t i = 0; i < ns; i++) {
        uint64_t t;
        ptl_counters c;
        ptl_timeline_get(m, i, &t, &c);
        if (i == 0)
            first = t;
        last = t;
        if (c.free_system_ptes < vmin)
            vmin = c.free_system_ptes;
        if (c.free_system_ptes > vmax)
            vmax = c.free_system_ptes;
        if ((double)c.free_system_ptes > s.ymax)
            s.ymax = (double)c.free_system_ptes;
        sum += (double)c.free_system_ptes;
    }
    s.t0 = first;
    s.t1 = last > first ? last : first + 1;

    fputs("<section id=\"sec-timeline\"><h2>Free System Page Table Entries</h2>\n"
          "<p class=\"note\">\\Memory\\Free System Page Table Entries sampled at every event on "
          "the simulated clock (one tick per DDI or harness call, read as a millisecond), as "
          "Performance Monitor's chart view shows it. Hover a marker for its event.</p>\n",
          f);
    fprintf(f,
            "<svg id=\"timeline\" class=\"chart\" viewBox=\"0 0 %.0f %.0f\" role=\"img\" "
            "aria-label=\"Free System Page Table Entries over time\">\n",
            TL_W, TL_H);
    fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"#fff\"/>\n",
            TL_X0, TL_Y0, TL_X1 - TL_X0, TL_Y1 - TL_Y0);

    /* gridlines and axis labels */
    fputs("<g class=\"grid\">\n", f);
    double ys = nice_step(s.ymax, 6);
    for (double v = 0; v <= s.ymax + 1e-9; v += ys) {
        double y = tl_y(&s, v);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>", TL_X0, y, TL_X1, y);
        fprintf(f, "<text class=\"lbl\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
                TL_X0 - 6, y + 4, num(b1, (uint64_t)v));
    }
    double span = (double)(s.t1 - s.t0);
    double xs = nice_step(span, 10);
    for (double v = 0; v <= span + 1e-9; v += xs) {
        uint64_t t = s.t0 + (uint64_t)v;
        double x = tl_x(&s, t);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>", x, TL_Y0, x, TL_Y1);
        fprintf(f, "<text class=\"lbl\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n",
                x, TL_Y1 + 15, num(b1, t));
    }
    fputs("</g>\n", f);
    fprintf(f,
            "<text class=\"lbl\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">simulated clock "
            "(ms)</text>\n",
            (TL_X0 + TL_X1) / 2, TL_Y1 + 31);
    fprintf(f,
            "<text class=\"lbl\" transform=\"translate(14 %.1f) rotate(-90)\" "
            "text-anchor=\"middle\">free PTEs</text>\n",
            (TL_Y0 + TL_Y1) / 2);
    if (total) {
        double y = tl_y(&s, total);
        fprintf(f,
                "<line class=\"total\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>"
                "<text class=\"lbl\" x=\"%.1f\" y=\"%.1f\">total %s</text>\n",
                TL_X0, y, TL_X1, y, TL_X0 + (TL_X1 - TL_X0) * 0.45, y + 13, num(b1, total));
    }

    /* the line: at most first/min/max/last per pixel column */
    if (ns) {
        char *pts = NULL;
        size_t plen = 0;
        FILE *pf = open_memstream(&pts, &plen);
        long col = -1;
        uint64_t cf = 0, cmin = 0, cmax = 0, cl = 0;
        double fx = 0, lx = 0;
        int npts = 0;
#define FLUSH_COL()                                                            \
    do {                                                                       \
        if (col >= 0 && pf) {                                                  \
            double cx = (double)col + 0.5 > TL_X1 ? TL_X1 : (double)col + 0.5; \
            fprintf(pf, "%.1f,%.1f ", cx, tl_y(&s, (double)cf));               \
            if (cmin != cf && cmin != cl)                                      \
                fprintf(pf, "%.1f,%.1f ", cx, tl_y(&s, (double)cmin));         \
            if (cmax != cf && cmax != cl)                                      \
                fprintf(pf, "%.1f,%.1f ", cx, tl_y(&s, (double)cmax));         \
            if (cl != cf)                                                      \
                fprintf(pf, "%.1f,%.1f ", cx, tl_y(&s, (double)cl));           \
            npts++;                                                            \
        }                                                                      \
    } while (0)
        for (size_t i = 0; i < ns; i++) {
            uint64_t t;
            ptl_counters c;
            ptl_timeline_get(m, i, &t, &c);
            double x = tl_x(&s, t);
            long cc = (long)x;
            if (i == 0)
                fx = x;
            lx = x;
            if (cc != col) {
                FLUSH_COL();
                col = cc;
                cf = cmin = cmax = c.free_system_ptes;
            }
            if (c.free_system_ptes < cmin)
                cmin = c.free_system_ptes;
            if (c.free_system_ptes > cmax)
                cmax = c.free_system_ptes;
            cl = c.free_system_ptes;
        }
        FLUSH_COL();
#undef FLUSH_COL
        if (pf)
            fclose(pf);
        if (pts) {
            fprintf(f,
                    "<polygon class=\"area\" points=\"%.1f,%.1f %s%.1f,%.1f\"/>\n"
                    "<polyline class=\"free\" points=\"%s\"/>\n",
                    (double)(long)fx + 0.5, TL_Y1, pts,
                    (double)(long)lx + 0.5 > TL_X1 ? TL_X1 : (double)(long)lx + 0.5, TL_Y1, pts);
            free(pts);
        }
    }

    /* events: failures as markers (one per pixel column), the STOP as a line */
    size_t ne = ptl_event_count(m);
    uint64_t nfail = ptl_event_count_type(m, "fail");
    fputs("<g class=\"events\">\n", f);
    long fcol = -1;
    size_t group_n = 0;
    ptl_event ge;
    memset(&ge, 0, sizeof ge);
    for (size_t i = 0; i <= ne; i++) {
        ptl_event e;
        int have = i < ne && ptl_event_get(m, i, &e) == 0;
        if (have && strcmp(e.type, "stop") == 0) {
            double x = tl_x(&s, e.tick < s.t0 ? s.t0 : e.tick);
            fprintf(f, "<g class=\"stop\"><title>tick %llu: ", (unsigned long long)e.tick);
            ptl__html_escape(f, e.text);
            fprintf(f,
                    "</title><line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>"
                    "<rect x=\"%.1f\" y=\"%.1f\" width=\"62\" height=\"16\" rx=\"2\"/>"
                    "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\">STOP</text></g>\n",
                    x, TL_Y0, x, TL_Y1, x - 64, TL_Y0 + 2, x - 58, TL_Y0 + 14);
            continue;
        }
        int is_fail = have && strcmp(e.type, "fail") == 0;
        long cc = is_fail ? (long)tl_x(&s, e.tick < s.t0 ? s.t0 : e.tick) : -2;
        if ((!have || (is_fail && cc != fcol)) && group_n) {
            double x = tl_x(&s, ge.tick < s.t0 ? s.t0 : ge.tick), y = tl_y(&s, ge.free_ptes);
            fprintf(f, "<g class=\"fail\"><title>tick %llu: ", (unsigned long long)ge.tick);
            ptl__html_escape(f, ge.text);
            if (group_n > 1)
                fprintf(f, " (and %zu more refusals here)", group_n - 1);
            fprintf(f, "</title><path d=\"M%.1f %.1fl-6 -11h12z\"/></g>\n", x, y - 1);
            group_n = 0;
        }
        if (is_fail) {
            if (group_n == 0) {
                ge = e;
                fcol = cc;
            }
            group_n++;
        }
    }
    fputs("</g>\n", f);
    fprintf(f,
            "<rect class=\"axis\" x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" "
            "fill=\"none\"/>\n",
            TL_X0, TL_Y0, TL_X1 - TL_X0, TL_Y1 - TL_Y0);

    /* the legend */
    double ly = TL_H - 8;
    fprintf(f,
            "<g class=\"legend\" font-size=\"12\">"
            "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"#c81d25\" "
            "stroke-width=\"2\"/><text x=\"%.0f\" y=\"%.0f\">Free System Page Table Entries "
            "(scale 1.0)</text>",
            TL_X0, ly - 4, TL_X0 + 26, ly - 4, TL_X0 + 32, ly);
    fprintf(f,
            "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"#8a96a3\" "
            "stroke-dasharray=\"6 4\"/><text x=\"%.0f\" y=\"%.0f\">total system PTEs</text>",
            TL_X0 + 300, ly - 4, TL_X0 + 326, ly - 4, TL_X0 + 332, ly);
    fprintf(f,
            "<path d=\"M%.0f %.0fl-6 -11h12z\" fill=\"#f0a202\" stroke=\"#7a4d00\" "
            "stroke-width=\".8\"/><text x=\"%.0f\" y=\"%.0f\">refused request (%s)</text>",
            TL_X0 + 490, ly + 1, TL_X0 + 502, ly, num(b1, nfail));
    fprintf(f,
            "<rect x=\"%.0f\" y=\"%.0f\" width=\"16\" height=\"12\" rx=\"2\" fill=\"#0000aa\"/>"
            "<text x=\"%.0f\" y=\"%.0f\">bug check (STOP)</text></g>\n",
            TL_X0 + 660, ly - 10, TL_X0 + 682, ly);
    fputs("</svg>\n", f);

    /* perfmon's value bar */
    fprintf(f,
            "<div class=\"perfbar\"><div><span>Last</span> %s</div><div><span>Average</span> "
            "%s</div><div><span>Minimum</span> %s</div><div><span>Maximum</span> %s</div>"
            "<div><span>Graph Time</span> %s ms</div>",
            num(b1, ns ? ptl_free_system_ptes(m) : 0), num(b2, ns ? (uint64_t)(sum / ns) : 0),
            num(b3, ns ? vmin : 0), num(b4, vmax), num(b5, s.t1 - s.t0));
    fprintf(f,
            "<div><span>Samples</span> %s</div><div><span>Counter</span> "
            "\\\\PTELAB\\Memory\\Free System Page Table Entries</div></div>\n</section>\n",
            num(b2, ns));
}

/* ---- (b) fragmentation maps ------------------------------------------------------------ */

#define FM_GUT   80 /* address labels */
#define FM_TOP   16
#define FM_ROW_H 10
#define FM_PITCH 13
#define FM_W     (FM_GUT + 1024 + 10)

typedef struct seg {
    uint32_t first; /* first PTE index */
    uint32_t count;
    uint32_t va;
} seg;

/* The pool's segments in PTE-index order, from the pool itself: one, or with /USERVA two
 * (the additional PTEs below 0xC0000000 and the usual ones), with the junction index
 * between them skipped as the pool skips it. */
static int pool_segments(const ptl_machine *m, uint32_t n, seg *out, int max)
{
    const ptl__syspool *p = &m->sysptes.pool[PTL_SYSTEM_PTE_SPACE];
    (void)max;
    if (!p->seg1_va || n <= p->seg0_count + 1) {
        out[0] = (seg){0, n < p->seg0_count || !p->seg1_va ? n : p->seg0_count, p->seg0_va};
        return 1;
    }
    out[0] = (seg){0, p->seg0_count, p->seg0_va};
    out[1] = (seg){p->seg0_count + 1, n - p->seg0_count - 1, p->seg1_va};
    return 2;
}

static uint32_t rows_of(const seg *sg, int nseg)
{
    uint32_t rows = 0;
    for (int i = 0; i < nseg; i++) {
        uint32_t lo = sg[i].va & ~0x3FFFFFu;
        uint64_t hi = (uint64_t)sg[i].va + (uint64_t)sg[i].count * 4096;
        rows += (uint32_t)((hi - lo + 0x3FFFFF) >> 22);
    }
    return rows;
}

static void run_rect(FILE *f, const ptl__snapshot *s, const ptl_machine *m, uint32_t from,
                     uint32_t len, uint32_t va, double x, double y)
{
    char b1[32];
    uint8_t u = s->uses[from];
    uint32_t owner = s->owners[from];
    int mixed = 0;
    for (uint32_t i = from + 1; i < from + len; i++)
        if (s->owners[i] != owner)
            mixed = 1;
    fprintf(f, "<rect class=\"u%u\" x=\"%.0f\" y=\"%.0f\" width=\"%u\" height=\"%d\">", u, x, y,
            len, FM_ROW_H);
    fprintf(f, "<title>%08X-%08X: %s PTE%s, %s", va, va + len * 4096 - 1, num(b1, len),
            len == 1 ? "" : "s", ptl_pte_use_name(u));
    if (u != PTL_PTE_FREE) {
        fputs(", ", f);
        if (mixed)
            fputs("several owners", f);
        else
            ptl__html_escape(f, driver_name_by_id(m, owner));
    }
    fputs("</title></rect>", f);
}

static void write_fragmap(FILE *f, ptl_machine *m, size_t idx)
{
    const ptl__snapshot *s = &m->perf.snaps[idx];
    char b1[32], b2[32], b3[32], b4[32], b5[32];
    seg sg[8];
    int nseg = pool_segments(m, s->n, sg, 8);
    uint32_t rows = rows_of(sg, nseg);

    /* statistics of this snapshot */
    uint32_t count[PTL_PTE_USES] = {0}, largest = 0, runs = 0, cur = 0;
    for (uint32_t i = 0; i < s->n; i++) {
        uint8_t u = s->uses[i] < PTL_PTE_USES ? s->uses[i] : PTL_PTE_OTHER;
        count[u]++;
        if (u == PTL_PTE_FREE) {
            if (cur++ == 0)
                runs++;
            if (cur > largest)
                largest = cur;
        } else {
            cur = 0;
        }
    }
    fputs("<figure class=\"fragmap\"><figcaption><b>", f);
    ptl__html_escape(f, s->label[0] ? s->label : "snapshot");
    fprintf(f, "</b> <span>at tick %s &middot; %s of %s PTEs free in %s run%s, largest %s",
            num(b1, s->tick), num(b2, count[0]), num(b3, s->n), num(b4, runs), runs == 1 ? "" : "s",
            num(b5, largest));
    for (int u = 1; u < PTL_PTE_USES; u++)
        if (count[u])
            fprintf(f, " &middot; %s %s", ptl_pte_use_name(u), num(b1, count[u]));
    fputs("</span></figcaption>\n", f);

    double h = FM_TOP + rows * FM_PITCH + 4;
    fprintf(f,
            "<svg id=\"fragmap-%zu\" class=\"fragmap\" viewBox=\"0 0 %d %.0f\" role=\"img\" "
            "aria-label=\"system PTE map: ",
            idx, FM_W, h);
    ptl__html_escape(f, s->label);
    fputs("\">\n", f);
    for (int c = 0; c < 4; c++)
        fprintf(f, "<text class=\"lbl\" x=\"%d\" y=\"11\">+%d MB</text>", FM_GUT + c * 256, c);
    fprintf(f, "<text class=\"lbl\" x=\"%d\" y=\"11\" text-anchor=\"end\">4 MB per row</text>\n",
            FM_GUT + 1024);
    uint32_t row = 0;
    for (int k = 0; k < nseg; k++) {
        uint32_t row_va = sg[k].va & ~0x3FFFFFu;
        uint32_t i = sg[k].first, end = sg[k].first + sg[k].count;
        while (i < end) {
            double y = FM_TOP + row * FM_PITCH;
            fprintf(f,
                    "<text class=\"lbl mono\" x=\"%d\" y=\"%.0f\" text-anchor=\"end\">%08X</text>",
                    FM_GUT - 6, y + FM_ROW_H - 1, row_va);
            uint64_t row_end_va = (uint64_t)row_va + 0x400000;
            while (i < end) {
                uint32_t va = sg[k].va + (i - sg[k].first) * 4096;
                if ((uint64_t)va >= row_end_va)
                    break;
                uint32_t j = i + 1;
                while (j < end && s->uses[j] == s->uses[i] &&
                       (uint64_t)sg[k].va + (uint64_t)(j - sg[k].first) * 4096 < row_end_va)
                    j++;
                run_rect(f, s, m, i, j - i, va, FM_GUT + ((va - row_va) >> 12), y);
                i = j;
            }
            fputc('\n', f);
            row_va = (uint32_t)row_end_va;
            row++;
        }
    }
    fputs("</svg></figure>\n", f);
}

static void write_fragmaps(FILE *f, ptl_machine *m)
{
    fputs("<section id=\"sec-fragmaps\"><h2>System PTE pool: fragmentation maps</h2>\n"
          "<p class=\"note\">One cell per system PTE, in address order, one row per page table "
          "(1,024 PTEs, 4 MB of address space), at the moments chosen with "
          "ptl_report_snapshot. A request needs one free run long enough: free PTEs scattered "
          "in short runs cannot serve it. Hover a run for its addresses and owner.</p>\n"
          "<ul class=\"legend\">",
          f);
    for (int u = 0; u < PTL_PTE_USES; u++)
        legend_swatch(f, use_colour[u], ptl_pte_use_name(u));
    fputs("</ul>\n", f);
    if (m->perf.nsnaps == 0)
        fputs("<p>No snapshots were taken (ptl_report_snapshot).</p>\n", f);
    if (m->perf.snaps_replaced)
        fprintf(f,
                "<p>%llu more snapshots were taken than the %d kept: each one after the "
                "limit replaced the last map below.</p>\n",
                (unsigned long long)m->perf.snaps_replaced, PTL_SNAPSHOTS_MAX);
    for (size_t i = 0; i < m->perf.nsnaps; i++)
        write_fragmap(f, m, i);
    fputs("</section>\n", f);
}

/* ---- (c) the layout to scale ----------------------------------------------------------- */

#define LY_W   640.0
#define LY_H   760.0
#define LY_TOP 24.0
#define LY_BOT 740.0
#define LY_AX  78.0 /* the 4 GB bar */
#define LY_AW  84.0
#define LY_BX  246.0 /* system space, zoomed */
#define LY_BW  84.0
#define LY_LX  356.0 /* labels */

static const char *region_colour(const char *name, int i)
{
    static const struct {
        const char *prefix, *colour;
    } map[] = {
        {"User", "#bcd7f2"},
        {"System PTEs", "#e4572e"},
        {"Paged pool", "#8fcf7e"},
        {"Nonpaged", "#f0b429"},
        {"Initial nonpaged", "#f0b429"},
        {"System cache", "#b9a7e0"},
        {"Kernel", "#7048b6"},
        {"HAL", "#7048b6"},
        {"PFN", "#8c6d46"},
        {"Process page tables", "#5aa1b8"},
        {"Hyperspace", "#7fbccf"},
        {"System working set", "#a5d2de"},
        {"Crash", "#9aa5b1"},
    };
    for (size_t k = 0; k < sizeof map / sizeof map[0]; k++)
        if (strncmp(name, map[k].prefix, strlen(map[k].prefix)) == 0)
            return map[k].colour;
    static const char *const cycle[] = {"#c5ced8", "#d8c7a5", "#a5c7d8", "#d8a5c0"};
    return cycle[i % 4];
}

static double ly_a(uint64_t va)
{
    return LY_TOP + (LY_BOT - LY_TOP) * (double)va / 4294967296.0;
}

static double ly_b(uint64_t va, uint64_t sys)
{
    if (va < sys)
        va = sys;
    return LY_TOP + (LY_BOT - LY_TOP) * (double)(va - sys) / (double)(4294967296.0 - (double)sys);
}

static void write_layout(FILE *f, ptl_machine *m)
{
    char b1[32];
    const ptl_region *r = NULL;
    int nr = ptl_layout_regions(m, &r);
    uint64_t sys = 0x80000000u;
    for (int i = 0; i < nr; i++)
        if (strncmp(r[i].name, "User", 4) == 0)
            sys = ((uint64_t)r[i].end + 0xFFFF) & ~0xFFFFull; /* MmSystemRangeStart */
    if (sys < 0x80000000u)
        sys = 0x80000000u;

    fputs("<section id=\"sec-layout\"><h2>Address space layout, to scale</h2>\n"
          "<p class=\"note\">Left: the whole 4 GB of one process's view. Right: the system "
          "half enlarged, every region labelled with its range and size. The system PTE pool "
          "sits between paged pool and nonpaged pool expansion, as the article says.</p>\n"
          "<div class=\"layoutgrid\"><div>\n",
          f);
    fprintf(f,
            "<svg id=\"layout\" class=\"chart\" viewBox=\"0 0 %.0f %.0f\" role=\"img\" "
            "aria-label=\"4 GB address space layout\">\n",
            LY_W, LY_H);
    /* bar A: the whole 4 GB */
    fprintf(f, "<text class=\"big\" x=\"%.0f\" y=\"14\" text-anchor=\"middle\">4 GB</text>",
            LY_AX + LY_AW / 2);
    fprintf(f,
            "<text class=\"big\" x=\"%.0f\" y=\"14\" text-anchor=\"middle\">system space, "
            "%s</text>\n",
            LY_BX + LY_BW / 2, bytes_str(b1, (1ull << 32) - sys));
    fprintf(f, "<polygon class=\"zoom\" points=\"%.1f,%.1f %.1f,%.1f %.1f,%.1f %.1f,%.1f\"/>\n",
            LY_AX + LY_AW, ly_a(sys), LY_BX, LY_TOP, LY_BX, LY_BOT, LY_AX + LY_AW, LY_BOT);
    fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"#f3f5f8\"/>",
            LY_AX, LY_TOP, LY_AW, LY_BOT - LY_TOP);
    fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"#f3f5f8\"/>\n",
            LY_BX, LY_TOP, LY_BW, LY_BOT - LY_TOP);
    static const uint64_t ticks[] = {0, 0x40000000, 0x80000000, 0xC0000000, 0x100000000ull};
    for (size_t k = 0; k < 5; k++) {
        double y = ly_a(ticks[k]);
        fprintf(
            f,
            "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#56606b\"/>"
            "<text class=\"lbl mono\" x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%08llX</text>\n",
            LY_AX - 5, y, LY_AX, y, LY_AX - 7, y + 4,
            (unsigned long long)(ticks[k] == 0x100000000ull ? 0xFFFFFFFFull : ticks[k]));
    }
    for (int i = 0; i < nr; i++) {
        uint64_t end = r[i].end ? r[i].end : (1ull << 32);
        const char *col = region_colour(r[i].name, i);
        double y0 = ly_a(r[i].start), y1 = ly_a(end);
        if (y1 - y0 < 0.8)
            y1 = y0 + 0.8;
        fprintf(f,
                "<rect class=\"rg\" x=\"%.0f\" y=\"%.2f\" width=\"%.0f\" height=\"%.2f\" "
                "fill=\"%s\"><title>",
                LY_AX, y0, LY_AW, y1 - y0, col);
        ptl__html_escape(f, r[i].name);
        fprintf(f, " %08X-%08llX</title></rect>\n", r[i].start, (unsigned long long)(end - 1));
        if (y1 - y0 > 40) {
            fprintf(f, "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"12\">",
                    LY_AX + LY_AW / 2, (y0 + y1) / 2);
            ptl__html_escape(f, r[i].name);
            fprintf(f,
                    "</text><text class=\"lbl\" x=\"%.0f\" y=\"%.1f\" "
                    "text-anchor=\"middle\">%s</text>\n",
                    LY_AX + LY_AW / 2, (y0 + y1) / 2 + 15, bytes_str(b1, end - r[i].start));
        }
    }
    fprintf(f, "<rect class=\"frame\" x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\"/>\n",
            LY_AX, LY_TOP, LY_AW, LY_BOT - LY_TOP);

    /* bar B: system space, with spread-out labels */
    double want[PTL_MAX_REGIONS + 4], at[PTL_MAX_REGIONS + 4];
    int idx[PTL_MAX_REGIONS + 4], nl = 0;
    for (int i = 0; i < nr && nl < PTL_MAX_REGIONS + 4; i++) {
        uint64_t end = r[i].end ? r[i].end : (1ull << 32);
        if (end <= sys)
            continue;
        const char *col = region_colour(r[i].name, i);
        double y0 = ly_b(r[i].start, sys), y1 = ly_b(end, sys);
        if (y1 - y0 < 1.2)
            y1 = y0 + 1.2;
        fprintf(f,
                "<rect class=\"rg\" x=\"%.0f\" y=\"%.2f\" width=\"%.0f\" height=\"%.2f\" "
                "fill=\"%s\"><title>",
                LY_BX, y0, LY_BW, y1 - y0, col);
        ptl__html_escape(f, r[i].name);
        fprintf(f, "</title></rect>\n");
        want[nl] = (y0 + y1) / 2;
        idx[nl++] = i;
    }
    fprintf(f, "<rect class=\"frame\" x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\"/>\n",
            LY_BX, LY_TOP, LY_BW, LY_BOT - LY_TOP);
    /* regions come in address order; spread the labels 30 units apart, inside the bar */
    const double gap = 34;
    for (int k = 0; k < nl; k++)
        at[k] = k == 0 ? (want[k] < LY_TOP + 10 ? LY_TOP + 10 : want[k])
                       : (want[k] > at[k - 1] + gap ? want[k] : at[k - 1] + gap);
    for (int k = nl - 1; k >= 0; k--) {
        double lim = k == nl - 1 ? LY_BOT - 16 : at[k + 1] - gap;
        if (at[k] > lim)
            at[k] = lim;
    }
    for (int k = 0; k < nl; k++) {
        const ptl_region *g = &r[idx[k]];
        uint64_t end = g->end ? g->end : (1ull << 32);
        int pte = strncmp(g->name, "System PTEs", 11) == 0;
        fprintf(f, "<polyline class=\"lead\" points=\"%.0f,%.1f %.0f,%.1f %.0f,%.1f %.0f,%.1f\"/>",
                LY_BX + LY_BW, want[k], LY_BX + LY_BW + 8, want[k], LY_LX - 10, at[k], LY_LX - 4,
                at[k]);
        fprintf(f, "<circle cx=\"%.0f\" cy=\"%.1f\" r=\"2\" fill=\"#56606b\"/>", LY_BX + LY_BW,
                want[k]);
        fprintf(f, "<rect x=\"%.0f\" y=\"%.1f\" width=\"10\" height=\"10\" fill=\"%s\"/>", LY_LX,
                at[k] - 9, region_colour(g->name, idx[k]));
        fprintf(f, "<text x=\"%.0f\" y=\"%.1f\" font-size=\"14\"%s>", LY_LX + 15, at[k],
                pte ? " font-weight=\"700\"" : "");
        ptl__html_escape(f, g->name);
        fprintf(f, "</text><text class=\"lbl mono\" x=\"%.0f\" y=\"%.1f\">%08X-%08llX %s</text>\n",
                LY_LX + 15, at[k] + 14, g->start, (unsigned long long)(end - 1),
                bytes_str(b1, end - g->start));
    }
    fputs("</svg></div>\n<div><table><tr><th>region</th><th>start</th><th>end</th>"
          "<th class=\"n\">size</th></tr>\n",
          f);
    for (int i = 0; i < nr; i++) {
        uint64_t end = r[i].end ? r[i].end : (1ull << 32);
        int pte = strncmp(r[i].name, "System PTEs", 11) == 0;
        fprintf(f,
                "<tr%s><td><svg viewBox=\"0 0 10 10\" style=\"width:10px;height:10px;"
                "display:inline;margin-right:6px\"><rect width=\"10\" height=\"10\" "
                "fill=\"%s\"/></svg>",
                pte ? " class=\"hl\"" : "", region_colour(r[i].name, i));
        ptl__html_escape(f, r[i].name);
        fprintf(f,
                "</td><td class=\"mono\">%08X</td><td class=\"mono\">%08llX</td>"
                "<td class=\"n\">%s</td></tr>\n",
                r[i].start, (unsigned long long)(end - 1), bytes_str(b1, end - r[i].start));
    }
    ptl_syspte_stats st;
    ptl_syspte_stats_get(m, &st);
    char b2[32], b3[32], b4[32], b5[32];
    fprintf(f,
            "</table>\n<p class=\"note\" style=\"margin-top:8px\">System PTE pool: %s PTEs "
            "(%s of address space), %s free now, largest free run %s, most ever in use %s. "
            "Requests refused: %llu for want of free PTEs, %llu with enough free PTEs but no "
            "run long enough (fragmentation).</p>\n",
            num(b1, st.total), bytes_str(b2, (uint64_t)st.total * 4096), num(b3, st.free),
            num(b4, st.largest_free), num(b5, st.peak_used), (unsigned long long)st.failed_total,
            (unsigned long long)st.failed_fragmented);
    fputs("</div></div></section>\n", f);
}

/* ---- (d) mappings by driver ------------------------------------------------------------ */

static void write_drivers(FILE *f, ptl_machine *m)
{
    char b1[32];
    uint32_t n = ptl_syspte_snapshot(m, NULL, NULL, 0);
    uint8_t *uses = calloc(n ? n : 1, 1);
    uint32_t *owners = calloc(n ? n : 1, sizeof *owners);
    uint32_t ndrv = 0;
    while (ptl_driver_at(m, ndrv))
        ndrv++;
    uint32_t(*by)[PTL_PTE_USES] = calloc(ndrv + 1, sizeof *by);
    if (!uses || !owners || !by) {
        free(uses);
        free(owners);
        free(by);
        fputs("<section id=\"sec-drivers\"><h2>Mappings by driver</h2><p>(out of memory)</p>"
              "</section>\n",
              f);
        return;
    }
    ptl_syspte_snapshot(m, uses, owners, n);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t o = owners[i] <= ndrv ? owners[i] : 0;
        if (uses[i] != PTL_PTE_FREE && uses[i] < PTL_PTE_USES)
            by[o][uses[i]]++;
    }
    /* which use columns have anything */
    int show[PTL_PTE_USES] = {0};
    for (uint32_t d = 0; d <= ndrv; d++)
        for (int u = 1; u < PTL_PTE_USES; u++)
            if (by[d][u])
                show[u] = 1;

    fputs("<section id=\"sec-drivers\"><h2>Mappings by driver</h2>\n"
          "<p class=\"note\">System PTEs held now by each driver (and import DLL), by use. "
          "PTEs of a driver that has been unloaded are leaked: nothing will ever free "
          "them.</p>\n<table id=\"drivers\"><tr><th>driver</th><th>state</th><th>base</th>"
          "<th class=\"n\">image pages</th><th class=\"n\">PTEs held now</th>",
          f);
    for (int u = 1; u < PTL_PTE_USES; u++)
        if (show[u])
            fprintf(f, "<th class=\"n\">%s</th>", ptl_pte_use_name(u));
    fputs("</tr>\n", f);
    for (uint32_t d = 0; d <= ndrv; d++) {
        uint32_t held = 0;
        for (int u = 1; u < PTL_PTE_USES; u++)
            held += by[d][u];
        if (d == 0) {
            fputs("<tr><td><i>system</i> (kernel, threads, no driver)</td><td></td><td></td>"
                  "<td></td>",
                  f);
        } else {
            ptl_driver *drv = ptl_driver_at(m, d - 1);
            fputs("<tr><td>", f);
            ptl__html_escape(f, ptl_driver_name(drv));
            fprintf(f, "%s</td><td>%s</td><td class=\"mono\">%08X</td><td class=\"n\">%s</td>",
                    drv->is_dll ? " <span class=\"lbl\">(DLL)</span>" : "",
                    ptl_driver_loaded(drv) ? "loaded" : "unloaded", ptl_driver_base(drv),
                    num(b1, drv->image_pages));
        }
        fprintf(f, "<td class=\"n\"><b>%s</b></td>", num(b1, held));
        for (int u = 1; u < PTL_PTE_USES; u++)
            if (show[u])
                fprintf(f, "<td class=\"n\">%s</td>", by[d][u] ? num(b1, by[d][u]) : "");
        fputs("</tr>\n", f);
    }
    fputs("</table></section>\n", f);
    free(uses);
    free(owners);
    free(by);
}

/* ---- (e) the STOP --------------------------------------------------------------------------- */

static void write_stop(FILE *f, ptl_machine *m)
{
    ptl_stop stop;
    fputs("<section id=\"sec-stop\"><h2>Bug check</h2>\n", f);
    if (!ptl_stopped(m, &stop)) {
        fputs("<p>The machine did not stop.</p></section>\n", f);
        return;
    }
    char *screen = NULL;
    size_t len = 0;
    FILE *mf = open_memstream(&screen, &len);
    if (mf) {
        ptl_stop_print(&stop, mf);
        fclose(mf);
    }
    fputs("<pre class=\"bsod\" id=\"stop-screen\">", f);
    ptl__html_escape(f, screen ? screen : "");
    fputs("</pre>\n", f);
    free(screen);
    fputs("<p>", f);
    ptl__html_escape(f, ptl__bugcheck_summary(stop.code));
    if (m->stop.detail[0]) {
        fputs(" ", f);
        ptl__html_escape(f, m->stop.detail);
        fputs(".", f);
    }
    if (m->stop.driver) {
        fputs(" Driver running: <b>", f);
        ptl__html_escape(f, driver_name_by_id(m, m->stop.driver));
        fputs("</b>.", f);
    }
    fputs("</p>\n<table><tr><th>parameter</th><th>value</th><th class=\"n\">decimal</th>"
          "<th>meaning</th></tr>\n",
          f);
    for (int i = 0; i < 4; i++) {
        char b1[32];
        fprintf(f, "<tr><td>P%d</td><td class=\"mono\">0x%08llX</td><td class=\"n\">%s</td><td>",
                i + 1, (unsigned long long)stop.param[i], num(b1, stop.param[i]));
        ptl__html_escape(f, ptl__bugcheck_param_doc(stop.code, stop.param[0], i));
        fputs("</td></tr>\n", f);
    }
    fputs("</table></section>\n", f);
}

/* ---- (f) the event log ---------------------------------------------------------------------- */

#define LOG_LAST 200

static void write_events(FILE *f, ptl_machine *m)
{
    char b1[32], b2[32];
    size_t ne = ptl_event_count(m);
    size_t from = ne > LOG_LAST ? ne - LOG_LAST : 0;
    fprintf(f, "<section id=\"sec-events\"><h2>Event log</h2>\n<p class=\"note\">");
    if (from)
        fprintf(f, "The last %d of %s events.", LOG_LAST, num(b1, ne));
    else
        fprintf(f, "All %s events.", num(b1, ne));
    static const char *const types[] = {"boot", "process", "driver", "thread", "map", "unmap",
                                        "fail", "hazard",  "misuse", "stop",   "note"};
    fputs(" In the whole run:", f);
    int any = 0;
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        uint64_t c = ptl_event_count_type(m, types[t]);
        if (c) {
            fprintf(f, "%s %s %s", any ? "," : "", num(b1, c), types[t]);
            any = 1;
        }
    }
    fputs(".</p>\n<div class=\"events\"><table id=\"events\"><tr><th class=\"n\">#</th>"
          "<th class=\"n\">tick</th><th>type</th><th class=\"n\">free PTEs</th><th>what "
          "happened</th></tr>\n",
          f);
    for (size_t i = from; i < ne; i++) {
        ptl_event e;
        if (ptl_event_get(m, i, &e) != 0)
            continue;
        fprintf(f,
                "<tr class=\"ev-%s\"><td class=\"n\">%llu</td><td class=\"n\">%s</td><td><span "
                "class=\"badge t-%s\">%s</span></td><td class=\"n\">%s</td><td>",
                e.type, (unsigned long long)e.seq, num(b1, e.tick), e.type, e.type,
                num(b2, e.free_ptes));
        ptl__html_escape(f, e.text);
        fputs("</td></tr>\n", f);
    }
    fputs("</table></div></section>\n", f);
}

/* ---- the whole file ---------------------------------------------------------------------------
 */

static void write_all(FILE *f, ptl_machine *m, const char *title)
{
    char b1[32], b2[32], b3[32];
    const ptl_config *cfg = ptl_machine_config(m);
    ptl_syspte_stats st;
    ptl_syspte_stats_get(m, &st);
    ptl_stop stop;
    int stopped = ptl_stopped(m, &stop);

    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
          "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
          "<meta name=\"generator\" content=\"ptelab " PTELAB_VERSION "\">\n<title>",
          f);
    ptl__html_escape(f, title);
    fputs("</title>\n<style>\n", f);
    fputs(css, f);
    fputs("</style></head>\n<body>\n<header class=\"top\"><div class=\"wrap\"><h1>", f);
    ptl__html_escape(f, title);
    fprintf(f,
            "</h1><p>ptelab %s &middot; %s, %s RAM%s &middot; simulated clock %s ms"
            " &middot; SystemPages %s</p></div></header>\n",
            PTELAB_VERSION, profile_name(cfg->profile), bytes_str(b1, cfg->ram_bytes),
            cfg->boot_3gb ? ", /3GB" : "", num(b2, m->perf.tick),
            cfg->system_pages == 0             ? "computed"
            : cfg->system_pages == 0xFFFFFFFFu ? "0xFFFFFFFF (maximum)"
                                               : num(b3, cfg->system_pages));
    fputs("<nav class=\"toc\"><div class=\"wrap\"><a href=\"#sec-timeline\">Timeline</a>"
          "<a href=\"#sec-fragmaps\">Fragmentation</a><a href=\"#sec-layout\">Layout</a>"
          "<a href=\"#sec-drivers\">Drivers</a><a href=\"#sec-stop\">Bug check</a>"
          "<a href=\"#sec-events\">Events</a></div></nav>\n<main class=\"wrap\">\n",
          f);

    /* summary cards */
    fputs("<div class=\"cards\">", f);
    fprintf(f, "<div class=\"card%s\"><b>%s</b><span>free of %s system PTEs</span></div>",
            st.free == 0 ? " bad" : "", num(b1, st.free), num(b2, st.total));
    fprintf(f, "<div class=\"card\"><b>%s</b><span>largest free run (PTEs)</span></div>",
            num(b1, st.largest_free));
    fprintf(f, "<div class=\"card\"><b>%s</b><span>most PTEs ever in use</span></div>",
            num(b1, st.peak_used));
    fprintf(f,
            "<div class=\"card%s\"><b>%s</b><span>requests refused (%s for fragmentation)"
            "</span></div>",
            st.failed_total + st.failed_fragmented ? " bad" : "",
            num(b1, st.failed_total + st.failed_fragmented), num(b2, st.failed_fragmented));
    if (stopped)
        fprintf(f, "<div class=\"card bad stop\"><b>STOP 0x%08X</b><span>%s</span></div>",
                stop.code, stop.name[0] ? stop.name : ptl_bugcheck_name(stop.code));
    else
        fputs("<div class=\"card\"><b>running</b><span>no bug check</span></div>", f);
    fputs("</div>\n", f);

    write_timeline(f, m);
    write_fragmaps(f, m);
    write_layout(f, m);
    write_drivers(f, m);
    write_stop(f, m);
    write_events(f, m);
    fputs("</main>\n<footer class=\"wrap\">Written by ptelab " PTELAB_VERSION
          ", an executable model of the Windows NT x86 memory manager. Self-contained: no "
          "script, no network.</footer>\n</body></html>\n",
          f);
}

int ptl_report_write(ptl_machine *m, const char *path, const char *title)
{
    if (!ptl__machine_ok(m))
        return -1;
    if (!path || !*path)
        return ptl__fail("ptl_report_write: no path");
    FILE *f = fopen(path, "w");
    if (!f)
        return ptl__fail("ptl_report_write: cannot create %s: %s", path, strerror(errno));
    write_all(f, m, title && *title ? title : "ptelab report");
    int bad = ferror(f);
    int saved = errno;
    if (fclose(f) != 0 && !bad) {
        bad = 1;
        saved = errno;
    }
    if (bad)
        return ptl__fail("ptl_report_write: writing %s: %s", path, strerror(saved ? saved : EIO));
    return 0;
}
