-- The running manifest (see manifest.lua) in the config dict as pieces of about 64 KiB,
-- each with the SHA-256 state of the manifest before it, so that a delta copies only the
-- pieces it changes and hashes only from the first of them to the end: at 1M tenants the
-- manifest is 160 MB, and copying, patching and hashing all of it took a one-tenant delta
-- over a second.
--
-- Keys of cdn_config:
-- - "mdir": the directory, JSON {"next": the next piece number, "segments": [...]}: the
--   manifest is its segments in order, each either text as it is or
--   {"member": name, "pieces": [[number, first key, length], ...]}, the inside of member
--   `name` (hosts, tenants or wildcards: objects of string -> string) as its non-empty
--   pieces joined by ",". The first key of a piece bounds it: a key goes to the last
--   piece whose first key is not above it (the first piece takes any key before that).
-- - "mp:<number>": a piece, entries `"key":"value"` in sorted order joined by ",".
-- - "mstates": the saved SHA-256 states (sha256.save), one per piece in manifest order:
--   the state after every byte before that piece (and before its comma).
-- A piece is never changed in place: a changed piece gets a new number, so a reader that
-- took a directory finds exactly the pieces it names, or finds one gone (an apply moved
-- on since) and reads the directory again.
local cjson = require "cjson.safe"
local manifest = require "cdnctl.manifest"
local sha256 = require "cdnctl.sha256"

local find = string.find
local sub = string.sub
local concat = table.concat
local sort = table.sort
local floor = math.floor
local pairs = pairs
local ipairs = ipairs
local type = type
local next = next

-- Below LuaJIT's mmap threshold (128 KiB): the pieces a delta reads reuse the heap rather
-- than map fresh pages each.
local PIECE_BYTES = 64 * 1024
local MEMBERS = { "hosts", "tenants", "wildcards" }
local DIR, STATES, PIECE = "mdir", "mstates", "mp:"
local STATE = sha256.STATE_BYTES

local _M = { DIR = DIR, STATES = STATES }

local function directory(dict)
    local dir = cjson.decode(dict:get(DIR) or "null")
    if type(dir) ~= "table" or type(dir.segments) ~= "table" then
        return nil
    end
    return dir
end

