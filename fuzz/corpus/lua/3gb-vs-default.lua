-- 3gb-vs-default.lua - /3GB against the default split on a 1 GB machine.
--
-- boot.ini's /3GB gives applications 3 GB of user space and leaves the system 1 GB: the
-- system PTE pool, paged and nonpaged pool all shrink (KB Q316739). /USERVA gives some of
-- it back: the VA between the user space it asks for and 0xC0000000 becomes additional
-- system PTEs. ptelab's choices for what NT 4.0/2000 do here are in docs/fidelity.md.
--
-- For each configuration: the PTE total, and how many 1 MB adapter mappings
-- (MmMapIoSpace, 256 PTEs each: a typical device's register window plus buffers) fit
-- before MmMapIoSpace returns NULL; then how many 4-page kernel stacks (threads) would.

local MAPPING = 1024 * 1024

local function measure(label, boot)
  boot.ram = "1G"
  local m = ptl.boot(boot)
  m:adapter("PCIBus", 0, 0xE0000000, 16 * 1024 * 1024)
  local drv = assert(m:driver("capture.sys", 16 * 1024))
  local total = m:total_ptes()
  local code, maps = m:call(nil, drv, function()
    local n = 0
    while MmMapIoSpace(0xE0000000, MAPPING, MmNonCached) do n = n + 1 end
    return n
  end)
  assert(code == 0)
  m:snapshot(label .. ": 1 MB mappings until NULL")
  local st = m:stats()
  print(string.format("%-24s %6d system PTEs (%3d MB of VA): %3d x 1 MB mappings, %5d PTEs left over",
                      label, total, total * 4 // 1024, maps, st.free))
  assert(m:check())
  return m, total, maps
end

local default_m, default_total, default_maps = measure("default (2 GB / 2 GB)", {})
local gb3_m, gb3_total, gb3_maps = measure("/3GB", {boot_3gb = true})
local userva_m, userva_total, userva_maps = measure("/3GB /USERVA=2800", {boot_3gb = true, userva = 2800})
print()
print(gb3_m:layout())

default_m:shutdown()
userva_m:shutdown()

assert(gb3_total < default_total, "/3GB shrinks the system PTE pool")
assert(gb3_maps < default_maps)
assert(userva_total > gb3_total, "/USERVA gives PTEs back")

return {
  default_ptes = default_total,
  default_maps = default_maps,
  gb3_ptes = gb3_total,
  gb3_maps = gb3_maps,
  userva_ptes = userva_total,
  userva_maps = userva_maps,
}
