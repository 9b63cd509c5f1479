import t from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import { mcpOAuth, type McpOAuthOptions } from '../lib/index.js'
import { RedisStore } from '../lib/storage/redis/index.js'
import type { RedisServer } from './helpers/redis.js'
import { withRedisServer } from './helpers/redis-tests.js'
import { loginTokens, readUpstream, startLogin, writeUpstream } from './helpers/login.js'
import { oidcProvider } from '../lib/providers/oidc.js'

/**
 * Two replicas behind one issuer, sharing one real redis-server: what one issues the other honours,
 * reuse detection and rotation hold across them, rate limits count across them, and a Redis outage
 * gives fast, retryable answers and heals by itself.
 */

const ISSUER = 'https://auth.example.com'
const RESOURCE = `${ISSUER}/mcp`
const CLIENT = { client_id: 'app', redirect_uris: ['http://127.0.0.1/cb'] }

await withRedisServer('replicas', replicaTests, { appendonly: true })

async function replica (t: { teardown (fn: () => unknown): void }, server: RedisServer, prefix: string, opts: Partial<McpOAuthOptions> = {}): Promise<FastifyInstance> {
  const app = Fastify({ logger: false })
  const store = new RedisStore({ url: server.url, prefix, commandTimeoutMs: 300 })
  await app.register(mcpOAuth, {
    issuer: ISSUER,
    resources: [RESOURCE],
    store,
    clients: [CLIENT],
    cookieSecret: 'shared-cookie-secret-shared-cookie-secret',
    ...opts
  })
  app.post('/mcp', { onRequest: app.mcpOAuth.authenticate({ scopes: ['mcp:tools'] }) }, async (request) => ({ user: request.mcpAuth?.userId }))
  await app.ready()
  t.teardown(() => app.close())
  return app
}

function refresh (app: FastifyInstance, token: string) {
  return app.inject({ method: 'POST', url: '/oauth/token', payload: { grant_type: 'refresh_token', refresh_token: token, client_id: CLIENT.client_id } })
}

function call (app: FastifyInstance, token: string) {
  return app.inject({ method: 'POST', url: '/mcp', headers: { authorization: `Bearer ${token}` } })
}

async function issue (app: FastifyInstance, userId = 'alice') {
  const grant = await app.mcpOAuth.grants.createGrant({ userId, clientId: CLIENT.client_id, scopes: ['mcp:tools'], resource: RESOURCE })
  return app.mcpOAuth.grants.issueTokens(grant)
}

