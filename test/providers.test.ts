import t, { type Test } from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { createServer as createNetServer, type Socket } from 'node:net'
import type { AddressInfo } from 'node:net'
import Fastify, { type FastifyInstance } from 'fastify'
import formbody from '@fastify/formbody'
import { createRemoteJWKSet, jwtVerify } from 'jose'
import { startDevIdp, type DevIdp } from '../example/dev-idp.js'
import { Browser, CookieJar, decodeEntities, parseForms } from './helpers/browser.js'
import {
  githubProvider,
  googleProvider,
  oidcProvider,
  UpstreamError,
  type GithubProviderOptions,
  type GoogleProviderOptions,
  type OidcProviderOptions,
  type Provider,
  type UpstreamErrorKind
} from '../lib/providers/index.js'

type CustomFetch = NonNullable<OidcProviderOptions['customFetch']>

const REDIRECT_URI = 'http://127.0.0.1:9/oauth/callback'
const stopAtCallback = (url: URL): boolean => url.href.startsWith(REDIRECT_URI)

interface Flow { state: string, nonce: string, codeVerifier: string, redirectUri: string }

function newFlow (): Flow {
  const random = (): string => randomBytes(32).toString('base64url')
  return { state: random(), nonce: random(), codeVerifier: random(), redirectUri: REDIRECT_URI }
}

/** Runs the browser part of a login and returns the callback URL the IdP redirected to. */
async function login (provider: Provider, loginName = 'alice', flow = newFlow()): Promise<{ flow: Flow, callbackUrl: URL }> {
  const url = await provider.authorizationUrl(flow)
  const page = await new Browser().drive(url, { stopAt: stopAtCallback, fields: { login: loginName, password: 'any' } })
  if (page.stoppedAt === undefined) throw new Error('no callback')
  return { flow, callbackUrl: page.stoppedAt }
}

/** The UpstreamError a promise rejects with; fails the test when it resolves or throws something else. */
async function upstreamFailure (promise: Promise<unknown>): Promise<UpstreamError> {
  try {
    await promise
  } catch (err) {
    if (err instanceof UpstreamError) return err
    throw err
  }
  throw new Error('expected an UpstreamError, got success')
}

async function expectKind (t: Test, promise: Promise<unknown>, kind: UpstreamErrorKind, secrets: string[] = []): Promise<UpstreamError> {
  const err = await upstreamFailure(promise)
  t.equal(err.kind, kind, `kind is ${kind} (${err.message})`)
  for (const secret of secrets) t.notOk(err.message.includes(secret), 'the message carries no secret')
  return err
}

/** A fetch for openid-client that lets a test rewrite JSON answers. */
function rewritingFetch (edit: (url: URL, body: Record<string, unknown>, request: URLSearchParams | undefined) => Record<string, unknown> | undefined): CustomFetch {
  return async (url, options) => {
    const request = options.body instanceof URLSearchParams ? options.body : undefined
    const res = await fetch(url, options as RequestInit)
    if (res.headers.get('content-type')?.includes('json') !== true) return res
    const body = await res.json() as Record<string, unknown>
    const headers = new Headers(res.headers)
    headers.delete('content-length')
    headers.delete('content-encoding')
    return new Response(JSON.stringify(edit(new URL(url), body, request) ?? body), { status: res.status, headers })
  }
}

/** A TCP server that accepts connections and never answers. */
async function startBlackHole (): Promise<{ url: string, close: () => Promise<void> }> {
  const sockets = new Set<Socket>()
  const server = createNetServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => {
      for (const socket of sockets) socket.destroy()
      server.close(() => resolve())
    })
  }
}

function forgeJwt (payload: Record<string, unknown>): string {
  const part = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url')
  return `${part({ alg: 'none' })}.${part(payload)}.`
}

/** Per-login claim overrides of the shared dev IdP: unverified e-mail, and an account whose claims blow up. */
const specialLogins = (login: string): Record<string, unknown> => {
  if (login === 'explode') throw new Error('account store unavailable')
  return login.startsWith('unverified') ? { email_verified: false } : {}
}
const idpLog: string[] = []

const idp: DevIdp = await startDevIdp({
  clients: [
    { client_id: 'confidential', client_secret: 'idp-client-secret', redirect_uris: [REDIRECT_URI] },
    { client_id: 'public', redirect_uris: [REDIRECT_URI] }
  ],
  claims: specialLogins,
  log: (msg) => idpLog.push(msg)
})
t.teardown(() => idp.close())

const discovery = await (await fetch(`${idp.issuer}/.well-known/openid-configuration`)).json() as Record<string, string>

const blackHole = await startBlackHole()
t.teardown(() => blackHole.close())

function devOidc (extra: Partial<OidcProviderOptions> = {}): Provider {
  return oidcProvider({ issuer: idp.issuer, clientId: 'confidential', clientSecret: 'idp-client-secret', timeoutMs: 5000, ...extra })
}

t.test('dev IdP', async (t) => {
  t.match(idp.issuer, /^http:\/\/127\.0\.0\.1:\d+$/)
  t.equal(discovery.issuer, idp.issuer)
  t.ok(discovery.revocation_endpoint, 'advertises revocation')
  t.same(discovery.code_challenge_methods_supported, ['S256'])
  await t.rejects(startDevIdp({ host: '0.0.0.0', clients: [{ client_id: 'x', redirect_uris: [REDIRECT_URI] }] }), /loopback/)
  await t.rejects(startDevIdp({ clients: [] }), /client/)

  // Its notices go to `log` (even a log that writes to the console), and close() is idempotent.
  const notices: string[] = []
  const consoleCalls = t.capture(globalThis.console, 'info')
  const other = await startDevIdp({
    port: 0,
    clients: [{ client_id: 'x', redirect_uris: [REDIRECT_URI] }],
    log: (msg) => {
      notices.push(msg)
      globalThis.console.info('dev IdP says something')
    }
  })
  t.ok(notices.some((msg) => msg.includes('devInteractions')), 'the dev interactions warning reached log')
  t.ok(consoleCalls().some((call) => call.args[0] === 'dev IdP says something'), 'other console output passes through')
  const plain = oidcProvider({ issuer: other.issuer, clientId: 'x' })
  const { flow, callbackUrl } = await login(plain, 'zed')
  t.same((await plain.exchangeCode({ ...flow, callbackUrl })).user, { id: 'zed', email: 'zed@dev.local', emailVerified: true, name: 'zed' }, 'default accounts')
  await Promise.all([other.close(), other.close()])

  await t.rejects(startDevIdp({ clients: [{ client_id: 'bad', redirect_uris: ['not a url'] }] }), /redirect_uri/, 'a bad client configuration is refused')

  // IPv6 loopback, where the machine has it.
  const v6 = await startDevIdp({ host: '::1', clients: [{ client_id: 'x', redirect_uris: [REDIRECT_URI] }] }).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'EADDRNOTAVAIL' || err.code === 'EAFNOSUPPORT') return undefined
    throw err
  })
  if (v6 === undefined) {
    t.comment('no IPv6 loopback here')
  } else {
    t.match(v6.issuer, /^http:\/\/\[::1\]:\d+$/)
    const url = await oidcProvider({ issuer: v6.issuer, clientId: 'x' }).authorizationUrl(newFlow())
    t.equal(url.hostname, '[::1]')
    await v6.close()
  }

  // Its error page names the error and nothing else.
  const page = await fetch(`${idp.issuer}/auth`)
  t.equal(page.status, 400)
  t.match(await page.text(), /<h1>invalid_request<\/h1>/)

  // No CORS at the token endpoint for browsers on other origins.
  const cors = await fetch(discovery.token_endpoint as string, {
    method: 'POST',
    headers: { origin: 'https://elsewhere.example', authorization: `Basic ${Buffer.from('confidential:idp-client-secret').toString('base64')}` },
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: 'x' })
  })
  t.equal(cors.status, 400)
  t.equal(cors.headers.get('access-control-allow-origin'), null)
  await cors.body?.cancel()

  // PKCE is required.
  const res = await fetch(`${idp.issuer}/auth?client_id=confidential&response_type=code&scope=openid&redirect_uri=${encodeURIComponent(REDIRECT_URI)}`, { redirect: 'manual' })
  t.match(res.headers.get('location'), /error=invalid_request/, 'an authorization request without PKCE is refused')
})

