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
typedef struct {
    unsigned int h[8];
    unsigned int Nl, Nh;
    unsigned int data[16];
    unsigned int num, md_len;
} cdnctl_sha256_ctx;
int SHA256_Init(cdnctl_sha256_ctx *c);
int SHA256_Update(cdnctl_sha256_ctx *c, const void *data, size_t len);
int SHA256_Final(unsigned char *md, cdnctl_sha256_ctx *c);
]]

local _M = {}

local buf = ffi_new("unsigned char[32]")
local bytes_ptr = ffi.typeof("const unsigned char *")

local function hex_of(raw)
    local out = {}
    for i = 1, 32 do
        out[i] = format("%02x", byte(raw, i))
    end
    return concat(out)
end

function _M.hex(data)
    C.SHA256(data, #data, buf)
    return hex_of(ffi_str(buf, 32))
end

-- A running SHA-256 whose state between two inputs can be saved as a string and taken up
-- again (manifest_store.lua keeps one per piece of the manifest, so a change near the end
-- of 160 MB re-hashes only what follows it). The state is OpenSSL's SHA256_CTX: plain
-- words, no pointers, so its bytes are the whole state.
local ctx_type = ffi.typeof("cdnctl_sha256_ctx")
local CTX_BYTES = ffi.sizeof(ctx_type)
_M.STATE_BYTES = CTX_BYTES

function _M.stream()
    local ctx = ffi_new(ctx_type)
    C.SHA256_Init(ctx)
    return ctx
end

-- `len` bytes of `data` from byte `first` (default: all of it).
function _M.update(ctx, data, first, len)
    if first then
        C.SHA256_Update(ctx, ffi.cast(bytes_ptr, data) + (first - 1), len)
    else
        C.SHA256_Update(ctx, data, #data)
    end
end

function _M.save(ctx)
    return ffi_str(ctx, CTX_BYTES)
end

-- The stream as saved at byte `at` (1-based) of `states`, a string of saved states.
function _M.resume(states, at)
    local ctx = ffi_new(ctx_type)
    ffi.copy(ctx, ffi.cast(bytes_ptr, states) + (at - 1), CTX_BYTES)
    return ctx
end

-- The hex digest of what the stream took (the stream is done with).
function _M.finish(ctx)
    C.SHA256_Final(buf, ctx)
    return hex_of(ffi_str(buf, 32))
end

-- The raw 32-byte digest of `len` bytes of `data` from byte `first` (1-based), without
-- copying them into a new Lua string.
function _M.of_range(data, first, len)
    C.SHA256(ffi.cast(bytes_ptr, data) + (first - 1), len, buf)
    return ffi_str(buf, 32)
end

return _M
