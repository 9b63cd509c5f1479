import t from 'tap'
import type { Test } from 'tap'
import { randomBytes } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import Fastify from 'fastify'
import formbody from '@fastify/formbody'
import { mcpOAuth, type McpOAuthOptions } from '../lib/index.js'
import { oidcProvider, type MapUser } from '../lib/providers/oidc.js'
import { googleProvider } from '../lib/providers/google.js'
import { githubProvider } from '../lib/providers/github.js'
import type { Provider, UpstreamTokens } from '../lib/providers/types.js'
import { UpstreamError } from '../lib/errors.js'
import { RedisStore } from '../lib/storage/redis/index.js'
import type { AuditEventName } from '../lib/security/audit.js'
import { startDevIdp } from '../example/dev-idp.js'
import { TestClock } from './helpers/clock.js'
import { freePort, loginTokens, readUpstream, token, writeUpstream, type LoginHarness } from './helpers/login.js'
import { withRedisServer } from './helpers/redis-tests.js'

// Findings 2 (deprovisioning: our refresh re-checks the user upstream) and 3 (only verified
// e-mail addresses reach request.mcpAuth), against oidc-provider as the real upstream.

const MINUTE = 60_000
const SECRET = 'proxy-secret-proxy-secret-proxy-secret'

interface Harness extends LoginHarness {
  clock: TestClock
  /** Accounts the IdP treats as disabled from now on. */
  disabled: Set<string>
  /** Claims the IdP gives a login from now on (overrides). */
  claims: Map<string, Record<string, unknown>>
  events: Array<{ event: AuditEventName, fields: Record<string, unknown> }>
}

interface HarnessOptions {
  options?: Partial<McpOAuthOptions>
  /** Builds the provider for the IdP (default: the generic OIDC provider). */
  provider?: (issuer: string) => Provider
  /** Instances sharing the IdP, the clock and (through `options.store`) the store: replicas. */
  replicas?: number
}

/**
 * The plugin on loopback sockets with a clock the test moves, logging in through oidc-provider
 * with accounts the test can disable and claims it can change. Replicas share the issuer (the
 * first one's address, where the browser goes) and each listen on a port of their own.
 */
async function setup (t: Test, h: HarnessOptions = {}): Promise<Harness[]> {
  const ports = await Promise.all(Array.from({ length: h.replicas ?? 1 }, () => freePort()))
  const issuer = `http://127.0.0.1:${ports[0] as number}`
  const claims = new Map<string, Record<string, unknown>>()
  const disabled = new Set<string>()
  const idp = await startDevIdp({
    clients: [{ client_id: 'mcp-proxy', client_secret: SECRET, redirect_uris: [`${issuer}/oauth/callback`] }],
    claims: login => claims.get(login) ?? {},
    disabledAccounts: disabled,
    // Upstream tokens stay fresh while the test moves our clock hours ahead (their expiry is wall time).
    accessTokenTtl: 86400
  })
  t.teardown(() => idp.close())
  const clock = new TestClock(Date.now())
  const out: Harness[] = []
  for (const port of ports) {
    const events: Harness['events'] = []
    const app = Fastify({ logger: false })
    await app.register(mcpOAuth, {
      issuer,
      resources: [`${issuer}/mcp`],
      provider: h.provider?.(idp.issuer) ?? oidcProvider({ issuer: idp.issuer, clientId: 'mcp-proxy', clientSecret: SECRET, timeoutMs: 1500 }),
      registration: { mode: 'public' },
      secret: 'deployment-secret-deployment-secret-1234',
      now: clock.now,
      auditSink: (event, fields) => { events.push({ event, fields: fields as Record<string, unknown> }) },
      ...h.options
    })
    app.post('/mcp', { onRequest: app.mcpOAuth.authenticate({ scopes: ['mcp:tools'] }) }, async (request) => ({ auth: request.mcpAuth }))
    // An MCP tool calling the provider's API: the upstream token, or why not.
    app.post('/mcp/upstream', { onRequest: app.mcpOAuth.authenticate({ scopes: ['mcp:tools'] }) }, async (request, reply) => {
      try {
        return await app.mcpOAuth.getUpstreamToken(request)
      } catch (err) {
        return await reply.code((err as { retryable?: boolean }).retryable === true ? 503 : 401).send({ error: (err as Error).message })
      }
    })
    await app.listen({ port, host: '127.0.0.1' })
    t.teardown(() => app.close())
    // `issuer` here is where the test sends its requests: this replica's own port.
    out.push({ app, idp, issuer: `http://127.0.0.1:${port}`, resource: `${issuer}/mcp`, clock, disabled, claims, events })
  }
  return out
}

