-- Text-level helpers over the running bundle's manifest (src/cdnctl/bundle/format.py,
-- manifest_version), the exact canonical text whose SHA-256 is the running version: its
-- members are found, and the entries of an object of strings located and patched, by
-- string search over the sorted text (canonical JSON sorts keys), not by decoding 100k
-- entries. manifest_store.lua keeps the manifest in pieces and patches them with these;
-- whatever they produce is only trusted once its SHA-256 is the delta's target version.
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
