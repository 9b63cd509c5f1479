import t, { type Test } from 'tap'
import * as oauth from 'oauth4webapi'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { startExample, type RunningExample } from './helpers/example.js'
import { Browser } from './helpers/browser.js'
import { freePort } from './helpers/login.js'

/*
 * The same login as a strict spec client does it: oauth4webapi checks every response it processes
 * against the RFCs (exact issuer of the metadata, RFC 9207 `iss` on the authorization response,
 * token response shape), so anything sloppy in the server's answers fails here.
 */

/** Plain http is fine on loopback; oauth4webapi refuses it unless told. */
const insecure = { [oauth.allowInsecureRequests]: true, signal: () => AbortSignal.timeout(10_000) } as const

const initialize = JSON.stringify({
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'oauth4webapi-e2e', version: '0' } }
})
const mcpHeaders = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' }

/** A raw MCP initialize with a bearer token, through oauth4webapi (which throws on a challenge). */
async function initializeWith (mcp: URL, accessToken: string): Promise<Response> {
  return oauth.protectedResourceRequest(accessToken, 'POST', mcp, new Headers(mcpHeaders), initialize, insecure)
}

/** The bearer challenge of a refused request to /mcp, as oauth4webapi parses it. */
async function challengeFor (mcp: URL, accessToken: string): Promise<{ status: number, challenge: oauth.WWWAuthenticateChallenge | undefined }> {
  try {
    const res = await initializeWith(mcp, accessToken)
    await res.body?.cancel()
    return { status: res.status, challenge: undefined }
  } catch (err) {
    if (!(err instanceof oauth.WWWAuthenticateChallengeError)) throw err
    await err.response.body?.cancel()
    return { status: err.status, challenge: err.cause.find(c => c.scheme === 'bearer') }
  }
}

async function whoamiWith (t: Test, mcp: URL, accessToken: string): Promise<Record<string, unknown>> {
  const transport = new StreamableHTTPClientTransport(mcp, { requestInit: { headers: { authorization: `Bearer ${accessToken}` } } })
  const client = new Client({ name: 'oauth4webapi-e2e', version: '1.0.0' })
  t.teardown(() => client.close())
  await client.connect(transport)
  const result = await client.callTool({ name: 'whoami', arguments: {} })
  if (result.isError === true) throw new Error(`whoami failed: ${JSON.stringify(result.content)}`)
  return result.structuredContent as Record<string, unknown>
}

interface Discovered {
  as: oauth.AuthorizationServer
  rs: oauth.ResourceServer
  client: oauth.Client
  redirect: string
}

/** From the 401 of /mcp to a registered client, the way an MCP client starts. */
async function discoverAndRegister (t: Test, server: RunningExample): Promise<Discovered> {
  const challenge = await fetch(server.mcp, { method: 'POST', headers: mcpHeaders, body: initialize, signal: AbortSignal.timeout(10_000) })
  await challenge.body?.cancel()
  t.equal(challenge.status, 401, 'no token: 401')
  const metadataUrl = /resource_metadata="([^"]+)"/.exec(challenge.headers.get('www-authenticate') ?? '')?.[1]

  // RFC 9728: the resource metadata, at the well-known URL derived from the resource identifier.
  const rsResponse = await oauth.resourceDiscoveryRequest(server.mcp, insecure)
  t.equal(rsResponse.url, metadataUrl, 'the challenge points where RFC 9728 says the metadata is')
  const rs = await oauth.processResourceDiscoveryResponse(server.mcp, rsResponse)
  t.equal(rs.authorization_servers?.[0], server.issuer)

  // RFC 8414: exact issuer match, checked by processDiscoveryResponse.
  const issuer = new URL(rs.authorization_servers?.[0] as string)
  const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { ...insecure, algorithm: 'oauth2' }))

  // RFC 7591.
  const redirect = `http://127.0.0.1:${await freePort()}/callback`
  const registered = await oauth.processDynamicClientRegistrationResponse(await oauth.dynamicClientRegistrationRequest(as, {
    redirect_uris: [redirect],
    token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    client_name: 'oauth4webapi end-to-end test'
  }, insecure))
  return { as, rs, client: registered, redirect }
}

interface Started {
  url: URL
  verifier: string
  state: string
}

async function authorizationRequest (d: Discovered, resource: string): Promise<Started> {
  const verifier = oauth.generateRandomCodeVerifier()
  const state = oauth.generateRandomState()
  const url = new URL(d.as.authorization_endpoint as string)
  url.search = new URLSearchParams({
    response_type: 'code',
    client_id: d.client.client_id,
    redirect_uri: d.redirect,
    scope: (d.rs.scopes_supported ?? []).join(' '),
    resource,
    code_challenge: await oauth.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    state
  }).toString()
  return { url, verifier, state }
}