async function refresh (h: Harness, tokens: Record<string, string>): Promise<Awaited<ReturnType<typeof token>>> {
  return await token(h, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token as string, client_id: tokens.client_id as string })
}

/** The new pair of a successful refresh, with the client id for the next one. */
function pair (res: { body: Record<string, unknown> }, clientId: string): Record<string, string> {
  return { ...(res.body as Record<string, string>), client_id: clientId }
}

async function mcp (h: Harness, accessToken: string): Promise<{ status: number, auth?: Record<string, unknown> }> {
  const res = await fetch(`${h.issuer}/mcp`, { method: 'POST', headers: { authorization: `Bearer ${accessToken}` } })
  const body = await res.json() as { auth?: Record<string, unknown> }
  return { status: res.status, ...(body.auth !== undefined ? { auth: body.auth } : {}) }
}

async function grantOf (h: Harness, accessToken: string): Promise<string> {
  const auth = await h.app.mcpOAuth.validator.validate(accessToken)
  if (!auth.valid) throw new Error('the access token should be valid')
  return auth.auth.grantId
}

t.test('deprovisioning: an account disabled at the IdP loses access at the first refresh past the interval', async t => {
  const [h] = await setup(t) as [Harness]
  const first = await loginTokens(h, 'alice')
  const grantId = await grantOf(h, first.access_token as string)

  // Within the interval: no upstream call at all.
  h.clock.advance(10 * MINUTE)
  const early = await refresh(h, first)
  t.equal(early.status, 200, 'a refresh within the interval works')
  t.equal(h.idp.refreshCount(), 0, 'and does not call the identity provider')
  const tokens = pair(early, first.client_id as string)

  h.disabled.add('alice')
  h.clock.advance(20 * MINUTE)
  const inside = await refresh(h, tokens)
  t.equal(inside.status, 200, 'the remaining window: still inside the interval, no upstream call')
  t.equal(h.idp.refreshCount(), 0)
  const later = pair(inside, first.client_id as string)
  t.equal((await mcp(h, later.access_token as string)).status, 200)

  h.clock.advance(31 * MINUTE) // 61 minutes after the login
  const res = await refresh(h, later)
  t.equal(res.status, 400)
  t.equal(res.body.error, 'invalid_grant', 'the refresh is refused')
  t.match(res.body.error_description, /identity provider/i)
  t.equal(h.idp.refreshCount(), 1, 'one upstream refresh')
  t.equal(await h.app.mcpOAuth.storage.getGrant(grantId, h.clock.now()), null, 'the grant is gone')
  t.equal((await mcp(h, later.access_token as string)).status, 401, 'the access token issued before is revoked with the grant')
  const lost = h.events.find(e => (e.event as string) === 'upstream_access_lost')
  t.match(lost?.fields, { provider: 'oidc', reason: 'invalid_grant', grantId, userId: 'alice', clientId: first.client_id })
  t.notMatch(JSON.stringify(h.events), /mcprt_|mcpat_/, 'no token in the audit stream')
})

t.test('deprovisioning: timeout, 429 and 5xx upstream answer 503 with Retry-After and keep the grant', async t => {
  const [h] = await setup(t) as [Harness]
  let tokens = await loginTokens(h, 'alice')
  const grantId = await grantOf(h, tokens.access_token as string)
  h.clock.advance(61 * MINUTE)
  for (const mode of [503, 429, 500, 'hang'] as const) {
    h.idp.tokenOutage(mode)
    const res = await refresh(h, tokens)
    t.equal(res.status, 503, `${mode}: 503`)
    t.equal(res.body.error, 'temporarily_unavailable', `${mode}: temporarily_unavailable`)
    t.ok(Number(res.headers.get('retry-after')) > 0, `${mode}: Retry-After`)
    t.not(await h.app.mcpOAuth.storage.getGrant(grantId, h.clock.now()), null, `${mode}: the grant stays`)
  }
  h.idp.tokenOutage('none')
  const res = await refresh(h, tokens)
  t.equal(res.status, 200, 'the same refresh token works once the IdP is back')
  tokens = pair(res, tokens.client_id as string)
  t.equal((await mcp(h, tokens.access_token as string)).status, 200)
  t.notOk(h.events.some(e => (e.event as string) === 'upstream_access_lost'), 'an outage never counts as a lost account')
})