t.test('oidcProvider against the dev IdP', async (t) => {
  const provider = devOidc()
  t.equal(provider.name, 'oidc')

  t.test('authorization URL', async (t) => {
    const flow = newFlow()
    const url = await provider.authorizationUrl(flow)
    t.equal(url.origin + url.pathname, discovery.authorization_endpoint)
    const params = url.searchParams
    t.equal(params.get('response_type'), 'code')
    t.equal(params.get('client_id'), 'confidential')
    t.equal(params.get('redirect_uri'), REDIRECT_URI)
    t.equal(params.get('scope'), 'openid email profile offline_access', 'offline_access: the issuer lists it')
    t.equal(params.get('state'), flow.state)
    t.equal(params.get('nonce'), flow.nonce)
    t.equal(params.get('code_challenge_method'), 'S256')
    t.equal(params.get('code_challenge'), createHash('sha256').update(flow.codeVerifier).digest('base64url'))
  })

  t.test('login, exchange, refresh, revoke', async (t) => {
    const { flow, callbackUrl } = await login(provider, 'alice')
    t.ok(callbackUrl.searchParams.get('code'), 'the IdP sent a code')
    t.equal(callbackUrl.searchParams.get('iss'), idp.issuer, 'RFC 9207 iss is present')

    const { tokens, user } = await provider.exchangeCode({ ...flow, callbackUrl })
    t.same(user, { id: 'alice', email: 'alice@dev.local', emailVerified: true, name: 'alice' })
    t.ok(tokens.accessToken)
    t.ok(tokens.refreshToken, 'a refresh token without offline_access')
    t.equal(tokens.tokenType, 'bearer')
    t.ok(tokens.expiresAt !== undefined && tokens.expiresAt > Date.now() + 3500_000 && tokens.expiresAt <= Date.now() + 3600_000)
    t.equal(tokens.scope, 'openid email profile')

    // The ID token is genuine: signed by the IdP's key, for this client, with our nonce.
    const jwks = createRemoteJWKSet(new URL(discovery.jwks_uri as string))
    const { payload } = await jwtVerify(tokens.idToken as string, jwks, { issuer: idp.issuer, audience: 'confidential' })
    t.equal(payload.nonce, flow.nonce)
    t.equal(payload.sub, 'alice')

    const before = idp.refreshCount()
    const refreshed = await provider.refresh(tokens)
    t.equal(idp.refreshCount(), before + 1, 'the IdP saw one refresh')
    t.not(refreshed.accessToken, tokens.accessToken, 'a new access token')
    t.ok(refreshed.refreshToken !== undefined && refreshed.refreshToken !== tokens.refreshToken, 'the refresh token rotated')
    t.ok(refreshed.idToken)

    const latest = await provider.refresh({ ...refreshed, idToken: 'not a jwt' })
    t.ok(latest.accessToken, 'an undecodable stored ID token is not compared')

    const info = await fetch(discovery.userinfo_endpoint as string, { headers: { authorization: `Bearer ${latest.accessToken}` } })
    t.equal(info.status, 200)
    await info.body?.cancel()

    await provider.revoke?.(latest)
    const after = await fetch(discovery.userinfo_endpoint as string, { headers: { authorization: `Bearer ${latest.accessToken}` } })
    t.equal(after.status, 401, 'the access token is revoked')
    await after.body?.cancel()
    await expectKind(t, provider.refresh(latest), 'invalid_grant')
    await provider.revoke?.({ accessToken: latest.accessToken }) // revoking twice is fine

    await expectKind(t, provider.refresh({ accessToken: 'x' }), 'invalid_grant')
  })

  t.test('a replayed refresh token', async (t) => {
    const { flow, callbackUrl } = await login(provider)
    const { tokens } = await provider.exchangeCode({ ...flow, callbackUrl })
    const before = idp.refreshCount()
    const refreshed = await provider.refresh(tokens)
    await expectKind(t, provider.refresh(tokens), 'invalid_grant', [tokens.refreshToken as string])
    t.equal(idp.refreshCount(), before + 2, 'failed refreshes count too')
    // oidc-provider revokes the whole grant on reuse, as OAuth 2.1 recommends.
    await expectKind(t, provider.refresh(refreshed), 'invalid_grant')
  })

  t.test('a refreshed ID token must name the same subject', async (t) => {
    const { flow, callbackUrl } = await login(provider, 'alice')
    const { tokens } = await provider.exchangeCode({ ...flow, callbackUrl })
    await expectKind(t, provider.refresh({ ...tokens, idToken: forgeJwt({ sub: 'mallory' }) }), 'identity_changed')
  })

  t.test('an IdP failure is temporary and reaches the IdP log', async (t) => {
    const { flow, callbackUrl } = await login(provider, 'explode')
    await expectKind(t, provider.exchangeCode({ ...flow, callbackUrl }), 'temporary')
    t.ok(idpLog.some((msg) => msg.includes('account store unavailable')))
  })

  t.test('a programming error (empty expected state) is invalid_response', async (t) => {
    const flow = newFlow()
    const callbackUrl = new URL(`${REDIRECT_URI}?code=x&state=y&iss=${encodeURIComponent(idp.issuer)}`)
    const err = await expectKind(t, provider.exchangeCode({ ...flow, state: '', callbackUrl }), 'invalid_response')
    t.match(err.message, /invalid argument/)
  })

  t.test('the nonce is checked', async (t) => {
    const { flow, callbackUrl } = await login(provider)
    await expectKind(t, provider.exchangeCode({ ...flow, nonce: 'another-nonce', callbackUrl }), 'invalid_response')
  })

  t.test('the state is checked', async (t) => {
    const { flow, callbackUrl } = await login(provider)
    const code = callbackUrl.searchParams.get('code') as string
    await expectKind(t, provider.exchangeCode({ ...flow, state: 'another-state', callbackUrl }), 'invalid_response', [code])
  })

  t.test('the issuer of the authorization response is checked', async (t) => {
    const { flow, callbackUrl } = await login(provider)
    callbackUrl.searchParams.set('iss', 'https://evil.example')
    await expectKind(t, provider.exchangeCode({ ...flow, callbackUrl }), 'invalid_response')
  })

  t.test('a wrong PKCE verifier is refused', async (t) => {
    const { flow, callbackUrl } = await login(provider)
    await expectKind(t, provider.exchangeCode({ ...flow, codeVerifier: randomBytes(32).toString('base64url'), callbackUrl }), 'invalid_grant')
  })

  t.test('a code works once', async (t) => {
    const { flow, callbackUrl } = await login(provider)
    await provider.exchangeCode({ ...flow, callbackUrl })
    const code = callbackUrl.searchParams.get('code') as string
    await expectKind(t, provider.exchangeCode({ ...flow, callbackUrl }), 'invalid_grant', [code])
  })

  t.test('error responses on the callback', async (t) => {
    const flow = newFlow()
    const denied = new URL(`${REDIRECT_URI}?error=access_denied&error_description=no&state=${flow.state}`)
    await expectKind(t, provider.exchangeCode({ ...flow, callbackUrl: denied }), 'access_denied')
    const busy = new URL(`${REDIRECT_URI}?error=temporarily_unavailable&state=${flow.state}`)
    await expectKind(t, provider.exchangeCode({ ...flow, callbackUrl: busy }), 'temporary')
    const odd = new URL(`${REDIRECT_URI}?error=${encodeURIComponent('<script>')}&state=${flow.state}`)
    const err = await expectKind(t, provider.exchangeCode({ ...flow, callbackUrl: odd }), 'access_denied')
    t.notOk(err.message.includes('<script>'), 'upstream text is not echoed')

    // The user pressing "abort" on the IdP's login page.
    const url = await provider.authorizationUrl(flow)
    const browser = new Browser()
    const page = await browser.get(url, { stopAt: stopAtCallback })
    t.equal(page.forms()[0]?.names.has('login'), true, 'the login form')
    const aborted = await browser.get(new URL(`${page.url.pathname}/abort`, page.url), { stopAt: stopAtCallback })
    t.equal(aborted.stoppedAt?.searchParams.get('error'), 'access_denied')
    await expectKind(t, provider.exchangeCode({ ...flow, callbackUrl: aborted.stoppedAt as URL }), 'access_denied')
  })

  t.test('a public client', async (t) => {
    const publicProvider = oidcProvider({ issuer: new URL(idp.issuer), clientId: 'public', timeoutMs: 5000 })
    const { flow, callbackUrl } = await login(publicProvider, 'pat')
    const { user, tokens } = await publicProvider.exchangeCode({ ...flow, callbackUrl })
    t.equal(user.id, 'pat')
    const refreshed = await publicProvider.refresh(tokens)
    t.ok(refreshed.accessToken)
  })

  t.test('client_secret_post and a wrong secret', async (t) => {
    const post = devOidc({ clientAuthMethod: 'client_secret_post' })
    const first = await login(post)
    const { user } = await post.exchangeCode({ ...first.flow, callbackUrl: first.callbackUrl })
    t.equal(user.id, 'alice')

    // A wrong secret is a configuration problem, not a dead grant.

    const wrong = devOidc({ clientSecret: 'not-the-secret' })
    const second = await login(wrong)
    await expectKind(t, wrong.exchangeCode({ ...second.flow, callbackUrl: second.callbackUrl }), 'invalid_response', ['not-the-secret'])
  })

  t.test('client authentication follows the issuer metadata', async (t) => {
    const methodWith = async (advertised: string[] | undefined): Promise<string> => {
      let used = 'none'
      const provider = devOidc({
        customFetch: async (url, options) => {
          if (url === discovery.token_endpoint) {
            const body = options.body as URLSearchParams
            used = options.headers.authorization?.startsWith('Basic ') === true ? 'basic' : body.has('client_secret') ? 'post' : 'none'
          }
          const res = await fetch(url, options as RequestInit)
          if (!url.endsWith('openid-configuration')) return res
          const { token_endpoint_auth_methods_supported: _methods, ...metadata } = await res.json() as Record<string, unknown>
          return Response.json(advertised === undefined ? metadata : { ...metadata, token_endpoint_auth_methods_supported: advertised })
        }
      })
      const { flow, callbackUrl } = await login(provider)
      await provider.exchangeCode({ ...flow, callbackUrl })
      return used
    }
    t.equal(await methodWith(undefined), 'basic', 'basic when the issuer says nothing (RFC 8414 default)')
    t.equal(await methodWith(['client_secret_post', 'private_key_jwt']), 'post', 'post when basic is not offered')
    t.equal(await methodWith(['client_secret_basic', 'client_secret_post']), 'basic')
  })

  t.test('the ID token signature is verified', async (t) => {
    const tampering = devOidc({
      customFetch: rewritingFetch((url, body) => {
        if (url.href !== discovery.token_endpoint || typeof body.id_token !== 'string') return undefined
        const [header, payload, signature] = body.id_token.split('.') as [string, string, string]
        const claims = JSON.parse(Buffer.from(payload, 'base64url').toString()) as Record<string, unknown>
        claims.email = 'admin@dev.local'
        return { ...body, id_token: `${header}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${signature}` }
      })
    })
    const { flow, callbackUrl } = await login(tampering)
    await expectKind(t, tampering.exchangeCode({ ...flow, callbackUrl }), 'invalid_response')
  })

  t.test('a token response without an ID token', async (t) => {
    const stripping = devOidc({
      customFetch: rewritingFetch((url, body) => {
        if (url.href !== discovery.token_endpoint) return undefined
        const { id_token: _idToken, ...rest } = body
        return rest
      })
    })
    const { flow, callbackUrl } = await login(stripping)
    await expectKind(t, stripping.exchangeCode({ ...flow, callbackUrl }), 'invalid_response')
  })

  t.test('refresh keeps the refresh token the provider did not resend', async (t) => {
    const keeping = devOidc({
      customFetch: rewritingFetch((_url, body, request) => {
        if (request?.get('grant_type') !== 'refresh_token') return undefined
        const { refresh_token: _refreshToken, id_token: _idToken, scope: _scope, ...rest } = body
        return rest
      })
    })
    const { flow, callbackUrl } = await login(keeping)
    const { tokens } = await keeping.exchangeCode({ ...flow, callbackUrl })
    const refreshed = await keeping.refresh(tokens)
    t.equal(refreshed.refreshToken, tokens.refreshToken, 'the stored refresh token is kept')
    t.equal(refreshed.idToken, tokens.idToken, 'so is the ID token')
    t.equal(refreshed.scope, tokens.scope, 'and the scope')
    t.not(refreshed.accessToken, tokens.accessToken)
  })

  t.test('mapUser', async (t) => {
    const mapped = devOidc({ mapUser: (claims, user) => ({ ...user, id: `dev|${claims.sub}`, name: 'Custom' }) })
    const first = await login(mapped, 'carol')
    const { user } = await mapped.exchangeCode({ ...first.flow, callbackUrl: first.callbackUrl })
    t.same(user, { id: 'dev|carol', email: 'carol@dev.local', emailVerified: true, name: 'Custom' })

    const refusing = devOidc({ mapUser: () => { throw new UpstreamError('oidc', 'not_allowed', 'oidc: not on the list') } })
    const second = await login(refusing)
    await expectKind(t, refusing.exchangeCode({ ...second.flow, callbackUrl: second.callbackUrl }), 'not_allowed')

    const broken = devOidc({ mapUser: () => { throw new Error('bug with a secret-ish detail') } })
    const third = await login(broken)
    const err = await expectKind(t, broken.exchangeCode({ ...third.flow, callbackUrl: third.callbackUrl }), 'invalid_response')
    t.notOk(err.message.includes('secret-ish'))

    const odd = devOidc({ mapUser: () => { throw 'a string' } }) // eslint-disable-line no-throw-literal
    const fifth = await login(odd)
    await expectKind(t, odd.exchangeCode({ ...fifth.flow, callbackUrl: fifth.callbackUrl }), 'invalid_response')

    const empty = devOidc({ mapUser: (_claims, user) => ({ ...user, id: '' }) })
    const fourth = await login(empty)
    await expectKind(t, empty.exchangeCode({ ...fourth.flow, callbackUrl: fourth.callbackUrl }), 'invalid_response')
  })

  t.test('upstream failures at the token endpoint', async (t) => {
    const answering = (make: () => Response): CustomFetch => async (url, options) =>
      url === discovery.token_endpoint ? make() : await fetch(url, options as RequestInit)

    const cases: Array<[string, () => Response, UpstreamErrorKind]> = [
      ['503 HTML', () => new Response('<h1>down</h1>', { status: 503, headers: { 'content-type': 'text/html' } }), 'temporary'],
      ['429 JSON', () => Response.json({ error: 'rate_limited' }, { status: 429 }), 'temporary'],
      ['500 JSON', () => Response.json({ error: 'server_error' }, { status: 500 }), 'temporary'],
      ['400 temporarily_unavailable', () => Response.json({ error: 'temporarily_unavailable' }, { status: 400 }), 'temporary'],
      ['400 access_denied', () => Response.json({ error: 'access_denied' }, { status: 400 }), 'access_denied'],
      ['400 invalid_request', () => Response.json({ error: 'invalid_request', error_description: 'code=abc' }, { status: 400 }), 'invalid_response'],
      ['401 challenge', () => new Response(null, { status: 401, headers: { 'www-authenticate': 'Basic realm="x"' } }), 'invalid_response'],
      ['503 challenge', () => new Response(null, { status: 503, headers: { 'www-authenticate': 'Bearer error="x"' } }), 'temporary'],
      ['404 HTML', () => new Response('nope', { status: 404 }), 'invalid_response'],
      ['200 not JSON', () => new Response('nope', { status: 200, headers: { 'content-type': 'text/plain' } }), 'invalid_response']
    ]
    for (const [label, make, kind] of cases) {
      const failing = devOidc({ customFetch: answering(make) })
      const { flow, callbackUrl } = await login(failing)
      const err = await expectKind(t, failing.exchangeCode({ ...flow, callbackUrl }), kind, [callbackUrl.searchParams.get('code') as string])
      t.notOk(err.message.includes('code=abc'), `${label}: no upstream description in the message`)
    }

    const offline = devOidc({ customFetch: answering(() => { throw new TypeError('fetch failed') }) })
    const { flow, callbackUrl } = await login(offline)
    await expectKind(t, offline.exchangeCode({ ...flow, callbackUrl }), 'temporary')

    // A token endpoint that never answers: the request is bounded by timeoutMs.
    const hanging: CustomFetch = async (url, options) => {
      if (url !== discovery.token_endpoint) return await fetch(url, options as RequestInit)
      return await new Promise<Response>((_resolve, reject) => {
        options.signal?.addEventListener('abort', () => reject(options.signal?.reason))
      })
    }
    const slow = devOidc({ customFetch: hanging, timeoutMs: 200 })
    const second = await login(slow)
    const started = Date.now()
    await expectKind(t, slow.exchangeCode({ ...second.flow, callbackUrl: second.callbackUrl }), 'temporary')
    t.ok(Date.now() - started < 3000, 'gave up in time')
  })

  t.test('revocation is skipped when the issuer offers none', async (t) => {
    let revocations = 0
    const noRevocation = devOidc({
      customFetch: async (url, options) => {
        if (url === discovery.revocation_endpoint) revocations++
        if (!url.endsWith('/.well-known/openid-configuration')) return await fetch(url, options as RequestInit)
        const body = await (await fetch(url, options as RequestInit)).json() as Record<string, unknown>
        delete body.revocation_endpoint
        return Response.json(body)
      }
    })
    await noRevocation.revoke?.({ accessToken: 'whatever', refreshToken: 'whatever' })
    t.equal(revocations, 0)

    const unsupported = devOidc({
      customFetch: async (url, options) => url === discovery.revocation_endpoint
        ? Response.json({ error: 'unsupported_token_type' }, { status: 400 })
        : await fetch(url, options as RequestInit)
    })
    await unsupported.revoke?.({ accessToken: 'a', refreshToken: 'b' })
    t.pass('unsupported_token_type is not an error')

    const failing = devOidc({
      customFetch: async (url, options) => url === discovery.revocation_endpoint
        ? new Response('busy', { status: 503 })
        : await fetch(url, options as RequestInit)
    })
    await expectKind(t, failing.revoke?.({ accessToken: 'a' }) ?? Promise.resolve(), 'temporary')
  })

  t.test('an unreachable issuer fails fast, and discovery is retried', async (t) => {
    const unreachable = oidcProvider({ issuer: blackHole.url, clientId: 'x', timeoutMs: 200 })
    const started = Date.now()
    await expectKind(t, unreachable.authorizationUrl(newFlow()), 'temporary')
    t.ok(Date.now() - started < 3000, `gave up in time (${Date.now() - started} ms)`)

    let attempts = 0
    const flaky = devOidc({
      customFetch: async (url, options) => {
        if (url.endsWith('/.well-known/openid-configuration') && attempts++ === 0) throw new TypeError('fetch failed')
        return await fetch(url, options as RequestInit)
      }
    })
    await expectKind(t, flaky.authorizationUrl(newFlow()), 'temporary')
    t.ok(await flaky.authorizationUrl(newFlow()), 'the second attempt discovers again')
    await flaky.authorizationUrl(newFlow())
    t.equal(attempts, 2, 'and the success is cached')

    const refused = oidcProvider({ issuer: 'http://127.0.0.1:1', clientId: 'x', timeoutMs: 1000 })
    await expectKind(t, refused.authorizationUrl(newFlow()), 'temporary')

    const wrongIssuer = oidcProvider({
      issuer: idp.issuer,
      clientId: 'x',
      customFetch: rewritingFetch((url, body) => url.pathname.endsWith('openid-configuration') ? { ...body, issuer: 'https://evil.example' } : undefined)
    })
    await expectKind(t, wrongIssuer.authorizationUrl(newFlow()), 'invalid_response')

    const notFound = oidcProvider({ issuer: `${idp.issuer}/nowhere`, clientId: 'x' })
    await expectKind(t, notFound.authorizationUrl(newFlow()), 'invalid_response')
  })

  t.test('options are checked', async (t) => {
    t.throws(() => oidcProvider({ issuer: 'http://idp.example', clientId: 'x' }), /https/)
    t.throws(() => oidcProvider({ issuer: 'not a url', clientId: 'x' }), /valid URL/)
    t.throws(() => oidcProvider({ issuer: 'ftp://idp.example', clientId: 'x' }), /https/)
    t.throws(() => oidcProvider({ issuer: 'https://idp.example', clientId: '' }), /clientId/)
    t.throws(() => oidcProvider({ issuer: 'https://idp.example', clientId: 'x', timeoutMs: 0 }), /timeoutMs/)
    t.throws(() => oidcProvider({ issuer: 'https://idp.example', clientId: 'x', authorizationParams: { state: 'x' } }), /state/)
    t.ok(oidcProvider({ issuer: 'http://idp.example', clientId: 'x', allowInsecureHttp: true }))
    t.ok(oidcProvider({ issuer: 'http://localhost:8080', clientId: 'x' }))
    t.ok(oidcProvider({ issuer: 'http://[::1]:8080', clientId: 'x' }))
    const named = oidcProvider({ issuer: 'https://idp.example', clientId: 'x', name: 'corp', scopes: ['email'], authorizationParams: { prompt: 'login' } })
    t.equal(named.name, 'corp')
  })

  t.test('scopes and extra authorization parameters', async (t) => {
    const custom = devOidc({ scopes: ['email'], authorizationParams: { prompt: 'login', login_hint: 'dave' } })
    const url = await custom.authorizationUrl(newFlow())
    t.equal(url.searchParams.get('scope'), 'openid email offline_access', 'openid is always requested (offline_access: the issuer lists it)')
    t.equal(url.searchParams.get('prompt'), 'login')
    t.equal(url.searchParams.get('login_hint'), 'dave')
  })
})

