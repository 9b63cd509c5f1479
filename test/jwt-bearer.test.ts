/**
 * Enterprise-Managed Authorization at the token endpoint: grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer
 * with ID-JAGs. Signed here by a test IdP (jose) whose keys and metadata a loopback server publishes,
 * and by the example's development IdP through the SDK's token exchange. Every refusal is an OAuth
 * error with a useful description, and leaves the ID-JAG's jti unspent and no grant behind.
 */
import t from 'tap'
import Fastify from 'fastify'
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose'
import { requestJwtAuthorizationGrant } from '@modelcontextprotocol/client'
import { mcpOAuth, type McpAuthInfo, type McpOAuthOptions } from '../lib/index.js'
import { oidcProvider } from '../lib/providers/oidc.js'
import { RedisStore } from '../lib/storage/redis/index.js'
import { resolveOptions } from '../lib/options/index.js'
import type { AuditEventName } from '../lib/security/audit.js'
import { buildApp, ISSUER, RESOURCE } from './helpers/app.js'
import { TestClock } from './helpers/clock.js'
import { idpLogin } from './helpers/idp-login.js'
import { loginTokens, REDIRECT, startLogin } from './helpers/login.js'
import { withRedisServer } from './helpers/redis-tests.js'

const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer'
const AGENT = { id: 'agent', secret: 'agent-secret-agent-secret' }
const basic = (id: string, secret: string): string => 'Basic ' + Buffer.from(`${id}:${secret}`).toString('base64')

// ---- The test IdP: a key pair, and a loopback server with its keys and metadata ----------------
const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true })
const publicJwk: JWK = { ...await exportJWK(publicKey), kid: 'idp-1', alg: 'ES256', use: 'sig' }
const other = await generateKeyPair('ES256', { extractable: true })

const keyServer = Fastify({ logger: false })
let jwksFetches = 0
keyServer.get('/jwks', async () => { jwksFetches++; return { keys: [publicJwk] } })
// /idp2 publishes OpenID Connect discovery; /idp3 only RFC 8414 (path-inserted); /idp4 names another issuer.
keyServer.get('/idp2/.well-known/openid-configuration', async () => ({ issuer: `${base()}/idp2`, jwks_uri: `${base()}/jwks` }))
keyServer.get('/.well-known/oauth-authorization-server/idp3', async () => ({ issuer: `${base()}/idp3`, jwks_uri: `${base()}/jwks` }))
let idp4Fetches = 0
keyServer.get('/idp4/.well-known/openid-configuration', async () => { idp4Fetches++; return { issuer: `${base()}/elsewhere`, jwks_uri: `${base()}/jwks` } })
keyServer.get('/idp5/.well-known/openid-configuration', async (_req, reply) => reply.type('application/json').send('{not json'))
keyServer.get('/idp6/.well-known/openid-configuration', async () => ({ issuer: `${base()}/idp6` }))
await keyServer.listen({ port: 0, host: '127.0.0.1' })
t.teardown(() => keyServer.close())
function base (): string {
  const address = keyServer.server.address() as { port: number }
  return `http://127.0.0.1:${address.port}`
}
const IDP = `${base()}/idp`

const enterprise: McpOAuthOptions['enterprise'] = {
  trustedIssuers: [
    { issuer: IDP, jwks_uri: `${base()}/jwks` },
    { issuer: `${base()}/idp2` },
    { issuer: `${base()}/idp3` },
    { issuer: `${base()}/idp4` },
    { issuer: `${base()}/idp5` },
    { issuer: `${base()}/idp6` }
  ]
}
const clients: McpOAuthOptions['clients'] = [
  { client_id: AGENT.id, client_secret: AGENT.secret, grant_types: [JWT_BEARER] },
  { client_id: 'narrow', client_secret: AGENT.secret, grant_types: [JWT_BEARER], scope: 'mcp:tools' },
  { client_id: 'web', client_secret: AGENT.secret, redirect_uris: ['https://web.example/cb'] }
]

const events: Array<{ event: AuditEventName, fields: Record<string, unknown> }> = []
const OTHER = `${ISSUER}/other`
const clock = new TestClock()
const app = Fastify({ logger: false })
await app.register(mcpOAuth, {
  issuer: ISSUER,
  resources: [RESOURCE, OTHER],
  scopes: ['mcp:tools', 'mcp:admin'],
  defaultScopes: ['mcp:tools'],
  now: clock.now,
  enterprise,
  clients,
  auditSink: (event, fields) => { events.push({ event, fields: fields as Record<string, unknown> }) }
})
await app.ready()
t.teardown(() => app.close())

