-- Running config: one shared dict, changed tenant by tenant, and an epoch.
--
-- Keys of cdn_config: "t:<id>" -> the tenant's JSON text, "h:<host>" / "w:<domain>" ->
-- tenant id, "index" -> the last full bundle without its tenants (format, version, hosts,
-- wildcards; a delta drops it, and it is then made from the manifest when an apply needs
-- it), "mdir", "mstates" and "mp:<n>" -> the running bundle's manifest, whose SHA-256 is the
-- running version, in pieces (see manifest_store.lua), "applied" -> every tenant of the
-- last full bundle with its fingerprint (the SHA-256 of its text, which tells a changed
-- tenant) and digest, packed in one string (see pack_applied), "applied_since" -> the
-- same for the tenants deltas changed or removed since, "meta" -> {version, content,
-- commit, applied_at, tenants, deltas}.
-- ("f:<id>" held one fingerprint each before "applied" existed, "digests" the
-- {version, tenants: {id: digest}} document before the manifest did, "manifest" the
-- manifest in one string before it was kept in pieces.)
--
-- A delta (apply_delta) names the base version it applies to, the tenants it adds or
-- changes, the ones it removes and the host index entries that change; it is applied only
-- over exactly that base, and only if the running manifest patched with it has exactly its
-- target version, so an edge that took a delta runs the same bytes a full apply of the
-- target would have given it. It is persisted next to the last full bundle and replayed
-- on start; after MAX_DELTAS of them the edge asks for a full bundle.
--
-- An apply validates the whole bundle before it writes anything, but decodes only the
-- tenants whose text differs from the running one (by fingerprint: a rotated secret
-- changes the text, not the compiled digest), and writes only what changed: a commit
-- that touches one tenant of 100k costs one tenant's work, not 100k. Writes go in an order
-- that never leaves a host pointing at a missing tenant (tenants, then hosts, then
-- removals); each key changes atomically, so while an apply writes, a request sees each
-- tenant either as it was or as it will be. A failed write or persist rolls back every
-- write before it. The epoch (cdn_state "gen") moves last: each worker's cache of
-- prepared tenants is keyed by it, so no request decodes JSON on a warm cache and none
-- sees a stale tenant after the apply.
local cjson = require "cjson.safe"
local node = require "cdnctl.node"
local bundle = require "cdnctl.bundle"
local fsutil = require "cdnctl.fsutil"
local manifest = require "cdnctl.manifest"
local manifest_store = require "cdnctl.manifest_store"
local policy = require "cdnctl.policy"
local purge = require "cdnctl.purge"
local sha256 = require "cdnctl.sha256"

local ngx = ngx
local pairs = pairs
local ipairs = ipairs
local type = type
local assert = assert
local tostring = tostring
local tonumber = tonumber
local find = string.find
local pcall = pcall
local collectgarbage = collectgarbage
local sub = string.sub
local concat = table.concat
local null = cjson.null

local state = ngx.shared.cdn_state
local dict = ngx.shared.cdn_config

local _M = {}

-- This worker's prepared tenants and host lookups, valid for one epoch: plain tables, so a
-- warm lookup builds no key string. Emptied when the epoch moves, and when CACHE_MAX
-- entries pile up (a client making up Host headers cannot grow it without bound).
local CACHE_MAX = 20000
local cache_gen, cached_hosts, cached_tenants, cached = nil, {}, {}, 0

local function cache_for(gen)
    if gen ~= cache_gen or cached >= CACHE_MAX then
        cache_gen, cached_hosts, cached_tenants, cached = gen, {}, {}, 0
    end
end

local BUNDLE_FILE = "/bundle.json" -- the bundle exactly as applied
local META_FILE = "/bundle.meta.json" -- commit and time of that apply, deltas since
local DELTA_FILE = "/bundle.delta.%d.json" -- delta n over that bundle, exactly as applied
local MAX_DELTAS = 100
local INDEX_PREFIXES = { hosts = "h:", wildcards = "w:" }

-- A whole file in one read of its size: read("*a") grows its buffer by doubling, and
-- LuaJIT refuses a buffer of 2 GiB ("not enough memory" for a 1 GiB bundle of 1M tenants).
local function read_whole(path)
    local f, err = io.open(path, "rb")
    if not f then
        return nil, err
    end
    local size = f:seek("end")
    f:seek("set")
    local data = size > 0 and f:read(size) or ""
    f:close()
    if not data or #data ~= size then
        return nil, path .. ": short read"
    end
    return data
end

local function or_null(v)
    if v == nil then
        return null
    end
    return v
end

