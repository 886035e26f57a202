-- Validation of a resolved bundle (format 1, see src/cdnctl/bundle/format.py) before it is
-- applied.
local cjson = require "cjson.safe"
local sha256 = require "cdnctl.sha256"

local type = type
local pairs = pairs
local ipairs = ipairs
local tostring = tostring
local next = next
local getmetatable = getmetatable
local floor = math.floor
local find = string.find
local sub = string.sub
local byte = string.byte
local gsub = string.gsub
local format = string.format
local concat = table.concat
local sort = table.sort
local null = cjson.null

local _M = {}

local INDEXES = { "hosts", "wildcards" }

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
    if find(id, '[|%c%s\\"]') then
        return "id: contains a forbidden character"
    end
    if not is_null(t.digest) and (type(t.digest) ~= "string"
        or not find(t.digest, "^sha256:%x+$"))
    then
        return "digest: must be sha256:<hex>"
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

_M.check_tenant = check_tenant

-- Everything but the tenants: format, version and the two host indexes.
function _M.check_skeleton(b)
    if type(b) ~= "table" then
        return "bundle must be a JSON object"
    end
    if b.format ~= 1 then
        return "unsupported bundle format " .. tostring(b.format) .. " (expected 1)"
    end
    if type(b.version) ~= "string" or not find(b.version, "^sha256:%x+$") or #b.version ~= 71 then
        return "version: must be sha256:<64 hex>"
    end
    if type(b.hosts) ~= "table" or type(b.wildcards) ~= "table" then
        return "hosts and wildcards must be objects"
    end
    if b.base ~= nil then
        return "this is a delta (it has a base version): POST it to /config/delta"
    end
    return nil
end

-- The host indexes of a new bundle against its tenants. `present`: id -> true for every
-- tenant of the bundle; `changed`: id -> decoded tenant for those that differ from the
-- running config; `running`: the running bundle's {hosts, wildcards}. Only changed tenants
-- are read: an unchanged tenant's domains already mapped to it in the running index, so an
-- entry that differs from the running index must belong to a changed (or removed) tenant.
function _M.check_index(b, present, changed, running)
    for _, kind in ipairs(INDEXES) do
        local new, old = b[kind], running[kind]
        for host, id in pairs(new) do
            if type(host) ~= "string" or type(id) ~= "string" or not present[id] then
                return kind .. ": " .. tostring(host) .. " maps to unknown tenant " .. tostring(id)
            end
            if old[host] ~= id and not changed[id] then
                return kind .. ": " .. host .. " maps to tenant " .. id
                    .. ", whose domains do not list it"
            end
        end
        for host, id in pairs(old) do
            if new[host] == nil and present[id] and not changed[id] then
                return kind .. ": " .. host .. " of tenant " .. id .. " is missing"
            end
        end
    end
    for id, t in pairs(changed) do
        for _, domain in ipairs(t.domains) do
            local owner
            if sub(domain, 1, 2) == "*." then
                owner = b.wildcards[sub(domain, 3)]
            else
                owner = b.hosts[domain]
            end
            if owner ~= id then
                return "hosts index: domain " .. domain .. " of tenant " .. id .. " maps to "
                    .. tostring(owner)
            end
        end
    end
    return nil
end