let counter = 0
/** An ID-JAG of the test IdP for the agent, valid now; `claims` on top (undefined drops one). */
async function idJag (claims: Record<string, unknown> = {}, header: Record<string, unknown> = {}, key: CryptoKey = privateKey): Promise<string> {
  const iat = Math.floor(clock.now() / 1000)
  const payload: Record<string, unknown> = {
    iss: IDP,
    sub: 'U123',
    aud: ISSUER,
    client_id: AGENT.id,
    resource: RESOURCE,
    scope: 'mcp:tools mcp:admin',
    jti: `jag-${++counter}`,
    iat,
    exp: iat + 300,
    ...claims
  }
  for (const [k, v] of Object.entries(payload)) if (v === undefined) delete payload[k]
  return await new SignJWT(payload as JWTPayload).setProtectedHeader({ alg: 'ES256', typ: 'oauth-id-jag+jwt', kid: 'idp-1', ...header }).sign(key)
}

async function grant (body: Record<string, string | undefined>, client = AGENT): Promise<{ status: number, body: Record<string, unknown> }> {
  const form = new URLSearchParams()
  for (const [k, v] of Object.entries({ grant_type: JWT_BEARER, ...body })) if (v !== undefined) form.set(k, v)
  const res = await app.inject({
    method: 'POST',
    url: '/oauth/token',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(client.id, client.secret) },
    payload: form.toString()
  })
  return { status: res.statusCode, body: res.json() }
}

/** What request.mcpAuth would say for the token. */
async function whoami (accessToken: string): Promise<McpAuthInfo> {
  const result = await app.mcpOAuth.validator.validate(accessToken)
  if (!result.valid) throw new Error('the access token should be valid')
  return result.auth
}

const b64 = (value: unknown): string => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url')

t.test('an ID-JAG of a trusted IdP gets an access token for its user, no refresh token', async (t) => {
  const before = events.length
  const res = await grant({ assertion: await idJag() })
  t.equal(res.status, 200, JSON.stringify(res.body))
  t.equal(res.body.token_type, 'Bearer')
  t.equal(res.body.refresh_token, undefined, 'the client asks the IdP for a new ID-JAG instead')
  t.equal(res.body.scope, 'mcp:tools mcp:admin')
  t.equal(res.body.expires_in, 3600)
  const auth = await whoami(res.body.access_token as string)
  // Not the upstream provider's issuer: the user id is namespaced by the issuer.
  t.equal(auth.userId, `${IDP}#U123`)
  t.equal(auth.clientId, AGENT.id)
  t.equal(auth.resource, RESOURCE)
  t.equal(auth.subjectType, 'user')
  const issued = events.slice(before).find(e => e.event === 'token_issued')
  t.match(issued?.fields, { clientId: AGENT.id, userId: `${IDP}#U123`, grantType: JWT_BEARER, grantId: String })
  t.notOk(JSON.stringify(events).includes('eyJ'), 'no assertion or token in the audit stream')
})

t.test('an ID-JAG is good for one request', async (t) => {
  const assertion = await idJag()
  t.equal((await grant({ assertion })).status, 200)
  const again = await grant({ assertion })
  t.equal(again.status, 400)
  t.equal(again.body.error, 'invalid_grant')
  t.match(again.body.error_description, /"jti" was used before/)
})

t.test('aud may be written with a trailing slash; resource as a client spells it', async (t) => {
  const res = await grant({ assertion: await idJag({ aud: `${ISSUER}/`, resource: `${RESOURCE}/` }) })
  t.equal(res.status, 200, JSON.stringify(res.body))
})

