import { createHash } from 'node:crypto'

/**
 * The RedisStore's Lua scripts for grants, tokens, flows, codes and locks (the clients' are in
 * client-scripts.ts), with the key layout they share. Each is sent by SHA (EVALSHA) and loaded
 * with EVAL when Redis does not know it.
 */

export interface Script { lua: string, sha: string }

export function script (lua: string): Script {
  return { lua, sha: createHash('sha1').update(lua).digest('hex') }
}

// ---- key layout ---------------------------------------------------------------------------
//
//   {p}g:<grantId>     hash   r = grant JSON without `upstream`, e = expiresAt, uid, cid, u = upstream
//   {p}gf:<grantId>    set    the family: 'a:<hash>' and 'r:<hash>' members; TTL of the grant
//   {p}gu:<userId>     set    grant ids of a user;   TTL = the longest grant's
//   {p}gc:<clientId>   set    grant ids of a client; TTL = the longest grant's
//   {p}at:<hash>       string access token JSON; TTL = min(token, grant)
//   {p}rt:<hash>       hash   r = JSON, e = expiresAt, g = grantId, ra = rotatedAt
//   {p}rs:<hash>       hash   s = successor, n = grace replays so far; TTL = the grace window (the
//                             token's own when the record was saved whole): never the rt key's 30 days
//   {p}gx:<grantId>    string a grant id revoked by a replayed code before its grant was written;
//                             TTL = the code's retention
//   {p}c:<clientId>    string client JSON; TTL only when the client has `expiresAt` (use renews it)
//   {p}cf:<address>    zset   client ids registered from an address, scored by expiresAt (+inf
//                             when none); TTL = the longest client's, none if one never expires
//   {p}f:<key>         string flow JSON
//   {p}ac:<hash>       hash   r = code JSON, e = expiresAt, used = usedAt, keep = retainUntil
//
// Mutable records are hashes so that Lua never decodes and re-encodes JSON (cjson would turn `[]`
// into `{}` and round large numbers). Scripts derive some keys from values (the family of a token,
// the grant of a refresh token), so the store needs a standalone Redis (or Sentinel), not Cluster.

/**
 * From this size on, each addition to a family or index set first draws PRUNE_DRAWS members at
 * random and drops those whose record is gone (expired, evicted, revoked). The cost is fixed per
 * addition however large the set is (checking every member each time made a client with 10,000 live
 * grants cost 10,000 EXISTS per new grant), and a set keeps about twice its live members at most:
 * with a fraction f of dead members, each addition removes 2f of them on average, as many as die.
 */
const PRUNE_AT = 16
const PRUNE_DRAWS = 2

const LUA_HELPERS = `
local function memberKey (prefix, m)
  if string.sub(m, 1, 1) == 'a' then return prefix .. 'at:' .. string.sub(m, 3) end
  return prefix .. 'rt:' .. string.sub(m, 3)
end
local function pruneSome (set, keyOf)
  if redis.call('SCARD', set) >= ${PRUNE_AT} then
    for _, m in ipairs(redis.call('SRANDMEMBER', set, ${PRUNE_DRAWS})) do
      if redis.call('EXISTS', keyOf(m)) == 0 then redis.call('SREM', set, m) end
    end
  end
end
local function addToFamily (fam, member, prefix, gttl)
  pruneSome(fam, function (m) return memberKey(prefix, m) end)
  redis.call('SADD', fam, member)
  if gttl > 0 then redis.call('PEXPIRE', fam, gttl) end
end
local function pruneIndex (idx, prefix)
  pruneSome(idx, function (id) return prefix .. 'g:' .. id end)
end
`

/**
 * The grant's part of SAVE_GRANT and SAVE_GRANT_WITH_TOKENS (same KEYS[1-4] and ARGV[1-9]). A grant
 * id revoked in advance by a replayed code (CONSUME_CODE) is refused: the script returns 0 and
 * writes nothing.
 */
