-- Per-tenant, per-client-IP rate limit: GCRA (a token bucket kept as one timestamp) in a
-- shared dict, so all workers share the budget.
local ngx = ngx
local ceil = math.ceil

local dict = ngx.shared.cdn_ratelimit

local _M = {}

-- Returns nil when allowed, else the seconds to wait (Retry-After).
function _M.check(tenant_id, client, rate)
    local interval = 1 / rate.requests_per_second
    local tolerance = interval * rate.burst
    local key = tenant_id .. "|" .. client
    local now = ngx.now()
    local tat = dict:get(key) or now
    if tat < now then
        tat = now
    end
    local new_tat = tat + interval
    local wait = new_tat - now - tolerance - interval
    if wait > 0 then
        return ceil(wait)
    end
    dict:set(key, new_tat, ceil(new_tat - now) + 1)
    return nil
end

return _M
