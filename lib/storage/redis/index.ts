import { createHash, randomUUID } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { Redis } from 'ioredis'
import type { RedisOptions, RedisStatus } from 'ioredis'
import type {
  AccessTokenRecord, ClientRecord, CodeRecord, ConsumeCodeResult, FlowRecord, GrantRecord,
  RefreshTokenRecord, RotateResult, Store, StoreStats
} from '../contract.js'
import { GrantRevokedError, StoreUnavailableError } from '../contract.js'
import { TokenCache, cacheSettings, type TokenCacheOptions } from './cache.js'

export interface RedisStoreOptions {
  /**
   * An ioredis instance you own. The store never quits it; `close()` only detaches the store's
   * listeners. Its own options decide queueing and retries; the store still bounds every
   * operation by `commandTimeoutMs`. Do not set ioredis `keyPrefix` on it: use `prefix`.
   */
  client?: Redis
  /** A `redis://` / `rediss://` URL; the store creates the client and quits it on `close()`. */
  url?: string
  /** Extra ioredis options for the client created from `url` (they override the defaults below). */
  redisOptions?: RedisOptions
  /** Prepended to every key. Default `mcp-oauth:`. Several stores may share a database by prefix. */
  prefix?: string
  /**
   * Longest time one operation may take, including the wait for a (re)connection (ms). Default
   * 500. A dead or stalled Redis turns into a rejected promise after this long, never a hang.
   */
  commandTimeoutMs?: number
  /**
   * The clock used to turn a record's `expiresAt` into a key TTL when the operation has no `now`
   * argument (saves). Pass the plugin's own clock. Default `Date.now`.
   */
  now?: () => number
  /**
   * Access-token records kept in this process and served without a round trip, exact through
   * Redis's invalidation messages (`CLIENT TRACKING`, Redis 6 or later, on one extra connection).
   * A revocation on another replica reaches this one when Redis's message does (normally well
   * under a millisecond; at worst a failed heartbeat later, about a second, when the extra
   * connection silently dies). `false` turns it off: every lookup is a GET. Default on.
   */
  cache?: TokenCacheOptions | false
}

/**
 * Every failure of an operation that reached for Redis: the store's own (timeouts, closed store) and
 * the client's or the server's (a command timeout, a lost connection, an error reply), the latter
 * as `cause`. A StoreUnavailableError, so endpoints answer 503, never 500.
 */
