import t, { type Test } from 'tap'
import { createServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { s256 } from '../lib/oauth/pkce.js'
import type { McpOAuthOptions } from '../lib/index.js'
import { RedisStore } from '../lib/storage/redis/index.js'
import { buildApp, ISSUER, RESOURCE } from './helpers/app.js'
import { Browser, decodeEntities, type Page } from './helpers/browser.js'
import { authorizeUrl, REDIRECT, registerClient, startLogin, token, type LoginHarness } from './helpers/login.js'
import { withRedisServer } from './helpers/redis-tests.js'
import { selfSignedCert } from './helpers/tls.js'

/**
 * Issue 15, the browser side: errors before consent (finding 6), remembered consent and native
 * clients (9), where the consent page says the user goes (13), and a consent form used twice (15).
 */

const VERIFIER = 'hardening-browser-verifier-' + 'q'.repeat(30)
const WEB_REDIRECT = 'https://app.example.com/cb'

/** The link an error page offers back to the application, decoded; undefined when there is none. */
function backLink (body: string): { href: string, rel: string } | undefined {
  const m = /<a\b([^>]*)>/.exec(body)
  if (m === null) return undefined
  const attr = (name: string) => decodeEntities(new RegExp(`\\b${name}="([^"]*)"`).exec(m[1] as string)?.[1] ?? '')
  return { href: attr('href'), rel: attr('rel') }
}

/** What an error page must never do: move the browser on by itself. */
function noAutoRedirect (t: Test, page: { body: string, headers: Headers | Record<string, unknown> }, what: string): void {
  const header = (name: string) => page.headers instanceof Headers ? page.headers.get(name) : page.headers[name] as string | undefined
  t.notOk(header('location'), `${what}: no Location`)
  t.notOk(header('refresh'), `${what}: no Refresh header`)
  t.notMatch(page.body, /http-equiv/i, `${what}: no meta refresh`)
  t.notMatch(page.body, /<script/i, `${what}: no script`)
  t.match(String(header('content-security-policy')), /default-src 'none'/, `${what}: the pages' CSP`)
  t.match(String(header('content-security-policy')), /frame-ancestors 'none'/)
}

const atClient = (redirect: string) => (u: URL) => u.href.startsWith(redirect)

// ---- finding 6: errors before consent ------------------------------------------------------

t.test('finding 6: an error in a request from a client this browser never approved is a page, not a redirect', async t => {
  const h = await startLogin(t, { clients: [{ client_id: 'static-web', redirect_uris: ['https://static.example.com/cb'] }] })
  const client = await registerClient(h, { client_name: 'Evil <Corp>', redirect_uris: [WEB_REDIRECT] })
  const id = client.client_id as string
  const bad = authorizeUrl(h, id, VERIFIER, { redirect_uri: WEB_REDIRECT, scope: 'mcp:tools root' })
  const browser = new Browser()

  const page = await browser.get(bad, { stopAt: atClient(WEB_REDIRECT) })
  t.notOk(page.stoppedAt, 'not sent to the unapproved client')
  t.equal(page.status, 400)
  t.match(page.headers.get('content-type'), /^text\/html/)
  noAutoRedirect(t, page, 'error page')
  t.match(page.body, 'Evil &#60;Corp&#62;', 'the application is named, escaped')
  t.notMatch(page.body, '<Corp>')
  t.match(page.body, 'invalid_scope', 'the error is named')
  t.match(page.body, 'app.example.com', 'where the link leads')
  const link = backLink(page.body)
  t.ok(link, 'a link back to the application')
  t.equal(link?.rel, 'noreferrer')
  const back = new URL(link?.href ?? 'about:blank')
  t.equal(back.origin + back.pathname, WEB_REDIRECT, 'the link goes to the registered redirect URI')
  t.equal(back.searchParams.get('error'), 'invalid_scope')
  t.ok(back.searchParams.get('error_description'))
  t.equal(back.searchParams.get('state'), 'client-state-1')
  t.equal(back.searchParams.get('iss'), h.issuer)

  const other = await browser.get(authorizeUrl(h, id, VERIFIER, { redirect_uri: WEB_REDIRECT, response_type: 'token' }), { stopAt: atClient(WEB_REDIRECT) })
  t.equal(other.status, 400, 'another error: a page too')
  t.equal(new URL(backLink(other.body)?.href ?? 'about:blank').searchParams.get('error'), 'unsupported_response_type')

  // The user denies on the consent page: their own choice, after seeing the application.
  const consent = await browser.get(authorizeUrl(h, id, VERIFIER, { redirect_uri: WEB_REDIRECT }))
  const denied = await browser.submit(consent, {}, { submitter: 'deny', stopAt: atClient(WEB_REDIRECT) })
  t.equal(denied.stoppedAt?.searchParams.get('error'), 'access_denied', 'denial redirects as before')

  // Once approved in this browser, errors go back to the client as before.
  const done = await browser.drive(authorizeUrl(h, id, VERIFIER, { redirect_uri: WEB_REDIRECT }), {
    stopAt: atClient(WEB_REDIRECT), fields: { login: 'alice', password: 'x' }
  })
  t.ok(done.stoppedAt?.searchParams.get('code'), 'approved and logged in')
  const after = await browser.get(bad, { stopAt: atClient(WEB_REDIRECT) })
  t.equal(after.stoppedAt?.searchParams.get('error'), 'invalid_scope', 'after approval: redirected with the error')
  t.equal(after.stoppedAt?.searchParams.get('state'), 'client-state-1')
  t.equal(after.stoppedAt?.searchParams.get('iss'), h.issuer)

  const stranger = await new Browser().get(bad, { stopAt: atClient(WEB_REDIRECT) })
  t.equal(stranger.status, 400, 'another browser has not approved it: a page')

  // Clients the operator configured are trusted.
  const staticBad = await new Browser().get(authorizeUrl(h, 'static-web', VERIFIER, { redirect_uri: 'https://static.example.com/cb', scope: 'root' }),
    { stopAt: atClient('https://static.example.com/cb') })
  t.equal(staticBad.stoppedAt?.searchParams.get('error'), 'invalid_scope', 'static client: redirected')
})

t.test('finding 6: a client ID metadata document client gets the page too', async t => {
  const { cert, key } = selfSignedCert(t, ['client.test'])
  let id = ''
  const server = createServer({ key, cert }, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=300' })
    res.end(JSON.stringify({ client_id: id, client_name: 'Doc App', redirect_uris: ['https://doc.example.com/cb'] }))
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.closeAllConnections(); server.close() })
  id = `https://client.test:${(server.address() as AddressInfo).port}/client.json`
  const { app } = await buildApp(t, {
    clientIdMetadataDocuments: { allowPrivateAddresses: true },
    cimdTestHooks: { lookup: async () => [{ address: '127.0.0.1', family: 4 }], ca: cert }
  })
  const res = await app.inject(`/oauth/authorize?${new URLSearchParams({
    response_type: 'code', client_id: id, redirect_uri: 'https://doc.example.com/cb', code_challenge: s256(VERIFIER), code_challenge_method: 'S256', state: 's1', resource: RESOURCE
  })}&scope=${encodeURIComponent('mcp:tools root')}`)
  t.equal(res.statusCode, 400)
  noAutoRedirect(t, { body: res.body, headers: res.headers }, 'cimd error page')
  t.match(res.body, 'Doc App')
  const back = new URL(backLink(res.body)?.href ?? 'about:blank')
  t.equal(back.origin + back.pathname, 'https://doc.example.com/cb')
  t.same([back.searchParams.get('error'), back.searchParams.get('state'), back.searchParams.get('iss')], ['invalid_scope', 's1', ISSUER])
})

