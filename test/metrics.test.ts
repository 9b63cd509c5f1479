import t from 'tap'
import { readFileSync } from 'node:fs'
import Fastify, { type FastifyInstance } from 'fastify'
import { exportJWK, generateKeyPair, SignJWT } from 'jose'
import { Registry } from 'prom-client'
import { mcpOAuth, MemoryStore, StoreUnavailableError, UpstreamError, type AuditEventName, type Provider, type StoreStats } from '../lib/index.js'
import { Metrics, METRIC_NAMES } from '../lib/telemetry/metrics.js'
import { instrumentProvider, instrumentStore } from '../lib/telemetry/instrument.js'
import { resolveTelemetryOptions } from '../lib/telemetry/options.js'
import { buildApp, ISSUER, RESOURCE } from './helpers/app.js'
import { authorizeUrl, login, loginTokens, REDIRECT, registerClient, startLogin, token, type LoginHarness } from './helpers/login.js'
import { Browser } from './helpers/browser.js'
import { buildPrometheusExample } from '../example/prometheus/app.js'

const TOKEN = 'metrics-token-0123456789abcdef'
const EXAMPLE = new URL('../example/prometheus/', import.meta.url)

// ---------------------------------------------------------------------------------------------
// The text exposition format, parsed: samples by name and labels, family types from # TYPE.

interface Sample { name: string, labels: Record<string, string>, value: number }
interface Scrape { samples: Sample[], families: Map<string, string> }

function parseExposition (text: string): Scrape {
  const samples: Sample[] = []
  const families = new Map<string, string>()
  for (const line of text.split('\n')) {
    if (line === '') continue
    const type = /^# TYPE (\S+) (\S+)$/.exec(line)
    if (type !== null) {
      families.set(type[1] as string, type[2] as string)
      continue
    }
    if (line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (m === null) throw new Error(`unparsable exposition line: ${line}`)
    const labels: Record<string, string> = {}
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1] as string] = (l[2] as string).replace(/\\(.)/g, '$1')
    samples.push({ name: m[1] as string, labels, value: Number(m[3]) })
  }
  return { samples, families }
}

/** Sum of the samples of `name` whose labels include `labels`. */
function value (scrape: Scrape, name: string, labels: Record<string, string> = {}): number {
  let sum = 0
  for (const s of scrape.samples) {
    if (s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)) sum += s.value
  }
  return sum
}

/** Names a scrape knows: every family, and the series names of histograms and summaries. */
function knownNames (scrape: Scrape): Set<string> {
  const names = new Set<string>()
  for (const [name, type] of scrape.families) {
    names.add(name)
    if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(name + s)
    if (type === 'summary') for (const s of ['_sum', '_count']) names.add(name + s)
  }
  return names
}

async function scrape (url: string, bearer: string | null = TOKEN): Promise<Scrape> {
  const res = await fetch(url, bearer === null ? {} : { headers: { authorization: `Bearer ${bearer}` } })
  if (res.status !== 200) throw new Error(`scrape answered ${res.status}`)
  return parseExposition(await res.text())
}

// ---------------------------------------------------------------------------------------------
// PromQL: the metric names an expression uses (identifiers that are not functions, keywords,
// label names, label values or durations).

const PROMQL_WORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'bool', 'offset', 'inf', 'nan'])

