/* kd.c - a WinDbg-style inspector over a live or stopped machine.
 *
 * Output shapes follow Microsoft's debugger command reference
 * (learn.microsoft.com/windows-hardware/drivers/debuggercmds/): "!pte", "!vtop", "!pfn",
 * "!sysptes", "!vm", "d, da, db, dc, dd...", "e, ea, eb, ed...", ".process", "!process",
 * "lm", "!analyze", ".bugcheck", "? (Evaluate Expression)". WinDbg prints them for an x86
 * non-PAE target; ptelab's machine is one.
 *
 * Rules every command keeps:
 *   - reading never changes the machine: page walks and memory dumps read the emulated
 *     frames through ptl__phys_copy (no host page is committed, no Accessed bit set, no
 *     fault resolved, no TLB entry filled);
 *   - only the edit commands (eb/ew/ed/eq) change the machine, and only after every
 *     argument has been parsed and checked; `.process EPROCESS` changes kd's own implicit
 *     process (how it reads user addresses, as in WinDbg), never the machine's context,
 *     and the next context switch of the machine resets it;
 *   - bad input (a malformed, missing or out-of-range argument) gets exactly one line
 *     starting with "kd: " on the output stream, the same text in ptl_error(), and a
 *     nonzero return. Every bound is checked: a fuzzer may send anything.
 *
 * Numbers are WinDbg's: hexadecimal by default, 0x for hex and 0n for decimal explicitly,
 * ` separators (8010`1000) allowed, and + - * / % with parentheses wherever a number goes.
 *
 * Invariant: kd changes the machine only through e* (never a paging structure) and the
 * implicit process of .process; every other command only reads.
 */
#include "internal.h"

#include <ctype.h>
#include <stdarg.h>
#include <string.h>
#include <strings.h>

#define KD_MAX_ARGS       1100     /* tokens of one command */
#define KD_MAX_EDIT       1024     /* values of one e* command */
#define KD_MAX_DUMP_BYTES 0x40000u /* 256 KB per d* command, as WinDbg's range limit */
#define KD_MAX_DEPTH      64       /* expression nesting */
#define KD_PHYS_LIMIT     0x100000000ull
#define KD_MMPFN_SIZE     0x18u /* sizeof(MMPFN) on x86 */
#define KD_COL            27    /* width of !pte's left column */

typedef struct kd_tok {
    const char *s;
    size_t n;
} kd_tok;

typedef struct kd_ctx {
    ptl_machine *m;
    FILE *out;
    const kd_tok *arg;
    int nargs;
    const char *rest; /* the argument text, for commands that take an expression */
    unsigned unit;    /* the command's element size (db 1, dw 2, dd 4, dq 8; eb...) */
} kd_ctx;

/* ---- errors ------------------------------------------------------------------------- */

__attribute__((format(printf, 2, 3))) static int kd_err(kd_ctx *c, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(c->out, "kd: %s\n", msg);
    return ptl__fail("kd: %s", msg);
}

/* A token for quoting in an error message: at most 40 characters. */
#define TOKF    "%.*s%s"
#define TOKA(t) (int)((t).n > 40 ? 40 : (t).n), (t).s, ((t).n > 40 ? "..." : "")

/* ---- expressions -------------------------------------------------------------------- */

typedef struct kd_expr {
    const char *p, *end;
    int depth;
    char err[96];
} kd_expr;

static void ex_space(kd_expr *e)
{
    while (e->p < e->end && isspace((unsigned char)*e->p))
        e->p++;
}

