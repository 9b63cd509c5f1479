import t from 'tap'
import type { Test } from 'tap'
import { randomUUID } from 'node:crypto'
import Fastify, { type FastifyInstance } from 'fastify'
import { mcpOAuth, StoreUnavailableError } from '../lib/index.js'
import { RedisStore } from '../lib/storage/redis/index.js'
import { s256 } from '../lib/oauth/pkce.js'
import { CODE_VERIFIER as VERIFIER, storeCode } from './helpers/codes.js'
import type { RedisServer } from './helpers/redis.js'
import { eventually, withRedisServer } from './helpers/redis-tests.js'

/**
 * Finding 14: a Redis that stops answering (SIGSTOP: the connection stays open, nothing comes back)
 * or dies (SIGKILL). Every endpoint and the guard answer 503 temporarily_unavailable with
 * Retry-After within the documented bound, never a 500 or a 401, and everything committed before
 * works again once Redis is back.
 */

const ISSUER = 'https://auth.example.com'
const RESOURCE = `${ISSUER}/mcp`
const CLIENT = { client_id: 'app', redirect_uris: ['http://127.0.0.1/cb'] }
const RS = { id: 'rs', secret: 'resource-server-secret-resource-server' }
/** The store's default per-command bound (README: "Several replicas: the Redis store"). */
const BOUND = 500
/**
 * A request to an OAuth endpoint may spend the bound twice: its rate-limit count (which fails open)
 * and then its first store operation; the slack tolerates a loaded machine.
 */
const REQUEST_LIMIT = 2 * BOUND + 1500

await withRedisServer('a frozen or killed Redis', freezeTests, { appendonly: true })