function promqlMetricNames (expr: string): string[] {
  let e = expr
    .replace(/label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,[^)]*\)/g, ' $1 ') // Grafana: label_values(metric, label)
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, ' ') // strings
    .replace(/\{[^}]*\}/g, ' ') // label matchers
    .replace(/\[[^\]]*\]/g, ' ') // ranges
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ') // grouping clauses
  e = e.replace(/\b\d+(ms|s|m|h|d|w|y)\b/g, ' ') // durations (offset 5m)
  e = e.replace(/\b\d+(\.\d+)?(e[+-]?\d+)?\b/gi, ' ')
  const names: string[] = []
  for (const m of e.matchAll(/([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?/g)) {
    const word = m[1] as string
    if (m[2] !== undefined) continue // a function call
    if (PROMQL_WORDS.has(word.toLowerCase())) continue
    names.push(word)
  }
  return names
}

function alertExpressions (yaml: string): string[] {
  const lines = yaml.split('\n')
  const exprs: string[] = []
  for (let i = 0; i < lines.length; i++) {
    const m = /^(\s*)expr:\s*(.*)$/.exec(lines[i] as string)
    if (m === null) continue
    if (m[2] !== '|' && m[2] !== '>') {
      exprs.push(m[2] as string)
      continue
    }
    const indent = (m[1] as string).length
    const block: string[] = []
    while (i + 1 < lines.length && ((lines[i + 1] as string).trim() === '' || /^(\s*)/.exec(lines[i + 1] as string)![1]!.length > indent)) block.push(lines[++i] as string)
    exprs.push(block.join('\n'))
  }
  return exprs
}

function dashboardExpressions (node: unknown, out: string[] = []): string[] {
  if (Array.isArray(node)) for (const n of node) dashboardExpressions(n, out)
  else if (node !== null && typeof node === 'object') {
    for (const [k, v] of Object.entries(node)) {
      if ((k === 'expr' || k === 'definition') && typeof v === 'string') out.push(v)
      else dashboardExpressions(v, out)
    }
  }
  return out
}

// ---------------------------------------------------------------------------------------------

async function metricsLogin (t: Parameters<typeof startLogin>[0], extra: Parameters<typeof startLogin>[1] = {}): Promise<LoginHarness> {
  return startLogin(t, {
    metrics: { enabled: true, token: TOKEN, statsCacheMs: 0 },
    refreshGraceSeconds: 0,
    rateLimit: { metadata: { max: 2, windowSeconds: 60 }, mcp: { max: 2, windowSeconds: 60 } },
    ...extra
  })
}

t.test('a login, refresh, reuse, revocation and rate-limit trips move exactly their families', async t => {
  const h = await metricsLogin(t)
  const metricsUrl = `${h.issuer}/metrics`

  // The endpoint wants its token.
  const open = await fetch(metricsUrl)
  t.equal(open.status, 401, 'no token: 401')
  t.match(open.headers.get('www-authenticate'), /^Bearer realm="metrics"/)
  t.equal((await fetch(metricsUrl, { headers: { authorization: 'Bearer wrong-token-wrong-token' } })).status, 401, 'wrong token: 401')
  t.equal((await fetch(metricsUrl, { headers: { authorization: `Basic ${TOKEN}` } })).status, 401, 'another scheme: 401')
  t.equal((await fetch(metricsUrl, { headers: { authorization: `Bearer ${TOKEN}x` } })).status, 401, 'a longer token: 401')

  const before = await scrape(metricsUrl)
  t.equal(before.families.get(METRIC_NAMES.httpRequests), 'counter')
  t.equal(value(before, METRIC_NAMES.codeExchanged), 0, 'counters start at zero')

  // A: a full login (registration, authorize, consent, upstream, callback, code exchange).
  const a = await loginTokens(h)
  // B: the guarded route with it.
  const mcp = (accessToken: string) => fetch(`${h.issuer}/mcp`, { method: 'POST', headers: { authorization: `Bearer ${accessToken}` } })
  t.equal((await mcp(a.access_token as string)).status, 200)
  // C: refresh.
  const refreshed = await token(h, { grant_type: 'refresh_token', refresh_token: a.refresh_token as string, client_id: a.client_id as string })
  t.equal(refreshed.status, 200)
  // D: revoke the new access token.
  const revoke = await fetch(`${h.issuer}/oauth/revoke`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token: refreshed.body.access_token as string, client_id: a.client_id as string })
  })
  t.equal(revoke.status, 200)
  // E: replay the rotated refresh token (no grace window here): reuse, the family goes.
  const replay = await token(h, { grant_type: 'refresh_token', refresh_token: a.refresh_token as string, client_id: a.client_id as string })
  t.equal(replay.status, 400)
  // F: a login whose code is first sent with a wrong verifier (PKCE failure), then again (code reuse).
  const client = await registerClient(h)
  const verifier = 'w'.repeat(43)
  const back = await login(h, authorizeUrl(h, client.client_id as string, verifier), new Browser(), 'bob')
  const code = back.searchParams.get('code') as string
  const exchange = (v: string) => token(h, { grant_type: 'authorization_code', code, code_verifier: v, redirect_uri: REDIRECT, client_id: client.client_id as string })
  t.equal((await exchange('x'.repeat(43))).status, 400, 'wrong verifier')
  t.equal((await exchange(verifier)).status, 400, 'the consumed code again')
  // G: one more login, whose grant stays.
  const g = await loginTokens(h)
  // H: rate limits: the metadata budget (per IP) and the per-user budget of the guarded route.
  const metadataUrl = `${h.issuer}/.well-known/oauth-authorization-server`
  const metadata = []
  for (let i = 0; i < 3; i++) metadata.push((await fetch(metadataUrl)).status)
  t.same(metadata, [200, 200, 429])
  const guarded = []
  for (let i = 0; i < 2; i++) guarded.push((await mcp(g.access_token as string)).status)
  t.same(guarded, [200, 429], 'the per-user budget of 2 (alice spent one in B)')
  // I: a URL no route serves.
  t.equal((await fetch(`${h.issuer}/no/such/route/${'x'.repeat(20)}`)).status, 404)

  const after = await scrape(metricsUrl)
  const delta = (name: string, labels: Record<string, string> = {}) => value(after, name, labels) - value(before, name, labels)

  // Flow
  t.equal(delta(METRIC_NAMES.authorizationStarted), 3, 'three authorizations started')
  t.equal(delta(METRIC_NAMES.consent, { decision: 'approved' }), 3)
  t.equal(delta(METRIC_NAMES.consent, { decision: 'denied' }), 0)
  t.equal(delta(METRIC_NAMES.callbackProcessed, { outcome: 'success' }), 3)
  t.equal(delta(METRIC_NAMES.callbackProcessed, { outcome: 'error' }), 0)
  t.equal(delta(METRIC_NAMES.codeExchanged), 2, 'two codes exchanged (F never got tokens)')
  t.equal(delta(METRIC_NAMES.tokensIssued, { grant_type: 'authorization_code' }), 2, 'the same two, by grant type')
  t.equal(delta(METRIC_NAMES.tokensIssued), 2, 'a refresh is not a new grant')
  t.equal(delta(METRIC_NAMES.tokenRefreshed), 1)
  t.equal(delta(METRIC_NAMES.tokenRevoked, { token_type: 'access_token' }), 1)
  t.equal(delta(METRIC_NAMES.tokenRevoked, { token_type: 'refresh_token' }), 0)
  t.equal(delta(METRIC_NAMES.clientRegistered, { source: 'dcr' }), 3)
  t.equal(delta(METRIC_NAMES.clientRegistered, { source: 'static' }), 0)
  // Security
  t.equal(delta(METRIC_NAMES.tokenReuse), 1, 'refresh token reuse')
  t.equal(delta(METRIC_NAMES.codeReuse), 1, 'code reuse')
  t.equal(delta(METRIC_NAMES.pkceFailed), 1, 'PKCE failure')
  t.equal(delta(METRIC_NAMES.rateLimitExceeded, { limiter_type: 'metadata' }), 1, 'metadata budget')
  t.equal(delta(METRIC_NAMES.rateLimitExceeded, { limiter_type: 'mcp' }), 1, 'per-user budget of the guard')
  t.equal(delta(METRIC_NAMES.rateLimitExceeded), 2, 'no other budget')
  t.equal(delta(METRIC_NAMES.browserMismatch), 0)
  // HTTP: route patterns, never URLs
  t.equal(delta(METRIC_NAMES.httpRequests, { method: 'POST', endpoint: '/oauth/token', status: '200' }), 3)
  t.equal(delta(METRIC_NAMES.httpRequests, { method: 'POST', endpoint: '/oauth/token', status: '400' }), 3)
  t.equal(delta(METRIC_NAMES.httpRequests, { method: 'POST', endpoint: '/oauth/revoke', status: '200' }), 1)
  t.equal(delta(METRIC_NAMES.httpRequests, { method: 'POST', endpoint: '/oauth/register', status: '201' }), 3)
  t.equal(delta(METRIC_NAMES.httpRequests, { method: 'GET', endpoint: '/oauth/callback', status: '302' }), 3)
  t.equal(delta(METRIC_NAMES.httpRequests, { endpoint: '/.well-known/oauth-authorization-server', status: '429' }), 1)
  t.equal(delta(METRIC_NAMES.httpRequests, { endpoint: '/mcp', status: '200' }), 2)
  t.equal(delta(METRIC_NAMES.httpRequests, { endpoint: '/mcp', status: '429' }), 1)
  t.equal(delta(METRIC_NAMES.httpRequests, { method: 'GET', endpoint: 'other', status: '404' }), 1, 'unknown routes are "other"')
  t.equal(delta(`${METRIC_NAMES.httpDuration}_count`, { endpoint: '/oauth/token' }), 6)
  t.equal(delta(`${METRIC_NAMES.httpDuration}_bucket`, { endpoint: '/oauth/token', le: '+Inf' }), 6)
  t.equal(delta(METRIC_NAMES.httpRequests, { endpoint: '/metrics' }), 0, 'scrapes are not counted')
  const endpoints = new Set(after.samples.filter(s => s.name === METRIC_NAMES.httpRequests).map(s => s.labels.endpoint))
  t.notOk([...endpoints].some(e => e?.includes('x'.repeat(20)) || e?.includes('?')), 'no raw URL in a label')
  // Storage
  t.equal(delta(METRIC_NAMES.storageOperations, { operation: 'consumeCode', result: 'ok' }), 4, 'A, F twice, G')
  t.equal(delta(`${METRIC_NAMES.storageDuration}_count`, { operation: 'consumeCode' }), 4)
  t.equal(delta(METRIC_NAMES.storageOperations, { operation: 'rotateRefreshTokenWithAccess', result: 'ok' }), 1, 'the rotation and the new access token in one call')
  // Per login: the consent form's single-use record (saved with the page, taken by the submission) and the flow.
  t.equal(delta(METRIC_NAMES.storageOperations, { operation: 'saveFlow' }), 6)
  t.equal(delta(METRIC_NAMES.storageOperations, { operation: 'takeFlow' }), 6)
  t.equal(delta(METRIC_NAMES.storageOperations, { result: 'error' }), 0)
  t.equal(value(after, METRIC_NAMES.storageOperations, { operation: 'stats', result: 'ok' }), 1, 'the first scrape read stats() once')
  t.equal(value(after, METRIC_NAMES.storageClients), 3)
  t.equal(value(after, METRIC_NAMES.storageFamilies), 1, 'only G\'s grant is left')
  t.equal(value(after, METRIC_NAMES.storageTokens), 1)
  t.equal(value(after, METRIC_NAMES.storageRefreshTokens), 1)
  t.equal(value(after, METRIC_NAMES.storageFlows), 0)
  // Provider
  t.equal(delta(METRIC_NAMES.providerCalls, { provider: 'oidc', operation: 'authorization_url' }), 3)
  t.equal(delta(METRIC_NAMES.providerCalls, { provider: 'oidc', operation: 'exchange_code' }), 3)
  t.equal(delta(`${METRIC_NAMES.providerDuration}_count`, { provider: 'oidc', operation: 'exchange_code' }), 3)
  t.equal(delta(METRIC_NAMES.providerErrors), 0)

  // No label value anywhere is a token, a code or a user.
  const secrets = [a.access_token, a.refresh_token, refreshed.body.access_token, refreshed.body.refresh_token, code, verifier, g.access_token, 'alice', 'bob'] as string[]
  const leaked = after.samples.flatMap(s => Object.values(s.labels)).filter(v => secrets.some(secret => v.includes(secret)))
  t.same(leaked, [], 'no secret or user in any label')
  t.notOk(after.samples.some(s => 'client_id' in s.labels), 'no client_id label by default')

  // Every metric name the alerts and the dashboard use is one the plugin emits.
  const known = knownNames(after)
  const alerts = alertExpressions(readFileSync(new URL('alerts.yml', EXAMPLE), 'utf8'))
  const dashboard = dashboardExpressions(JSON.parse(readFileSync(new URL('grafana-dashboard.json', EXAMPLE), 'utf8')))
  t.ok(alerts.length >= 10, `alerts.yml has expressions (${alerts.length})`)
  t.ok(dashboard.length >= 20, `the dashboard has expressions (${dashboard.length})`)
  const used = new Set([...alerts, ...dashboard].flatMap(promqlMetricNames))
  const unknown = [...used].filter(n => !known.has(n))
  t.same(unknown, [], 'every metric the alerts and the dashboard query exists in a scrape')
  // ... and between them they look at every family.
  const unwatched = Object.values(METRIC_NAMES).filter(n => ![...used].some(u => u === n || u.startsWith(`${n}_`)))
  t.same(unwatched, [], 'every family is on the dashboard or in an alert')
})

