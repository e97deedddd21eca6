/* run.h - `ptelab run`: run a Lua scenario (src/script.c). */
#ifndef PTELAB_TOOLS_RUN_H
#define PTELAB_TOOLS_RUN_H

/* argv as main's: argv[1] is "run", the options and the script follow.
 *   ptelab run script.lua [--report out.html] [--csv perf.csv] [--reg file.reg]
 *              [--profile nt4sp4|nt4sp3|win2000|winxp] [--seed N] [-v]
 * Exit codes: 0 success, 1 a Lua error, 2 the scenario ended in a STOP (after the report
 * and CSV are written), 64 usage error, 65 data error (script missing, bad .reg). */
int ptl_cli_run(int argc, char **argv);

#endif