// ---- finding 9: remembered consent and native clients -------------------------------------

/** Approve once in `browser`, then ask again: the page the second request lands on. */
async function askTwice (h: LoginHarness, browser: Browser, clientId: string, redirect: string, second = redirect): Promise<Page> {
  const first = await browser.drive(authorizeUrl(h, clientId, VERIFIER, { redirect_uri: redirect }), {
    stopAt: atClient(redirect), fields: { login: 'alice', password: 'x' }
  })
  if (first.stoppedAt?.searchParams.get('code') == null) throw new Error('the first login did not complete')
  return await browser.get(authorizeUrl(h, clientId, VERIFIER, { redirect_uri: second }), { stopAt: atClient(second) })
}

t.test('finding 9: a public native client sees the consent page every time', async t => {
  const h = await startLogin(t)
  const loopback = await registerClient(h)
  const browser = new Browser()
  const again = await askTwice(h, browser, loopback.client_id as string, REDIRECT)
  t.notOk(again.stoppedAt, 'loopback client: no code without the page')
  t.equal(again.status, 200)
  t.equal(again.forms()[0]?.submitters[0]?.value, 'approve', 'the consent page again')
  const otherPort = await browser.get(authorizeUrl(h, loopback.client_id as string, VERIFIER, { redirect_uri: 'http://127.0.0.1:51234/callback' }),
    { stopAt: atClient('http://127.0.0.1:51234/callback') })
  t.notOk(otherPort.stoppedAt, 'from another port: the page as well')
  t.equal(otherPort.status, 200)

  const scheme = 'com.example.nativeapp:/oauth/cb'
  const app = await registerClient(h, { redirect_uris: [scheme] })
  const appAgain = await askTwice(h, new Browser(), app.client_id as string, scheme)
  t.notOk(appAgain.stoppedAt, 'private-use scheme client: no code without the page')
  t.equal(appAgain.status, 200)

  // Identity assured by a secret, or by an https redirect: the remembered approval still applies.
  const confidential = await registerClient(h, { token_endpoint_auth_method: 'client_secret_post' })
  const confAgain = await askTwice(h, new Browser(), confidential.client_id as string, REDIRECT)
  t.ok(confAgain.stoppedAt?.searchParams.get('code'), 'confidential loopback client: remembered')
  const web = await registerClient(h, { redirect_uris: [WEB_REDIRECT] })
  const webAgain = await askTwice(h, new Browser(), web.client_id as string, WEB_REDIRECT)
  t.ok(webAgain.stoppedAt?.searchParams.get('code'), 'public web client: remembered')
})

