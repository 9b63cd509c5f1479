import t from 'tap'
import Fastify from 'fastify'
import { mcpOAuth, MemoryStore } from '../lib/index.js'
import { generateToken } from '../lib/oauth/tokens.js'
import { buildApp, ISSUER, RESOURCE } from './helpers/app.js'

const PRM = `${ISSUER}/.well-known/oauth-protected-resource/mcp`

async function withToken (t: Parameters<typeof buildApp>[0], over: { scopes?: string[], resource?: string } = {}) {
  const ctx = await buildApp(t)
  const grant = await ctx.app.mcpOAuth.grants.createGrant({
    userId: 'user-42',
    email: 'ada@example.com',
    clientId: 'client-7',
    scopes: over.scopes ?? ['mcp:tools'],
    resource: over.resource ?? RESOURCE
  })
  const tokens = await ctx.app.mcpOAuth.grants.issueTokens(grant)
  return { ...ctx, grant, tokens }
}

t.test('no Authorization header: 401, challenge without error', async t => {
  const { app } = await buildApp(t)
  const res = await app.inject({ method: 'POST', url: '/mcp' })
  t.equal(res.statusCode, 401)
  t.equal(res.headers['www-authenticate'], `Bearer resource_metadata="${PRM}", scope="mcp:tools"`)
  t.equal(res.headers['cache-control'], 'no-store')
  t.notOk(res.json().error, 'no error code without credentials (RFC 6750 §3.1)')
})

t.test('another scheme counts as no token', async t => {
  const { app } = await buildApp(t)
  const res = await app.inject({ method: 'POST', url: '/mcp', headers: { authorization: 'Basic dXNlcjpwYXNz' } })
  t.equal(res.statusCode, 401)
  t.equal(res.headers['www-authenticate'], `Bearer resource_metadata="${PRM}", scope="mcp:tools"`)
})

t.test('malformed Bearer header: 400 invalid_request', async t => {
  const { app } = await buildApp(t)
  for (const authorization of ['Bearer', 'Bearer ', 'Bearer a b', 'Bearer ä', 'bearer "quoted"']) {
    const res = await app.inject({ method: 'POST', url: '/mcp', headers: { authorization } })
    t.equal(res.statusCode, 400, authorization)
    t.match(res.headers['www-authenticate'], /^Bearer error="invalid_request", error_description="[^"]+", resource_metadata="[^"]+", scope="mcp:tools"$/)
    t.equal(res.json().error, 'invalid_request')
  }
})

t.test('a token in the query string is refused even when valid', async t => {
  const { app, tokens } = await withToken(t)
  const res = await app.inject({ method: 'POST', url: `/mcp?access_token=${tokens.access_token}` })
  t.equal(res.statusCode, 400)
  t.equal(res.json().error, 'invalid_request')
  t.notMatch(res.body, tokens.access_token, 'the token is not echoed')
})

t.test('unknown token: 401 invalid_token with the exact challenge', async t => {
  const { app } = await buildApp(t)
  for (const token of [generateToken('accessToken'), 'not-one-of-ours', generateToken('refreshToken')]) {
    const res = await app.inject({ method: 'POST', url: '/mcp', headers: { authorization: `Bearer ${token}` } })
    t.equal(res.statusCode, 401)
    t.match(res.headers['www-authenticate'], new RegExp(`^Bearer error="invalid_token", error_description="[^"]+", resource_metadata="${PRM}", scope="mcp:tools"$`))
    t.equal(res.json().error, 'invalid_token')
    t.notMatch(res.body, token)
  }
})

t.test('expired token: valid until expiry, 401 from the expiry instant', async t => {
  const { app, clock, tokens } = await withToken(t)
  clock.advance(3600 * 1000 - 1)
  const ok = await app.inject({ method: 'POST', url: '/mcp', headers: { authorization: `Bearer ${tokens.access_token}` } })
  t.equal(ok.statusCode, 200)
  clock.advance(1)
  const res = await app.inject({ method: 'POST', url: '/mcp', headers: { authorization: `Bearer ${tokens.access_token}` } })
  t.equal(res.statusCode, 401)
  t.equal(res.headers['www-authenticate'],
    `Bearer error="invalid_token", error_description="The access token is unknown, expired or revoked", resource_metadata="${PRM}", scope="mcp:tools"`)
})

t.test('token for another resource: 401 invalid_token', async t => {
  const { app, tokens } = await withToken(t, { resource: 'https://auth.example.com/other' })
  const res = await app.inject({ method: 'POST', url: '/mcp', headers: { authorization: `Bearer ${tokens.access_token}` } })
  t.equal(res.statusCode, 401)
  t.equal(res.headers['www-authenticate'],
    `Bearer error="invalid_token", error_description="The access token was issued for another resource", resource_metadata="${PRM}", scope="mcp:tools"`)
})

t.test('missing scope: 403 insufficient_scope naming the needed scope', async t => {
  const { app, tokens } = await withToken(t)
  const res = await app.inject({ method: 'POST', url: '/mcp/admin', headers: { authorization: `Bearer ${tokens.access_token}` } })
  t.equal(res.statusCode, 403)
  t.equal(res.headers['www-authenticate'],
    `Bearer error="insufficient_scope", error_description="The access token lacks the scope mcp:admin", resource_metadata="${PRM}", scope="mcp:tools mcp:admin"`)
  t.equal(res.json().error, 'insufficient_scope')
})