export class RedisStoreError extends StoreUnavailableError {
  override name = 'RedisStoreError'
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
 * Token TTLs are capped by the grant's, as in SAVE_TOKEN.
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
redis.call('DEL', KEYS[6])
redis.call('HSET', KEYS[6], 'r', ARGV[15], 'e', ARGV[16], 'g', ARGV[17])
redis.call('PEXPIRE', KEYS[6], capped(ARGV[14]))
addToFamily(KEYS[2], ARGV[13], ARGV[9], gttl)
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

/**
 * KEYS: client. ARGV: json, ttl ('' = never expires), hasFrom, registeredFrom, clientId, prefix,
 * score (expiresAt or '+inf'), now. Moves the client between address indexes when its address
 * changes, and drops members that expired before `now` from the index it adds to: the index holds
 * live clients only, even when nothing ever counts it.
 */
const SAVE_CLIENT = `
local old = redis.call('GET', KEYS[1])
if old then
  local ok, rec = pcall(cjson.decode, old)
  if ok and type(rec) == 'table' and type(rec.registeredFrom) == 'string'
    and (ARGV[3] ~= '1' or rec.registeredFrom ~= ARGV[4]) then
    redis.call('ZREM', ARGV[6] .. 'cf:' .. rec.registeredFrom, ARGV[5])
  end
end
if ARGV[2] == '' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
if ARGV[3] == '1' then
  local idx = ARGV[6] .. 'cf:' .. ARGV[4]
  local fresh = redis.call('EXISTS', idx) == 0
  redis.call('ZREMRANGEBYSCORE', idx, '-inf', ARGV[8])
  redis.call('ZADD', idx, ARGV[7], ARGV[5])
  if ARGV[2] == '' then
    redis.call('PERSIST', idx)
  else
    local t = redis.call('PTTL', idx)
    if fresh or (t > 0 and t < tonumber(ARGV[2])) then redis.call('PEXPIRE', idx, ARGV[2]) end
  end
end
return 1
`

/**
 * KEYS: client. ARGV: the record as read, the renewed record, ttl, prefix, registeredFrom ('' =
 * none), clientId, expiresAt. A compare-and-swap: writes only when the record is still the one read
 * (cjson never re-encodes it), and moves the client's score in its address index with it.
 */
const RENEW_CLIENT = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
if ARGV[5] ~= '' then
  local idx = ARGV[4] .. 'cf:' .. ARGV[5]
  local fresh = redis.call('EXISTS', idx) == 0
  redis.call('ZADD', idx, ARGV[7], ARGV[6])
  local t = redis.call('PTTL', idx)
  if fresh or (t > 0 and t < tonumber(ARGV[3])) then redis.call('PEXPIRE', idx, ARGV[3]) end
end
return 1
`

/** KEYS: client. ARGV: prefix, clientId. */
const DELETE_CLIENT = `
local old = redis.call('GET', KEYS[1])
if not old then return 0 end
local ok, rec = pcall(cjson.decode, old)
if ok and type(rec) == 'table' and type(rec.registeredFrom) == 'string' then
  redis.call('ZREM', ARGV[1] .. 'cf:' .. rec.registeredFrom, ARGV[2])
end
redis.call('DEL', KEYS[1])
return 1
`

/**
 * KEYS: address index. ARGV: prefix, now. Counts members alive at `now`; drops members whose
 * client key is gone (expired on Redis's clock). The set is small: registration is refused once
 * an address reaches its cap.
 */
const COUNT_CLIENTS_FROM = `
local n = 0
local now = tonumber(ARGV[2])
local all = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #all, 2 do
  if redis.call('EXISTS', ARGV[1] .. 'c:' .. all[i]) == 0 then
    redis.call('ZREM', KEYS[1], all[i])
  elseif tonumber(all[i + 1]) > now then
    n = n + 1
  end
end
return n
`

interface Script { lua: string, sha: string }

function script (lua: string): Script {
  return { lua, sha: createHash('sha1').update(lua).digest('hex') }
}

const RELEASE_LOCK = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`

const SCRIPTS = {
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
  consumeCode: script(CONSUME_CODE),
  saveClient: script(SAVE_CLIENT),
  deleteClient: script(DELETE_CLIENT),
  renewClient: script(RENEW_CLIENT),
  countClientsFrom: script(COUNT_CLIENTS_FROM)
}

/** Keys examined per SCAN step in `stats()`. */
const SCAN_COUNT = 1000

/** A TTL for a record that ends at `expiresAt`, seen at `now`; at least 1 ms. */
function ttlOf (expiresAt: number, now: number): number {
  return Math.max(1, Math.ceil(expiresAt - now))
}

function strings (reply: unknown): string[] {
  if (!Array.isArray(reply)) throw new RedisStoreError('unexpected reply from a RedisStore script')
  return reply.map(x => String(x))
}

function globEscape (s: string): string {
  return s.replace(/[*?[\]\\]/g, c => '\\' + c)
}

function noop (): void {}

/**
 * The shared store: every replica of the server points at the same Redis and sees the same
 * grants, tokens, clients, flows and codes.
 *
 * Atomicity: every operation that reads and then writes is one Lua script (EVALSHA, with EVAL as
 * the fallback after NOSCRIPT), and Redis runs a script to the end before it runs any other
 * command, so two callers on any number of connections or hosts cannot interleave inside it.
 *
 * Expiry: every record key gets a TTL derived from the record's `expiresAt`, so Redis itself
 * reclaims expired records and nothing ever scans on the request path. The TTL is relative
 * (`expiresAt - now`, with `now` the operation's argument or the `now` option), which keeps an
 * injected clock meaningful and is immune to skew between the app's and Redis's clocks. Reads
 * still compare `expiresAt` with the caller's `now`, exactly like the memory store.
 *
 * Bounded latency: with `url`, the client is created with `commandTimeout` = `commandTimeoutMs`
 * (a stalled server rejects the command), `enableOfflineQueue: false` (nothing queues while
 * disconnected: a command issued then fails instead of waiting, possibly for minutes, and running
 * later behind the caller's back), `autoResendUnfulfilledCommands: false` (a command whose caller
 * already got an error is never replayed after a reconnection), `maxRetriesPerRequest: 1`, a
 * `connectTimeout` of 4 × `commandTimeoutMs` (at least 1 s), reconnection every 100 ms to 1 s, and
 * no auto-pipelining: ioredis runs one automatic pipeline at a time and starts a command's timeout
 * only when its pipeline is sent, so against a stalled server each command first waited for the
 * previous pipeline to time out (up to twice the bound, and requests queued behind each other).
 * On top of that, the store gives each operation one deadline of `commandTimeoutMs`, covering a
 * short wait for the connection to become ready (so start-up and reconnections are not errors),
 * and it applies to injected clients as well. While connected, on a client whose own
 * `commandTimeout` is at most `commandTimeoutMs` and that does not auto-pipeline, that bound is the
 * client's, per command (no timer of the store's on the hot path).
 *
 * Limits: standalone Redis or Sentinel, not Cluster (scripts reach keys derived from values). An
 * operation that timed out after its command was sent may still have been applied; callers treat
 * it as failed, which for take-once and rotation fails closed. Redis replication is asynchronous:
 * a failover can lose the last acknowledged writes. Clients registered without `expiresAt` are
 * the only keys kept without TTL, because the contract keeps them until deleted.
 */
export class RedisStore implements Store {
  readonly #client: Redis

