-- Public listener, header filter: the Age of a response served from the cache. (Internal
-- headers are hidden and X-Cache-Status / X-Request-ID / Cache-Control set by nginx.conf.)
local ngx = ngx
local var = ngx.var
local header = ngx.header
local tonumber = tonumber
local time = ngx.time

local _M = {}

local AGE_STATUSES = { HIT = true, STALE = true, UPDATING = true, REVALIDATED = true }

function _M.header_filter()
    -- $upstream_cache_status first (a field of the upstream state): $upstream_http_* is a
    -- scan of the upstream response's headers, only worth it when an Age is due.
    if AGE_STATUSES[var.upstream_cache_status] then
        local stored = var.upstream_http_x_cdnctl_stored
        if stored then
            local age = time() - (tonumber(stored) or 0)
            header["Age"] = age > 0 and age or 0
        end
    end
end

return _M
