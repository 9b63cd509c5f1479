import t from 'tap'
import { buildApp, ISSUER } from './helpers/app.js'

const TOKEN = 'initial-access-token-0123456789abcdef'

async function register (app: Awaited<ReturnType<typeof buildApp>>['app'], body: unknown, headers: Record<string, string> = {}) {
  return app.inject({ method: 'POST', url: '/oauth/register', payload: body as object, headers: { 'content-type': 'application/json', ...headers } })
}

t.test('registration off: no endpoint, not in metadata', async t => {
  const { app } = await buildApp(t)
  t.equal((await register(app, { redirect_uris: ['https://a.example.com/cb'] })).statusCode, 404)
  t.notOk('registration_endpoint' in (await app.inject('/.well-known/oauth-authorization-server')).json())
})

t.test('public registration: 201 with the full client information', async t => {
  const { app, clock } = await buildApp(t, { registration: { mode: 'public' } })
  t.equal((await app.inject('/.well-known/oauth-authorization-server')).json().registration_endpoint, `${ISSUER}/oauth/register`)
  const res = await register(app, {
    redirect_uris: ['http://localhost:51000/callback'],
    token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    client_name: 'Claude Code',
    client_uri: 'https://claude.ai',
    scope: 'mcp:tools unknown-scope',
    contacts: ['ops@example.com']
  })
  t.equal(res.statusCode, 201)
  t.equal(res.headers['cache-control'], 'no-store')
  const info = res.json()
  t.match(info, {
    client_id: /^mcp_/,
    client_id_issued_at: Math.floor(clock.t / 1000),
    registration_access_token: /^mcprg_/,
    redirect_uris: ['http://localhost:51000/callback'],
    token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    application_type: 'native',
    client_name: 'Claude Code',
    client_uri: 'https://claude.ai',
    scope: 'mcp:tools',
    contacts: ['ops@example.com']
  })
  t.equal(info.registration_client_uri, `${ISSUER}/oauth/register/${info.client_id}`)
  t.notOk('client_secret' in info, 'public clients get no secret')
  const stored = await app.mcpOAuth.storage.getClient(info.client_id, clock.t)
  t.equal(stored?.source, 'dcr')
  t.notMatch(JSON.stringify(stored), info.registration_access_token, 'registration token stored hashed')
})

t.test('confidential client: secret shown once, stored hashed, usable at the token endpoint', async t => {
  const { app, clock } = await buildApp(t, { registration: { mode: 'public' } })
  const res = await register(app, { redirect_uris: ['https://app.example.com/cb'], client_name: 'Web' })
  t.equal(res.statusCode, 201)
  const info = res.json()
  t.equal(info.token_endpoint_auth_method, 'client_secret_basic', 'RFC 7591 default')
  t.match(info.client_secret, /^mcpcs_/)
  t.equal(info.client_secret_expires_at, 0)
  t.equal(info.application_type, 'web')
  t.same(info.grant_types, ['authorization_code', 'refresh_token'], 'refresh_token added: code responses carry refresh tokens')
  const stored = await app.mcpOAuth.storage.getClient(info.client_id, clock.t)
  t.notMatch(JSON.stringify(stored), info.client_secret)
  const basic = Buffer.from(`${info.client_id}:${info.client_secret}`).toString('base64')
  const ok = await app.inject({ method: 'POST', url: '/oauth/token', headers: { authorization: `Basic ${basic}` }, payload: 'grant_type=authorization_code&code=x', })
  t.equal(ok.json().error, 'invalid_request', 'authenticated; fails later on the missing code')
  const wrong = Buffer.from(`${info.client_id}:wrong`).toString('base64')
  const bad = await app.inject({ method: 'POST', url: '/oauth/token', headers: { authorization: `Basic ${wrong}`, 'content-type': 'application/x-www-form-urlencoded' }, payload: 'grant_type=authorization_code&code=x' })
  t.equal(bad.statusCode, 401)
  t.equal(bad.json().error, 'invalid_client')
  t.equal(bad.headers['www-authenticate'], 'Basic realm="oauth"')
})

