import t from 'tap'
import { createServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose'
import type { FastifyInstance } from 'fastify'
import { buildApp, ISSUER, RESOURCE, type TestApp } from './helpers/app.js'
import { resolveOptions } from '../lib/options/index.js'
import { RedisStore } from '../lib/storage/redis/index.js'
import { MemoryStore } from '../lib/storage/memory/index.js'
import { selfSignedCert } from './helpers/tls.js'
import { withRedisServer } from './helpers/redis-tests.js'

/*
 * private_key_jwt client authentication (RFC 7523 §2.2) over HTTP: static clients with `jwks` and
 * with `jwks_uri` (a TLS key server on loopback), a registered client and a metadata-document
 * client, at the token, revocation and introspection endpoints; every hostile assertion is a 401
 * invalid_client with the reason, and leaves what is stored as it was.
 */

const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'
const TOKEN_ENDPOINT = `${ISSUER}/oauth/token`
const FORM = { 'content-type': 'application/x-www-form-urlencoded' }

interface Key { key: CryptoKey, jwk: JWK }

async function keyPair (alg = 'ES256', kid = 'k1'): Promise<Key> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true })
  return { key: privateKey, jwk: { ...await exportJWK(publicKey), kid, alg, use: 'sig' } }
}

const main = await keyPair()
const stranger = await keyPair('ES256', 'k-unknown')
const rsa = await keyPair('RS256', 'r1')

// The key server: the JWKS, a metadata document, and the hostile variants.
const { cert, key } = selfSignedCert(t, ['keys.test'])
const server = createServer({ key, cert }, (req, res) => {
  const json = (body: unknown): void => { res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body)) }
  switch (req.url) {
    case '/jwks': return json({ keys: [main.jwk, rsa.jwk] })
    case '/client.json': return json({
      client_id: CIMD_ID,
      client_name: 'Document client',
      redirect_uris: ['https://app.example/cb'],
      token_endpoint_auth_method: 'private_key_jwt',
      jwks_uri: `${KEYS}/jwks`
    })
    case '/redirect': res.writeHead(302, { location: `${KEYS}/jwks` }).end(); return
    case '/huge': return json({ keys: [main.jwk], padding: 'x'.repeat(70_000) })
    case '/slow': setTimeout(() => json({ keys: [main.jwk] }), 1500); return
    default: res.writeHead(404).end()
  }
})
await new Promise<void>(resolve => server.listen(0, '127.0.0.1', () => resolve()))
t.teardown(() => { server.closeAllConnections(); server.close() })
const KEYS = `https://keys.test:${(server.address() as AddressInfo).port}`
const CIMD_ID = `${KEYS}/client.json`

const hooks = { lookup: async () => [{ address: '127.0.0.1', family: 4 as const }], ca: cert }

const STATIC_CLIENTS = [
  { client_id: 'pk-jwks', redirect_uris: ['https://app.example/cb'], token_endpoint_auth_method: 'private_key_jwt' as const, jwks: { keys: [main.jwk] } },
  { client_id: 'pk-uri', redirect_uris: ['https://app.example/cb'], token_endpoint_auth_method: 'private_key_jwt' as const, jwks_uri: `${KEYS}/jwks` },
  ...['redirect', 'huge', 'slow', 'missing'].map(path => ({
    client_id: `pk-${path}`, redirect_uris: ['https://app.example/cb'], token_endpoint_auth_method: 'private_key_jwt' as const, jwks_uri: `${KEYS}/${path}`
  })),
  { client_id: 'secret-client', client_secret: 'a-secret-of-enough-length', redirect_uris: ['https://app.example/cb'] }
]

async function pkApp (tt: Parameters<typeof buildApp>[0], over: Record<string, unknown> = {}): Promise<TestApp> {
  return await buildApp(tt, {
    clients: STATIC_CLIENTS,
    registration: { mode: 'public' },
    clientIdMetadataDocuments: { allowPrivateAddresses: true, timeoutMs: 500 },
    cimdTestHooks: hooks,
    ...over
  })
}

const secs = (ms: number): number => Math.floor(ms / 1000)

function claims (ctx: TestApp, clientId: string, over: JWTPayload = {}): JWTPayload {
  const now = secs(ctx.clock.now())
  return { iss: clientId, sub: clientId, aud: TOKEN_ENDPOINT, jti: crypto.randomUUID(), iat: now, exp: now + 60, ...over }
}