t.test('the PromQL name extractor', async t => {
  t.same(promqlMetricNames('sum by (endpoint) (rate(a_total{status=~"5..",x="y"}[5m])) / ignoring(le) b_count offset 5m > 0.05'), ['a_total', 'b_count'])
  t.same(promqlMetricNames('histogram_quantile(0.99, sum by (le) (rate(h_bucket[$__rate_interval])))'), ['h_bucket'])
  t.same(promqlMetricNames('label_values(oauth_http_requests_total, job)'), ['oauth_http_requests_total'])
  t.same(promqlMetricNames('g > 1e5 or delta(f[1h]) > 10 and on (job) k'), ['g', 'f', 'k'])
})

t.test('clientIdLabel static-only: static clients by id, every other client as "other"', async t => {
  const h = await metricsLogin(t, {
    metrics: { enabled: true, token: TOKEN, clientIdLabel: 'static-only' },
    clients: [{ client_id: 'static-app', redirect_uris: [REDIRECT], token_endpoint_auth_method: 'none' }]
  })
  const verifier = 's'.repeat(43)
  const back = await login(h, authorizeUrl(h, 'static-app', verifier), new Browser())
  const res = await token(h, { grant_type: 'authorization_code', code: back.searchParams.get('code') as string, code_verifier: verifier, redirect_uri: REDIRECT, client_id: 'static-app' })
  t.equal(res.status, 200)
  const dynamic = await loginTokens(h, 'carol')
  const s = await scrape(`${h.issuer}/metrics`)
  t.equal(value(s, METRIC_NAMES.codeExchanged, { client_id: 'static-app' }), 1)
  t.equal(value(s, METRIC_NAMES.codeExchanged, { client_id: 'other' }), 1)
  t.equal(value(s, METRIC_NAMES.authorizationStarted, { client_id: 'static-app' }), 1)
  const values = new Set(s.samples.map(x => x.labels.client_id).filter(v => v !== undefined))
  t.same([...values].sort(), ['other', 'static-app'], 'a registered client id never becomes a label value')
  t.notOk(values.has(dynamic.client_id as string))
})