static int ex_fail(kd_expr *e, const char *what)
{
    if (!e->err[0]) {
        size_t left = (size_t)(e->end - e->p);
        if (left == 0)
            snprintf(e->err, sizeof e->err, "%s at the end", what);
        else
            snprintf(e->err, sizeof e->err, "%s at '%.*s%s'", what, (int)(left > 20 ? 20 : left),
                     e->p, left > 20 ? "..." : "");
    }
    return -1;
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = tolower(ch);
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

static int ex_number(kd_expr *e, uint64_t *v)
{
    int base = 16;
    if (e->end - e->p >= 2 && e->p[0] == '0' && (e->p[1] == 'x' || e->p[1] == 'X')) {
        e->p += 2;
    } else if (e->end - e->p >= 2 && e->p[0] == '0' && (e->p[1] == 'n' || e->p[1] == 'N')) {
        base = 10;
        e->p += 2;
    }
    uint64_t x = 0;
    int digits = 0;
    while (e->p < e->end) {
        int ch = (unsigned char)*e->p;
        if (ch == '`' && digits > 0) {
            e->p++;
            continue;
        }
        int d = hexval(ch);
        if (d < 0 || d >= base)
            break;
        if (base == 16 ? (x >> 60) != 0 : x > (UINT64_MAX - (uint64_t)d) / 10)
            return ex_fail(e, "number too large");
        x = x * (uint64_t)base + (uint64_t)d;
        digits++;
        e->p++;
    }
    if (digits == 0)
        return ex_fail(e, "syntax error: number expected");
    if (e->p < e->end && (isalnum((unsigned char)*e->p) || *e->p == '_'))
        return ex_fail(e, base == 10 ? "bad decimal digit" : "bad hex digit");
    *v = x;
    return 0;
}

static int ex_sum(kd_expr *e, uint64_t *v);

static int ex_unary(kd_expr *e, uint64_t *v)
{
    if (++e->depth > KD_MAX_DEPTH)
        return ex_fail(e, "expression nested too deeply");
    int rc;
    ex_space(e);
    if (e->p < e->end && (*e->p == '-' || *e->p == '+')) {
        char op = *e->p++;
        rc = ex_unary(e, v);
        if (rc == 0 && op == '-')
            *v = 0 - *v;
    } else if (e->p < e->end && *e->p == '(') {
        e->p++;
        rc = ex_sum(e, v);
        ex_space(e);
        if (rc == 0) {
            if (e->p < e->end && *e->p == ')')
                e->p++;
            else
                rc = ex_fail(e, "')' expected");
        }
    } else {
        rc = ex_number(e, v);
    }
    e->depth--;
    return rc;
}

static int ex_product(kd_expr *e, uint64_t *v)
{
    if (ex_unary(e, v) != 0)
        return -1;
    for (;;) {
        ex_space(e);
        if (e->p >= e->end || (*e->p != '*' && *e->p != '/' && *e->p != '%'))
            return 0;
        char op = *e->p++;
        uint64_t r;
        if (ex_unary(e, &r) != 0)
            return -1;
        if (op == '*') {
            *v *= r;
            continue;
        }
        if (r == 0)
            return ex_fail(e, "divide by zero");
        int64_t a = (int64_t)*v, b = (int64_t)r;
        if (b == -1) /* INT64_MIN / -1 overflows: wrap as the hardware would not trap here */
            *v = op == '/' ? 0 - *v : 0;
        else
            *v = (uint64_t)(op == '/' ? a / b : a % b);
    }
}

static int ex_sum(kd_expr *e, uint64_t *v)
{
    if (ex_product(e, v) != 0)
        return -1;
    for (;;) {
        ex_space(e);
        if (e->p >= e->end || (*e->p != '+' && *e->p != '-'))
            return 0;
        char op = *e->p++;
        uint64_t r;
        if (ex_product(e, &r) != 0)
            return -1;
        *v = op == '+' ? *v + r : *v - r;
    }
}

/* Evaluate s[0..n): 0 and *v, or -1 with the reason in err. */
static int kd_eval(const char *s, size_t n, uint64_t *v, char *err, size_t errlen)
{
    kd_expr e = {s, s + n, 0, {0}};
    ex_space(&e);
    if (e.p == e.end) {
        snprintf(err, errlen, "empty expression");
        return -1;
    }
    if (ex_sum(&e, v) == 0) {
        ex_space(&e);
        if (e.p == e.end)
            return 0;
        ex_fail(&e, "syntax error");
    }
    snprintf(err, errlen, "%s", e.err);
    return -1;
}

/* A number argument of a command. */
static int arg_num(kd_ctx *c, const kd_tok *t, const char *what, uint64_t *v)
{
    char err[128];
    if (kd_eval(t->s, t->n, v, err, sizeof err) != 0)
        return kd_err(c, "bad %s '" TOKF "': %s", what, TOKA(*t), err);
    return 0;
}

/* A 32-bit address: 0..ffffffff, or sign-extended ffffffff`8xxxxxxx as WinDbg shows them. */
static int arg_addr32(kd_ctx *c, const kd_tok *t, const char *what, uint32_t *a)
{
    uint64_t v;
    if (arg_num(c, t, what, &v) != 0)
        return -1;
    if (v > 0xFFFFFFFFull && v < 0xFFFFFFFF80000000ull)
        return kd_err(c, "%s %llx is out of range: an x86 address has 32 bits", what,
                      (unsigned long long)v);
    *a = (uint32_t)v;
    return 0;
}

/* Optional flags argument (index i); *v stays as given when absent. */
static int arg_flags(kd_ctx *c, int i, uint64_t *v)
{
    if (c->nargs > i + 1)
        return kd_err(c, "too many arguments");
    if (c->nargs == i + 1)
        return arg_num(c, &c->arg[i], "flags", v);
    return 0;
}

static int tok_is(const kd_tok *t, const char *s)
{
    return t->n == strlen(s) && strncasecmp(t->s, s, t->n) == 0;
}

/* ---- reading the machine without changing it ---------------------------------------- */

static int kd_read32(ptl_machine *m, uint64_t pa, uint32_t *v)
{
    *v = 0;
    return ptl__phys_copy(&m->phys, pa, v, sizeof *v, 0);
}

static int decoded(const ptl_machine *m, uint64_t pa)
{
    return pa < KD_PHYS_LIMIT &&
           (ptl__phys_is_ram(&m->phys, pa) || ptl__phys_aperture_of(&m->phys, pa) != NULL);
}

/* Walk the page directory at frame pd: 0 and *pa when va is valid, else -1. *pde and *pte
 * get the entries met (0 when not reached). Reads only. */
/* The process whose user space kd reads: .process's choice while it stands, else the one
 * whose directory CR3 holds. */
static ptl_process *kd_process(const ptl_machine *m)
{
    ptl_process *p = m->procs.kd_implicit;
    return p && !p->exited ? p : m->procs.current;
}

static uint32_t kd_dirbase(const ptl_machine *m)
{
    return kd_process(m)->pd;
}

static int kd_walk(ptl_machine *m, uint32_t pd, uint32_t va, uint64_t *pa, uint32_t *pde,
                   uint32_t *pte)
{
    uint32_t d = 0, t = 0;
    int rc = -1;
    if (pd < m->phys.ram_pages &&
        kd_read32(m, ((uint64_t)pd << PTL_PAGE_SHIFT) + (va >> 22) * 4u, &d) == 0 &&
        (d & PTL_PTE_VALID)) {
        if (d & PTL_PTE_LARGEPAGE) {
            *pa = (uint64_t)(d & 0xFFC00000u) | (va & 0x3FFFFFu);
            rc = 0;
        } else if (kd_read32(m,
                             ((uint64_t)(d >> PTL_PAGE_SHIFT) << PTL_PAGE_SHIFT) +
                                 ((va >> 12) & 0x3FFu) * 4u,
                             &t) == 0 &&
                   (t & PTL_PTE_VALID)) {
            *pa = (uint64_t)(t & PTL_PTE_FRAME_MASK) | (va & PTL_PAGE_MASK);
            rc = 0;
        }
    }
    if (pde)
        *pde = d;
    if (pte)
        *pte = t;
    return rc;
}

/* Read n bytes at addr (virtual through the current context, or physical); ok[i] says
 * whether byte i could be read. */
static void kd_read(ptl_machine *m, int phys, uint32_t addr, uint8_t *buf, uint8_t *ok, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint64_t a = (uint64_t)addr + i, pa = a;
        size_t chunk = PTL_PAGE_SIZE - (size_t)(a & PTL_PAGE_MASK);
        if (chunk > n - i)
            chunk = n - i;
        int good = phys ? decoded(m, pa)
                        : a <= 0xFFFFFFFFull &&
                              kd_walk(m, kd_dirbase(m), (uint32_t)a, &pa, NULL, NULL) == 0 &&
                              decoded(m, pa);
        if (good && ptl__phys_copy(&m->phys, pa, buf + i, chunk, 0) == 0) {
            memset(ok + i, 1, chunk);
        } else {
            memset(buf + i, 0, chunk);
            memset(ok + i, 0, chunk);
        }
        i += chunk;
    }
}

static const char *const location_names[8] = {
    "Zeroed", "Free", "Standby", "Modified", "ModifiedNoWrite", "Bad", "Active", "Transition",
};

static const char *protect_name(uint32_t prot, char *buf, size_t len)
{
    static const char *const access[8] = {
        "ZeroAccess", "ReadOnly",  "Execute",          "ExecuteRead",
        "ReadWrite",  "WriteCopy", "ExecuteReadWrite", "ExecuteWriteCopy",
    };
    if (prot == MM_DECOMMIT)
        snprintf(buf, len, "Decommitted");
    else if (prot == MM_NOACCESS)
        snprintf(buf, len, "NoAccess");
    else
        snprintf(buf, len, "%s%s", access[prot & 7],
                 (prot & 0x18) == 0x08   ? " NoCache"
                 : (prot & 0x18) == 0x10 ? " Guard"
                 : (prot & 0x18) == 0x18 ? " WriteCombine"
                                         : "");
    return buf;
}

/* The decoded fields of an invalid PTE, one per line, as !pte prints them. */
static int decode_invalid(const ptl_machine *m, uint32_t pte, char lines[4][64])
{
    char pn[40];
    uint32_t prot = PTL_SWPTE_GET_PROT(pte);
    int n = 0;
    if (pte == 0)
        return 0;
    if (pte & PTL_PTE_PROTOTYPE) {
        if ((pte >> 12) == 0xFFFFFu) {
            snprintf(lines[n++], 64, "Proto: VAD");
        } else {
            uint32_t hi = pte >> 11, lo = (pte >> 1) & 0x7Fu;
            snprintf(lines[n++], 64, "Proto: %08X", m->layout.paged_va + ((hi << 9) | (lo << 2)));
            return n;
        }
    } else if (pte & PTL_PTE_TRANSITION) {
        snprintf(lines[n++], 64, "Transition: %x", pte >> PTL_PAGE_SHIFT);
    } else if ((pte >> PTL_PAGE_SHIFT) != 0) {
        snprintf(lines[n++], 64, "PageFile: %2x",
                 (pte & PTL_SWPTE_PFLOW_MASK) >> PTL_SWPTE_PFLOW_SHIFT);
        snprintf(lines[n++], 64, "Offset: %x", pte >> PTL_PAGE_SHIFT);
    } else if (prot != 0) {
        snprintf(lines[n++], 64, "DemandZero");
    }
    snprintf(lines[n++], 64, "Protect: %x - %s", prot, protect_name(prot, pn, sizeof pn));
    return n;
}

