import t, { type Test } from 'tap'
import Fastify from 'fastify'
import { context, trace, SpanStatusCode } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base'
import { FastifyOtelInstrumentation } from '@fastify/otel'
import { hashToken } from '../lib/oauth/tokens.js'
import { mcpOAuth, MemoryStore, StoreUnavailableError } from '../lib/index.js'
import { buildApp, ISSUER, RESOURCE } from './helpers/app.js'
import { authorizeUrl, login, REDIRECT, registerClient, startLogin, token } from './helpers/login.js'
import { Browser } from './helpers/browser.js'

// One SDK for this file (tap runs each file in its own process): spans go to memory.
const exporter = new InMemorySpanExporter()
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
const contextManager = new AsyncLocalStorageContextManager().enable()
context.setGlobalContextManager(contextManager)
trace.setGlobalTracerProvider(provider)
t.teardown(async () => {
  trace.disable()
  context.disable()
  await provider.shutdown()
})

const RS_SECRET = 'resource-server-secret-0123456789abcdef'

function named (spans: ReadableSpan[], name: string): ReadableSpan[] {
  return spans.filter(s => s.name === name)
}

function one (t: Test, spans: ReadableSpan[], name: string): ReadableSpan {
  const found = named(spans, name)
  t.equal(found.length, 1, `one ${name} span`)
  return found[0] as ReadableSpan
}

function childrenOf (spans: ReadableSpan[], parent: ReadableSpan): ReadableSpan[] {
  return spans
    .filter(s => s.parentSpanContext?.spanId === parent.spanContext().spanId)
    .sort((a, b) => (a.startTime[0] - b.startTime[0]) * 1e9 + (a.startTime[1] - b.startTime[1]))
}

function childNames (spans: ReadableSpan[], parent: ReadableSpan): string[] {
  return childrenOf(spans, parent).map(s => s.name)
}

/** Every string a span carries: its name, attribute values, event names and event attribute values. */
function strings (span: ReadableSpan): string[] {
  const out = [span.name, span.status.message ?? '']
  const add = (attrs: Record<string, unknown> | undefined) => {
    for (const [k, v] of Object.entries(attrs ?? {})) out.push(k, Array.isArray(v) ? v.join(' ') : String(v))
  }
  add(span.attributes)
  for (const event of span.events) {
    out.push(event.name)
    add(event.attributes)
  }
  return out
}

