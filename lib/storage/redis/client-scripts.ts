import { script } from './scripts.js'

/**
 * The RedisStore's Lua scripts for clients and the per-address index (`{p}cf:<address>`, see the
 * key layout in scripts.ts) that caps dynamic registration.
 */

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

export const CLIENT_SCRIPTS = {
  saveClient: script(SAVE_CLIENT),
  deleteClient: script(DELETE_CLIENT),
  renewClient: script(RENEW_CLIENT),
  countClientsFrom: script(COUNT_CLIENTS_FROM)
}
