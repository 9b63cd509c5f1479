import t, { type Test } from 'tap'
import fc from 'fast-check'
import { randomUUID } from 'node:crypto'
import { connect } from 'node:net'
import type { InjectOptions } from 'fastify'
import { buildApp, ISSUER, RESOURCE, type TestApp } from './helpers/app.js'
import { startDevIdp, type DevIdp } from '../example/dev-idp.js'
import { oidcProvider } from '../lib/providers/oidc.js'
import type { McpOAuthOptions, StoreStats, TokenPair, TokenResponse } from '../lib/index.js'
import { generateToken, hashToken } from '../lib/oauth/tokens.js'
import { s256 } from '../lib/oauth/pkce.js'
import { matchRedirectUri } from '../lib/oauth/redirect.js'

/**
 * Hostile traffic against every endpoint the plugin serves (and the guarded POST /mcp): fast-check
 * generates requests that are mostly structurally valid (real client ids, real tokens, codes, flow
 * states, signed consent requests) with each field kept, dropped, repeated or replaced by something
 * nasty; methods, headers, content types and encodings are mixed in the same way. Every response is
 * judged (no 5xx, OAuth-shaped errors with the right status and no-store, pages that are only our
 * markup with their CSP and no control or bidi-override characters, no redirect to an unregistered
 * target, no secret the request did not carry, no answer slower than a second) and the store must not
 * move on a rejected request (flows, codes and refresh families may only shrink where the protocol says
 * so: a flow state is take-once, a replayed code or refresh token revokes its family). Static clients
 * and a canary grant whose credentials the fuzzer never learns must stay byte-for-byte the same.
 * Then the server must still serve a normal request, a refresh and a code exchange. Deterministic
 * checks follow: every route has a rate limit, HEAD changes nothing, consent pages show names safely.
 *
 * What counts as acceptable outside the OAuth error shape (each one counted and printed):
 * - 404 from Fastify's router for a method or path that has no route (PATCH /oauth/token, a made-up
 *   path): Fastify's JSON `{ message, error: "Not Found", statusCode: 404 }`. Fastify has no 405.
 * - 400/414 from Fastify's router for a path it cannot decode (`/oauth/register/%ff`) or a path
 *   parameter longer than `maxParamLength` (100): Fastify's JSON `{ error, code, message, statusCode }`,
 *   sent before any route (so before the plugin's error handler) is chosen.
 * - 400/415 for a request that matches no route but carries a body Fastify cannot parse: the 404 route
 *   parses the body first, so the answer is Fastify's parser error instead of the 404.
 * - OPTIONS on CORS-covered paths: @fastify/cors answers preflights itself (204, or 400 text/plain
 *   "Invalid Preflight Request" when Origin / Access-Control-Request-Method are missing).
 * - Made-up methods and malformed HTTP are refused by Node's HTTP parser with 400 before Fastify sees
 *   them; inject() cannot send them, so a raw-socket section covers them.
 * - POST /mcp once the guard has let a valid token through is the application's route: its body
 *   parsing errors are Fastify's default error shape, not the plugin's.
 */

const RFC_ERRORS = new Set([
  'invalid_request', 'invalid_client', 'invalid_grant', 'unauthorized_client', 'unsupported_grant_type',
  'unsupported_token_type', 'invalid_scope', 'invalid_target', 'invalid_client_metadata', 'invalid_redirect_uri',
  'invalid_token', 'temporarily_unavailable', 'access_denied', 'slow_down', 'insufficient_scope'
])
/** The statuses each error may come with (invalid_request also covers 413/415 from the body parser). */
const ERROR_STATUS: Record<string, number[]> = {
  invalid_request: [400, 413, 415],
  invalid_client: [401],
  invalid_token: [401],
  insufficient_scope: [403],
  access_denied: [403],
  slow_down: [429],
  temporarily_unavailable: [429, 503]
}

const VERIFIER = 'hostile-verifier-' + 'v'.repeat(40)
const PUB = { client_id: 'pub-app', redirect_uris: ['http://127.0.0.1/cb'] }
const BASIC = { client_id: 'basic-app', client_secret: 'basic-secret-0123456789abcdef', redirect_uris: ['https://basic.example.com/cb'] }
const POST = {
  client_id: 'post-app',
  client_secret: 'post-secret-0123456789abcdef',
  token_endpoint_auth_method: 'client_secret_post' as const,
  redirect_uris: ['https://post.example.com/cb?keep=1']
}
/** Owner of the canary grant; the fuzzer never learns this secret, so nothing may touch the grant. */
const CANARY = { client_id: 'canary-app', client_secret: 'canary-secret-never-sent-by-the-fuzzer', redirect_uris: ['https://canary.example.com/cb'] }
const STATIC = [PUB, BASIC, POST, CANARY]
const RS = { id: 'rs', secret: 'rs-secret-rs-secret-rs-secret-rs-secret' }
/** Pool upkeep comes from its own address, so it has its own rate-limit budget. */
const SETUP_IP = '192.0.2.1'
const COOKIE_SECRET = 'hostile-cookie-secret-hostile-cookie-secret'
const UPSTREAM_SECRET = 'upstream-secret-upstream-secret-upstream'

// ---- values ---------------------------------------------------------------------------------

/** A value in a generated request: plain JSON, a reference to a live credential, or raw JSON text. */
type Val = string | number | boolean | null | Val[] | { [k: string]: Val } | Ref | Raw
interface Ref { $ref: RefName, i: number }
interface Raw { $raw: string }
type RefName = 'clientId' | 'secret' | 'access' | 'refresh' | 'code' | 'verifier' | 'redirect' | 'regToken' | 'dcrId' |
  'consentRequest' | 'consentRequestTampered' | 'csrf' | 'csrfCookie' | 'consentCookie' | 'flowState' | 'rsId' | 'rsSecret'
type Pair = [string, Val]

/** A parameter left out (for optional parameters of otherwise plausible requests). */
const ABSENT: Raw = { $raw: '' }
const optional = (good: fc.Arbitrary<Val>) => fc.oneof(good, fc.constant<Val>(ABSENT))
const ref = (name: RefName) => fc.nat({ max: 1000 }).map((i): Ref => ({ $ref: name, i }))
const isRef = (v: unknown): v is Ref => typeof v === 'object' && v !== null && '$ref' in v
const isRaw = (v: unknown): v is Raw => typeof v === 'object' && v !== null && '$raw' in v

const NAUGHTY = [
  '', ' ', '\t', '\n', '\r\n', '\u0000', 'a\u0000b', '\u0000'.repeat(20), 'null', 'undefined', 'NaN', 'true', '[]', '{}', '0', '-1',
  '99999999999999999999999999999999999999999999999999', '1e309', '-0', '0x41', '1'.repeat(400),
  "' OR '1'='1", "'; DROP TABLE clients; --", '" OR ""="', '1; SELECT pg_sleep(10)', '$where: 1', '{"$gt": ""}',
  '<script>alert(1)</script>', '"><img src=x onerror=alert(1)>', 'javascript:alert(1)', '</form><form action=https://evil.example>',
  '$' + '{7*7}', '{{7*7}}', '#{7*7}', '%s%s%s%n', '../../../../etc/passwd', '..%2f..%2fetc%2fpasswd', 'file:///etc/passwd',
  '\u202eevil\u202c', '\u200b', '\u200d\u200c\ufeff', '\u2028\u2029', 'Ω≈ç√∫', '田中さん', '𝕿𝖍𝖊', '👩‍👩‍👧‍👦', '🔥'.repeat(50),
  '\ud800', '\udfff', 'a\ud800b', '\udc00\ud800', '\uffff', '\ufffd',
  '%', '%%', '%ff', '%c0%af', '%ed%a0%80', '%00', '%zz', '%u0041', '%25', '+', '&', '=', '&=&', '#', '?', '/', '\\', '"', "'",
  'mcp:tools', 'mcp:tools mcp:admin', 'mcp:tools  mcp:admin', 'offline_access', 'openid', 'mcp:tools\u0000',
  'https://auth.example.com', 'https://auth.example.com/mcp', 'https://AUTH.example.com:443/mcp/', 'https://auth.example.com/mcp#x',
  'http://127.0.0.1:8080/cb', 'http://[::1]/cb', 'http://localhost/cb', 'cursor://cb', 'com.example.app:/cb', 'data:text/html,x',
  '__proto__', 'constructor', 'prototype', 'hasOwnProperty', 'toString'
]

/** A token of the right shape (prefix + 43 base64url characters) that this server never issued. */
const tokenLike = fc.tuple(
  fc.constantFrom('mcpat_', 'mcprt_', 'mcpac_', 'mcpcs_', 'mcprg_', 'mcpfs_', 'MCPAT_', 'mcpat-'),
  fc.string({ unit: fc.constantFrom(...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'), minLength: 40, maxLength: 46 })
).map(([p, s]) => p + s)

/** Large values: around and beyond the body limits (16 KiB registration, 64 KiB other OAuth bodies). */
const huge = fc.tuple(fc.constantFrom(2049, 4097, 17_000, 70_000, 110_000), fc.constantFrom('A', '%', 'é', '\ud800', '&a=', '🔥'))
  .map(([n, c]) => c.repeat(Math.ceil(n / c.length)))

const hostileStr: fc.Arbitrary<string> = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...NAUGHTY) },
  { weight: 3, arbitrary: fc.string({ maxLength: 30 }) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 30 }) },
  { weight: 2, arbitrary: tokenLike },
  { weight: 1, arbitrary: huge }
)

const ODD_KEYS = ['__proto__', 'constructor', 'prototype', '__proto__[polluted]', 'constructor[prototype][polluted]',
  'hasOwnProperty', 'toString', 'valueOf', '', ' ', 'a[]', 'client_id[]', 'token[0]', '%ff', '\u0000', 'access_token', 'iss', 'polluted']
const hostileKey = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...ODD_KEYS) },
  { weight: 1, arbitrary: fc.string({ maxLength: 12 }) }
)

