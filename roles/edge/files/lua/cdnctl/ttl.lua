-- Fetch adapter, header filter (a cache MISS, never a HIT): decide whether and how long the
-- edge cache keeps this response, as an RFC 9111 shared cache (plus RFC 9213 targeted
-- fields and RFC 5861 stale-*), and tell the edge's proxy_cache through a rewritten
-- Cache-Control (max-age + the allowed stale windows). The origin's own Cache-Control and
-- Expires travel in internal headers and are restored for the client by nginx.conf.
local store = require "cdnctl.store"
local node = require "cdnctl.node"
local policy = require "cdnctl.policy"
local purge = require "cdnctl.purge"
local cache_control = require "cdnctl.cache_control"
local revalidate = require "cdnctl.revalidate"
local interim = require "cdnctl.interim"

local ngx = ngx
local var = ngx.var
local header = ngx.header
local find = string.find
local match = string.match
local lower = string.lower
local sub = string.sub
local type = type
local tonumber = tonumber
local floor = math.floor
local max = math.max
local min = math.min
local concat = table.concat
local ipairs = ipairs
local parse_http_time = ngx.parse_http_time
local get_method = ngx.req.get_method
local list = cache_control.list
local dictionary = cache_control.dictionary
local seconds = cache_control.seconds
local null = ngx.null

local _M = {}

-- RFC 9110 §15.1 heuristically cacheable codes: the only ones a TTL the origin did not
-- give (heuristic, default_ttl, a rule, respect_origin: false) may apply to. 304 is the
-- answer to the edge's own revalidation: its TTL refreshes the stored response.
local HEURISTIC_STATUS = {
    [200] = true, [203] = true, [204] = true, [206] = true, [300] = true, [301] = true,
    [304] = true, [308] = true, [404] = true, [405] = true, [410] = true, [414] = true,
    [501] = true,
}

-- Hop-by-hop fields (RFC 9110 §7.6.1) nginx itself may pass on.
local HOP_BY_HOP = { "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Upgrade" }
-- Never removed because a Connection header names them: the framing nginx relies on.
local FRAMING = { ["content-length"] = true, ["transfer-encoding"] = true }

local SAFE_METHODS = { GET = true, HEAD = true, OPTIONS = true, TRACE = true }

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

-- An HTTP-date (RFC 9110 §5.6.7) as a time, or nil: nginx's parser accepts any zone
-- name, so the zone (IMF-fixdate, RFC 850) must be GMT unless it is the asctime form.
local function http_date(value)
    if type(value) ~= "string" then
        return nil
    end
    local at = parse_http_time(value)
    if at and (find(value, " GMT$") or find(value, "^%a%a%a %a%a%a [ %d]%d %d%d:%d%d:%d%d %d%d%d%d$")) then
        return at
    end
    return nil
end

-- The directives this cache obeys: the tenant's targeted field, then CDN-Cache-Control
-- (both RFC 8941 dictionaries; an invalid one is ignored whole), then Surrogate-Control,
-- then Cache-Control. `targeted` is true when Cache-Control and Expires do not count.
function _M.directives(cache, h)
    local field = cache.targeted_field
    if field and field ~= null then
        local d = dictionary(join(h[field]))
        if d then
            return d, true
        end
    end
    local d = dictionary(join(h["CDN-Cache-Control"]))
    if d then
        return d, true
    end
    local surrogate = join(h["Surrogate-Control"])
    if surrogate then
        return list(surrogate), true
    end
    return list(join(h["Cache-Control"])), false
end

-- Freshness lifetime the origin gave explicitly (RFC 9111 §4.2.1), or nil.
function _M.explicit_lifetime(d, targeted, expires, date)
    local s = seconds(d, "s-maxage") or seconds(d, "max-age")
    if s then
        return s
    end
    if targeted or expires == nil then
        return nil
    end
    -- Two Expires, or one that is not an HTTP-date in GMT ("0", "-1", another zone):
    -- already expired (RFC 9111 §5.3). Measured against the origin's Date, not our clock.
    local at = type(expires) == "string" and http_date(expires)
    if not at then
        return 0
    end
    return max(0, at - date)
end

-- RFC 9111 §4.2.2: 10 % of the time since Last-Modified, at most the tenant's cap.
local function heuristic(cache, last_modified, date)
    if cache.heuristic ~= true then
        return nil
    end
    local lm = http_date(first(last_modified))
    if not lm or lm > date then
        return nil
    end
    return min(floor((date - lm) / 10), cache.heuristic_max or 86400)