/* Two columns, the right one starting at KD_COL; no trailing blanks. */
static void two_col(FILE *out, const char *l, const char *r)
{
    if (r && r[0])
        fprintf(out, "%-*s%s\n", KD_COL, l, r);
    else
        fprintf(out, "%s\n", l);
}

/* ---- !pte, !vtop, !pfn --------------------------------------------------------------- */

static int kd_pte(kd_ctx *c)
{
    ptl_machine *m = c->m;
    uint32_t va = 0;
    if (c->nargs != 1)
        return kd_err(c, c->nargs ? "!pte takes one address" : "!pte needs an address");
    if (arg_addr32(c, &c->arg[0], "address", &va) != 0)
        return -1;
    uint32_t pd = kd_dirbase(m), pde = 0, pte = 0;
    kd_read32(m, ((uint64_t)pd << PTL_PAGE_SHIFT) + (va >> 22) * 4u, &pde);
    int pde_valid = (pde & PTL_PTE_VALID) != 0, large = pde_valid && (pde & PTL_PTE_LARGEPAGE);
    if (pde_valid && !large)
        kd_read32(
            m, ((uint64_t)(pde >> PTL_PAGE_SHIFT) << PTL_PAGE_SHIFT) + ((va >> 12) & 0x3FFu) * 4u,
            &pte);
    char l[64], r[64], fl[16];
    fprintf(c->out, "%20sVA %08x\n", "", va);
    snprintf(l, sizeof l, "PDE at %08X", PTL_PDE_VA(va));
    snprintf(r, sizeof r, "PTE at %08X", PTL_PTE_VA(va));
    two_col(c->out, l, r);
    snprintf(l, sizeof l, "contains %08X", pde);
    if (pde_valid && !large)
        snprintf(r, sizeof r, "contains %08X", pte);
    else
        r[0] = 0;
    two_col(c->out, l, r);
    char lines[4][64];
    if (!pde_valid) {
        fprintf(c->out, "not valid\n");
        int n = decode_invalid(m, pde, lines);
        for (int i = 0; i < n; i++)
            fprintf(c->out, "%s\n", lines[i]);
        return 0;
    }
    ptl__pte_flags(pde, 1, fl);
    snprintf(l, sizeof l, "pfn %x %s", pde >> PTL_PAGE_SHIFT, fl);
    if (large) {
        snprintf(r, sizeof r, "LARGE PAGE pfn %x", ((pde & 0xFFC00000u) | (va & 0x3FF000u)) >> 12);
        two_col(c->out, l, r);
        return 0;
    }
    if (pte & PTL_PTE_VALID) {
        ptl__pte_flags(pte, 0, fl);
        snprintf(r, sizeof r, "pfn %x %s", pte >> PTL_PAGE_SHIFT, fl);
        two_col(c->out, l, r);
        return 0;
    }
    two_col(c->out, l, "not valid");
    int n = decode_invalid(m, pte, lines);
    for (int i = 0; i < n; i++)
        two_col(c->out, "", lines[i]);
    return 0;
}

static int is_page_directory(const ptl_machine *m, uint64_t pfn)
{
    for (int k = 0; k < m->pte.npds; k++)
        if (m->pte.pds[k] == pfn)
            return 1;
    return 0;
}

static int kd_vtop(kd_ctx *c)
{
    ptl_machine *m = c->m;
    if (c->nargs != 2)
        return kd_err(c, "usage: !vtop DirBase VirtualAddress (DirBase 0: the current process)");
    uint64_t base;
    uint32_t va = 0, pd = 0;
    if (arg_num(c, &c->arg[0], "DirBase", &base) != 0 ||
        arg_addr32(c, &c->arg[1], "address", &va) != 0)
        return -1;
    if (base == 0)
        pd = kd_dirbase(m);
    else if (!(base & PTL_PAGE_MASK) && is_page_directory(m, base >> PTL_PAGE_SHIFT))
        pd = (uint32_t)(base >> PTL_PAGE_SHIFT);
    else if (is_page_directory(m, base))
        pd = (uint32_t)base; /* the PFN of the directory, as WinDbg also accepts */
    else
        return kd_err(c,
                      "%llx is not the DirBase (or its PFN) of a page directory; see !process 0 0",
                      (unsigned long long)base);
    uint64_t pa;
    uint32_t pde, pte;
    fprintf(c->out, "Pdi %x Pti %x\n", va >> 22, (va >> 12) & 0x3FFu);
    if (kd_walk(m, pd, va, &pa, &pde, &pte) == 0)
        fprintf(c->out, "%08x %08llx pfn(%05llx)\n", va,
                (unsigned long long)(pa & ~(uint64_t)PTL_PAGE_MASK),
                (unsigned long long)(pa >> PTL_PAGE_SHIFT));
    else if (!(pde & PTL_PTE_VALID))
        fprintf(c->out, "%08x not present: PDE %08x\n", va, pde);
    else
        fprintf(c->out, "%08x not present: PTE %08x\n", va, pte);
    return 0;
}

static int kd_pfn(kd_ctx *c)
{
    ptl_machine *m = c->m;
    uint64_t pfn;
    if (c->nargs != 1)
        return kd_err(c, c->nargs ? "!pfn takes one page frame number"
                                  : "!pfn needs a page frame number");
    if (arg_num(c, &c->arg[0], "page frame number", &pfn) != 0)
        return -1;
    if (pfn >= m->phys.ram_pages) {
        const ptl__aperture *ap = pfn < (KD_PHYS_LIMIT >> PTL_PAGE_SHIFT)
                                      ? ptl__phys_aperture_of(&m->phys, pfn << PTL_PAGE_SHIFT)
                                      : NULL;
        if (!ap)
            return kd_err(c, "page frame %llx is neither RAM (0-%x) nor adapter memory",
                          (unsigned long long)pfn, m->phys.ram_pages - 1);
        fprintf(c->out, "    PFN %08llX is I/O space, not in the PFN database\n",
                (unsigned long long)pfn);
        fprintf(c->out, "    adapter aperture %08llx-%08llx (bus %d/%u, bus address %08llx)\n",
                (unsigned long long)ap->phys, (unsigned long long)(ap->phys + ap->bytes - 1),
                ap->bus, ap->bus_number, (unsigned long long)ap->bus_address);
        return 0;
    }
    const ptl__pfn *e = &m->phys.pfn[pfn];
    uint32_t loc = e->PageLocation & 7u;
    uint32_t flink = e->Use == PTL_USE_FREE ? (e->Flink ? e->Flink - 1 : 0xFFFFFFFFu) : 0;
    fprintf(c->out, "    PFN %08llX at address %08X\n", (unsigned long long)pfn,
            m->layout.pfn_va + (uint32_t)pfn * KD_MMPFN_SIZE);
    fprintf(c->out, "    flink       %08X  blink / share count %08X  pteaddress %08X\n", flink,
            e->ShareCount, e->PteAddress);
    fprintf(c->out, "    reference count %04X                                 color 0\n",
            e->ReferenceCount);
    fprintf(c->out, "    restore pte %08X  containing page        %06X  %s%s\n", 0u, e->PteFrame,
            location_names[loc], e->Modified ? "     M" : "");
    if (e->Modified)
        fprintf(c->out, "    Modified\n");
    fprintf(c->out, "    use %s  lock count %04X  owner pid %04X\n", ptl__frame_use_name(e->Use),
            e->LockCount, e->OwnerPid);
    return 0;
}

