import t, { type Test } from 'tap'
import { createServer as createHttpsServer } from 'node:https'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import { buildApp, RESOURCE } from './helpers/app.js'
import { TestClock } from './helpers/clock.js'
import { selfSignedCert } from './helpers/tls.js'
import { authorizeUrl, login, readUpstream, REDIRECT, registerClient, startLogin, token } from './helpers/login.js'
import { withRedisServer } from './helpers/redis-tests.js'
import { s256 } from '../lib/oauth/pkce.js'
import { generateId } from '../lib/oauth/tokens.js'
import { MemoryStore } from '../lib/storage/memory/index.js'
import { RedisStore } from '../lib/storage/redis/index.js'
import type { Store } from '../lib/storage/contract.js'

// Findings 4, 5, 7, 8 and 11 of issue 15: registration policy through RFC 7592, a client's registered
// scope, unused-client expiry, client metadata fetch fan-out, and RFC 7592 DELETE.

const TOKEN = 'initial-access-token-0123456789abcdef'
const VERIFIER = 'v'.repeat(43)
const CHALLENGE = s256(VERIFIER)
const DAY = 86_400_000
const HOUR = 3_600_000

type App = Awaited<ReturnType<typeof buildApp>>['app']

async function register (app: App, body: Record<string, unknown>, headers: Record<string, string> = {}) {
  return app.inject({ method: 'POST', url: '/oauth/register', payload: body, headers: { 'content-type': 'application/json', ...headers } })
}

/** RFC 7592 update of a client, with its registration access token. */
async function update (app: App, clientId: string, registrationToken: string, body: Record<string, unknown>) {
  return app.inject({ method: 'PUT', url: `/oauth/register/${clientId}`, headers: { authorization: `Bearer ${registrationToken}` }, payload: body })
}

function authorize (app: App, clientId: string, extra: Record<string, string> = {}, redirectUri = 'http://127.0.0.1:9/cb') {
  return app.inject(`/oauth/authorize?${new URLSearchParams({
    response_type: 'code', client_id: clientId, redirect_uri: redirectUri, code_challenge: CHALLENGE, code_challenge_method: 'S256', ...extra
  })}`)
}

/** An authorization error, whether it went back to the client (a redirect) or to an error page. */
function refusedWith (res: { statusCode: number, headers: Record<string, unknown>, body: string }, error: string): boolean {
  const location = typeof res.headers.location === 'string' ? res.headers.location : ''
  return res.statusCode !== 200 && (location.includes(`error=${error}`) || res.body.includes(error) || (error === 'invalid_scope' && /not registered for/.test(res.body)))
}

// ---- finding 4: registration policy through RFC 7592 ------------------------------------------