async function assertion (ctx: TestApp, clientId: string, over: JWTPayload = {}, signer: Key = main, header: Record<string, unknown> = {}): Promise<string> {
  return await new SignJWT(claims(ctx, clientId, over)).setProtectedHeader({ alg: signer.jwk.alg as string, kid: signer.jwk.kid, ...header }).sign(signer.key)
}

function b64 (value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url')
}

async function post (app: FastifyInstance, path: string, form: Record<string, string>, headers: Record<string, string> = {}) {
  const res = await app.inject({ method: 'POST', url: path, headers: { ...FORM, ...headers }, payload: new URLSearchParams(form).toString() })
  const body = res.body === '' ? {} : res.json() as Record<string, unknown>
  return { status: res.statusCode, body }
}

const withAssertion = (jwt: string, extra: Record<string, string> = {}): Record<string, string> =>
  ({ client_assertion_type: ASSERTION_TYPE, client_assertion: jwt, ...extra })

async function tokensFor (ctx: TestApp, clientId: string) {
  const grant = await ctx.app.mcpOAuth.grants.createGrant({ userId: 'u-1', clientId, scopes: ['mcp:tools'], resource: RESOURCE })
  return await ctx.app.mcpOAuth.grants.issueTokens(grant)
}

async function introspect (ctx: TestApp, jwt: string, token: string) {
  return await post(ctx.app, '/oauth/introspect', withAssertion(jwt, { token }))
}

t.test('a static client with jwks: token (refresh), introspection and revocation, each with a fresh assertion', async t => {
  const ctx = await pkApp(t)
  const first = await tokensFor(ctx, 'pk-jwks')
  const refreshed = await post(ctx.app, '/oauth/token', withAssertion(await assertion(ctx, 'pk-jwks'), { grant_type: 'refresh_token', refresh_token: first.refresh_token as string }))
  t.equal(refreshed.status, 200, 'refresh_token grant authenticated by the assertion')
  const access = refreshed.body.access_token as string
  const seen = await introspect(ctx, await assertion(ctx, 'pk-jwks'), access)
  t.match(seen, { status: 200, body: { active: true, client_id: 'pk-jwks' } }, 'introspection of its own token')
  const revoked = await post(ctx.app, '/oauth/revoke', withAssertion(await assertion(ctx, 'pk-jwks', {}), { token: access, client_id: 'pk-jwks' }))
  t.equal(revoked.status, 200, 'revocation, client_id in the body equal to iss')
  t.match(await introspect(ctx, await assertion(ctx, 'pk-jwks'), access), { status: 200, body: { active: false } }, 'the token is gone')
})

t.test('aud may be the token endpoint or the issuer, with or without a trailing slash, alone or among others', async t => {
  const ctx = await pkApp(t)
  const { access_token: token } = await tokensFor(ctx, 'pk-jwks')
  for (const aud of [TOKEN_ENDPOINT, `${TOKEN_ENDPOINT}/`, ISSUER, `${ISSUER}/`, ['https://other.example', ISSUER]]) {
    const res = await introspect(ctx, await assertion(ctx, 'pk-jwks', { aud }), token)
    t.match(res, { status: 200, body: { active: true } }, `aud ${JSON.stringify(aud)}`)
  }
  const res = await introspect(ctx, await assertion(ctx, 'pk-jwks', { aud: `${ISSUER}/oauth/introspect` }), token)
  t.match(res, { status: 401, body: { error: 'invalid_client', error_description: /"aud" must name https:\/\/auth\.example\.com\/oauth\/token/ } })
})

t.test('a static client with jwks_uri: keys fetched from the TLS key server, an RSA key too', async t => {
  const ctx = await pkApp(t)
  const { access_token: token } = await tokensFor(ctx, 'pk-uri')
  t.match(await introspect(ctx, await assertion(ctx, 'pk-uri'), token), { status: 200, body: { active: true } }, 'ES256')
  t.match(await introspect(ctx, await assertion(ctx, 'pk-uri', {}, rsa), token), { status: 200, body: { active: true } }, 'RS256')
})

