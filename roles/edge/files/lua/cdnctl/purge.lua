-- Purge in Lua, never ngx_cache_purge: a URL purge deletes the cache file
-- <cache_path>/<levels from the md5 tail>/<md5(key)> (and its slices); prefix and tag
-- purges walk an index of stored keys kept in cdn_purge (written in the log phase); purge
-- of everything bumps the tenant's cache generation, which is part of every cache key.
--
-- The cache outlives a restart, so the index does too: worker 0 saves it every
-- INDEX_SAVE_EVERY seconds and when it exits gracefully, and init loads it. After a stop
-- that did not save it (a crash, a fast shutdown), objects stored since the last save are
-- not indexed: until a tenant's next purge-all, its prefix and tag purges purge all of it
-- (a generation bump) rather than risk serving something a customer purged. The same holds
-- for a tenant whose objects could not be indexed because the index was full.
local policy = require "cdnctl.policy"
local fsutil = require "cdnctl.fsutil"
local node = require "cdnctl.node"
local cjson = require "cjson.safe"

local ngx = ngx
local md5 = ngx.md5
local unescape_uri = ngx.unescape_uri
local decode_args = ngx.decode_args
local find = string.find
local sub = string.sub
local match = string.match
local gmatch = string.gmatch
local concat = table.concat
local ipairs = ipairs
local pairs = pairs
local type = type
local tonumber = tonumber
local format = string.format
local floor = math.floor

local index = ngx.shared.cdn_purge
local state = ngx.shared.cdn_state

local _M = {}

local SEP = "\t"