const deepJson = fc.tuple(fc.constantFrom(100, 2000, 15_000), fc.constantFrom('[', '{"a":')).map(([n, open]): Raw =>
  ({ $raw: open.repeat(n) + (open === '[' ? '' : '1') + (open === '[' ? ']' : '}').repeat(n) }))
const longNumber = fc.constantFrom('9'.repeat(500), '1e999', '-1e-999', '0.' + '0'.repeat(300) + '1', '123456789012345678901234567890')
  .map((s): Raw => ({ $raw: s }))

const hostileVal: fc.Arbitrary<Val> = fc.oneof(
  { weight: 8, arbitrary: hostileStr },
  { weight: 1, arbitrary: fc.oneof(fc.integer(), fc.double(), fc.boolean(), fc.constant(null)) },
  { weight: 2, arbitrary: fc.array(hostileStr, { maxLength: 3 }) },
  { weight: 1, arbitrary: fc.dictionary(hostileKey, hostileStr, { maxKeys: 3 }) },
  { weight: 1, arbitrary: fc.oneof(deepJson, longNumber) }
)

/** A parameter: mostly a good value; sometimes nasty, missing, or repeated. */
function field ([name, good, near]: Field): fc.Arbitrary<Pair[]> {
  return fc.oneof(
    { weight: 6, arbitrary: good.map((v): Pair[] => [[name, v]]) },
    { weight: near === undefined ? 0 : 2, arbitrary: (near ?? good).map((v): Pair[] => [[name, v]]) },
    { weight: 2, arbitrary: hostileVal.map((v): Pair[] => [[name, v]]) },
    { weight: 2, arbitrary: fc.constant<Pair[]>([]) },
    { weight: 1, arbitrary: fc.tuple(good, fc.oneof(good, hostileVal)).map(([a, b]): Pair[] => [[name, a], [name, b]]) }
  )
}
/** A parameter's name, valid values, and (optionally) plausible but invalid ones. */
type Field = [string, fc.Arbitrary<Val>, fc.Arbitrary<Val>?]

/** The parameters of a request: all plausible (so deep paths are reached), or each one mutated. */
function params (...fields: Field[]): fc.Arbitrary<Pair[]> {
  const pristine = fc.tuple(...fields.map(([name, good]) => good.map((v): Pair[] => [[name, v]])))
  const mutated = fc.tuple(...fields.map(field))
  const extra = fc.array(fc.tuple(hostileKey, hostileVal), { maxLength: 2 })
  return fc.tuple(
    fc.oneof({ weight: 1, arbitrary: pristine }, { weight: 2, arbitrary: mutated }),
    fc.oneof({ weight: 4, arbitrary: fc.constant([]) }, { weight: 1, arbitrary: extra })
  ).map(([fs, more]) => [...fs.flat(), ...more].filter(([, v]) => v !== ABSENT))
}

// ---- request specs --------------------------------------------------------------------------

type Endpoint = 'asMeta' | 'prMetaRoot' | 'prMeta' | 'authorize' | 'consent' | 'callback' | 'token' | 'register' |
  'registerRead' | 'registerUpdate' | 'registerDelete' | 'revoke' | 'introspect' | 'mcp'
type BodyMode = 'none' | 'form' | 'json' | 'text' | 'multipart' | 'bytes' | 'brokenJson'

interface AuthSpec { kind: 'bearer' | 'basic' | 'basicRaw' | 'raw', a: Val, b: Val, sep: string, scheme: number }

interface Spec {
  ep: Endpoint
  method: string
  path: number
  id: Val
  query: Pair[]
  body: Pair[]
  bodyMode: BodyMode
  encoding: 'enc' | 'raw'
  contentType: string | null
  auth: AuthSpec | null
  cookies: Pair[]
  headers: Array<[string, string]>
}

const NATURAL: Record<Endpoint, string> = {
  asMeta: 'GET',
  prMetaRoot: 'GET',
  prMeta: 'GET',
  authorize: 'GET',
  consent: 'POST',
  callback: 'GET',
  token: 'POST',
  register: 'POST',
  registerRead: 'GET',
  registerUpdate: 'PUT',
  registerDelete: 'DELETE',
  revoke: 'POST',
  introspect: 'POST',
  mcp: 'POST'
}
/** HTML endpoints (errors about the client or redirect are pages, the rest redirects). */
const HTML = new Set<Endpoint>(['authorize', 'consent', 'callback'])

/** Every method inject() can send, CONNECT aside; made-up ones go through the raw socket section. */
const ODD_METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS', 'TRACE', 'PROPFIND', 'SEARCH', 'PURGE', 'LOCK', 'MKCOL', 'COPY', 'REPORT', 'QUERY', 'M-SEARCH']

const CONTENT_TYPES = [
  'application/x-www-form-urlencoded', 'application/x-www-form-urlencoded; charset=utf-8', 'application/x-www-form-urlencoded; charset=iso-8859-1',
  'application/x-www-form-urlencoded; charset=utf-16', 'APPLICATION/X-WWW-FORM-URLENCODED', 'application/json', 'application/json; charset=koi8-r',
  'Application/JSON;;;', 'application/json, text/plain', 'text/plain', 'text/plain; charset=utf-8', 'multipart/form-data; boundary=xYzZy',
  'multipart/form-data', 'application/octet-stream', 'application/xml', '', ';', 'application/jsonp', 'application/merge-patch+json',
  'application/x-www-form-urlencoded\u0000', 'text/html; charset="utf-8"'
]
const NATURAL_TYPE: Partial<Record<BodyMode, string>> = {
  form: 'application/x-www-form-urlencoded',
  json: 'application/json',
  text: 'text/plain',
  multipart: 'multipart/form-data; boundary=xYzZy',
  bytes: 'application/x-www-form-urlencoded',
  brokenJson: 'application/json'
}

const scopeGood = fc.constantFrom<Val>('mcp:tools', 'mcp:admin', 'mcp:tools mcp:admin', 'offline_access mcp:tools', '', 'mcp:tools nope')
const resourceGood = fc.constantFrom<Val>(RESOURCE, 'https://AUTH.example.com:443/mcp/', 'https://auth.example.com/other', 'https://auth.example.com')
const stateGood = fc.oneof(fc.string({ maxLength: 20 }), fc.constant('client-state'))
const clientGood = fc.oneof({ weight: 5, arbitrary: ref('clientId') }, { weight: 1, arbitrary: fc.constantFrom<Val>('nobody', 'PUB-APP', 'pub-app ') })
const redirectGood = fc.oneof({ weight: 5, arbitrary: ref('redirect') }, {
  weight: 1,
  arbitrary: fc.constantFrom<Val>('http://127.0.0.1:4444/cb', 'http://127.0.0.1/cb?x=1', 'http://127.0.0.1/cb/', 'https://evil.example.com/cb', 'http://localhost/cb')
})
const tokenGood = fc.oneof({ weight: 3, arbitrary: ref('access') }, { weight: 3, arbitrary: ref('refresh') }, { weight: 1, arbitrary: tokenLike })
const redirectList = fc.oneof(
  fc.constantFrom<Val>(['https://fuzz.example.com/cb'], ['http://127.0.0.1/cb', 'http://[::1]/cb'], ['cursor://callback'], ['com.example.app:/cb'],
    ['https://fuzz.example.com/cb', 'https://fuzz.example.com/cb'], ['javascript:alert(1)'], ['https://10.0.0.1/cb'], ['https://fuzz.example.com/cb#f'],
    ['https://user:pw@fuzz.example.com/cb'], ['http://fuzz.example.com/cb'], [], 'https://fuzz.example.com/cb', Array.from({ length: 25 }, (_, i) => `https://f.example.com/${i}`)),
  fc.array(hostileStr, { maxLength: 3 })
)
const clientMetadata: Field[] = [
  ['redirect_uris', fc.constantFrom<Val>(['https://fuzz.example.com/cb'], ['http://127.0.0.1/cb', 'http://[::1]/cb'], ['cursor://callback'],
    ['com.example.app:/cb'], ['https://fuzz.example.com/cb', 'https://fuzz.example.com/cb']), redirectList],
  ['token_endpoint_auth_method', optional(fc.constantFrom<Val>('none', 'client_secret_basic', 'client_secret_post')), fc.constantFrom<Val>('private_key_jwt', 'None')],
  ['grant_types', optional(fc.constantFrom<Val>(['authorization_code', 'refresh_token'], ['authorization_code'])),
    fc.constantFrom<Val>(['implicit'], ['refresh_token'], 'authorization_code', ['authorization_code', 'client_credentials'])],
  ['response_types', optional(fc.constant<Val>(['code'])), fc.constantFrom<Val>(['token'], ['code', 'code'], 'code')],
  ['client_name', optional(fc.oneof(fc.string({ maxLength: 30 }), fc.constantFrom(...NAUGHTY.filter(n => n.length < 200))))],
  ['scope', optional(fc.constantFrom<Val>('mcp:tools', 'mcp:tools mcp:admin', 'nope'))],
  ['client_uri', optional(fc.constant<Val>('https://fuzz.example.com')), fc.constantFrom<Val>('javascript:alert(1)', 'not a url', 'ftp://x')],
  ['logo_uri', optional(fc.constant<Val>('https://fuzz.example.com/logo.png')), fc.constant<Val>('data:image/png;base64,AAAA')],
  ['contacts', optional(fc.constant<Val>(['a@example.com'])), fc.constantFrom<Val>('a@example.com', Array.from({ length: 12 }, () => 'x@example.com'))],
  ['software_id', optional(fc.string({ maxLength: 10 }))],
  ['application_type', fc.constant<Val>(ABSENT), fc.constantFrom<Val>('web', 'native', 'service')],
  ['jwks_uri', fc.constant<Val>(ABSENT), fc.constantFrom<Val>('https://fuzz.example.com/jwks')]
]