t.test('success: request.mcpAuth holds the identity; scheme is case-insensitive', async t => {
  const { app, tokens, grant, clock } = await withToken(t, { scopes: ['mcp:tools', 'mcp:admin'] })
  for (const scheme of ['Bearer', 'bearer', 'BEARER', 'bEaReR', 'Bearer  ']) {
    const res = await app.inject({ method: 'POST', url: '/mcp/admin', headers: { authorization: `${scheme} ${tokens.access_token}` } })
    t.equal(res.statusCode, 200, scheme)
    t.same(res.json().auth, {
      subjectType: 'user',
      userId: 'user-42',
      email: 'ada@example.com',
      emailVerified: true,
      clientId: 'client-7',
      scopes: ['mcp:tools', 'mcp:admin'],
      resource: RESOURCE,
      expiresAt: Math.floor(clock.t / 1000) + 3600,
      grantId: grant.grantId
    })
  }
  const open = await app.inject('/open')
  t.same(open.json(), { auth: null }, 'mcpAuth is null where the guard does not run')
  // The token itself is case-sensitive: another case of it is a token this server never issued.
  const access = tokens.access_token as string
  for (const other of [access.toUpperCase(), 'MCPAT_' + access.slice(6), access + '=', access.slice(0, -1)]) {
    const res = await app.inject({ method: 'POST', url: '/mcp/admin', headers: { authorization: `Bearer ${other}` } })
    t.equal(res.statusCode, 401)
    t.equal(res.json().error_description, 'The access token is not one this server issued')
  }
})

t.test('a revoked grant stops its access tokens at the guard', async t => {
  const { app, tokens, grant } = await withToken(t)
  await app.mcpOAuth.storage.revokeGrant(grant.grantId)
  const res = await app.inject({ method: 'POST', url: '/mcp', headers: { authorization: `Bearer ${tokens.access_token}` } })
  t.equal(res.statusCode, 401)
})

t.test('storage failure: 503, retryable, never a 401 that would make the client drop its tokens', async t => {
  // Both lookups the guard can use: the promise one (a store doing I/O) and the in-process one.
  const broken = {
    async: (store: MemoryStore) => {
      Object.assign(store, { getAccessTokenNow: undefined })
      store.getAccessToken = async () => { throw new Error('connection refused') }
    },
    sync: (store: MemoryStore) => {
      store.getAccessTokenNow = () => { throw new Error('connection refused') }
    }
  }
  for (const [kind, breakIt] of Object.entries(broken)) {
    const store = new MemoryStore({ sweepIntervalMs: 0 })
    breakIt(store)
    const app = Fastify({ logger: false })
    t.teardown(() => app.close())
    await app.register(mcpOAuth, { issuer: ISSUER, resources: [RESOURCE], store })
    app.get('/mcp', { onRequest: app.mcpOAuth.authenticate() }, async () => 'ok')
    const res = await app.inject({ url: '/mcp', headers: { authorization: `Bearer ${generateToken('accessToken')}` } })
    t.equal(res.statusCode, 503, `${kind} lookup`)
    t.equal(res.headers['retry-after'], '1')
    t.equal(res.json().error, 'temporarily_unavailable')
  }
})

t.test('a store without the in-process lookup: the guard takes the promise path, same answers', async t => {
  const store = new MemoryStore({ sweepIntervalMs: 0 })
  Object.assign(store, { getAccessTokenNow: undefined })
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  await app.register(mcpOAuth, { issuer: ISSUER, resources: [RESOURCE], scopes: ['mcp:tools', 'mcp:admin'], store })
  app.get('/mcp', { onRequest: app.mcpOAuth.authenticate({ scopes: ['mcp:tools'] }) }, async (request) => request.mcpAuth?.userId)
  app.get('/admin', { onRequest: app.mcpOAuth.authenticate({ scopes: ['mcp:admin'] }) }, async () => 'admin')
  const grant = await app.mcpOAuth.grants.createGrant({ userId: 'u-async', clientId: 'c', scopes: ['mcp:tools'], resource: RESOURCE })
  const { access_token: token } = await app.mcpOAuth.grants.issueTokens(grant)
  const ok = await app.inject({ url: '/mcp', headers: { authorization: `Bearer ${token}` } })
  t.equal(ok.statusCode, 200)
  t.equal(ok.body, 'u-async')
  t.equal((await app.inject({ url: '/admin', headers: { authorization: `Bearer ${token}` } })).statusCode, 403)
  const unknown = await app.inject({ url: '/mcp', headers: { authorization: `Bearer ${generateToken('accessToken')}` } })
  t.equal(unknown.statusCode, 401)
  t.match(unknown.headers['www-authenticate'], /error="invalid_token"/)
})

t.test('a route without required scopes advertises the resource scopes', async t => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(mcpOAuth, { issuer: ISSUER, resources: [RESOURCE], scopes: ['a', 'b'] })
  app.get('/mcp', { onRequest: app.mcpOAuth.authenticate() }, async () => 'ok')
  const res = await app.inject('/mcp')
  t.equal(res.headers['www-authenticate'], `Bearer resource_metadata="${PRM}", scope="a b"`)
})

t.test('clock skew allowance: access tokens accepted that long past expiry, not longer', async t => {
  const ctx = await buildApp(t, { clockSkewSeconds: 30 })
  const grant = await ctx.app.mcpOAuth.grants.createGrant({ userId: 'u', clientId: 'c', scopes: ['mcp:tools'], resource: RESOURCE })
  const tokens = await ctx.app.mcpOAuth.grants.issueTokens(grant)
  ctx.clock.advance(3600_000 + 29_999)
  t.equal((await ctx.app.inject({ method: 'POST', url: '/mcp', headers: { authorization: `Bearer ${tokens.access_token}` } })).statusCode, 200)
  ctx.clock.advance(1)
  t.equal((await ctx.app.inject({ method: 'POST', url: '/mcp', headers: { authorization: `Bearer ${tokens.access_token}` } })).statusCode, 401)
})
