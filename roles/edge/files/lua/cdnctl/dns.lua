-- Origin hostname -> IPv4 addresses: IP literals, the static --resolve map, /etc/hosts,
-- then a small DNS A-record client over UDP cosockets; answers cached in cdn_dns.
local bit = require "bit"

local ngx = ngx
local udp = ngx.socket.udp
local char = string.char
local byte = string.byte
local sub = string.sub
local find = string.find
local gmatch = string.gmatch
local concat = table.concat
local insert = table.insert
local random = math.random
local band = bit.band
local rshift = bit.rshift
local lshift = bit.lshift
local tonumber = tonumber
local tostring = tostring
local pairs = pairs
local ipairs = ipairs
local io_open = io.open

local cache = ngx.shared.cdn_dns

local _M = {}

local static = {}
local resolvers = {}

local MIN_TTL, MAX_TTL, NEGATIVE_TTL = 5, 300, 5

local function parse_hosts_file()
    local f = io_open("/etc/hosts", "r")
    if not f then
        return
    end
    for line in f:lines() do
        line = line:gsub("#.*", "")
        local ip, names = line:match("^%s*(%d+%.%d+%.%d+%.%d+)%s+(.+)$")
        if ip then
            for name in gmatch(names, "%S+") do
                local lname = name:lower()
                if not static[lname] then
                    static[lname] = { ip }
                end
            end
        end
    end
    f:close()
end

function _M.init(settings)
    static = {}
    for host, ip in pairs(settings.resolve or {}) do
        static[host:lower()] = { ip }
    end
    parse_hosts_file()
    resolvers = {}
    local servers = settings.resolvers or {}
    if #servers == 0 then
        local f = io_open("/etc/resolv.conf", "r")
        if f then
            for line in f:lines() do
                local ip = line:match("^%s*nameserver%s+(%d+%.%d+%.%d+%.%d+)")
                if ip then
                    insert(servers, ip)
                end
            end
            f:close()
        end
    end
    for _, s in ipairs(servers) do
        local host, port = s:match("^(.-):(%d+)$")
        insert(resolvers, { host or s, tonumber(port) or 53 })
    end
end

local function is_ipv4(host)
    return find(host, "^%d+%.%d+%.%d+%.%d+$") ~= nil
end

local function build_query(id, name)
    local parts = { char(rshift(id, 8), band(id, 0xff)), "\1\0\0\1\0\0\0\0\0\0" }
    for label in gmatch(name, "[^%.]+") do
        insert(parts, char(#label) .. label)
    end
    insert(parts, "\0\0\1\0\1")
    return concat(parts)
end

local function u16(s, pos)
    return lshift(byte(s, pos), 8) + byte(s, pos + 1)
end

local function skip_name(s, pos)
    while true do
        local len = byte(s, pos)
        if not len then
            return nil
        end
        if len == 0 then
            return pos + 1
        end
        if band(len, 0xc0) == 0xc0 then
            return pos + 2
        end
        pos = pos + len + 1
    end
end

local function parse_answer(s, id)
    if #s < 12 or u16(s, 1) ~= id then
        return nil, "bad DNS reply"
    end
    local rcode = band(byte(s, 4), 0x0f)
    if rcode ~= 0 then
        return nil, "DNS rcode " .. rcode
    end
    local qd, an = u16(s, 5), u16(s, 7)
    local pos = 13
    for _ = 1, qd do
        pos = skip_name(s, pos)
        if not pos then
            return nil, "truncated DNS reply"
        end
        pos = pos + 4
    end
    local ips, ttl = {}, MAX_TTL
    for _ = 1, an do
        pos = skip_name(s, pos)
        if not pos or pos + 10 > #s + 1 then
            return nil, "truncated DNS reply"
        end
        local rtype = u16(s, pos)
        local rttl = u16(s, pos + 4) * 65536 + u16(s, pos + 6)
        local rdlen = u16(s, pos + 8)
        pos = pos + 10
        if rtype == 1 and rdlen == 4 then
            insert(ips, byte(s, pos) .. "." .. byte(s, pos + 1) .. "." .. byte(s, pos + 2)
                .. "." .. byte(s, pos + 3))
            if rttl < ttl then
                ttl = rttl
            end
        end
        pos = pos + rdlen
    end
    if #ips == 0 then
        return nil, "no A record"
    end
    return ips, ttl
end

local function query(name)
    local last_err = "no resolver configured"
    for _, server in ipairs(resolvers) do
        local sock = udp()
        sock:settimeout(2000)
        local ok, err = sock:setpeername(server[1], server[2])
        if ok then
            local id = random(0, 65535)
            ok, err = sock:send(build_query(id, name))
            if ok then
                local reply
                reply, err = sock:receive()
                if reply then
                    local ips, ttl = parse_answer(reply, id)
                    sock:close()
                    if ips then
                        return ips, ttl
                    end
                    err = ttl
                end
            end
        end
        sock:close()
        last_err = server[1] .. ": " .. tostring(err)
    end
    return nil, last_err
end

-- Returns a list of IPv4 strings, or nil and an error.
function _M.resolve(host)
    if is_ipv4(host) then
        return { host }
    end
    local lhost = host:lower()
    local fixed = static[lhost]
    if fixed then
        return fixed
    end
    local cached = cache:get(lhost)
    if cached then
        if cached == "" then
            return nil, "cached resolution failure"
        end
        local ips = {}
        for ip in gmatch(cached, "%S+") do
            insert(ips, ip)
        end
        return ips
    end
    local ips, ttl = query(lhost)
    if not ips then
        cache:set(lhost, "", NEGATIVE_TTL)
        return nil, ttl
    end
    if ttl < MIN_TTL then
        ttl = MIN_TTL
    end
    cache:set(lhost, concat(ips, " "), ttl)
    return ips
end

_M.parse_answer = parse_answer
_M.build_query = build_query

return _M
