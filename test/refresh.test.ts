import t from 'tap'
import { buildApp, RESOURCE } from './helpers/app.js'
import type { TestApp } from './helpers/app.js'
import { hashToken, looksLike } from '../lib/oauth/tokens.js'

const PUBLIC = { client_id: 'public-app', redirect_uris: ['http://127.0.0.1/cb'] }
const SECRET = 'confidential-secret-0123456789abcdef'
const CONFIDENTIAL = { client_id: 'web-app', client_secret: SECRET, redirect_uris: ['https://web.example.com/cb'] }
const RS = { id: 'resource-server', secret: 'rs-secret-rs-secret-rs-secret-rs-secret' }
const basic = (id: string, secret: string) => `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`

async function setup (t: Parameters<typeof buildApp>[0], opts: Parameters<typeof buildApp>[1] = {}) {
  const ctx = await buildApp(t, { clients: [PUBLIC, CONFIDENTIAL], introspection: { resourceServers: [RS] }, ...opts })
  return ctx
}

async function issue (ctx: TestApp, clientId = PUBLIC.client_id, scopes = ['mcp:tools', 'mcp:admin']) {
  const grant = await ctx.app.mcpOAuth.grants.createGrant({ userId: 'u-1', email: 'u@example.com', clientId, scopes, resource: RESOURCE })
  return { grant, tokens: await ctx.app.mcpOAuth.grants.issueTokens(grant) }
}

async function refresh (ctx: TestApp, refreshToken: string, extra: Record<string, string> = {}, headers: Record<string, string> = {}) {
  const res = await ctx.app.inject({
    method: 'POST',
    url: '/oauth/token',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    payload: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken, client_id: PUBLIC.client_id, ...extra }).toString()
  })
  return { status: res.statusCode, body: res.json() as Record<string, string>, headers: res.headers }
}

async function call (ctx: TestApp, accessToken: string) {
  return (await ctx.app.inject({ method: 'POST', url: '/mcp', headers: { authorization: `Bearer ${accessToken}` } })).statusCode
}

t.test('rotation chain of 10: every use rotates, every pair works, old access tokens live on', async t => {
  const ctx = await setup(t)
  const { tokens } = await issue(ctx)
  let current = tokens.refresh_token
  const seen = new Set([current])
  const access = [tokens.access_token]
  for (let i = 0; i < 10; i++) {
    ctx.clock.advance(60_000)
    const r = await refresh(ctx, current)
    t.equal(r.status, 200, `refresh ${i + 1}`)
    t.equal(r.headers['cache-control'], 'no-store')
    t.match(r.body, { access_token: /^mcpat_/, refresh_token: /^mcprt_/, token_type: 'Bearer', expires_in: 3600, scope: 'mcp:tools mcp:admin' })
    t.notOk(seen.has(r.body.refresh_token as string), 'a new refresh token every time')
    seen.add(r.body.refresh_token as string)
    current = r.body.refresh_token as string
    access.push(r.body.access_token as string)
  }
  for (const a of access) t.equal(await call(ctx, a), 200)
})

t.test('replay after the grace window revokes the whole family', async t => {
  const ctx = await setup(t)
  const events: string[] = []
  const ctx2 = await setup(t, { auditSink: (e) => { events.push(e) } })
  for (const c of [ctx, ctx2]) {
    const { tokens } = await issue(c)
    const first = await refresh(c, tokens.refresh_token)
    const second = await refresh(c, first.body.refresh_token as string)
    c.clock.advance(61_000)
    const replay = await refresh(c, tokens.refresh_token)
    t.equal(replay.status, 400)
    t.equal(replay.body.error, 'invalid_grant')
    for (const a of [tokens.access_token, first.body.access_token, second.body.access_token]) t.equal(await call(c, a as string), 401, 'family access tokens dead at the guard')
    t.equal((await refresh(c, second.body.refresh_token as string)).body.error, 'invalid_grant', 'newest refresh token dead too')
  }
  t.ok(events.includes('refresh_reuse'), 'audited')
})

t.test('grace window: a repeated refresh gets the same successor pair', async t => {
  const ctx = await setup(t, { refreshGraceSeconds: 5 })
  const { tokens } = await issue(ctx)
  const a = await refresh(ctx, tokens.refresh_token)
  ctx.clock.advance(5000)
  const b = await refresh(ctx, tokens.refresh_token)
  t.equal(b.status, 200)
  t.same({ ...b.body, expires_in: a.body.expires_in }, a.body, 'identical pair')
  t.equal(a.body.expires_in, 3600)
  t.equal(b.body.expires_in, 3595, 'the same access token, five seconds older: expires_in says so')
  t.equal(await call(ctx, b.body.access_token as string), 200)
  const next = await refresh(ctx, b.body.refresh_token as string)
  t.equal(next.status, 200, 'the family continues')
  ctx.clock.advance(1)
  const late = await refresh(ctx, tokens.refresh_token)
  t.equal(late.body.error, 'invalid_grant', 'outside the window: reuse')
})

