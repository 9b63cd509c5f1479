import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import {
  Client,
  StreamableHTTPClientTransport,
  UnauthorizedError,
  IssuerMismatchError,
  type OAuthDiscoveryState,
  type StoredOAuthClientInformation,
  type StoredOAuthTokens
} from '@modelcontextprotocol/client'
import { startExample } from './helpers/example.js'
import { ScriptedHost, callbackUrl, recordingFetch, rejectsWith, serveClientMetadata, whoami, type Recorded } from './helpers/mcp-host.js'

/*
 * End to end with the MCP SDK v2 client (`@modelcontextprotocol/client`) against the example on
 * the SDK v2 server: discovery from the 401, dynamic registration or a client ID metadata
 * document, the login through our consent page and the development IdP, the SDK's own RFC 9207
 * `iss` check, refresh, step-up to a tool's scope, on the 2025-11-25 protocol and on 2026-07-28.
 */

type Host = ScriptedHost<StoredOAuthTokens, StoredOAuthClientInformation, OAuthDiscoveryState>

const MODERN = '2026-07-28'

function connectClient (t: Test, mcp: URL, host: Host, log: Recorded[], era: 'legacy' | 'modern' = 'legacy') {
  const transport = new StreamableHTTPClientTransport(mcp, { authProvider: host, fetch: recordingFetch(log) })
  const client = new Client({ name: 'e2e-sdk2', version: '1.0.0' }, era === 'modern' ? { versionNegotiation: { mode: { pin: MODERN } } } : {})
  t.teardown(() => client.close())
  return { client, transport }
}

/** A first login: connect stops at the redirect, the host hands the whole callback to the SDK. */
async function login (t: Test, mcp: URL, host: Host, log: Recorded[]): Promise<void> {
  const first = connectClient(t, mcp, host, log)
  await rejectsWith(t, first.client.connect(first.transport), UnauthorizedError, 'connect stops at the authorization redirect')
  await first.transport.finishAuth(host.callbackParams())
}

t.test('the SDK v2 client: discovery, registration, login, the iss check, tools on both protocols, refresh', async t => {
  const { issuer, mcp } = await startExample(t)
  const host: Host = new ScriptedHost(await callbackUrl(), 'alice')
  const log: Recorded[] = []

  const first = connectClient(t, mcp, host, log)
  await rejectsWith(t, first.client.connect(first.transport), UnauthorizedError, 'connect stops at the authorization redirect')
  t.match(log[0], { method: 'POST', status: 401 }, 'the first request is refused')
  t.notOk(log[0]?.bearer, 'no token yet')
  const paths = log.map(r => `${r.method} ${r.url.pathname} ${r.status}`)
  const prm = paths.indexOf('GET /.well-known/oauth-protected-resource/mcp 200')
  const asMeta = paths.indexOf('GET /.well-known/oauth-authorization-server 200')
  const register = paths.indexOf('POST /oauth/register 201')
  t.ok(prm > 0 && asMeta > prm && register > asMeta, `metadata, then registration (${paths.join(', ')})`)
  const clientId = host.client?.client_id ?? ''
  t.match(clientId, /^mcp_/, 'the SDK saved the client id the server assigned')
  t.match(Object.fromEntries(host.authorizationUrls[0]?.searchParams ?? []), {
    response_type: 'code', client_id: clientId, code_challenge_method: 'S256', resource: mcp.href, scope: 'mcp:tools', state: host.lastState
  }, 'PKCE S256, RFC 8707 resource and the scope from the challenge')

  // RFC 9207: the SDK compares `iss` with the issuer before it reads the code.
  const callback = host.callbackParams()
  t.equal(callback.get('iss'), issuer, 'the callback names the issuer')
  const mark = log.length
  const forged = new URLSearchParams(callback)
  forged.set('iss', 'https://attacker.example')
  const mixUp = await rejectsWith(t, first.transport.finishAuth(forged), IssuerMismatchError, 'another issuer is refused')
  t.match(mixUp, { kind: 'authorization_response', expected: issuer })
  const missing = new URLSearchParams(callback)
  missing.delete('iss')
  await rejectsWith(t, first.transport.finishAuth(missing), IssuerMismatchError, 'a missing iss is refused: the server advertises it')
  t.notOk(log.slice(mark).some(r => r.url.pathname === '/oauth/token'), 'no code was sent to the token endpoint')

  await first.transport.finishAuth(callback)
  const tokens = host.stored
  t.match(tokens, { access_token: /^mcpat_/, refresh_token: /^mcprt_/, scope: 'mcp:tools' })
  t.equal(tokens?.issuer, issuer, 'the SDK stamped the tokens with the issuer')

  // 2025-11-25: initialize, then the tools.
  const legacy = connectClient(t, mcp, host, log)
  await legacy.client.connect(legacy.transport)
  t.equal(legacy.client.getNegotiatedProtocolVersion(), '2025-11-25')
  t.match(await whoami(legacy.client), { userId: 'alice', email: 'alice@dev.local', clientId, scopes: ['mcp:tools'], resource: mcp.href })

  // 2026-07-28: stateless, no initialize; every request carries its version.
  const before = log.length
  const modern = connectClient(t, mcp, host, log, 'modern')
  await modern.client.connect(modern.transport)
  t.equal(modern.client.getNegotiatedProtocolVersion(), MODERN)
  const { tools } = await modern.client.listTools()
  t.same(tools.map(tool => tool.name).sort(), ['echo', 'upstream_token', 'whoami'])
  t.match(await whoami(modern.client), { userId: 'alice', clientId, scopes: ['mcp:tools'] })
  const modernCalls = log.slice(before).filter(r => r.url.href === mcp.href)
  t.ok(modernCalls.length >= 2 && modernCalls.every(r => r.protocolVersion === MODERN && r.bearer === tokens?.access_token), 'each 2026-07-28 request carries the version and the token')
  t.notOk(modernCalls.some(r => (r.json as { method?: string } | undefined)?.method === 'initialize'), 'no initialize')

  // A refused access token: the SDK refreshes on its own, on either protocol.
  for (const era of ['legacy', 'modern'] as const) {
    const old = host.stored as StoredOAuthTokens
    host.stored = { ...old, access_token: `mcpat_${randomBytes(32).toString('base64url')}` }
    const mark = log.length
    const again = connectClient(t, mcp, host, log, era)
    await again.client.connect(again.transport)
    const refresh = log.slice(mark).find(r => r.url.pathname === '/oauth/token')
    t.equal(refresh?.status, 200, `${era}: the SDK refreshed`)
    t.match(Object.fromEntries(refresh?.form ?? []), { grant_type: 'refresh_token', refresh_token: old.refresh_token, client_id: clientId, resource: mcp.href })
    t.not(host.stored?.refresh_token, old.refresh_token, `${era}: the refresh token rotated`)
    t.match(await whoami(again.client), { userId: 'alice', clientId })
  }
  t.equal(host.authorizationUrls.length, 1, 'one login in all')
  t.equal(log.filter(r => r.url.pathname === '/oauth/register').length, 1, 'one registration in all')
})

