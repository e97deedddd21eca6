/* bench.h - the performance issue's table, as `ptelab bench` and as ptelab-bench. */
#ifndef PTELAB_BENCH_H
#define PTELAB_BENCH_H

/* argv[0] is the command's name, then [--quick] [--only TEXT]. Returns the exit code: 0,
 * 64 for a usage error, 1 when a run failed (a mismatch, a machine that would not boot). */
int ptl_bench_main(int argc, char **argv);

#endif
