-- Validation of a resolved bundle (format 1, see src/cdnctl/bundle.py) before it is applied.
local cjson = require "cjson.safe"

local type = type
local pairs = pairs
local ipairs = ipairs
local tostring = tostring
local next = next
local floor = math.floor
local find = string.find
local sub = string.sub
local null = cjson.null

local _M = {}

local function is_null(v)
    return v == nil or v == null
end

local function is_int(v, min, max)
    return type(v) == "number" and v == floor(v) and v >= min and (not max or v <= max)
end

local function check_list_of_strings(v)
    if type(v) ~= "table" then
        return false
    end
    for _, item in ipairs(v) do
        if type(item) ~= "string" then
            return false
        end
    end
    for k in pairs(v) do
        if type(k) ~= "number" then
            return false
        end
    end
    return true
end

local function check_origin(o)
    if type(o) ~= "table" then
        return "origin: not an object"
    end
    if o.scheme ~= "http" and o.scheme ~= "https" then
        return "origin.scheme: must be http or https"
    end
    if type(o.host) ~= "string" or o.host == "" then
        return "origin.host: missing"
    end
    if not is_int(o.port, 1, 65535) then
        return "origin.port: must be 1..65535"
    end
    if type(o.base_path) ~= "string" then
        return "origin.base_path: missing"
    end
    if type(o.host_header) ~= "string" or o.host_header == "" then
        return "origin.host_header: missing"
    end
    if type(o.tls_verify) ~= "boolean" then
        return "origin.tls_verify: must be a boolean"
    end
    if type(o.connect_timeout) ~= "number" or o.connect_timeout <= 0 then
        return "origin.connect_timeout: must be > 0"
    end
    if type(o.read_timeout) ~= "number" or o.read_timeout <= 0 then
        return "origin.read_timeout: must be > 0"
    end
    local auth = o.basic_auth
    if not is_null(auth) then
        if type(auth) ~= "table" or type(auth.authorization) ~= "string"
            or sub(auth.authorization, 1, 6) ~= "Basic "
        then
            return "origin.basic_auth: secrets are not resolved (need authorization)"
        end
    end
    return nil
end

local function check_cache(c)
    if type(c) ~= "table" then
        return "cache: not an object"
    end
    for _, field in ipairs({ "default_ttl", "stale_if_error", "stale_while_revalidate" }) do
        if not is_int(c[field], 0) then
            return "cache." .. field .. ": must be a whole number >= 0"
        end
    end
    if type(c.respect_origin) ~= "boolean" then
        return "cache.respect_origin: must be a boolean"
    end
    local q = c.query_string
    if type(q) ~= "table" or (q.mode ~= "all" and q.mode ~= "ignore" and q.mode ~= "keep") then
        return "cache.query_string.mode: must be all, ignore or keep"
    end
    if not is_null(q.keep) and not check_list_of_strings(q.keep) then
        return "cache.query_string.keep: must be a list of strings"
    end
    if type(c.rules) ~= "table" then
        return "cache.rules: must be a list"
    end
    for i, r in ipairs(c.rules) do
        if type(r) ~= "table" or type(r.path) ~= "string" or r.path == "" then
            return "cache.rules[" .. (i - 1) .. "].path: missing"
        end
        if not is_null(r.ttl) and not is_int(r.ttl, 0) then
            return "cache.rules[" .. (i - 1) .. "].ttl: must be null or >= 0"
        end
    end
    return nil
end

local function check_tenant(id, t)
    if type(t) ~= "table" then
        return "not an object"
    end
    if t.id ~= id then
        return "id: " .. tostring(t.id) .. " does not match its key"
    end
    if find(id, "[|%c%s]") then
        return "id: contains a forbidden character"
    end
    if not check_list_of_strings(t.domains) then
        return "domains: must be a list of strings"
    end
    local err = check_origin(t.origin) or check_cache(t.cache)
    if err then
        return err
    end
    if not check_list_of_strings(t.methods) then
        return "methods: must be a list of strings"
    end
    local rl = t.rate_limit
    if not is_null(rl) then
        if type(rl) ~= "table" or type(rl.requests_per_second) ~= "number"
            or rl.requests_per_second <= 0 or not is_int(rl.burst, 0)
        then
            return "rate_limit: needs requests_per_second > 0 and burst >= 0"
        end
    end
    if not is_null(t.purge_tokens_env) and next(t.purge_tokens_env)
        and is_null(t.purge_token_sha256)
    then
        return "purge_tokens_env: secrets are not resolved (need purge_token_sha256)"
    end
    if not is_null(t.purge_token_sha256) and not check_list_of_strings(t.purge_token_sha256) then
        return "purge_token_sha256: must be a list of hex strings"
    end
    return nil
end

-- Returns true, or nil and a message naming the first problem.
function _M.validate(b)
    if type(b) ~= "table" then
        return nil, "bundle must be a JSON object"
    end
    if b.format ~= 1 then
        return nil, "unsupported bundle format " .. tostring(b.format) .. " (expected 1)"
    end
    if type(b.version) ~= "string" or not find(b.version, "^sha256:%x+$") or #b.version ~= 71 then
        return nil, "version: must be sha256:<64 hex>"
    end
    if type(b.hosts) ~= "table" or type(b.wildcards) ~= "table" or type(b.tenants) ~= "table" then
        return nil, "hosts, wildcards and tenants must be objects"
    end
    for id, t in pairs(b.tenants) do
        if type(id) ~= "string" then
            return nil, "tenants: keys must be tenant ids"
        end
        local err = check_tenant(id, t)
        if err then
            return nil, "tenant " .. id .. ": " .. err
        end
        for _, domain in ipairs(t.domains) do
            local owner
            if sub(domain, 1, 2) == "*." then
                owner = b.wildcards[sub(domain, 3)]
            else
                owner = b.hosts[domain]
            end
            if owner ~= id then
                return nil, "hosts index: domain " .. domain .. " of tenant " .. id
                    .. " maps to " .. tostring(owner)
            end
        end
    end
    for _, index in ipairs({ "hosts", "wildcards" }) do
        for host, id in pairs(b[index]) do
            if type(host) ~= "string" or type(id) ~= "string" or type(b.tenants[id]) ~= "table" then
                return nil, index .. ": " .. tostring(host) .. " maps to unknown tenant "
                    .. tostring(id)
            end
        end
    end
    return true
end

return _M
