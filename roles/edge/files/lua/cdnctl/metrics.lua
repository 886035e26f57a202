-- Per-tenant counters and histograms in the cdn_metrics shared dict, and their Prometheus
-- text exposition.
local ngx = ngx
local tostring = tostring
local floor = math.floor
local pairs = pairs
local ipairs = ipairs
local tonumber = tonumber
local concat = table.concat
local insert = table.insert
local sort = table.sort
local format = string.format
local match = string.match
local gsub = string.gsub

local dict = ngx.shared.cdn_metrics

local _M = {}

local BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }
local BUCKET_LABELS = {}
for i, b in ipairs(BUCKETS) do
    BUCKET_LABELS[i] = tostring(b)
end

local SEP = "\t"

-- Counters are summed per worker and flushed to the shared dict every second (and before
-- an exposition), so the request path takes no shared-dict lock for metrics.
local pending = {}
local pending_count = 0

local function incr(key, value)
    local current = pending[key]
    if current then
        pending[key] = current + value
    else
        pending[key] = value
        pending_count = pending_count + 1
    end
end

function _M.flush()
    if pending_count == 0 then
        return
    end
    local batch = pending
    pending = {}
    pending_count = 0
    for key, value in pairs(batch) do
        local ok, err = dict:incr(key, value, 0)
        if not ok then
            ngx.log(ngx.WARN, "cdnctl: metrics dict: ", err)
        end
    end
end

function _M.start_flusher()
    local ok, err = ngx.timer.every(1, _M.flush)
    if not ok then
        ngx.log(ngx.ERR, "cdnctl: cannot start the metrics flusher: ", err)
    end
end

function _M.record(tenant, status, cache_status, bytes, origin_seconds)
    local class = status >= 100 and (status - status % 100) / 100 .. "xx" or "0xx"
    incr("r" .. SEP .. tenant .. SEP .. class .. SEP .. cache_status, 1)
    incr("b" .. SEP .. tenant, bytes)
    if origin_seconds then
        for i, bound in ipairs(BUCKETS) do
            if origin_seconds <= bound then
                incr("h" .. SEP .. tenant .. SEP .. BUCKET_LABELS[i], 1)
            end
        end
        incr("hc" .. SEP .. tenant, 1)
        incr("hs" .. SEP .. tenant, origin_seconds)
    end
end

local function label(value)
    return (gsub(gsub(gsub(value, "\\", "\\\\"), "\n", "\\n"), "\"", "\\\""))
end

local function fmt(v)
    if v == floor(v) then
        return format("%d", v)
    end
    return format("%.6f", v)
end

function _M.render(config_meta)
    _M.flush()
    local requests, bytes, hist_tenants = {}, {}, {}
    local buckets, counts, sums = {}, {}, {}
    for _, key in ipairs(dict:get_keys(0)) do
        local value = dict:get(key)
        if value then
            local kind, rest = match(key, "^(%a+)\t(.*)$")
            if kind == "r" then
                local tenant, class, cache = match(rest, "^(.-)\t(.-)\t(.*)$")
                insert(requests, format(
                    "cdn_requests_total{tenant=\"%s\",status_class=\"%s\",cache_status=\"%s\"} %s",
                    label(tenant), class, label(cache), fmt(value)))
            elseif kind == "b" then
                insert(bytes, format("cdn_response_bytes_total{tenant=\"%s\"} %s",
                    label(rest), fmt(value)))
            elseif kind == "h" then
                local tenant, le = match(rest, "^(.-)\t(.*)$")
                buckets[tenant .. SEP .. le] = value
                hist_tenants[tenant] = true
            elseif kind == "hc" then
                counts[rest] = value
                hist_tenants[rest] = true
            elseif kind == "hs" then
                sums[rest] = value
            end
        end
    end
    sort(requests)
    sort(bytes)
    local out = {
        "# HELP cdn_requests_total Requests served, by tenant, status class and cache status.",
        "# TYPE cdn_requests_total counter",
    }
    for _, line in ipairs(requests) do
        insert(out, line)
    end
    insert(out, "# HELP cdn_response_bytes_total Bytes sent to clients, by tenant.")
    insert(out, "# TYPE cdn_response_bytes_total counter")
    for _, line in ipairs(bytes) do
        insert(out, line)
    end
    insert(out, "# HELP cdn_origin_response_seconds Time to get a response from the next tier.")
    insert(out, "# TYPE cdn_origin_response_seconds histogram")
    local tenants = {}
    for tenant in pairs(hist_tenants) do
        insert(tenants, tenant)
    end
    sort(tenants)
    for _, tenant in ipairs(tenants) do
        local l = label(tenant)
        for _, le in ipairs(BUCKET_LABELS) do
            insert(out, format("cdn_origin_response_seconds_bucket{tenant=\"%s\",le=\"%s\"} %s",
                l, le, fmt(buckets[tenant .. SEP .. le] or 0)))
        end
        local count = counts[tenant] or 0
        insert(out, format("cdn_origin_response_seconds_bucket{tenant=\"%s\",le=\"+Inf\"} %s",
            l, fmt(count)))
        insert(out, format("cdn_origin_response_seconds_sum{tenant=\"%s\"} %s", l,
            fmt(sums[tenant] or 0)))
        insert(out, format("cdn_origin_response_seconds_count{tenant=\"%s\"} %s", l, fmt(count)))
    end
    insert(out, "# HELP cdn_config_info The running bundle version.")
    insert(out, "# TYPE cdn_config_info gauge")
    if config_meta then
        insert(out, format("cdn_config_info{version=\"%s\"} 1", label(config_meta.version)))
    end
    insert(out, "# HELP cdn_config_tenants Tenants in the running bundle.")
    insert(out, "# TYPE cdn_config_tenants gauge")
    insert(out, "cdn_config_tenants " .. (config_meta and config_meta.tenants or 0))
    insert(out, "")
    return concat(out, "\n")
end

return _M
