import t, { type Test } from 'tap'
import Fastify from 'fastify'
import { mcpOAuth, generateKey, MemoryStore, type FlowRecord, type UpstreamTokens } from '../lib/index.js'
import { KeyRing } from '../lib/security/keyring.js'
import { oidcProvider } from '../lib/providers/oidc.js'
import { startDevIdp } from '../example/dev-idp.js'
import { Browser } from './helpers/browser.js'
import { authorizeUrl, freePort, REDIRECT, token, type LoginHarness } from './helpers/login.js'

/**
 * Every secret that passes through a full login, refresh, refresh reuse and revocation must stay out
 * of what the server writes down or answers with when something goes wrong: log lines (at trace
 * level, Fastify's request logging included), audit events, and error responses. Run twice: once
 * with an auditSink that captures events, once with the default sink (audit lines go to the log).
 */

const UPSTREAM_SECRET = 'upstream-client-secret-upstream-client-secret'
const COOKIE_SECRET = 'cookie-secret-for-the-secrets-test-0123456789'
const INITIAL_TOKEN = 'initial-access-token-initial-access-token-0123'
const RS = { id: 'resource-server', secret: 'rs-secret-rs-secret-rs-secret-rs-secret-rs' }
const FORGED_CODE = 'forged-upstream-code-forged-upstream-code'
const VERIFIER = 'client-pkce-verifier-' + 'Zq9'.repeat(12)

/** A store that lets the test see the upstream PKCE verifier it keeps for each flow. */
class WatchedStore extends MemoryStore {
  readonly flows: FlowRecord[] = []
  override async saveFlow (key: string, flow: FlowRecord): Promise<void> {
    this.flows.push(flow)
    return super.saveFlow(key, flow)
  }
}

interface Capture {
  logs: string[]
  audit: string[]
  /** Every non-2xx answer: status line, headers, body (and Location targets carrying error=). */
  errors: string[]
  secrets: Map<string, string>
}

/** The forms in which a secret could be written: as is, URL-encoded, and base64/base64url at any alignment. */
function needles (secret: string): string[] {
  const forms = new Set([secret, encodeURIComponent(secret), new URLSearchParams({ x: secret }).toString().slice(2)])
  const bytes = Buffer.from(secret, 'utf8')
  for (let pad = 0; pad < 3; pad++) {
    for (const alphabet of ['base64', 'base64url'] as const) {
      const encoded = Buffer.concat([Buffer.alloc(pad), bytes]).toString(alphabet)
      // Drop the characters that depend on the padding bytes in front or on what follows.
      const start = Math.ceil(pad * 4 / 3)
      const head = start === 0 ? 0 : 4 - start
      const stable = encoded.slice(start, start + head + Math.floor((bytes.length - ((3 - pad) % 3)) / 3) * 4)
      if (stable.length >= 16) forms.add(stable)
    }
  }
  return [...forms]
}

