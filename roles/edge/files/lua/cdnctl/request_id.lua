-- X-Request-ID: the client's when well-formed, else 128 random bits in hex.
--
-- The random bytes come from OpenSSL's RAND_bytes, as nginx's $request_id does, but drawn
-- BATCH ids at a time: OpenSSL 3 spends thousands of instructions per call, which was a
-- tenth of a cache HIT's CPU.
local ffi = require "ffi"

local C = ffi.C
local ffi_string = ffi.string
local band = bit.band
local rshift = bit.rshift
local find = string.find
local error = error

ffi.cdef [[
int RAND_bytes(unsigned char *buf, int num);
]]

local _M = {}

-- BATCH ids of 16 random bytes, hex-encoded at once: a request then makes one string.
local BATCH = 256
local random = ffi.new("unsigned char[?]", BATCH * 16)
local hex = ffi.new("char[?]", BATCH * 32)
local DIGITS = ffi.new("char[17]", "0123456789abcdef")
local used = BATCH

-- init_worker: never hand out bytes drawn before the fork (every worker would share them).
function _M.reset()
    used = BATCH
end

local function refill()
    if C.RAND_bytes(random, BATCH * 16) ~= 1 then
        error("cdnctl: RAND_bytes failed")
    end
    for i = 0, BATCH * 16 - 1 do
        local b = random[i]
        hex[2 * i] = DIGITS[rshift(b, 4)]
        hex[2 * i + 1] = DIGITS[band(b, 15)]
    end
    used = 0
end

function _M.new()
    if used == BATCH then
        refill()
    end
    local id = ffi_string(hex + used * 32, 32)
    used = used + 1
    return id
end

-- The id of this request: `given` (the X-Request-ID header) if it is 1-128 characters of
-- [A-Za-z0-9._:-], else a new one.
function _M.of(given)
    if given and #given <= 128 and given ~= "" and not find(given, "[^%w._:-]") then
        return given
    end
    return _M.new()
end

return _M