t.test('a login as a span tree, with storage and provider spans under each step, and no secret anywhere', async t => {
  const h = await startLogin(t, { introspection: { resourceServers: [{ id: 'rs', secret: RS_SECRET }] } })
  exporter.reset()

  const client = await registerClient(h)
  const clientId = client.client_id as string
  const verifier = 'v'.repeat(43)
  const browser = new Browser()
  const back = await login(h, authorizeUrl(h, clientId, verifier), browser)
  const code = back.searchParams.get('code') as string
  const issued = await token(h, { grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: REDIRECT, client_id: clientId })
  t.equal(issued.status, 200)
  const accessToken = issued.body.access_token as string
  const refreshToken = issued.body.refresh_token as string
  const refreshed = await token(h, { grant_type: 'refresh_token', refresh_token: refreshToken, client_id: clientId })
  t.equal(refreshed.status, 200)
  const upstream = await fetch(`${h.issuer}/mcp/upstream`, { method: 'POST', headers: { authorization: `Bearer ${refreshed.body.access_token as string}` } })
  const upstreamToken = (await upstream.json() as { accessToken: string }).accessToken
  t.ok(upstreamToken, 'the upstream token, to look for it in the spans')
  const grantIds = await h.app.mcpOAuth.storage.listGrants({ userId: 'alice' }, Date.now())
  const introspect = await fetch(`${h.issuer}/oauth/introspect`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`rs:${RS_SECRET}`).toString('base64')}` },
    body: new URLSearchParams({ token: refreshed.body.access_token as string })
  })
  t.equal(introspect.status, 200)
  const revoke = await fetch(`${h.issuer}/oauth/revoke`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token: refreshed.body.refresh_token as string, client_id: clientId })
  })
  t.equal(revoke.status, 200)

  const spans = exporter.getFinishedSpans()
  const steps = ['oauth.register', 'oauth.authorize', 'oauth.consent', 'oauth.callback', 'oauth.token_exchange', 'oauth.refresh', 'oauth.introspect', 'oauth.revoke']
  const byStep = Object.fromEntries(steps.map(name => [name, one(t, spans, name)]))
  for (const name of steps) {
    const span = byStep[name] as ReadableSpan
    t.equal(span.parentSpanContext, undefined, `${name} is the root of its request's trace`)
    t.equal(span.attributes['http.response.status_code'] !== undefined, true, `${name} has its status code`)
    for (const child of childrenOf(spans, span)) t.equal(child.spanContext().traceId, span.spanContext().traceId)
  }
  const authorize = byStep['oauth.authorize'] as ReadableSpan
  const consent = byStep['oauth.consent'] as ReadableSpan
  const callback = byStep['oauth.callback'] as ReadableSpan
  const exchange = byStep['oauth.token_exchange'] as ReadableSpan

  // The order of the steps is the order of the login.
  const start = (s: ReadableSpan) => s.startTime[0] * 1e9 + s.startTime[1]
  t.ok(start(authorize) < start(consent) && start(consent) < start(callback) && start(callback) < start(exchange), 'authorize -> consent -> callback -> token')

  // The consent page saves its form's single-use record; the submission takes it.
  t.same(childNames(spans, authorize), ['storage.getClient', 'storage.saveFlow'])
  t.same(childNames(spans, consent), ['storage.getClient', 'storage.takeFlow', 'provider.authorization_url', 'storage.saveFlow'])
  t.same(childNames(spans, callback), ['storage.takeFlow', 'provider.exchange_code', 'storage.saveCode'], 'callback: the flow, the provider, the code')
  t.same(childNames(spans, exchange), ['storage.getClient', 'storage.consumeCode', 'storage.saveGrantWithTokens'], 'exchange: the grant and its tokens in one store call')
  t.ok(childNames(spans, byStep['oauth.refresh'] as ReadableSpan).includes('storage.rotateRefreshTokenWithAccess'))

  const exchangeSpan = one(t, childrenOf(spans, callback), 'provider.exchange_code')
  t.equal(exchangeSpan.attributes['mcp_oauth.provider.name'], 'oidc')
  t.equal(exchangeSpan.status.code, SpanStatusCode.UNSET)
  const takeFlow = one(t, childrenOf(spans, callback), 'storage.takeFlow')
  t.equal(takeFlow.attributes['mcp_oauth.storage.backend'], 'MemoryStore')

  // Attributes: client ids yes, users hashed, the grant type, audit events as span events.
  for (const name of ['oauth.authorize', 'oauth.consent', 'oauth.callback', 'oauth.token_exchange', 'oauth.refresh', 'oauth.revoke', 'oauth.register']) {
    t.equal((byStep[name] as ReadableSpan).attributes['oauth.client_id'], clientId, `${name} names the client`)
  }
  t.equal(exchange.attributes['oauth.grant_type'], 'authorization_code')
  t.equal(exchange.attributes['http.route'], '/oauth/token')
  const loginEvent = callback.events.find(e => e.name === 'audit.login_succeeded')
  t.equal(loginEvent?.attributes?.['enduser.pseudo.id'], h.app.mcpOAuth.auditor.pseudonym('alice'), 'the user, pseudonymised as in the audit log')
  t.ok(callback.events.some(e => e.name === 'audit.callback_processed' && e.attributes?.['oauth.outcome'] === 'success'))
  t.ok(exchange.events.some(e => e.name === 'audit.token_issued'))
  t.ok((byStep['oauth.revoke'] as ReadableSpan).events.some(e => e.name === 'audit.token_revoked' && e.attributes?.['oauth.token_type'] === 'refresh_token'))

  // Nothing secret, nor its hash, nor the user's name, on any span.
  const cookies = [...browser.cookies.cookiesFor(new URL(h.issuer)), ...browser.cookies.cookiesFor(new URL(h.idp.issuer))].map(c => c.value)
  t.ok(cookies.length >= 2, 'the browser holds consent and IdP cookies')
  const secrets = [
    accessToken, refreshToken, refreshed.body.access_token as string, refreshed.body.refresh_token as string,
    code, verifier, 'client-state-1', upstreamToken, RS_SECRET, 'proxy-secret-proxy-secret-proxy-secret', ...cookies
  ].filter(s => s.length >= 8)
  const needles = [...secrets, ...secrets.map(hashToken), 'alice']
  const all = spans.flatMap(strings)
  t.ok(all.length > 100, `${spans.length} spans, ${all.length} strings checked`)
  const leaks = all.filter(value => needles.some(n => value.includes(n)))
  t.same(leaks, [], 'no token, code, verifier, state, cookie, secret, hash or user name in a span')
  t.same(all.filter(v => /mcp(at|rt|ac|cs|rg|fs)_/.test(v)), [], 'no credential of ours, by prefix')
  t.ok(grantIds.length > 0)
  t.same(all.filter(v => grantIds.some(id => v.includes(id))), [], 'no grant id either')
})