const GRANT_PART = `
if redis.call('EXISTS', ARGV[9] .. 'gx:' .. ARGV[8]) == 1 then return 0 end
local old = redis.call('HMGET', KEYS[1], 'uid', 'cid')
if old[1] and old[1] ~= ARGV[3] then redis.call('SREM', ARGV[9] .. 'gu:' .. old[1], ARGV[8]) end
if old[2] and old[2] ~= ARGV[4] then redis.call('SREM', ARGV[9] .. 'gc:' .. old[2], ARGV[8]) end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'r', ARGV[1], 'e', ARGV[2], 'uid', ARGV[3], 'cid', ARGV[4])
if ARGV[6] == '1' then redis.call('HSET', KEYS[1], 'u', ARGV[5]) end
local ttl = tonumber(ARGV[7])
redis.call('PEXPIRE', KEYS[1], ttl)
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], ttl) end
for i = 3, 4 do
  pruneIndex(KEYS[i], ARGV[9])
  redis.call('SADD', KEYS[i], ARGV[8])
  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
`

/**
 * KEYS: grant, family, by-user index, by-client index.
 * ARGV: json, expiresAt, userId, clientId, upstream, hasUpstream, ttl, grantId, prefix.
 */
const SAVE_GRANT = LUA_HELPERS + GRANT_PART + `
return 1
`

/**
 * A grant and its first two tokens (a code exchange) in one round trip. KEYS: as SAVE_GRANT, then
 * the access token, the refresh token. ARGV: as SAVE_GRANT (1-9), then the access token's family
 * member, ttl, json (10-12), the refresh token's family member, ttl, json, expiresAt, grantId (13-17).
 * Without the refresh token's key and arguments, the grant and its access token only. Token TTLs
 * are capped by the grant's, as in SAVE_TOKEN.
 */
const SAVE_GRANT_WITH_TOKENS = LUA_HELPERS + GRANT_PART + `
local gttl = tonumber(ARGV[7])
local function capped (t)
  t = tonumber(t)
  if t > gttl then return gttl end
  return t
end
redis.call('DEL', KEYS[5])
redis.call('SET', KEYS[5], ARGV[12], 'PX', capped(ARGV[11]))
addToFamily(KEYS[2], ARGV[10], ARGV[9], gttl)
if KEYS[6] then
  redis.call('DEL', KEYS[6])
  redis.call('HSET', KEYS[6], 'r', ARGV[15], 'e', ARGV[16], 'g', ARGV[17])
  redis.call('PEXPIRE', KEYS[6], capped(ARGV[14]))
  addToFamily(KEYS[2], ARGV[13], ARGV[9], gttl)
end
return 1
`

/** KEYS: grant. ARGV: upstream, now. */
const UPDATE_UPSTREAM = `
local e = redis.call('HGET', KEYS[1], 'e')
if not e or tonumber(e) <= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'u', ARGV[1])
return 1
`

/**
 * KEYS: token, grant, family, and for refresh tokens its successor key. ARGV: kind ('a' | 'r'),
 * family member, ttl, prefix, json, and for refresh tokens expiresAt, grantId, rotatedAt ('' when
 * not rotated), hasSuccessor, successor. The token's TTL is capped by the grant's, so a family
 * never outlives it.
 */
const SAVE_TOKEN = LUA_HELPERS + `
local gttl = redis.call('PTTL', KEYS[2])
if gttl == -2 then return 0 end
local ttl = tonumber(ARGV[3])
if gttl > 0 and gttl < ttl then ttl = gttl end
redis.call('DEL', KEYS[1])
if ARGV[1] == 'a' then
  redis.call('SET', KEYS[1], ARGV[5], 'PX', ttl)
else
  redis.call('HSET', KEYS[1], 'r', ARGV[5], 'e', ARGV[6], 'g', ARGV[7])
  if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'ra', ARGV[8]) end
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('DEL', KEYS[4])
  if ARGV[9] == '1' then
    redis.call('HSET', KEYS[4], 's', ARGV[10], 'n', 0)
    redis.call('PEXPIRE', KEYS[4], ttl)
  end
end
addToFamily(KEYS[3], ARGV[2], ARGV[4], gttl)
return 1
`