const authArb: fc.Arbitrary<AuthSpec | null> = fc.oneof(
  { weight: 2, arbitrary: fc.constant(null) },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('bearer' as const),
      a: fc.oneof({ weight: 4, arbitrary: tokenGood }, { weight: 2, arbitrary: ref('regToken') }, { weight: 2, arbitrary: hostileStr }),
      b: fc.constant(null),
      sep: fc.constantFrom(' ', ' ', ' ', '  ', '\t', '', ' \u00a0'),
      scheme: fc.nat({ max: 3 })
    })
  },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constantFrom('basic' as const, 'basicRaw' as const),
      a: fc.oneof({ weight: 4, arbitrary: clientGood }, { weight: 1, arbitrary: ref('rsId') }, { weight: 2, arbitrary: hostileStr }),
      b: fc.oneof({ weight: 4, arbitrary: ref('secret') }, { weight: 1, arbitrary: ref('rsSecret') }, { weight: 2, arbitrary: hostileStr }),
      sep: fc.constantFrom(' ', ' ', '  ', ''),
      scheme: fc.nat({ max: 3 })
    })
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('raw' as const),
      a: fc.oneof(hostileStr, fc.constantFrom<Val>('Bearer', 'Basic', 'Basic =', 'Basic ====', 'Basic !!!', 'Digest username="a", realm="b"',
        'DPoP mcpat_x', 'Negotiate YII=', 'Bearer a b', 'Bearer mcpat_' + 'A'.repeat(43) + ', Basic x', 'Basic ' + 'A'.repeat(100_000))),
      b: fc.constant(null),
      sep: fc.constant(''),
      scheme: fc.constant(0)
    })
  }
)

const extraHeaders = fc.array(fc.oneof(
  fc.tuple(fc.constant('origin'), fc.constantFrom(ISSUER, 'https://evil.example.com', 'null', 'https://app.example.com', '')),
  fc.tuple(fc.constant('sec-fetch-site'), fc.constantFrom('same-origin', 'cross-site', 'same-site', 'none', '')),
  fc.tuple(fc.constant('access-control-request-method'), fc.constantFrom('POST', 'GET', 'DELETE', 'FOO')),
  fc.tuple(fc.constant('host'), fc.constantFrom('evil.example.com', '', 'auth.example.com:99999', 'a'.repeat(300))),
  fc.tuple(fc.constant('x-forwarded-for'), fc.constantFrom('1.2.3.4', '::1', 'garbage', '')),
  fc.tuple(fc.constant('content-length'), fc.constantFrom('0', '1', '-1', '99999999', 'abc')),
  fc.tuple(fc.constant('transfer-encoding'), fc.constantFrom('chunked', 'gzip')),
  fc.tuple(fc.constant('content-encoding'), fc.constantFrom('gzip', 'br', 'identity')),
  fc.tuple(fc.constant('accept'), fc.constantFrom('text/html', 'application/json', '*/*', '')),
  fc.tuple(fc.constant('mcp-protocol-version'), fc.constantFrom('2025-06-18', 'garbage')),
  fc.tuple(hostileKey.filter(k => /^[a-z-]{1,20}$/.test(k)), hostileStr.filter(s => s.length < 200))
), { maxLength: 3 })

const cookieArb = fc.array(fc.oneof(
  fc.tuple(fc.constant('__Host-mcp-oauth-csrf'), fc.oneof(ref('csrfCookie'), hostileStr)),
  fc.tuple(fc.constant('__Host-mcp-oauth-consent'), fc.oneof(ref('consentCookie'), hostileStr)),
  fc.tuple(fc.constantFrom('mcp-oauth-consent', 'mcp-oauth-csrf', '__proto__', 'constructor'), hostileStr)
), { maxLength: 2 })

/** Authorization headers as each endpoint's real callers send them. */
const bearer = (token: fc.Arbitrary<Val>): fc.Arbitrary<AuthSpec> =>
  fc.record({ kind: fc.constant('bearer' as const), a: token, b: fc.constant(null), sep: fc.constant(' '), scheme: fc.constant(0) })
const basic = (id: fc.Arbitrary<Val>, secret: fc.Arbitrary<Val>): fc.Arbitrary<AuthSpec> =>
  fc.record({ kind: fc.constant('basic' as const), a: id, b: secret, sep: fc.constant(' '), scheme: fc.constant(0) })
const noAuth = fc.constant<AuthSpec | null>(null)

function specArb (): fc.Arbitrary<Spec> {
  const base = (ep: Endpoint, parts: {
    query?: fc.Arbitrary<Pair[]>
    body?: fc.Arbitrary<Pair[]>
    mode?: BodyMode
    id?: fc.Arbitrary<Val>
    auth?: fc.Arbitrary<AuthSpec | null>
    cookies?: fc.Arbitrary<Pair[]>
  }): fc.Arbitrary<Spec> => {
    const mode = parts.mode ?? 'none'
    const plain = fc.record({
      method: fc.constant(NATURAL[ep]),
      path: fc.constant(0),
      bodyMode: fc.constant(mode),
      encoding: fc.constant('enc' as const),
      contentType: fc.constant<string | null>(null),
      headers: fc.constant<Array<[string, string]>>([])
    })
    const odd = fc.record({
      method: fc.oneof({ weight: 8, arbitrary: fc.constant(NATURAL[ep]) }, { weight: 1, arbitrary: fc.constantFrom(...ODD_METHODS) }),
      path: fc.oneof({ weight: 12, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 7 }) }),
      bodyMode: fc.oneof({ weight: 6, arbitrary: fc.constant(mode) },
        { weight: 1, arbitrary: fc.constantFrom<BodyMode>('none', 'form', 'json', 'text', 'multipart', 'bytes', 'brokenJson') }),
      encoding: fc.oneof({ weight: 4, arbitrary: fc.constant('enc' as const) }, { weight: 1, arbitrary: fc.constant('raw' as const) }),
      contentType: fc.oneof({ weight: 6, arbitrary: fc.constant<string | null>(null) }, { weight: 1, arbitrary: fc.constantFrom(...CONTENT_TYPES) }),
      headers: fc.oneof({ weight: 2, arbitrary: fc.constant<Array<[string, string]>>([]) }, { weight: 1, arbitrary: extraHeaders as fc.Arbitrary<Array<[string, string]>> })
    })
    return fc.record({
      shape: fc.oneof({ weight: 1, arbitrary: plain }, { weight: 2, arbitrary: odd }),
      id: parts.id ?? fc.constant<Val>(null),
      query: parts.query ?? fc.constant<Pair[]>([]),
      body: parts.body ?? fc.constant<Pair[]>([]),
      auth: fc.oneof({ weight: 3, arbitrary: parts.auth ?? noAuth }, { weight: 1, arbitrary: authArb }),
      cookies: fc.oneof({ weight: 3, arbitrary: parts.cookies ?? fc.constant<Pair[]>([]) }, { weight: 1, arbitrary: cookieArb as fc.Arbitrary<Pair[]> })
    }).map(({ shape, ...rest }): Spec => ({ ep, ...shape, ...rest }))
  }
  const junk = params()
  const registrationId = fc.oneof({ weight: 5, arbitrary: ref('dcrId') }, { weight: 1, arbitrary: ref('clientId') }, { weight: 2, arbitrary: hostileStr })
  const registrationAuth = fc.oneof({ weight: 4, arbitrary: bearer(ref('regToken')) }, { weight: 1, arbitrary: bearer(tokenLike) })
  const clientAuth = fc.oneof(noAuth, basic(clientGood, ref('secret')))
  const clientBody: Field[] = [['client_id', clientGood], ['client_secret', optional(ref('secret'))]]
  return fc.oneof(
    { weight: 1, arbitrary: base('asMeta', { query: junk }) },
    { weight: 1, arbitrary: base('prMetaRoot', { query: junk }) },
    { weight: 1, arbitrary: base('prMeta', { query: junk }) },
    {
      weight: 5,
      arbitrary: base('authorize', {
        query: params(
          ['response_type', fc.constant<Val>('code'), fc.constantFrom<Val>('token', 'code id_token', 'CODE')],
          ['client_id', clientGood],
          ['redirect_uri', redirectGood],
          ['code_challenge', fc.constantFrom<Val>(s256(VERIFIER), 'a'.repeat(43)), fc.constantFrom<Val>(VERIFIER, 'a'.repeat(42), 'a'.repeat(44))],
          ['code_challenge_method', fc.constant<Val>('S256'), fc.constantFrom<Val>('plain', 's256', '')],
          ['state', optional(stateGood)],
          ['scope', optional(scopeGood)],
          ['resource', optional(resourceGood)]
        ),
        // A browser that approved before skips the consent page.
        cookies: fc.oneof(fc.constant<Pair[]>([]), ref('consentCookie').map((v): Pair[] => [['__Host-mcp-oauth-consent', v]]))
      })
    },
    {
      weight: 4,
      arbitrary: base('consent', {
        body: params(
          ['request', fc.oneof({ weight: 4, arbitrary: ref('consentRequest') }, { weight: 1, arbitrary: ref('consentRequestTampered') })],
          ['csrf', ref('csrf')],
          ['decision', fc.constantFrom<Val>('approve', 'approve', 'deny'), fc.constantFrom<Val>('APPROVE', 'yes')]
        ),
        mode: 'form',
        cookies: ref('csrfCookie').map((v): Pair[] => [['__Host-mcp-oauth-csrf', v]])
      })
    },
    {
      weight: 4,
      arbitrary: base('callback', {
        query: params(
          ['state', fc.oneof({ weight: 3, arbitrary: ref('flowState') }, { weight: 1, arbitrary: tokenLike })],
          ['code', fc.oneof(fc.string({ maxLength: 40 }), tokenLike)],
          ['iss', fc.constantFrom<Val>('https://idp.invalid', ISSUER)],
          ['error', fc.constantFrom<Val>('access_denied', 'server_error', 'login_required')]
        ),
        cookies: ref('consentCookie').map((v): Pair[] => [['__Host-mcp-oauth-consent', v]])
      })
    },
    {
      weight: 8,
      arbitrary: base('token', {
        body: params(
          ['grant_type', fc.constantFrom<Val>('authorization_code', 'refresh_token'),
            fc.constantFrom<Val>('client_credentials', 'password', 'urn:ietf:params:oauth:grant-type:device_code', 'REFRESH_TOKEN')],
          ['code', fc.oneof({ weight: 3, arbitrary: ref('code') }, { weight: 1, arbitrary: tokenLike })],
          ['code_verifier', ref('verifier'), fc.constantFrom<Val>('short', 'x'.repeat(129), VERIFIER + 'x')],
          ['redirect_uri', optional(redirectGood)],
          ['refresh_token', fc.oneof({ weight: 3, arbitrary: ref('refresh') }, { weight: 1, arbitrary: tokenLike })],
          ['scope', optional(scopeGood)],
          ['resource', optional(resourceGood)],
          ...clientBody
        ),
        mode: 'form',
        auth: clientAuth
      })
    },
    { weight: 4, arbitrary: base('register', { body: params(...clientMetadata), mode: 'json' }) },
    { weight: 2, arbitrary: base('registerRead', { query: junk, id: registrationId, auth: registrationAuth }) },
    {
      weight: 3,
      arbitrary: base('registerUpdate', {
        body: params(['client_id', ref('dcrId')], ...clientMetadata), mode: 'json', id: registrationId, auth: registrationAuth
      })
    },
    { weight: 2, arbitrary: base('registerDelete', { id: registrationId, auth: registrationAuth }) },
    {
      weight: 4,
      arbitrary: base('revoke', {
        body: params(['token', tokenGood], ['token_type_hint', fc.constantFrom<Val>('access_token', 'refresh_token', 'id_token', 'ACCESS_TOKEN')], ...clientBody),
        mode: 'form',
        auth: clientAuth
      })
    },
    {
      weight: 4,
      arbitrary: base('introspect', {
        body: params(['token', tokenGood], ['token_type_hint', fc.constantFrom<Val>('access_token', 'refresh_token', 'id_token')], ...clientBody),
        mode: 'form',
        auth: fc.oneof(basic(ref('rsId'), ref('rsSecret')), clientAuth)
      })
    },
    {
      weight: 5,
      arbitrary: base('mcp', {
        query: fc.oneof({ weight: 4, arbitrary: fc.constant<Pair[]>([]) }, { weight: 1, arbitrary: params(['access_token', tokenGood]) }),
        body: params(['jsonrpc', fc.constant<Val>('2.0')], ['method', fc.constantFrom<Val>('tools/list', 'initialize')]),
        mode: 'json',
        auth: bearer(tokenGood)
      })
    }
  )
}

