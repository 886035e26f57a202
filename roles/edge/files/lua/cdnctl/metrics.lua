-- Per-tenant counters and histograms in the cdn_metrics shared dict, and their Prometheus
-- text exposition.
local ngx = ngx
local tostring = tostring
local setmetatable = setmetatable
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
local collectgarbage = collectgarbage

local dict = ngx.shared.cdn_metrics

local _M = {}

local BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }
local BUCKET_LABELS = {}
for i, b in ipairs(BUCKETS) do
    BUCKET_LABELS[i] = tostring(b)
end

local SEP = "\t"

-- Counters are summed per worker and flushed to the shared dict every second (and before
-- an exposition), so the request path takes no shared-dict lock for metrics. The pending
-- sums are nested tables (tenant -> ...) so a request builds no key strings: the dict keys
-- ("r\ttenant\tclass\tcache", "b\ttenant", ...) are made once per flush.
local requests = {} -- tenant -> status class -> cache status -> count
local bytes_sent = {} -- tenant -> bytes
local histograms = {} -- tenant -> { count =, sum =, [bucket index] = count }
local origin_statuses = {} -- tenant -> origin status label -> count
local dirty = false

-- "2xx" etc. per status code, computed once per code.
local CLASSES = setmetatable({}, {
    __index = function(classes, status)
        local class = status >= 100 and (status - status % 100) / 100 .. "xx" or "0xx"
        classes[status] = class
        return class
    end,
})

-- The status label of an origin (next tier) response: the codes an operator acts on keep
-- their own series, any other code its class, so a tenant has at most about 20 series.
local ORIGIN_CODES = {
    [200] = true, [204] = true, [206] = true, [301] = true, [302] = true, [304] = true,
    [400] = true, [401] = true, [403] = true, [404] = true, [408] = true, [410] = true,
    [429] = true, [500] = true, [502] = true, [503] = true, [504] = true,
}
local ORIGIN_STATUSES = setmetatable({}, {
    __index = function(labels, status)
        local label = ORIGIN_CODES[status] and tostring(status) or CLASSES[status]
        labels[status] = label
        return label
    end,
})

local function incr(key, value)
    local ok, err = dict:incr(key, value, 0)
    if not ok then
        ngx.log(ngx.WARN, "cdnctl: metrics dict: ", err)
    end
end

function _M.flush()
    -- This worker's Lua heap, a gauge: what the config and caches cost each worker.
    local worker = ngx.worker.id()
    if worker then
        dict:set("m" .. SEP .. worker, collectgarbage("count") * 1024)
    end
    if not dirty then
        return
    end
    local reqs, bytes, hists, origins = requests, bytes_sent, histograms, origin_statuses
    requests, bytes_sent, histograms, origin_statuses = {}, {}, {}, {}
    dirty = false
    for tenant, classes in pairs(reqs) do
        for class, statuses in pairs(classes) do
            local prefix = "r" .. SEP .. tenant .. SEP .. class .. SEP
            for cache_status, n in pairs(statuses) do
                incr(prefix .. cache_status, n)
            end
        end
    end
    for tenant, n in pairs(bytes) do
        incr("b" .. SEP .. tenant, n)
    end
    for tenant, h in pairs(hists) do
        for i = 1, #BUCKETS do
            local n = h[i]
            if n then
                incr("h" .. SEP .. tenant .. SEP .. BUCKET_LABELS[i], n)
            end
        end
        incr("hc" .. SEP .. tenant, h.count)
        incr("hs" .. SEP .. tenant, h.sum)
    end
    for tenant, statuses in pairs(origins) do
        for status, n in pairs(statuses) do
            incr("o" .. SEP .. tenant .. SEP .. status, n)
        end
    end
end

-- Purge kinds as the purge API names them (purge.parse) -> the `kind` label.
local PURGE_KINDS = { urls = "url", prefix = "prefix", tag = "tag", all = "all" }

-- One applied purge request (admin path only, never the request path): straight into the
-- shared dict, so a series exists only for a tenant that purged, at most four per tenant.
function _M.purged(tenant, kind)
    local label = PURGE_KINDS[kind]
    if label then
        incr("p" .. SEP .. tenant .. SEP .. label, 1)
    end
end

function _M.start_flusher()
    local ok, err = ngx.timer.every(1, _M.flush)
    if not ok then
        ngx.log(ngx.ERR, "cdnctl: cannot start the metrics flusher: ", err)
    end
end