-- The prepared tenant (policy.prepare) with its cache generation (`purge_generation`, part
-- of every cache key; a purge-all moves it and the epoch), or nil.
function _M.tenant_by_id(id, gen)
    gen = gen or state:get("gen")
    if not gen or not id then
        return nil
    end
    cache_for(gen)
    local t = cached_tenants[id]
    if t then
        return t
    end
    local raw = dict:get("t:" .. id)
    if not raw then
        return nil
    end
    t = policy.prepare(cjson.decode(raw))
    t.purge_generation = state:get("pg:" .. id) or 0
    cached_tenants[id] = t
    cached = cached + 1
    return t
end

-- Exact host first, then the wildcard of its parent domain (a.b.test -> b.test).
function _M.tenant_for_host(host)
    local gen = state:get("gen")
    if not gen then
        return nil
    end
    cache_for(gen)
    local t = cached_hosts[host]
    if t ~= nil then
        return t or nil
    end
    -- Only letters, digits, "-" and "." can name a tenant ("*.x.test" or "a@b" never do).
    local id = not find(host, "[^%w%.%-]") and dict:get("h:" .. host)
    if id == false then
        cached_hosts[host] = false
        cached = cached + 1
        return nil
    end
    if not id then
        local dot = find(host, ".", 1, true)
        if dot then
            id = dict:get("w:" .. sub(host, dot + 1))
        end
    end
    t = id and _M.tenant_by_id(id, gen) or false
    cached_hosts[host] = t
    cached = cached + 1
    return t or nil
end

-- The running manifest text (see manifest.lua), or nil.
function _M.manifest()
    return manifest_store.text(dict) or dict:get("manifest")
end

-- The JSON {"version", "tenants": {id: digest}} of the running config, or nil.
function _M.digests_json()
    local text = _M.manifest()
    local meta = text and _M.meta()
    if meta then
        return manifest.digests_json(text, meta.version)
    end
    return dict:get("digests") -- written by a cdnctl without manifests
end

function _M.meta()
    local raw = dict:get("meta")
    return raw and cjson.decode(raw) or nil
end

-- In the admin handler, give the event loop a turn every few milliseconds so a large
-- bundle does not stall this worker's other requests (init_by_lua cannot yield, and need
-- not). ngx.sleep(0) does not yield without OpenResty's nginx patch: sleep 1 ms.
local function pacer()
    -- (a worker thread has no ngx.sleep, and need not yield: see _M.apply)
    if not ngx.sleep or ngx.get_phase() ~= "content" then
        return function() end
    end
    ngx.update_time()
    local last = ngx.now()
    local calls = 0
    return function()
        calls = calls + 1
        if calls % 256 == 0 then
            ngx.update_time()
            if ngx.now() - last >= 0.005 then
                ngx.sleep(0.001)
                ngx.update_time()
                last = ngx.now()
            end
        end
    end
end

-- Writes with undo: a failed write restores every key written before it. A table read by
-- module functions, not closures (see bundle.parts_of: traces would keep the undo list).
local function journal()
    return { keys = {}, previous = {}, n = 0 }
end

local function journal_set(j, key, value, previous)
    local ok, err = dict:safe_set(key, value)
    if not ok then
        return nil, "config dict: " .. tostring(err) .. " (raise the config dict size)"
    end
    local n = j.n + 1
    j.n = n
    j.keys[n], j.previous[n] = key, previous
    return true
end

local function journal_rollback(j)
    local keys, previous_of = j.keys, j.previous
    for i = j.n, 1, -1 do
        local key, previous = keys[i], previous_of[i]
        if previous then
            dict:safe_set(key, previous)
        else
            dict:delete(key)
        end
    end
end

local function fail(j, err)
    journal_rollback(j)
    return nil, err
end

-- The fingerprints and digests of the running tenants, as one string (per tenant: 32 raw
-- bytes, id, space, digest, newline) rather than one key each: an apply reads them back
-- with one dict:get whichever worker it lands on, and writes one key instead of one per
-- tenant. Unpacked only during an apply: kept as tables, they would hold hundreds of
-- thousands of live strings, and LuaJIT's string table grows with them (it shrinks by half
-- per GC cycle, and only once they are gone), so every string a request makes would cost a
-- cache miss in a table of megabytes (an edge with 100k tenants served HITs at 0.88-0.93
-- of one with 3 while a worker kept such tables).
local function pack_applied(fingerprints, digests)
    local out, n = {}, 0
    for id, fingerprint in pairs(fingerprints) do
        local digest = digests[id]
        out[n + 1], out[n + 2], out[n + 3] = fingerprint, id, " "
        out[n + 4], out[n + 5] = digest ~= null and digest or "", "\n"
        n = n + 5
    end
    return concat(out)
end

-- A delta appends its tenants to the packed string (a later entry wins), and a removed
-- tenant as a tombstone: any 32 bytes, id, " -\n".
local TOMBSTONE = string.rep("\0", 32)

