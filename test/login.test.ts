import t from 'tap'
import { createServer } from 'node:net'
import { oidcProvider } from '../lib/providers/oidc.js'
import { Browser } from './helpers/browser.js'
import { authorizeUrl, login, REDIRECT, registerClient, startLogin, token } from './helpers/login.js'

const VERIFIER = 'a'.repeat(20) + 'B-._~' + 'c'.repeat(30)

t.test('full login: consent, upstream login, callback, code exchange, guarded call', async t => {
  const h = await startLogin(t)
  const client = await registerClient(h)
  const back = await login(h, authorizeUrl(h, client.client_id as string, VERIFIER))
  t.equal(back.searchParams.get('state'), 'client-state-1')
  t.equal(back.searchParams.get('iss'), h.issuer, 'RFC 9207 iss')
  const code = back.searchParams.get('code') as string
  t.match(code, /^mcpac_/)

  const res = await token(h, { grant_type: 'authorization_code', code, code_verifier: VERIFIER, redirect_uri: REDIRECT, client_id: client.client_id as string, resource: h.resource })
  t.equal(res.status, 200)
  t.equal(res.headers.get('cache-control'), 'no-store')
  t.match(res.body, { access_token: /^mcpat_/, token_type: 'Bearer', expires_in: 3600, refresh_token: /^mcprt_/, scope: 'mcp:tools' })

  const mcp = await fetch(`${h.issuer}/mcp`, { method: 'POST', headers: { authorization: `Bearer ${res.body.access_token as string}` } })
  t.equal(mcp.status, 200)
  const { auth } = await mcp.json() as { auth: Record<string, unknown> }
  t.match(auth, { userId: 'alice', email: 'alice@dev.local', clientId: client.client_id, scopes: ['mcp:tools'], resource: h.resource })

  const upstream = await h.app.mcpOAuth.validator.validate(res.body.access_token as string)
  t.ok(upstream.valid)

  const replay = await token(h, { grant_type: 'authorization_code', code, code_verifier: VERIFIER, redirect_uri: REDIRECT, client_id: client.client_id as string })
  t.equal(replay.status, 400)
  t.equal(replay.body.error, 'invalid_grant')
  const after = await fetch(`${h.issuer}/mcp`, { method: 'POST', headers: { authorization: `Bearer ${res.body.access_token as string}` } })
  t.equal(after.status, 401, 'a replayed code revokes what it issued')
})

t.test('remembered consent: a second login of the same client in the same browser skips the page', async t => {
  const h = await startLogin(t)
  // A confidential client: a public native one sees the page every time (test/hardening-browser.test.ts).
  const client = await registerClient(h, { token_endpoint_auth_method: 'client_secret_post' })
  const browser = new Browser()
  await login(h, authorizeUrl(h, client.client_id as string, VERIFIER), browser)
  const second = await browser.get(authorizeUrl(h, client.client_id as string, VERIFIER), { stopAt: u => u.href.startsWith(REDIRECT) })
  t.ok(second.stoppedAt?.searchParams.get('code'), 'straight through: consent remembered, IdP session alive')
  t.notOk(second.history.some(u => u.pathname === '/oauth/consent'))
})

t.test('code exchange errors', async t => {
  const h = await startLogin(t)
  const client = await registerClient(h)
  const other = await registerClient(h)
  const fresh = async () => (await login(h, authorizeUrl(h, client.client_id as string, VERIFIER))).searchParams.get('code') as string
  const base = { grant_type: 'authorization_code', code_verifier: VERIFIER, redirect_uri: REDIRECT, client_id: client.client_id as string }

  let r = await token(h, { ...base, code: await fresh(), code_verifier: 'x'.repeat(43) })
  t.same([r.status, r.body.error], [400, 'invalid_grant'], 'wrong verifier')
  const { code_verifier: _omit, ...noVerifier } = base
  r = await token(h, { ...noVerifier, code: await fresh() })
  t.equal(r.body.error, 'invalid_request', 'verifier missing is a malformed request')
  r = await token(h, { ...base, code: await fresh(), client_id: other.client_id as string })
  t.same([r.status, r.body.error], [400, 'invalid_grant'], 'another client')
  r = await token(h, { ...base, code: await fresh(), redirect_uri: 'http://127.0.0.1:9/other' })
  t.same([r.status, r.body.error], [400, 'invalid_grant'], 'another redirect_uri')
  r = await token(h, { ...base, code: await fresh(), resource: `${h.issuer}/elsewhere` })
  t.same([r.status, r.body.error], [400, 'invalid_target'], 'another resource')
  r = await token(h, { ...base, code: 'mcpac_' + 'A'.repeat(43) })
  t.same([r.status, r.body.error], [400, 'invalid_grant'], 'unknown code')
  r = await token(h, { ...base, code: await fresh(), grant_type: 'password' })
  t.same([r.status, r.body.error], [400, 'unsupported_grant_type'])
  r = await token(h, { ...base, code: await fresh(), client_id: 'nobody' })
  t.same([r.status, r.body.error], [401, 'invalid_client'])
  const dup = await fetch(`${h.issuer}/oauth/token`, {
    method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'grant_type=authorization_code&code=a&code=b'
  })
  t.same([dup.status, (await dup.json() as { error: string }).error], [400, 'invalid_request'], 'repeated parameter')
})

