-- framebuffer-64mb.lua - a frame-buffer driver with a 64 MB PCI aperture.
--
-- The article: "Use the portions of the adapter RAM that you really need system access to
-- ... Do not map the whole adapter range if you do not really need to access it all from
-- system mode." A 64 MB aperture mapped with MmMapIoSpace takes 16,384 system PTEs, one
-- contiguous run, out of a pool of about 23,000 on a 128 MB NT 4.0 machine. And the
-- article's second step, IoAllocateMdl over the whole mapping, cannot work at all: an MDL
-- is limited to 64 KB (0x1C bytes of header + 4 bytes per page on x86), about 64 MB of
-- buffer less a few pages (docs/fidelity.md).
--
-- Three drivers are tried on the same machine: the greedy one (maps all 64 MB), the
-- careful one (maps the visible 1024x768x32 frame, 3 MB), and what the greedy mapping
-- leaves to the rest of the system (threads).

local APERTURE = 0xE0000000
local APERTURE_BYTES = 64 * 1024 * 1024
local FRAME_BYTES = 1024 * 768 * 4

local m = ptl.boot{ram = "128M", profile = "nt4sp4"}
m:adapter("PCIBus", 0, APERTURE, APERTURE_BYTES)
local app = m:process("display.exe")
local fb = assert(m:driver("fb.sys", 32 * 1024))

local total, free0 = m:total_ptes(), m:free_ptes()
print(string.format("system PTE pool: %d PTEs (%d MB of VA), %d free, largest run %d",
                    total, total * 4 // 1024, free0, m:largest_free()))
m:snapshot("booted")

-- 1. the greedy driver: the whole aperture, as the article's outline does it
local code, sva, mdl_whole, mdl_max = m:call(app, fb, function()
  local ok, pa = HalTranslateBusAddress("PCIBus", 0, APERTURE, 0)
  assert(ok)
  local va = MmMapIoSpace(pa, APERTURE_BYTES, MmWriteCombined)
  if not va then return nil end
  -- "Allocate an Mdl": over 64 MB this is NULL (the MDL itself would exceed 64 KB)
  local whole = IoAllocateMdl(va, APERTURE_BYTES)
  -- the largest buffer one MDL can describe: (0xFFFF - 0x1C) / 4 pages
  local max_pages = (0xFFFF - 0x1C) // 4
  local biggest = IoAllocateMdl(va, max_pages * PAGE_SIZE)
  local one_more = IoAllocateMdl(va, (max_pages + 1) * PAGE_SIZE)
  assert(biggest and not one_more)
  IoFreeMdl(biggest)
  return va, whole ~= nil, max_pages * PAGE_SIZE
end)
assert(code == 0)
local greedy_ptes = free0 - m:free_ptes()
print(string.format("MmMapIoSpace(64 MB): %s, %d system PTEs, %d left (largest run %d)",
                    sva and ptl.hex(sva) or "NULL", greedy_ptes, m:free_ptes(), m:largest_free()))
print(string.format("IoAllocateMdl(64 MB): %s; the largest MDL describes %d bytes",
                    mdl_whole and "an MDL" or "NULL", mdl_max))
m:snapshot("64 MB aperture mapped")

-- what is left for everybody else: kernel stacks of 4 PTEs each
local threads = {}
while true do
  local t = m:thread(app)
  if not t then break end
  threads[#threads + 1] = t
end
print(string.format("with the aperture mapped, only %d threads can start", #threads))
for _, t in ipairs(threads) do m:thread_exit(t) end
m:snapshot("threads tried")

m:call(app, fb, function() MmUnmapIoSpace(sva, APERTURE_BYTES) end)

-- 2. the careful driver: only the visible frame, and an MDL for it to map to the app
local before_careful = m:free_ptes()
local code2, frame_va, user_va = m:call(app, fb, function()
  local va = assert(MmMapIoSpace(APERTURE, FRAME_BYTES, MmWriteCombined))
  local mdl = assert(IoAllocateMdl(va, FRAME_BYTES))
  MmBuildMdlForNonPagedPool(mdl)
  local uva = MmMapLockedPages(mdl, UserMode)
  WRITE_REGISTER_ULONG(va, 0x00FF8000) -- one pixel, seen by the application below
  return va, uva
end)
assert(code2 == 0 and frame_va and user_va)
local careful_ptes = before_careful - m:free_ptes()
assert(m:user_read32(app, user_va) == 0x00FF8000)
print(string.format("the visible frame only: %d system PTEs; the app sees the pixel at %s",
                    careful_ptes, ptl.hex(user_va)))
m:snapshot("3 MB frame mapped")
assert(careful_ptes == FRAME_BYTES // PAGE_SIZE)
assert(m:check())

return {
  total_ptes = total,
  greedy_ptes = greedy_ptes,
  greedy_mapped = sva ~= nil,
  mdl_64mb = mdl_whole and "MDL" or "NULL",
  mdl_max_bytes = mdl_max,
  threads_left = #threads,
  careful_ptes = careful_ptes,
}
