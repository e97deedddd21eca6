/* icheck.c - the incremental twin of ptl_check's expensive walks.
 *
 * The plain checks walk everything: every page directory and page table (pte.c), every
 * index of both system PTE pools with a page-table read for each free one (sysptes.c),
 * every user page table of every process (process.c), the PFN database (phys.c). That is
 * milliseconds on a 64 MB machine, and the DDI fuzzer checks after every call. This module
 * keeps what those walks computed and on each check redoes only what changed since the
 * last one; the walks stay as the plain reference twin (ptl_check_full), and the two must
 * give the same verdict on every machine (tests/test-icheck.c; PTELAB_PARANOID builds
 * compare them at every check).
 *
 * What it keeps:
 *   - a copy of every page directory in pte.pds and of every page table a walked PDE
 *     points at (the full walk's set: user tables through their own directory, system
 *     tables through the master), and per RAM frame the number of valid walked entries
 *     that map it (tally), the number of valid PDEs that point at it, its cached Use;
 *   - per directory: whether the self-map is right and which system PDEs differ from the
 *     master's; per frame: whether its tally differs from ShareCount, whether a PDE
 *     points at it while it is free; counters of each, so the verdict is a comparison;
 *   - per system PTE pool, the run map parsed in chunks of one page table's PTEs, each
 *     with the run it was entered in and left in, so a change re-parses its chunk and
 *     only as many after it as the change reaches;
 *   - per process, per user page table: PTEs outside any VAD or kernel-only, valid
 *     private pages and page-file PTEs; a copy of the VAD list.
 *
 * How it learns what changed (everything that can change checked state, and its path):
 *   - PTE and PDE writes (pte.c) and every other write to a frame through a host pointer
 *     from ptl__phys_frame: kd's e* commands and ptl_phys_write (ptl__phys_copy), the MMU's
 *     Accessed/Dirty updates and TLB fills, page-in. ptl__phys_frame marks the frames this
 *     module watches (the directories and tables it copies) as written;
 *   - writes through a host pointer the software TLB holds (mmu.c's TLB hits, wdm.h's
 *     inline register accessors): an entry filled since the last check was marked when it
 *     was filled; at the end of each check the frames writable entries point at are
 *     remembered and treated as written at the next one;
 *   - frames zeroed in place when they are handed out again (phys.c, mdl_ext.c);
 *   - PFN entries (allocation, release, share counts, the free list): every writer notes
 *     the frame (ptl__phys_note);
 *   - the system PTE pools' run maps and allocators: sysptes.c reports the range;
 *   - VADs: compared with the copy (they are few);
 *   - anything else is not checked state here (the smaller checks run in full every time).
 * A written frame is compared with its copy 64 bytes at a time; only entries that differ
 * are re-counted. Native mode maps frames into the host, where nothing can be hooked, so
 * ptl_check runs the full walks there (machine.c).
 *
 * The verdict equals the full walks': each condition they check is kept as a count of
 * the places where it fails, updated wherever its inputs changed. Messages name the first
 * failing place this module finds, which may differ from the one the walk finds first.
 * A check that fails forgets everything (ptl__icheck_reset); the next starts afresh.
 *
 * Invariants (of this module, checked by the tests against the walks): every count equals
 * what a walk of the current machine gives; every copy equals the frame's bytes at the end
 * of a check; a frame is watched exactly when a copy of it is kept.
 */
#include "internal.h"

#include <string.h>

/* The checker's own loops carry no coverage instrumentation: the fuzzer learns nothing
 * from them and they ran at every check. */
#if defined(__clang__)
#define NOCOV __attribute__((no_sanitize("coverage")))
#else
#define NOCOV
#endif

#define WORDS PTL_PTES_PER_PAGE
#define BLOCK 16u /* words compared at a time */
#define HW    (PTL_PTE_ACCESSED | PTL_PTE_DIRTY)

enum { F_EVAL = 1, F_MISM = 2, F_PDEBAD = 4, F_PHYSBAD = 8, F_DIRTY = 16 };

static const uint32_t zero_words[WORDS];

typedef struct chk_pd { /* a page directory of pte.pds */
    uint32_t pfn;
    uint8_t seen, selfbad, fresh;
    uint32_t sysmis;          /* system PDEs that differ from the master's */
    uint64_t mis[WORDS / 64]; /* which */
    uint64_t chg[WORDS / 64]; /* entries that changed in this check */
    uint32_t snap[WORDS];
} chk_pd;

typedef struct chk_pt { /* a page table that walked PDEs point at */
    uint32_t pfn, refs;
    uint8_t changed; /* its contents changed in this check */
    uint32_t snap[WORDS];
} chk_pt;

typedef struct chk_chunk { /* the PTEs of one pool in one page table (or the junction) */
    uint32_t lo, hi, va;   /* indices [lo, hi); VA of lo */
    uint32_t tpfn;         /* the table it was parsed against, UINT32_MAX none */
    uint32_t cin_rem, cout_rem;
    uint8_t cin_kind, cout_kind, junction, dirty, bad, parsed;
    uint32_t bad_at;
    uint32_t in_runs, unres;
} chk_chunk;

typedef struct chk_pool {
    chk_chunk *c;
    uint32_t n;
    uint64_t *runstart; /* bit per index: a run the parse found starts here */
    uint64_t in_runs;
    uint32_t nbad, unres;
    int spool_changed;
} chk_pool;

typedef struct chk_ptab { /* one user page table of one process */
    uint32_t proc, pdi, tpfn;
    uint32_t priv, paged, bad, bad_at;
    uint32_t *cand; /* frames of valid private PTEs in RAM, counted in uref/uxor */
    uint32_t ncand, cap;
    uint8_t live, stale;
} chk_ptab;

typedef struct chk_proc {
    ptl_process *p;
    uint32_t pd, nuser;
    uint32_t *ptab; /* per user PDE index: ptab id + 1, 0 none */
    uint32_t priv, paged, bad;
    ptl__vad *vads; /* the VADs the counts were made with */
    int nvads;
    uint8_t live, seen, all_stale;
} chk_proc;

typedef struct chk_frame { /* what the check keeps per RAM frame */
    uint32_t tally;        /* valid walked PDEs and PTEs that map it */
    uint32_t pderefs;      /* valid PDEs that point at it */
    uint32_t pd_slot;      /* its directory copy + 1, 0 none */
    uint32_t pt_slot;      /* its table copy + 1, 0 none */
    uint32_t uref, uxor;   /* valid private user PTEs mapping it, the XOR of their ptab ids */
    uint32_t tref, txor;   /* ptabs reading it as their table, the XOR of their ids */
    uint8_t use, flags;    /* its Use at the last check; F_* */
} chk_frame;