/**
 * KEYS: refresh token, its successor key. ARGV: prefix. Token fields, the successor while kept and
 * the grant's expiry, in one round trip.
 */
const GET_REFRESH = `
local t = redis.call('HMGET', KEYS[1], 'r', 'e', 'g', 'ra')
if not t[1] then return false end
local s = redis.call('HGET', KEYS[2], 's')
local ge = redis.call('HGET', ARGV[1] .. 'g:' .. t[3], 'e')
return { t[1], t[2], t[4] or '', s and '1' or '0', s or '', ge or '' }
`

/**
 * KEYS: refresh token, its successor key. ARGV: now, prefix. One grace replay: counted on the
 * successor key (so the count is one across replicas) while the token is a live rotated one of a
 * live grant and its successor is kept; returns { successor, count } or nothing.
 */
const REPLAY_REFRESH = `
local t = redis.call('HMGET', KEYS[1], 'e', 'g', 'ra')
if not t[1] or not t[3] then return false end
local now = tonumber(ARGV[1])
if tonumber(t[1]) <= now then return false end
local ge = redis.call('HGET', ARGV[2] .. 'g:' .. t[2], 'e')
if not ge or tonumber(ge) <= now then return false end
local s = redis.call('HGET', KEYS[2], 's')
if not s then return false end
return { s, redis.call('HINCRBY', KEYS[2], 'n', 1) }
`

/**
 * The compare-and-swap. KEYS: old token, new token, the old token's successor key, and (optional)
 * a new access token. ARGV: now, prefix, new json, new expiresAt, new grantId, new ttl, how long
 * the successor is kept ('' = no successor, 'token' = as long as the old token, else ms),
 * successor, new family member, and with the access token: its family member, ttl, json (saved
 * only when rotated).
 */
const ROTATE = LUA_HELPERS + `
local old = redis.call('HMGET', KEYS[1], 'r', 'e', 'g', 'ra')
if not old[1] then return { 'unknown' } end
local now = tonumber(ARGV[1])
if tonumber(old[2]) <= now then return { 'unknown' } end
local gkey = ARGV[2] .. 'g:' .. old[3]
local ge = redis.call('HGET', gkey, 'e')
if not ge or tonumber(ge) <= now then return { 'unknown' } end
if old[4] then
  local s = redis.call('HGET', KEYS[3], 's')
  return { 'already_rotated', old[1], old[4], s and '1' or '0', s or '' }
end
if ARGV[5] ~= old[3] then return { 'mismatch' } end
redis.call('HSET', KEYS[1], 'ra', ARGV[1])
if ARGV[7] ~= '' then
  local sttl = ARGV[7]
  if sttl == 'token' then sttl = redis.call('PTTL', KEYS[1]) end
  redis.call('DEL', KEYS[3])
  redis.call('HSET', KEYS[3], 's', ARGV[8], 'n', 0)
  redis.call('PEXPIRE', KEYS[3], sttl)
end
local gttl = redis.call('PTTL', gkey)
local ttl = tonumber(ARGV[6])
if gttl > 0 and gttl < ttl then ttl = gttl end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'r', ARGV[3], 'e', ARGV[4], 'g', ARGV[5])
redis.call('PEXPIRE', KEYS[2], ttl)
addToFamily(ARGV[2] .. 'gf:' .. old[3], ARGV[9], ARGV[2], gttl)
if ARGV[10] then
  local attl = tonumber(ARGV[11])
  if gttl > 0 and gttl < attl then attl = gttl end
  redis.call('DEL', KEYS[4])
  redis.call('SET', KEYS[4], ARGV[12], 'PX', attl)
  addToFamily(ARGV[2] .. 'gf:' .. old[3], ARGV[10], ARGV[2], gttl)
end
return { 'rotated', old[1] }
`

