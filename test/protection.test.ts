import t from 'tap'
import Fastify from 'fastify'
import { setTimeout as sleep } from 'node:timers/promises'
import { mcpOAuth, type AuditEventName } from '../lib/index.js'
import { buildApp, ISSUER, RESOURCE } from './helpers/app.js'
import { Auditor } from '../lib/security/audit.js'

const CLIENT = { client_id: 'app', redirect_uris: ['https://app.example.com/cb'] }
const budget = { max: 2, windowSeconds: 1 }
const limits = { metadata: budget, authorize: budget, token: budget, register: budget, revocation: budget, mcp: budget }

t.test('each endpoint limit trips at its budget, answers in the OAuth shape, and resets', async t => {
  const events: Array<{ event: string, fields: unknown }> = []
  const { app } = await buildApp(t, {
    clients: [CLIENT],
    registration: { mode: 'public' },
    rateLimit: limits,
    auditSink: (event, fields) => { events.push({ event, fields }) }
  })
  const requests: Array<[string, () => Promise<{ statusCode: number, headers: Record<string, unknown>, json: () => { error?: string } }>]> = [
    ['metadata', () => app.inject('/.well-known/oauth-authorization-server')],
    ['authorize', () => app.inject('/oauth/authorize?client_id=app')],
    ['token', () => app.inject({ method: 'POST', url: '/oauth/token', payload: { grant_type: 'refresh_token', client_id: 'app', refresh_token: 'x' } })],
    ['register', () => app.inject({ method: 'POST', url: '/oauth/register', payload: { redirect_uris: ['javascript:x'] } })],
    ['revoke', () => app.inject({ method: 'POST', url: '/oauth/revoke', payload: { token: 'x', client_id: 'app' } })]
  ]
  for (const [name, send] of requests) {
    for (let i = 0; i < 2; i++) t.not((await send()).statusCode, 429, `${name}: request ${i + 1} within budget`)
    const limited = await send()
    t.equal(limited.statusCode, 429, `${name}: third request limited`)
    if (name === 'authorize') {
      t.match(limited.headers['content-type'], /^text\/html/, 'authorize: a page for the browser, not JSON')
      t.match(limited.headers['content-security-policy'], /default-src 'none'/)
      t.match((limited as unknown as { body: string }).body, /Too many requests/)
    } else {
      t.equal(limited.json().error, 'temporarily_unavailable', `${name}: OAuth error shape`)
    }
    t.ok(limited.headers['retry-after'], `${name}: Retry-After`)
    t.equal(limited.headers['ratelimit-limit'], '2', `${name}: RateLimit headers`)
    t.equal(limited.headers['ratelimit-remaining'], '0')
  }
  t.ok(events.some(e => e.event === 'rate_limited'), 'audited')
  await sleep(1100)
  for (const [name, send] of requests) t.not((await send()).statusCode, 429, `${name}: budget restored after the window`)
})

t.test('per-user limit on guarded routes is keyed by the user, not the address', async t => {
  const { app } = await buildApp(t, { rateLimit: { mcp: { max: 3, windowSeconds: 60 } } })
  const mint = async (userId: string) => {
    const grant = await app.mcpOAuth.grants.createGrant({ userId, clientId: 'c', scopes: ['mcp:tools'], resource: RESOURCE })
    return (await app.mcpOAuth.grants.issueTokens(grant)).access_token
  }
  const alice = await mint('alice')
  const alice2 = await mint('alice')
  const bob = await mint('bob')
  const call = (token: string) => app.inject({ method: 'POST', url: '/mcp', headers: { authorization: `Bearer ${token}` } })
  for (let i = 0; i < 3; i++) t.equal((await call(i % 2 === 0 ? alice : alice2)).statusCode, 200)
  const limited = await call(alice2)
  t.equal(limited.statusCode, 429, 'alice is limited across her tokens')
  t.equal(limited.json().error, 'temporarily_unavailable')
  t.ok(limited.headers['retry-after'])
  t.equal((await call(bob)).statusCode, 200, 'bob, same address, is not')
  t.equal((await app.inject({ method: 'POST', url: '/mcp' })).statusCode, 401, 'unauthenticated requests never reach the user limiter')
})

