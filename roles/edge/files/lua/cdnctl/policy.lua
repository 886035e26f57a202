-- Per-tenant request policy: path normalisation, query-string policy, path rules.
-- `prepare` turns a decoded tenant into the per-worker form used on the hot path.
local cjson = require "cjson.safe"
local ffi = require "ffi"

local ipairs = ipairs
local pairs = pairs
local type = type
local sort = table.sort
local concat = table.concat
local insert = table.insert
local find = string.find
local match = string.match
local gsub = string.gsub
local sub = string.sub
local byte = string.byte
local format = string.format
local char = string.char
local ffi_cast = ffi.cast
local escape_uri = ngx.escape_uri
local null = cjson.null

local _M = {}

-- "/api/*" -> "^/api/.*$"; "*.jpg" -> "^.*%.jpg$" (Lua pattern, anchored).
local function glob_to_pattern(glob)
    local escaped = gsub(glob, "[%^%$%(%)%%%.%[%]%+%-%?]", "%%%0")
    return "^" .. gsub(escaped, "%*", ".*") .. "$"
end
_M.glob_to_pattern = glob_to_pattern

function _M.prepare(t)
    local methods = {}
    for _, m in ipairs(t.methods) do
        methods[m] = true
    end
    t.method_set = methods
    t.allow_header = concat(t.methods, ", ")
    local rules = {}
    for i, r in ipairs(t.cache.rules) do
        rules[i] = {
            pattern = glob_to_pattern(r.path),
            ttl = r.ttl ~= null and r.ttl or nil,
            bypass = r.bypass == true,
            cache_set_cookie = r.cache_set_cookie == true,
        }
    end
    t.compiled_rules = rules
    local q = t.cache.query_string
    local keep = {}
    if type(q.keep) == "table" then
        for _, name in ipairs(q.keep) do
            keep[name] = true
        end
    end
    t.query_mode = q.mode
    t.query_keep = keep
    local tokens = {}
    if type(t.purge_token_sha256) == "table" then
        for _, hex in ipairs(t.purge_token_sha256) do
            tokens[hex] = true
        end
    end
    t.purge_tokens = tokens
    t.rate = t.rate_limit ~= null and t.rate_limit or nil
    return t
end

-- Collapse "//", resolve "." and ".." (never above "/"). nginx already decodes %XX and
-- resolves dot segments in $uri; this is the same rule applied again, so cache keys and
-- purge keys never depend on how a client spelled a path.
function _M.normalise_path(path)
    if path == "" or byte(path, 1) ~= 47 then
        path = "/" .. path
    end
    if not find(path, "//", 1, true) and not find(path, "/.", 1, true) then
        return path
    end
    local out = {}
    local n = 0
    for seg in gsub(path, "^/", ""):gmatch("([^/]*)") do
        if seg == ".." then
            if n > 0 then
                out[n] = nil
                n = n - 1
            end
        elseif seg ~= "." and seg ~= "" then
            n = n + 1
            out[n] = seg
        end
    end
    local trailing = sub(path, -1) == "/" or sub(path, -2) == "/." or sub(path, -3) == "/.."
    local joined = "/" .. concat(out, "/")
    if trailing and n > 0 then
        joined = joined .. "/"
    end
    return joined
end

-- Canonical query string for the cache key and the origin request.
function _M.query(t, args)
    if t.query_mode == "ignore" or not args then
        return ""
    end
    local keep = t.query_mode == "keep" and t.query_keep or nil
    local names = {}
    for name in pairs(args) do
        if not keep or keep[name] then
            insert(names, name)
        end
    end
    if #names == 0 then
        return ""
    end
    sort(names)
    local parts = {}
    for _, name in ipairs(names) do
        local value = args[name]
        local ename = escape_uri(name)
        if type(value) == "table" then
            for _, v in ipairs(value) do
                if v == true then
                    insert(parts, ename)
                else
                    insert(parts, ename .. "=" .. escape_uri(v))
                end
            end
        elseif value == true then
            insert(parts, ename)
        else
            insert(parts, ename .. "=" .. escape_uri(value))
        end
    end
    return concat(parts, "&")
end

-- index (1-based) and rule of the first rule matching `path`, or nil.
function _M.match_rule(t, path)
    for i, r in ipairs(t.compiled_rules) do
        if find(path, r.pattern) then
            return i, r
        end
    end
    return nil
end

local UNSAFE = "[^%w%-%._~/!%$&'%(%)%*%+,;=:@]"

-- The same set as a byte table: the check runs on every request, and a byte loop is
-- compiled where a pattern match is not.
local SAFE = ffi.new("uint8_t[256]")
for c = 0, 255 do
    SAFE[c] = find(char(c), UNSAFE) and 0 or 1
end
local bytes_of = ffi.typeof("const uint8_t *")

local function percent(c)
    return format("%%%02X", byte(c))
end

function _M.escape_path(path)
    local p = ffi_cast(bytes_of, path)
    for i = 0, #path - 1 do
        if SAFE[p[i]] == 0 then
            return (gsub(path, UNSAFE, percent))
        end
    end
    return path
end

-- The proxy_cache_key: tenant id + tenant cache generation (bumped by purge-all) + the
-- percent-encoded normalised path + canonical query. Ids cannot contain "|", so two tenants
-- never share a key, and everything after the second "|" is the URI to fetch.
function _M.cache_key(id, generation, path, query)
    if query ~= "" then
        return id .. "|" .. generation .. "|" .. _M.escape_path(path) .. "?" .. query
    end
    return id .. "|" .. generation .. "|" .. _M.escape_path(path)
end

-- The request URI carried in a cache key.
function _M.uri_of_key(key)
    return match(key, "^[^|]*|[^|]*|(.*)$")
end

return _M