t.test('oidcProvider with claims only at the UserInfo endpoint', async (t) => {
  const lean = await startDevIdp({
    clients: [{ client_id: 'lean', client_secret: 'lean-secret', redirect_uris: [REDIRECT_URI] }],
    claimsInIdToken: false,
    claims: (login) => login === 'nameless' ? { name: undefined, email: '', email_verified: 'false', preferred_username: 'nobody' } : {}
  })
  t.teardown(() => lean.close())
  const base = { issuer: lean.issuer, clientId: 'lean', clientSecret: 'lean-secret' }

  const auto = oidcProvider(base)
  const first = await login(auto, 'erin')
  const { user } = await auto.exchangeCode({ ...first.flow, callbackUrl: first.callbackUrl })
  t.same(user, { id: 'erin', email: 'erin@dev.local', emailVerified: true, name: 'erin' }, 'claims came from UserInfo')

  const never = oidcProvider({ ...base, userInfo: 'never' })
  const second = await login(never, 'erin')
  const bare = await never.exchangeCode({ ...second.flow, callbackUrl: second.callbackUrl })
  t.same(bare.user, { id: 'erin' }, 'only the ID token')

  const always = oidcProvider({ ...base, userInfo: 'always' })
  const third = await login(always, 'nameless')
  const odd = await always.exchangeCode({ ...third.flow, callbackUrl: third.callbackUrl })
  t.same(odd.user, { id: 'nameless', emailVerified: false, name: 'nobody' }, 'string booleans, empty e-mail, preferred_username')

  const noUserInfo = oidcProvider({
    ...base,
    customFetch: rewritingFetch((url, body) => {
      if (!url.pathname.endsWith('openid-configuration')) return undefined
      const { userinfo_endpoint: _userinfo, ...rest } = body
      return rest
    })
  })
  const fifth = await login(noUserInfo, 'erin')
  t.same((await noUserInfo.exchangeCode({ ...fifth.flow, callbackUrl: fifth.callbackUrl })).user, { id: 'erin' }, 'no UserInfo endpoint, no extra claims')

  const failing = oidcProvider({
    ...base,
    customFetch: async (url, options) => url.endsWith('/me') ? new Response('busy', { status: 503 }) : await fetch(url, options as RequestInit)
  })
  const fourth = await login(failing)
  await expectKind(t, failing.exchangeCode({ ...fourth.flow, callbackUrl: fourth.callbackUrl }), 'temporary')
})