t.test('tokens issued by grant type: client_credentials and jwt-bearer are counted with a short label', async t => {
  // A trusted enterprise IdP: its keys on a loopback server, ID-JAGs signed here.
  const { privateKey, publicKey } = await generateKeyPair('ES256')
  const jwk = { ...await exportJWK(publicKey), kid: 'idp-1', alg: 'ES256', use: 'sig' }
  const keys = Fastify({ logger: false })
  keys.get('/jwks', async () => ({ keys: [jwk] }))
  await keys.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => keys.close())
  const idp = `http://127.0.0.1:${(keys.server.address() as { port: number }).port}`
  const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer'
  const secret = 'machine-secret-0123456789abcdef'

  const { app, clock } = await buildApp(t, {
    metrics: { enabled: true, token: TOKEN, clientIdLabel: 'static-only' },
    enterprise: { trustedIssuers: [{ issuer: idp, jwks_uri: `${idp}/jwks` }] },
    clients: [
      { client_id: 'machine', client_secret: secret, grant_types: ['client_credentials'] },
      { client_id: 'agent', client_secret: secret, grant_types: [JWT_BEARER] }
    ]
  })
  const tokenRequest = (clientId: string, body: Record<string, string>) => app.inject({
    method: 'POST',
    url: '/oauth/token',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${clientId}:${secret}`).toString('base64')}` },
    payload: new URLSearchParams(body).toString()
  })
  let jti = 0
  const idJag = async () => {
    const iat = Math.floor(clock.now() / 1000)
    return new SignJWT({ iss: idp, sub: 'U123', aud: ISSUER, client_id: 'agent', resource: RESOURCE, scope: 'mcp:tools', jti: `jag-${++jti}`, iat, exp: iat + 300 })
      .setProtectedHeader({ alg: 'ES256', typ: 'oauth-id-jag+jwt', kid: 'idp-1' }).sign(privateKey)
  }
  const get = async () => parseExposition((await app.inject({ method: 'GET', url: '/metrics', headers: { authorization: `Bearer ${TOKEN}` } })).body)

  const before = await get()
  for (const grant of ['authorization_code', 'client_credentials', 'jwt_bearer']) {
    t.equal(before.samples.filter(s => s.name === METRIC_NAMES.tokensIssued && s.labels.grant_type === grant).length, 1, `${grant} starts at zero`)
  }
  t.equal(value(before, METRIC_NAMES.tokensIssued), 0)

  const statuses = []
  for (let i = 0; i < 2; i++) statuses.push((await tokenRequest('machine', { grant_type: 'client_credentials', resource: RESOURCE })).statusCode)
  for (let i = 0; i < 3; i++) statuses.push((await tokenRequest('agent', { grant_type: JWT_BEARER, assertion: await idJag() })).statusCode)
  t.same(statuses, [200, 200, 200, 200, 200])
  // Refused requests issue nothing: an ID-JAG of nobody's key, a client_credentials request of a client without that grant.
  t.equal((await tokenRequest('agent', { grant_type: JWT_BEARER, assertion: 'not.a.jwt' })).statusCode, 400)
  t.equal((await tokenRequest('agent', { grant_type: 'client_credentials' })).statusCode, 400)

  const after = await get()
  t.equal(value(after, METRIC_NAMES.tokensIssued, { client_id: 'machine', grant_type: 'client_credentials' }), 2)
  t.equal(value(after, METRIC_NAMES.tokensIssued, { client_id: 'agent', grant_type: 'jwt_bearer' }), 3)
  t.equal(value(after, METRIC_NAMES.tokensIssued, { grant_type: 'authorization_code' }), 0)
  t.equal(value(after, METRIC_NAMES.tokensIssued), 5, 'nothing else, the refusals included')
  t.equal(value(after, METRIC_NAMES.codeExchanged), 0, 'codeExchanged stays the authorization_code count')
  t.equal(value(after, METRIC_NAMES.storageOperations, { operation: 'consumeAssertionId', result: 'ok' }), 3, 'one jti spent per ID-JAG')
  t.equal(value(after, METRIC_NAMES.storageOperations, { operation: 'saveGrantWithTokens', result: 'ok' }), 5)
  const grantTypes = new Set(after.samples.filter(s => s.name === METRIC_NAMES.tokensIssued).map(s => s.labels.grant_type))
  t.same([...grantTypes].sort(), ['authorization_code', 'client_credentials', 'jwt_bearer'], 'no URN (and nothing unbounded) as a label value')
})