local function unpack_applied(packed, fingerprints, digests)
    local pos, len = 1, #packed
    while pos < len do
        local space = find(packed, " ", pos + 32, true)
        local nl = find(packed, "\n", space, true)
        local id = sub(packed, pos + 32, space - 1)
        local digest = nl > space + 1 and sub(packed, space + 1, nl - 1) or null
        if digest == "-" then
            fingerprints[id], digests[id] = nil, nil
        else
            fingerprints[id], digests[id] = sub(packed, pos, pos + 31), digest
        end
        pos = nl + 1
    end
    return fingerprints, digests
end

-- The host indexes of a bundle's skeleton text, its version blanked out.
local function index_text(skeleton_text)
    local at = find(skeleton_text, '"version":"', 1, true)
    if not at then
        return skeleton_text
    end
    local close = find(skeleton_text, '"', at + 11, true)
    return sub(skeleton_text, 1, at + 10) .. sub(skeleton_text, close or -1)
end

-- The running config's {index = {hosts, wildcards}, digests = {id: digest},
-- fingerprints = {id: sha256 of the tenant's text} or nil when only the dict has them}.
-- When the new bundle's host indexes are the running ones (most commits), they are not
-- decoded again.
local function running_state(parts)
    local running_text = dict:get("index")
    if not running_text then -- a delta ran since the last full bundle
        local text, meta = _M.manifest(), _M.meta()
        running_text = text and meta and manifest.index_text(text, meta.version)
    end
    local index
    if running_text and index_text(running_text) == index_text(parts.skeleton_text) then
        index = parts.skeleton
    else
        index = cjson.decode(running_text or "null")
        if type(index) ~= "table" then
            index = { hosts = {}, wildcards = {} }
        end
    end
    local index_of = { hosts = index.hosts, wildcards = index.wildcards }
    local packed = dict:get("applied")
    if packed then
        local fingerprints, digests = unpack_applied(packed, {}, {})
        unpack_applied(dict:get("applied_since") or "", fingerprints, digests)
        return { index = index_of, digests = digests, fingerprints = fingerprints }
    end
    local digests = cjson.decode(dict:get("digests") or "null")
    return { index = index_of, digests = type(digests) == "table" and digests.tenants or {} }
end

-- What differs from the running config. A tenant whose text has the running fingerprint
-- is unchanged and is neither copied nor decoded; every other one is decoded and checked.
-- Returns {present = {id: position}, changed = {id: {domains}}, texts = {id: text} of the
-- changed ones, digests, fingerprints}.
local function diff_tenants(parts, running, pace)
    local present, changed, texts, digests, fingerprints = {}, {}, {}, {}, {}
    local ids, decoded = parts.ids, parts.decoded
    local running_fingerprints, running_digests = running.fingerprints, running.digests
    for i = 1, parts.count do
        local id = ids[i]
        if present[id] then
            return nil, "tenants: duplicate id " .. id
        end
        present[id] = i
        local fingerprint = bundle.fingerprint(parts, i)
        fingerprints[id] = fingerprint
        local old
        if running_fingerprints then
            old = running_fingerprints[id]
        elseif running_digests[id] ~= nil then -- a tenant new to the node has none
            old = dict:get("f:" .. id)
        end
        if old == fingerprint and running_digests[id] ~= nil then
            digests[id] = running_digests[id]
        else
            local text = bundle.text(parts, i)
            local t = decoded[i]
            if t == nil then
                local err
                t, err = cjson.decode(text)
                if t == nil then
                    return nil, "tenant " .. id .. ": invalid JSON: " .. tostring(err)
                end
            end
            local terr = bundle.check_tenant(id, t)
            if terr then
                return nil, "tenant " .. id .. ": " .. terr
            end
            -- only the domains are read again (check_index): the rest is garbage at once,
            -- not 100k live tables for the collector to traverse
            changed[id] = { domains = t.domains }
            texts[id] = text
            digests[id] = t.digest or null
        end
        pace()
    end
    return { present = present, changed = changed, texts = texts, digests = digests,
        fingerprints = fingerprints }
end

-- The meta file first: if the bundle's rename then fails, the old bundle stays and its
-- version no longer matches the meta (load_persisted ignores such a meta file).
-- `body_file`: where nginx wrote the request body, moved into place instead of written.
local function persist(raw, meta, body_file)
    local dir = node.settings.state_dir
    local ok, err = fsutil.write_private(dir .. META_FILE, cjson.encode(meta))
    if ok and not (body_file and fsutil.move_private(body_file, dir .. BUNDLE_FILE)) then
        ok, err = fsutil.write_private(dir .. BUNDLE_FILE, raw)
    end
    return ok, err
end

-- Writes what changed (tenants, then hosts, then the running index and meta). Returns the
-- journal, to be finished or rolled back, or nil, error (already rolled back).
local function write_changes(parts, diff, running, meta, verified, pace)
    local j = journal()
    local ok, err
    for id in pairs(diff.changed) do
        -- A tenant new to this node has no previous value to restore on a rollback.
        local running_tenant = running.digests[id] ~= nil
        local key = "t:" .. id
        ok, err = journal_set(j, key, diff.texts[id], running_tenant and dict:get(key))
        if not ok then
            return fail(j, err)
        end
        pace()
    end
    j.stale = {}
    for kind, prefix in pairs(INDEX_PREFIXES) do
        local new, old = parts.skeleton[kind], running.index[kind]
        for host, id in pairs(new) do
            if old[host] ~= id then
                ok, err = journal_set(j, prefix .. host, id, old[host] or false)
                if not ok then
                    return fail(j, err)
                end
                pace()
            end
        end
        for host in pairs(old) do
            if new[host] == nil then
                j.stale[#j.stale + 1] = prefix .. host
            end
        end
    end
    j.removed = {}
    for id in pairs(running.digests) do
        if not diff.present[id] then
            j.removed[#j.removed + 1] = id
            j.stale[#j.stale + 1] = "t:" .. id
        end
    end
    if not running.fingerprints then -- a dict written before "applied": its "f:" keys go
        for id in pairs(running.digests) do
            j.stale[#j.stale + 1] = "f:" .. id
        end
    end
    for _, key in ipairs({ "digests", "manifest", "applied_since" }) do -- (see the header)
        j.stale[#j.stale + 1] = key
    end
    local pieces, perr = manifest_store.build(dict, verified, meta.version)
    if not pieces then
        return fail(j, perr)
    end
    for _, key in ipairs(manifest_store.keys(dict)) do -- the running manifest's pieces
        j.stale[#j.stale + 1] = key
    end
    for key, value in pairs(pieces) do
        ok, err = journal_set(j, key, value, manifest_store.running_key(key) and dict:get(key))
        if not ok then
            return fail(j, err)
        end
    end
    for key, value in pairs({ index = parts.skeleton_text,
        applied = pack_applied(diff.fingerprints, diff.digests),
        meta = cjson.encode(meta) })
    do
        ok, err = journal_set(j, key, value, dict:get(key) or false)
        if not ok then
            return fail(j, err)
        end
    end
    return j
end

-- Validate everything, write the difference, persist (tmp + rename, 0600; not when loading
-- what is persisted), then drop what is gone and move the epoch. A failure at any step
-- leaves the running config and the persisted bundle as they were. Returns the response
-- document, or nil, error, HTTP status.
local function apply_now(raw, meta, from_disk, body_file)
    local pace = pacer()
    local parts, err = bundle.split(raw, pace)
    if not parts then
        return nil, err
    end
    local serr = bundle.check_skeleton(parts.skeleton)
    if serr then
        return nil, serr
    end
    local running = running_state(parts)
    local diff, derr = diff_tenants(parts, running, pace)
    if not diff then
        return nil, derr
    end
    local ierr = bundle.check_index(parts.skeleton, diff.present, diff.changed, running.index)
    if ierr then
        return nil, ierr
    end
    local verified, verr = bundle.verified_manifest(parts, diff.digests)
    if not verified then
        return nil, verr
    end
    local previous = _M.meta()
    meta.version = parts.skeleton.version
    meta.tenants = parts.count
    -- The exact bytes, secrets included: a rollout re-sends a bundle whose version is the
    -- same but whose resolved secrets changed (ansible/tenants.yml compares this).
    meta.content = "sha256:" .. sha256.hex(raw)
    local j, werr = write_changes(parts, diff, running, meta, verified, pace)
    if not j then
        state:incr("gen", 1, 0) -- workers may have cached what was rolled back
        return nil, werr, 500
    end
    if not from_disk then
        local ok, perr = persist(raw, meta, body_file)
        if not ok then
            journal_rollback(j)
            state:incr("gen", 1, 0)
            return nil, "persist failed: " .. perr, 500
        end
    end
    for _, key in ipairs(j.stale) do
        dict:delete(key)
    end
    state:incr("gen", 1, 0)
    local changed = 0
    for _ in pairs(diff.changed) do
        changed = changed + 1
    end
    return {
        version = meta.version,
        previous = previous and previous.version or null,
        tenants = parts.count,
        changed = changed,
        removed = #j.removed,
        removed_ids = j.removed, -- for purge.forget (see forget_removed)
    }
end

-- A delta's own fields: base, target version and content (sha256:<64 hex> each), the host
-- index entries that change (host -> tenant id, or null to drop it), removed tenant ids.
local function check_delta_skeleton(d)
    if type(d) ~= "table" then
        return "delta must be a JSON object"
    end
    if d.format ~= 1 then
        return "unsupported bundle format " .. tostring(d.format) .. " (expected 1)"
    end
    for _, field in ipairs({ "base", "version", "content" }) do
        local v = d[field]
        if type(v) ~= "string" or not find(v, "^sha256:%x+$") or #v ~= 71 then
            return field .. ": must be sha256:<64 hex>"
        end
    end
    for kind in pairs(INDEX_PREFIXES) do
        if type(d[kind]) ~= "table" then
            return kind .. ": must be an object of host -> tenant id (or null to drop it)"
        end
        for host, id in pairs(d[kind]) do
            if type(host) ~= "string" or (type(id) ~= "string" and id ~= null) then
                return kind .. ": " .. tostring(host) .. ": must map to a tenant id or null"
            end
        end
    end
    if type(d.removed) ~= "table" then
        return "removed: must be a list of tenant ids"
    end
    for i, id in ipairs(d.removed) do
        if type(id) ~= "string" then
            return "removed[" .. (i - 1) .. "]: must be a tenant id"
        end
    end
    return nil
end

local function domains_of(text)
    local t = cjson.decode(text)
    return type(t) == "table" and type(t.domains) == "table" and t.domains or {}
end

-- The delta's tenants, decoded and checked: {changed = {id: decoded}, texts, fingerprints,
-- old = {id: running text} of those already running, added = count}.
local function delta_tenants(parts, pace)
    local changed, texts, fingerprints, old, added = {}, {}, {}, {}, 0
    for i = 1, parts.count do
        local id = parts.ids[i]
        if changed[id] then
            return nil, "tenants: duplicate id " .. id
        end
        local text = bundle.text(parts, i)
        local t, err = parts.decoded[i], nil
        if t == nil then
            t, err = cjson.decode(text)
            if t == nil then
                return nil, "tenant " .. id .. ": invalid JSON: " .. tostring(err)
            end
        end
        local terr = bundle.check_tenant(id, t)
        if terr then
            return nil, "tenant " .. id .. ": " .. terr
        end
        if type(t.digest) ~= "string" then
            return nil, "tenant " .. id .. ": digest: a delta's tenants need their digest"
        end
        changed[id], texts[id], fingerprints[id] = t, text, bundle.fingerprint(parts, i)
        old[id] = dict:get("t:" .. id)
        if not old[id] then
            added = added + 1
        end
        pace()
    end
    return { changed = changed, texts = texts, fingerprints = fingerprints, old = old,
        added = added }
end

-- The host index entries the delta changes, checked against the running index: every
-- changed tenant's domains map to it afterwards, no domain it (or a removed tenant) no
-- longer lists still does, and no entry of a tenant the delta leaves alone moves.
-- Returns {hosts = {host: id or false}, wildcards = ...} or nil, error.
local function delta_index(d, tenants, removed)
    local edits = { hosts = {}, wildcards = {} }
    local changed = tenants.changed
    for kind, prefix in pairs(INDEX_PREFIXES) do
        for host, id in pairs(d[kind]) do
            local current = dict:get(prefix .. host)
            if current ~= nil and not changed[current] and not removed[current] then
                return nil, kind .. ": " .. host .. " belongs to tenant " .. current
                    .. ", which this delta neither changes nor removes"
            end
            if id == null then
                if current == nil then
                    return nil, kind .. ": " .. host .. " is dropped but is not in the running "
                        .. "index"
                end
                edits[kind][host] = false
            elseif not changed[id] then
                return nil, kind .. ": " .. host .. " maps to tenant " .. id
                    .. ", which this delta does not carry"
            else
                edits[kind][host] = id
            end
        end
    end
    local function owner(domain)
        local kind, host = "hosts", domain
        if sub(domain, 1, 2) == "*." then
            kind, host = "wildcards", sub(domain, 3)
        end
        local id = edits[kind][host]
        if id == nil then
            return dict:get(INDEX_PREFIXES[kind] .. host)
        end
        return id or nil
    end
    for id, t in pairs(changed) do
        local listed = {}
        for _, domain in ipairs(t.domains) do
            listed[domain] = true
            local o = owner(domain)
            if o ~= id then
                return nil, "hosts index: domain " .. domain .. " of tenant " .. id
                    .. " maps to " .. tostring(o)
            end
        end
        for _, domain in ipairs(tenants.old[id] and domains_of(tenants.old[id]) or {}) do
            if not listed[domain] and owner(domain) == id then
                return nil, "hosts index: domain " .. domain .. ", which tenant " .. id
                    .. " no longer lists, still maps to it"
            end
        end
    end
    for id, text in pairs(removed) do
        for _, domain in ipairs(domains_of(text)) do
            if owner(domain) == id then
                return nil, "hosts index: domain " .. domain .. " of removed tenant " .. id
                    .. " still maps to it"
            end
        end
    end
    return edits
end

-- Persist delta number `n`, then the meta naming it (see persist).
local function persist_delta(raw, meta, body_file, n)
    local dir = node.settings.state_dir
    local path = dir .. string.format(DELTA_FILE, n)
    local ok, err = true, nil
    if not (body_file and fsutil.move_private(body_file, path)) then
        ok, err = fsutil.write_private(path, raw)
    end
    if ok then
        ok, err = fsutil.write_private(dir .. META_FILE, cjson.encode(meta))
    end
    return ok, err
end

-- Check the delta against the running config and its target version, write it, persist
-- it, then drop what is gone and move the epoch, like apply_now. 409 when it does not
-- apply to what runs here (the sender then sends the full bundle), 400 when it is wrong.
local function apply_delta_now(raw, meta, from_disk, body_file)
    local pace = pacer()
    local parts, err = bundle.split(raw, pace, check_delta_skeleton)
    if not parts then
        return nil, err
    end
    local d = parts.skeleton
    local serr = check_delta_skeleton(d)
    if serr then
        return nil, serr
    end
    local previous = _M.meta()
    local running_version = previous and previous.version
    if d.base ~= running_version then
        return nil, "delta base " .. d.base .. " is not the running version "
            .. tostring(running_version or "(none)") .. ": send the full bundle", 409
    end
    if not manifest_store.present(dict) then
        return nil, "the running config was applied by a cdnctl without deltas: send the "
            .. "full bundle", 409
    end
    local deltas = previous.deltas or 0
    if not from_disk and deltas >= MAX_DELTAS then
        return nil, MAX_DELTAS .. " deltas applied since the last full bundle: send the full "
            .. "bundle", 409
    end
    local tenants, terr = delta_tenants(parts, pace)
    if not tenants then
        return nil, terr
    end
    local removed, tenant_edits = {}, {}
    for id, t in pairs(tenants.changed) do
        tenant_edits[id] = t.digest
    end
    for _, id in ipairs(d.removed) do
        if tenants.changed[id] or removed[id] then
            return nil, "removed: tenant " .. id .. " is listed twice or also in tenants"
        end
        removed[id] = dict:get("t:" .. id)
        if not removed[id] then
            return nil, "removed: tenant " .. id .. " is not running here"
        end
        tenant_edits[id] = false
    end
    local edits, ierr = delta_index(d, tenants, removed)
    if not edits then
        return nil, ierr
    end
    local target, merr = manifest_store.patch(dict, { tenants = tenant_edits,
        hosts = edits.hosts, wildcards = edits.wildcards }, running_version)
    if not target then
        return nil, merr, 409
    end
    local got = target.version
    if got ~= d.version then
        return nil, "version: the running " .. d.base .. " with this delta gives " .. got
            .. ", not the delta's target " .. d.version .. ": make the delta again from the "
            .. "bundle the edge runs, or send the full bundle"
    end
    meta.version, meta.content = d.version, d.content
    meta.tenants = previous.tenants + tenants.added - #d.removed
    meta.deltas = deltas + 1
    local j = journal()
    local ok
    for id in pairs(tenants.changed) do
        ok, err = journal_set(j, "t:" .. id, tenants.texts[id], tenants.old[id])
        if not ok then
            return fail(j, err)
        end
    end
    j.stale = {}
    for kind, prefix in pairs(INDEX_PREFIXES) do
        for host, id in pairs(edits[kind]) do
            if id then
                ok, err = journal_set(j, prefix .. host, id, dict:get(prefix .. host) or false)
                if not ok then
                    return fail(j, err)
                end
            else
                j.stale[#j.stale + 1] = prefix .. host
            end
        end
    end
    local since = dict:get("applied_since")
    local appended, n = { since or "" }, 1
    for id, fingerprint in pairs(tenants.fingerprints) do
        appended[n + 1], appended[n + 2], appended[n + 3] = fingerprint, id, " "
        appended[n + 4], appended[n + 5] = tenants.changed[id].digest, "\n"
        n = n + 5
    end
    local removed_ids = {}
    for id in pairs(removed) do
        removed_ids[#removed_ids + 1] = id
        j.stale[#j.stale + 1] = "t:" .. id
        appended[n + 1], appended[n + 2], appended[n + 3] = TOMBSTONE, id, " -\n"
        n = n + 3
    end
    for key, value in pairs(target.writes) do
        ok, err = journal_set(j, key, value, manifest_store.running_key(key) and dict:get(key))
        if not ok then
            return fail(j, err)
        end
    end
    for _, key in ipairs(target.stale) do
        j.stale[#j.stale + 1] = key
    end
    j.stale[#j.stale + 1] = "index" -- made from the manifest when needed (see the header)
    for key, value in pairs({ applied_since = { concat(appended), since },
        meta = { cjson.encode(meta), dict:get("meta") } })
    do
        ok, err = journal_set(j, key, value[1], value[2] or false)
        if not ok then
            return fail(j, err)
        end
    end
    if not from_disk then
        local pok, perr = persist_delta(raw, meta, body_file, meta.deltas)
        if not pok then
            journal_rollback(j)
            state:incr("gen", 1, 0)
            return nil, "persist failed: " .. tostring(perr), 500
        end
    end
    for _, key in ipairs(j.stale) do
        dict:delete(key)
    end
    state:incr("gen", 1, 0)
    local changed = 0
    for _ in pairs(tenants.changed) do
        changed = changed + 1
    end
    return {
        version = meta.version,
        previous = running_version,
        tenants = meta.tenants,
        changed = changed,
        removed = #removed_ids,
        removed_ids = removed_ids,
        delta = true,
    }
end

local function locked(fn, ...)
    if not state:add("apply_lock", true, 600) then
        return nil, "another config apply is in progress", 409
    end
    local ok, result, err, status = pcall(fn, ...)
    state:delete("apply_lock")
    if not ok then
        return nil, "apply failed: " .. tostring(result), 500
    end
    return result, err, status
end

-- An apply of a large bundle leaves a lot of garbage (the body, 100k ids and fingerprints):
-- collect it now, in small steps between requests, rather than during the next apply. Then
-- a few more cycles, cheap once the garbage is gone: the apply's strings grew LuaJIT's
-- string table, which shrinks by half per cycle, and while it is big every string a
-- request makes costs a cache miss (a HIT makes a dozen). Under load, cycles come only
-- every few hundred thousand requests.
local GC_CYCLES = 16

local function collect_garbage(premature)
    local cycles = 0
    for _ = 1, 100000 do
        if premature then
            return
        end
        if collectgarbage("step", 1024) then
            cycles = cycles + 1
            if cycles >= GC_CYCLES then
                return
            end
        end
        ngx.sleep(0.001)
    end
end

-- A removed tenant's cache is purged, so a tenant added back later starts empty. Done by
-- the caller of an apply: the apply itself may have run in a worker thread.
local function forget_removed(result)
    local ids = result.removed_ids
    result.removed_ids = nil
    local purged, perr = purge.forget(ids or {})
    if not purged then
        ngx.log(ngx.ERR, "cdnctl: cannot persist purge generations: ", perr)
    end
    return result
end

-- The thread pool an apply runs in (nginx.conf: thread_pool), off the event loop.
local APPLY_POOL = "cdn_apply"

-- In a worker thread of APPLY_POOL (its own Lua VM: no init ran there, no ngx.log, no
-- ngx.sleep; the shared dicts are the workers'): the apply, as JSON {result} or {error,
-- status}. `raw`: the body, or nil to read it from `body_file`.
-- The apply thread's nice value: its CPU goes to requests first when both want it (Linux
-- sets it per thread).
local APPLY_NICE = 10
local niced = false

local function nice_this_thread()
    niced = true
    local ffi = require "ffi"
    pcall(ffi.cdef, "int gettid(void); int setpriority(int which, unsigned int who, int prio);")
    pcall(function()
        ffi.C.setpriority(0, ffi.C.gettid(), APPLY_NICE) -- PRIO_PROCESS of a tid: that thread
    end)
end

function _M.thread_apply(settings, raw, body_file, meta, delta)
    node.settings = settings
    if not niced then
        nice_this_thread()
    end
    if raw == nil then
        local err
        raw, err = read_whole(body_file)
        if not raw then
            return cjson.encode({ error = "cannot read the request body: " .. tostring(err),
                status = 500 })
        end
    end
    local ok, result, err, status = pcall(delta and apply_delta_now or apply_now, raw, meta,
        false, body_file)
    if not ok then
        return cjson.encode({ error = "apply failed: " .. tostring(result), status = 500 })
    end
    return cjson.encode(result and { result = result } or { error = err, status = or_null(status) })
end

-- In a worker thread, after the response went out: drop the apply's garbage (a 100k bundle
-- leaves hundreds of MB) at once; no request waits for this VM.
function _M.thread_collect()
    collectgarbage()
    collectgarbage()
    return collectgarbage("count")
end

-- Parsing, checking and writing a bundle of 100k tenants takes seconds of CPU: done in the
-- event loop, even in slices that yield, every request this worker serves meanwhile waits
-- for the slice running, and for the garbage collector's atomic steps over the apply's
-- tables (hundreds of ms). So it runs in a worker thread (ngx.run_worker_thread, its own
-- Lua VM and heap) and this request waits for it without blocking the event loop; the
-- shared-dict writes are the same ones, in the same order. Inline only where the nginx
-- has no such pool (bundle applied in slices, see pacer).
local function run_apply(raw, meta, body_file, delta)
    local run = ngx.run_worker_thread
    if run then
        local ok, answer = run(APPLY_POOL, "cdnctl.store", "thread_apply", node.settings,
            raw, body_file, meta, delta)
        if ok then
            local doc = cjson.decode(answer)
            if doc.result then
                return doc.result
            end
            return nil, doc.error, doc.status ~= null and doc.status or nil
        end
        -- ("thread pool cdn_apply not found": an nginx.conf without it, applied inline)
        if not find(tostring(answer), "thread pool " .. APPLY_POOL .. " not found", 1, true) then
            return nil, "apply failed in the worker thread: " .. tostring(answer), 500
        end
    end
    if raw == nil then
        local err
        raw, err = read_whole(body_file)
        if not raw then
            return nil, "cannot read the request body: " .. tostring(err), 500
        end
    end
    local result, err, status = (delta and apply_delta_now or apply_now)(raw, meta, false,
        body_file)
    ngx.timer.at(0, collect_garbage)
    return result, err, status
end

-- `raw`: the body, or nil when nginx wrote it to `body_file` (which becomes the persisted
-- bundle). `delta`: raw is a delta (see apply_delta_now), not a full bundle.
function _M.apply(raw, commit, body_file, delta)
    if commit ~= nil and (type(commit) ~= "string" or not find(commit, "^[%w._/-]+$")) then
        return nil, "X-Cdnctl-Commit: not a commit id"
    end
    ngx.update_time()
    local result, err, status = locked(run_apply, raw,
        { commit = or_null(commit), applied_at = ngx.now() }, body_file, delta)
    if not result then
        return nil, err, status
    end
    return forget_removed(result)
end

-- After the response to an apply: the worker thread's garbage.
function _M.after_apply()
    if ngx.run_worker_thread then
        ngx.run_worker_thread(APPLY_POOL, "cdnctl.store", "thread_collect")
    end
end

-- Files written by cdnctl before bundle.meta.json existed: {"commit", "applied_at",
-- "bundle": {...}} in bundle.json.
local function legacy(raw)
    if not (find(raw, '^{"commit":') or find(raw, '^{"applied_at":')) then
        return nil
    end
    local doc = cjson.decode(raw)
    if type(doc) ~= "table" or type(doc.bundle) ~= "table" then
        return nil
    end
    return cjson.encode(doc.bundle), { commit = or_null(doc.commit), applied_at = doc.applied_at }
end

-- On start (and on a HUP reload, over the surviving shared dict): serve the last persisted
-- bundle, if any. Over an unchanged dict this writes nothing.
function _M.load_persisted()
    local dir = node.settings.state_dir
    local raw = read_whole(dir .. BUNDLE_FILE)
    if not raw then
        return true, "no persisted bundle at " .. dir .. BUNDLE_FILE
    end
    local old_raw, old_meta = legacy(raw)
    local meta = old_meta or cjson.decode(node.read_file(dir .. META_FILE) or "null")
    if type(meta) ~= "table" then
        meta = {}
    end
    local result, err = locked(apply_now, old_raw or raw, {
        commit = or_null(meta.commit),
        applied_at = or_null(meta.applied_at),
    }, true)
    if not result then
        return nil, "invalid persisted bundle: " .. tostring(err)
    end
    forget_removed(result)
    local replayed = 0
    for n = 1, not old_raw and tonumber(meta.deltas) or 0 do
        local path = dir .. string.format(DELTA_FILE, n)
        local delta = read_whole(path)
        local next_result
        if delta then
            next_result, err = locked(apply_delta_now, delta, {
                commit = or_null(meta.commit),
                applied_at = or_null(meta.applied_at),
            }, true)
        end
        if not next_result then
            ngx.log(ngx.ERR, "cdnctl: persisted delta ", path, " not replayed (",
                tostring(err or "missing"), "): serving ", result.version)
            break
        end
        result, replayed = forget_removed(next_result), n
    end
    if result.version ~= meta.version and not old_raw then
        -- The meta file belongs to another bundle (a crash between the two renames).
        -- (deltas: the next delta is persisted after the ones replayed)
        dict:set("meta", cjson.encode({ version = result.version, commit = null,
            applied_at = null, tenants = result.tenants, deltas = replayed }))
    end
    -- In the master, before the fork: every worker would inherit the garbage and a string
    -- table sized for it (see collect_garbage).
    for _ = 1, GC_CYCLES do
        collectgarbage()
    end
    return true
end

return _M