t.test('invalid metadata: 400 invalid_client_metadata / invalid_redirect_uri, never 500', async t => {
  const { app } = await buildApp(t, { registration: { mode: 'public' } })
  const cases: Array<[string, unknown, string]> = [
    ['not an object', [1, 2], 'invalid_client_metadata'],
    ['no redirect_uris', { client_name: 'x' }, 'invalid_redirect_uri'],
    ['empty redirect_uris', { redirect_uris: [] }, 'invalid_redirect_uri'],
    ['redirect not a string', { redirect_uris: [42] }, 'invalid_redirect_uri'],
    ['javascript:', { redirect_uris: ['javascript:alert(1)'] }, 'invalid_redirect_uri'],
    ['data:', { redirect_uris: ['data:text/html,hi'] }, 'invalid_redirect_uri'],
    ['file:', { redirect_uris: ['file:///etc/passwd'] }, 'invalid_redirect_uri'],
    ['fragment', { redirect_uris: ['https://a.example.com/cb#x'] }, 'invalid_redirect_uri'],
    ['userinfo', { redirect_uris: ['https://u:p@a.example.com/cb'] }, 'invalid_redirect_uri'],
    ['http non-loopback', { redirect_uris: ['http://a.example.com/cb'] }, 'invalid_redirect_uri'],
    ['private host', { redirect_uris: ['https://192.168.1.10/cb'] }, 'invalid_redirect_uri'],
    ['link-local host', { redirect_uris: ['https://[fe80::1]/cb'] }, 'invalid_redirect_uri'],
    ['unknown custom scheme', { redirect_uris: ['myapp:/cb'] }, 'invalid_redirect_uri'],
    ['web app with loopback', { redirect_uris: ['http://127.0.0.1/cb'], application_type: 'web' }, 'invalid_redirect_uri'],
    ['bad auth method', { redirect_uris: ['https://a.example.com/cb'], token_endpoint_auth_method: 'private_key_jwt' }, 'invalid_client_metadata'],
    ['implicit grant', { redirect_uris: ['https://a.example.com/cb'], grant_types: ['implicit'] }, 'invalid_client_metadata'],
    ['token response type', { redirect_uris: ['https://a.example.com/cb'], response_types: ['token'] }, 'invalid_client_metadata'],
    ['client_name not a string', { redirect_uris: ['https://a.example.com/cb'], client_name: { x: 1 } }, 'invalid_client_metadata'],
    ['logo_uri not a URL', { redirect_uris: ['https://a.example.com/cb'], logo_uri: 'nope' }, 'invalid_client_metadata'],
    ['jwks', { redirect_uris: ['https://a.example.com/cb'], jwks: { keys: [] } }, 'invalid_client_metadata'],
    ['bad application_type', { redirect_uris: ['https://a.example.com/cb'], application_type: 'desktop' }, 'invalid_client_metadata'],
    ['too many redirects', { redirect_uris: Array.from({ length: 21 }, (_, i) => `https://a.example.com/${i}`) }, 'invalid_redirect_uri']
  ]
  for (const [name, body, error] of cases) {
    const res = await register(app, body)
    t.equal(res.statusCode, 400, name)
    t.equal(res.json().error, error, name)
    t.type(res.json().error_description, 'string')
  }
  const notJson = await app.inject({ method: 'POST', url: '/oauth/register', payload: 'redirect_uris=x', headers: { 'content-type': 'application/x-www-form-urlencoded' } })
  t.equal(notJson.statusCode, 400)
  t.equal(notJson.json().error, 'invalid_client_metadata')
  const broken = await app.inject({ method: 'POST', url: '/oauth/register', payload: '{"redirect_uris":', headers: { 'content-type': 'application/json' } })
  t.equal(broken.statusCode, 400)
  t.equal(broken.json().error, 'invalid_request')
})

t.test('token mode: bearer initial access token, trusted schemes may skip it', async t => {
  const { app } = await buildApp(t, { registration: { mode: 'token', token: TOKEN, trustedSchemes: ['cursor'] } })
  const body = { redirect_uris: ['https://a.example.com/cb'] }
  const none = await register(app, body)
  t.equal(none.statusCode, 401)
  t.equal(none.json().error, 'invalid_token')
  const wrong = await register(app, body, { authorization: 'Bearer wrong-token-wrong-token-wrong-token' })
  t.equal(wrong.statusCode, 401)
  t.equal((await register(app, body, { authorization: `Bearer ${TOKEN}` })).statusCode, 201)
  const cursor = await register(app, { redirect_uris: ['cursor://anysphere.cursor-retrieval/oauth/callback'], token_endpoint_auth_method: 'none' })
  t.equal(cursor.statusCode, 201, 'Cursor registers without a token')
  const mixed = await register(app, { redirect_uris: ['cursor://x/cb', 'https://evil.example.com/cb'], token_endpoint_auth_method: 'none' })
  t.equal(mixed.statusCode, 401, 'every redirect must use a trusted scheme')
})

t.test('public clients can be refused', async t => {
  const { app } = await buildApp(t, { registration: { mode: 'public', allowPublicClients: false } })
  const res = await register(app, { redirect_uris: ['http://127.0.0.1/cb'], token_endpoint_auth_method: 'none' })
  t.equal(res.statusCode, 400)
  t.equal(res.json().error, 'invalid_client_metadata')
})