t.test('deprovisioning: concurrent refreshes make one upstream call', async t => {
  const [h] = await setup(t) as [Harness]
  const tokens = await loginTokens(h, 'alice')
  h.clock.advance(61 * MINUTE)
  const results = await Promise.all(Array.from({ length: 6 }, () => refresh(h, tokens)))
  t.equal(h.idp.refreshCount(), 1, 'one upstream refresh for six racing refreshes')
  t.ok(results.some(r => r.status === 200), 'the refresh went through')
  t.ok(results.every(r => r.status < 500), 'no server error')
  const next = pair(results.find(r => r.status === 200) ?? { body: {} }, tokens.client_id as string)
  h.clock.advance(30 * MINUTE)
  const again = await refresh(h, next)
  t.equal(again.status, 200)
  t.equal(h.idp.refreshCount(), 1, 'the check was recorded: no upstream call within the next interval')
})

t.test('deprovisioning: the login policy runs again (mapUser, Google hosted domain)', async t => {
  t.test('mapUser refuses the user now', async t => {
    const banned = new Set<string>()
    const mapUser: MapUser = (_claims, user) => {
      if (banned.has(user.id)) throw new UpstreamError('oidc', 'not_allowed', 'oidc: the user is banned')
      return user
    }
    const [h] = await setup(t, { provider: issuer => oidcProvider({ issuer, clientId: 'mcp-proxy', clientSecret: SECRET, timeoutMs: 1500, mapUser }) }) as [Harness]
    const first = await loginTokens(h, 'mallory')
    h.clock.advance(50 * MINUTE)
    const tokens = pair(await refresh(h, first), first.client_id as string) // within the interval: an access token valid past the check
    banned.add('mallory')
    h.clock.advance(11 * MINUTE)
    t.equal((await mcp(h, tokens.access_token as string)).status, 200)
    const res = await refresh(h, tokens)
    t.equal(res.body.error, 'invalid_grant')
    t.equal((await mcp(h, tokens.access_token as string)).status, 401, 'the live access token went with the grant')
    t.match(h.events.find(e => (e.event as string) === 'upstream_access_lost')?.fields, { reason: 'not_allowed' })
  })

  t.test('the account left the Workspace domain (hd)', async t => {
    const [h] = await setup(t, {
      provider: issuer => googleProvider({ issuer, clientId: 'mcp-proxy', clientSecret: SECRET, hostedDomain: 'corp.example', timeoutMs: 1500 })
    }) as [Harness]
    const tokens = await loginTokens(h, 'ann@corp.example')
    h.clock.advance(61 * MINUTE)
    const ok = await refresh(h, tokens)
    t.equal(ok.status, 200, 'still in the domain: the re-check passes')
    h.clock.advance(40 * MINUTE)
    const next = pair(await refresh(h, pair(ok, tokens.client_id as string)), tokens.client_id as string)
    h.claims.set('ann@corp.example', { hd: 'elsewhere.example' })
    h.clock.advance(21 * MINUTE) // 61 minutes after the last check
    t.equal((await mcp(h, next.access_token as string)).status, 200)
    const res = await refresh(h, next)
    t.equal(res.body.error, 'invalid_grant', 'out of the domain: refused')
    t.equal((await mcp(h, next.access_token as string)).status, 401, 'the live access token went with the grant')
    t.match(h.events.find(e => (e.event as string) === 'upstream_access_lost')?.fields, { provider: 'google', reason: 'not_allowed' })
  })
})

t.test('deprovisioning without an upstream refresh token: UserInfo with the stored access token asks', async t => {
  const [h] = await setup(t) as [Harness]
  const first = await loginTokens(h, 'alice')
  // As if the IdP had issued no refresh token (no offline access).
  const { grantId, tokens: upstream } = await readUpstream(h, first.access_token as string)
  const { refreshToken: _dropped, ...withoutRefresh } = upstream
  await writeUpstream(h, grantId, withoutRefresh)
  h.clock.advance(61 * MINUTE)
  const ok = await refresh(h, first)
  t.equal(ok.status, 200, 'UserInfo still knows the user')
  t.equal(h.idp.refreshCount(), 0, 'nothing to refresh upstream')

  h.clock.advance(40 * MINUTE)
  const tokens = pair(await refresh(h, pair(ok, first.client_id as string)), first.client_id as string)
  h.disabled.add('alice')
  h.clock.advance(21 * MINUTE)
  const res = await refresh(h, tokens)
  t.equal(res.body.error, 'invalid_grant', 'UserInfo refuses the token of a disabled account: refused')
  t.equal((await mcp(h, tokens.access_token as string)).status, 401)
})

