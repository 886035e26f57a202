-- X-Request-ID: the client's when well-formed, else 128 random bits in hex.
--
-- The random bytes come from OpenSSL's RAND_bytes, as nginx's $request_id does, but drawn
-- BATCH ids at a time: OpenSSL 3 spends thousands of instructions per call, which was a
-- tenth of a cache HIT's CPU.
local ffi = require "ffi"

local C = ffi.C
local tohex = bit.tohex
local find = string.find
local error = error

ffi.cdef [[
int RAND_bytes(unsigned char *buf, int num);
]]

local _M = {}

local BATCH = 256
local words = ffi.new("uint32_t[?]", BATCH * 4)
local bytes = ffi.cast("unsigned char *", words)
local used = BATCH

-- init_worker: never hand out bytes drawn before the fork (every worker would share them).
function _M.reset()
    used = BATCH
end

function _M.new()
    if used == BATCH then
        if C.RAND_bytes(bytes, BATCH * 16) ~= 1 then
            error("cdnctl: RAND_bytes failed")
        end
        used = 0
    end
    local i = used * 4
    used = used + 1
    return tohex(words[i], 8) .. tohex(words[i + 1], 8) .. tohex(words[i + 2], 8)
        .. tohex(words[i + 3], 8)
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