t.test('RFC 7592: read, update, delete with the registration access token', async t => {
  const { app, clock } = await buildApp(t, { registration: { mode: 'public' } })
  const created = (await register(app, { redirect_uris: ['https://a.example.com/cb'], client_name: 'One' })).json()
  const url = `/oauth/register/${created.client_id}`
  const auth = (token: string) => ({ authorization: `Bearer ${token}` })

  t.equal((await app.inject({ url })).statusCode, 401, 'no token')
  t.equal((await app.inject({ url, headers: auth('mcprg_' + 'A'.repeat(43)) })).statusCode, 401, 'wrong token')
  t.equal((await app.inject({ url: '/oauth/register/nope', headers: auth(created.registration_access_token) })).statusCode, 401, 'other client')

  const read = await app.inject({ url, headers: auth(created.registration_access_token) })
  t.equal(read.statusCode, 200)
  t.equal(read.json().client_name, 'One')
  t.notOk('client_secret' in read.json(), 'the secret is never shown again')
  const token2 = read.json().registration_access_token
  t.not(token2, created.registration_access_token, 'rotated on read')
  t.equal((await app.inject({ url, headers: auth(created.registration_access_token) })).statusCode, 401, 'old token retired')

  const update = await app.inject({
    method: 'PUT',
    url,
    headers: auth(token2),
    payload: { client_id: created.client_id, redirect_uris: ['https://b.example.com/cb'], client_name: 'Two', client_secret: created.client_secret }
  })
  t.equal(update.statusCode, 200)
  t.same(update.json().redirect_uris, ['https://b.example.com/cb'])
  t.equal(update.json().client_name, 'Two')
  const token3 = update.json().registration_access_token
  const mismatch = await app.inject({ method: 'PUT', url, headers: auth(token3), payload: { client_id: 'other', redirect_uris: ['https://b.example.com/cb'] } })
  t.equal(mismatch.statusCode, 400)
  t.equal(mismatch.json().error, 'invalid_request')
  const badUri = await app.inject({ method: 'PUT', url, headers: auth(token3), payload: { client_id: created.client_id, redirect_uris: ['javascript:x'] } })
  t.equal(badUri.json().error, 'invalid_redirect_uri')
  t.same((await app.mcpOAuth.storage.getClient(created.client_id, clock.t))?.redirectUris, ['https://b.example.com/cb'], 'a rejected update changes nothing')

  const del = await app.inject({ method: 'DELETE', url, headers: auth(token3) })
  t.equal(del.statusCode, 204)
  t.equal(await app.mcpOAuth.storage.getClient(created.client_id, clock.t), null)
  t.equal((await app.inject({ method: 'DELETE', url, headers: auth(token3) })).statusCode, 401)
})

t.test('claude.ai registering twice gets two independent clients', async t => {
  const { app } = await buildApp(t, { registration: { mode: 'public' } })
  const body = { redirect_uris: ['https://claude.ai/api/mcp/auth_callback'], token_endpoint_auth_method: 'client_secret_post', client_name: 'Claude' }
  const a = (await register(app, body)).json()
  const b = (await register(app, body)).json()
  t.not(a.client_id, b.client_id)
  t.not(a.client_secret, b.client_secret)
})

t.test('hygiene: active clients per address are capped', async t => {
  const { app, clock } = await buildApp(t, { registration: { mode: 'public', maxClientsPerIp: 2, unusedClientTtlSeconds: 3600 } })
  const body = { redirect_uris: ['http://127.0.0.1/cb'], token_endpoint_auth_method: 'none' }
  t.equal((await register(app, body)).statusCode, 201)
  t.equal((await register(app, body)).statusCode, 201)
  const third = await register(app, body)
  t.equal(third.statusCode, 429)
  t.equal(third.json().error, 'slow_down')
  clock.advance(3960 * 1000)
  t.equal((await register(app, body)).statusCode, 201, 'unused clients expired (after the period and a tenth), so the address may register again')
})

t.test('hygiene: unused dynamic clients expire, but never while they have grants', async t => {
  const { app, clock } = await buildApp(t, { registration: { mode: 'public', unusedClientTtlSeconds: 3600 }, ttl: { grant: 7200, refreshToken: 7200 } })
  const idle = (await register(app, { redirect_uris: ['http://127.0.0.1/cb'], token_endpoint_auth_method: 'none' })).json()
  const used = (await register(app, { redirect_uris: ['http://127.0.0.1/cb'], token_endpoint_auth_method: 'none' })).json()
  t.equal((await app.mcpOAuth.storage.getClient(idle.client_id, clock.t))?.expiresAt, clock.t + 3960_000, 'the period, and a tenth of it as slack')
  const grant = await app.mcpOAuth.grants.createGrant({ userId: 'u', clientId: used.client_id, scopes: ['mcp:tools'], resource: 'https://auth.example.com/mcp' })
  const tokens = await app.mcpOAuth.grants.issueTokens(grant)
  clock.advance(1800_000)
  const r = await app.inject({ method: 'POST', url: '/oauth/token', payload: { grant_type: 'refresh_token', refresh_token: tokens.refresh_token, client_id: used.client_id } })
  t.equal(r.statusCode, 200)
  clock.advance(2160_000)
  t.equal(await app.mcpOAuth.storage.getClient(idle.client_id, clock.t), null, 'the unused client is gone')
  t.ok(await app.mcpOAuth.storage.getClient(used.client_id, clock.t), 'the used client lives on')
  clock.advance(3240_000 - 1)
  t.ok(await app.mcpOAuth.storage.getClient(used.client_id, clock.t), 'still there while its grant could live')
  clock.advance(3 * 3600_000)
  t.equal(await app.mcpOAuth.storage.getClient(used.client_id, clock.t), null, 'gone once no token of it can be used')
})