/* ---- !sysptes ---------------------------------------------------------------------------- */

static uint32_t pool_idx_va(const ptl__syspool *p, uint32_t i)
{
    if (i < p->seg0_count || !p->seg1_va)
        return p->seg0_va + i * PTL_PAGE_SIZE;
    return p->seg1_va + (i - p->seg0_count - 1) * PTL_PAGE_SIZE;
}

typedef struct free_walk {
    FILE *out;
    const ptl__syspool *p;
} free_walk;

static int print_free_run(void *ctx, uint32_t start, uint32_t len)
{
    free_walk *w = ctx;
    fprintf(w->out, "      free ptes: %08x   number free: %u.\n",
            PTL_PTE_VA(pool_idx_va(w->p, start)), len);
    return 0;
}

static void print_pool(kd_ctx *c, const ptl__syspool *p, int list_free)
{
    ptl__spool_stats st;
    ptl__spool_stats_get(p->alloc, &st);
    FILE *out = c->out;
    if (p->seg1_va) {
        fprintf(out, "    starting PTE: %08x   (additional system PTEs, /USERVA)\n",
                PTL_PTE_VA(p->seg0_va));
        fprintf(out, "    ending PTE:   %08x\n", PTL_PTE_VA(pool_idx_va(p, p->seg0_count - 1)));
        fprintf(out, "    starting PTE: %08x\n", PTL_PTE_VA(p->seg1_va));
        fprintf(out, "    ending PTE:   %08x\n", PTL_PTE_VA(pool_idx_va(p, p->total - 1)));
    } else if (p->total) {
        fprintf(out, "    starting PTE: %08x\n", PTL_PTE_VA(p->seg0_va));
        fprintf(out, "    ending PTE:   %08x\n", PTL_PTE_VA(pool_idx_va(p, p->total - 1)));
    }
    fprintf(out, "\n");
    if (list_free) {
        free_walk w = {out, p};
        ptl__spool_each_free(p->alloc, print_free_run, &w);
        fprintf(out, "\n");
    }
    fprintf(out, "  free blocks: %u   total free: %u    largest free block: %u\n", st.runs, st.free,
            st.largest);
}

static void print_histogram(FILE *out, const ptl__spool *sp)
{
    ptl__spool_stats st;
    ptl__spool_stats_get(sp, &st);
    for (int k = 0; k < PTL_SPOOL_HIST; k++) {
        if (!st.hist[k])
            continue;
        uint32_t lo = 1u << k, hi = (2u << k) - 1u;
        if (k == PTL_SPOOL_HIST - 1)
            fprintf(out, "     free blocks of size %u and more: %u\n", lo, st.hist[k]);
        else if (lo == hi)
            fprintf(out, "     free blocks of size %u: %u\n", lo, st.hist[k]);
        else
            fprintf(out, "     free blocks of size %u-%u: %u\n", lo, hi, st.hist[k]);
    }
}

static const char *driver_name(ptl_machine *m, uint32_t id)
{
    const ptl_driver *d = id ? ptl__driver_by_id(m, id) : NULL;
    return d ? d->name : id ? "(unknown driver)" : "(system)";
}

static void print_locked(kd_ctx *c)
{
    ptl_machine *m = c->m;
    FILE *out = c->out;
    const ptl__syspool *p = &m->sysptes.pool[PTL_SYSTEM_PTE_SPACE];
    fprintf(out, "\nLocked page mappings (TrackPtes):\n");
    if (!m->cfg.track_ptes) {
        fprintf(out,
                "    not tracked: set the Memory Management value TrackPtes to 1 and reboot\n");
        return;
    }
    fprintf(out, "    VA        PTEs  Driver\n");
    uint32_t runs = 0, ptes = 0;
    for (uint32_t i = 0; i < p->total; i++) {
        const ptl__pteinfo *e = &p->info[i];
        if (e->kind != PTL_KIND_MDL || e->run_len == 0)
            continue;
        fprintf(out, "    %08x %5u  %s\n", pool_idx_va(p, i), e->run_len,
                driver_name(m, e->driver));
        runs++;
        ptes += e->run_len;
    }
    fprintf(out, "  by driver:\n");
    /* drivers in load order, then the system (driver 0) */
    for (const ptl_driver *d = m->kernel.drivers;; d = d->next) {
        uint32_t id = d ? d->id : 0, n = 0, r = 0;
        for (uint32_t i = 0; i < p->total; i++) {
            const ptl__pteinfo *e = &p->info[i];
            if (e->kind == PTL_KIND_MDL && e->run_len && e->driver == id) {
                n += e->run_len;
                r++;
            }
        }
        if (n)
            fprintf(out, "    %-20s %6u PTEs in %u mappings\n", d ? d->name : "(system)", n, r);
        if (!d)
            break;
    }
    fprintf(out, "  total: %u PTEs in %u mappings\n", ptes, runs);
}

static int kd_sysptes(kd_ctx *c)
{
    ptl_machine *m = c->m;
    uint64_t flags = 0;
    if (arg_flags(c, 0, &flags) != 0)
        return -1;
    const ptl__syspool *np = &m->sysptes.pool[PTL_NONPAGED_POOL_EXPANSION];
    if (flags & 8) {
        fprintf(c->out, "Nonpaged pool expansion PTE information\n");
        fprintf(c->out, "  Total Nonpaged Pool Expansion Ptes %u\n", np->total);
        print_histogram(c->out, np->alloc);
        fprintf(c->out, "\n");
        print_pool(c, np, (flags & 1) != 0);
        return 0;
    }
    const ptl__syspool *p = &m->sysptes.pool[PTL_SYSTEM_PTE_SPACE];
    fprintf(c->out, "System PTE Information\n");
    fprintf(c->out, "  Total System Ptes %u\n", ptl_total_system_ptes(m));
    print_histogram(c->out, p->alloc);
    fprintf(c->out, "\n");
    print_pool(c, p, (flags & 1) != 0);
    if (p->failed_total || p->failed_fragmented)
        fprintf(c->out, "  failed allocations: %llu (%llu with enough free PTEs, but fragmented)\n",
                (unsigned long long)(p->failed_total + p->failed_fragmented),
                (unsigned long long)p->failed_fragmented);
    if (flags & 4)
        print_locked(c);
    return 0;
}

/* ---- !vm --------------------------------------------------------------------------------- */

static void vm_line(FILE *out, const char *what, uint64_t pages)
{
    fprintf(out, "\t%-20s %8llu (  %8llu Kb)\n", what, (unsigned long long)pages,
            (unsigned long long)pages * 4);
}

