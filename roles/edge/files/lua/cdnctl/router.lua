-- Public listener, rewrite phase: Host -> tenant, method and rate limits, cache key.
local store = require "cdnctl.store"
local policy = require "cdnctl.policy"
local ratelimit = require "cdnctl.ratelimit"
local respond = require "cdnctl.respond"
local node = require "cdnctl.node"
local request_id = require "cdnctl.request_id"
local certs = require "cdnctl.certs"

local ngx = ngx
local var = ngx.var
local lower = string.lower
local find = string.find
local sub = string.sub
local byte = string.byte
local get_uri_args = ngx.req.get_uri_args
local get_method = ngx.req.get_method
local exec = ngx.exec


local _M = {}

-- Lowercase, strip the port and a trailing dot. Only the Host header counts: never the
-- request line's absolute URI, never X-Forwarded-Host.
function _M.normalise_host(raw)
    if not raw or raw == "" then
        return ""
    end
    local host = lower(raw)
    if byte(host, 1) == 91 then -- "[v6]:port"
        local close = find(host, "]", 1, true)
        host = close and sub(host, 1, close) or host
    else
        local colon = find(host, ":", 1, true)
        if colon then
            host = sub(host, 1, colon - 1)
        end
    end
    if byte(host, -1) == 46 then
        host = sub(host, 1, -2)
    end
    return host
end

function _M.route()
    var.cdn_request_id = request_id.of(var.http_x_request_id)
    local host = _M.normalise_host(var.http_host)
    local tenant = store.tenant_for_host(host)
    if not tenant then
        return respond.json(404, { error = "unknown host", host = host })
    end
    local id = tenant.id
    var.cdn_tenant = id
    local tls = tenant.tls
    if tls and tls.redirect_http == true and var.https == "" then
        return certs.redirect_https(host)
    end

    local method = get_method()
    if not tenant.method_set[method] then
        return respond.json(405, { error = "method not allowed", method = method },
            { Allow = tenant.allow_header })
    end
    if tenant.rate and node.settings.mode == "edge" then
        local wait = ratelimit.check(id, var.binary_remote_addr, tenant.rate)
        if wait then
            return respond.json(429, { error = "rate limit exceeded" },
                { ["Retry-After"] = wait })
        end
    end

    local path = policy.normalise_path(var.uri)
    local query = var.args and policy.query(tenant, get_uri_args(100)) or ""
    var.cdn_cache_key = policy.cache_key(id, tenant.purge_generation, path, query)

    local index, rule = policy.match_rule(tenant, path)
    if index then
        var.cdn_rule = index
    end
    local cacheable = method == "GET" or method == "HEAD"
    if not cacheable or (rule and rule.bypass) then
        var.cdn_bypass = "1"
    elseif var.http_range and method == "GET" then
        return exec("@slice")
    end
end

return _M
