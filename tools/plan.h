/* plan.h - `ptelab plan`: size the system PTE pool for a workload (src/plan.c, docs/plan.md).
 */
#ifndef PTELAB_TOOLS_PLAN_H
#define PTELAB_TOOLS_PLAN_H

/* argv as main's: argv[1] is "plan".
 *   ptelab plan [WORKLOAD.lua] [workload options] [sweep options] [--jobs N]
 *               [--shard I/N --format jsonl] [--report OUT.html]
 *   ptelab plan merge [--format table|jsonl] [--report OUT.html] SHARD.jsonl...
 * Exit codes: 0 success (also when no SystemPages value meets the target: the output says
 * so and what would), 64 usage error, 65 data error (a workload file that does not load,
 * a machine that does not boot, shard files that do not belong together), 70 an output
 * file that cannot be written. */
int ptl_cli_plan(int argc, char **argv);

#endif
