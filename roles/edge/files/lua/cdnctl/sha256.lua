-- SHA-256 hex digest through the libcrypto nginx is linked with (no extra Lua library).
local ffi = require "ffi"

local ffi_new = ffi.new
local ffi_str = ffi.string
local C = ffi.C
local byte = string.byte
local format = string.format
local concat = table.concat

ffi.cdef [[
unsigned char *SHA256(const unsigned char *d, size_t n, unsigned char *md);
]]

local _M = {}

local buf = ffi_new("unsigned char[32]")
local bytes_ptr = ffi.typeof("const unsigned char *")

function _M.hex(data)
    C.SHA256(data, #data, buf)
    local raw = ffi_str(buf, 32)
    local out = {}
    for i = 1, 32 do
        out[i] = format("%02x", byte(raw, i))
    end
    return concat(out)
end

-- The raw 32-byte digest of `len` bytes of `data` from byte `first` (1-based), without
-- copying them into a new Lua string.
function _M.of_range(data, first, len)
    C.SHA256(ffi.cast(bytes_ptr, data) + (first - 1), len, buf)
    return ffi_str(buf, 32)
end

return _M