struct ptl__icheck {
    uint32_t nram, first_sys;
    chk_frame *fr; /* per RAM frame: one block, so the host commits only what is used */
    /* copies */
    chk_pd **pds;
    uint32_t npds, cap_pds;
    chk_pt **pts;
    uint32_t npts, cap_pts;
    /* failure counts */
    uint32_t pde_out, sysmis, selfbad, mism, pdebad, physbad;
    /* this check's lists */
    uint32_t *eval, neval, cap_eval;
    uint32_t *dirty, ndirty, cap_dirty;
    uint32_t *usechg, nusechg, cap_usechg;
    uint32_t *tchg, ntchg, cap_tchg;
    uint64_t master_chg[WORDS / 64];
    uint32_t wset[PTL_TLB_ENTRIES], nwset; /* frames writable TLB entries held at the end */
    /* phys */
    uint32_t cnt[PTL_USE_MAX + 1], hwm, onfree, free_head;
    /* sysptes */
    chk_pool pool[PTL_SYSPTE_TYPES];
    /* processes */
    chk_proc *procs;
    uint32_t nprocs, cap_procs;
    chk_ptab *ptabs;
    uint32_t nptabs, cap_ptabs;
    uint32_t *free_ptabs, nfree_ptabs, cap_free_ptabs;
    int all_ptabs_stale;
};

/* ---- small helpers ---------------------------------------------------------------------- */

static void push(uint32_t **list, uint32_t *n, uint32_t *cap, uint32_t v)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 64;
        *list = ptl__xrealloc(*list, (size_t)*cap * sizeof **list);
    }
    (*list)[(*n)++] = v;
}

static void touch(ptl__icheck *c, uint32_t f)
{
    if (!(c->fr[f].flags & F_EVAL)) {
        c->fr[f].flags |= F_EVAL;
        push(&c->eval, &c->neval, &c->cap_eval, f);
    }
}

static void set_bit(uint64_t *map, uint32_t i, int on)
{
    if (on)
        map[i >> 6] |= 1ull << (i & 63);
    else
        map[i >> 6] &= ~(1ull << (i & 63));
}

static int get_bit(const uint64_t *map, uint32_t i)
{
    return (map[i >> 6] >> (i & 63)) & 1u;
}

NOCOV static void clear_bits(uint64_t *map, uint32_t lo, uint32_t hi)
{
    for (uint32_t i = lo; i < hi;) {
        if (!(i & 63) && i + 64 <= hi) {
            map[i >> 6] = 0;
            i += 64;
        } else {
            set_bit(map, i, 0);
            i++;
        }
    }
}

static void watch_update(ptl_machine *m, uint32_t f)
{
    ptl__icheck *c = m->icheck;
    ptl__phys_watch(&m->phys, f, c->fr[f].pd_slot || c->fr[f].pt_slot);
}

/* ---- page tables: counts of what valid entries map ------------------------------------ */

/* Add (sign 1) or take away (-1) refs times the entries of a table copy. */
NOCOV static void table_count(ptl__icheck *c, const uint32_t *snap, int sign, uint32_t refs)
{
    for (uint32_t b = 0; b < WORDS; b += BLOCK) {
        if (!memcmp(snap + b, zero_words, BLOCK * 4))
            continue;
        for (uint32_t j = b; j < b + BLOCK; j++) {
            uint32_t e = snap[j];
            if (!(e & PTL_PTE_VALID) || (e >> PTL_PAGE_SHIFT) >= c->nram)
                continue;
            c->fr[e >> PTL_PAGE_SHIFT].tally += sign > 0 ? refs : -refs;
            touch(c, e >> PTL_PAGE_SHIFT);
        }
    }
}

static void pt_ref(ptl_machine *m, uint32_t f)
{
    ptl__icheck *c = m->icheck;
    if (c->fr[f].pt_slot) {
        chk_pt *t = c->pts[c->fr[f].pt_slot - 1];
        t->refs++;
        table_count(c, t->snap, 1, 1);
        return;
    }
    chk_pt *t = ptl__xrealloc(NULL, sizeof *t); /* every field is set: no need to zero it */
    t->pfn = f;
    t->refs = 1;
    t->changed = 0;
    memcpy(t->snap, ptl__phys_words_ro(&m->phys, f), sizeof t->snap);
    if (c->npts == c->cap_pts) {
        c->cap_pts = c->cap_pts ? 2 * c->cap_pts : 64;
        c->pts = ptl__xrealloc(c->pts, c->cap_pts * sizeof *c->pts);
    }
    c->pts[c->npts++] = t;
    c->fr[f].pt_slot = c->npts;
    watch_update(m, f);
    table_count(c, t->snap, 1, 1);
    t->changed = 1; /* new to the readers of tables (sysptes, processes) */
    push(&c->tchg, &c->ntchg, &c->cap_tchg, f);
}

static void pt_unref(ptl_machine *m, uint32_t f)
{
    ptl__icheck *c = m->icheck;
    PTL_ASSERT(c->fr[f].pt_slot);
    uint32_t k = c->fr[f].pt_slot - 1;
    chk_pt *t = c->pts[k];
    table_count(c, t->snap, -1, 1);
    if (--t->refs)
        return;
    if (!t->changed)
        push(&c->tchg, &c->ntchg, &c->cap_tchg, f); /* gone: its readers must look again */
    c->pts[k] = c->pts[--c->npts];
    if (k < c->npts)
        c->fr[c->pts[k]->pfn].pt_slot = k + 1;
    c->fr[f].pt_slot = 0;
    watch_update(m, f);
    free(t);
}

/* Bring a table copy up to date with its frame. */
NOCOV static void pt_diff(ptl_machine *m, chk_pt *t)
{
    ptl__icheck *c = m->icheck;
    const uint32_t *cur = ptl__phys_words_ro(&m->phys, t->pfn);
    int changed = 0;
    for (uint32_t b = 0; b < WORDS; b += BLOCK) {
        if (!memcmp(t->snap + b, cur + b, BLOCK * 4))
            continue;
        for (uint32_t j = b; j < b + BLOCK; j++) {
            uint32_t old = t->snap[j], now = cur[j];
            if (old == now)
                continue;
            changed = 1;
            if ((old & PTL_PTE_VALID) && (old >> PTL_PAGE_SHIFT) < c->nram) {
                c->fr[old >> PTL_PAGE_SHIFT].tally -= t->refs;
                touch(c, old >> PTL_PAGE_SHIFT);
            }
            if ((now & PTL_PTE_VALID) && (now >> PTL_PAGE_SHIFT) < c->nram) {
                c->fr[now >> PTL_PAGE_SHIFT].tally += t->refs;
                touch(c, now >> PTL_PAGE_SHIFT);
            }
            t->snap[j] = now;
        }
    }
    if (changed && !t->changed) {
        t->changed = 1;
        push(&c->tchg, &c->ntchg, &c->cap_tchg, t->pfn);
    }
}