t.test('grace window: the replayed access token gone (revoked alone, expired) is said with expires_in 0', async t => {
  const ctx = await setup(t)
  const { tokens } = await issue(ctx)
  const a = await refresh(ctx, tokens.refresh_token)
  await ctx.app.mcpOAuth.storage.deleteAccessToken(hashToken(a.body.access_token as string))
  ctx.clock.advance(1000)
  const b = await refresh(ctx, tokens.refresh_token)
  t.equal(b.status, 200)
  t.equal(b.body.refresh_token, a.body.refresh_token, 'the same pair')
  t.equal(b.body.expires_in, 0, 'whose access token no longer works')
  t.equal(await call(ctx, b.body.access_token as string), 401)
  t.equal((await refresh(ctx, b.body.refresh_token as string)).status, 200, 'its refresh token still does')
})

t.test('what the store keeps of a successor cannot rebuild it, and a tampered one means reuse', async t => {
  const ctx = await setup(t)
  const { tokens } = await issue(ctx)
  const a = await refresh(ctx, tokens.refresh_token, { scope: 'mcp:tools' })
  t.ok(looksLike('accessToken', a.body.access_token as string) && looksLike('refreshToken', a.body.refresh_token as string), 'derived tokens have the usual shape')
  const store = ctx.app.mcpOAuth.storage
  const rotated = await store.getRefreshToken(hashToken(tokens.refresh_token), ctx.clock.now())
  const info = rotated?.successor as string
  t.match(info, /^[A-Za-z0-9_-]{22} mcp:tools$/, 'a salt and the narrowed scope, nothing more')
  for (const secret of [a.body.access_token, a.body.refresh_token] as string[]) {
    t.notOk(info.includes(secret.slice(6, 20)), 'no part of a successor token is stored')
  }
  const b = await refresh(ctx, tokens.refresh_token)
  t.same(b.body, a.body, 'the grace replay rebuilds the same pair, narrowed scope included')

  // A store whose successor field was damaged (or written by something else): reuse, not a crash.
  for (const bad of ['', 'no-space-here', 'short scope', `${'A'.repeat(22)}`]) {
    const fresh = (await issue(ctx)).tokens
    const first = await refresh(ctx, fresh.refresh_token)
    t.equal(first.status, 200)
    const record = await store.getRefreshToken(hashToken(fresh.refresh_token), ctx.clock.now())
    await store.saveRefreshToken(hashToken(fresh.refresh_token), { ...record!, successor: bad })
    const replay = await refresh(ctx, fresh.refresh_token)
    t.equal(replay.status, 400, `successor ${JSON.stringify(bad)}: refused`)
    t.equal(replay.body.error, 'invalid_grant')
    t.equal(await call(ctx, first.body.access_token as string), 401, 'and the family is revoked')
  }
})

t.test('grace window 0: any replay revokes', async t => {
  const ctx = await setup(t, { refreshGraceSeconds: 0 })
  const { tokens } = await issue(ctx)
  const a = await refresh(ctx, tokens.refresh_token)
  t.equal((await refresh(ctx, tokens.refresh_token)).body.error, 'invalid_grant')
  t.equal(await call(ctx, a.body.access_token as string), 401)
})

t.test('20 concurrent refreshes with one token: one family, no 5xx, every answer usable or invalid_grant', async t => {
  for (const grace of [5, 0]) {
    const ctx = await setup(t, { refreshGraceSeconds: grace })
    const { grant, tokens } = await issue(ctx)
    const results = await Promise.all(Array.from({ length: 20 }, () => refresh(ctx, tokens.refresh_token)))
    t.notOk(results.some(r => r.status >= 500), `grace ${grace}: no 5xx`)
    const ok = results.filter(r => r.status === 200)
    t.ok(results.every(r => r.status === 200 || r.body.error === 'invalid_grant'), `grace ${grace}: pair or invalid_grant`)
    const pairs = new Set(ok.map(r => r.body.refresh_token))
    t.ok(pairs.size <= 1, `grace ${grace}: never two diverging successors`)
    const live = await ctx.app.mcpOAuth.storage.listGrants({ userId: 'u-1' }, ctx.clock.t)
    if (grace > 0) {
      t.equal(ok.length, 20, 'all callers inside the window get the pair')
      t.same(live, [grant.grantId], 'exactly one family continues')
      t.equal((await refresh(ctx, ok[0]?.body.refresh_token as string)).status, 200)
    } else {
      t.ok(ok.length <= 1)
    }
  }
})

