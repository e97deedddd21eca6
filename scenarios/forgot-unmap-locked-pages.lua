-- forgot-unmap-locked-pages.lua - a driver that forgets MmUnmapLockedPages.
--
-- The article: "Unmap the memory as soon as you are finished ... Otherwise, the system
-- will run out of PTEs, and it will bug check." Here a capture driver serves each
-- request by locking the application's 64 KB buffer and mapping it into system space with
-- MmGetSystemAddressForMdl (NT 4.0's way), writes the data, and completes the request
-- without MmUnmapLockedPages/MmUnlockPages, keeping the MDL. Each request leaks 16 system
-- PTEs until MmMapLockedPages finds no run: NO_MORE_SYSTEM_PTES (0x3F), with nothing to
-- say who took them.
--
-- With the registry value TrackPtes set, NT tracks which driver holds locked-page
-- mappings and the same leak ends in DRIVER_USED_EXCESSIVE_PTES (0xD8), which names the
-- driver (BC-3F, BC-D8). A third run uses MmGetSystemAddressForMdlSafe: NULL instead of a
-- STOP, the request fails with STATUS_INSUFFICIENT_RESOURCES, and the machine lives on
-- (but starts no threads).
--
-- The scenario ends in a STOP on purpose: `ptelab run` exits 2 and reports the first
-- machine (0x3F).

local BUFFER = 64 * 1024

local function leak_until_stop(label, track_ptes, safe)
  local m = ptl.boot{ram = "128M", profile = "nt4sp4", track_ptes = track_ptes}
  local app = m:process("capture.exe")
  local drv = assert(m:driver("leakycap.sys", 24 * 1024))
  local buf = assert(m:user_alloc(app, BUFFER))
  local pending = {} -- the MDLs the driver keeps and never unmaps
  local requests, refused = 0, 0
  local code = m:call(app, drv, function()
    while true do
      local mdl = IoAllocateMdl(buf, BUFFER)
      MmProbeAndLockPages(mdl, UserMode, IoWriteAccess)
      local sva
      if safe then
        sva = MmGetSystemAddressForMdlSafe(mdl, NormalPagePriority)
        if not sva then
          refused = refused + 1
          MmUnlockPages(mdl)
          IoFreeMdl(mdl)
          return
        end
      else
        sva = MmGetSystemAddressForMdl(mdl) -- 0x3F (or 0xD8) when no run is left
      end
      WRITE_REGISTER_ULONG(sva, requests) -- the "captured" data
      pending[#pending + 1] = mdl           -- ... and no MmUnmapLockedPages
      requests = requests + 1
    end
  end)
  local stop = m:stopped()
  local leaked = #pending * (BUFFER // PAGE_SIZE)
  print(string.format("%-28s %4d requests served, %5d PTEs leaked of %d: %s", label,
                      requests, leaked, m:total_ptes(),
                      stop and string.format("STOP 0x%02X %s", stop.code, stop.name)
                           or string.format("no STOP; %d request(s) refused", refused)))
  if stop then print("  " .. stop.detail) end
  -- the frozen machine still answers the debugger
  local vm = m:kd("!vm")
  assert(vm:find("Free System PTEs"), vm)
  return m, code, requests, stop
end

local m1, code1, n1, stop1 = leak_until_stop("TrackPtes off", false, false)
local m2, code2, n2, stop2 = leak_until_stop("TrackPtes on", true, false)
local m3, code3, n3 = leak_until_stop("MmGetSystemAddressForMdlSafe", false, true)
m2:shutdown()
m3:shutdown()

assert(code1 == 0x3F and stop1.name == "NO_MORE_SYSTEM_PTES")
assert(code2 == 0xD8 and stop2.name == "DRIVER_USED_EXCESSIVE_PTES")
assert(code3 == 0)

return {
  without_trackptes = ptl.hex(code1),
  with_trackptes = ptl.hex(code2),
  safe_variant = "NULL, no STOP",
  requests_until_stop = n1,
  requests_until_d8 = n2,
  requests_safe = n3,
}