t.test('finding 4: a client registered without the initial access token cannot PUT itself an https redirect', async t => {
  const { app, clock } = await buildApp(t, { registration: { mode: 'token', token: TOKEN, trustedSchemes: ['cursor'] } })
  const cursor = (await register(app, { redirect_uris: ['cursor://anysphere.cursor-retrieval/oauth/callback'], token_endpoint_auth_method: 'none', client_name: 'Cursor' })).json()
  t.ok(cursor.client_id, 'registered through the trusted scheme, without the token')
  const before = await app.mcpOAuth.storage.getClient(cursor.client_id, clock.t)

  const hijack = await update(app, cursor.client_id as string, cursor.registration_access_token as string, { client_id: cursor.client_id, redirect_uris: ['https://evil.example.com/cb'], token_endpoint_auth_method: 'none', client_name: 'Cursor' })
  t.equal(hijack.statusCode, 400, 'refused as a registration without the token would be')
  t.equal(hijack.json().error, 'invalid_redirect_uri')
  t.match(hijack.json().error_description, /trusted scheme/)
  const mixed = await update(app, cursor.client_id as string, cursor.registration_access_token as string, { client_id: cursor.client_id, redirect_uris: ['cursor://anysphere.cursor-retrieval/oauth/callback', 'https://evil.example.com/cb'], token_endpoint_auth_method: 'none' })
  t.equal(mixed.json().error, 'invalid_redirect_uri', 'every redirect URI must keep to a trusted scheme')
  t.same(await app.mcpOAuth.storage.getClient(cursor.client_id, clock.t), before, 'nothing stored changed (not even the registration access token)')

  const fine = await update(app, cursor.client_id as string, cursor.registration_access_token as string, { client_id: cursor.client_id, redirect_uris: ['cursor://anysphere.cursor-retrieval/oauth/callback2'], token_endpoint_auth_method: 'none', client_name: 'Cursor 2' })
  t.equal(fine.statusCode, 200, 'an update within the trusted schemes passes')
  const again = await update(app, cursor.client_id as string, fine.json().registration_access_token as string, { client_id: cursor.client_id, redirect_uris: ['https://evil.example.com/cb'], token_endpoint_auth_method: 'none' })
  t.equal(again.json().error, 'invalid_redirect_uri', 'the limit survives an update')

  const web = (await register(app, { redirect_uris: ['https://a.example.com/cb'] }, { authorization: `Bearer ${TOKEN}` })).json()
  const moved = await update(app, web.client_id as string, web.registration_access_token as string, { client_id: web.client_id, redirect_uris: ['https://b.example.com/cb'], client_secret: web.client_secret })
  t.equal(moved.statusCode, 200, 'a client registered with the token may update to any redirect registration allows')
  t.same(moved.json().redirect_uris, ['https://b.example.com/cb'])
})

// ---- finding 5: a client's registered scope ---------------------------------------------------

t.test('finding 5: authorization requests stay within the client\'s registered scope (static, DCR, defaults)', async t => {
  const { app } = await buildApp(t, {
    defaultScopes: ['mcp:tools', 'mcp:admin'],
    registration: { mode: 'public' },
    clients: [
      { client_id: 'reader', redirect_uris: ['http://127.0.0.1/cb'], scope: 'mcp:tools' },
      { client_id: 'admin-only', redirect_uris: ['http://127.0.0.1/cb'], scope: 'mcp:admin' },
      { client_id: 'anything', redirect_uris: ['http://127.0.0.1/cb'] }
    ]
  })
  const wider = await authorize(app, 'reader', { scope: 'mcp:tools mcp:admin' })
  t.ok(refusedWith(wider, 'invalid_scope'), `a scope outside the registered one is refused (${wider.statusCode})`)
  t.notMatch(wider.body, /Permissions requested/, 'no consent page')

  const defaults = await authorize(app, 'reader')
  t.equal(defaults.statusCode, 200, 'no scope asked: the defaults, narrowed to the client')
  t.match(defaults.body, '<li><code>mcp:tools</code></li>')
  t.notMatch(defaults.body, 'mcp:admin', 'the consent page shows only what the client may hold')

  const own = await authorize(app, 'admin-only', { scope: 'mcp:admin' })
  t.equal(own.statusCode, 200)
  t.match(own.body, '<li><code>mcp:admin</code></li>')
  const none = await authorize(app, 'admin-only', { scope: '' })
  t.equal(none.statusCode, 200, 'defaults narrowed to the client still leave mcp:admin')
  t.notMatch(none.body, '<code>mcp:tools</code>')

  const unlimited = await authorize(app, 'anything', { scope: 'mcp:tools mcp:admin' })
  t.equal(unlimited.statusCode, 200, 'a client that registered no scope may ask for any supported one')

  const dcr = (await register(app, { redirect_uris: ['http://127.0.0.1/cb'], token_endpoint_auth_method: 'none', scope: 'mcp:tools' })).json()
  t.equal(dcr.scope, 'mcp:tools')
  t.ok(refusedWith(await authorize(app, dcr.client_id, { scope: 'mcp:admin' }), 'invalid_scope'), 'DCR client: refused')
})

t.test('finding 5: defaults that leave nothing the client may hold are invalid_scope', async t => {
  const { app } = await buildApp(t, { clients: [{ client_id: 'admin-only', redirect_uris: ['http://127.0.0.1/cb'], scope: 'mcp:admin' }] })
  const res = await authorize(app, 'admin-only')
  t.ok(refusedWith(res, 'invalid_scope'), `refused (${res.statusCode})`)
})

