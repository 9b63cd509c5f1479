import t from 'tap'
import type { Test } from 'tap'
import Fastify from 'fastify'
import { Redis } from 'ioredis'
import { mcpOAuth, type AuditEventName, type McpOAuthOptions } from '../lib/index.js'
import { RedisStore } from '../lib/storage/redis/index.js'
import { hashToken, looksLike } from '../lib/oauth/tokens.js'
import { buildApp, ISSUER, RESOURCE } from './helpers/app.js'
import { TestClock } from './helpers/clock.js'
import { withRedisServer } from './helpers/redis-tests.js'
import { freePort } from './helpers/login.js'
import { Client, ClientCredentialsProvider, StreamableHTTPClientTransport } from '@modelcontextprotocol/client'
import { mcpRoutes } from '../example/mcp.js'
import type { RedisServer } from './helpers/redis.js'

const SECRET = 'machine-secret-0123456789abcdef'
const TOKEN = 'initial-access-token-0123456789abcdef'
const RS = { id: 'rs-1', secret: 'resource-server-secret-0123456789abcdef' }
const MACHINE = { client_id: 'machine', client_secret: SECRET, grant_types: ['client_credentials' as const], scope: 'mcp:tools mcp:admin' }
const basic = (id: string, secret: string) => `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`
const form = { 'content-type': 'application/x-www-form-urlencoded' }

type App = Awaited<ReturnType<typeof buildApp>>['app']

/** An app with the machine clients of these tests, recording the audit events. */
async function machineApp (t: Test, opts: Partial<McpOAuthOptions> = {}) {
  const events: Array<{ event: AuditEventName, fields: Record<string, unknown> }> = []
  const ctx = await buildApp(t, {
    clients: [
      MACHINE,
      { client_id: 'machine-post', client_secret: SECRET, token_endpoint_auth_method: 'client_secret_post', grant_types: ['client_credentials'] },
      { client_id: 'web-app', client_secret: SECRET, redirect_uris: ['https://app.example.com/cb'] },
      { client_id: 'both', client_secret: SECRET, redirect_uris: ['https://both.example.com/cb'], grant_types: ['authorization_code', 'client_credentials'], scope: 'mcp:tools' }
    ],
    introspection: { resourceServers: [RS] },
    auditSink: (event, fields) => { events.push({ event, fields: fields as Record<string, unknown> }) },
    ...opts
  })
  return { ...ctx, events }
}

/** POST /oauth/token with client_secret_basic for `client` (the other parameters in the body). */
function token (app: App, body: Record<string, string>, client: { id: string, secret: string } | null = { id: 'machine', secret: SECRET }) {
  return app.inject({
    method: 'POST',
    url: '/oauth/token',
    headers: { ...form, ...(client === null ? {} : { authorization: basic(client.id, client.secret) }) },
    payload: new URLSearchParams(body).toString()
  })
}

function mcp (app: App, accessToken: string, url = '/mcp') {
  return app.inject({ method: 'POST', url, headers: { authorization: `Bearer ${accessToken}` } })
}

function introspect (app: App, value: string, authorization: string) {
  return app.inject({ method: 'POST', url: '/oauth/introspect', headers: { ...form, authorization }, payload: new URLSearchParams({ token: value }).toString() })
}