/** The upstream blob of a grant (stored without encryption in these tests). */
async function upstreamOf (h: Harness, grantId: string): Promise<{ tokens: UpstreamTokens & { checkedAt?: number } }> {
  const sealed = String((await h.app.mcpOAuth.storage.getGrant(grantId, h.clock.now()))?.upstream)
  return { tokens: JSON.parse(Buffer.from(sealed.slice(3), 'base64url').toString('utf8')) as UpstreamTokens }
}

/** The generic OIDC provider, with a switch that makes the IdP's UserInfo endpoint answer 503 (the refresh before it works). */
function flakyUserInfo (opts: { mapUser?: MapUser } = {}): { provider: (issuer: string) => Provider, down: { userInfo: boolean }, userInfoCalls: () => number } {
  const down = { userInfo: false }
  let calls = 0
  const provider = (issuer: string): Provider => oidcProvider({
    issuer,
    clientId: 'mcp-proxy',
    clientSecret: SECRET,
    timeoutMs: 1500,
    userInfo: 'always',
    ...opts,
    customFetch: async (url, init) => {
      if (new URL(url).pathname === '/me') {
        calls++
        if (down.userInfo) return new Response('{"error":"temporarily_unavailable"}', { status: 503, headers: { 'content-type': 'application/json' } })
      }
      return await fetch(url, init as RequestInit)
    }
  })
  return { provider, down, userInfoCalls: () => calls }
}

t.test('deprovisioning: an outage after the upstream refresh keeps the new upstream tokens (rotating IdP)', async t => {
  const flaky = flakyUserInfo()
  const [h] = await setup(t, { provider: flaky.provider }) as [Harness]
  const tokens = await loginTokens(h, 'alice')
  const grantId = await grantOf(h, tokens.access_token as string)
  const before = await upstreamOf(h, grantId)
  h.clock.advance(61 * MINUTE)
  flaky.down.userInfo = true
  const res = await refresh(h, tokens)
  t.equal(res.status, 503, 'UserInfo down: 503')
  t.equal(h.idp.refreshCount(), 1, 'the upstream refresh itself went through')
  const kept = await upstreamOf(h, grantId)
  t.not(kept.tokens.refreshToken, before.tokens.refreshToken, 'the rotated upstream refresh token is stored')
  t.equal((kept.tokens as { checkedAt?: number }).checkedAt, (before.tokens as { checkedAt?: number }).checkedAt, 'the check is not recorded')

  flaky.down.userInfo = false
  const again = await refresh(h, tokens)
  t.equal(again.status, 200, 'the next refresh works: the IdP got the new refresh token')
  t.equal(h.idp.refreshCount(), 2)
  t.not(await h.app.mcpOAuth.storage.getGrant(grantId, h.clock.now()), null)
  t.notOk(h.events.some(e => (e.event as string) === 'upstream_access_lost'))
})

t.test('getUpstreamToken: an outage after the upstream refresh keeps the new upstream tokens (rotating IdP)', async t => {
  const flaky = flakyUserInfo()
  const [h] = await setup(t, { provider: flaky.provider }) as [Harness]
  const tokens = await loginTokens(h, 'alice')
  const { grantId, tokens: upstream } = await readUpstream(h, tokens.access_token as string)
  // Close to expiry (wall time, as the provider sets it): the next ask refreshes upstream.
  await writeUpstream(h, grantId, { ...upstream, expiresAt: Date.now() + 1000 })
  const ask = async (): Promise<number> => (await fetch(`${h.issuer}/mcp/upstream`, { method: 'POST', headers: { authorization: `Bearer ${tokens.access_token as string}` } })).status
  flaky.down.userInfo = true
  t.equal(await ask(), 503, 'UserInfo down after the upstream refresh: retry later')
  t.equal(h.idp.refreshCount(), 1)
  flaky.down.userInfo = false
  await writeUpstream(h, grantId, { ...(await upstreamOf(h, grantId)).tokens, expiresAt: Date.now() + 1000 })
  t.equal(await ask(), 200, 'the next ask works: the IdP got the new refresh token')
  t.equal(h.idp.refreshCount(), 2)
  t.notOk(h.events.some(e => (e.event as string) === 'upstream_access_lost'))
})

t.test('deprovisioning: a refreshed ID token naming another subject ends the grant (identity_changed)', async t => {
  const [h] = await setup(t) as [Harness]
  const tokens = await loginTokens(h, 'alice')
  const { grantId, tokens: upstream } = await readUpstream(h, tokens.access_token as string)
  // The ID token the login stored, as if it had named someone else (it is read, not verified, from our own store).
  const other = ['{"alg":"none"}', JSON.stringify({ sub: 'bob', iss: h.idp.issuer })].map(part => Buffer.from(part).toString('base64url')).join('.') + '.'
  await writeUpstream(h, grantId, { ...upstream, idToken: other })
  h.clock.advance(61 * MINUTE)
  const res = await refresh(h, tokens)
  t.equal(res.body.error, 'invalid_grant')
  t.equal(await h.app.mcpOAuth.storage.getGrant(grantId, h.clock.now()), null, 'revoked')
  t.match(h.events.find(e => (e.event as string) === 'upstream_access_lost')?.fields, { reason: 'identity_changed' })
})