async function browse (browser: Browser, d: Discovered, url: URL, user = 'alice'): Promise<URL> {
  const page = await browser.drive(url, { stopAt: u => u.href.startsWith(d.redirect), fields: { login: user, password: 'any password' } })
  if (page.stoppedAt === undefined) throw new Error(`the login did not reach the callback: ${page.status} at ${page.url.href}`)
  return page.stoppedAt
}

t.test('oauth4webapi: discovery, registration, PKCE login with resource and iss, MCP call, refresh rotation, revocation', async t => {
  const server = await startExample(t)
  const { issuer, mcp } = server
  const d = await discoverAndRegister(t, server)
  t.equal(d.as.issuer, issuer)
  t.equal(d.as.authorization_response_iss_parameter_supported, true, 'RFC 9207 advertised')
  t.ok(d.as.code_challenge_methods_supported?.includes('S256'))
  t.match(d.client.client_id, /^mcp_/)
  t.equal(d.rs.resource, mcp.href)

  const started = await authorizationRequest(d, d.rs.resource)
  const callback = await browse(new Browser({ timeoutMs: 10_000 }), d, started.url)
  t.equal(callback.searchParams.get('iss'), issuer)

  // A strict client refuses a callback whose iss, or state, is not the one expected.
  const forged = new URL(callback)
  forged.searchParams.set('iss', 'http://127.0.0.1:1')
  t.throws(() => oauth.validateAuthResponse(d.as, d.client, forged, started.state),
    { code: oauth.INVALID_RESPONSE, message: /"iss"/ }, 'another issuer: refused (RFC 9207 mix-up defence)')
  const noIss = new URL(callback)
  noIss.searchParams.delete('iss')
  t.throws(() => oauth.validateAuthResponse(d.as, d.client, noIss, started.state),
    { code: oauth.INVALID_RESPONSE, message: /"iss" \(issuer\) missing/ }, 'iss missing while advertised: refused')
  t.throws(() => oauth.validateAuthResponse(d.as, d.client, callback, oauth.generateRandomState()),
    { code: oauth.INVALID_RESPONSE, message: /"state"/ }, 'another state: refused')

  const params = oauth.validateAuthResponse(d.as, d.client, callback, started.state)
  const codeResponse = await oauth.authorizationCodeGrantRequest(d.as, d.client, oauth.None(), params, d.redirect, started.verifier, {
    ...insecure,
    additionalParameters: { resource: d.rs.resource }
  })
  t.equal(codeResponse.headers.get('cache-control'), 'no-store', 'token responses are not cached')
  const tokens = await oauth.processAuthorizationCodeResponse(d.as, d.client, codeResponse)
  t.match(tokens, { token_type: 'bearer', access_token: /^mcpat_/, refresh_token: /^mcprt_/, scope: 'mcp:tools', expires_in: Number })
  t.ok((tokens.expires_in ?? 0) > 0 && (tokens.expires_in ?? 0) <= 3600)

  // The access token opens /mcp: raw JSON-RPC through oauth4webapi, then the MCP SDK client.
  const raw = await initializeWith(mcp, tokens.access_token)
  t.equal(raw.status, 200)
  t.match(await raw.text(), /"serverInfo":\{"name":"fastify-mcp-oauth-example"/)
  t.match(await whoamiWith(t, mcp, tokens.access_token), {
    userId: 'alice', email: 'alice@dev.local', clientId: d.client.client_id, scopes: ['mcp:tools'], resource: mcp.href
  })

  // Refresh: a new pair, and the refresh token rotated.
  const refreshed = await oauth.processRefreshTokenResponse(d.as, d.client, await oauth.refreshTokenGrantRequest(
    d.as, d.client, oauth.None(), tokens.refresh_token as string, { ...insecure, additionalParameters: { resource: d.rs.resource } }))
  t.match(refreshed, { token_type: 'bearer', access_token: /^mcpat_/, refresh_token: /^mcprt_/, scope: 'mcp:tools' })
  t.not(refreshed.refresh_token, tokens.refresh_token, 'the refresh token rotated')
  t.not(refreshed.access_token, tokens.access_token)
  t.match(await whoamiWith(t, mcp, refreshed.access_token), { userId: 'alice', clientId: d.client.client_id })

  // RFC 7009: revoking the (current) refresh token ends the whole family.
  const revocation = await oauth.revocationRequest(d.as, d.client, oauth.None(), refreshed.refresh_token as string, {
    ...insecure,
    additionalParameters: { token_type_hint: 'refresh_token' }
  })
  t.equal(revocation.status, 200)
  t.equal(await oauth.processRevocationResponse(revocation), undefined)

  const prm = `${issuer}/.well-known/oauth-protected-resource/mcp`
  for (const [name, token] of [['first', tokens.access_token], ['refreshed', refreshed.access_token]] as const) {
    const { status, challenge } = await challengeFor(mcp, token)
    t.equal(status, 401, `the ${name} access token is refused at /mcp`)
    t.match(challenge?.parameters, { error: 'invalid_token', resource_metadata: prm }, `the ${name} access token: invalid_token challenge`)
  }
  for (const [name, token] of [['current', refreshed.refresh_token], ['rotated', tokens.refresh_token]] as const) {
    const res = await oauth.refreshTokenGrantRequest(d.as, d.client, oauth.None(), token as string, { ...insecure, additionalParameters: { resource: d.rs.resource } })
    await t.rejects(oauth.processRefreshTokenResponse(d.as, d.client, res), { code: oauth.RESPONSE_BODY_ERROR, error: 'invalid_grant', status: 400 },
      `the ${name} refresh token no longer refreshes`)
  }
  const again = await oauth.revocationRequest(d.as, d.client, oauth.None(), refreshed.refresh_token as string, insecure)
  t.equal(await oauth.processRevocationResponse(again), undefined, 'revoking again is not an error (RFC 7009)')
})

t.test('oauth4webapi: revoking an access token ends only that token', async t => {
  const server = await startExample(t)
  const d = await discoverAndRegister(t, server)
  const started = await authorizationRequest(d, d.rs.resource)
  const params = oauth.validateAuthResponse(d.as, d.client, await browse(new Browser({ timeoutMs: 10_000 }), d, started.url), started.state)
  const tokens = await oauth.processAuthorizationCodeResponse(d.as, d.client, await oauth.authorizationCodeGrantRequest(
    d.as, d.client, oauth.None(), params, d.redirect, started.verifier, { ...insecure, additionalParameters: { resource: d.rs.resource } }))

  await oauth.processRevocationResponse(await oauth.revocationRequest(d.as, d.client, oauth.None(), tokens.access_token, {
    ...insecure,
    additionalParameters: { token_type_hint: 'access_token' }
  }))
  t.equal((await challengeFor(server.mcp, tokens.access_token)).status, 401, 'the revoked access token is refused')
  const refreshed = await oauth.processRefreshTokenResponse(d.as, d.client, await oauth.refreshTokenGrantRequest(
    d.as, d.client, oauth.None(), tokens.refresh_token as string, { ...insecure, additionalParameters: { resource: d.rs.resource } }))
  t.match(await whoamiWith(t, server.mcp, refreshed.access_token), { userId: 'alice' }, 'the grant lives on')
})

t.test('oauth4webapi: a refused consent comes back as an authorization error with the right iss', async t => {
  const server = await startExample(t)
  const d = await discoverAndRegister(t, server)
  const started = await authorizationRequest(d, d.rs.resource)
  const browser = new Browser({ timeoutMs: 10_000 })
  const consent = await browser.get(started.url)
  t.equal(consent.status, 200, 'the consent page')
  const back = await browser.submit(consent, {}, { submitter: 'deny', stopAt: u => u.href.startsWith(d.redirect) })
  const callback = back.stoppedAt
  t.ok(callback, 'redirected to the client')
  t.throws(() => oauth.validateAuthResponse(d.as, d.client, callback as URL, started.state),
    { code: oauth.AUTHORIZATION_RESPONSE_ERROR, error: 'access_denied' }, 'iss and state pass; the error is reported as such')
})

t.test('oauth4webapi: a token for another resource is refused at the token endpoint', async t => {
  const server = await startExample(t)
  const d = await discoverAndRegister(t, server)
  const started = await authorizationRequest(d, d.rs.resource)
  const params = oauth.validateAuthResponse(d.as, d.client, await browse(new Browser({ timeoutMs: 10_000 }), d, started.url), started.state)
  const res = await oauth.authorizationCodeGrantRequest(d.as, d.client, oauth.None(), params, d.redirect, started.verifier, {
    ...insecure,
    additionalParameters: { resource: `${server.issuer}/elsewhere` }
  })
  await t.rejects(oauth.processAuthorizationCodeResponse(d.as, d.client, res), { code: oauth.RESPONSE_BODY_ERROR, error: 'invalid_target' })
})