t.test('client_secret_basic: an access token whose subject is the client, no refresh token; the guard says so', async t => {
  const { app, clock, events } = await machineApp(t)
  const res = await token(app, { grant_type: 'client_credentials', scope: 'mcp:tools mcp:admin', resource: RESOURCE })
  t.equal(res.statusCode, 200)
  t.equal(res.headers['cache-control'], 'no-store')
  const body = res.json()
  t.same(Object.keys(body).sort(), ['access_token', 'expires_in', 'scope', 'token_type'], 'no refresh_token')
  t.ok(looksLike('accessToken', body.access_token))
  t.equal(body.expires_in, 3600)
  t.equal(body.scope, 'mcp:tools mcp:admin')

  const guarded = await mcp(app, body.access_token, '/mcp/admin')
  t.equal(guarded.statusCode, 200)
  t.match(guarded.json().auth, {
    subjectType: 'client',
    userId: 'machine',
    clientId: 'machine',
    scopes: ['mcp:tools', 'mcp:admin'],
    resource: RESOURCE,
    expiresAt: Math.floor(clock.t / 1000) + 3600,
    emailVerified: false
  })
  t.notOk('email' in guarded.json().auth)

  const issued = events.filter(e => e.event === 'token_issued')
  t.equal(issued.length, 1)
  t.match(issued[0]?.fields, { clientId: 'machine', userId: 'machine', grantType: 'client_credentials', subjectType: 'client' })
  t.notMatch(JSON.stringify(events), body.access_token, 'no token in the audit stream')
  t.notMatch(JSON.stringify(events), SECRET, 'no secret either')

  // The grant ends with its one token: nothing of it lingers in the store.
  const grantId = guarded.json().auth.grantId as string
  const grant = await app.mcpOAuth.storage.getGrant(grantId, clock.t)
  t.match(grant, { subjectType: 'client', userId: 'machine', clientId: 'machine', expiresAt: clock.t + 3600_000 })
  clock.advance(3600_000)
  t.equal(await app.mcpOAuth.storage.getGrant(grantId, clock.t), null, 'the grant is gone when its token expires')
  t.equal((await mcp(app, body.access_token)).statusCode, 401)
})

t.test('client_secret_post; no scope asked: the registered scope, or the defaults; a resource spelled differently', async t => {
  const { app } = await machineApp(t)
  const post = await token(app, { grant_type: 'client_credentials', client_id: 'machine-post', client_secret: SECRET }, null)
  t.equal(post.statusCode, 200)
  t.equal(post.json().scope, 'mcp:tools', 'no registered scope: the default scopes')
  t.equal((await mcp(app, post.json().access_token)).json().auth.subjectType, 'client')

  t.equal((await token(app, { grant_type: 'client_credentials', resource: '' })).statusCode, 200, 'an empty resource: the only one')
  const registered = await token(app, { grant_type: 'client_credentials', resource: RESOURCE + '/' })
  t.equal(registered.statusCode, 200)
  t.equal(registered.json().scope, 'mcp:tools mcp:admin', 'the client\'s whole registered scope')
  t.equal((await mcp(app, registered.json().access_token)).json().auth.resource, RESOURCE, 'bound to the configured resource')

  const narrow = await token(app, { grant_type: 'client_credentials', scope: 'mcp:tools offline_access' })
  t.equal(narrow.json().scope, 'mcp:tools', 'offline_access means nothing here')
  t.equal((await mcp(app, narrow.json().access_token, '/mcp/admin')).statusCode, 403, 'what was not asked for is not granted')

  const both = await token(app, { grant_type: 'client_credentials' }, { id: 'both', secret: SECRET })
  t.equal(both.statusCode, 200, 'a client of both flows')
  t.equal(both.json().scope, 'mcp:tools')
})

t.test('several resources: one must be named; each keeps its own scopes', async t => {
  const OTHER = `${ISSUER}/other`
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  await app.register(mcpOAuth, { issuer: ISSUER, resources: [RESOURCE, { resource: OTHER, scopes: ['mcp:admin'] }], scopes: ['mcp:tools', 'mcp:admin'], clients: [MACHINE] })
  const none = await token(app, { grant_type: 'client_credentials' })
  t.equal(none.statusCode, 400)
  t.same(none.json(), { error: 'invalid_target', error_description: 'resource is required: this server protects several resources' })
  const other = await token(app, { grant_type: 'client_credentials', resource: OTHER })
  t.equal(other.statusCode, 200)
  t.equal(other.json().scope, 'mcp:admin', 'the registered scope within the resource\'s')
  const wrong = await token(app, { grant_type: 'client_credentials', resource: OTHER, scope: 'mcp:tools' })
  t.equal(wrong.json().error, 'invalid_scope', 'a scope the resource does not have')
})