static int kd_vm(kd_ctx *c)
{
    ptl_machine *m = c->m;
    uint64_t flags = 0;
    if (arg_flags(c, 0, &flags) != 0)
        return -1;
    ptl_syspte_stats st;
    ptl_counters k;
    ptl_syspte_stats_get(m, &st);
    ptl_counters_get(m, &k);
    FILE *out = c->out;
    fprintf(out, "\n*** Virtual Memory Usage ***\n");
    vm_line(out, "Physical Memory:", m->phys.ram_pages);
    vm_line(out, "Available Pages:", ptl__phys_available(&m->phys));
    vm_line(out, "Free System PTEs:", st.free);
    vm_line(out, "Free NP PTEs:",
            ptl__spool_free_count(m->sysptes.pool[PTL_NONPAGED_POOL_EXPANSION].alloc));
    vm_line(out, "NonPagedPool Usage:", (k.pool_nonpaged_bytes + PTL_PAGE_MASK) / PTL_PAGE_SIZE);
    vm_line(out, "NonPagedPool Max:", m->layout.max_npp_bytes / PTL_PAGE_SIZE);
    vm_line(out, "PagedPool Usage:", (k.pool_paged_bytes + PTL_PAGE_MASK) / PTL_PAGE_SIZE);
    vm_line(out, "PagedPool Maximum:", (m->layout.paged_end - m->layout.paged_va) / PTL_PAGE_SIZE);
    vm_line(out, "Committed pages:", k.committed_bytes / PTL_PAGE_SIZE);
    uint64_t failed = st.failed_total + st.failed_fragmented;
    /* When WinDbg prints the warning is not documented; ptelab warns below 800 free PTEs
     * (about 3 MB of mappings) or after any refused request (docs/fidelity.md). */
    if (st.free < 800 || failed) {
        fprintf(out, "\n\t********** Running out of system PTEs **************\n");
        if (failed)
            fprintf(out, "\t********** %llu system PTE allocations have failed ******\n",
                    (unsigned long long)failed);
    }
    if (!(flags & 1)) {
        fprintf(out, "\n");
        for (const ptl_process *p = m->procs.list; p; p = p->next)
            if (!p->exited)
                fprintf(out, "\t %04x %-15s %8u (  %8u Kb)\n", p->pid, p->name, p->private_pages,
                        p->private_pages * 4);
    }
    return 0;
}

/* ---- d*, e* ------------------------------------------------------------------------------ */

/* Leading /p; returns the index of the first other argument, or -1 on an unknown option. */
static int parse_options(kd_ctx *c, int *phys)
{
    int i = 0;
    *phys = 0;
    while (i < c->nargs && c->arg[i].n && c->arg[i].s[0] == '/') {
        if (!tok_is(&c->arg[i], "/p"))
            return kd_err(c, "unknown option '" TOKF "' (kd knows /p: physical)", TOKA(c->arg[i]));
        *phys = 1;
        i++;
    }
    return i;
}

static int check_address(kd_ctx *c, const kd_tok *t, int phys, uint32_t *addr)
{
    uint64_t v;
    if (arg_num(c, t, "address", &v) != 0)
        return -1;
    if (phys) {
        if (v >= KD_PHYS_LIMIT)
            return kd_err(
                c, "physical address %llx is beyond 4 GB: x86 without PAE has 32 address bits",
                (unsigned long long)v);
    } else if (v > 0xFFFFFFFFull && v < 0xFFFFFFFF80000000ull) {
        return kd_err(c, "address %llx is out of range: an x86 address has 32 bits",
                      (unsigned long long)v);
    }
    *addr = (uint32_t)v;
    return 0;
}

static int kd_dump(kd_ctx *c)
{
    unsigned unit = c->unit;
    ptl_machine *m = c->m;
    int phys;
    int i = parse_options(c, &phys);
    if (i < 0)
        return -1;
    if (i >= c->nargs)
        return kd_err(c, "an address is needed: d%c [/p] address [L count]", "bw?d???q"[unit - 1]);
    uint32_t addr = 0;
    if (check_address(c, &c->arg[i], phys, &addr) != 0)
        return -1;
    i++;
    uint64_t count = 0x80u / unit;
    if (i < c->nargs) {
        kd_tok t = c->arg[i];
        if (t.s[0] != 'L' && t.s[0] != 'l')
            return kd_err(c, "unexpected '" TOKF "': the length is given as L count", TOKA(t));
        t.s++;
        t.n--;
        if (t.n && t.s[0] == '?') {
            t.s++;
            t.n--;
        }
        if (t.n == 0) {
            if (++i >= c->nargs)
                return kd_err(c, "L needs a count");
            t = c->arg[i];
        }
        if (arg_num(c, &t, "count", &count) != 0)
            return -1;
        if (++i < c->nargs)
            return kd_err(c, "unexpected '" TOKF "' after the count", TOKA(c->arg[i]));
        if (count == 0)
            return kd_err(c, "the count must be at least 1");
        if (count > KD_MAX_DUMP_BYTES / unit)
            return kd_err(c, "range error: L%llx is more than %u bytes", (unsigned long long)count,
                          KD_MAX_DUMP_BYTES);
    }
    size_t n = (size_t)count * unit;
    if ((uint64_t)addr + n > KD_PHYS_LIMIT)
        return kd_err(c, "range error: %08x L%llx runs past the end of the %s address space", addr,
                      (unsigned long long)count, phys ? "physical" : "virtual");
    uint8_t *buf = ptl__xcalloc(n, 2);
    uint8_t *ok = buf + n;
    kd_read(m, phys, addr, buf, ok, n);
    for (size_t line = 0; line < n; line += 16) {
        size_t cnt = n - line < 16 ? n - line : 16;
        const uint8_t *b = buf + line, *g = ok + line;
        fprintf(c->out, "%08x ", (uint32_t)(addr + line));
        if (unit == 1) {
            for (size_t j = 0; j < 16; j++) {
                char sep = (j == 8 && j < cnt) ? '-' : ' ';
                if (j < cnt && g[j])
                    fprintf(c->out, "%c%02x", sep, b[j]);
                else if (j < cnt)
                    fprintf(c->out, "%c??", sep);
                else
                    fprintf(c->out, "   ");
            }
            fprintf(c->out, "  ");
            for (size_t j = 0; j < cnt; j++)
                fputc(!g[j] ? '?' : (b[j] >= 0x20 && b[j] < 0x7F) ? b[j] : '.', c->out);
        } else {
            for (size_t j = 0; j < cnt; j += unit) {
                int good = 1;
                uint64_t v = 0;
                for (unsigned k = 0; k < unit; k++) {
                    good &= g[j + k];
                    v |= (uint64_t)b[j + k] << (8 * k);
                }
                if (unit == 2)
                    fprintf(c->out, good ? " %04llx" : " ????", (unsigned long long)v);
                else if (unit == 4)
                    fprintf(c->out, good ? " %08llx" : " ????????", (unsigned long long)v);
                else if (good)
                    fprintf(c->out, " %08llx`%08llx", (unsigned long long)(v >> 32),
                            (unsigned long long)(v & 0xFFFFFFFFu));
                else
                    fprintf(c->out, " ????????`????????");
            }
        }
        fprintf(c->out, "\n");
    }
    free(buf);
    return 0;
}

/* Where byte `a` of an edit lands: 0 and *pa, or an error line. */
static int edit_target(kd_ctx *c, int phys, uint64_t a, uint64_t *pa)
{
    ptl_machine *m = c->m;
    if (phys)
        *pa = a;
    else if (kd_walk(m, kd_dirbase(m), (uint32_t)a, pa, NULL, NULL) != 0)
        return kd_err(c, "memory access error at %08llx: the page is not valid",
                      (unsigned long long)a);
    if (!decoded(m, *pa))
        return kd_err(
            c, "memory access error at %08llx: physical %08llx is neither RAM nor adapter memory",
            (unsigned long long)a, (unsigned long long)*pa);
    uint64_t pfn = *pa >> PTL_PAGE_SHIFT;
    if (pfn < m->phys.ram_pages && (m->phys.pfn[pfn].Use == PTL_USE_PAGE_DIRECTORY ||
                                    m->phys.pfn[pfn].Use == PTL_USE_PAGE_TABLE))
        return kd_err(c, "%08llx is in a %s (pfn %llx): kd does not edit paging structures",
                      (unsigned long long)a, ptl__frame_use_name(m->phys.pfn[pfn].Use),
                      (unsigned long long)pfn);
    return 0;
}

