-- Fetch adapter: choose shields (consistent hash on the cache key) or the origin, and the
-- balancer that connects to the chosen peers (with keepalive pools and per-tenant timeouts).
local balancer = require "ngx.balancer"
local store = require "cdnctl.store"
local node = require "cdnctl.node"
local dns = require "cdnctl.dns"
local policy = require "cdnctl.policy"
local cache_control = require "cdnctl.cache_control"
local interim = require "cdnctl.interim"

local ngx = ngx
local var = ngx.var
local state = ngx.shared.cdn_state
local exec = ngx.exec
local crc32 = ngx.crc32_long
local sort = table.sort
local concat = table.concat
local insert = table.insert
local gmatch = string.gmatch
local match = string.match
local sub = string.sub
local clear_header = ngx.req.clear_header
local tonumber = tonumber
local type = type
local ipairs = ipairs

local _M = {}

-- Rendezvous hashing: every edge orders the shields the same way for a given key, and
-- losing a shield only moves the keys it owned.
function _M.shield_order(shields, key)
    local scored = {}
    for i, shield in ipairs(shields) do
        scored[i] = { shield, crc32(shield .. "|" .. key) }
    end
    sort(scored, function(a, b)
        if a[2] == b[2] then
            return a[1] < b[1]
        end
        return a[2] > b[2]
    end)
    local out = {}
    for i, s in ipairs(scored) do
        out[i] = s[1]
    end
    return out
end

local function peers_for(hostports)
    local out = {}
    for _, hp in ipairs(hostports) do
        local host, port = match(hp, "^(.+):(%d+)$")
        local ips = dns.resolve(host)
        if ips then
            for _, ip in ipairs(ips) do
                insert(out, ip .. ":" .. port)
            end
        end
    end
    return out
end

-- $cdn_peers = "connect_s read_s ip:port ip:port ..."
local function set_peers(connect, read, peers)
    var.cdn_peers = connect .. " " .. read .. " " .. concat(peers, " ")
end

-- May HTTPS connections with this identity ("sni|verify") to these peers be pooled? Yes
-- when every peer address is owned by the identity: the first identity to connect to an
-- address owns it for as long as this node runs (cdn_state "tls:<ip:port>").
local function tls_pool_owned(peers, identity)
    for _, peer in ipairs(peers) do
        local key = "tls:" .. peer
        local owner = state:get(key)
        if owner == nil then
            local ok = state:add(key, identity)
            owner = ok and identity or state:get(key)
        end
        if owner ~= identity then
            return false
        end
    end
    return true
end

local function to_origin(tenant)
    local o = tenant.origin
    local ips, err = dns.resolve(o.host)
    if not ips then
        ngx.log(ngx.ERR, "cdnctl: cannot resolve origin ", o.host, " of ", tenant.id, ": ", err)
        return ngx.exit(502)
    end
    local peers = {}
    for i, ip in ipairs(ips) do
        peers[i] = ip .. ":" .. o.port
    end
    set_peers(o.connect_timeout, o.read_timeout, peers)
    if o.scheme ~= "https" then
        var.cdn_up_target = "http://cdn_upstream"
    elseif tls_pool_owned(peers, o.host .. (o.tls_verify and "|verify" or "|noverify")) then
        var.cdn_up_target = "https://cdn_upstream_tls_pooled"
    else
        var.cdn_up_target = "https://cdn_upstream_tls"
    end
    var.cdn_up_host = o.host_header
    var.cdn_up_sni = o.host
    -- The origin's credentials replace the client's; without them the client's go on.
    local auth = o.basic_auth
    var.cdn_up_auth = type(auth) == "table" and auth.authorization or var.http_authorization or ""
    var.cdn_up_uri = o.base_path .. (policy.uri_of_key(var.http_x_cdnctl_key or "") or "/")
    if interim.marked(tenant.id) then
        -- An origin that sends interim responses: through the relay (cdnctl.interim).
        var.cdn_relay = o.scheme .. " " .. o.connect_timeout .. " " .. o.read_timeout .. " "
            .. o.host .. " " .. (o.tls_verify and "verify" or "noverify") .. " "
            .. concat(peers, " ")
        return exec("@origin_relay")
    end
    if o.scheme == "https" and not o.tls_verify then
        return exec("@origin_noverify")
    end
    return exec("@origin_verify")