/* One PDE of a cached directory changes from old to now. */
static void pd_entry(ptl_machine *m, chk_pd *d, uint32_t i, uint32_t old, uint32_t now)
{
    ptl__icheck *c = m->icheck;
    int walked = i != PTL_PD_SELFMAP_INDEX && (i < c->first_sys || d->pfn == m->pte.master_pd);
    if (old & PTL_PTE_VALID) {
        uint32_t f = old >> PTL_PAGE_SHIFT;
        if (f < c->nram) {
            c->fr[f].tally--;
            c->fr[f].pderefs--;
            touch(c, f);
            if (walked)
                pt_unref(m, f);
        } else {
            c->pde_out--;
        }
    }
    if (now & PTL_PTE_VALID) {
        uint32_t f = now >> PTL_PAGE_SHIFT;
        if (f < c->nram) {
            c->fr[f].tally++;
            c->fr[f].pderefs++;
            touch(c, f);
            if (walked)
                pt_ref(m, f);
        } else {
            c->pde_out++;
        }
    }
    d->snap[i] = now;
    set_bit(d->chg, i, 1);
    if (d->pfn == m->pte.master_pd)
        set_bit(c->master_chg, i, 1);
}

NOCOV static void pd_diff(ptl_machine *m, chk_pd *d, const uint32_t *cur)
{
    for (uint32_t b = 0; b < WORDS; b += BLOCK) {
        if (!memcmp(d->snap + b, cur + b, BLOCK * 4))
            continue;
        for (uint32_t j = b; j < b + BLOCK; j++)
            if (d->snap[j] != cur[j])
                pd_entry(m, d, j, d->snap[j], cur[j]);
    }
}

static chk_pd *pd_new(ptl_machine *m, uint32_t pfn)
{
    ptl__icheck *c = m->icheck;
    chk_pd *d = ptl__xcalloc(1, sizeof *d);
    d->pfn = pfn;
    d->fresh = 1;
    if (c->npds == c->cap_pds) {
        c->cap_pds = c->cap_pds ? 2 * c->cap_pds : 16;
        c->pds = ptl__xrealloc(c->pds, c->cap_pds * sizeof *c->pds);
    }
    c->pds[c->npds++] = d;
    c->fr[pfn].pd_slot = c->npds;
    watch_update(m, pfn);
    pd_diff(m, d, ptl__phys_words_ro(&m->phys, pfn));
    return d;
}

static void pd_drop(ptl_machine *m, uint32_t k)
{
    ptl__icheck *c = m->icheck;
    chk_pd *d = c->pds[k];
    pd_diff(m, d, zero_words);
    c->sysmis -= d->sysmis;
    c->selfbad -= d->selfbad;
    c->fr[d->pfn].pd_slot = 0;
    watch_update(m, d->pfn);
    c->pds[k] = c->pds[--c->npds];
    if (k < c->npds)
        c->fr[c->pds[k]->pfn].pd_slot = k + 1;
    free(d);
}

static void mis_eval(ptl__icheck *c, chk_pd *d, const chk_pd *master, uint32_t i)
{
    int bad = (d->snap[i] & ~HW) != (master->snap[i] & ~HW);
    if (bad != get_bit(d->mis, i)) {
        set_bit(d->mis, i, bad);
        d->sysmis += bad ? 1u : -1u;
        c->sysmis += bad ? 1u : -1u;
    }
}

/* The directories' own conditions, where their entries (or the master's) changed. */
NOCOV static void pd_flags(ptl_machine *m)
{
    ptl__icheck *c = m->icheck;
    uint32_t ms = m->pte.master_pd < c->nram ? c->fr[m->pte.master_pd].pd_slot : 0;
    const chk_pd *master = ms ? c->pds[ms - 1] : NULL;
    for (uint32_t k = 0; k < c->npds; k++) {
        chk_pd *d = c->pds[k];
        if (d->fresh || get_bit(d->chg, PTL_PD_SELFMAP_INDEX)) {
            uint32_t e = d->snap[PTL_PD_SELFMAP_INDEX];
            uint8_t bad = (e >> PTL_PAGE_SHIFT) != d->pfn || !(e & PTL_PTE_VALID);
            c->selfbad += bad - d->selfbad;
            d->selfbad = bad;
        }
        if (!master || d == master)
            continue;
        for (uint32_t w = c->first_sys / 64; w < WORDS / 64; w++) {
            uint64_t bits = d->fresh ? ~0ull : d->chg[w] | c->master_chg[w];
            for (; bits; bits &= bits - 1) {
                uint32_t i = w * 64 + (uint32_t)__builtin_ctzll(bits);
                if (i >= c->first_sys && i != PTL_PD_SELFMAP_INDEX)
                    mis_eval(c, d, master, i);
            }
        }
    }
}

/* ---- the first look, and forgetting -------------------------------------------------- */

static void chunks_build(ptl_machine *m, int t);

static void start(ptl_machine *m)
{
    ptl__icheck *c = ptl__xcalloc(1, sizeof *c);
    m->icheck = c;
    uint32_t n = m->phys.ram_pages ? m->phys.ram_pages : 1;
    c->nram = m->phys.ram_pages;
    c->first_sys = m->pte.system_start >> 22;
    c->fr = ptl__xcalloc(n, sizeof *c->fr);
    ptl__phys_track(&m->phys, 1);
    for (int t = 0; t < PTL_SYSPTE_TYPES; t++)
        chunks_build(m, t);
    c->all_ptabs_stale = 1;
}

void ptl__icheck_reset(ptl_machine *m)
{
    ptl__icheck *c = m->icheck;
    if (!c)
        return;
    for (uint32_t k = 0; k < c->npds; k++)
        free(c->pds[k]);
    for (uint32_t k = 0; k < c->npts; k++)
        free(c->pts[k]);
    for (uint32_t k = 0; k < c->nprocs; k++) {
        free(c->procs[k].ptab);
        free(c->procs[k].vads);
    }
    for (uint32_t k = 0; k < c->nptabs; k++)
        free(c->ptabs[k].cand);
    for (int t = 0; t < PTL_SYSPTE_TYPES; t++) {
        free(c->pool[t].c);
        free(c->pool[t].runstart);
    }
    free(c->pds);
    free(c->pts);
    free(c->procs);
    free(c->ptabs);
    free(c->free_ptabs);
    free(c->eval);
    free(c->dirty);
    free(c->usechg);
    free(c->tchg);
    free(c->fr);
    free(c);
    m->icheck = NULL;
    ptl__phys_track(&m->phys, 0);
}

/* ---- phys: the PFN database ------------------------------------------------------------ */

static uint32_t use_bucket(uint8_t use)
{
    return use < PTL_USE_MAX ? use : PTL_USE_MAX;
}