static int kd_edit(kd_ctx *c)
{
    unsigned unit = c->unit;
    ptl_machine *m = c->m;
    int phys;
    int i = parse_options(c, &phys);
    if (i < 0)
        return -1;
    if (i >= c->nargs)
        return kd_err(c, "an address is needed: e%c [/p] address value [value...]",
                      "bw?d???q"[unit - 1]);
    uint32_t addr = 0;
    if (check_address(c, &c->arg[i], phys, &addr) != 0)
        return -1;
    i++;
    int nvals = c->nargs - i;
    if (nvals == 0)
        return kd_err(c, "no values to enter");
    if (nvals > KD_MAX_EDIT)
        return kd_err(c, "too many values: at most %d", KD_MAX_EDIT);
    size_t n = (size_t)nvals * unit;
    if ((uint64_t)addr + n > KD_PHYS_LIMIT)
        return kd_err(c, "range error: the values run past the end of the address space");
    uint8_t bytes[KD_MAX_EDIT * 8];
    uint64_t max = unit == 8 ? UINT64_MAX : (1ull << (8 * unit)) - 1;
    for (int k = 0; k < nvals; k++) {
        uint64_t v;
        if (arg_num(c, &c->arg[i + k], "value", &v) != 0)
            return -1;
        /* a negative value is taken in the unit's width, as WinDbg does */
        if (v > max && !((int64_t)v < 0 && (int64_t)v >= -(int64_t)(max / 2 + 1)))
            return kd_err(c, "value '" TOKF "' does not fit in %u byte%s", TOKA(c->arg[i + k]),
                          unit, unit > 1 ? "s" : "");
        for (unsigned b = 0; b < unit; b++)
            bytes[(size_t)k * unit + b] = (uint8_t)(v >> (8 * b));
    }
    /* check every page before writing any byte */
    uint64_t pa;
    for (uint64_t a = addr; a < (uint64_t)addr + n; a = (a | PTL_PAGE_MASK) + 1)
        if (edit_target(c, phys, a, &pa) != 0)
            return -1;
    for (uint64_t a = addr; a < (uint64_t)addr + n;) {
        size_t chunk = PTL_PAGE_SIZE - (size_t)(a & PTL_PAGE_MASK);
        if (chunk > (uint64_t)addr + n - a)
            chunk = (size_t)((uint64_t)addr + n - a);
        PTL_ASSERT(edit_target(c, phys, a, &pa) == 0);
        PTL_ASSERT(ptl__phys_copy(&m->phys, pa, bytes + (a - addr), chunk, 1) == 0);
        a += chunk;
    }
    return 0;
}

/* ---- processes, modules ------------------------------------------------------------------ */

static int kd_dot_process(kd_ctx *c)
{
    ptl_machine *m = c->m;
    int i = 0;
    while (i < c->nargs && (tok_is(&c->arg[i], "/p") || tok_is(&c->arg[i], "/r")))
        i++; /* kd translates through the context anyway; nothing to reload */
    if (i < c->nargs && c->arg[i].s[0] == '/')
        return kd_err(c, "unknown option '" TOKF "' (.process knows /p and /r)", TOKA(c->arg[i]));
    if (i + 1 < c->nargs)
        return kd_err(c, "too many arguments: .process [EPROCESS]");
    if (i < c->nargs) {
        uint32_t ep = 0;
        if (arg_addr32(c, &c->arg[i], "EPROCESS", &ep) != 0)
            return -1;
        ptl_process *p = ptl__process_by_eprocess(m, ep);
        if (!p)
            return kd_err(c, "%08x is not the EPROCESS of a live process (see !process 0 0)", ep);
        /* WinDbg's .process sets the debugger's implicit process: how it reads user
         * addresses. The machine's own context (CR3, the current process) stays. */
        m->procs.kd_implicit = p;
    }
    fprintf(c->out, "Implicit process is now %08x\n", kd_process(m)->eprocess_va);
    return 0;
}

static uint32_t handle_count(const ptl_machine *m, const ptl_process *p)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < m->objects.nhandles; i++) {
        const ptl__handle *h = &m->objects.handles[i];
        if (h->in_use && (h->kernel ? p->is_system : h->owner == p))
            n++;
    }
    return n;
}

static void process_block(kd_ctx *c, const ptl_process *p, uint64_t flags)
{
    fprintf(c->out, "PROCESS %08x  SessionId: none  Cid: %04x    Peb: 00000000  ParentCid: 0000\n",
            p->eprocess_va, p->pid);
    fprintf(c->out, "    DirBase: %08x  ObjectTable: 00000000  HandleCount: %u.\n",
            p->pd << PTL_PAGE_SHIFT, handle_count(c->m, p));
    fprintf(c->out, "    Image: %s\n", p->name);
    if (flags & 1) {
        fprintf(c->out, "    Vads %d  Private %u.  Locked %u.  Threads %u.", p->nvads,
                p->private_pages, p->locked_pages, p->threads);
        if (p->paged_out)
            fprintf(c->out, "  Paged out %u.", p->paged_out);
        fputc('\n', c->out);
        for (int i = 0; i < p->nvads; i++) {
            static const char *const kinds[PTL_VAD_KINDS] = {"Private", "Physical", "LockedPages"};
            char pn[40];
            const ptl__vad *v = &p->vads[i];
            fprintf(c->out, "        VAD %08x-%08x %-11s %s\n", v->start, v->end - 1,
                    v->kind < PTL_VAD_KINDS ? kinds[v->kind] : "?",
                    protect_name(v->protect & 0x1Fu, pn, sizeof pn));
        }
    }
    fprintf(c->out, "\n");
}

static int kd_bang_process(kd_ctx *c)
{
    ptl_machine *m = c->m;
    uint64_t which = m->procs.current->eprocess_va, flags = 0;
    if (c->nargs > 3)
        return kd_err(c, "too many arguments: !process [0|EPROCESS] [flags] [image]");
    if (c->nargs >= 1 && arg_num(c, &c->arg[0], "process", &which) != 0)
        return -1;
    if (c->nargs >= 2 && arg_num(c, &c->arg[1], "flags", &flags) != 0)
        return -1;
    const kd_tok *image = c->nargs == 3 ? &c->arg[2] : NULL;
    if (which == 0) {
        fprintf(c->out, "**** NT ACTIVE PROCESS DUMP ****\n");
        for (const ptl_process *p = m->procs.list; p; p = p->next) {
            if (p->exited)
                continue;
            if (image &&
                !(strlen(p->name) == image->n && strncasecmp(p->name, image->s, image->n) == 0))
                continue;
            process_block(c, p, flags);
        }
        return 0;
    }
    if (which > 0xFFFFFFFFull)
        return kd_err(c, "process %llx is out of range", (unsigned long long)which);
    const ptl_process *p = ptl__process_by_eprocess(m, (uint32_t)which);
    if (!p)
        return kd_err(c, "%08llx is not the EPROCESS of a live process (see !process 0 0)",
                      (unsigned long long)which);
    process_block(c, p, flags);
    return 0;
}