t.test('binding: another client, scopes only narrow, resource stays, confidential clients authenticate', async t => {
  const ctx = await setup(t)
  const { tokens } = await issue(ctx)
  const other = await refresh(ctx, tokens.refresh_token, { client_id: 'web-app' }, { authorization: basic('web-app', SECRET) })
  t.equal(other.body.error, 'invalid_grant', 'another client\'s refresh token')
  t.equal((await refresh(ctx, tokens.refresh_token, { scope: 'mcp:tools root' })).body.error, 'invalid_scope', 'cannot widen')
  t.equal((await refresh(ctx, tokens.refresh_token, { resource: 'https://auth.example.com/other' })).body.error, 'invalid_target')
  const narrowed = await refresh(ctx, tokens.refresh_token, { scope: 'mcp:tools' })
  t.equal(narrowed.body.scope, 'mcp:tools')
  const wide = await refresh(ctx, narrowed.body.refresh_token as string)
  t.equal(wide.body.scope, 'mcp:tools mcp:admin', 'the refresh token keeps the grant\'s scopes')

  const conf = await issue(ctx, 'web-app')
  const unauth = await refresh(ctx, conf.tokens.refresh_token, { client_id: 'web-app' })
  t.equal(unauth.status, 401)
  t.equal(unauth.body.error, 'invalid_client')
  const authed = await refresh(ctx, conf.tokens.refresh_token, { client_id: 'web-app' }, { authorization: basic('web-app', SECRET) })
  t.equal(authed.status, 200)
  const post = await refresh(ctx, authed.body.refresh_token as string, { client_id: 'web-app', client_secret: SECRET })
  t.equal(post.body.error, 'invalid_client', 'only the registered method (client_secret_basic)')
  t.equal((await refresh(ctx, 'not-a-token')).body.error, 'invalid_grant')
  const missing = await ctx.app.inject({ method: 'POST', url: '/oauth/token', payload: { grant_type: 'refresh_token', client_id: PUBLIC.client_id } })
  t.equal(missing.json().error, 'invalid_request')
})

t.test('expiry at each boundary', async t => {
  const ctx = await setup(t, { ttl: { accessToken: 60, refreshToken: 600, grant: 1000, code: 60, flow: 600 } })
  const { tokens } = await issue(ctx)
  ctx.clock.advance(59_999)
  t.equal(await call(ctx, tokens.access_token), 200)
  ctx.clock.advance(1)
  t.equal(await call(ctx, tokens.access_token), 401, 'access token dead at 60 s')
  ctx.clock.advance(600_000 - 60_000 - 1)
  const r1 = await refresh(ctx, tokens.refresh_token)
  t.equal(r1.status, 200, 'refresh alive until its idle lifetime')
  ctx.clock.advance(600_000)
  t.equal((await refresh(ctx, r1.body.refresh_token as string)).body.error, 'invalid_grant', 'idle lifetime over')

  const second = await issue(ctx)
  let current = second.tokens.refresh_token
  for (let i = 1; i <= 3; i++) {
    ctx.clock.advance(300_000)
    const r = await refresh(ctx, current)
    t.equal(r.status, 200, `used at ${i * 300} s`)
    current = r.body.refresh_token as string
  }
  ctx.clock.advance(99_999)
  t.equal((await refresh(ctx, current)).status, 200, 'alive until the last millisecond of the grant')
  ctx.clock.advance(1)
  const end = await ctx.app.inject({
    method: 'POST', url: '/oauth/token', payload: { grant_type: 'refresh_token', refresh_token: current, client_id: PUBLIC.client_id }
  })
  t.equal(end.json().error, 'invalid_grant', 'absolute grant lifetime (1000 s) over despite use')
})

t.test('an access token never outlives its grant (first issue and rotation)', async t => {
  const ctx = await setup(t, { ttl: { accessToken: 600, refreshToken: 1000, grant: 1000 } })
  const { tokens } = await issue(ctx)
  t.equal(tokens.expires_in, 600)
  ctx.clock.advance(700_000)
  const r = await refresh(ctx, tokens.refresh_token)
  t.equal(r.status, 200)
  t.equal(r.body.expires_in, 300, 'the grant has 300 s left: so has the access token')
  ctx.clock.advance(299_999)
  t.equal(await call(ctx, r.body.access_token as string), 200)
  ctx.clock.advance(1)
  t.equal(await call(ctx, r.body.access_token as string), 401, 'dead with its grant, in the memory store as in Redis')
  const late = await ctx.app.mcpOAuth.grants.createGrant({ userId: 'u-2', clientId: PUBLIC.client_id, scopes: ['mcp:tools'], resource: RESOURCE })
  ctx.clock.advance(999_500)
  const tail = await ctx.app.mcpOAuth.grants.issueTokens(late)
  t.equal(tail.expires_in, 0, 'half a second left: expires_in rounds down, never negative')
})

