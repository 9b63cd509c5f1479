/**
 * The example's development IdP as an enterprise IdP (Enterprise-Managed Authorization, first half):
 * an app that logged a user in there exchanges the ID token for an ID-JAG (RFC 8693 token exchange),
 * driven through the MCP SDK's own helpers and checked with jose against the IdP's published JWKS.
 */
import t, { type Test } from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { createRemoteJWKSet, decodeJwt, jwtVerify } from 'jose'
import { discoverAndRequestJwtAuthGrant, requestJwtAuthorizationGrant } from '@modelcontextprotocol/client'
import { startDevIdp, type DevIdpClient } from '../example/dev-idp.js'
import { idpLogin } from './helpers/idp-login.js'

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange'
const ID_JAG = 'urn:ietf:params:oauth:token-type:id-jag'
const ID_TOKEN = 'urn:ietf:params:oauth:token-type:id_token'

const REDIRECT = 'http://127.0.0.1:9/callback'
// The resource authorization servers the ID-JAGs are for; the IdP never calls them.
const AS = 'http://127.0.0.1:3000'
const RESOURCE = `${AS}/mcp`
const OTHER_AS = 'https://mcp.example.com'
// A client whose id is a URL (as a Client ID Metadata Document's is) can be an audience too.
const URL_CLIENT = 'https://apps.example/wiki'

const SECRETS = {
  'mcp-proxy': 'proxy-secret-proxy-secret',
  wiki: 'wiki-secret-wiki-secret',
  chat: 'chat-secret-chat-secret',
  [URL_CLIENT]: 'url-secret-url-secret'
} as const
type ClientId = keyof typeof SECRETS
const clients: DevIdpClient[] = [
  // The plugin's own client: how users log in interactively.
  { client_id: 'mcp-proxy', client_secret: SECRETS['mcp-proxy'], redirect_uris: [REDIRECT] },
  {
    client_id: 'wiki',
    client_secret: SECRETS.wiki,
    redirect_uris: [REDIRECT],
    crossAppAccess: { [AS]: { client_id: 'wiki-at-mcp', scopes: ['mcp:tools', 'mcp:read'] }, [OTHER_AS]: {} }
  },
  { client_id: 'chat', client_secret: SECRETS.chat, redirect_uris: [REDIRECT], crossAppAccess: { [URL_CLIENT]: {} } },
  { client_id: URL_CLIENT, client_secret: SECRETS[URL_CLIENT], redirect_uris: [REDIRECT], crossAppAccess: { [AS]: {} } }
]
const disabled = new Set<string>()
const idpLog: string[] = []
const idp = await startDevIdp({ clients, disabledAccounts: disabled, log: (msg) => idpLog.push(msg) })
t.teardown(() => idp.close())

const metadata = await (await fetch(`${idp.issuer}/.well-known/openid-configuration`)).json() as Record<string, unknown>
const tokenEndpoint = metadata.token_endpoint as string
const jwks = createRemoteJWKSet(new URL(metadata.jwks_uri as string))

const login = (clientId: ClientId, user: string, issuer = idp.issuer): ReturnType<typeof idpLogin> =>
  idpLogin({ issuer, clientId, clientSecret: SECRETS[clientId], redirectUri: REDIRECT, user })

const wiki = await login('wiki', 'ann@corp.example')

/** A token exchange request as the SDK sends it, with `body` on top (undefined drops a parameter). */
async function exchange (body: Record<string, string | undefined>, headers: Record<string, string> = {}): Promise<{ status: number, headers: Headers, body: Record<string, unknown> }> {
  const params = new URLSearchParams()
  const all: Record<string, string | undefined> = {
    grant_type: TOKEN_EXCHANGE,
    requested_token_type: ID_JAG,
    audience: AS,
    resource: RESOURCE,
    subject_token: wiki.idToken,
    subject_token_type: ID_TOKEN,
    client_id: 'wiki',
    client_secret: SECRETS.wiki,
    ...body
  }
  for (const [k, v] of Object.entries(all)) if (v !== undefined) params.append(k, v)
  const res = await fetch(tokenEndpoint, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, body: params })
  return { status: res.status, headers: res.headers, body: await res.json() as Record<string, unknown> }
}

/** The request was refused with `error`, a description matching `description`, and no ID-JAG. */
function refused (t: Test, res: { status: number, body: Record<string, unknown> }, status: number, error: string, description: RegExp, what = ''): void {
  t.equal(res.status, status, `status ${status} ${what}`)
  t.equal(res.body.error, error, `${error}: ${String(res.body.error_description)}`)
  t.match(res.body.error_description, description)
  t.notOk('access_token' in res.body, 'no ID-JAG')
}