t.test('googleProvider against the dev IdP', async (t) => {
  const google = (extra: Partial<GoogleProviderOptions> = {}): Provider =>
    googleProvider({ issuer: idp.issuer, clientId: 'confidential', clientSecret: 'idp-client-secret', timeoutMs: 5000, ...extra })

  t.test('authorization URL', async (t) => {
    const url = await google({ hostedDomain: 'Corp.Example' }).authorizationUrl(newFlow())
    t.equal(url.searchParams.get('access_type'), 'offline')
    t.equal(url.searchParams.get('prompt'), 'consent')
    t.equal(url.searchParams.get('hd'), 'corp.example')
    const several = await google({ hostedDomain: ['a.example', 'b.example'], authorizationParams: { hd: 'x', prompt: 'select_account consent' } }).authorizationUrl(newFlow())
    t.equal(several.searchParams.get('hd'), '*')
    t.equal(several.searchParams.get('prompt'), 'select_account consent')
    const open = await google().authorizationUrl(newFlow())
    t.equal(open.searchParams.get('hd'), null)
    t.equal(google().name, 'google')
    t.throws(() => google({ hostedDomain: ' ' }), /hostedDomain/)
    t.throws(() => googleProvider({ clientId: 'x', clientSecret: 'y', issuer: 'http://accounts.example' }), /https/)
    t.ok(googleProvider({ clientId: 'x', clientSecret: 'y' }), 'the real Google issuer by default (not contacted)')
    t.ok(googleProvider({ clientId: 'x', clientSecret: 'y', issuer: 'http://accounts.example', allowInsecureHttp: true }))
    const requested: string[] = []
    const counting = google({ customFetch: async (url, options) => { requested.push(url); return await fetch(url, options as RequestInit) } })
    await counting.authorizationUrl(newFlow())
    t.same(requested, [`${idp.issuer}/.well-known/openid-configuration`], 'customFetch is used')
  })

  t.test('a user of the hosted domain', async (t) => {
    const provider = google({ hostedDomain: 'corp.example', scopes: ['openid', 'email', 'profile'] })
    const { flow, callbackUrl } = await login(provider, 'ann@corp.example')
    const { user, tokens } = await provider.exchangeCode({ ...flow, callbackUrl })
    t.same(user, { id: 'ann@corp.example', email: 'ann@corp.example', emailVerified: true, name: 'ann@corp.example' })
    const before = idp.refreshCount()
    const refreshed = await provider.refresh(tokens)
    t.equal(idp.refreshCount(), before + 1)
    t.ok(refreshed.refreshToken)
  })

  t.test('hosted domain mismatch', async (t) => {
    const provider = google({ hostedDomain: 'corp.example' })
    const other = await login(provider, 'ann@other.example')
    await expectKind(t, provider.exchangeCode({ ...other.flow, callbackUrl: other.callbackUrl }), 'not_allowed')
    const consumer = await login(provider, 'bob')
    await expectKind(t, provider.exchangeCode({ ...consumer.flow, callbackUrl: consumer.callbackUrl }), 'not_allowed')
  })

  t.test('an unverified e-mail address is refused', async (t) => {
    const provider = google()
    const { flow, callbackUrl } = await login(provider, 'unverified-user')
    await expectKind(t, provider.exchangeCode({ ...flow, callbackUrl }), 'not_allowed')
  })

  t.test("hostedDomain '*' takes any Workspace domain but no consumer account", async (t) => {
    const provider = google({ hostedDomain: '*' })
    const url = await provider.authorizationUrl(newFlow())
    t.equal(url.searchParams.get('hd'), '*')
    const workspace = await login(provider, 'ann@any.example')
    t.equal((await provider.exchangeCode({ ...workspace.flow, callbackUrl: workspace.callbackUrl })).user.email, 'ann@any.example')
    const consumer = await login(provider, 'bob')
    await expectKind(t, provider.exchangeCode({ ...consumer.flow, callbackUrl: consumer.callbackUrl }), 'not_allowed')
  })

  t.test('mapUser runs after the checks', async (t) => {
    const provider = google({ hostedDomain: ['corp.example', 'other.example'], mapUser: (claims, user) => ({ ...user, name: `hd:${String(claims.hd)}` }) })
    const { flow, callbackUrl } = await login(provider, 'ann@other.example')
    const { user } = await provider.exchangeCode({ ...flow, callbackUrl })
    t.equal(user.name, 'hd:other.example')
  })
})

