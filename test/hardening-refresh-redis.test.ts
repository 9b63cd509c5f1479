import t from 'tap'
import type { Test } from 'tap'
import { createHash } from 'node:crypto'
import Fastify, { type FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import { mcpOAuth, type McpOAuthOptions } from '../lib/index.js'
import { RedisStore } from '../lib/storage/redis/index.js'
import type { Store } from '../lib/storage/contract.js'
import { CODE_VERIFIER as VERIFIER, pauseAt, storeCode } from './helpers/codes.js'
import { generateId, hashToken } from '../lib/oauth/tokens.js'
import type { RedisServer } from './helpers/redis.js'
import { withRedisServer } from './helpers/redis-tests.js'

/**
 * Issue 15, findings 1 and 10 and the refresh grace, against a real redis-server with two
 * replicas (two plugin instances on one Redis): what every key of the database gives an attacker
 * holding a retired refresh token, replay caps counted across replicas, and a code replayed at one
 * replica while the other is still writing its grant.
 */

const ISSUER = 'https://auth.example.com'
const RESOURCE = `${ISSUER}/mcp`
const CLIENT = { client_id: 'app', redirect_uris: ['http://127.0.0.1/cb'] }
const SECRET = 'shared-deployment-secret-shared-deployment'

await withRedisServer('refresh hardening on Redis', tests)

function unkeyedSuccessor (refreshToken: string, salt: string): string {
  const out = createHash('sha512').update('\0\0\0\x01' + refreshToken + 'mcp-oauth refresh successor v2\0' + salt).digest()
  return 'mcprt_' + out.toString('base64url', 32, 64)
}

function tests (server: RedisServer): void {
  let n = 0
  const prefix = () => `hr-${++n}-${generateId()}:`

  async function replica (t: Test, p: string, opts: Partial<McpOAuthOptions> = {}, store?: Store): Promise<FastifyInstance> {
    const app = Fastify({ logger: false })
    const own = store ?? new RedisStore({ url: server.url, prefix: p, commandTimeoutMs: 2000 })
    // Closed here too: a registration that fails (a refused option) never reaches the plugin's onClose.
    t.teardown(() => own.close?.())
    await app.register(mcpOAuth, {
      issuer: ISSUER,
      resources: [RESOURCE],
      store: own,
      clients: [CLIENT],
      secret: SECRET,
      ...opts
    })
    app.post('/mcp', { onRequest: app.mcpOAuth.authenticate({ scopes: ['mcp:tools'] }) }, async () => ({ ok: true }))
    await app.ready()
    t.teardown(() => app.close())
    return app
  }

  async function post (app: FastifyInstance, body: Record<string, string>) {
    const res = await app.inject({ method: 'POST', url: '/oauth/token', payload: body })
    return { status: res.statusCode, body: res.json() as Record<string, string> }
  }
  const refresh = (app: FastifyInstance, rt: string) => post(app, { grant_type: 'refresh_token', refresh_token: rt, client_id: CLIENT.client_id })
  const call = async (app: FastifyInstance, at: string) => (await app.inject({ method: 'POST', url: '/mcp', headers: { authorization: `Bearer ${at}` } })).statusCode

  async function issue (app: FastifyInstance) {
    return (await app.mcpOAuth.grants.createGrantWithTokens({ userId: 'u-1', clientId: CLIENT.client_id, scopes: ['mcp:tools'], resource: RESOURCE })).tokens
  }

  /** Every value of every key under the prefix: what a replica, an RDB or an AOF file gives away. */
  async function dump (t: Test, p: string): Promise<{ keys: Map<string, string>, text: string }> {
    const redis = new Redis(server.url)
    t.teardown(async () => { await redis.quit().catch(() => { redis.disconnect() }) })
    const keys = new Map<string, string>()
    let cursor = '0'
    do {
      const [next, batch] = await redis.scan(cursor, 'MATCH', p + '*', 'COUNT', 1000)
      for (const key of batch) {
        const type = await redis.type(key)
        let value: unknown
        if (type === 'string') value = await redis.get(key)
        else if (type === 'hash') value = await redis.hgetall(key)
        else if (type === 'set') value = await redis.smembers(key)
        else if (type === 'zset') value = await redis.zrange(key, '0', '-1', 'WITHSCORES')
        keys.set(key, JSON.stringify(value))
      }
      cursor = next
    } while (cursor !== '0')
    return { keys, text: [...keys.entries()].map(([k, v]) => k + ' ' + v).join('\n') }
  }

  const salts = (text: string) => [...text.matchAll(/(?<![A-Za-z0-9_-])([A-Za-z0-9_-]{22}) mcp:/g)].map(m => m[1] as string)

  t.test('finding 1: the old token plus every key of the database does not give the live pair, during or after the window', async t => {
    const p = prefix()
    const a = await replica(t, p, { refreshGraceSeconds: 1 })
    const b = await replica(t, p, { refreshGraceSeconds: 1 })
    const rt0 = (await issue(a)).refresh_token
    const first = await refresh(a, rt0)
    const second = await refresh(b, first.body.refresh_token as string)
    t.equal(second.status, 200)
    const live = second.body.refresh_token as string

    const during = await dump(t, p)
    const kept = salts(during.text)
    t.ok(kept.length > 0, 'within the window the salts are in the database (the grace replay needs them)')
    // Walk every chain the dump allows with the unkeyed construction, from the oldest token.
    const reached = new Set([rt0, first.body.refresh_token as string])
    for (let step = 0; step < 3; step++) for (const rt of [...reached]) for (const s of kept) reached.add(unkeyedSuccessor(rt, s))
    t.notOk(reached.has(live), 'no salt in the dump leads to the live refresh token without the key')
    t.notOk(during.text.includes(SECRET), 'the deployment secret is not in the database')

    await new Promise(resolve => setTimeout(resolve, 1300))
    const after = await dump(t, p)
    t.same(salts(after.text), [], 'after the window no salt is left in any key')
    t.equal((await refresh(a, rt0)).body.error, 'invalid_grant', 'and a replay is reuse')
  })

  t.test('grace across replicas with one secret: the same pair; the replay cap is counted across both', async t => {
    const p = prefix()
    const opts = { refreshGraceMaxReplays: 5 }
    const a = await replica(t, p, opts)
    const b = await replica(t, p, opts)
    const rt0 = (await issue(a)).refresh_token
    const first = await refresh(a, rt0)
    t.same((await refresh(b, rt0)).body.refresh_token, first.body.refresh_token, 'B rebuilds A\'s pair')
    const burst = await Promise.all(Array.from({ length: 10 }, (_, i) => refresh(i % 2 === 0 ? a : b, rt0)))
    t.notOk(burst.some(r => r.status >= 500), 'no 5xx')
    const ok = burst.filter(r => r.status === 200)
    t.ok(ok.length <= 4, `one replay spent already: at most four more of ten succeed (${ok.length})`)
    t.ok(ok.every(r => r.body.refresh_token === first.body.refresh_token), 'all with the same pair')
    // A replica that read the access token keeps it in its cache until Redis's invalidation
    // message arrives (normally well under a millisecond): wait for it, boundedly.
    const refused = async (app: FastifyInstance) => {
      const started = performance.now()
      let status = await call(app, first.body.access_token as string)
      while (status === 200 && performance.now() - started < 2000) {
        await new Promise(resolve => setTimeout(resolve, 10))
        status = await call(app, first.body.access_token as string)
      }
      return status
    }
    t.equal(await refused(a), 401, 'past the cap: the family is revoked at A')
    t.equal(await refused(b), 401, 'and at B')
  })

  t.test('rolling upgrade: a retry of a token rotated by the previous version (salt in the rt: hash) is refused, never reuse', async t => {
    const p = prefix()
    const a = await replica(t, p)
    const rt0 = (await issue(a)).refresh_token
    const first = await refresh(a, rt0)
    t.equal(first.status, 200)
    // The previous version's layout: the successor as field `s` of the retired rt: record, no rs: key.
    const redis = new Redis(server.url)
    t.teardown(async () => { await redis.quit().catch(() => { redis.disconnect() }) })
    const rtKey = p + 'rt:' + hashToken(rt0)
    const rsKey = p + 'rs:' + hashToken(rt0)
    const salt = await redis.hget(rsKey, 's')
    t.ok(salt, 'the new layout keeps the successor in rs:')
    await redis.hset(rtKey, 's', salt as string)
    await redis.del(rsKey)
    const retry = await refresh(a, rt0)
    t.equal(retry.status, 400)
    t.equal(retry.body.error, 'invalid_grant')
    t.notMatch(retry.body.error_description, /revoked/)
    t.equal(await call(a, first.body.access_token as string), 200, 'the family lives')
    t.equal((await refresh(a, first.body.refresh_token as string)).status, 200, 'the newest refresh token still refreshes')
  })

  t.test('finding 1: replicas with different secrets refuse a replay without revoking', async t => {
    const p = prefix()
    const a = await replica(t, p)
    const b = await replica(t, p, { secret: SECRET.replace('s', 'S') })
    const rt0 = (await issue(a)).refresh_token
    const first = await refresh(a, rt0)
    const replay = await refresh(b, rt0)
    t.equal(replay.body.error, 'invalid_grant')
    t.match(replay.body.error_description, /secret/)
    t.equal(await call(b, first.body.access_token as string), 200, 'the family lives')
  })

  t.test('finding 10: a code replayed at B while A is writing its grant revokes what A issues', async t => {
    for (const where of ['before', 'after'] as const) {
      const p = prefix()
      const inner = new RedisStore({ url: server.url, prefix: p, commandTimeoutMs: 2000 })
      const { store: paused, atPause, release } = pauseAt(inner, 'saveGrantWithTokens', where)
      const a = await replica(t, p, {}, paused)
      const b = await replica(t, p)
      const { code, grantId } = await storeCode(b.mcpOAuth.storage, { clientId: CLIENT.client_id, redirectUri: CLIENT.redirect_uris[0] as string, resource: RESOURCE })
      const body = { grant_type: 'authorization_code', code, code_verifier: VERIFIER, redirect_uri: CLIENT.redirect_uris[0] as string, client_id: CLIENT.client_id }
      const first = post(a, body)
      await atPause
      const replay = await post(b, body)
      t.equal(replay.body.error, 'invalid_grant', `${where}: the replay at B is refused`)
      release()
      const answer = await first
      t.not(answer.status, 500)
      if (answer.status === 200) {
        t.equal(await call(a, answer.body.access_token as string), 401, `${where}: A's access token is dead`)
        t.equal((await refresh(b, answer.body.refresh_token as string)).body.error, 'invalid_grant', `${where}: and its refresh token`)
      } else {
        t.equal(answer.body.error, 'invalid_grant', `${where}: A refuses to issue`)
      }
      t.equal(await b.mcpOAuth.storage.getGrant(grantId, Date.now()), null, `${where}: no grant survives`)
      // Whatever the replay left behind (a tombstone included) expires by itself; only the static client stays.
      const redis = new Redis(server.url)
      for (const key of (await dump(t, p)).keys.keys()) {
        if (key === p + 'c:' + CLIENT.client_id) continue
        t.ok(await redis.pttl(key) > 0, `${where}: ${key.slice(p.length).split(':')[0] as string}: key carries a TTL`)
      }
      await redis.quit()
    }
  })
}