t.test('resource: absent (Okta) -> the default; the request may name it; foreign or different -> refused', async (t) => {
  const absent = await grant({ assertion: await idJag({ resource: undefined }) })
  t.equal(absent.status, 200)
  t.equal((await whoami(absent.body.access_token as string)).resource, RESOURCE)

  const second = await grant({ assertion: await idJag({ resource: undefined }), resource: OTHER })
  t.equal(second.status, 200)
  t.equal((await whoami(second.body.access_token as string)).resource, OTHER)

  const cases: Array<[Record<string, unknown>, Record<string, string>, string, RegExp]> = [
    [{ resource: 'https://elsewhere.example/mcp' }, {}, 'invalid_grant', /"resource" is not served/],
    [{ resource: ['a'] }, {}, 'invalid_grant', /"resource" must be a string/],
    [{}, { resource: 'https://elsewhere.example/mcp' }, 'invalid_target', /not served/],
    [{}, { resource: OTHER }, 'invalid_target', /not the one the ID-JAG was issued for/]
  ]
  for (const [claims, params, error, description] of cases) {
    const res = await grant({ assertion: await idJag(claims), ...params })
    t.equal(res.status, 400)
    t.equal(res.body.error, error)
    t.match(res.body.error_description, description)
  }
})

t.test('scopes: requested within asserted, client and resource', async (t) => {
  const asked = await grant({ assertion: await idJag(), scope: 'mcp:admin' })
  t.equal(asked.body.scope, 'mcp:admin')
  // Without a scope claim: the defaults.
  const defaults = await grant({ assertion: await idJag({ scope: undefined }) })
  t.equal(defaults.body.scope, 'mcp:tools')
  // The client's registered scope narrows what the IdP granted.
  const narrow = await grant({ assertion: await idJag({ client_id: 'narrow' }) }, { id: 'narrow', secret: AGENT.secret })
  t.equal(narrow.body.scope, 'mcp:tools')
  const cases: Array<[Record<string, unknown>, string | undefined, string, RegExp]> = [
    [{ scope: 'mcp:tools' }, 'mcp:admin', 'invalid_scope', /No scope is left/],
    [{ scope: 'other:thing' }, undefined, 'invalid_scope', /No scope is left/],
    [{}, 'bad"scope', 'invalid_scope', /malformed/],
    [{}, 'unknown:scope', 'invalid_scope', /Unsupported scope/],
    [{ scope: ['mcp:tools'] }, undefined, 'invalid_grant', /"scope" must be a string/]
  ]
  for (const [claims, scope, error, description] of cases) {
    const res = await grant({ assertion: await idJag(claims), scope })
    t.equal(res.status, 400)
    t.equal(res.body.error, error)
    t.match(res.body.error_description, description)
  }
})

t.test('keys found through the issuer\'s metadata: OpenID Connect discovery, else RFC 8414', async (t) => {
  for (const issuer of [`${base()}/idp2`, `${base()}/idp3`]) {
    const res = await grant({ assertion: await idJag({ iss: issuer }) })
    t.equal(res.status, 200, `${issuer}: ${JSON.stringify(res.body)}`)
    t.equal((await whoami(res.body.access_token as string)).userId, `${issuer}#U123`, 'each issuer has its own user namespace')
  }
  const wrong = await grant({ assertion: await idJag({ iss: `${base()}/idp4` }) })
  t.equal(wrong.body.error, 'invalid_grant')
  t.match(wrong.body.error_description, /metadata of its issuer could not be fetched: the metadata names another issuer/)
  // The failed discovery is the answer for a while: no fetch per request.
  const again = await grant({ assertion: await idJag({ iss: `${base()}/idp4` }) })
  t.match(again.body.error_description, /names another issuer/)
  t.equal(idp4Fetches, 1)
  for (const [issuer, reason] of [['idp5', /the metadata is not JSON/], ['idp6', /the metadata has no jwks_uri/]] as const) {
    const res = await grant({ assertion: await idJag({ iss: `${base()}/${issuer}` }) })
    t.equal(res.body.error, 'invalid_grant')
    t.match(res.body.error_description, reason)
  }
})

t.test('who may use the grant', async (t) => {
  const web = await grant({ assertion: await idJag({ client_id: 'web' }) }, { id: 'web', secret: AGENT.secret })
  t.equal(web.body.error, 'unauthorized_client', 'a client not registered for the grant')
  // A public client holding the grant (no registration path gives one; a record from elsewhere might).
  await app.mcpOAuth.storage.saveClient({
    clientId: 'public-agent',
    redirectUris: [],
    tokenEndpointAuthMethod: 'none',
    grantTypes: [JWT_BEARER],
    responseTypes: [],
    applicationType: 'web',
    metadata: {},
    clientIdIssuedAt: 0,
    source: 'dcr'
  })
  const res = await app.inject({
    method: 'POST',
    url: '/oauth/token',
    payload: new URLSearchParams({ grant_type: JWT_BEARER, client_id: 'public-agent', assertion: await idJag({ client_id: 'public-agent' }) }).toString(),
    headers: { 'content-type': 'application/x-www-form-urlencoded' }
  })
  t.equal(res.json().error, 'unauthorized_client')
  t.match(res.json().error_description, /confidential clients only/)
  const missing = await grant({ assertion: undefined })
  t.equal(missing.body.error, 'invalid_request')
  t.match(missing.body.error_description, /assertion is required/)
})