t.test('metadata: the IdP says it issues ID-JAGs', async (t) => {
  t.ok((metadata.grant_types_supported as string[]).includes(TOKEN_EXCHANGE))
  t.same(metadata.identity_chaining_requested_token_types_supported, [ID_JAG])
  t.same(metadata.claim_types_supported, ['normal'], 'the other metadata stays')

  // Without any crossAppAccess the IdP is what it was: no token exchange.
  const plain = await startDevIdp({ clients: [{ client_id: 'x', client_secret: 'x-secret', redirect_uris: [REDIRECT] }] })
  t.teardown(() => plain.close())
  const meta = await (await fetch(`${plain.issuer}/.well-known/openid-configuration`)).json() as Record<string, unknown>
  t.notOk((meta.grant_types_supported as string[]).includes(TOKEN_EXCHANGE))
  t.notOk('identity_chaining_requested_token_types_supported' in meta)
  const res = await fetch(meta.token_endpoint as string, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from('x:x-secret').toString('base64')}` },
    body: new URLSearchParams({ grant_type: TOKEN_EXCHANGE, requested_token_type: ID_JAG, subject_token: 'x', subject_token_type: ID_TOKEN, audience: AS })
  })
  t.equal(res.status, 400)
  t.equal((await res.json() as Record<string, unknown>).error, 'unsupported_grant_type')
})

t.test('an ID token becomes an ID-JAG through the SDK, with the interactive login\'s subject', async (t) => {
  // The subject the plugin sees when ann logs in interactively through the IdP.
  const interactive = await login('mcp-proxy', 'ann@corp.example')
  t.equal(wiki.sub, interactive.sub)

  const before = Math.floor(Date.now() / 1000)
  const result = await discoverAndRequestJwtAuthGrant({
    idpUrl: idp.issuer,
    audience: AS,
    resource: RESOURCE,
    idToken: wiki.idToken,
    clientId: 'wiki',
    clientSecret: SECRETS.wiki,
    scope: 'mcp:tools mcp:admin'
  })
  t.equal(result.expiresIn, 300)
  t.equal(result.scope, 'mcp:tools', 'the IdP policy dropped mcp:admin, and says so')

  const { payload, protectedHeader } = await jwtVerify(result.jwtAuthGrant, jwks, {
    issuer: idp.issuer, audience: AS, typ: 'oauth-id-jag+jwt', algorithms: ['ES256']
  })
  t.equal(protectedHeader.typ, 'oauth-id-jag+jwt')
  t.type(protectedHeader.kid, 'string', 'names the key of the JWKS')
  t.equal(payload.iss, idp.issuer)
  t.equal(payload.sub, interactive.sub, 'the same sub as the interactive login')
  t.equal(payload.aud, AS)
  t.equal(payload.client_id, 'wiki-at-mcp', 'the client\'s id at the authorization server, not at the IdP')
  t.equal(payload.resource, RESOURCE)
  t.equal(payload.scope, 'mcp:tools')
  t.equal(payload.email, 'ann@corp.example')
  t.equal(payload.email_verified, true)
  t.type(payload.jti, 'string')
  t.ok((payload.iat as number) >= before - 1 && (payload.iat as number) <= Math.ceil(Date.now() / 1000), 'iat is now')
  t.equal((payload.exp as number) - (payload.iat as number), 300, 'a short lifetime')
  const loggedIn = decodeJwt(wiki.idToken).auth_time
  t.type(loggedIn, 'number', 'the app\'s ID token says when ann logged in')
  t.equal(payload.auth_time, loggedIn, 'and the ID-JAG passes it on')

  // Every exchange mints a new ID-JAG.
  const again = await requestJwtAuthorizationGrant({
    tokenEndpoint, audience: AS, resource: RESOURCE, idToken: wiki.idToken, clientId: 'wiki', clientSecret: SECRETS.wiki, scope: 'mcp:tools'
  })
  t.not(decodeJwt(again.jwtAuthGrant).jti, payload.jti, 'jti is unique')
  t.equal(decodeJwt(again.jwtAuthGrant).sub, interactive.sub)
})

t.test('the answer per RFC 8693 and the draft; client_secret_basic works too', async (t) => {
  const res = await exchange({ client_id: undefined, client_secret: undefined, audience: OTHER_AS, resource: undefined, scope: undefined }, {
    authorization: `Basic ${Buffer.from(`wiki:${SECRETS.wiki}`).toString('base64')}`
  })
  t.equal(res.status, 200)
  t.match(res.headers.get('cache-control'), /no-store/)
  t.equal(res.body.issued_token_type, ID_JAG)
  t.equal(res.body.token_type, 'N_A')
  t.equal(res.body.expires_in, 300)
  t.notOk('refresh_token' in res.body)
  t.notOk('scope' in res.body, 'nothing requested, no policy: no scope')
  const { payload } = await jwtVerify(res.body.access_token as string, jwks, { issuer: idp.issuer, audience: OTHER_AS, typ: 'oauth-id-jag+jwt' })
  t.equal(payload.client_id, 'wiki', 'without a mapped id, the client\'s own')
  t.notOk('resource' in payload, 'no resource asked, none asserted')
  t.notOk('scope' in payload)
})

t.test('scopes: the IdP\'s policy filters them', async (t) => {
  const all = await exchange({ scope: undefined })
  t.equal(all.status, 200)
  t.equal(all.body.scope, 'mcp:tools mcp:read', 'nothing requested: everything the policy allows')
  t.equal(decodeJwt(all.body.access_token as string).scope, 'mcp:tools mcp:read')

  const both = await exchange({ scope: 'mcp:read mcp:tools' })
  t.equal(decodeJwt(both.body.access_token as string).scope, 'mcp:read mcp:tools')

  refused(t, await exchange({ scope: 'mcp:admin' }), 400, 'invalid_scope', /none of the requested scopes/)
})

t.test('a bad subject token is refused with invalid_grant', async (t) => {
  refused(t, await exchange({ subject_token: 'not-a-jwt' }), 400, 'invalid_grant', /not an ID token issued by this IdP/)

  const proxy = await login('mcp-proxy', 'ann@corp.example')
  refused(t, await exchange({ subject_token: proxy.idToken }), 400, 'invalid_grant', /issued to another client/)

  // An ID-JAG is a JWT of this IdP too; issued for URL_CLIENT, it must still not pass as its ID token.
  const jag = await exchange({ client_id: 'chat', client_secret: SECRETS.chat, audience: URL_CLIENT, subject_token: (await login('chat', 'ann@corp.example')).idToken })
  t.equal(jag.status, 200)
  refused(t, await exchange({ client_id: URL_CLIENT, client_secret: SECRETS[URL_CLIENT], subject_token: jag.body.access_token as string }), 400, 'invalid_grant', /not an ID token/)
  // ... while that client's real ID token passes.
  const own = await exchange({ client_id: URL_CLIENT, client_secret: SECRETS[URL_CLIENT], subject_token: (await login(URL_CLIENT, 'bob')).idToken })
  t.equal(own.status, 200)
  t.equal(decodeJwt(own.body.access_token as string).sub, 'bob')

  // Another IdP's ID token for a client of the same name; and one that expired.
  const other = await startDevIdp({ clients: [clients[1] as DevIdpClient], idTokenTtl: 1 })
  t.teardown(() => other.close())
  const foreign = await login('wiki', 'ann@corp.example', other.issuer)
  refused(t, await exchange({ subject_token: foreign.idToken }), 400, 'invalid_grant', /not signed by this IdP/)
  await sleep(2100)
  const stale = await fetch(`${other.issuer}/token`, {
    method: 'POST',
    body: new URLSearchParams({
      grant_type: TOKEN_EXCHANGE, requested_token_type: ID_JAG, audience: AS, subject_token: foreign.idToken, subject_token_type: ID_TOKEN, client_id: 'wiki', client_secret: SECRETS.wiki
    })
  })
  refused(t, { status: stale.status, body: await stale.json() as Record<string, unknown> }, 400, 'invalid_grant', /expired/)

  // A user disabled since the login.
  const carl = await login('wiki', 'carl')
  disabled.add('carl')
  t.teardown(() => { disabled.delete('carl') })
  refused(t, await exchange({ subject_token: carl.idToken }), 400, 'invalid_grant', /disabled or no longer exists/)
})

t.test('bad requests are refused', async (t) => {
  refused(t, await exchange({ audience: 'https://unknown.example' }), 400, 'invalid_target', /may not get ID-JAGs for that audience/)
  refused(t, await exchange({ audience: URL_CLIENT }), 400, 'invalid_target', /that audience/, 'an audience of another client is not this one\'s')
  refused(t, await exchange({ audience: `${AS}/` }), 400, 'invalid_target', /that audience/, 'issuers compare exactly')
  refused(t, await exchange({ resource: 'mcp' }), 400, 'invalid_target', /absolute URL/)
  refused(t, await exchange({ resource: `${RESOURCE}#frag` }), 400, 'invalid_target', /without fragment/)
  refused(t, await exchange({ requested_token_type: 'urn:ietf:params:oauth:token-type:access_token' }), 400, 'invalid_request', /requested_token_type must be/)
  refused(t, await exchange({ requested_token_type: undefined }), 400, 'invalid_request', /requested_token_type must be/)
  refused(t, await exchange({ subject_token_type: 'urn:ietf:params:oauth:token-type:saml2' }), 400, 'invalid_request', /subject_token_type must be/)
  refused(t, await exchange({ subject_token: undefined }), 400, 'invalid_request', /subject_token is required/)
  refused(t, await exchange({ audience: undefined }), 400, 'invalid_request', /audience .* is required/)
  refused(t, await exchange({ actor_token: wiki.idToken, actor_token_type: ID_TOKEN }), 400, 'invalid_request', /actor tokens/)
  refused(t, await exchange({ scope: 'bad"scope' }), 400, 'invalid_scope', /invalid characters/)

  // Several audiences or resources: one ID-JAG is for one authorization server.
  const twice = await fetch(tokenEndpoint, {
    method: 'POST',
    body: `${new URLSearchParams({ grant_type: TOKEN_EXCHANGE, requested_token_type: ID_JAG, subject_token: wiki.idToken, subject_token_type: ID_TOKEN, client_id: 'wiki', client_secret: SECRETS.wiki, audience: AS }).toString()}&audience=${encodeURIComponent(OTHER_AS)}`,
    headers: { 'content-type': 'application/x-www-form-urlencoded' }
  })
  refused(t, { status: twice.status, body: await twice.json() as Record<string, unknown> }, 400, 'invalid_request', /audience/)

  // The SDK reports the refusal by its code.
  await t.rejects(requestJwtAuthorizationGrant({ tokenEndpoint, audience: 'https://unknown.example', resource: RESOURCE, idToken: wiki.idToken, clientId: 'wiki', clientSecret: SECRETS.wiki }),
    /Token exchange failed: invalid_target/)
})