t.test('deprovisioning: an answer that cannot be judged is 503, without spending an upstream refresh per retry', async t => {
  let broken = false
  const flaky = flakyUserInfo({
    mapUser: (_claims, user) => {
      if (broken) throw new Error('directory lookup failed')
      return user
    }
  })
  const [h] = await setup(t, { provider: flaky.provider }) as [Harness]
  const tokens = await loginTokens(h, 'alice')
  const grantId = await grantOf(h, tokens.access_token as string)
  h.clock.advance(61 * MINUTE)
  broken = true
  for (let i = 0; i < 3; i++) {
    const res = await refresh(h, tokens)
    t.equal(res.status, 503, `attempt ${i + 1}: 503`)
    t.ok(Number(res.headers.get('retry-after')) > 0, 'with Retry-After')
  }
  t.equal(h.idp.refreshCount(), 1, 'one upstream refresh for three attempts')
  t.match(h.events.filter(e => e.event === 'upstream_failure')[0]?.fields, { kind: 'invalid_response' })
  broken = false
  h.clock.advance(6 * MINUTE)
  const res = await refresh(h, tokens)
  t.equal(res.status, 200, 'after the pause, the check runs again and passes')
  t.equal(h.idp.refreshCount(), 2)
  t.not(await h.app.mcpOAuth.storage.getGrant(grantId, h.clock.now()), null)
})

t.test('offline access: the generic OIDC provider asks for a refresh token where the IdP offers offline_access', async t => {
  const [h] = await setup(t) as [Harness]
  const input = { redirectUri: `${h.issuer}/oauth/callback`, state: 's', codeVerifier: 'v'.repeat(43), nonce: 'n' }
  const url = await oidcProvider({ issuer: h.idp.issuer, clientId: 'mcp-proxy', clientSecret: SECRET }).authorizationUrl(input)
  t.same(url.searchParams.get('scope')?.split(' ').sort(), ['email', 'offline_access', 'openid', 'profile'])
  t.equal(url.searchParams.get('prompt'), null, 'no forced consent screen (a strict issuer needs authorizationParams.prompt)')
  const off = await oidcProvider({ issuer: h.idp.issuer, clientId: 'mcp-proxy', clientSecret: SECRET, offlineAccess: false }).authorizationUrl(input)
  t.notOk(off.searchParams.get('scope')?.includes('offline_access'), 'offlineAccess: false')
  const google = await googleProvider({ issuer: h.idp.issuer, clientId: 'mcp-proxy', clientSecret: SECRET }).authorizationUrl(input)
  t.notOk(google.searchParams.get('scope')?.includes('offline_access'), 'Google keeps access_type=offline')
  t.equal(google.searchParams.get('access_type'), 'offline')
})

t.test('deprovisioning without an upstream refresh token, once the stored access token has expired: skipped, not revoked', async t => {
  const [h] = await setup(t) as [Harness]
  const first = await loginTokens(h, 'alice')
  const { grantId, tokens: upstream } = await readUpstream(h, first.access_token as string)
  const { refreshToken: _dropped, ...withoutRefresh } = upstream
  // Expired: the IdP refuses it (401), as it refuses any token it no longer knows.
  await writeUpstream(h, grantId, { ...withoutRefresh, accessToken: 'expired-upstream-token', expiresAt: h.clock.now() + 30 * MINUTE })
  h.clock.advance(61 * MINUTE)
  const res = await refresh(h, first)
  t.equal(res.status, 200, 'the refresh works')
  t.not(await h.app.mcpOAuth.storage.getGrant(grantId, h.clock.now()), null, 'the grant stays')
  t.match(h.events.find(e => e.event === 'upstream_failure')?.fields, { provider: 'oidc', kind: 'recheck_impossible', step: 'refresh' })
  t.notMatch(JSON.stringify(h.events), /expired-upstream-token/, 'no upstream token in the audit stream')
})