function freezeTests (server: RedisServer): void {
  let n = 0
  const prefix = () => `freeze-${++n}-${randomUUID()}:`

  /** SIGSTOP the server; the returned function (also run at teardown) sends SIGCONT once. */
  function freeze (tt: Test): () => void {
    const pid = server.pid
    if (pid === undefined) throw new Error('redis-server is not running')
    process.kill(pid, 'SIGSTOP')
    let frozen = true
    const thaw = (): void => {
      if (!frozen) return
      frozen = false
      try { process.kill(pid, 'SIGCONT') } catch {}
    }
    tt.teardown(thaw)
    return thaw
  }

  async function app (tt: Test, p: string, commandTimeoutMs?: number): Promise<FastifyInstance> {
    const a = Fastify({ logger: false })
    await a.register(mcpOAuth, {
      issuer: ISSUER,
      resources: [RESOURCE],
      store: new RedisStore({ url: server.url, prefix: p, ...(commandTimeoutMs !== undefined ? { commandTimeoutMs } : {}) }),
      clients: [CLIENT],
      registration: { mode: 'public' },
      introspection: { resourceServers: [RS] },
      secret: 'deployment-secret-deployment-secret-0123'
    })
    a.post('/mcp', { onRequest: a.mcpOAuth.authenticate({ scopes: ['mcp:tools'] }) }, async (request) => ({ user: request.mcpAuth?.userId }))
    await a.ready()
    tt.teardown(() => a.close())
    return a
  }

  async function issue (a: FastifyInstance, userId: string) {
    const grant = await a.mcpOAuth.grants.createGrant({ userId, clientId: CLIENT.client_id, scopes: ['mcp:tools'], resource: RESOURCE })
    return a.mcpOAuth.grants.issueTokens(grant)
  }

  /** An authorization code as the callback stores it. */
  async function newCode (a: FastifyInstance): Promise<string> {
    return (await storeCode(a.mcpOAuth.storage, { clientId: CLIENT.client_id, redirectUri: CLIENT.redirect_uris[0] as string, resource: RESOURCE, userId: 'code-user' })).code
  }

  /** What the guard answers once Redis serves again (reconnection takes up to a few seconds). */
  async function admittedAgain (send: { guard: () => Promise<{ statusCode: number, json: () => unknown }> }): Promise<unknown> {
    const r = await eventually(async () => {
      const res = await send.guard()
      if (res.statusCode !== 200) throw new Error(`guard ${res.statusCode}`)
      return res
    }, 10_000)
    return r.json()
  }

  /** One request of each kind that needs the store. */
  function requests (a: FastifyInstance, x: { refresh: string, code: string, revoke: string, introspect: string, access: string }) {
    const basic = 'Basic ' + Buffer.from(`${RS.id}:${RS.secret}`).toString('base64')
    return {
      refresh: () => a.inject({ method: 'POST', url: '/oauth/token', payload: { grant_type: 'refresh_token', refresh_token: x.refresh, client_id: CLIENT.client_id } }),
      code: () => a.inject({
        method: 'POST',
        url: '/oauth/token',
        payload: { grant_type: 'authorization_code', code: x.code, redirect_uri: CLIENT.redirect_uris[0], client_id: CLIENT.client_id, code_verifier: VERIFIER }
      }),
      register: () => a.inject({ method: 'POST', url: '/oauth/register', payload: { redirect_uris: ['http://127.0.0.1/cb'], token_endpoint_auth_method: 'none' } }),
      revoke: () => a.inject({ method: 'POST', url: '/oauth/revoke', payload: { token: x.revoke, client_id: CLIENT.client_id } }),
      introspect: () => a.inject({ method: 'POST', url: '/oauth/introspect', headers: { authorization: basic }, payload: { token: x.introspect } }),
      guard: () => a.inject({ method: 'POST', url: '/mcp', headers: { authorization: `Bearer ${x.access}` } }),
      // A browser's request: an error page, with the same status and Retry-After.
      authorize: () => a.inject({
        method: 'GET',
        url: '/oauth/authorize?' + new URLSearchParams({
          response_type: 'code', client_id: CLIENT.client_id, redirect_uri: CLIENT.redirect_uris[0] as string, code_challenge: s256(VERIFIER), code_challenge_method: 'S256'
        }).toString()
      })
    }
  }

  async function fixtures (a: FastifyInstance) {
    const refresh = await issue(a, 'rita')
    const revoke = await issue(a, 'rob')
    const introspect = await issue(a, 'ida')
    const guard = await issue(a, 'gus')
    return {
      refresh: refresh.refresh_token,
      code: await newCode(a),
      revoke: revoke.access_token,
      introspect: introspect.access_token,
      // Never used at this replica: not in its access-token cache, so the guard must ask Redis.
      access: guard.access_token
    }
  }

  t.test('frozen Redis (SIGSTOP): every endpoint and the guard answer 503 + Retry-After within the bound; after SIGCONT all works, nothing lost', async t => {
    const a = await app(t, prefix())
    const x = await fixtures(a)
    const send = requests(a, x)
    const thaw = freeze(t)
    // Requests arrive one after another during the freeze, as real traffic does: a request must not
    // wait behind the ones before it.
    const kinds = Object.keys(send) as Array<keyof typeof send>
    const answers = await Promise.all(Array.from({ length: 3 * kinds.length }, async (_, i) => {
      await new Promise(resolve => setTimeout(resolve, i * 80))
      const kind = kinds[i % kinds.length] as keyof typeof send
      const started = performance.now()
      const res = await send[kind]()
      return { kind, res, ms: performance.now() - started }
    }))
    thaw()
    for (const { kind, res, ms } of answers) {
      t.equal(res.statusCode, 503, `${kind}: 503 (${res.statusCode} ${res.body.slice(0, 120)})`)
      if (kind === 'authorize') t.match(res.headers['content-type'], /^text\/html/, `${kind}: a page`)
      else t.equal(res.json().error, 'temporarily_unavailable', `${kind}: temporarily_unavailable`)
      t.ok(res.headers['retry-after'], `${kind}: Retry-After`)
      t.ok(ms < REQUEST_LIMIT, `${kind}: answered in ${ms.toFixed(0)} ms (limit ${REQUEST_LIMIT})`)
    }
    // Back: every credential from before the freeze still does what it did.
    t.same(await admittedAgain(send), { user: 'gus' }, 'the guard admits the token again')
    const refreshed = await send.refresh()
    t.equal(refreshed.statusCode, 200, 'the refresh token from before the freeze still refreshes')
    const exchanged = await send.code()
    t.equal(exchanged.statusCode, 200, 'the code from before the freeze is still exchanged once')
    const active = await send.introspect()
    t.equal(active.json().active, true, 'introspection answers')
    t.equal((await send.register()).statusCode, 201, 'registration works')
    t.equal((await send.revoke()).statusCode, 200, 'revocation works')
    t.equal((await a.inject({ method: 'POST', url: '/mcp', headers: { authorization: `Bearer ${x.revoke}` } })).statusCode, 401, 'and took effect')
  })

  t.test('frozen Redis: each store operation fails within the bound, however many are issued during the freeze', async t => {
    // A larger bound than the default, so that waiting behind an earlier command (up to one more
    // bound) would stand out from a loaded machine's delays.
    const bound = 1000
    const store = new RedisStore({ url: server.url, prefix: prefix(), commandTimeoutMs: bound })
    t.teardown(() => store.close())
    const now = Date.now()
    const kept = { grantId: randomUUID(), userId: 'u', clientId: 'c', scopes: ['mcp:tools'], resource: RESOURCE, createdAt: now, expiresAt: now + 60_000 }
    await store.saveGrant(kept)
    const thaw = freeze(t)
    const results = await Promise.all(Array.from({ length: 30 }, async (_, i) => {
      await new Promise(resolve => setTimeout(resolve, i * 50))
      const started = performance.now()
      const err = await store.getGrant('g' + i, now).then(() => undefined, (e: unknown) => e)
      return { err, ms: performance.now() - started }
    }))
    thaw()
    const slowest = Math.max(...results.map(r => r.ms))
    t.ok(results.every(r => r.err instanceof StoreUnavailableError), 'every failure is a StoreUnavailableError (503 at the endpoints)')
    t.ok(slowest < bound + 600, `the slowest failed after ${slowest.toFixed(0)} ms (bound ${bound})`)
    t.same(await eventually(() => store.getGrant(kept.grantId, now), 10_000), kept, 'the record written before the freeze is there after it')
  })

  t.test('killed Redis (SIGKILL): 503 everywhere, never 500 or 401; after a restart (AOF) everything committed works', async t => {
    const a = await app(t, prefix())
    const x = await fixtures(a)
    const send = requests(a, x)
    const pid = server.pid as number
    process.kill(pid, 'SIGKILL')
    for (let i = 0; i < 100 && server.pid !== undefined; i++) await new Promise(resolve => setTimeout(resolve, 20))
    t.teardown(() => server.start())
    for (const [kind, go] of Object.entries(send)) {
      const started = performance.now()
      const res = await go()
      const ms = performance.now() - started
      t.equal(res.statusCode, 503, `${kind}: 503 (${res.statusCode} ${res.body.slice(0, 120)})`)
      if (kind !== 'authorize') t.equal(res.json().error, 'temporarily_unavailable', `${kind}: temporarily_unavailable`)
      t.ok(res.headers['retry-after'], `${kind}: Retry-After`)
      t.ok(ms < REQUEST_LIMIT, `${kind}: answered in ${ms.toFixed(0)} ms`)
    }
    await server.start()
    t.same(await admittedAgain(send), { user: 'gus' }, 'the guard admits the token again')
    t.equal((await send.refresh()).statusCode, 200, 'the refresh token survived the crash')
    t.equal((await send.code()).statusCode, 200, 'the code survived the crash')
    t.equal((await send.introspect()).json().active, true)
  })
}
