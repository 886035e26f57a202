-- Node-wide settings (cdnctl.json + admin token), loaded once in the nginx master.
local cjson = require "cjson.safe"

local io_open = io.open
local tostring = tostring
local require = require
local randomseed = math.randomseed
local error = error
local gsub = string.gsub
local find = string.find
local match = string.match
local floor = math.floor
local tonumber = tonumber
local type = type
local ngx = ngx

local _M = {
    settings = nil,
    admin_token = nil,
}

function _M.read_file(path)
    local f, err = io_open(path, "rb")
    if not f then
        return nil, err
    end
    local data = f:read("*a")
    f:close()
    return data
end

local TIME_UNITS = { ms = 0.001, s = 1, m = 60, h = 3600, d = 86400, w = 604800,
    M = 2592000, y = 31536000 }

-- An nginx time ("7d", "1h30m", "90") in whole seconds, or nil.
function _M.seconds(value)
    if type(value) ~= "string" or not find(value, "^%d") then
        return nil
    end
    local total, at = 0, 1
    while at <= #value do
        local n, unit, next_at = match(value, "^(%d+)(%a*)()", at)
        if not n or (unit ~= "" and not TIME_UNITS[unit]) then
            return nil
        end
        total = total + tonumber(n) * (TIME_UNITS[unit] or 1)
        at = next_at
    end
    return floor(total)
end

-- Called from init_by_lua (master, before fork): workers inherit everything loaded here.
function _M.init(settings_file)
    local raw, err = _M.read_file(settings_file)
    if not raw then
        error("cdnctl: cannot read settings " .. settings_file .. ": " .. tostring(err))
    end
    local settings, derr = cjson.decode(raw)
    if not settings then
        error("cdnctl: bad settings " .. settings_file .. ": " .. tostring(derr))
    end
    local token, terr = _M.read_file(settings.token_file)
    if not token then
        error("cdnctl: cannot read admin token file: " .. tostring(terr))
    end
    settings.cache_inactive_seconds = _M.seconds(settings.cache_inactive)
    if not settings.cache_inactive_seconds then
        error("cdnctl: bad cache_inactive in " .. settings_file .. ": "
            .. tostring(settings.cache_inactive) .. " (an nginx time, e.g. 7d)")
    end
    token = gsub(token, "%s+$", "")
    if token == "" then
        error("cdnctl: admin token file is empty")
    end
    _M.settings = settings
    _M.admin_token = token

    require("cdnctl.dns").init(settings)
    local store = require "cdnctl.store"
    -- Preload every module so workers share the master's compiled copies.
    require "cdnctl.router"
    require "cdnctl.request_id"
    require "cdnctl.upstream"
    require "cdnctl.ttl"
    require "cdnctl.edge_headers"
    require "cdnctl.logphase"
    require "cdnctl.admin"
    require("cdnctl.certs").load_persisted()

    require("cdnctl.purge").load_generations()
    local ok, lerr = store.load_persisted()
    require("cdnctl.purge").load_index(store.meta() ~= nil)
    if not ok then
        ngx.log(ngx.ERR, "cdnctl: persisted bundle not loaded: ", lerr)
    elseif lerr then
        ngx.log(ngx.NOTICE, "cdnctl: ", lerr)
    end
end

function _M.init_worker()
    randomseed(ngx.now() * 1000 + ngx.worker.pid())
    require("cdnctl.request_id").reset()
    require("cdnctl.metrics").start_flusher()
    require("cdnctl.purge").start_index_saver()
end

return _M