t.test('hostile and malformed ID-JAGs: invalid_grant naming the fault, the jti unspent, nothing stored', async (t) => {
  const now = Math.floor(clock.now() / 1000)
  const hs256 = await new SignJWT({ iss: IDP, sub: 'U123', aud: ISSUER, client_id: AGENT.id, jti: 'hs', iat: now, exp: now + 300 })
    .setProtectedHeader({ alg: 'HS256', typ: 'oauth-id-jag+jwt', kid: 'idp-1' })
    .sign(new TextEncoder().encode(JSON.stringify(publicJwk)))
  const unsigned = `${b64({ alg: 'none', typ: 'oauth-id-jag+jwt' })}.${b64({ iss: IDP, sub: 'U123', aud: ISSUER, client_id: AGENT.id, jti: 'none', iat: now, exp: now + 300 })}.`
  const nested = await idJag({}, { cty: 'JWT' })
  const jwe = 'eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d'
  const cases: Array<[string, string | Promise<string>, RegExp]> = [
    ['alg none', unsigned, /not a signed JWT|algorithm none/],
    ['HS256 with the public key', hs256, /algorithm HS256 is not accepted/],
    ['wrong aud', idJag({ aud: 'https://other-as.example' }), /"aud" must name https:\/\/auth\.example\.com/],
    ['untrusted iss', idJag({ iss: 'https://evil.example' }), /issuer \("iss"\) is not a trusted identity provider/],
    ['wrong typ', idJag({}, { typ: 'JWT' }), /"typ" must be oauth-id-jag\+jwt/],
    ['no typ (an ID token)', idJag({}, { typ: undefined }), /"typ" must be oauth-id-jag\+jwt/],
    ['expired', idJag({ iat: now - 900, exp: now - 600 }), /expired/],
    ['future iat', idJag({ iat: now + 600, exp: now + 900 }), /"iat" is in the future/],
    ['no iat', idJag({ iat: undefined }), /"iat" is missing/],
    ['unknown kid', idJag({}, { kid: 'nobody' }, other.privateKey), /no key of the signer's key set matches/],
    ['signed by another key', idJag({}, {}, other.privateKey), /signature does not verify/],
    ['nested', nested, /nested JWTs are not accepted/],
    ['JWE', jwe, /encrypted JWTs \(JWE\) are not accepted/],
    ['garbage', 'not-a-jwt', /not a signed JWT/],
    ['sub a number', idJag({ sub: 42 }), /"sub" must be a non-empty string/],
    ['aud a number', idJag({ aud: 42 }), /"aud" must be a string or a non-empty array/],
    ['exp a string', idJag({ exp: 'soon' }), /"exp" must be a number/],
    ['client_id a number', idJag({ client_id: 7 }), /"client_id" is missing or not a string/],
    ['no client_id', idJag({ client_id: undefined }), /"client_id" is missing/],
    ['client_id of another client', idJag({ client_id: 'someone-else' }), /issued to another client/]
  ]
  for (const [name, assertion, description] of cases) {
    const res = await grant({ assertion: await assertion })
    t.equal(res.status, 400, name)
    t.equal(res.body.error, 'invalid_grant', name)
    t.match(res.body.error_description, description, name)
    t.notOk(String(res.body.error_description).includes('eyJ'), `${name}: no assertion in the description`)
  }
  // Too long: 9 KB is refused by the engine, before any decoding; 100 KB is over the endpoints' body
  // limit and refused before the body is parsed at all.
  const long = await grant({ assertion: 'a'.repeat(9 * 1024) })
  t.equal(long.status, 400)
  t.same(long.body, { error: 'invalid_grant', error_description: 'The ID-JAG was refused: it is longer than 8192 characters' })
  const huge = await grant({ assertion: 'a'.repeat(100 * 1024) })
  t.equal(huge.status, 413)
  t.same(huge.body, { error: 'invalid_request', error_description: 'Request body too large' })
  // Refusals after the signature spend nothing: the same jti then works for its rightful presenter.
  const jti = 'kept-jti'
  t.equal((await grant({ assertion: await idJag({ jti, client_id: 'someone-else' }) })).body.error, 'invalid_grant')
  t.equal((await grant({ assertion: await idJag({ jti, resource: 'https://elsewhere.example/mcp' }) })).body.error, 'invalid_grant')
  t.equal((await grant({ assertion: await idJag({ jti }), scope: 'unknown:scope' })).body.error, 'invalid_scope')
  t.equal(await app.mcpOAuth.revokeUser(`${IDP}#U999`), 0)
  const ok = await grant({ assertion: await idJag({ jti, sub: 'U999' }) })
  t.equal(ok.status, 200, 'the jti was not spent by the refusals')
  t.equal(await app.mcpOAuth.revokeUser(`${IDP}#U999`), 1, 'one grant: the refusals stored none')
  t.equal(jwksFetches, 1, 'the key set was fetched once: cached, and made-up kids within 30 s fetch nothing')
})

t.test('an unreachable key set: invalid_grant saying so, no 500', async (t) => {
  const { app } = await buildApp(t, {
    enterprise: { trustedIssuers: [{ issuer: IDP, jwks_uri: 'http://127.0.0.1:9/jwks' }] },
    clients: [{ client_id: AGENT.id, client_secret: AGENT.secret, grant_types: [JWT_BEARER] }]
  })
  const res = await app.inject({
    method: 'POST',
    url: '/oauth/token',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(AGENT.id, AGENT.secret) },
    payload: new URLSearchParams({ grant_type: JWT_BEARER, assertion: await idJag() }).toString()
  })
  t.equal(res.statusCode, 400)
  t.equal(res.json().error, 'invalid_grant')
  t.match(res.json().error_description, /key set could not be fetched/)
})