/* ---------- GitHub ---------- */

interface GithubFixtureUser { id: number, login: string, name: string | null, email: string | null, emails: Array<{ email: string, primary: boolean, verified: boolean }>, orgs: string[] }

const GITHUB_USERS: Record<string, GithubFixtureUser> = {
  octo: { id: 101, login: 'octo', name: 'Octo Cat', email: 'octo@example.com', emails: [], orgs: ['acme'] },
  hidden: {
    id: 202,
    login: 'hidden',
    name: null,
    email: null,
    emails: [
      { email: 'unverified@example.com', primary: false, verified: false },
      { email: 'old@example.com', primary: false, verified: true },
      { email: 'hidden@example.com', primary: true, verified: true }
    ],
    orgs: ['first', 'second', 'Acme']
  },
  outsider: { id: 303, login: 'outsider', name: 'Out Sider', email: null, emails: [], orgs: ['other'] },
  limited: { id: 404, login: 'limited', name: null, email: null, emails: [], orgs: [] },
  broken: { id: 505, login: 'broken', name: null, email: null, emails: [], orgs: [] }
}

/**
 * A stand-in for github.com and api.github.com implementing the documented OAuth web flow
 * endpoints and the three REST endpoints the provider reads. The API lives under /api to
 * check that baseUrl and apiUrl are used separately (as on GitHub Enterprise Server).
 */
async function startFakeGithub (): Promise<{ app: FastifyInstance, baseUrl: string, apiUrl: string, tokens: Map<string, { login: string, scope: string }> }> {
  const clients: Record<string, { secret: string, expiring: boolean }> = {
    'oauth-app': { secret: 'gh-secret', expiring: false },
    'github-app': { secret: 'gh-app-secret', expiring: true }
  }
  const codes = new Map<string, { clientId: string, login: string, redirectUri: string, challenge: string, scope: string }>()
  const tokens = new Map<string, { login: string, scope: string }>()
  const refreshTokens = new Map<string, { login: string, clientId: string, scope: string }>()
  const random = (prefix: string): string => `${prefix}_${randomBytes(16).toString('hex')}`

  const app = Fastify({ forceCloseConnections: true })
  await app.register(formbody)
  let apiUrl = ''

  app.get('/login/oauth/authorize', async (request, reply) => {
    const q = request.query as Record<string, string | undefined>
    const client = clients[q.client_id ?? '']
    if (client === undefined || q.redirect_uri === undefined) return await reply.code(400).send('bad client')
    const target = new URL(q.redirect_uri)
    if (q.state !== undefined) target.searchParams.set('state', q.state)
    if (q.login === 'deny') {
      target.searchParams.set('error', 'access_denied')
      return await reply.redirect(target.href, 302)
    }
    if (q.code_challenge_method !== 'S256' || q.code_challenge === undefined) return await reply.code(400).send('PKCE required')
    const code = random('code')
    codes.set(code, { clientId: q.client_id as string, login: q.login ?? 'octo', redirectUri: q.redirect_uri, challenge: q.code_challenge, scope: q.scope ?? '' })
    target.searchParams.set('code', code)
    return await reply.redirect(target.href, 302)
  })

  app.post('/login/oauth/access_token', async (request, reply) => {
    const body = request.body as Record<string, string | undefined>
    if (request.headers.accept !== 'application/json') return await reply.code(406).send('JSON only in this fake')
    const client = clients[body.client_id ?? '']
    // GitHub answers errors with HTTP 200.
    if (client === undefined || client.secret !== body.client_secret) {
      return { error: 'incorrect_client_credentials', error_description: 'The client_id and/or client_secret passed are incorrect.' }
    }
    const issue = (login: string, scope: string): Record<string, unknown> => {
      const accessToken = random('gho')
      tokens.set(accessToken, { login, scope })
      if (!client.expiring) return { access_token: accessToken, token_type: 'bearer', scope: scope.split(' ').join(',') }
      const refreshToken = random('ghr')
      refreshTokens.set(refreshToken, { login, clientId: body.client_id as string, scope })
      return { access_token: accessToken, token_type: 'bearer', scope: '', expires_in: 28800, refresh_token: refreshToken, refresh_token_expires_in: 15897600 }
    }
    if (body.grant_type === 'refresh_token') {
      const entry = refreshTokens.get(body.refresh_token ?? '')
      if (entry === undefined || entry.clientId !== body.client_id) return { error: 'bad_refresh_token', error_description: 'The refresh token passed is incorrect or expired.' }
      refreshTokens.delete(body.refresh_token as string)
      return issue(entry.login, entry.scope)
    }
    const entry = codes.get(body.code ?? '')
    codes.delete(body.code ?? '')
    const verifierOk = entry !== undefined && body.code_verifier !== undefined &&
      createHash('sha256').update(body.code_verifier).digest('base64url') === entry.challenge
    if (entry === undefined || !verifierOk || entry.clientId !== body.client_id || entry.redirectUri !== body.redirect_uri) {
      return { error: 'bad_verification_code', error_description: 'The code passed is incorrect or expired.', error_uri: 'https://docs.github.com/' }
    }
    return issue(entry.login, entry.scope)
  })

  const authenticated = (authorization: string | undefined): { user: GithubFixtureUser, scope: string } | undefined => {
    const token = /^(?:Bearer|token) (.+)$/.exec(authorization ?? '')?.[1]
    const entry = token === undefined ? undefined : tokens.get(token)
    const user = entry === undefined ? undefined : GITHUB_USERS[entry.login]
    return user === undefined || entry === undefined ? undefined : { user, scope: entry.scope }
  }

  app.get('/api/user', async (request, reply) => {
    const auth = authenticated(request.headers.authorization)
    if (auth === undefined) return await reply.code(401).send({ message: 'Bad credentials' })
    if (request.headers['user-agent'] === undefined) return await reply.code(403).send({ message: 'User-Agent required' })
    if (auth.user.login === 'limited') return await reply.code(403).header('x-ratelimit-remaining', '0').send({ message: 'API rate limit exceeded' })
    if (auth.user.login === 'broken') return await reply.code(502).send({ message: 'Server Error' })
    const { id, login, name, email } = auth.user
    return { id, login, name, email, node_id: 'x' }
  })

  app.get('/api/user/emails', async (request, reply) => {
    const auth = authenticated(request.headers.authorization)
    if (auth === undefined) return await reply.code(401).send({ message: 'Bad credentials' })
    if (!auth.scope.split(' ').includes('user:email')) return await reply.code(404).send({ message: 'Not Found' })
    return auth.user.emails
  })

  app.get('/api/user/orgs', async (request, reply) => {
    const auth = authenticated(request.headers.authorization)
    if (auth === undefined) return await reply.code(401).send({ message: 'Bad credentials' })
    // One organisation a page, whatever per_page says, so that pagination is exercised.
    const page = Number((request.query as Record<string, string>).page ?? '1')
    const orgs = auth.user.orgs
    if (page < orgs.length) reply.header('link', `<${apiUrl}/user/orgs?per_page=100&page=${page + 1}>; rel="next", <${apiUrl}/user/orgs?page=${orgs.length}>; rel="last"`)
    return orgs.slice(page - 1, page).map((login, i) => ({ login, id: 1000 + page + i }))
  })

  app.delete('/api/applications/:clientId/grant', async (request, reply) => {
    const { clientId } = request.params as { clientId: string }
    const [id, secret] = Buffer.from((request.headers.authorization ?? '').replace(/^Basic /, ''), 'base64').toString().split(':')
    if (id !== clientId || clients[clientId]?.secret !== secret) return await reply.code(404).send({ message: 'Not Found' })
    const token = (request.body as { access_token?: string } | undefined)?.access_token ?? ''
    if (!tokens.delete(token)) return await reply.code(422).send({ message: 'Validation Failed' })
    return await reply.code(204).send()
  })

  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as AddressInfo
  const baseUrl = `http://127.0.0.1:${port}`
  apiUrl = `${baseUrl}/api`
  return { app, baseUrl, apiUrl, tokens }
}