t.test('hostile assertions at the token endpoint: 401 invalid_client with the reason; the refresh token stays usable', async t => {
  const ctx = await pkApp(t)
  const { refresh_token: refreshToken } = await tokensFor(ctx, 'pk-jwks')
  const now = secs(ctx.clock.now())
  const refresh = (extra: Record<string, string>, headers: Record<string, string> = {}) =>
    post(ctx.app, '/oauth/token', { grant_type: 'refresh_token', refresh_token: refreshToken as string, ...extra }, headers)
  const cases: Array<[string, () => Promise<string>, RegExp]> = [
    ['alg none', async () => `${b64({ alg: 'none' })}.${b64(claims(ctx, 'pk-jwks'))}.`, /not a signed JWT/],
    ['alg none with a signature', async () => `${b64({ alg: 'none' })}.${b64(claims(ctx, 'pk-jwks'))}.AAAA`, /algorithm none is not accepted/],
    ['HS256 keyed with the public key', async () => await new SignJWT(claims(ctx, 'pk-jwks')).setProtectedHeader({ alg: 'HS256', kid: 'k1' })
      .sign(new TextEncoder().encode(JSON.stringify(main.jwk))), /algorithm HS256 is not accepted/],
    ['wrong aud', () => assertion(ctx, 'pk-jwks', { aud: 'https://elsewhere.example' }), /"aud" must name/],
    ['wrong sub', () => assertion(ctx, 'pk-jwks', { sub: 'pk-uri' }), /"sub" is not the expected subject/],
    ['iss of an unknown client', () => assertion(ctx, 'nobody', {}), /^Unknown client$/],
    ['iss of a secret client', () => assertion(ctx, 'secret-client', {}), /must authenticate with client_secret_basic/],
    ['expired', () => assertion(ctx, 'pk-jwks', { iat: now - 600, exp: now - 120 }), /it has expired/],
    ['iat in the future', () => assertion(ctx, 'pk-jwks', { iat: now + 300, exp: now + 360 }), /"iat" is in the future/],
    ['lifetime too long', () => assertion(ctx, 'pk-jwks', { exp: now + 7200 }), /lifetime exceeds 3600 seconds/],
    ['unknown kid', () => assertion(ctx, 'pk-jwks', {}, stranger), /no key of the signer's key set matches/],
    ['another key under the known kid', () => assertion(ctx, 'pk-jwks', {}, { key: stranger.key, jwk: main.jwk }), /signature does not verify/],
    ['a nested JWT', () => assertion(ctx, 'pk-jwks', {}, main, { cty: 'JWT' }), /nested JWTs are not accepted/],
    ['exp as a string', () => assertion(ctx, 'pk-jwks', { exp: String(now + 60) as unknown as number }), /"exp" must be a number/],
    ['iss as a number', () => assertion(ctx, 'pk-jwks', { iss: 42 as unknown as string }), /"iss" must be a non-empty string/],
    ['no jti', () => assertion(ctx, 'pk-jwks', { jti: undefined }), /"jti" is missing/],
    ['a JWE', async () => 'a.b.c.d.e', /encrypted JWTs \(JWE\) are not accepted/],
    ['garbage', async () => 'not-a-jwt', /not a signed JWT/]
  ]
  for (const [name, make, reason] of cases) {
    const res = await refresh(withAssertion(await make()))
    t.match(res, { status: 401, body: { error: 'invalid_client', error_description: reason } }, name)
    t.match(res.body.error_description, /^The client assertion was refused: |^Unknown client$|^This client must/, `${name}: says what was refused`)
  }

  const jwt = await assertion(ctx, 'pk-jwks')
  const mixed: Array<[string, Record<string, string>, Record<string, string>, number, string, RegExp]> = [
    ['an assertion and client_secret', withAssertion(jwt, { client_secret: 'x'.repeat(20), client_id: 'pk-jwks' }), {}, 400, 'invalid_request', /one client authentication method/],
    ['an assertion and Basic', withAssertion(jwt), { authorization: `Basic ${Buffer.from('pk-jwks:x').toString('base64')}` }, 400, 'invalid_request', /one client authentication method/],
    ['an assertion without its type', { client_assertion: jwt }, {}, 400, 'invalid_request', /must be sent together/],
    ['a type without an assertion', { client_assertion_type: ASSERTION_TYPE }, {}, 400, 'invalid_request', /must be sent together/],
    ['another assertion type', { client_assertion: jwt, client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:saml2-bearer' }, {}, 401, 'invalid_client', /client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer/],
    ['client_id other than iss', withAssertion(jwt, { client_id: 'pk-uri' }), {}, 401, 'invalid_client', /client_id differs from the client assertion's issuer/],
    ['a secret for a private_key_jwt client', { client_id: 'pk-jwks', client_secret: 'x'.repeat(20) }, {}, 401, 'invalid_client', /must authenticate with private_key_jwt/],
    ['no authentication at all', { client_id: 'pk-jwks' }, {}, 401, 'invalid_client', /must authenticate with private_key_jwt/],
    ['an assertion over 8192 characters', withAssertion('a'.repeat(9000)), {}, 401, 'invalid_client', /^The client assertion was refused: it is longer than 8192 characters$/]
  ]
  for (const [name, form, headers, status, error, reason] of mixed) {
    t.match(await refresh(form, headers), { status, body: { error, error_description: reason } }, name)
  }
  const huge = await refresh(withAssertion('a'.repeat(100_000)))
  t.equal(huge.status, 413, 'a 100 KB assertion: the body is over the endpoints\' limit, refused before parsing')

  // The assertion used for the mixed cases was never verified, so its jti is unspent.
  const ok = await refresh(withAssertion(jwt))
  t.equal(ok.status, 200, 'after every refusal, the refresh token is still usable (nothing stored changed)')
  const replay = await post(ctx.app, '/oauth/token', withAssertion(jwt, { grant_type: 'refresh_token', refresh_token: ok.body.refresh_token as string }))
  t.match(replay, { status: 401, body: { error: 'invalid_client', error_description: /"jti" was used before/ } }, 'a replayed assertion')
  const again = await post(ctx.app, '/oauth/token', withAssertion(await assertion(ctx, 'pk-jwks'), { grant_type: 'refresh_token', refresh_token: ok.body.refresh_token as string }))
  t.equal(again.status, 200, 'the replay did not spend the new refresh token')
})

t.test('jwks_uri that redirects, is huge, slow, missing or private: 401 invalid_client with the fetcher\'s reason', async t => {
  const ctx = await pkApp(t)
  const cases: Array<[string, RegExp]> = [
    ['pk-redirect', /key set could not be fetched: .*redirects are not followed/],
    ['pk-huge', /key set could not be fetched: .*larger than 65536 bytes/],
    ['pk-slow', /key set could not be fetched: .*no complete answer within 500 ms/],
    ['pk-missing', /key set could not be fetched: .*HTTP 404/]
  ]
  for (const [clientId, reason] of cases) {
    const { access_token: token } = await tokensFor(ctx, clientId)
    t.match(await introspect(ctx, await assertion(ctx, clientId), token), { status: 401, body: { error: 'invalid_client', error_description: reason } }, clientId)
  }
  const strict = await pkApp(t, { clientIdMetadataDocuments: { allowPrivateAddresses: false, timeoutMs: 500 } })
  const { access_token: token } = await tokensFor(strict, 'pk-uri')
  t.match(await introspect(strict, await assertion(strict, 'pk-uri'), token),
    { status: 401, body: { error: 'invalid_client', error_description: /key set could not be fetched: .*private, loopback/ } }, 'a private address')
})

t.test('a registered private_key_jwt client: no secret issued, keys echoed and kept by RFC 7592; it authenticates', async t => {
  const ctx = await pkApp(t)
  const reg = await ctx.app.inject({ method: 'POST', url: '/oauth/register', payload: { redirect_uris: ['https://app.example/cb'], token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [main.jwk] } } })
  t.equal(reg.statusCode, 201)
  const info = reg.json() as Record<string, unknown>
  t.notOk('client_secret' in info, 'no client_secret')
  t.same(info.jwks, { keys: [main.jwk] })
  t.equal(info.token_endpoint_auth_method, 'private_key_jwt')
  const clientId = info.client_id as string
  const { access_token: token } = await tokensFor(ctx, clientId)
  t.match(await introspect(ctx, await assertion(ctx, clientId), token), { status: 200, body: { active: true, client_id: clientId } })

  const read = await ctx.app.inject({ method: 'GET', url: `/oauth/register/${clientId}`, headers: { authorization: `Bearer ${info.registration_access_token as string}` } })
  const readInfo = read.json() as Record<string, unknown>
  t.same(readInfo.jwks, { keys: [main.jwk] }, 'a read keeps the keys')
  // An update to a jwks_uri: the inline keys go, the remote ones count.
  const updated = await ctx.app.inject({
    method: 'PUT',
    url: `/oauth/register/${clientId}`,
    headers: { authorization: `Bearer ${readInfo.registration_access_token as string}` },
    payload: { client_id: clientId, redirect_uris: ['https://app.example/cb'], token_endpoint_auth_method: 'private_key_jwt', jwks_uri: `${KEYS}/jwks` }
  })
  t.equal(updated.statusCode, 200)
  t.match(updated.json(), { jwks_uri: `${KEYS}/jwks` })
  t.notOk('jwks' in updated.json() || 'client_secret' in updated.json())
  t.match(await introspect(ctx, await assertion(ctx, clientId, {}, rsa), token), { status: 200, body: { active: true } }, 'a key only the jwks_uri holds')
})

t.test('registration refuses private_key_jwt metadata that cannot work', async t => {
  const ctx = await pkApp(t)
  const base = { redirect_uris: ['https://app.example/cb'], token_endpoint_auth_method: 'private_key_jwt' }
  const { d: _d, ...rest } = await exportJWK((await generateKeyPair('ES256', { extractable: true })).privateKey)
  const privateJwk = { ...rest, d: _d }
  const cases: Array<[string, Record<string, unknown>, RegExp]> = [
    ['no keys', base, /needs exactly one of jwks and jwks_uri/],
    ['both', { ...base, jwks: { keys: [main.jwk] }, jwks_uri: `${KEYS}/jwks` }, /needs exactly one of jwks and jwks_uri/],
    ['a private key', { ...base, jwks: { keys: [privateJwk] } }, /jwks: key 0 holds the private member "d"/],
    ['a symmetric key', { ...base, jwks: { keys: [{ kty: 'oct', k: 'AAAA' }] } }, /key 0 must be an EC, RSA or OKP public key/],
    ['a broken key', { ...base, jwks: { keys: [{ kty: 'EC', crv: 'P-256', x: 'AA' }] } }, /key 0 is not a valid EC public key/],
    ['not a set', { ...base, jwks: [main.jwk] }, /no "keys" array/],
    ['an empty set', { ...base, jwks: { keys: [] } }, /holds no key/],
    ['http jwks_uri', { ...base, jwks_uri: 'http://keys.example/jwks' }, /jwks_uri must be an https URL/],
    ['jwks_uri not a string', { ...base, jwks_uri: 7 }, /jwks_uri must be an https URL/],
    ['keys with a secret method', { redirect_uris: ['https://app.example/cb'], jwks: { keys: [main.jwk] } }, /used with token_endpoint_auth_method "private_key_jwt" only/]
  ]
  for (const [name, payload, reason] of cases) {
    const res = await ctx.app.inject({ method: 'POST', url: '/oauth/register', payload })
    t.match({ status: res.statusCode, body: res.json() }, { status: 400, body: { error: 'invalid_client_metadata', error_description: reason } }, name)
  }
})

t.test('a metadata-document client declaring private_key_jwt with a jwks_uri authenticates with its keys', async t => {
  const ctx = await pkApp(t)
  const { access_token: token } = await tokensFor(ctx, CIMD_ID)
  t.match(await introspect(ctx, await assertion(ctx, CIMD_ID), token), { status: 200, body: { active: true, client_id: CIMD_ID } })
  t.match(await introspect(ctx, await assertion(ctx, CIMD_ID, {}, stranger), token), { status: 401, body: { error: 'invalid_client' } })
  const none = await post(ctx.app, '/oauth/introspect', { token: token as string, client_id: CIMD_ID })
  t.match(none, { status: 401, body: { error_description: /must authenticate with private_key_jwt/ } }, 'no longer a public client')
})

t.test('a private_key_jwt record without keys (a custom store wrote it) is refused, not a 500', async t => {
  const store = new MemoryStore()
  await store.saveClient({
    clientId: 'keyless',
    redirectUris: [],
    tokenEndpointAuthMethod: 'private_key_jwt',
    grantTypes: ['client_credentials'],
    responseTypes: [],
    applicationType: 'web',
    metadata: {},
    clientIdIssuedAt: 0,
    source: 'dcr'
  })
  const ctx = await pkApp(t, { store })
  const res = await post(ctx.app, '/oauth/token', withAssertion(await assertion(ctx, 'keyless'), { grant_type: 'client_credentials' }))
  t.match(res, { status: 401, body: { error: 'invalid_client', error_description: 'The client assertion was refused: this client has no registered keys' } })
})

t.test('static private_key_jwt clients are checked at start-up', async t => {
  const base = { issuer: ISSUER, resources: [RESOURCE] }
  const client = { client_id: 'c', redirect_uris: ['https://app.example/cb'], token_endpoint_auth_method: 'private_key_jwt' as const }
  const cases: Array<[string, Record<string, unknown>, RegExp]> = [
    ['no keys', client, /clients\[0\]: a private_key_jwt client needs exactly one of jwks and jwks_uri/],
    ['both', { ...client, jwks: { keys: [main.jwk] }, jwks_uri: `${KEYS}/jwks` }, /exactly one of jwks and jwks_uri/],
    ['a secret too', { ...client, jwks: { keys: [main.jwk] }, client_secret: 'x'.repeat(20) }, /clients\[0\]\.client_secret: a private_key_jwt client has no secret/],
    ['http jwks_uri', { ...client, jwks_uri: 'http://keys.example/jwks' }, /clients\[0\]\.jwks_uri: must be an https URL/],
    ['a private key', { ...client, jwks: { keys: [{ ...main.jwk, d: 'AAAA' }] } }, /clients\[0\]\.jwks: key 0 holds the private member "d"/],
    ['keys without the method', { client_id: 'c', redirect_uris: ['https://app.example/cb'], client_secret: 'x'.repeat(20), jwks: { keys: [main.jwk] } },
      /clients\[0\]\.jwks: is used by token_endpoint_auth_method "private_key_jwt" only/]
  ]
  for (const [name, c, reason] of cases) {
    t.throws(() => resolveOptions({ ...base, clients: [c] }), { message: reason }, name)
  }
  t.ok(resolveOptions({ ...base, clients: [{ ...client, jwks_uri: `${KEYS}/jwks` }] }), 'a jwks_uri alone is fine')
})

t.test('metadata lists private_key_jwt and its algorithms', async t => {
  const ctx = await pkApp(t)
  const res = await ctx.app.inject({ url: '/.well-known/oauth-authorization-server' })
  const body = res.json() as Record<string, string[]>
  for (const endpoint of ['token', 'revocation', 'introspection']) {
    t.ok(body[`${endpoint}_endpoint_auth_methods_supported`]?.includes('private_key_jwt'), endpoint)
    t.same(body[`${endpoint}_endpoint_auth_signing_alg_values_supported`], ['ES256', 'RS256', 'PS256', 'EdDSA'], endpoint)
  }
})

await withRedisServer('private_key_jwt replay across two instances on one Redis', redis => {
  t.test('two plugin instances on one Redis: an assertion accepted by one is refused by the other', async t => {
    const prefix = `pkjwt-${crypto.randomUUID()}:`
    // Both instances and their stores on the test clocks' start (the plugin closes its store).
    const now = (): number => Date.UTC(2026, 0, 1)
    const ctxA = await pkApp(t, { store: new RedisStore({ url: redis.url, prefix, now, commandTimeoutMs: 2000 }) })
    const ctxB = await pkApp(t, { store: new RedisStore({ url: redis.url, prefix, now, commandTimeoutMs: 2000 }) })
    const { refresh_token: refreshToken } = await tokensFor(ctxA, 'pk-jwks')
    const jwt = await assertion(ctxA, 'pk-jwks')
    const first = await post(ctxA.app, '/oauth/token', withAssertion(jwt, { grant_type: 'refresh_token', refresh_token: refreshToken as string }))
    t.equal(first.status, 200, 'accepted by the first instance')
    const next = first.body.refresh_token as string
    const replay = await post(ctxB.app, '/oauth/token', withAssertion(jwt, { grant_type: 'refresh_token', refresh_token: next }))
    t.match(replay, { status: 401, body: { error: 'invalid_client', error_description: /"jti" was used before/ } }, 'the replay at the second instance')
    const fresh = await post(ctxB.app, '/oauth/token', withAssertion(await assertion(ctxB, 'pk-jwks'), { grant_type: 'refresh_token', refresh_token: next }))
    t.equal(fresh.status, 200, 'the successor refresh token was untouched by the replay')
  })
})