t.test('revocation (RFC 7009)', async t => {
  const ctx = await setup(t)
  const revoke = (body: Record<string, string>, headers: Record<string, string> = {}) => ctx.app.inject({
    method: 'POST', url: '/oauth/revoke', headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, payload: new URLSearchParams(body).toString()
  })
  const a = await issue(ctx)
  let res = await revoke({ token: a.tokens.access_token, client_id: PUBLIC.client_id })
  t.equal(res.statusCode, 200)
  t.equal(await call(ctx, a.tokens.access_token), 401, 'access token revoked')
  t.equal((await refresh(ctx, a.tokens.refresh_token)).status, 200, 'its refresh token lives on')

  const b = await issue(ctx)
  const b2 = await refresh(ctx, b.tokens.refresh_token)
  res = await revoke({ token: b2.body.refresh_token as string, token_type_hint: 'access_token', client_id: PUBLIC.client_id })
  t.equal(res.statusCode, 200, 'a wrong hint is only a hint')
  t.equal(await call(ctx, b2.body.access_token as string), 401, 'revoking the refresh token revokes the family')

  const c = await issue(ctx)
  res = await revoke({ token: c.tokens.refresh_token, client_id: 'web-app' }, { authorization: basic('web-app', SECRET) })
  t.equal(res.statusCode, 400)
  t.equal(res.json().error, 'unauthorized_client', 'another client cannot revoke it')
  t.equal(await call(ctx, c.tokens.access_token), 200)

  res = await revoke({ token: 'mcprt_' + 'Z'.repeat(43), client_id: PUBLIC.client_id })
  t.equal(res.statusCode, 200, 'unknown tokens answer 200')
  res = await revoke({ token: 'whatever', client_id: PUBLIC.client_id, token_type_hint: 'id_token' })
  t.equal(res.json().error, 'unsupported_token_type')
  res = await revoke({ token: c.tokens.access_token })
  t.equal(res.statusCode, 401, 'client authentication required')
})

t.test('introspection (RFC 7662)', async t => {
  const ctx = await setup(t)
  const introspect = (token: string, headers: Record<string, string>) => ctx.app.inject({
    method: 'POST', url: '/oauth/introspect', headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, payload: new URLSearchParams({ token }).toString()
  })
  const { tokens } = await issue(ctx)
  const now = Math.floor(ctx.clock.t / 1000)
  let res = await introspect(tokens.access_token, { authorization: basic(RS.id, RS.secret) })
  t.equal(res.statusCode, 200)
  t.same(res.json(), {
    active: true,
    scope: 'mcp:tools mcp:admin',
    client_id: PUBLIC.client_id,
    sub: 'u-1',
    subject_type: 'user',
    aud: RESOURCE,
    iss: 'https://auth.example.com',
    exp: now + 3600,
    iat: now,
    token_type: 'Bearer'
  })
  res = await introspect(tokens.refresh_token, { authorization: basic(RS.id, RS.secret) })
  t.equal(res.json().token_type, 'refresh_token')
  res = await introspect('mcpat_' + 'Q'.repeat(43), { authorization: basic(RS.id, RS.secret) })
  t.same(res.json(), { active: false })
  res = await introspect(tokens.access_token, { authorization: basic('web-app', SECRET) })
  t.same(res.json(), { active: false }, 'a confidential client sees only its own tokens')
  res = await introspect(tokens.access_token, { authorization: basic(RS.id, 'wrong-wrong-wrong-wrong-wrong-wrong') })
  t.equal(res.statusCode, 401)
  res = await ctx.app.inject({ method: 'POST', url: '/oauth/introspect', payload: { token: tokens.access_token, client_id: PUBLIC.client_id } })
  t.equal(res.statusCode, 401, 'public clients may not introspect')
  ctx.clock.advance(3600_000)
  res = await introspect(tokens.access_token, { authorization: basic(RS.id, RS.secret) })
  t.same(res.json(), { active: false }, 'expired')
})

t.test('sign out everywhere: revokeUser and revokeClient', async t => {
  const ctx = await setup(t)
  const a = await issue(ctx)
  const b = await issue(ctx, 'web-app')
  t.equal(await ctx.app.mcpOAuth.revokeClient('web-app'), 1)
  t.equal(await call(ctx, b.tokens.access_token), 401)
  t.equal(await call(ctx, a.tokens.access_token), 200)
  t.equal(await ctx.app.mcpOAuth.revokeUser('u-1'), 1)
  t.equal(await call(ctx, a.tokens.access_token), 401)
  t.equal(await ctx.app.mcpOAuth.revokeUser('u-1'), 0)
})