t.test('finding 9: consent.rememberNativeClients opts in, with a warning', async t => {
  const audited: string[] = []
  const h = await startLogin(t, {
    consent: { rememberNativeClients: true },
    auditSink: (event, fields) => { if (event === 'config_weakened') audited.push((fields as { setting: string }).setting) }
  })
  t.ok(h.app.mcpOAuth.config.warnings.some(w => w.includes('consent.rememberNativeClients')), 'a start-up warning')
  t.ok(audited.some(w => w.includes('consent.rememberNativeClients')), 'audited as config_weakened')
  const loopback = await registerClient(h)
  const again = await askTwice(h, new Browser(), loopback.client_id as string, REDIRECT, 'http://127.0.0.1:51234/callback')
  t.ok(again.stoppedAt?.searchParams.get('code'), 'remembered, from any port')

  const { app } = await buildApp(t)
  t.notOk(app.mcpOAuth.config.warnings.some(w => w.includes('rememberNativeClients')), 'no warning by default')
})

// ---- finding 13: where the consent page says the user goes ---------------------------------

t.test('finding 13: the consent page names a private-use scheme as an app, never its authority as a host', async t => {
  const { app } = await buildApp(t, {
    clients: [
      { client_id: 'evil-native', client_name: 'Google Drive', redirect_uris: ['com.evil.app://accounts.google.com/cb'] },
      { client_id: 'bare-scheme', redirect_uris: ['com.example.app:/oauth'] },
      { client_id: 'cli', redirect_uris: ['http://127.0.0.1/callback'] },
      { client_id: 'web', redirect_uris: [WEB_REDIRECT] }
    ]
  })
  const consent = async (clientId: string, redirect: string) => (await app.inject(`/oauth/authorize?${new URLSearchParams({
    response_type: 'code', client_id: clientId, redirect_uri: redirect, code_challenge: s256(VERIFIER), code_challenge_method: 'S256'
  })}`))
  const evil = await consent('evil-native', 'com.evil.app://accounts.google.com/cb')
  t.equal(evil.statusCode, 200)
  t.notMatch(evil.body, 'accounts.google.com', 'the authority is not presented as a destination')
  t.match(evil.body, /the app <strong>com\.evil\.app<\/strong>/, 'the scheme is named as the application')
  const bare = await consent('bare-scheme', 'com.example.app:/oauth')
  t.match(bare.body, /the app <strong>com\.example\.app<\/strong>/)
  t.notMatch(bare.body, 'com.example.app:</strong>')
  const cli = await consent('cli', 'http://127.0.0.1:40123/callback')
  t.match(cli.body, /an application on this computer/, 'loopback: an application on this computer')
  const web = await consent('web', WEB_REDIRECT)
  t.match(web.body, /sent to <strong>app\.example\.com<\/strong>/, 'https: the host, as before')
})