local function file_for(key)
    local hash = md5(key)
    local settings = node.settings
    local parts = { settings.cache_path }
    local pos = #hash
    for _, width in ipairs(settings.cache_levels) do
        parts[#parts + 1] = sub(hash, pos - width + 1, pos)
        pos = pos - width
    end
    parts[#parts + 1] = hash
    return concat(parts, "/")
end
_M.file_for = file_for

-- Delete the cached object for `key` and any slices of it; returns true if anything was.
local function remove_key(key)
    local removed = fsutil.unlink(file_for(key))
    local size = node.settings.slice_size
    local i = 0
    while fsutil.unlink(file_for(key .. "|bytes=" .. i * size .. "-" .. (i + 1) * size - 1)) do
        removed = true
        i = i + 1
    end
    return removed
end

local function generation(id)
    return state:get("pg:" .. id) or 0
end

local FULL = "pi_full:" -- cdn_state: FULL .. id -> the tenant's generation when an entry failed

-- Log phase: remember a stored key with its tags (Surrogate-Key / Cache-Tag) until it can
-- no longer be served. A full index evicts nothing (an evicted entry would be an object
-- that prefix and tag purges cannot find): the tenant is marked instead, and until its
-- next purge-all its prefix and tag purges purge all of it.
function _M.remember(id, key, tags, keep_seconds)
    local value = " "
    if tags then
        for tag in gmatch(tags, "[^%s,]+") do
            value = value .. tag .. " "
        end
    end
    local ok, err = index:safe_set(id .. SEP .. key, value, keep_seconds)
    if not ok then
        local gen = generation(id)
        if state:get(FULL .. id) ~= gen then
            state:set(FULL .. id, gen)
            ngx.log(ngx.WARN, "cdnctl: purge index: ", err, " (raise the purge dict size); ",
                "tenant ", id, ": prefix and tag purges purge all of it until its next purge-all")
        end
    end
end

local function key_for_url(tenant, url)
    local raw_path, raw_query = match(url, "^([^?#]*)%??([^#]*)")
    local path = policy.normalise_path(unescape_uri(raw_path or "/"))
    local query = ""
    if raw_query and raw_query ~= "" then
        query = policy.query(tenant, decode_args(raw_query, 100))
    end
    return policy.cache_key(tenant.id, generation(tenant.id), path, query)
end

-- Calls fn(index_key, cache_key, tags) for each indexed key of this tenant's current
-- generation; index entries of older generations are dropped on the way.
local function each_indexed(id, fn)
    local head = id .. SEP
    local live = id .. "|" .. generation(id) .. "|"
    for _, ikey in ipairs(index:get_keys(0)) do
        if sub(ikey, 1, #head) == head then
            local key = sub(ikey, #head + 1)
            if sub(key, 1, #live) == live then
                fn(ikey, key, index:get(ikey) or " ", sub(key, #live + 1))
            else
                index:delete(ikey)
            end
        end
    end
end

function _M.urls(tenant, urls)
    local purged = 0
    for _, url in ipairs(urls) do
        local key = key_for_url(tenant, url)
        if remove_key(key) then
            purged = purged + 1
        end
        index:delete(tenant.id .. SEP .. key)
    end
    return purged
end

local INCOMPLETE = "pi_incomplete" -- cdn_state: set at init after an unsaved stop

-- Why the index may miss objects of this tenant that can still be served, or nil: it was
-- full when one was stored, or the node stopped without saving it. Both hold until the
-- tenant's next purge-all (its generation then moves on).
local function index_incomplete(id)
    local gen = generation(id)
    if state:get(FULL .. id) == gen then
        return "the purge index was full when objects of this tenant were stored (raise "
            .. "the purge dict size)"
    end
    if state:get(INCOMPLETE) and (state:get("pi_gen:" .. id) or 0) == gen then
        return "the purge index may miss objects stored before an unclean restart"
    end
    return nil
end

-- Deletes every indexed object of the tenant for which matches(path, tags) is true.
-- Returns the count, and a note when the index could not be trusted (see above).
local function purge_indexed(tenant, matches)
    local why = index_incomplete(tenant.id)
    if why then
        local purged, err = _M.all(tenant)
        return purged, err, why .. ": purged everything of this tenant"
    end
    local purged = 0
    each_indexed(tenant.id, function(ikey, key, tags, path)
        if matches(path, tags) then
            if remove_key(key) then
                purged = purged + 1
            end
            index:delete(ikey)
        end
    end)
    return purged
end

function _M.prefix(tenant, prefix)
    prefix = policy.escape_path(prefix) -- keys hold percent-encoded paths
    return purge_indexed(tenant, function(path)
        return sub(path, 1, #prefix) == prefix
    end)
end

function _M.tag(tenant, tag)
    local needle = " " .. tag .. " "
    return purge_indexed(tenant, function(_, tags)
        return find(tags, needle, 1, true) ~= nil
    end)
end

local GENERATIONS_FILE = "/purge_generations.json"
local INDEX_FILE = "/purge_index.tsv"
local INDEX_HEADER = "cdnctl purge index 1 "
local INDEX_SAVE_EVERY = 30

-- Writes the index (0600, atomically): a header line saying whether this is the final
-- save of a graceful exit, then "expires<TAB>tenant<TAB>cache key<TAB> tags " per line
-- (keys and tags never hold whitespace: paths and queries are percent-encoded).
function _M.save_index(final)
    ngx.update_time()
    local now = ngx.now()
    -- A tenant marked by a full index has objects no saved index lists: after a restart,
    -- treat the index as not whole (as after a crash) rather than forget the mark.
    for _, key in ipairs(state:get_keys(0)) do
        local id = sub(key, 1, #FULL) == FULL and sub(key, #FULL + 1)
        if id and state:get(key) == generation(id) then
            final = false
            break
        end
    end
    local lines = { INDEX_HEADER .. (final and "final" or "periodic") }
    for _, ikey in ipairs(index:get_keys(0)) do
        local value = index:get(ikey)
        local ttl = index:ttl(ikey)
        if value and ttl and ttl > 0 then
            lines[#lines + 1] = format("%d\t%s\t%s", floor(now + ttl), ikey, value)
        end
    end
    lines[#lines + 1] = ""
    return fsutil.write_private(node.settings.state_dir .. INDEX_FILE, concat(lines, "\n"))
end

-- init_by_lua: load the saved index unless the shared dict still holds it (a HUP reload).
-- `ran_before`: this node has served a bundle before (so its cache may hold objects).
function _M.load_index(ran_before)
    if state:get("pi_loaded") then
        return
    end
    state:set("pi_loaded", true)
    local raw = node.read_file(node.settings.state_dir .. INDEX_FILE)
    local final = raw and sub(raw, 1, #INDEX_HEADER + 5) == INDEX_HEADER .. "final"
    if not final and (raw or ran_before) then
        state:set(INCOMPLETE, true)
        -- The generation each tenant had then: a later bump means a purge-all happened.
        for _, key in ipairs(state:get_keys(0)) do
            local id = match(key, "^pg:(.+)$")
            if id then
                state:set("pi_gen:" .. id, state:get(key))
            end
        end
    end
    if not raw then
        return
    end
    ngx.update_time()
    local now = ngx.now()
    for expires, ikey, value in gmatch(raw, "\n(%d+)\t([^\t\n]+\t[^\t\n]+)\t([^\n]*)") do
        local ttl = tonumber(expires) - now
        if ttl > 0 then
            index:safe_set(ikey, value, ttl)
        end
    end
end

local function save_index_timer(premature)
    local saved, err = _M.save_index(premature)
    if not saved then
        ngx.log(ngx.ERR, "cdnctl: cannot save the purge index: ", err)
    end
end

-- init_worker: worker 0 saves the index at once (so a "final" save of the workers before a
-- reload no longer claims to be complete), every INDEX_SAVE_EVERY s, and on a graceful exit.
function _M.start_index_saver()
    if ngx.worker.id() ~= 0 then
        return
    end
    local ok, err = ngx.timer.at(0, save_index_timer)
    if ok then
        ok, err = ngx.timer.every(INDEX_SAVE_EVERY, save_index_timer)
    end
    if not ok then
        ngx.log(ngx.ERR, "cdnctl: cannot start the purge index saver: ", err)
    end
end

-- Tenant cache generations must survive a restart, or purged objects would come back.
local function persist_generations()
    local generations = {}
    for _, key in ipairs(state:get_keys(0)) do
        local id = match(key, "^pg:(.+)$")
        if id then
            generations[id] = state:get(key)
        end
    end
    return fsutil.write_private(node.settings.state_dir .. GENERATIONS_FILE,
        cjson.encode(generations))
end

-- init_by_lua: restore the generations persisted by purge-all.
function _M.load_generations()
    local raw = node.read_file(node.settings.state_dir .. GENERATIONS_FILE)
    local generations = raw and cjson.decode(raw)
    if type(generations) ~= "table" then
        return
    end
    for id, generation in pairs(generations) do
        if type(generation) == "number" and (state:get("pg:" .. id) or 0) < generation then
            state:set("pg:" .. id, generation)
        end
    end
end

-- Tenants gone from the config: bump their generations so nothing cached for them can be
-- served should they come back (their index entries are dropped lazily, or expire).
function _M.forget(ids)
    if #ids == 0 then
        return true
    end
    for _, id in ipairs(ids) do
        state:incr("pg:" .. id, 1, 0)
    end
    return persist_generations()
end

function _M.all(tenant)
    local purged = 0
    each_indexed(tenant.id, function(ikey)
        purged = purged + 1
        index:delete(ikey)
    end)
    state:incr("pg:" .. tenant.id, 1, 0)
    -- Workers hold each tenant's generation with the tenant, for one config epoch
    -- (store.lua): moving the epoch makes them read it again.
    state:incr("gen", 1, 0)
    local ok, err = persist_generations()
    if not ok then
        return nil, err
    end
    return purged
end

-- Limits of one purge request (README, "Admin API"). A path longer than the request line
-- nginx accepts (large_client_header_buffers 8k) can never have been cached.
local MAX_PATH = 8192
local MAX_TAG = 1024
local MAX_URLS = 1000
local KINDS = { "urls", "prefix", "tag", "all" }

local function check_path(what, path)
    if type(path) ~= "string" or sub(path, 1, 1) ~= "/" then
        return what .. ": must be a path starting with /"
    end
    if #path > MAX_PATH then
        return what .. ": " .. #path .. " bytes, longer than the limit of " .. MAX_PATH
    end
    return nil
end

-- Validates a purge request body: exactly one kind, within the limits. Returns kind and
-- argument, or nil and an error.
function _M.parse(body)
    if type(body) ~= "table" or type(body.tenant) ~= "string" then
        return nil, "body must be {\"tenant\": ID, ...}"
    end
    local kind
    for _, name in ipairs(KINDS) do
        if body[name] ~= nil then
            if kind then
                return nil, "one kind per request: both " .. kind .. " and " .. name
                    .. " given (send two requests)"
            end
            kind = name
        end
    end
    if kind == "urls" then
        local urls = body.urls
        if type(urls) ~= "table" or #urls == 0 then
            return nil, "urls: must be a non-empty list of paths"
        end
        if #urls > MAX_URLS then
            return nil, "urls: " .. #urls .. " paths, more than the limit of " .. MAX_URLS
                .. " per request (split them, or purge by prefix or tag)"
        end
        for _, u in ipairs(urls) do
            local err = check_path("urls", u)
            if err then
                return nil, err
            end
        end
        return "urls", urls
    elseif kind == "prefix" then
        local err = check_path("prefix", body.prefix)
        if err then
            return nil, err
        end
        return "prefix", body.prefix
    elseif kind == "tag" then
        local tag = body.tag
        if type(tag) ~= "string" or tag == "" or find(tag, "[%s,]") then
            return nil, "tag: must be one non-empty tag without spaces or commas"
        end
        if #tag > MAX_TAG then
            return nil, "tag: " .. #tag .. " bytes, longer than the limit of " .. MAX_TAG
        end
        return "tag", tag
    elseif kind == "all" then
        if body.all ~= true then
            return nil, "all: must be true"
        end
        return "all", true
    end
    return nil, "need one of urls (list), prefix (/...), tag or all: true"
end

return _M