function replicaTests (server: RedisServer): void {
  let n = 0
  const prefix = () => `replicas-${++n}:`

  t.test('a token issued by one replica works at the other', async t => {
    const p = prefix()
    const a = await replica(t, server, p)
    const b = await replica(t, server, p)
    const tokens = await issue(a)
    const res = await call(b, tokens.access_token)
    t.equal(res.statusCode, 200)
    t.same(res.json(), { user: 'alice' })
    const r = await refresh(b, tokens.refresh_token)
    t.equal(r.statusCode, 200, 'refresh at the other replica')
    t.equal((await call(a, r.json().access_token)).statusCode, 200)
  })

  t.test('refresh on one, replay on the other: reuse detected, family revoked everywhere', async t => {
    const p = prefix()
    const a = await replica(t, server, p, { refreshGraceSeconds: 0 })
    const b = await replica(t, server, p, { refreshGraceSeconds: 0 })
    const tokens = await issue(a)
    const next = (await refresh(a, tokens.refresh_token)).json()
    const replay = await refresh(b, tokens.refresh_token)
    t.equal(replay.statusCode, 400)
    t.equal(replay.json().error, 'invalid_grant')
    t.equal((await call(a, next.access_token)).statusCode, 401, 'the family is gone at A')
    t.equal((await call(b, next.access_token)).statusCode, 401, 'and at B')
  })

  t.test('a token in use at B (kept in B\'s cache), revoked at A: B refuses it as soon as Redis tells it', async t => {
    const p = prefix()
    const a = await replica(t, server, p)
    const b = await replica(t, server, p)
    const tokens = await issue(a, 'erin')
    for (let i = 0; i < 5; i++) t.equal((await call(b, tokens.access_token)).statusCode, 200)
    const store = b.mcpOAuth.storage as unknown as RedisStore
    t.ok(store.cacheStatus.entries >= 1, 'B serves it from memory')
    const revoked = await a.inject({ method: 'POST', url: '/oauth/revoke', payload: { token: tokens.access_token, client_id: CLIENT.client_id } })
    t.equal(revoked.statusCode, 200)
    // In one process, A's answer can come before B's socket has been read: B may answer from its
    // cache until the event loop reads Redis's message.
    let status = 200
    let stale = 0
    const started = performance.now()
    while (status === 200 && performance.now() - started < 2000) {
      status = (await call(b, tokens.access_token)).statusCode
      if (status === 200) {
        stale++
        await new Promise(resolve => setImmediate(resolve))
      }
    }
    t.equal(status, 401, 'refused at B')
    t.comment(`B refused the revoked token ${(performance.now() - started).toFixed(1)} ms after A answered the revocation (${stale} answer(s) before)`)
    t.equal((await call(a, tokens.access_token)).statusCode, 401, 'and at A')
  })

  t.test('20 concurrent refreshes split across both keep exactly one family', async t => {
    const p = prefix()
    const a = await replica(t, server, p)
    const b = await replica(t, server, p)
    const tokens = await issue(a, 'carol')
    const issued = await a.mcpOAuth.validator.validate(tokens.access_token)
    const grantId = issued.valid ? issued.auth.grantId : 'none'
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => refresh(i % 2 === 0 ? a : b, tokens.refresh_token)))
    t.notOk(results.some(r => r.statusCode >= 500), 'no 5xx')
    const ok = results.filter(r => r.statusCode === 200)
    t.ok(results.every(r => r.statusCode === 200 || r.json().error === 'invalid_grant'))
    t.equal(new Set(ok.map(r => r.json().refresh_token)).size, 1, 'one successor, whichever replica answered')
    t.same(await a.mcpOAuth.storage.listGrants({ userId: 'carol' }, Date.now()), [grantId], 'exactly one family continues')
    t.equal((await refresh(b, ok[0]?.json().refresh_token)).statusCode, 200)
  })

  t.test('a rate limit counts across both replicas', async t => {
    const p = prefix()
    const opts = { rateLimit: { metadata: { max: 4, windowSeconds: 60 } } }
    const a = await replica(t, server, p, opts)
    const b = await replica(t, server, p, opts)
    const statuses: number[] = []
    for (const app of [a, b, a, b, a, b]) statuses.push((await app.inject('/.well-known/oauth-authorization-server')).statusCode)
    t.same(statuses, [200, 200, 200, 200, 429, 429])
  })

  t.test('upstream refresh single flight across replicas: one upstream refresh for 40 callers on two replicas', async t => {
    const p = prefix()
    const h = await startLogin(t, { store: new RedisStore({ url: server.url, prefix: p }) })
    const tokens = await loginTokens(h)
    const b = Fastify({ logger: false })
    await b.register(mcpOAuth, {
      issuer: h.issuer,
      resources: [h.resource],
      store: new RedisStore({ url: server.url, prefix: p }),
      provider: oidcProvider({ issuer: h.idp.issuer, clientId: 'mcp-proxy', clientSecret: 'proxy-secret-proxy-secret-proxy-secret' })
    })
    b.post('/mcp/upstream', { onRequest: b.mcpOAuth.authenticate({ scopes: ['mcp:tools'] }) }, async (request) => b.mcpOAuth.getUpstreamToken(request))
    await b.ready()
    t.teardown(() => b.close())
    // Make the stored upstream token look nearly expired (as if an hour had passed).
    const stored = await readUpstream(h, tokens.access_token as string)
    await writeUpstream(h, stored.grantId, { ...stored.tokens, expiresAt: Date.now() + 1000 })
    const headers = { authorization: `Bearer ${tokens.access_token as string}` }
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => i % 2 === 0
      ? fetch(`${h.issuer}/mcp/upstream`, { method: 'POST', headers }).then(async r => ({ status: r.status, token: (await r.json() as { accessToken: string }).accessToken }))
      : b.inject({ method: 'POST', url: '/mcp/upstream', headers }).then(r => ({ status: r.statusCode, token: r.json().accessToken as string }))))
    t.ok(results.every(r => r.status === 200), 'every caller on both replicas got a token')
    t.equal(h.idp.refreshCount(), 1, 'the identity provider saw one refresh')
    t.equal(new Set(results.map(r => r.token)).size, 1, 'and everybody got its result')
  })

  t.test('Redis down: fast retryable errors, never invalid_grant; back up: everything committed still works', async t => {
    const p = prefix()
    const a = await replica(t, server, p)
    const tokens = await issue(a, 'dave')
    const before = (await refresh(a, tokens.refresh_token)).json()
    t.ok(before.refresh_token)
    await server.stop()
    const started = Date.now()
    const guard = await call(a, before.access_token)
    t.equal(guard.statusCode, 503, 'guarded route: 503, not 401')
    t.equal(guard.json().error, 'temporarily_unavailable')
    const token = await refresh(a, before.refresh_token)
    t.equal(token.statusCode, 503, 'token endpoint: 503')
    t.equal(token.json().error, 'temporarily_unavailable', 'never invalid_grant: the client keeps its tokens')
    t.ok(token.headers['retry-after'])
    const meta = await a.inject('/.well-known/oauth-authorization-server')
    t.equal(meta.statusCode, 200, 'metadata does not need Redis')
    const elapsed = Date.now() - started
    t.ok(elapsed < 5000, `three requests answered in ${elapsed} ms, no hang`)
    await server.start()
    let healed = false
    for (let i = 0; i < 40 && !healed; i++) {
      await new Promise(resolve => setTimeout(resolve, 100))
      healed = (await call(a, before.access_token)).statusCode === 200
    }
    t.ok(healed, 'the guard recovers by itself')
    const after = await refresh(a, before.refresh_token)
    t.equal(after.statusCode, 200, 'the refresh token committed before the outage still works')
  })
}
