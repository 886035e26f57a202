-- Management listener: /health (open), /config, /config/delta, /config/manifest,
-- /config/tenants (digest per tenant),
-- /metrics, /purge, /certificates, /acme-challenges (bearer token).
local cjson = require "cjson.safe"
local node = require "cdnctl.node"
local store = require "cdnctl.store"
local purge = require "cdnctl.purge"
local metrics = require "cdnctl.metrics"
local certs = require "cdnctl.certs"
local sha256 = require "cdnctl.sha256"
local respond = require "cdnctl.respond"

local ngx = ngx
local var = ngx.var
local match = string.match
local null = cjson.null
local io_open = io.open
local tostring = tostring

local _M = {}

local admin_hash

local function bearer()
    local authz = var.http_authorization
    return authz and match(authz, "^[Bb]earer%s+(%S+)%s*$")
end

local function is_admin(token)
    if not token then
        return false
    end
    admin_hash = admin_hash or sha256.hex(node.admin_token)
    return sha256.hex(token) == admin_hash
end

local function unauthorized()
    return respond.json(401, { error = "unauthorized" }, { ["WWW-Authenticate"] = "Bearer" })
end

local function health()
    local meta = store.meta()
    return respond.json(200, {
        status = "ok",
        mode = node.settings.mode,
        version = meta and meta.version or null,
    })
end

local function get_config()
    local meta = store.meta()
    return respond.json(200, {
        version = meta and meta.version or null,
        content = meta and meta.content or null,
        commit = meta and meta.commit or null,
        tenants = meta and meta.tenants or 0,
        applied_at = meta and meta.applied_at or null,
    })
end

-- The request body in memory, or nil and the file nginx wrote it to (not read here: the
-- apply reads it, off the event loop, see store.apply).
local function body_or_file()
    ngx.req.read_body()
    local data = ngx.req.get_body_data()
    if data then
        return data
    end
    local file = ngx.req.get_body_file()
    local f = file and io_open(file, "rb")
    if not f then
        return nil
    end
    local size = f:seek("end")
    f:close()
    if size == 0 then
        return nil
    end
    return nil, file
end

-- The request body, read from the file nginx wrote it to when it is not in memory.
local function read_body()
    local data, file = body_or_file()
    if data or not file then
        return data
    end
    local f = io_open(file, "rb")
    if not f then
        return nil
    end
    data = f:read("*a")
    f:close()
    return data
end

-- POST /config: a full bundle; POST /config/delta: a delta against the running version.
local function post_config(delta)
    local raw, file = body_or_file()
    if (not raw or raw == "") and not file then
        return respond.json(400, { error = "empty body: POST the resolved bundle JSON" })
    end
    local result, err, status = store.apply(raw, var.http_x_cdnctl_commit, file, delta)
    if not result then
        ngx.log(ngx.WARN, "cdnctl: config rejected: ", err)
        return respond.json(status or 400, { error = err })
    end
    ngx.log(ngx.NOTICE, "cdnctl: config ", result.version, " applied (", result.tenants,
        " tenants", delta and ", delta of " .. result.changed .. " changed, "
        .. result.removed .. " removed)" or ")")
    ngx.header["Content-Type"] = "application/json"
    ngx.header["Cache-Control"] = "no-store"
    ngx.say(cjson.encode(result))
    ngx.eof() -- (respond.json would end the handler)
    store.after_apply()
end

local function post_purge(token)
    local body = cjson.decode(read_body() or "")
    local kind, arg = purge.parse(body)
    if not kind then
        if not is_admin(token) then
            return unauthorized()
        end
        return respond.json(400, { error = arg })
    end
    local tenant = store.tenant_by_id(body.tenant)
    local allowed = is_admin(token)
    if not allowed and tenant and token then
        allowed = tenant.purge_tokens[sha256.hex(token)] == true
    end
    if not allowed then
        return unauthorized()
    end
    if not tenant then
        return respond.json(404, { error = "unknown tenant", tenant = body.tenant })
    end
    local purged, err, note = purge[kind](tenant, arg)
    if not purged then
        return respond.json(500, { error = "purge failed: " .. tostring(err) })
    end
    metrics.purged(tenant.id, kind)
    ngx.log(ngx.NOTICE, "cdnctl: purge ", kind, " for ", tenant.id, ": ", purged, " ",
        note or "")
    return respond.json(200, { tenant = tenant.id, kind = kind, purged = purged, note = note })
end

local function post_certificates()
    local body = cjson.decode(read_body() or "")
    local result, err, status = certs.change(body)
    if not result then
        ngx.log(ngx.WARN, "cdnctl: certificates rejected: ", err)
        return respond.json(status or 400, { error = err })
    end
    ngx.log(ngx.NOTICE, "cdnctl: certificates: ", result.set, " set, ", result.removed,
        " removed, ", result.certificates, " served")
    return respond.json(200, result)
end

local function post_challenges()
    local result, err = certs.change_challenges(cjson.decode(read_body() or ""))
    if not result then
        return respond.json(400, { error = err })
    end
    return respond.json(200, result)
end

function _M.handle()
    local method = ngx.req.get_method()
    local uri = var.uri
    if uri == "/health" and (method == "GET" or method == "HEAD") then
        return health()
    end
    local token = bearer()
    if uri == "/purge" and method == "POST" then
        return post_purge(token)
    end
    if not is_admin(token) then
        return unauthorized()
    end
    if uri == "/config" then
        if method == "GET" then
            return get_config()
        elseif method == "POST" then
            return post_config(false)
        end
        return respond.json(405, { error = "method not allowed" }, { Allow = "GET, POST" })
    elseif uri == "/config/delta" then
        if method == "POST" then
            return post_config(true)
        end
        return respond.json(405, { error = "method not allowed" }, { Allow = "POST" })
    elseif uri == "/config/manifest" and method == "GET" then
        -- The running manifest (its SHA-256 is the running version): what a delta is made
        -- against, for a controller that did not compile that version itself.
        local text = store.manifest()
        if not text then
            return respond.json(404, { error = "no manifest: no bundle applied yet, or applied "
                .. "by a cdnctl without deltas" })
        end
        ngx.header["Content-Type"] = "application/json"
        ngx.print(text)
        return
    elseif uri == "/config/tenants" and method == "GET" then
        ngx.header["Content-Type"] = "application/json"
        ngx.print(store.digests_json() or '{"version":null,"tenants":{}}')
        return
    elseif uri == "/certificates" then
        if method == "GET" then
            return respond.json(200, certs.list())
        elseif method == "POST" then
            return post_certificates()
        end
        return respond.json(405, { error = "method not allowed" }, { Allow = "GET, POST" })
    elseif uri == "/acme-challenges" and method == "POST" then
        return post_challenges()
    elseif uri == "/metrics" and method == "GET" then
        ngx.header["Content-Type"] = "text/plain; version=0.0.4"
        ngx.print(metrics.render(store.meta()), certs.metrics_text())
        return
    end
    return respond.json(404, { error = "not found" })
end

return _M
