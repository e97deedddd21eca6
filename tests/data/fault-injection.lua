-- fault-injection.lua - a driver that loads, maps a register page and allocates an MDL for
-- it, for the fault-injection options of `ptelab run` and ptl.boot's fail_* fields
-- (tests/CMakeLists.txt, test-script). Prints which steps succeeded.
local boot = {ram = "64M"}
for k, v in pairs(FAULTS or {}) do boot[k] = v end
local m = ptl.boot(boot)
m:adapter("PCIBus", 0, 0xE0000000, 1024 * 1024)
local d = m:driver("s.sys", 8192)
if not d then print("load failed") return end
local code, va, mdl = m:call(nil, d, function()
  local va = MmMapIoSpace(0xE0000000, 4096, MmNonCached)
  return va, va and IoAllocateMdl(va, 4096)
end)
print(va and "map ok" or "map failed", mdl and "mdl ok" or "mdl failed")
