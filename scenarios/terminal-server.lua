-- terminal-server.lua - a Terminal-Server-like load: sessions log on one after another,
-- each a process with many threads (csrss, winlogon, explorer and the applications of a
-- session, folded into one process), until thread creation fails.
--
-- Every NT thread has a kernel stack of 12 KB plus a guard page: 4 system PTEs
-- (docs/fidelity.md, "Threads and drivers"). The article: when the system PTE pool is
-- used up, "threads not being created" is the first thing that goes. Terminal Server
-- (NT 4.0 TSE) was where that was met first, and where SystemPages was raised.
--
-- The same load runs twice: with the computed number of system PTEs, and with
-- SystemPages = "max". Snapshots of the PTE map are taken every few sessions for the
-- report (ptelab run terminal-server.lua --report ts.html).

local THREADS_PER_SESSION = 60
local RAM = "512M"

local function logon_until_failure(label, system_pages)
  local m = ptl.boot{ram = RAM, profile = "nt4sp4", system_pages = system_pages}
  -- the console: the display driver and the session's drivers load first
  local video = assert(m:driver("tsdd.sys", 96 * 1024))
  assert(m:import(video, "VIDEOPRT.SYS", 40 * 1024))
  local total = m:total_ptes()
  local sessions, threads, failure = 0, 0, nil
  while not failure do
    local session = m:process(string.format("session%d.exe", sessions + 1))
    if not session then failure = "process creation failed"; break end
    sessions = sessions + 1
    for _ = 1, THREADS_PER_SESSION do
      local t, err = m:thread(session)
      if not t then failure = err; break end
      threads = threads + 1
    end
    if sessions % 10 == 0 then
      m:snapshot(string.format("%s: %d sessions, %d threads", label, sessions, threads))
    end
  end
  m:snapshot(string.format("%s: thread creation failed after %d threads", label, threads))
  local st = m:stats()
  print(string.format("%-28s %6d system PTEs: %3d sessions, %5d threads, then: %s",
                      label, total, sessions, threads, failure))
  print(string.format("%-28s free %d, largest run %d, refused requests %d", "",
                      st.free, st.largest_free, st.failed_total))
  assert(m:check(), "invariants")
  return m, {sessions = sessions, threads = threads, total = total, failure = failure}
end

local computed_m, computed = logon_until_failure("computed SystemPages", 0)
local max_m, max = logon_until_failure("SystemPages = max", "max")
computed_m:shutdown()  -- the report is about the last machine: SystemPages = max

-- each thread costs 4 PTEs, so the thread count is bounded by the pool
assert(computed.threads * 4 <= computed.total)
assert(max.threads > computed.threads, "SystemPages = max lets more threads start")
assert(computed.failure:find("STATUS_INSUFFICIENT_RESOURCES"), computed.failure)

return {
  sessions_computed = computed.sessions,
  threads_computed = computed.threads,
  ptes_computed = computed.total,
  sessions_max = max.sessions,
  threads_max = max.threads,
  ptes_max = max.total,
  outcome = "thread creation failed",
}