t.test('the SDK v2 client with a client ID metadata document: no registration, the URL is the client id', async t => {
  const redirect = await callbackUrl()
  const doc = await serveClientMetadata(t, redirect)
  const { mcp } = await startExample(t, { oauth: doc.oauthOptions })
  const host: Host = new ScriptedHost(redirect, 'carol', doc.url)
  const log: Recorded[] = []
  await login(t, mcp, host, log)
  t.equal(host.client?.client_id, doc.url, 'the SDK used the document URL as its client id')
  t.notOk(log.some(r => r.url.pathname === '/oauth/register'), 'nothing registered')
  t.equal(host.authorizationUrls[0]?.searchParams.get('client_id'), doc.url)
  t.ok(doc.fetches() >= 1, 'the authorization server fetched the document')

  const { client, transport } = connectClient(t, mcp, host, log, 'modern')
  await client.connect(transport)
  t.match(await whoami(client), { userId: 'carol', clientId: doc.url })
})

// A client from a metadata document that names no scope: the plugin holds a registered client to the
// scope it registered, and both SDKs register the scope of the first challenge (mcp:tools) alone.
t.test('step-up: a tool that needs another scope sends the SDK v2 client back to the user for the union', async t => {
  const redirect = await callbackUrl()
  const doc = await serveClientMetadata(t, redirect)
  const { mcp } = await startExample(t, { oauth: doc.oauthOptions })
  const host: Host = new ScriptedHost(redirect, 'dave', doc.url)
  const log: Recorded[] = []
  await login(t, mcp, host, log)
  const firstTokens = host.stored as StoredOAuthTokens
  t.equal(firstTokens.scope, 'mcp:tools')

  for (const era of ['legacy', 'modern'] as const) {
    const { client, transport } = connectClient(t, mcp, host, log, era)
    await client.connect(transport)
    const mark = log.length
    await rejectsWith(t, client.callTool({ name: 'upstream_token', arguments: {} }), UnauthorizedError, `${era}: the call stops at the authorization redirect`)
    const challenge = log.slice(mark).find(r => r.status === 403)
    t.ok(challenge, `${era}: the call was refused with 403 insufficient_scope`)
    const url = host.authorizationUrls.at(-1)
    t.equal(url?.searchParams.get('scope')?.split(' ').sort().join(' '), 'mcp:tools mcp:upstream', `${era}: the union of the granted and the challenged scope`)
    t.notOk(log.slice(mark).some(r => r.form?.get('grant_type') === 'refresh_token'), `${era}: no refresh, it cannot widen a grant`)
    await transport.finishAuth(host.callbackParams())
    t.match(host.stored?.scope?.split(' ').sort(), ['mcp:tools', 'mcp:upstream'])

    const upstream = await client.callTool({ name: 'upstream_token', arguments: {} })
    t.notOk(upstream.isError, `${era}: the tool answers with the wider token (${JSON.stringify(upstream.content)})`)
    t.match(upstream.structuredContent, { tokenType: /^bearer$/i, expiresAt: Number })
    t.notOk(JSON.stringify(upstream).includes('access_token'), 'the upstream token itself is not shown')
    t.match(await whoami(client), { userId: 'dave', scopes: ['mcp:tools', 'mcp:upstream'] })

    // Back to the narrow grant for the other protocol.
    host.stored = firstTokens
  }
})
