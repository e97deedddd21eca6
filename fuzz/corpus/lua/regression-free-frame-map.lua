local m = ptl.boot{ram = 16 * 1024 * 1024}
m:adapter(5, 0, 0xE0000000, 0x100000)
local p = m:process("a.exe")
local d = m:driver("d.sys", 8192000, 0x100000)
local p = m:process("a.exe")
local d = m:driver("d.sys", 81)
local code = m:call(p, d, function()
  local va = MmMapIoSpace(0xE0000F~0, 8192, MmNonCached)
  WRITE_REGISTER_ULONG(va, 7)
  MmUnmapIoSpace(va, 8192)
end)
return { code = code, free = m:free_ptes() }
