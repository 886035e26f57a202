-- Public listener, log phase: per-tenant metrics and the purge index of stored keys.
local metrics = require "cdnctl.metrics"
local purge = require "cdnctl.purge"
local node = require "cdnctl.node"

local ngx = ngx
local var = ngx.var
local tonumber = tonumber
local gmatch = string.gmatch
local match = string.match

local _M = {}

local STORING = { MISS = true, EXPIRED = true, REVALIDATED = true }

local function upstream_seconds(raw)
    if not raw then
        return nil
    end
    local total
    for part in gmatch(raw, "[%d%.]+") do
        total = (total or 0) + tonumber(part)
    end
    return total
end

-- "502, 200" after a retry: the last answer is the one served (or stored).
local function last_status(raw)
    return raw and tonumber(match(raw, "(%d%d%d)[^%d]*$"))
end

function _M.log()
    local tenant = var.cdn_tenant
    if tenant == "" then
        tenant = "_unknown"
    end
    local cache_status = var.upstream_cache_status
    local origin_seconds, origin_status
    if cache_status ~= "HIT" then
        -- A cache HIT has no upstream state: no address, no response time, no status.
        if not cache_status then
            cache_status = var.upstream_addr and "BYPASS" or "NONE"
        end
        origin_seconds = upstream_seconds(var.upstream_response_time)
        origin_status = last_status(var.upstream_status)
    end
    metrics.record(tenant, ngx.status, cache_status, tonumber(var.bytes_sent) or 0,
        origin_seconds, origin_status)

    if STORING[cache_status] and var.cdn_bypass ~= "1" then
        local cc = var.upstream_http_cache_control
        local ttl = cc and tonumber(match(cc, "^max%-age=(%d+)"))
        local keep
        if ttl and ttl > 0 then
            local swr = tonumber(match(cc, "stale%-while%-revalidate=(%d+)")) or 0
            local sie = tonumber(match(cc, "stale%-if%-error=(%d+)")) or 0
            keep = ttl + (swr > sie and swr or sie) + 60
        elseif not cc and var.upstream_http_x_accel_expires then
            -- Stored to be revalidated on every use (no-cache): it lives while it is used.
            keep = node.settings.cache_inactive_seconds
        end
        if keep then
            local tags = var.upstream_http_surrogate_key
            local cache_tag = var.upstream_http_cache_tag
            if cache_tag then
                tags = tags and (tags .. " " .. cache_tag) or cache_tag
            end
            purge.remember(tenant, var.cdn_cache_key, tags, keep)
        end
    end
end

return _M
