import t from 'tap'
import type { Test } from 'tap'
import { Redis } from 'ioredis'
import { RedisStore, type RedisStoreOptions } from '../lib/storage/redis/index.js'
import { TokenCache } from '../lib/storage/redis/cache.js'
import type { AccessTokenRecord, GrantRecord } from '../lib/storage/contract.js'
import { generateId, generateToken, hashToken } from '../lib/oauth/tokens.js'
import { storeContract } from './helpers/store-contract.js'
import { withRedisServer } from './helpers/redis-tests.js'
import type { RedisServer } from './helpers/redis.js'

// The RedisStore's local access-token cache (lib/storage/redis/cache.ts) against a real
// redis-server: what it serves, and every way a record leaves it (revocation on another replica,
// this replica's own writes, expiry in Redis, FLUSHDB, a dropped or silent tracking connection).

const HOUR = 3_600_000

await withRedisServer('the Redis store\'s cache', cacheTests)

/** Poll `check` (every few ms, at most `ms`): true once it held. */
async function until (check: () => boolean, ms = 3000): Promise<boolean> {
  const end = Date.now() + ms
  while (!check()) {
    if (Date.now() > end) return false
    await new Promise(resolve => setTimeout(resolve, 5))
  }
  return true
}

function cacheTests (server: RedisServer): void {
  let n = 0
  const freshPrefix = (): string => `c${++n}-${generateId()}:`

  function inspector (tt: Test): Redis {
    const redis = new Redis(server.url)
    tt.teardown(async () => { await redis.quit().catch(() => { redis.disconnect() }) })
    return redis
  }

  /** A store whose cache is serving (tracking set up) when it is returned. */
  async function store (tt: Test, opts: Partial<RedisStoreOptions> = {}): Promise<RedisStore> {
    const s = new RedisStore({ url: server.url, ...opts })
    tt.teardown(() => s.close())
    if (opts.cache !== false) tt.ok(await until(() => s.cacheStatus.active), 'the cache is on once tracking is set up')
    return s
  }

  async function issued (s: RedisStore, over: Partial<GrantRecord> = {}, tokenLifetime = HOUR): Promise<{ hash: string, record: AccessTokenRecord, grant: GrantRecord }> {
    const now = Date.now()
    const grant: GrantRecord = {
      grantId: generateId(),
      userId: 'user-1',
      clientId: 'client-1',
      scopes: ['mcp:tools'],
      resource: 'https://rs.example.com/mcp',
      createdAt: now,
      expiresAt: now + 24 * HOUR,
      ...over
    }
    await s.saveGrant(grant)
    const record: AccessTokenRecord = {
      grantId: grant.grantId,
      clientId: grant.clientId,
      userId: grant.userId,
      scopes: grant.scopes,
      resource: grant.resource,
      issuedAt: now,
      expiresAt: now + tokenLifetime
    }
    const hash = hashToken(generateToken('accessToken'))
    await s.saveAccessToken(hash, record)
    return { hash, record, grant }
  }

  /**
   * Read until the record is kept. The first read of a token just saved may not be: the message
   * about its SET can arrive while the read is in flight, and such a read is never kept.
   */
  async function warm (s: RedisStore, hash: string, now: number): Promise<boolean> {
    for (let i = 0; i < 20; i++) {
      await s.getAccessToken(hash, now)
      if (s.getAccessTokenNow(hash, now) != null) return true
      await new Promise(resolve => setTimeout(resolve, 5))
    }
    return false
  }

  t.test('storage contract: RedisStore without the cache', async t => {
    const T0 = Date.UTC(2026, 0, 1)
    storeContract(t, async () => new RedisStore({ url: server.url, prefix: freshPrefix(), now: () => T0, cache: false }))
  })

  t.test('a token read once is served from memory, as a copy; until then only Redis knows', async t => {
    const s = await store(t, { prefix: freshPrefix() })
    const { hash, record } = await issued(s)
    const now = Date.now()
    t.equal(s.getAccessTokenNow(hash, now), undefined, 'never read: not known in memory')
    t.same(await s.getAccessToken(hash, now), record)
    t.ok(await warm(s, hash, now))
    const kept = s.getAccessTokenNow(hash, now)
    t.same(kept, record, 'served from memory after one read')
    kept?.scopes.push('injected')
    t.same(s.getAccessTokenNow(hash, now), record, 'the kept record is not the one handed out')
    t.same(await s.getAccessToken(hash, now), record, 'getAccessToken answers from memory too')
    t.equal(s.getAccessTokenNow(hash, record.expiresAt), null, 'kept but expired at expiresAt: null')
    t.equal(s.getAccessTokenNow(hashToken('never-issued'), now), undefined, 'an unknown token is never cached')
    t.equal(await s.getAccessToken(hashToken('never-issued'), now), null)
    t.equal(s.getAccessTokenNow(hashToken('never-issued'), now), undefined, 'nor after a miss in Redis')
    t.equal(s.cacheStatus.entries, 1)
  })

  t.test('a revocation or deletion on another replica leaves this one when Redis says so', async t => {
    const prefix = freshPrefix()
    const a = await store(t, { prefix })
    const b = await store(t, { prefix })
    const one = await issued(a)
    const two = await issued(a)
    const now = Date.now()
    for (const { hash } of [one, two]) t.ok(await warm(b, hash, now), 'B keeps it')

    const started = performance.now()
    t.equal(await a.revokeGrant(one.grant.grantId), true)
    t.ok(await until(() => b.getAccessTokenNow(one.hash, now) === undefined), 'revoked at A: gone from B\'s memory')
    t.comment(`invalidation seen at B ${(performance.now() - started).toFixed(2)} ms after the revocation was sent`)
    t.equal(await b.getAccessToken(one.hash, now), null, 'and Redis says unknown')

    t.equal(await a.deleteAccessToken(two.hash), true)
    t.ok(await until(() => b.getAccessTokenNow(two.hash, now) === undefined), 'deleted at A: gone from B')
    t.equal(await b.getAccessToken(two.hash, now), null)
  })

  t.test('this store\'s own writes forget the token at once, before any message', async t => {
    const s = await store(t, { prefix: freshPrefix() })
    const one = await issued(s)
    const two = await issued(s)
    const now = Date.now()
    t.ok(await warm(s, one.hash, now))
    t.ok(await warm(s, two.hash, now))
    await s.revokeGrant(one.grant.grantId)
    t.equal(s.getAccessTokenNow(one.hash, now), undefined, 'revokeGrant: no longer in memory when it returns')
    t.equal(await s.getAccessToken(one.hash, now), null)
    await s.deleteAccessToken(two.hash)
    t.equal(s.getAccessTokenNow(two.hash, now), undefined, 'deleteAccessToken: the same')
    // A token saved again under the same hash is read again.
    const three = await issued(s)
    t.ok(await warm(s, three.hash, now))
    const changed = { ...three.record, scopes: ['other'] }
    await s.saveAccessToken(three.hash, changed)
    t.equal(s.getAccessTokenNow(three.hash, now), undefined, 'saveAccessToken over a kept record: forgotten')
    t.same(await s.getAccessToken(three.hash, now), changed)
  })

  t.test('expiry in Redis (a grant that ends before its token) and FLUSHDB empty the cache', async t => {
    const s = await store(t, { prefix: freshPrefix() })
    const now = Date.now()
    // The key's TTL is the grant's (300 ms), shorter than the record's expiresAt (an hour).
    const short = await issued(s, { expiresAt: now + 300 })
    t.ok(await warm(s, short.hash, now), 'kept')
    t.ok(await until(() => s.getAccessTokenNow(short.hash, now) === undefined), 'gone when Redis expired the key')
    t.equal(await s.getAccessToken(short.hash, now), null)

    const kept = await issued(s)
    t.ok(await warm(s, kept.hash, now))
    await inspector(t).flushdb()
    t.ok(await until(() => s.cacheStatus.entries === 0), 'FLUSHDB: everything forgotten')
    t.equal(await s.getAccessToken(kept.hash, now), null)
  })

  t.test('a dropped tracking connection: nothing served until tracking is set up again', async t => {
    const prefix = freshPrefix()
    const a = await store(t, { prefix })
    const b = await store(t, { prefix })
    const tok = await issued(a)
    const now = Date.now()
    t.ok(await warm(b, tok.hash, now), 'kept')
    // Kills every tracking connection of this server (the only Pub/Sub clients here).
    const admin = inspector(t)
    t.ok(Number(await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub')) >= 1)
    t.ok(await until(() => !b.cacheStatus.active), 'off when the connection closes')
    t.equal(b.getAccessTokenNow(tok.hash, now), undefined, 'and emptied')
    t.ok(await until(() => a.cacheStatus.active && b.cacheStatus.active), 'on again after the reconnection')
    t.ok(await warm(b, tok.hash, now), 'kept again')
    await a.revokeGrant(tok.grant.grantId)
    t.ok(await until(() => b.getAccessTokenNow(tok.hash, now) === undefined), 'invalidations flow on the new connection')
  })

  t.test('a tracking connection that stops answering: the heartbeat turns the cache off', async t => {
    const s = await store(t, { prefix: freshPrefix(), commandTimeoutMs: 150, cache: { maxAgeMs: 400 } })
    const tok = await issued(s)
    const now = Date.now()
    t.ok(await warm(s, tok.hash, now), 'kept')
    // Redis answers nobody for a second: the heartbeat (every 200 ms here) times out after 150 ms.
    await inspector(t).call('CLIENT', 'PAUSE', '1000', 'ALL')
    t.ok(await until(() => !s.cacheStatus.active, 900), 'off before the pause ends')
    t.equal(s.getAccessTokenNow(tok.hash, now), undefined, 'and emptied')
    t.ok(await until(() => s.cacheStatus.active), 'on again when Redis answers')
    t.match(s.cacheStatus.lastError, /timed out|timeout/i, 'the reason is kept for operators')
  })

  t.test('bounds: the oldest entries go first, and no entry is served past maxAgeMs', async t => {
    const s = await store(t, { prefix: freshPrefix(), cache: { maxEntries: 2, maxAgeMs: 150 } })
    const now = Date.now()
    const tokens = [await issued(s), await issued(s), await issued(s)]
    for (const { hash } of tokens) t.ok(await warm(s, hash, now))
    t.equal(s.cacheStatus.entries, 2)
    t.equal(s.getAccessTokenNow(tokens[0]?.hash as string, now), undefined, 'the first one left')
    t.ok(s.getAccessTokenNow(tokens[2]?.hash as string, now))
    await new Promise(resolve => setTimeout(resolve, 300))
    t.equal(s.getAccessTokenNow(tokens[2]?.hash as string, now), undefined, 'too old: asked again')
    t.same(await s.getAccessToken(tokens[2]?.hash as string, now), tokens[2]?.record)
  })

  t.test('a read with an invalidation in flight is not kept (the reply and the message race)', async t => {
    const prefix = freshPrefix()
    const source = new Redis(server.url)
    t.teardown(() => { source.disconnect() })
    const cache = new TokenCache(source, prefix + 'at:', 500)
    t.teardown(() => cache.close())
    t.ok(await until(() => cache.status.active))
    const record: AccessTokenRecord = { grantId: 'g', clientId: 'c', userId: 'u', scopes: ['s'], resource: 'r', issuedAt: 0, expiresAt: Date.now() + HOUR }
    const now = Date.now()
    // `probe` shows when the messages arrived: it is changed after `racing` in the same transaction.
    const ticket = cache.begin('racing')
    const probe = cache.begin('probe')
    cache.end('probe', probe, record)
    t.ok(cache.get('probe', now))
    await inspector(t).multi().set(prefix + 'at:racing', 'x').set(prefix + 'at:probe', 'x').exec()
    t.ok(await until(() => cache.get('probe', now) === undefined), 'the messages arrived')
    cache.end('racing', ticket, record)
    t.equal(cache.get('racing', now), undefined, 'the stale reply was not kept')
    const again = cache.begin('racing')
    cache.end('racing', again, record)
    t.ok(cache.get('racing', now), 'a read begun after the message is kept')
    // A read begun while the cache was off is never kept, even if it ends after it is back.
    const before = new TokenCache(source, prefix + 'at:', 500)
    t.teardown(() => before.close())
    const early = before.begin('early')
    t.equal(early, -1, 'no ticket while off')
    t.ok(await until(() => before.status.active))
    before.end('early', early, record)
    t.equal(before.get('early', now), undefined)
  })

  t.test('cache: false, and bad cache options', async t => {
    const s = await store(t, { prefix: freshPrefix(), cache: false })
    const tok = await issued(s)
    await s.getAccessToken(tok.hash, Date.now())
    t.equal(s.getAccessTokenNow(tok.hash, Date.now()), undefined, 'never answers from memory')
    t.same(s.cacheStatus, { active: false, entries: 0 })
    t.throws(() => new RedisStore({ url: server.url, cache: { maxEntries: 0 } }), /maxEntries/)
    t.throws(() => new RedisStore({ url: server.url, cache: { maxEntries: 1.5 } }), /maxEntries/)
    t.throws(() => new RedisStore({ url: server.url, cache: { maxAgeMs: -1 } }), /maxAgeMs/)
    t.throws(() => new RedisStore({ url: server.url, cache: { maxAgeMs: Number.NaN } }), /maxAgeMs/)
  })

  t.test('a closed store answers nothing from memory and leaves no connection behind', async t => {
    const s = new RedisStore({ url: server.url, prefix: freshPrefix() })
    t.ok(await until(() => s.cacheStatus.active))
    const tok = await issued(s)
    t.ok(await warm(s, tok.hash, Date.now()))
    const admin = inspector(t)
    const named = async () => String(await admin.client('LIST')).split('\n').filter(l => l.includes('name=mcp-oauth-token-cache')).length
    t.ok(await named() >= 1)
    await s.close()
    t.equal(s.getAccessTokenNow(tok.hash, Date.now()), undefined)
    t.same(s.cacheStatus, { active: false, entries: 0 })
    let left = await named()
    for (let i = 0; i < 100 && left > 0; i++) {
      await new Promise(resolve => setTimeout(resolve, 10))
      left = await named()
    }
    t.equal(left, 0, 'the tracking connection is closed')
  })
}
