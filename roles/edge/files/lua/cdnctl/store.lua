-- Running config: two shared-dict generations (even/odd) and one "current generation" key.
--
-- Applying a bundle writes the inactive dict completely, then flips cdn_state["gen"]; no
-- reload. Each worker keeps an lrucache of prepared tenants keyed by generation, so a
-- request costs one shared-dict get (the generation) on a warm cache and never decodes JSON.
local cjson = require "cjson.safe"
local lrucache = require "resty.lrucache"
local node = require "cdnctl.node"
local bundle = require "cdnctl.bundle"
local fsutil = require "cdnctl.fsutil"
local policy = require "cdnctl.policy"
local purge = require "cdnctl.purge"

local ngx = ngx
local pairs = pairs
local ipairs = ipairs
local type = type
local assert = assert
local tostring = tostring
local find = string.find
local pcall = pcall
local sub = string.sub
local null = cjson.null

local state = ngx.shared.cdn_state
local dicts = { [0] = ngx.shared.cdn_config_a, [1] = ngx.shared.cdn_config_b }

local _M = {}

local lru = assert(lrucache.new(20000))

local STATE_FILE = "/bundle.json"

local function or_null(v)
    if v == nil then
        return null
    end
    return v
end

function _M.generation()
    return state:get("gen")
end

function _M.tenant_by_id(id, gen)
    gen = gen or state:get("gen")
    if not gen or not id then
        return nil
    end
    local ck = gen .. "#" .. id
    local t = lru:get(ck)
    if t then
        return t
    end
    local raw = dicts[gen % 2]:get("t:" .. id)
    if not raw then
        return nil
    end
    t = policy.prepare(cjson.decode(raw))
    lru:set(ck, t)
    return t
end

-- Exact host first, then the wildcard of its parent domain (a.b.test -> b.test).
function _M.tenant_for_host(host)
    local gen = state:get("gen")
    if not gen then
        return nil
    end
    local ck = gen .. "|" .. host
    local t = lru:get(ck)
    if t ~= nil then
        return t or nil
    end
    local dict = dicts[gen % 2]
    local id = dict:get("h:" .. host)
    if not id then
        local dot = find(host, ".", 1, true)
        if dot then
            id = dict:get("w:" .. sub(host, dot + 1))
        end
    end
    t = id and _M.tenant_by_id(id, gen) or false
    lru:set(ck, t)
    return t or nil
end

-- The JSON {"version", "tenants": {id: digest}} of the running generation, or nil.
function _M.digests_json()
    local gen = state:get("gen")
    return gen and dicts[gen % 2]:get("digests") or nil
end

function _M.meta()
    local gen = state:get("gen")
    if not gen then
        return nil
    end
    return cjson.decode(dicts[gen % 2]:get("meta") or "null")
end

-- In the admin handler, yield to the event loop now and then so a large bundle does not
-- stall this worker's other requests (init_by_lua cannot yield, and need not).
local YIELD_EVERY = 2000

local function loader(dict)
    local can_yield = ngx.get_phase() == "content"
    local written = 0
    return function(key, value)
        local ok, err = dict:safe_set(key, value)
        if not ok then
            return nil, "config dict: " .. tostring(err)
        end
        written = written + 1
        if can_yield and written % YIELD_EVERY == 0 then
            ngx.sleep(0.001) -- sleep(0) does not yield without OpenResty's nginx patch
        end
        return true
    end
end

