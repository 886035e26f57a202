-- Public listener, header filter: the Age of a response served from the cache, 504 for a
-- stale one that cannot be revalidated. (Internal headers are hidden and X-Cache-Status /
-- X-Request-ID / Cache-Control set by nginx.conf.)
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
    local cache_status = var.upstream_cache_status
    if AGE_STATUSES[cache_status] then
        local stored = var.upstream_http_x_cdnctl_stored
        if stored then
            local age = time() - (tonumber(stored) or 0)
            header["Age"] = age > 0 and age or 0
        end
    elseif cache_status == "EXPIRED" and ngx.status == 502 then
        -- A stale copy it may not serve (must-revalidate, past its stale-if-error) and no
        -- origin to revalidate with: a cache answers 504 (RFC 9111 §5.2.2.2).
        ngx.status = 504
    end
end

return _M
