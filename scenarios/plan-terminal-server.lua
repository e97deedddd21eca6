-- plan-terminal-server.lua - a workload for `ptelab plan` (docs/plan.md): a Terminal
-- Server with several video adapters and network cards, sessions' threads coming and
-- going, and disk and network I/O mapped through MDLs.
--
--   ptelab plan scenarios/plan-terminal-server.lua --trials 200 --jobs 2 --report ts.html
--
-- The file only describes the workload; the simulation runs in C. Sizes are bytes or
-- "4K"/"64M"; times are seconds or "50ms"/"5min". Distributions: constant, uniform,
-- exponential, lognormal, choice, and forever for lifetimes.

local VIDEO = 4   -- video adapters, one display driver each
local NICS = 2    -- network adapters

return {
  name = string.format("terminal server, %d video + %d network drivers", VIDEO, NICS),
  ram = "1G",
  profile = "nt4sp4",
  boot_3gb = false,
  duration = 60,          -- simulated seconds per trial

  adapters = {
    -- each display driver maps a part of its frame buffer aperture at boot, for good
    -- (the article: map only what you need, not the whole aperture)
    { name = "video aperture", count = VIDEO, aperture = "64M", map = "16M" },
    -- a NIC's registers: small, mapped at boot
    { name = "nic registers", count = NICS, aperture = "128K" },
  },

  drivers = {
    { name = "display driver", count = VIDEO, image = "384K",
      maps = {
        -- off-screen surfaces the driver maps for a blit and unmaps again
        { api = "MmMapLockedPagesSpecifyCache", size = uniform("64K", "1M"),
          rate = 20, lifetime = exponential(0.2) },
      } },
    { name = "network driver", count = NICS, image = "160K",
      maps = {
        -- receive buffers mapped with MmGetSystemAddressForMdl: must succeed
        { api = "MmGetSystemAddressForMdl", size = choice({ "4K", "8K", "64K" }, { 6, 3, 1 }),
          rate = 400, lifetime = exponential("20ms"), max_live = 256 },
      } },
    { name = "other drivers", count = 60, image = lognormal("64K", 0.8) },
  },

  -- 80 sessions' worth of threads held, plus sessions logging on and off
  threads = { initial = 4000, rate = 30, lifetime = exponential("2min") },

  io = {
    -- file system and disk I/O: buffers locked and mapped for the transfer
    { name = "disk I/O", size = lognormal("32K", 1.0), rate = 800,
      lifetime = exponential("15ms") },
  },
}