t.test('metadata lists the grant and the ID-JAG profile only when an IdP is trusted', async (t) => {
  const on = (await app.inject('/.well-known/oauth-authorization-server')).json()
  t.ok(on.grant_types_supported.includes(JWT_BEARER))
  t.same(on.authorization_grant_profiles_supported, ['urn:ietf:params:oauth:grant-profile:id-jag'])
  const { app: plain } = await buildApp(t, { clients: [{ client_id: AGENT.id, client_secret: AGENT.secret, grant_types: ['client_credentials'] }] })
  const off = (await plain.inject('/.well-known/oauth-authorization-server')).json()
  t.notOk(off.grant_types_supported.includes(JWT_BEARER))
  t.equal(off.authorization_grant_profiles_supported, undefined)
  const noGrant = await plain.inject({
    method: 'POST',
    url: '/oauth/token',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(AGENT.id, AGENT.secret) },
    payload: new URLSearchParams({ grant_type: JWT_BEARER, assertion: await idJag() }).toString()
  })
  t.equal(noGrant.json().error, 'unsupported_grant_type', 'without a trusted IdP the grant does not exist')
})

t.test('options: trusted issuers, the upstream default, clients of the grant', async (t) => {
  const base = { issuer: ISSUER, resources: [RESOURCE] }
  const upstream = oidcProvider({ issuer: 'https://login.corp.example', clientId: 'c', clientSecret: 's' })
  t.same(resolveOptions({ ...base, provider: upstream }).enterprise.issuers, [{ issuer: 'https://login.corp.example', upstream: true }], 'the provider\'s issuer by default')
  t.same(resolveOptions({ ...base, provider: upstream, enterprise: { trustUpstreamIssuer: false } }).enterprise.issuers, [], 'unless turned off')
  t.same(resolveOptions({ ...base, provider: upstream, enterprise: { trustedIssuers: [{ issuer: 'https://login.corp.example/' }] } }).enterprise.issuers,
    [{ issuer: 'https://login.corp.example/', upstream: true }], 'listed as well: one entry, still the upstream one')
  const insecure = oidcProvider({ issuer: 'http://idp.lan', clientId: 'c', allowInsecureHttp: true })
  t.same(resolveOptions({ ...base, provider: insecure }).enterprise.issuers, [], 'plain http off loopback is never trusted')
  const bad: Array<[Record<string, unknown>, RegExp]> = [
    [{ enterprise: { trustedIssuers: [{ issuer: 'not a url' }] } }, /enterprise\.trustedIssuers\[0\]\.issuer/],
    [{ enterprise: { trustedIssuers: [{ issuer: 'http://idp.example.com' }] } }, /enterprise\.trustedIssuers\[0\]\.issuer.*https/],
    [{ enterprise: { trustedIssuers: [{ issuer: 'https://idp.example.com?x=1' }] } }, /query or a fragment/],
    [{ enterprise: { trustedIssuers: [{ issuer: 'https://u:p@idp.example.com' }] } }, /user information/],
    [{ enterprise: { trustedIssuers: [{ issuer: 'https://idp.example.com' }, { issuer: 'https://idp.example.com/' }] } }, /enterprise\.trustedIssuers\[1\]\.issuer.*duplicate/],
    [{ enterprise: { trustedIssuers: [{ issuer: 'https://idp.example.com', jwks_uri: 'ftp://x' }] } }, /enterprise\.trustedIssuers\[0\]\.jwks_uri/],
    [{ enterprise: { trustedIssuers: [{ issuer: 'https://idp.example.com', extra: 1 }] } }, /enterprise\.trustedIssuers\[0\]\.extra/],
    [{ clients: [{ client_id: 'a', client_secret: AGENT.secret, grant_types: [JWT_BEARER] }] }, /clients\[0\]\.grant_types.*trusted identity provider/],
    [{ clients: [{ client_id: 'a', grant_types: [JWT_BEARER] }], enterprise: { trustedIssuers: [{ issuer: 'https://idp.example.com' }] } }, /clients\[0\]\.client_secret.*confidential/]
  ]
  for (const [opts, message] of bad) t.throws(() => resolveOptions({ ...base, ...opts }), { message }, JSON.stringify(opts))
})

