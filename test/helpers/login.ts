import { createServer } from 'node:net'
import Fastify, { type FastifyInstance } from 'fastify'
import { mcpOAuth, type McpOAuthOptions } from '../../lib/index.js'
import { oidcProvider } from '../../lib/providers/oidc.js'
import { startDevIdp, type DevIdp, type DevIdpOptions } from '../../example/dev-idp.js'
import { s256 } from '../../lib/oauth/pkce.js'
import type { UpstreamTokens } from '../../lib/providers/types.js'
import { Browser } from './browser.js'

export interface LoginHarness {
  app: FastifyInstance
  idp: DevIdp
  issuer: string
  resource: string
}

/** A free loopback port (the issuer must be known before the plugin is registered). */
export async function freePort (): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number }
      srv.close(() => resolve(port))
    })
  })
}

/**
 * The plugin on a real loopback socket, logging users in through a real oidc-provider (the
 * development IdP of the example), with one guarded route POST /mcp returning request.mcpAuth.
 */
export async function startLogin (
  t: { teardown (fn: () => unknown): void },
  opts: Partial<McpOAuthOptions> = {},
  // A function when the IdP's settings name the plugin's issuer (an enterprise app's crossAppAccess).
  idpSettings: Partial<DevIdpOptions> | ((issuer: string) => Partial<DevIdpOptions>) = {}
): Promise<LoginHarness> {
  const port = await freePort()
  const issuer = `http://127.0.0.1:${port}`
  const idpOptions = typeof idpSettings === 'function' ? idpSettings(issuer) : idpSettings
  const idp = await startDevIdp({
    ...idpOptions,
    // The plugin's own client first; more (an enterprise app with crossAppAccess) after it.
    clients: [{ client_id: 'mcp-proxy', client_secret: 'proxy-secret-proxy-secret-proxy-secret', redirect_uris: [`${issuer}/oauth/callback`] }, ...(idpOptions.clients ?? [])]
  })
  t.teardown(() => idp.close())
  const app = Fastify({ logger: false })
  await app.register(mcpOAuth, {
    issuer,
    resources: [`${issuer}/mcp`],
    provider: oidcProvider({ issuer: idp.issuer, clientId: 'mcp-proxy', clientSecret: 'proxy-secret-proxy-secret-proxy-secret', timeoutMs: 5000 }),
    registration: { mode: 'public' },
    cookieSecret: 'cookie-secret-cookie-secret-cookie-secret',
    ...opts
  })
  app.post('/mcp', { onRequest: app.mcpOAuth.authenticate({ scopes: ['mcp:tools'] }) }, async (request) => ({ auth: request.mcpAuth }))
  // What an MCP tool that calls the provider's APIs does: ask for the upstream token.
  app.post('/mcp/upstream', { onRequest: app.mcpOAuth.authenticate({ scopes: ['mcp:tools'] }) }, async (request, reply) => {
    try {
      return await app.mcpOAuth.getUpstreamToken(request)
    } catch (err) {
      const e = err as { retryable?: boolean, message: string }
      return reply.code(e.retryable === true ? 503 : 401).send({ error: e.retryable === true ? 'temporarily_unavailable' : 'invalid_token', error_description: e.message })
    }
  })
  await app.listen({ port, host: '127.0.0.1' })
  t.teardown(() => app.close())
  return { app, idp, issuer, resource: `${issuer}/mcp` }
}

export const REDIRECT = 'http://127.0.0.1:9/callback'

/** Register a public client the way an MCP client does. */
export async function registerClient (h: LoginHarness, body: Record<string, unknown> = {}): Promise<Record<string, string>> {
  const res = await fetch(`${h.issuer}/oauth/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ redirect_uris: [REDIRECT], token_endpoint_auth_method: 'none', client_name: 'Test MCP client', ...body })
  })
  if (res.status !== 201) throw new Error(`registration failed: ${res.status} ${await res.text()}`)
  return await res.json() as Record<string, string>
}

export function authorizeUrl (h: LoginHarness, clientId: string, verifier: string, extra: Record<string, string> = {}): URL {
  const url = new URL(`${h.issuer}/oauth/authorize`)
  url.search = new URLSearchParams({
    response_type: 'code',
    client_id: clientId,
    redirect_uri: REDIRECT,
    code_challenge: s256(verifier),
    code_challenge_method: 'S256',
    state: 'client-state-1',
    resource: h.resource,
    scope: 'mcp:tools',
    ...extra
  }).toString()
  return url
}

/** Register, log in as `user`, and exchange the code: the tokens an MCP client would hold. */
export async function loginTokens (h: LoginHarness, user = 'alice'): Promise<Record<string, string>> {
  const client = await registerClient(h)
  const verifier = 'v'.repeat(43)
  const back = await login(h, authorizeUrl(h, client.client_id as string, verifier), new Browser(), user)
  const res = await token(h, { grant_type: 'authorization_code', code: back.searchParams.get('code') as string, code_verifier: verifier, redirect_uri: REDIRECT, client_id: client.client_id as string })
  if (res.status !== 200) throw new Error(`code exchange failed: ${JSON.stringify(res.body)}`)
  return { ...res.body as Record<string, string>, client_id: client.client_id as string }
}

/** The upstream tokens stored in the grant behind an access token (stores without an encryption key). */
export async function readUpstream (h: LoginHarness, accessToken: string): Promise<{ grantId: string, tokens: UpstreamTokens }> {
  const auth = await h.app.mcpOAuth.validator.validate(accessToken)
  if (!auth.valid) throw new Error('the access token should be valid')
  const grant = await h.app.mcpOAuth.storage.getGrant(auth.auth.grantId, Date.now())
  const sealed = String(grant?.upstream)
  if (!sealed.startsWith('p1.')) throw new Error('readUpstream needs upstream tokens stored without encryption')
  return { grantId: auth.auth.grantId, tokens: JSON.parse(Buffer.from(sealed.slice(3), 'base64url').toString('utf8')) as UpstreamTokens }
}

/** Replace the stored upstream tokens (as if time had passed, or the provider had moved on). */
export async function writeUpstream (h: LoginHarness, grantId: string, tokens: UpstreamTokens): Promise<void> {
  await h.app.mcpOAuth.storage.updateGrantUpstream(grantId, 'p1.' + Buffer.from(JSON.stringify(tokens)).toString('base64url'), Date.now())
}

/** Drive a browser through consent and the IdP's login; returns the redirect to the client. */
export async function login (h: LoginHarness, url: URL, browser = new Browser(), user = 'alice'): Promise<URL> {
  const page = await browser.drive(url, {
    stopAt: u => u.href.startsWith(REDIRECT),
    fields: { login: user, password: 'any' }
  })
  return page.stoppedAt as URL
}

export async function token (h: LoginHarness, body: Record<string, string>, headers: Record<string, string> = {}): Promise<{ status: number, body: Record<string, unknown>, headers: Headers }> {
  const res = await fetch(`${h.issuer}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams(body)
  })
  return { status: res.status, body: await res.json() as Record<string, unknown>, headers: res.headers }
}