end

-- Fields the client's Connection header named are hop-by-hop (RFC 9110 §7.6.1): the edge
-- hands that header over as X-Cdnctl-Conn (nginx itself replaces Connection).
local function drop_connection_listed()
    for _, name in ipairs(cache_control.names(var.http_x_cdnctl_conn)) do
        if name ~= "host" and sub(name, 1, 9) ~= "x-cdnctl-" then
            clear_header(name)
        end
    end
end

-- Adapter rewrite phase.
function _M.route()
    if var.http_x_cdnctl_conn then
        drop_connection_listed()
    end
    -- The edge revalidates an expired response: through one more hop (cdnctl.revalidate).
    if var.http_x_cdnctl_cache == "EXPIRED" and not var.http_x_cdnctl_revalidating
        and (var.http_if_none_match or var.http_if_modified_since) then
        return exec("@revalidate")
    end
    local tenant = store.tenant_by_id(var.http_x_cdnctl_tenant)
    if not tenant then
        return ngx.exit(404)
    end
    var.cdn_tenant = tenant.id
    local settings = node.settings
    if settings.mode == "edge" and tenant.shield == true and #settings.shields > 0 then
        local order = _M.shield_order(settings.shields, var.http_x_cdnctl_key or "")
        local peers = peers_for(order)
        if #peers > 0 then
            set_peers(settings.shield_connect_timeout, tenant.origin.read_timeout, peers)
            var.cdn_up_host = var.http_host
            var.cdn_up_auth = var.http_authorization or ""
            var.cdn_up_uri = policy.uri_of_key(var.http_x_cdnctl_key or "") or "/"
            return exec("@shield")
        end
    end
    return to_origin(tenant)
end

-- @refetch: the 304 of a revalidation changed the stored response; fetch it whole.
function _M.refetch()
    clear_header("If-None-Match")
    clear_header("If-Modified-Since")
    return _M.route()
end

-- @fallback: no shield answered; go to the origin directly.
function _M.fallback()
    local tenant = store.tenant_by_id(var.cdn_tenant)
    if not tenant then
        return ngx.exit(502)
    end
    ngx.log(ngx.WARN, "cdnctl: no shield reachable for ", tenant.id, ", fetching from origin")
    return to_origin(tenant)
end

-- balancer_by_lua: next peer on every try.
function _M.balance()
    local ctx = ngx.ctx
    local peers = ctx.cdn_peers
    if not peers then
        peers = {}
        local raw = var.cdn_peers
        local connect, read, rest = match(raw, "^(%S+) (%S+) (.*)$")
        for hp in gmatch(rest or "", "%S+") do
            local ip, port = match(hp, "^(.+):(%d+)$")
            insert(peers, { ip, tonumber(port) })
        end
        ctx.cdn_peers = peers
        ctx.cdn_connect = tonumber(connect) or 5
        ctx.cdn_read = tonumber(read) or 30
        ctx.cdn_try = 0
        if #peers == 0 then
            return ngx.exit(502)
        end
        if #peers > 1 then
            balancer.set_more_tries(#peers - 1)
        end
    end
    local try = ctx.cdn_try + 1
    ctx.cdn_try = try
    local peer = peers[(try - 1) % #peers + 1]
    balancer.set_timeouts(ctx.cdn_connect, ctx.cdn_read, ctx.cdn_read)
    local ok, err = balancer.set_current_peer(peer[1], peer[2])
    if not ok then
        ngx.log(ngx.ERR, "cdnctl: set_current_peer failed: ", err)
        return ngx.exit(502)
    end
end

return _M