t.test('only an authenticated client with cross-app access gets ID-JAGs', async (t) => {
  refused(t, await exchange({ client_secret: undefined }), 401, 'invalid_client', /client authentication failed/)
  refused(t, await exchange({ client_secret: 'wrong-secret' }), 401, 'invalid_client', /client authentication failed/)
  refused(t, await exchange({ client_id: undefined, client_secret: undefined }, { authorization: `Basic ${Buffer.from('wiki:wrong-secret').toString('base64')}` }), 401, 'invalid_client', /client authentication failed/)
  refused(t, await exchange({ client_id: 'nobody' }), 401, 'invalid_client', /client authentication failed/)
  // The plugin's client has no cross-app access: even with its own ID token it gets nothing.
  const proxy = await login('mcp-proxy', 'ann@corp.example')
  refused(t, await exchange({ client_id: 'mcp-proxy', client_secret: SECRETS['mcp-proxy'], subject_token: proxy.idToken }), 400, 'invalid_request', /not allowed for this client/)
  // Another client may not spend wiki's ID token.
  refused(t, await exchange({ client_id: URL_CLIENT, client_secret: SECRETS[URL_CLIENT] }), 400, 'invalid_grant', /issued to another client/)
})

t.test('cross-app access settings are checked at start-up', async (t) => {
  const start = (client: Partial<DevIdpClient>): Promise<unknown> =>
    startDevIdp({ clients: [{ client_id: 'app', client_secret: 'app-secret', redirect_uris: [REDIRECT], ...client }] })
  await t.rejects(start({ client_secret: undefined, crossAppAccess: { [AS]: {} } }), /crossAppAccess needs a confidential client/)
  await t.rejects(start({ crossAppAccess: { 'not a url': {} } }), /not an issuer URL/)
  await t.rejects(start({ crossAppAccess: { [`${AS}?tenant=1`]: {} } }), /not an issuer URL/)
  await t.rejects(start({ crossAppAccess: { 'ftp://as.example': {} } }), /not an issuer URL/)
  await t.rejects(start({ crossAppAccess: { [AS]: { client_id: '' } } }), /client_id must be a non-empty string/)
  await t.rejects(start({ crossAppAccess: { [AS]: { scopes: ['two words'] } } }), /scopes must be a list of scope tokens/)
  await t.rejects(start({ crossAppAccess: { [AS]: { scopes: 'mcp:tools' as unknown as string[] } } }), /scopes must be a list/)
})

t.test('no request made the IdP fail', async (t) => {
  t.notOk(idpLog.some((msg) => msg.includes('server error')), idpLog.join('\n'))
})