// ---- the fuzzer: pools of live credentials, materialising, judging ------------------------

interface Snapshot { stats: StoreStats, known: string }
interface Materialized {
  opts: InjectOptions
  uses: Set<RefName>
  /** Everything the request carried, to tell a leaked secret from an echoed one. */
  sentSecrets: string
  /** Method and path are those of a route of the plugin (so the answer must come from it). */
  routed: boolean
  /** The client whose token or code the request carried (the owner of what a token request returns). */
  owner: string | undefined
}

/** Not text: C0 controls (but tab and line breaks), DEL, bidi embeddings, overrides and isolates. */
// eslint-disable-next-line no-control-regex
const UNSAFE_TEXT = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f\u202a-\u202e\u2066-\u2069]/

/** The elements the consent and error pages are made of. */
const PAGE_TAGS = new Set(['bdi', 'html', 'head', 'meta', 'title', 'style', 'body', 'main', 'h1', 'p', 'strong', 'span', 'code', 'ul', 'li', 'div', 'form', 'input', 'button', 'a'])

const STAT_KEYS: Array<keyof StoreStats> = ['accessTokens', 'refreshTokens', 'grants', 'clients', 'flows', 'codes']

function b64 (s: string): string {
  return Buffer.from(s, 'utf8').toString('base64')
}

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g

/** encodeURIComponent that sends a lone surrogate as the (invalid) UTF-8 bytes of one instead of throwing. */
function enc (s: string): string {
  return encodeURIComponent(s.replace(LONE_SURROGATE, '\ufffd')).replace(/%EF%BF%BD/g, '%ED%A0%80')
}

class Fuzzer {
  readonly ctx: TestApp
  readonly idp: DevIdp
  readonly events: Map<string, number>
  /** Problems by signature, with up to three examples each. */
  readonly failures = new Map<string, string[]>()
  readonly outcomes = new Map<string, number>()
  sent = 0
  setupSent = 0
  /** Live credentials the fuzzer may use, per kind. */
  access: string[] = []
  refresh: string[] = []
  codes: string[] = []
  readonly unusedCodes = new Set<string>()
  grants = new Map<string, string>()
  dcr: { id: string, token: string, secret?: string, redirects: string[] } | undefined
  /** Which client each pooled token or code belongs to. */
  readonly owner = new Map<string, string>()
  /** The client the request being built is about so far (credentials, redirect URIs follow it). */
  lastClient: string | undefined
  /** The client whose token or code the request being built carries. */
  tokenOwner: string | undefined
  consent = { request: '', csrf: '', csrfCookie: '' }
  /** A consent form answers once: after a submission that took it, harvest a fresh one. */
  consentUsed = false
  flows: Array<{ state: string, cookie: string }> = []
  consentCookies: string[] = []
  /** The flow state resolved last in the request being built, so its cookie can go with it. */
  lastFlow: { state: string, cookie: string } | undefined
  readonly redirects = new Set<string>(STATIC.flatMap(c => c.redirect_uris))
  canary!: { grantId: string, tokens: TokenPair }

  constructor (ctx: TestApp, idp: DevIdp, events: Map<string, number>) {
    this.ctx = ctx
    this.idp = idp
    this.events = events
  }

  get app () {
    return this.ctx.app
  }

  count (map: Map<string, number>, key: string): void {
    map.set(key, (map.get(key) ?? 0) + 1)
  }

  fail (signature: string, example: string): void {
    const list = this.failures.get(signature) ?? []
    if (list.length < 3) list.push(example.slice(0, 1500))
    this.failures.set(signature, list)
  }

  async setup (): Promise<void> {
    const grant = await this.app.mcpOAuth.grants.createGrant({ userId: 'canary-user', email: 'c@example.com', clientId: CANARY.client_id, scopes: ['mcp:tools'], resource: RESOURCE })
    this.canary = { grantId: grant.grantId, tokens: await this.app.mcpOAuth.grants.issueTokens(grant) }
    this.owner.set(this.canary.tokens.access_token, CANARY.client_id).set(this.canary.tokens.refresh_token, CANARY.client_id)
    await this.harvestConsent()
    await this.refill()
  }

  /** A real consent page: its signed request, its CSRF value and the CSRF cookie. */
  async harvestConsent (): Promise<void> {
    const query = new URLSearchParams({
      response_type: 'code',
      client_id: PUB.client_id,
      redirect_uri: 'http://127.0.0.1:5000/cb',
      code_challenge: s256(VERIFIER),
      code_challenge_method: 'S256',
      state: 'hostile',
      resource: RESOURCE,
      scope: 'mcp:tools'
    })
    const res = await this.app.inject({ method: 'GET', url: `/oauth/authorize?${query.toString()}`, remoteAddress: SETUP_IP })
    this.setupSent++
    const hidden = (name: string) => new RegExp(`name="${name}" value="([^"]*)"`).exec(res.body)?.[1] ?? ''
    const cookie = [res.headers['set-cookie'] ?? []].flat().find(c => c.startsWith('__Host-mcp-oauth-csrf=')) ?? ''
    const consent = { request: hidden('request'), csrf: hidden('csrf'), csrfCookie: cookie.split(';')[0]?.split('=').slice(1).join('=') ?? '' }
    if (consent.request === '' || consent.csrfCookie === '') {
      // Under rate limiting the used form may stay for a while; the first one must work.
      if (this.sent === 0) throw new Error(`no consent page to harvest: ${res.statusCode} ${res.body.slice(0, 200)}`)
      return
    }
    this.consent = consent
    this.consentUsed = false
  }

  /** Keep the pools stocked (not counted as fuzz traffic, and outside the store checks). */
  async refill (): Promise<void> {
    const now = this.ctx.clock.t
    if (this.consentUsed) await this.harvestConsent()
    for (const client of [PUB, BASIC, POST]) {
      const grantId = this.grants.get(client.client_id)
      if (grantId !== undefined && await this.app.mcpOAuth.storage.getGrant(grantId, now) !== null) continue
      const grant = await this.app.mcpOAuth.grants.createGrant({ userId: `fuzz-${client.client_id}`, clientId: client.client_id, scopes: ['mcp:tools', 'mcp:admin'], resource: RESOURCE })
      const tokens = await this.app.mcpOAuth.grants.issueTokens(grant)
      this.grants.set(client.client_id, grant.grantId)
      this.addTokens(tokens, client.client_id)
    }
    while (this.unusedCodes.size < 2) {
      const client = this.unusedCodes.size === 0 ? PUB : BASIC
      const code = await this.newCode(client)
      this.owner.set(code, client.client_id)
      this.codes = [...this.codes.slice(-20), code]
      this.unusedCodes.add(code)
    }
    if (this.dcr === undefined) {
      const res = await this.app.inject({
        method: 'POST',
        url: '/oauth/register',
        remoteAddress: SETUP_IP,
        payload: { redirect_uris: ['https://dcr.example.com/cb'], token_endpoint_auth_method: 'client_secret_post', client_name: 'pool' }
      })
      this.setupSent++
      // Under rate limiting the pool may stay empty for a while; the first one must work.
      if (res.statusCode === 201) this.learnClient(res.json())
      else if (this.sent === 0) throw new Error(`pool registration failed: ${res.body}`)
    }
    if (this.flows.length === 0) {
      const res = await this.app.inject({
        method: 'POST',
        url: '/oauth/consent',
        remoteAddress: SETUP_IP,
        headers: { cookie: `__Host-mcp-oauth-csrf=${this.consent.csrfCookie}` },
        payload: { request: this.consent.request, csrf: this.consent.csrf, decision: 'approve' }
      })
      this.setupSent++
      if (res.statusCode === 303) await this.harvestConsent()
      if (!this.learnFlow(res.headers.location, res.headers['set-cookie']) && this.sent === 0) throw new Error(`no upstream flow: ${res.statusCode} ${res.body}`)
    }
  }