// ---- finding 15: one consent form, one answer -----------------------------------------------

async function oneFormOneCode (t: Test, opts: Partial<McpOAuthOptions> = {}): Promise<void> {
  const h = await startLogin(t, opts)
  const toIdp = (u: URL) => u.href.startsWith(h.idp.issuer)
  const browser = new Browser()
  // This browser approved some client before, so it holds a consent cookie (the binding secret).
  const earlier = await registerClient(h, { redirect_uris: ['https://earlier.example.com/cb'] })
  const first = await browser.drive(authorizeUrl(h, earlier.client_id as string, VERIFIER, { redirect_uri: 'https://earlier.example.com/cb' }), {
    stopAt: atClient('https://earlier.example.com/cb'), fields: { login: 'alice', password: 'x' }
  })
  t.ok(first.stoppedAt?.searchParams.get('code'), 'an earlier approval in this browser')

  const client = await registerClient(h, { redirect_uris: [WEB_REDIRECT] })
  const id = client.client_id as string
  const form = await browser.get(authorizeUrl(h, id, VERIFIER, { redirect_uri: WEB_REDIRECT }), { stopAt: toIdp })
  t.equal(form.status, 200, 'the consent page for a new client')

  const both = await Promise.all([0, 1].map(() => browser.submit(form, {}, { submitter: 'approve', stopAt: toIdp })))
  const upstream = both.filter(p => p.stoppedAt !== undefined)
  t.equal(upstream.length, 1, 'two parallel submissions: one goes upstream')
  const refused = both.find(p => p.stoppedAt === undefined)
  t.equal(refused?.status, 400)
  t.match(refused?.body, /already used/, 'the other is told the form was used')
  noAutoRedirect(t, { body: refused?.body ?? '', headers: refused?.headers ?? new Headers() }, 'used form page')

  const later = await browser.submit(form, {}, { submitter: 'approve', stopAt: toIdp })
  t.notOk(later.stoppedAt, 'submitted again later: nothing goes upstream')
  t.match(later.body, /already used/)
  const deny = await browser.submit(form, {}, { submitter: 'deny', stopAt: atClient(WEB_REDIRECT) })
  t.notOk(deny.stoppedAt, 'nor a denial through the used form')

  // Every upstream flow the form started is completed: the client gets exactly one code.
  const codes: string[] = []
  for (const started of upstream) {
    const done = await browser.drive(started.stoppedAt as URL, { stopAt: atClient(WEB_REDIRECT), fields: { login: 'alice', password: 'x' } })
    const code = done.stoppedAt?.searchParams.get('code')
    if (code != null) codes.push(code)
  }
  t.equal(codes.length, 1, 'one form, one code')
  const exchanged = await token(h, { grant_type: 'authorization_code', code: codes[0] as string, code_verifier: VERIFIER, redirect_uri: WEB_REDIRECT, client_id: id })
  t.equal(exchanged.status, 200)

  // The remembered-consent shortcut (a new request, no form) stays for this web client, and does
  // not revive the used form.
  const shortcut = await browser.get(authorizeUrl(h, id, VERIFIER, { redirect_uri: WEB_REDIRECT }), { stopAt: toIdp })
  t.ok(shortcut.stoppedAt, 'a new request of the approved client goes straight upstream')
  t.notOk(shortcut.history.some(u => u.pathname === '/oauth/consent'))
  const stillUsed = await browser.submit(form, {}, { submitter: 'approve', stopAt: toIdp })
  t.notOk(stillUsed.stoppedAt, 'the used form stays used although the client is now remembered')
}

t.test('finding 15: one consent form gives one upstream flow (memory store)', async t => {
  await oneFormOneCode(t)
})

await withRedisServer('finding 15 with the Redis store', server => {
  t.test('finding 15: one consent form gives one upstream flow (Redis store)', async t => {
    const store = new RedisStore({ url: server.url, prefix: `hb-${Date.now()}:` })
    t.teardown(() => store.close())
    await oneFormOneCode(t, { store })
  })
})