t.test('finding 5: refresh narrows to the client\'s current scope (RFC 7592 narrowed it)', async t => {
  const { app } = await buildApp(t, { registration: { mode: 'public' } })
  const client = (await register(app, { redirect_uris: ['http://127.0.0.1/cb'], token_endpoint_auth_method: 'none', scope: 'mcp:tools mcp:admin' })).json()
  const grant = await app.mcpOAuth.grants.createGrant({ userId: 'u', clientId: client.client_id, scopes: ['mcp:tools', 'mcp:admin'], resource: RESOURCE })
  const tokens = await app.mcpOAuth.grants.issueTokens(grant)
  const narrowed = await update(app, client.client_id as string, client.registration_access_token as string, { client_id: client.client_id, redirect_uris: ['http://127.0.0.1/cb'], token_endpoint_auth_method: 'none', scope: 'mcp:tools' })
  t.equal(narrowed.statusCode, 200)
  const refreshed = await app.inject({ method: 'POST', url: '/oauth/token', payload: { grant_type: 'refresh_token', refresh_token: tokens.refresh_token, client_id: client.client_id } })
  t.equal(refreshed.statusCode, 200)
  t.equal(refreshed.json().scope, 'mcp:tools', 'mcp:admin is no longer issued')
  const admin = await app.inject({ method: 'POST', url: '/mcp/admin', headers: { authorization: `Bearer ${refreshed.json().access_token as string}` } })
  t.equal(admin.statusCode, 403, 'the new access token does not reach the admin route')
  const asked = await app.inject({ method: 'POST', url: '/oauth/token', payload: { grant_type: 'refresh_token', refresh_token: refreshed.json().refresh_token, client_id: client.client_id, scope: 'mcp:admin' } })
  t.equal(asked.json().error, 'invalid_scope', 'asking for it explicitly is refused')
})