t.test('dynamic registration: confidential clients may register for the grant', async (t) => {
  const { app } = await buildApp(t, { enterprise, registration: { mode: 'public' } })
  const register = async (body: Record<string, unknown>): Promise<{ status: number, body: Record<string, unknown> }> => {
    const res = await app.inject({ method: 'POST', url: '/oauth/register', payload: { client_name: 'Agent', ...body } })
    return { status: res.statusCode, body: res.json() }
  }
  const ok = await register({ grant_types: [JWT_BEARER], token_endpoint_auth_method: 'client_secret_basic' })
  t.equal(ok.status, 201, JSON.stringify(ok.body))
  t.same(ok.body.grant_types, [JWT_BEARER])
  const res = await app.inject({
    method: 'POST',
    url: '/oauth/token',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(ok.body.client_id as string, ok.body.client_secret as string) },
    payload: new URLSearchParams({ grant_type: JWT_BEARER, assertion: await idJag({ client_id: ok.body.client_id }) }).toString()
  })
  t.equal(res.statusCode, 200, res.body)
  const pub = await register({ grant_types: [JWT_BEARER], token_endpoint_auth_method: 'none' })
  t.equal(pub.body.error, 'invalid_client_metadata')
  t.match(pub.body.error_description, /needs a confidential client/)
  const { app: plain } = await buildApp(t, { registration: { mode: 'public' } })
  const off = await plain.inject({ method: 'POST', url: '/oauth/register', payload: { client_name: 'A', grant_types: [JWT_BEARER], token_endpoint_auth_method: 'client_secret_basic' } })
  t.equal(off.json().error, 'invalid_client_metadata', 'without a trusted IdP the grant is unknown')
})

/** The dev IdP as upstream and enterprise IdP: the app `wiki` may get ID-JAGs for our client `wiki-at-mcp`. */
const WIKI = { id: 'wiki', secret: 'wiki-secret-wiki-secret' }
const WIKI_AT_MCP = { id: 'wiki-at-mcp', secret: AGENT.secret }
async function xaaHarness (t: Parameters<typeof startLogin>[0], opts: Partial<McpOAuthOptions> = {}): ReturnType<typeof startLogin> {
  return await startLogin(t, {
    clients: [{ client_id: WIKI_AT_MCP.id, client_secret: WIKI_AT_MCP.secret, grant_types: [JWT_BEARER] }],
    ...opts
  }, issuer => ({
    clients: [{ client_id: WIKI.id, client_secret: WIKI.secret, redirect_uris: [REDIRECT], crossAppAccess: { [issuer]: { client_id: WIKI_AT_MCP.id } } }]
  }))
}