-- origin_seconds and origin_status are nil when no next tier answered (a cache HIT, or an
-- answer the edge gave itself).
function _M.record(tenant, status, cache_status, bytes, origin_seconds, origin_status)
    dirty = true
    local classes = requests[tenant]
    if not classes then
        classes = {}
        requests[tenant] = classes
    end
    local class = CLASSES[status]
    local statuses = classes[class]
    if not statuses then
        statuses = {}
        classes[class] = statuses
    end
    statuses[cache_status] = (statuses[cache_status] or 0) + 1
    bytes_sent[tenant] = (bytes_sent[tenant] or 0) + bytes
    if origin_seconds then
        local h = histograms[tenant]
        if not h then
            h = { count = 0, sum = 0 }
            histograms[tenant] = h
        end
        for i = 1, #BUCKETS do
            if origin_seconds <= BUCKETS[i] then
                h[i] = (h[i] or 0) + 1
            end
        end
        h.count = h.count + 1
        h.sum = h.sum + origin_seconds
    end
    if origin_status then
        local statuses = origin_statuses[tenant]
        if not statuses then
            statuses = {}
            origin_statuses[tenant] = statuses
        end
        local label = ORIGIN_STATUSES[origin_status]
        statuses[label] = (statuses[label] or 0) + 1
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

-- A gauge of every shared dict (`names`), labelled dict: what its `method` answers.
local function dict_gauge(out, names, metric, method, help)
    insert(out, "# HELP " .. metric .. " " .. help)
    insert(out, "# TYPE " .. metric .. " gauge")
    for _, name in ipairs(names) do
        local shared = ngx.shared[name]
        insert(out, format("%s{dict=\"%s\"} %d", metric, name, shared[method](shared)))
    end
end

function _M.render(config_meta)
    _M.flush()
    local requests, bytes, hist_tenants, origins, purges = {}, {}, {}, {}, {}
    local buckets, counts, sums, memory = {}, {}, {}, {}
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
            elseif kind == "o" then
                local tenant, status = match(rest, "^(.-)\t(.*)$")
                insert(origins, format("cdn_origin_responses_total{tenant=\"%s\",status=\"%s\"} %s",
                    label(tenant), status, fmt(value)))
            elseif kind == "p" then
                local tenant, purge_kind = match(rest, "^(.-)\t(.*)$")
                insert(purges, format("cdn_purges_total{tenant=\"%s\",kind=\"%s\"} %s",
                    label(tenant), purge_kind, fmt(value)))
            elseif kind == "m" then
                insert(memory, format("cdn_lua_memory_bytes{worker=\"%s\"} %s", label(rest),
                    fmt(floor(value))))
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
    sort(origins)
    insert(out, "# HELP cdn_origin_responses_total Responses from the next tier (shield or "
        .. "origin), by tenant and status code (rare codes by class).")
    insert(out, "# TYPE cdn_origin_responses_total counter")
    for _, line in ipairs(origins) do
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
    sort(purges)
    insert(out, "# HELP cdn_purges_total Purge requests applied, by tenant and kind (url, "
        .. "prefix, tag, all).")
    insert(out, "# TYPE cdn_purges_total counter")
    for _, line in ipairs(purges) do
        insert(out, line)
    end
    sort(memory)
    insert(out, "# HELP cdn_lua_memory_bytes Lua heap of each nginx worker, updated every second.")
    insert(out, "# TYPE cdn_lua_memory_bytes gauge")
    for _, line in ipairs(memory) do
        insert(out, line)
    end
    insert(out, "# HELP cdn_config_info The running bundle version.")
    insert(out, "# TYPE cdn_config_info gauge")
    if config_meta then
        insert(out, format("cdn_config_info{version=\"%s\"} 1", label(config_meta.version)))
    end
    insert(out, "# HELP cdn_config_tenants Tenants in the running bundle.")
    insert(out, "# TYPE cdn_config_tenants gauge")
    insert(out, "cdn_config_tenants " .. (config_meta and config_meta.tenants or 0))
    -- The shared dicts' sizes and free pages (space inside partly used pages not counted):
    -- an apply that finds no room in cdn_config is refused ("config dict: no memory").
    local names = {}
    for name in pairs(ngx.shared) do
        insert(names, name)
    end
    sort(names)
    dict_gauge(out, names, "cdn_shared_dict_capacity_bytes", "capacity",
        "Size of each shared dict (lua_shared_dict).")
    dict_gauge(out, names, "cdn_shared_dict_free_bytes", "free_space",
        "Free pages of each shared dict.")
    insert(out, "")
    return concat(out, "\n")
end

return _M
