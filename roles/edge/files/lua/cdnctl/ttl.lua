-- Fetch adapter, header filter: decide how long the edge cache keeps this response and
-- tell the edge's proxy_cache through a rewritten Cache-Control (max-age + the tenant's
-- stale-while-revalidate / stale-if-error). The origin's own Cache-Control and Expires
-- travel in internal headers and are restored for the client by edge_headers.
local store = require "cdnctl.store"

local ngx = ngx
local var = ngx.var
local header = ngx.header
local lower = string.lower
local match = string.match
local find = string.find
local type = type
local tonumber = tonumber
local concat = table.concat
local parse_http_time = ngx.parse_http_time

local _M = {}

local CACHEABLE_STATUS = {
    [200] = true, [203] = true, [204] = true, [206] = true, [300] = true, [301] = true,
    [302] = true, [304] = true, [307] = true, [308] = true, [404] = true, [410] = true,
}

local function first(value)
    if type(value) == "table" then
        return value[1]
    end
    return value
end

local function join(value)
    if type(value) == "table" then
        return concat(value, ", ")
    end
    return value
end

-- Seconds the origin allows shared caches to keep the response, or nil if it did not say.
function _M.origin_ttl(cache_control, expires, age)
    local ttl
    if cache_control then
        local cc = lower(cache_control)
        if find(cc, "no-store", 1, true) or find(cc, "private", 1, true)
            or find(cc, "no-cache", 1, true)
        then
            return 0
        end
        ttl = tonumber(match(cc, "s%-maxage%s*=%s*\"?(%d+)"))
            or tonumber(match(cc, "max%-age%s*=%s*\"?(%d+)"))
    end
    if not ttl and expires then
        local at = parse_http_time(expires)
        ttl = at and at - ngx.time() or 0
    end
    if ttl and age then
        ttl = ttl - (tonumber(age) or 0)
    end
    if ttl and ttl < 0 then
        ttl = 0
    end
    return ttl
end

function _M.compute(tenant, rule, status, cache_control, expires, age, set_cookie)
    if not CACHEABLE_STATUS[status] then
        return 0
    end
    if set_cookie and not (rule and rule.cache_set_cookie) then
        return 0
    end
    if rule and rule.ttl then
        return rule.ttl
    end
    local cache = tenant.cache
    if cache.respect_origin then
        local ttl = _M.origin_ttl(cache_control, expires, age)
        if ttl then
            return ttl
        end
    end
    return cache.default_ttl
end

function _M.header_filter()
    -- The edge holds an expired copy and the origin failed: drop the connection so the
    -- edge's proxy_cache treats it as an upstream error and serves stale within the
    -- tenant's stale-if-error window (nginx applies that window to errors, not to 5xx).
    if ngx.status >= 500 and var.http_x_cdnctl_cache == "EXPIRED" then
        return ngx.exit(ngx.ERROR)
    end
    local tenant = store.tenant_by_id(var.cdn_tenant)
    if not tenant then
        return
    end
    local rule_index = tonumber(var.http_x_cdnctl_rule or "")
    local rule = rule_index and tenant.compiled_rules[rule_index]
    local cache_control = join(header["Cache-Control"])
    local expires = first(header["Expires"])
    local ttl = _M.compute(tenant, rule, ngx.status, cache_control, expires,
        first(header["Age"]), header["Set-Cookie"] ~= nil)
    header["X-Cdnctl-Origin-CC"] = cache_control
    header["X-Cdnctl-Origin-Expires"] = expires
    header["Expires"] = nil
    header["X-Accel-Expires"] = nil
    if ttl > 0 then
        -- Stored with the object and parsed again by nginx on every HIT: no zero windows.
        local cache = tenant.cache
        local cc = "max-age=" .. ttl
        if cache.stale_while_revalidate > 0 then
            cc = cc .. ", stale-while-revalidate=" .. cache.stale_while_revalidate
        end
        if cache.stale_if_error > 0 then
            cc = cc .. ", stale-if-error=" .. cache.stale_if_error
        end
        header["Cache-Control"] = cc
        header["X-Cdnctl-Stored"] = ngx.time()
    else
        header["Cache-Control"] = "no-store"
    end
end

return _M