t.test('deprovisioning: upstreamRecheckSeconds 0 turns the re-check off (with a start-up warning)', async t => {
  const [h] = await setup(t, { options: { upstreamRecheckSeconds: 0 } as Partial<McpOAuthOptions> }) as [Harness]
  t.ok(h.app.mcpOAuth.config.warnings.some(w => /upstreamRecheckSeconds is 0/.test(w)), 'warned')
  const tokens = await loginTokens(h, 'alice')
  h.disabled.add('alice')
  h.clock.advance(5 * 60 * MINUTE)
  const res = await refresh(h, tokens)
  t.equal(res.status, 200)
  t.equal(h.idp.refreshCount(), 0)
})

t.test('e-mail: only a verified address reaches request.mcpAuth', async t => {
  const [h] = await setup(t) as [Harness]
  h.claims.set('eve', { email: 'ceo@victim.example', email_verified: false })
  const eve = await loginTokens(h, 'eve')
  const unverified = await mcp(h, eve.access_token as string)
  t.equal(unverified.status, 200)
  t.notOk('email' in (unverified.auth ?? {}), 'an unverified address is dropped')
  t.equal(unverified.auth?.emailVerified, false)

  const alice = await loginTokens(h, 'alice')
  const verified = await mcp(h, alice.access_token as string)
  t.match(verified.auth, { userId: 'alice', email: 'alice@dev.local', emailVerified: true })

  const refreshed = await refresh(h, alice)
  t.match((await mcp(h, (refreshed.body as Record<string, string>).access_token as string)).auth, { email: 'alice@dev.local', emailVerified: true }, 'and after a refresh')
  const refreshedEve = await refresh(h, eve)
  const eveAgain = await mcp(h, (refreshedEve.body as Record<string, string>).access_token as string)
  t.notOk('email' in (eveAgain.auth ?? {}))
  t.equal(eveAgain.auth?.emailVerified, false)
})

t.test('e-mail: an address the IdP no longer vouches for is dropped at the re-check (the user id is the identity)', async t => {
  const [h] = await setup(t) as [Harness]
  const tokens = await loginTokens(h, 'alice')
  h.claims.set('alice', { email_verified: false })
  h.clock.advance(61 * MINUTE)
  const res = await refresh(h, tokens)
  t.equal(res.status, 200, 'the grant stays')
  const auth = (await mcp(h, (res.body as Record<string, string>).access_token as string)).auth
  t.notOk('email' in (auth ?? {}), 'the address is gone from the new access token')
  t.equal(auth?.emailVerified, false)
  t.notOk(h.events.some(e => (e.event as string) === 'upstream_access_lost'))

  // A new verified address replaces it, and is kept by the refreshes between checks.
  h.claims.set('alice', { email: 'alice.new@dev.local', email_verified: true })
  h.clock.advance(61 * MINUTE)
  const changed = await refresh(h, pair(res, tokens.client_id as string))
  t.equal(changed.status, 200)
  t.match((await mcp(h, (changed.body as Record<string, string>).access_token as string)).auth, { email: 'alice.new@dev.local', emailVerified: true })
  h.clock.advance(10 * MINUTE)
  const between = await refresh(h, pair(changed, tokens.client_id as string))
  t.match((await mcp(h, (between.body as Record<string, string>).access_token as string)).auth, { email: 'alice.new@dev.local', emailVerified: true }, 'between checks too')
})

/** The grant as the previous version stored it: an e-mail it never knew to be verified, and upstream tokens without the marker. */
async function makeLegacy (t: Test, h: Harness, accessToken: string): Promise<string> {
  const { grantId, tokens } = await readUpstream(h, accessToken)
  const { emailVerified: _marker, email: _email, checkedAt: _checked, ...old } = tokens as typeof tokens & { emailVerified?: boolean, email?: string, checkedAt?: number }
  await writeUpstream(h, grantId, old)
  t.ok((await h.app.mcpOAuth.storage.getGrant(grantId, h.clock.now()))?.email, 'the legacy grant carries an e-mail')
  return grantId
}

