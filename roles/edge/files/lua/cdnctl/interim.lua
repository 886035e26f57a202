-- Origins that send interim responses (1xx such as 102 Processing or 103 Early Hints before
-- the final response). nginx 1.22's proxy takes the first status line as the final one and
-- then waits for a body that never ends. So:
--   1. the fetch adapter's header filter that sees a 1xx from a tenant's origin marks the
--      tenant (cdn_state, a day) and drops the connection at once;
--   2. the edge's error page for that 502 fetches again (only for a request that just
--      marked its tenant), now through
--   3. the relay: a cosocket client that sends the request with `Connection: close`,
--      skips the interim responses and hands the final one to nginx's proxy byte for byte.
-- Only a marked tenant's misses pay for the relay (one connection per fetch); a HIT and
-- every other tenant's fetch look at nothing here. Interim responses are never stored.
local ngx = ngx
local var = ngx.var
local state = ngx.shared.cdn_state
local tcp = ngx.socket.tcp
local req_socket = ngx.req.socket
local get_headers = ngx.req.get_headers
local lower = string.lower
local match = string.match
local gmatch = string.gmatch
local concat = table.concat
local tonumber = tonumber
local type = type
local pairs = pairs
local ipairs = ipairs
local io_open = io.open

local _M = {}

local MARK_SECONDS = 86400
local RETRY_SECONDS = 30
local NOT_FORWARDED = { connection = true, ["keep-alive"] = true, ["x-cdnctl-relay"] = true }

-- Adapter: does this tenant's origin send interim responses?
function _M.marked(tenant_id)
    return state:get("interim:" .. tenant_id) ~= nil
end

-- Adapter header filter: a 1xx from the origin. Mark the tenant, let the edge request
-- `request_id` fetch again, and drop the connection (the edge sees an upstream error).
function _M.seen(tenant_id, request_id)
    state:set("interim:" .. tenant_id, true, MARK_SECONDS)
    state:set("interim_retry:" .. request_id, true, RETRY_SECONDS)
    ngx.log(ngx.NOTICE, "cdnctl: origin of ", tenant_id, " sends interim responses: ",
        "fetching through the relay from now on")
    return ngx.exit(ngx.ERROR)
end

-- Edge, the error page of a 502: fetch again only if this request just marked its tenant.
function _M.retry()
    local key = "interim_retry:" .. var.cdn_request_id
    if not state:get(key) then
        return ngx.exit(502)
    end
    state:delete(key)
end

local function request_body()
    ngx.req.read_body()
    local body = ngx.req.get_body_data()
    if body then
        return body
    end
    local path = ngx.req.get_body_file()
    if not path then
        return ""
    end
    local f = io_open(path, "rb")
    if not f then
        return nil
    end
    body = f:read("*a")
    f:close()
    return body
end

local function connect(spec)
    -- "scheme connect_s read_s sni verify ip:port ..." (see cdnctl.upstream)
    local scheme, connect_s, read_s, sni, verify, peers =
        match(spec or "", "^(%S+) (%S+) (%S+) (%S+) (%S+) (.*)$")
    if not scheme then
        return nil, "bad relay spec"
    end
    local err
    for peer in gmatch(peers, "%S+") do
        local ip, port = match(peer, "^(.+):(%d+)$")
        local sock = tcp()
        sock:settimeouts((tonumber(connect_s) or 5) * 1000, (tonumber(read_s) or 30) * 1000,
            (tonumber(read_s) or 30) * 1000)
        local ok
        ok, err = sock:connect(ip, tonumber(port))
        if ok and scheme == "https" then
            ok, err = sock:sslhandshake(nil, sni, verify == "verify")
        end
        if ok then
            return sock
        end
        sock:close()
    end
    return nil, err or "no peer"
end

-- Relay listener, content phase: one fetch from the origin, interim responses skipped.
function _M.relay()
    local body = request_body()
    local upstream, err = connect(var.http_x_cdnctl_relay)
    if not body or not upstream then
        ngx.log(ngx.ERR, "cdnctl: relay: ", err or "cannot read the request body")
        return ngx.exit(502)
    end
    local lines = { var.request_method .. " " .. var.request_uri .. " HTTP/1.1" }
    for name, value in pairs(get_headers(100, true)) do
        if not NOT_FORWARDED[lower(name)] then
            if type(value) == "table" then
                for _, v in ipairs(value) do
                    lines[#lines + 1] = name .. ": " .. v
                end
            else
                lines[#lines + 1] = name .. ": " .. value
            end
        end
    end
    lines[#lines + 1] = "Connection: close"
    local ok
    ok, err = upstream:send(concat(lines, "\r\n") .. "\r\n\r\n" .. body)
    local status_line
    while ok do
        status_line, err = upstream:receive("*l")
        local code = status_line and tonumber(match(status_line, "^HTTP/%d%.%d (%d%d%d)"))
        if not code then
            ok = false
        elseif code >= 200 or code == 101 then
            break
        else
            repeat -- an interim response: its fields are dropped
                local line
                line, err = upstream:receive("*l")
                ok = line ~= nil
            until not ok or line == ""
        end
    end
    if not ok then
        upstream:close()
        ngx.log(ngx.ERR, "cdnctl: relay: no final response from the origin: ", err)
        return ngx.exit(502)
    end
    local down
    down, err = req_socket(true)
    if not down then
        upstream:close()
        ngx.log(ngx.ERR, "cdnctl: relay: ", err)
        return ngx.exit(502)
    end
    -- The origin closes after this response (Connection: close): relay until then.
    local data = status_line .. "\r\n"
    while data do
        if not down:send(data) then
            break
        end
        data = upstream:receiveany(65536)
    end
    upstream:close()
end

return _M