t.test('OAuth errors and store failures on the spans', async t => {
  let failing = false
  class FlakyStore extends MemoryStore {
    override async getRefreshToken (hash: string, now: number) {
      if (failing) throw new StoreUnavailableError('redis down')
      return super.getRefreshToken(hash, now)
    }
  }
  const { app } = await buildApp(t, {
    store: new FlakyStore(),
    clients: [{ client_id: 'static-app', redirect_uris: ['http://127.0.0.1:9/cb'], token_endpoint_auth_method: 'none' }]
  })
  exporter.reset()
  const post = (body: Record<string, string>) => app.inject({ method: 'POST', url: '/oauth/token', payload: new URLSearchParams(body).toString(), headers: { 'content-type': 'application/x-www-form-urlencoded' } })

  t.equal((await post({ grant_type: 'refresh_token', refresh_token: 'mcprt_' + 'a'.repeat(43), client_id: 'static-app' })).statusCode, 400)
  t.equal((await post({ grant_type: 'password', client_id: 'static-app' })).statusCode, 400)
  failing = true
  t.equal((await post({ grant_type: 'refresh_token', refresh_token: 'mcprt_' + 'b'.repeat(43), client_id: 'static-app' })).statusCode, 503)

  const spans = exporter.getFinishedSpans()
  const refreshes = named(spans, 'oauth.refresh')
  t.equal(refreshes.length, 2)
  const [invalid, unavailable] = refreshes as [ReadableSpan, ReadableSpan]
  t.equal(invalid.attributes['oauth.error'], 'invalid_grant')
  t.equal(invalid.attributes['http.response.status_code'], 400)
  t.equal(invalid.status.code, SpanStatusCode.UNSET, 'a 4xx is the client\'s error, not the span\'s')
  const other = one(t, spans, 'oauth.token')
  t.equal(other.attributes['oauth.error'], 'unsupported_grant_type')
  t.equal(other.attributes['oauth.grant_type'], undefined, 'an unknown grant type is not copied into an attribute')

  t.equal(unavailable.status.code, SpanStatusCode.ERROR, '503: the span failed')
  const failed = one(t, childrenOf(spans, unavailable), 'storage.getRefreshToken')
  t.equal(failed.status.code, SpanStatusCode.ERROR)
  t.equal(failed.attributes['error.type'], 'StoreUnavailableError')
  t.notOk(strings(failed).some(s => s.includes('redis down')), 'error messages stay out of spans')
})

t.test('the machine grants have their own token spans: client_credentials and jwt-bearer', async t => {
  const secret = 'machine-secret-0123456789abcdef'
  const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer'
  const { app } = await buildApp(t, {
    enterprise: { trustedIssuers: [{ issuer: 'https://idp.example.com', jwks_uri: 'https://idp.example.com/jwks' }] },
    clients: [
      { client_id: 'machine', client_secret: secret, grant_types: ['client_credentials'] },
      { client_id: 'agent', client_secret: secret, grant_types: [JWT_BEARER] }
    ]
  })
  exporter.reset()
  const post = (clientId: string, body: Record<string, string>) => app.inject({
    method: 'POST',
    url: '/oauth/token',
    payload: new URLSearchParams(body).toString(),
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${clientId}:${secret}`).toString('base64')}` }
  })
  const issued = await post('machine', { grant_type: 'client_credentials', resource: RESOURCE })
  t.equal(issued.statusCode, 200)
  // An assertion that is no JWT: refused before any key is fetched.
  const assertion = 'not-a-jwt-assertion-0123456789'
  t.equal((await post('agent', { grant_type: JWT_BEARER, assertion })).statusCode, 400)

  const spans = exporter.getFinishedSpans()
  const machine = one(t, spans, 'oauth.client_credentials')
  t.equal(machine.attributes['oauth.grant_type'], 'client_credentials')
  t.equal(machine.attributes['oauth.client_id'], 'machine')
  t.ok(machine.events.some(e => e.name === 'audit.token_issued' && e.attributes?.['oauth.grant_type'] === 'client_credentials'), 'the issuance is an event of its span')
  const agent = one(t, spans, 'oauth.jwt_bearer')
  t.equal(agent.attributes['oauth.grant_type'], JWT_BEARER)
  t.equal(agent.attributes['oauth.error'], 'invalid_grant')
  t.equal(named(spans, 'oauth.token').length, 0, 'neither falls back to the generic token span')
  const all = [machine, agent].flatMap(strings)
  t.notOk(all.some(v => v.includes(secret) || v.includes(assertion) || v.includes(issued.json().access_token)), 'no secret, assertion or token on the spans')
})

