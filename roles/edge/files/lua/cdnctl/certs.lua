-- Tenant certificates served by SNI, and ACME HTTP-01 challenge tokens; no files are read
-- and nginx is never reloaded to change either.
--
-- cdn_certs keys: "c:<tenant>" -> {"cert", "key"} JSON (PEM chain and key), "v:<tenant>" ->
-- the fingerprint of that entry, "n:<name>" -> tenant (names as in the certificate's SAN,
-- "*.x.test" for a wildcard), "index" -> {tenant: {names, not_after, fingerprint}} JSON,
-- "gen" -> moves on every change. cdn_acme: "<token>" -> key authorization (with a TTL).
--
-- A handshake costs one dict read ("gen") on a warm per-worker cache of SNI name -> parsed
-- chain and key; a name missed there costs its lookups, and PEM is parsed only when that
-- tenant's fingerprint differs from the parsed copy this worker holds.
--
-- Persisted in the state dir (0600): "cert-<tenant>-<fingerprint>.json" per tenant, and
-- "certs.index.json", written last, which is the commit point: on start only the tenants
-- it lists are loaded (a file it does not list is left over from a failed change).
local ffi = require "ffi"
local cjson = require "cjson.safe"
local ssl = require "ngx.ssl"
local node = require "cdnctl.node"
local fsutil = require "cdnctl.fsutil"
local sha256 = require "cdnctl.sha256"

local ngx = ngx
local C = ffi.C
local ffi_new = ffi.new
local ffi_str = ffi.string
local ffi_gc = ffi.gc
local type = type
local pairs = pairs
local ipairs = ipairs
local tostring = tostring
local tonumber = tonumber
local pcall = pcall
local setmetatable = setmetatable
local find = string.find
local sub = string.sub
local lower = string.lower
local format = string.format
local sort = table.sort
local insert = table.insert
local concat = table.concat

ffi.cdef [[
typedef struct bio_st BIO;
typedef struct x509_st X509;
typedef struct evp_pkey_st EVP_PKEY;
typedef struct asn1_string_st ASN1_STRING;
typedef struct {
    int type;
    union { ASN1_STRING *ia5; void *ptr; } d;
} GENERAL_NAME;
struct tm {
    int tm_sec; int tm_min; int tm_hour; int tm_mday; int tm_mon; int tm_year;
    int tm_wday; int tm_yday; int tm_isdst; long tm_gmtoff; const char *tm_zone;
};
BIO *BIO_new_mem_buf(const void *buf, int len);
int BIO_free(BIO *a);
X509 *PEM_read_bio_X509(BIO *bp, X509 **x, void *cb, void *u);
void X509_free(X509 *a);
EVP_PKEY *PEM_read_bio_PrivateKey(BIO *bp, EVP_PKEY **x, void *cb, void *u);
void EVP_PKEY_free(EVP_PKEY *key);
int X509_check_private_key(const X509 *x, const EVP_PKEY *k);
const ASN1_STRING *X509_get0_notAfter(const X509 *x);
const ASN1_STRING *X509_get0_notBefore(const X509 *x);
int ASN1_TIME_to_tm(const ASN1_STRING *s, struct tm *tm);
void *X509_get_ext_d2i(const X509 *x, int nid, int *crit, int *idx);
int OPENSSL_sk_num(const void *sk);
void *OPENSSL_sk_value(const void *sk, int i);
void GENERAL_NAMES_free(void *names);
const unsigned char *ASN1_STRING_get0_data(const ASN1_STRING *x);
int ASN1_STRING_length(const ASN1_STRING *x);
void ERR_clear_error(void);
long timegm(struct tm *tm);
]]

local NID_SUBJECT_ALT_NAME = 85
local GEN_DNS = 2
local TENANT_PATTERN = "^[a-z0-9][a-z0-9-]*$" -- + length, as tenants/model.py
local TOKEN_PATTERN = "^[A-Za-z0-9_-]+$" -- base64url (RFC 8555 section 8.3)
local CHALLENGE_PREFIX = "/.well-known/acme-challenge/"
local INDEX_FILE = "/certs.index.json"
local DEFAULT_CHALLENGE_TTL = 3600

local dict = ngx.shared.cdn_certs
local challenges = ngx.shared.cdn_acme

local _M = {}