t.test('githubProvider against a fake GitHub', async (t) => {
  const gh = await startFakeGithub()
  t.teardown(() => gh.app.close())
  const github = (extra: Partial<GithubProviderOptions> = {}): Provider =>
    githubProvider({ clientId: 'oauth-app', clientSecret: 'gh-secret', baseUrl: gh.baseUrl, apiUrl: gh.apiUrl, timeoutMs: 5000, ...extra })

  /** The browser leg: GitHub's authorize endpoint redirects straight back (the user already approved). */
  async function ghLogin (provider: Provider, loginName: string, flow = newFlow()): Promise<{ flow: Flow, callbackUrl: URL }> {
    const url = await provider.authorizationUrl(flow)
    url.searchParams.set('login', loginName)
    const page = await new Browser().get(url, { stopAt: stopAtCallback })
    return { flow, callbackUrl: page.stoppedAt as URL }
  }

  t.test('authorization URL', async (t) => {
    const flow = newFlow()
    const url = await github({ allowedOrganizations: ['acme'], authorizationParams: { allow_signup: 'false' } }).authorizationUrl(flow)
    t.equal(url.origin + url.pathname, `${gh.baseUrl}/login/oauth/authorize`)
    t.equal(url.searchParams.get('client_id'), 'oauth-app')
    t.equal(url.searchParams.get('redirect_uri'), REDIRECT_URI)
    t.equal(url.searchParams.get('state'), flow.state)
    t.equal(url.searchParams.get('scope'), 'read:user user:email read:org')
    t.equal(url.searchParams.get('code_challenge_method'), 'S256')
    t.equal(url.searchParams.get('code_challenge'), createHash('sha256').update(flow.codeVerifier).digest('base64url'))
    t.equal(url.searchParams.get('allow_signup'), 'false')
    t.equal(url.searchParams.get('nonce'), null, 'no nonce: not OpenID Connect')
    const adminOrg = await github({ allowedOrganizations: ['acme'], scopes: ['admin:org'] }).authorizationUrl(flow)
    t.equal(adminOrg.searchParams.get('scope'), 'admin:org')
    t.equal(github().name, 'github')
  })

  t.test('a user with a public e-mail in an allowed organisation', async (t) => {
    const provider = github({ allowedOrganizations: ['ACME'] })
    const { flow, callbackUrl } = await ghLogin(provider, 'octo')
    const { user, tokens } = await provider.exchangeCode({ ...flow, callbackUrl })
    t.same(user, { id: '101', name: 'Octo Cat', email: 'octo@example.com', emailVerified: true })
    t.equal(tokens.tokenType, 'bearer')
    t.equal(tokens.scope, 'read:user user:email read:org', 'GitHub commas become spaces')
    t.equal(tokens.refreshToken, undefined, 'an OAuth App gets no refresh token')
    t.equal(tokens.expiresAt, undefined)
    await expectKind(t, provider.refresh(tokens), 'invalid_grant')
  })

  t.test('a private e-mail comes from /user/emails; organisations are paged', async (t) => {
    const provider = github({ allowedOrganizations: ['acme'] })
    const { flow, callbackUrl } = await ghLogin(provider, 'hidden')
    const { user } = await provider.exchangeCode({ ...flow, callbackUrl })
    t.same(user, { id: '202', name: 'hidden', email: 'hidden@example.com', emailVerified: true }, 'the primary verified address; the login as the name')
  })

  t.test('without the user:email scope there is no e-mail', async (t) => {
    const provider = github({ scopes: ['read:user'] })
    const { flow, callbackUrl } = await ghLogin(provider, 'hidden')
    const { user } = await provider.exchangeCode({ ...flow, callbackUrl })
    t.same(user, { id: '202', name: 'hidden' })
  })

  t.test('a user outside the allowed organisations', async (t) => {
    const provider = github({ allowedOrganizations: ['acme', 'initech'] })
    const { flow, callbackUrl } = await ghLogin(provider, 'outsider')
    await expectKind(t, provider.exchangeCode({ ...flow, callbackUrl }), 'not_allowed')
  })

  t.test('a bad code and a wrong verifier are invalid_grant', async (t) => {
    const provider = github()
    const flow = newFlow()
    const bogus = new URL(`${REDIRECT_URI}?code=bogus-code-value&state=${flow.state}`)
    await expectKind(t, provider.exchangeCode({ ...flow, callbackUrl: bogus }), 'invalid_grant', ['bogus-code-value', 'gh-secret'])

    const { callbackUrl } = await ghLogin(provider, 'octo', flow)
    await expectKind(t, provider.exchangeCode({ ...flow, codeVerifier: 'x'.repeat(43), callbackUrl }), 'invalid_grant')
    await expectKind(t, provider.exchangeCode({ ...flow, callbackUrl }), 'invalid_grant', [callbackUrl.searchParams.get('code') as string])
  })

  t.test('callback checks', async (t) => {
    const provider = github()
    const flow = newFlow()
    const { callbackUrl } = await ghLogin(provider, 'deny', flow)
    t.equal(callbackUrl.searchParams.get('error'), 'access_denied')
    await expectKind(t, provider.exchangeCode({ ...flow, callbackUrl }), 'access_denied')
    await expectKind(t, provider.exchangeCode({ ...flow, callbackUrl: new URL(`${REDIRECT_URI}?code=abc&state=other`) }), 'invalid_response')
    await expectKind(t, provider.exchangeCode({ ...flow, callbackUrl: new URL(`${REDIRECT_URI}?state=${flow.state}`) }), 'invalid_response')
  })

  t.test('wrong client credentials', async (t) => {
    const provider = github({ clientSecret: 'wrong-secret' })
    const { flow, callbackUrl } = await ghLogin(provider, 'octo')
    await expectKind(t, provider.exchangeCode({ ...flow, callbackUrl }), 'invalid_response', ['wrong-secret'])
  })

  t.test('API failures', async (t) => {
    const provider = github()
    const limited = await ghLogin(provider, 'limited')
    await expectKind(t, provider.exchangeCode({ ...limited.flow, callbackUrl: limited.callbackUrl }), 'temporary')
    const broken = await ghLogin(provider, 'broken')
    await expectKind(t, provider.exchangeCode({ ...broken.flow, callbackUrl: broken.callbackUrl }), 'temporary')
  })

  t.test('GitHub App tokens refresh; revocation', async (t) => {
    const provider = github({ clientId: 'github-app', clientSecret: 'gh-app-secret' })
    const { flow, callbackUrl } = await ghLogin(provider, 'octo')
    const { tokens } = await provider.exchangeCode({ ...flow, callbackUrl })
    t.ok(tokens.refreshToken)
    t.ok(tokens.expiresAt !== undefined && tokens.expiresAt > Date.now())
    const refreshed = await provider.refresh(tokens)
    t.not(refreshed.accessToken, tokens.accessToken)
    t.ok(refreshed.refreshToken !== undefined && refreshed.refreshToken !== tokens.refreshToken)
    await expectKind(t, provider.refresh(tokens), 'invalid_grant', [tokens.refreshToken as string])

    t.ok(gh.tokens.has(refreshed.accessToken))
    await provider.revoke?.(refreshed)
    t.notOk(gh.tokens.has(refreshed.accessToken), 'the grant is revoked')
    await provider.revoke?.(refreshed)
    t.pass('revoking again is fine')
    const wrong = github({ clientId: 'github-app', clientSecret: 'nope' })
    await wrong.revoke?.(refreshed)
    t.pass('a 404 counts as gone')
  })

  t.test('timeouts and unreachable servers are temporary', async (t) => {
    const flow = newFlow()
    const callbackUrl = new URL(`${REDIRECT_URI}?code=c&state=${flow.state}`)
    const slow = github({ baseUrl: blackHole.url, apiUrl: blackHole.url, timeoutMs: 200 })
    const started = Date.now()
    await expectKind(t, slow.exchangeCode({ ...flow, callbackUrl }), 'temporary')
    t.ok(Date.now() - started < 3000, 'gave up in time')
    await expectKind(t, slow.revoke?.({ accessToken: 'x' }) ?? Promise.resolve(), 'temporary')
    const refused = github({ baseUrl: 'http://127.0.0.1:1', apiUrl: 'http://127.0.0.1:1' })
    await expectKind(t, refused.refresh({ accessToken: 'x', refreshToken: 'y' }), 'temporary')
  })

  t.test('odd answers', async (t) => {
    interface Answer { status: number, body: string, type?: string, headers?: Record<string, string>, stall?: boolean }
    const json = (status: number, body: unknown, headers?: Record<string, string>): Answer => ({ status, body: JSON.stringify(body), type: 'application/json', headers })
    const answers: Record<string, Answer> = {}
    const hits: Record<string, number> = {}
    const odd = Fastify({ forceCloseConnections: true })
    await odd.register(formbody)
    odd.all('/*', async (request, reply) => {
      const key = `${request.method} ${request.url.split('?')[0]}`
      hits[key] = (hits[key] ?? 0) + 1
      const answer = answers[key] ?? json(404, { message: 'Not Found' })
      if (answer.stall === true) {
        // Headers and half a body, then nothing.
        reply.hijack()
        reply.raw.writeHead(answer.status, { 'content-type': 'application/json' })
        reply.raw.write(answer.body)
        return
      }
      reply.code(answer.status).type(answer.type ?? 'text/plain')
      for (const [name, value] of Object.entries(answer.headers ?? {})) reply.header(name, value)
      return await reply.send(answer.body)
    })
    await odd.listen({ host: '127.0.0.1', port: 0 })
    t.teardown(() => odd.close())
    const base = `http://127.0.0.1:${(odd.server.address() as AddressInfo).port}`
    const provider = githubProvider({ clientId: 'c', clientSecret: 's', baseUrl: `${base}/`, apiUrl: base, allowedOrganizations: ['acme'] })
    const flow = newFlow()
    const callbackUrl = new URL(`${REDIRECT_URI}?code=c&state=${flow.state}`)
    const exchange = (): Promise<unknown> => provider.exchangeCode({ ...flow, callbackUrl })
    const TOKEN = 'POST /login/oauth/access_token'

    const tokenCases: Array<[Answer, UpstreamErrorKind]> = [
      [{ status: 200, body: 'access_token=x&scope=', type: 'application/x-www-form-urlencoded' }, 'invalid_response'],
      [json(200, [1]), 'invalid_response'],
      [json(200, { token_type: 'bearer' }), 'invalid_response'],
      [json(200, { access_token: 'x', token_type: 'mac' }), 'invalid_response'],
      [json(200, { error: 'unverified_user_email' }), 'not_allowed'],
      [json(200, { error: 'something <new>' }), 'invalid_response'],
      [{ status: 503, body: 'down' }, 'temporary'],
      [{ status: 404, body: 'nope' }, 'invalid_response']
    ]
    for (const [answer, kind] of tokenCases) {
      answers[TOKEN] = answer
      await expectKind(t, exchange(), kind)
    }

    answers[TOKEN] = { status: 200, body: '{"access_token":', stall: true }
    const impatient = githubProvider({ clientId: 'c', clientSecret: 's', baseUrl: base, apiUrl: base, timeoutMs: 300 })
    await expectKind(t, impatient.exchangeCode({ ...flow, callbackUrl }), 'temporary')

    answers[TOKEN] = json(200, { access_token: 'x', token_type: 'bearer', expires_in: 'soon' })
    const userCases: Array<[Answer, UpstreamErrorKind]> = [
      [json(200, { id: 'not-a-number', login: 'x' }), 'invalid_response'],
      [json(200, [{ id: 1 }]), 'invalid_response'],
      [json(401, { message: 'Bad credentials' }), 'invalid_grant'],
      [json(429, {}), 'temporary'],
      [json(403, { message: 'secondary rate limit' }, { 'retry-after': '60' }), 'temporary'],
      [json(418, {}), 'invalid_response']
    ]
    for (const [answer, kind] of userCases) {
      answers['GET /user'] = answer
      await expectKind(t, exchange(), kind)
    }

    answers['GET /user'] = json(200, { id: 7, login: 'x', email: null })
    const emailCases: Array<[Answer, UpstreamErrorKind]> = [
      [json(200, { not: 'a list' }), 'invalid_response'],
      [json(500, {}), 'temporary'],
      [json(403, {}, { 'x-ratelimit-remaining': '0' }), 'temporary']
    ]
    for (const [answer, kind] of emailCases) {
      answers['GET /user/emails'] = answer
      await expectKind(t, exchange(), kind)
    }

    answers['GET /user/emails'] = json(200, [{ email: 'only@example.com', primary: false, verified: true }, 'junk'])
    const orgCases: Array<[Answer, UpstreamErrorKind]> = [
      [json(200, { not: 'a list' }), 'invalid_response'],
      [json(502, {}), 'temporary'],
      // A next link to another origin is not followed: the token stays with the API.
      [json(200, [{ login: 'other' }, 'junk'], { link: '<https://elsewhere.example/user/orgs?page=2>; rel="next"' }), 'not_allowed'],
      [json(200, [{ login: 'other' }], { link: '<garbage>, <' + base + '/user/orgs?page=1>; rel="last"' }), 'not_allowed']
    ]
    for (const [answer, kind] of orgCases) {
      answers['GET /user/orgs'] = answer
      await expectKind(t, exchange(), kind)
    }

    // A next link that always points back: the page limit stops it.
    hits['GET /user/orgs'] = 0
    answers['GET /user/orgs'] = json(200, [{ login: 'other' }], { link: `<${base}/user/orgs?page=2>; rel="next"` })
    await expectKind(t, exchange(), 'not_allowed')
    t.equal(hits['GET /user/orgs'], 10, 'at most ten pages')

    answers['GET /user/orgs'] = json(200, [{ login: 'acme' }])
    const { user, tokens } = await provider.exchangeCode({ ...flow, callbackUrl }) as Awaited<ReturnType<Provider['exchangeCode']>>
    t.same(user, { id: '7', name: 'x', email: 'only@example.com', emailVerified: true }, 'any verified address when none is primary')
    t.equal(tokens.expiresAt, undefined, 'a nonsense expires_in is ignored')

    answers['POST /login/oauth/access_token'] = json(200, { access_token: 'y', token_type: 'bearer', expires_in: 60 })
    const refreshed = await provider.refresh({ accessToken: 'x', refreshToken: 'keep-me', scope: 'read:user' })
    t.equal(refreshed.refreshToken, 'keep-me', 'the refresh token is kept when none comes back')
    t.equal(refreshed.scope, 'read:user')
    t.ok(refreshed.expiresAt !== undefined && refreshed.expiresAt > Date.now())

    answers['DELETE /applications/c/grant'] = json(403, { message: 'Forbidden' })
    await expectKind(t, provider.revoke?.({ accessToken: 'x' }) ?? Promise.resolve(), 'invalid_response')
    answers['DELETE /applications/c/grant'] = json(401, { message: 'Requires authentication' })
    await expectKind(t, provider.revoke?.({ accessToken: 'x' }) ?? Promise.resolve(), 'invalid_response')
  })

  t.test('options are checked', async (t) => {
    t.throws(() => githubProvider({ clientId: '', clientSecret: 's' }), /clientId/)
    t.throws(() => githubProvider({ clientId: 'c', clientSecret: '' }), /clientSecret/)
    t.throws(() => githubProvider({ clientId: 'c', clientSecret: 's', baseUrl: 'http://ghe.example' }), /https/)
    t.throws(() => githubProvider({ clientId: 'c', clientSecret: 's', timeoutMs: -1 }), /timeoutMs/)
    t.throws(() => githubProvider({ clientId: 'c', clientSecret: 's', authorizationParams: { scope: 'repo' } }), /scope/)
    t.ok(githubProvider({ clientId: 'c', clientSecret: 's', baseUrl: 'http://ghe.example', apiUrl: 'http://ghe.example/api/v3', allowInsecureHttp: true }))
  })
})