t.test('metrics disabled: no route, no hook, nothing wrapped', async t => {
  const hooksOf = (app: FastifyInstance) => {
    const sym = Object.getOwnPropertySymbols(app).find(s => s.description === 'fastify.hooks') as symbol
    return (app as unknown as Record<symbol, { onResponse: unknown[], onRequest: unknown[] } | undefined>)[sym]
  }
  const off = await buildApp(t, { metrics: { enabled: false }, tracing: false })
  t.equal((await off.app.inject({ method: 'GET', url: '/metrics' })).statusCode, 404)
  t.equal(hooksOf(off.app)?.onResponse.length, 0, 'no onResponse hook on the app')
  t.equal(hooksOf(off.app)?.onRequest.length, 0, 'no onRequest hook on the app')

  const absent = await buildApp(t, { tracing: false })
  t.equal((await absent.app.inject({ method: 'GET', url: '/metrics' })).statusCode, 404, 'off by default')
  t.equal(hooksOf(absent.app)?.onResponse.length, 0)

  const on = await buildApp(t, { metrics: { enabled: true, token: TOKEN } })
  t.equal(hooksOf(on.app)?.onResponse.length, 1, 'one onResponse hook when on')
})

t.test('a start-up warning without a token, none with one', async t => {
  const warnings = async (metrics: object) => {
    const seen: string[] = []
    await buildApp(t, {
      metrics: metrics as never,
      auditSink: (event, fields) => { if (event === 'config_weakened') seen.push((fields as { setting: string }).setting) }
    })
    return seen.filter(s => s.includes('metrics'))
  }
  const open = await warnings({ enabled: true })
  t.equal(open.length, 1)
  t.match(open[0], /metrics\.token is not set: \/metrics is readable by anyone/)
  t.same(await warnings({ enabled: true, token: TOKEN }), [])
  t.same(await warnings({ enabled: false }), [], 'no warning for metrics that are off')

  const { app } = await buildApp(t, { metrics: { enabled: true, path: '/internal/prom' } })
  const res = await app.inject({ method: 'GET', url: '/internal/prom' })
  t.equal(res.statusCode, 200, 'without a token the endpoint is open (and warned about)')
  t.match(res.headers['content-type'], /^text\/plain; version=0\.0\.4/)
  t.equal(res.headers['cache-control'], 'no-store')
})