-- The bundle's version contract (src/cdnctl/bundle/format.py, manifest_version): version =
-- SHA-256 of the canonical JSON of the bundle without `version` and with every tenant
-- replaced by its digest. Checked before anything is written, so an edge never reports a
-- version that its bundle does not have (plan --edge and the rollout's skip-if-same trust it).

-- JSON string escapes of Python's json.dumps(ensure_ascii=False): only '"', '\' and
-- control characters are escaped; everything else (UTF-8 included) is kept as it is.
local SHORT_ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
    ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

local function escape_char(c)
    return SHORT_ESCAPES[c] or format("\\u%04x", byte(c))
end

local canonical

local function canonical_string(s)
    return '"' .. gsub(s, '[%z\1-\31"\\]', escape_char) .. '"'
end

-- canonical_json of a decoded JSON value: sorted keys, compact separators. Only needed for
-- bundles sent in another layout than cdnctl's own (see manifest_text).
canonical = function(v)
    local kind = type(v)
    if kind == "string" then
        return canonical_string(v)
    elseif kind == "number" then
        if v == floor(v) and v > -2^53 and v < 2^53 then
            return format("%d", v)
        end
        return format("%.17g", v)
    elseif kind == "boolean" then
        return v and "true" or "false"
    elseif v == null or v == nil then
        return "null"
    end
    local n = #v
    local array_mt = cjson.array_mt -- set on decoded empty arrays only where cjson has it
    if n > 0 or array_mt and next(v) == nil and getmetatable(v) == array_mt then
        local out = {}
        for i = 1, n do
            out[i] = canonical(v[i])
        end
        return "[" .. concat(out, ",") .. "]"
    end
    local keys, out = {}, {}
    for k in pairs(v) do
        keys[#keys + 1] = k
    end
    sort(keys)
    for i, k in ipairs(keys) do
        out[i] = canonical_string(k) .. ":" .. canonical(v[k])
    end
    return "{" .. concat(out, ",") .. "}"
end

-- The manifest's tenants member for the ids in the given order.
-- (one concat of the pieces, no string per tenant: ids and digests that need no escape,
-- the usual case, go in as they are)
local NEEDS_ESCAPE = '[%z\1-\31"\\]'

local function tenants_member(ids, count, digests)
    local out, n = { '"tenants":{' }, 1
    for i = 1, count do
        local id = ids[i]
        local digest = digests[id]
        if type(digest) ~= "string" then
            return nil, "tenant " .. id .. ": digest: must be sha256:<64 hex>"
        end
        if find(id, NEEDS_ESCAPE) or find(digest, NEEDS_ESCAPE) then
            out[n + 1] = i > 1 and "," or ""
            out[n + 2] = canonical_string(id) .. ":" .. canonical_string(digest)
            n = n + 2
        else
            out[n + 1], out[n + 2], out[n + 3] = i > 1 and ',"' or '"', id, '":"'
            out[n + 4], out[n + 5] = digest, '"'
            n = n + 5
        end
    end
    out[n + 1] = "}"
    return concat(out)
end

-- The manifest's bytes straight from the text cdnctl wrote (already canonical, tenants in
-- sorted order), or nil when the skeleton does not have that exact shape.
local function manifest_from_text(parts, tenants)
    local text = parts.skeleton_text
    local version = '"version":' .. canonical_string(parts.skeleton.version)
    local at = find(text, version, 1, true)
    local open = find(text, '"tenants":{}', 1, true)
    if not at or not open or at < open then
        return nil
    end
    local cut_from, cut_to = at, at + #version - 1
    if byte(text, cut_to + 1) == 44 then -- ","
        cut_to = cut_to + 1
    elseif byte(text, cut_from - 1) == 44 then
        cut_from = cut_from - 1
    end
    return sub(text, 1, open - 1) .. tenants .. sub(text, open + 12, cut_from - 1)
        .. sub(text, cut_to + 1)
end

-- The manifest canonicalised from the decoded skeleton: for bundles in another layout or
-- order than cdnctl's own.
local function manifest_from_skeleton(parts, digests)
    local ids = {}
    for i = 1, parts.count do
        ids[i] = parts.ids[i]
    end
    sort(ids)
    local members = { (tenants_member(ids, parts.count, digests)) }
    for k, v in pairs(parts.skeleton) do
        if k ~= "version" and k ~= "tenants" then
            members[#members + 1] = canonical_string(k) .. ":" .. canonical(v)
        end
    end
    sort(members) -- each starts with its quoted name (plain words here): sorted by name
    return "{" .. concat(members, ",") .. "}"
end

-- The bundle's manifest when its version is the SHA-256 of it, else nil and the error to
-- refuse it with. `digests`: id -> digest of every tenant of the bundle.
function _M.verified_manifest(parts, digests)
    local tenants, err = tenants_member(parts.ids, parts.count, digests)
    if not tenants then
        return nil, err
    end
    local version = parts.skeleton.version
    local fast = parts.raw and manifest_from_text(parts, tenants)
    if fast and "sha256:" .. sha256.hex(fast) == version then
        return fast
    end
    local manifest = manifest_from_skeleton(parts, digests)
    local expected = "sha256:" .. sha256.hex(manifest)
    if expected ~= version then
        return nil, "version: " .. version .. " is not the SHA-256 of this bundle's manifest ("
            .. expected .. "): the bundle was changed after `cdnctl compile` (or built by "
            .. "hand); compile it again and send that"
    end
    return manifest
end

local TENANTS_OPEN = '"tenants":{\n'

-- A taken-apart bundle: tenant i is ids[i]; _M.text(parts, i) is its JSON text and
-- _M.fingerprint(parts, i) the SHA-256 of that text (raw bytes), decoded[i] its table if
-- already decoded. Plain data read by module functions, no closures over the body: a
-- closure made per apply is a constant of the JIT traces that run it, and traces outlive
-- the apply, so its upvalues (a 69 MB body, 100k ids) would stay alive until the next flush.
local function parts_of(skeleton, skeleton_text, ids, count)
    return { skeleton = skeleton, skeleton_text = skeleton_text, ids = ids, count = count,
        decoded = {} }
end

function _M.text(parts, i)
    local texts = parts.texts
    if texts then
        return texts[i]
    end
    local first = parts.firsts[i]
    return sub(parts.raw, first, first + parts.lens[i] - 1)
end

function _M.fingerprint(parts, i)
    local texts = parts.texts
    if texts then
        return sha256.of_range(texts[i], 1, #texts[i])
    end
    return sha256.of_range(parts.raw, parts.firsts[i], parts.lens[i])
end

-- Whole-document decode: for bundles not in the line layout (any valid JSON is accepted).
local function split_decoded(raw, check)
    local b, err = cjson.decode(raw)
    if type(b) ~= "table" then
        return nil, "invalid JSON: " .. tostring(err or "not an object")
    end
    local serr = check(b)
    if serr then
        return nil, serr
    end
    if type(b.tenants) ~= "table" then
        return nil, "tenants must be an object"
    end
    local ids, texts, n = {}, {}, 0
    local tenants = b.tenants
    b.tenants = nil
    local parts = parts_of(b, cjson.encode(b), ids, 0)
    for id, t in pairs(tenants) do
        if type(id) ~= "string" then
            return nil, "tenants: keys must be tenant ids"
        end
        n = n + 1
        ids[n], parts.decoded[n], texts[n] = id, t, cjson.encode(t)
    end
    parts.count = n
    parts.texts = texts
    return parts
end

-- Takes a bundle apart without decoding its tenants. In the line layout cdnctl writes
-- (src/cdnctl/bundle/format.py, bundle_json), every tenant is one line `"<id>":{...}[,]`; only
-- the rest (format, version, host indexes) is decoded here, and a tenant's text is copied
-- out of the body (and decoded) only when its fingerprint differs from the running one.
-- Returns the parts (see parts_of) or nil, error. `pace`, if given, is called per tenant
-- (the caller's chance to yield); `check` checks a skeleton decoded with its tenants
-- (check_skeleton unless given: a delta has its own).
function _M.split(raw, pace, check)
    local at = find(raw, TENANTS_OPEN, 1, true)
    if not at then
        return split_decoded(raw, check or _M.check_skeleton)
    end
    local pos = at + #TENANTS_OPEN
    local ids, firsts, lens, n = {}, {}, {}, 0
    while byte(raw, pos) ~= 125 do -- "}" closes the tenants object
        local nl = find(raw, "\n", pos, true)
        local q = find(raw, '":', pos + 1, true)
        if not nl or byte(raw, pos) ~= 34 or not q or q > nl then
            return nil, "tenants: line " .. (n + 1) .. " is not \"<id>\":{...}"
        end
        local id = sub(raw, pos + 1, q - 1) -- an escaped id fails check_tenant
        local last = nl - 1
        local closing = byte(raw, nl + 1) == 125
        if byte(raw, last) == 44 then -- ","
            if closing then
                return nil, "tenants: trailing comma after tenant " .. id
            end
            last = last - 1
        elseif not closing then
            return nil, "tenants: missing comma after tenant " .. id
        end
        n = n + 1
        ids[n], firsts[n], lens[n] = id, q + 2, last - q - 1
        pos = nl + 1
        if pace then
            pace()
        end
    end
    local skeleton_text = sub(raw, 1, at + #TENANTS_OPEN - 2) .. sub(raw, pos)
    local b, err = cjson.decode(skeleton_text)
    if type(b) ~= "table" then
        return nil, "invalid JSON: " .. tostring(err or "not an object")
    end
    b.tenants = nil
    local parts = parts_of(b, skeleton_text, ids, n)
    parts.raw, parts.firsts, parts.lens = raw, firsts, lens
    return parts
end

return _M