static void phys_frame_eval(ptl__icheck *c, const ptl__pfn *e, uint32_t f)
{
    int bad = e->Use >= PTL_USE_MAX ||
              (e->Use == PTL_USE_FREE && e->PageLocation != FreePageList) || ptl__pfn_bad(e);
    if (bad != !!(c->fr[f].flags & F_PHYSBAD)) {
        c->fr[f].flags ^= F_PHYSBAD;
        c->physbad += bad ? 1u : -1u;
    }
}

NOCOV static int phys_check(ptl_machine *m, FILE *why, int first)
{
    ptl__icheck *c = m->icheck;
    const ptl__phys *ph = &m->phys;
    if (ph->hwm < c->hwm || ph->hwm > c->nram) {
        fprintf(why, "phys: the high-water mark went from %u to %u\n", c->hwm, ph->hwm);
        return -1;
    }
    int moved = first || ph->nnoted || ph->hwm != c->hwm || ph->free_head != c->free_head;
    for (uint32_t i = 0; i < ph->nnoted; i++) {
        uint32_t f = ph->noted_list[i];
        touch(c, f);
        if (f >= c->hwm)
            continue; /* counted below, with the frames the mark passed */
        const ptl__pfn *e = &ph->pfn[f];
        if (c->fr[f].use != e->Use) {
            push(&c->usechg, &c->nusechg, &c->cap_usechg, f | (uint32_t)c->fr[f].use << 24);
            c->cnt[use_bucket(c->fr[f].use)]--;
            c->cnt[use_bucket(e->Use)]++;
            c->fr[f].use = e->Use;
        }
        phys_frame_eval(c, e, f);
    }
    for (uint32_t f = c->hwm; f < ph->hwm; f++) {
        const ptl__pfn *e = &ph->pfn[f];
        if (c->fr[f].use != e->Use)
            push(&c->usechg, &c->nusechg, &c->cap_usechg, f | (uint32_t)c->fr[f].use << 24);
        c->fr[f].use = e->Use;
        c->cnt[use_bucket(e->Use)]++;
        phys_frame_eval(c, e, f);
        touch(c, f); /* its ShareCount is compared from now on */
    }
    c->hwm = ph->hwm;
    if (moved) { /* the free list, as the walk follows it */
        uint32_t onfree = 0;
        for (uint32_t f = ph->free_head; f; f = ph->pfn[f - 1].Flink) {
            if (f - 1 >= ph->hwm || ph->pfn[f - 1].Use != PTL_USE_FREE || ++onfree > ph->hwm) {
                fprintf(why, "phys: free list corrupt at frame 0x%x\n", f - 1);
                return -1;
            }
        }
        c->onfree = onfree;
        c->free_head = ph->free_head;
    }
    if (c->physbad) {
        for (uint32_t f = 0; f < ph->hwm; f++) {
            if (!(c->fr[f].flags & F_PHYSBAD))
                continue;
            const ptl__pfn *e = &ph->pfn[f];
            const char *bad = ptl__pfn_bad(e);
            if (bad)
                fprintf(why, "phys: frame 0x%x: %s\n", f, bad);
            else if (e->Use >= PTL_USE_MAX)
                fprintf(why, "phys: frame 0x%x has bad use %u\n", f, e->Use);
            else
                fprintf(why, "phys: free frame 0x%x has PageLocation %u\n", f, e->PageLocation);
            return -1;
        }
    }
    uint32_t used = ph->hwm - c->cnt[PTL_USE_FREE] - c->cnt[PTL_USE_MAX];
    if (used != ph->in_use || c->onfree != ph->free_count || used + c->onfree != ph->hwm) {
        fprintf(why, "phys: in_use %u/%u, free %u/%u, hwm %u disagree\n", used, ph->in_use,
                c->onfree, ph->free_count, ph->hwm);
        return -1;
    }
    for (int u = 1; u < PTL_USE_MAX; u++) {
        if (c->cnt[u] != ph->use_count[u]) {
            fprintf(why, "phys: %u frames in use as %s, counter says %u\n", c->cnt[u],
                    ptl__frame_use_name(u), ph->use_count[u]);
            return -1;
        }
    }
    if (ph->use_count[PTL_USE_FREE] != 0) {
        fprintf(why, "phys: %u frames in use as free, counter says %u\n", 0u,
                ph->use_count[PTL_USE_FREE]);
        return -1;
    }
    return 0;
}

/* ---- pte: directories, tables and share counts ----------------------------------------- */

NOCOV static void gather_dirty(ptl_machine *m)
{
    ptl__icheck *c = m->icheck;
    const ptl__phys *ph = &m->phys;
#define DIRTY(f)                                                        \
    do {                                                                \
        uint32_t f_ = (f);                                              \
        if (f_ < c->nram && (c->fr[f_].pd_slot || c->fr[f_].pt_slot) && \
            !(c->fr[f_].flags & F_DIRTY)) {                             \
            c->fr[f_].flags |= F_DIRTY;                                 \
            push(&c->dirty, &c->ndirty, &c->cap_dirty, f_);             \
        }                                                               \
    } while (0)
    for (uint32_t i = 0; i < ph->nwritten; i++)
        DIRTY(ph->written_list[i]);
    for (uint32_t i = 0; i < c->nwset; i++)
        DIRTY(c->wset[i]);
    for (uint32_t i = 0; i < PTL_TLB_ENTRIES; i++) {
        const ptl__tlbe *e = &m->mmu.tlb[i];
        if (e->tag && e->writable)
            DIRTY(e->pfn);
    }
#undef DIRTY
}