/** What the enterprise app does: log the user in at the IdP, exchange the ID token for an ID-JAG for us. */
async function devIdJag (h: Awaited<ReturnType<typeof startLogin>>, user: string): Promise<string> {
  const { idToken } = await idpLogin({ issuer: h.idp.issuer, clientId: WIKI.id, clientSecret: WIKI.secret, redirectUri: REDIRECT, user })
  const metadata = await (await fetch(`${h.idp.issuer}/.well-known/openid-configuration`)).json() as { token_endpoint: string }
  const { jwtAuthGrant } = await requestJwtAuthorizationGrant({
    tokenEndpoint: metadata.token_endpoint, audience: h.issuer, resource: h.resource, idToken, clientId: WIKI.id, clientSecret: WIKI.secret, scope: 'mcp:tools'
  })
  return jwtAuthGrant
}

async function presentIdJag (issuer: string, assertion: string): Promise<{ status: number, body: Record<string, unknown> }> {
  const res = await fetch(`${issuer}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(WIKI_AT_MCP.id, WIKI_AT_MCP.secret) },
    body: new URLSearchParams({ grant_type: JWT_BEARER, assertion })
  })
  return { status: res.status, body: await res.json() as Record<string, unknown> }
}

async function mcpUser (issuer: string, accessToken: string): Promise<Record<string, unknown>> {
  const res = await fetch(`${issuer}/mcp`, { method: 'POST', headers: { authorization: `Bearer ${accessToken}` } })
  return (await res.json() as { auth: Record<string, unknown> }).auth
}

t.test('users: an ID-JAG of the upstream IdP names the user an interactive login through it gives', async (t) => {
  const h = await xaaHarness(t)
  const interactive = await mcpUser(h.issuer, (await loginTokens(h, 'ann@corp.example')).access_token as string)
  const res = await presentIdJag(h.issuer, await devIdJag(h, 'ann@corp.example'))
  t.equal(res.status, 200, JSON.stringify(res.body))
  t.equal(res.body.refresh_token, undefined)
  const viaIdJag = await mcpUser(h.issuer, res.body.access_token as string)
  t.equal(viaIdJag.userId, interactive.userId, 'the same user, not a namespaced one')
  t.equal(viaIdJag.clientId, WIKI_AT_MCP.id)
  t.same(viaIdJag.scopes, ['mcp:tools'])
  const someoneElse = await presentIdJag(h.issuer, await devIdJag(h, 'bob@corp.example'))
  t.not((await mcpUser(h.issuer, someoneElse.body.access_token as string)).userId, interactive.userId)
})

withRedisServer('the jti replay cache across two replicas', (server) => {
  t.test('an ID-JAG spent at one replica is refused at the other', async (t) => {
    const prefix = `xaa-${process.pid}:`
    const h = await xaaHarness(t, { store: new RedisStore({ url: server.url, prefix }) })
    // A second replica of the same server: same issuer, same IdP, same Redis.
    const replica = Fastify({ logger: false })
    await replica.register(mcpOAuth, {
      issuer: h.issuer,
      resources: [h.resource],
      provider: oidcProvider({ issuer: h.idp.issuer, clientId: 'mcp-proxy', clientSecret: 'proxy-secret-proxy-secret-proxy-secret' }),
      clients: [{ client_id: WIKI_AT_MCP.id, client_secret: WIKI_AT_MCP.secret, grant_types: [JWT_BEARER] }],
      cookieSecret: 'cookie-secret-cookie-secret-cookie-secret',
      store: new RedisStore({ url: server.url, prefix })
    })
    t.teardown(() => replica.close())
    const atReplica = async (assertion: string): Promise<Record<string, unknown>> => (await replica.inject({
      method: 'POST',
      url: '/oauth/token',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(WIKI_AT_MCP.id, WIKI_AT_MCP.secret) },
      payload: new URLSearchParams({ grant_type: JWT_BEARER, assertion }).toString()
    })).json()

    const assertion = await devIdJag(h, 'carol@corp.example')
    t.equal((await presentIdJag(h.issuer, assertion)).status, 200)
    const replayed = await atReplica(assertion)
    t.equal(replayed.error, 'invalid_grant')
    t.match(replayed.error_description, /"jti" was used before/)
    t.ok((await atReplica(await devIdJag(h, 'carol@corp.example'))).access_token, 'a fresh ID-JAG works at the replica')
  })
})
