/* ptelab.c - the command-line front door.
 *
 *   ptelab demo                    the main job on the embedded default machine
 *   ptelab layout [options]        the boot-time address-space layout
 *   ptelab kd [options] [-c CMDS]  WinDbg-style commands on a machine
 *   ptelab --help | --version
 *
 * Exit codes follow sysexits.h: 0 success, 64 usage error, 65 data error (a configuration
 * the machine refuses), 70 an output that cannot be written (main checks standard output
 * after every command).
 */
#include <ptelab/ptelab.h>
#include <ptelab/wdm.h>

#include "demo.h"
#include "kd_repl.h"
#include "plan.h"
#include "bench.h"
#include "cli.h"
#include "run.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EX_USAGE_    64
#define EX_DATA_     65
#define EX_SOFTWARE_ 70 /* an output that cannot be written */

static const char usage_text[] =
    "usage: ptelab COMMAND [OPTIONS]\n"
    "\n"
    "An executable model of the Windows NT (x86) memory manager as device drivers see it.\n"
    "\n"
    "commands:\n"
    "  demo                 the article end to end on a 64 MB NT 4.0 SP4 machine\n"
    "  run SCRIPT.lua       a Lua scenario [--report out.html] [--csv perf.csv] [--reg f.reg]\n"
    "                       [--profile P] [--seed N] [--sandbox] [-v]\n"
    "  layout               print the system address-space layout the machine boots with\n"
    "  kd [-c \"cmd; cmd\"]   WinDbg-style commands (!vm, !sysptes, !pte, ...) on a machine;\n"
    "                       every -c runs, in order; without -c, from a prompt or stdin\n"
    "  plan [WORKLOAD.lua]  size the system PTE pool and recommend SystemPages\n"
    "                       (ptelab plan --help for its options)\n"
    "  bench [--quick]      the performance table: allocators, MMU, mapping (docs/performance.md)\n"
    "                       [--only TEXT] runs the rows whose name contains TEXT\n"
    "\n"
    "machine options (layout, kd; run takes --verifier, --fail-*, --profile, --seed and\n"
    "--reg for every machine its scenario boots):\n"
    "  --ram SIZE           RAM, e.g. 64M, 512M, 3584M, 3.5G (default 64M)\n"
    "  --system-pages N     registry SystemPages: 0 computed, max, or a count\n"
    "  --3gb                boot with /3GB\n"
    "  --userva MB          boot with /USERVA=MB (needs --3gb)\n"
    "  --profile P          nt4sp3, nt4sp4 (default), win2000, winxp\n"
    "  --reg FILE.reg       import SystemPages, PagedPoolSize, NonPagedPoolSize, TrackPtes\n"
    "  --verifier           Driver Verifier on for every driver\n"
    "  --track-ptes         registry TrackPtes = 1\n"
    "  --fail-nth N         fault injection: fail the Nth allocation\n"
    "  --fail-ppm N         fault injection: fail each allocation with probability N/1e6\n"
    "  --fail-kinds LIST    the kinds that fail: syspte, pool, mdl (comma-separated; all)\n"
    "  --seed N             seed for randomised behaviour\n"
    "\n"
    "  --help, --version\n"
    "\n"
    "Numbers are decimal, or hexadecimal after 0x. Exit status: 0 done, 64 usage, 65 data\n"
    "(a configuration the machine refuses, a file that does not parse, a kd command kd\n"
    "refused), 70 an output that\n"
    "cannot be written; run and plan say more in their --help.\n";

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "ptelab: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(ptelab --help shows the usage)\n");
    return EX_USAGE_;
}