async function scenario (t: Test, withSink: boolean): Promise<Capture> {
  const capture: Capture = { logs: [], audit: [], errors: [], secrets: new Map() }
  const secret = (label: string, value: unknown) => {
    if (typeof value === 'string' && value.length >= 8) capture.secrets.set(`${label} (${value.slice(0, 10)}…)`, value)
  }
  for (const [label, value] of [['upstream client secret', UPSTREAM_SECRET], ['cookie secret', COOKIE_SECRET],
    ['initial access token', INITIAL_TOKEN], ['resource server secret', RS.secret], ['client PKCE verifier', VERIFIER]]) secret(label as string, value)

  const port = await freePort()
  const issuer = `http://127.0.0.1:${port}`
  const idp = await startDevIdp({
    clients: [{ client_id: 'mcp-proxy', client_secret: UPSTREAM_SECRET, redirect_uris: [`${issuer}/oauth/callback`] }],
    accessTokenTtl: 60
  })
  t.teardown(() => idp.close())
  const encryptionKey = generateKey()
  secret('encryption key', encryptionKey)
  const store = new WatchedStore()
  const app = Fastify({ logger: { level: 'trace', stream: { write: (line: string) => { capture.logs.push(line) } } } })
  await app.register(mcpOAuth, {
    issuer,
    resources: [`${issuer}/mcp`],
    provider: oidcProvider({ issuer: idp.issuer, clientId: 'mcp-proxy', clientSecret: UPSTREAM_SECRET, timeoutMs: 5000 }),
    registration: { mode: 'token', token: INITIAL_TOKEN },
    cookieSecret: COOKIE_SECRET,
    encryption: { keys: [{ id: 'k1', key: encryptionKey }] },
    introspection: { resourceServers: [RS] },
    store,
    refreshGraceSeconds: 0,
    // The upstream access token lives 60 s: every getUpstreamToken() refreshes it upstream.
    upstreamRefreshThresholdSeconds: 300,
    ...(withSink ? { auditSink: (event, fields) => { capture.audit.push(JSON.stringify({ event, ...fields })) } } : {})
  })
  app.post('/mcp', { onRequest: app.mcpOAuth.authenticate({ scopes: ['mcp:tools'] }) }, async (request) => ({ auth: request.mcpAuth }))
  app.post('/mcp/upstream', { onRequest: app.mcpOAuth.authenticate({ scopes: ['mcp:tools'] }) }, async (request, reply) => {
    try {
      return await app.mcpOAuth.getUpstreamToken(request)
    } catch (err) {
      return reply.code(503).send({ error: 'temporarily_unavailable', error_description: (err as Error).message })
    }
  })
  await app.listen({ port, host: '127.0.0.1' })
  t.teardown(() => app.close())
  const h: LoginHarness = { app, idp, issuer, resource: `${issuer}/mcp` }

  /** fetch, keeping what every unsuccessful answer says. */
  const call = async (path: string, init: RequestInit = {}): Promise<{ status: number, json: Record<string, unknown>, headers: Headers }> => {
    const res = await fetch(`${issuer}${path}`, { redirect: 'manual', ...init })
    const text = await res.text()
    if (res.status >= 300) capture.errors.push(`${res.status} ${path}\n${JSON.stringify([...res.headers])}\n${text}`)
    let json: Record<string, unknown> = {}
    try {
      json = JSON.parse(text) as Record<string, unknown>
    } catch {}
    return { status: res.status, json, headers: res.headers }
  }
  const form = (body: Record<string, string>, headers: Record<string, string> = {}): RequestInit =>
    ({ method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, body: new URLSearchParams(body) })
  const keep = (label: string, res: { status: number, body: Record<string, unknown> }) => {
    if (res.status >= 300) capture.errors.push(`${res.status} /oauth/token\n${JSON.stringify(res.body)}`)
    secret(`${label} access token`, res.body.access_token)
    secret(`${label} refresh token`, res.body.refresh_token)
    return res
  }

  // Registration (RFC 7591 with an initial access token) and management (RFC 7592).
  const registered = await call('/oauth/register', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${INITIAL_TOKEN}` },
    body: JSON.stringify({ redirect_uris: [REDIRECT], token_endpoint_auth_method: 'client_secret_basic', client_name: 'Secrets test client' })
  })
  t.equal(registered.status, 201, 'confidential client registered')
  const clientId = registered.json.client_id as string
  const clientSecret = registered.json.client_secret as string
  secret('client secret', clientSecret)
  secret('registration access token', registered.json.registration_access_token)
  const read = await call(`/oauth/register/${clientId}`, { headers: { authorization: `Bearer ${registered.json.registration_access_token as string}` } })
  t.equal(read.status, 200, 'registration read (rotates the registration access token)')
  secret('rotated registration access token', read.json.registration_access_token)
  t.equal((await call(`/oauth/register/${clientId}`, { headers: { authorization: `Bearer ${registered.json.registration_access_token as string}` } })).status, 401,
    'the old registration access token is refused')
  t.equal((await call('/oauth/register', {
    method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${INITIAL_TOKEN}x` }, body: JSON.stringify({ redirect_uris: [REDIRECT] })
  })).status, 401, 'a wrong initial access token is refused')
  const basic = (secretValue: string) => ({ authorization: `Basic ${Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(secretValue)}`).toString('base64')}` })

  // Login: consent, the IdP, the upstream callback (seen on its way), our code.
  const browser = new Browser()
  const atCallback = await browser.drive(authorizeUrl(h, clientId, VERIFIER), {
    stopAt: u => u.pathname === '/oauth/callback',
    fields: { login: 'alice', password: 'x' }
  })
  const callbackUrl = atCallback.stoppedAt as URL
  /** The upstream code and our flow state travel in the callback URL; the verifier stays in the flow. */
  const upstreamLeg = (page: { history: URL[] }) => {
    for (const url of page.history.filter(u => u.pathname === '/oauth/callback')) {
      if (url.searchParams.get('code') !== FORGED_CODE) secret('upstream authorization code', url.searchParams.get('code'))
      secret('upstream state (our flow key)', url.searchParams.get('state'))
    }
    for (const flow of store.flows) secret('upstream PKCE verifier', flow.upstreamVerifier)
  }
  const back = await browser.get(callbackUrl, { stopAt: u => u.href.startsWith(REDIRECT) })
  upstreamLeg(back)
  const code = back.stoppedAt?.searchParams.get('code') ?? ''
  t.match(code, /^mcpac_/, 'authorization code issued')
  secret('authorization code', code)
  for (const c of browser.cookies.cookiesFor(new URL(issuer))) secret(`browser cookie ${c.name}`, c.value)

  const first = keep('first', await token(h, { grant_type: 'authorization_code', code, code_verifier: VERIFIER, redirect_uri: REDIRECT }, basic(clientSecret)))
  t.equal(first.status, 200, 'code exchanged')
  const bearer = (value: string) => ({ method: 'POST', headers: { authorization: `Bearer ${value}` } })
  /** The upstream tokens held in a grant, decrypted with the test's copy of the key. */
  const held = async (label: string, grantId: string) => {
    const grant = await app.mcpOAuth.storage.getGrant(grantId, Date.now())
    if (grant?.upstream === undefined) return
    const tokens = JSON.parse(new KeyRing([{ id: 'k1', key: encryptionKey }]).open(grant.upstream, grantId)) as UpstreamTokens
    secret(`${label} upstream access token`, tokens.accessToken)
    secret(`${label} upstream refresh token`, tokens.refreshToken)
    secret(`${label} upstream ID token`, tokens.idToken)
  }
  await held('first login', ((await call('/mcp', bearer(first.body.access_token as string))).json.auth as { grantId: string }).grantId)
  const replay = keep('replayed code', await token(h, { grant_type: 'authorization_code', code, code_verifier: VERIFIER, redirect_uri: REDIRECT }, basic(clientSecret)))
  t.equal(replay.body.error, 'invalid_grant', 'a replayed code is refused (and revokes what it issued)')

  // A second login for the rest (the replay revoked the first grant).
  const again = await browser.drive(authorizeUrl(h, clientId, VERIFIER, { state: 'second' }), { stopAt: u => u.href.startsWith(REDIRECT), fields: { login: 'alice', password: 'x' } })
  upstreamLeg(again)
  const code2 = again.stoppedAt?.searchParams.get('code') ?? ''
  secret('second authorization code', code2)
  const tokens = keep('login', await token(h, { grant_type: 'authorization_code', code: code2, code_verifier: VERIFIER, redirect_uri: REDIRECT }, basic(clientSecret)))
  t.equal(tokens.status, 200)
  const access = tokens.body.access_token as string
  const refresh0 = tokens.body.refresh_token as string

  // The guarded route, and the upstream token behind it (refreshed upstream on every call).
  const mcp = await call('/mcp', bearer(access))
  t.equal(mcp.status, 200, 'guarded call')
  const grantId = (mcp.json.auth as { grantId: string }).grantId
  const upstreamTokens = async (label: string) => {
    const res = await call('/mcp/upstream', bearer(access))
    secret(`${label} upstream access token (as handed to the MCP handler)`, res.json.accessToken)
    await held(label, grantId)
    return res
  }
  t.equal((await upstreamTokens('first')).status, 200, 'upstream token for the MCP handler')
  t.equal((await upstreamTokens('refreshed')).status, 200, 'upstream token again (refreshed upstream)')

  // Refresh, refresh reuse, revocation, introspection, and a few refusals that carry secrets.
  const r1 = keep('refresh', await token(h, { grant_type: 'refresh_token', refresh_token: refresh0 }, basic(clientSecret)))
  t.equal(r1.status, 200, 'refresh')
  const wrongSecret = keep('wrong secret', await token(h, { grant_type: 'refresh_token', refresh_token: r1.body.refresh_token as string }, basic(clientSecret + 'x')))
  t.equal(wrongSecret.status, 401, 'wrong client secret refused')
  const widen = keep('widened scope', await token(h, { grant_type: 'refresh_token', refresh_token: r1.body.refresh_token as string, scope: 'mcp:tools other' }, basic(clientSecret)))
  t.equal(widen.status, 400, 'a wider scope is refused')
  const revokeAccess = await call('/oauth/revoke', form({ token: r1.body.access_token as string }, basic(clientSecret)))
  t.equal(revokeAccess.status, 200, 'access token revoked')
  t.equal((await call('/mcp', bearer(r1.body.access_token as string))).status, 401, 'revoked access token refused at the guard')
  const reuse = keep('reused refresh token', await token(h, { grant_type: 'refresh_token', refresh_token: refresh0 }, basic(clientSecret)))
  t.equal(reuse.body.error, 'invalid_grant', 'refresh reuse detected')
  t.equal((await call('/mcp', bearer(access))).status, 401, 'the family is gone')
  t.equal((await call('/mcp/upstream', bearer(access))).status, 401)
  t.equal((await call('/oauth/revoke', form({ token: r1.body.refresh_token as string }, basic(clientSecret)))).status, 200, 'revoking a dead token is fine')
  const introspected = await call('/oauth/introspect', form({ token: access }, { authorization: `Basic ${Buffer.from(`${RS.id}:${RS.secret}`).toString('base64')}` }))
  t.same(introspected.json, { active: false }, 'introspection of a revoked token')
  t.equal((await call('/oauth/introspect', form({ token: access }, { authorization: `Basic ${Buffer.from(`${RS.id}:${RS.secret}x`).toString('base64')}` }))).status, 401)
  // (A client that puts its token in the URL has it logged with the URL; that is the client's doing, so a stand-in is used.)
  t.equal((await call('/mcp?access_token=mcpat_' + 'S'.repeat(43), { method: 'POST' })).status, 400, 'a token in the URL is refused')
  const replayed = await browser.get(callbackUrl, { stopAt: u => u.href.startsWith(REDIRECT) })
  upstreamLeg(replayed)
  capture.errors.push(`${replayed.status} ${replayed.body}`)
  t.equal(replayed.status, 400, 'a replayed callback is refused')

  // A callback with a code the IdP never issued: the upstream exchange fails.
  const third = await browser.drive(authorizeUrl(h, clientId, VERIFIER, { state: 'third' }), {
    stopAt: u => u.pathname === '/oauth/callback', fields: { login: 'alice', password: 'x' }
  })
  const forged = new URL(third.stoppedAt as URL)
  forged.searchParams.set('code', FORGED_CODE)
  const failed = await browser.get(forged, { stopAt: u => u.href.startsWith(REDIRECT) })
  upstreamLeg(failed)
  t.ok(failed.stoppedAt?.searchParams.get('error'), 'the failed upstream exchange reaches the client as an OAuth error')
  capture.errors.push(failed.stoppedAt?.href ?? '')
  await app.close()
  return capture
}

for (const withSink of [true, false]) {
  t.test(`no secret in logs, audit events or error answers (${withSink ? 'auditSink' : 'default audit to the log'})`, async t => {
    const capture = await scenario(t, withSink)
    t.ok(capture.logs.length > 0 && (withSink ? capture.audit.length > 0 : capture.logs.some(l => l.includes('"event":"token_issued"'))), 'something was captured')
    t.comment(`${capture.secrets.size} secrets; ${capture.logs.length} log lines, ${capture.audit.length} audit events, ${capture.errors.length} error answers`)
    const places: Array<[string, string[]]> = [['log', capture.logs], ['audit event', capture.audit], ['error answer', capture.errors]]
    for (const [label, value] of capture.secrets) {
      const found: string[] = []
      for (const needle of needles(value)) {
        for (const [where, texts] of places) {
          for (const text of texts) {
            const at = text.indexOf(needle)
            if (at >= 0) found.push(`${where}: …${text.slice(Math.max(0, at - 120), at).replace(/\s+/g, ' ')}[SECRET]${text.slice(at + needle.length, at + needle.length + 60).replace(/\s+/g, ' ')}…`)
          }
        }
      }
      t.same(found, [], `${label} appears nowhere`)
    }
  })
}