  /** An authorization code as the callback would have stored it (PKCE with VERIFIER). */
  async newCode (client: { client_id: string, redirect_uris: string[] }): Promise<string> {
    const now = this.ctx.clock.t
    const code = generateToken('authorizationCode')
    await this.app.mcpOAuth.storage.saveCode(hashToken(code), {
      clientId: client.client_id,
      redirectUri: client.redirect_uris[0] as string,
      codeChallenge: s256(VERIFIER),
      codeChallengeMethod: 'S256',
      scopes: ['mcp:tools'],
      resource: RESOURCE,
      grantId: randomUUID(),
      userId: 'fuzz-code-user',
      issuedAt: now,
      expiresAt: now + 60_000
    })
    return code
  }

  addTokens (tokens: { access_token?: unknown, refresh_token?: unknown }, owner: string | undefined): void {
    for (const token of [tokens.access_token, tokens.refresh_token]) if (typeof token === 'string' && owner !== undefined) this.owner.set(token, owner)
    if (typeof tokens.access_token === 'string') this.access = [...this.access.slice(-10), tokens.access_token]
    if (typeof tokens.refresh_token === 'string') this.refresh = [...this.refresh.slice(-10), tokens.refresh_token]
  }

  client (id: string | undefined): { client_id: string, client_secret?: string, redirect_uris: string[] } | undefined {
    if (id !== undefined && id === this.dcr?.id) return { client_id: id, redirect_uris: this.dcr.redirects, ...(this.dcr.secret !== undefined ? { client_secret: this.dcr.secret } : {}) }
    // The canary's secret is never handed to the fuzzer.
    if (id === CANARY.client_id) return { client_id: id, redirect_uris: CANARY.redirect_uris }
    return STATIC.find(c => c.client_id === id)
  }

  learnClient (info: Record<string, unknown>): void {
    if (typeof info.client_id !== 'string' || typeof info.registration_access_token !== 'string') return
    const secret = typeof info.client_secret === 'string' ? info.client_secret : this.dcr?.id === info.client_id ? this.dcr.secret : undefined
    const redirects = Array.isArray(info.redirect_uris) ? info.redirect_uris.filter((u): u is string => typeof u === 'string') : []
    this.dcr = { id: info.client_id, token: info.registration_access_token, redirects, ...(secret !== undefined ? { secret } : {}) }
    for (const u of redirects) this.redirects.add(u)
  }

  learnFlow (location: unknown, setCookie: unknown): boolean {
    if (typeof location !== 'string' || !location.startsWith(this.idp.issuer)) return false
    const state = new URL(location).searchParams.get('state')
    const cookie = [setCookie ?? []].flat().map(String).find(c => c.startsWith('__Host-mcp-oauth-consent='))?.split(';')[0]
    if (state === null || cookie === undefined) return false
    this.flows = [...this.flows.slice(-20), { state, cookie: cookie.slice(cookie.indexOf('=') + 1) }]
    this.consentCookies = [...this.consentCookies.slice(-5), cookie.slice(cookie.indexOf('=') + 1)]
    return true
  }

  resolve (r: Ref, uses: Set<RefName>): string {
    uses.add(r.$ref)
    const pick = <T>(list: readonly T[], fallback: T): T => list.length === 0 ? fallback : list[r.i % list.length] as T
    // Mostly follow the client the request is about, so credentials, tokens and redirects fit together.
    const follow = r.i % 4 !== 0 ? this.client(this.lastClient) : undefined
    const owned = (token: string): string => {
      this.lastClient = this.owner.get(token)
      this.tokenOwner ??= this.lastClient
      return token
    }
    switch (r.$ref) {
      case 'clientId': {
        const id = follow?.client_id ?? pick([...STATIC.map(c => c.client_id), this.dcr?.id ?? 'gone'], 'x')
        this.lastClient = id
        return id
      }
      case 'secret': return follow?.client_secret ?? pick([BASIC.client_secret, POST.client_secret, this.dcr?.secret ?? 'none', 'wrong-secret-wrong-secret'], 'x')
      case 'access': return owned(r.i % 7 === 0 ? this.canary.tokens.access_token : pick(this.access, 'x'))
      case 'refresh': return owned(r.i % 7 === 0 ? this.canary.tokens.refresh_token : pick(this.refresh, 'x'))
      case 'code': {
        const code = pick(this.codes, 'x')
        this.unusedCodes.delete(code)
        return owned(code)
      }
      case 'verifier': return VERIFIER
      case 'redirect': {
        const mine = follow?.redirect_uris[0]
        if (mine === undefined) return pick([...this.redirects], 'x')
        // Native apps bind any loopback port (RFC 8252 §7.3).
        return r.i % 8 === 1 ? mine.replace('http://127.0.0.1/', `http://127.0.0.1:${1024 + r.i}/`) : mine
      }
      case 'regToken': return this.dcr?.token ?? generateToken('registrationToken')
      case 'dcrId': return this.dcr?.id ?? 'gone'
      case 'consentRequest': return this.consent.request
      case 'consentRequestTampered': {
        const s = this.consent.request
        const at = r.i % s.length
        return s.slice(0, at) + (s[at] === 'A' ? 'B' : 'A') + s.slice(at + 1)
      }
      case 'csrf': return this.consent.csrf
      case 'csrfCookie': return this.consent.csrfCookie
      case 'consentCookie': return this.lastFlow !== undefined && r.i % 4 !== 0 ? this.lastFlow.cookie : pick(this.consentCookies, 'x')
      case 'flowState': {
        this.lastFlow = pick(this.flows, { state: 'x', cookie: '' })
        return this.lastFlow.state
      }
      case 'rsId': return RS.id
      case 'rsSecret': return RS.secret
    }
  }

  str (v: Val, uses: Set<RefName>): string {
    if (isRef(v)) return this.resolve(v, uses)
    if (isRaw(v)) return v.$raw
    if (v === null) return ''
    if (Array.isArray(v)) return v.map(x => this.str(x, uses)).join(',')
    if (typeof v === 'object') return this.json(v, uses)
    return String(v)
  }