static int cmp_driver(const void *a, const void *b)
{
    const ptl_driver *x = *(const ptl_driver *const *)a, *y = *(const ptl_driver *const *)b;
    return x->base_va < y->base_va ? -1 : x->base_va > y->base_va;
}

static int kd_lm(kd_ctx *c)
{
    ptl_machine *m = c->m;
    if (c->nargs)
        return kd_err(c, "lm takes no arguments in kd");
    uint32_t n = 0;
    for (const ptl_driver *d = m->kernel.drivers; d; d = d->next)
        n += !d->unloaded;
    const ptl_driver **v = ptl__xcalloc(n ? n : 1, sizeof *v);
    uint32_t k = 0;
    for (const ptl_driver *d = m->kernel.drivers; d && k < n; d = d->next)
        if (!d->unloaded)
            v[k++] = d;
    qsort(v, k, sizeof *v, cmp_driver);
    fprintf(c->out, "start    end        module name\n");
    for (uint32_t i = 0; i < k; i++) {
        char mod[32];
        snprintf(mod, sizeof mod, "%s", v[i]->name);
        char *dot = strrchr(mod, '.');
        if (dot && dot != mod)
            *dot = 0;
        fprintf(c->out, "%08x %08x   %-10s (deferred)\n", v[i]->base_va,
                v[i]->base_va + v[i]->image_pages * PTL_PAGE_SIZE, mod);
    }
    free(v);
    return 0;
}

/* ---- bug checks ------------------------------------------------------------------------- */

static int kd_analyze(kd_ctx *c)
{
    ptl_machine *m = c->m;
    int verbose = 0;
    for (int i = 0; i < c->nargs; i++) {
        if (tok_is(&c->arg[i], "-v"))
            verbose = 1;
        else
            return kd_err(c, "unknown !analyze option '" TOKF "' (kd knows -v)", TOKA(c->arg[i]));
    }
    if (!m->stop.stopped)
        return kd_err(c, "the machine has not bug-checked: nothing to analyze (see !vm)");
    const ptl_stop *s = &m->stop.info;
    const ptl_driver *d = m->stop.driver ? ptl__driver_by_id(m, m->stop.driver) : NULL;
    const char *image = d ? d->name : "ntoskrnl.exe";
    FILE *out = c->out;
    fprintf(out,
            "*******************************************************************************\n"
            "*                                                                             *\n"
            "*                        Bugcheck Analysis                                    *\n"
            "*                                                                             *\n"
            "*******************************************************************************\n\n");
    if (!verbose) {
        fprintf(out, "Use !analyze -v to get detailed debugging information.\n\n");
        fprintf(out, "BugCheck %X, {%llx, %llx, %llx, %llx}\n\n", s->code,
                (unsigned long long)s->param[0], (unsigned long long)s->param[1],
                (unsigned long long)s->param[2], (unsigned long long)s->param[3]);
        fprintf(out, "Probably caused by : %s\n\n", image);
        fprintf(out, "Followup: MachineOwner\n---------\n");
        return 0;
    }
    fprintf(out, "%s (%x)\n%s\n", s->name[0] ? s->name : ptl_bugcheck_name(s->code), s->code,
            ptl__bugcheck_summary(s->code));
    fprintf(out, "Arguments:\n");
    for (int i = 0; i < 4; i++)
        fprintf(out, "Arg%d: %08llx, %s\n", i + 1, (unsigned long long)s->param[i],
                ptl__bugcheck_param_doc(s->code, s->param[0], i));
    fprintf(out, "\nDebugging Details:\n------------------\n\n");
    if (m->stop.detail[0])
        fprintf(out, "PTELAB_DETAIL:  %s\n\n", m->stop.detail);
    fprintf(out, "BUGCHECK_CODE:  %x\n\n", s->code);
    for (int i = 0; i < 4; i++)
        fprintf(out, "BUGCHECK_P%d: %llx\n\n", i + 1, (unsigned long long)s->param[i]);
    fprintf(out, "PROCESS_NAME:  %s\n\n", m->procs.current->name);
    fprintf(out, "CURRENT_IRQL:  %x\n\n", (unsigned)m->kernel.irql);
    char mod[32];
    snprintf(mod, sizeof mod, "%s", d ? d->name : "nt");
    char *dot = strrchr(mod, '.');
    if (dot && dot != mod)
        *dot = 0;
    fprintf(out, "MODULE_NAME: %s\n\n", mod);
    fprintf(out, "IMAGE_NAME:  %s\n\n", image);
    fprintf(out, "FAILURE_BUCKET_ID:  0x%X_%s\n\n", s->code, image);
    fprintf(out, "Followup:     MachineOwner\n---------\n");
    return 0;
}

static int kd_bugcheck(kd_ctx *c)
{
    if (c->nargs)
        return kd_err(c, ".bugcheck takes no arguments");
    const ptl_stop *s = &c->m->stop.info;
    int st = c->m->stop.stopped;
    fprintf(c->out, "Bugcheck code %08X\n", st ? s->code : 0u);
    fprintf(c->out, "Arguments %08llx %08llx %08llx %08llx\n",
            (unsigned long long)(st ? s->param[0] : 0), (unsigned long long)(st ? s->param[1] : 0),
            (unsigned long long)(st ? s->param[2] : 0), (unsigned long long)(st ? s->param[3] : 0));
    return 0;
}

/* ---- pools: !poolused, !pool ------------------------------------------------------------
 * Shapes: learn.microsoft.com "!poolused" (per tag: allocations and bytes, nonpaged and
 * paged) and "!pool" (the block holding an address, with its size and tag). */

static void tag_text(uint32_t tag, char out[5])
{
    for (int i = 0; i < 4; i++) {
        char ch = (char)((tag >> (8 * i)) & 0xFF);
        out[i] = (ch >= 32 && ch < 127) ? ch : ' ';
    }
    out[4] = '\0';
}

static int kd_poolused(kd_ctx *c)
{
    if (c->nargs > 1)
        return kd_err(c, "too many arguments: !poolused [flags]");
    const ptl__pools *pl = &c->m->pools;
    fprintf(c->out, "   Sorting by Tag\n\n  Pool Used:\n");
    fprintf(c->out, "            NonPaged                    Paged\n");
    fprintf(c->out, " Tag    Allocs     Frees      Used   Allocs     Frees      Used\n");
    uint64_t np = 0, pg = 0;
    for (uint32_t i = 0; i < pl->ntags; i++) {
        const ptl__pooltag *t = &pl->tags[i];
        char name[5];
        tag_text(t->tag, name);
        fprintf(c->out, " %s %8llu  %8llu  %8llu %8llu  %8llu  %8llu\n", name,
                (unsigned long long)t->nonpaged_allocs, (unsigned long long)t->nonpaged_frees,
                (unsigned long long)t->nonpaged_bytes, (unsigned long long)t->paged_allocs,
                (unsigned long long)t->paged_frees, (unsigned long long)t->paged_bytes);
        np += t->nonpaged_bytes;
        pg += t->paged_bytes;
    }
    fprintf(c->out, " TOTAL %35llu %29llu\n", (unsigned long long)np, (unsigned long long)pg);
    return 0;
}

typedef struct pool_find {
    uint32_t va;
    const ptl__poolblock *hit;
} pool_find;