-- This worker's parsed certificates: SNI name -> {id, fingerprint, chain, key} or false
-- (no certificate), valid for one "gen". A parsed certificate outlives a gen while its
-- fingerprint stays: `parsed` holds those used in this gen, `previous` those of the gen
-- before (reused, not parsed again, when still current); one unused for a whole gen is
-- dropped, so removed certificates do not pile up. Bounded like store.lua's caches:
-- made-up SNI names cannot grow it.
local CACHE_MAX = 20000
local cache_gen, by_name, cached = nil, {}, 0
local parsed, previous = {}, {}

local function decode_index(raw)
    local index = raw and cjson.decode(raw)
    return type(index) == "table" and index or {}
end

local function running_index()
    return decode_index(dict:get("index"))
end

local function parse_entry(id, fingerprint)
    local raw = dict:get("c:" .. id)
    local entry = raw and cjson.decode(raw)
    if type(entry) ~= "table" then
        return nil
    end
    local chain, err = ssl.parse_pem_cert(entry.cert)
    local key
    if chain then
        key, err = ssl.parse_pem_priv_key(entry.key)
    end
    if not key then
        ngx.log(ngx.ERR, "cdnctl: certificate of ", id, " does not parse: ", err)
        return nil
    end
    local p = { id = id, fingerprint = fingerprint, chain = chain, key = key }
    parsed[id] = p
    return p
end

local function lookup(name)
    local id = dict:get("n:" .. name)
    if not id then
        local dot = find(name, ".", 1, true)
        id = dot and dict:get("n:*" .. sub(name, dot))
    end
    if not id then
        return false
    end
    local fingerprint = dict:get("v:" .. id)
    local p = parsed[id] or previous[id]
    if p and p.fingerprint == fingerprint then
        parsed[id] = p
        return p
    end
    return parse_entry(id, fingerprint) or false
end

-- ssl_certificate_by_lua: the tenant certificate for the SNI name; nothing (the default
-- certificate of nginx.conf) for no SNI or an unknown name.
function _M.select()
    local name = ssl.server_name()
    if not name then
        return
    end
    local gen = dict:get("gen")
    if gen ~= cache_gen or cached >= CACHE_MAX then
        cache_gen, by_name, cached = gen, {}, 0
        parsed, previous = {}, parsed
    end
    local p = by_name[name]
    if p == nil then
        p = lookup(lower(name))
        by_name[name] = p
        cached = cached + 1
    end
    if not p then
        return
    end
    local ok, err = ssl.clear_certs()
    if ok then
        ok, err = ssl.set_cert(p.chain)
    end
    if ok then
        ok, err = ssl.set_priv_key(p.key)
    end
    if not ok then
        ngx.log(ngx.ERR, "cdnctl: cannot set the certificate of ", p.id, ": ", err)
        return ngx.exit(ngx.ERROR)
    end
end

local function tm_epoch(asn1_time)
    local tm = ffi_new("struct tm")
    if C.ASN1_TIME_to_tm(asn1_time, tm) ~= 1 then
        return nil
    end
    return tonumber(C.timegm(tm))
end

