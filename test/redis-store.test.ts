import t from 'tap'
import type { Test } from 'tap'
import { Redis } from 'ioredis'
import { RedisStore } from '../lib/storage/redis/index.js'
import type { GrantRecord, RefreshTokenRecord } from '../lib/storage/contract.js'
import { generateId, generateToken, hashToken } from '../lib/oauth/tokens.js'
import { publicClient, storeContract } from './helpers/store-contract.js'
import { freePort, startRedisServer } from './helpers/redis.js'
import { eventually, withRedisServer } from './helpers/redis-tests.js'
import type { RedisServer } from './helpers/redis.js'

// These tests start their own redis-server (a child process on a free loopback port), so all
// they need is the binary: `apt-get install -y redis-server`. Without it they are skipped on a
// developer machine and fail under CI, where a silent skip would hide the whole Redis store.

const HOUR = 3_600_000
/** The contract suite's own epoch (test/helpers/store-contract.ts). */
const T0 = Date.UTC(2026, 0, 1)

await withRedisServer('the Redis store', redisTests)

function redisTests (server: RedisServer): void {
  let n = 0
  /** A prefix no other test uses: tests share one server without seeing each other's keys. */
  const freshPrefix = (): string => `t${++n}-${generateId()}:`

  /** A raw client for inspecting the database; quit at the end of the test. */
  function inspector (tt: Test): Redis {
    const redis = new Redis(server.url, { lazyConnect: false })
    tt.teardown(async () => { await redis.quit().catch(() => { redis.disconnect() }) })
    return redis
  }

  function store (tt: Test, opts: Partial<ConstructorParameters<typeof RedisStore>[0]> = {}): RedisStore {
    const s = new RedisStore({ url: server.url, ...opts })
    tt.teardown(() => s.close())
    return s
  }

  function grant (now: number, over: Partial<GrantRecord> = {}): GrantRecord {
    return {
      grantId: generateId(),
      userId: 'user-1',
      clientId: 'client-1',
      scopes: ['mcp:tools'],
      resource: 'https://rs.example.com/mcp',
      createdAt: now,
      expiresAt: now + 24 * HOUR,
      ...over
    }
  }

  function refresh (g: GrantRecord, now: number): RefreshTokenRecord {
    return { grantId: g.grantId, clientId: g.clientId, scopes: g.scopes, issuedAt: now, expiresAt: now + 12 * HOUR }
  }

  function access (g: GrantRecord, now: number) {
    return { grantId: g.grantId, clientId: g.clientId, userId: g.userId, scopes: g.scopes, resource: g.resource, issuedAt: now, expiresAt: now + HOUR }
  }

  function code (now: number, grantId = 'g1') {
    return {
      clientId: 'c1',
      redirectUri: 'http://127.0.0.1/cb',
      codeChallenge: 'x',
      codeChallengeMethod: 'S256' as const,
      scopes: [],
      resource: 'r',
      grantId,
      userId: 'u1',
      issuedAt: now,
      expiresAt: now + 60_000
    }
  }

  function flow (now: number) {
    return {
      clientId: 'c1',
      redirectUri: 'http://127.0.0.1/cb',
      codeChallenge: 'x',
      codeChallengeMethod: 'S256' as const,
      scopes: [],
      resource: 'r',
      upstreamVerifier: 'v',
      browserBinding: 'b',
      createdAt: now,
      expiresAt: now + 600_000
    }
  }

  async function keysOf (redis: Redis, prefix: string): Promise<string[]> {
    const keys: string[] = []
    let cursor = '0'
    do {
      const [next, batch] = await redis.scan(cursor, 'MATCH', prefix + '*', 'COUNT', 1000)
      keys.push(...batch)
      cursor = next
    } while (cursor !== '0')
    return [...new Set(keys)].sort()
  }

  t.test('storage contract: RedisStore', async t => {
    // The contract's records are dated around T0; the store's clock (used only to turn expiresAt
    // into TTLs on saves) is pinned there too, so the TTLs are the records' real lifetimes.
    storeContract(t, async () => new RedisStore({ url: server.url, prefix: freshPrefix(), now: () => T0 }))
  })

  t.test('every key carries a TTL after a full set of operations', async t => {
    const now = Date.now()
    const prefix = freshPrefix()
    const s = store(t, { prefix })
    const g = grant(now, { upstream: 'enc:blob' })
    const other = grant(now, { userId: 'user-2', clientId: 'client-2' })
    await s.saveGrant(g)
    await s.saveGrant(other)
    const a = hashToken(generateToken('accessToken'))
    await s.saveAccessToken(a, access(g, now))
    const r1 = hashToken(generateToken('refreshToken'))
    const r2 = hashToken(generateToken('refreshToken'))
    await s.saveRefreshToken(r1, refresh(g, now))
    t.equal((await s.rotateRefreshToken(r1, { hash: r2, token: refresh(g, now) }, now, 'succ')).status, 'rotated')
    await s.saveAccessToken(hashToken(generateToken('accessToken')), access(other, now))
    await s.saveRefreshToken(hashToken(generateToken('refreshToken')), refresh(other, now))
    t.equal(await s.updateGrantUpstream(g.grantId, 'enc:blob-2', now), true)
    await s.saveClient(publicClient({ clientIdIssuedAt: Math.floor(now / 1000), registeredFrom: '192.0.2.1', expiresAt: now + HOUR }))
    await s.saveFlow('flow-1', flow(now))
    const c = hashToken(generateToken('authorizationCode'))
    await s.saveCode(c, code(now, g.grantId))
    await s.saveCode(hashToken(generateToken('authorizationCode')), code(now, g.grantId))
    t.equal((await s.consumeCode(c, now, now + HOUR)).status, 'ok')
    t.same(await s.listGrants({ userId: 'user-1' }, now), [g.grantId])
    t.same(await s.listGrants({ clientId: 'client-2' }, now), [other.grantId])
    t.equal(await s.countClientsFrom('192.0.2.1', now), 1)

    const redis = inspector(t)
    const keys = await keysOf(redis, prefix)
    const kinds = new Set(keys.map(k => k.slice(prefix.length).split(':')[0]))
    t.same([...kinds].sort(), ['ac', 'at', 'c', 'cf', 'f', 'g', 'gc', 'gf', 'gu', 'rs', 'rt'], 'every kind of key was written')
    for (const key of keys) {
      const ttl = await redis.pttl(key)
      t.ok(ttl > 0, `${key.slice(prefix.length, prefix.length + 12)}… has a TTL (${ttl} ms)`)
    }
    const pttl = async (k: string): Promise<number> => await redis.pttl(prefix + k)
    t.ok(await pttl('at:' + a) <= HOUR && await pttl('at:' + a) > HOUR - 60_000, 'access token TTL = its lifetime')
    t.ok(await pttl('ac:' + c) > HOUR - 60_000, 'a consumed code is retained until retainUntil')
    t.ok(await pttl('gf:' + g.grantId) > 23 * HOUR, 'the family lives as long as its grant')
    t.same(await s.stats(), { accessTokens: 2, refreshTokens: 3, grants: 2, clients: 1, flows: 1, codes: 2 }, 'stats count by SCAN')

    t.equal(await s.revokeGrant(g.grantId), true)
    const after = await keysOf(redis, prefix)
    t.notOk(after.some(k => k.includes(g.grantId)), 'nothing named after the revoked grant is left')
    for (const h of [a, r1, r2]) t.notOk(after.some(k => k.endsWith(h)), 'its tokens are gone')
    t.same(await s.listGrants({ userId: 'user-1' }, now), [])
    t.equal(await redis.exists(prefix + 'gu:user-1'), 0, 'and it left the user index')
  })

  t.test('saveGrantWithTokens: one script; the tokens\' TTLs are capped by the grant\'s, the family holds both', async t => {
    const prefix = freshPrefix()
    const s = store(t, { prefix })
    const redis = inspector(t)
    const now = Date.now()
    const g = grant(now, { expiresAt: now + 60_000 })
    const a = hashToken(generateToken('accessToken'))
    const r = hashToken(generateToken('refreshToken'))
    await s.saveGrantWithTokens(g, { hash: a, token: access(g, now) }, { hash: r, token: refresh(g, now) })
    for (const key of ['g:' + g.grantId, 'at:' + a, 'rt:' + r, 'gf:' + g.grantId]) {
      const ttl = await redis.pttl(prefix + key)
      t.ok(ttl > 0 && ttl <= 60_000, `${key.split(':')[0]}: TTL within the grant's minute (${ttl} ms)`)
    }
    t.same((await redis.smembers(prefix + 'gf:' + g.grantId)).sort(), ['a:' + a, 'r:' + r].sort())
    t.same(await s.listGrants({ userId: g.userId }, now), [g.grantId], 'indexed by user like saveGrant')
    t.same(await s.getRefreshToken(r, now), refresh(g, now))
  })

  t.test('a client without expiresAt is kept without TTL; a later expiry replaces that', async t => {
    const prefix = freshPrefix()
    const s = store(t, { prefix })
    const redis = inspector(t)
    const now = Date.now()
    const client = publicClient({ clientId: 'static-1', redirectUris: ['https://a.example.com/cb'], applicationType: 'web', source: 'static', registeredFrom: '192.0.2.9' })
    await s.saveClient(client)
    t.equal(await redis.pttl(prefix + 'c:static-1'), -1)
    t.equal(await redis.pttl(prefix + 'cf:192.0.2.9'), -1, 'the address index keeps a never-expiring member')
    await s.saveClient({ ...client, expiresAt: now + HOUR })
    t.ok(await redis.pttl(prefix + 'c:static-1') > 0)
    t.ok(await redis.pttl(prefix + 'cf:192.0.2.9') === -1, 'index TTL only grows (max of its members)')
    await s.saveClient({ ...client, clientId: 'dcr-2', registeredFrom: '192.0.2.10', expiresAt: now + HOUR })
    t.ok(await redis.pttl(prefix + 'cf:192.0.2.10') > 0)
  })

  t.test('50 concurrent rotations from two separate clients: exactly one wins', async t => {
    const prefix = freshPrefix()
    const a = store(t, { prefix })
    const b = store(t, { prefix })
    const now = Date.now()
    const g = grant(now)
    await a.saveGrant(g)
    const h = hashToken(generateToken('refreshToken'))
    await a.saveRefreshToken(h, refresh(g, now))
    const successors = Array.from({ length: 50 }, () => hashToken(generateToken('refreshToken')))
    const results = await Promise.all(successors.map((next, i) =>
      (i % 2 === 0 ? a : b).rotateRefreshToken(h, { hash: next, token: refresh(g, now) }, now + 1, 'from-' + i)))
    const winners = results.flatMap((r, i) => r.status === 'rotated' ? [i] : [])
    t.equal(winners.length, 1, 'one rotation')
    t.equal(results.filter(r => r.status === 'already_rotated').length, 49, 'everybody else saw it rotated')
    const winner = winners[0] as number
    const stored = await Promise.all(successors.map(x => b.getRefreshToken(x, now + 2)))
    t.equal(stored.filter(x => x !== null).length, 1, 'only the winner\'s successor was written')
    t.ok(stored[winner], 'and it is the winner\'s')
    t.equal((await a.getRefreshToken(h, now + 2))?.successor, 'from-' + winner, 'the old token names the winner\'s successor')
  })

  t.test('consumeCode and takeFlow from two clients: one taker', async t => {
    const prefix = freshPrefix()
    const a = store(t, { prefix })
    const b = store(t, { prefix })
    const now = Date.now()
    const h = hashToken(generateToken('authorizationCode'))
    await a.saveCode(h, code(now))
    const codes = await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? a : b).consumeCode(h, now + 1, now + HOUR)))
    t.equal(codes.filter(r => r.status === 'ok').length, 1)
    t.equal(codes.filter(r => r.status === 'reused').length, 39)

    await a.saveFlow('k', flow(now))
    const flows = await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? a : b).takeFlow('k', now + 1)))
    t.equal(flows.filter(f => f !== null).length, 1)
  })

  t.test('family and index sets are pruned, never unbounded', async t => {
    const prefix = freshPrefix()
    const s = store(t, { prefix })
    const redis = inspector(t)
    const now = Date.now()
    const g = grant(now)
    await s.saveGrant(g)
    for (let i = 0; i < 100; i++) {
      const h = hashToken(generateToken('accessToken'))
      await s.saveAccessToken(h, access(g, now))
      await s.deleteAccessToken(h)
    }
    t.ok(await redis.scard(prefix + 'gf:' + g.grantId) <= 16, 'dead members are dropped as new ones arrive')
    for (let i = 0; i < 40; i++) {
      const dead = grant(now, { userId: 'busy' })
      await s.saveGrant(dead)
      await redis.del(prefix + 'g:' + dead.grantId) // expired behind the store's back
    }
    t.ok(await redis.scard(prefix + 'gu:busy') <= 16, 'the user index drops grants that are gone')
    t.same(await s.listGrants({ userId: 'busy' }, now), [])
    t.equal(await redis.exists(prefix + 'gu:busy'), 0, 'listing prunes the rest')
  })

  t.test('adding to a large family or index costs a few lookups, not one per member', async t => {
    const prefix = freshPrefix()
    const s = store(t, { prefix })
    const redis = inspector(t)
    const now = Date.now()
    /** EXISTS calls so far on this server (scripts' calls included). */
    const existsCalls = async (): Promise<number> => {
      const info = await redis.info('commandstats')
      return Number(/cmdstat_exists:calls=(\d+)/.exec(info)?.[1] ?? 0)
    }
    const g = grant(now, { userId: 'prolific', clientId: 'popular' })
    await s.saveGrant(g)
    const N = 200
    let before = await existsCalls()
    for (let i = 0; i < N; i++) await s.saveAccessToken(hashToken(generateToken('accessToken')), access(g, now))
    const family = await existsCalls() - before
    t.equal(await redis.scard(prefix + 'gf:' + g.grantId), N, 'every live member stays')
    // Checking every member past 16 on each addition would be about 18,000 calls.
    t.ok(family <= 4 * N, `EXISTS calls for ${N} live tokens added to one family: ${family}`)

    before = await existsCalls()
    for (let i = 0; i < N; i++) await s.saveGrant(grant(now, { userId: 'prolific', clientId: 'popular' }))
    const index = await existsCalls() - before
    t.equal(await redis.scard(prefix + 'gc:popular'), N + 1, 'the client index keeps every live grant')
    t.ok(index <= 6 * N, `EXISTS calls for ${N} grants of one user and client: ${index}`)
  })

  t.test('store rules: mismatched families, unknown grants, options', async t => {
    const prefix = freshPrefix()
    const s = store(t, { prefix })
    const now = Date.now()
    const g = grant(now)
    const other = grant(now)
    await s.saveGrant(g)
    await s.saveGrant(other)
    const h = hashToken(generateToken('refreshToken'))
    await s.saveRefreshToken(h, refresh(g, now))
    await t.rejects(s.rotateRefreshToken(h, { hash: 'x', token: refresh(other, now) }, now), /stay in the family/)
    t.equal((await s.getRefreshToken(h, now))?.rotatedAt, undefined, 'a refused rotation wrote nothing')
    await t.rejects(s.saveAccessToken('h', { ...access(g, now), grantId: 'none' }), /grant does not exist/)
    await t.rejects(s.saveRefreshToken('h', { ...refresh(g, now), grantId: 'none' }), /grant does not exist/)
    const rotated = { ...refresh(g, now), rotatedAt: now, successor: 'kept' }
    await s.saveRefreshToken('saved-rotated', rotated)
    t.same(await s.getRefreshToken('saved-rotated', now), rotated, 'a saved record keeps its rotation state')

    t.throws(() => new RedisStore({}), /exactly one/)
    t.throws(() => new RedisStore({ url: server.url, client: new Redis({ lazyConnect: true }) }), /exactly one/)
    t.throws(() => new RedisStore({ url: server.url, commandTimeoutMs: 0 }), /positive/)
    const prefixed = new Redis(server.url, { keyPrefix: 'x:', lazyConnect: true })
    t.throws(() => new RedisStore({ client: prefixed }), /keyPrefix/)
    prefixed.disconnect()

    const closed = new RedisStore({ url: server.url, prefix })
    await closed.close()
    await closed.close()
    await t.rejects(closed.getGrant(g.grantId, now), /after close/)
  })

  t.test('an injected client is used as is and never quit', async t => {
    const client = new Redis(server.url, { lazyConnect: true })
    t.teardown(() => { client.disconnect() })
    const s = new RedisStore({ client, prefix: freshPrefix() })
    const now = Date.now()
    const g = grant(now)
    await s.saveGrant(g) // the store connects a lazy client
    t.same(await s.getGrant(g.grantId, now), g)
    await s.close()
    t.equal(client.status, 'ready', 'still connected after the store closed')
    t.equal(await client.ping(), 'PONG')
    await client.quit()
    const again = new RedisStore({ client, prefix: freshPrefix() })
    await t.rejects(again.getGrant('x', now), /closed/i, 'a quit client fails fast')
    await again.close()
  })

  t.test('stats only count this prefix; a glob character in the prefix is literal', async t => {
    const now = Date.now()
    const a = store(t, { prefix: freshPrefix() + '*[x]?' })
    const b = store(t, { prefix: freshPrefix() })
    await a.saveGrant(grant(now))
    await b.saveGrant(grant(now))
    await b.saveGrant(grant(now))
    t.equal((await a.stats()).grants, 1)
    t.equal((await b.stats()).grants, 2)
  })

  t.test('a dead Redis: operations fail within the bound, never hang', async t => {
    const port = await freePort()
    const s = store(t, { url: `redis://127.0.0.1:${port}`, commandTimeoutMs: 300 })
    const now = Date.now()
    const g = grant(now)
    const ops: Array<[string, () => Promise<unknown>]> = [
      ['saveGrant', () => s.saveGrant(g)],
      ['getGrant', () => s.getGrant(g.grantId, now)],
      ['getAccessToken', () => s.getAccessToken('h', now)],
      ['rotateRefreshToken', () => s.rotateRefreshToken('a', { hash: 'b', token: refresh(g, now) }, now)],
      ['consumeCode', () => s.consumeCode('c', now, now)],
      ['takeFlow', () => s.takeFlow('f', now)],
      ['stats', () => s.stats()]
    ]
    for (const [name, op] of ops) {
      const started = performance.now()
      await t.rejects(op(), /timed out|connection/, `${name} rejects`)
      const took = performance.now() - started
      t.ok(took < 1000, `${name} rejected in ${took.toFixed(0)} ms`)
    }
  })

  t.test('a stalled Redis (CLIENT PAUSE): a command times out; then the store carries on', async t => {
    const prefix = freshPrefix()
    const s = store(t, { prefix, commandTimeoutMs: 300 })
    const admin = inspector(t)
    const now = Date.now()
    const g = grant(now)
    await s.saveGrant(g)
    await admin.call('CLIENT', 'PAUSE', '1500', 'ALL')
    const started = performance.now()
    await t.rejects(s.getGrant(g.grantId, now), /timed out/)
    t.ok(performance.now() - started < 1000, 'bounded while the server stalls')
    await new Promise(resolve => setTimeout(resolve, 1600))
    t.same(await eventually(() => s.getGrant(g.grantId, now)), g, 'works again once the server answers')
  })

  t.test('a killed server: fast errors; after a restart on the same port the store works again', async t => {
    const own = await startRedisServer()
    t.teardown(() => own.destroy())
    const s = store(t, { url: own.url, prefix: freshPrefix() })
    const now = Date.now()
    const g = grant(now)
    await s.saveGrant(g)
    t.same(await s.getGrant(g.grantId, now), g)
    await own.stop()
    for (let i = 0; i < 3; i++) {
      const started = performance.now()
      await t.rejects(s.getGrant(g.grantId, now), /timed out|connection|Stream|closed/i)
      const took = performance.now() - started
      t.ok(took < 1000, `rejected in ${took.toFixed(0)} ms while down`)
    }
    await own.start()
    // No persistence: the data is gone, and so are the scripts (EVALSHA falls back to EVAL).
    t.equal(await eventually(() => s.getGrant(g.grantId, now)), null, 'reconnected (the data did not persist)')
    await s.saveGrant(g)
    const h = hashToken(generateToken('refreshToken'))
    await s.saveRefreshToken(h, refresh(g, now))
    t.equal((await s.rotateRefreshToken(h, { hash: 'next', token: refresh(g, now) }, now)).status, 'rotated')
  })

  t.test('with appendonly persistence, records survive a restart', async t => {
    const own = await startRedisServer({ appendonly: true })
    t.teardown(() => own.destroy())
    const s = store(t, { url: own.url, prefix: freshPrefix() })
    const now = Date.now()
    const g = grant(now)
    await s.saveGrant(g)
    await own.restart()
    t.same(await eventually(() => s.getGrant(g.grantId, now)), g)
  })
}