  /** JSON text for a value, raw fragments inlined (so deep nesting and odd numbers reach the parser). */
  json (v: Val, uses: Set<RefName>): string {
    if (isRef(v)) return JSON.stringify(this.resolve(v, uses))
    if (isRaw(v)) return v.$raw
    if (Array.isArray(v)) return `[${v.map(x => this.json(x, uses)).join(',')}]`
    if (v !== null && typeof v === 'object') return `{${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}:${this.json(x, uses)}`).join(',')}}`
    return JSON.stringify(v) ?? 'null'
  }

  /** `k=v&...`; an array value becomes a repeated parameter. */
  form (pairs: Pair[], mode: 'enc' | 'raw', uses: Set<RefName>): string {
    const e = mode === 'enc' ? enc : (s: string) => s
    return pairs.flatMap(([k, v]) => (Array.isArray(v) ? v : [v]).map(x => `${e(k)}=${e(this.str(x, uses))}`)).join('&')
  }

  materialize (spec: Spec): Materialized {
    const uses = new Set<RefName>()
    this.lastFlow = undefined
    this.lastClient = undefined
    this.tokenOwner = undefined
    let path = {
      asMeta: '/.well-known/oauth-authorization-server',
      prMetaRoot: '/.well-known/oauth-protected-resource',
      prMeta: '/.well-known/oauth-protected-resource/mcp',
      authorize: '/oauth/authorize',
      consent: '/oauth/consent',
      callback: '/oauth/callback',
      token: '/oauth/token',
      register: '/oauth/register',
      registerRead: '/oauth/register/',
      registerUpdate: '/oauth/register/',
      registerDelete: '/oauth/register/',
      revoke: '/oauth/revoke',
      introspect: '/oauth/introspect',
      mcp: '/mcp'
    }[spec.ep]
    if (path.endsWith('/')) {
      const id = this.str(spec.id, uses)
      path += spec.encoding === 'enc' ? enc(id) : id.replace(/[?#]/g, enc)
    }
    path = [path, path + '/', '/' + path, path + '%ff', path + ';x=1', path.toUpperCase(), path + '/..', path.replace(/\//g, '%2f')][spec.path] ?? path
    const query = this.form(spec.query, spec.encoding, uses)
    const url = query === '' ? path : `${path}?${query}`

    let payload: string | Buffer | undefined
    switch (spec.bodyMode) {
      case 'none': break
      case 'form': payload = this.form(spec.body, spec.encoding, uses); break
      case 'text': payload = this.form(spec.body, 'raw', uses); break
      case 'json': payload = `{${spec.body.map(([k, v]) => `${JSON.stringify(k)}:${this.json(v, uses)}`).join(',')}}`; break
      case 'brokenJson': payload = `{${spec.body.map(([k, v]) => `${JSON.stringify(k)}:${this.json(v, uses)}`).join(',')}`.slice(0, -1); break
      case 'bytes': payload = Buffer.concat([Buffer.from(this.form(spec.body, spec.encoding, uses)), Buffer.from([0x26, 0x78, 0x3d, 0xff, 0xc0, 0xaf, 0xed, 0xa0, 0x80])]); break
      case 'multipart': payload = spec.body.map(([k, v]) => `--xYzZy\r\nContent-Disposition: form-data; name="${k}"\r\n\r\n${this.str(v, uses)}\r\n`).join('') + '--xYzZy--\r\n'; break
    }
    const headers: Record<string, string> = {}
    const type = spec.contentType ?? NATURAL_TYPE[spec.bodyMode]
    if (type !== undefined && payload !== undefined) headers['content-type'] = type
    if (spec.auth !== null) headers.authorization = this.authorization(spec.auth, uses)
    if (spec.cookies.length > 0) headers.cookie = spec.cookies.map(([k, v]) => `${k}=${this.str(v, uses)}`).join('; ')
    for (const [k, v] of spec.headers) headers[k] = v
    const opts: InjectOptions = { method: spec.method as InjectOptions['method'], url, headers }
    if (payload !== undefined) opts.payload = payload
    const routed = spec.path === 0 && spec.method === NATURAL[spec.ep] && spec.ep !== 'mcp' && spec.id === null
    return { opts, uses, sentSecrets: `${url}\n${JSON.stringify(headers)}\n${payload?.toString() ?? ''}`, routed, owner: this.tokenOwner }
  }

  authorization (a: AuthSpec, uses: Set<RefName>): string {
    const scheme = (name: string) => [name, name.toLowerCase(), name.toUpperCase(), name][a.scheme] ?? name
    switch (a.kind) {
      case 'bearer': return `${scheme('Bearer')}${a.sep}${this.str(a.a, uses)}`
      case 'basic': return `${scheme('Basic')}${a.sep}${b64(`${enc(this.str(a.a, uses))}:${enc(this.str(a.b, uses))}`)}`
      case 'basicRaw': return `${scheme('Basic')}${a.sep}${b64(`${this.str(a.a, uses)}:${this.str(a.b, uses)}`)}`
      case 'raw': return this.str(a.a, uses)
    }
  }

  async snapshot (): Promise<Snapshot> {
    const store = this.app.mcpOAuth.storage
    const now = this.ctx.clock.t
    const stats = await (store.stats as () => Promise<StoreStats>).call(store)
    const known = await Promise.all([
      ...STATIC.map(c => store.getClient(c.client_id, now)),
      store.getGrant(this.canary.grantId, now),
      store.getAccessToken(hashToken(this.canary.tokens.access_token), now),
      store.getRefreshToken(hashToken(this.canary.tokens.refresh_token), now)
    ])
    return { stats, known: JSON.stringify(known) }
  }

  /** Where a redirect may go: the IdP's authorization endpoint, or a redirect URI some client registered. */
  allowedRedirect (location: string): boolean {
    if (location.startsWith(`${this.idp.issuer}/`)) return true
    let url: URL
    try {
      url = new URL(location)
    } catch {
      return false
    }
    for (const p of ['code', 'state', 'iss', 'error', 'error_description']) url.searchParams.delete(p)
    const registered = [...this.redirects].flatMap(r => {
      try {
        return [new URL(r).href]
      } catch {
        return []
      }
    })
    const bare = url.href.replace(/\?$/, '')
    return matchRedirectUri(registered, bare)
  }

  /** Milliseconds spent per phase, printed with the report. */
  readonly timing = { refill: 0, build: 0, inject: 0, check: 0 }
  slowest = { ms: 0, request: '' }

  async send (spec: Spec): Promise<void> {
    let mark = performance.now()
    const lap = (phase: keyof Fuzzer['timing']) => {
      const now = performance.now()
      this.timing[phase] += now - mark
      mark = now
    }
    await this.refill()
    lap('refill')
    const m = this.materialize(spec)
    lap('build')
    const before = await this.snapshot()
    const label = `${spec.method} ${spec.ep}`
    let res
    try {
      res = await this.app.inject(m.opts)
    } catch (err) {
      this.fail(`${label}: inject threw`, `${(err as Error).message}\n${describe(m.opts)}`)
      return
    }
    this.sent++
    const took = performance.now() - mark
    if (took > this.slowest.ms) this.slowest = { ms: took, request: describe(m.opts).slice(0, 300) }
    lap('inject')
    const after = await this.snapshot()
    const problems = this.judge(spec, m, res.statusCode, res.headers, res.body, before, after)
    for (const p of problems) this.fail(`${label} -> ${res.statusCode}: ${p}`, `${describe(m.opts)}\n=> ${res.statusCode} ${JSON.stringify(res.headers)}\n${res.body.slice(0, 500)}`)
    this.learn(spec, m, res.statusCode, res.headers, res.body)
    lap('check')
  }

  judge (spec: Spec, m: Materialized, status: number, headers: Record<string, unknown>, body: string, before: Snapshot, after: Snapshot): string[] {
    const problems: string[] = []
    const type = String(headers['content-type'] ?? '')
    const parsed = (() => {
      try {
        return JSON.parse(body) as Record<string, unknown>
      } catch {
        return undefined
      }
    })()
    const location = typeof headers.location === 'string' ? headers.location : undefined
    const redirectError = location !== undefined && /[?&]error=/.test(location)
    const rejected = status >= 400 || redirectError
    let outcome = `${status}`

    if (status >= 500) problems.push('server error')
    if (after.known !== before.known) problems.push('the static clients or the canary grant changed')
    if (rejected) {
      for (const k of STAT_KEYS) {
        const delta = after.stats[k] - before.stats[k]
        if (delta > 0) problems.push(`a rejected request added ${k} (+${delta})`)
        if (delta < 0) {
          // Documented removals on refusal: a flow state and a consent form are take-once, a replayed code or refresh token revokes its family.
          const allowed = (k === 'flows' && (m.uses.has('flowState') || m.uses.has('consentRequest'))) ||
            ((k === 'grants' || k === 'accessTokens' || k === 'refreshTokens') && (m.uses.has('code') || m.uses.has('refresh')))
          if (!allowed) problems.push(`a rejected request removed ${k} (${delta})`)
        }
      }
    } else if (status === 201 && spec.ep === 'register' && after.stats.clients !== before.stats.clients + 1) {
      problems.push('a registration did not add exactly one client')
    }
    const canarySecrets = [this.canary.tokens.access_token, this.canary.tokens.refresh_token, CANARY.client_secret, COOKIE_SECRET, UPSTREAM_SECRET, RS.secret]
    const response = `${JSON.stringify(headers)}\n${body}`
    for (const s of canarySecrets) if (response.includes(s) && !m.sentSecrets.includes(s)) problems.push('a secret the request did not carry is in the response')

    if (type.startsWith('text/html')) {
      // Every generated value that reaches a page (client names, ids, scopes) must come out as text.
      const tags = new Set([...body.matchAll(/<\/?([a-zA-Z][\w-]*)/g)].map(x => (x[1] as string).toLowerCase()))
      const unexpected = [...tags].filter(tag => !PAGE_TAGS.has(tag))
      if (unexpected.length > 0) problems.push(`markup injected into a page: <${unexpected.join('>, <')}>`)
      if (!String(headers['content-security-policy'] ?? '').includes("default-src 'none'")) problems.push('page without its CSP')
      // A bidi override in a client's name would reorder the warning text that follows it on the page.
      if (UNSAFE_TEXT.test(body)) problems.push('control or bidi-override characters on a page')
    }
    if (location !== undefined && !this.allowedRedirect(location)) problems.push(`redirect to an unregistered target ${location.slice(0, 200)}`)

    if (spec.method === 'HEAD') {
      this.count(this.outcomes, `${spec.ep.padEnd(14)} HEAD ${status}`)
      return problems
    }
    const fastifyDefault = parsed !== undefined && typeof parsed.statusCode === 'number' && typeof parsed.message === 'string'
    // The plugin's scope adds nosniff to everything it answers; the router's answers lack it.
    const fromPlugin = headers['x-content-type-options'] === 'nosniff'
    if (m.routed && !fromPlugin && spec.method !== 'OPTIONS') problems.push('a request for a plugin route was answered outside the plugin')
    if (status === 404) {
      outcome = '404 routing'
      if (!type.startsWith('application/json') || !fastifyDefault) problems.push('404 body is not JSON-shaped')
    } else if ((status === 400 || status === 414) && fastifyDefault && /^FST_ERR_(BAD_URL|MAX_PARAM_LENGTH)$/.test(String(parsed?.code))) {
      outcome = `${status} router ${String(parsed?.code)}`
    } else if (spec.method === 'OPTIONS' && (status === 204 || (status === 400 && body === 'Invalid Preflight Request'))) {
      outcome = `${status} cors preflight`
    } else if (status >= 400 && spec.ep !== 'mcp' && !fromPlugin && fastifyDefault) {
      // No route matched (odd method, altered path): Fastify's 404 route parses the body first, so
      // a bad body gets Fastify's 400/415 instead of the 404.
      outcome = `${status} unrouted ${String(parsed?.code)}`
    } else if (status >= 400) {
      const oauthShaped = type.startsWith('application/json') && parsed !== undefined && typeof parsed.error === 'string' &&
        RFC_ERRORS.has(parsed.error) && typeof parsed.error_description === 'string'
      if (oauthShaped) {
        outcome = `${status} ${String(parsed?.error)}`
        const statuses = ERROR_STATUS[parsed?.error as string] ?? [400]
        if (!statuses.includes(status)) problems.push(`error ${String(parsed?.error)} with status ${status}`)
        if (!String(headers['cache-control'] ?? '').includes('no-store')) problems.push('OAuth error without Cache-Control: no-store')
      }
      if (spec.ep === 'mcp') {
        const challenge = String(headers['www-authenticate'] ?? '')
        if (status === 401 && !oauthShaped && parsed !== undefined && typeof parsed.error_description === 'string' && parsed.error === undefined) {
          outcome = '401 no token'
          if (!challenge.startsWith('Bearer resource_metadata=')) problems.push('401 without the RFC 9728 challenge')
        } else if (oauthShaped) {
          if (!challenge.startsWith('Bearer ') && status !== 429) problems.push('guard error without WWW-Authenticate')
        } else if (fastifyDefault && challenge === '' && /^FST_ERR_(CTP|ROUTE)_/.test(String(parsed?.code))) {
          outcome = `${status} application route or unrouted ${String(parsed?.code)}`
        } else {
          problems.push('guard error is not OAuth-shaped')
        }
      } else if (HTML.has(spec.ep) && !oauthShaped) {
        outcome = `${status} page`
        if (!type.startsWith('text/html')) problems.push('error is neither an HTML page nor OAuth-shaped')
        if (!String(headers['content-security-policy'] ?? '').includes("frame-ancestors 'none'")) problems.push('error page without frame-ancestors')
      } else if (!oauthShaped) {
        problems.push('error body is not OAuth-shaped')
      }
    } else if (redirectError) {
      outcome = `${status} redirect error=${new URL(location as string).searchParams.get('error') ?? '?'}`
    }
    this.count(this.outcomes, `${spec.ep.padEnd(14)} ${outcome}`)
    return problems
  }

  /** Feed what came back into the pools, so later requests reach deeper. */
  learn (spec: Spec, m: Materialized, status: number, headers: Record<string, unknown>, body: string): void {
    if (spec.method !== NATURAL[spec.ep]) return
    if (spec.ep === 'token' && status === 200) this.addTokens(JSON.parse(body) as TokenResponse, m.owner)
    if ((spec.ep === 'register' && status === 201) || ((spec.ep === 'registerRead' || spec.ep === 'registerUpdate') && status === 200)) {
      this.learnClient(JSON.parse(body) as Record<string, unknown>)
    }
    if (spec.ep === 'registerDelete' && status === 204) this.dcr = undefined
    if ((spec.ep === 'consent' || spec.ep === 'authorize') && status === 303) this.learnFlow(headers.location, headers['set-cookie'])
    if (spec.ep === 'consent' && status === 303) this.consentUsed = true
  }

  report (t: Test, name: string): void {
    // Generated values hold control characters and line breaks; escape them so the TAP stream stays TAP.
    const safe = (text: string) => text.replace(/[^\x20-\x7e\n]/g, c => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
    t.comment(`${name}: ${this.sent} generated requests (+${this.setupSent} setup requests); ms per phase ${JSON.stringify(this.timing, (_k, v: unknown) => typeof v === 'number' ? Math.round(v) : v)}`)
    for (const [k, n] of [...this.outcomes].sort()) t.comment(`  ${k.padEnd(60)} ${n}`)
    t.comment(`  audit events: ${[...this.events].map(([k, n]) => `${k}=${n}`).join(' ')}`)
    for (const [signature, examples] of this.failures) t.comment(safe(`FAILURE ${signature}\n${examples.join('\n---\n')}`))
    t.same([...this.failures.keys()], [], `${name}: every response acceptable, the store unmoved by refusals`)
    t.ok(this.slowest.ms < 1000, `${name}: no request took a second (slowest ${Math.round(this.slowest.ms)} ms: ${safe(this.slowest.request)})`)
  }
}

function describe (opts: InjectOptions): string {
  const payload = opts.payload === undefined ? '' : String(opts.payload)
  return `${String(opts.method)} ${String(opts.url).slice(0, 300)} ${JSON.stringify(opts.headers).slice(0, 400)} ${payload.slice(0, 300)}`
}

// ---- the runs -------------------------------------------------------------------------------

const seed = Number(process.env.HOSTILE_SEED ?? Date.now() % 2_147_483_647)

async function start (t: Test, idp: DevIdp, opts: Partial<McpOAuthOptions>): Promise<Fuzzer> {
  const events = new Map<string, number>()
  const ctx = await buildApp(t, {
    clients: STATIC,
    registration: { mode: 'public' },
    introspection: { resourceServers: [RS] },
    cors: { origins: ['https://app.example.com'] },
    cookieSecret: COOKIE_SECRET,
    provider: oidcProvider({ issuer: idp.issuer, clientId: 'mcp-proxy', clientSecret: UPSTREAM_SECRET, timeoutMs: 2000 }),
    // A client id that is an https URL would be fetched from the Internet: not from a test.
    clientIdMetadataDocuments: { enabled: false },
    auditSink: (event) => { events.set(event, (events.get(event) ?? 0) + 1) },
    ...opts
  })
  const fuzzer = new Fuzzer(ctx, idp, events)
  await fuzzer.setup()
  return fuzzer
}

async function startIdp (t: Test): Promise<DevIdp> {
  const idp = await startDevIdp({ clients: [{ client_id: 'mcp-proxy', client_secret: UPSTREAM_SECRET, redirect_uris: [`${ISSUER}/oauth/callback`] }] })
  t.teardown(() => idp.close())
  return idp
}

/** The server still works: metadata, the guard with a live token, a refresh, a code exchange. */
async function healthy (t: Test, f: Fuzzer): Promise<void> {
  const app = f.app
  t.equal((await app.inject({ method: 'GET', url: '/.well-known/oauth-authorization-server' })).statusCode, 200, 'metadata')
  const call = async (token: string) => (await app.inject({ method: 'POST', url: '/mcp', headers: { authorization: `Bearer ${token}` } })).statusCode
  t.equal(await call(f.canary.tokens.access_token), 200, 'the canary access token still works at the guard')
  const refreshed = await app.inject({
    method: 'POST',
    url: '/oauth/token',
    headers: { authorization: `Basic ${b64(`${CANARY.client_id}:${CANARY.client_secret}`)}` },
    payload: { grant_type: 'refresh_token', refresh_token: f.canary.tokens.refresh_token }
  })
  t.equal(refreshed.statusCode, 200, 'the canary refresh token still refreshes')
  t.equal(await call(refreshed.json().access_token), 200, 'and the new access token works')
  const code = await f.newCode(PUB)
  const exchanged = await app.inject({
    method: 'POST',
    url: '/oauth/token',
    payload: { grant_type: 'authorization_code', code, code_verifier: VERIFIER, client_id: PUB.client_id, redirect_uri: PUB.redirect_uris[0] }
  })
  t.equal(exchanged.statusCode, 200, 'a code exchange still works')
  const next = await app.inject({ method: 'POST', url: '/oauth/token', payload: { grant_type: 'refresh_token', refresh_token: exchanged.json().refresh_token, client_id: PUB.client_id } })
  t.equal(next.statusCode, 200, 'and its refresh token refreshes')
  t.equal(await call(next.json().access_token), 200)
}

t.test('hostile requests at every endpoint (rate limits off)', async t => {
  const idp = await startIdp(t)
  const f = await start(t, idp, { rateLimit: { enabled: false } })
  const started = Date.now()
  t.comment(`fast-check seed ${seed} (HOSTILE_SEED=${seed} to replay)`)
  await fc.assert(fc.asyncProperty(specArb(), async spec => { await f.send(spec) }), { numRuns: Number(process.env.HOSTILE_RUNS ?? 10_000), seed, endOnFailure: true })
  t.comment(`${Date.now() - started} ms`)
  f.report(t, 'rate limits off')
  t.ok(f.sent >= 10_000, `at least 10 000 requests (${f.sent})`)
  // The generated traffic reached the deep paths, not only the validators.
  const seen = (ep: Endpoint, outcome: string) => [...f.outcomes.keys()].some(k => k.startsWith(`${ep.padEnd(14)} ${outcome}`))
  t.ok(seen('token', '200'), 'successful token requests')
  t.ok(seen('register', '201'), 'successful registrations')
  t.ok(seen('registerUpdate', '200'), 'successful registration updates')
  t.ok(seen('consent', '303'), 'approved consents')
  t.ok(seen('authorize', '200'), 'consent pages')
  t.ok(seen('callback', '302 redirect error='), 'callbacks that went on to the identity provider')
  t.ok(seen('introspect', '200'), 'introspection answers')
  t.ok(seen('mcp', '200'), 'guarded calls let through')
  t.ok((f.events.get('upstream_failure') ?? 0) > 0, 'upstream exchanges attempted')
  await healthy(t, f)
})

t.test('hostile requests with rate limits on', async t => {
  const idp = await startIdp(t)
  const budget = { max: 25, windowSeconds: 60 }
  const f = await start(t, idp, {
    rateLimit: { enabled: true, metadata: budget, authorize: budget, token: budget, register: budget, revocation: budget, mcp: budget }
  })
  await fc.assert(fc.asyncProperty(specArb(), async spec => { await f.send(spec) }), { numRuns: 1500, seed: seed + 1, endOnFailure: true })
  f.report(t, 'rate limits on')
  t.ok([...f.outcomes.keys()].some(k => / 429 temporarily_unavailable$/.test(k)), 'limits were hit and answered OAuth-shaped')
  t.ok((f.events.get('rate_limited') ?? 0) > 0, 'rate_limited audited')

  // Every route has a budget: one address sending more than `max` unauthenticated requests is stopped.
  const id = f.dcr?.id ?? 'x'
  const routes: Array<[InjectOptions['method'], string]> = [
    ['GET', '/.well-known/oauth-authorization-server'], ['GET', '/.well-known/oauth-protected-resource/mcp'], ['GET', '/oauth/authorize'],
    ['POST', '/oauth/consent'], ['GET', '/oauth/callback'], ['POST', '/oauth/token'], ['POST', '/oauth/register'], ['GET', `/oauth/register/${id}`],
    ['PUT', `/oauth/register/${id}`], ['DELETE', `/oauth/register/${id}`], ['POST', '/oauth/revoke'], ['POST', '/oauth/introspect']
  ]
  const grant = await f.app.mcpOAuth.grants.createGrant({ userId: 'rate', clientId: PUB.client_id, scopes: ['mcp:tools'], resource: RESOURCE })
  const { access_token: accessToken } = await f.app.mcpOAuth.grants.issueTokens(grant)
  for (const [i, [method, url]] of routes.entries()) {
    const statuses = new Set<number>()
    for (let n = 0; n <= budget.max; n++) {
      const res = await f.app.inject({ method, url, remoteAddress: `198.51.100.${i + 1}`, ...(method === 'GET' || method === 'DELETE' ? {} : { payload: {} }) })
      statuses.add(res.statusCode)
    }
    t.ok(statuses.has(429), `${String(method)} ${url.replace(id, ':id')} is rate limited (saw ${[...statuses].join(', ')})`)
  }
  const guarded = new Set<number>()
  for (let n = 0; n <= budget.max; n++) {
    guarded.add((await f.app.inject({ method: 'POST', url: '/mcp', headers: { authorization: `Bearer ${accessToken}` } })).statusCode)
  }
  t.ok(guarded.has(429), `the guarded route has a per-user budget (saw ${[...guarded].join(', ')})`)
})

t.test('client id metadata documents: hostile URL client ids never leave loopback', async t => {
  const idp = await startIdp(t)
  const f = await start(t, idp, {
    rateLimit: { enabled: false },
    // Every name resolves to loopback, which the fetcher refuses: nothing is ever connected to.
    clientIdMetadataDocuments: { enabled: true, timeoutMs: 500 },
    cimdTestHooks: { lookup: async () => [{ address: '127.0.0.1', family: 4 }] }
  })
  const ids = [
    'https://client.example.com/meta.json', 'https://client.example.com/', 'https://client.example.com', 'https://localhost/x', 'https://127.0.0.1/x',
    'https://[::1]/x', 'https://10.0.0.1/x', 'https://169.254.169.254/latest', 'https://0x7f000001/x', 'https://client.example.com:0/x',
    'https://client.example.com/x#f', 'https://u:p@client.example.com/x', 'https://client.example.com/%ff', 'https://client.example.com/' + 'a'.repeat(3000),
    'HTTPS://CLIENT.EXAMPLE.COM/X', 'https://xn--80ak6aa92e.com/x', 'https://client.example.com/\u202e', 'https://client.example.com/x?y=1'
  ]
  const specs: Spec[] = []
  for (const id of ids) {
    const blank: Spec = { ep: 'authorize', method: 'GET', path: 0, id: null, query: [], body: [], bodyMode: 'none', encoding: 'enc', contentType: null, auth: null, cookies: [], headers: [] }
    specs.push({ ...blank, query: [['response_type', 'code'], ['client_id', id], ['redirect_uri', 'http://127.0.0.1/cb'], ['code_challenge', s256(VERIFIER)], ['code_challenge_method', 'S256']] })
    for (const ep of ['token', 'revoke', 'introspect'] as const) {
      specs.push({ ...blank, ep, method: 'POST', bodyMode: 'form', body: [['grant_type', 'refresh_token'], ['token', 'x'], ['refresh_token', 'x'], ['client_id', id]] })
      specs.push({ ...blank, ep, method: 'POST', bodyMode: 'form', body: [['grant_type', 'refresh_token'], ['token', 'x'], ['refresh_token', 'x']], auth: { kind: 'basic', a: id, b: 'secret', sep: ' ', scheme: 0 } })
    }
  }
  for (const spec of specs) await f.send(spec)
  f.report(t, 'client id metadata documents')
  await healthy(t, f)
})

t.test('malformed HTTP on a real socket: made-up methods, duplicated headers, invalid bytes', async t => {
  const idp = await startIdp(t)
  const f = await start(t, idp, { rateLimit: { enabled: false } })
  await f.app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = f.app.server.address() as { port: number }
  const raw = (data: Buffer) => new Promise<string>(resolve => {
    const socket = connect(port, '127.0.0.1')
    let out = ''
    const timer = setTimeout(() => { socket.destroy(); resolve(out) }, 3000)
    socket.on('data', d => { out += d.toString('latin1') })
    socket.on('close', () => { clearTimeout(timer); resolve(out) })
    socket.on('error', () => {})
    socket.end(data)
  })
  const paths = ['/.well-known/oauth-authorization-server', '/.well-known/oauth-protected-resource/mcp', '/oauth/authorize', '/oauth/consent',
    '/oauth/callback', '/oauth/token', '/oauth/register', `/oauth/register/${f.dcr?.id ?? 'x'}`, '/oauth/revoke', '/oauth/introspect', '/mcp']
  const bad = Buffer.from([0xff, 0xc0, 0xaf, 0xed, 0xa0, 0x80])
  const form = 'grant_type=refresh_token&client_id=pub-app&refresh_token=x'
  const shapes: Array<(p: string) => Buffer> = [
    p => Buffer.from(`FOO ${p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`),
    p => Buffer.from(`get ${p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`),
    p => Buffer.from(`POSTX ${p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`),
    p => Buffer.from(`PURGE ${p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`),
    p => Buffer.from(`POST ${p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${form.length}\r\n\r\n${form}`),
    p => Buffer.from(`POST ${p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Type: application/json\r\nContent-Length: ${form.length}\r\n\r\n${form}`),
    p => Buffer.from(`POST ${p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Basic ${b64('basic-app:wrong')}\r\nAuthorization: Bearer ${f.access[0] ?? ''}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${form.length}\r\n\r\n${form}`),
    p => Buffer.from(`POST ${p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer ${f.access[0] ?? ''}\r\nAuthorization: Bearer ${f.canary.tokens.access_token}\r\n\r\n`),
    p => Buffer.from(`POST ${p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef`),
    p => Buffer.from(`POST ${p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`),
    p => Buffer.from(`POST ${p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\nzz\r\nabc\r\n0\r\n\r\n`),
    p => Buffer.from(`POST ${p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nshort`),
    p => Buffer.concat([Buffer.from(`GET ${p}?client_id=`), bad, Buffer.from(' HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')]),
    p => Buffer.concat([Buffer.from(`POST ${p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer `), bad, Buffer.from('\r\n\r\n')]),
    p => Buffer.concat([Buffer.from(`POST ${p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${form.length + 7}\r\n\r\n${form}&a=`), bad.subarray(0, 4)]),
    p => Buffer.from(`POST ${p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Folded: a\r\n b\r\n\r\n`),
    p => Buffer.from(`GET ${p} HTTP/1.1\r\nConnection: close\r\n\r\n`),
    p => Buffer.from(`GET ${p} HTTP/1.0\r\n\r\n`),
    p => Buffer.from(`GET http://evil.example.com${p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`),
    p => Buffer.from(`GET ${p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nCookie: __Host-mcp-oauth-consent=a\r\nCookie: __Host-mcp-oauth-consent=b\r\n\r\n`),
    p => Buffer.from(`GET ${p}\u0000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`),
    p => Buffer.from(`GET ${p} HTTP/9.9\r\nHost: x\r\nConnection: close\r\n\r\n`),
    p => Buffer.from(`GET ${p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`)
  ]
  const before = await f.snapshot()
  let sent = 0
  const answers = new Map<string, number>()
  for (const p of paths) {
    for (const shape of shapes) {
      const out = await raw(shape(p))
      sent++
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(out)?.[1] ?? 0)
      answers.set(String(status), (answers.get(String(status)) ?? 0) + 1)
      if (status === 0 || status >= 500) t.fail(`no answer or a server error for ${JSON.stringify(shape(p).toString('latin1').slice(0, 120))}: ${out.slice(0, 200)}`)
    }
  }
  const after = await f.snapshot()
  t.comment(`raw socket: ${sent} requests, statuses ${[...answers].map(([k, n]) => `${k}=${n}`).join(' ')}`)
  t.equal(after.known, before.known, 'canary and static clients untouched')
  t.same(after.stats, before.stats, 'none of these requests changed the store')
  await healthy(t, f)
})

t.test('HEAD is safe: it changes nothing the matching GET would change', async t => {
  const idp = await startIdp(t)
  const f = await start(t, idp, { rateLimit: { enabled: false } })
  const dcr = f.dcr as { id: string, token: string }
  const head = await f.app.inject({ method: 'HEAD', url: `/oauth/register/${dcr.id}`, headers: { authorization: `Bearer ${dcr.token}` } })
  t.comment(`HEAD /oauth/register/:id -> ${head.statusCode}, body ${head.body.length} bytes`)
  // RFC 9110 §9.2.1: HEAD is a safe method. A read that rotates the registration access token must
  // not run for HEAD, whose response cannot carry the new token.
  const get = await f.app.inject({ method: 'GET', url: `/oauth/register/${dcr.id}`, headers: { authorization: `Bearer ${dcr.token}` } })
  t.equal(get.statusCode, 200, 'the registration access token still works after a HEAD request')
})

t.test('consent page: a name the client chose cannot reorder or hide the page around it', async t => {
  const idp = await startIdp(t)
  const f = await start(t, idp, { rateLimit: { enabled: false } })
  for (const name of ['Claude\u202e', 'Claude\u2067', 'Claude\u0000\u0007', 'Claude\u202a']) {
    const reg = await f.app.inject({
      method: 'POST', url: '/oauth/register', payload: { redirect_uris: ['https://x.example.com/cb'], token_endpoint_auth_method: 'none', client_name: name }
    })
    const shown = name.replace(/[^\x20-\x7e]/g, c => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
    if (reg.statusCode !== 201) {
      t.equal(reg.json().error, 'invalid_client_metadata', `${shown} refused at registration`)
      continue
    }
    const query = new URLSearchParams({
      response_type: 'code',
      client_id: reg.json().client_id,
      redirect_uri: 'https://x.example.com/cb',
      code_challenge: s256(VERIFIER),
      code_challenge_method: 'S256'
    })
    const page = await f.app.inject({ method: 'GET', url: `/oauth/authorize?${query.toString()}` })
    t.equal(page.statusCode, 200)
    // Rendered raw inside <strong>, an unterminated override runs on through "(name given by the
    // application itself, not verified) wants to access …" until the end of the paragraph.
    t.notOk(UNSAFE_TEXT.test(page.body), `${shown} does not reach the consent page as control or bidi-format characters`)
  }
})
