-- The one parser of caching fields, used by every decision the fetch adapter makes:
-- `list` reads RFC 9110 §5.6 lists of `token [ "=" ( token / quoted-string ) ]`
-- (Cache-Control, Surrogate-Control, Vary, Connection); `dictionary` reads an RFC 8941
-- Structured Field Dictionary (CDN-Cache-Control and the tenant's targeted field, RFC 9213).
-- Both give the same shape, so one reader (`seconds`) serves them all: name (lowercase) ->
-- true (no argument), a string (token argument), { text } (quoted-string argument), or
-- CONFLICT (the directive appeared twice with different values).
-- Runs on a cache MISS only (header filter of the fetch), never on a HIT.
local find = string.find
local sub = string.sub
local byte = string.byte
local lower = string.lower
local concat = table.concat
local pairs = pairs
local tonumber = tonumber
local type = type

local _M = {}

local CONFLICT = {}
_M.CONFLICT = CONFLICT

-- RFC 9111 §1.2.2: a delta-seconds too large to represent is 2^31.
local DELTA_MAX = 2147483648

local TOKEN = "^([!#$%%&'*+%-.^_`|~%w]+)"
local OWS = "^[ \t]*"

local function record(out, name, value)
    local old = out[name]
    if old == nil then
        out[name] = value
    elseif old ~= value then
        -- Two different values: neither can be trusted (the caller reads the most
        -- restrictive meaning: no freshness, no stale window). Tables never compare equal.
        out[name] = CONFLICT
    end
end

-- Position after a quoted-string starting at `pos` (which holds the opening quote) and
-- its unescaped text, or nil if it never closes.
local function quoted(s, pos)
    local i, n = pos + 1, #s
    local parts = {}
    local start = i
    while i <= n do
        local c = byte(s, i)
        if c == 34 then
            parts[#parts + 1] = sub(s, start, i - 1)
            return i + 1, concat(parts)
        elseif c == 92 then
            parts[#parts + 1] = sub(s, start, i - 1)
            if i == n then
                return nil
            end
            parts[#parts + 1] = sub(s, i + 1, i + 1)
            i = i + 2
            start = i
        else
            i = i + 1
        end
    end
    return nil
end

-- Position of the next "," at or after `pos` outside quoted strings (or #s + 1).
local function next_comma(s, pos)
    local n = #s
    while pos <= n do
        local c = byte(s, pos)
        if c == 44 then
            return pos
        elseif c == 34 then
            pos = quoted(s, pos) or n + 1
        else
            pos = pos + 1
        end
    end
    return n + 1
end

-- RFC 9110 §5.6.1 list. A malformed member (e.g. `max-age =5`, `max-age= 5`, an unclosed
-- quote) is ignored on its own; the others still count.
function _M.list(s)
    local out = {}
    if not s then
        return out
    end
    local pos, n = 1, #s
    while pos <= n do
        local _, e = find(s, "^[ \t,]*", pos)
        pos = e + 1
        if pos > n then
            break
        end
        local _, name_end, name = find(s, TOKEN, pos)
        local value, ok = true, false
        if name_end then
            pos = name_end + 1
            ok = true
            if byte(s, pos) == 61 then
                local _, te, token = find(s, TOKEN, pos + 1)
                if te then
                    value, pos = token, te + 1
                elseif byte(s, pos + 1) == 34 then
                    local after, text = quoted(s, pos + 1)
                    if after then
                        value, pos = { text }, after
                    else
                        ok = false
                    end
                else
                    ok = false
                end
            end
            if ok then
                local _, oe = find(s, OWS, pos)
                pos = oe + 1
                ok = pos > n or byte(s, pos) == 44
            end
        end
        if ok then
            record(out, lower(name), value)
        else
            pos = next_comma(s, pos)
        end
    end
    return out
end

-- RFC 8941 §4.2: bare items and parameters. Returns the value in list() shape (integers as
-- their digits, so `seconds` reads both alike) and the position after it, or nil.
local function bare_item(s, pos)
    local c = byte(s, pos)
    if not c then
        return nil
    end
    if c == 45 or (c >= 48 and c <= 57) then
        local _, e, num = find(s, "^(%-?%d+)", pos)
        if not e or #num > (c == 45 and 16 or 15) then
            return nil
        end
        local _, de = find(s, "^%.%d+", e + 1)
        if de then
            -- A decimal: valid syntax, but never a number of seconds.
            if de - e - 1 > 3 then
                return nil
            end
            return { sub(s, pos, de) }, de + 1
        end
        return num, e + 1
    elseif c == 34 then
        local i, n = pos + 1, #s
        local text = {}
        while i <= n do
            local ch = byte(s, i)
            if ch == 92 then
                local esc = byte(s, i + 1)
                if esc ~= 34 and esc ~= 92 then
                    return nil
                end
                text[#text + 1] = sub(s, i + 1, i + 1)
                i = i + 2
            elseif ch == 34 then
                return { concat(text) }, i + 1
            elseif ch < 32 or ch > 126 then
                return nil
            else
                text[#text + 1] = sub(s, i, i)
                i = i + 1
            end
        end
        return nil
    elseif c == 42 or (c >= 65 and c <= 90) or (c >= 97 and c <= 122) then
        local _, e, token = find(s, "^([%w!#$%%&'*+%-.^_`|~:/]+)", pos)
        return token, e + 1
    elseif c == 58 then
        local _, e = find(s, "^:[%w+/=]*:", pos)
        if not e then
            return nil
        end
        return { sub(s, pos, e) }, e + 1
    elseif c == 63 then
        local b = byte(s, pos + 1)
        if b == 49 then
            return true, pos + 2
        elseif b == 48 then
            return false, pos + 2
        end
    end
    return nil
end

local KEY = "^[a-z*][a-z0-9_%-.*]*"
local KEY_CAPTURE = "^([a-z*][a-z0-9_%-.*]*)"

local function parameters(s, pos)
    while byte(s, pos) == 59 do
        local _, e = find(s, "^ *", pos + 1)
        local _, ke = find(s, KEY, e + 1)
        if not ke then
            return nil
        end
        pos = ke + 1
        if byte(s, pos) == 61 then
            local _, after = bare_item(s, pos + 1)
            if not after then
                return nil
            end
            pos = after
        end
    end
    return pos
end

-- RFC 8941 §4.2.2 Dictionary, or nil if the field is invalid (ignored as a whole, RFC 9213
-- §2.1). Later members win over earlier ones of the same name; `?0` means absent.
function _M.dictionary(s)
    if not s then
        return nil
    end
    local out = {}
    local _, e = find(s, "^ *")
    local pos, n = e + 1, #s
    if pos > n then
        return nil
    end
    while true do
        local _, ke, key = find(s, KEY_CAPTURE, pos)
        if not ke then
            return nil
        end
        pos = ke + 1
        local value = true
        if byte(s, pos) == 61 then
            value, pos = bare_item(s, pos + 1)
            if pos == nil then
                return nil
            end
        end
        pos = parameters(s, pos)
        if not pos then
            return nil
        end
        if value == false then
            out[key] = nil
        else
            out[key] = value
        end
        _, e = find(s, OWS, pos)
        pos = e + 1
        if pos > n then
            return out
        end
        if byte(s, pos) ~= 44 then
            return nil
        end
        _, e = find(s, OWS, pos + 1)
        pos = e + 1
        if pos > n then
            return nil
        end
    end
end

-- A delta-seconds argument (RFC 9111 §1.2.2: token form, digits only), 0 for a conflict
-- (the most restrictive reading), nil when absent or invalid (the directive is ignored).
function _M.seconds(directives, name)
    local v = directives[name]
    if v == CONFLICT then
        return 0
    end
    if type(v) ~= "string" or not find(v, "^%d+$") then
        return nil
    end
    if #v > 10 then
        return DELTA_MAX
    end
    local n = tonumber(v)
    return n > DELTA_MAX and DELTA_MAX or n
end

-- Field names listed in a header value (Connection, Vary), lowercase.
function _M.names(s)
    local out = {}
    if s then
        for name in pairs(_M.list(s)) do
            out[#out + 1] = name
        end
    end
    return out
end

return _M