t.test('browser helper', async (t) => {
  const base = new URL('http://127.0.0.1:1/dir/page')
  const forms = parseForms(`
    <form action="/submit?x=1" method="post">
      <input type="hidden" name="csrf" value="a&amp;b&#39;c&#x21;&unknown;">
      <input name="text" value='single'>
      <input name="unnamed-later">
      <input type="checkbox" name="box" checked>
      <input type="checkbox" name="off" value="no">
      <input type="radio" name="pick" value="two" checked>
      <input type="file" name="upload">
      <input name="gone" value="x" disabled>
      <input type="submit" name="go" value="Go">
      <select name="choice"><option value="1">One</option><option value="2" selected>Two</option></select>
      <select name="first"><option>Alpha</option></select>
      <select name="none"></select>
      <textarea name="notes">hello &lt;world&gt;</textarea>
      <button name="decision" value="approve">Approve</button>
      <button type="button" name="noop">No</button>
      <button name="plain"><b>Plain</b></button>
      <input value="nameless">
    </form>
    <FORM><input name="q"></FORM>`, base)
  t.equal(forms.length, 2)
  const form = forms[0]
  t.equal(form?.action.href, 'http://127.0.0.1:1/submit?x=1')
  t.equal(form?.method, 'POST')
  t.same(form?.fields, [
    ['csrf', "a&b'c!&unknown;"], ['text', 'single'], ['unnamed-later', ''], ['box', 'on'], ['pick', 'two'],
    ['choice', '2'], ['first', 'Alpha'], ['notes', 'hello <world>']
  ])
  t.same(form?.submitters, [{ name: 'go', value: 'Go' }, { name: 'decision', value: 'approve' }, { name: 'plain', value: 'Plain' }])
  t.ok(form?.names.has('off') && form.names.has('gone') && form.names.has('noop'))
  t.equal(forms[1]?.method, 'GET')
  t.equal(forms[1]?.action.href, base.href)
  t.equal(decodeEntities('&#1114112;&AMP;'), '&#1114112;&')

  const jar = new CookieJar()
  const site = new URL('http://app.example.test/a/b/c')
  jar.store(site, new Headers([
    ['set-cookie', 'plain=1'],
    ['set-cookie', 'root=2; Path=/'],
    ['set-cookie', 'deep=3; Path=/a/b/c/d'],
    ['set-cookie', 'wide=4; Domain=.example.test; Path=/'],
    ['set-cookie', 'foreign=5; Domain=other.test'],
    ['set-cookie', 'secure=6; Secure; Path=/'],
    ['set-cookie', 'gone=7; Max-Age=0'],
    ['set-cookie', 'old=8; Expires=Thu, 01 Jan 1970 00:00:00 GMT'],
    ['set-cookie', 'later=9; Expires=Fri, 01 Jan 2100 00:00:00 GMT; HttpOnly; SameSite=Lax'],
    ['set-cookie', 'invalid'],
    ['set-cookie', 'short=10; Max-Age=1']
  ]))
  t.same(jar.cookiesFor(site).map((c) => c.name).sort(), ['later', 'plain', 'root', 'short', 'wide'])
  t.same(jar.cookiesFor(new URL('http://sub.example.test/')).map((c) => c.name), ['wide'])
  t.same(jar.cookiesFor(new URL('https://app.example.test/')).map((c) => c.name).sort(), ['root', 'secure', 'wide'])
  t.same(jar.cookiesFor(new URL('http://app.example.test/a/bc')).map((c) => c.name).sort(), ['root', 'wide'])
  t.match(jar.header(new URL('http://app.example.test/a/b/c/d/e')), /^deep=3; /, 'longest path first')
  t.equal(jar.header(new URL('http://nothing.test/')), undefined)
  jar.store(site, new Headers([['set-cookie', 'root=; Path=/; Max-Age=-1']]))
  t.notOk(jar.cookiesFor(site).some((c) => c.name === 'root'), 'deleted')
  const realNow = Date.now
  Date.now = () => realNow() + 2000
  try {
    t.notOk(jar.cookiesFor(site).some((c) => c.name === 'short'), 'expired')
  } finally {
    Date.now = realNow
  }
  jar.clear()
  t.equal(jar.header(site), undefined)

  // Redirects, methods, limits and errors against a small server.
  const server = Fastify({ forceCloseConnections: true })
  await server.register(formbody)
  server.get('/loop', async (_request, reply) => await reply.redirect('/loop', 302))
  server.post('/keep', async (_request, reply) => await reply.redirect('/echo', 307))
  server.post('/echo', async (request) => ({ method: 'POST', body: request.body }))
  server.get('/echo', async (request) => ({ method: 'GET', query: request.query, cookie: request.headers.cookie ?? null, extra: request.headers['x-extra'] ?? null }))
  server.get('/native', async (_request, reply) => await reply.redirect('myapp://callback?code=1', 302))
  server.get('/getform', async (_request, reply) => await reply.type('text/html').send('<form action="/echo"><input name="a" value="1"><button name="b" value="2">B</button></form>'))
  server.get('/blank', async (_request, reply) => await reply.type('text/html').send('<p>nothing to submit</p>'))
  server.get('/again', async (_request, reply) => await reply.type('text/html').send('<form action="/again"><input name="n"></form>'))
  await server.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => server.close())
  const origin = `http://127.0.0.1:${(server.server.address() as AddressInfo).port}`

  const browser = new Browser({ headers: { 'x-extra': 'yes' }, maxRedirects: 3, timeoutMs: 5000 })
  await t.rejects(browser.get(`${origin}/loop`), /more than 3 redirects/)
  const kept = await browser.post(`${origin}/keep`, { a: '1' })
  t.same(JSON.parse(kept.body), { method: 'POST', body: { a: '1' } }, '307 keeps method and body')
  t.same(kept.history.map((u) => u.pathname), ['/keep', '/echo'])
  await t.rejects(browser.get(`${origin}/native`), /stopAt/)
  const native = await browser.get(`${origin}/native`, { stopAt: (u) => u.protocol === 'myapp:' })
  t.equal(native.stoppedAt?.searchParams.get('code'), '1')
  const page = await browser.get(`${origin}/getform`)
  const submitted = await browser.submit(page, { a: 'x' }, { submitter: '2' })
  t.same(JSON.parse(submitted.body), { method: 'GET', query: { a: 'x', b: '2' }, cookie: null, extra: 'yes' })
  await t.rejects(browser.submit(page, {}, { submitter: 'missing' }), /no submit button/)
  await t.rejects(browser.submit(page, {}, { form: 3 }), /no form #3/)
  await t.rejects(browser.drive(`${origin}/blank`, { stopAt: () => false }), /no form and no matching redirect/)
  await t.rejects(browser.drive(`${origin}/again`, { stopAt: () => false, maxForms: 2, maxRedirects: 1, submitter: undefined }), /after 2 forms/)
  let seen = 0
  await t.rejects(browser.drive(`${origin}/again`, {
    stopAt: () => false,
    maxForms: 1,
    fields: (form) => {
      seen = form.names.size
      return undefined
    }
  }), /after 1 forms/)
  t.equal(seen, 1, 'the fields callback saw the form')
  await t.rejects(new Browser({ timeoutMs: 100 }).get(blackHole.url), /timeout|aborted/i)
})
