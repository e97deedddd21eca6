/* run.c - `ptelab run script.lua [options]`: the Lua scenario runner's command line.
 * See run.h for the usage and exit codes, src/script.c for the Lua API. */
#include "run.h"

#include "cli.h"

#include "../src/script.h"
#include <ptelab/ptelab.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EX_USAGE_    64
#define EX_DATA_     65
#define EX_SOFTWARE_ 70

static const char run_usage[] =
    "usage: ptelab run SCRIPT.lua [--report OUT.html] [--csv PERF.csv] [--reg FILE.reg]\n"
    "                  [--profile nt4sp3|nt4sp4|win2000|winxp] [--seed N] [--sandbox] [-v]\n"
    "                  [--verifier] [--fail-nth N | --fail-ppm N] [--fail-kinds LIST]\n"
    "\n"

    "Runs a Lua scenario (scenarios/*.lua). Exit status: 0 done, 1 Lua error, 2 the\n"
    "scenario ended in a STOP (the report and CSV are still written), 64 usage, 65 data,\n"
    "70 the report or CSV could not be written.\n"
    "\n"
    "--verifier turns Driver Verifier on, and --fail-nth/--fail-ppm inject allocation\n"
    "failures (the Nth, or N per million, seeded by --seed) of LIST's kinds (syspte, pool,\n"
    "mdl, comma-separated; all by default), in every machine the scenario boots unless its\n"
    "ptl.boot{} says otherwise (verifier=, fail_nth=, fail_ppm=, fail_kinds=).\n"
    "\n"
    "--sandbox runs a scenario you do not trust: no io, os, package, load or require and\n"
    "no host files named from the script; at most 10^9 Lua instructions, 256 MB of Lua\n"
    "heap, and 4 GB of emulated RAM in the machines it holds at once.\n";

static int run_usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "ptelab run: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n%s", run_usage);
    return EX_USAGE_;
}

int ptl_cli_run(int argc, char **argv)
{
    ptl_script_opts opts;
    ptl_script_opts_init(&opts);
    const char *script = NULL;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(run_usage, stdout);
            return 0;
        }
        if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
            opts.verbose = 1;
            continue;
        }
        if (strcmp(a, "--verifier") == 0) {
            opts.verifier = 1;
            continue;
        }
        if (strcmp(a, "--fail-nth") == 0 || strcmp(a, "--fail-ppm") == 0 ||
            strcmp(a, "--fail-kinds") == 0) {
            if (i + 1 >= argc)
                return run_usage_error("%s needs a value", a);
            const char *val = argv[++i];
            uint64_t v = 0;
            if (strcmp(a, "--fail-kinds") == 0) {
                if (ptl_fault_kinds_parse(val, &opts.fault_kinds) != 0)
                    return run_usage_error("%s", ptl_error());
            } else if (ptl_cli_parse_u64(val, &v) != 0 || v == 0 ||
                       v > (a[7] == 'p' ? 1000000u : 0xFFFFFFFFu)) {
                return run_usage_error(a[7] == 'p'
                                           ? "%s needs a number of failures per million, 1..1000000"
                                           : "%s needs a count from 1 (the Nth allocation fails)",
                                       a);
            } else if (a[7] == 'n') {
                opts.fault_nth = (uint32_t)v;
            } else {
                opts.fault_ppm = (uint32_t)v;
            }
            continue;
        }
        if (strcmp(a, "--sandbox") == 0) {
            opts.sandbox = 1;
            opts.max_instructions = 1000000000u;
            opts.max_memory = 256u << 20;
            opts.max_machine_ram = 4ull << 30;
            continue;
        }
        if (strcmp(a, "--report") == 0 || strcmp(a, "--csv") == 0 || strcmp(a, "--reg") == 0 ||
            strcmp(a, "--profile") == 0 || strcmp(a, "--seed") == 0) {
            if (i + 1 >= argc)
                return run_usage_error("%s needs a value", a);
            const char *val = argv[++i];
            if (strcmp(a, "--report") == 0) {
                opts.report_path = val;
            } else if (strcmp(a, "--csv") == 0) {
                opts.csv_path = val;
            } else if (strcmp(a, "--reg") == 0) {
                opts.reg_path = val;
            } else if (strcmp(a, "--profile") == 0) {
                opts.profile = ptl_profile_from_name(val);
                if (opts.profile < 0)
                    return run_usage_error("--profile '%s' is not nt4sp3, nt4sp4, win2000 or winxp",
                                           val);
            } else {
                uint64_t v;
                if (ptl_cli_parse_u64(val, &v) != 0)
                    return run_usage_error("--seed '%s' is not a number", val);
                opts.seed = v;
            }
            continue;
        }
        if (a[0] == '-' && a[1])
            return run_usage_error("unknown option '%s'", a);
        if (script)
            return run_usage_error("more than one script ('%s')", a);
        script = a;
    }
    if (!script)
        return run_usage_error("%s", "no script given");
    if (access(script, R_OK) != 0) {
        fprintf(stderr, "ptelab run: cannot read %s: %s\n", script, strerror(errno));
        return EX_DATA_;
    }
    char *result = NULL;
    int output_failed = 0;
    opts.result = &result;
    opts.output_failed = &output_failed;
    int rc = ptl_script_run(script, &opts);
    if (result) {
        printf("\nresult:\n%s", result);
        if (result[0] && result[strlen(result) - 1] != '\n')
            printf("\n");
        free(result);
    }
    if (opts.report_path && rc != PTL_SCRIPT_NO_INPUT && !output_failed)
        fprintf(stderr, "ptelab run: report written to %s\n", opts.report_path);
    if (output_failed)
        return EX_SOFTWARE_;
    switch (rc) {
    case PTL_SCRIPT_OK:
        return 0;
    case PTL_SCRIPT_STOP:
        return 2;
    case PTL_SCRIPT_NO_INPUT:
        return EX_DATA_;
    default:
        return 1;
    }
}