t.test('option validation names the field', async t => {
  const cases: Array<[unknown, RegExp]> = [
    [{ metrics: true }, /option metrics: must be an object/],
    [{ metrics: { enabled: 'yes' } }, /option metrics\.enabled: must be a boolean/],
    [{ metrics: { enabled: true, path: 'metrics' } }, /option metrics\.path/],
    [{ metrics: { enabled: true, path: '/a b' } }, /option metrics\.path/],
    [{ metrics: { enabled: true, token: 'short' } }, /option metrics\.token: must be a string of at least 16/],
    [{ metrics: { enabled: true, registry: {} } }, /option metrics\.registry: must be a prom-client Registry/],
    [{ metrics: { enabled: true, clientIdLabel: 'all' } }, /option metrics\.clientIdLabel/],
    [{ metrics: { enabled: true, statsCacheMs: -1 } }, /option metrics\.statsCacheMs/],
    [{ metrics: { enabled: true, tokn: 'x' } }, /option metrics\.tokn: is not a known option/],
    [{ tracing: 'on' }, /option tracing: must be a boolean or an object/],
    [{ tracing: { enabled: 1 } }, /option tracing\.enabled/],
    [{ tracing: { tracerProvider: {} } }, /option tracing\.tracerProvider/]
  ]
  for (const [opts, message] of cases) {
    t.throws(() => resolveTelemetryOptions(opts as never), message, JSON.stringify(opts))
  }
  const app = Fastify()
  t.teardown(() => app.close())
  await t.rejects(async () => { await app.register(mcpOAuth, { issuer: 'https://auth.example.com', resources: ['https://auth.example.com/mcp'], metrics: { enabled: true, token: 'short' } }) },
    { code: 'FST_MCP_OAUTH_INVALID_OPTION' })
  t.same(resolveTelemetryOptions({}), { metrics: null, tracing: {} }, 'defaults: metrics off, tracing on')
})