/* A 32-bit number as cli.h reads numbers. */
static int parse_uint(const char *s, uint32_t *out)
{
    uint64_t v;
    if (ptl_cli_parse_u64(s, &v) != 0 || v > 0xFFFFFFFFull)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

/* Parse the machine options at argv[*i]; 1 consumed, 0 not a machine option, -1 error. */
static int machine_option(int argc, char **argv, int *i, ptl_config *cfg)
{
    const char *a = argv[*i];
    const char *val = (*i + 1 < argc) ? argv[*i + 1] : NULL;
    if (strcmp(a, "--3gb") == 0) {
        cfg->boot_3gb = 1;
        return 1;
    }
    if (strcmp(a, "--verifier") == 0) {
        cfg->verifier = 1;
        return 1;
    }
    if (strcmp(a, "--track-ptes") == 0) {
        cfg->track_ptes = 1;
        return 1;
    }
    if (strcmp(a, "--ram") && strcmp(a, "--system-pages") && strcmp(a, "--userva") &&
        strcmp(a, "--profile") && strcmp(a, "--reg") && strcmp(a, "--fail-nth") &&
        strcmp(a, "--fail-ppm") && strcmp(a, "--fail-kinds") && strcmp(a, "--seed"))
        return 0;
    if (!val) {
        usage_error("%s needs a value", a);
        return -1;
    }
    (*i)++;
    if (strcmp(a, "--ram") == 0) {
        cfg->ram_bytes = ptl_parse_size(val);
        if (!cfg->ram_bytes) {
            usage_error("--ram '%s' is not a size like 64M or 3.5G", val);
            return -1;
        }
    } else if (strcmp(a, "--system-pages") == 0) {
        if (strcmp(val, "max") == 0)
            cfg->system_pages = 0xFFFFFFFFu;
        else if (parse_uint(val, &cfg->system_pages) != 0) {
            usage_error("--system-pages '%s' is not a number or 'max'", val);
            return -1;
        }
    } else if (strcmp(a, "--reg") == 0) {
        if (ptl_registry_import(cfg, val) != 0) {
            fprintf(stderr, "ptelab: %s\n", ptl_error());
            return -2; /* a data error */
        }
    } else if (strcmp(a, "--fail-kinds") == 0) {
        if (ptl_fault_kinds_parse(val, &cfg->fault_inject_kinds) != 0) {
            usage_error("%s", ptl_error());
            return -1;
        }
    } else if (strcmp(a, "--fail-nth") == 0 || strcmp(a, "--fail-ppm") == 0) {
        uint32_t v;
        int ppm = a[7] == 'p';
        if (parse_uint(val, &v) != 0 || v == 0 || (ppm && v > 1000000)) {
            usage_error(ppm ? "%s needs a number of failures per million, 1..1000000"
                            : "%s needs a count from 1 (the Nth allocation fails)",
                        a);
            return -1;
        }
        if (!cfg->fault_inject_kinds) /* --fail-kinds, before or after, narrows it */
            cfg->fault_inject_kinds = PTL_FAULT_SYSPTES | PTL_FAULT_POOL | PTL_FAULT_MDL;
        if (a[7] == 'n')
            cfg->fault_inject_nth = v;
        else
            cfg->fault_inject_ppm = v;
    } else if (strcmp(a, "--seed") == 0) {
        uint32_t v;
        if (parse_uint(val, &v) != 0) {
            usage_error("--seed '%s' is not a number", val);
            return -1;
        }
        cfg->seed = v;
    } else if (strcmp(a, "--userva") == 0) {
        if (parse_uint(val, &cfg->userva_mb) != 0) {
            usage_error("--userva '%s' is not a number of MB", val);
            return -1;
        }
    } else {
        int found = ptl_profile_from_name(val);
        if (found < 0) {
            usage_error("--profile '%s' is not nt4sp3, nt4sp4, win2000 or winxp", val);
            return -1;
        }
        cfg->profile = (ptl_profile)found;
    }
    return 1;
}

static int is_help(const char *a)
{
    return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0;
}

static int help(void)
{
    fputs(usage_text, stdout);
    return 0;
}

static ptl_machine *boot_or_report(const ptl_config *cfg, int *rc)
{
    ptl_machine *m = ptl_boot(cfg);
    if (!m) {
        fprintf(stderr, "ptelab: the machine does not boot: %s\n", ptl_error());
        *rc = EX_DATA_;
    }
    return m;
}

static int cmd_layout(int argc, char **argv)
{
    ptl_config cfg;
    ptl_config_init(&cfg);
    for (int i = 2; i < argc; i++) {
        if (is_help(argv[i]))
            return help();
        int r = machine_option(argc, argv, &i, &cfg);
        if (r < 0)
            return r == -2 ? EX_DATA_ : EX_USAGE_;
        if (r == 0)
            return usage_error("layout: unknown option '%s'", argv[i]);
    }
    int rc = 0;
    ptl_machine *m = boot_or_report(&cfg, &rc);
    if (!m)
        return rc;
    ptl_layout_print(m, stdout);
    ptl_shutdown(m);
    return 0;
}

static int cmd_kd(int argc, char **argv)
{
    ptl_config cfg;
    ptl_config_init(&cfg);
    char *commands = NULL; /* every -c, in order, joined by "; " */
    for (int i = 2; i < argc; i++) {
        if (is_help(argv[i])) {
            free(commands);
            return help();
        }
        int r = machine_option(argc, argv, &i, &cfg);
        if (r < 0) {
            free(commands);
            return r == -2 ? EX_DATA_ : EX_USAGE_;
        }
        if (r == 1)
            continue;
        if (strcmp(argv[i], "-c") != 0) {
            free(commands);
            return usage_error("kd: unknown option '%s'", argv[i]);
        }
        if (i + 1 >= argc) {
            free(commands);
            return usage_error("%s", "kd: -c needs the commands to run");
        }
        const char *more = argv[++i];
        size_t had = commands ? strlen(commands) : 0;
        char *joined = realloc(commands, had + strlen(more) + 3);
        if (!joined) {
            free(commands);
            return usage_error("%s", "kd: out of memory");
        }
        commands = joined;
        if (had) {
            memcpy(commands + had, "; ", 2);
            had += 2;
        }
        memcpy(commands + had, more, strlen(more) + 1);
    }
    int rc = 0;
    ptl_machine *m = boot_or_report(&cfg, &rc);
    if (!m) {
        free(commands);
        return rc;
    }
    int rc_kd = ptl_cli_kd_session(m, commands);
    ptl_shutdown(m);
    free(commands);
    return rc_kd;
}

static int cmd_demo(int argc, char **argv)
{
    if (argc == 3 && is_help(argv[2]))
        return help();
    if (argc > 2)
        return usage_error("demo takes no arguments (got '%s')", argv[2]);
    return ptl_cli_demo();
}

static int dispatch(int argc, char **argv)
{
    if (argc < 2)
        return usage_error("%s", "no command given");
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("ptelab %s\n", PTELAB_VERSION);
        return 0;
    }
    if (strcmp(cmd, "demo") == 0)
        return cmd_demo(argc, argv);
    if (strcmp(cmd, "layout") == 0)
        return cmd_layout(argc, argv);
    if (strcmp(cmd, "kd") == 0)
        return cmd_kd(argc, argv);
    if (strcmp(cmd, "run") == 0)
        return ptl_cli_run(argc, argv);
    if (strcmp(cmd, "plan") == 0)
        return ptl_cli_plan(argc, argv);
    if (strcmp(cmd, "bench") == 0)
        return ptl_bench_main(argc - 1, argv + 1);
    return usage_error("unknown command '%s'", cmd);
}

int main(int argc, char **argv)
{
    int rc = dispatch(argc, argv);
    /* every command's standard output: a full disk or a closed pipe is an error, not 0 */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "ptelab: cannot write the output: %s\n", strerror(errno));
        return EX_SOFTWARE_;
    }
    return rc;
}