t.test('finding 5: a code whose scope the client no longer holds is not exchanged (real IdP login)', async t => {
  const h = await startLogin(t, { scopes: ['mcp:tools', 'mcp:admin'] })
  const client = await registerClient(h, { scope: 'mcp:tools mcp:admin' })
  const back = await login(h, authorizeUrl(h, client.client_id as string, VERIFIER, { scope: 'mcp:tools mcp:admin' }))
  const code = back.searchParams.get('code')
  t.ok(code, 'a code for both scopes')
  const narrowed = await fetch(`${h.issuer}/oauth/register/${client.client_id as string}`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${client.registration_access_token as string}` },
    body: JSON.stringify({ client_id: client.client_id, redirect_uris: [REDIRECT], token_endpoint_auth_method: 'none', scope: 'mcp:tools' })
  })
  t.equal(narrowed.status, 200)
  const res = await token(h, { grant_type: 'authorization_code', code: code as string, code_verifier: VERIFIER, redirect_uri: REDIRECT, client_id: client.client_id as string })
  t.equal(res.status, 400)
  t.equal(res.body.error, 'invalid_scope')
  t.notOk(res.body.access_token, 'no tokens')
})

// ---- finding 11: RFC 7592 DELETE revokes upstream tokens --------------------------------------

t.test('finding 11: RFC 7592 DELETE revokes the upstream tokens of the client\'s grants, as revokeClient() does', async t => {
  const h = await startLogin(t)
  const client = await registerClient(h)
  const back = await login(h, authorizeUrl(h, client.client_id as string, VERIFIER))
  const exchanged = await token(h, { grant_type: 'authorization_code', code: back.searchParams.get('code') as string, code_verifier: VERIFIER, redirect_uri: REDIRECT, client_id: client.client_id as string })
  t.equal(exchanged.status, 200)
  const { tokens: upstream } = await readUpstream(h, exchanged.body.access_token as string)
  const discovery = await (await fetch(`${h.idp.issuer}/.well-known/openid-configuration`)).json() as { userinfo_endpoint: string }
  const userinfo = async () => (await fetch(discovery.userinfo_endpoint, { headers: { authorization: `Bearer ${upstream.accessToken}` } })).status
  t.equal(await userinfo(), 200, 'the upstream access token works before')

  const del = await fetch(`${h.issuer}/oauth/register/${client.client_id as string}`, { method: 'DELETE', headers: { authorization: `Bearer ${client.registration_access_token as string}` } })
  t.equal(del.status, 204)
  const mcp = await fetch(`${h.issuer}/mcp`, { method: 'POST', headers: { authorization: `Bearer ${exchanged.body.access_token as string}` } })
  t.equal(mcp.status, 401, 'our tokens went at once')
  // Upstream revocation runs in the background: watch for it (bounded).
  let status = 200
  for (let i = 0; i < 50 && status === 200; i++) {
    await sleep(100)
    status = await userinfo()
  }
  t.equal(status, 401, 'the upstream access token was revoked at the provider')
})

// ---- finding 7: registration sprawl -----------------------------------------------------------

t.test('finding 7: by default an unused dynamic client expires 30 days after registration; use renews it', async t => {
  const { app, clock } = await buildApp(t, {
    registration: { mode: 'public' },
    clients: [{ client_id: 'static-one', redirect_uris: ['http://127.0.0.1/cb'] }]
  })
  const body = { redirect_uris: ['http://127.0.0.1/cb'], token_endpoint_auth_method: 'none' }
  const idle = (await register(app, body)).json()
  const used = (await register(app, body)).json()
  t.equal((await app.mcpOAuth.storage.getClient(idle.client_id, clock.t))?.expiresAt, clock.t + 30 * DAY + HOUR, 'expires 30 days (and an hour) after registration')
  const grant = await app.mcpOAuth.grants.createGrant({ userId: 'u', clientId: used.client_id, scopes: ['mcp:tools'], resource: RESOURCE })
  const { refresh_token: first } = await app.mcpOAuth.grants.issueTokens(grant)
  const refresh = (refreshToken: string) => app.inject({ method: 'POST', url: '/oauth/token', payload: { grant_type: 'refresh_token', refresh_token: refreshToken, client_id: used.client_id } })

  clock.advance(20 * DAY)
  t.equal((await authorize(app, idle.client_id)).statusCode, 200, 'anyone may name the idle client in an authorization request')
  const renewed = await refresh(first)
  t.equal(renewed.statusCode, 200, 'tokens issued to the other client: a use')
  clock.advance(10 * DAY + HOUR + 1)
  t.equal(await app.mcpOAuth.storage.getClient(idle.client_id, clock.t), null, 'the unused client is gone after 30 days (and an hour): naming it was no use')
  t.equal((await authorize(app, idle.client_id)).statusCode, 400, 'and unknown to the authorization endpoint')
  t.ok(await app.mcpOAuth.storage.getClient(used.client_id, clock.t), 'the used one lives on')

  // Every token issue is a use.
  clock.advance(5 * DAY)
  const refreshed = await refresh(renewed.json().refresh_token as string)
  t.equal(refreshed.statusCode, 200)
  clock.advance(29 * DAY)
  t.ok(await app.mcpOAuth.storage.getClient(used.client_id, clock.t), '29 days after the refresh, still there')
  clock.advance(DAY + HOUR + 1)
  t.equal(await app.mcpOAuth.storage.getClient(used.client_id, clock.t), null, 'gone 30 days (and at most an hour) after its last use')

  t.equal((await authorize(app, 'static-one')).statusCode, 200, 'a static client never expires')
})

t.test('finding 7: renewal writes at most once an hour per client, never on guarded requests', async t => {
  const clock = new TestClock()
  const store = new MemoryStore({ now: clock.now, sweepIntervalMs: 0 })
  const writes: string[] = []
  // Count client writes on a real store (the methods still run).
  for (const method of ['saveClient', 'renewClient'] as const) {
    const original = (store[method] as (...a: unknown[]) => Promise<unknown>).bind(store)
    ;(store as unknown as Record<string, unknown>)[method] = async (...args: unknown[]) => { writes.push(method); return original(...args) }
  }
  const { app } = await buildApp(t, { registration: { mode: 'public' }, store, now: clock.now })
  const client = (await register(app, { redirect_uris: ['http://127.0.0.1/cb'], token_endpoint_auth_method: 'none' })).json()
  const grant = await app.mcpOAuth.grants.createGrant({ userId: 'u', clientId: client.client_id, scopes: ['mcp:tools'], resource: RESOURCE })
  let tokens = await app.mcpOAuth.grants.issueTokens(grant)
  writes.length = 0
  clock.advance(60_000)
  // Registration set the expiry as a use would: the first hour of uses writes nothing.
  for (let i = 0; i < 5; i++) {
    t.equal((await authorize(app, client.client_id)).statusCode, 200)
    const res = await app.inject({ method: 'POST', url: '/oauth/token', payload: { grant_type: 'refresh_token', refresh_token: tokens.refresh_token, client_id: client.client_id } })
    t.equal(res.statusCode, 200)
    tokens = res.json()
    t.equal((await app.inject({ method: 'POST', url: '/mcp', headers: { authorization: `Bearer ${tokens.access_token}` } })).statusCode, 200)
    clock.advance(60_000)
  }
  t.same(writes, [], 'no write for fifteen requests within the hour after registration')
  clock.advance(2 * HOUR)
  for (let i = 0; i < 5; i++) {
    t.equal((await authorize(app, client.client_id)).statusCode, 200)
    clock.advance(60_000)
  }
  t.same(writes, [], 'authorization requests are no use: no write')
  for (let i = 0; i < 5; i++) {
    const res = await app.inject({ method: 'POST', url: '/oauth/token', payload: { grant_type: 'refresh_token', refresh_token: tokens.refresh_token, client_id: client.client_id } })
    t.equal(res.statusCode, 200)
    tokens = res.json()
    clock.advance(60_000)
  }
  t.same(writes, ['renewClient'], 'one renewal once the hour has passed, for five refreshes')
})

t.test('finding 7: the unused-client expiry can be turned off, with a start-up warning', async t => {
  const warnings: unknown[] = []
  const { app, clock } = await buildApp(t, {
    registration: { mode: 'public', unusedClientTtlSeconds: 0 },
    auditSink: (event, fields) => { if (event === 'config_weakened') warnings.push(fields) }
  })
  const client = (await register(app, { redirect_uris: ['http://127.0.0.1/cb'], token_endpoint_auth_method: 'none' })).json()
  t.equal((await app.mcpOAuth.storage.getClient(client.client_id, clock.t))?.expiresAt, undefined)
  t.match(JSON.stringify(warnings), /unusedClientTtlSeconds is 0/)
})

await withRedisServer('finding 7 on Redis', server => {
  t.test('finding 7 (Redis): a dynamic client\'s keys carry a TTL that use renews', async t => {
    const clock = new TestClock()
    const prefix = `hc-${generateId()}:`
    const store = new RedisStore({ url: server.url, prefix, now: clock.now })
    const redis = new Redis(server.url)
    t.teardown(async () => { await redis.quit().catch(() => { redis.disconnect() }) })
    const { app } = await buildApp(t, { registration: { mode: 'public' }, store: store as Store, now: clock.now })
    const client = (await register(app, { redirect_uris: ['http://127.0.0.1/cb'], token_endpoint_auth_method: 'none' })).json()
    const key = `${prefix}c:${client.client_id as string}`
    const pttl = await redis.pttl(key)
    t.ok(pttl > 30 * DAY - 60_000 && pttl <= 30 * DAY + HOUR, `the client key expires in 30 days and an hour (PTTL ${pttl})`)
    const from = JSON.parse(await redis.get(key) ?? '{}').registeredFrom as string
    t.equal(Number(await redis.zscore(`${prefix}cf:${from}`, client.client_id)), clock.t + 30 * DAY + HOUR, 'the per-address index follows')

    const grant = await app.mcpOAuth.grants.createGrant({ userId: 'u', clientId: client.client_id, scopes: ['mcp:tools'], resource: RESOURCE })
    const tokens = await app.mcpOAuth.grants.issueTokens(grant)
    clock.advance(10 * DAY)
    const used = await app.inject({ method: 'POST', url: '/oauth/token', payload: { grant_type: 'refresh_token', refresh_token: tokens.refresh_token, client_id: client.client_id } })
    t.equal(used.statusCode, 200, 'a use (a refresh), ten days later')
    const renewed = await redis.pttl(key)
    t.ok(renewed > 30 * DAY + HOUR - 60_000, `the TTL starts again from the use (PTTL ${renewed})`)
    const expiresAt = JSON.parse(await redis.get(key) ?? '{}').expiresAt as number
    t.ok(expiresAt >= clock.t + 30 * DAY && expiresAt <= clock.t + 30 * DAY + HOUR, 'and so does the record\'s expiry')
    t.equal(Number(await redis.zscore(`${prefix}cf:${from}`, client.client_id)), expiresAt, 'and the per-address index')
    t.ok(await redis.pttl(`${prefix}cf:${from}`) >= renewed - 1000, 'the index lives as long as its newest client')

    clock.advance(30 * DAY + HOUR + 1)
    t.equal(await app.mcpOAuth.storage.getClient(client.client_id, clock.t), null, 'unused again for 30 days: gone')
  })
})

// ---- finding 8: client metadata fetch fan-out -------------------------------------------------

const { cert, key } = selfSignedCert(t, ['client.test'])
/** Responses the server holds back, each with the document it will send when released. */
const held: Array<{ res: ServerResponse, document: string }> = []
const hits = new Map<string, number>()
const metadataServer = createHttpsServer({ key, cert }, (req: IncomingMessage, res: ServerResponse) => {
  const path = req.url ?? ''
  hits.set(path, (hits.get(path) ?? 0) + 1)
  const id = `https://client.test:${(metadataServer.address() as AddressInfo).port}${path}`
  // A document written for other servers too names scopes we do not grant (/foreign, /mixed).
  const scope = path.startsWith('/foreign') ? 'openid profile offline_access' : path.startsWith('/mixed') ? 'openid mcp:tools' : 'mcp:tools'
  const document = JSON.stringify({ client_id: id, client_name: 'Fan-out', redirect_uris: ['http://127.0.0.1/cb'], scope })
  if (path.startsWith('/fail')) {
    res.writeHead(500).end()
  } else if (path.startsWith('/hold')) {
    const entry = { res, document }
    held.push(entry)
    res.on('close', () => { if (held.includes(entry)) held.splice(held.indexOf(entry), 1) })
  } else {
    res.writeHead(200, { 'content-type': 'application/json' }).end(document)
  }
})
await new Promise<void>(resolve => metadataServer.listen(0, '127.0.0.1', resolve))
t.teardown(() => { metadataServer.closeAllConnections(); metadataServer.close() })
const metadataPort = (metadataServer.address() as AddressInfo).port
const metadataUrl = (path: string): string => `https://client.test:${metadataPort}${path}`

function release (): void {
  for (const { res, document } of held.splice(0)) res.writeHead(200, { 'content-type': 'application/json' }).end(document)
}

async function cimdApp (t: Test) {
  return buildApp(t, {
    rateLimit: { enabled: false },
    // A generous fetch deadline: held answers must not time out on a loaded machine.
    clientIdMetadataDocuments: { allowPrivateAddresses: true, timeoutMs: 20_000 },
    cimdTestHooks: { lookup: async () => [{ address: '127.0.0.1', family: 4 }], ca: cert }
  })
}

function tokenRequest (app: App, clientId: string) {
  return app.inject({ method: 'POST', url: '/oauth/token', payload: { grant_type: 'refresh_token', refresh_token: 'mcprt_' + 'A'.repeat(43), client_id: clientId } })
}

t.test('finding 8: concurrent metadata fetches are capped (default 16); over the cap answers 503 at once', async t => {
  const { app } = await cimdApp(t)
  t.teardown(release)
  const run = generateId()
  const pending = Array.from({ length: 16 }, (_, i) => tokenRequest(app, metadataUrl(`/hold-${run}-${i}.json`)))
  for (let i = 0; i < 1000 && held.length < 16; i++) await sleep(10)
  t.equal(held.length, 16, 'sixteen fetches are out, their answers held')

  const started = Date.now()
  const over = await tokenRequest(app, metadataUrl(`/hold-${run}-over.json`))
  t.ok(Date.now() - started < 2000, 'answered at once, not after a fetch')
  t.equal(over.statusCode, 503)
  t.equal(over.json().error, 'temporarily_unavailable')
  t.match(over.json().error_description, /metadata document.*could not be fetched right now/i)
  t.match(over.headers['retry-after'], /^\d+$/)
  t.equal(hits.get(`/hold-${run}-over.json`), undefined, 'no seventeenth fetch was started')
  const page = await authorize(app, metadataUrl(`/hold-${run}-page.json`))
  t.equal(page.statusCode, 503, 'the authorization endpoint says the same, on a page')
  t.equal(hits.get(`/hold-${run}-page.json`), undefined)

  release()
  const answers = await Promise.all(pending)
  for (const res of answers) t.equal(res.json().error, 'invalid_grant', 'the held requests went through client authentication')
  const after = await tokenRequest(app, metadataUrl(`/ok-${run}.json`))
  t.equal(after.json().error, 'invalid_grant', 'with the slots free again, new documents are fetched')
})

t.test('finding 8: a failed fetch is remembered for a short while', async t => {
  const { app, clock } = await cimdApp(t)
  const path = `/fail-${generateId()}.json`
  const first = await tokenRequest(app, metadataUrl(path))
  t.equal(first.statusCode, 401)
  t.equal(first.json().error, 'invalid_client')
  t.match(first.json().error_description, /HTTP 500/)
  const second = await tokenRequest(app, metadataUrl(path))
  t.equal(second.json().error, 'invalid_client')
  t.match(second.json().error_description, /HTTP 500/, 'the same answer')
  t.equal(hits.get(path), 1, 'without a second fetch')
  clock.advance(31_000)
  await tokenRequest(app, metadataUrl(path))
  t.equal(hits.get(path), 2, 'fetched again after 30 s')
})

t.test('finding 8 and 5: a metadata document\'s scope is enforced', async t => {
  const { app } = await cimdApp(t)
  const id = metadataUrl(`/doc-${generateId()}.json`)
  t.equal((await authorize(app, id, { scope: 'mcp:tools' })).statusCode, 200)
  t.ok(refusedWith(await authorize(app, id, { scope: 'mcp:admin' }), 'invalid_scope'), 'beyond the document\'s scope: refused')
})

t.test('finding 5: a metadata document\'s scopes that this server does not grant restrict nothing, as in a registration', async t => {
  const { app } = await cimdApp(t)
  const foreign = metadataUrl(`/foreign-${generateId()}.json`)
  t.equal((await authorize(app, foreign)).statusCode, 200, 'only scopes of other servers: the defaults, as for a client without scope')
  t.equal((await authorize(app, foreign, { scope: 'mcp:admin' })).statusCode, 200)
  const mixed = metadataUrl(`/mixed-${generateId()}.json`)
  t.equal((await authorize(app, mixed)).statusCode, 200, 'the scopes we grant are kept')
  t.ok(refusedWith(await authorize(app, mixed, { scope: 'mcp:admin' }), 'invalid_scope'), 'and bound the client')
})

t.test('finding 5: a static client\'s scope must be one this server grants (a typo would restrict nothing)', async t => {
  await t.rejects(buildApp(t, { clients: [{ client_id: 'c', redirect_uris: ['https://c.example.com/cb'], scope: 'mcp:tool' }] }),
    /clients\[0\]\.scope.*"mcp:tool" is not in scopes/)
})