-- The leaf of a PEM chain: its DNS names (lowercase), notBefore and notAfter (epoch), and
-- whether `key_pem` is its private key; or nil, error.
local function inspect(cert_pem, key_pem)
    local bio = ffi_gc(C.BIO_new_mem_buf(cert_pem, #cert_pem), C.BIO_free)
    local x509 = C.PEM_read_bio_X509(bio, nil, nil, nil)
    if x509 == nil then
        C.ERR_clear_error()
        return nil, "cert: not a PEM certificate"
    end
    x509 = ffi_gc(x509, C.X509_free)
    local kbio = ffi_gc(C.BIO_new_mem_buf(key_pem, #key_pem), C.BIO_free)
    local pkey = C.PEM_read_bio_PrivateKey(kbio, nil, nil, nil)
    if pkey == nil then
        C.ERR_clear_error()
        return nil, "key: not an unencrypted PEM private key"
    end
    pkey = ffi_gc(pkey, C.EVP_PKEY_free)
    if C.X509_check_private_key(x509, pkey) ~= 1 then
        C.ERR_clear_error()
        return nil, "key: does not match the certificate"
    end
    local names = {}
    local sans = C.X509_get_ext_d2i(x509, NID_SUBJECT_ALT_NAME, nil, nil)
    if sans ~= nil then
        for i = 0, C.OPENSSL_sk_num(sans) - 1 do
            local gn = ffi.cast("GENERAL_NAME *", C.OPENSSL_sk_value(sans, i))
            if gn.type == GEN_DNS then
                local s = gn.d.ia5
                insert(names, lower(ffi_str(C.ASN1_STRING_get0_data(s), C.ASN1_STRING_length(s))))
            end
        end
        C.GENERAL_NAMES_free(sans)
    end
    if #names == 0 then
        return nil, "cert: no DNS name in subjectAltName"
    end
    sort(names)
    local not_before = tm_epoch(C.X509_get0_notBefore(x509))
    local not_after = tm_epoch(C.X509_get0_notAfter(x509))
    if not not_before or not not_after then
        C.ERR_clear_error()
        return nil, "cert: unreadable validity dates"
    end
    return { names = names, not_before = not_before, not_after = not_after }
end

-- One item of POST /certificates "set": checked as nginx will use it (chain and key parse,
-- the key is the leaf's, not expired). Returns the index entry or nil, error.
local function check_item(item, now)
    if type(item) ~= "table" then
        return nil, "not an object"
    end
    local id = item.tenant
    if type(id) ~= "string" or #id > 63 or not find(id, TENANT_PATTERN) then
        return nil, "tenant: not a tenant id: " .. tostring(id)
    end
    if type(item.cert) ~= "string" or type(item.key) ~= "string" then
        return nil, "cert and key must be PEM strings"
    end
    if not ssl.parse_pem_cert(item.cert) then
        return nil, "cert: the PEM chain does not parse"
    end
    if not ssl.parse_pem_priv_key(item.key) then
        return nil, "key: does not parse"
    end
    local info, err = inspect(item.cert, item.key)
    if not info then
        return nil, err
    end
    if info.not_after <= now then
        return nil, "cert: expired at " .. ngx.http_time(info.not_after)
    end
    info.fingerprint = sha256.hex(item.cert .. "\n" .. item.key)
    return info
end

-- Named after the fingerprint too: a change writes new files next to the ones the
-- committed index names, so a failure before the index is written changes nothing.
local function entry_file(id, fingerprint)
    return node.settings.state_dir .. "/cert-" .. id .. "-" .. sub(fingerprint, 1, 16) .. ".json"
end

local function bump()
    dict:incr("gen", 1, 0)
end

-- Writes one tenant's certificate into the dict: names of its old certificate that the new
-- one lacks are dropped. Returns true or nil, error (the dict is full).
local function put(id, info, cert, key, old)
    local ok, err = dict:safe_set("c:" .. id, cjson.encode({ cert = cert, key = key }))
    if not ok then
        return nil, "cdn_certs: " .. tostring(err)
    end
    for _, name in ipairs(info.names) do
        ok, err = dict:safe_set("n:" .. name, id)
        if not ok then
            return nil, "cdn_certs: " .. tostring(err)
        end
    end
    ok, err = dict:safe_set("v:" .. id, info.fingerprint)
    if not ok then
        return nil, "cdn_certs: " .. tostring(err)
    end
    if old then
        local keep = {}
        for _, name in ipairs(info.names) do
            keep[name] = true
        end
        for _, name in ipairs(old.names) do
            if not keep[name] and dict:get("n:" .. name) == id then
                dict:delete("n:" .. name)
            end
        end
    end
    return true
end

local function drop(id, old)
    for _, name in ipairs(old.names) do
        if dict:get("n:" .. name) == id then
            dict:delete("n:" .. name)
        end
    end
    dict:delete("c:" .. id)
    dict:delete("v:" .. id)
end

-- Validates the whole change, then persists it, then makes it live. body: {"set": [{tenant,
-- cert, key}], "remove": [tenant]}. Returns a summary, or nil, error, HTTP status.
local function change(body)
    if type(body) ~= "table" then
        return nil, "body must be a JSON object {\"set\": [...], \"remove\": [...]}", 400
    end
    local set, remove = body.set or {}, body.remove or {}
    if type(set) ~= "table" or type(remove) ~= "table" then
        return nil, "set and remove must be lists", 400
    end
    local index = running_index()
    local next_index = {}
    for id, info in pairs(index) do
        next_index[id] = info
    end
    local touched = {}
    for i, id in ipairs(remove) do
        if type(id) ~= "string" then
            return nil, "remove[" .. (i - 1) .. "]: not a tenant id", 400
        end
        touched[id] = true
        next_index[id] = nil
    end
    ngx.update_time()
    local now = ngx.time()
    local items = {}
    for i, item in ipairs(set) do
        local info, err = check_item(item, now)
        if not info then
            return nil, "set[" .. (i - 1) .. "]: " .. err, 400
        end
        if touched[item.tenant] then
            return nil, "set[" .. (i - 1) .. "]: tenant " .. item.tenant
                .. " is set or removed twice in this request", 400
        end
        touched[item.tenant] = true
        next_index[item.tenant] = info
        items[#items + 1] = item
    end
    -- One name, one tenant: a name another tenant's certificate still covers is refused.
    local owners = {}
    for id, info in pairs(next_index) do
        for _, name in ipairs(info.names) do
            local other = owners[name]
            if other and other ~= id then
                return nil, "name " .. name .. " is in the certificates of both " .. other
                    .. " and " .. id .. ": remove one of them in the same request", 409
            end
            owners[name] = id
        end
    end

    for _, item in ipairs(items) do
        local ok, err = fsutil.write_private(entry_file(item.tenant,
            next_index[item.tenant].fingerprint),
            cjson.encode({ tenant = item.tenant, cert = item.cert, key = item.key }))
        if not ok then
            return nil, "persist failed, nothing changed: " .. err, 500
        end
    end
    local ok, err = fsutil.write_private(node.settings.state_dir .. INDEX_FILE,
        cjson.encode(next_index))
    if not ok then
        return nil, "persist failed, nothing changed: " .. err, 500
    end

    -- Live: each key changes atomically; "gen" moves last so no worker keeps a stale name.
    for _, id in ipairs(remove) do
        if index[id] then
            drop(id, index[id])
        end
    end
    for _, item in ipairs(items) do
        local id = item.tenant
        local pok, perr = put(id, next_index[id], item.cert, item.key, index[id])
        if not pok then
            -- The persisted state has it all: the next start loads everything.
            bump()
            return nil, perr .. " (persisted; live after a restart or a larger cdn_certs)", 507
        end
    end
    -- safe_set throughout: a full dict must fail the change, never evict a served name.
    local iok, ierr = dict:safe_set("index", cjson.encode(next_index))
    bump()
    if not iok then
        return nil, "cdn_certs: " .. tostring(ierr)
            .. " (persisted; live after a restart or a larger cdn_certs)", 507
    end
    for id, info in pairs(index) do
        local now_info = next_index[id]
        if not now_info or now_info.fingerprint ~= info.fingerprint then
            fsutil.unlink(entry_file(id, info.fingerprint))
        end
    end
    local count = 0
    for _ in pairs(next_index) do
        count = count + 1
    end
    return { set = #items, removed = #remove, certificates = count }
end

function _M.change(body)
    if not dict:add("lock", true, 60) then
        return nil, "another certificate change is in progress", 409
    end
    local ok, result, err, status = pcall(change, body)
    dict:delete("lock")
    if not ok then
        return nil, "certificate change failed: " .. tostring(result), 500
    end
    return result, err, status
end

-- GET /certificates: what this node serves (no keys).
function _M.list()
    local out = {}
    for id, info in pairs(running_index()) do
        out[id] = { names = info.names, not_before = info.not_before,
            not_after = info.not_after, fingerprint = info.fingerprint }
    end
    return { certificates = setmetatable(out, cjson.empty_table_mt) }
end

-- In init_by_lua (master): the persisted certificates, as of the last committed index.
-- Over a dict that survived a HUP it writes the same values again.
function _M.load_persisted()
    local dir = node.settings.state_dir
    local raw = node.read_file(dir .. INDEX_FILE)
    if not raw then
        return true
    end
    local index = decode_index(raw)
    local loaded = {}
    for id, info in pairs(index) do
        local entry = type(info) == "table" and type(info.fingerprint) == "string"
            and cjson.decode(node.read_file(entry_file(id, info.fingerprint)) or "null")
        if type(entry) ~= "table" or type(entry.cert) ~= "string" or type(entry.key) ~= "string"
            or sha256.hex(entry.cert .. "\n" .. entry.key) ~= info.fingerprint
        then
            ngx.log(ngx.ERR, "cdnctl: persisted certificate of ", id, " is missing or does ",
                "not match certs.index.json: not served")
        else
            local ok, err = put(id, info, entry.cert, entry.key, nil)
            if not ok then
                ngx.log(ngx.ERR, "cdnctl: certificate of ", id, " not loaded: ", err)
            else
                loaded[id] = info
            end
        end
    end
    local ok, err = dict:safe_set("index", cjson.encode(loaded))
    if not ok then
        ngx.log(ngx.ERR, "cdnctl: certificate index not loaded: ", err)
    end
    bump()
    return true
end

-- POST /acme-challenges: {"set": {token: key_authorization}, "remove": [token], "ttl": s}.
function _M.change_challenges(body)
    if type(body) ~= "table" then
        return nil, "body must be a JSON object {\"set\": {...}, \"remove\": [...]}"
    end
    local set, remove = body.set or {}, body.remove or {}
    local ttl = body.ttl or DEFAULT_CHALLENGE_TTL
    if type(set) ~= "table" or type(remove) ~= "table" then
        return nil, "set must be an object and remove a list"
    end
    if type(ttl) ~= "number" or ttl < 1 or ttl > 86400 then
        return nil, "ttl: seconds, 1 to 86400"
    end
    for token, key_auth in pairs(set) do
        if type(token) ~= "string" or not find(token, TOKEN_PATTERN) or #token > 256 then
            return nil, "set: " .. tostring(token) .. " is not an ACME token (base64url)"
        end
        if type(key_auth) ~= "string" or sub(key_auth, 1, #token + 1) ~= token .. "."
            or not find(key_auth, "^[A-Za-z0-9_.-]+$")
        then
            return nil, "set." .. token .. ": not a key authorization (<token>.<thumbprint>)"
        end
    end
    for i, token in ipairs(remove) do
        if type(token) ~= "string" then
            return nil, "remove[" .. (i - 1) .. "]: not a token"
        end
    end
    local n = 0
    for token, key_auth in pairs(set) do
        local ok, err = challenges:safe_set(token, key_auth, ttl)
        if not ok then
            return nil, "cdn_acme: " .. tostring(err)
        end
        n = n + 1
    end
    for _, token in ipairs(remove) do
        challenges:delete(token)
    end
    return { set = n, removed = #remove }
end

-- Public listener, /.well-known/acme-challenge/<token> (any Host: the validator may come
-- through any edge of any region, for any of the tenant's names).
function _M.serve_challenge()
    local token = sub(ngx.var.uri, #CHALLENGE_PREFIX + 1)
    local key_auth = find(token, TOKEN_PATTERN) and challenges:get(token)
    ngx.header["Cache-Control"] = "no-store"
    if not key_auth then
        ngx.status = 404
        ngx.header["Content-Type"] = "text/plain"
        ngx.say("no such challenge")
        return ngx.exit(404)
    end
    ngx.header["Content-Type"] = "application/octet-stream"
    ngx.print(key_auth)
    return ngx.exit(200)
end

-- tls.redirect_http on a plain HTTP request: the same URL over HTTPS (301 keeps GET and
-- HEAD, 308 any other method and its body). Not on a node without an HTTPS listener.
function _M.redirect_https(host)
    local port = node.settings.https_port
    if not port then
        return
    end
    local url = "https://" .. host .. (port == 443 and "" or ":" .. port) .. ngx.var.request_uri
    local method = ngx.req.get_method()
    local status = (method == "GET" or method == "HEAD") and 301 or 308
    ngx.header["Location"] = url
    ngx.header["Cache-Control"] = "no-store"
    return ngx.exit(status)
end

-- /metrics text (after metrics.render's): each certificate's notAfter, for the expiry alert.
function _M.metrics_text()
    local lines = {}
    for id, info in pairs(running_index()) do
        insert(lines, format("cdn_certificate_expiry_timestamp_seconds{tenant=\"%s\"} %d",
            id, info.not_after)) -- ids are [a-z0-9-]: nothing to escape
    end
    sort(lines)
    insert(lines, 1, "# HELP cdn_certificate_expiry_timestamp_seconds notAfter of each"
        .. " tenant certificate this node serves.")
    insert(lines, 2, "# TYPE cdn_certificate_expiry_timestamp_seconds gauge")
    insert(lines, "")
    return concat(lines, "\n")
end

return _M