t.test('tracing: false removes every span', async t => {
  const { app } = await buildApp(t, { tracing: false })
  exporter.reset()
  await app.inject({ method: 'POST', url: '/oauth/token', payload: 'grant_type=refresh_token&refresh_token=x&client_id=y', headers: { 'content-type': 'application/x-www-form-urlencoded' } })
  t.same(exporter.getFinishedSpans(), [])

  const own = new InMemorySpanExporter()
  const ownProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(own)] })
  t.teardown(() => ownProvider.shutdown())
  const other = await buildApp(t, { tracing: { tracerProvider: ownProvider } })
  await other.app.inject({ method: 'POST', url: '/oauth/token', payload: 'grant_type=refresh_token&refresh_token=x&client_id=y', headers: { 'content-type': 'application/x-www-form-urlencoded' } })
  t.same(exporter.getFinishedSpans(), [], 'nothing on the global provider')
  t.ok(own.getFinishedSpans().some(s => s.name === 'oauth.refresh'), 'the given tracer provider gets the spans')
})

t.test('with @fastify/otel, the step spans are children of its request span', async t => {
  const instrumentation = new FastifyOtelInstrumentation()
  instrumentation.setTracerProvider(provider)
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(instrumentation.plugin())
  await app.register(mcpOAuth, {
    issuer: ISSUER,
    resources: [RESOURCE],
    clients: [{ client_id: 'static-app', redirect_uris: ['http://127.0.0.1:9/cb'], token_endpoint_auth_method: 'none' }]
  })
  app.post('/mcp', { onRequest: app.mcpOAuth.authenticate() }, async () => ({ ok: true }))
  await app.ready()
  exporter.reset()
  const res = await app.inject({
    method: 'POST',
    url: '/oauth/token',
    payload: 'grant_type=refresh_token&refresh_token=mcprt_' + 'c'.repeat(43) + '&client_id=static-app',
    headers: { 'content-type': 'application/x-www-form-urlencoded' }
  })
  t.equal(res.statusCode, 400)
  const spans = exporter.getFinishedSpans()
  const request = spans.find(s => s.name === 'request' && s.attributes['http.route'] === '/oauth/token')
  t.ok(request, '@fastify/otel made its request span')
  const refresh = one(t, spans, 'oauth.refresh')
  t.equal(refresh.parentSpanContext?.spanId, request?.spanContext().spanId, 'oauth.refresh is a child of the request span')
  t.same(childNames(spans, refresh), ['storage.getClient', 'storage.getRefreshToken'], 'storage spans stay under the step')
  t.notOk(spans.some(s => s.name.startsWith('handler - ')), 'the step span replaces @fastify/otel\'s handler span')
})

t.test('a step whose client goes away still ends its span', async t => {
  let slow = false
  let release: (() => void) | undefined
  class SlowStore extends MemoryStore {
    override async saveClient (client: Parameters<MemoryStore['saveClient']>[0]) {
      if (slow) await new Promise<void>(resolve => { release = resolve })
      return super.saveClient(client)
    }
  }
  const { app } = await buildApp(t, { store: new SlowStore(), registration: { mode: 'public' } })
  const address = await app.listen({ port: 0, host: '127.0.0.1' })
  exporter.reset()
  slow = true
  const controller = new AbortController()
  const pending = fetch(`${address}/oauth/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ redirect_uris: ['http://127.0.0.1:9/cb'], token_endpoint_auth_method: 'none' }),
    signal: controller.signal
  }).catch(() => 'aborted')
  const waiting = () => release === undefined
  for (let i = 0; i < 400 && waiting(); i++) await new Promise(resolve => setTimeout(resolve, 5))
  controller.abort()
  t.equal(await pending, 'aborted')
  let register: ReadableSpan | undefined
  for (let i = 0; i < 200 && register === undefined; i++) {
    await new Promise(resolve => setTimeout(resolve, 5))
    register = exporter.getFinishedSpans().find(s => s.name === 'oauth.register')
  }
  t.equal(register?.attributes['mcp_oauth.aborted'], true, 'ended when the client went away')
  release?.()
  await new Promise(resolve => setTimeout(resolve, 20))
  t.equal(named(exporter.getFinishedSpans(), 'oauth.register').length, 1, 'and only once')
})
