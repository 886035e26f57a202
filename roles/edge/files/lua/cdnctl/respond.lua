-- JSON responses for the data plane and the admin API.
local cjson = require "cjson.safe"

local ngx = ngx
local pairs = pairs

local _M = {}

cjson.encode_number_precision(14)

function _M.json(status, doc, headers)
    ngx.status = status
    ngx.header["Content-Type"] = "application/json"
    ngx.header["Cache-Control"] = "no-store"
    if headers then
        for k, v in pairs(headers) do
            ngx.header[k] = v
        end
    end
    ngx.say(cjson.encode(doc))
    return ngx.exit(status)
end

return _M
