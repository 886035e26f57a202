-- Small filesystem helpers: atomic private writes (tmp + rename, mode 0600), unlink.
local ffi = require "ffi"

local io_open = io.open
local os_rename = os.rename
local os_remove = os.remove
local tostring = tostring

ffi.cdef [[
int chmod(const char *path, unsigned int mode);
]]
local C = ffi.C

local _M = {}

-- Write `data` to `path` atomically; the file is 0600 from before any byte is written.
function _M.write_private(path, data)
    local tmp = path .. ".tmp"
    local f, err = io_open(tmp, "wb")
    if not f then
        return nil, "cannot create " .. tmp .. ": " .. tostring(err)
    end
    if C.chmod(tmp, 384) ~= 0 then -- 0600
        f:close()
        os_remove(tmp)
        return nil, "cannot chmod " .. tmp
    end
    local ok, werr = f:write(data)
    if ok then
        ok, werr = f:flush()
    end
    f:close()
    if not ok then
        os_remove(tmp)
        return nil, "cannot write " .. tmp .. ": " .. tostring(werr)
    end
    local renamed, rerr = os_rename(tmp, path)
    if not renamed then
        os_remove(tmp)
        return nil, "cannot rename " .. tmp .. ": " .. tostring(rerr)
    end
    return true
end

-- Make the file at `src` (already holding the data) the 0600 file at `path`; false when
-- they are on different filesystems or the move fails otherwise (nothing is changed).
function _M.move_private(src, path)
    if C.chmod(src, 384) ~= 0 then -- 0600
        return false
    end
    return os_rename(src, path) and true or false
end

-- true if the file existed and was removed.
function _M.unlink(path)
    return os_remove(path) and true or false
end

return _M