t.test('the callback refuses to complete in another browser', async t => {
  const h = await startLogin(t)
  const client = await registerClient(h)
  const victim = new Browser()
  // The attacker starts and approves in their own browser, then sends the callback link onwards.
  const attacker = new Browser()
  const page = await attacker.drive(authorizeUrl(h, client.client_id as string, VERIFIER), {
    stopAt: u => u.pathname === '/oauth/callback',
    fields: { login: 'mallory', password: 'x' }
  })
  const callback = page.stoppedAt as URL
  const res = await victim.get(callback, { stopAt: u => u.href.startsWith(REDIRECT) })
  t.equal(res.status, 403)
  t.match(res.body, /another browser/)
  t.notOk(res.stoppedAt, 'no code issued')
  const again = await attacker.get(callback, { stopAt: u => u.href.startsWith(REDIRECT) })
  t.equal(again.status, 400, 'the flow is single use, even after a refused attempt')
})

t.test('deny at the consent page: access_denied to the client', async t => {
  const h = await startLogin(t)
  const client = await registerClient(h)
  const browser = new Browser()
  const page = await browser.get(authorizeUrl(h, client.client_id as string, VERIFIER))
  const back = await browser.submit(page, {}, { submitter: 'deny', stopAt: u => u.href.startsWith(REDIRECT) })
  t.equal(back.stoppedAt?.searchParams.get('error'), 'access_denied')
  t.equal(back.stoppedAt?.searchParams.get('state'), 'client-state-1')
  t.equal(back.stoppedAt?.searchParams.get('iss'), h.issuer)
})

t.test('consent form: CSRF and cross-site submissions refused', async t => {
  const h = await startLogin(t)
  const client = await registerClient(h)
  const browser = new Browser()
  const page = await browser.get(authorizeUrl(h, client.client_id as string, VERIFIER))
  const form = page.forms()[0]
  t.ok(form)
  const fields: Record<string, string> = Object.fromEntries(form?.fields ?? [])
  const forged = await new Browser().post(`${h.issuer}/oauth/consent`, { ...fields, decision: 'approve' })
  t.equal(forged.status, 403, 'no CSRF cookie in the victim browser')
  const crossSite = await fetch(`${h.issuer}/oauth/consent`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', origin: 'https://evil.example.com' },
    body: new URLSearchParams({ ...fields, decision: 'approve' })
  })
  t.equal(crossSite.status, 403)
  const tampered = await browser.post(`${h.issuer}/oauth/consent`, { ...fields, request: String(fields.request).replace(/^./, 'x'), decision: 'approve' })
  t.equal(tampered.status, 400, 'signed request cannot be altered')
})

t.test('upstream error and upstream timeout reach the client as OAuth errors', async t => {
  const h = await startLogin(t)
  const client = await registerClient(h)
  const browser = new Browser()
  const page = await browser.drive(authorizeUrl(h, client.client_id as string, VERIFIER), {
    stopAt: u => u.pathname === '/oauth/callback',
    fields: { login: 'alice', password: 'x' }
  })
  const cb = new URL(page.stoppedAt as URL)
  const denied = new URL(`${h.issuer}/oauth/callback`)
  denied.search = new URLSearchParams({ error: 'access_denied', state: cb.searchParams.get('state') as string, iss: cb.searchParams.get('iss') ?? '' }).toString()
  const res = await browser.get(denied, { stopAt: u => u.href.startsWith(REDIRECT) })
  t.equal(res.stoppedAt?.searchParams.get('error'), 'access_denied')
  t.equal(res.stoppedAt?.searchParams.get('state'), 'client-state-1')
})

t.test('an identity provider that never answers: a quick, clear error for the client', async t => {
  const blackHole = createServer(() => {})
  await new Promise<void>(resolve => blackHole.listen(0, '127.0.0.1', resolve))
  const sockets = new Set<import('node:net').Socket>()
  blackHole.on('connection', s => sockets.add(s))
  t.teardown(() => { for (const s of sockets) s.destroy(); blackHole.close() })
  const port = (blackHole.address() as { port: number }).port
  const h = await startLogin(t, {
    provider: oidcProvider({ issuer: `http://127.0.0.1:${port}`, clientId: 'x', clientSecret: 'y', timeoutMs: 300 })
  })
  const client = await registerClient(h)
  const started = Date.now()
  const back = await login(h, authorizeUrl(h, client.client_id as string, VERIFIER))
  t.ok(Date.now() - started < 3000, 'no hang')
  t.equal(back.searchParams.get('error'), 'temporarily_unavailable')
  t.equal(back.searchParams.get('state'), 'client-state-1')
  t.equal(back.searchParams.get('iss'), h.issuer)
})

t.test('a remembered approval does not cover more scopes than were approved', async t => {
  const h = await startLogin(t, { scopes: ['mcp:tools', 'mcp:admin'], defaultScopes: ['mcp:tools'] })
  const client = await registerClient(h, { token_endpoint_auth_method: 'client_secret_post' })
  const browser = new Browser()
  await login(h, authorizeUrl(h, client.client_id as string, VERIFIER), browser)
  const same = await browser.get(authorizeUrl(h, client.client_id as string, VERIFIER), { stopAt: u => u.href.startsWith(REDIRECT) })
  t.ok(same.stoppedAt, 'same scopes: no consent page')
  const more = await browser.get(authorizeUrl(h, client.client_id as string, VERIFIER, { scope: 'mcp:tools mcp:admin' }), { stopAt: u => u.href.startsWith(REDIRECT) })
  t.notOk(more.stoppedAt, 'more scopes: the consent page again')
  t.match(more.body, 'mcp:admin')
})