t.test('client address: a spoofed X-Forwarded-For does not escape the limit unless proxies are trusted', async t => {
  for (const trustProxy of [false, true]) {
    const app = Fastify({ trustProxy })
    t.teardown(() => app.close())
    await app.register(mcpOAuth, { issuer: ISSUER, resources: [RESOURCE], rateLimit: { metadata: { max: 2, windowSeconds: 60 } } })
    const statuses: number[] = []
    for (let i = 0; i < 4; i++) {
      const res = await app.inject({ url: '/.well-known/oauth-authorization-server', headers: { 'x-forwarded-for': `203.0.113.${i}` } })
      statuses.push(res.statusCode)
    }
    if (trustProxy) t.same(statuses, [200, 200, 200, 200], 'behind a trusted proxy each forwarded client has its own budget')
    else t.same(statuses, [200, 200, 429, 429], 'without trust the header is ignored')
  }
})

t.test('CORS: listed origins only, preflight on browser-facing endpoints, Vary: Origin', async t => {
  const { app } = await buildApp(t, { cors: { origins: ['https://inspector.example.com'] }, registration: { mode: 'public' } })
  const allowed = await app.inject({ url: '/.well-known/oauth-authorization-server', headers: { origin: 'https://inspector.example.com' } })
  t.equal(allowed.headers['access-control-allow-origin'], 'https://inspector.example.com')
  t.match(String(allowed.headers.vary), /Origin/)
  const refused = await app.inject({ url: '/.well-known/oauth-authorization-server', headers: { origin: 'https://evil.example.com' } })
  t.notOk(refused.headers['access-control-allow-origin'])
  for (const url of ['/oauth/token', '/oauth/register', '/oauth/revoke', '/.well-known/oauth-protected-resource/mcp', '/mcp']) {
    const pre = await app.inject({
      method: 'OPTIONS',
      url,
      headers: { origin: 'https://inspector.example.com', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' }
    })
    t.equal(pre.statusCode, 204, `preflight ${url}`)
    t.equal(pre.headers['access-control-allow-origin'], 'https://inspector.example.com')
    t.match(String(pre.headers['access-control-allow-headers']), /authorization/)
  }
  for (const headers of [{}, { origin: 'https://inspector.example.com' }, { 'access-control-request-method': 'POST' }]) {
    const plain = await app.inject({ method: 'OPTIONS', url: '/oauth/token', headers })
    t.equal(plain.statusCode, 204, `OPTIONS with ${JSON.stringify(headers)}: an answer, not a plain-text 400`)
    if (!('origin' in headers)) t.notOk(plain.headers['access-control-allow-origin'], 'no origin, no grant')
  }
  const mcp = await app.inject({ method: 'POST', url: '/mcp', headers: { origin: 'https://inspector.example.com' } })
  t.equal(mcp.headers['access-control-allow-origin'], 'https://inspector.example.com')
  t.match(String(mcp.headers['access-control-expose-headers']), /www-authenticate/, 'clients can read the challenge')
  const page = await app.inject({ url: '/oauth/authorize', headers: { origin: 'https://inspector.example.com' } })
  t.notOk(page.headers['access-control-allow-origin'], 'browser navigations get no CORS')
  const off = await buildApp(t)
  const none = await off.app.inject({ url: '/.well-known/oauth-authorization-server', headers: { origin: 'https://inspector.example.com' } })
  t.notOk(none.headers['access-control-allow-origin'], 'off by default')
})

t.test('CORS "*" needs saying and is logged; bad origins are refused at start-up', async t => {
  const warnings: string[] = []
  const { app } = await buildApp(t, { cors: { origins: '*' }, auditSink: (e, f) => { if (e === 'config_weakened') warnings.push((f as { setting: string }).setting) } })
  const res = await app.inject({ url: '/.well-known/oauth-authorization-server', headers: { origin: 'https://any.example.com' } })
  t.equal(res.headers['access-control-allow-origin'], '*')
  t.ok(warnings.some(w => /cors\.origins is "\*"/.test(w)))
  const bad = Fastify()
  t.teardown(() => bad.close())
  await t.rejects(async () => {
    await bad.register(mcpOAuth, { issuer: ISSUER, resources: [RESOURCE], cors: { origins: ['https://a.example.com/path'] } })
  }, /cors\.origins\[0\]/)
})

t.test('security headers on every OAuth response', async t => {
  const { app } = await buildApp(t, { clients: [CLIENT], registration: { mode: 'public' } })
  const responses = await Promise.all([
    app.inject('/.well-known/oauth-authorization-server'),
    app.inject('/.well-known/oauth-protected-resource/mcp'),
    app.inject('/oauth/authorize'),
    app.inject('/oauth/callback?state=x'),
    app.inject({ method: 'POST', url: '/oauth/consent', payload: {} }),
    app.inject({ method: 'POST', url: '/oauth/token', payload: {} }),
    app.inject({ method: 'POST', url: '/oauth/register', payload: {} }),
    app.inject({ method: 'POST', url: '/oauth/revoke', payload: {} }),
    app.inject({ method: 'POST', url: '/oauth/introspect', payload: {} })
  ])
  for (const res of responses) {
    const where = `${res.raw.req.method} ${res.raw.req.url} -> ${res.statusCode}`
    t.equal(res.headers['x-content-type-options'], 'nosniff', where)
    t.equal(res.headers['referrer-policy'], 'no-referrer', where)
    t.equal(res.headers['strict-transport-security'], 'max-age=31536000', `${where}: HSTS for an https issuer`)
    t.ok(res.headers['cache-control'], where)
    t.ok(res.statusCode < 500, where)
  }
  const local = Fastify()
  t.teardown(() => local.close())
  await local.register(mcpOAuth, { issuer: 'http://127.0.0.1:3000', resources: ['http://127.0.0.1:3000/mcp'] })
  t.notOk((await local.inject('/.well-known/oauth-authorization-server')).headers['strict-transport-security'], 'no HSTS over http')
  const big = await app.inject({ method: 'POST', url: '/oauth/token', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: 'a=' + 'x'.repeat(70 * 1024) })
  t.equal(big.statusCode, 413, 'body limit')
  t.equal(big.json().error, 'invalid_request')
})

t.test('audit: events are emitted once, with their fields, and never a secret', async t => {
  const seen: Array<{ event: AuditEventName, fields: Record<string, unknown> }> = []
  const { app, clock } = await buildApp(t, {
    clients: [{ client_id: 'app', redirect_uris: ['http://127.0.0.1/cb'] }],
    registration: { mode: 'public' },
    auditSink: (event, fields) => { seen.push({ event, fields: fields as Record<string, unknown> }) }
  })
  const grant = await app.mcpOAuth.grants.createGrant({ userId: 'user-9', clientId: 'app', scopes: ['mcp:tools'], resource: RESOURCE })
  const tokens = await app.mcpOAuth.grants.issueTokens(grant)
  const refresh = (token: string) => app.inject({ method: 'POST', url: '/oauth/token', payload: { grant_type: 'refresh_token', refresh_token: token, client_id: 'app' } })
  const r1 = (await refresh(tokens.refresh_token)).json()
  clock.advance(61_000)
  await refresh(tokens.refresh_token)
  const reg = (await app.inject({ method: 'POST', url: '/oauth/register', payload: { redirect_uris: ['http://127.0.0.1/x'], token_endpoint_auth_method: 'none' } })).json()
  await app.inject({ method: 'DELETE', url: `/oauth/register/${reg.client_id as string}`, headers: { authorization: `Bearer ${reg.registration_access_token as string}` } })
  await app.inject('/oauth/authorize?client_id=app&redirect_uri=https://evil.example.com/')
  const count = (e: AuditEventName) => seen.filter(s => s.event === e).length
  t.equal(count('token_refreshed'), 1)
  t.same(seen.find(s => s.event === 'token_refreshed')?.fields, { clientId: 'app', userId: 'user-9', grantId: grant.grantId })
  t.equal(count('refresh_reuse'), 1)
  t.same(seen.find(s => s.event === 'refresh_reuse')?.fields, { clientId: 'app', grantId: grant.grantId })
  t.equal(seen.filter(s => s.event === 'client_registered' && s.fields.source === 'dcr').length, 1)
  t.same(seen.find(s => s.event === 'client_registered' && s.fields.source === 'static')?.fields, { clientId: 'app', source: 'static' }, 'configured clients are reported at start-up')
  t.equal(count('client_deleted'), 1)
  t.equal(count('invalid_redirect'), 1)
  const all = JSON.stringify(seen)
  for (const secret of [tokens.access_token, tokens.refresh_token, r1.access_token, r1.refresh_token, reg.registration_access_token]) {
    t.notMatch(all, String(secret), 'no secret in audit events')
  }
})

t.test('the default audit sink logs a stable event field and hashes user ids', async t => {
  const lines: Array<Record<string, unknown>> = []
  const app = Fastify({ logger: { level: 'info', stream: { write: (s: string) => { lines.push(JSON.parse(s)) } } } })
  t.teardown(() => app.close())
  await app.register(mcpOAuth, { issuer: ISSUER, resources: [RESOURCE], clients: [{ client_id: 'app', redirect_uris: ['http://127.0.0.1/cb'] }] })
  const grant = await app.mcpOAuth.grants.createGrant({ userId: 'alice@example.com', clientId: 'app', scopes: ['mcp:tools'], resource: RESOURCE })
  const tokens = await app.mcpOAuth.grants.issueTokens(grant)
  await app.inject({ method: 'POST', url: '/oauth/token', payload: { grant_type: 'refresh_token', refresh_token: tokens.refresh_token, client_id: 'app' } })
  const line = lines.find(l => l.event === 'token_refreshed')
  t.ok(line)
  t.equal(line?.level, 30, 'info')
  t.notMatch(JSON.stringify(lines), 'alice@example.com', 'no user id in clear')
  t.match(line?.userId, /^[A-Za-z0-9_-]{16}$/)
  t.ok(lines.some(l => l.event === 'config_weakened' && l.level === 40), 'weakened settings at warn')
})

t.test('the default audit sink skips only a logger method that provably does nothing', async t => {
  const calls: string[] = []
  // One real function for every level (a logger that routes all of them to one place): always called.
  const shared = function log (obj: object) { calls.push((obj as { event: string }).event) }
  const routed = new Auditor({ debug: shared, info: shared, warn: shared })
  routed.emit('token_refreshed', { clientId: 'c', userId: 'u', grantId: 'g' })
  routed.emit('pkce_failure', { clientId: 'c' })
  t.same(calls, ['token_refreshed', 'pkce_failure'])
  // Fastify's logger with `logger: false`: its methods are empty functions; the line is not even built.
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  let built = 0
  const quiet = new Auditor(app.log)
  quiet.subscribe(() => { built++ })
  quiet.emit('token_refreshed', { clientId: 'c', get userId () { calls.push('hashed'); return 'u' }, grantId: 'g' })
  t.equal(built, 1, 'listeners still get the event')
  t.notOk(calls.includes('hashed'), 'nothing built for a method that does nothing')
  const arrow = new Auditor({ debug: () => {}, info: () => { calls.push('arrow') }, warn: () => {} })
  arrow.emit('token_refreshed', { clientId: 'c', userId: 'u', grantId: 'g' })
  t.ok(calls.includes('arrow'), 'anything but a plain empty function is called')
})

t.test('guessing tokens at a guarded route is limited per address', async t => {
  const { app } = await buildApp(t, { rateLimit: { mcp: { max: 3, windowSeconds: 60 } } })
  const statuses: number[] = []
  for (let i = 0; i < 5; i++) {
    const res = await app.inject({ method: 'POST', url: '/mcp', headers: { authorization: `Bearer mcpat_${'A'.repeat(42)}${i}` } })
    statuses.push(res.statusCode)
  }
  t.same(statuses, [401, 401, 401, 429, 429])
  const grant = await app.mcpOAuth.grants.createGrant({ userId: 'u', clientId: 'c', scopes: ['mcp:tools'], resource: RESOURCE })
  const good = (await app.mcpOAuth.grants.issueTokens(grant)).access_token
  t.equal((await app.inject({ method: 'POST', url: '/mcp', headers: { authorization: `Bearer ${good}` } })).statusCode, 200, 'a valid token is counted for its user, not the address')
})

t.test('browser routes answer what they throw with a page, never JSON or a stack', async t => {
  const { app } = await buildApp(t, { clients: [CLIENT] })
  const tooBig = await app.inject({ method: 'POST', url: '/oauth/consent', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: 'a=' + 'x'.repeat(70 * 1024) })
  t.equal(tooBig.statusCode, 413)
  t.match(tooBig.headers['content-type'], /^text\/html/)
  t.match(tooBig.body, /Request refused/)
  t.match(tooBig.body, /Request body too large/)
  t.equal(tooBig.headers['x-frame-options'], 'DENY')
  const badCallback = await app.inject({ url: '/oauth/callback?' + 'x=' + 'y'.repeat(10) + '&state=a&state=b' })
  t.match(badCallback.headers['content-type'], /^text\/html/, 'the callback too')
  t.notOk(badCallback.statusCode >= 500)
})