static void find_block(void *ctx, const void *key, void *val)
{
    pool_find *f = ctx;
    const ptl__poolblock *b = val;
    uint32_t end = b->region < 0 ? b->block + b->pages * PTL_PAGE_SIZE : b->block + b->units * 32u;
    (void)key;
    if (f->va >= b->block && f->va < end)
        f->hit = b;
}

static int kd_pool(kd_ctx *c)
{
    uint32_t va = 0;
    if (c->nargs < 1)
        return kd_err(c, "!pool needs an address");
    if (c->nargs > 2)
        return kd_err(c, "too many arguments: !pool address [flags]");
    if (arg_addr32(c, &c->arg[0], "address", &va) != 0)
        return -1;
    const ptl__pools *pl = &c->m->pools;
    const char *region = NULL;
    static const char *const names[3] = {"Nonpaged pool", "Paged pool",
                                         "Nonpaged pool (must succeed)"};
    for (int r = 0; r < 3; r++)
        if (va >= pl->base[r] && va - pl->base[r] < pl->bytes[r])
            region = names[r];
    if (!region && ptl__syspte_pool_of(c->m, va) == PTL_NONPAGED_POOL_EXPANSION)
        region = "Nonpaged pool (expansion)";
    if (!region)
        return kd_err(c, "%08x is not in any pool", va);
    pool_find f = {va, NULL};
    ptl__ptrmap_each((ptl__ptrmap *)&pl->blocks, find_block, &f);
    fprintf(c->out, "Pool page %08x region is %s\n", va, region);
    if (!f.hit) {
        fprintf(c->out, " %08x is not inside an allocated block (free pool)\n", va);
        return 0;
    }
    char name[5];
    tag_text(f.hit->tag, name);
    uint32_t size = f.hit->region < 0 ? f.hit->pages * PTL_PAGE_SIZE : f.hit->units * 32u;
    fprintf(c->out, "*%08x size: %5x previous size:    0  (Allocated) *%s\n", f.hit->block, size,
            name);
    fprintf(c->out, "\t\tPooltag %s : requested 0x%x bytes at %08x\n", name, f.hit->bytes,
            f.hit->data);
    return 0;
}

/* ---- ? ------------------------------------------------------------------------------------ */

static int kd_eval_cmd(kd_ctx *c)
{
    uint64_t v;
    char err[128];
    size_t n = strlen(c->rest);
    if (kd_eval(c->rest, n, &v, err, sizeof err) != 0)
        return kd_err(c, "? %s", err);
    int64_t s = (int64_t)v;
    if (s >= INT32_MIN && s <= (int64_t)0xFFFFFFFFll) /* fits a 32-bit target's register */
        fprintf(c->out, "Evaluate expression: %d = %08x\n", (int32_t)(uint32_t)v, (uint32_t)v);
    else
        fprintf(c->out, "Evaluate expression: %lld = %08x`%08x\n", (long long)s,
                (uint32_t)(v >> 32), (uint32_t)v);
    return 0;
}

/* ---- the table ---------------------------------------------------------------------------- */

static int kd_help(kd_ctx *c);

typedef struct kd_cmd {
    const char *name;
    int (*fn)(kd_ctx *);
    const char *help;
    unsigned unit; /* element size of the display and edit commands */
} kd_cmd;

static const kd_cmd commands[] = {
    {"!pte", kd_pte, "!pte VA                  PDE and PTE of VA (current process context)", 0},
    {"!vtop", kd_vtop,
     "!vtop DirBase VA         translate VA through a page directory (0: current)", 0},
    {"!pfn", kd_pfn, "!pfn PFN                 PFN database entry of a page frame", 0},
    {"!sysptes", kd_sysptes,
     "!sysptes [flags]         system PTE pool (1 free runs, 4 locked mappings, 8 NP expansion)",
     0},
    {"!vm", kd_vm, "!vm [flags]              virtual memory usage (1: no per-process lines)", 0},
    {"db", kd_dump, "db [/p] addr [L count]   display bytes and ASCII (/p: physical)", 1},
    {"dw", kd_dump, "dw [/p] addr [L count]   display words", 2},
    {"dd", kd_dump, "dd [/p] addr [L count]   display double words", 4},
    {"dq", kd_dump, "dq [/p] addr [L count]   display quad words", 8},
    {"eb", kd_edit, "eb [/p] addr values      enter bytes", 1},
    {"ew", kd_edit, "ew [/p] addr values      enter words", 2},
    {"ed", kd_edit, "ed [/p] addr values      enter double words", 4},
    {"eq", kd_edit, "eq [/p] addr values      enter quad words", 8},
    {".process", kd_dot_process, ".process [EPROCESS]      show or set the process context", 0},
    {"!process", kd_bang_process, "!process [0 0|EPROCESS]  processes (0 0: all of them)", 0},
    {"!poolused", kd_poolused, "!poolused                pool use by tag", 0},
    {"!pool", kd_pool, "!pool address            the pool block holding an address", 0},
    {"lm", kd_lm, "lm                       loaded modules (drivers)", 0},
    {"!analyze", kd_analyze, "!analyze [-v]            the bug check of a stopped machine", 0},
    {".bugcheck", kd_bugcheck, ".bugcheck                bug check code and arguments", 0},
    {"?", kd_eval_cmd, "? expr                   evaluate (hex default, 0n decimal, + - * / % ())",
     0},
    {".help", kd_help, ".help                    this list", 0},
};

static int kd_help(kd_ctx *c)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(c->out, "%s\n", commands[i].help);
    return 0;
}

int ptl_kd(ptl_machine *m, const char *command, FILE *out)
{
    if (!ptl__machine_ok(m))
        return -1;
    if (!command || !out)
        return ptl__fail("kd: no command or no output stream");
    kd_ctx c = {m, out, NULL, 0, NULL, 0};
    while (isspace((unsigned char)*command))
        command++;
    if (!*command)
        return kd_err(&c, "empty command (.help lists the commands)");
    size_t len = 0;
    if (*command == '?')
        len = 1; /* "?1+2" needs no blank */
    else
        while (command[len] && !isspace((unsigned char)command[len]))
            len++;
    const kd_cmd *cmd = NULL;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strlen(commands[i].name) == len && strncasecmp(commands[i].name, command, len) == 0)
            cmd = &commands[i];
    if (!cmd)
        return kd_err(&c, "unknown command '%.*s%s' (.help lists the commands)",
                      (int)(len > 40 ? 40 : len), command, len > 40 ? "..." : "");
    c.rest = command + len;
    kd_tok *toks = ptl__xcalloc(KD_MAX_ARGS, sizeof *toks);
    const char *p = c.rest;
    int rc = 0;
    for (; cmd->fn != kd_eval_cmd;) { /* ? takes its text whole */
        while (isspace((unsigned char)*p))
            p++;
        if (!*p)
            break;
        if (c.nargs == KD_MAX_ARGS) {
            rc = kd_err(&c, "too many arguments (at most %d)", KD_MAX_ARGS);
            break;
        }
        toks[c.nargs].s = p;
        while (*p && !isspace((unsigned char)*p))
            p++;
        toks[c.nargs].n = (size_t)(p - toks[c.nargs].s);
        c.nargs++;
    }
    c.arg = toks;
    c.unit = cmd->unit;
    if (rc == 0)
        rc = cmd->fn(&c);
    free(toks);
    return rc;
}