-- Where member insides are cut: (first, last) spans from `first` to `last` of `text`,
-- pieces of about PIECE_BYTES ending on an entry (`","` only sits between two entries).
local function cuts(text, first, last)
    local out, pos = {}, first
    repeat
        local stop = last
        if last - pos + 1 > 2 * PIECE_BYTES then
            local comma = find(text, '","', pos + PIECE_BYTES, true)
            if comma and comma + 2 <= last then
                stop = comma
            end
        end
        out[#out + 1] = { pos, stop }
        pos = stop + 2
    until pos > last
    return out
end

-- The writes that store manifest `text`, whose SHA-256 must be `version`:
-- {key: value}, or nil, error. `dict`: the config dict, for the next piece number.
function _M.build(dict, text, version)
    local spans = {}
    for _, name in ipairs(MEMBERS) do
        local first, last = manifest.member(text, name)
        if first then
            spans[#spans + 1] = { first, last, name }
        end
    end
    sort(spans, function(x, y) return x[1] < y[1] end)
    local running = directory(dict)
    local number = running and running.next or 1
    local ctx, states, segments, writes, cursor = sha256.stream(), {}, {}, {}, 1
    for _, span in ipairs(spans) do
        local first, last, name = span[1], span[2], span[3]
        if first > cursor then
            segments[#segments + 1] = sub(text, cursor, first - 1)
            sha256.update(ctx, text, cursor, first - cursor)
        end
        local pieces = {}
        for i, cut in ipairs(cuts(text, first, last)) do
            local from, stop = cut[1], cut[2]
            states[#states + 1] = sha256.save(ctx)
            local hashed_from = i > 1 and from - 1 or from -- a piece after the first: its comma
            sha256.update(ctx, text, hashed_from, stop - hashed_from + 1)
            local piece = sub(text, from, stop)
            writes[PIECE .. number] = piece
            pieces[i] = { number, i > 1 and manifest.key_at(piece, 1) or "", #piece }
            number = number + 1
        end
        segments[#segments + 1] = { member = name, pieces = pieces }
        cursor = last + 1
    end
    segments[#segments + 1] = sub(text, cursor)
    sha256.update(ctx, text, cursor, #text - cursor + 1)
    local got = "sha256:" .. sha256.finish(ctx)
    if got ~= version then
        return nil, "the manifest's pieces hash to " .. got .. ", not " .. version
    end
    writes[DIR] = cjson.encode({ next = number, segments = segments })
    writes[STATES] = concat(states)
    return writes
end

-- The piece keys the running directory names (for removal once a new manifest is in).
function _M.keys(dict)
    local dir, out = directory(dict), {}
    for _, seg in ipairs(dir and dir.segments or {}) do
        if type(seg) == "table" then
            for _, piece in ipairs(seg.pieces) do
                out[#out + 1] = PIECE .. piece[1]
            end
        end
    end
    return out
end

-- Whether a key of build's or patch's writes is one already there (its value is to be put
-- back if the apply is undone); pieces are always new.
function _M.running_key(key)
    return key == DIR or key == STATES
end

function _M.present(dict)
    return dict:get(DIR) ~= nil and dict:get(STATES) ~= nil
end

-- The running manifest's text, or nil when there is none.
function _M.text(dict)
    for _ = 1, 10 do -- each retry: an apply replaced a piece between two reads
        local dir = directory(dict)
        if not dir then
            return nil
        end
        local out, n, complete = {}, 0, true
        for _, seg in ipairs(dir.segments) do
            if type(seg) == "string" then
                n = n + 1
                out[n] = seg
            else
                local joined = false
                for _, piece in ipairs(seg.pieces) do
                    if piece[3] > 0 then
                        local text = dict:get(PIECE .. piece[1])
                        if not text then
                            complete = false
                            break
                        end
                        if joined then
                            n = n + 1
                            out[n] = ","
                        end
                        n = n + 1
                        out[n] = text
                        joined = true
                    end
                end
            end
            if not complete then
                break
            end
        end
        if complete then
            return concat(out)
        end
    end
    return nil
end

-- The piece of `pieces` (a member's, by position) that key `key` belongs in.
local function piece_for(pieces, key)
    local a, b, found = 2, #pieces, 1
    while a <= b do
        local mid = floor((a + b) / 2)
        if pieces[mid][2] <= key then
            found, a = mid, mid + 1
        else
            b = mid - 1
        end
    end
    return found
end

-- The running manifest with `edits` ({member: {key: new value, or false to drop it}})
-- applied: {version = its SHA-256 ("sha256:..."), writes = {key: value}, stale = {keys no
-- longer used}}, or nil, error. Nothing is written: the caller writes (and can undo) it.
-- `running_version`: the running manifest's, the answer when `edits` change nothing.
function _M.patch(dict, edits, running_version)
    local dir, states = directory(dict), dict:get(STATES)
    if not dir or not states then
        return nil, "no running manifest"
    end
    -- which pieces change: by global position (pieces numbered through all members)
    local changes, first_changed, member_at, position = {}, nil, {}, 0
    for s, seg in ipairs(dir.segments) do
        if type(seg) == "table" then
            member_at[seg.member] = { s = s, base = position }
            position = position + #seg.pieces
        end
    end
    for name, changed in pairs(edits) do
        if next(changed) ~= nil then
            local at = member_at[name]
            if not at then
                return nil, "the running manifest has no " .. name .. " member"
            end
            local pieces = dir.segments[at.s].pieces
            for key, value in pairs(changed) do
                local p = at.base + piece_for(pieces, key)
                local piece_edits = changes[p] or {}
                changes[p], piece_edits[key] = piece_edits, value
                if not first_changed or p < first_changed then
                    first_changed = p
                end
            end
        end
    end
    if not first_changed then -- (a delta that only re-sends tenant texts)
        return { version = running_version, writes = {}, stale = {} }
    end
    -- the new directory, and the new pieces' texts (by number)
    local writes, stale, texts, number = {}, {}, {}, dir.next
    local segments, position, resume = {}, 0, nil -- resume: {segment, local index}
    for s, seg in ipairs(dir.segments) do
        if type(seg) == "string" then
            segments[s] = seg
        else
            local pieces = {}
            for i, piece in ipairs(seg.pieces) do
                position = position + 1
                local piece_edits = changes[position]
                if position == first_changed then
                    resume = { s, #pieces + 1 }
                end
                if not piece_edits then
                    pieces[#pieces + 1] = piece
                else
                    local old = dict:get(PIECE .. piece[1])
                    if not old then
                        return nil, "manifest piece " .. piece[1] .. " is missing"
                    end
                    stale[#stale + 1] = PIECE .. piece[1]
                    local text = manifest.patch_object(old, 1, #old, piece_edits)
                    for c, cut in ipairs(cuts(text, 1, #text)) do
                        local part = sub(text, cut[1], cut[2])
                        -- an emptied piece goes, unless the member would have none
                        if part ~= "" or (i == #seg.pieces and #pieces == 0) then
                            texts[number] = part
                            writes[PIECE .. number] = part
                            -- the first part keeps the piece's bound (see the header)
                            pieces[#pieces + 1] = { number,
                                c == 1 and piece[2] or manifest.key_at(part, 1), #part }
                            number = number + 1
                        end
                    end
                end
            end
            segments[s] = { member = seg.member, pieces = pieces }
        end
    end
    -- hash from the first changed piece on, taking up the state saved before it
    local ctx = sha256.resume(states, (first_changed - 1) * STATE + 1)
    local saved = { sub(states, 1, (first_changed - 1) * STATE) }
    for s = resume[1], #segments do
        local seg = segments[s]
        if type(seg) == "string" then
            sha256.update(ctx, seg)
        else
            local from = s == resume[1] and resume[2] or 1
            local joined = false
            for i = 1, from - 1 do
                joined = joined or seg.pieces[i][3] > 0
            end
            for i = from, #seg.pieces do
                local piece = seg.pieces[i]
                saved[#saved + 1] = sha256.save(ctx)
                if piece[3] > 0 then
                    local text = texts[piece[1]] or dict:get(PIECE .. piece[1])
                    if not text then
                        return nil, "manifest piece " .. piece[1] .. " is missing"
                    end
                    if joined then
                        sha256.update(ctx, ",")
                    end
                    sha256.update(ctx, text)
                    joined = true
                end
            end
        end
    end
    writes[DIR] = cjson.encode({ next = number, segments = segments })
    writes[STATES] = concat(saved)
    return { version = "sha256:" .. sha256.finish(ctx), writes = writes, stale = stale }
end

return _M