t.test('a shared registry: families added, removed on close, refused twice', async t => {
  const registry = new Registry()
  const first = await buildApp(t, { metrics: { enabled: true, token: TOKEN, registry } })
  t.ok(registry.getSingleMetric(METRIC_NAMES.httpRequests), 'added to the given registry')
  const res = await first.app.inject({ method: 'GET', url: '/metrics', headers: { authorization: `Bearer ${TOKEN}` } })
  t.match(res.body, /oauth_http_requests_total/)

  const second = Fastify()
  t.teardown(() => second.close())
  await t.rejects(async () => {
    await second.register(mcpOAuth, {
      issuer: 'https://auth.example.com', resources: ['https://auth.example.com/mcp'], metrics: { enabled: true, token: TOKEN, registry }
    })
  }, /already in metrics.registry/)

  await first.app.close()
  t.equal(registry.getSingleMetric(METRIC_NAMES.httpRequests), undefined, 'removed on close')
  const third = await buildApp(t, { metrics: { enabled: true, token: TOKEN, registry } })
  t.ok(registry.getSingleMetric(METRIC_NAMES.httpRequests), 'a restart adds them again')
  await third.app.close()
})

t.test('store.stats(): cached between scrapes, a slow store times out and keeps the last values', async t => {
  let calls = 0
  let hang = false
  class CountingStore extends MemoryStore {
    override async stats (): Promise<StoreStats> {
      calls++
      if (hang) return new Promise(() => {})
      return super.stats()
    }
  }
  const { app } = await buildApp(t, { store: new CountingStore(), metrics: { enabled: true, token: TOKEN, statsCacheMs: 60_000, statsTimeoutMs: 50 } })
  const get = async () => parseExposition((await app.inject({ method: 'GET', url: '/metrics', headers: { authorization: `Bearer ${TOKEN}` } })).body)
  await get()
  await get()
  t.equal(calls, 1, 'one stats() call serves both scrapes (and all six gauges)')

  const slow = await buildApp(t, { store: new CountingStore(), metrics: { enabled: true, token: TOKEN, statsCacheMs: 0, statsTimeoutMs: 50 } })
  const scrapeSlow = async () => parseExposition((await slow.app.inject({ method: 'GET', url: '/metrics', headers: { authorization: `Bearer ${TOKEN}` } })).body)
  await slow.app.mcpOAuth.grants.issueTokens(await slow.app.mcpOAuth.grants.createGrant({ userId: 'u', clientId: 'c', scopes: ['mcp:tools'], resource: 'https://auth.example.com/mcp' }))
  t.equal(value(await scrapeSlow(), METRIC_NAMES.storageTokens), 1)
  hang = true
  // inject() holds no socket, and the plugin's timeout timer is unref'd: keep the test process alive.
  const keepAlive = setInterval(() => {}, 1000)
  t.teardown(() => clearInterval(keepAlive))
  const started = Date.now()
  const s = await scrapeSlow()
  t.ok(Date.now() - started < 1000, 'the scrape does not wait for a hanging store')
  t.equal(value(s, METRIC_NAMES.storageTokens), 1, 'the last values are served')
  // A scrape reads the counters before its own gauges have given up: the error of the previous scrape shows.
  t.equal(value(await scrapeSlow(), METRIC_NAMES.storageOperations, { operation: 'stats', result: 'error' }), 1, 'timeouts are counted as errors')
})