t.test('every refusal is an OAuth error, and nothing is stored by it', async t => {
  const { app, clock } = await machineApp(t)
  // A record a store could hold (written by an older version, or by hand): public, yet holding the grant.
  await app.mcpOAuth.storage.saveClient({
    clientId: 'public-machine',
    redirectUris: [],
    tokenEndpointAuthMethod: 'none',
    grantTypes: ['client_credentials'],
    responseTypes: [],
    applicationType: 'web',
    metadata: {},
    clientIdIssuedAt: Math.floor(clock.t / 1000),
    source: 'dcr'
  })
  const before = await app.mcpOAuth.storage.stats?.()
  const cases: Array<[string, Awaited<ReturnType<typeof token>>, number, string, RegExp]> = [
    ['a public client', await token(app, { grant_type: 'client_credentials', client_id: 'public-machine' }, null), 400, 'unauthorized_client', /confidential client/],
    ['a client without the grant', await token(app, { grant_type: 'client_credentials' }, { id: 'web-app', secret: SECRET }), 400, 'unauthorized_client', /not registered for client_credentials/],
    ['a wrong secret', await token(app, { grant_type: 'client_credentials' }, { id: 'machine', secret: 'wrong-' + SECRET }), 401, 'invalid_client', /./],
    ['no client authentication', await token(app, { grant_type: 'client_credentials', client_id: 'machine' }, null), 401, 'invalid_client', /client_secret_basic/],
    ['a scope beyond the registered one', await token(app, { grant_type: 'client_credentials', scope: 'mcp:tools' }, { id: 'both', secret: SECRET }).then(() => token(app, { grant_type: 'client_credentials', scope: 'mcp:admin' }, { id: 'both', secret: SECRET })), 400, 'invalid_scope', /not registered for the scope: mcp:admin/],
    ['an unknown scope', await token(app, { grant_type: 'client_credentials', scope: 'root' }), 400, 'invalid_scope', /Unsupported scope: root/],
    ['a malformed scope', await token(app, { grant_type: 'client_credentials', scope: 'a"b' }), 400, 'invalid_scope', /malformed/],
    ['an unknown resource', await token(app, { grant_type: 'client_credentials', resource: 'https://evil.example.com/mcp' }), 400, 'invalid_target', /not protected by this server/],
    ['a resource that is no URL', await token(app, { grant_type: 'client_credentials', resource: 'not a url' }), 400, 'invalid_target', /not protected/],
    ['a refresh from a machine client', await token(app, { grant_type: 'refresh_token', refresh_token: 'mcprt_' + 'A'.repeat(43) }), 400, 'unauthorized_client', /not registered for refresh_token/],
    ['a code from a machine client', await token(app, { grant_type: 'authorization_code', code: 'x', code_verifier: 'y' }), 400, 'unauthorized_client', /not registered for authorization_code/],
    ['a repeated parameter', await app.inject({ method: 'POST', url: '/oauth/token', headers: { ...form, authorization: basic('machine', SECRET) }, payload: 'grant_type=client_credentials&scope=a&scope=b' }), 400, 'invalid_request', /./]
  ]
  for (const [what, res, status, error, description] of cases) {
    t.equal(res.statusCode, status, what)
    t.equal(res.json().error, error, what)
    t.match(res.json().error_description, description, what)
    t.notMatch(res.body, SECRET, `${what}: the secret is not echoed`)
  }
  const after = await app.mcpOAuth.storage.stats?.()
  // One grant more: the first request of the scope case, which is allowed.
  t.equal(after?.grants, (before?.grants ?? 0) + 1, 'only the one allowed request wrote a grant')
  t.equal(after?.accessTokens, (before?.accessTokens ?? 0) + 1)
  t.equal(after?.refreshTokens, 0, 'and never a refresh token')
})

