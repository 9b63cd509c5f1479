import t from 'tap'
import { createServer as createHttpServer } from 'node:http'
import { createServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import fc from 'fast-check'
import {
  CompactSign, createLocalJWKSet, exportJWK, generateKeyPair, SignJWT,
  type CryptoKey, type JSONWebKeySet, type JWK, type JWTPayload
} from 'jose'
import { OAuthError } from '../lib/errors.js'
import { AssertionRefused, checkAssertion, decodeAssertion, MAX_ASSERTION_LENGTH } from '../lib/oauth/jwt.js'
import { AssertionVerifier, type AssertionRules } from '../lib/security/assertion.js'
import { SafeFetcher, type SafeFetchOptions } from '../lib/security/fetch.js'
import { RemoteKeySets } from '../lib/security/jwks.js'
import { MemoryStore } from '../lib/storage/memory/index.js'
import { RedisStore } from '../lib/storage/redis/index.js'
import { selfSignedCert } from './helpers/tls.js'
import { withRedisServer } from './helpers/redis-tests.js'

/*
 * The assertion engine on its own: the key-less checks (lib/oauth/jwt.ts), the verifier with its
 * replay cache (lib/security/assertion.ts) and remote key sets (lib/security/jwks.ts). The endpoints
 * that use it (private_key_jwt, jwt-bearer) have their own tests.
 */

const AUD = 'https://as.example.com'
const T0 = Date.UTC(2026, 11, 1, 12)
const now = (): number => T0
const secs = (ms: number): number => Math.floor(ms / 1000)

interface Signer {
  key: CryptoKey
  jwk: JWK
  alg: string
}

async function signer (alg: string, kid = alg.toLowerCase() + '-1'): Promise<Signer> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true })
  const jwk = { ...await exportJWK(publicKey), kid, alg, use: 'sig' }
  return { key: privateKey, jwk, alg }
}

function claims (over: JWTPayload = {}): JWTPayload {
  return { iss: 'client-1', sub: 'client-1', aud: AUD, jti: crypto.randomUUID(), iat: secs(T0), exp: secs(T0) + 60, ...over }
}

async function sign (s: Signer, payload: JWTPayload = claims(), header: Record<string, unknown> = {}): Promise<string> {
  return await new SignJWT(payload).setProtectedHeader({ alg: s.alg, kid: s.jwk.kid, ...header }).sign(s.key)
}

function b64 (value: unknown): string {
  return Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url')
}

const es = await signer('ES256')
const jwks: JSONWebKeySet = { keys: [es.jwk] }

function rules (over: Partial<AssertionRules> = {}): AssertionRules {
  return { label: 'client assertion', error: 'invalid_client', keys: createLocalJWKSet(jwks), issuer: 'client-1', subject: 'client-1', audience: [AUD], ...over }
}

function verifier (store: Pick<MemoryStore, 'consumeAssertionId'> = new MemoryStore(), clock = now): AssertionVerifier {
  return new AssertionVerifier({ store, now: clock })
}

t.test('an assertion signed with each accepted algorithm verifies once; its replay is refused', async t => {
  for (const alg of ['ES256', 'RS256', 'PS256', 'EdDSA']) {
    const s = await signer(alg)
    const v = verifier()
    const jwt = await sign(s)
    const ok = await v.verify(jwt, rules({ keys: createLocalJWKSet({ keys: [s.jwk] }) }))
    t.equal(ok.claims.iss, 'client-1', `${alg} verifies`)
    await t.rejects(v.verify(jwt, rules({ keys: createLocalJWKSet({ keys: [s.jwk] }) })),
      { error: 'invalid_client', message: /"jti" was used before/ }, `${alg}: the replay is refused`)
  }
})