t.test('storage and provider wrappers: errors by kind, methods replaced later, non-contract members untouched', async t => {
  const metrics = await Metrics.create(
    { path: '/metrics', clientIdLabel: 'none', statsCacheMs: 0, statsTimeoutMs: 100 },
    { store: new MemoryStore(), staticClientIds: [], providerName: 'fake' }
  )
  t.teardown(() => metrics.close())
  const provider: Provider = {
    name: 'fake',
    authorizationUrl: async () => new URL('https://idp.example/authorize'),
    exchangeCode: async () => { throw new UpstreamError('fake', 'temporary', 'timeout') },
    refresh: async () => { throw new UpstreamError('fake', 'invalid_grant', 'dead') },
    revoke: async () => { throw new Error('boom') }
  }
  const wrapped = instrumentProvider(provider, undefined, metrics.recordProvider)
  t.equal(wrapped.name, 'fake')
  t.equal((await wrapped.authorizationUrl({ redirectUri: 'x', state: 's', codeVerifier: 'v', nonce: 'n' })).host, 'idp.example')
  await t.rejects(wrapped.refresh({ accessToken: 'a' }), UpstreamError, 'errors pass through unchanged')
  await t.rejects(wrapped.exchangeCode({} as never), { kind: 'temporary' } as never)
  await t.rejects((wrapped.revoke as NonNullable<Provider['revoke']>)({ accessToken: 'a' }), /boom/)

  const raw = new MemoryStore()
  t.teardown(() => raw.close())
  const store = instrumentStore(raw, undefined, metrics.recordStorage)
  t.ok(store instanceof MemoryStore, 'still a MemoryStore')
  t.equal(await store.getGrant('nope', Date.now()), null)
  raw.getGrant = async () => { throw new StoreUnavailableError('down') }
  await t.rejects(store.getGrant('nope', Date.now()), StoreUnavailableError, 'a method replaced on the store is picked up')
  t.same(await store.stats?.(), await raw.stats(), 'stats() is passed through, not measured')
  const patched = instrumentStore(new MemoryStore({ sweepIntervalMs: 0 }), undefined, undefined)
  patched.getClient = async () => null
  t.equal(await patched.getClient('any', Date.now()), null, 'a method can be assigned on the wrapped store too')
  // The guard's in-process lookup counts as getAccessToken, failures included.
  t.equal(store.getAccessTokenNow?.('nope', Date.now()), null)
  raw.getAccessTokenNow = () => { throw new StoreUnavailableError('down') }
  t.throws(() => store.getAccessTokenNow?.('nope', Date.now()), StoreUnavailableError)

  const s = parseExposition(await metrics.registry.metrics())
  t.equal(value(s, METRIC_NAMES.providerCalls, { provider: 'fake' }), 4)
  t.equal(value(s, METRIC_NAMES.providerErrors, { operation: 'refresh', kind: 'invalid_grant' }), 1)
  t.equal(value(s, METRIC_NAMES.providerErrors, { operation: 'exchange_code', kind: 'temporary' }), 1)
  t.equal(value(s, METRIC_NAMES.providerErrors, { operation: 'revoke', kind: 'unknown' }), 1)
  t.equal(value(s, METRIC_NAMES.providerErrors, { operation: 'authorization_url' }), 0)
  t.equal(value(s, METRIC_NAMES.storageOperations, { operation: 'getGrant', result: 'ok' }), 1)
  t.equal(value(s, METRIC_NAMES.storageOperations, { operation: 'getGrant', result: 'error' }), 1)
  t.equal(value(s, METRIC_NAMES.storageOperations, { operation: 'stats' }), 0)
  t.equal(value(s, METRIC_NAMES.storageOperations, { operation: 'getAccessToken', result: 'ok' }), 1)
  t.equal(value(s, METRIC_NAMES.storageOperations, { operation: 'getAccessToken', result: 'error' }), 1)
  t.equal(value(s, METRIC_NAMES.storageOperations, { operation: 'getAccessTokenNow' }), 0, 'no label of its own')

  // Every audit event has a decision in the table (the compiler checks it; this checks it runs).
  const events: AuditEventName[] = ['client_deleted', 'invalid_redirect', 'browser_mismatch', 'consent_denied', 'login_succeeded', 'upstream_failure', 'config_weakened']
  for (const e of events) metrics.onAudit(e, { clientId: 'c', userId: 'u', provider: 'p', kind: 'temporary', step: 'refresh', setting: 's' } as never)
  const e = parseExposition(await metrics.registry.metrics())
  t.equal(value(e, METRIC_NAMES.clientDeleted), 1)
  t.equal(value(e, METRIC_NAMES.invalidRedirect), 1)
  t.equal(value(e, METRIC_NAMES.browserMismatch), 1)
  t.equal(value(e, METRIC_NAMES.consent, { decision: 'denied' }), 1)
})

t.test('the Prometheus example serves metrics behind its token', async t => {
  const app = await buildPrometheusExample({ METRICS_TOKEN: TOKEN })
  t.teardown(() => app.close())
  t.equal((await app.inject({ method: 'GET', url: '/metrics' })).statusCode, 401)
  await app.inject({ method: 'GET', url: '/.well-known/oauth-authorization-server' })
  const res = await app.inject({ method: 'GET', url: '/metrics', headers: { authorization: `Bearer ${TOKEN}` } })
  t.equal(res.statusCode, 200)
  const s = parseExposition(res.body)
  t.equal(value(s, METRIC_NAMES.httpRequests, { endpoint: '/.well-known/oauth-authorization-server', status: '200' }), 1)
  t.ok(s.families.has(METRIC_NAMES.providerCalls))
  t.equal(value(s, METRIC_NAMES.providerCalls, { provider: 'dev-idp', operation: 'exchange_code' }), 0, 'the example\'s provider series start at zero')

  const prom = readFileSync(new URL('prometheus.yml', EXAMPLE), 'utf8')
  t.match(prom, /authorization:\s+type: Bearer\s+credentials_file:/, 'the scrape config sends the bearer token')
  t.match(prom, /metrics_path: \/metrics/)
  t.match(prom, /- alerts\.yml/)
})