local function load_into_dicts(b, meta)
    local gen = (state:get("gen") or 0) + 1
    local dict = dicts[gen % 2]
    dict:flush_all()
    dict:flush_expired()
    local put = loader(dict)
    local ok, err
    for host, id in pairs(b.hosts) do
        ok, err = put("h:" .. host, id)
        if not ok then
            return nil, err
        end
    end
    for domain, id in pairs(b.wildcards) do
        ok, err = put("w:" .. domain, id)
        if not ok then
            return nil, err
        end
    end
    local count = 0
    local digests = {}
    for id, t in pairs(b.tenants) do
        ok, err = put("t:" .. id, cjson.encode(t))
        if not ok then
            return nil, err
        end
        digests[id] = t.digest or null
        count = count + 1
    end
    meta.tenants = count
    dict:safe_set("meta", cjson.encode(meta))
    -- What this node runs, tenant by tenant: `cdnctl plan --edge` diffs it with a compile.
    ok, err = dict:safe_set("digests", cjson.encode({ version = meta.version, tenants = digests }))
    if not ok then
        return nil, "config dict: " .. tostring(err)
    end
    state:set("gen", gen)
    return count
end

-- Ids of the tenants the generation `gen` served that bundle `b` no longer has.
local function removed_tenants(gen, b)
    local removed = {}
    if not gen then
        return removed
    end
    for _, key in ipairs(dicts[gen % 2]:get_keys(0)) do
        if sub(key, 1, 2) == "t:" and b.tenants[sub(key, 3)] == nil then
            removed[#removed + 1] = sub(key, 3)
        end
    end
    return removed
end

-- Validate, persist (tmp + rename, 0600), then swap. Returns the response document, or
-- nil, error, HTTP status.
local function apply_now(raw, commit)
    local b, err = cjson.decode(raw)
    if not b then
        return nil, "invalid JSON: " .. tostring(err)
    end
    local ok, verr = bundle.validate(b)
    if not ok then
        return nil, verr
    end
    local previous = _M.meta()
    ngx.update_time()
    local meta = { version = b.version, commit = or_null(commit), applied_at = ngx.now() }
    local head = cjson.encode({ commit = or_null(commit), applied_at = meta.applied_at })
    local doc = sub(head, 1, -2) .. ',"bundle":' .. raw .. "}"
    local written, werr = fsutil.write_private(node.settings.state_dir .. STATE_FILE, doc)
    if not written then
        return nil, "persist failed: " .. werr, 500
    end
    local previous_gen = state:get("gen")
    local count, lerr = load_into_dicts(b, meta)
    if not count then
        return nil, lerr, 500
    end
    -- After the swap (the old generation no longer serves): a removed tenant's cache is
    -- purged, so a tenant added back later starts empty.
    local removed = removed_tenants(previous_gen, b)
    local purged, perr = purge.forget(removed)
    if not purged then
        ngx.log(ngx.ERR, "cdnctl: cannot persist purge generations: ", perr)
    end
    return {
        version = b.version,
        previous = previous and previous.version or null,
        tenants = count,
    }
end

function _M.apply(raw, commit)
    if commit ~= nil and (type(commit) ~= "string" or not find(commit, "^[%w._/-]+$")) then
        return nil, "X-Cdnctl-Commit: not a commit id"
    end
    if not state:add("apply_lock", true, 600) then
        return nil, "another config apply is in progress", 409
    end
    local ok, result, err, status = pcall(apply_now, raw, commit)
    state:delete("apply_lock")
    if not ok then
        return nil, "apply failed: " .. tostring(result), 500
    end
    return result, err, status
end

-- On start: serve the last persisted bundle, if any.
function _M.load_persisted()
    local path = node.settings.state_dir .. STATE_FILE
    local raw = node.read_file(path)
    if not raw then
        return true, "no persisted bundle at " .. path
    end
    local doc, err = cjson.decode(raw)
    if type(doc) ~= "table" then
        return nil, "unreadable " .. path .. ": " .. tostring(err)
    end
    local ok, verr = bundle.validate(doc.bundle)
    if not ok then
        return nil, "invalid persisted bundle: " .. verr
    end
    local count, lerr = load_into_dicts(doc.bundle, {
        version = doc.bundle.version,
        commit = or_null(doc.commit),
        applied_at = doc.applied_at,
    })
    if not count then
        return nil, lerr
    end
    return true
end

return _M
