-- A 304 updates the stored response (RFC 9111 §4.3.4). nginx's cache cannot: on a 304 it
-- keeps the stored header fields and moves only the validity. So the fetch adapter
-- remembers the fields of every response it lets the edge store (a set of field hashes per
-- stored key, in cdn_revalidate). A revalidation takes one more hop through the adapter
-- (nginx.conf, @revalidate); when the 304 it gets brings a field the stored response does
-- not have (a new Cache-Control, Expires, ETag or any other field), the inner hop answers
-- REFETCH instead, and the outer one fetches the full response without the conditions:
-- the client gets it, and nginx stores it over the old one. A 304 that changes nothing
-- refreshes the stored response as before. A HIT looks at nothing here.
local ngx = ngx
local dict = ngx.shared.cdn_revalidate
local crc32 = ngx.crc32_short
local get_resp_headers = ngx.resp.get_headers
local sub = string.sub
local find = string.find
local concat = table.concat
local type = type
local ipairs = ipairs
local pairs = pairs

local _M = {}

-- Not part of what a 304 updates: per-message fields, framing, and what the edge and a
-- shield add to every answer.
local IGNORED = {
    ["date"] = true, ["age"] = true, ["content-length"] = true,
    ["transfer-encoding"] = true, ["connection"] = true, ["keep-alive"] = true,
    ["set-cookie"] = true, ["x-cache-status"] = true, ["x-request-id"] = true,
}

-- The status the inner hop of a revalidation answers when the 304 changes the stored
-- response (nginx.conf intercepts it); never sent to a client.
_M.REFETCH = 555

-- A hash of each field of the response being sent (name and value), internal
-- X-Cdnctl-* / X-Accel-* fields left out.
function _M.hashes()
    local out = {}
    for name, value in pairs(get_resp_headers(100)) do
        if not IGNORED[name] and sub(name, 1, 9) ~= "x-cdnctl-" and sub(name, 1, 8) ~= "x-accel-" then
            if type(value) == "table" then
                value = concat(value, "\n")
            end
            out[#out + 1] = crc32(name .. ":" .. value)
        end
    end
    return out
end

-- The edge stores this response under `key`: remember its fields. Oldest first out when
-- the dict is full: an unknown key only costs one full fetch on its next 304.
function _M.remember(key, hashes)
    dict:set(key, " " .. concat(hashes, " ") .. " ")
end

-- Does a 304 with these fields change the response stored under `key`? Unknown: yes.
function _M.changes(key, hashes)
    local stored = dict:get(key)
    if not stored then
        return true
    end
    for _, h in ipairs(hashes) do
        if not find(stored, " " .. h .. " ", 1, true) then
            return true
        end
    end
    return false
end

return _M