NOCOV static int pte_check(ptl_machine *m, FILE *why)
{
    ptl__icheck *c = m->icheck;
    const ptl__pte *pt = &m->pte;
    /* the set of directories */
    for (uint32_t k = 0; k < c->npds; k++)
        c->pds[k]->seen = 0;
    for (int k = 0; k < pt->npds; k++) {
        uint32_t pd = pt->pds[k];
        PTL_ASSERT(pd < c->nram); /* directories come from RAM (ptl__phys_alloc) */
        if (!c->fr[pd].pd_slot)
            pd_new(m, pd);
        chk_pd *d = c->pds[c->fr[pd].pd_slot - 1];
        if (d->seen) {
            fprintf(why, "pte: page directory 0x%x is listed twice\n", pd);
            return -1; /* the walk would count it twice; never the case */
        }
        d->seen = 1;
    }
    for (uint32_t k = 0; k < c->npds;)
        if (!c->pds[k]->seen)
            pd_drop(m, k);
        else
            k++;
    /* what was written */
    gather_dirty(m);
    for (uint32_t i = 0; i < c->ndirty; i++) {
        uint32_t f = c->dirty[i];
        if (c->fr[f].pt_slot)
            pt_diff(m, c->pts[c->fr[f].pt_slot - 1]);
        if (c->fr[f].pd_slot)
            pd_diff(m, c->pds[c->fr[f].pd_slot - 1], ptl__phys_words_ro(&m->phys, f));
    }
    pd_flags(m);
    /* frames whose counts, use or share count changed */
    for (uint32_t i = 0; i < c->neval; i++) {
        uint32_t f = c->eval[i];
        const ptl__pfn *e = &m->phys.pfn[f];
        int mism = c->fr[f].tally != e->ShareCount;
        int pdebad = c->fr[f].pderefs && e->Use == PTL_USE_FREE;
        if (mism != !!(c->fr[f].flags & F_MISM)) {
            c->fr[f].flags ^= F_MISM;
            c->mism += mism ? 1u : -1u;
        }
        if (pdebad != !!(c->fr[f].flags & F_PDEBAD)) {
            c->fr[f].flags ^= F_PDEBAD;
            c->pdebad += pdebad ? 1u : -1u;
        }
    }
    /* the verdict */
    if (c->selfbad || c->sysmis || c->pde_out || c->pdebad) {
        const uint32_t *master = ptl__phys_words_ro(&m->phys, pt->master_pd);
        for (int k = 0; k < pt->npds; k++) {
            const chk_pd *d = c->pds[c->fr[pt->pds[k]].pd_slot - 1];
            if (d->selfbad) {
                fprintf(why, "pte: page directory 0x%x does not map itself at PDE 0x300\n", d->pfn);
                return -1;
            }
            for (uint32_t i = 0; i < WORDS; i++) {
                uint32_t pde = d->snap[i];
                if (get_bit(d->mis, i)) {
                    fprintf(why, "pte: PD 0x%x system PDE 0x%x is %08x, master has %08x\n", d->pfn,
                            i, pde, master[i]);
                    return -1;
                }
                uint32_t target = pde >> PTL_PAGE_SHIFT;
                if ((pde & PTL_PTE_VALID) &&
                    (target >= c->nram || m->phys.pfn[target].Use == PTL_USE_FREE)) {
                    fprintf(why, "pte: PD 0x%x PDE 0x%x points at frame 0x%x that is not in use\n",
                            d->pfn, i, target);
                    return -1;
                }
            }
        }
        fprintf(why, "pte: a page directory is wrong (icheck lost track of which)\n");
        return -1;
    }
    if (c->mism) {
        for (uint32_t f = 0; f < c->nram; f++) {
            if (c->fr[f].flags & F_MISM) {
                fprintf(why, "pte: frame 0x%x is mapped %u times but its ShareCount is %u\n", f,
                        c->fr[f].tally, m->phys.pfn[f].ShareCount);
                return -1;
            }
        }
    }
    return 0;
}

/* ---- sysptes: the run maps -------------------------------------------------------------- */

static void chunks_build(ptl_machine *m, int t)
{
    ptl__icheck *c = m->icheck;
    const ptl__syspool *p = &m->sysptes.pool[t];
    chk_pool *cp = &c->pool[t];
    uint32_t cap = 0;
    for (uint32_t i = 0; i < p->total;) {
        chk_chunk k;
        memset(&k, 0, sizeof k);
        k.lo = i;
        k.tpfn = UINT32_MAX;
        k.dirty = 1;
        if (p->seg1_va && i == p->seg0_count) {
            k.junction = 1;
            k.hi = i + 1;
        } else {
            uint32_t end = p->seg1_va && i < p->seg0_count ? p->seg0_count : p->total;
            k.va = p->seg1_va && i > p->seg0_count
                       ? p->seg1_va + (i - p->seg0_count - 1) * PTL_PAGE_SIZE
                       : p->seg0_va + i * PTL_PAGE_SIZE;
            uint32_t left = 1024 - ((k.va >> 12) & 0x3FF);
            k.hi = end - i < left ? end : i + left;
        }
        if (cp->n == cap) {
            cap = cap ? 2 * cap : 32;
            cp->c = ptl__xrealloc(cp->c, cap * sizeof *cp->c);
        }
        cp->c[cp->n++] = k;
        i = k.hi;
    }
    cp->runstart = ptl__xcalloc((p->total + 63) / 64 + 1, sizeof(uint64_t));
    cp->spool_changed = 1;
}