t.test('e-mail: grants of the previous version (e-mail never known to be verified) are not logged out on upgrade', async t => {
  t.test('re-check on: the IdP sends no email_verified (Entra ID): the grant stays, the e-mail goes', async t => {
    const [h] = await setup(t) as [Harness]
    const tokens = await loginTokens(h, 'alice')
    const grantId = await makeLegacy(t, h, tokens.access_token as string)
    h.claims.set('alice', { email_verified: undefined })
    h.clock.advance(61 * MINUTE)
    const res = await refresh(h, tokens)
    t.equal(res.status, 200, 'not revoked')
    t.not(await h.app.mcpOAuth.storage.getGrant(grantId, h.clock.now()), null)
    const auth = (await mcp(h, (res.body as Record<string, string>).access_token as string)).auth
    t.notOk('email' in (auth ?? {}))
    t.equal(auth?.emailVerified, false)
  })

  t.test('re-check off: a refresh no longer passes the old e-mail on as verified', async t => {
    const [h] = await setup(t, { options: { upstreamRecheckSeconds: 0 } as Partial<McpOAuthOptions> }) as [Harness]
    const tokens = await loginTokens(h, 'alice')
    await makeLegacy(t, h, tokens.access_token as string)
    h.clock.advance(61 * MINUTE)
    const res = await refresh(h, tokens)
    t.equal(res.status, 200)
    const auth = (await mcp(h, (res.body as Record<string, string>).access_token as string)).auth
    t.notOk('email' in (auth ?? {}), 'no e-mail')
    t.equal(auth?.emailVerified, false)
  })

  t.test('re-check on, the IdP verifies the address now: it is kept as verified', async t => {
    const [h] = await setup(t) as [Harness]
    const tokens = await loginTokens(h, 'alice')
    await makeLegacy(t, h, tokens.access_token as string)
    h.clock.advance(10 * MINUTE)
    const early = await refresh(h, tokens)
    t.notOk('email' in ((await mcp(h, (early.body as Record<string, string>).access_token as string)).auth ?? {}), 'before the check: unknown, dropped')
    h.clock.advance(51 * MINUTE)
    const res = await refresh(h, pair(early, tokens.client_id as string))
    t.match((await mcp(h, (res.body as Record<string, string>).access_token as string)).auth, { email: 'alice@dev.local', emailVerified: true })
  })
})

/**
 * A stand-in for github.com (an OAuth App: tokens without refresh tokens that do not expire) with
 * the REST endpoints the provider reads; GitHub itself cannot run on loopback. The test changes a
 * user's organisations and revokes tokens behind our back.
 */
async function startGithub (t: Test, app?: { refreshTokens: true }): Promise<{ baseUrl: string, orgs: Map<string, string[]>, tokens: Map<string, string>, apiCalls: () => number, refreshes: () => number, down: { user: boolean } }> {
  const server = Fastify({ forceCloseConnections: true })
  await server.register(formbody)
  const codes = new Map<string, string>()
  const tokens = new Map<string, string>()
  const orgs = new Map<string, string[]>([['octo', ['acme']]])
  // A GitHub App with expiring user tokens: refresh tokens, rotated on every use (the old one is dead).
  const refreshTokens = new Map<string, string>()
  const down = { user: false }
  let calls = 0
  let refreshes = 0
  server.get('/login/oauth/authorize', async (request, reply) => {
    const q = request.query as Record<string, string>
    const code = randomBytes(16).toString('hex')
    codes.set(code, 'octo')
    const back = new URL(q.redirect_uri as string)
    back.searchParams.set('code', code)
    back.searchParams.set('state', q.state as string)
    return await reply.redirect(back.href, 302)
  })
  server.post('/login/oauth/access_token', async (request) => {
    const body = request.body as Record<string, string>
    let login: string | undefined
    if (body.grant_type === 'refresh_token') {
      refreshes++
      login = refreshTokens.get(body.refresh_token ?? '')
      if (login === undefined) return { error: 'bad_refresh_token' }
      refreshTokens.delete(body.refresh_token as string)
    } else {
      login = codes.get(body.code ?? '')
      if (login === undefined) return { error: 'bad_verification_code' }
    }
    const token = `gho_${randomBytes(16).toString('hex')}`
    tokens.set(token, login)
    if (app === undefined) return { access_token: token, token_type: 'bearer', scope: 'read:user,user:email,read:org' }
    const refresh = `ghr_${randomBytes(16).toString('hex')}`
    refreshTokens.set(refresh, login)
    return { access_token: token, token_type: 'bearer', expires_in: 28800, refresh_token: refresh, scope: '' }
  })
  const who = (authorization: string | undefined): string | undefined => tokens.get(authorization?.replace(/^Bearer /, '') ?? '')
  server.get('/api/user', async (request, reply) => {
    calls++
    if (down.user) return await reply.code(502).send({ message: 'Server Error' })
    const login = who(request.headers.authorization)
    if (login === undefined) return await reply.code(401).send({ message: 'Bad credentials' })
    return { id: 101, login, name: 'Octo Cat', email: 'octo@example.com' }
  })
  server.get('/api/user/orgs', async (request, reply) => {
    calls++
    const login = who(request.headers.authorization)
    if (login === undefined) return await reply.code(401).send({ message: 'Bad credentials' })
    return (orgs.get(login) ?? []).map((name, i) => ({ login: name, id: i + 1 }))
  })
  await server.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => server.close())
  return { baseUrl: `http://127.0.0.1:${(server.server.address() as AddressInfo).port}`, orgs, tokens, apiCalls: () => calls, refreshes: () => refreshes, down }
}