t.test('every refusal is an OAuthError with the caller\'s code and a reason; the jti is not spent by a refused one', async t => {
  const store = new MemoryStore()
  const v = verifier(store)
  const other = await signer('ES256', 'es256-1') // same kid, another key
  const rsa = await signer('RS256')
  const jti = crypto.randomUUID()
  const cases: Array<[string, () => Promise<string>, RegExp, Partial<AssertionRules>?]> = [
    ['wrong audience', () => sign(es, claims({ jti, aud: 'https://elsewhere.example.com' })), /"aud" must name https:\/\/as\.example\.com/],
    ['wrong issuer', () => sign(es, claims({ jti, iss: 'client-2' })), /"iss" is not the expected issuer/],
    ['wrong subject', () => sign(es, claims({ jti, sub: 'client-2' })), /"sub" is not the expected subject/],
    ['expired', () => sign(es, claims({ jti, iat: secs(T0) - 600, exp: secs(T0) - 61 })), /it has expired/],
    ['iat in the future', () => sign(es, claims({ jti, iat: secs(T0) + 120, exp: secs(T0) + 180 })), /"iat" is in the future/],
    ['nbf in the future', () => sign(es, claims({ jti, nbf: secs(T0) + 120 })), /not valid yet/],
    ['too long a lifetime', () => sign(es, claims({ jti, exp: secs(T0) + 7200 })), /lifetime exceeds 3600 seconds/],
    ['no exp', () => sign(es, claims({ jti, exp: undefined })), /"exp" is missing/],
    ['no jti', () => sign(es, claims({ jti: undefined })), /"jti" is missing/],
    ['exp as a string', () => sign(es, { ...claims({ jti }), exp: String(secs(T0) + 60) } as unknown as JWTPayload), /"exp" must be a number/],
    ['aud as a number', () => sign(es, { ...claims({ jti }), aud: 5 } as unknown as JWTPayload), /"aud" must be a string/],
    ['another key under the same kid', () => sign(other, claims({ jti })), /signature does not verify/],
    ['an unknown kid', () => sign(rsa, claims({ jti })), /no key of the signer's key set matches/],
    ['alg none', async () => `${b64({ alg: 'none' })}.${b64(claims({ jti }))}.`, /not a signed JWT/],
    ['alg none with a signature', async () => `${b64({ alg: 'none' })}.${b64(claims({ jti }))}.AAAA`, /algorithm none is not accepted/],
    ['HS256 keyed with the public key', async () => {
      const secret = new TextEncoder().encode(JSON.stringify(es.jwk))
      return await new SignJWT(claims({ jti })).setProtectedHeader({ alg: 'HS256', kid: es.jwk.kid }).sign(secret)
    }, /algorithm HS256 is not accepted/],
    ['a nested JWT', () => sign(es, claims({ jti }), { cty: 'JWT' }), /nested JWTs are not accepted/],
    ['a JWE', async () => 'a.b.c.d.e', /encrypted JWTs \(JWE\) are not accepted/],
    ['100 KB', async () => 'x'.repeat(100_000), new RegExp(`longer than ${MAX_ASSERTION_LENGTH} characters`)],
    ['not base64url JSON', async () => 'abc.def.ghi', /header is not JSON/],
    ['claims an array', async () => `${b64({ alg: 'ES256' })}.${b64([1, 2])}.AAAA`, /claims set is not a JSON object/],
    ['wrong typ', () => sign(es, claims({ jti }), { typ: 'JWT' }), /"typ" must be oauth-id-jag\+jwt/, { typ: 'oauth-id-jag+jwt', error: 'invalid_grant', label: 'ID-JAG' }],
    ['a crit header', async () => `${b64({ alg: 'ES256', crit: ['exp'], exp: 1 })}.${b64(claims({ jti }))}.AAAA`, /critical header/]
  ]
  for (const [name, make, reason, over] of cases) {
    const err = await v.verify(await make(), rules(over)).catch((e: unknown) => e)
    t.ok(err instanceof OAuthError, `${name}: an OAuthError`)
    t.match(err, { error: over?.error ?? 'invalid_client', message: reason }, name)
    t.match((err as Error).message, over?.label === 'ID-JAG' ? /^The ID-JAG was refused: / : /^The client assertion was refused: /)
  }
  t.ok(await v.verify(await sign(es, claims({ jti })), rules()), 'the jti was not spent by the refused assertions')
  t.ok(await v.verify(await sign(es, claims(), { typ: 'application/OAUTH-ID-JAG+JWT' }), rules({ typ: 'oauth-id-jag+jwt' })),
    'typ compares case-insensitively, with or without application/')
})

t.test('verify reuses what decode gave for the same value only: any other decoded assertion is ignored', async t => {
  const v = verifier()
  const good = await sign(es)
  const expired = await sign(es, claims({ exp: secs(T0) - 3600, iat: secs(T0) - 3660 }))
  const decodedGood = v.decode(good, rules())
  await t.rejects(v.verify(expired, rules(), decodedGood), { error: 'invalid_client', message: /has expired/ },
    'the decoding of another value: the expired one is decoded itself and refused')
  const decodedExpired = v.decode(expired, rules())
  const forged = { header: decodedExpired.header, claims: { ...decodedExpired.claims, exp: secs(T0) + 60 } }
  await t.rejects(v.verify(expired, rules(), forged), { error: 'invalid_client', message: /has expired/ },
    'an object decode did not make (claims changed) is ignored')
  const ok = await v.verify(good, rules(), decodedGood)
  t.equal(ok, decodedGood, 'its own decoding of the value is used as it is')
})

t.test('times are checked with the skew: an assertion just expired or issued a little ahead passes', async t => {
  const v = verifier()
  t.ok(await v.verify(await sign(es, claims({ iat: secs(T0) - 100, exp: secs(T0) - 30 })), rules()), 'expired 30 s ago, within 60 s of skew')
  t.ok(await v.verify(await sign(es, claims({ iat: secs(T0) + 30, exp: secs(T0) + 90 })), rules()), 'issued 30 s ahead')
  t.ok(await v.verify(await sign(es, claims({ iat: undefined, exp: secs(T0) + 3000 })), rules()), 'without iat the lifetime counts from now')
})

t.test('the replay cache is shared: two verifiers on one store, eight concurrent uses, one wins', async t => {
  const store = new MemoryStore()
  const jwt = await sign(es)
  const results = await Promise.allSettled(Array.from({ length: 8 }, (_, i) => verifier(store).verify(jwt, rules()).then(() => i)))
  t.equal(results.filter(r => r.status === 'fulfilled').length, 1)
})

t.test('fuzz: any string, and any header and claims, give a decoded assertion or an AssertionRefused', async t => {
  const json = fc.jsonValue({ maxDepth: 2 })
  const header = fc.oneof(json, fc.record({ alg: fc.constantFrom('ES256', 'RS256', 'none', 'HS256', 'EdDSA'), kid: fc.option(json), typ: fc.option(json), cty: fc.option(json), crit: fc.option(json) }, { requiredKeys: ['alg'] }))
  const claimSet = fc.oneof(json, fc.record({
    iss: json, sub: json, aud: fc.oneof(json, fc.array(fc.string())), exp: json, iat: json, nbf: json, jti: json
  }, { requiredKeys: [] }))
  const parts = fc.tuple(header, claimSet, fc.base64String()).map(([h, c, sig]) => `${b64(h)}.${b64(c)}.${sig.replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_')}`)
  const check = (value: string): void => {
    try {
      const decoded = decodeAssertion(value)
      t.equal(typeof decoded.claims.iss, 'string')
      checkAssertion(decoded, { audience: [AUD], now: T0, skewSeconds: 60, maxLifetimeSeconds: 3600 })
    } catch (err) {
      if (!(err instanceof AssertionRefused)) throw err
    }
  }
  fc.assert(fc.property(fc.oneof(fc.string({ maxLength: 300 }), parts), value => { check(value) }), { numRuns: 3000 })
  t.pass('3000 inputs, no other error')
})

// ---- remote key sets ---------------------------------------------------------------------------

const { cert, key } = selfSignedCert(t, ['keys.test'])
let served: { status: number, body: string, headers: Record<string, string>, delayMs?: number } = { status: 200, body: JSON.stringify(jwks), headers: {} }
let fetches = 0
const server = createServer({ key, cert }, (req, res) => {
  fetches++
  const answer = (): void => {
    res.writeHead(served.status, { 'content-type': 'application/json', ...served.headers }).end(served.body)
  }
  if (served.delayMs !== undefined) setTimeout(answer, served.delayMs)
  else answer()
})
await new Promise<void>(resolve => server.listen(0, '127.0.0.1', () => resolve()))
t.teardown(() => {
  server.closeAllConnections()
  server.close()
})
const jwksUri = `https://keys.test:${(server.address() as AddressInfo).port}/jwks`

function fetcher (opts: Partial<SafeFetchOptions> = {}): SafeFetcher {
  return new SafeFetcher({
    timeoutMs: 1000,
    maxBytes: 16384,
    mediaType: ['application/jwk-set+json', 'application/json'],
    userAgent: 'test',
    allowPrivateAddresses: true,
    lookup: async () => [{ address: '127.0.0.1', family: 4 }],
    ca: cert,
    ...opts
  })
}

t.test('remote key sets: cached by max-age within bounds, one refetch for an unknown kid per interval', async t => {
  let clock = T0
  served = { status: 200, body: JSON.stringify(jwks), headers: { 'cache-control': 'max-age=600' } }
  fetches = 0
  const sets = new RemoteKeySets({ fetcher: fetcher(), now: () => clock, minCacheSeconds: 60, maxCacheSeconds: 3600, refetchAfterSeconds: 30 })
  const v = new AssertionVerifier({ store: new MemoryStore(), now: () => clock })
  const keyed = (): AssertionRules => rules({ keys: sets.keys(jwksUri) })
  await Promise.all([v.verify(await sign(es), keyed()), v.verify(await sign(es), keyed())])
  t.equal(fetches, 1, 'two concurrent verifications, one fetch')
  clock += 599_000
  await v.verify(await sign(es, claims({ iat: secs(clock), exp: secs(clock) + 60 })), keyed())
  t.equal(fetches, 1, 'within max-age: from the cache')
  clock += 2000
  await v.verify(await sign(es, claims({ iat: secs(clock), exp: secs(clock) + 60 })), keyed())
  t.equal(fetches, 2, 'after max-age: fetched again')

  // Rotation: a new key appears under a new kid.
  const next = await signer('ES256', 'es256-2')
  served.body = JSON.stringify({ keys: [es.jwk, next.jwk] })
  const fresh = (): JWTPayload => claims({ iat: secs(clock), exp: secs(clock) + 60 })
  await t.rejects(v.verify(await sign(next, fresh()), keyed()), { message: /no key of the signer's key set matches/ }, 'within 30 s of the last fetch: no refetch')
  t.equal(fetches, 2)
  clock += 31_000
  t.ok(await v.verify(await sign(next, fresh()), keyed()), 'an unknown kid after 30 s: one refetch finds the rotated key')
  t.equal(fetches, 3)
  const stranger = await signer('ES256', 'made-up')
  for (let i = 0; i < 5; i++) await t.rejects(v.verify(await sign(stranger, fresh()), keyed()), { message: /^The client assertion was refused/ })
  t.equal(fetches, 3, 'made-up kids do not make it fetch on every request')

  // max-age beyond the bound is clamped; no-store is the floor.
  served.headers = { 'cache-control': 'no-store' }
  clock += 3_600_001
  await v.verify(await sign(es, fresh()), keyed())
  t.equal(fetches, 4)
  clock += 59_000
  await v.verify(await sign(es, fresh()), keyed())
  t.equal(fetches, 4, 'no-store still caches for the minimum')
})

t.test('remote key sets: a failed refetch keeps the set before while it is young; bad documents are refused with the reason', async t => {
  let clock = T0
  served = { status: 200, body: JSON.stringify(jwks), headers: {} }
  const sets = new RemoteKeySets({ fetcher: fetcher(), now: () => clock, minCacheSeconds: 60, maxCacheSeconds: 600 })
  const v = new AssertionVerifier({ store: new MemoryStore(), now: () => clock })
  const fresh = (): JWTPayload => claims({ iat: secs(clock), exp: secs(clock) + 60 })
  await v.verify(await sign(es, fresh()), rules({ keys: sets.keys(jwksUri) }))
  served = { status: 500, body: 'oops', headers: {} }
  clock += 120_000
  t.ok(await v.verify(await sign(es, fresh()), rules({ keys: sets.keys(jwksUri) })), 'the IdP is down: the set fetched 2 min ago still serves')
  clock += 600_000
  await t.rejects(v.verify(await sign(es, fresh()), rules({ keys: sets.keys(jwksUri) })),
    { error: 'invalid_client', message: 'The client assertion was refused: the signer\'s key set could not be fetched: the server answered HTTP 500; 200 is required' })

  const refusals: Array<[string, typeof served, RegExp]> = [
    ['a redirect', { status: 302, body: '', headers: { location: 'https://keys.test/elsewhere' } }, /redirects are not followed/],
    ['HTML', { status: 200, body: '<html>', headers: { 'content-type': 'text/html' } }, /Content-Type must be application\/jwk-set\+json or application\/json/],
    ['not JSON', { status: 200, body: '{', headers: {} }, /the key set is not JSON/],
    ['no keys array', { status: 200, body: '{"keys":{}}', headers: {} }, /no "keys" array/],
    ['a broken key', { status: 200, body: '{"keys":[{"kty":"EC","crv":"P-256","x":"AA"}]}', headers: {} }, /no key of the signer's key set matches|not a valid JWK Set|could not be verified/],
    ['too large', { status: 200, body: JSON.stringify({ keys: Array.from({ length: 200 }, () => es.jwk) }), headers: {} }, /larger than 16384 bytes/],
    ['too slow', { status: 200, body: JSON.stringify(jwks), headers: {}, delayMs: 1500 }, /no complete answer within 1000 ms/]
  ]
  for (const [name, answer, reason] of refusals) {
    served = answer
    const sets = new RemoteKeySets({ fetcher: fetcher(), now: () => clock })
    await t.rejects(v.verify(await sign(es, fresh()), rules({ keys: sets.keys(jwksUri) })), { error: 'invalid_client', message: reason }, name)
  }
  served = { status: 200, body: JSON.stringify(jwks), headers: {} }
  const strict = new RemoteKeySets({ fetcher: fetcher({ allowPrivateAddresses: false }), now: () => clock })
  await t.rejects(v.verify(await sign(es, fresh()), rules({ keys: strict.keys(jwksUri) })), { message: /private, loopback/ }, 'a private address')
})

t.test('plain http reaches a loopback key set only when allowed (an operator-configured IdP in development)', async t => {
  const plain = createHttpServer((_req, res) => { res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(jwks)) })
  await new Promise<void>(resolve => plain.listen(0, '127.0.0.1', () => resolve()))
  t.teardown(() => { plain.closeAllConnections(); plain.close() })
  const uri = `http://127.0.0.1:${(plain.address() as AddressInfo).port}/jwks`
  const v = verifier()
  const strict = new RemoteKeySets({ fetcher: fetcher({ allowPrivateAddresses: false }), now })
  await t.rejects(v.verify(await sign(es), rules({ keys: strict.keys(uri) })), { message: /the URL must use https/ })
  const dev = new RemoteKeySets({ fetcher: fetcher({ allowPrivateAddresses: false, allowHttpLoopback: true }), now })
  t.ok(await v.verify(await sign(es), rules({ keys: dev.keys(uri) })))
  await t.rejects(v.verify(await sign(es), rules({ keys: dev.keys('http://keys.test/jwks') })), { message: /the URL must use https/ }, 'not for a name that is not loopback')
})

t.test('bytes signed with CompactSign but not a JWT claims set are refused before the signature', async t => {
  const jws = await new CompactSign(new TextEncoder().encode('hello')).setProtectedHeader({ alg: 'ES256', kid: es.jwk.kid }).sign(es.key)
  await t.rejects(verifier().verify(jws, rules()), { message: /claims set is not JSON/ })
})

await withRedisServer('the replay cache across two replicas on one Redis', server => {
  t.test('two replicas (two RedisStores on one Redis): an assertion used at one is refused at the other', async t => {
    const prefix = `jti-${crypto.randomUUID()}:`
    const a = new RedisStore({ url: server.url, prefix, now })
    const b = new RedisStore({ url: server.url, prefix, now })
    t.teardown(async () => { await a.close(); await b.close() })
    const jwt = await sign(es)
    const [first, second] = await Promise.allSettled([verifier(a).verify(jwt, rules()), verifier(b).verify(jwt, rules())])
    t.equal([first, second].filter(r => r.status === 'fulfilled').length, 1, 'one of two concurrent uses wins')
    await t.rejects(verifier(b).verify(jwt, rules()), { message: /"jti" was used before/ })
    t.ok(await verifier(a).verify(await sign(es), rules()), 'another assertion is its own')
  })
})