/** KEYS: grant, family. ARGV: prefix, grantId. Returns whether the grant existed ('1'/'0'), then the family's members. */
const REVOKE = LUA_HELPERS + `
local ids = redis.call('HMGET', KEYS[1], 'uid', 'cid')
local out = { tostring(redis.call('DEL', KEYS[1])) }
for _, m in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  redis.call('DEL', memberKey(ARGV[1], m))
  if string.sub(m, 1, 1) == 'r' then redis.call('DEL', ARGV[1] .. 'rs:' .. string.sub(m, 3)) end
  out[#out + 1] = m
end
redis.call('DEL', KEYS[2])
if ids[1] then redis.call('SREM', ARGV[1] .. 'gu:' .. ids[1], ARGV[2]) end
if ids[2] then redis.call('SREM', ARGV[1] .. 'gc:' .. ids[2], ARGV[2]) end
return out
`

/** KEYS: index. ARGV: prefix, field ('uid' | 'cid'), value, now. Drops dead ids as it reads. */
const LIST_GRANTS = `
local out = {}
local now = tonumber(ARGV[4])
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local f = redis.call('HMGET', ARGV[1] .. 'g:' .. id, 'e', ARGV[2])
  if not f[1] or f[2] ~= ARGV[3] then
    redis.call('SREM', KEYS[1], id)
  elseif tonumber(f[1]) > now then
    out[#out + 1] = id
  end
end
return out
`

/** KEYS: flow. Take-once (GETDEL, written as a script so that Redis < 6.2 works too). */
const TAKE_FLOW = `
local v = redis.call('GET', KEYS[1])
if v then redis.call('DEL', KEYS[1]) end
return v
`

/** KEYS: code. ARGV: json, expiresAt, ttl. */
const SAVE_CODE = `
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'r', ARGV[1], 'e', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
`

/**
 * KEYS: code. ARGV: now, retainUntil, prefix. Take-once with memory of the first use; a reuse
 * revokes the code's grant id in advance (a gx: key for the rest of the retention).
 */
const CONSUME_CODE = `
local f = redis.call('HMGET', KEYS[1], 'r', 'e', 'used', 'keep')
if not f[1] then return { 'unknown' } end
local now = tonumber(ARGV[1])
if f[3] then
  if tonumber(f[4]) <= now then
    redis.call('DEL', KEYS[1])
    return { 'unknown' }
  end
  local ok, rec = pcall(cjson.decode, f[1])
  if ok and type(rec) == 'table' and type(rec.grantId) == 'string' then
    local ttl = tonumber(f[4]) - now
    if ttl < 1 then ttl = 1 end
    redis.call('SET', ARGV[3] .. 'gx:' .. rec.grantId, '1', 'PX', ttl)
  end
  return { 'reused', f[1] }
end
if tonumber(f[2]) <= now then
  redis.call('DEL', KEYS[1])
  return { 'unknown' }
end
local keep = ARGV[2]
if tonumber(f[2]) > tonumber(keep) then keep = f[2] end
redis.call('HSET', KEYS[1], 'used', ARGV[1], 'keep', keep)
local ttl = tonumber(keep) - now
if ttl < 1 then ttl = 1 end
redis.call('PEXPIRE', KEYS[1], ttl)
return { 'ok', f[1] }
`

const RELEASE_LOCK = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`

export const SCRIPTS = {
  releaseLock: script(RELEASE_LOCK),
  saveGrant: script(SAVE_GRANT),
  saveGrantWithTokens: script(SAVE_GRANT_WITH_TOKENS),
  updateUpstream: script(UPDATE_UPSTREAM),
  saveToken: script(SAVE_TOKEN),
  getRefresh: script(GET_REFRESH),
  replayRefresh: script(REPLAY_REFRESH),
  rotate: script(ROTATE),
  revoke: script(REVOKE),
  listGrants: script(LIST_GRANTS),
  takeFlow: script(TAKE_FLOW),
  saveCode: script(SAVE_CODE),
  consumeCode: script(CONSUME_CODE)
}