t.test('the authorization endpoint has nothing for a machine client', async t => {
  const { app } = await machineApp(t)
  const res = await app.inject(`/oauth/authorize?client_id=machine&response_type=code&code_challenge=${'a'.repeat(43)}&code_challenge_method=S256`)
  t.equal(res.statusCode, 400, 'an error page, never a redirect')
  t.notOk(res.headers.location)
})

t.test('introspection and revocation of a machine token', async t => {
  const { app, clock, events } = await machineApp(t)
  const access = (await token(app, { grant_type: 'client_credentials', scope: 'mcp:tools' })).json().access_token as string
  const now = Math.floor(clock.t / 1000)
  const expected = {
    active: true,
    scope: 'mcp:tools',
    client_id: 'machine',
    sub: 'machine',
    subject_type: 'client',
    aud: RESOURCE,
    iss: ISSUER,
    exp: now + 3600,
    iat: now,
    token_type: 'Bearer'
  }
  t.same((await introspect(app, access, basic(RS.id, RS.secret))).json(), expected, 'a resource server sees the machine subject')
  t.same((await introspect(app, access, basic('machine', SECRET))).json(), expected, 'so does the client itself')
  t.same((await introspect(app, access, basic('web-app', SECRET))).json(), { active: false }, 'another client does not')

  const foreign = await app.inject({ method: 'POST', url: '/oauth/revoke', headers: { ...form, authorization: basic('web-app', SECRET) }, payload: `token=${access}` })
  t.equal(foreign.json().error, 'unauthorized_client', 'another client cannot revoke it')
  t.equal((await mcp(app, access)).statusCode, 200)
  const revoked = await app.inject({ method: 'POST', url: '/oauth/revoke', headers: { ...form, authorization: basic('machine', SECRET) }, payload: `token=${access}` })
  t.equal(revoked.statusCode, 200)
  t.equal((await mcp(app, access)).statusCode, 401, 'revoked at once')
  t.same((await introspect(app, access, basic(RS.id, RS.secret))).json(), { active: false })
  t.match(events.filter(e => e.event === 'token_revoked'), [{ fields: { clientId: 'machine', tokenType: 'access_token' } }])

  // Revoking the client's grants takes its machine tokens too.
  const next = (await token(app, { grant_type: 'client_credentials' })).json().access_token as string
  // Two grants: the revoked token's stays, tokenless, until the time its token would have ended.
  t.equal(await app.mcpOAuth.revokeClient('machine'), 2)
  t.equal((await mcp(app, next)).statusCode, 401)
})

t.test('static clients: grant_types checked at registration, naming the field', async t => {
  const bad = async (client: Record<string, unknown>, message: RegExp) => {
    const app = Fastify({ logger: false })
    t.teardown(() => app.close())
    await t.rejects(async () => { await app.register(mcpOAuth, { issuer: ISSUER, resources: [RESOURCE], clients: [client as never] }) }, { code: 'FST_MCP_OAUTH_INVALID_OPTION', message })
  }
  await bad({ client_id: 'm', grant_types: ['client_credentials'] }, /clients\[0\]\.client_secret: is required for client_credentials/)
  await bad({ client_id: 'm', client_secret: SECRET, token_endpoint_auth_method: 'none', grant_types: ['client_credentials'] }, /clients\[0\]\.client_secret: a public client/)
  await bad({ client_id: 'm', client_secret: SECRET }, /clients\[0\]\.redirect_uris: is required for authorization_code/)
  await bad({ client_id: 'm', client_secret: SECRET, grant_types: ['client_credentials'], redirect_uris: ['https://a.example.com/cb'] }, /clients\[0\]\.redirect_uris: is only for authorization_code/)
  await bad({ client_id: 'm', client_secret: SECRET, grant_types: ['client_credentials', 'refresh_token'] }, /clients\[0\]\.grant_types: refresh_token comes only with authorization_code/)
  await bad({ client_id: 'm', client_secret: SECRET, grant_types: ['password'] }, /clients\[0\]\.grant_types/)
  await bad({ client_id: 'm', client_secret: SECRET, grant_types: [] }, /clients\[0\]\.grant_types/)

  const { app, clock } = await machineApp(t)
  t.match(await app.mcpOAuth.storage.getClient('machine', clock.t), { grantTypes: ['client_credentials'], redirectUris: [], responseTypes: [], applicationType: 'web' })
  t.match(await app.mcpOAuth.storage.getClient('both', clock.t), { grantTypes: ['authorization_code', 'client_credentials', 'refresh_token'], responseTypes: ['code'] })
  t.match(await app.mcpOAuth.storage.getClient('web-app', clock.t), { grantTypes: ['authorization_code', 'refresh_token'] })
  t.ok((await app.inject('/.well-known/oauth-authorization-server')).json().grant_types_supported.includes('client_credentials'))
})

