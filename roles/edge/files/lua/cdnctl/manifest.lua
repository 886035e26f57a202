-- The running bundle's manifest (src/cdnctl/bundle/format.py, manifest_version) kept as the
-- exact canonical text whose SHA-256 is the running version, and changed in place by a
-- delta: a delta names a few tenants and host index entries, so its target manifest is the
-- running one with those few members of `hosts`, `tenants` (id -> digest) and `wildcards`
-- replaced, inserted or dropped. Each member is found by binary search over the sorted
-- text (canonical JSON sorts keys), so a one-tenant delta costs a few string searches and
-- one copy of the text, not a decode of 100k entries. Whatever this produces is only
-- trusted once its SHA-256 is the delta's target version.
local floor = math.floor
local find = string.find
local sub = string.sub
local gsub = string.gsub
local byte = string.byte
local format = string.format
local concat = table.concat
local sort = table.sort
local pairs = pairs
local ipairs = ipairs
local next = next

local _M = {}

local SHORT_ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
    ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

local function escape_char(c)
    return SHORT_ESCAPES[c] or format("\\u%04x", byte(c))
end

local function quoted(s)
    return '"' .. gsub(s, '[%z\1-\31"\\]', escape_char) .. '"'
end

-- (first, last) byte positions of the inside of top-level member `name` ({...} of strings),
-- or nil. Its values are strings, and a raw `"name":{` can only open that member.
function _M.member(text, name)
    local open = '"' .. name .. '":{'
    local at = find(text, open, 1, true)
    if not at then
        return nil
    end
    local first = at + #open
    local close = find(text, "}", first, true)
    if not close then
        return nil
    end
    return first, close - 1
end

-- In an object of string -> string entries, `","` only ever sits between two entries.
local function next_entry(text, from, stop)
    local p = find(text, '","', from, true)
    if not p or p + 2 > stop then
        return stop
    end
    return p + 2
end

local function key_at(text, s)
    local q = find(text, '"', s + 1, true)
    return sub(text, s + 1, q - 1)
end

-- The entry of `key` between first..last: (start, end) when present, else (insertion point,
-- nil). Keys compared as their JSON text: the same order as canonical JSON's for the plain
-- ids and host names cdnctl writes (anything else fails the final version check).
local function locate(text, first, last, key)
    local a, b = first, last + 1
    while a < b do
        local s = next_entry(text, floor((a + b) / 2), b)
        if s >= b then
            s = a
        end
        local k = key_at(text, s)
        if k == key then
            local close = find(text, '"', s + #k + 4, true) -- `"k":"` then the value
            return s, close
        elseif k < key then
            a = next_entry(text, s + 1, b)
        else
            b = s
        end
    end
    return a, nil
end

local function strip_commas(segment)
    if byte(segment, 1) == 44 then
        segment = sub(segment, 2)
    end
    if byte(segment, -1) == 44 then
        segment = sub(segment, 1, -2)
    end
    return segment
end

-- The inside of an object with `edits` (key -> new string value, or false to drop) applied.
local function patch_object(text, first, last, edits)
    local keys = {}
    for k in pairs(edits) do
        keys[#keys + 1] = k
    end
    sort(keys)
    local chunks, cursor = {}, first
    for _, k in ipairs(keys) do
        local s, e = locate(text, first, last, k)
        local before = strip_commas(sub(text, cursor, s - 1))
        if before ~= "" then
            chunks[#chunks + 1] = before
        end
        cursor = e and e + 1 or s
        local value = edits[k]
        if value then
            chunks[#chunks + 1] = quoted(k) .. ":" .. quoted(value)
        end
    end
    local rest = strip_commas(sub(text, cursor, last))
    if rest ~= "" then
        chunks[#chunks + 1] = rest
    end
    return concat(chunks, ",")
end

-- The manifest with `edits` = {member name: {key: value or false}} applied, or nil, error.
-- Members are patched from the last to the first so earlier positions stay valid.
function _M.patch(text, edits)
    local spans = {}
    for name, changes in pairs(edits) do
        if next(changes) ~= nil then
            local first, last = _M.member(text, name)
            if not first then
                return nil, "the running manifest has no " .. name .. " member"
            end
            spans[#spans + 1] = { first, last, changes }
        end
    end
    sort(spans, function(x, y) return x[1] > y[1] end)
    for _, span in ipairs(spans) do
        local first, last, changes = span[1], span[2], span[3]
        text = sub(text, 1, first - 1) .. patch_object(text, first, last, changes)
            .. sub(text, last + 1)
    end
    return text
end

-- The value of `key` in member `name` of the manifest, or nil.
function _M.get(text, name, key)
    local first, last = _M.member(text, name)
    if not first then
        return nil
    end
    local s, e = locate(text, first, last, key)
    if not e then
        return nil
    end
    return sub(text, s + #quoted(key) + 2, e - 1)
end

-- {"tenants": {id: digest}, "version": ...} (GET /config/tenants) from the manifest.
function _M.digests_json(text, version)
    local first, last = _M.member(text, "tenants")
    if not first then
        return nil
    end
    return '{"tenants":{' .. sub(text, first, last) .. '},"version":' .. quoted(version) .. "}"
end

-- The running index (the bundle without its tenants, see store.lua) from a cdnctl manifest:
-- `"tenants":{...}` becomes `"tenants":{},"version":"<version>"` (canonical key order).
function _M.index_text(text, version)
    local first, last = _M.member(text, "tenants")
    if not first then
        return nil
    end
    return sub(text, 1, first - 1) .. '},"version":' .. quoted(version) .. sub(text, last + 2)
end

_M.quoted = quoted
_M.patch_object = patch_object
_M.key_at = key_at

return _M