  /** The connection, shared with @fastify/rate-limit so limits hold across replicas. */
  get rateLimitRedis (): Redis {
    return this.#client
  }

  readonly #owned: boolean
  /** The client rejects every command after at most our deadline (its own `commandTimeout`). */
  readonly #clientBounded: boolean
  readonly #prefix: string
  readonly #timeoutMs: number
  readonly #now: () => number
  readonly #waiters = new Set<() => void>()
  readonly #cache: TokenCache | undefined
  #closed = false
  #lastError: Error | undefined

  readonly #onReady = (): void => {
    const waiters = [...this.#waiters]
    this.#waiters.clear()
    for (const wake of waiters) wake()
  }

  readonly #onError = (err: Error): void => { this.#lastError = err }

  constructor (opts: RedisStoreOptions) {
    if ((opts.client === undefined) === (opts.url === undefined)) {
      throw new TypeError('RedisStore: pass exactly one of `client` (an ioredis instance) or `url`')
    }
    const timeout = opts.commandTimeoutMs ?? 500
    if (!Number.isFinite(timeout) || timeout <= 0) throw new TypeError('RedisStore: commandTimeoutMs must be a positive number')
    this.#timeoutMs = timeout
    // Checked before a connection exists: a bad option must not leave one open.
    const cache = opts.cache === false ? undefined : cacheSettings(opts.cache)
    this.#prefix = opts.prefix ?? 'mcp-oauth:'
    this.#now = opts.now ?? Date.now
    if (opts.client) {
      if (opts.client.options.keyPrefix) {
        throw new TypeError('RedisStore: the ioredis client has a keyPrefix; use the store\'s `prefix` option instead')
      }
      this.#client = opts.client
      this.#owned = false
    } else {
      this.#client = new Redis(opts.url as string, {
        commandTimeout: timeout,
        enableOfflineQueue: false,
        enableAutoPipelining: false,
        autoResendUnfulfilledCommands: false,
        maxRetriesPerRequest: 1,
        connectTimeout: Math.max(1000, 4 * timeout),
        retryStrategy: (times: number) => Math.min(times * 100, 1000),
        ...opts.redisOptions
      })
      this.#owned = true
      // Connection errors surface as rejected operations; keep the last one for their message.
      this.#client.on('error', this.#onError)
    }
    const bound = this.#client.options.commandTimeout
    // An auto-pipelining client starts a command's timeout late (see above): the store's own deadline then.
    this.#clientBounded = typeof bound === 'number' && bound > 0 && bound <= timeout && this.#client.options.enableAutoPipelining !== true
    this.#client.on('ready', this.#onReady)
    this.#client.on('end', this.#onReady)
    this.#cache = cache === undefined ? undefined : new TokenCache(this.#client, this.#prefix + 'at:', timeout, cache)
  }

  /** The local access-token cache: whether it serves right now, and how many records it keeps. */
  get cacheStatus (): { active: boolean, entries: number, lastError?: string } {
    return this.#cache?.status ?? { active: false, entries: 0 }
  }

  // ---- grants and tokens ----------------------------------------------------------------

  async saveGrant (grant: GrantRecord): Promise<void> {
    const { upstream, ...rest } = grant
    const p = this.#prefix
    const saved = await this.#eval('saveGrant', SCRIPTS.saveGrant,
      [p + 'g:' + grant.grantId, p + 'gf:' + grant.grantId, p + 'gu:' + grant.userId, p + 'gc:' + grant.clientId],
      [JSON.stringify(rest), grant.expiresAt, grant.userId, grant.clientId, upstream ?? '',
        upstream === undefined ? '0' : '1', ttlOf(grant.expiresAt, this.#now()), grant.grantId, p])
    if (saved === 0) throw new GrantRevokedError('saveGrant: the grant was revoked by a replayed authorization code')
  }

  async saveGrantWithTokens (
    grant: GrantRecord,
    access: { hash: string, token: AccessTokenRecord },
    refresh: { hash: string, token: RefreshTokenRecord }
  ): Promise<void> {
    const { upstream, ...rest } = grant
    const p = this.#prefix
    const now = this.#now()
    const r = refresh.token
    const saved = await this.#eval('saveGrantWithTokens', SCRIPTS.saveGrantWithTokens,
      [p + 'g:' + grant.grantId, p + 'gf:' + grant.grantId, p + 'gu:' + grant.userId, p + 'gc:' + grant.clientId,
        p + 'at:' + access.hash, p + 'rt:' + refresh.hash],
      [JSON.stringify(rest), grant.expiresAt, grant.userId, grant.clientId, upstream ?? '',
        upstream === undefined ? '0' : '1', ttlOf(grant.expiresAt, now), grant.grantId, p,
        'a:' + access.hash, ttlOf(access.token.expiresAt, now), JSON.stringify(access.token),
        'r:' + refresh.hash, ttlOf(r.expiresAt, now), JSON.stringify(refreshBase(r)), r.expiresAt, r.grantId])
    this.#cache?.forget(access.hash)
    if (saved === 0) throw new GrantRevokedError('saveGrantWithTokens: the grant was revoked by a replayed authorization code')
  }

  async getGrant (grantId: string, now: number): Promise<GrantRecord | null> {
    const [json, upstream] = await this.#op('getGrant', () => this.#client.hmget(this.#prefix + 'g:' + grantId, 'r', 'u'))
    if (json == null) return null
    const grant = JSON.parse(json) as GrantRecord
    if (grant.expiresAt <= now) return null
    if (upstream != null) grant.upstream = upstream
    return grant
  }

  async updateGrantUpstream (grantId: string, upstream: string, now: number): Promise<boolean> {
    const done = await this.#eval('updateGrantUpstream', SCRIPTS.updateUpstream, [this.#prefix + 'g:' + grantId], [upstream, now])
    return done === 1
  }

  async saveAccessToken (hash: string, token: AccessTokenRecord): Promise<void> {
    const p = this.#prefix
    const saved = await this.#eval('saveAccessToken', SCRIPTS.saveToken,
      [p + 'at:' + hash, p + 'g:' + token.grantId, p + 'gf:' + token.grantId],
      ['a', 'a:' + hash, ttlOf(token.expiresAt, this.#now()), p, JSON.stringify(token)])
    this.#cache?.forget(hash)
    if (saved !== 1) throw new Error('saveAccessToken: the grant does not exist')
  }

  async getAccessToken (hash: string, now: number): Promise<AccessTokenRecord | null> {
    const cache = this.#cache
    if (cache === undefined) return await this.#fetchAccessToken(hash, now)
    const kept = cache.get(hash, now)
    if (kept !== undefined) return kept
    const ticket = cache.begin(hash)
    let token: AccessTokenRecord | null = null
    try {
      token = await this.#fetchAccessToken(hash, -Infinity)
    } finally {
      cache.end(hash, ticket, token)
    }
    return token === null || token.expiresAt <= now ? null : { ...token, scopes: token.scopes.slice() }
  }

  /**
   * From the local cache: the record (a copy), or null when it is kept but expired at `now`;
   * undefined when the cache does not have it (or is off), and then `getAccessToken` asks Redis.
   */
  getAccessTokenNow (hash: string, now: number): AccessTokenRecord | null | undefined {
    return this.#closed ? undefined : this.#cache?.get(hash, now)
  }

  async #fetchAccessToken (hash: string, now: number): Promise<AccessTokenRecord | null> {
    const json = await this.#op('getAccessToken', () => this.#client.get(this.#prefix + 'at:' + hash))
    if (json == null) return null
    const token = JSON.parse(json) as AccessTokenRecord
    return token.expiresAt <= now ? null : token
  }

  async deleteAccessToken (hash: string): Promise<boolean> {
    this.#cache?.forget(hash)
    try {
      return (await this.#op('deleteAccessToken', () => this.#client.del(this.#prefix + 'at:' + hash))) === 1
    } finally {
      this.#cache?.forget(hash)
    }
  }

  async saveRefreshToken (hash: string, token: RefreshTokenRecord): Promise<void> {
    const p = this.#prefix
    const saved = await this.#eval('saveRefreshToken', SCRIPTS.saveToken,
      [p + 'rt:' + hash, p + 'g:' + token.grantId, p + 'gf:' + token.grantId, p + 'rs:' + hash],
      ['r', 'r:' + hash, ttlOf(token.expiresAt, this.#now()), p, JSON.stringify(refreshBase(token)), token.expiresAt, token.grantId,
        token.rotatedAt ?? '', token.successor === undefined ? '0' : '1', token.successor ?? ''])
    if (saved !== 1) throw new Error('saveRefreshToken: the grant does not exist')
  }

  async getRefreshToken (hash: string, now: number): Promise<RefreshTokenRecord | null> {
    const reply = await this.#eval('getRefreshToken', SCRIPTS.getRefresh, [this.#prefix + 'rt:' + hash, this.#prefix + 'rs:' + hash], [this.#prefix])
    if (reply == null) return null
    const [json, expiresAt, rotatedAt, hasSuccessor, successor, grantExpiresAt] = strings(reply)
    if (Number(expiresAt) <= now || grantExpiresAt === '' || Number(grantExpiresAt) <= now) return null
    return refreshRecord(json as string, rotatedAt as string, hasSuccessor === '1' ? successor : undefined)
  }

  async replayRefreshToken (hash: string, now: number): Promise<{ successor: string, replays: number } | null> {
    const p = this.#prefix
    const reply = await this.#eval('replayRefreshToken', SCRIPTS.replayRefresh, [p + 'rt:' + hash, p + 'rs:' + hash], [now, p])
    if (reply == null) return null
    const [successor, replays] = strings(reply)
    return { successor: successor as string, replays: Number(replays) }
  }

  async rotateRefreshToken (
    oldHash: string,
    next: { hash: string, token: RefreshTokenRecord },
    now: number,
    successor?: string,
    successorUntil?: number
  ): Promise<RotateResult> {
    return await this.#rotate('rotateRefreshToken', oldHash, next, undefined, now, successor, successorUntil)
  }

  async rotateRefreshTokenWithAccess (
    oldHash: string,
    next: { hash: string, token: RefreshTokenRecord },
    access: { hash: string, token: AccessTokenRecord },
    now: number,
    successor?: string,
    successorUntil?: number
  ): Promise<RotateResult> {
    try {
      return await this.#rotate('rotateRefreshTokenWithAccess', oldHash, next, access, now, successor, successorUntil)
    } finally {
      this.#cache?.forget(access.hash)
    }
  }

  async #rotate (
    name: string,
    oldHash: string,
    next: { hash: string, token: RefreshTokenRecord },
    access: { hash: string, token: AccessTokenRecord } | undefined,
    now: number,
    successor: string | undefined,
    successorUntil: number | undefined
  ): Promise<RotateResult> {
    const p = this.#prefix
    const keys = [p + 'rt:' + oldHash, p + 'rt:' + next.hash, p + 'rs:' + oldHash]
    const keep = successor === undefined ? '' : successorUntil === undefined ? 'token' : ttlOf(successorUntil, now)
    const args: Array<string | number> = [now, p, JSON.stringify(refreshBase(next.token)), next.token.expiresAt, next.token.grantId,
      ttlOf(next.token.expiresAt, now), keep, successor ?? '', 'r:' + next.hash]
    if (access !== undefined) {
      keys.push(p + 'at:' + access.hash)
      args.push('a:' + access.hash, ttlOf(access.token.expiresAt, now), JSON.stringify(access.token))
    }
    const reply = strings(await this.#eval(name, SCRIPTS.rotate, keys, args))
    switch (reply[0]) {
      case 'rotated':
        return { status: 'rotated', previous: refreshRecord(reply[1] as string, '', undefined) }
      case 'already_rotated':
        return {
          status: 'already_rotated',
          previous: refreshRecord(reply[1] as string, reply[2] as string, reply[3] === '1' ? reply[4] : undefined)
        }
      case 'mismatch':
        throw new Error('rotateRefreshToken: the successor must stay in the family')
      default:
        return { status: 'unknown' }
    }
  }

  async revokeGrant (grantId: string): Promise<boolean> {
    const p = this.#prefix
    const reply = strings(await this.#eval('revokeGrant', SCRIPTS.revoke, [p + 'g:' + grantId, p + 'gf:' + grantId], [p, grantId]))
    // The family's access tokens leave this process's cache now, not when Redis's message arrives.
    for (let i = 1; i < reply.length; i++) {
      const member = reply[i] as string
      if (member.startsWith('a:')) this.#cache?.forget(member.slice(2))
    }
    return reply[0] === '1'
  }

  async listGrants (filter: { userId: string } | { clientId: string }, now: number): Promise<string[]> {
    const p = this.#prefix
    const [key, field, value] = 'userId' in filter
      ? [p + 'gu:' + filter.userId, 'uid', filter.userId]
      : [p + 'gc:' + filter.clientId, 'cid', filter.clientId]
    return strings(await this.#eval('listGrants', SCRIPTS.listGrants, [key], [p, field, value, now]))
  }

  // ---- clients --------------------------------------------------------------------------

  async saveClient (client: ClientRecord): Promise<void> {
    // A client without `expiresAt` never expires (static and registered clients the contract
    // keeps): no TTL, and SET clears one left by an earlier version of the record.
    const from = client.registeredFrom
    await this.#eval('saveClient', SCRIPTS.saveClient, [this.#prefix + 'c:' + client.clientId], [
      JSON.stringify(client),
      client.expiresAt === undefined ? '' : ttlOf(client.expiresAt, this.#now()),
      from === undefined ? '0' : '1', from ?? '', client.clientId, this.#prefix,
      client.expiresAt === undefined ? '+inf' : client.expiresAt, this.#now()
    ])
  }

  async getClient (clientId: string, now: number): Promise<ClientRecord | null> {
    const json = await this.#op('getClient', () => this.#client.get(this.#prefix + 'c:' + clientId))
    if (json == null) return null
    const client = JSON.parse(json) as ClientRecord
    if (client.expiresAt !== undefined && client.expiresAt <= now) return null
    return client
  }

  async deleteClient (clientId: string): Promise<boolean> {
    const deleted = await this.#eval('deleteClient', SCRIPTS.deleteClient, [this.#prefix + 'c:' + clientId], [this.#prefix, clientId])
    return deleted === 1
  }

  async renewClient (clientId: string, expiresAt: number, now: number): Promise<boolean> {
    const key = this.#prefix + 'c:' + clientId
    // Read, then swap only if unchanged; a concurrent save wins and the read starts again (bounded).
    for (let attempt = 0; attempt < 3; attempt++) {
      const json = await this.#op('renewClient', () => this.#client.get(key))
      if (json == null) return false
      const client = JSON.parse(json) as ClientRecord
      if (client.expiresAt !== undefined && client.expiresAt <= now) return false
      if (client.expiresAt !== undefined && client.expiresAt >= expiresAt) return true
      const swapped = await this.#eval('renewClient', SCRIPTS.renewClient, [key], [
        json, JSON.stringify({ ...client, expiresAt }), ttlOf(expiresAt, now), this.#prefix, client.registeredFrom ?? '', clientId, expiresAt
      ])
      if (swapped === 1) return true
    }
    // Saved three times meanwhile: the client is live, and the next use renews it.
    return true
  }

  async countClientsFrom (address: string, now: number): Promise<number> {
    const n = await this.#eval('countClientsFrom', SCRIPTS.countClientsFrom, [this.#prefix + 'cf:' + address], [this.#prefix, now])
    return Number(n)
  }

  // ---- locks ----------------------------------------------------------------------------

  async acquireLock (key: string, ttlMs: number): Promise<string | null> {
    const owner = randomUUID()
    const ok = await this.#op('acquireLock', () => this.#client.set(this.#prefix + 'lock:' + key, owner, 'PX', Math.max(1, Math.ceil(ttlMs)), 'NX'))
    return ok === 'OK' ? owner : null
  }

  async releaseLock (key: string, owner: string): Promise<void> {
    await this.#eval('releaseLock', SCRIPTS.releaseLock, [this.#prefix + 'lock:' + key], [owner])
  }

  // ---- flows and codes ------------------------------------------------------------------

  async saveFlow (key: string, flow: FlowRecord): Promise<void> {
    await this.#op('saveFlow', () =>
      this.#client.set(this.#prefix + 'f:' + key, JSON.stringify(flow), 'PX', ttlOf(flow.expiresAt, this.#now())))
  }

  async takeFlow (key: string, now: number): Promise<FlowRecord | null> {
    const json = await this.#eval('takeFlow', SCRIPTS.takeFlow, [this.#prefix + 'f:' + key], [])
    if (json == null) return null
    const flow = JSON.parse(String(json)) as FlowRecord
    return flow.expiresAt > now ? flow : null
  }

  async saveCode (hash: string, code: CodeRecord): Promise<void> {
    await this.#eval('saveCode', SCRIPTS.saveCode, [this.#prefix + 'ac:' + hash],
      [JSON.stringify(code), code.expiresAt, ttlOf(code.expiresAt, this.#now())])
  }

  async consumeCode (hash: string, now: number, retainUntil: number): Promise<ConsumeCodeResult> {
    const [status, json] = strings(await this.#eval('consumeCode', SCRIPTS.consumeCode, [this.#prefix + 'ac:' + hash], [now, retainUntil, this.#prefix]))
    if (status === 'ok' || status === 'reused') return { status, code: JSON.parse(json as string) as CodeRecord }
    return { status: 'unknown' }
  }

  // ---- housekeeping ---------------------------------------------------------------------

  /**
   * Approximate counts, from one incremental SCAN of this store's prefix (never KEYS): each step
   * examines about 1000 keys and is bounded by `commandTimeoutMs`, so Redis is never blocked;
   * the cost is one round trip per 1000 keys in the database. SCAN may return a key twice and
   * misses keys created during the pass; fine for a gauge.
   */
  async stats (): Promise<StoreStats> {
    const counts: StoreStats = { accessTokens: 0, refreshTokens: 0, grants: 0, clients: 0, flows: 0, codes: 0 }
    const kinds: Record<string, keyof StoreStats> = {
      at: 'accessTokens', rt: 'refreshTokens', g: 'grants', c: 'clients', f: 'flows', ac: 'codes'
    }
    const match = globEscape(this.#prefix) + '*'
    const skip = this.#prefix.length
    let cursor = '0'
    do {
      const [next, keys] = await this.#op('stats', () => this.#client.scan(cursor, 'MATCH', match, 'COUNT', SCAN_COUNT))
      for (const key of keys) {
        const colon = key.indexOf(':', skip)
        const kind = colon < 0 ? undefined : kinds[key.slice(skip, colon)]
        if (kind) counts[kind]++
      }
      cursor = next
    } while (cursor !== '0')
    return counts
  }

  /** Quits the client when the store created it; an injected client is left open. */
  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    await this.#cache?.close()
    this.#client.off('ready', this.#onReady)
    this.#client.off('end', this.#onReady)
    this.#onReady()
    if (!this.#owned) return
    // The error listener stays: a late socket error must not be reported as unhandled.
    if (this.#client.status === 'ready') {
      let timer: NodeJS.Timeout | undefined
      await Promise.race([
        this.#client.quit().catch(noop),
        new Promise<void>(resolve => { timer = setTimeout(resolve, this.#timeoutMs) })
      ])
      clearTimeout(timer)
    }
    if (this.#client.status !== 'end') this.#client.disconnect()
  }

  // ---- plumbing -------------------------------------------------------------------------

  #status (): RedisStatus {
    return this.#client.status
  }

  /** Run a script by SHA; load it (EVAL) when the server does not know it (first use, restart). */
  #eval (name: string, s: Script, keys: string[], args: Array<string | number>): Promise<unknown> {
    return this.#op(name, async (live) => {
      try {
        return await this.#client.evalsha(s.sha, keys.length, ...keys, ...args)
      } catch (err) {
        if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT') || !live()) throw err
        return await this.#client.eval(s.lua, keys.length, ...keys, ...args)
      }
    })
  }

  /**
   * One store operation under one deadline. When the connection is not ready, wait for it (up
   * to the deadline) rather than fail at once; after the deadline nothing more is sent, so an
   * operation the caller saw fail never runs later.
   */
  #op<T> (name: string, fn: (live: () => boolean) => Promise<T>): Promise<T> {
    if (this.#closed) return Promise.reject(new RedisStoreError(`RedisStore: ${name} after close()`))
    // The common case: connected, and the client bounds each command itself (`commandTimeout` no
    // longer than ours, as on the client the store creates). No timer or race of ours, no extra
    // promise: a deadline read from the clock keeps a retry (the script reload) from being sent
    // after it.
    if (this.#client.status === 'ready' && this.#clientBounded) {
      const deadline = performance.now() + this.#timeoutMs
      try {
        return fn(() => performance.now() < deadline).then(undefined, (err: unknown) => { throw unavailable(name, err) })
      } catch (err) {
        return Promise.reject(unavailable(name, err))
      }
    }
    return this.#waitingOp(name, fn).then(undefined, (err: unknown) => { throw unavailable(name, err) })
  }

  /** An operation that may have to wait for the connection, under a deadline of its own. */
  async #waitingOp<T> (name: string, fn: (live: () => boolean) => Promise<T>): Promise<T> {
    let expired = false
    let wake: (() => void) | undefined
    let timer: NodeJS.Timeout | undefined
    const deadline = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => {
        expired = true
        if (wake) this.#waiters.delete(wake)
        const cause = this.#client.status === 'ready' ? '' : `; connection ${this.#client.status}${this.#lastError ? ` (${this.#lastError.message})` : ''}`
        reject(new RedisStoreError(`RedisStore: ${name} timed out after ${this.#timeoutMs} ms${cause}`))
      }, this.#timeoutMs)
    })
    const work = async (): Promise<T> => {
      if (this.#client.status !== 'ready') {
        if (this.#client.status === 'wait') this.#client.connect().catch(noop)
        if (this.#client.status !== 'end') {
          await new Promise<void>(resolve => { wake = resolve; this.#waiters.add(resolve) })
        }
        if (expired) throw new RedisStoreError(`RedisStore: ${name} timed out`)
        if (this.#closed) throw new RedisStoreError(`RedisStore: ${name} after close()`)
        // Read through a function: TypeScript would keep the status narrowed across the await.
        if (this.#status() !== 'ready') throw new RedisStoreError(`RedisStore: ${name}: the Redis connection is closed`)
      }
      return await fn(() => !expired)
    }
    try {
      return await Promise.race([work(), deadline])
    } finally {
      clearTimeout(timer)
    }
  }
}

/** A failure of Redis or of the connection as a RedisStoreError (ioredis rejects with plain Errors: "Command timed out"). */
function unavailable (name: string, err: unknown): RedisStoreError {
  if (err instanceof RedisStoreError) return err
  return new RedisStoreError(`RedisStore: ${name}: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
}

/** The immutable part of a refresh token, stored as JSON; rotation state lives in hash fields. */
function refreshBase (token: RefreshTokenRecord): RefreshTokenRecord {
  const { rotatedAt: _r, successor: _s, ...base } = token
  return base
}

function refreshRecord (json: string, rotatedAt: string, successor: string | undefined): RefreshTokenRecord {
  const token = JSON.parse(json) as RefreshTokenRecord
  if (rotatedAt !== '') token.rotatedAt = Number(rotatedAt)
  if (successor !== undefined) token.successor = successor
  return token
}