t.test('dynamic registration: client_credentials only with the initial access token', async t => {
  const { app } = await buildApp(t, { registration: { mode: 'token', token: TOKEN, trustedSchemes: ['cursor'] } })
  const register = (body: unknown, withToken = true) => app.inject({
    method: 'POST',
    url: '/oauth/register',
    headers: { 'content-type': 'application/json', ...(withToken ? { authorization: `Bearer ${TOKEN}` } : {}) },
    payload: body as object
  })
  // As the MCP SDK's ClientCredentialsProvider describes itself: an empty list of redirect URIs.
  const res = await register({ client_name: 'nightly job', redirect_uris: [], grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'mcp:tools' })
  t.equal(res.statusCode, 201)
  const info = res.json()
  t.match(info, { grant_types: ['client_credentials'], response_types: [], redirect_uris: [], application_type: 'web', scope: 'mcp:tools' })
  const issued = await token(app, { grant_type: 'client_credentials' }, { id: info.client_id, secret: info.client_secret })
  t.equal(issued.statusCode, 200)
  t.equal(issued.json().scope, 'mcp:tools')
  t.equal((await mcp(app, issued.json().access_token)).json().auth.subjectType, 'client')

  const noRedirects = await register({ grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_post' })
  t.equal(noRedirects.statusCode, 201, 'redirect_uris may be left out')

  const refused: Array<[string, unknown, boolean, RegExp]> = [
    ['without the token (trusted scheme)', { redirect_uris: ['cursor://cb'], grant_types: ['authorization_code', 'client_credentials'] }, false, /only be registered with the initial access token/],
    ['a public client', { grant_types: ['client_credentials'], token_endpoint_auth_method: 'none' }, true, /needs a confidential client/],
    ['with a refresh token', { grant_types: ['client_credentials', 'refresh_token'] }, true, /refresh_token comes only with authorization_code/],
    ['with response types', { grant_types: ['client_credentials'], response_types: ['code'] }, true, /response_types must be empty/],
    ['refresh alone', { grant_types: ['refresh_token'] }, true, /must include authorization_code or client_credentials/]
  ]
  for (const [what, body, withToken, description] of refused) {
    const r = await register(body, withToken)
    t.equal(r.statusCode, 400, what)
    t.equal(r.json().error, 'invalid_client_metadata', what)
    t.match(r.json().error_description, description, what)
  }

  // RFC 7592: a client registered with the token keeps the grant through an update.
  const updated = await app.inject({
    method: 'PUT',
    url: `/oauth/register/${info.client_id}`,
    headers: { 'content-type': 'application/json', authorization: `Bearer ${info.registration_access_token}` },
    payload: { client_id: info.client_id, grant_types: ['client_credentials'], client_name: 'renamed job' }
  })
  t.equal(updated.statusCode, 200)
  t.match(updated.json(), { grant_types: ['client_credentials'], client_name: 'renamed job' })
})

t.test('public registration refuses client_credentials', async t => {
  const { app } = await buildApp(t, { registration: { mode: 'public' } })
  const r = await app.inject({ method: 'POST', url: '/oauth/register', headers: { 'content-type': 'application/json' }, payload: { grant_types: ['client_credentials'] } })
  t.equal(r.statusCode, 400)
  t.same(r.json(), { error: 'invalid_client_metadata', error_description: 'client_credentials may only be registered with the initial access token' })
})

t.test('the MCP SDK 2.x ClientCredentialsProvider: discovery, a token, a tools/call that sees the machine subject', async t => {
  const port = await freePort()
  const issuer = `http://127.0.0.1:${port}`
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  await app.register(mcpOAuth, {
    issuer,
    resources: [`${issuer}/mcp`],
    scopes: ['mcp:tools', 'mcp:admin'],
    clients: [MACHINE]
  })
  await app.register(mcpRoutes)
  await app.listen({ port, host: '127.0.0.1' })

  const provider = new ClientCredentialsProvider({ clientId: 'machine', clientSecret: SECRET, scope: 'mcp:tools', expectedIssuer: issuer })
  const client = new Client({ name: 'machine-e2e', version: '1.0.0' })
  const transport = new StreamableHTTPClientTransport(new URL(`${issuer}/mcp`), { authProvider: provider })
  t.teardown(() => client.close())
  await client.connect(transport)
  t.notOk('refresh_token' in (provider.tokens() ?? {}), 'no refresh token was issued')
  const who = await client.callTool({ name: 'whoami', arguments: {} })
  t.match(who.structuredContent, { subjectType: 'client', userId: 'machine', clientId: 'machine', scopes: ['mcp:tools'], resource: `${issuer}/mcp` })
})

await withRedisServer('client credentials on the Redis store', (server: RedisServer) => {
  t.test('the Redis store: the machine subject through the cache and without it; the grant expires with its token', async t => {
    const redis = new Redis(server.url)
    t.teardown(async () => { await redis.quit() })
    for (const cache of [undefined, false] as const) {
      const prefix = `cc-${cache === false ? 'nocache' : 'cache'}-${Date.now()}:`
      // One clock for the plugin and the store, which turns expiry times into key TTLs with it.
      const clock = new TestClock()
      const store = new RedisStore({ url: server.url, prefix, now: clock.now, ...(cache === false ? { cache } : {}) })
      const { app } = await machineApp(t, { store, now: clock.now })
      const res = await token(app, { grant_type: 'client_credentials', scope: 'mcp:tools' })
      t.equal(res.statusCode, 200)
      const access = res.json().access_token as string
      // Twice: the second answer may come from the local cache, which must keep the subject too.
      for (const round of [1, 2]) t.match((await mcp(app, access)).json().auth, { subjectType: 'client', userId: 'machine', clientId: 'machine' }, `round ${round}`)
      const kept = await store.getAccessToken(hashToken(access), clock.t)
      t.equal(kept?.subjectType, 'client')
      const grantKey = `${prefix}g:${kept?.grantId}`
      const pttl = await redis.pttl(grantKey)
      t.ok(pttl > 0 && pttl <= 3600_000, `the grant key lives as long as the token (${pttl} ms)`)
      t.same(await redis.keys(`${prefix}rt:*`), [], 'no refresh token key')
      t.same((await introspect(app, access, basic(RS.id, RS.secret))).json().subject_type, 'client')
      await app.inject({ method: 'POST', url: '/oauth/revoke', headers: { ...form, authorization: basic('machine', SECRET) }, payload: `token=${access}` })
      t.equal((await mcp(app, access)).statusCode, 401, 'revoked')
    }
  })
})