static uint32_t chunk_of(const chk_pool *cp, uint32_t i)
{
    uint32_t lo = 0, hi = cp->n;
    while (hi - lo > 1) {
        uint32_t mid = (lo + hi) / 2;
        if (cp->c[mid].lo <= i)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

void ptl__icheck_sysptes_changed(ptl_machine *m, int type, uint32_t start, uint32_t n)
{
    ptl__icheck *c = m->icheck;
    if (!c || !n)
        return;
    chk_pool *cp = &c->pool[type];
    cp->spool_changed = 1;
    if (!cp->n)
        return;
    for (uint32_t k = chunk_of(cp, start); k < cp->n && cp->c[k].lo < start + n; k++)
        cp->c[k].dirty = 1;
}

static void chunk_bad(chk_chunk *k, uint32_t i)
{
    if (!k->bad)
        k->bad_at = i;
    k->bad = 1;
}

/* The walk of ptl__sysptes_check over one chunk, entered with rem PTEs of a run of `kind`
 * still to go. A malformed run counts one PTE and the parse goes on (the walk would stop
 * there: the verdict is the same). */
NOCOV static void chunk_parse(ptl_machine *m, const ptl__syspool *p, chk_pool *cp, chk_chunk *k,
                              uint32_t rem, uint8_t kind)
{
    const uint32_t *ptes = NULL;
    k->tpfn = UINT32_MAX;
    if (!k->junction) {
        uint32_t pde = ptl__phys_words_ro(&m->phys, m->pte.master_pd)[k->va >> 22];
        if (pde & PTL_PTE_VALID) {
            k->tpfn = pde >> PTL_PAGE_SHIFT;
            ptes = ptl__phys_words_ro(&m->phys, k->tpfn) + ((k->va >> 12) & 0x3FF);
        }
    }
    k->cin_rem = rem;
    k->cin_kind = kind;
    k->bad = 0;
    k->in_runs = 0;
    k->unres = 0;
    clear_bits(cp->runstart, k->lo, k->hi);
    static const ptl__pteinfo zero_info[BLOCK];
    for (uint32_t i = k->lo; i < k->hi;) {
        const ptl__pteinfo *e = &p->info[i];
        if (rem) {
            if (e->run_len != 0 || e->kind != kind)
                chunk_bad(k, i);
            k->in_runs++;
            rem--;
            i++;
            continue;
        }
        if (k->junction) { /* the walk steps over it */
            k->in_runs++;
            i++;
            continue;
        }
        if (e->kind == PTL_KIND_FREE) {
            /* free: run_len 0 and a zero PTE; whole blocks at once where all is zero */
            if (ptes && i + BLOCK <= k->hi && !memcmp(e, zero_info, sizeof zero_info) &&
                !memcmp(ptes + (i - k->lo), zero_words, BLOCK * 4)) {
                i += BLOCK;
                continue;
            }
            if (!ptes || ptes[i - k->lo] != 0 || e->run_len)
                chunk_bad(k, i);
            i++;
            continue;
        }
        uint32_t n = e->run_len;
        if (n == 0 || n > p->total - i) {
            chunk_bad(k, i);
            i++;
            continue;
        }
        set_bit(cp->runstart, i, 1);
        if (!ptl__spool_is_reserved(p->alloc, i, n))
            k->unres++;
        kind = (uint8_t)e->kind;
        k->in_runs++;
        rem = n - 1;
        i++;
    }
    k->cout_rem = rem;
    k->cout_kind = kind;
    k->parsed = 1;
    k->dirty = 0;
}

NOCOV static uint32_t chunk_unres(const ptl__syspool *p, const chk_pool *cp, const chk_chunk *k)
{
    uint32_t unres = 0;
    for (uint32_t w = k->lo >> 6; w <= (k->hi - 1) >> 6; w++) {
        for (uint64_t bits = cp->runstart[w]; bits; bits &= bits - 1) {
            uint32_t i = w * 64 + (uint32_t)__builtin_ctzll(bits);
            if (i >= k->lo && i < k->hi && !ptl__spool_is_reserved(p->alloc, i, p->info[i].run_len))
                unres++;
        }
    }
    return unres;
}

static int sysptes_check(ptl_machine *m, FILE *why)
{
    ptl__icheck *c = m->icheck;
    for (int t = 0; t < PTL_SYSPTE_TYPES; t++) {
        const ptl__syspool *p = &m->sysptes.pool[t];
        chk_pool *cp = &c->pool[t];
        if (cp->spool_changed && ptl__spool_check(p->alloc, why) != 0)
            return -1;
        /* chunks whose page table changed, or whose PDE did */
        for (uint32_t k = 0; k < cp->n; k++) {
            chk_chunk *ck = &cp->c[k];
            if (ck->dirty || ck->junction)
                continue;
            if (get_bit(c->master_chg, ck->va >> 22))
                ck->dirty = 1;
            for (uint32_t j = 0; j < c->ntchg && !ck->dirty; j++)
                if (c->tchg[j] == ck->tpfn)
                    ck->dirty = 1;
        }
        uint32_t rem = 0;
        uint8_t kind = 0;
        for (uint32_t k = 0; k < cp->n; k++) {
            chk_chunk *ck = &cp->c[k];
            if (ck->dirty || !ck->parsed || ck->cin_rem != rem || (rem && ck->cin_kind != kind)) {
                if (ck->parsed) {
                    cp->in_runs -= ck->in_runs;
                    cp->nbad -= ck->bad;
                    cp->unres -= ck->unres;
                }
                chunk_parse(m, p, cp, ck, rem, kind);
                cp->in_runs += ck->in_runs;
                cp->nbad += ck->bad;
                cp->unres += ck->unres;
            } else if (cp->spool_changed) {
                uint32_t u = chunk_unres(p, cp, ck);
                cp->unres += u - ck->unres;
                ck->unres = u;
            }
            rem = ck->cout_rem;
            kind = ck->cout_kind;
        }
        cp->spool_changed = 0;
        if (cp->nbad || cp->unres) {
            for (uint32_t k = 0; k < cp->n; k++) {
                const chk_chunk *ck = &cp->c[k];
                if (!ck->bad && !ck->unres)
                    continue;
                uint32_t i = ck->bad ? ck->bad_at : ck->lo;
                uint32_t va = ck->junction ? 0 : ck->va + (i - ck->lo) * PTL_PAGE_SIZE;
                fprintf(why, "sysptes: the run map is wrong at %08x (index %u of pool %d)%s\n", va,
                        i, t, ck->bad ? "" : ": a run the allocator has free");
                return -1;
            }
        }
        uint32_t in_use = p->total - ptl__spool_free_count(p->alloc);
        if (cp->in_runs != in_use) {
            fprintf(why, "sysptes: runs hold %llu PTEs, allocator says %u in use\n",
                    (unsigned long long)cp->in_runs, in_use);
            return -1;
        }
    }
    return 0;
}

int ptl__icheck_memory(ptl_machine *m, FILE *why)
{
    int first = !m->icheck;
    if (first)
        start(m);
    ptl__icheck *c = m->icheck;
    c->neval = c->ndirty = c->nusechg = c->ntchg = 0;
    memset(c->master_chg, 0, sizeof c->master_chg);
    for (uint32_t k = 0; k < c->npds; k++) {
        memset(c->pds[k]->chg, 0, sizeof c->pds[k]->chg);
        c->pds[k]->fresh = 0;
    }
    for (uint32_t k = 0; k < c->npts; k++)
        c->pts[k]->changed = 0;
    if (phys_check(m, why, first) != 0 || pte_check(m, why) != 0 || sysptes_check(m, why) != 0)
        return -1;
    return 0;
}

/* ---- processes ------------------------------------------------------------------------ */

static chk_proc *proc_of(ptl__icheck *c, ptl_process *p)
{
    uint32_t s = p->icheck_slot;
    if (s && s <= c->nprocs && c->procs[s - 1].p == p && c->procs[s - 1].live)
        return &c->procs[s - 1];
    return NULL;
}

/* Take a ptab's counts away and mark it to be counted again. */
static void ptab_unmake(ptl__icheck *c, uint32_t id)
{
    chk_ptab *t = &c->ptabs[id];
    if (t->stale)
        return;
    chk_proc *pr = &c->procs[t->proc];
    pr->priv -= t->priv;
    pr->paged -= t->paged;
    pr->bad -= t->bad;
    for (uint32_t k = 0; k < t->ncand; k++) {
        c->fr[t->cand[k]].uref--;
        c->fr[t->cand[k]].uxor ^= id + 1;
    }
    t->ncand = t->priv = t->paged = t->bad = 0;
    t->stale = 1;
}

static void ptab_drop(ptl__icheck *c, uint32_t id)
{
    chk_ptab *t = &c->ptabs[id];
    ptab_unmake(c, id);
    if (t->tpfn < c->nram) {
        c->fr[t->tpfn].tref--;
        c->fr[t->tpfn].txor ^= id + 1;
    }
    c->procs[t->proc].ptab[t->pdi] = 0;
    t->live = 0;
    push(&c->free_ptabs, &c->nfree_ptabs, &c->cap_free_ptabs, id);
}

static uint32_t ptab_new(ptl__icheck *c, uint32_t proc, uint32_t pdi, uint32_t tpfn)
{
    uint32_t id;
    if (c->nfree_ptabs) {
        id = c->free_ptabs[--c->nfree_ptabs];
    } else {
        if (c->nptabs == c->cap_ptabs) {
            c->cap_ptabs = c->cap_ptabs ? 2 * c->cap_ptabs : 32;
            c->ptabs = ptl__xrealloc(c->ptabs, c->cap_ptabs * sizeof *c->ptabs);
        }
        id = c->nptabs++;
        memset(&c->ptabs[id], 0, sizeof c->ptabs[id]);
    }
    chk_ptab *t = &c->ptabs[id];
    t->proc = proc;
    t->pdi = pdi;
    t->tpfn = tpfn;
    t->priv = t->paged = t->bad = t->ncand = 0;
    t->live = 1;
    t->stale = 1;
    if (tpfn < c->nram) {
        c->fr[tpfn].tref++;
        c->fr[tpfn].txor ^= id + 1;
    }
    c->procs[proc].ptab[pdi] = id + 1;
    return id;
}

/* Count one user page table of one process, as ptl__process_check's walk does. */
NOCOV static void ptab_make(ptl_machine *m, uint32_t id)
{
    ptl__icheck *c = m->icheck;
    chk_ptab *t = &c->ptabs[id];
    chk_proc *pr = &c->procs[t->proc];
    ptl_process *p = pr->p;
    const uint32_t *ptes = ptl__phys_words_ro(&m->phys, t->tpfn);
    /* the VADs are sorted and disjoint (checked before): walk them along the table */
    int at = 0;
    for (uint32_t b = 0; b < WORDS; b += BLOCK) {
        if (!memcmp(ptes + b, zero_words, BLOCK * 4))
            continue;
        for (uint32_t j = b; j < b + BLOCK; j++) {
            uint32_t e = ptes[j];
            if (!e)
                continue;
            uint32_t va = (t->pdi << 22) | (j << 12);
            while (at < p->nvads && p->vads[at].end <= va)
                at++;
            const ptl__vad *v = at < p->nvads && p->vads[at].start <= va ? &p->vads[at] : NULL;
            if (!v || ((e & PTL_PTE_VALID) && !(e & PTL_PTE_OWNER))) {
                if (!t->bad)
                    t->bad_at = va;
                t->bad++;
                continue; /* the walk stops at the first: the verdict is the same */
            }
            t->paged += (uint32_t)ptl__pte_in_pagefile(e);
            uint32_t f = e >> PTL_PAGE_SHIFT;
            if ((e & PTL_PTE_VALID) && v->kind == PTL_VAD_PRIVATE && f < c->nram) {
                if (t->ncand == t->cap) {
                    t->cap = t->cap ? 2 * t->cap : 16;
                    t->cand = ptl__xrealloc(t->cand, t->cap * sizeof *t->cand);
                }
                t->cand[t->ncand++] = f;
                c->fr[f].uref++;
                c->fr[f].uxor ^= id + 1;
                if (m->phys.pfn[f].Use == PTL_USE_PRIVATE)
                    t->priv++;
            }
        }
    }
    pr->priv += t->priv;
    pr->paged += t->paged;
    pr->bad += t->bad;
    t->stale = 0;
}

/* Line the ptabs of a process up with the valid user PDEs of its directory. */
NOCOV static void proc_sync(ptl_machine *m, uint32_t k, int all)
{
    ptl__icheck *c = m->icheck;
    chk_proc *pr = &c->procs[k];
    const uint32_t *dir = ptl__phys_words_ro(&m->phys, pr->p->pd);
    uint32_t slot = pr->p->pd < c->nram ? c->fr[pr->p->pd].pd_slot : 0;
    const chk_pd *d = slot ? c->pds[slot - 1] : NULL;
    if (!d)
        all = 1;
    for (uint32_t i = 0; i < pr->nuser; i++) {
        if (!all && !get_bit(d->chg, i)) {
            if (!(i & 63) && !d->chg[i >> 6])
                i += 63; /* a word of unchanged PDEs */
            continue;
        }
        uint32_t pde = dir[i], id = pr->ptab[i];
        uint32_t tpfn = pde >> PTL_PAGE_SHIFT;
        if (id && (!(pde & PTL_PTE_VALID) || c->ptabs[id - 1].tpfn != tpfn)) {
            ptab_drop(c, id - 1);
            id = 0;
        }
        if (pde & PTL_PTE_VALID) {
            if (!id)
                id = ptab_new(c, k, i, tpfn) + 1;
            ptab_unmake(c, id - 1);
        }
    }
}

static void proc_forget(ptl__icheck *c, uint32_t k)
{
    chk_proc *pr = &c->procs[k];
    for (uint32_t i = 0; i < pr->nuser; i++)
        if (pr->ptab[i])
            ptab_drop(c, pr->ptab[i] - 1);
    pr->live = 0;
}

/* Field by field: a VAD's padding bytes are never written (memcmp would read them). */
static int vads_equal(const ptl__vad *a, const ptl__vad *b, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (a[i].start != b[i].start || a[i].end != b[i].end || a[i].kind != b[i].kind ||
            a[i].protect != b[i].protect || a[i].cache != b[i].cache || a[i].owner != b[i].owner)
            return 0;
    return 1;
}

NOCOV static int process_check(ptl_machine *m, FILE *why)
{
    ptl__icheck *c = m->icheck;
    if (!m->procs.current || m->procs.current->exited || m->procs.current->pd != m->mmu.cr3) {
        fprintf(why, "process: the current process is gone or is not in CR3\n");
        return -1;
    }
    for (uint32_t k = 0; k < c->nprocs; k++)
        c->procs[k].seen = 0;
    for (ptl_process *p = m->procs.list; p; p = p->next) {
        if (p->exited || p->is_system)
            continue;
        if (ptl__process_vads_check(m, p, why) != 0)
            return -1;
        chk_proc *pr = proc_of(c, p);
        int all = c->all_ptabs_stale;
        if (!pr) {
            if (c->nprocs == c->cap_procs) {
                c->cap_procs = c->cap_procs ? 2 * c->cap_procs : 8;
                c->procs = ptl__xrealloc(c->procs, c->cap_procs * sizeof *c->procs);
            }
            pr = &c->procs[c->nprocs++];
            memset(pr, 0, sizeof *pr);
            pr->p = p;
            pr->live = 1;
            pr->nuser = c->first_sys;
            pr->ptab = ptl__xcalloc(pr->nuser ? pr->nuser : 1, sizeof *pr->ptab);
            pr->pd = p->pd;
            p->icheck_slot = c->nprocs;
            all = 1;
        }
        pr->seen = 1;
        uint32_t k = (uint32_t)(pr - c->procs);
        /* its directory is not one the check copies: look at everything, every time */
        if (p->pd != pr->pd || p->pd >= c->nram || !c->fr[p->pd].pd_slot)
            all = 1;
        pr->pd = p->pd;
        if (pr->nvads != p->nvads || !vads_equal(pr->vads, p->vads, p->nvads)) {
            pr->vads =
                ptl__xrealloc(pr->vads, (size_t)(p->nvads ? p->nvads : 1) * sizeof *pr->vads);
            if (p->nvads)
                memcpy(pr->vads, p->vads, (size_t)p->nvads * sizeof *p->vads);
            pr->nvads = p->nvads;
            all = 1;
        }
        proc_sync(m, k, all);
    }
    for (uint32_t k = 0; k < c->nprocs; k++)
        if (c->procs[k].live && !c->procs[k].seen)
            proc_forget(c, k);
    c->all_ptabs_stale = 0;
    /* tables whose contents changed, or that are not watched */
    for (uint32_t j = 0; j < c->ntchg; j++) {
        uint32_t f = c->tchg[j];
        if (c->fr[f].tref == 1)
            ptab_unmake(c, c->fr[f].txor - 1);
        else if (c->fr[f].tref > 1)
            for (uint32_t id = 0; id < c->nptabs; id++)
                if (c->ptabs[id].live && c->ptabs[id].tpfn == f)
                    ptab_unmake(c, id);
    }
    for (uint32_t id = 0; id < c->nptabs; id++) {
        const chk_ptab *t = &c->ptabs[id];
        if (t->live && (t->tpfn >= c->nram || !c->fr[t->tpfn].pt_slot))
            ptab_unmake(c, id);
    }
    /* frames that became private or stopped being so, under a table nobody recounts */
    for (uint32_t j = 0; j < c->nusechg; j++) {
        uint32_t f = c->usechg[j] & 0xFFFFFFu;
        uint8_t was = (uint8_t)(c->usechg[j] >> 24);
        if ((was == PTL_USE_PRIVATE) == (m->phys.pfn[f].Use == PTL_USE_PRIVATE))
            continue;
        if (c->fr[f].uref == 1)
            ptab_unmake(c, c->fr[f].uxor - 1);
        else if (c->fr[f].uref > 1)
            for (uint32_t id = 0; id < c->nptabs; id++)
                if (c->ptabs[id].live)
                    ptab_unmake(c, id);
    }
    for (uint32_t id = 0; id < c->nptabs; id++)
        if (c->ptabs[id].live && c->ptabs[id].stale)
            ptab_make(m, id);
    /* the verdict, in the walk's order of processes */
    for (ptl_process *p = m->procs.list; p; p = p->next) {
        if (p->exited || p->is_system)
            continue;
        const chk_proc *pr = proc_of(c, p);
        PTL_ASSERT(pr);
        if (pr->bad) {
            for (uint32_t i = 0; i < pr->nuser; i++) {
                if (!pr->ptab[i] || !c->ptabs[pr->ptab[i] - 1].bad)
                    continue;
                uint32_t va = c->ptabs[pr->ptab[i] - 1].bad_at, pte;
                ptl__pte_read(m, p->pd, va, &pte);
                if (!ptl__vad_find(p, va))
                    fprintf(why, "process %s: PTE %08x for %08x lies in no VAD\n", p->name, pte,
                            va);
                else
                    fprintf(why, "process %s: user PTE for %08x is kernel-only\n", p->name, va);
                return -1;
            }
        }
        if (pr->priv != p->private_pages) {
            fprintf(why, "process %s: %u valid private pages, counter says %u\n", p->name, pr->priv,
                    p->private_pages);
            return -1;
        }
        if (pr->paged != p->paged_out) {
            fprintf(why, "process %s: %u PTEs name page-file slots, counter says %u\n", p->name,
                    pr->paged, p->paged_out);
            return -1;
        }
    }
    return ptl__process_pagefile_check(m, why);
}

/* The frames writable TLB entries point at: writes through them reach the frame with no
 * call that could mark it, so the next check treats them as written. */
NOCOV static void end_check(ptl_machine *m)
{
    ptl__icheck *c = m->icheck;
    for (uint32_t i = 0; i < c->ndirty; i++)
        c->fr[c->dirty[i]].flags &= (uint8_t)~F_DIRTY;
    for (uint32_t i = 0; i < c->neval; i++)
        c->fr[c->eval[i]].flags &= (uint8_t)~F_EVAL;
    c->ndirty = c->neval = 0;
    c->nwset = 0;
    for (uint32_t i = 0; i < PTL_TLB_ENTRIES; i++) {
        const ptl__tlbe *e = &m->mmu.tlb[i];
        if (e->tag && e->writable && e->pfn < c->nram &&
            (c->fr[e->pfn].pd_slot || c->fr[e->pfn].pt_slot))
            c->wset[c->nwset++] = e->pfn;
    }
    ptl__phys_written_truncate(&m->phys, 0);
    ptl__phys_noted_clear(&m->phys);
}

int ptl__icheck_processes(ptl_machine *m, FILE *why)
{
    PTL_ASSERT(m->icheck);
    if (process_check(m, why) != 0)
        return -1;
    end_check(m);
    return 0;
}

int ptl__icheck_totals_get(const ptl_machine *m, ptl__icheck_totals *out)
{
    const ptl__icheck *c = m->icheck;
    memset(out, 0, sizeof *out);
    if (!c)
        return -1;
    out->pds = c->npds;
    out->tables = c->npts;
    for (uint32_t f = 0; f < c->nram; f++)
        out->mapped += c->fr[f].tally;
    for (int t = 0; t < PTL_SYSPTE_TYPES && t < 2; t++)
        out->in_runs[t] = c->pool[t].in_runs;
    for (uint32_t k = 0; k < c->nprocs; k++)
        if (c->procs[k].live)
            out->private_valid += c->procs[k].priv;
    return 0;
}

int ptl__icheck_range_changed(ptl_machine *m, uint32_t pd, uint32_t va, uint32_t bytes)
{
    const ptl__icheck *c = m->icheck;
    if (!c || !bytes)
        return !!bytes;
    if (pd >= c->nram || !c->fr[pd].pd_slot)
        return 1;
    const chk_pd *d = c->pds[c->fr[pd].pd_slot - 1];
    uint64_t last = ((uint64_t)va + bytes - 1) >> 22;
    for (uint64_t i = va >> 22; i <= last; i++) {
        if (d->fresh || get_bit(d->chg, (uint32_t)i))
            return 1;
        uint32_t pde = d->snap[i], t = pde >> PTL_PAGE_SHIFT;
        if (!(pde & PTL_PTE_VALID) || t >= c->nram || !c->fr[t].pt_slot ||
            c->pts[c->fr[t].pt_slot - 1]->changed)
            return 1;
    }
    return 0;
}
