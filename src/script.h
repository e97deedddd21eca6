/* script.h - the Lua 5.4 scenario runner: `ptelab run script.lua`.
 *
 * A scenario is a Lua file that boots machines with ptl.boot{...}, loads drivers, starts
 * processes and runs driver code with m:call(process, driver, function() ... end), where
 * the DDIs of <ptelab/wdm.h> are available under their NT names (as globals and in the
 * table `nt`). src/script.c documents the Lua API and how STOPs and exceptions cross the
 * Lua frames.
 */
#ifndef PTELAB_SCRIPT_H
#define PTELAB_SCRIPT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ptl_script_opts {
    const char *report_path; /* HTML report of the machine that stopped, else the last one
                                booted; NULL: none */
    const char *csv_path;    /* PDH-CSV timeline of the same machine; NULL: none */
    const char *reg_path;    /* .reg file applied to every ptl.boot before its own fields;
                                NULL: none */
    int profile;             /* ptl_profile overriding every ptl.boot's profile; -1 none */
    uint64_t seed;           /* ptl_config.seed of every machine (a boot's seed= wins) */
    int verbose;             /* echo events to stderr as they happen */
    /* Applied to every ptl.boot before its own fields (which win): Driver Verifier on, and
     * fault injection (ptl_config's fault_inject_*; kinds 0 with nth or ppm set: all). */
    int verifier;
    uint32_t fault_kinds, fault_nth, fault_ppm;
    /* Out: what the script returned (its first return value), rendered as text: a table
     * becomes "key=value" lines sorted by key, anything else tostring(). Allocated with
     * malloc into *result when result is not NULL (the caller frees); NULL when the script
     * returned nothing or did not finish. */
    char **result;
    /* Out: the STOP code that ended the scenario (0 none), when not NULL. */
    uint32_t *stop_code;
    /* Out: set to 1 when the report or the timeline asked for was not written (the file
     * could not be, or no machine was booted), when not NULL. */
    int *output_failed;
    /* Out: the Lua error message with its traceback (malloc'd, the caller frees), NULL
     * when there was none; when not NULL. Without it the message goes to stderr. */
    char **error;
    /* Sandbox (the fuzzer, untrusted scripts): only the base, string, table, math and utf8
     * libraries (no io, os, package, debug, no loading files), at most max_instructions
     * Lua VM instructions (0: no limit) and max_memory bytes of Lua heap (0: no limit). */
    int sandbox;
    uint64_t max_instructions;
    size_t max_memory;
    /* Sandbox: the RAM of the scenario's machines still held (booted and not yet freed;
     * the one a report is about is held to the end), together at most this many bytes
     * (0: no limit). A machine holds host memory up to its RAM, for the pages its drivers
     * write. */
    uint64_t max_machine_ram;
} ptl_script_opts;

void ptl_script_opts_init(ptl_script_opts *opts);

/* Run a scenario. 0 success; 1 a Lua error (the message names the script and line, and
 * is printed to stderr with a traceback); 2 the scenario ended in a STOP (the STOP screen
 * is printed to stdout; the report and CSV are still written); 3 the script or the .reg
 * file could not be read (printed to stderr). */
int ptl_script_run(const char *path, const ptl_script_opts *opts);

/* The same for a scenario held in memory (len bytes of text); name stands for its path
 * in messages. */
int ptl_script_run_text(const char *name, const char *text, size_t len,
                        const ptl_script_opts *opts);

#define PTL_SCRIPT_OK        0
#define PTL_SCRIPT_LUA_ERROR 1
#define PTL_SCRIPT_STOP      2
#define PTL_SCRIPT_NO_INPUT  3

#ifdef __cplusplus
}
#endif

#endif /* PTELAB_SCRIPT_H */