end

-- May a shared cache reuse this response for a request carrying Authorization (§3.5)?
local function shareable_with_authorization(d)
    return d["public"] ~= nil or d["s-maxage"] ~= nil or d["must-revalidate"] ~= nil
end

-- The TTL the edge stores the response for (0: not stored), the stale windows, and
-- whether a response with no TTL is stored to be revalidated on every use (no-cache).
-- `r` holds what the response and request say (see header_filter).
function _M.decide(tenant, rule, r)
    local cache = tenant.cache
    local d, targeted = _M.directives(cache, r.headers)
    if r.authorization and not shareable_with_authorization(d) then
        return 0
    end
    if list(join(r.headers["Vary"]))["*"] ~= nil then
        return 0 -- RFC 9111 §4.1: never matches a later request
    end
    if r.set_cookie and not (rule and rule.cache_set_cookie) then
        return 0
    end
    local status = r.status
    local ttl
    if rule and rule.ttl then
        ttl = HEURISTIC_STATUS[status] and rule.ttl or 0
    elseif not cache.respect_origin then
        ttl = HEURISTIC_STATUS[status] and cache.default_ttl or 0
    else
        -- Qualified private="f" / no-cache="f" are read unqualified (RFC 9111 §5.2.2.4
        -- allows it).
        if d["no-store"] ~= nil or d["private"] ~= nil then
            return 0
        end
        if d["no-cache"] ~= nil then
            -- Stored, but revalidated before every use (§5.2.2.4) and never served stale;
            -- without a validator a revalidation is a full fetch: not worth storing.
            return 0, 0, 0, r.validator
        end
        local now = r.now
        local date = http_date(r.date) or now
        local lifetime = _M.explicit_lifetime(d, targeted, r.expires, date)
        if lifetime == nil then
            if not HEURISTIC_STATUS[status] then
                return 0
            end
            lifetime = heuristic(cache, r.last_modified, date) or cache.default_ttl
        end
        ttl = lifetime - r.initial_age
        if ttl <= 0 then
            -- Stale on arrival (an old Age, or a Date a second behind our clock for a
            -- max-age=1): with a validator, stored to be revalidated on every use, so the
            -- next request asks the origin with If-None-Match instead of fetching it whole.
            -- (Not for a 304: marked no-store as before, it leaves nginx to take the
            -- freshness again from the stored response it refreshes.)
            return 0, 0, 0, r.validator and status ~= 304
        end
    end
    if ttl <= 0 then
        return 0
    end
    -- must-revalidate, proxy-revalidate and s-maxage forbid serving stale (§5.2.2.2,
    -- .8, .10); otherwise the origin's RFC 5861 windows and the tenant's, the longer.
    if d["must-revalidate"] ~= nil or d["proxy-revalidate"] ~= nil or d["s-maxage"] ~= nil then
        return ttl, 0, 0
    end
    local swr = max(cache.stale_while_revalidate, seconds(d, "stale-while-revalidate") or 0)
    local sie = max(cache.stale_if_error, seconds(d, "stale-if-error") or 0)
    return ttl, swr, sie
end

-- RFC 9111 §4.2.3: the response's age when it reached us (origin or shield Age, or the
-- time since its Date, whichever is more).
local function initial_age(age, date, now)
    local value = tonumber(match(first(age) or "", "^%d+$")) or 0
    local at = http_date(date)
    if at and now - at > value then
        return now - at
    end
    return value
end

-- Hop-by-hop fields of the origin's response are neither stored nor served.
local function drop_hop_by_hop()
    for _, name in ipairs(cache_control.names(var.upstream_http_connection)) do
        if not FRAMING[name] then
            header[name] = nil
        end
    end
    for _, name in ipairs(HOP_BY_HOP) do
        if header[name] ~= nil and not (name == "Upgrade" and ngx.status == 101) then
            header[name] = nil
        end
    end
end

-- The path of a same-origin URI reference (Location / Content-Location), or nil.
local function same_origin_path(ref, host)
    if type(ref) ~= "string" then
        return nil
    end
    if sub(ref, 1, 1) == "/" and sub(ref, 2, 2) ~= "/" then
        return ref
    end
    local ref_host, path = match(ref, "^[hH][tT][tT][pP][sS]?://([^/?#]+)(.*)$")
    if ref_host and host and lower(ref_host) == lower(host) then
        return path ~= "" and path or "/"
    end
    return nil