t.test('deprovisioning with GitHub (no refresh token): membership and the token are checked again', async t => {
  const gh = await startGithub(t)
  const provider = (): Provider => githubProvider({ clientId: 'gh-app', clientSecret: 'gh-secret', baseUrl: gh.baseUrl, apiUrl: `${gh.baseUrl}/api`, allowedOrganizations: ['acme'], timeoutMs: 1500 })
  const [h] = await setup(t, { provider }) as [Harness]

  const first = await loginTokens(h, 'octo')
  t.match((await mcp(h, first.access_token as string)).auth, { userId: '101', email: 'octo@example.com', emailVerified: true })
  const atLogin = gh.apiCalls()
  h.clock.advance(61 * MINUTE)
  const ok = await refresh(h, first)
  t.equal(ok.status, 200, 'still in the organisation: the re-check passes')
  t.ok(gh.apiCalls() > atLogin, 'the stored token asked GitHub again')

  h.clock.advance(40 * MINUTE)
  const tokens = pair(await refresh(h, pair(ok, first.client_id as string)), first.client_id as string)
  gh.orgs.set('octo', ['other'])
  h.clock.advance(21 * MINUTE)
  const res = await refresh(h, tokens)
  t.equal(res.body.error, 'invalid_grant', 'removed from the organisation: refused')
  t.equal((await mcp(h, tokens.access_token as string)).status, 401)
  t.match(h.events.find(e => (e.event as string) === 'upstream_access_lost')?.fields, { provider: 'github', reason: 'not_allowed', userId: '101' })

  gh.orgs.set('octo', ['acme'])
  const second = await loginTokens(h, 'octo')
  gh.tokens.clear() // the user revoked the app's authorization at GitHub
  h.clock.advance(61 * MINUTE)
  const revoked = await refresh(h, second)
  t.equal(revoked.body.error, 'invalid_grant', 'a revoked GitHub authorization: refused')
  t.match(h.events.filter(e => (e.event as string) === 'upstream_access_lost')[1]?.fields, { reason: 'invalid_grant' })
})

await withRedisServer('deprovisioning across replicas', server => {
  t.test('two replicas on one Redis: one upstream call, and the recorded check holds for both', async t => {
    const store = new RedisStore({ url: server.url, prefix: `up-${Date.now()}:` })
    t.teardown(() => store.close())
    const [a, b] = await setup(t, { replicas: 2, options: { store } }) as [Harness, Harness]
    const tokens = await loginTokens(a, 'alice')
    a.clock.advance(61 * MINUTE)
    const results = await Promise.all([a, b, a, b, a, b].map(h => refresh(h, tokens)))
    t.equal(a.idp.refreshCount(), 1, 'one upstream call for refreshes racing on two replicas')
    t.ok(results.some(r => r.status === 200), 'the refresh went through')
    t.ok(results.every(r => r.status < 500), 'no server error')
    const next = pair(results.find(r => r.status === 200) ?? { body: {} }, tokens.client_id as string)
    b.clock.advance(30 * MINUTE)
    t.equal((await refresh(b, next)).status, 200)
    t.equal(a.idp.refreshCount(), 1, 'the check recorded through replica a holds on replica b')
  })
})

t.test('deprovisioning with a GitHub App (rotating refresh tokens): a 5xx from /user after the refresh keeps the new tokens', async t => {
  const gh = await startGithub(t, { refreshTokens: true })
  const provider = (): Provider => githubProvider({ clientId: 'gh-app', clientSecret: 'gh-secret', baseUrl: gh.baseUrl, apiUrl: `${gh.baseUrl}/api`, allowedOrganizations: ['acme'], timeoutMs: 1500 })
  const [h] = await setup(t, { provider }) as [Harness]
  const tokens = await loginTokens(h, 'octo')
  const grantId = await grantOf(h, tokens.access_token as string)
  h.clock.advance(61 * MINUTE)
  gh.down.user = true
  const res = await refresh(h, tokens)
  t.equal(res.status, 503, 'the GitHub API down after the token refresh: 503')
  t.equal(gh.refreshes(), 1)
  gh.down.user = false
  const again = await refresh(h, tokens)
  t.equal(again.status, 200, 'the next refresh works: GitHub got the new refresh token')
  t.equal(gh.refreshes(), 2)
  t.not(await h.app.mcpOAuth.storage.getGrant(grantId, h.clock.now()), null)
  t.notOk(h.events.some(e => (e.event as string) === 'upstream_access_lost'))
})