end

-- RFC 9111 §4.4: a successful unsafe request invalidates what is stored for its URI and
-- for same-origin Location / Content-Location.
local function invalidate(tenant)
    local urls = { policy.uri_of_key(var.http_x_cdnctl_key or "") or "/" }
    local host = var.http_host
    for _, name in ipairs({ "Location", "Content-Location" }) do
        local path = same_origin_path(first(header[name]), host)
        if path then
            urls[#urls + 1] = path
        end
    end
    purge.urls(tenant, urls)
end

function _M.header_filter()
    local status = ngx.status
    if status < 200 and status ~= 101 then
        -- nginx took an interim response for the final one (cdnctl.interim).
        return interim.seen(var.cdn_tenant, var.http_x_request_id or "")
    end
    -- The edge holds an expired copy and the origin failed: drop the connection so the
    -- edge's proxy_cache treats it as an upstream error and serves stale within the
    -- stale-if-error window stored with it (nginx applies it to errors, not to 5xx).
    if status >= 500 and var.http_x_cdnctl_cache == "EXPIRED" then
        return ngx.exit(ngx.ERROR)
    end
    local tenant = store.tenant_by_id(var.cdn_tenant)
    if not tenant then
        return
    end
    drop_hop_by_hop()
    local method = get_method()
    if not SAFE_METHODS[method] and status >= 200 and status < 400 then
        invalidate(tenant)
    end
    local rule_index = tonumber(var.http_x_cdnctl_rule or "")
    local rule = rule_index and tenant.compiled_rules[rule_index]
    local cache_control = join(header["Cache-Control"])
    local expires = header["Expires"]
    local date = first(header["Date"])
    local now = ngx.time()
    local age = initial_age(header["Age"], date, now)
    local etag = header["ETag"]
    local last_modified = header["Last-Modified"]
    local ttl, swr, sie, revalidate_each_use = _M.decide(tenant, rule, {
        headers = header,
        status = status,
        validator = etag ~= nil or last_modified ~= nil,
        authorization = var.http_authorization ~= nil,
        set_cookie = header["Set-Cookie"] ~= nil,
        expires = expires,
        date = date,
        last_modified = last_modified,
        initial_age = age,
        now = now,
    })
    local cache = tenant.cache
    local field = cache.targeted_field
    if node.settings.mode == "edge" and cache.targeted_field_to_client ~= true then
        -- Targeted at this CDN, not at the client; a shield keeps them for its edges.
        if field and field ~= null then
            header[field] = nil
        end
        header["Surrogate-Control"] = nil
    end
    -- What a 304 would update is compared with what is stored (cdnctl.revalidate).
    local stored_key = (var.http_x_cdnctl_key or "") .. "|" .. (var.http_range or "")
    if status == 304 then
        if var.http_x_cdnctl_revalidating and revalidate.changes(stored_key, revalidate.hashes()) then
            ngx.status = revalidate.REFETCH
            header["Content-Length"] = 0
            return
        end
    elseif ttl > 0 or revalidate_each_use then
        revalidate.remember(stored_key, revalidate.hashes())
    end
    header["X-Cdnctl-Origin-CC"] = cache_control
    header["X-Cdnctl-Origin-Expires"] = first(expires)
    header["Expires"] = nil
    header["X-Accel-Expires"] = nil
    header["Age"] = age > 0 and age or nil
    if ttl > 0 then
        -- Stored with the object and parsed again by nginx on every HIT: no zero windows.
        local cc = "max-age=" .. ttl
        if swr > 0 then
            cc = cc .. ", stale-while-revalidate=" .. swr
        end
        if sie > 0 then
            cc = cc .. ", stale-if-error=" .. sie
        end
        header["Cache-Control"] = cc
        header["X-Cdnctl-Stored"] = now - age
    elseif revalidate_each_use then
        -- Stored already expired (an absolute X-Accel-Expires in the past; nginx 1.22
        -- reads max-age=0 as "do not store"), so every use is an EXPIRED revalidation.
        header["Cache-Control"] = nil
        header["X-Accel-Expires"] = "@1"
        header["X-Cdnctl-Stored"] = now - age
    else
        header["Cache-Control"] = "no-store"
    end
end

return _M
